"""What one (stream, destination) reads: the table's columns it needs, as one SQL row source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlglot import exp

from ..project import StreamSpec, StreamSyncSpec, parse_where
from ..warehouse import Connection
from ..warehouse.sql import DIALECT, ident, json_object

# Column types a cursor may have, as each engine's information_schema names them: naive timestamps are taken as UTC,
# dates as their midnight; timestamps with a time zone are converted to UTC.
TIMESTAMP_TYPES = (
    "TIMESTAMP",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "DATETIME",  # DuckDB
    "TIMESTAMP WITHOUT TIME ZONE",  # PostgreSQL
    "TIMESTAMP_NTZ",  # Snowflake
)
ZONED_TIMESTAMP_TYPES = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP_TZ", "TIMESTAMP_LTZ")
# Member key types whose values are equal exactly when their text is: a key column of one of these may be compared
# with a consent key of the same family as both are (integers of any width; Snowflake names its integers NUMBER).
KEY_TYPE_FAMILIES = (
    frozenset(
        {
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "INT",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "INT2",
            "INT4",
            "INT8",
            "INT64",
            "NUMBER",
        }
    ),
    frozenset({"VARCHAR", "TEXT", "STRING", "CHARACTER VARYING"}),
    frozenset({"UUID"}),
)
#: Stands, in a stream's native member condition (`allowed_native`), for the query giving the member keys of the
#: rows the condition is checked on, in a column `member` (see governance/consent.py).
MEMBER_KEYS = "{member_keys}"
# Engines that store a row's columns together: reading a row whole costs no more than reading its cursor, so a
# second pass over the window's rows (to read only the few that remain whole) would only add work there.
ROW_STORES = ("postgres",)


class StreamDataError(Exception):
    """The stream's table cannot be read as the stream file says (missing table or column, cursor not a time)."""


@dataclass(frozen=True)
class StreamShape:
    """One stream sync, reduced to what the engine needs."""

    stream: str
    table: str
    event_id_column: str
    cursor_column: str
    where: exp.Expr | None
    lookback: dt.timedelta
    start: Literal["now"] | dt.date
    identifier_column: str
    event: str
    properties: dict[str, str] = field(default_factory=dict)
    #: Option name -> column, for the columns the destination's options name (Braze purchase price, ...).
    extras: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    #: Who may be sent events at all: a condition on the table's member key column (the destination's consent
    #: purpose granted, no deletion request), or None; see governance/consent.py.
    key_column: str | None = None
    allowed: str | None = None
    #: The same condition comparing the key column with the consent table's key as they are, not as text, with
    #: MEMBER_KEYS for the keys checked; used when the two columns' types match. `native_against`: that key, as
    #: (table, column).
    allowed_native: str | None = None
    native_against: tuple[str, str] | None = None

    @classmethod
    def of(
        cls,
        spec: StreamSpec,
        sync: StreamSyncSpec,
        extras: dict[str, str] | None = None,
        key_column: str | None = None,
        allowed: str | None = None,
        allowed_native: str | None = None,
        native_against: tuple[str, str] | None = None,
    ) -> StreamShape:
        where = parse_where(spec.where, spec.path, None) if spec.where is not None else None
        return cls(
            stream=spec.name,
            table=spec.table,
            event_id_column=spec.event_id,
            cursor_column=spec.cursor,
            where=where,
            lookback=spec.lookback,
            start=spec.start,
            identifier_column=sync.identifier_column,
            event=sync.event,
            properties=dict(sync.properties),
            extras=dict(extras or {}),
            file=spec.path,
            key_column=key_column if allowed else None,
            allowed=allowed,
            allowed_native=allowed_native if allowed else None,
            native_against=native_against if allowed and allowed_native else None,
        )

    def columns(self) -> list[str]:
        """Every table column read, in a stable order."""
        named = [self.event_id_column, self.cursor_column, self.identifier_column]
        if self.key_column:
            named.append(self.key_column)
        return list(dict.fromkeys([*named, *self.properties.values(), *self.extras.values()]))

    def event_id_sql(self, alias: str = "e") -> str:
        """The deterministic event id: "<stream>:<value of the event_id column>"."""
        prefix = exp.Literal.string(f"{self.stream}:").sql(DIALECT)
        return f"concat({prefix}, CAST({alias}.{ident(self.event_id_column)} AS VARCHAR))"

    def rows_sql(self, conn: Connection) -> str:
        """A query over the table giving _event_id, _cursor, _identifier, _properties, _extras per usable row.

        Rows without an event id or a cursor value are left out: they cannot be deduplicated or ordered. So are rows
        of people the destination may not receive (consent not granted at send time, or no member key at all): they
        are never candidates, not even late ones, and the cursor moves past them.
        Checks the table against the file first (a source table's columns are only known here).
        """
        return self.select(conn)[0]

    def select(
        self,
        conn: Connection,
        within: str | None = None,
        params: Sequence = (),
        excluded: Sequence[tuple[str, Sequence]] = (),
    ) -> tuple[str, list]:
        """`rows_sql` for the rows `within` picks whose event id is in none of `excluded`: the query, its values.

        `within` is a condition on a row's cursor value and event id, written with `{cursor}` and `{event_id}` where
        they stand (e.g. the run's window, `{cursor} >= ? AND {cursor} <= ?`), `params` its bound values; `excluded`
        are queries of an `event_id` column (the sent log, intents) with their bound values.
        The rows `within` picks are a table of their own in the query, filtered by the cursor range before anything
        else: a run costs the rows it picks, not the table. Only for them are the event ids `excluded`, the member
        conditions and the event id worked out. On engines storing columns apart, the few rows left are then read
        again by event id, so that only theirs have the identifier and JSON columns read and built. The member
        conditions read the consent rows of the picked rows' members only, when the key columns' types allow
        comparing them as they are (`allowed_native`).
        """
        columns = self._checked_columns(conn)
        cursor = self._cursor_of(columns)
        key = ident(self.key_column) if self.key_column else None

        def picked(alias: str) -> list[str]:
            if within is None:
                return []
            return [f"({within.replace('{cursor}', cursor(alias)).replace('{event_id}', self.event_id_sql(alias))})"]

        def usable(alias: str) -> list[str]:
            where = [f"({self.where.sql(DIALECT)})"] if self.where is not None else []
            return [
                *picked(alias),
                *where,
                f"{alias}.{ident(self.event_id_column)} IS NOT NULL",
                f"{alias}.{ident(self.cursor_column)} IS NOT NULL",
            ]

        checks: list[str] = []
        check_params: list = []
        for query, values in excluded:
            checks.append(f"NOT EXISTS (SELECT 1 FROM ({query}) AS s WHERE s.event_id = {{event_id}})")
            check_params += list(values)
        allowed = self._member_condition(conn, columns)
        if allowed is not None:
            if MEMBER_KEYS in allowed:
                keys = f"SELECT k.{key} AS member FROM {ident(self.table)} AS k" + (
                    f" WHERE {' AND '.join(picked('k'))}" if within is not None else ""
                )
                allowed = allowed.replace(MEMBER_KEYS, keys)
                if within is not None:
                    check_params += list(params) * allowed.count(keys)
            checks += [f"{{alias}}.{key} IS NOT NULL", f"({allowed})"]

        def source(alias: str) -> str:
            """The usable rows `within` picks, as a table: the engine filters them before anything is checked."""
            return f"(SELECT * FROM {ident(self.table)} AS {alias} WHERE {' AND '.join(usable(alias))}) AS {alias}"

        def checked(alias: str) -> str:
            return " AND ".join(
                c.replace("{event_id}", self.event_id_sql(alias)).replace("{alias}", alias) for c in checks
            )

        projection = (
            f"SELECT {self.event_id_sql()} AS _event_id, {cursor('e')} AS _cursor, "
            f"CAST(e.{ident(self.identifier_column)} AS VARCHAR) AS _identifier, "
            f"{json_object(self.properties, alias='e')} AS _properties, "
            f"{json_object(self.extras, alias='e')} AS _extras "
            f"FROM {source('e')}"
        )
        if not checks:
            return projection, list(params)
        if conn.dialect in ROW_STORES:
            return f"{projection} WHERE {checked('e')}", [*params, *check_params]
        # The rows left after the checks are few (new ones, and those of people not allowed): read them whole by event
        # id (and member key: the conditions are about the person), so that the engine reads the wide columns of
        # those rows only, not of every row in the window.
        same = [f"n.{ident(self.event_id_column)} = e.{ident(self.event_id_column)}"]
        if allowed is not None:
            same.append(f"n.{key} = e.{key}")
        remaining = f"SELECT 1 FROM {source('n')} WHERE {' AND '.join(same)} AND {checked('n')}"
        return f"{projection} WHERE EXISTS ({remaining})", [*params, *params, *check_params]

    def _member_condition(self, conn: Connection, columns: dict[str, str]) -> str | None:
        """`allowed_native` when the key column's type matches the consent key's, else `allowed` (keys as text)."""
        if self.allowed_native is None or self.native_against is None or self.key_column is None:
            return self.allowed
        table, column = self.native_against
        theirs = {name.lower(): type_ for name, type_ in conn.table_columns(None, table)}
        mine = columns.get(self.key_column.lower())
        if mine is not None and column.lower() in theirs and same_key_type(mine, theirs[column.lower()]):
            return self.allowed_native
        return self.allowed

    def _checked_columns(self, conn: Connection) -> dict[str, str]:
        """The table's columns (lower-cased name -> type), checked against what the file names."""
        where = f" ({self.file.name})" if self.file is not None else ""
        columns = {name.lower(): type_ for name, type_ in conn.table_columns(None, self.table)}
        if not columns:
            raise StreamDataError(f"stream {self.stream}{where}: table `{self.table}` does not exist in the warehouse")
        missing = [c for c in self.columns() if c.lower() not in columns]
        if missing:
            raise StreamDataError(
                f"stream {self.stream}{where}: table `{self.table}` has no column "
                f"{', '.join(f'`{c}`' for c in missing)} (its columns: {', '.join(columns)})"
            )
        return columns

    def _cursor_of(self, columns: dict[str, str]) -> Callable[[str], str]:
        """The cursor value as a naive UTC timestamp, of the row with a given alias."""
        where = f" ({self.file.name})" if self.file is not None else ""
        type_ = columns[self.cursor_column.lower()].upper()
        if type_ in ZONED_TIMESTAMP_TYPES:
            # AT TIME ZONE (not DuckDB's timezone()) so that Snowflake gets CONVERT_TIMEZONE; the cast drops the zone.
            return lambda alias: f"CAST({alias}.{ident(self.cursor_column)} AT TIME ZONE 'UTC' AS TIMESTAMP)"
        if type_ in TIMESTAMP_TYPES or type_ == "DATE":
            return lambda alias: f"CAST({alias}.{ident(self.cursor_column)} AS TIMESTAMP)"
        raise StreamDataError(
            f"stream {self.stream}{where}: cursor column `{self.cursor_column}` is {type_}, not a timestamp or date"
        )


def same_key_type(mine: str, theirs: str) -> bool:
    """Whether keys of these two column types are equal exactly when their text is (so may be compared as they are)."""
    a, b = mine.upper(), theirs.upper()
    return any(a in family and b in family for family in KEY_TYPE_FAMILIES)
