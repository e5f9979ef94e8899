"""`composable init`: a new project folder that validates and syncs at once, from the templates beside this file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from string import Template

TEMPLATE_DIR = Path(__file__).with_name("template")
# Package data cannot hold dot files reliably (globs skip them): stored under another name, written as this one.
RENAMED = {"gitignore": ".gitignore"}


class ScaffoldError(Exception):
    """The folder cannot receive a new project."""


def template_files() -> dict[str, Path]:
    """Each file a new project gets (relative path as written) -> its template."""
    files = {}
    for path in sorted(TEMPLATE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(TEMPLATE_DIR).as_posix()
            files[RENAMED.get(relative, relative)] = path
    return files


def create_project(folder: Path, *, force: bool = False, today: dt.date | None = None) -> list[str]:
    """Write a new project into `folder` (created if missing); return the files written, relative to it.

    A folder that holds anything already is refused unless `force`, which replaces files of the same names only.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} is a file, not a folder.")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ScaffoldError(
            f"{folder} is not empty; choose a new or empty folder, or pass --force to write the project's files "
            "into it (files of the same names are replaced, others are left alone)."
        )
    today = today or dt.datetime.now(dt.UTC).date()
    values = {
        "name": folder.absolute().name,
        # A day before today (UTC), so today is a partition in any timezone the project may choose.
        "start_date": (today - dt.timedelta(days=1)).isoformat(),
    }
    written = []
    for relative, template in template_files().items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(relative)
    return written
