"""Dagster's `dg` command (dagster-dg-cli) on this repository and on a project made by `composable init`.

Each command runs as a user would: the installed `dg` in a subprocess, from the folder it works on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from composable_assets.scaffold import create_project

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DG = str(BIN / "dg")

# A Python model reading the scaffold's SQL model: dg lists it with its input as a dependency.
SCORE = '''\
"""Each customer's share of the top spend."""


def model(customers):
    frame = customers[["customer_id"]].copy()
    frame["share"] = customers["lifetime_value"] / customers["lifetime_value"].max()
    return frame
'''


def dg(*args: str, cwd: Path, project: Path | None, data: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSABLE_")}
    env.pop("DAGSTER_HOME", None)
    # This virtualenv is the one dg should use (else it warns that the active one differs from the project's).
    env.update(VIRTUAL_ENV=str(BIN.parent), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COMPOSABLE_DATA_DIR=str(data))
    if project is not None:
        env["COMPOSABLE_PROJECT_DIR"] = str(project)
    return subprocess.run([DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def listed(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr[-3000:]
    return {asset["asset_key"]: asset for asset in json.loads(result.stdout)["assets"]}


def test_dg_checks_and_lists_the_repository(tmp_path):
    demo = REPO / "composable_assets_tests" / "demo" / "project"
    checked = dg("check", "defs", cwd=REPO, project=demo, data=tmp_path / "data")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    assets = listed(dg("list", "defs", "--json", cwd=REPO, project=demo, data=tmp_path / "data"))
    assert {"model/customer_profiles", "model/cart_abandoners", "audience/cart_abandoners"} <= set(assets)
    assert any(key.startswith("sync/") for key in assets)


def test_dg_checks_and_lists_a_new_project(tmp_path):
    project = tmp_path / "shop"
    create_project(project)
    (project / "models" / "share.py").write_text(SCORE)
    # No COMPOSABLE_PROJECT_DIR: the project's own definitions module loads its folder.
    checked = dg("check", "defs", cwd=project, project=None, data=tmp_path / "data")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assets = listed(dg("list", "defs", "--json", cwd=project, project=None, data=tmp_path / "data"))
    expected = {"model/customers", "model/share", "audience/high_value_customers",
                "delta/high_value_customers/outbox", "sync/high_value_customers/outbox"}
    assert expected <= set(assets)
    assert assets["model/share"]["dependency_keys"] == ["model/customers"]
    assert assets["model/share"]["description"] == "Each customer's share of the top spend."
    assert set(assets["model/share"]["kinds"]) == {"duckdb", "pandas", "python"}


@pytest.mark.parametrize("broken", ["def model(customers)\n    return customers\n"])
def test_dg_check_fails_on_a_broken_python_model(tmp_path, broken):
    project = tmp_path / "shop"
    create_project(project)
    (project / "models" / "share.py").write_text(broken)
    checked = dg("check", "defs", cwd=project, project=None, data=tmp_path / "data")
    assert checked.returncode == 1
    assert "models/share.py:1: Python syntax error" in checked.stdout + checked.stderr
