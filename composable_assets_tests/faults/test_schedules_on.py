"""Schedules are on by default: a team that writes `cadence: weekly` gets its Monday sync without turning anything on.

Before, every `<audience>_schedule` started STOPPED (`dagster schedule list`), although the README said they were on.
"""

from __future__ import annotations

import shutil

import dagster as dg

from composable_assets.definitions import load_definitions
from composable_assets.settings import Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR

from ..test_schedules import sample_defs


def test_audience_schedules_run_by_default_and_a_project_can_start_them_stopped(tmp_path):
    # The cadence in the file is the intent: a weekly audience's schedule runs without anyone turning it on.
    statuses = {s.name: s.default_status for s in sample_defs(tmp_path).schedules}
    assert set(statuses.values()) == {dg.DefaultScheduleStatus.RUNNING}, statuses

    project = tmp_path / "project"
    shutil.copytree(SAMPLE_PROJECT_DIR, project)
    settings_file = project / "project.yaml"
    settings_file.write_text(settings_file.read_text() + "schedules: false\n")
    defs = load_definitions(Settings(project, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path))
    statuses = {s.name: s.default_status for s in defs.schedules}
    assert statuses["weekly_newsletter_schedule"] == statuses["lapsed_customers_schedule"] == dg.DefaultScheduleStatus.STOPPED
    # Honouring deletion requests and archiving are obligations, not cadences: they stay on.
    assert statuses["deletion_requests_schedule"] == dg.DefaultScheduleStatus.RUNNING

