"""Alerts: a failed sync or stream, a send gate holding a delta and an overdue delivery tell the team.

project.yaml `alerts:` names the channels (a Slack channel through dagster-slack, or a signed webhook) and what each
is told. One sensor, on by default, reads the Dagster instance and sends; the assets send nothing themselves:

- Only the instance sees every failure. A delivery can fail outside its own code (a model upstream fails and the
  sync never starts, run monitoring fails a hung run, a worker is killed), and a delivery goes stale precisely when
  nothing runs: the FRESHNESS daemon, not any asset, marks it degraded. The sensor reads the runs' failure events
  (a held gate is a blocking check failing with ERROR severity, which fails its run, so it is among them) and the
  freshness states.
- An alert never touches a delivery: the sensor runs in the daemon, so a slow or failing channel cannot delay or fail
  a sync; a send that fails is a warning in the sensor's tick log, and is not retried.
- Nothing is told twice. The cursor holds the last run failure read (each failed run is read once, after a restart
  too), each delivery's last degraded state change, and the incidents already told: a delivery that keeps failing
  (a minute-level audience retried every heartbeat, a gate holding every new delta) is told once, and again only
  after it has delivered since.
- Command-line runs (`composable sync`) with DAGSTER_HOME set are recorded in the same instance, so the daemon's
  sensor tells of them too; without a daemon nothing does, and the terminal shows the failure.

An alert names the project, the audience or stream, the destination, the run and its path in the Dagster UI, and for
a held gate the gate's verdict (counts only). Never member data: error texts can quote a destination's answer, which
can quote a member, so they stay in Dagster behind the link. Never a secret: tokens are read from the environment when
a message is sent, and redacted from any error.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import requests
from dagster_slack import SlackResource
from slack_sdk.errors import SlackApiError

from ..destinations.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from ..project import MissingSecretError, SecretRef
from ..project.alerts import AlertSpec, SlackAlert, WebhookAlert
from ..project.gates import OVERRIDE_TAG
from ..project.secret_refs import CredentialInUrlError, Redactor

SENSOR_NAME = "alerts"
# A tick reads at most this many failed runs; the rest wait for the next tick (the cursor says where it stopped).
RUN_FAILURES_PER_TICK = 25
SEND_TIMEOUT_SECONDS = 10.0
DELIVERIES = ("sync", "stream")
# What a failed run is read for: the assets it meant to materialize and did, gate verdicts, failed steps.
RUN_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.STEP_FAILURE,
}


@dataclass(frozen=True)
class Alert:
    """One thing to tell: what happened, to which deliveries, in which run, where the UI shows it."""

    kind: str
    title: str
    text: str
    deliveries: tuple[dg.AssetKey, ...]
    run_id: str | None
    ui_path: str
    partition: str | None = None
    # (gate, verdict) of each gate that held, for gate_held.
    gates: tuple[tuple[str, str], ...] = ()

    @property
    def subject(self) -> str:
        return ", ".join(delivery_name(key) for key in self.deliveries)

    def payload(self, project: str, ui_url: str | None) -> dict[str, Any]:
        """The webhook's JSON body."""
        body: dict[str, Any] = {
            "alert": self.kind,
            "project": project,
            "title": self.title,
            "text": self.text,
            "deliveries": [delivery_fields(key) for key in self.deliveries],
            "run_id": self.run_id,
            "partition": self.partition,
            "ui_path": self.ui_path,
            "ui_url": f"{ui_url.rstrip('/')}{self.ui_path}" if ui_url else None,
        }
        if self.gates:
            body["gates"] = [{"gate": gate, "detail": detail} for gate, detail in self.gates]
        return body

    def slack_text(self, project: str, ui_url: str | None) -> str:
        """The Slack message (mrkdwn): title, what happened, and a link into the UI."""
        if ui_url:
            link = f"<{_escape(ui_url.rstrip('/') + self.ui_path)}|Open in Dagster>"
        else:
            link = f"Dagster: `{self.ui_path}`"
        return f"*{_escape(self.title)}* ({_escape(project)})\n{_escape(self.text)}\n{link}"


def delivery_name(key: dg.AssetKey) -> str:
    """`audience -> destination`, or `stream purchases -> braze`."""
    kind, name, destination = key.path
    return f"{'stream ' if kind == 'stream' else ''}{name} -> {destination}"


def delivery_fields(key: dg.AssetKey) -> dict[str, str]:
    kind, name, destination = key.path
    return {"audience" if kind == "sync" else "stream": name, "destination": destination, "asset": key.to_user_string()}


def _escape(text: str) -> str:
    """Slack mrkdwn: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class AlertNotSent(Exception):
    """A channel refused or could not be reached; the message never holds a secret."""


def _read(value: str | SecretRef) -> str:
    """A setting's value, read from the environment when it is `{env: NAME}`."""
    if isinstance(value, str):
        return value
    try:
        return value.resolve()
    except CredentialInUrlError as exc:
        raise AlertNotSent(str(exc)) from None
    except MissingSecretError:
        raise AlertNotSent(f"environment variable {value.env} is not set") from None


class SlackChannel:
    """chat.postMessage to one channel, with the client dagster-slack builds."""

    def __init__(self, spec: SlackAlert):
        self.spec = spec

    @property
    def label(self) -> str:
        return f"Slack {self.spec.channel}"

    def send(self, alert: Alert, project: str, ui_url: str | None) -> None:
        token = _read(self.spec.token)
        try:
            client = SlackResource(token=token).get_client()
            # The client's own attribute: Slack's Web API unless the entry names another (GovSlack).
            client.base_url = self.spec.api_url.rstrip("/") + "/"
            client.timeout = int(SEND_TIMEOUT_SECONDS)
            client.chat_postMessage(channel=self.spec.channel, text=alert.slack_text(project, ui_url))
        except SlackApiError as exc:
            raise AlertNotSent(f"Slack answered {exc.response.status_code}: {exc.response.get('error')}") from None
        except Exception as exc:
            raise AlertNotSent(Redactor([token]).redact(f"{type(exc).__name__}: {exc}")) from None


class WebhookChannel:
    """One POST of the alert as JSON, signed as the webhook destination signs its requests."""

    def __init__(self, spec: WebhookAlert):
        self.spec = spec

    @property
    def label(self) -> str:
        url = self.spec.url
        return f"webhook {urlsplit(url).hostname}" if isinstance(url, str) else f"webhook ${url.env}"

    def send(self, alert: Alert, project: str, ui_url: str | None) -> None:
        url = _read(self.spec.url)
        secret = _read(self.spec.secret)
        body = json.dumps(alert.payload(project, ui_url), separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body),
        }
        # One try: a retry would hold up the sensor's tick. No redirects: a signed body goes nowhere else.
        try:
            response = requests.post(
                url, data=body, headers=headers, timeout=SEND_TIMEOUT_SECONDS, allow_redirects=False
            )
        except requests.RequestException as exc:
            # Its text names the URL, which may hold a token.
            raise AlertNotSent(type(exc).__name__) from None
        if not 200 <= response.status_code < 300:
            answer = " ".join(Redactor([secret, url]).redact(response.text[:100]).split())
            raise AlertNotSent(f"HTTP {response.status_code}: {answer}" if answer else f"HTTP {response.status_code}")


def channel_of(spec: AlertSpec) -> SlackChannel | WebhookChannel:
    return SlackChannel(spec.slack) if spec.slack is not None else WebhookChannel(spec.webhook)  # type: ignore[arg-type]


class Incidents:
    """Alerts already told, as `<kind> <delivery asset>` -> when; one is over once that delivery materializes again."""

    def __init__(self, instance: dg.DagsterInstance, told: dict[str, float]):
        self.instance = instance
        self.told = told

    def repeats(self, kind: str, delivery: dg.AssetKey, at: float) -> bool:
        """Whether this is the incident already told; else it becomes the one told, as of `at`."""
        name = f"{kind} {delivery.to_user_string()}"
        since = self.told.get(name)
        if since is not None:
            delivered = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=delivery, after_timestamp=since), limit=1
            ).records
            if not delivered:
                return True
        self.told[name] = at
        return False


def run_failure_alerts(instance: dg.DagsterInstance, run_id: str, at: float, incidents: Incidents) -> list[Alert]:
    """What one failed run tells: each delta a gate held, and the deliveries it meant to make and did not."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return []
    entries = [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=RUN_EVENTS).records]
    events = [(entry.step_key, entry.dagster_event) for entry in entries if entry.dagster_event is not None]
    planned = [
        e.asset_key
        for _, e in events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED and e.asset_key is not None
    ]
    done = {e.asset_key for _, e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    # Steps are named after their asset (a step key is the key as a Python identifier).
    step_assets = {key.to_python_identifier(): key.to_user_string() for key in planned}
    failed = [
        step_assets.get(step, step)
        for step, e in events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE and step is not None
    ]
    held: dict[dg.AssetKey, list[tuple[str, str]]] = {}
    for _, event in events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            verdict = event.asset_check_evaluation_data
            if verdict.asset_key.path[0] == "delta" and verdict.blocking and not verdict.passed:
                held.setdefault(verdict.asset_key, []).append((verdict.check_name, verdict.description or ""))

    partition = run.tags.get("dagster/partition")
    on_day = f" (partition {partition})" if partition else ""
    alerts = []
    for delta, gates in held.items():
        delivery = dg.AssetKey(["sync", *delta.path[1:]])
        if incidents.repeats("gate_held", delivery, at):
            continue
        names = ",".join(gate for gate, _ in gates)
        verdicts = "; ".join(f"{gate}: {detail}" for gate, detail in gates)
        alerts.append(
            Alert(
                "gate_held",
                "Send gate held a delta",
                f"The delta of {delivery_name(delivery)} in run {run_id[:8]}{on_day} was held by its send gates: "
                f"{verdicts}. Nothing was sent to {delivery.path[2]}. To send it anyway, run delta and sync again "
                f"with the run tag {OVERRIDE_TAG}={names}.",
                (delivery,),
                run_id,
                f"/runs/{run_id}",
                partition,
                tuple(gates),
            )
        )
    # A sync its gate held is told as the held gate.
    explained = {dg.AssetKey(["sync", *delta.path[1:]]) for delta in held}
    missed = [
        key for key in dict.fromkeys(planned) if key.path[0] in DELIVERIES and key not in done and key not in explained
    ]
    new = [key for key in missed if not incidents.repeats("sync_failed", key, at)]
    if new:
        alerts.append(
            Alert(
                "sync_failed",
                "Sync failed",
                f"Run {run_id[:8]}{on_day} failed: {', '.join(delivery_name(key) for key in new)} did not deliver. "
                f"Failed step{'s' if len(failed) != 1 else ''}: {', '.join(failed) or 'none (the run itself failed)'}.",
                tuple(new),
                run_id,
                f"/runs/{run_id}",
                partition,
            )
        )
    return alerts


def freshness_alerts(
    instance: dg.DagsterInstance, deliveries: Sequence[dg.AssetKey], degraded: dict[str, float]
) -> list[Alert]:
    """A delivery the freshness daemon newly marked degraded (its policy failed), once per change of state."""
    alerts = []
    for key, record in instance.get_freshness_state_records(list(deliveries)).items():
        name = key.to_user_string()
        changed = record.updated_at.timestamp()
        # FAIL is what the UI shows as DEGRADED.
        if getattr(record.freshness_state, "value", record.freshness_state) != "FAIL":
            degraded.pop(name, None)
            continue
        if degraded.get(name, 0.0) >= changed:
            continue
        degraded[name] = changed
        last = instance.get_latest_materialization_event(key)
        since = record.updated_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        history = (
            f"Last delivered by run {last.run_id[:8]} at "
            f"{dt.datetime.fromtimestamp(last.timestamp, dt.UTC):%Y-%m-%d %H:%M UTC}."
            if last is not None
            else "It was never delivered."
        )
        alerts.append(
            Alert(
                "freshness_degraded",
                "Delivery overdue",
                f"{delivery_name(key)} is overdue: it was not delivered within its freshness policy (degraded since "
                f"{since}). {history}",
                (key,),
                last.run_id if last is not None else None,
                f"/assets/{name}",
            )
        )
    return alerts


def alert_sensor(
    project: str,
    specs: Sequence[AlertSpec],
    asset_keys: Sequence[dg.AssetKey],
    ui_url: str | None = None,
    interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """The sensor telling `specs`' channels about the sync and stream assets among `asset_keys`."""
    channels = [(spec, channel_of(spec)) for spec in specs]
    wanted = {kind for spec in specs for kind in spec.on}
    deliveries = [key for key in asset_keys if len(key.path) == 3 and key.path[0] in DELIVERIES]

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Tells {', '.join(channel.label for _, channel in channels)} of "
        f"{', '.join(sorted(wanted))} (project.yaml `alerts:`).",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        instance = context.instance
        state = json.loads(context.cursor) if context.cursor else {}
        incidents = Incidents(instance, state.get("told", {}))
        degraded: dict[str, float] = state.get("degraded", {})
        after = state.get("after")
        alerts: list[Alert] = []
        if after is None:
            # The first tick starts from now: failures from before the sensor existed are not news.
            newest = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
            after = newest[0].storage_id if newest else 0
        else:
            failures = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=after),
                limit=RUN_FAILURES_PER_TICK,
                ascending=True,
            ).records
            for record in failures:
                alerts += run_failure_alerts(instance, record.event_log_entry.run_id, record.timestamp, incidents)
                after = record.storage_id
        alerts += freshness_alerts(instance, deliveries, degraded)
        alerts = [alert for alert in alerts if alert.kind in wanted]
        sent = 0
        for alert in alerts:
            for spec, channel in channels:
                if alert.kind not in spec.on:
                    continue
                try:
                    channel.send(alert, project, ui_url)
                    sent += 1
                except Exception as exc:  # a channel that fails must not keep the others or the next alerts waiting
                    reason = str(exc) if isinstance(exc, AlertNotSent) else type(exc).__name__
                    context.log.warning(f"{alert.kind} alert for {alert.subject} not sent to {channel.label}: {reason}")
        context.update_cursor(
            json.dumps({"after": after, "told": incidents.told, "degraded": degraded}, sort_keys=True)
        )
        if not alerts:
            return dg.SkipReason("nothing to tell: no failed run, held gate or newly overdue delivery")
        told = "; ".join(f"{a.kind} {a.subject}" for a in alerts)
        return dg.SkipReason(f"{len(alerts)} alert(s), {sent} message(s) sent: {told}")

    return _sensor
