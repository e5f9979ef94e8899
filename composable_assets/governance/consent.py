"""Consent: a destination that names a purpose is only ever sent members who granted it, checked in every delta.

And deletion requests: no destination is ever sent someone who asked to be forgotten (governance/deletion.py does
the deleting), unless they granted a consent again after asking.
"""

from __future__ import annotations

from sqlglot import exp

from ..delta.changes import Watched
from ..project.errors import ProjectError
from ..project.project import Project
from ..project.specs import ConsentSpec, StreamSpec
from ..warehouse.sql import DIALECT, REQUESTERS, ident
from .deletion_log import deletion_log


def consent_predicate(consent: ConsentSpec, purpose: str, column: str = "_key", native: bool = False) -> str:
    """A condition on a row's member key (a snapshot's `_key`, or a stream table's key column): `purpose` is granted.

    DuckDB SQL, rendered per engine like the rest. Keys are compared as text, unless `native`: then the column is
    compared with the consent table's key as both are (the caller has checked that their types match), which lets
    the engine filter the consent table by the keys it is asked about (an index, or the join's key filter).
    """
    purpose_literal = exp.Literal.string(purpose).sql(DIALECT)
    granted = f"WHERE {ident(consent.purpose)} = {purpose_literal} AND {ident(consent.granted)}"
    if native:
        return f"{ident(column)} IN (SELECT {ident(consent.key)} FROM {ident(consent.table)} {granted})"
    return (
        f"{member_key(column)} IN (SELECT CAST({ident(consent.key)} AS VARCHAR) FROM {ident(consent.table)} {granted})"
    )


def not_forgotten_predicate(project: Project, column: str = "_key", keys: str | None = None) -> str | None:
    """A condition on a member key: no deletion request (in the requests table or the proof) without a newer consent.

    The proof table (`deletion_log`) keeps it true after a request row is deleted. A consent row granted (any
    purpose) with `updated_at` later than the request counts as a new consent: the person came back on their own,
    and each destination's own purpose is still checked by its consent condition. Without a consent table, or one
    without `updated_at`, a person who asked is never sent anything again. None when no requests are configured.

    `keys`: a query giving, in a column `member`, the keys of the members the condition will be checked on, in the
    column's own type (the same as the consent table's key: the caller has checked). Then only the requests of
    those members are looked at, and only their consent rows read (compared as they are, not cast to text) to tell
    who came back, rather than every consent row; and a row without a member key is never allowed.
    """
    requests = project.settings.deletion_requests
    if requests is None:
        return None
    asked = (
        f"SELECT CAST({ident(requests.key)} AS VARCHAR) AS person, CAST({ident(requests.requested_at)} AS TIMESTAMP) "
        f"AS asked_at FROM {ident(requests.table)} "
        f"UNION ALL SELECT {ident('key')}, requested_at FROM {deletion_log(project.settings.schema_name)}"
    )
    consent = project.settings.consent
    # A consent granted after the request renews it only where consent rows say when they changed.
    updated_at = consent.updated_at if consent is not None else None
    if keys is not None:
        if consent is None or updated_at is None:
            forgotten = f"SELECT r.person FROM ({asked}) AS r WHERE {REQUESTERS}"
            return f"{ident(column)} IS NOT NULL AND {member_key(column)} NOT IN ({forgotten})"
        # The members checked who asked, by their key as it is (the consent table's type), each request with no
        # consent granted after it. No NULL member: a NULL key never equals a person.
        forgotten = (
            f"SELECT m.member FROM ({keys}) AS m JOIN ({asked}) AS r ON r.person = CAST(m.member AS VARCHAR) "
            f"WHERE NOT EXISTS (SELECT 1 FROM {ident(consent.table)} AS c WHERE c.{ident(consent.key)} = m.member "
            f"AND c.{ident(consent.granted)} AND CAST(c.{ident(updated_at)} AS TIMESTAMP) > r.asked_at)"
        )
        return f"{ident(column)} IS NOT NULL AND {ident(column)} NOT IN ({forgotten})"
    renewed = ""
    if consent is not None and updated_at is not None:
        renewed = (
            f" AND NOT EXISTS (SELECT 1 FROM {ident(consent.table)} AS c "
            f"WHERE CAST(c.{ident(consent.key)} AS VARCHAR) = r.person AND c.{ident(consent.granted)} "
            f"AND CAST(c.{ident(updated_at)} AS TIMESTAMP) > r.asked_at)"
        )
    # NOT IN is NULL-aware: one NULL person in the subquery would exclude everyone, hence the filter.
    return f"{member_key(column)} NOT IN (SELECT r.person FROM ({asked}) AS r WHERE {REQUESTERS}{renewed})"


def consent_conditions(project: Project, column: str = "_key", keys: str | None = None) -> dict[str, str]:
    """Destination -> the condition on `column` a member must meet to be sent there.

    Its consent purpose granted, if it names one, and no deletion request (for every destination, when the project
    declares `deletion_requests:`); a destination with neither has no entry. With `keys` (see
    `not_forgotten_predicate`), the column is compared with the consent table's key as both are, not as text, and
    only the consent rows of those keys are read: for a stream table whose key column has the consent key's type.
    """
    not_forgotten = not_forgotten_predicate(project, column, keys)
    conditions = {}
    for name, spec in project.destinations.items():
        parts = [not_forgotten] if not_forgotten else []
        if spec.consent is not None:
            if project.settings.consent is None:
                raise ProjectError(
                    f"destination `{name}` needs consent `{spec.consent}`, but project.yaml declares no `consent:` table",
                    spec.path,
                )
            parts.insert(0, consent_predicate(project.settings.consent, spec.consent, column, native=keys is not None))
        if parts:
            conditions[name] = parts[0] if len(parts) == 1 else " AND ".join(f"({p})" for p in parts)
    return conditions


def condition_tables(project: Project) -> dict[str, str]:
    """The warehouse tables the member conditions read -> the project.yaml setting that names each."""
    named = {"consent": project.settings.consent, "deletion_requests": project.settings.deletion_requests}
    return {spec.table: setting for setting, spec in named.items() if spec is not None}


def member_key_column(project: Project, stream: StreamSpec) -> str | None:
    """The stream table's column holding the person's key: `key:`, else the consent's or the deletion requests' key."""
    if stream.key is not None:
        return stream.key
    declared = [s for s in (project.settings.consent, project.settings.deletion_requests) if s is not None]
    return declared[0].key if declared else None


def member_key(column: str) -> str:
    """The member key as text, as snapshots hold it in `_key` (stream tables keep the source column's type)."""
    return "_key" if column == "_key" else f"CAST({ident(column)} AS VARCHAR)"


def member_watches(project: Project) -> list[Watched] | None:
    """The member-condition tables a minute-level run watches for changed keys (by their time column).

    None when a change cannot be told by key: a consent table without `updated_at` (a flipped grant leaves no trace
    but the row itself), so audiences and deltas reading it are compared in full.
    """
    watched = []
    requests = project.settings.deletion_requests
    if requests is not None:
        watched.append(Watched(requests.table, requests.key, updated_at=requests.requested_at))
    consent = project.settings.consent
    if consent is not None:
        if consent.updated_at is None:
            return None
        watched.append(Watched(consent.table, consent.key, updated_at=consent.updated_at))
    return watched
