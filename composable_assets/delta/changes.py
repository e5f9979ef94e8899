"""The change journal: which keys changed in which table, so a minute-level step can touch only those.

Writers append (relation, key, seq): the landing loader for the rows it loads, each incremental model and audience
for the keys it recomputed. A NULL key means "everything changed" (a full recompute whose rows were not compared).
Each reader (a model, an audience snapshot, a delta) keeps its own cursor in `refresh_state`: the journal's seq up
to which it has read, the clock it last pinned (for rolling windows), and per table it watches the row count and
newest `updated_at` it saw (the guard that sends a step back to the full recompute when a table changed in a way
no journal explains, such as a direct DELETE).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from ..store.registry import KEY_CHANGES, REFRESH_STATE
from ..warehouse import Connection
from ..warehouse.sql import ident, table

JOURNAL = KEY_CHANGES.name
STATE = REFRESH_STATE.name
# Journal rows older than this are dropped; a reader whose cursor is behind them refreshes in full.
JOURNAL_DAYS = 8
# The column a table's rows carry their last change in; rows past a reader's cursor count as changed keys.
UPDATED_AT = "updated_at"


def relation(table_name: str, column: str) -> str:
    """The journal's name for "the values of `column` in `table_name`"."""
    return f"{table_name}:{column}"


def next_seq(conn: Connection, schema: str) -> int:
    """The next batch's seq: past every journal row and every reader's cursor (read rows are deleted, so the
    journal alone may be empty; a seq a reader has passed must never be handed out again)."""
    return conn.fetch_row(
        f"SELECT greatest(coalesce((SELECT max(seq) FROM {table(schema, JOURNAL)}), 0), "
        f"coalesce((SELECT max(seq) FROM {table(schema, STATE)}), 0)) + 1"
    )[0]


def journal(
    conn: Connection, schema: str, name: str, keys_sql: str, params: list | None = None, *, now: dt.datetime
) -> None:
    """Append the keys `keys_sql` selects (one column named `key`) under `name`, as one batch (one seq)."""
    seq = next_seq(conn, schema)
    conn.execute(
        f"INSERT INTO {table(schema, JOURNAL)} SELECT ?, CAST(key AS VARCHAR), ?, ? FROM ({keys_sql}) AS changed",
        [name, seq, now, *(params or [])],
    )


def journal_everything(conn: Connection, schema: str, name: str, *, now: dt.datetime) -> None:
    """Every key of `name` may have changed: readers refresh in full."""
    conn.execute(f"INSERT INTO {table(schema, JOURNAL)} VALUES (?, NULL, ?, ?)", [name, next_seq(conn, schema), now])


def prune(conn: Connection, schema: str, now: dt.datetime) -> None:
    """Drop old journal rows, leaving a NULL-key marker at their place so a reader that missed them refreshes in full."""
    cutoff = now - dt.timedelta(days=JOURNAL_DAYS)
    journal_table = table(schema, JOURNAL)
    row = conn.fetch_one(f"SELECT max(seq) FROM {journal_table} WHERE recorded_at < ? AND key IS NOT NULL", [cutoff])
    if row is None or row[0] is None:
        return
    conn.execute(
        f"INSERT INTO {journal_table} SELECT DISTINCT relation, NULL, ?, ? FROM {journal_table} "
        "WHERE recorded_at < ? AND key IS NOT NULL",
        [row[0], cutoff, cutoff],
    )
    conn.execute(f"DELETE FROM {journal_table} WHERE recorded_at < ? AND key IS NOT NULL", [cutoff])


@dataclass
class ReaderState:
    """Where one reader stands: journal seq read, the clock it pinned last, what it saw of each watched table."""

    reader: str
    seq: int = 0
    pinned: dict[str, str] | None = None
    guards: dict[str, list] = field(default_factory=dict)
    known: bool = False
    # The journal relations it reads: a journal row every reader of its relation has passed is deleted.
    reads: tuple[str, ...] = ()


def read_state(conn: Connection, schema: str, reader: str) -> ReaderState:
    row = conn.fetch_one(f"SELECT seq, pinned, guards FROM {table(schema, STATE)} WHERE reader = ?", [reader])
    if row is None:
        return ReaderState(reader)
    seq, pinned, guards = row
    return ReaderState(reader, seq, json.loads(pinned) if pinned else None, json.loads(guards or "{}"), True)


def write_state(conn: Connection, schema: str, state: ReaderState, now: dt.datetime) -> None:
    """Move the reader's cursor, then drop the journal rows every reader has passed.

    The journal holds member keys (customer ids): kept only until read, it holds no one for long, and a person who
    asked to be forgotten leaves it with the run that follows (governance/deletion.py also deletes them at once).
    """
    state_table = table(schema, STATE)
    conn.execute(f"DELETE FROM {state_table} WHERE reader = ?", [state.reader])
    conn.execute(
        f"INSERT INTO {state_table} VALUES (?, ?, ?, ?, ?, ?)",
        [
            state.reader,
            state.seq,
            json.dumps(state.pinned) if state.pinned else None,
            json.dumps(state.guards, sort_keys=True),
            "".join(f"|{r}" for r in state.reads) + "|",
            now,
        ],
    )
    conn.execute(
        f"DELETE FROM {table(schema, JOURNAL)} WHERE NOT EXISTS (SELECT 1 FROM {state_table} AS s "
        f"WHERE strpos(s.reads, '|' || {table(schema, JOURNAL)}.relation || '|') > 0 "
        f"AND s.seq < {table(schema, JOURNAL)}.seq)"
    )


def forget_state(conn: Connection, schema: str, reader: str) -> None:
    conn.execute(f"DELETE FROM {table(schema, STATE)} WHERE reader = ?", [reader])


@dataclass(frozen=True)
class Watched:
    """A table a reader depends on: journaled under `relations`, and/or with an `updated_at` column, keyed by `key`."""

    table: str
    key: str
    relations: tuple[str, ...] = ()
    updated_at: str | None = None
    # Whether the guard applies: its row count must move only as the journal and `updated_at` explain.
    guarded: bool = True


class Unexplained(Exception):
    """A watched table changed in a way the journal cannot tell by key; the reader refreshes in full."""


def changed_keys(
    conn: Connection, schema: str, state: ReaderState, watched: list[Watched], upto: int
) -> tuple[str, dict[str, list]]:
    """SQL selecting the keys (as text) changed since `state` in the watched tables, and the new guards.

    Raises Unexplained when a table changed in a way no key tells (rows gone, rows added with an old `updated_at`,
    a full recompute upstream).
    """
    parts: list[str] = []
    guards: dict[str, list] = {}
    journal_table = table(schema, JOURNAL)
    for w in watched:
        if w.guarded or w.updated_at:
            guards[w.table] = table_guard(conn, w)
        rows = guards.get(w.table, [0])[0]
        explained = journaled = 0
        if w.relations:
            names = ", ".join("?" for _ in w.relations)
            everything, journaled = conn.fetch_row(
                f"SELECT count(*) FILTER (WHERE key IS NULL), count(*) FROM {journal_table} "
                f"WHERE relation IN ({names}) AND seq > ? AND seq <= ?",
                [*w.relations, state.seq, upto],
            )
            if everything:
                raise Unexplained(f"{w.table} was refreshed in full")
            explained += journaled
            quoted = ", ".join("'" + r.replace("'", "''") + "'" for r in w.relations)
            parts.append(
                f"SELECT key FROM {journal_table} WHERE relation IN ({quoted}) AND seq > {int(state.seq)} "
                f"AND seq <= {int(upto)}"
            )
        seen = state.guards.get(w.table)
        if w.updated_at and seen and seen[1] is not None:
            previous = str(seen[1]).replace("'", "''")
            (recent,) = conn.fetch_row(
                f"SELECT count(*) FROM {ident(w.table)} WHERE {ident(w.updated_at)} > CAST(? AS TIMESTAMP)", [seen[1]]
            )
            explained += recent
            parts.append(
                f"SELECT CAST({ident(w.key)} AS VARCHAR) AS key FROM {ident(w.table)} "
                f"WHERE {ident(w.updated_at)} > CAST('{previous}' AS TIMESTAMP)"
            )
        if not w.guarded:
            continue
        if seen is None:
            raise Unexplained(f"{w.table} was not watched before")
        # Only journaled rows (a landed `_deleted` row) can explain rows gone; any change record, rows added.
        if seen[0] - rows > journaled:
            raise Unexplained(f"{w.table} lost {seen[0] - rows - journaled} row(s) no change record explains")
        if rows - seen[0] > explained:
            raise Unexplained(f"{w.table} gained {rows - seen[0] - explained} row(s) no change record explains")
    return " UNION ".join(parts) or "SELECT CAST(NULL AS VARCHAR) AS key WHERE false", guards


def table_guard(conn: Connection, w: Watched) -> list:
    """[row count, newest updated_at as text]: what the guard compares next time."""
    newest = f"max({ident(w.updated_at)})" if w.updated_at else "NULL"
    rows, latest = conn.fetch_row(f"SELECT count(*), CAST({newest} AS VARCHAR) FROM {ident(w.table)}")
    return [rows, latest]


def guards_now(conn: Connection, watched: list[Watched]) -> dict[str, list]:
    return {w.table: table_guard(conn, w) for w in watched if w.guarded or w.updated_at}
