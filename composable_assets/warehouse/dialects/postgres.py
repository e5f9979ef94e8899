"""PostgreSQL: what sqlglot does not render equivalently from DuckDB SQL.

- `CREATE OR REPLACE TABLE t AS ...` -> `DROP TABLE IF EXISTS t; CREATE TABLE t AS ...` (PostgreSQL has no OR
  REPLACE for tables; the connection runs both in one transaction).
- `CREATE OR REPLACE VIEW v AS ...` -> `DROP VIEW IF EXISTS v; CREATE VIEW v AS ...` (PostgreSQL's OR REPLACE keeps
  the view's columns, so it refuses a view whose columns are renamed, reordered or removed; DuckDB's and
  Snowflake's replace the view whole).
- `json_object(k, v, ...)` -> `json_build_object(k, v, ...)` (sqlglot emits the SQL/JSON `JSON_OBJECT(k: v)`,
  which PostgreSQL only has from 16; both keep NULL values as JSON null, as DuckDB does).
- a subquery in FROM or JOIN without an alias gets one (PostgreSQL before 16 requires it).
"""

from __future__ import annotations

from sqlglot import exp


def _node(node: exp.Expr, aliases: list[int]) -> exp.Expr:
    if isinstance(node, exp.JSONObject):
        args: list[exp.Expr] = []
        for kv in node.expressions:
            args += [kv.this, kv.expression]
        return exp.Anonymous(this="json_build_object", expressions=args)
    if isinstance(node, exp.Subquery) and not node.alias and isinstance(node.parent, (exp.From, exp.Join)):
        aliases.append(len(aliases) + 1)
        node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_q{aliases[-1]}")))
    return node


def split_create_or_replace(tree: exp.Expr) -> list[exp.Expr]:
    """`CREATE OR REPLACE TABLE` or `VIEW` -> DROP ... IF EXISTS, then CREATE."""
    kind = (tree.kind or "").upper() if isinstance(tree, exp.Create) else ""
    if kind in ("TABLE", "VIEW") and tree.args.get("replace"):
        tree.set("replace", False)
        return [exp.Drop(tables=[tree.this.copy()], kind=kind, exists=True), tree]
    return [tree]


def rewrite(tree: exp.Expr) -> list[exp.Expr]:
    aliases: list[int] = []
    return split_create_or_replace(tree.transform(_node, aliases))
