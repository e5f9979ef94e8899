"""The product apart from the demo and the test doubles (DESIGN.md, Layout), and which project a command works on.

composable_assets never imports composable_assets_tests (the demo project, its generator and simulator, the local
destination fakes) when it is imported; only the demo commands and `composable ui` do, inside the command.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from composable_assets.cli import cli
from composable_assets.settings import NoProjectError, Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ROOT / "composable_assets"
TESTS_PACKAGE = "composable_assets_tests"
# The only places in the product that may import the tests package, each inside a function (when the command runs).
LAZY_IMPORTERS = {"cli/demo.py", "cli/ui.py"}


def test_importing_every_product_module_imports_nothing_of_the_tests_package():
    """Each module of composable_assets imported in a fresh process: composable_assets_tests is never loaded."""
    script = f"""
import importlib, json, pkgutil, sys
import composable_assets
names = sorted(m.name for m in pkgutil.walk_packages(composable_assets.__path__, "composable_assets."))
failed, leaked = {{}}, {{}}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed: say which, it is not our concern here
        failed[name] = repr(exc)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == {TESTS_PACKAGE!r})
    if loaded and not leaked:
        leaked[name] = loaded
print(json.dumps({{"modules": names, "failed": failed, "leaked": leaked}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSABLE_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "composable_assets.cli.demo" in result["modules"] and "composable_assets.definitions" in result["modules"]
    assert result["failed"] == {}
    assert result["leaked"] == {}, "this product module imported the tests package when imported"


def _imports_of_the_tests_package(tree: ast.AST):
    """(line, inside a function?) of each import naming composable_assets_tests or the old product homes of its parts."""
    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                names = [("." * child.level) + (child.module or "")]
            else:
                names = []
            for name in names:
                stripped = name.lstrip(".")
                if stripped.split(".")[0] == TESTS_PACKAGE or stripped.split(".")[0] in ("fakes", "sample") or (
                    stripped.startswith("composable_assets.") and stripped.split(".")[1] in ("fakes", "sample")
                ):
                    yield child.lineno, inside
            yield from visit(child, inside)

    yield from visit(tree, False)


def test_the_product_imports_the_demo_and_the_fakes_only_inside_the_demo_and_ui_commands():
    found = {}
    for path in sorted(PRODUCT.rglob("*.py")):
        relative = path.relative_to(PRODUCT).as_posix()
        for line, inside_function in _imports_of_the_tests_package(_parse(path)):
            if not (inside_function and relative in LAZY_IMPORTERS):
                found.setdefault(relative, []).append(line)
    assert found == {}
    assert not (PRODUCT / "fakes").exists() and not (PRODUCT / "sample").exists()


def _parse(path: Path) -> ast.Module:
    """`ast.parse` with the garbage collector held off: on CPython 3.11 a finalizer that runs inside the parser
    (earlier tests' Dagster instances closing their SQLite pools) breaks it with "AST constructor recursion depth
    mismatch" (CPython gh-106905), a failure of the interpreter, not of the file."""
    text = path.read_text()
    gc.collect()
    gc.disable()
    try:
        return ast.parse(text, str(path))
    finally:
        gc.enable()


def test_the_import_check_sees_an_import_at_module_level_and_one_in_a_function():
    tree = ast.parse(
        "from composable_assets_tests.fakes import BrazeFake\n"
        "def f():\n    from composable_assets_tests.demo import SAMPLE_PROJECT_DIR\n"
        "from ..sample import generator\n"
    )
    assert list(_imports_of_the_tests_package(tree)) == [(1, False), (3, True), (4, False)]


# --- Which project: COMPOSABLE_PROJECT_DIR, else the current folder's project.yaml, else a clear error. ----------


def test_the_project_is_the_variable_then_the_current_folder_then_an_error_naming_the_variable(tmp_path, monkeypatch):
    mine, elsewhere = tmp_path / "mine", tmp_path / "elsewhere"
    mine.mkdir()
    elsewhere.mkdir()
    (mine / "project.yaml").write_text("name: mine\n")
    monkeypatch.chdir(mine)
    assert Settings.from_env({}).project_dir == mine
    assert Settings.from_env({"COMPOSABLE_PROJECT_DIR": str(elsewhere)}).project_dir == elsewhere
    assert Settings.from_env({}, fallback_project_dir=elsewhere).project_dir == mine  # the user's own comes first

    monkeypatch.chdir(elsewhere)
    with pytest.raises(NoProjectError, match="COMPOSABLE_PROJECT_DIR is not set and the current folder"):
        Settings.from_env({})
    assert Settings.from_env({}, fallback_project_dir=SAMPLE_PROJECT_DIR).project_dir == SAMPLE_PROJECT_DIR
    assert Settings.from_env({}, project_dir=mine).project_dir == mine


@pytest.fixture
def no_project(tmp_path, monkeypatch) -> Path:
    """No COMPOSABLE_PROJECT_DIR, and a current folder without a project.yaml; data and Dagster files in tmp_path."""
    monkeypatch.delenv("COMPOSABLE_PROJECT_DIR", raising=False)
    monkeypatch.delenv("COMPOSABLE_WAREHOUSE", raising=False)
    monkeypatch.setenv("COMPOSABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_command_without_a_project_is_one_clear_error(no_project):
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 1
    assert "error: no project folder: COMPOSABLE_PROJECT_DIR is not set" in result.output
    assert "Traceback" not in result.output


def test_a_command_run_in_a_project_folder_works_on_it(no_project, monkeypatch):
    assert CliRunner().invoke(cli, ["init", "shop"], catch_exceptions=False).exit_code == 0
    monkeypatch.chdir(no_project / "shop")
    result = CliRunner().invoke(cli, ["validate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"ok {no_project / 'shop'}: 1 models, 1 audiences" in result.output


class _DagsterDev:
    """Stands in for the `dagster dev` process `composable ui` starts: records what it was started with."""

    started: list[dict] = []

    def __init__(self, command, env, preexec_fn):
        self.started.append({"command": command, "env": env})

    def wait(self):
        return 0

    def send_signal(self, signum):
        pass


@pytest.fixture
def fake_dagster_dev(monkeypatch):
    import composable_assets.cli.ui as ui

    _DagsterDev.started = []
    monkeypatch.setattr(ui.subprocess, "Popen", _DagsterDev)
    monkeypatch.setattr(ui.signal, "signal", lambda *args: None)  # the test process keeps its own handlers
    simulated = []
    monkeypatch.setattr(ui, "start_simulation", lambda settings, *args, **kwargs: simulated.append(settings))
    return _DagsterDev.started, simulated


def test_ui_simulate_runs_the_demo_project_when_none_is_named_and_tells_dagster_dev_so(no_project, fake_dagster_dev):
    started, simulated = fake_dagster_dev
    result = CliRunner().invoke(cli, ["ui", "--port", "3999", "--simulate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [s.project_dir for s in simulated] == [SAMPLE_PROJECT_DIR]
    (dev,) = started
    assert dev["command"][1:4] == ["dev", "-m", "composable_assets.definitions"]
    assert dev["env"]["COMPOSABLE_PROJECT_DIR"] == str(SAMPLE_PROJECT_DIR)
    assert dev["env"]["BRAZE_REST_ENDPOINT"].startswith("http://127.0.0.1:")  # the local stand-ins
    assert "BRAZE_REST_ENDPOINT" not in os.environ


def test_ui_without_simulate_needs_a_project(no_project, fake_dagster_dev):
    started, _ = fake_dagster_dev
    result = CliRunner().invoke(cli, ["ui", "--port", "3999"])
    assert result.exit_code == 1 and "COMPOSABLE_PROJECT_DIR is not set" in result.output
    assert started == []


@pytest.fixture
def tests_package_missing(monkeypatch):
    """As in an installation of composable_assets without composable_assets_tests."""
    for name in ("composable_assets_tests.demo", "composable_assets_tests.demo.simulator",
                 "composable_assets_tests.fakes", "composable_assets_tests.fakes.local"):
        monkeypatch.setitem(sys.modules, name, None)


def test_the_demo_commands_without_the_tests_package_say_what_is_missing(no_project, tests_package_missing):
    for command in (["demo", "--customers", "10"], ["simulate", "--ticks", "1"], ["ui", "--simulate"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, (command, result.output)
        assert "needs composable_assets_tests (the demo project" in result.output, command
        assert "make setup" in result.output and "Traceback" not in result.output


def test_ui_without_the_tests_package_starts_without_stand_ins(
    no_project, tests_package_missing, fake_dagster_dev, monkeypatch
):
    started, _ = fake_dagster_dev
    monkeypatch.setenv("COMPOSABLE_PROJECT_DIR", str(SAMPLE_PROJECT_DIR))
    result = CliRunner().invoke(cli, ["ui", "--port", "3999"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "no local stand-ins (composable_assets_tests is not installed)" in result.output
    assert started[0]["env"].get("BRAZE_REST_ENDPOINT") == os.environ.get("BRAZE_REST_ENDPOINT")
