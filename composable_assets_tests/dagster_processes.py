"""A test helper: a real `dagster-webserver` and `dagster-daemon run`, driven through GraphQL.

    with DagsterProcesses(home, REPO / "workspace.yaml", env) as dagster:
        dagster.start_schedule("weekly_newsletter_schedule")
        dagster.wait_for(lambda: dagster.freshness_status("sync/vip_customers/braze") == "DEGRADED",
                         timeout=120, what="the sync to go stale")

Each process runs in its own session with SIGINT/SIGTERM at their defaults and writes stdout and stderr
to `<log_dir>/webserver.log` and `<log_dir>/daemon.log`. Entering waits until `/server_info` answers,
every code location is loaded and every required daemon has sent a heartbeat since the start. Leaving
sends SIGTERM to each process group, SIGKILL after `stop_timeout`, and asserts that no process of
either tree is left. Every failure names what it waited for and ends with the tails of both logs.

GraphQL details (dagster-graphql 1.13.27): `startSchedule(scheduleSelector:)` / `startSensor(sensorSelector:)`
take a selector {repositoryLocationName, repositoryName, scheduleName | sensorName}; stopping is
`stopRunningSchedule(id:)` / `stopSensor(id:)` with the InstigationState id (`scheduleState { id }` /
`sensorState { id }`). A `@dg.definitions` module's repository is named `__repository__`; the location
name comes from workspace.yaml.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import psutil
import requests

T = TypeVar("T")

# Every result union below includes PythonError; PythonError, UnauthorizedError and the *NotFoundError types
# implement the Error interface (a fragment on a type the union cannot hold is a validation error).
_ERROR_FIELDS = "__typename ... on Error { message } ... on PythonError { stack }"
_METADATA_FIELDS = """
    __typename label
    ... on IntMetadataEntry { intRepr }
    ... on FloatMetadataEntry { floatRepr }
    ... on BoolMetadataEntry { boolValue }
    ... on TextMetadataEntry { text }
    ... on MarkdownMetadataEntry { mdStr }
    ... on JsonMetadataEntry { jsonString }
    ... on PathMetadataEntry { path }
    ... on UrlMetadataEntry { url }
    ... on TimestampMetadataEntry { timestamp }
    ... on PipelineRunMetadataEntry { runId }
    ... on PoolMetadataEntry { pool }
"""


class DagsterProcessError(RuntimeError):
    """A GraphQL error, an error result, or a process that exited; the message ends with the logs' tails."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _default_signals() -> None:
    # Started from a test runner, a child can inherit SIGINT ignored; dagster then ignores it too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _key_path(asset_key: str | list[str] | tuple[str, ...]) -> list[str]:
    return asset_key.split("/") if isinstance(asset_key, str) else list(asset_key)


class DagsterProcesses:
    """`dagster-webserver -h 127.0.0.1 -p PORT -w WORKSPACE` and `dagster-daemon run -w WORKSPACE` on DAGSTER_HOME.

    `env` is added to this process's environment (DAGSTER_HOME is set to `dagster_home`). The processes
    run in `cwd` (default: the workspace file's folder, which its relative working_directory refers to).
    `daemon=False` starts the webserver alone: nothing is scheduled, sensed or launched, so what the UI shows
    stays as the test left it.
    """

    def __init__(
        self,
        dagster_home: str | os.PathLike,
        workspace_file: str | os.PathLike,
        env: Mapping[str, str],
        port: int | None = None,
        *,
        log_dir: str | os.PathLike | None = None,
        cwd: str | os.PathLike | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        daemon: bool = True,
    ):
        self.dagster_home = Path(dagster_home).absolute()
        self.workspace_file = Path(workspace_file).absolute()
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(self.dagster_home)}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(log_dir).absolute() if log_dir else self.dagster_home
        self.cwd = Path(cwd).absolute() if cwd else self.workspace_file.parent
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.daemon = daemon
        self.processes: dict[str, subprocess.Popen] = {}
        self.started_at = 0.0
        self._http = requests.Session()
        self._selectors: dict[tuple[str, str], dict[str, str]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "DagsterProcesses":
        self.started_at = time.time()
        try:
            bin_dir = Path(sys.executable).parent
            workspace = str(self.workspace_file)
            # Create the instance's storage first: a webserver and a daemon starting together on a fresh
            # SQLite home can race to create the same tables ("table alembic_version already exists").
            subprocess.run(
                [sys.executable, "-c", "import dagster; dagster.DagsterInstance.get().dispose()"],
                env=self.env, cwd=self.cwd, check=True, capture_output=True, timeout=120,
            )
            self._start("webserver", [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace])
            if self.daemon:
                self._start("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace])
            self.wait_for(self._server_info, self.startup_timeout, what=f"the webserver to answer {self.url}/server_info")
            self.wait_for(self._locations_loaded, self.startup_timeout, what="every code location to load")
            if self.daemon:
                self.wait_for(self._daemons_healthy, self.startup_timeout, what="every required daemon to report healthy")
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _start(self, name: str, command: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signals,
            )

    def stop(self, check: bool = True) -> None:
        """SIGTERM to each process group, SIGKILL after stop_timeout; then assert no process of either tree is left."""
        tracked = self._process_trees()
        for process in self.processes.values():
            if process.poll() is None:
                self._signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        # Children (code servers) leave with their parents; give them the rest of the timeout.
        _, alive = psutil.wait_procs(tracked, timeout=max(1.0, deadline - time.monotonic()))
        late = [p for p in self._process_trees() if p.pid not in {t.pid for t in tracked}]  # spawned meanwhile
        alive = [p for p in [*alive, *late] if _running(p)]
        for p in alive:  # never leave them behind, even when the assertion below fails
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self._http.close()
        if check and alive:
            raise AssertionError(
                "processes left after stopping dagster: "
                + "; ".join(f"{p.pid} {' '.join(_cmdline(p))}" for p in alive)
                + self.log_tails()
            )

    def _process_trees(self) -> list[psutil.Process]:
        """Every live process started by the webserver or the daemon: their descendants and their sessions."""
        found: dict[int, psutil.Process] = {}
        sessions = {p.pid for p in self.processes.values()}
        for process in self.processes.values():
            try:
                root = psutil.Process(process.pid)
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) in sessions:
                    found.setdefault(p.pid, p)
            except (OSError, psutil.Error):
                pass
        return list(found.values())

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)  # the process leads its own session and group
        except ProcessLookupError:
            pass

    # ---- waiting and diagnostics -----------------------------------------------------------------

    def log_tails(self, lines: int = 40) -> str:
        text = ""
        for name in self.processes:
            path = self.log_dir / f"{name}.log"
            content = path.read_text(errors="replace").splitlines() if path.exists() else []
            text += f"\n--- last {lines} lines of {path} ---\n" + "\n".join(content[-lines:])
        return text

    def wait_for(self, predicate: Callable[[], T], timeout: float, interval: float = 0.5, what: str = "the condition") -> T:
        """Call `predicate` until it returns something truthy, and return that.

        Raises TimeoutError (with the logs' tails) after `timeout` seconds, or DagsterProcessError at once if
        the webserver or the daemon exits. Connection errors count as "not yet"; other exceptions propagate.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self._check_alive(what)
            try:
                value = predicate()
                if value:
                    return value
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise TimeoutError(f"waited {timeout:g} s for {what}{detail}" + self.log_tails())
            time.sleep(interval)

    def _check_alive(self, what: str) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DagsterProcessError(
                    f"dagster {name} exited with code {process.returncode} while waiting for {what}" + self.log_tails()
                )

    def _server_info(self) -> dict:
        response = self._http.get(f"{self.url}/server_info", timeout=5)
        return response.json() if response.ok else {}

    def _locations_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { " + _ERROR_FIELDS + " ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { " + _ERROR_FIELDS + " } } } } }"
        )
        entries = self._ok(data["workspaceOrError"], "the workspace")["locationEntries"]
        for entry in entries:
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                raise DagsterProcessError(
                    f"code location {entry['name']} failed to load: {error['message']}\n{''.join(error['stack'])}"
                    + self.log_tails()
                )
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    def daemon_statuses(self) -> list[dict]:
        """[{daemonType, required, healthy, lastHeartbeatTime}] as the webserver reports them."""
        data = self.graphql(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }"
        )
        return data["instance"]["daemonHealth"]["allDaemonStatuses"]

    def _daemons_healthy(self) -> list[dict]:
        statuses = self.daemon_statuses()
        required = [s for s in statuses if s["required"]]
        # Heartbeats are kept in storage: only count the ones sent by the daemon we started.
        fresh = all(s["healthy"] and (s["lastHeartbeatTime"] or 0) >= self.started_at - 1 for s in required)
        return required if required and fresh else []

    # ---- GraphQL ---------------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        """POST a query to /graphql and return its `data`; raise DagsterProcessError on any error."""
        response = self._http.post(f"{self.url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=60)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.ok or body.get("errors") or "data" not in body:
            raise DagsterProcessError(
                f"GraphQL {response.status_code}: {json.dumps(body.get('errors') or response.text[:2000], indent=1)}\n"
                f"query: {query}\nvariables: {json.dumps(variables)}" + self.log_tails()
            )
        return body["data"]

    def _ok(self, result: dict, what: str) -> dict:
        """A union result that is not an error type, or DagsterProcessError with the error."""
        kind = result.get("__typename", "")
        if kind.endswith("Error"):
            stack = "".join(result.get("stack") or [])
            raise DagsterProcessError(f"{what}: {kind}: {result.get('message')}\n{stack}" + self.log_tails())
        return result

    # ---- asset graph and assets ------------------------------------------------------------------

    def asset_keys(self) -> set[str]:
        """Every asset key in the workspace, as "a/b/c"."""
        return {"/".join(n["assetKey"]["path"]) for n in self.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]}

    def latest_materialization(self, asset_key: str | list[str], partition: str | None = None) -> dict | None:
        """The latest materialization (of `partition`, if given): {run_id, partition, timestamp, metadata}, or None.

        metadata maps each label to a Python value: int, float, bool, str, a parsed JSON value, or None for
        entry types without a scalar value (tables, schemas, lineage).
        """
        query = (
            "query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { __typename "
            "... on Asset { assetMaterializations(limit: 1, partitions: $partitions) { runId partition timestamp "
            "metadataEntries { " + _METADATA_FIELDS + " } } } } }"
        )
        variables = {"key": {"path": _key_path(asset_key)}, "partitions": [partition] if partition else None}
        result = self.graphql(query, variables)["assetOrError"]
        if result["__typename"] == "AssetNotFoundError":
            return None
        events = result["assetMaterializations"]
        if not events:
            return None
        [event] = events
        return {
            "run_id": event["runId"],
            "partition": event["partition"],
            "timestamp": float(event["timestamp"]) / 1000,  # GraphQL gives milliseconds, as a string
            "metadata": {entry["label"]: _metadata_value(entry) for entry in event["metadataEntries"]},
        }

    def freshness_status(self, asset_key: str | list[str]) -> str | None:
        """HEALTHY, WARNING, DEGRADED, UNKNOWN or NOT_APPLICABLE (as the freshness daemon last judged), or None."""
        nodes = self.graphql(
            "query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) "
            "{ assetKey { path } freshnessStatusInfo { freshnessStatus } } }",
            {"keys": [{"path": _key_path(asset_key)}]},
        )["assetNodes"]
        if not nodes:
            raise DagsterProcessError(f"no asset {'/'.join(_key_path(asset_key))} in the workspace" + self.log_tails())
        info = nodes[0]["freshnessStatusInfo"]
        return info["freshnessStatus"] if info else None

    # ---- schedules and sensors -------------------------------------------------------------------

    def _selector(self, kind: str, name: str) -> dict[str, str]:
        """{repositoryLocationName, repositoryName, scheduleName|sensorName} of the one instigator with that name."""
        if (kind, name) not in self._selectors:
            data = self.graphql(
                "{ repositoriesOrError { " + _ERROR_FIELDS + " ... on RepositoryConnection { nodes { name "
                "location { name } schedules { name } sensors { name } } } } }"
            )
            nodes = self._ok(data["repositoriesOrError"], "repositories")["nodes"]
            matches = [r for r in nodes if name in {i["name"] for i in r[f"{kind}s"]}]
            if len(matches) != 1:
                known = sorted(i["name"] for r in nodes for i in r[f"{kind}s"])
                raise DagsterProcessError(f"{len(matches)} {kind}s named {name!r}; the workspace has: {known}")
            [repo] = matches
            self._selectors[(kind, name)] = {
                "repositoryLocationName": repo["location"]["name"],
                "repositoryName": repo["name"],
                f"{kind}Name": name,
            }
        return self._selectors[(kind, name)]

    def _state(self, kind: str, name: str) -> dict:
        """The {id, status} of a schedule's or sensor's InstigationState."""
        Kind = kind.capitalize()
        data = self.graphql(
            f"query($selector: {Kind}Selector!) {{ {kind}OrError({kind}Selector: $selector) {{ {_ERROR_FIELDS} "
            f"... on {Kind} {{ {kind}State {{ id status }} }} }} }}",
            {"selector": self._selector(kind, name)},
        )
        return self._ok(data[f"{kind}OrError"], f"{kind} {name}")[f"{kind}State"]

    def schedule_status(self, name: str) -> str:
        """RUNNING or STOPPED."""
        return self._state("schedule", name)["status"]

    def sensor_status(self, name: str) -> str:
        """RUNNING or STOPPED."""
        return self._state("sensor", name)["status"]

    def start_schedule(self, name: str) -> str:
        data = self.graphql(
            "mutation($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) { " + _ERROR_FIELDS
            + " ... on ScheduleStateResult { scheduleState { status } } } }",
            {"selector": self._selector("schedule", name)},
        )
        return self._ok(data["startSchedule"], f"startSchedule {name}")["scheduleState"]["status"]

    def stop_schedule(self, name: str) -> str:
        data = self.graphql(
            "mutation($id: String!) { stopRunningSchedule(id: $id) { " + _ERROR_FIELDS
            + " ... on ScheduleStateResult { scheduleState { status } } } }",
            {"id": self._state("schedule", name)["id"]},
        )
        return self._ok(data["stopRunningSchedule"], f"stopRunningSchedule {name}")["scheduleState"]["status"]

    def start_sensor(self, name: str) -> str:
        data = self.graphql(
            "mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { " + _ERROR_FIELDS
            + " ... on Sensor { sensorState { status } } } }",
            {"selector": self._selector("sensor", name)},
        )
        return self._ok(data["startSensor"], f"startSensor {name}")["sensorState"]["status"]

    def stop_sensor(self, name: str) -> str:
        data = self.graphql(
            "mutation($id: String!) { stopSensor(id: $id) { " + _ERROR_FIELDS
            + " ... on StopSensorMutationResult { instigationState { status } } } }",
            {"id": self._state("sensor", name)["id"]},
        )
        return self._ok(data["stopSensor"], f"stopSensor {name}")["instigationState"]["status"]


def _metadata_value(entry: dict) -> Any:
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        return int(entry["intRepr"])
    if kind == "FloatMetadataEntry":
        return float(entry["floatRepr"])
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    for field in ("boolValue", "text", "mdStr", "path", "url", "timestamp", "runId", "pool"):
        if field in entry:
            return entry[field]
    return None


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]
