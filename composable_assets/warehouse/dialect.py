"""SQL is written once, in the DuckDB dialect with `?` parameters; this renders it for another engine.

The one place where dialects meet: sqlglot transpiles each statement, and the few constructs it does not
render equivalently for a target are rewritten here, on the parsed tree:

- `CREATE OR REPLACE TABLE t AS ...` (DuckDB) -> `DROP TABLE IF EXISTS t; CREATE TABLE t AS ...` (Postgres has
  no OR REPLACE for tables; the connection runs both in one transaction).
- `json_object(k, v, ...)` -> `json_build_object(k, v, ...)` (sqlglot emits the SQL/JSON `JSON_OBJECT(k: v)`,
  which PostgreSQL only has from 16; both keep NULL values as JSON null, as DuckDB does).
- a subquery in FROM or JOIN without an alias gets one (PostgreSQL before 16 requires it).
- `?` -> the driver's placeholder (`%s` for psycopg), and a literal `%` is doubled, since the driver formats
  the statement with its parameters.

For Snowflake (sqlglot renders most of it equivalently: `json_object` -> `OBJECT_CONSTRUCT_KEEP_NULL`, which
keeps NULL values as JSON null; `md5(concat(...))` with NULL-safe arguments; `CREATE OR REPLACE TABLE`, QUALIFY,
MERGE and `IS DISTINCT FROM` exist there; TIMESTAMP -> TIMESTAMP_NTZ, JSON -> VARIANT):

- every identifier is quoted as written. Snowflake folds unquoted names to upper case and keeps quoted ones as
  written; our code quotes most names (`ident`) but not all, so quoting all of them makes `people` and
  `"people"` the same lower-case table, as they are in DuckDB. Statements on `information_schema` are left
  unquoted, since its views and columns are upper-case names.
- `range(a, b) AS r(i)` as a table -> `(SELECT CAST(value AS BIGINT) AS i FROM TABLE(FLATTEN(ARRAY_GENERATE_RANGE(a, b)))) AS r`
  (sqlglot emits the array function itself as a table, which Snowflake rejects).
- `?` stays `?` (the connector's qmark paramstyle binds it server-side).

DuckDB statements are never parsed here: DuckDB runs the SQL as written.
"""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp

SOURCE_DIALECT = "duckdb"
# Stands in for a bound parameter while the statement is rendered, then becomes the driver's placeholder.
_PARAM_TOKEN = "__composable_param__"


def _rewrite(node: exp.Expression, target: str, aliases: list[int]) -> exp.Expression:
    if isinstance(node, exp.Placeholder):
        return exp.var(_PARAM_TOKEN)
    if target == "postgres":
        if isinstance(node, exp.JSONObject):
            args: list[exp.Expression] = []
            for kv in node.expressions:
                args += [kv.this, kv.expression]
            return exp.Anonymous(this="json_build_object", expressions=args)
        if isinstance(node, exp.Subquery) and not node.alias and isinstance(node.parent, (exp.From, exp.Join)):
            aliases.append(len(aliases) + 1)
            node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_q{aliases[-1]}")))
    if target == "snowflake":
        if isinstance(node, exp.Identifier) and not node.quoted:
            node.set("quoted", True)
    return node


def _snowflake_range(node: exp.Expression) -> exp.Expression:
    """`range(a, b) AS r(i)` in FROM or JOIN -> a FLATTEN subquery Snowflake runs (same rows, same names)."""
    if not (isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries)):
        return node
    series = node.this
    if not series.args.get("is_end_exclusive"):
        return node  # generate_series (end inclusive) is rendered by sqlglot as is
    alias = node.args.get("alias")
    columns = alias.columns if alias else []
    name = columns[0].copy() if columns else exp.to_identifier("range", quoted=True)
    flatten = exp.Table(
        this=exp.Anonymous(
            this="TABLE",
            expressions=[exp.Anonymous(this="FLATTEN", expressions=[
                exp.Anonymous(this="ARRAY_GENERATE_RANGE", expressions=[series.args["start"].copy(), series.args["end"].copy()])
            ])],
        )
    )
    select = exp.select(exp.alias_(exp.cast(exp.column("value"), "BIGINT"), name)).from_(flatten)
    return exp.Subquery(
        this=select, alias=exp.TableAlias(this=alias.this.copy()) if alias and alias.this else None
    )


def _reads_information_schema(tree: exp.Expression) -> bool:
    return any((t.db or "").lower() == "information_schema" for t in tree.find_all(exp.Table))


@lru_cache(maxsize=2048)
def render(sql: str, target: str, placeholder: str = "%s") -> str:
    """`sql` (DuckDB dialect, `?` parameters) as the `target` dialect runs it, with the driver's placeholders."""
    if target == SOURCE_DIALECT:
        return sql
    statements: list[str] = []
    aliases: list[int] = []
    for tree in sqlglot.parse(sql, read=SOURCE_DIALECT):
        if tree is None:
            continue
        if target == "snowflake" and _reads_information_schema(tree):
            tree = tree.transform(lambda n: exp.var(_PARAM_TOKEN) if isinstance(n, exp.Placeholder) else n)
        else:
            tree = tree.transform(_rewrite, target, aliases)
        if target == "snowflake":
            tree = tree.transform(_snowflake_range)
        if target == "postgres" and isinstance(tree, exp.Create) and tree.args.get("replace") and (tree.kind or "").upper() == "TABLE":
            tree.set("replace", False)
            drop = exp.Drop(tables=[tree.this.copy()], kind="TABLE", exists=True)
            statements.append(drop.sql(target))
        statements.append(tree.sql(target))
    text = "; ".join(statements)
    if placeholder == "%s":
        text = text.replace("%", "%%")
    return text.replace(_PARAM_TOKEN, placeholder)
