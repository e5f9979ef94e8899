"""Small helpers that turn warehouse facts into Dagster metadata."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dagster as dg

from ..governance.pii import scrub


def column_schema(columns: Sequence[tuple[str, str]], hide_internal: bool = False) -> dg.TableSchema:
    """Column names and types; internal bookkeeping columns (leading `_`) hidden on request."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(type_)) for name, type_ in columns if not (hide_internal and name.startswith("_"))
        ]
    )


LINEAGE, SCHEMA = "dagster/column_lineage", "dagster/column_schema"


def with_definition_columns(context: dg.AssetExecutionContext, metadata: dict) -> dict:
    """A materialization's metadata plus its asset's column lineage, and the PII tags on its column schema.

    Both are derived once, when the definitions load (governance/lineage.py, governance/pii.py); each
    materialization repeats them, so what a run produced can be read back with its lineage from the event log.
    """
    defined = context.assets_def.specs_by_key[context.asset_key].metadata
    merged = dict(metadata)
    if LINEAGE in defined:
        merged[LINEAGE] = defined[LINEAGE]
    known: dg.TableSchema | None = defined.get(SCHEMA)
    if known is None:
        return merged
    produced: dg.TableSchema | None = merged.get(SCHEMA)
    if produced is None:
        merged[SCHEMA] = known
        return merged
    tags = {column.name: column.tags for column in known.columns if column.tags}
    merged[SCHEMA] = dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.type, c.description, c.constraints, tags.get(c.name) or c.tags)
            for c in produced.columns
        ]
    )
    return merged


#: Metadata entries that show member data (a few selected or sent rows); only with project.yaml `payload_samples: true`.
#: Dagster's storage cannot forget a person (docs/governance.md, Deletion requests), so nothing about one goes there
#: unasked.
SAMPLE_ENTRIES = ("sample", "preview", "payload_sample")


def shown(metadata: dict, samples: bool) -> dict:
    """`metadata` without its member-data samples unless samples are on."""
    return metadata if samples else {k: v for k, v in metadata.items() if k not in SAMPLE_ENTRIES}


def rejections_table(failures: Sequence[tuple[str, str]], samples: bool, id_column: str) -> dg.MetadataValue:
    """The first rejected rows: (member key or event id, reason) with samples on; else each reason and how many.

    A key or event id leads to a person through the warehouse, so without samples only the reasons are shown,
    scrubbed of e-mail addresses and keys the destination may have echoed (the warehouse keeps every row).
    """
    if samples:
        return markdown_table([{id_column: i, "reason": r} for i, r in failures])
    counts = Counter(scrub(reason, [i for i, _ in failures]) for _, reason in failures)
    return markdown_table([{"reason": r, "rows": n} for r, n in counts.most_common()])


def markdown_table(rows: Sequence[dict[str, Any]], limit: int = 5) -> dg.MetadataValue:
    """A few rows as a Markdown table (cells shortened so the UI stays readable)."""
    rows = list(rows)[:limit]
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    headers = list(rows[0])

    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 80 else text[:77] + "..."

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(r.get(h)) for h in headers) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))
