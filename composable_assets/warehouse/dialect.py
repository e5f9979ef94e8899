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
    return node


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
        tree = tree.transform(_rewrite, target, aliases)
        if isinstance(tree, exp.Create) and tree.args.get("replace") and (tree.kind or "").upper() == "TABLE":
            tree.set("replace", False)
            drop = exp.Drop(tables=[tree.this.copy()], kind="TABLE", exists=True)
            statements.append(drop.sql(target))
        statements.append(tree.sql(target))
    text = "; ".join(statements)
    if placeholder == "%s":
        text = text.replace("%", "%%")
    return text.replace(_PARAM_TOKEN, placeholder)
