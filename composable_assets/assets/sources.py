"""Sources: the raw warehouse tables the models read, observed in place and never copied."""

import warnings

import dagster as dg

from ..landing import LandingFolder, load_landing
from ..landing.folder import REJECTED
from ..project.keys import SOURCES, WAREHOUSE_POOL, source_key
from ..warehouse import Warehouse
from ..warehouse.sql import ident


def build_source_observer(tables: list[str], warehouse_kind: str) -> dg.AssetsDefinition | None:
    """One observable source asset per table, observed together over a single connection."""
    if not tables:
        return None
    specs = [
        dg.AssetSpec(
            key=source_key(t),
            group_name=SOURCES,
            description=f"Warehouse table `{t}`, read by the models; observed, never copied.",
            kinds={warehouse_kind, "table"},
        )
        for t in tables
    ]

    def observe_sources(context: dg.AssetExecutionContext, warehouse: Warehouse):
        with warehouse.connect() as conn:
            for t in tables:
                columns = dict(conn.table_columns(None, t))
                if not columns:
                    context.log.warning(f"source table {t!r} does not exist in {warehouse.engine.describe()}")
                    continue
                # Row count plus the newest update is a cheap, good-enough change marker.
                marker = "max(updated_at)" if "updated_at" in columns else "NULL"
                rows, newest = conn.fetch_row(f"SELECT count(*), {marker} FROM {ident(t)}")
                yield dg.ObserveResult(
                    asset_key=source_key(t),
                    data_version=dg.DataVersion(f"{rows}:{newest}"),
                    metadata={"dagster/row_count": rows, "newest_update": str(newest)},
                )

    # Observable sources are a beta API; it is the one that observes tables in place without copying them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.multi_observable_source_asset(specs=specs, name="observe_sources")(observe_sources)


def build_landing_loader(
    folders: dict[str, LandingFolder],
    schema: str,
    warehouse_kind: str,
    samples: bool = False,
    journal_columns: dict[str, list[str]] | None = None,
) -> dg.AssetsDefinition | None:
    """One asset per landed table: loads the files waiting in its landing folder, each exactly once.

    `samples` (project.yaml `payload_samples`): a refused file's reason goes to Dagster as the warehouse gave it,
    which may quote a value of the file (member data); otherwise only where the reason is kept.
    `journal_columns`: table -> the columns models are kept by, whose loaded values go to the change journal.
    """
    if not folders:
        return None
    specs = [
        dg.AssetSpec(
            key=source_key(t),
            group_name=SOURCES,
            description=f"Warehouse table `{t}`, fed by the files landing in {folder.path} "
            f"({'upserted by ' + folder.key if folder.key else 'appended'}).",
            kinds={warehouse_kind, "table", "parquet"},
            metadata={"landing_folder": str(folder.path), "upsert_key": folder.key or "none (append)"},
            skippable=True,
        )
        for t, folder in folders.items()
    ]
    checks = [
        dg.AssetCheckSpec("landing_files_accepted", asset=source_key(t), description="Every landed file was loaded.")
        for t in folders
    ]

    @dg.multi_asset(specs=specs, check_specs=checks, name="load_landing", can_subset=True, pool=WAREHOUSE_POOL)
    def _load(context: dg.AssetExecutionContext, warehouse: Warehouse):
        selected = {key.path[-1] for key in context.selected_asset_keys}
        with warehouse.connect() as conn:
            for t, folder in folders.items():
                if t not in selected:
                    continue
                try:
                    report = load_landing(
                        conn, folder, schema, context.run.run_id, journal_columns=(journal_columns or {}).get(t, ())
                    )
                except ValueError as exc:
                    raise dg.Failure(description=str(exc)) from exc
                reasons = [
                    reason
                    if samples
                    else f"{name}: refused by the warehouse; the reason (it may quote the file's "
                    f"rows) is in {name}.error.txt beside it"
                    for name, reason in report.rejected
                ]
                for reason in reasons:
                    # The file is kept under _rejected/ with the reason beside it: nothing landed is lost.
                    context.log.error(f"landing file refused, moved to {folder.path / REJECTED}: {reason}")
                (total,) = conn.fetch_row(f"SELECT count(*) FROM {ident(t)}")
                yield dg.MaterializeResult(
                    asset_key=source_key(t),
                    metadata={
                        "files_loaded": report.files,
                        "rows_loaded": report.rows,
                        "files_rejected": len(report.rejected),
                        "dagster/row_count": total,
                    },
                )
                yield dg.AssetCheckResult(
                    asset_key=source_key(t),
                    check_name="landing_files_accepted",
                    passed=not report.rejected,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=("; ".join(reasons[:5]) if reasons else "all files loaded"),
                    metadata={"files_rejected": len(report.rejected)},
                )

    return _load
