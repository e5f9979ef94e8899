"""Dagster's `dg` command (dagster-dg-cli) on this repository and on a project made by `composable init`.

Each command runs as a user would: the installed `dg` in a subprocess, from the folder it works on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from composable_assets.scaffold import create_project

from .dagster_processes import _default_signals, free_port

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


def dg_env(project: Path | None, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSABLE_")}
    env.pop("DAGSTER_HOME", None)
    # This virtualenv is the one dg should use (else it warns that the active one differs from the project's).
    env.update(VIRTUAL_ENV=str(BIN.parent), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COMPOSABLE_DATA_DIR=str(data))
    if project is not None:
        env["COMPOSABLE_PROJECT_DIR"] = str(project)
    return env


def dg(*args: str, cwd: Path, project: Path | None, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DG, *args], cwd=cwd, env=dg_env(project, data), capture_output=True, text=True, timeout=300)


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


@pytest.mark.parametrize("where", ["repository", "new project"])
def test_dg_dev_serves_the_definitions_and_stops_on_ctrl_c(tmp_path, where):
    if where == "repository":
        cwd, project = REPO, REPO / "composable_assets_tests" / "demo" / "project"
        expected = {"model/customer_profiles", "audience/cart_abandoners", "sync/vip_customers/braze"}
    else:
        cwd, project = tmp_path / "shop", None
        create_project(cwd)
        (cwd / "models" / "share.py").write_text(SCORE)
        expected = {"model/customers", "model/share", "sync/high_value_customers/outbox"}
    env = {**dg_env(project, tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    port = free_port()
    log = (tmp_path / "dg-dev.log").open("w")
    dev = subprocess.Popen([DG, "dev", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True, preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        keys: set[str] = set()
        while not expected <= keys:
            assert dev.poll() is None and time.monotonic() < deadline, (tmp_path / "dg-dev.log").read_text()[-3000:]
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=10,
                                       json={"query": "{ assetNodes { assetKey { path } } }"}).json()
                keys = {"/".join(node["assetKey"]["path"]) for node in answer["data"]["assetNodes"]}
            except (requests.RequestException, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        tree = [dev.pid] + [child.pid for child in psutil.Process(dev.pid).children(recursive=True)]
        assert len(tree) >= 3  # dg, the webserver, the daemon (and the code server)
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(timeout=60) == 0, (tmp_path / "dg-dev.log").read_text()[-3000:]
        time.sleep(1)
        assert [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
        log.close()
