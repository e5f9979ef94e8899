"""Amazon Redshift: PostgreSQL's rules (no CREATE OR REPLACE TABLE, aliased subqueries), plus Redshift's own.

Redshift speaks PostgreSQL's wire protocol but not all of its SQL (see the AWS pages "Unsupported PostgreSQL
features" and "Unsupported PostgreSQL functions"); sqlglot's `redshift` dialect renders types and functions
(VARCHAR -> VARCHAR(MAX), so text is never cut at Redshift's default 256 bytes). Rules here:

- `json_object(k, v, ...)` -> `JSON_SERIALIZE(OBJECT(k, v, ...))`: Redshift builds JSON as SUPER and serializes
  it to text; NULL values stay JSON null (sqlglot would emit SQL/JSON `JSON_OBJECT`, which Redshift lacks).
- JSON columns -> SUPER, read back as their JSON text.
- `a IS DISTINCT FROM b` -> `CASE WHEN a = b OR (a IS NULL AND b IS NULL) THEN FALSE ELSE TRUE END`: Redshift
  lacks the predicate; the CASE keeps its NULL-safe meaning.
- QUALIFY -> a filtered subquery (sqlglot's own transform), and no NULLS FIRST/LAST inside window functions,
  which Redshift refuses; the ORDER BY columns there are never NULL.

Not covered, named in docs/configuration.md (Warehouses): `range()` as a table (Redshift's GENERATE_SERIES runs on
the leader node only) and server-side cursors WITH HOLD (Redshift's cursors live inside a transaction).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.transforms import eliminate_qualify

from . import postgres


def _node(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.JSONObject):
        args: list[exp.Expr] = []
        for kv in node.expressions:
            args += [kv.this, kv.expression]
        return exp.Anonymous(this="JSON_SERIALIZE", expressions=[exp.Anonymous(this="OBJECT", expressions=args)])
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.JSON:
        return exp.DataType.build("SUPER", dialect="redshift")
    if isinstance(node, exp.NullSafeEQ):
        return exp.not_(_distinct(node.this, node.expression))
    if isinstance(node, exp.NullSafeNEQ):
        return _distinct(node.this, node.expression)
    if (
        isinstance(node, exp.Ordered)
        and isinstance(node.parent, exp.Order)
        and isinstance(node.parent.parent, exp.Window)
    ):
        # Redshift's own order (NULLs are largest): no NULLS clause is printed for it.
        node.set("nulls_first", bool(node.args.get("desc")))
    return node


def _distinct(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    same = exp.or_(
        exp.EQ(this=a.copy(), expression=b.copy()), exp.and_(a.copy().is_(exp.null()), b.copy().is_(exp.null()))
    )
    return exp.Case(ifs=[exp.If(this=exp.paren(same), true=exp.false())], default=exp.true())


def rewrite(tree: exp.Expr) -> list[exp.Expr]:
    tree = tree.transform(lambda n: eliminate_qualify(n) if isinstance(n, exp.Select) and n.args.get("qualify") else n)
    return postgres.rewrite(tree.transform(_node))
