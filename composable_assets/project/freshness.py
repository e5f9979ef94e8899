"""How stale a file's deliveries may get before the UI says so: `freshness:` in an audience or stream file."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from .cadence import is_valid_cadence

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> dt.timedelta:
    """`90s`, `2m`, `1h`, `3d` or a number of seconds -> timedelta."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write it like 90s, 5m, 2h or 3d")
    return dt.timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class FreshnessSpec(BaseModel):
    """Either a time window (`warn_after`/`fail_after`) or a cron `deadline` with a `lower_bound`."""

    model_config = ConfigDict(extra="forbid")

    warn_after: Duration | None = None
    fail_after: Duration | None = None
    deadline: str | None = None
    # How long before the deadline a materialization still counts for it.
    lower_bound: Duration | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FreshnessSpec:
        window = self.warn_after is not None or self.fail_after is not None
        if window and (self.deadline or self.lower_bound):
            raise ValueError("use either warn_after/fail_after or deadline/lower_bound, not both")
        if self.deadline is not None:
            if not is_valid_cadence(self.deadline) or self.deadline in ("minutes", "hourly", "daily", "weekly"):
                raise ValueError(f"deadline must be a 5-field cron string, got {self.deadline!r}")
            if self.lower_bound is None:
                raise ValueError("a deadline needs a lower_bound (how long before it a refresh still counts)")
        elif not window:
            raise ValueError("set warn_after/fail_after, or deadline and lower_bound")
        else:
            if self.fail_after is None:
                raise ValueError("a time window needs fail_after")
            # Dagster rejects windows under a minute.
            for name in ("warn_after", "fail_after"):
                value = getattr(self, name)
                if value is not None and value < dt.timedelta(minutes=1):
                    raise ValueError(f"{name} must be at least 1m, got {value}")
            if self.warn_after is not None and self.warn_after >= self.fail_after:
                raise ValueError("warn_after must be shorter than fail_after")
        return self


# What a cadence promises when the file does not say: minute-level is at most 5 minutes stale (warn at 2);
# hourly within two hours; daily and weekly refresh at 06:00 and must be done by 09:00 (Mondays for weekly).
# Constructed unchecked: checking their cron strings would import dagster (~1.5 s) with this module, which the
# command line's quiet check must not (the test suite checks them).
DEFAULT_FRESHNESS = {
    "minutes": FreshnessSpec.model_construct(warn_after=dt.timedelta(minutes=2), fail_after=dt.timedelta(minutes=5)),
    "hourly": FreshnessSpec.model_construct(warn_after=dt.timedelta(minutes=75), fail_after=dt.timedelta(hours=2)),
    "daily": FreshnessSpec.model_construct(deadline="0 9 * * *", lower_bound=dt.timedelta(hours=3)),
    "weekly": FreshnessSpec.model_construct(deadline="0 9 * * 1", lower_bound=dt.timedelta(hours=3)),
}


def freshness_for(cadence: str, declared: FreshnessSpec | None) -> FreshnessSpec | None:
    """The declared policy, else the cadence's default; a custom cron cadence has none unless declared."""
    return declared if declared is not None else DEFAULT_FRESHNESS.get(cadence)
