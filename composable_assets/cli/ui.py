"""The `composable ui` command: dagster dev (webserver and daemon) on 127.0.0.1, with local stand-ins."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from .common import load
from .demo import demo_is_missing, demo_project_dir, start_simulation
from .render import console


@click.command()
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI on 127.0.0.1.")
@click.option("--simulate", is_flag=True, help="Also land live sample traffic every 3 s (see `composable simulate`).")
def ui(port: int, simulate: bool) -> None:
    """Start the Dagster UI and daemon (dagster dev) with local Braze/Iterable stand-ins unless real ones are set."""
    # The project named by COMPOSABLE_PROJECT_DIR (or the current folder); with --simulate, else the demo's.
    fallback = demo_project_dir("composable ui --simulate") if simulate else None
    settings, project, _ = load(fallback_project_dir=fallback)  # fail here, readably, rather than in the webserver
    if simulate:
        start_simulation(settings, project, 3.0, None, 3, quiet=True)
    with _local_destinations() as fakes:
        for name, fake in fakes.items():
            console.print(f"{name}: a local stand-in at {fake.url}", highlight=False)
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-m",
            "composable_assets.definitions",
            "-a",
            "defs",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        console.print(f"Dagster UI: http://127.0.0.1:{port} (Ctrl-C stops it)", highlight=False)
        # The webserver, daemon, code servers and runs load the project this process loaded (the demo's included).
        env = {**os.environ, "COMPOSABLE_PROJECT_DIR": str(settings.project_dir)}
        # Started from a script, a process may inherit SIGINT ignored: restore the defaults in dagster dev,
        # and pass our own SIGINT/SIGTERM on to it, so either stops the UI cleanly.
        process = subprocess.Popen(command, env=env, preexec_fn=_default_signals)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: process.send_signal(signal.SIGINT))
        process.wait()


def _local_destinations():
    """The local Braze/Iterable stand-ins (composable_assets_tests.fakes); none, with a note, where not installed."""
    try:
        from composable_assets_tests.fakes.local import local_destinations
    except ModuleNotFoundError as exc:
        if not demo_is_missing(exc):
            raise
        console.print(
            "no local stand-ins (composable_assets_tests is not installed): Braze and Iterable are the "
            "endpoints their variables name",
            highlight=False,
        )
        return contextlib.nullcontext({})
    return local_destinations()


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
