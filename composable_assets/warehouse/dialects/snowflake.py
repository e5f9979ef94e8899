"""Snowflake: what sqlglot does not render equivalently from DuckDB SQL.

sqlglot renders most of it equivalently: `json_object` -> `OBJECT_CONSTRUCT_KEEP_NULL` (keeps NULL values as JSON
null); `md5(concat(...))` with NULL-safe arguments; `CREATE OR REPLACE TABLE`, QUALIFY, MERGE and
`IS DISTINCT FROM` exist there; TIMESTAMP -> TIMESTAMP_NTZ, JSON -> VARIANT. Rules:

- every identifier is quoted as written. Snowflake folds unquoted names to upper case and keeps quoted ones as
  written; our code quotes most names (`ident`) but not all, so quoting all of them makes `people` and
  `"people"` the same lower-case table, as they are in DuckDB. Statements on `information_schema` are left
  unquoted, since its views and columns are upper-case names.
- `range(a, b) AS r(i)` as a table -> `(SELECT CAST(value AS BIGINT) AS i FROM TABLE(FLATTEN(ARRAY_GENERATE_RANGE(a, b)))) AS r`
  (sqlglot emits the array function itself as a table, which Snowflake rejects).
- `?` stays `?` (the connector's qmark paramstyle binds it server-side).
"""

from __future__ import annotations

from sqlglot import exp


def _quote(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Identifier) and not node.quoted:
        node.set("quoted", True)
    return node


def _range(node: exp.Expr) -> exp.Expr:
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
            expressions=[
                exp.Anonymous(
                    this="FLATTEN",
                    expressions=[
                        exp.Anonymous(
                            this="ARRAY_GENERATE_RANGE",
                            expressions=[series.args["start"].copy(), series.args["end"].copy()],
                        )
                    ],
                )
            ],
        )
    )
    select = exp.select(exp.alias_(exp.cast(exp.column("value"), "BIGINT"), name)).from_(flatten)
    return exp.Subquery(this=select, alias=exp.TableAlias(this=alias.this.copy()) if alias and alias.this else None)


def _reads_information_schema(tree: exp.Expr) -> bool:
    return any((t.db or "").lower() == "information_schema" for t in tree.find_all(exp.Table))


def rewrite(tree: exp.Expr) -> list[exp.Expr]:
    if not _reads_information_schema(tree):
        tree = tree.transform(_quote)
    return [tree.transform(_range)]
