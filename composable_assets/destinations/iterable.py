"""Iterable: profile fields through /api/users/bulkUpdate; list membership or deletion for mirror mode.

destinations.yaml:
    iterable:
      type: iterable
      api_key: {env: ITERABLE_API_KEY}        # a server-side key
      base_url: https://api.eu.iterable.com   # default https://api.iterable.com (US)
      project_type: email                     # email | userId | hybrid, as the project was created

Audience sync options (`options:`):
    list_id: 123               static list: members subscribed on add, unsubscribed when they leave (mirror)
    on_remove: delete          mirror without a list: delete the user (DELETE /api/users/...) instead

A mirror needs one of the two, so that Iterable itself tells a leaver from a member (list membership, or the
profile being gone): a mirror with neither is refused when the project loads. Members are subscribed when
they are added: a list_id given to a sync that already has members reaches only those added afterwards.

Events (streams/*.yaml) go to /api/events/trackBulk (10 requests/s per project), at most `event_batch_size`
per request and 4 MB, each with `id` = the event id: Iterable updates an event whose id it already has instead
of adding another, so resending is harmless and a stream delivers every event exactly once by id. Failures come
back keyed by email/userId and are mapped to every event of that user in the request; an event id longer than
Iterable's 512 bytes is rejected without being sent. Stream sync options: none.

Requests are split by count (batch_size) and by body size (4 MB). Iterable reports failures by email
or userId, not by position: they are mapped back to rows. A request Iterable refuses as a whole
(a field whose type changed, a malformed value) is halved until the offending rows are isolated.

Deletion requests (governance/deletion.py, `forget`) DELETE /api/users/{email} or /api/users/byUserId/{userId}, one
person a request on the delete budget (100/s); a 400 "User does not exist" means already deleted.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Sequence
from typing import Any, Literal, cast
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from ..project import SecretRef, resolve_setting
from .base import (
    DELETED,
    FAILED,
    NOT_FOUND,
    BatchResult,
    Capabilities,
    Destination,
    DestinationError,
    Event,
    ForgetTarget,
    Forgotten,
    Limits,
    NoOptions,
    Record,
    Session,
    Target,
)
from .changes import changed_fields
from .http import ApiSettings, HttpClient, Limit, RateBudget, account_key, budgets

MAX_BODY_BYTES = 4_000_000  # documented limit is 4 MB; stay a little under 4 MiB
MAX_EVENT_ID_BYTES = 512  # trackBulk: "this ID cannot be longer than 512 bytes"
FORGET_BATCH = 100  # people per forget call: one second of the documented 100 deletes/s


class IterableSettings(ApiSettings):
    api_key: SecretRef
    base_url: str | SecretRef = "https://api.iterable.com"
    project_type: Literal["email", "userId", "hybrid"] = "email"
    batch_size: int = Field(default=1000, ge=1)
    event_batch_size: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    concurrency: int = Field(default=4, ge=1, le=32)
    # Per project, as documented: bulkUpdate 5/s, delete 100/s; list endpoints are not documented (10/s assumed).
    bulk_update_limit: Limit = Limit(5, 1.0)
    list_limit: Limit = Limit(10, 1.0)
    delete_limit: Limit = Limit(100, 1.0)
    track_bulk_limit: Limit = Limit(10, 1.0)


class IterableSyncOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list_id: int | None = None
    on_remove: Literal["unsubscribe", "delete"] = "unsubscribe"

    @model_validator(mode="after")
    def _leavers_can_be_removed(self, info: ValidationInfo) -> IterableSyncOptions:
        sync = info.context or {}  # the sync's mode, when the project loads
        if sync.get("mode") == "mirror" and self.on_remove == "unsubscribe" and self.list_id is None:
            # Without a list a leaver could only be left as they are, looking exactly like a member.
            raise ValueError(
                "a mirror to Iterable needs list_id (members subscribed to that static list, leavers unsubscribed) "
                "or on_remove: delete (leavers deleted)"
            )
        return self


class Iterable(Destination):
    type_name = "iterable"
    kind = "iterable"
    Settings = IterableSettings
    SyncOptions = IterableSyncOptions
    EventOptions = NoOptions
    identifier_types = ("email", "userId")

    @property
    def capabilities(self) -> Capabilities:
        config = self.config
        bulk, track = config.bulk_update_limit, config.track_bulk_limit
        return Capabilities.of(
            Limits(config.batch_size, bulk.requests, bulk.window_seconds),
            events=Limits(config.event_batch_size, track.requests, track.window_seconds),
            max_body_bytes=config.max_body_bytes,
            concurrency=config.concurrency,
            idempotent_events=True,  # trackBulk upserts by event id
            # One DELETE per person; a call takes this many, on the delete budget.
            forget_batch_size=FORGET_BATCH,
        )

    def _connect(self) -> tuple[HttpClient, dict[str, RateBudget]]:
        config = self.config
        base_url = resolve_setting(config.base_url)
        api_key = config.api_key.resolve()
        client = config.client(base_url, {"Api-Key": api_key, "Content-Type": "application/json"}, (api_key,))
        account = account_key(base_url, api_key)
        rate_budgets = budgets(
            self.coordination,
            f"iterable:{account}",
            {
                "bulk_update": config.bulk_update_limit,
                "lists": config.list_limit,
                "delete": config.delete_limit,
                "track_bulk": config.track_bulk_limit,
            },
        )
        return client, rate_budgets

    def open(self, target: Target) -> Session:
        if target.events:
            return IterableEventSession(*self._connect(), target, self.config)
        return IterableSession(*self._connect(), target, self.config)

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        """DELETE /api/users/{email} or /api/users/byUserId/{userId}, one person a request.

        A 400 "User does not exist" counts as already deleted (not_found). Once a request fails after its retries,
        the rest of the call is not tried (the API is down): they stay failed for the next run.
        """
        client, rate_budgets = self._connect()
        outcomes: list[Forgotten] = []
        try:
            for identifier in identifiers:
                try:
                    response = client.request(
                        "DELETE", user_path(target.identifier_type, identifier), budget=rate_budgets["delete"]
                    )
                except DestinationError as exc:
                    outcomes.append(Forgotten(identifier, FAILED, client.redact(str(exc))))
                    break
                if response.status_code < 400:
                    status = DELETED
                else:
                    status = NOT_FOUND if "does not exist" in _message(response) else FAILED
                outcomes.append(Forgotten(identifier, status, client.answer(response)))
        finally:
            client.close()
            for budget in rate_budgets.values():
                budget.close()
        left = identifiers[len(outcomes) :]
        return outcomes + [Forgotten(i, FAILED, "not tried: an earlier delete of this call failed") for i in left]

    def payloads(self, batch: Sequence[Record], target: Target) -> list[dict[str, Any]]:
        return [
            {"endpoint": "/api/users/bulkUpdate", "user": user_object(r, target)}
            if r.operation == "upsert"
            else {"endpoint": _removal_path(r, target), "subscriber": {target.identifier_type: r.identifier}}
            for r in batch
        ]


def user_object(record: Record, target: Target) -> dict[str, Any]:
    user: dict[str, Any] = {target.identifier_type: record.identifier, "dataFields": changed_fields(record)}
    if target.identifier_type == "userId":
        # Without it, an email-based project refuses a userId it has not seen.
        user["preferUserId"] = True
    return user


def _removal_path(record: Record, target: Target) -> str:
    options = cast(IterableSyncOptions, target.options)  # validated with SyncOptions when the project loads
    if options.on_remove == "delete" or options.list_id is None:
        return user_path(target.identifier_type, record.identifier)
    return "/api/lists/unsubscribe"


def user_path(identifier_type: str, identifier: str) -> str:
    """The path that deletes one user: by email (email-based and hybrid projects) or by userId (all projects)."""
    if identifier_type == "email":
        return f"/api/users/{quote(identifier, safe='@')}"
    return f"/api/users/byUserId/{quote(identifier, safe='')}"


class IterableSession(Session[Record]):
    def __init__(self, client: HttpClient, budgets: dict[str, RateBudget], target: Target, config: IterableSettings):
        self.client = client
        self.budgets = budgets
        self.target = target
        self.options = cast(IterableSyncOptions, target.options)  # validated with SyncOptions when the project loads
        self.max_body = config.max_body_bytes

    def send(self, batch: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        upserts = [r for r in batch if r.operation == "upsert"]
        removals = [r for r in batch if r.operation == "remove"]
        updated = self._bulk_update(upserts, result) if upserts else []
        adds = [r for r in updated if r.change == "add"]
        if self.options.list_id is not None and adds:
            self._list_call("/api/lists/subscribe", adds, result)
        else:
            result.acknowledged.extend(r.seq for r in adds)
        result.acknowledged.extend(r.seq for r in updated if r.change != "add")
        if removals:
            if self.options.on_remove == "unsubscribe" and self.options.list_id is not None:
                self._list_call("/api/lists/unsubscribe", removals, result)
            elif self.options.on_remove == "delete":
                for record in removals:
                    self._delete(record, result)
            else:
                reason = "mirror to Iterable needs options.list_id (unsubscribe) or on_remove: delete"
                result.rejected.update({r.seq: reason for r in removals})
        return result

    def _bulk_update(self, records: list[Record], result: BatchResult) -> list[Record]:
        """bulkUpdate in body-sized chunks; returns the records Iterable accepted."""
        accepted: list[Record] = []
        for chunk in self._chunks(records, lambda r: user_object(r, self.target)):
            accepted += self._post_users("/api/users/bulkUpdate", "users", chunk, result, self.budgets["bulk_update"])
        return accepted

    def _list_call(self, path: str, records: list[Record], result: BatchResult) -> None:
        for chunk in self._chunks(records, lambda r: {self.target.identifier_type: r.identifier}):
            done = self._post_users(path, "subscribers", chunk, result, self.budgets["lists"])
            result.acknowledged.extend(r.seq for r in done)

    def _chunks(self, records: list[Record], to_json) -> list[list[tuple[Record, dict]]]:
        """Split so that no request body exceeds the size limit."""
        chunks: list[list[tuple[Record, dict]]] = [[]]
        size = 200  # the envelope around the array
        for record in records:
            obj = to_json(record)
            obj_size = len(json.dumps(obj, separators=(",", ":"), default=str).encode()) + 1
            if chunks[-1] and size + obj_size > self.max_body:
                chunks.append([])
                size = 200
            chunks[-1].append((record, obj))
            size += obj_size
        return [c for c in chunks if c]

    def _post_users(self, path: str, key: str, chunk, result: BatchResult, budget: RateBudget) -> list[Record]:
        body: dict[str, Any] = {key: [obj for _, obj in chunk]}
        if path.startswith("/api/lists/"):
            body["listId"] = self.options.list_id
        response = self.client.request("POST", path, data=_dumps(body), budget=budget)
        if response.status_code >= 400:
            if len(chunk) > 1:
                # One bad row spoils the request: halve until it is isolated, the rest go through.
                half = len(chunk) // 2
                return self._post_users(path, key, chunk[:half], result, budget) + self._post_users(
                    path, key, chunk[half:], result, budget
                )
            reason = f"HTTP {response.status_code}: {self.client.redact(_message(response))}"
            result.rejected[chunk[0][0].seq] = reason
            return []
        failed = _failures(response)
        done = []
        for record, _obj in chunk:
            failure = failed.get(record.identifier) or failed.get(str(record.identifier).lower())
            # Unsubscribing someone Iterable does not know leaves them off the list: the goal holds.
            if failure and not (path.endswith("unsubscribe") and failure.startswith("notFound")):
                result.rejected[record.seq] = failure
            else:
                done.append(record)
        if path.endswith("bulkUpdate"):
            result.payloads.extend(obj for _, obj in chunk[:5])
        return done

    def _delete(self, record: Record, result: BatchResult) -> None:
        path = _removal_path(record, self.target)
        response = self.client.request("DELETE", path, budget=self.budgets["delete"])
        # "User does not exist": already deleted (e.g. by an earlier, interrupted run): the goal holds.
        if response.status_code < 400 or "does not exist" in _message(response):
            result.acknowledged.append(record.seq)
        else:
            result.rejected[record.seq] = f"HTTP {response.status_code}: {self.client.redact(_message(response))}"

    def stats(self) -> dict[str, float]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()
        for budget in self.budgets.values():
            budget.close()


def track_object(event: Event, target: Target) -> dict[str, Any]:
    """One trackBulk event (TrackRequest in Iterable's spec): email or userId, never both; createdAt in epoch seconds."""
    return {
        "eventName": event.name,
        target.identifier_type: event.identifier,
        "id": event.event_id,
        "createdAt": calendar.timegm(event.time.utctimetuple()),
        "dataFields": {name: value for name, value in event.properties.items() if value is not None},
    }


class IterableEventSession(Session[Event]):
    """Events through /api/events/trackBulk, each with its deterministic id (Iterable upserts by id)."""

    def __init__(self, client: HttpClient, budgets: dict[str, RateBudget], target: Target, config: IterableSettings):
        self.client = client
        self.budgets = budgets
        self.target = target
        self.max_body = config.max_body_bytes

    def send(self, batch: Sequence[Event]) -> BatchResult:
        result = BatchResult()
        sendable = []
        for event in batch:
            if len(event.event_id.encode()) > MAX_EVENT_ID_BYTES:
                result.rejected[event.seq] = f"event id longer than {MAX_EVENT_ID_BYTES} bytes"
            else:
                sendable.append((event, track_object(event, self.target)))
        for chunk in _sized_chunks(sendable, self.max_body):
            self._post(chunk, result)
        return result

    def _post(self, chunk: list[tuple[Event, dict]], result: BatchResult) -> None:
        response = self.client.request(
            "POST",
            "/api/events/trackBulk",
            data=_dumps({"events": [obj for _, obj in chunk]}),
            budget=self.budgets["track_bulk"],
        )
        if response.status_code >= 400:
            if len(chunk) > 1:
                # A field whose type changed, or a malformed value, spoils the request: halve until it is isolated.
                half = len(chunk) // 2
                self._post(chunk[:half], result)
                self._post(chunk[half:], result)
                return
            result.rejected[chunk[0][0].seq] = f"HTTP {response.status_code}: {self.client.redact(_message(response))}"
            return
        failed = _failures(response)
        disallowed = set(_json_list(response, "disallowedEventNames"))
        for event, _obj in chunk:
            # Failures name the user, not the event: every event of that user in the request failed.
            reason = failed.get(str(event.identifier)) or failed.get(str(event.identifier).lower())
            if event.name in disallowed:
                reason = f"event name {event.name!r} is not allowed in this project"
            if reason:
                result.rejected[event.seq] = reason
            else:
                result.acknowledged.append(event.seq)
        result.payloads.extend(obj for _, obj in chunk[:5])

    def stats(self) -> dict[str, float]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()
        for budget in self.budgets.values():
            budget.close()


def _sized_chunks(items: list[tuple[Any, dict]], max_body: int) -> list[list[tuple[Any, dict]]]:
    """Split (item, json object) pairs so that no request body exceeds the size limit."""
    chunks: list[list[tuple[Any, dict]]] = [[]]
    size = 200  # the envelope around the array
    for item, obj in items:
        obj_size = len(_dumps(obj)) + 1
        if chunks[-1] and size + obj_size > max_body:
            chunks.append([])
            size = 200
        chunks[-1].append((item, obj))
        size += obj_size
    return [c for c in chunks if c]


def _json_list(response, key: str) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        return []
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, list) else []


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def _message(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("msg") or body.get("code") or body)[:200] if isinstance(body, dict) else str(body)[:200]


def _failures(response) -> dict[str, str]:
    """identifier -> reason, from failedUpdates (keyed by email or userId, not by position)."""
    try:
        failed = (response.json() or {}).get("failedUpdates") or {}
    except ValueError:
        return {}
    reasons: dict[str, str] = {}
    for reason, identifiers in failed.items():
        for identifier in identifiers or []:
            reasons[str(identifier)] = reason
            reasons[str(identifier).lower()] = reason
    return reasons
