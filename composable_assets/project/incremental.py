"""Which models can be maintained by key, proven from their SQL when the project loads.

A model is **incremental by K** when its output rows with K = k depend only on source rows whose key column equals
k: every table it reads is joined to the others by equality on the key, GROUP BY and PARTITION BY include the key,
subqueries are correlated on it, and nothing reads across keys (LIMIT, an uncorrelated subquery, an aggregate over
all rows, random()). Then a minute-level run recomputes the model for the keys that changed (the model's own SQL,
each table it reads filtered to those keys) instead of the whole table. Anything not proven is refreshed in full.

`current_timestamp`, `current_date` and `now()` are allowed in a WHERE condition over one table (a rolling window
such as "in the last 48 hours"): the run pins them to its own time, and the keys whose rows cross the window's edge
between two runs count as changed. See docs: "Which models run incrementally".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, find_all_in_scope, traverse_scope

DIALECT = "duckdb"
# A model file may name its key, or opt out, with one line: `-- incremental_key: customer_id` / `none`.
KEY_DIRECTIVE = "incremental_key"
# Functions whose value depends on when the query runs: pinned to the run's time.
TIME_FUNCTIONS = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime, exp.Localtimestamp)
TIME_NAMES = {"now", "get_current_timestamp", "transaction_timestamp", "today", "get_current_time"}
# Functions that give another answer each time: a model using one is refreshed in full.
RANDOM_FUNCTIONS = (exp.Rand, exp.Uuid)
RANDOM_NAMES = {"random", "gen_random_uuid", "uuid", "nextval", "setseed", "clock_timestamp", "statement_timestamp"}


class NotIncremental(Exception):
    """The model cannot be maintained by key; the message says why, for the user."""


@dataclass(frozen=True)
class Refresh:
    """How a model (or audience) is refreshed by a minute-level run."""

    key: str | None
    reason: str = ""
    # Every table the SQL reads -> the column holding the key in it.
    source_keys: dict[str, str] = field(default_factory=dict)
    # Table -> WHERE conditions over its columns that read the clock (rolling windows).
    time_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        return self.key is not None

    def describe(self) -> str:
        return f"incremental by {self.key}" if self.key else f"full: {self.reason}"


def declared_key(sql: str) -> str | None:
    """The key the file names with `-- incremental_key: <column>` ("none" opts out), or None."""
    for line in sql.splitlines():
        text = line.strip()
        if not text.startswith("--"):
            continue
        name, _, value = text[2:].partition(":")
        if name.strip().lower() == KEY_DIRECTIVE and value.strip():
            return value.strip()
    return None


#: A Python model's function is opaque: no key can be proven, so every run recomputes it in full.
PYTHON_REFRESH = Refresh(None, "a Python model is recomputed in full")
#: dbt decides how its models are built (a full table, a view, its own incremental models): a run asks dbt to build.
DBT_REFRESH = Refresh(None, "a dbt model is built by dbt")


def plan_refresh(
    sql: str, tables: set[str], model_keys: dict[str, str | None], candidates: list[str] | None = None
) -> Refresh:
    """Prove which output column (the declared one, else the first of `candidates` or of the output) keys the model.

    `tables`: every table the project knows (sources and models); `model_keys`: model -> its key (None: full).
    """
    declared = declared_key(sql)
    if declared and declared.lower() == "none":
        return Refresh(None, f"the file says `-- {KEY_DIRECTIVE}: none`")
    try:
        tree = _parse(sql)
        _refuse_random(tree)
        qualified = qualify(
            tree.copy(), dialect=DIALECT, validate_qualify_columns=False, expand_stars=False, quote_identifiers=False
        )
        root = traverse_scope(qualified)[-1]
        outputs = [s.alias_or_name for s in _selects(_branches(root)[0])]
    except NotIncremental as exc:
        return Refresh(None, str(exc))
    except sqlglot.errors.SqlglotError as exc:
        return Refresh(None, f"the SQL could not be analysed ({str(exc).splitlines()[0]})")
    tried = [declared] if declared else [c for c in (candidates or outputs) if c in outputs]
    reasons = []
    for key in tried:
        try:
            proof = _Proof(tables, model_keys)
            proof.select(root, key)
            return Refresh(key, source_keys=proof.source_keys, time_filters=proof.frozen_time_filters())
        except NotIncremental as exc:
            reasons.append(f"by {key}: {exc}")
    if not tried:
        return Refresh(None, "no output column to key it by")
    # The first column's reason: the one a user would expect to key the model (another can be named in the file).
    return Refresh(None, reasons[0])


def restricted_sql(sql: str, refresh: Refresh, predicate: Callable[[str, str], str], now: dict[str, str]) -> str:
    """The model's SQL with every table it reads filtered by `predicate(table, key column)`, its clock pinned."""
    tree = pin_time(_parse(sql), now)
    for scope in traverse_scope(tree):
        for source in list(scope.sources.values()):
            if not isinstance(source, exp.Table) or source.name not in refresh.source_keys:
                continue
            column = refresh.source_keys[source.name]
            alias = source.alias_or_name
            filtered = (
                exp.select("*")
                .from_(exp.to_table(source.name))
                .where(sqlglot.parse_one(predicate(source.name, column), dialect=DIALECT))
            )
            source.replace(exp.Subquery(this=filtered, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree.sql(DIALECT)


def pinned_sql(sql: str, now: dict[str, str]) -> str:
    """The model's SQL with the clock functions replaced by the run's time (`now`: function kind -> literal SQL)."""
    return pin_time(_parse(sql), now).sql(DIALECT)


def reads_clock(sql_or_tree: str | exp.Expr) -> bool:
    tree = _parse(sql_or_tree) if isinstance(sql_or_tree, str) else sql_or_tree
    return any(_is_time(node) for node in tree.walk())


def pin_time(tree: exp.Expr, now: dict[str, str]) -> exp.Expr:
    """Replace each clock function by the run's time (`now`: SQL literals, see `now_literals`).

    The time is a plain UTC TIMESTAMP (sessions run in UTC, so it compares as `current_timestamp` would), which lets
    the engine prune `occurred_at >= <time> - INTERVAL 48 HOUR` by the column's min/max, as it could not with a
    per-row cast to TIMESTAMPTZ; under AT TIME ZONE, where the two types differ, it stays a TIMESTAMPTZ.
    """

    def swap(node: exp.Expr) -> exp.Expr:
        if not _is_time(node):
            return node
        if isinstance(node, exp.CurrentDate) or (isinstance(node, exp.Anonymous) and node.name.lower() == "today"):
            kind = "date"
        else:
            kind = "timestamptz" if isinstance(node.parent, exp.AtTimeZone) else "timestamp"
        return sqlglot.parse_one(now[kind], dialect=DIALECT)

    return tree.transform(swap)


def flip_condition(conditions: tuple[str, ...], before: dict[str, str], after: dict[str, str]) -> str:
    """True for a row whose answer to any condition may differ between the two times: its key crossed a window edge.

    A condition's answer can only change where a part of it reading the clock changes (for AND, OR and NOT alike),
    so each such part is compared on its own: a column-versus-clock comparison (`occurred_at >= now() - INTERVAL
    48 HOUR`) becomes the band of values between its two edges, a range the engine prunes by min/max; any other
    part compares its two answers per row. A part that reads the same at both times (`current_date` within one
    day) cannot change and costs nothing: at 10M customers it was a full scan each run.
    """
    parts = [
        part
        for condition in conditions
        for part in _flips(sqlglot.parse_one(condition, dialect=DIALECT), before, after)
    ]
    return " OR ".join(parts) or "false"


def _flips(tree: exp.Expr, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Conditions, any of which holds for a row whose answer to `tree` may differ between the two times."""
    if not reads_clock(tree):
        return []
    if isinstance(tree, (exp.And, exp.Or)):
        return _flips(tree.left, before, after) + _flips(tree.right, before, after)
    if isinstance(tree, (exp.Not, exp.Paren)):
        return _flips(tree.this, before, after)
    old = pin_time(tree.copy(), before).sql(DIALECT)
    new = pin_time(tree.copy(), after).sql(DIALECT)
    if old == new:
        return []
    band = _band(tree, before, after)
    return [band if band is not None else f"(({old}) IS DISTINCT FROM ({new}))"]


def _band(tree: exp.Expr, before: dict[str, str], after: dict[str, str]) -> str | None:
    """`column BETWEEN` the two edges of a column-versus-clock comparison, or None for another shape."""
    if not isinstance(tree, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
        return None
    column, edge = tree.left, tree.right
    if not isinstance(column, exp.Column):
        column, edge = edge, column
    if not isinstance(column, exp.Column) or not reads_clock(edge) or edge.find(exp.Column):
        return None
    old = pin_time(edge.copy(), before).sql(DIALECT)
    new = pin_time(edge.copy(), after).sql(DIALECT)
    name = column.sql(DIALECT)
    # Inclusive at both ends: a row exactly on an edge is counted changed, which costs a recompute, never an answer.
    return f"({name} >= least({old}, {new}) AND {name} <= greatest({old}, {new}))"


def _parse(sql: str) -> exp.Expr:
    statements = [s for s in sqlglot.parse(sql.strip().rstrip(";"), dialect=DIALECT) if s is not None]
    if len(statements) != 1:
        raise NotIncremental("the file holds more than one statement")
    return statements[0]


def _is_time(node: exp.Expr) -> bool:
    return isinstance(node, TIME_FUNCTIONS) or (isinstance(node, exp.Anonymous) and node.name.lower() in TIME_NAMES)


def _refuse_random(tree: exp.Expr) -> None:
    for node in tree.walk():
        if isinstance(node, RANDOM_FUNCTIONS) or (
            isinstance(node, exp.Anonymous) and node.name.lower() in RANDOM_NAMES
        ):
            raise NotIncremental(f"it calls {node.sql(DIALECT)}, which gives another answer on every run")


def _branches(scope: Scope) -> list[Scope]:
    """The SELECTs a scope is made of (several for UNION)."""
    if isinstance(scope.expression, exp.SetOperation):
        if not isinstance(scope.expression, exp.Union):
            raise NotIncremental(f"{scope.expression.key.upper()} compares rows across keys")
        return [b for s in scope.set_operation_scopes for b in _branches(s)]
    return [scope]


def _selects(scope: Scope) -> list[exp.Expr]:
    """The output expressions of one branch (`_branches` splits a UNION into its SELECTs)."""
    expression = scope.expression
    if not isinstance(expression, exp.Selectable):
        raise NotIncremental(f"its {expression.key.upper()} has no output columns to follow the key through")
    return expression.selects


def _unwrap(node: exp.Expr) -> exp.Expr:
    while isinstance(node, (exp.Alias, exp.Paren)):
        node = node.this
    return node


def _conjuncts(condition: exp.Expr | None) -> list[exp.Expr]:
    if condition is None:
        return []
    condition = _unwrap(condition)
    if isinstance(condition, exp.And):
        return _conjuncts(condition.left) + _conjuncts(condition.right)
    return [condition]


class _Proof:
    """Walks the scopes from the output down, assigning each table read the column that carries the key."""

    def __init__(self, tables: set[str], model_keys: dict[str, str | None]):
        self.tables = tables
        self.model_keys = model_keys
        self.source_keys: dict[str, str] = {}
        self.time_filters: dict[str, list[str]] = {}

    def frozen_time_filters(self) -> dict[str, tuple[str, ...]]:
        return {t: tuple(dict.fromkeys(c)) for t, c in self.time_filters.items()}

    def select(self, scope: Scope, key: str) -> None:
        """`scope`'s output rows with `key` = k come only from rows keyed k in everything it reads."""
        branches = _branches(scope)
        position = None
        for branch in branches:
            selects = _selects(branch)
            if position is None:
                names = [s.alias_or_name for s in selects]
                if key not in names:
                    raise NotIncremental(f"its output has no column {key!r}")
                position = names.index(key)
            projection = _unwrap(selects[position])
            if not isinstance(projection, exp.Column):
                raise NotIncremental(f"{key!r} is computed ({projection.sql(DIALECT)}), not read from a table")
            source = self._source_of(branch, projection)
            self._outer_joins(branch, source)
            self._keyed_scope(branch, {source: projection.name}, {})

    def _outer_joins(self, scope: Scope, key_source: str) -> None:
        """The key must be read where every output row has one: not from a side an outer join may leave NULL."""
        for join in scope.expression.args.get("joins") or []:
            side = (join.side or "").upper()
            if side in ("RIGHT", "FULL"):
                raise NotIncremental(f"a {side} JOIN can give rows without the key")
            if side == "LEFT" and join.this.alias_or_name == key_source:
                raise NotIncremental(f"the key is read from {key_source}, the optional side of a LEFT JOIN")

    def _source_of(self, scope: Scope, column: exp.Column) -> str:
        if column.table:
            return column.table
        selected = list(scope.selected_sources)
        if len(selected) != 1:
            raise NotIncremental(f"column {column.name!r} does not say which table it comes from")
        return selected[0]

    def _keyed_scope(self, scope: Scope, keyed: dict[str, str], outer: dict[str, str]) -> None:
        """Key every source of `scope` from `keyed` (seeds) and equalities, with `outer`'s keyed sources visible."""
        select = scope.expression
        for clause in ("limit", "offset"):
            if select.args.get(clause):
                raise NotIncremental(f"{clause.upper()} picks rows across keys")
        distinct = select.args.get("distinct")
        if distinct is not None and distinct.args.get("on"):
            raise NotIncremental("DISTINCT ON picks rows across keys")
        sources = dict(scope.selected_sources)
        visible = {**outer, **keyed}
        # Only equalities every row meets (ANDed at the top of an ON or the WHERE), not ones under OR or NOT.
        where = select.args.get("where")
        conditions = _conjuncts(where.this if where is not None else None)
        for join in select.args.get("joins") or []:
            conditions += _conjuncts(join.args.get("on"))
        # Column = column conditions, as (left, right) columns.
        equalities = [
            (left, right)
            for e in conditions
            if isinstance(e, exp.EQ)
            for left, right in [(_unwrap(e.left), _unwrap(e.right))]
            if isinstance(left, exp.Column) and isinstance(right, exp.Column)
        ]
        changed = True
        while changed:
            changed = False
            for left, right in equalities:
                for a, b in ((left, right), (right, left)):
                    a_src = self._resolve(scope, a, visible)
                    b_src = self._resolve(scope, b, visible)
                    if a_src is None or b_src is None or b_src not in sources or b_src in visible:
                        continue
                    if visible.get(a_src) == a.name:
                        visible[b_src] = b.name
                        keyed[b_src] = b.name
                        changed = True
        # A subquery `key IN (SELECT col FROM t)` joins t on the key too.
        for node in find_all_in_scope(select, exp.In):
            query = node.args.get("query")
            this = _unwrap(node.this)
            if query is None or not isinstance(this, exp.Column):
                continue
            src = self._resolve(scope, this, visible)
            if src is None or visible.get(src) != this.name:
                raise NotIncremental(f"`{node.sql(DIALECT)}` is not a test on the key")
        missing = [name for name in sources if name not in keyed]
        if missing:
            raise NotIncremental(f"{', '.join(missing)} is not joined on the key")
        self._group_and_windows(scope, keyed)
        self._clock(scope, sources, keyed)
        for name, (_node, source) in scope.selected_sources.items():
            if isinstance(source, Scope):
                self.select(source, keyed[name])
            else:
                self._table(source, keyed[name])
        for child in scope.subquery_scopes:
            self._subquery(child, scope, visible)

    def _resolve(self, scope: Scope, column: exp.Column, visible: dict[str, str]) -> str | None:
        if column.table:
            return column.table
        selected = list(scope.selected_sources)
        return selected[0] if len(selected) == 1 else None

    def _subquery(self, child: Scope, parent: Scope, visible: dict[str, str]) -> None:
        """A subquery in WHERE or SELECT reads only the current key's rows if correlated on it (or `key IN (...)`)."""
        seeds: dict[str, str] = {}
        holder = child.expression.parent
        while holder is not None and isinstance(holder, (exp.Subquery, exp.Paren)):
            holder = holder.parent
        if isinstance(holder, exp.In) and isinstance(_unwrap(holder.this), exp.Column):
            selects = _selects(child)
            column = _unwrap(selects[0]) if len(selects) == 1 else None
            if isinstance(column, exp.Column):
                seeds[self._source_of(child, column)] = column.name
        if not child.is_correlated_subquery and not seeds:
            raise NotIncremental(
                f"the subquery ({child.expression.sql(DIALECT)[:60]}...) is not correlated on the key, so it reads "
                "every customer's rows"
            )
        try:
            self._keyed_scope(child, seeds, visible)
        except NotIncremental as exc:
            raise NotIncremental(f"in the subquery ({child.expression.sql(DIALECT)[:60]}...): {exc}") from None

    def _group_and_windows(self, scope: Scope, keyed: dict[str, str]) -> None:
        select = scope.expression

        def has_key(expressions: list[exp.Expr]) -> bool:
            for e in expressions:
                e = _unwrap(e)
                if isinstance(e, exp.Column) and keyed.get(self._resolve(scope, e, keyed) or "") == e.name:
                    return True
            return False

        group = select.args.get("group")
        if group is not None:
            if not has_key(group.expressions):
                raise NotIncremental("GROUP BY does not include the key")
        elif any(
            isinstance(n, exp.AggFunc) and n.find_ancestor(exp.Window, exp.Select) is select
            for n in find_all_in_scope(select, exp.AggFunc)
        ):
            raise NotIncremental("it aggregates over all rows (no GROUP BY on the key)")
        for window in find_all_in_scope(select, exp.Window):
            if not has_key(window.args.get("partition_by") or []):
                raise NotIncremental(f"the window {window.sql(DIALECT)[:60]} is not PARTITION BY the key")

    def _clock(self, scope: Scope, sources: dict, keyed: dict[str, str]) -> None:
        select = scope.expression
        clocks = [n for n in find_all_in_scope(select, exp.Expression) if _is_time(n)]
        if not clocks:
            return
        where = select.args.get("where")
        conjuncts = _conjuncts(where.this) if where is not None else []
        for clock in clocks:
            owner = next((c for c in conjuncts if clock is c or any(clock is n for n in c.walk())), None)
            if owner is None:
                raise NotIncremental(
                    f"{clock.sql(DIALECT)} is read outside a WHERE condition, so every row changes with the clock"
                )
            columns = list(owner.find_all(exp.Column))
            tables = {self._resolve(scope, c, keyed) for c in columns}
            if len(tables) != 1 or None in tables:
                raise NotIncremental(f"`{owner.sql(DIALECT)}` reads the clock and not exactly one table's columns")
            (alias,) = tables
            source = sources.get(alias)
            node = source[1] if isinstance(source, tuple) else source
            if not isinstance(node, exp.Table):
                raise NotIncremental(f"`{owner.sql(DIALECT)}` reads the clock on a derived table")
            bare = owner.copy()
            for column in bare.find_all(exp.Column):
                column.set("table", None)
            self.time_filters.setdefault(node.name, []).append(bare.sql(DIALECT))

    def _table(self, table: exp.Table, column: str) -> None:
        name = table.name
        if table.args.get("db") or name not in self.tables:
            raise NotIncremental(f"it reads {table.sql(DIALECT)}, which is not a source or model of the project")
        if name in self.model_keys:
            upstream = self.model_keys[name]
            if upstream is None:
                raise NotIncremental(f"it reads model {name}, which is refreshed in full")
            if upstream != column:
                raise NotIncremental(f"it reads model {name} by {column}, but {name} is kept by {upstream}")
        if self.source_keys.get(name, column) != column:
            raise NotIncremental(f"it reads {name} by two different columns ({self.source_keys[name]}, {column})")
        self.source_keys[name] = column


def model_refreshes(
    models: Mapping[str, str | Refresh | None], sources: set[str], order: list[str]
) -> dict[str, Refresh]:
    """Plan every model (`models`: name -> SQL, None for a Python model, a fixed plan for a dbt model) in dependency
    `order`, so a model sees its upstream's key."""
    keys: dict[str, str | None] = {}
    plans: dict[str, Refresh] = {}
    tables = set(sources) | set(models)
    for name in order:
        sql = models[name]
        plan = sql if isinstance(sql, Refresh) else PYTHON_REFRESH if sql is None else plan_refresh(sql, tables, keys)
        plans[name] = plan
        keys[name] = plan.key
    return plans


def now_literals(timestamp: dt.datetime, date: dt.date) -> dict[str, str]:
    """SQL literals for the pinned clock: `timestamp` (UTC, plain), `timestamptz` and `date`."""
    utc = timestamp.astimezone(dt.UTC) if timestamp.tzinfo is not None else timestamp
    plain = utc.replace(tzinfo=None).isoformat(sep=" ")
    return {
        "timestamp": f"CAST('{plain}' AS TIMESTAMP)",
        "timestamptz": f"CAST('{plain}+00:00' AS TIMESTAMPTZ)",
        "date": f"CAST('{date.isoformat()}' AS DATE)",
    }


def journal_columns(refreshes: dict[str, Refresh]) -> dict[str, list[str]]:
    """Table -> the columns incremental models read it by: what loading it must journal."""
    columns: dict[str, list[str]] = {}
    for plan in refreshes.values():
        for source, key in plan.source_keys.items():
            columns.setdefault(source, [])
            if key not in columns[source]:
                columns[source].append(key)
    return columns
