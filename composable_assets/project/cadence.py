"""Which audience cadences are accepted."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

NAMED_CADENCES = ("minutes", "hourly", "daily", "weekly")


def is_valid_cadence(cadence: str) -> bool:
    """True for a named cadence or a standard 5-field cron string that Dagster can schedule."""
    if cadence in NAMED_CADENCES:
        return True
    # Dagster also accepts "@daily"-style macros; the project format only allows 5 fields.
    if len(cadence.split()) != 5:
        return False
    # Imported only for a cron string: loading a project of named cadences needs no dagster (~1.5 s).
    import dagster as dg

    try:
        # Dagster's public API validates cron strings when a schedule is defined.
        dg.ScheduleDefinition(name="cadence_check", cron_schedule=cadence, job_name="cadence_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def _checked(value: str) -> str:
    if not is_valid_cadence(value):
        raise ValueError(f"cadence must be one of {', '.join(NAMED_CADENCES)} or a 5-field cron string, got {value!r}")
    return value


#: A file's `cadence:` field, checked as it is read.
Cadence = Annotated[str, AfterValidator(_checked)]
