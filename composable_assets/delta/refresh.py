"""Refreshing a model table: in full, or for the changed keys only (see project/incremental.py for which qualify).

Incremental: the keys that changed since this model's cursor (journal, `updated_at`, rows crossing a rolling
window's edge) are recomputed with the model's own SQL, each table it reads filtered to those keys; their old rows
are deleted and the new ones inserted, in one transaction with the journal entry and the cursor.
Full: the model's SQL into a staging table, compared with the table it replaces when the model has a key, so that
readers downstream learn exactly which keys changed, and the nightly full run can say what it repaired.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from sqlglot import exp

from ..project.incremental import (
    Refresh, flip_condition, now_literals, pin_time, pinned_sql, reads_clock, restricted_sql,
)
from ..warehouse import Connection
from .changes import (
    UPDATED_AT,
    ReaderState,
    Unexplained,
    Watched,
    changed_keys,
    guards_now,
    ensure_journal,
    journal,
    journal_everything,
    next_seq,
    prune,
    read_state,
    relation,
    write_state,
)
from .snapshot import SnapshotResult
from .sql import DIALECT, ident, table

KEYS = "_composable_changed_keys"


@dataclass
class RefreshReport:
    mode: str  # "incremental" or "full"
    why: str = ""  # why a requested incremental refresh was full
    affected_keys: int = 0
    repaired_rows: int | None = None


def engine_now(conn: Connection) -> dict[str, str]:
    """The engine's own clock, as literals to pin a run's SQL to (every step of a run sees one time)."""
    stamp, day = conn.fetch_one("SELECT current_timestamp, current_date")
    if isinstance(stamp, str):
        stamp = dt.datetime.fromisoformat(stamp)
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    return now_literals(stamp, day)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def model_watches(conn: Connection, refresh: Refresh, landed: set[str], models: set[str]) -> list[Watched]:
    """What a model's cursor watches: each table it reads, by the column holding the key there."""
    columns = {t: {c for c, _ in conn.table_columns(None, t)} for t in refresh.source_keys if t not in models}
    watched = []
    for source, key in refresh.source_keys.items():
        if source in models:
            watched.append(Watched(source, key, (relation(source, key),), guarded=False))
            continue
        watched.append(
            Watched(
                source,
                key,
                (relation(source, key),) if source in landed else (),
                UPDATED_AT if UPDATED_AT in columns.get(source, set()) else None,
            )
        )
    return watched


def refresh_model(
    conn: Connection,
    *,
    schema: str,
    name: str,
    sql: str,
    refresh: Refresh,
    watched: list[Watched],
    incremental: bool,
) -> RefreshReport:
    """Bring the model's table up to date; `incremental`: the run asked for the incremental path."""
    ensure_journal(conn, schema)
    now = engine_now(conn)
    if not refresh.incremental:
        _replace(conn, name, sql)
        journal_everything(conn, schema, name, now=utc_now())
        return RefreshReport("full", refresh.describe())
    reader = f"model:{name}"
    state = read_state(conn, schema, reader)
    report = None
    if state.known and conn.table_exists(None, name):
        try:
            report = _incremental(conn, schema, name, sql, refresh, watched, state, now)
        except Unexplained as exc:
            why = str(exc)
        else:
            if incremental:
                return report
    else:
        why = "first refresh"
    # The full recompute; after an incremental catch-up, what it still changes is what the increments missed.
    repaired = _full_compared(conn, schema, name, sql, refresh, watched, now)
    if report is None:
        return RefreshReport("full", why)
    return RefreshReport("full", "", report.affected_keys, repaired)


def _replace(conn: Connection, name: str, sql: str) -> None:
    conn.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS {sql.strip().rstrip(';')}")


def _incremental(
    conn: Connection, schema: str, name: str, sql: str, refresh: Refresh, watched: list[Watched],
    state: ReaderState, now: dict[str, str],
) -> RefreshReport:
    upto = next_seq(conn, schema) - 1
    keys_sql, guards = changed_keys(conn, schema, state, watched, upto)
    parts = [keys_sql]
    if state.pinned:
        for source, conditions in refresh.time_filters.items():
            key = refresh.source_keys[source]
            parts.append(
                f"SELECT CAST({ident(key)} AS VARCHAR) FROM {ident(source)} "
                f"WHERE {flip_condition(conditions, state.pinned, now)}"
            )
    elif refresh.time_filters:
        raise Unexplained("no clock pinned yet")
    types = {t: dict(conn.table_columns(None, t)) for t in [*refresh.source_keys, name]}

    def predicate(source: str, column: str) -> str:
        return f"{ident(column)} IN (SELECT CAST(key AS {types[source][column]}) FROM {KEYS})"

    conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
    conn.execute(f"CREATE TEMP TABLE {KEYS} AS SELECT DISTINCT key FROM ({' UNION '.join(parts)}) AS k WHERE key IS NOT NULL")
    (count,) = conn.fetch_one(f"SELECT count(*) FROM {KEYS}")
    conn.execute("BEGIN TRANSACTION")
    try:
        if count:
            conn.execute(f"DELETE FROM {ident(name)} WHERE {predicate(name, refresh.key)}")
            conn.execute(f"INSERT INTO {ident(name)} {restricted_sql(sql, refresh, predicate, now)}")
            journal(conn, schema, relation(name, refresh.key), f"SELECT key FROM {KEYS}", now=utc_now())
        write_state(conn, schema, ReaderState(state.reader, upto, now, guards), utc_now())
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
    return RefreshReport("incremental", affected_keys=count)


def _full_compared(
    conn: Connection, schema: str, name: str, sql: str, refresh: Refresh, watched: list[Watched], now: dict[str, str]
) -> int | None:
    """Recompute in full; journal the keys whose rows differ from the table it replaces. Returns rows repaired."""
    upto = next_seq(conn, schema) - 1
    guards = guards_now(conn, watched)  # the cursor restarts here
    staging = ident(f"{name}__staging")
    target = ident(name)
    conn.execute(f"CREATE OR REPLACE TABLE {staging} AS {pinned_sql(sql, now)}")
    old = conn.table_columns(None, name)
    same_shape = old and old == conn.table_columns(None, f"{name}__staging")
    key = ident(refresh.key)
    repaired = None
    conn.execute("BEGIN TRANSACTION")
    try:
        if same_shape:
            differing = (
                f"SELECT {key} FROM (SELECT * FROM {staging} EXCEPT ALL SELECT * FROM {target}) AS n UNION ALL "
                f"SELECT {key} FROM (SELECT * FROM {target} EXCEPT ALL SELECT * FROM {staging}) AS o"
            )
            (repaired,) = conn.fetch_one(f"SELECT count(*) FROM ({differing}) AS d")
            if repaired:
                journal(conn, schema, relation(name, refresh.key), f"SELECT DISTINCT * FROM ({differing}) AS d", now=utc_now())
        else:
            journal_everything(conn, schema, relation(name, refresh.key), now=utc_now())
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(f"ALTER TABLE {staging} RENAME TO {target}")
        write_state(conn, schema, ReaderState(f"model:{name}", upto, now, guards), utc_now())
        prune(conn, schema, utc_now())
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return repaired


def snapshot_reader(audience: str) -> str:
    return f"audience:{audience}"


def snapshot_relation(audience: str) -> str:
    return relation(f"audience__{audience}", "_key")


def refresh_audience(
    conn: Connection,
    *,
    schema: str,
    audience: str,
    model: str,
    primary_key: str,
    model_refresh: Refresh,
    where: exp.Expression | None,
    watched: list[Watched],
    incremental: bool,
    build: Callable[..., SnapshotResult],
    update: Callable[..., int],
) -> tuple[RefreshReport, int | None]:
    """Refresh the audience snapshot, for the changed keys or in full; returns the report and the snapshot size.

    `build(where=..., on_swap=...)` is the full build (delta.snapshot.build_snapshot, bound to the audience);
    `update(where=..., keys_table=..., key_type=...)` recomputes the rows of some keys (delta.snapshot.update_snapshot).
    The model must be kept by the audience's primary key for the incremental path.
    """
    ensure_journal(conn, schema)
    now = engine_now(conn)
    pinned = pin_time(where.copy(), now) if where is not None else None
    reader = snapshot_reader(audience)
    if model_refresh.key != primary_key:
        why = model_refresh.describe() if not model_refresh.incremental else (
            f"the model is kept by {model_refresh.key}, the audience by {primary_key}"
        )
        result = build(where=pinned, on_swap=lambda staging, old: journal_everything(
            conn, schema, snapshot_relation(audience), now=utc_now()))
        return RefreshReport("full", why), result.size
    state = read_state(conn, schema, reader)
    report = None
    why = "first refresh"
    if state.known and conn.table_exists(schema, f"audience__{audience}"):
        try:
            report, size = _update_audience(conn, schema, audience, model, primary_key, where, watched, state, now, update)
        except Unexplained as exc:
            why = str(exc)
        else:
            if incremental:
                return report, size
    upto = next_seq(conn, schema) - 1
    guards = guards_now(conn, watched)
    repaired: list[int] = []

    def compare(staging: str, old: str) -> None:
        if conn.table_exists(schema, f"audience__{audience}"):
            differing = (
                f"SELECT _key FROM (SELECT * FROM {staging} EXCEPT ALL SELECT * FROM {old}) AS n UNION ALL "
                f"SELECT _key FROM (SELECT * FROM {old} EXCEPT ALL SELECT * FROM {staging}) AS o"
            )
            same_shape = conn.table_columns(schema, f"audience__{audience}") == conn.table_columns(
                schema, f"audience__{audience}__staging")
            if same_shape:
                (count,) = conn.fetch_one(f"SELECT count(*) FROM ({differing}) AS d")
                repaired.append(count)
                if count:
                    journal(conn, schema, snapshot_relation(audience), f"SELECT DISTINCT * FROM ({differing}) AS d",
                            now=utc_now())
            else:
                journal_everything(conn, schema, snapshot_relation(audience), now=utc_now())
        else:
            journal_everything(conn, schema, snapshot_relation(audience), now=utc_now())
        write_state(conn, schema, ReaderState(reader, upto, now, guards), utc_now())

    result = build(where=pinned, on_swap=compare)
    if report is None:
        return RefreshReport("full", why), result.size
    return RefreshReport("full", "", report.affected_keys, repaired[0] if repaired else None), result.size




def _update_audience(
    conn: Connection, schema: str, audience: str, model: str, primary_key: str, where: exp.Expression | None,
    watched: list[Watched], state: ReaderState, now: dict[str, str], update: Callable[..., int],
) -> tuple[RefreshReport, int]:
    upto = next_seq(conn, schema) - 1
    keys_sql, guards = changed_keys(conn, schema, state, watched, upto)
    parts = [keys_sql]
    if where is not None and reads_clock(where):
        if not state.pinned:
            raise Unexplained("no clock pinned yet")
        condition = where.sql(DIALECT)
        parts.append(
            f"SELECT CAST({ident(primary_key)} AS VARCHAR) FROM {ident(model)} "
            f"WHERE {flip_condition((condition,), state.pinned, now)}"
        )
    key_type = dict(conn.table_columns(None, model))[primary_key]
    conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
    conn.execute(f"CREATE TEMP TABLE {KEYS} AS SELECT DISTINCT key FROM ({' UNION '.join(parts)}) AS k WHERE key IS NOT NULL")
    (count,) = conn.fetch_one(f"SELECT count(*) FROM {KEYS}")
    conn.execute("BEGIN TRANSACTION")
    try:
        size = None
        if count:
            size = update(where=pin_time(where.copy(), now) if where is not None else None, keys_table=KEYS,
                          key_type=key_type)
            journal(conn, schema, snapshot_relation(audience), f"SELECT key FROM {KEYS}", now=utc_now())
        write_state(conn, schema, ReaderState(state.reader, upto, now, guards), utc_now())
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
    if size is None:
        (size,) = conn.fetch_one(f"SELECT count(*) FROM {table(schema, f'audience__{audience}')}")
    return RefreshReport("incremental", affected_keys=count), size


def delta_reader(audience: str, destination: str) -> str:
    return f"delta:{audience}:{destination}"


@dataclass
class DeltaScope:
    """Which keys a delta compares: `keys_table` (the incremental path) or None (every key), and how to move on."""

    keys_table: str | None
    affected_keys: int | None
    why: str
    commit: Callable[[], None]


def delta_scope(
    conn: Connection, *, schema: str, tables, watched: list[Watched], incremental: bool
) -> DeltaScope:
    """The keys this pair's delta must compare: changed in the snapshot (or who may receive) since its cursor, plus
    the keys of its previous delta not acknowledged yet (failed or unsent rows are compared again, as in full)."""
    ensure_journal(conn, schema)
    tables.ensure(conn)
    reader = delta_reader(tables.audience, tables.destination)
    state = read_state(conn, schema, reader)
    upto = next_seq(conn, schema) - 1
    now = engine_now(conn)

    def moved(guards: dict[str, list]) -> Callable[[], None]:
        return lambda: write_state(conn, schema, ReaderState(reader, upto, now, guards), utc_now())

    if not incremental:
        return DeltaScope(None, None, "", moved(guards_now(conn, watched)))
    if not state.known:
        return DeltaScope(None, None, "first refresh", moved(guards_now(conn, watched)))
    try:
        keys_sql, guards = changed_keys(conn, schema, state, watched, upto)
    except Unexplained as exc:
        return DeltaScope(None, None, str(exc), moved(guards_now(conn, watched)))
    unacknowledged = (
        f"SELECT d._key FROM {tables.delta} AS d WHERE d._seq >= (SELECT coalesce(max(first_seq), 0) "
        f"FROM {tables.delta_runs} WHERE audience = '{_quote(tables.audience)}' "
        f"AND destination = '{_quote(tables.destination)}') "
        f"AND NOT EXISTS (SELECT 1 FROM {tables.acks} AS a WHERE a.audience = '{_quote(tables.audience)}' "
        f"AND a.destination = '{_quote(tables.destination)}' AND d._seq BETWEEN a.first_seq AND a.last_seq)"
    )
    conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
    conn.execute(
        f"CREATE TEMP TABLE {KEYS} AS SELECT DISTINCT key FROM ({keys_sql} UNION {unacknowledged}) AS k(key) "
        "WHERE key IS NOT NULL"
    )
    (count,) = conn.fetch_one(f"SELECT count(*) FROM {KEYS}")
    return DeltaScope(KEYS, count, "", moved(guards))


def drop_keys(conn: Connection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {KEYS}")


def _quote(text: str) -> str:
    return text.replace("'", "''")
