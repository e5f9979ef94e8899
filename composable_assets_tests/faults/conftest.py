"""The fault matrix: what production brings (overlapping runs, killed workers, several machines, adversarial input).

Every test in this folder is marked `faults`, so `pytest -m faults` (or `pytest composable_assets_tests/faults`) runs
the matrix alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
