"""Databricks SQL (Delta tables, Unity Catalog): what sqlglot does not render equivalently from DuckDB SQL.

sqlglot renders most of it equivalently: identifiers in backticks, VARCHAR -> STRING, TIMESTAMP -> TIMESTAMP_NTZ
(naive, as in DuckDB), the md5 row hash (`||` over NULL-safe coalesces, the separator as the octal escape
'\\037', which Databricks reads back as the same character), `CREATE OR REPLACE TABLE` (atomic on Delta),
QUALIFY, MERGE, `IS [NOT] DISTINCT FROM` and `information_schema` (Unity Catalog has both). Rules:

- `json_object(k, v, ...)` -> `to_json(named_struct(k, v, ...), map('ignoreNullFields', 'false', ...))`: Spark's
  to_json drops NULL fields unless told not to; with the option every key is present and NULL is JSON null, as
  in DuckDB. Timestamps are written `yyyy-MM-dd HH:mm:ss.SSSSSS` (DuckDB writes the same wall-clock time without
  trailing zeros in the fraction). Numbers may be spelled differently (12.50 / 12.5, 1.0E20 / 1e20 as digits)
  but parse to the same value, except FLOAT (REAL) columns, which DuckDB writes with double's digits.
- `range(a, b) AS r(i)` as a table stays Databricks' `range(a, b)` table function (sqlglot would emit an
  EXPLODE(SEQUENCE(...)) generator that is not a table); `generate_series` (end inclusive) gets end + 1.
- JSON columns and casts -> STRING: Databricks has no JSON type; the text is what DuckDB returns for JSON too.
- `CREATE TABLE` with a column DEFAULT gets `TBLPROPERTIES ('delta.feature.allowColumnDefaults' = 'supported')`:
  Delta refuses a DEFAULT on a table without that feature.
- `ALTER TABLE s.a RENAME TO b` -> `RENAME TO s.b`: the new name is qualified like the old one, so the table
  stays in its schema whatever the session's current schema is.
- QUALIFY on a grouped SELECT -> a filtered subquery (sqlglot's own transform): Spark (4.3 checked) refuses an
  aggregate inside QUALIFY's window (`ORDER BY count(*)`, MISSING_GROUP_BY); the subquery means the same.
  QUALIFY elsewhere stays as written.
- `BEGIN TRANSACTION`, `COMMIT`, `ROLLBACK` render as nothing: a SQL warehouse commits every statement on its
  own (one Delta commit each); what that loses is written down in `databricks_engine`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.transforms import eliminate_qualify

TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss.SSSSSS"
# to_json options: keep NULL fields; timestamps with a space, as DuckDB writes them, not ISO's 'T'.
JSON_OPTIONS = {
    "ignoreNullFields": "false",
    "timestampFormat": TIMESTAMP_FORMAT,
    "timestampNTZFormat": TIMESTAMP_FORMAT,
}
ALLOW_DEFAULTS = ("delta.feature.allowColumnDefaults", "supported")


def _json_object(node: exp.JSONObject) -> exp.Expr:
    args: list[exp.Expr] = []
    for kv in node.expressions:
        args += [kv.this, kv.expression]
    options: list[exp.Expr] = []
    for key, value in JSON_OPTIONS.items():
        options += [exp.Literal.string(key), exp.Literal.string(value)]
    return exp.Anonymous(
        this="to_json",
        expressions=[
            exp.Anonymous(this="named_struct", expressions=args),
            exp.Anonymous(this="map", expressions=options),
        ],
    )


def _range(node: exp.Table) -> exp.Expr:
    """`range(a, b[, step]) AS r(i)` in FROM or JOIN -> the `range` table function (end exclusive)."""
    series = node.this
    start, end, step = series.args.get("start"), series.args["end"], series.args.get("step")
    if not series.args.get("is_end_exclusive"):
        end = exp.Add(this=end.copy(), expression=step.copy() if step else exp.Literal.number(1))
    args = [start.copy() if start else exp.Literal.number(0), end.copy()]
    if step:
        args.append(step.copy())
    return exp.Table(this=exp.Anonymous(this="range", expressions=args), alias=node.args.get("alias"))


def _node(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.JSONObject):
        return _json_object(node)
    if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries):
        return _range(node)
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.JSON:
        return exp.DataType.build("STRING", dialect="databricks")
    if isinstance(node, exp.Select) and node.args.get("qualify") and node.args.get("group"):
        return eliminate_qualify(node)
    return node


def _allow_defaults(tree: exp.Expr) -> None:
    """A CREATE TABLE that declares a column DEFAULT enables Delta's allowColumnDefaults feature."""
    if not (isinstance(tree, exp.Create) and (tree.kind or "").upper() == "TABLE"):
        return
    if not any(isinstance(c.kind, exp.DefaultColumnConstraint) for c in tree.find_all(exp.ColumnConstraint)):
        return
    properties = tree.args.get("properties") or exp.Properties(expressions=[])
    properties.append(
        "expressions",
        exp.Property(this=exp.Literal.string(ALLOW_DEFAULTS[0]), value=exp.Literal.string(ALLOW_DEFAULTS[1])),
    )
    tree.set("properties", properties)


def _qualify_rename(tree: exp.Expr) -> None:
    """`ALTER TABLE s.a RENAME TO b` -> `... RENAME TO s.b` (same catalog and schema as the table renamed)."""
    if not (isinstance(tree, exp.Alter) and isinstance(tree.this, exp.Table)):
        return
    for action in tree.args.get("actions") or []:
        if (
            isinstance(action, exp.AlterRename)
            and isinstance(action.this, exp.Table)
            and not action.this.args.get("db")
        ):
            for part in ("db", "catalog"):
                if tree.this.args.get(part):
                    action.this.set(part, tree.this.args[part].copy())


def rewrite(tree: exp.Expr) -> list[exp.Expr]:
    if isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
        return []
    tree = tree.transform(_node)
    _allow_defaults(tree)
    _qualify_rename(tree)
    return [tree]
