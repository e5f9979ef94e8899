"""Report helpers: the machine measured on, tables as Markdown or rich, and the files in benchmarks/results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable

RESULTS = Path(__file__).resolve().parent.parent / "results"


def machine_info() -> dict:
    """What the numbers were measured on; each benchmark adds the versions that matter to it."""
    import psutil  # here, not at the top: a step process measuring its own peak RSS need not load it

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(packages: Iterable[str], missing: str | None = None) -> dict[str, str]:
    """Installed versions of `packages`; a missing one is `missing` or, when that is None, an error."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            if missing is None:
                raise
            found[package] = missing
    return found


def fmt(value: Any, spec: str = ",.0f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def md_table(header: list[str], rows: Iterable[list[str]], left: int = 1, left_mark: str = "---") -> list[str]:
    """A Markdown table's lines: the first `left` columns left-aligned (`left_mark`), the others right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([left_mark] * left + ["---:"] * (len(header) - left)) + "|",
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]


def rich_table(title: str, header: list[str], rows: Iterable[list[str]], left: int = 0):
    """The same table for the console."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < left else "right")
    for cells in rows:
        table.add_row(*cells)
    return table


def write_results(folder: Path, name: str, *, markdown: str | None = None, data: Any = None) -> list[Path]:
    """`name.json` (every run's figures) and/or `name.md` (the tables) in `folder`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if data is not None:
        written.append(folder / f"{name}.json")
        written[-1].write_text(json.dumps(data, indent=2, default=str) + "\n")
    if markdown is not None:
        written.append(folder / f"{name}.md")
        written[-1].write_text(markdown)
    return written
