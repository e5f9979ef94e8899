"""Webhook: a generic HTTP JSON destination, one signed POST per batch.

destinations.yaml:

    crm_hook:
      type: webhook
      url: https://hooks.example.com/cdp      # or {env: NAME}; no user:password@ or ?token= (use headers)
      secret: {env: CRM_HOOK_SECRET}          # required: the HMAC-SHA256 signing key
      batch_size: 100                         # rows per request
      concurrency: 4                          # requests in flight at once
      requests_per_second: 10                 # optional; shared by every sync to this URL on this machine
      timeout_seconds: 30
      max_tries: 6                            # per request, counting the first
      headers: {Authorization: {env: CRM_HOOK_AUTH}}   # optional extra headers; values may be {env: NAME}

Request: `POST <url>` with `Content-Type: application/json` and the body

    {"audience": "...", "destination": "...", "run_id": "...", "partition": "YYYY-MM-DD",
     "rows": [{"key": "...", "operation": "upsert" | "remove", "change": "add" | "update" | "remove",
               "identifier": {"<identifier type>": "<value>"}, "fields": {...}}]}

`fields` (destination field: value, null included) is present on upserts only.

Event streams (streams/*.yaml) POST batches of events the same way, with the body

    {"stream": "...", "destination": "...", "run_id": "...", "partition": "YYYY-MM-DD",
     "events": [{"id": "<stream>:<event id>", "name": "...", "time": "2026-03-02T10:15:00.000Z",
                 "identifier": {"<identifier type>": "<value>"}, "properties": {...}}]}

and the same response contract (`rejected` indexes refer to `events`). Events are delivered at least once: a
batch in flight when a run was killed is sent again, so receivers deduplicate by `id`.

Every request carries

    X-Composable-Timestamp: <unix seconds>
    X-Composable-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>.<raw body>")>

A receiver recomputes the HMAC over the raw body bytes, compares it in constant time and refuses
timestamps older than a few minutes (a replayed request). Retries are signed afresh.

Response:
- 2xx: every row is acknowledged, except those listed in an optional JSON body
  `{"rejected": [{"index": <position in rows>, "reason": "..."}]}` (entries with an index outside
  the batch are ignored). Rejected rows are recorded with their reason and tried again next run.
- 401 or 403: the credentials are refused; the sync fails and nothing more is sent.
- 408, 425, 429, 5xx, timeouts and dropped connections: retried with backoff, honouring
  Retry-After; when the tries run out the batch stays unsent for the next run.
- any other 4xx: the whole batch is rejected with the reason "HTTP <status>: <start of the body>".
- 3xx: the sync fails (redirects are not followed, so a signed body never goes elsewhere).

Delivery is at least once: a request that timed out may have been processed, and is sent again.
Receivers should treat (key, change, fields) as idempotent.

Deletion requests (right to be forgotten, governance/deletion.py) POST, signed the same way, the body

    {"action": "forget", "destination": "...", "run_id": "...",
     "people": [{"identifier": {"<identifier type>": "<value>"}}]}

asking the receiver to delete each person everywhere it keeps them. A 2xx deletes every person except those
listed in `{"rejected": [{"index", "reason"}]}` (failed, asked again next run) or in `{"not_found": [index, ...]}`
(the receiver never had them); other statuses are handled as for deliveries, and a 4xx fails every person.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any, cast

from pydantic import Field

from ..project import SecretRef, resolve_setting
from .base import (
    DELETED,
    FAILED,
    NOT_FOUND,
    BatchResult,
    Capabilities,
    Destination,
    Event,
    ForgetTarget,
    Forgotten,
    Limits,
    NoOptions,
    Record,
    Row,
    Session,
    Target,
    TerminalError,
    generic_event,
    generic_payload,
)
from .http import ApiSettings, HttpClient, Limit, RateBudget, Response, account_key

SIGNATURE_HEADER = "X-Composable-Signature"
TIMESTAMP_HEADER = "X-Composable-Timestamp"
# Enough of an error body to say what went wrong without flooding the failures table.
SHORT_BODY_CHARS = 200


class WebhookSettings(ApiSettings):
    url: str | SecretRef
    secret: SecretRef
    batch_size: int = Field(default=100, ge=1)
    requests_per_second: int | None = Field(default=None, ge=1)
    headers: dict[str, str | SecretRef] = {}


def webhook_rows(batch: Sequence[Record], identifier_type: str) -> list[dict[str, Any]]:
    """The `rows` of a request body: the generic payload of each record plus its key."""
    return [{"key": r.key, **generic_payload(r, identifier_type)} for r in batch]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Composable-Signature value of one request."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _Signer:
    """Signs each request body, so every retry carries a fresh timestamp (HttpClient asks again for each try)."""

    def __init__(self, secret: str):
        self._secret = secret

    def __call__(self, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(self._secret, timestamp, body)}


class WebhookSession(Session[Row]):
    def __init__(
        self,
        target: Target | ForgetTarget,
        client: HttpClient,
        path: str,
        signer: _Signer,
        budget: RateBudget | None,
    ):
        self.target = target
        self.client = client
        self.path = path
        self.signer = signer
        self.budget = budget
        self.events = isinstance(target, Target) and target.events

    def send(self, batch: Sequence[Row]) -> BatchResult:
        seqs = [r.seq for r in batch]
        target = self.target
        assert isinstance(target, Target)  # a session opened with a ForgetTarget only forgets, never sends
        if self.events:
            # An events session (target.events) is given the stream's Events, an audience session its Records.
            events = [generic_event(cast(Event, e), target.identifier_type) for e in batch]
            return self._post({"stream": target.stream}, "events", events, seqs)
        rows = webhook_rows(cast(Sequence[Record], batch), target.identifier_type)
        return self._post({"audience": target.audience}, "rows", rows, seqs)

    def _post(
        self, subject: dict[str, str], items_key: str, items: list[dict[str, Any]], seqs: list[int]
    ) -> BatchResult:
        """POST one signed body about `subject` (the audience or stream); results keyed by `seqs`, in `items` order."""
        target = self.target
        assert isinstance(target, Target)  # only send posts rows or events, and it has checked so
        envelope = {
            **subject,
            "destination": target.destination,
            "run_id": target.run_id,
            "partition": target.partition,
            items_key: items,
        }
        response = self._signed_post(envelope)
        status = response.status_code
        if 200 <= status < 300:
            rejected = {seqs[i]: reason for i, reason in self._rejections(response, len(seqs)).items()}
            acknowledged = [seq for seq in seqs if seq not in rejected]
            return BatchResult(acknowledged=acknowledged, rejected=rejected, payloads=items)
        short = " ".join(self.client.redact(response.text[:SHORT_BODY_CHARS]).split())
        return BatchResult(rejected={seq: f"HTTP {status}: {short}" for seq in seqs}, payloads=items)

    def forget(self, identifiers: Sequence[str]) -> list[Forgotten]:
        """One signed `"action": "forget"` request for these people (see the module docstring)."""
        people = [{"identifier": {self.target.identifier_type: i}} for i in identifiers]
        envelope = {
            "action": "forget",
            "destination": self.target.destination,
            "run_id": self.target.run_id,
            "people": people,
        }
        response = self._signed_post(envelope)
        answer = self.client.answer(response, SHORT_BODY_CHARS)
        if not 200 <= response.status_code < 300:
            return [Forgotten(i, FAILED, answer) for i in identifiers]
        rejected = self._rejections(response, len(identifiers))
        missing = self._not_found(response, len(identifiers))
        return [
            Forgotten(i, FAILED, f"{answer}; rejected: {rejected[n]}")
            if n in rejected
            else Forgotten(i, NOT_FOUND if n in missing else DELETED, answer)
            for n, i in enumerate(identifiers)
        ]

    def _signed_post(self, envelope: dict[str, Any]) -> Response:
        """POST one signed JSON body; a 2xx or 4xx comes back, a redirect or other answer fails (retries done)."""
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        response = self.client.request(
            "POST", self.path, budget=self.budget, data=body, sign=self.signer, allow_redirects=False
        )
        if not 200 <= response.status_code < 500:
            raise TerminalError(
                f"webhook answered HTTP {response.status_code} (redirects are not followed; configure the final URL)"
            )
        return response

    @staticmethod
    def _not_found(response: Response, size: int) -> set[int]:
        """Positions a forget answer lists under `not_found`."""
        try:
            body = response.json()
        except ValueError:
            return set()
        entries = body.get("not_found") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return set()
        return {i for i in entries if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size}

    def _rejections(self, response: Response, size: int) -> dict[int, str]:
        """{row index: reason} from a 2xx body; a body that is not the documented shape rejects nothing."""
        try:
            body = response.json()
        except ValueError:
            return {}
        entries = body.get("rejected") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return {}
        rejections = {}
        for entry in entries:
            index = entry.get("index") if isinstance(entry, dict) else None
            # bool is an int subclass; `true` is not a position.
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < size:
                reason = str(entry.get("reason") or "rejected by the receiver")
                rejections[index] = self.client.redact(reason[:SHORT_BODY_CHARS])
        return rejections

    def stats(self) -> dict[str, float]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()
        if self.budget is not None:
            self.budget.close()


class Webhook(Destination):
    """POSTs each batch as signed JSON to a URL; see the module docstring for the contract."""

    type_name = "webhook"
    kind = "webhook"
    Settings = WebhookSettings
    EventOptions = NoOptions

    @property
    def capabilities(self) -> Capabilities:
        config = self.config
        rows = Limits(config.batch_size, config.requests_per_second, 1.0 if config.requests_per_second else None)
        return Capabilities.of(
            rows,
            events=rows,
            concurrency=config.concurrency,
            idempotent_events=True,  # every event carries its id: receivers deduplicate
            forget_batch_size=config.batch_size,
        )

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        with self.open(target) as session:
            return session.forget(identifiers)

    def open(self, target: Target | ForgetTarget) -> WebhookSession:
        config = self.config
        url = resolve_setting(config.url)
        if not url.startswith(("http://", "https://")):
            raise TerminalError(f"destination {self.name}: url must start with http:// or https://")
        secret = resolve_setting(config.secret)
        headers = {name: resolve_setting(value) for name, value in config.headers.items()}
        # The signing key is never sent, but a receiver may echo header values back in an error body.
        secrets = [secret] + [headers[name] for name, value in config.headers.items() if isinstance(value, SecretRef)]
        # The whole URL is the client's base, so errors never show its path (hook URLs often embed a
        # token); the client strips a trailing slash from its base, which the path puts back.
        path = "/" if url.endswith("/") else ""
        client = config.client(url, {**headers, "Content-Type": "application/json"}, tuple(secrets))
        budget = None
        if config.requests_per_second:
            budget = self.coordination.budget(f"webhook:{account_key(url)}", Limit(config.requests_per_second, 1.0))
        return WebhookSession(target, client, path, _Signer(secret), budget)

    def payloads(self, batch: Sequence[Record], target: Target) -> list[dict[str, Any]]:
        return webhook_rows(batch, target.identifier_type)
