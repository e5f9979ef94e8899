"""The one entry point: `defs`, built from the project folder and the warehouse setting at load time."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from .assets.archive import archive_job, archive_schedule, build_archive_asset, outbox_folders
from .assets.audiences import AudienceAsset, build_audience_asset, sync_shapes
from .assets.dbt_models import DbtAssets, build_dbt_assets, dbt_resource
from .assets.deletions import build_deletion_asset, deletion_job
from .assets.deliveries import DeliverySpec, build_delivery_asset
from .assets.deltas import DeltaAsset, build_delta_asset
from .assets.models import ModelAsset, build_model_asset
from .assets.python_models import build_python_model_asset
from .assets.seeds import seed_job
from .assets.sources import build_landing_loader, build_source_observer
from .automation.alerts import alert_sensor
from .automation.freshness import freshness_policy, heartbeat_interval
from .automation.priority import priority_tags, step_priorities
from .automation.schedules import audience_schedule
from .automation.sensors import Watch, change_sensor, minute_level_job, nightly_full_schedule
from .automation.stale_runs import free_dead_runs_sensor
from .coordination import Coordination
from .destinations import DESTINATION_TYPES, Destination
from .destinations.resource import DestinationResource, destination_resource_key
from .governance.archive import archive_location
from .governance.consent import (
    condition_tables,
    consent_conditions,
    member_key_column,
    member_watches,
    not_forgotten_predicate,
)
from .governance.lineage import as_metadata, column_lineage
from .governance.pii import pii_categories, tagged_schema
from .landing import landing_folders
from .project import Project, ProjectError, StreamSpec, load_project
from .project.gates import resolve_gates
from .project.incremental import Refresh, journal_columns
from .project.keys import (
    DBT_RESOURCE,
    MODELS,
    PANDAS_IO_MANAGER,
    Delivery,
    audience_key,
    delta_key,
    model_key,
    source_key,
    stream_key,
    sync_key,
)
from .project.schema import with_cached_columns
from .settings import Settings
from .streams.shape import MEMBER_KEYS
from .warehouse import Warehouse

# Deletion requests are worked daily before the daily and weekly syncs (06:00), so those find them purged.
DELETION_CRON = "30 5 * * *"


def daily_partitions(project: Project) -> dg.DailyPartitionsDefinition:
    # end_offset=1 makes today a partition: minute-level audiences deliver into it all day.
    return dg.DailyPartitionsDefinition(
        start_date=project.settings.start_date.isoformat(), end_offset=1, timezone=project.settings.timezone
    )


def coordination_of(settings: Settings) -> Coordination:
    """Where leases and rate budgets live: shared by every process (and machine) running this project."""
    return Coordination.from_url(settings.coordination, lease_seconds=settings.lease_seconds)


def destination_resources(project: Project, settings: Settings) -> dict[str, DestinationResource]:
    """Every configured destination as a resource; the outbox writes under the local data folder unless told otherwise."""
    resources = {}
    for name, spec in project.destinations.items():
        options = dict(spec.settings)
        if spec.type == "outbox":
            options.setdefault("path", str(settings.outbox_dir))
        resources[name] = DestinationResource(name=name, type=spec.type, settings=options)
    return resources


def destinations_of(project: Project, settings: Settings) -> dict[str, Destination]:
    """Every configured destination, built from its resource (what the assets plan with when the definitions load)."""
    coordination = coordination_of(settings)
    return {name: r.build(coordination) for name, r in destination_resources(project, settings).items()}


def audience_job_name(audience: str) -> str:
    return f"sync_{audience}"


def sources_upstream_of(project: Project, table: str) -> list[str]:
    """The source tables a model reads, directly or through other models; a source table is its own source."""
    return project.sources_upstream_of(table)


def upstream_keys(project: Project, table: str) -> list[dg.AssetKey]:
    """Assets to run before anything reading `table`: its landing loads, then its models in order."""
    keys = [source_key(t) for t in sources_upstream_of(project, table) if t in project.settings.landing]
    if table in project.models:
        keys += [model_key(m) for m in (*project.models_upstream_of(table), table)]
    return keys


#: The job that materializes every model (`composable build`).
BUILD_JOB = "build_models"


def models_selection(project: Project) -> dg.AssetSelection:
    """Every model (SQL, Python, or any other asset in the models group) and the landing loads feeding them.

    By group, not by file: a model of another kind added to the group is built with the rest.
    """
    models = dg.AssetSelection.groups(MODELS)
    landed = dg.AssetSelection.assets(*(source_key(t) for t in project.settings.landing))
    return models | (models.upstream() & landed)


def audience_keys(project: Project, audience: str, destination: str | None = None) -> list[dg.AssetKey]:
    """Everything one audience's syncs need: landing loads, upstream models, the audience, deltas and syncs."""
    spec = project.audiences[audience]
    pairs = [s.destination for s in spec.syncs if destination in (None, s.destination)]
    keys = upstream_keys(project, spec.model)
    keys.append(audience_key(audience))
    for d in pairs:
        keys += [delta_key(audience, d), sync_key(audience, d)]
    return keys


def audience_selection(project: Project, audience: str, destination: str | None = None) -> dg.AssetSelection:
    return dg.AssetSelection.assets(*audience_keys(project, audience, destination))


def stream_job_name(stream: str) -> str:
    return f"stream_{stream}"


def stream_keys(project: Project, stream: str, destination: str | None = None) -> list[dg.AssetKey]:
    """Everything one stream's deliveries need: landing loads and models behind its table, and the stream assets."""
    spec = project.streams[stream]
    keys = upstream_keys(project, spec.table)
    keys += [stream_key(stream, s.destination) for s in spec.syncs if destination in (None, s.destination)]
    return keys


def minute_level_deliveries(project: Project) -> list[list[dg.AssetKey]]:
    """Each minute-level delivery (audience sync, stream sync) as every asset it needs: what orders their steps."""
    deliveries = [
        audience_keys(project, a.name, s.destination)
        for a in project.audiences.values()
        if a.cadence == "minutes"
        for s in a.syncs
    ]
    deliveries += [
        stream_keys(project, st.name, s.destination)
        for st in project.streams.values()
        if st.cadence == "minutes"
        for s in st.syncs
    ]
    return deliveries


def stream_selection(project: Project, stream: str, destination: str | None = None) -> dg.AssetSelection:
    return dg.AssetSelection.assets(*stream_keys(project, stream, destination))


def stream_conditions(project: Project, stream: StreamSpec) -> tuple[StreamSpec, dict[str, str]]:
    """The stream with its member key column resolved, and destination -> who may be sent its events (consent)."""
    key = member_key_column(project, stream)
    conditions = consent_conditions(project, column=key or "_key")
    needing = [s.destination for s in stream.syncs if s.destination in conditions]
    if needing and key is None:
        raise ProjectError(
            f"stream `{stream.name}` sends to {', '.join(needing)}, which only receive people who may be sent there; "
            "name the column holding the person's key with `key:`",
            stream.path,
        )
    return stream.model_copy(update={"key": key}), conditions


def native_stream_conditions(project: Project, stream: StreamSpec) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The same conditions comparing the stream's key column with the consent table's key as they are, reading only
    the consents of the members checked (used when the two columns' types match), and that key as (table, column)."""
    consent = project.settings.consent
    if stream.key is None or consent is None:
        return {}, None
    return consent_conditions(project, column=stream.key, keys=MEMBER_KEYS), (consent.table, consent.key)


def governance_of(project: Project) -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    """What every asset spec gets from the project as a whole: column lineage, PII-tagged columns, default owners."""
    # Column lineage from source column to destination field, derived from the SQL (see governance/lineage.py).
    lineage = column_lineage(project)
    personal = pii_categories(lineage, project.settings.pii)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key in lineage:
            columns = lineage[spec.key]
            spec = spec.merge_attributes(
                metadata={
                    "dagster/column_lineage": as_metadata(columns),
                    "dagster/column_schema": tagged_schema(list(columns), personal.get(spec.key, {})),
                }
            )
        if not spec.owners and project.settings.owners:
            spec = spec.merge_attributes(owners=project.settings.owners)
        return spec

    return apply


def pandas_io_managers(project: Project, warehouse: Warehouse) -> dict[str, dg.ConfigurableIOManagerFactory]:
    """The warehouse's pandas I/O manager when the project has Python models; refused where Dagster has none."""
    python = [m for m in project.models.values() if m.is_python]
    if not python:
        return {}
    manager = warehouse.engine.pandas_io_manager()
    if manager is None:
        raise ProjectError(
            f"Python models need a warehouse Dagster has a pandas I/O manager for (DuckDB, Snowflake, BigQuery); "
            f"this warehouse is {warehouse.kind}. Write this model as SQL, or see docs/project-folder.md, Python models",
            python[0].path,
            root=project.root,
        )
    return {PANDAS_IO_MANAGER: manager}


def build_definitions(project: Project, settings: Settings) -> dg.Definitions:
    """Assets, jobs and resources for one project on one warehouse."""
    warehouse = Warehouse.from_url(settings.warehouse_url)
    kind = warehouse.kind
    schema = project.settings.schema_name
    samples = project.settings.payload_samples
    partitions = daily_partitions(project)
    destinations = destinations_of(project, settings)
    allowed = consent_conditions(project)

    landing = landing_folders(project.settings.landing, settings.data_dir)
    refreshes = project.refreshes
    priorities = step_priorities(minute_level_deliveries(project))
    assets: list = [
        (build_python_model_asset if m.is_python else build_model_asset)(
            ModelAsset(
                m,
                project.root,
                kind,
                schema,
                refreshes[m.name],
                landed=frozenset(landing),
                models=frozenset(project.models),
                op_tags=priority_tags(priorities, model_key(m.name)),
            )
        )
        for m in project.models.values()
        if not m.is_dbt
    ]
    dbt_resources: dict[str, dg.ConfigurableResource] = {}
    if project.dbt is not None:
        # The dbt project's models and seeds: one dagster-dbt multi-asset, run by `dbt build`.
        dbt_models = {n: m for n, m in project.models.items() if m.is_dbt}
        assets.append(build_dbt_assets(DbtAssets(project.dbt, dbt_models, schema, project.root)))
        dbt_resources[DBT_RESOURCE] = dbt_resource(project.dbt)
    requests = project.settings.deletion_requests
    # The deletion requests table is a source even when no model reads it: its asset depends on it.
    extra = [requests.table] if requests and requests.table not in (*project.sources, *landing) else []
    source_observer = build_source_observer([t for t in [*project.sources, *extra] if t not in landing], kind)
    if source_observer is not None:
        assets.append(source_observer)
    landing_loader = build_landing_loader(landing, schema, kind, samples, journal_columns(refreshes))
    if landing_loader is not None:
        assets.append(landing_loader)
    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = []
    schedules = []
    # Frees the warehouse slots of runs killed mid-step (automation/stale_runs.py).
    sensors = [free_dead_runs_sensor]
    # Minute-level audiences and streams, run by the one change sensor.
    watches: list[Watch] = []
    for audience in project.audiences.values():
        model = project.models.get(audience.model)
        # A person who asked to be forgotten is not kept in the snapshot either (their deltas exclude them anyway).
        members = not_forgotten_predicate(project, audience.primary_key)
        model_refresh = refreshes.get(audience.model)
        watches_of_members = member_watches(project) if members else []
        if watches_of_members is None:
            # A member condition whose changes cannot be told by key: compared in full.
            model_refresh = Refresh(
                None, "the consent table has no updated_at, so a changed grant cannot be told by key"
            )
        assets.append(
            build_audience_asset(
                AudienceAsset(
                    audience,
                    schema,
                    kind,
                    samples=samples,
                    members=members,
                    reads=condition_tables(project) if members else {},
                    model_refresh=model_refresh,
                    watched=watches_of_members or [],
                    op_tags=priority_tags(priorities, audience_key(audience.name)),
                )
            )
        )
        keyed = model_refresh is not None and model_refresh.key == audience.primary_key
        # What the file's cadence promises about the destination, shown and checked by Dagster.
        policy = freshness_policy(audience.cadence, audience.freshness, project.settings.timezone)
        for sync, shape in zip(audience.syncs, sync_shapes(audience, allowed)):
            gates = resolve_gates(project.settings.gates, audience.gates)
            reads = condition_tables(project) if shape.allowed else {}
            assets.append(
                build_delta_asset(
                    DeltaAsset(
                        audience,
                        sync,
                        shape,
                        schema,
                        partitions,
                        kind,
                        gates,
                        samples=samples,
                        reads=reads,
                        incremental=keyed and (not shape.allowed or member_watches(project) is not None),
                        watched=(member_watches(project) or []) if shape.allowed else [],
                        op_tags=priority_tags(priorities, delta_key(audience.name, sync.destination)),
                    )
                )
            )
            assets.append(
                build_delivery_asset(
                    DeliverySpec(
                        Delivery("audience", audience.name),
                        audience,
                        sync,
                        destinations[sync.destination],
                        schema=schema,
                        partitions=partitions,
                        warehouse_kind=kind,
                        freshness_policy=policy,
                        samples=samples,
                        model_path=model.path if model is not None else None,
                        op_tags=priority_tags(priorities, sync_key(audience.name, sync.destination)),
                    )
                )
            )
        job = dg.define_asset_job(
            audience_job_name(audience.name),
            selection=audience_selection(project, audience.name),
            description=f"Refresh `{audience.name}` and deliver it to every destination it syncs to.",
        )
        jobs.append(job)
        schedule = audience_schedule(
            audience.name, audience.cadence, job, project.settings.timezone, project.settings.schedules
        )
        if schedule is not None:
            schedules.append(schedule)
        if audience.cadence == "minutes":
            watches.append(
                Watch(
                    audience.name,
                    tuple(sources_upstream_of(project, audience.model)),
                    tuple(audience_keys(project, audience.name)),
                    heartbeat_interval(audience.cadence, audience.freshness),
                )
            )
    # Event streams: one asset per (stream, destination) reading the stream's model or source table, one job each.
    for stream in project.streams.values():
        stream, conditions = stream_conditions(project, stream)
        native, against = native_stream_conditions(project, stream)
        upstream = model_key(stream.table) if stream.table in project.models else source_key(stream.table)
        policy = freshness_policy(stream.cadence, stream.freshness, project.settings.timezone)
        for stream_sync in stream.syncs:
            destination = destinations[stream_sync.destination]
            assets.append(
                build_delivery_asset(
                    DeliverySpec(
                        Delivery("stream", stream.name),
                        stream,
                        stream_sync,
                        destination,
                        schema=schema,
                        partitions=partitions,
                        warehouse_kind=kind,
                        upstream=upstream,
                        timezone=project.settings.timezone,
                        freshness_policy=policy,
                        samples=samples,
                        allowed=conditions.get(stream_sync.destination),
                        allowed_native=native.get(stream_sync.destination),
                        native_against=against,
                        op_tags=priority_tags(priorities, stream_key(stream.name, stream_sync.destination)),
                    )
                )
            )
        job = dg.define_asset_job(
            stream_job_name(stream.name),
            selection=stream_selection(project, stream.name),
            description=f"Forward new rows of `{stream.table}` as events to every destination of `{stream.name}`.",
        )
        jobs.append(job)
        # Named after the job, so a stream and an audience of the same name get distinct schedules.
        schedule = audience_schedule(
            stream_job_name(stream.name), stream.cadence, job, project.settings.timezone, project.settings.schedules
        )
        if schedule is not None:
            schedules.append(schedule)
        if stream.cadence == "minutes":
            watches.append(
                Watch(
                    f"stream:{stream.name}",
                    tuple(sources_upstream_of(project, stream.table)),
                    tuple(stream_keys(project, stream.name)),
                    heartbeat_interval(stream.cadence, stream.freshness),
                )
            )
    if any(MODELS in asset.group_names_by_key.values() for asset in assets):
        jobs.append(
            dg.define_asset_job(
                BUILD_JOB,
                selection=models_selection(project),
                description="Materialize every model, after loading the landing folders they read.",
            )
        )
    # A file into a warehouse table (`composable seed`), with the file and table as run config.
    jobs.append(seed_job(frozenset(project.models)))
    if requests is not None:
        archive = archive_location(project.settings.archive, settings.data_dir)
        assets.append(build_deletion_asset(project, destinations, kind, archive))
        jobs.append(forget_job := deletion_job())
        # On by default: honouring requests must not wait for someone to switch a schedule on.
        schedules.append(
            dg.ScheduleDefinition(
                name="deletion_requests_schedule",
                job=forget_job,
                cron_schedule=DELETION_CRON,
                execution_timezone=project.settings.timezone,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Honour new deletion requests daily at 05:30, before the 06:00 syncs.",
            )
        )
    # Archival: days older than the retention leave the hot tables for Parquet files (governance/archive.py).
    assets.append(build_archive_asset(project, settings.data_dir, outbox_folders(destinations), kind))
    jobs.append(old_days := archive_job())
    schedules.append(archive_schedule(old_days, project.settings.timezone))
    if watches:
        minute_job = minute_level_job(watches)
        jobs.append(minute_job)
        interval = max(1, int(project.settings.sensor_interval.total_seconds()))
        sensors.append(change_sensor(watches, minute_job, landing, warehouse, project.settings.timezone, interval))
        schedules.append(nightly_full_schedule(minute_job, project.settings.timezone))
    if project.settings.alerts:
        keys = [key for asset in assets for key in asset.keys]
        sensors.append(alert_sensor(project.settings.name, project.settings.alerts, keys, settings.ui_url))
    assets = list(dg.map_asset_specs(governance_of(project), assets))
    frames = pandas_io_managers(project, warehouse)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={
            "warehouse": warehouse,
            "coordination": coordination_of(settings),
            **{destination_resource_key(name): r for name, r in destination_resources(project, settings).items()},
            **frames,
            **dbt_resources,
        },
        # Steps share one warehouse (the "warehouse" pool runs them one at a time anyway), so a process per
        # step would only add ~2 s of start-up each; minute-level latency is dominated by such overheads.
        executor=dg.in_process_executor,
    )


def load_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    project = load_project(
        settings.project_dir, known_destination_types=DESTINATION_TYPES, warehouse_url=settings.warehouse_url
    )
    return build_definitions(with_cached_columns(project, settings.data_dir, settings.warehouse_url), settings)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by workspace.yaml: the project named by COMPOSABLE_PROJECT_DIR on COMPOSABLE_WAREHOUSE."""
    return load_definitions()
