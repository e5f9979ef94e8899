"""What the `composable` command draws with rich: run summaries, live progress, the archive and explain tables."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from ..progress import SyncProgress

# Piped or captured output is not wrapped at 80 columns, so a message stays one greppable line.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH)


def summary(outcome, title: str) -> None:
    table = Table(title=title, title_justify="left")
    columns = (
        "audience",
        "destination",
        "added",
        "updated",
        "removed",
        "rejected",
        "skipped",
        "unsent",
        "seconds",
        "rows/s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("audience", "destination") else "right")
    for s in sorted(outcome.syncs, key=lambda s: (s.audience, s.destination)):
        seconds, rate = s.metadata.get("duration_seconds"), s.metadata.get("rows_per_second")
        table.add_row(
            s.audience,
            s.destination,
            *(str(s.count(n)) for n in ("added", "updated", "removed", "failed", "skipped", "unsent")),
            f"{getattr(seconds, 'value', seconds) or 0:.2f}",
            f"{getattr(rate, 'value', rate) or 0:,.0f}",
            style="red" if s.error or s.count("failed") else None,
        )
    # A run that failed before any sync has no table to show, only its failure (raised by the command).
    if outcome.syncs or (not outcome.streams and not outcome.errors):
        console.print(table)
    if outcome.streams:
        stream_summary(outcome.streams)


def stream_summary(streams) -> None:
    table = Table(title="event streams", title_justify="left")
    counts = ("sent", "rejected", "in_doubt", "late_skipped", "unsent")
    for column in ("stream", "destination", *counts, "high-water mark", "seconds"):
        table.add_column(column, justify="left" if column in ("stream", "destination", "high-water mark") else "right")
    for s in sorted(streams, key=lambda s: (s.stream, s.destination)):
        seconds, mark = s.metadata.get("duration_seconds"), s.metadata.get("high_water_mark")
        table.add_row(
            s.stream,
            s.destination,
            *(str(s.count(n)) for n in counts),
            str(getattr(mark, "value", mark) or ""),
            f"{getattr(seconds, 'value', seconds) or 0:.2f}",
            style="red" if s.error or s.count("rejected") else "yellow" if s.count("in_doubt") else None,
        )
    console.print(table)


# A sync still delivering after this many seconds gets a progress bar (in a terminal) or progress lines;
# shorter ones only show in the summary table.
LONG_SYNC_SECONDS = 1.0
# Without a terminal (CI logs, pipes) a long sync prints a line this often, and one when it is done.
PROGRESS_LINE_SECONDS = 5.0


class LiveRun:
    """The terminal's view of an in-process run (a runner.RunWatcher): long syncs' progress, warnings, errors."""

    def __init__(self) -> None:
        # Dagster redirects the process's stdout and stderr into its compute logs while steps run, and copies them
        # to the terminal through helper processes that a Ctrl-C stops too: write to the terminal itself.
        self.out, self.err = _terminal(sys.stdout, console), _terminal(sys.stderr, err_console)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TextColumn("{task.fields[seconds]:>6.1f} s"),
            console=self.out,
            # Drawn when progress comes (about once a second), not on a timer: nothing changes in between.
            auto_refresh=False,
        )
        self.tasks: dict[tuple[str, str], TaskID] = {}
        self.lines: dict[tuple[str, str], float] = {}  # when (seconds into the sync) each last printed a line

    def progress(self, progress: SyncProgress) -> None:
        pair = (progress.audience, progress.destination)
        seen = pair in self.tasks or pair in self.lines
        if not seen and (progress.finished or progress.seconds < LONG_SYNC_SECONDS):
            return
        if self.out.is_terminal:
            if not self.tasks:
                self.bar.start()
            fields: dict[str, Any] = {
                "completed": progress.sent,
                "total": progress.total,
                "rate": progress.rows_per_second,
                "seconds": progress.seconds,
            }
            if pair in self.tasks:
                self.bar.update(self.tasks[pair], **fields)
            else:
                self.tasks[pair] = self.bar.add_task(f"{pair[0]} -> {pair[1]}", **fields)
            self.bar.refresh()
        elif not seen or progress.finished or progress.seconds - self.lines[pair] >= PROGRESS_LINE_SECONDS:
            self.lines[pair] = progress.seconds
            self.out.print(
                f"{pair[0]} -> {pair[1]}: {progress.sent:,} / {progress.total:,} rows sent, "
                f"{progress.rows_per_second:,.0f} rows/s, {progress.seconds:.1f} s",
                highlight=False,
            )

    def message(self, level: int, step: str | None, text: str) -> None:
        label = "[yellow]warning[/]" if level < logging.ERROR else "[red]error[/]"
        where = f" ({step})" if step else ""
        self.err.print(f"{label}{where}: {escape(text)}", highlight=False)

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.bar.stop()
        for shown in (self.out, self.err):
            if shown.file not in (sys.stdout, sys.stderr):
                shown.file.close()


def _terminal(stream, like: Console) -> Console:
    """A console like `like` writing to a copy of `stream`'s file descriptor, which later redirections leave alone.

    A stream without one (a test's captured output) is used as it is.
    """
    try:
        copy = os.fdopen(os.dup(stream.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):
        return like
    return Console(file=copy, soft_wrap=True, width=_WIDTH, force_terminal=like.is_terminal)


def archive_summary(rows: list[dict], title: str) -> None:
    """Rows (outbox: lines), files and bytes per table; a dry run has no bytes yet."""
    columns = ["table", "rows", "files", "bytes", "days"]
    if not any(row["bytes"] for row in rows):
        columns.remove("bytes")
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in ("rows", "files", "bytes") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table if rows else f"{title}: nothing to archive", highlight=False)


def print_explanation(found) -> None:
    """`composable explain`: membership, consent and deletions, then per destination what was sent and what it holds."""
    consents = ", ".join(f"{p} {'granted' if g else 'not granted'}" for p, g in sorted(found.consents.items()))
    console.print(
        f"[bold]{found.customer_id}[/]: member of {', '.join(found.audiences) or 'no audience'} now; "
        f"consent: {consents or 'none recorded'}; deletion requests: {len(found.deletions) or 'none'}",
        highlight=False,
    )
    for row in found.deletions:
        details = ", ".join(f"{k}={v}" for k, v in row.items() if k != "table")
        console.print(f"  deletion ({row['table']}): {details}", highlight=False)
    for name in found.destinations:
        changes = [c for c in found.changes if c.destination == name]
        if changes:
            table = Table(title=f"sent to {name}", title_justify="left")
            for column in (
                "when (UTC)",
                "audience",
                "change",
                "fields sent",
                "status",
                "sync run",
                "code version",
                "audience file",
                "upstream",
            ):
                table.add_column(column)
            for c in changes:
                table.add_row(
                    f"{c.at:%Y-%m-%d %H:%M:%S}",
                    c.audience,
                    c.op,
                    _fields_sent(c),
                    c.status + (f": {c.reason}" if c.reason else ""),
                    c.sync_run_id[:8],
                    c.code_version or "",
                    (c.audience_sha256 or "")[:12],
                    "\n".join(_upstream(name, version) for name, version in c.upstream.items()),
                    style="red" if c.status == "rejected" else None,
                )
            console.print(table)
        events = [e for e in found.events if e.destination == name]
        if events:
            table = Table(
                "when (UTC)",
                "stream",
                "event",
                "event id",
                "properties",
                "status",
                "run",
                title=f"events sent to {name}",
                title_justify="left",
            )
            for e in events:
                table.add_row(
                    f"{e.at:%Y-%m-%d %H:%M:%S}",
                    e.stream,
                    e.event,
                    e.event_id,
                    _json(e.properties),
                    e.status + (f": {e.reason}" if e.reason else ""),
                    e.run_id[:8],
                )
            console.print(table)
        for entry in (e for e in found.ledger if e.destination == name):
            console.print(
                f"{name} holds now (audience {entry.audience}, since {entry.synced_at:%Y-%m-%d %H:%M:%S}, "
                f"run {entry.run_id[:8]}): {entry.identifier} {_json(entry.fields)}",
                highlight=False,
            )


def _upstream(name: str, version: dict) -> str:
    """An upstream asset as the delta saw it: its data version, and the run that materialized it (when known)."""
    run = f" (run {version['run_id'][:8]})" if version.get("run_id") else ""
    return f"{name} {version['data_version'][:8]}{run}"


def _fields_sent(change) -> str:
    """Add: every field; update: the changed fields, with what the destination had before; remove: nothing."""
    if change.fields is None:
        return "-" if change.op == "remove" else "(archived)"
    if change.op == "update":
        return ", ".join(
            f"{k}: {_json((change.previous or {}).get(k))} -> {_json(change.fields.get(k))}" for k in change.changed
        )
    return _json(change.fields)


def _json(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
