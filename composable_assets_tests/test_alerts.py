"""Alerts: failed syncs, held send gates and overdue deliveries reach Slack and a signed webhook, once each.

Real runs on the small project, the alert sensor ticked with explicit cursors, Slack's chat.postMessage served by
the local Slack fake and the webhook by a receiver that verifies the signature. Freshness is evaluated by Dagster's
own FRESHNESS daemon iteration (private API, tests only) at a frozen time past the policy's fail window.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import dagster as dg
import pytest
# Private: the FRESHNESS daemon's evaluation driven in-process (tests only; the package uses the public API).
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from composable_assets.automation.alerts import SENSOR_NAME
from composable_assets.definitions import load_definitions, stream_selection
from composable_assets.project import ProjectError, load_project
from composable_assets.runner import run_selection
from composable_assets.settings import Settings
from composable_assets_tests.fakes.slack import SlackFake

from .conftest import SMALL_AUDIENCE, Recording
from .test_destination_webhook import Receiver, signature_is_valid

SLACK_TOKEN = "xoxb-1111-2222-secretvalue"
HOOK_SECRET = "whsec-alerts-5e6f7a8b"
MIRROR_SYNC = dg.AssetKey(["sync", "high", "rec_mirror"])
UPSERT_SYNC = dg.AssetKey(["sync", "high", "rec_upsert"])
# Member data of the small project: none of it may appear in an alert.
MEMBER_VALUES = [f"p{i}@example.com" for i in range(1, 21)] + [f"{n}{i}" for i in range(1, 21) for n in ("name", "renamed")]


class AlertReceiver(Receiver):
    """The webhook receiver of the destination tests, taking alert bodies: 401 for a bad signature, else 200."""

    def _answer(self, headers, raw: bytes) -> tuple[int, dict[str, str], dict]:
        with self._lock:
            valid = signature_is_valid(self.secret, headers, raw)
            self.requests.append({"body": json.loads(raw), "raw": raw, "valid": valid, "headers": dict(headers)})
            if not valid:
                return 401, {}, {"error": "bad signature"}
            if self.status is not None:
                return self.status, {}, {"error": "unavailable"}
            return 200, {}, {}

    def alerts(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["valid"]]


@pytest.fixture
def slack():
    with SlackFake(SLACK_TOKEN, channels=("#crm-alerts", "#data-oncall")) as fake:
        yield fake


@pytest.fixture
def hook():
    with AlertReceiver(HOOK_SECRET) as receiver:
        yield receiver


@pytest.fixture
def alerted(small, slack, hook, monkeypatch):
    """The small project telling Slack #crm-alerts and a webhook everything, and #data-oncall only of stale deliveries."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", HOOK_SECRET)
    small.write("project.yaml", textwrap.dedent(f"""\
        name: small
        start_date: "2026-01-01"
        gates: {{min_members: 0, max_remove_percent: 20, max_change_percent: 100}}
        alerts:
          - slack: {{channel: "#crm-alerts", token: {{env: SLACK_BOT_TOKEN}}, api_url: "{slack.api_url}"}}
          - slack: {{channel: "#data-oncall", token: {{env: SLACK_BOT_TOKEN}}, api_url: "{slack.api_url}"}}
            on: [freshness_degraded]
          - webhook: {{url: "{hook.url}", secret: {{env: ALERT_WEBHOOK_SECRET}}}}
        """))
    small.write("audiences/high.yaml", SMALL_AUDIENCE.replace("cadence: daily\n", "cadence: daily\nfreshness: {fail_after: 5m}\n"))
    return small


def tick(project, cursor: str | None = None):
    """One evaluation of the alert sensor, as the daemon does it; (result, the cursor it leaves)."""
    defs = load_definitions(project.settings)
    context = dg.build_sensor_context(instance=project.instance, definitions=defs, cursor=cursor)
    result = defs.resolve_sensor_def(SENSOR_NAME).evaluate_tick(context)
    return result, context.cursor


def assert_private(slack: SlackFake, hook: AlertReceiver) -> None:
    """No secret and no member value in anything sent."""
    sent = " ".join(m["text"] for m in slack.messages) + " ".join(r["raw"].decode() for r in hook.requests)
    assert SLACK_TOKEN not in sent and HOOK_SECRET not in sent
    assert [v for v in MEMBER_VALUES if v in sent] == []


def test_a_failed_sync_is_told_once_to_slack_and_the_signed_webhook(alerted, slack, hook):
    _, cursor = tick(alerted)  # the sensor starts from now
    Recording.crash_after_batches["rec_mirror"] = 0
    outcome = alerted.sync()
    assert not outcome.success

    result, cursor = tick(alerted, cursor)
    [text] = slack.posted("#crm-alerts")
    assert text.startswith("*Sync failed* (small)")
    assert f"Run {outcome.run_id[:8]} (partition 2026-03-02) failed: high -&gt; rec_mirror did not deliver" in text
    assert "Failed step: sync/high/rec_mirror" in text and f"`/runs/{outcome.run_id}`" in text
    [body] = hook.alerts()
    assert body["alert"] == "sync_failed" and body["project"] == "small" and body["run_id"] == outcome.run_id
    assert body["deliveries"] == [{"audience": "high", "destination": "rec_mirror", "asset": "sync/high/rec_mirror"}]
    assert body["partition"] == "2026-03-02" and body["ui_path"] == f"/runs/{outcome.run_id}"
    assert all(r["valid"] for r in hook.requests)
    assert slack.posted("#data-oncall") == []  # that channel is only told of stale deliveries
    assert "1 alert(s), 2 message(s) sent" in result.skip_message

    # The next tick has nothing new; nor has a restarted daemon, which reads the stored cursor.
    result, cursor = tick(alerted, cursor)
    assert "nothing to tell" in result.skip_message
    assert len(slack.messages) == 1 and len(hook.requests) == 1
    assert_private(slack, hook)


SIGNUPS_STREAM = """\
table: signups_model
event_id: id
cursor: signed_up_at
syncs:
  - destination: rec_upsert
    identifier: {email: email}
    event: signed_up
"""


def test_a_stream_whose_upstream_model_failed_is_told_with_the_failed_step(alerted, slack, hook):
    # Where the UI is published (COMPOSABLE_UI_URL): alerts link to it.
    alerted.settings = Settings.from_env({
        "COMPOSABLE_PROJECT_DIR": str(alerted.settings.project_dir), "COMPOSABLE_WAREHOUSE": alerted.settings.warehouse_url,
        "COMPOSABLE_DATA_DIR": str(alerted.settings.data_dir), "COMPOSABLE_UI_URL": "https://dagster.example.com/",
    })
    alerted.write("models/signups_model.sql", "SELECT id, email, signed_up_at FROM signups\n")  # no such table
    alerted.write("streams/signups.yaml", SIGNUPS_STREAM)
    _, cursor = tick(alerted)
    project = load_project(alerted.settings.project_dir)
    outcome = run_selection(load_definitions(alerted.settings), stream_selection(project, "signups"), "2026-03-02",
                            alerted.instance)
    assert not outcome.success

    tick(alerted, cursor)
    [body] = hook.alerts()
    assert body["alert"] == "sync_failed" and body["run_id"] == outcome.run_id
    assert body["deliveries"] == [{"stream": "signups", "destination": "rec_upsert", "asset": "stream/signups/rec_upsert"}]
    assert "stream signups -> rec_upsert did not deliver. Failed step: model/signups_model." in body["text"]
    assert body["ui_url"] == f"https://dagster.example.com/runs/{outcome.run_id}"
    [text] = slack.posted("#crm-alerts")
    assert "stream signups -&gt; rec_upsert did not deliver" in text
    assert text.endswith(f"<https://dagster.example.com/runs/{outcome.run_id}|Open in Dagster>")


def test_a_delivery_that_keeps_failing_is_told_again_only_after_it_delivered(alerted, slack, hook):
    _, cursor = tick(alerted)
    Recording.crash_after_batches["rec_mirror"] = 0
    first = alerted.sync()
    second = alerted.sync()
    assert not first.success and not second.success
    _, cursor = tick(alerted, cursor)
    assert len(hook.alerts()) == 1 and hook.alerts()[0]["run_id"] == first.run_id

    del Recording.crash_after_batches["rec_mirror"]
    assert alerted.sync().success
    Recording.crash_after_batches["rec_mirror"] = 0
    alerted.set_people([(i, f"p{i}@example.com", f"renamed{i}", i) for i in range(1, 21)])  # something to send
    again = alerted.sync()
    assert not again.success
    _, cursor = tick(alerted, cursor)
    assert [b["run_id"] for b in hook.alerts()] == [first.run_id, again.run_id]
    assert len(slack.posted("#crm-alerts")) == 2


def test_a_held_gate_is_told_with_its_verdict_and_not_as_a_failed_sync(alerted, slack, hook):
    alerted.set_people([(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)])  # 10 members: 11..20
    assert alerted.sync().success
    _, cursor = tick(alerted)
    alerted.set_people([(i, f"p{i}@example.com", f"name{i}", i if i > 13 else 1) for i in range(1, 21)])  # 3 leave
    outcome = alerted.sync()
    assert not outcome.success and Recording.received["rec_mirror"][10:] == []

    result, cursor = tick(alerted, cursor)
    [body] = hook.alerts()
    assert body["alert"] == "gate_held" and body["run_id"] == outcome.run_id
    assert body["deliveries"] == [{"audience": "high", "destination": "rec_mirror", "asset": "sync/high/rec_mirror"}]
    assert body["gates"] == [{"gate": "max_remove_percent", "detail": "removes 3 of 10 members (30.0%, limit 20%)"}]
    assert "composable/override_gates=max_remove_percent" in body["text"]
    [text] = slack.posted("#crm-alerts")
    assert text.startswith("*Send gate held a delta* (small)")
    assert "max_remove_percent: removes 3 of 10 members (30.0%, limit 20%)" in text and outcome.run_id[:8] in text

    # Recomputing the held delta holds it again: the same incident, not told twice.
    assert not alerted.sync().success
    result, _ = tick(alerted, cursor)
    assert "nothing to tell" in result.skip_message and len(hook.requests) == 1
    assert_private(slack, hook)


def evaluate_freshness(project, at: dt.datetime) -> None:
    """One iteration of Dagster's FRESHNESS daemon at time `at`, on a code location loading the project."""
    module = project.root / "project_defs.py"
    module.write_text(
        "from pathlib import Path\nfrom composable_assets.definitions import load_definitions\n"
        "from composable_assets.settings import Settings\n"
        f"defs = load_definitions(Settings(Path({str(project.settings.project_dir)!r}), "
        f"{project.settings.warehouse_url!r}, Path({str(project.settings.data_dir)!r})))\n"
    )
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(module), attribute="defs"), location_name="project")
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), project.instance) as workspace:
        with freeze_time(at):
            list(FreshnessDaemon().run_iteration(workspace))


# Dagster's own snapshot of a schedule reads a deprecated property when the daemon's workspace loads.
@pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars` is deprecated:DeprecationWarning")
def test_a_delivery_past_its_freshness_policy_is_told_once_per_degradation(alerted, slack, hook):
    # The daemon's workspace needs an instance another process could open (file-backed), as in production.
    with dg.instance_for_test() as instance:
        alerted.instance = instance
        outcome = alerted.sync()
        assert outcome.success
        _, cursor = tick(alerted)
        evaluate_freshness(alerted, dt.datetime.now(dt.UTC))
        result, cursor = tick(alerted, cursor)
        assert slack.messages == [] and "nothing to tell" in result.skip_message  # delivered just now

        evaluate_freshness(alerted, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6))  # past `fail_after: 5m`
        result, cursor = tick(alerted, cursor)
        bodies = sorted(hook.alerts(), key=lambda b: b["ui_path"])
        assert [b["alert"] for b in bodies] == ["freshness_degraded"] * 2
        assert [b["ui_path"] for b in bodies] == ["/assets/sync/high/rec_mirror", "/assets/sync/high/rec_upsert"]
        assert {b["run_id"] for b in bodies} == {outcome.run_id}  # the run that last delivered
        assert "high -> rec_mirror is overdue" in bodies[0]["text"]
        assert f"Last delivered by run {outcome.run_id[:8]}" in bodies[0]["text"]
        for channel in ("#crm-alerts", "#data-oncall"):
            texts = slack.posted(channel)
            assert len(texts) == 2 and all(t.startswith("*Delivery overdue* (small)") for t in texts)
            assert any("high -&gt; rec_upsert is overdue" in t and "`/assets/sync/high/rec_upsert`" in t for t in texts)

        # Still degraded at the next evaluation: no new state, nothing told again.
        evaluate_freshness(alerted, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=7))
        result, _ = tick(alerted, cursor)
        assert "nothing to tell" in result.skip_message and len(hook.requests) == 2
        assert_private(slack, hook)


def test_a_failing_channel_is_a_warning_and_the_others_are_still_told(alerted, slack, hook, monkeypatch, capfd):
    _, cursor = tick(alerted)
    Recording.crash_after_batches["rec_mirror"] = 0
    assert not alerted.sync().success
    hook.status = 503
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked-token-value")
    capfd.readouterr()
    result, cursor = tick(alerted, cursor)
    assert "1 alert(s), 0 message(s) sent" in result.skip_message
    # The sensor's log (the tick's log in the UI; stderr here).
    warnings = [line for line in capfd.readouterr().err.splitlines() if " - WARNING - " in line]
    assert len(warnings) == 2
    assert "sync_failed alert for high -> rec_mirror not sent to Slack #crm-alerts: Slack answered 200: invalid_auth" in warnings[0]
    assert 'not sent to webhook 127.0.0.1: HTTP 503: {"error": "unavailable"}' in warnings[1]
    assert not any("xoxb-" in w or HOOK_SECRET in w for w in warnings)
    # A failed send is not tried again: the cursor moved on.
    hook.status = None
    result, _ = tick(alerted, cursor)
    assert "nothing to tell" in result.skip_message


def test_the_alert_sensor_is_on_by_default_only_when_alerts_are_configured(alerted, small):
    sensor = load_definitions(alerted.settings).resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "Slack #crm-alerts, Slack #data-oncall, webhook 127.0.0.1" in sensor.description
    alerted.write("project.yaml", 'name: small\nstart_date: "2026-01-01"\n')
    assert SENSOR_NAME not in {s.name for s in load_definitions(alerted.settings).sensors}


REFERENCE_ONLY = "write it as {env: VARIABLE_NAME}: secrets come from environment variables, never from project files"


@pytest.mark.parametrize(
    "entry, message, line",
    [
        ('  - slack: {channel: "#x", token: xoxb-literal-123}\n', "`alerts[0].slack.token`: " + REFERENCE_ONLY, 3),
        ('  - webhook:\n      url: https://hooks.example.com/a\n      secret: whsec-literal\n',
         "`alerts[0].webhook.secret`: " + REFERENCE_ONLY, 5),
        ('  - slack: {channel: "#x", token: {env: T}}\n    on: [sync_failed, gate_hold]\n',
         "`alerts[0].on[1]`: unknown alert 'gate_hold'; use sync_failed, gate_held, freshness_degraded", 4),
        ('  - on: [sync_failed]\n', "`alerts[0]`: name exactly one channel: `slack:` or `webhook:`", 3),
        ('  - webhook: {url: "https://hooks.example.com/a?token=abc123", secret: {env: S}}\n',
         "`alerts[0].webhook.url`: must not carry a credential (the query parameter `token`): "
         "write the URL as {env: VARIABLE_NAME}", 3),
    ],
)
def test_a_bad_alerts_entry_is_a_load_error_naming_file_and_line(small, entry, message, line):
    small.write("project.yaml", 'name: small\nalerts:\n' + entry)
    with pytest.raises(ProjectError) as error:
        load_project(small.settings.project_dir)
    assert str(error.value) == f"project.yaml:{line}: {message}"  # never the value written
