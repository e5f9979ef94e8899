"""Freshness policies: what each file's cadence promises, in Dagster's terms, so the UI shows when it is late."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ..project.freshness import FreshnessSpec, freshness_for


def freshness_policy(cadence: str, declared: FreshnessSpec | None, timezone: str) -> dg.FreshnessPolicy | None:
    """A time window for minute-level and hourly files, a cron deadline for daily and weekly ones."""
    spec = freshness_for(cadence, declared)
    if spec is None:
        return None
    # FreshnessSpec's validator makes a deadline come with a lower bound, and a time window with fail_after.
    if spec.deadline is not None:
        assert spec.lower_bound is not None
        return dg.FreshnessPolicy.cron(
            deadline_cron=spec.deadline, lower_bound_delta=spec.lower_bound, timezone=timezone
        )
    assert spec.fail_after is not None
    return dg.FreshnessPolicy.time_window(fail_window=spec.fail_after, warn_window=spec.warn_after)


def heartbeat_interval(cadence: str, declared: FreshnessSpec | None) -> dt.timedelta | None:
    """How long a quiet minute-level target may go without a run: half its warn window (else half of fail).

    Quiet sources are not stale data, but an audience can change with the clock alone (`last 48 hours`), and a
    run that finds nothing to send is what proves the destination is current; so the sensor refreshes it.
    """
    spec = freshness_for(cadence, declared)
    if spec is None or spec.fail_after is None:
        return None
    return (spec.warn_after or spec.fail_after) / 2
