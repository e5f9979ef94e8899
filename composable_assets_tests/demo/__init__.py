"""The demo, apart from the product: the retail sample project, its seeded data generator and the traffic simulator.

Imported by the tests, the benchmarks and, lazily, by `composable demo`, `composable simulate` and
`composable ui --simulate`; never by a module of composable_assets at import time.
"""

from pathlib import Path

SAMPLE_PROJECT_DIR: Path = Path(__file__).resolve().parent / "project"
