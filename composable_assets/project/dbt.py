"""dbt projects as models: project.yaml `dbt:` names a dbt project whose models and seeds are models of this project.

Everything is read from dbt's own manifest (`target/manifest.json`): names, dependencies (`ref`, `source`),
descriptions, owners (`meta: {owners: [...]}`), columns. When the manifest is missing, or older than the dbt
project's files or the profile, `dbt parse` writes it (2-4 s, said on stderr); a fingerprint of the files' times and
sizes, kept beside it, spares that on every later load. dbt itself runs in its own process: here only as `dbt parse`,
at run time through dagster-dbt (assets/dbt_models.py).

Where dbt writes: unless the project brings its own profiles.yml (`profiles_dir:`), one is generated from
COMPOSABLE_WAREHOUSE (warehouse engines' `dbt_output`) under the dbt project's target folder, so dbt builds in the
very warehouse and schema audiences read models from. Secrets stay in environment variables: the file names them
with dbt's `env_var`, never their values.

Column lineage needs each model's SQL, which dbt writes in Jinja: it is rendered here with `ref` and `source`
replaced by the table names and nothing else available (no macros, no `var` without a default, no environment);
a model using more has no column lineage rather than a guessed one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

from .errors import ProjectError
from .specs import NAME_PATTERN, DbtNode, DbtSettings, ModelSpec

logger = logging.getLogger("composable_assets.project")

#: The profile's target name when the profile is generated from COMPOSABLE_WAREHOUSE.
GENERATED_TARGET = "composable"
#: Under the dbt project's target folder: the generated profiles.yml, and the fingerprint of the parsed manifest.
GENERATED_DIR = "composable"
FINGERPRINT_FILE = "manifest.fingerprint"
PARSE_TIMEOUT_SECONDS = 600
INSTALL_HINT = (
    "install dbt with `pip install 'composable_assets[dbt]'` (dagster-dbt, dbt-core, dbt-duckdb, dbt-postgres)"
)
#: dbt nodes that are tables of the warehouse, hence models here.
MODEL_TYPES = ("model", "seed", "snapshot")
#: Folders of a dbt project that never change what `dbt parse` finds (outputs, caches, version control).
_IGNORED_DIRS = {"logs", ".git", "__pycache__", ".venv", "venv", ".user.yml"}


@dataclass(frozen=True)
class DbtProject:
    """A project's dbt project, resolved: where it is, which profile and target dbt uses, and its manifest."""

    #: The dbt project's folder (holding dbt_project.yml).
    project_dir: Path
    #: The folder of the profiles.yml dbt reads: the project's own, or the generated one.
    profiles_dir: Path
    #: The profile's target, or None for the profile's default.
    target: str | None
    manifest_path: Path
    #: The dbt project's `name:`.
    name: str
    #: Whether profiles.yml was generated from COMPOSABLE_WAREHOUSE (else the project's own).
    generated_profile: bool
    #: project.yaml, and the line of `dbt:` in it: where problems of the dbt project are reported.
    settings_path: Path
    settings_line: int | None

    def error(self, message: str) -> ProjectError:
        return ProjectError(message, self.settings_path, self.settings_line)


def dbt_executable() -> str | None:
    """The `dbt` command: on PATH, else beside this Python (a virtualenv that was not activated)."""
    found = shutil.which("dbt")
    if found:
        return found
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else None


def load_dbt_project(
    root: Path, settings: DbtSettings, warehouse_url: str | None, settings_path: Path, settings_line: int | None
) -> tuple[DbtProject, dict[str, ModelSpec]]:
    """The dbt project named by project.yaml and its models and seeds, parsing it first when its manifest is stale."""

    def error(message: str) -> ProjectError:
        return ProjectError(message, settings_path, settings_line)

    project_dir = (root / settings.project_dir).resolve()
    project_file = project_dir / "dbt_project.yml"
    if not project_file.is_file():
        raise error(f"dbt.project_dir: no dbt project at {settings.project_dir} (no dbt_project.yml in {project_dir})")
    try:
        config = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProjectError(f"dbt_project.yml is not valid YAML: {exc}", project_file) from None
    if not isinstance(config, dict) or not config.get("name") or not config.get("profile"):
        raise ProjectError("dbt_project.yml must name the project (`name:`) and its profile (`profile:`)", project_file)
    target_dir = project_dir / str(config.get("target-path") or "target")
    if settings.profiles_dir is not None:
        profiles_dir = (root / settings.profiles_dir).resolve()
        if not (profiles_dir / "profiles.yml").is_file():
            raise error(f"dbt.profiles_dir: no profiles.yml in {settings.profiles_dir} ({profiles_dir})")
        profile_text = (profiles_dir / "profiles.yml").read_text(encoding="utf-8")
        generated = False
    else:
        profiles_dir = target_dir / GENERATED_DIR
        profile_text = generated_profile(str(config["profile"]), warehouse_url, error)
        generated = True
    dbt = DbtProject(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=settings.target,
        manifest_path=target_dir / "manifest.json",
        name=str(config["name"]),
        generated_profile=generated,
        settings_path=settings_path,
        settings_line=settings_line,
    )
    seed_dirs = [project_dir / str(p) for p in (config.get("seed-paths") or ["seeds"])]
    fingerprint = _fingerprint(project_dir, target_dir, seed_dirs, profile_text, settings.target)
    stamp = target_dir / GENERATED_DIR / FINGERPRINT_FILE
    try:
        # One process at a time checks and parses (the webserver and the daemon load the project together), so
        # none reads a manifest another is writing; the second finds it parsed.
        with _exclusive(target_dir / GENERATED_DIR / "parse.lock"):
            if generated:
                _write_if_changed(profiles_dir / "profiles.yml", profile_text)
            if not dbt.manifest_path.is_file() or _read(stamp) != fingerprint:
                why = (
                    "is missing" if not dbt.manifest_path.is_file() else "is older than the dbt project or its profile"
                )
                logger.warning(f"dbt: {dbt.manifest_path} {why}; running `dbt parse` on {project_dir} (a few seconds)")
                parse(dbt)
                _write_if_changed(stamp, fingerprint)
    except OSError as exc:
        raise error(
            f"dbt: cannot write in the dbt project's target folder {target_dir} ({exc.strerror or exc}); dbt writes its "
            "manifest there, and the generated profile is kept there"
        ) from None
    try:
        manifest = json.loads(dbt.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read dbt's manifest {dbt.manifest_path}: {exc}") from None
    return dbt, models_of(dbt, manifest)


def generated_profile(profile: str, warehouse_url: str | None, error: Callable[[str], ProjectError]) -> str:
    """profiles.yml for dbt on the project's warehouse (COMPOSABLE_WAREHOUSE), one target, no secret in it."""
    from ..warehouse import WarehouseError, engine_from_url

    if warehouse_url is None:
        raise error("dbt: the warehouse is not known here, so no dbt profile can be generated; set dbt.profiles_dir")
    try:
        engine = engine_from_url(warehouse_url)
    except WarehouseError as exc:
        raise error(f"dbt: {exc}") from None
    output = engine.dbt_output()
    if output is None:
        raise error(
            f"dbt: no dbt profile is generated for {engine.describe()}; write a profiles.yml for it and set "
            "dbt.profiles_dir (docs/project-folder.md, dbt projects, has one per warehouse)"
        )
    document = {profile: {"target": GENERATED_TARGET, "outputs": {GENERATED_TARGET: output}}}
    header = "# Generated by composable_assets from COMPOSABLE_WAREHOUSE on every load; edits are overwritten.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def parse(dbt: DbtProject) -> None:
    """`dbt parse`, writing the manifest; a failure is a ProjectError naming the dbt project and dbt's words."""
    executable = dbt_executable()
    if executable is None:
        raise dbt.error(f"dbt: the `dbt` command is not installed; {INSTALL_HINT}")
    command = [executable, "parse", "--quiet", *dbt_flags(dbt)]
    environment = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    try:
        done = subprocess.run(
            command,
            cwd=dbt.project_dir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=PARSE_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise dbt.error(f"dbt: `dbt parse` of the dbt project {dbt.project_dir} did not finish: {exc}") from None
    if done.returncode != 0 or not dbt.manifest_path.is_file():
        said = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if line.strip())
        raise dbt.error(
            f"dbt: `dbt parse` of the dbt project {dbt.project_dir} failed (exit {done.returncode}):\n{said[-3000:]}"
        )


def dbt_flags(dbt: DbtProject) -> list[str]:
    """The flags naming the dbt project, its profiles and target, for any dbt command."""
    flags = ["--project-dir", str(dbt.project_dir), "--profiles-dir", str(dbt.profiles_dir)]
    return [*flags, "--target", dbt.target] if dbt.target else flags


def models_of(dbt: DbtProject, manifest: dict[str, Any]) -> dict[str, ModelSpec]:
    """Every model, seed and snapshot of the manifest as a ModelSpec, named as dbt names it."""
    nodes = {uid: node for uid, node in manifest.get("nodes", {}).items() if node.get("resource_type") in MODEL_TYPES}
    sources = manifest.get("sources", {})
    names = {uid: node["name"] for uid, node in nodes.items()}
    tables = {uid: str(source.get("identifier") or source["name"]) for uid, source in sources.items()}
    seen: dict[str, str] = {}
    for uid, node in nodes.items():
        name = node["name"]
        path = _node_path(dbt, node)
        if not _valid_name(name):
            raise ProjectError(
                f"dbt {node['resource_type']} `{name}`: model names here are lower-case letters, digits and "
                "underscores (they become asset keys and table names); rename it",
                path,
            )
        if name in seen:
            raise ProjectError(f"dbt: two nodes are named `{name}` ({seen[name]} and {uid}); rename one", path)
        seen[name] = uid
    graph = {uid: [d for d in node.get("depends_on", {}).get("nodes", []) if d in nodes] for uid, node in nodes.items()}
    columns: dict[str, object] = {}  # model name -> {column: type}, for the rendered SQL's `*`
    models: dict[str, ModelSpec] = {}
    for uid in TopologicalSorter(graph).static_order():
        node = nodes[uid]
        depends = node.get("depends_on", {}).get("nodes", [])
        config = node.get("config", {}) or {}
        alias = node.get("alias")
        spec = ModelSpec(
            name=node["name"],
            path=_node_path(dbt, node),
            sql="",
            description=(node.get("description") or "").strip() or None,
            owners=_owners(node),
            model_deps=sorted({names[d] for d in depends if d in names}),
            source_deps=sorted({tables[d] for d in depends if d in tables}),
            dbt=DbtNode(
                unique_id=uid,
                resource_type=node["resource_type"],
                custom_schema=config.get("schema"),
                alias=alias if alias and alias != node["name"] else None,
            ),
        )
        if node["resource_type"] == "seed":
            spec.columns = _seed_columns(spec.path) or _declared_columns(node)
        else:
            rendered = render_sql(node.get("raw_code") or "", node["name"], names, tables, sources)
            spec.sql = rendered or ""
            spec.columns = _query_columns(spec.sql, columns) if spec.sql else None
        if spec.columns is not None:
            columns[spec.name] = {column: "unknown" for column in spec.columns}
        models[spec.name] = spec
    return models


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(NAME_PATTERN, name) is not None


def _node_path(dbt: DbtProject, node: dict[str, Any]) -> Path:
    """The node's file: in the dbt project, or in an installed package (dbt_packages/<package>/...)."""
    relative = node.get("original_file_path") or node.get("path") or ""
    if node.get("package_name") in (None, dbt.name):
        return dbt.project_dir / relative
    packages = dbt.project_dir / "dbt_packages"
    candidates = [p / relative for p in packages.glob("*") if (p / relative).exists()] if packages.is_dir() else []
    return candidates[0] if candidates else dbt.project_dir / relative


def _owners(node: dict[str, Any]) -> list[str]:
    """`meta: {owners: [...]}` (or a comma-separated text), as dbt's docs suggest for ownership; else dbt's group."""
    meta = {**(node.get("meta") or {}), **((node.get("config") or {}).get("meta") or {})}
    owners = meta.get("owners", meta.get("owner"))
    if isinstance(owners, str):
        return [o.strip() for o in owners.split(",") if o.strip()]
    if isinstance(owners, list):
        return [str(o) for o in owners if str(o).strip()]
    return []


def _seed_columns(path: Path) -> list[str] | None:
    """A seed's columns: its CSV header."""
    import csv

    try:
        with path.open(encoding="utf-8", newline="") as file:
            header = next(csv.reader(file), None)
    except (OSError, UnicodeDecodeError):
        return None
    return [column.strip() for column in header] if header else None


def _declared_columns(node: dict[str, Any]) -> list[str] | None:
    return list(node.get("columns") or {}) or None


def _query_columns(sql: str, schema: dict[str, object]) -> list[str] | None:
    """The output columns of rendered SQL, `*` expanded from the columns of the models it reads when known."""
    import sqlglot
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.qualify import qualify

    try:
        # Not validated: a source table's columns are unknown here, and a column of it is still an output column.
        query = qualify(
            sqlglot.parse_one(sql, read="duckdb"), schema=schema, dialect="duckdb", validate_qualify_columns=False
        )
    except SqlglotError:
        return None
    names = list(getattr(query, "named_selects", []) or [])
    return names if names and all(n and n != "*" for n in names) else None


class _NotRendered(Exception):
    """The model uses Jinja beyond ref/source/config: rendered here it would be a guess."""


def render_sql(
    raw: str,
    name: str,
    names: dict[str, str],
    tables: dict[str, str],
    sources: dict[str, Any],
) -> str | None:
    """A dbt model's SQL with `ref()` and `source()` as bare table names, or None when it needs more of dbt."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    by_name = {node_name: node_name for node_name in names.values()}
    by_source = {(s.get("source_name"), s.get("name")): tables[uid] for uid, s in sources.items()}

    def ref(*args: str, **kwargs: Any) -> str:
        if not args or args[-1] not in by_name:
            raise _NotRendered(f"ref{args}")
        return by_name[args[-1]]

    def source(source_name: str, table_name: str) -> str:
        if (source_name, table_name) not in by_source:
            raise _NotRendered(f"source({source_name}, {table_name})")
        return by_source[(source_name, table_name)]

    def var(var_name: str, default: Any = None) -> Any:
        if default is None:
            raise _NotRendered(f"var({var_name})")  # the value lives in dbt_project.yml or the command line
        return default

    def nothing(*args: Any, **kwargs: Any) -> str:
        return ""

    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"])
    try:
        return environment.from_string(raw).render(
            ref=ref, source=source, var=var, config=nothing, is_incremental=lambda: False, this=name
        )
    except (_NotRendered, jinja2.TemplateError, TypeError, ValueError):
        return None


def _fingerprint(
    project_dir: Path, target_dir: Path, seed_dirs: list[Path], profile_text: str, target: str | None
) -> str:
    """What `dbt parse` reads: every file of the dbt project (path, time, size), the profile and the target.

    A seed's rows are data, not a definition: only its name counts, so editing a seed's data parses nothing (its
    columns, which lineage needs, are read from the CSV header on every load).
    """
    digest = hashlib.sha256()
    for path in sorted(_project_files(project_dir, target_dir)):
        relative = path.relative_to(project_dir)
        if path.suffix.lower() == ".csv" and any(path.is_relative_to(folder) for folder in seed_dirs):
            digest.update(f"{relative}\n".encode())
            continue
        stat = path.stat()
        digest.update(f"{relative}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    digest.update(profile_text.encode())
    digest.update((target or "").encode())
    return digest.hexdigest()


def _project_files(folder: Path, target_dir: Path) -> Iterator[Path]:
    for path in folder.iterdir():
        if path == target_dir or path.name in _IGNORED_DIRS:
            continue
        if path.is_dir():
            yield from _project_files(path, target_dir)
        elif path.is_file():
            yield path


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block, where the platform has flock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; loads there are not expected to race
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _write_if_changed(path: Path, text: str) -> None:
    """Written only when different, through a temporary file: a process loading at the same time reads all or none."""
    if _read(path) == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
