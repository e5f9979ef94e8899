"""Schedules from audience cadences, evaluated at explicit times."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from composable_assets.definitions import load_definitions
from composable_assets.settings import Settings
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR


def sample_defs(tmp_path) -> dg.Definitions:
    return load_definitions(Settings(SAMPLE_PROJECT_DIR, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path))


def test_weekly_and_minute_audiences_get_the_right_automation(tmp_path):
    defs = sample_defs(tmp_path)
    names = {s.name: s for s in defs.schedules}
    # weekly_newsletter and lapsed_customers are weekly; vip and cart abandoners are minute-level (a sensor's job).
    # The governance jobs (archive, deletion requests) run daily on schedules of their own, and the minute-level
    # job once a night in full, the incremental path's safety net.
    assert set(names) == {
        "weekly_newsletter_schedule", "lapsed_customers_schedule", "archive_schedule", "deletion_requests_schedule",
        "minute_level_nightly_full",
    }
    assert names["deletion_requests_schedule"].cron_schedule == "30 5 * * *"  # before the 06:00 syncs
    assert names["deletion_requests_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert names["weekly_newsletter_schedule"].cron_schedule == "0 6 * * 1"
    assert names["weekly_newsletter_schedule"].job_name == "sync_weekly_newsletter"


def test_the_nightly_full_recompute_requests_its_day_tagged_full(tmp_path):
    defs = sample_defs(tmp_path)
    schedule = defs.resolve_schedule_def("minute_level_nightly_full")
    assert schedule.job_name == "minute_level" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    night = dt.datetime(2026, 11, 30, 3, 15, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=night, repository_def=defs.get_repository_def()) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-30"
    assert request.tags["composable/refresh"] == "full"


def test_the_weekly_schedule_requests_mondays_partition(tmp_path):
    defs = sample_defs(tmp_path)
    schedule = defs.resolve_schedule_def("weekly_newsletter_schedule")
    monday = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=monday, repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests
    assert request.partition_key == "2026-11-30"
    assert request.run_key == "weekly_newsletter:2026-11-30T06:00:00+00:00"


def test_a_cron_cadence_is_used_as_written(small):
    small.write("audiences/high.yaml", open(small.settings.project_dir / "audiences/high.yaml").read()
                .replace("cadence: daily", 'cadence: "30 7 * * 1-5"'))
    defs = load_definitions(small.settings)
    [schedule] = [s for s in defs.schedules if s.name == "high_schedule"]
    assert schedule.cron_schedule == "30 7 * * 1-5"
    tick = dt.datetime(2026, 3, 3, 7, 30, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-03"
