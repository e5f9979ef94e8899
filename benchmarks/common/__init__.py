"""Helpers the benchmark scripts share: timing and rounds, result reports, HTTP sinks, drt's installer.

The scripts run as `python benchmarks/X.py`, which puts `benchmarks/` first on sys.path, so they import these as
`from common import timing`. A script loaded another way (a test loading it from its file) inserts its own folder
first; see `warehouse_benchmark.py`.
"""
