"""PostgreSQL: what sqlglot does not render equivalently from DuckDB SQL.

- `CREATE OR REPLACE TABLE t AS ...` -> `DROP TABLE IF EXISTS t; CREATE TABLE t AS ...` (PostgreSQL has no OR
  REPLACE for tables; the connection runs both in one transaction).
- `json_object(k, v, ...)` -> `json_build_object(k, v, ...)` (sqlglot emits the SQL/JSON `JSON_OBJECT(k: v)`,
  which PostgreSQL only has from 16; both keep NULL values as JSON null, as DuckDB does).
- a subquery in FROM or JOIN without an alias gets one (PostgreSQL before 16 requires it).
"""

from __future__ import annotations

from sqlglot import exp


def _node(node: exp.Expression, aliases: list[int]) -> exp.Expression:
    if isinstance(node, exp.JSONObject):
        args: list[exp.Expression] = []
        for kv in node.expressions:
            args += [kv.this, kv.expression]
        return exp.Anonymous(this="json_build_object", expressions=args)
    if isinstance(node, exp.Subquery) and not node.alias and isinstance(node.parent, (exp.From, exp.Join)):
        aliases.append(len(aliases) + 1)
        node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_q{aliases[-1]}")))
    return node


def split_create_or_replace(tree: exp.Expression) -> list[exp.Expression]:
    """`CREATE OR REPLACE TABLE` -> DROP TABLE IF EXISTS, then CREATE TABLE."""
    if isinstance(tree, exp.Create) and tree.args.get("replace") and (tree.kind or "").upper() == "TABLE":
        tree.set("replace", False)
        return [exp.Drop(tables=[tree.this.copy()], kind="TABLE", exists=True), tree]
    return [tree]


def rewrite(tree: exp.Expression) -> list[exp.Expression]:
    aliases: list[int] = []
    return split_create_or_replace(tree.transform(_node, aliases))
