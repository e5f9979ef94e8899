"""The ledger: per pair, what the destination has acknowledged. Acks are checkpointed per batch, then folded in."""

from __future__ import annotations

import datetime as dt

from ..store import PairTables
from ..store.registry import SYNC_LOG
from ..warehouse import Connection

# The sync log's columns, in the order the SELECTs below produce them.
_LOG_COLUMNS = ", ".join(SYNC_LOG.columns)


def record_acks(
    conn: Connection, tables: PairTables, run_id: str, ranges: list[tuple[int, int]], now: dt.datetime
) -> None:
    """Checkpoint acknowledged ranges of delta rows in one small append (one commit), before more is delivered."""
    if not ranges:
        return
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, false)"] * len(ranges))
    params: list = []
    for first, last in ranges:
        params += [tables.audience, tables.destination, run_id, first, last, now]
    conn.execute(f"INSERT INTO {tables.acks} VALUES {rows}", params)


def record_intent(
    conn: Connection, tables: PairTables, run_id: str, first_seq: int, last_seq: int, now: dt.datetime
) -> None:
    """Declare delta rows first_seq..last_seq as possibly in flight, durably, before any of them is sent."""
    conn.execute(
        f"INSERT INTO {tables.inflight} VALUES (?, ?, ?, ?, ?, ?)",
        [tables.audience, tables.destination, run_id, first_seq, last_seq, now],
    )


def clear_intents(conn: Connection, tables: PairTables, run_id: str | None = None) -> None:
    """Forget one run's intent rows (it ended in order), or every intent row of the pair (leftovers handled)."""
    conn.execute(
        f"DELETE FROM {tables.inflight} WHERE audience = ? AND destination = ? AND (? IS NULL OR run_id = ?)",
        [tables.audience, tables.destination, run_id, run_id],
    )


#: Acknowledged delta rows folded per MERGE, by engine; an engine not listed folds everything in one MERGE.
#: DuckDB runs in this process, and one MERGE holds every acknowledged row at once (the window keeping each key's
#: newest row, the MERGE's join): 5.3 GB at 5M rows without a memory_limit; with the default one it spills, and
#: 10M rows took 136 s of CPU. Slices of this many rows took 81 s, under the same limit (docs/performance.md). A
#: warehouse server bounds its own memory, and BigQuery bills each statement's scan: the others keep one MERGE.
FOLD_SLICE_ROWS = {"duckdb": 500_000}


def fold_acks(conn: Connection, tables: PairTables, slice_rows: int | None = None) -> int:
    """Apply every checkpointed, not yet folded ack to the ledger by set-based MERGE; returns ranges applied.

    Called after each sync and before anything reads the ledger, so a crash between the two loses nothing.
    `slice_rows`: merge the acknowledged rows in slices of this many delta rows (`_seq` windows, oldest first), each
    its own MERGE; default `FOLD_SLICE_ROWS` for the engine. Every slice runs in the one transaction, so the ledger,
    the sync log and the acks' `folded` change together or not at all, as with one MERGE.
    """
    pair = [tables.audience, tables.destination]
    pending = conn.fetch_row(
        f"SELECT count(*) FROM {tables.acks} WHERE audience = ? AND destination = ? AND NOT folded", pair
    )[0]
    if not pending:
        return 0
    slice_rows = slice_rows or FOLD_SLICE_ROWS.get(conn.dialect)
    newest = "" if _one_run_apart(conn, tables, pair) else _NEWEST_PER_KEY
    # A fold writes a table's worth of rows (the ledger and the sync log): stored as bulk writes are. The setting is
    # taken outside the transaction, so a failed fold's rollback comes first and the setting can be put back.
    with conn.bulk_writes(), conn.transaction():
        if slice_rows is None:
            _fold(conn, tables, "", pair, newest)
        else:
            # Windows of `_seq`, oldest first: a key acknowledged in several windows ends as its newest row, as the
            # one MERGE's "newest row per key" has it. Each window starts at the next acknowledged seq, so gaps
            # between acknowledged ranges (rows not acknowledged, archived runs) cost no empty MERGE.
            first = conn.fetch_row(
                f"SELECT min(first_seq) FROM {tables.acks} WHERE audience = ? AND destination = ? AND NOT folded", pair
            )[0]
            while first is not None:
                last = first + slice_rows - 1
                _fold(conn, tables, "AND d._seq BETWEEN ? AND ? ", [*pair, first, last], newest)
                first = conn.fetch_row(
                    f"SELECT min(greatest(first_seq, ?)) FROM {tables.acks} "
                    "WHERE audience = ? AND destination = ? AND NOT folded AND last_seq > ?",
                    [last + 1, *pair, last],
                )[0]
        conn.execute(
            f"UPDATE {tables.acks} SET folded = true WHERE audience = ? AND destination = ? AND NOT folded", pair
        )
    return pending


# A key acknowledged by several runs (added, then updated), or by overlapping ack ranges, ends as its latest
# acknowledged row.
_NEWEST_PER_KEY = "QUALIFY row_number() OVER (PARTITION BY d._key ORDER BY d._seq DESC) = 1"


def _one_run_apart(conn: Connection, tables: PairTables, pair: list) -> bool:
    """Whether the unfolded acks cover rows of one delta run, each row once: then every acknowledged row is its key's
    only one (a run holds one row per key), and the fold need not rank the rows per key.

    The usual fold: a sync's own acks, disjoint ranges of the run it sent (a few per 10,000 rows). Ranking 100,000
    acknowledged rows per key cost about as much CPU as inserting them into the ledger.
    """
    ranges = conn.fetch_all(
        f"SELECT first_seq, last_seq FROM {tables.acks} WHERE audience = ? AND destination = ? AND NOT folded "
        "ORDER BY first_seq",
        pair,
    )
    if not ranges or any(first <= last for (_, last), (first, _) in zip(ranges, ranges[1:])):
        return False
    within = conn.fetch_one(
        f"SELECT 1 FROM {tables.delta_runs} WHERE audience = ? AND destination = ? AND first_seq <= ? AND last_seq >= ?",
        [*pair, ranges[0][0], max(last for _, last in ranges)],
    )
    return within is not None


def _fold(conn: Connection, tables: PairTables, window: str, params: list, newest: str = _NEWEST_PER_KEY) -> None:
    """The sync log rows and the ledger MERGE of the unfolded acks' rows, of those `window` (SQL, bound by `params`
    after the pair) keeps; `newest` ("" when each key has one such row) keeps each key's newest."""
    acked = (
        "SELECT d._op, d._key, d._identifier, d._hash, d._fields, a.run_id, a.acked_at "
        f"FROM {tables.acks} AS a JOIN {tables.delta} AS d ON d._seq BETWEEN a.first_seq AND a.last_seq "
        f"WHERE a.audience = ? AND a.destination = ? AND NOT a.folded {window}{newest}"
    )
    # Provenance: every acknowledged row (not only each key's latest) enters the sync log with the fold.
    conn.execute(
        f"INSERT INTO {tables.sync_log} ({_LOG_COLUMNS}) "
        "SELECT d._partition, a.run_id, a.audience, a.destination, d._key, d._identifier, d._op, d._hash, "
        "'delivered', CAST(NULL AS VARCHAR), d._run_id, d._seq, a.acked_at "
        f"FROM {tables.acks} AS a JOIN {tables.delta} AS d ON d._seq BETWEEN a.first_seq AND a.last_seq "
        f"WHERE a.audience = ? AND a.destination = ? AND NOT a.folded {window}".rstrip(),
        params,
    )
    if conn.fetch_one(f"SELECT 1 FROM {tables.ledger} LIMIT 1") is None:
        # A first sync's fold: no key can match, so the MERGE would only insert; a plain INSERT does that for about
        # half the work (its join with the ledger and its matching are skipped).
        _insert(conn, tables, acked, params)
    elif conn.has_merge:
        _merge(conn, tables, acked, params)
    else:
        _delete_then_insert(conn, tables, acked, params)


def record_rejections(conn: Connection, tables: PairTables, rows: list[list]) -> None:
    """Record rejected delta rows in sync_failures and the sync log, together (one transaction).

    `rows`: [audience, destination, partition, run_id, seq, key, op, reason, failed_at] each, of one run and one failed_at.
    """
    if not rows:
        return
    placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
    with conn.transaction():
        conn.execute(f"INSERT INTO {tables.failures} VALUES {placeholders}", [v for row in rows for v in row])
        # The identifier and hash come from the delta row; run id, time and seq range select just these rows.
        conn.execute(
            f"INSERT INTO {tables.sync_log} ({_LOG_COLUMNS}) "
            "SELECT f.partition_date, f.run_id, f.audience, f.destination, f.key, d._identifier, f.op, d._hash, "
            "'rejected', f.reason, d._run_id, f.seq, f.failed_at "
            f"FROM {tables.failures} AS f JOIN {tables.delta} AS d ON d._seq = f.seq "
            "WHERE f.audience = ? AND f.destination = ? AND f.run_id = ? AND f.failed_at = ? AND f.seq BETWEEN ? AND ?",
            [
                tables.audience,
                tables.destination,
                rows[0][3],
                rows[0][8],
                min(r[4] for r in rows),
                max(r[4] for r in rows),
            ],
        )


def _merge(conn: Connection, tables: PairTables, acked: str, params: list) -> None:
    conn.execute(
        f"MERGE INTO {tables.ledger} AS l USING ({acked}) AS s ON l._key = s._key "
        "WHEN MATCHED AND s._op = 'remove' THEN DELETE "
        "WHEN MATCHED THEN UPDATE SET _identifier = s._identifier, _hash = s._hash, _fields = s._fields, "
        "_synced_at = s.acked_at, _run_id = s.run_id "
        "WHEN NOT MATCHED AND s._op <> 'remove' THEN INSERT (_key, _identifier, _hash, _fields, _synced_at, _run_id) "
        "VALUES (s._key, s._identifier, s._hash, s._fields, s.acked_at, s.run_id)",
        params,
    )


def _delete_then_insert(conn: Connection, tables: PairTables, acked: str, params: list) -> None:
    """The MERGE for engines without it (PostgreSQL before 15): same result, inside the caller's transaction."""
    conn.execute(f"DELETE FROM {tables.ledger} WHERE _key IN (SELECT _key FROM ({acked}) AS s)", params)
    _insert(conn, tables, acked, params)


def _insert(conn: Connection, tables: PairTables, acked: str, params: list) -> None:
    """Each acknowledged key's newest row into the ledger, unless it was removed (no row of it is there)."""
    conn.execute(
        f"INSERT INTO {tables.ledger} (_key, _identifier, _hash, _fields, _synced_at, _run_id) "
        f"SELECT _key, _identifier, _hash, _fields, acked_at, run_id FROM ({acked}) AS s WHERE _op <> 'remove'",
        params,
    )
