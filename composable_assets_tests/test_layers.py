"""Imports run one way (pyproject's [tool.importlinter] contract): checked with import-linter over the package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layers():
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_layer_importing_upwards_is_caught(tmp_path: Path):
    # The same contract with the warehouse put above the store: the store imports the warehouse, so it must break.
    config = (ROOT / "pyproject.toml").read_text()
    swapped = re.sub(r'"store",\n(\s*)"warehouse",', r'"warehouse",\n\1"store",', config)
    assert swapped != config
    (tmp_path / "pyproject.toml").write_text(swapped)
    result = lint_imports(tmp_path / "pyproject.toml")
    assert result.returncode != 0
    assert "composable_assets.store" in result.stdout and "BROKEN" in result.stdout
