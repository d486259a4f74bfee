"""Test support, not tests: hostile inputs (`hostile`), slow-loris HTTP
clients (`slow_loris`) and the MCU bundle run on this host (`mcu_host`),
shared by tests/ and the benchmarks in tools/ (which run from a checkout,
with its root on PYTHONPATH)."""
