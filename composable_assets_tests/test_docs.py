"""The README is the configuration reference: every file field and environment variable the code reads is in it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from composable_assets.destinations import DESTINATION_TYPES
from composable_assets.project import specs
from composable_assets.project.alerts import AlertSpec, SlackAlert, WebhookAlert
from composable_assets.project.gates import GatesSpec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FILE_MODELS = [
    specs.ProjectSettings, specs.LandingSpec, specs.ConsentSpec, specs.DeletionRequestsSpec, specs.ArchiveSpec,
    GatesSpec, AlertSpec, SlackAlert, WebhookAlert, specs.AudienceSpec, specs.SyncSpec, specs.StreamSpec, specs.StreamSyncSpec, specs.DestinationSpec,
]


def documented(name: str) -> bool:
    """Named in backticks, or as a key in one of the README's YAML examples."""
    in_code = re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", README)
    as_key = re.search(rf"^\s*(- )?{re.escape(name)}:", README, re.MULTILINE)
    return in_code is not None or as_key is not None


def fields(model: type[BaseModel]) -> set[str]:
    """The names a user writes in a file: aliases where a field has one; fields the loader derives are left out."""
    return {
        info.alias or name
        for name, info in model.model_fields.items()
        if not info.exclude and name not in ("settings",)  # DestinationSpec.settings: the entry's other keys
    }


def test_every_field_of_every_project_file_is_in_the_readme():
    models = list(FILE_MODELS)
    for destination in DESTINATION_TYPES.values():
        models += [m for m in (destination.Settings, destination.SyncOptions, destination.EventOptions) if m]
    missing = sorted({f"{m.__name__}.{f}" for m in models for f in fields(m) if not documented(f)})
    assert missing == []


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    code = "\n".join(p.read_text() for p in (ROOT / "composable_assets").rglob("*.py"))
    code += (ROOT / "deploy" / "dagster.yaml").read_text()
    names = set(re.findall(r"\b(COMPOSABLE_[A-Z_]+|DAGSTER_PG_[A-Z_]+|DAGSTER_HOME|PGPASSWORD|DATABRICKS_TOKEN)\b", code))
    assert len(names) > 8
    assert sorted(n for n in names if not documented(n)) == []
