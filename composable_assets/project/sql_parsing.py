"""Parsing model queries and audience conditions with sqlglot (DuckDB dialect)."""

from __future__ import annotations

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
        raise ProjectError(
            f"a model must be a SELECT query, not {_kind(query)}", file, first_line
        )
    return ParsedModel(
        query=query,
        sql=sql[: statement_tokens[0][-1].end + 1],
        tables=_tables_read(query),
        columns=output_columns(query),
    )


def parse_where(where: str, file: Path | None, line: int | None) -> exp.Expression:
    """Parse an audience `where`, which must be exactly one boolean condition."""
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
    value_type = annotate_types(condition, dialect=DIALECT).type
    # Unknown types (plain columns, most functions) could still be boolean at run time.
    if value_type and not value_type.is_type("boolean", "unknown", "null"):
        raise ProjectError(
            f"`where` must be a boolean condition, but `{condition.sql(DIALECT)}` "
            f"is {value_type.sql(DIALECT)}",
            file,
            line,
        )
    return condition


def output_columns(query: exp.Query) -> list[str] | None:
    """The names of the query's output columns, or None if a star or unnamed expression hides them."""
    names = query.named_selects
    if query.is_star or not all(names):
        return None
    return names


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


def _parse(sql: str, file: Path | None, line: int | None, what: str) -> list[exp.Expression]:
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


def _reject_statements(tree: exp.Expression, file: Path | None, line: int | None, what: str) -> None:
    """Raise if any node of the tree is a statement other than a query."""
    for node in tree.walk():
        if isinstance(node, STATEMENT_TYPES):
            raise ProjectError(f"{what} must not contain {_kind(node)} statements", file, line)


def _kind(node: exp.Expression) -> str:
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
