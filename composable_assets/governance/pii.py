"""Personal data: which columns hold it (by name, declared in project.yaml, or computed from such a column).

Each column gets at most one category (email, phone, name, address, birth_date, ip_address, or one declared), shown
as the tag `pii` on the column schemas of models, audiences, syncs and streams. A column computed from a personal
column (a model's `lower(email) AS contact`, a destination field sent from it) inherits its category through the
column lineage, so `braze.contact` is tagged even though nothing in its name says so. That errs on the safe side: an
aggregate such as `count(email)` is tagged too; declare it `none` in project.yaml `pii:` to say otherwise.

And `scrub`: a text from elsewhere (a destination's answer) without the identifiers and e-mail addresses it echoes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import dagster as dg

from .lineage import Column, upstream

#: Category -> a pattern over the column name's words (snake_case or camelCase split on `_`).
_BY_NAME: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"^(e_?mail(_?address)?)$|(^|_)e_?mail$"),
    "phone": re.compile(r"(^|_)(phone|mobile|msisdn|cell)(_?number)?$"),
    "name": re.compile(
        r"^(first|last|middle|given|family|full|sur|display|user)?_?name$|^(firstname|lastname|surname)$"
    ),
    "ip_address": re.compile(r"^ip(_?address)?$"),
    "address": re.compile(r"(^|_)(address(_?line_?\d)?|street|postal_?code|zip(_?code)?|postcode)$"),
    "birth_date": re.compile(r"^(dob|birth_?date|date_of_birth|birthday)$"),
}
#: What stands in for an identifier or e-mail address taken out of a text.
SCRUBBED = "<identifier>"
EMAIL = re.compile(r"[^\s@\"'<>,;:/]+@[^\s@\"'<>,;:/]+\.[A-Za-z]{2,}")
#: The declared category that marks a column detected by name as not personal (`pii: {username: none}`).
NOT_PII = "none"
TAG = "pii"


def _words(column: str) -> str:
    """`firstName` and `first_name` alike: lower snake case."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column).lower()


def category_by_name(column: str, declared: Mapping[str, str] | None = None) -> str | None:
    """The column's category from project.yaml `pii:` (which wins) or from its name; None if not personal."""
    declared = declared or {}
    if column in declared:
        return None if declared[column] == NOT_PII else declared[column]
    words = _words(column)
    return next((category for category, pattern in _BY_NAME.items() if pattern.search(words)), None)


def pii_categories(
    deps: dict[dg.AssetKey, dict[str, list[Column]]], declared: Mapping[str, str] | None = None
) -> dict[dg.AssetKey, dict[str, str]]:
    """Per asset of the lineage, its personal columns and their category (by name, else inherited from upstream)."""
    found: dict[dg.AssetKey, dict[str, str]] = {}
    for key, columns in deps.items():
        for column in columns:
            category = category_by_name(column, declared)
            if category is None and not (declared and declared.get(column) == NOT_PII):
                # Nearest first is not needed: any personal upstream column makes this one personal.
                category = next(
                    (c for _, name in upstream(deps, (key, column)) if (c := category_by_name(name, declared))), None
                )
            if category is not None:
                found.setdefault(key, {})[column] = category
    return found


def tagged_schema(columns: list[str], categories: Mapping[str, str]) -> dg.TableSchema:
    """The columns an asset is known to have before it runs (types come with materializations), personal ones tagged."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, "", tags={TAG: categories[name]} if name in categories else None) for name in columns
        ]
    )


def scrub(text: str | None, identifiers: Iterable[str] = ()) -> str | None:
    """`text` (a destination's answer, a rejection reason) without these identifiers nor anything shaped like an e-mail.

    Identifiers shorter than 3 characters are left: replacing "12" would mangle status codes and counts.
    """
    if text is None:
        return None
    for identifier in sorted(set(identifiers), key=len, reverse=True):
        if len(identifier) >= 3:
            text = text.replace(identifier, SCRUBBED)
    return EMAIL.sub(SCRUBBED, text)[:300]
