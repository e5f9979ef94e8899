"""Skipping a step whose inputs are exactly as they were: what makes a sync with nothing to send cheap.

After a model, an audience snapshot or a delta is computed in full, the step records a fingerprint of everything
that decides its output: its definition (SQL, condition, fields), the clock values it reads, and the content of
every table it reads (the engine's content marker: row count, a hash of every row, the columns). It records its
own output table's marker beside it. On the next plain full run, if both are the same again the output would come
out the same, so the step keeps it and says so in its metadata ("skipped"). Anything else (an input or the output
touched, another definition, an engine that cannot tell, a clock read that moves) computes in full, as before.

What reads the clock: `current_date` alone (today's date) goes into the fingerprint, so such a step is skipped
within a day and recomputed when the date moves; `current_timestamp`, `now()` and the like (a 48-hour window)
move on every run, and functions such as random() answer differently each time: those steps are never skipped.

A delta adds what its ledger holds: with the snapshot unchanged, only rows of its previous delta the destination
has not acknowledged (rejected, unsent) can still differ, so it compares those keys only (none: an empty delta);
acknowledgements not folded yet are folded first, and rows in flight from a killed run send it back to the full
comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from ..project.incremental import RANDOM_FUNCTIONS, RANDOM_NAMES, TIME_FUNCTIONS, TIME_NAMES
from ..store.registry import REFRESH_STATE
from ..warehouse import Connection
from ..warehouse.sql import DIALECT, table

#: The refresh_state row a step keeps its fingerprint in (a reader with no journal cursor: seq 0, reads nothing).
PREFIX = "unchanged:"
FINGERPRINT = "(fingerprint)"


@dataclass(frozen=True)
class Clock:
    """How a piece of SQL depends on when it runs: not at all, on today's date, or on more (never skipped)."""

    reads_date: bool = False
    #: Why the SQL can never be skipped (it reads the time of day, or calls random()), else "".
    volatile: str = ""


def clock_of(*sql: str | None) -> Clock:
    """What the given SQL (queries or conditions, DuckDB dialect) reads of the clock, found by parsing it."""
    reads_date = False
    for text in sql:
        if not text:
            continue
        try:
            tree = sqlglot.parse_one(_as_query(text), dialect=DIALECT)
        except sqlglot.errors.SqlglotError as exc:
            return Clock(volatile=f"its SQL could not be analysed ({str(exc).splitlines()[0]})")
        for node in tree.walk():
            name = node.name.lower() if isinstance(node, exp.Anonymous) else ""
            if isinstance(node, RANDOM_FUNCTIONS) or name in RANDOM_NAMES:
                return Clock(volatile=f"it calls {node.sql(DIALECT)}, which answers differently on every run")
            if isinstance(node, exp.CurrentDate) or name == "today":
                reads_date = True
            elif isinstance(node, TIME_FUNCTIONS) or name in TIME_NAMES:
                return Clock(volatile=f"it reads the clock ({node.sql(DIALECT)}), which moves on every run")
    return Clock(reads_date=reads_date)


def tables_read(*sql: str | None) -> list[tuple[str | None, str]] | None:
    """The (schema, table) every given query or condition reads, CTE names left out; None when it also reads
    something that is not a table (a file, a table function such as read_parquet()) or cannot be parsed."""
    found: dict[tuple[str | None, str], None] = {}
    for text in sql:
        if not text:
            continue
        try:
            tree = sqlglot.parse_one(_as_query(text), dialect=DIALECT)
        except sqlglot.errors.SqlglotError:
            return None
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        for node in tree.find_all(exp.Table):
            if not isinstance(node.this, exp.Identifier):
                return None
            if not (not node.db and node.name in ctes):
                found[(node.db or None, node.name)] = None
    return list(found)


def _as_query(text: str) -> str:
    """A query as it is; a condition (an audience's `where`, a member condition) as the WHERE of one."""
    stripped = text.strip().rstrip(";")
    try:
        parsed = sqlglot.parse_one(stripped, dialect=DIALECT)
    except sqlglot.errors.SqlglotError:
        parsed = None
    if isinstance(parsed, exp.Query):
        return stripped
    return f"SELECT 1 WHERE {stripped}"


#: Content markers already read, by (schema, table): the quiet check reads each table once for every step.
Markers = dict[tuple[str | None, str], str]


def read_markers(conn: Connection, tables: Sequence[tuple[str | None, str]], known: Markers | None) -> list[str] | None:
    """The content markers of `tables` (None: the engine cannot tell); those in `known` are not read again."""
    if known is None:
        return conn.content_markers(list(tables))
    missing = list(dict.fromkeys(t for t in tables if t not in known))
    if missing:
        found = conn.content_markers(missing)
        if found is None:
            return None
        known.update(zip(missing, found))
    return [known[t] for t in tables]


@dataclass(frozen=True)
class Inputs:
    """A step's fingerprint of what decides its output, or None with the reason it cannot have one."""

    fingerprint: str | None
    why: str = ""


def fingerprint(
    conn: Connection,
    definition: object,
    tables: Sequence[tuple[str | None, str]] | None,
    clock: Clock,
    today: str,
    known: Markers | None = None,
) -> Inputs:
    """The fingerprint of a step's definition, the clock values it reads (`today`: the run's date) and its tables
    (None: it reads something else too, and is never skipped)."""
    if clock.volatile:
        return Inputs(None, f"never skipped: {clock.volatile}")
    if tables is None:
        return Inputs(None, "never skipped: it reads something other than tables (a file, a table function)")
    markers = read_markers(conn, tables, known) if tables else []
    if markers is None:
        return Inputs(None, "never skipped: this warehouse cannot tell cheaply whether a table changed")
    absent = [name for (_, name), marker in zip(tables, markers) if marker == "absent"]
    if absent:
        # What DuckDB reads under a name no table has is a file or a variable of the process: it can change unseen.
        return Inputs(None, f"not skipped: it reads {', '.join(absent)}, which the warehouse has no table of")
    parts = [
        str(definition),
        today if clock.reads_date else "",
        *(f"{s}.{t}={m}" for (s, t), m in zip(tables, markers)),
    ]
    return Inputs(hashlib.sha256(json.dumps(parts).encode()).hexdigest())


def output_marker(conn: Connection, output: tuple[str | None, str], known: Markers | None = None) -> str | None:
    markers = read_markers(conn, [output], known)
    return None if markers is None or markers[0] == "absent" else markers[0]


def unchanged(
    conn: Connection,
    schema: str,
    reader: str,
    inputs: Inputs,
    output: tuple[str | None, str] | None,
    known: Markers | None = None,
) -> bool:
    """Whether `reader` last recorded these very inputs, and its output table (if it has one) is still what it
    wrote then."""
    if inputs.fingerprint is None:
        return False
    row = conn.fetch_one(f"SELECT guards FROM {table(schema, REFRESH_STATE.name)} WHERE reader = ?", [PREFIX + reader])
    if row is None or not row[0]:
        return False
    recorded = json.loads(row[0]).get(FINGERPRINT)
    if not recorded or recorded[0] != inputs.fingerprint:
        return False
    if output is None:
        return True
    return recorded[1] is not None and recorded[1] == output_marker(conn, output, known)


def record(
    conn: Connection, schema: str, reader: str, inputs: Inputs, output: tuple[str | None, str] | None, now: object
) -> None:
    """After a full computation from `inputs` (taken before it began): remember them with the output's marker."""
    if inputs.fingerprint is None and conn.content_markers([]) is None:
        return  # this engine never records a fingerprint: none to drop (and no statement spent on it)
    state = table(schema, REFRESH_STATE.name)
    conn.execute(f"DELETE FROM {state} WHERE reader = ?", [PREFIX + reader])
    if inputs.fingerprint is None:
        return
    marker = output_marker(conn, output) if output is not None else None
    conn.execute(
        f"INSERT INTO {state} VALUES (?, 0, NULL, ?, '|', ?)",
        [PREFIX + reader, json.dumps({FINGERPRINT: [inputs.fingerprint, marker]}), now],
    )


def forget(conn: Connection, schema: str, readers: Iterable[str]) -> None:
    """Make the next run of these readers compute in full (their output was changed another way)."""
    for reader in readers:
        conn.execute(f"DELETE FROM {table(schema, REFRESH_STATE.name)} WHERE reader = ?", [PREFIX + reader])
