"""What a delivery materialization reports: the counts of each kind of delivery, as metadata."""

from __future__ import annotations

from ..delivery import StreamReport, SyncReport
from .metadata import markdown_table, rejections_table, shown


def sync_report_metadata(report: SyncReport, delta_run_id: str, samples: bool) -> dict:
    """The counts every sync materialization carries; what was sent, and to whom, only with samples on."""
    rate = report.delivered / report.seconds if report.seconds > 0 else 0.0
    metadata = {
        "added": report.added,
        "updated": report.updated,
        "removed": report.removed,
        "failed": report.failed,
        "skipped": report.skipped,
        "unsent": report.unsent,
        "batches": report.batches,
        "duration_seconds": round(report.seconds, 3),
        "rows_per_second": round(rate, 1),
        "delta_run_id": delta_run_id,
        # What the destination received for the first rows, one row each (a small Markdown table in the UI).
        "payload_sample": markdown_table(report.sample),
    }
    metadata.update({name: round(value, 3) for name, value in report.stats.items()})
    if report.failures:
        metadata["failures"] = rejections_table(report.failures, samples, "key")
    return shown(metadata, samples)


def stream_report_metadata(report: StreamReport, samples: bool) -> dict:
    """The counts every stream materialization carries; what was sent (no secrets), and to whom, only with samples on."""
    metadata = {
        "sent": report.sent,
        "rejected": report.rejected,
        "in_doubt": report.in_doubt,
        "late_skipped": report.late_skipped,
        "resent_after_crash": report.resent,
        "unsent": report.unsent,
        "batches": report.batches,
        "duration_seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second, 1),
        "high_water_mark": str(report.high_water) if report.high_water else "none",
        "window_start": str(report.window_start) if report.window_start else "none",
        # What the destination received for the first rows, one row each (a small Markdown table in the UI).
        "payload_sample": markdown_table(report.sample),
    }
    metadata.update({name: round(value, 3) for name, value in report.stats.items()})
    if report.failures:
        metadata["rejections"] = rejections_table(report.failures, samples, "event_id")
    return shown(metadata, samples)
