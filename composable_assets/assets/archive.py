"""The archive asset: old days of delta logs, sync logs and outboxes move to Parquet files (governance/archive.py)."""

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from ..destinations import Destination
from ..governance.archive import ArchiveReport, archive, archive_cutoff, archive_location
from ..project import Project
from ..project.keys import GOVERNANCE, WAREHOUSE_POOL, governance_key
from ..warehouse import Warehouse
from .metadata import markdown_table

ARCHIVE_KEY = governance_key("archive")
ARCHIVE_JOB = "archive"


class ArchiveConfig(dg.Config):
    """Launchpad settings of one archive run."""

    before: str | None = None
    """Archive the days before this one (YYYY-MM-DD) instead of those older than the project's retention; never today."""


def report_metadata(report: ArchiveReport, where: str) -> dict:
    """Counts per table (rows, files, bytes, days): no member data."""
    return {
        "cutoff": str(report.cutoff),
        "location": where,
        "rows_archived": report.rows,
        "files_written": report.files,
        "bytes_written": report.bytes,
        "days": ", ".join(str(d) for d in report.days) or "none",
        "tables": markdown_table(report.table_rows(), limit=len(report.tables))
        if report.tables
        else "nothing to archive",
        "per_table": dg.MetadataValue.json(report.table_rows()),
        "orphans_removed": report.orphans_removed,
        "days_left_for_next_run": ", ".join(str(d) for d in report.skipped_days) or "none",
    }


def build_archive_asset(
    project: Project, data_dir: Path, outboxes: Mapping[str, Path], warehouse_kind: str
) -> dg.AssetsDefinition:
    """The `governance/archive` asset of a project; `outboxes`: outbox destination name -> its folder."""
    spec = project.settings.archive
    schema = project.settings.schema_name
    location = archive_location(spec, data_dir)

    @dg.asset(
        key=ARCHIVE_KEY,
        group_name=GOVERNANCE,
        description=f"Moves delta logs, sync logs and outboxes older than {spec.retention_days} days to Parquet "
        "files and drops them from the hot tables.",
        kinds={warehouse_kind, "parquet"},
        pool=WAREHOUSE_POOL,
        metadata={"retention_days": spec.retention_days, "location": location.display},
    )
    def _archive(
        context: dg.AssetExecutionContext, config: ArchiveConfig, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        try:
            before = dt.date.fromisoformat(config.before) if config.before else None
        except ValueError:
            raise dg.Failure(description=f"before: {config.before!r} is not a date like 2026-01-31") from None
        cutoff = archive_cutoff(spec, project.settings.timezone, before)
        with warehouse.connect() as conn:
            report = archive(
                conn,
                location,
                schema,
                cutoff=cutoff,
                run_id=context.run.run_id,
                outboxes=outboxes,
                log=context.log.info,
            )
        context.log.info(
            f"archived {report.rows} rows in {report.files} files ({report.bytes} bytes) of the days before {cutoff} "
            f"to {location.display}"
        )
        return dg.MaterializeResult(metadata=report_metadata(report, location.display))

    return _archive


# Daily at 03:00 in the project's timezone: quiet hours, before deletion requests (05:30) and the 06:00 syncs.
ARCHIVE_CRON = "0 3 * * *"


def archive_job():
    return dg.define_asset_job(
        ARCHIVE_JOB,
        selection=dg.AssetSelection.assets(ARCHIVE_KEY),
        description="Archive days older than the retention to Parquet files and drop them from the hot tables.",
    )


def archive_schedule(job, timezone: str) -> dg.ScheduleDefinition:
    # On by default, as every schedule here: with the 90-day default it only ever touches old days.
    return dg.ScheduleDefinition(
        name="archive_schedule",
        job=job,
        cron_schedule=ARCHIVE_CRON,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Archive old days daily at 03:00.",
    )


def outbox_folders(destinations: Mapping[str, Destination]) -> dict[str, Path]:
    """Outbox destination name -> the folder its files are written under (destinations/outbox.py)."""
    return {
        name: Path(d.settings["path"])
        for name, d in destinations.items()
        if getattr(d, "type_name", None) == "outbox" and d.settings.get("path")
    }
