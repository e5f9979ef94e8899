"""The high-water mark of a (stream, destination): where the next run's window begins, and pruning behind it."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Literal

from ..store import StreamTables
from ..warehouse import Connection


@dataclass(frozen=True)
class Mark:
    """The pair's position: `high_water` is the newest cursor value settled with nothing unsettled before it."""

    high_water: dt.datetime
    #: Where the pair began: nothing older is ever considered (start: now -> first run - lookback; a date -> it).
    floor: dt.datetime
    #: The sent log holds nothing older than this: no window may reach below it, or events could repeat.
    pruned_below: dt.datetime | None
    #: True on the pair's first run.
    new: bool = False

    def bound(self, moment: dt.datetime) -> dt.datetime:
        """`moment`, raised to what the pair may look at."""
        return max(moment, self.floor, self.pruned_below or self.floor)

    def window_start(self, lookback: dt.timedelta) -> dt.datetime:
        """The oldest cursor value a run picks up."""
        return self.bound(self.high_water - lookback)

    def late_band(self, lookback: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
        """[lo, hi): cursor values behind the window for which the sent log still tells what was sent."""
        return self.bound(self.high_water - 2 * lookback), self.window_start(lookback)


def start_point(
    start: Literal["now"] | dt.date, lookback: dt.timedelta, now: dt.datetime, timezone: str
) -> tuple[dt.datetime, dt.datetime]:
    """(high water, floor) of a new pair: `now` sends only the last `lookback`; a date sends from its midnight."""
    if isinstance(start, str):  # "now", the one text a start may be (narrowed so for every mypy version)
        return now, now - lookback
    midnight = dt.datetime.combine(start, dt.time(), tzinfo=zoneinfo.ZoneInfo(timezone))
    begin = midnight.astimezone(dt.UTC).replace(tzinfo=None)
    return begin, begin


def read_or_start(
    conn: Connection,
    tables: StreamTables,
    start: Literal["now"] | dt.date,
    lookback: dt.timedelta,
    *,
    now: dt.datetime,
    timezone: str,
    run_id: str,
) -> Mark:
    """The pair's mark; a pair seen for the first time starts where its `start` says (recorded at once)."""
    row = conn.fetch_one(
        f"SELECT high_water, floor_at, pruned_below FROM {tables.cursors} WHERE stream = ? AND destination = ?",
        tables.pair,
    )
    if row is not None:
        return Mark(*row)
    high_water, floor = start_point(start, lookback, now, timezone)
    conn.execute(
        f"INSERT INTO {tables.cursors} VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
        [*tables.pair, high_water, floor, now, now, run_id],
    )
    return Mark(high_water, floor, None, new=True)


def advance_sql(tables: StreamTables) -> str:
    """Raise the mark to a settled cursor value (never lower it); bound: value, now, run id, stream, destination."""
    return (
        f"UPDATE {tables.cursors} SET high_water = greatest(high_water, ?), updated_at = ?, run_id = ? "
        "WHERE stream = ? AND destination = ?"
    )


def prune(conn: Connection, tables: StreamTables, lookback: dt.timedelta) -> int:
    """Forget sent-log rows older than high_water - 2 x lookback; returns how many."""
    row = conn.fetch_one(f"SELECT high_water FROM {tables.cursors} WHERE stream = ? AND destination = ?", tables.pair)
    if row is None:
        return 0
    below = row[0] - 2 * lookback
    (count,) = conn.fetch_row(f"SELECT count(*) FROM {tables.sent} WHERE cursor_value < ?", [below])
    with conn.transaction():
        if count:
            conn.execute(f"DELETE FROM {tables.sent} WHERE cursor_value < ?", [below])
        conn.execute(
            f"UPDATE {tables.cursors} SET pruned_below = greatest(coalesce(pruned_below, ?), ?) "
            "WHERE stream = ? AND destination = ?",
            [below, below, *tables.pair],
        )
    return count


def current(conn: Connection, tables: StreamTables) -> dt.datetime | None:
    row = conn.fetch_one(f"SELECT high_water FROM {tables.cursors} WHERE stream = ? AND destination = ?", tables.pair)
    return row[0] if row else None
