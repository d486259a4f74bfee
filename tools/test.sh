#!/usr/bin/env bash
# Set-up with the test extras, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh test
exec .venv/bin/python -m pytest "$@"
