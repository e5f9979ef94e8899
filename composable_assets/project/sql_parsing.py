"""Parsing model queries and audience conditions with sqlglot (DuckDB dialect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.tokens import Token, TokenType

from .errors import ProjectError

DIALECT = "duckdb"

# Anything that is not a read-only query: it must never run as part of a model or condition.
STATEMENT_TYPES: tuple[type[exp.Expr], ...] = (
    exp.DDL,  # CREATE, INSERT
    exp.DML,  # INSERT, UPDATE, DELETE, MERGE, COPY
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.LoadData,
    exp.Export,
    exp.Pragma,
    exp.Set,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Grant,
    exp.Revoke,
    exp.Analyze,
    exp.Describe,
    exp.Summarize,
    exp.Show,
    exp.Kill,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
)

_METADATA_KEYS = ("description", "owners")


@dataclass
class ParsedModel:
    """What a model file's SQL tells us without running it."""

    query: exp.Query
    # The query text without trailing semicolons or comments, safe to embed in other SQL.
    sql: str
    # Lower-cased names of tables read (CTEs excluded) -> line of their first reference.
    tables: dict[str, int | None]
    columns: list[str] | None


def parse_model_sql(sql: str, file: Path | None) -> ParsedModel:
    """Parse a model file's SQL, which must be exactly one read-only query."""
    statements = _parse(sql, file, None, "model SQL")
    if not statements:
        raise ProjectError("the model file contains no SQL query", file)
    statement_tokens = _statement_tokens(sql)
    if len(statements) > 1:
        raise ProjectError(
            f"a model must be a single SELECT query, but the file has {len(statements)} statements",
            file,
            statement_tokens[1][0].line,
        )
    query = statements[0]
    first_line = statement_tokens[0][0].line
    _reject_statements(query, file, first_line, "a model")
    if not isinstance(query, exp.Query):
        raise ProjectError(f"a model must be a SELECT query, not {_kind(query)}", file, first_line)
    return ParsedModel(
        query=query,
        sql=sql[: statement_tokens[0][-1].end + 1],
        tables=_tables_read(query),
        columns=output_columns(query),
    )


def parse_where(where: str, file: Path | None, line: int | None) -> exp.Expr:
    """Parse an audience's or stream's `where`: one boolean condition over the row's own columns, nothing else."""
    statements = _parse(where, file, line, "`where`")
    if not statements:
        raise ProjectError("`where` is empty", file, line)
    if len(statements) > 1:
        raise ProjectError(
            f"`where` must be a single condition, but it has {len(statements)} statements",
            file,
            line,
        )
    condition = statements[0]
    _reject_statements(condition, file, line, "`where`")
    if isinstance(condition, exp.Query):
        raise ProjectError("`where` must be a condition, not a SELECT query", file, line)
    problem = _reads_beyond_the_row(condition)
    if problem:
        raise ProjectError(problem, file, line)
    problem = _not_boolean(annotate_types(condition, dialect=DIALECT))
    if problem:
        raise ProjectError(problem, file, line)
    return condition


def check_where_columns(
    condition: exp.Expr, columns: Sequence[str], model: str, file: Path | None, line: int | None
) -> None:
    """Raise naming the first column the condition reads that is not one of the model's `columns`."""
    # DuckDB column names are case-insensitive.
    known = {column.lower() for column in columns}
    for column in condition.find_all(exp.Column):
        if column.name.lower() not in known:
            raise ProjectError(
                f"column `{column.name}` in `where` is not an output of model `{model}` "
                f"(its columns: {', '.join(columns)})",
                file,
                line,
            )


# Which functions a condition may call. sqlglot knows most scalar functions by class (Upper, DateDiff, ...): those
# are allowed, except aggregates, table functions and the few that report the session rather than the row
# (current_user, current_schema, version, ...). DuckDB has hundreds of scalar functions more that sqlglot parses as
# anonymous calls (strlen, hash, list_sort, ...); refusing them all would refuse ordinary conditions, so an
# anonymous call is allowed unless its name says it reads files, the network, other databases, the catalog, a
# sequence or the environment. Those names follow a few patterns in DuckDB, its extensions and the other warehouses
# (read_*, *_scan, glob, getenv, pg_read_file, ...). A deny rule alone would be thin: it is the second line.
# The first is structural: no subquery and no table reference, so a table function (DuckDB allows them only in
# FROM) has nowhere to run.
_UNSAFE_PREFIXES = (
    "read_",
    "parquet_",
    "duckdb_",
    "pragma_",
    "sniff_",
    "iceberg_",
    "delta_",
    "ducklake_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "pg_",
    "lo_",
    "st_read",
    "http_",
    "system$",
    "dblink",
)
_UNSAFE_SUFFIXES = ("_scan", "_attach")
_UNSAFE_NAMES = frozenset(
    {
        "glob",
        "getenv",
        "getvariable",
        "current_setting",
        "set_config",
        "query",
        "query_table",
        "nextval",
        "currval",
        "secret",
        "which_secret",
        "reflect",
        "java_method",
        "load_file",
        "external_query",
        "load_extension",
        "user",
        "session_user",
    }
)
_KNOWN_UNSAFE = (exp.ReadCSV, exp.ReadParquet, exp.SessionUser)
# Of sqlglot's Current* functions only the clock ones are about the row's time rather than the session.
_CLOCK = (exp.CurrentDate, exp.CurrentTime, exp.CurrentTimestamp, exp.CurrentDatetime)
_ARITHMETIC = (
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.Pow,
    exp.Neg,
    exp.DPipe,
    exp.BitwiseAnd,
    exp.BitwiseOr,
    exp.BitwiseXor,
    exp.BitwiseLeftShift,
    exp.BitwiseRightShift,
    exp.BitwiseNot,
)


def _reads_beyond_the_row(condition: exp.Expr) -> str | None:
    """Why the condition reads more than the row's columns (a subquery, a file, ...), or None."""
    for node in condition.walk():
        if isinstance(node, (exp.Query, exp.Subquery)):
            return "`where` must not contain a subquery: a condition reads the row's own columns only"
        if isinstance(node, exp.Table):
            return f"`where` must not read a table (`{node.sql(DIALECT)}`): a condition reads the row's columns only"
        if isinstance(node, exp.Column) and (node.table or node.args.get("db")):
            return f"`where` must name the model's columns alone, not `{node.sql(DIALECT)}`"
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            return f"`where` must not call a function of another schema (`{node.sql(DIALECT)}`)"
        if isinstance(node, exp.Window):
            return f"`where` must not use a window function (`{node.sql(DIALECT)}`)"
        if isinstance(node, exp.AggFunc):
            return f"`where` must not aggregate (`{node.sql(DIALECT)}`): it is checked row by row"
        if isinstance(node, exp.UDTF):
            return f"`where` must not call a table function (`{node.sql(DIALECT)}`)"
        name = _unsafe_function(node)
        if name:
            return (
                f"`where` must not call {name}: a condition reads the row's own columns, "
                "not files, other tables, the session or the environment"
            )
    return None


def _unsafe_function(node: exp.Expr) -> str | None:
    """The name of the function this node calls when that reads beyond the row, else None."""
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        unsafe = name in _UNSAFE_NAMES or name.startswith(_UNSAFE_PREFIXES) or name.endswith(_UNSAFE_SUFFIXES)
        return node.name if unsafe else None
    if not isinstance(node, exp.Func):  # every function below is one (the known unsafe ones included)
        return None
    session = type(node).__name__.startswith("Current") and not isinstance(node, _CLOCK)
    return node.sql_name().lower() if session or isinstance(node, _KNOWN_UNSAFE) else None


def _not_boolean(node: exp.Expr) -> str | None:
    """Why an (annotated) condition, or an operand of its AND/OR/NOT, is not boolean; None when it may be."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Connector):  # AND, OR, XOR
        return _not_boolean(node.left) or _not_boolean(node.right)
    if isinstance(node, exp.Not):
        return _not_boolean(node.this)
    shown = node.sql(DIALECT)
    # DuckDB would take a number or a string as a truth test; a column's type is only known at run time.
    if isinstance(node, exp.Column):
        return f"`where` must be a condition, but `{shown}` is a bare column: write `{shown} = true`"
    if isinstance(node, (exp.Literal, exp.Null)):
        return f"`where` must be a boolean condition, but `{shown}` is a literal"
    if isinstance(node, _ARITHMETIC):
        return f"`where` must be a boolean condition, but `{shown}` is arithmetic"
    # Unknown types (most functions sqlglot does not know) could still be boolean at run time.
    if node.type and not node.type.is_type("boolean", "unknown", "null"):
        return f"`where` must be a boolean condition, but `{shown}` is {node.type.sql(DIALECT)}"
    return None


def output_columns(query: exp.Query) -> list[str] | None:
    """The names of the query's output columns, or None if a star or unnamed expression hides them."""
    names = query.named_selects
    if query.is_star or not all(names):
        return None
    return names


_JINJA_OPENERS = ("{{", "{%", "{#")


def find_jinja(sql: str) -> tuple[str, int] | None:
    """(the construct, its line) of the first Jinja opener outside strings and comments, or None.

    No DuckDB SQL has `{{`, `{%` or `{#` outside a string (a struct literal opens with `{'`), so one of them there is
    a template dbt would render, which a plain model file never is.
    """
    index, line, length = 0, 1, len(sql)
    while index < length:
        char = sql[index]
        if char == "\n":
            line += 1
        elif char in ("'", '"'):  # a string or quoted identifier; a doubled quote inside is the quote itself
            end = index + 1
            while end < length and not (sql[end] == char and sql[end + 1 : end + 2] != char):
                end += 2 if sql[end] == char else 1
            line += sql.count("\n", index, end)
            index = end
        elif sql.startswith("--", index):
            end = sql.find("\n", index)
            index = length if end < 0 else end - 1
        elif sql.startswith("/*", index):
            end = sql.find("*/", index + 2)
            end = length if end < 0 else end + 1
            line += sql.count("\n", index, end)
            index = end
        elif sql.startswith(_JINJA_OPENERS, index):
            closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[sql[index : index + 2]]
            end = sql.find(closer, index)
            shown = sql[index : end + 2] if 0 <= end < index + 60 else sql[index : index + 2] + " ..."
            return " ".join(shown.split()), line
        index += 1
    return None


def read_header(sql: str) -> tuple[str | None, list[str]]:
    """(description, owners) from the comment lines at the top of a model file."""
    description: str | None = None
    owners: list[str] = []
    for raw_line in sql.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        text = line.lstrip("-").strip()
        key, has_colon, value = text.partition(":")
        key = key.strip().lower()
        if has_colon and key == "owners":
            owners = [owner.strip() for owner in value.split(",") if owner.strip()]
        elif has_colon and key == "description":
            description = value.strip() or None
        elif text and description is None:
            description = text
    return description, owners


def _parse(sql: str, file: Path | None, line: int | None, what: str) -> list[exp.Expr]:
    """All non-empty statements in `sql`; syntax errors become ProjectErrors."""
    try:
        statements = sqlglot.parse(sql, read=DIALECT)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        near = f" near {first['highlight']!r}" if first.get("highlight") else ""
        # For a model the line is sqlglot's; a condition is reported at its YAML line.
        raise ProjectError(
            f"{what} is not valid SQL: {first.get('description', exc)}{near}",
            file,
            first.get("line") if line is None else line,
        ) from exc
    except SqlglotError as exc:
        raise ProjectError(f"{what} is not valid SQL: {exc}", file, line) from exc
    # Empty statements (`;;`) parse to None, and comments after the last `;` to a Semicolon.
    return [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]


def _statement_tokens(sql: str) -> list[list[Token]]:
    """The tokens of each statement, split at semicolons, to locate statements by line."""
    statements: list[list[Token]] = [[]]
    for token in sqlglot.tokenize(sql, read=DIALECT):
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [tokens for tokens in statements if tokens]


def _reject_statements(tree: exp.Expr, file: Path | None, line: int | None, what: str) -> None:
    """Raise if any node of the tree is a statement other than a query."""
    for node in tree.walk():
        if isinstance(node, STATEMENT_TYPES):
            raise ProjectError(f"{what} must not contain {_kind(node)} statements", file, line)


def _kind(node: exp.Expr) -> str:
    """The statement's keyword for messages, e.g. DROP."""
    return (node.name if isinstance(node, exp.Command) else node.key).upper()


def _tables_read(query: exp.Query) -> dict[str, int | None]:
    """Tables the query reads, by bare lower-cased name (DuckDB names are case-insensitive)."""
    cte_names = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    tables: dict[str, int | None] = {}
    for table in query.find_all(exp.Table):
        # Table functions such as read_parquet(...) are not tables of the warehouse.
        if not isinstance(table.this, exp.Identifier):
            continue
        name = table.name.lower()
        # Only an unqualified name can refer to a CTE.
        if table.db or name not in cte_names:
            tables.setdefault(name, table.this.meta.get("line"))
    return tables
