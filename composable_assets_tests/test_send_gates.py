"""Send gates: a delta that breaks one is held, the destination receives nothing, and a run tag lets it through."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.project import load_project
from composable_assets.project.gates import GATE_NAMES, OVERRIDE_TAG, GatesSpec, overridden, resolve_gates
from composable_assets.runner import run_selection

from .conftest import SMALL_AUDIENCE, Recording
from .test_engines_flow import EngineProject, counts, people


class GatedProject(EngineProject):
    """The small project on a DuckDB file, with `gates:` in the audience file."""

    def __init__(self, root: Path, gates: str):
        super().__init__(root, f"duckdb:///{root / 'warehouse.duckdb'}")
        text = SMALL_AUDIENCE.replace("cadence: daily\n", "cadence: daily\ngates:\n" + textwrap.indent(gates, "  "))
        (self.settings.project_dir / "audiences" / "high.yaml").write_text(text)

    def sync(self, date: str = "2026-03-02", tags: dict[str, str] | None = None, only_syncs: bool = False):
        defs = load_definitions(self.settings)
        selection = audience_selection(load_project(self.settings.project_dir), "high", None)
        if only_syncs:
            selection = selection & dg_sync_keys()
        return run_selection(defs, selection, date, self.instance, tags=tags)

    def gate_checks(self) -> dict[tuple[str, str], bool]:
        """(delta asset, gate) -> passed, from the newest check evaluations Dagster recorded."""
        verdicts = {}
        for destination in ("rec_mirror", "rec_upsert"):
            key = dg.AssetKey(["delta", "high", destination])
            for name in GATE_NAMES:
                record = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
                    [dg.AssetCheckKey(key, name)]
                ).get(dg.AssetCheckKey(key, name))
                if record is not None and record.event is not None:
                    verdicts[(destination, name)] = record.event.dagster_event.event_specific_data.passed
        return verdicts


def dg_sync_keys() -> dg.AssetSelection:
    return dg.AssetSelection.assets(dg.AssetKey(["sync", "high", "rec_mirror"]), dg.AssetKey(["sync", "high", "rec_upsert"]))


def test_a_mirror_removing_too_many_is_held_until_a_run_overrides_it(tmp_path: Path):
    p = GatedProject(tmp_path, "min_members: 0\nmax_remove_percent: 20\nmax_change_percent: 100\n")
    p.set_people(people())  # 10 members: ids 11..20
    assert p.sync().success
    Recording.received.clear()

    p.set_people(people({11: ("n", 1), 12: ("n", 2), 13: ("n", 3)}))  # 3 of 10 leave: 30% removed
    outcome = p.sync()
    assert not outcome.success
    assert Recording.received["rec_mirror"] == []  # nothing left for the mirror
    assert counts(outcome) == {"rec_upsert": (0, 0, 0, 0)}  # the upsert never removes: its gate passed
    assert p.gate_checks()[("rec_mirror", "max_remove_percent")] is False
    assert p.gate_checks()[("rec_upsert", "max_remove_percent")] is True
    assert len(p.ledger("rec_mirror")) == 10

    # The sync alone refuses the held delta, and says how to override it.
    outcome = p.sync(only_syncs=True)
    assert not outcome.success and Recording.received["rec_mirror"] == []
    assert any("held by its send gates" in e and f"{OVERRIDE_TAG}=max_remove_percent" in e for e in outcome.errors)

    # One run with the override tag sends the three removes; the gate is recorded as overridden.
    outcome = p.sync(tags={OVERRIDE_TAG: "max_remove_percent"})
    assert outcome.success, outcome.errors
    assert counts(outcome)["rec_mirror"] == (0, 0, 3, 0)
    assert len(p.ledger("rec_mirror")) == 7
    overrides = p.query("SELECT gate, passed, overridden FROM composable.gate_results WHERE overridden")
    assert overrides == [("max_remove_percent", False, True)]


def test_size_change_required_fields_and_shared_identifiers_each_hold_a_delta(tmp_path: Path):
    p = GatedProject(tmp_path, "min_members: 0\nmax_change_percent: 50\nrequired_fields: [name]\n")
    p.set_people(people())
    assert p.sync().success
    Recording.received.clear()

    # 10 -> 20 members: a 100% change holds both destinations.
    p.set_people(people(upto=20) + [(i, f"p{i}@example.com", f"name{i}", 50) for i in range(21, 31)])
    outcome = p.sync()
    assert not outcome.success and not Recording.received["rec_mirror"] and not Recording.received["rec_upsert"]
    assert p.gate_checks()[("rec_mirror", "max_change_percent")] is False
    # Computing the same delta again is held again: a held delta is not the baseline of the next one.
    outcome = p.sync()
    assert not outcome.success and not Recording.received["rec_mirror"]
    assert p.gate_checks()[("rec_mirror", "max_change_percent")] is False

    # A member without a name: `name` is required of both destinations (each is sent `name`).
    p.set_people(people() + [(21, "p21@example.com", None, 50)])
    outcome = p.sync()
    assert not outcome.success and not Recording.received["rec_mirror"] and not Recording.received["rec_upsert"]
    checks = p.gate_checks()
    assert checks[("rec_mirror", "required_fields")] is False and checks[("rec_mirror", "max_change_percent")] is True

    # Two members share an email: the upsert (identified by email) is held, the mirror (by id) is not.
    p.set_people(people() + [(21, "p11@example.com", "twin", 50)])
    outcome = p.sync()
    assert not outcome.success
    assert Recording.received["rec_upsert"] == []
    assert [r.key for r in Recording.received["rec_mirror"]] == ["21"]
    checks = p.gate_checks()
    assert checks[("rec_upsert", "unique_identifiers")] is False and checks[("rec_mirror", "unique_identifiers")] is True


def test_gate_settings_merge_and_an_unknown_override_is_refused(tmp_path: Path):
    project = GatesSpec(max_remove_percent=5, min_members=1000)
    merged = resolve_gates(project, GatesSpec.model_validate({"min_members": 10}))
    assert (merged.max_remove_percent, merged.min_members, merged.max_change_percent) == (5, 10, 50)
    assert overridden("all") == {
        "max_remove_percent", "max_change_percent", "required_fields", "unique_identifiers", "consent_applied"
    }
    with pytest.raises(ValueError, match="unknown gate.*max_removes"):
        overridden("max_removes")

    p = GatedProject(tmp_path, "min_members: 0\n")
    p.set_people(people())
    outcome = p.sync(tags={OVERRIDE_TAG: "max_removes"})
    assert not outcome.success and any("unknown gate(s) max_removes" in e for e in outcome.errors)
    assert Recording.received["rec_mirror"] == []


def test_a_required_field_no_sync_sends_is_an_error_naming_the_audience_file(tmp_path: Path):
    from composable_assets.project import ProjectError

    p = GatedProject(tmp_path, "required_fields: [name, emial]\n")
    with pytest.raises(ProjectError) as info:
        load_project(p.settings.project_dir)
    assert "high.yaml" in str(info.value) and "emial" in str(info.value) and "no sync sends" in str(info.value)


def test_a_held_delta_sends_not_one_request_to_the_braze_stand_in(tmp_path: Path, fakes):
    """The same gate over real HTTP: while the delta is held the Braze stand-in sees no request at all."""
    p = GatedProject(tmp_path, "min_members: 0\nmax_remove_percent: 20\nmax_change_percent: 100\n")
    (p.settings.project_dir / "destinations.yaml").write_text(
        "rec_mirror: {type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}}\n"
        "rec_upsert: {type: recording, batch_size: 3}\n"
    )
    braze = fakes["braze"]
    p.set_people(people())
    assert p.sync().success
    assert len(braze.users) == 10
    sent_before = len(braze.requests)

    p.set_people(people({11: ("n", 1), 12: ("n", 2), 13: ("n", 3)}))  # 30% would be removed
    for _ in range(2):  # the whole job, then the sync alone: both refuse
        outcome = p.sync(only_syncs=bool(_))
        assert not outcome.success
    assert len(braze.requests) == sent_before

    outcome = p.sync(tags={OVERRIDE_TAG: "max_remove_percent"})
    assert outcome.success, outcome.errors
    assert len(braze.requests) > sent_before and counts(outcome)["rec_mirror"] == (0, 0, 3, 0)
