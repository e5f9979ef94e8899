"""This folder's project as Dagster definitions: what `dg check defs`, `dg list defs` and `dg dev` load.

pyproject.toml's [tool.dg] names this package; dg loads `defs` from its definitions module. The `composable`
command needs none of it.
"""

from pathlib import Path

import dagster as dg

from composable_assets.definitions import load_definitions
from composable_assets.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    # The project folder is the one holding this package, wherever dg is started from.
    return load_definitions(Settings.from_env(project_dir=Path(__file__).resolve().parent.parent))
