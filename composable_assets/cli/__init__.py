"""The `composable` command: init, validate, demo, sync, stream, preview and more.

One module per command group: project (init, validate, lineage), build (seed, build), run (sync, stream, preview,
rejections), governance (explain, forget, archive), demo (demo, simulate) and ui; common holds what they share (loading the
project, running assets in this process, UserError), render what they draw with rich.
"""

from __future__ import annotations

import sys
import traceback

import click

from . import build, demo, governance, project, run, ui
from .common import UserError
from .render import err_console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Dagster's whole log and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """composable: warehouse audiences, delivered as Dagster assets."""
    ctx.obj = {"debug": debug}


for _command in (
    project.init,
    project.validate,
    project.lineage,
    build.seed,
    build.build,
    run.sync,
    run.rejections,
    run.stream,
    run.preview,
    governance.explain,
    governance.forget,
    governance.archive,
    demo.demo,
    demo.simulate,
    ui.ui,
):
    cli.add_command(_command)


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as exc:
        if debug and isinstance(exc, UserError):
            traceback.print_exc()
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except Exception as exc:  # anything unexpected: one paragraph, the traceback only on request
        if debug:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        if not debug:
            err_console.print("(run again with --debug for the traceback)")
        sys.exit(1)
