"""Consent: a destination that names a purpose is only ever sent members who granted it, checked in every delta."""

from __future__ import annotations

from sqlglot import exp

from ..project.errors import ProjectError
from ..project.project import Project
from ..project.specs import ConsentSpec
from ..delta.sql import DIALECT, ident


def consent_predicate(consent: ConsentSpec, purpose: str, column: str = "_key") -> str:
    """A condition on a row's member key (a snapshot's `_key`, or a stream table's key column): `purpose` is granted.

    DuckDB SQL, rendered per engine like the rest.
    """
    purpose_literal = exp.Literal.string(purpose).sql(DIALECT)
    return (
        f"{member_key(column)} IN (SELECT CAST({ident(consent.key)} AS VARCHAR) FROM {ident(consent.table)} "
        f"WHERE {ident(consent.purpose)} = {purpose_literal} AND {ident(consent.granted)})"
    )


def consent_conditions(project: Project, column: str = "_key") -> dict[str, str]:
    """Destination -> the condition on `column` a member must meet to be sent there (its consent purpose granted)."""
    conditions = {}
    for name, spec in project.destinations.items():
        if spec.consent is None:
            continue
        if project.settings.consent is None:
            raise ProjectError(
                f"destination `{name}` needs consent `{spec.consent}`, but project.yaml declares no `consent:` table",
                spec.path,
            )
        conditions[name] = consent_predicate(project.settings.consent, spec.consent, column)
    return conditions


def member_key(column: str) -> str:
    """The member key as text, as snapshots hold it in `_key` (stream tables keep the source column's type)."""
    return "_key" if column == "_key" else f"CAST({ident(column)} AS VARCHAR)"
