"""BigQuery (GoogleSQL): what sqlglot does not render equivalently from DuckDB SQL.

sqlglot renders most of it equivalently: `md5(...)` -> `TO_HEX(MD5(...))` (BigQuery's MD5 returns BYTES; TO_HEX
gives the same 32 lower-case hex digits DuckDB returns, so the row hash stays text); `json_object(k, v, ...)` ->
`JSON_OBJECT(k, v, ...)` (NULL values stay JSON null); `||` between the row hash's parts (each part is coalesced,
so none is NULL); VARCHAR -> STRING, BIGINT/INTEGER -> INT64, TIMESTAMP -> DATETIME (our timestamps are naive UTC);
BEGIN/COMMIT/ROLLBACK -> ... TRANSACTION; ORDER BY gets DuckDB's NULLS LAST spelled out. `CREATE OR REPLACE TABLE`,
`CREATE SCHEMA IF NOT EXISTS` (a dataset), QUALIFY, MERGE, `IS DISTINCT FROM` and `ALTER TABLE .. RENAME TO`
exist there. Unqualified table names resolve in the URL's dataset: the engine sets it as each query job's
default dataset (BigQuery has no search path), so no name is rewritten. Rules:

- `range(a, b) AS r(i)` as a table -> `(SELECT i FROM UNNEST(GENERATE_ARRAY(a, b - 1)) AS i) AS r` (sqlglot emits
  `UNNEST(GENERATE_ARRAY(a, b - 1)) AS r`, which names the column `r` and loses `i`).
- a column's `DEFAULT` comes before its `NOT NULL` (GoogleSQL's column schema puts the default first; DuckDB
  and sqlglot take either order).
- `QUALIFY` without WHERE, GROUP BY or HAVING gets `WHERE TRUE` (BigQuery has required one of them next to QUALIFY).
- `?` stays `?`: the engine binds positional query parameters (a NULL value is written as NULL; see the engine).
"""

from __future__ import annotations

from sqlglot import exp


def _range(node: exp.Expr) -> exp.Expr:
    """`range(a, b) AS r(i)` in FROM or JOIN -> an UNNEST subquery with the same rows and names."""
    if not (isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries)):
        return node
    series = node.this
    alias = node.args.get("alias")
    columns = alias.columns if alias else []
    name = columns[0].copy() if columns else exp.to_identifier("range")
    end = series.args["end"].copy()
    if series.args.get("is_end_exclusive"):
        end = exp.Sub(this=end, expression=exp.Literal.number(1))
    array = exp.Anonymous(this="GENERATE_ARRAY", expressions=[series.args["start"].copy(), end])
    unnest = exp.Unnest(expressions=[array], alias=exp.TableAlias(columns=[name.copy()]))
    select = exp.select(exp.column(name.copy())).from_(unnest)
    return exp.Subquery(this=select, alias=exp.TableAlias(this=alias.this.copy()) if alias and alias.this else None)


def _default_first(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.ColumnDef) and node.args.get("constraints"):
        # sorted() is stable: only DEFAULT moves ahead, the other constraints keep their order.
        node.set(
            "constraints",
            sorted(
                node.args["constraints"], key=lambda c: not isinstance(c.args.get("kind"), exp.DefaultColumnConstraint)
            ),
        )
    return node


def _qualify_with_where(node: exp.Expr) -> exp.Expr:
    if (
        isinstance(node, exp.Select)
        and node.args.get("qualify")
        and not any(node.args.get(clause) for clause in ("where", "group", "having"))
    ):
        node.set("where", exp.Where(this=exp.true()))
    return node


def _node(node: exp.Expr) -> exp.Expr:
    return _qualify_with_where(_default_first(_range(node)))


def rewrite(tree: exp.Expr) -> list[exp.Expr]:
    return [tree.transform(_node)]
