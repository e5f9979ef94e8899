"""Secrets and PII stay out of logs: a whole demo's run logs hold no API key and no member e-mail (payload samples are
off unless project.yaml turns them on)."""

from __future__ import annotations

import re

import dagster as dg
import duckdb
from click.testing import CliRunner

from composable_assets.assets.metadata import SAMPLE_ENTRIES
from composable_assets.cli import cli
from composable_assets_tests.fakes.local import DEMO_KEY

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def test_a_demo_s_run_logs_hold_no_api_key_and_no_member_email(demo_home, capfd):
    result = CliRunner().invoke(cli, ["demo", "--customers", "300"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = result.output + "".join(capfd.readouterr())

    with duckdb.connect(str(demo_home / "warehouse.duckdb"), read_only=True) as con:
        known = {e for (e,) in con.sql("SELECT email FROM customers WHERE email IS NOT NULL").fetchall()}
    assert len(known) > 200

    def member_emails(text: str) -> list[str]:
        return [m for m in EMAIL.findall(text) if m in known]

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    # Twice (the first sync, then after a day of changes): the deletion requests, then the syncs.
    assert len(runs) == 4
    forget = dg.AssetRecordsFilter(asset_key=dg.AssetKey(["governance", "deletion_requests"]))
    assert len(instance.fetch_materializations(forget, limit=10).records) == 2
    messages, metadata = [], []
    for run in runs:
        for entry in instance.all_logs(run.run_id):
            messages.append(entry.user_message or "")
            event = entry.dagster_event
            if event is not None and event.is_step_materialization:
                for key, value in event.event_specific_data.materialization.metadata.items():
                    metadata.append(f"{key}: {value.value!r}")
    assert len(messages) > 100 and metadata
    # The sample project does not ask for payload samples: none of the entries that would show members.
    assert not [m for m in metadata if m.split(":", 1)[0] in SAMPLE_ENTRIES]

    for where, texts in (("printed output", [printed]), ("run log messages", messages), ("metadata", metadata)):
        leaked = [t for t in texts if DEMO_KEY in t]
        assert not leaked, f"API key in {where}: {leaked[:3]}"
        emails = [(t[:120], member_emails(t)) for t in texts if member_emails(t)]
        assert not emails, f"member e-mail in {where}: {emails[:3]}"


def test_payload_samples_are_off_unless_project_yaml_turns_them_on(tmp_path):
    """No member row in any materialization's metadata, unless project.yaml says `payload_samples: true`."""
    from .test_engines_flow import EngineProject, people

    shown_by_setting = {}
    for setting in ("true", "false", "absent"):
        p = EngineProject(tmp_path / setting, f"duckdb:///{tmp_path / setting / 'warehouse.duckdb'}")
        line = "" if setting == "absent" else f"payload_samples: {setting}\n"
        (p.settings.project_dir / "project.yaml").write_text(f'name: small\nstart_date: "2026-01-01"\n{line}')
        p.set_people(people())
        assert p.sync().success
        texts = []
        for key in (["audience", "high"], ["delta", "high", "rec_upsert"], ["sync", "high", "rec_upsert"]):
            records = p.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key)), limit=1)
            metadata = records.records[0].asset_materialization.metadata
            texts += [f"{k}: {v.value!r}" for k, v in metadata.items()]
        shown_by_setting[setting] = [t for t in texts if "@example.com" in t]
    assert shown_by_setting["true"]  # samples on: member e-mails are in the samples
    assert shown_by_setting["false"] == [] and shown_by_setting["absent"] == []
