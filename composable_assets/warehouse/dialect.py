"""SQL is written once, in the DuckDB dialect with `?` parameters; this renders it for another engine.

The one place where dialects meet: sqlglot transpiles each statement, and the few constructs it does not render
equivalently for a target are rewritten on the parsed tree by that target's module in `dialects/` (one module
per engine, each listing its rules). Here only what every target shares: `?` stands in as a token while the
statement is rendered and then becomes the driver's placeholder; with psycopg's `%s`, a literal `%` is doubled,
since the driver formats the statement with its parameters.

DuckDB statements are never parsed here: DuckDB runs the SQL as written.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

import sqlglot
from sqlglot import exp

SOURCE_DIALECT = "duckdb"
# Stands in for a bound parameter while the statement is rendered, then becomes the driver's placeholder.
PARAM_TOKEN = "__composable_param__"
# sqlglot dialect -> module of rewrite rules in dialects/ (each has `rewrite(tree) -> list of statements`).
_RULES = {
    "postgres": "postgres",
    "redshift": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "databricks": "databricks",
}


def param_token(node: exp.Expr) -> exp.Expr:
    """`?` -> the parameter token (a bare name every dialect prints as is)."""
    return exp.var(PARAM_TOKEN) if isinstance(node, exp.Placeholder) else node


@lru_cache(maxsize=2048)
def render(sql: str, target: str, placeholder: str = "%s") -> str:
    """`sql` (DuckDB dialect, `?` parameters) as the `target` dialect runs it, with the driver's placeholders."""
    if target == SOURCE_DIALECT:
        return sql
    if target not in _RULES:
        raise ValueError(f"no SQL rendering for the {target!r} dialect; known: {', '.join(sorted(_RULES))}")
    rules = import_module(f".dialects.{_RULES[target]}", __package__)
    statements: list[str] = []
    for tree in sqlglot.parse(sql, read=SOURCE_DIALECT):
        if tree is None:
            continue
        for statement in rules.rewrite(tree.transform(param_token)):
            statements.append(statement.sql(target))
    text = "; ".join(statements)
    if placeholder == "%s":
        text = text.replace("%", "%%")
    return text.replace(PARAM_TOKEN, placeholder)
