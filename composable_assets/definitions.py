"""The one entry point: `defs`, built from the project folder and the warehouse setting at load time."""

from __future__ import annotations

import dagster as dg

from .assets.audiences import build_audience_asset, sync_shapes
from .assets.deltas import build_delta_asset
from .assets.keys import audience_key, delta_key, model_key, sync_key
from .assets.models import build_model_asset
from .assets.sources import build_source_observer
from .automation.schedules import audience_schedule
from .assets.syncs import build_sync_asset
from .destinations import DESTINATION_TYPES, Destination, build_destination
from .project import Project, load_project
from .settings import Settings
from .warehouse import Warehouse


def daily_partitions(project: Project) -> dg.DailyPartitionsDefinition:
    # end_offset=1 makes today a partition: minute-level audiences deliver into it all day.
    return dg.DailyPartitionsDefinition(
        start_date=project.settings.start_date.isoformat(), end_offset=1, timezone=project.settings.timezone
    )


def destinations_of(project: Project, settings: Settings) -> dict[str, Destination]:
    """Every configured destination; the outbox writes under the local data folder unless told otherwise."""
    built = {}
    for name, spec in project.destinations.items():
        options = dict(spec.settings)
        if spec.type == "outbox":
            options.setdefault("path", str(settings.outbox_dir))
        built[name] = build_destination(name, spec.type, options, settings.data_dir)
    return built


def audience_job_name(audience: str) -> str:
    return f"sync_{audience}"


def audience_selection(project: Project, audience: str, destination: str | None = None) -> dg.AssetSelection:
    """Everything one audience's syncs need: its upstream models, the audience, the deltas and the syncs."""
    spec = project.audiences[audience]
    pairs = [s.destination for s in spec.syncs if destination in (None, s.destination)]
    keys = [model_key(m) for m in (*project.models_upstream_of(spec.model), spec.model)]
    keys.append(audience_key(audience))
    for d in pairs:
        keys += [delta_key(audience, d), sync_key(audience, d)]
    return dg.AssetSelection.assets(*keys)


def build_definitions(project: Project, settings: Settings) -> dg.Definitions:
    """Assets, jobs and resources for one project on one warehouse."""
    warehouse = Warehouse(url=settings.warehouse_url)
    kind = warehouse.kind
    schema = project.settings.schema_name
    partitions = daily_partitions(project)
    destinations = destinations_of(project, settings)

    assets: list = [build_model_asset(m, project.root, kind) for m in project.models.values()]
    source_observer = build_source_observer(project.sources, kind)
    if source_observer is not None:
        assets.append(source_observer)
    jobs = []
    schedules = []
    for audience in project.audiences.values():
        assets.append(build_audience_asset(audience, schema, kind))
        for sync, shape in zip(audience.syncs, sync_shapes(audience)):
            assets.append(build_delta_asset(audience, sync, shape, schema, partitions, kind))
            assets.append(build_sync_asset(audience, sync, destinations[sync.destination], schema, partitions, kind))
        job = dg.define_asset_job(
            audience_job_name(audience.name),
            selection=audience_selection(project, audience.name),
            description=f"Refresh `{audience.name}` and deliver it to every destination it syncs to.",
        )
        jobs.append(job)
        schedule = audience_schedule(audience.name, audience.cadence, job, project.settings.timezone)
        if schedule is not None:
            schedules.append(schedule)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources={"warehouse": warehouse})


def load_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    project = load_project(settings.project_dir, known_destination_types=DESTINATION_TYPES)
    return build_definitions(project, settings)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by workspace.yaml: the project named by COMPOSABLE_PROJECT_DIR on COMPOSABLE_WAREHOUSE."""
    return load_definitions()
