"""Iterable API fake: bulk user updates, lists, bulk events and deletes; request bodies checked against the v1.8 spec.

Choices where Iterable's docs are silent (the destination API notes, section 2): lists/subscribe and
lists/unsubscribe get 10 requests/s each, and the two delete endpoints share one 100/s bucket; an item with neither
email nor userId counts in failCount without a key; a userId unknown to an email-based project (without
preferUserId) fails as invalidUserIds on users endpoints, where the spec reserves notFound* for lists and events.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator

from .server import FakeServer, Request, Response, TokenBucket

SPEC_PATH = Path(__file__).with_name("iterable-openapi-v1.8.json")
PROJECT_TYPES = ("email", "userId", "hybrid")
DEFAULT_RATE_LIMITS: Mapping[str, float] = MappingProxyType(
    {
        "users/bulkUpdate": 5,
        "events/trackBulk": 10,
        "users/update": 500,
        "users/delete": 100,
        "lists/subscribe": 10,
        "lists/unsubscribe": 10,
    }
)
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_USER_ID_LENGTH = 52
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
USER_FAILURES = (
    "conflictEmails",
    "conflictUserIds",
    "forgottenEmails",
    "forgottenUserIds",
    "invalidDataEmails",
    "invalidDataUserIds",
    "invalidEmails",
    "invalidUserIds",
    "notFoundEmails",
    "notFoundUserIds",
)
EVENT_FAILURES = (
    "forgottenEmails",
    "forgottenUserIds",
    "invalidEmails",
    "invalidUserIds",
    "notFoundEmails",
    "notFoundUserIds",
)
BY_USER_ID = "/api/users/byUserId/"


@dataclass(frozen=True)
class SpecViolation:
    """A request body that does not match the spec's schema for its endpoint."""

    path: str
    errors: dict[str, str]  # location in the body, e.g. "obj.users[1].email" -> validation message


@dataclass(frozen=True)
class Failure:
    """Why one item of a bulk request failed: a failedUpdates bucket and the identifier, or neither."""

    bucket: str | None
    identifier: str | None


class IterableFake(FakeServer):
    """An Iterable project on 127.0.0.1 with one server-side API key."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        project_type: str = "email",
        lists: Mapping[int, str] | None = None,
        rate_limits: Mapping[str, float] | None = DEFAULT_RATE_LIMITS,
        max_users: int | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if project_type not in PROJECT_TYPES:
            raise ValueError(f"project_type must be one of {PROJECT_TYPES}, not {project_type!r}")
        self.project_type = project_type
        self.list_names = dict(lists or {})
        self.rate_limits = dict(rate_limits or {})
        if unknown := self.rate_limits.keys() - DEFAULT_RATE_LIMITS.keys():
            raise ValueError(f"unknown rate-limit buckets {sorted(unknown)}; known: {sorted(DEFAULT_RATE_LIMITS)}")
        self.max_users = max_users
        self.max_body_bytes = max_body_bytes
        super().__init__(api_key)

    def _reset_state(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}  # {"email"?, "userId"?, "dataFields": {...}} by key (see _create)
        self.lists: dict[int, set[str]] = {list_id: set() for list_id in self.list_names}
        self.events: dict[str, dict[str, Any]] = {}  # by event id: a repeated id replaces the event
        self.received_events: list[dict[str, Any]] = []  # every event of every valid trackBulk body, as sent
        # How many times each event id was tracked: a resend replaces the event in `events` but counts here.
        self.event_receipts: Counter[str] = Counter()
        self.deleted: list[str] = []
        self.spec_violations: list[SpecViolation] = []
        self.field_types: dict[tuple[str, str], str] = {}  # (category, dotted field) -> type, fixed by first use
        self._keys_by_identity: dict[tuple[str, str], str] = {}  # (field, value) -> key; read where both are unique
        self._buckets = {name: TokenBucket(rate) for name, rate in self.rate_limits.items()}

    def _injected_response(self, status: int) -> Response:
        if status == 429:
            return Response(429, _api_response("Rate limit exceeded", "RateLimitExceeded"))
        return Response(status, _api_response(HTTPStatus(status).phrase, "GenericError"))

    def _handle(self, request: Request) -> Response:
        if request.headers.get("Api-Key") != self.api_key:
            return Response(401, _api_response("Invalid API key", "BadApiKey"))
        route = self._route(request)
        if route is None:
            return Response(404, _api_response(f"No such endpoint: {request.method} {request.path}", "NotFound"))
        name, spec_path, handler = route
        bucket = self._buckets.get(name)
        if bucket is not None and not bucket.take():
            return Response(429, _api_response("Rate limit exceeded", "RateLimitExceeded"))
        if len(request.raw) > self.max_body_bytes:
            return Response(
                400, _api_response(f"Request body is larger than {self.max_body_bytes} bytes", "BatchTooLarge")
            )
        if spec_path is not None:
            errors = _spec_errors(spec_path, request)
            if errors:
                self.spec_violations.append(SpecViolation(request.path, errors))
                return Response(400, _api_response(f"[{request.path}] Invalid JSON body", "BadJsonBody", errors))
        return handler(request)

    def _route(self, request: Request) -> tuple[str, str | None, Any] | None:
        """(rate-limit bucket, spec path whose body schema applies, handler) for a request."""
        if request.method == "DELETE" and request.path.startswith(BY_USER_ID) and request.path != BY_USER_ID:
            return "users/delete", None, self._delete_by_user_id
        if request.method == "DELETE" and request.path.startswith("/api/users/") and request.path.count("/") == 3:
            return "users/delete", None, self._delete_by_email
        posts = {
            "/api/users/bulkUpdate": ("users/bulkUpdate", self._bulk_update),
            "/api/users/update": ("users/update", self._update),
            "/api/lists/subscribe": ("lists/subscribe", self._subscribe),
            "/api/lists/unsubscribe": ("lists/unsubscribe", self._unsubscribe),
            "/api/events/trackBulk": ("events/trackBulk", self._track_bulk),
        }
        if request.method == "POST" and request.path in posts:
            name, handler = posts[request.path]
            return name, request.path, handler
        return None

    # endpoints

    def _bulk_update(self, request: Request) -> Response:
        users = request.body["users"]
        if self.max_users is not None and len(users) > self.max_users:
            return Response(400, _api_response(f"At most {self.max_users} users per request", "BatchTooLarge"))
        mismatch = self._type_mismatches([("user", user.get("dataFields") or {}) for user in users])
        if mismatch:
            return mismatch
        outcome = _Outcome(USER_FAILURES)
        for user in users:
            key = self._resolve(request, user, create=True, writes_identity=True, missing="invalid")
            if outcome.accept(key):
                self._write_fields(key, user, request.body, outcome)
        return Response(200, outcome.body())

    def _update(self, request: Request) -> Response:
        body = request.body
        mismatch = self._type_mismatches([("user", body.get("dataFields") or {})])
        if mismatch:
            return mismatch
        key = self._resolve(request, body, create=True, writes_identity=True, missing="notFound")
        if isinstance(key, Failure):
            status, code, message = _UPDATE_FAILURES.get(
                key.bucket, (400, "BadParams", "Either email or userId is required")
            )
            return Response(status, _api_response(f"{message}: {key.identifier}" if key.identifier else message, code))
        self._write_fields(key, body, body, _Outcome(USER_FAILURES))
        return Response(200, _api_response("This user has been updated", "Success"))

    def _subscribe(self, request: Request) -> Response:
        body = request.body
        list_id = body["listId"]
        if list_id not in self.lists:
            return _invalid_list(list_id)
        subscribers = body["subscribers"]
        mismatch = self._type_mismatches([("user", user.get("dataFields") or {}) for user in subscribers])
        if mismatch:
            return mismatch
        # updateExistingUsersOnly is respected only by userID-based and hybrid projects (spec)
        create = not (body.get("updateExistingUsersOnly", False) and self.project_type != "email")
        outcome = _Outcome(USER_FAILURES)
        for user in subscribers:
            key = self._resolve(request, user, create=create, writes_identity=True, missing="notFound")
            if outcome.accept(key):
                self._write_fields(key, user, body, outcome)
                self.lists[list_id].add(key)
        return Response(200, outcome.body())

    def _unsubscribe(self, request: Request) -> Response:
        list_id = request.body["listId"]
        if list_id not in self.lists:
            return _invalid_list(list_id)
        outcome = _Outcome(USER_FAILURES)
        for user in request.body["subscribers"]:
            key = self._resolve(request, user, create=False, writes_identity=False, missing="notFound")
            if outcome.accept(key):
                self.lists[list_id].discard(key)
        return Response(200, outcome.body())

    def _track_bulk(self, request: Request) -> Response:
        events = request.body["events"]
        self.received_events += events
        mismatch = self._type_mismatches(
            [(f"event:{event['eventName']}", event.get("dataFields") or {}) for event in events]
        )
        if mismatch:
            return mismatch
        outcome = _Outcome(EVENT_FAILURES)
        for event in events:
            # no preferUserId on events: a userId unknown to an email-based project is not found
            key = self._resolve(
                request, event, create=True, writes_identity=False, missing="notFound", prefer_user_id=False
            )
            if outcome.accept(key):
                kept = self._accept_fields(f"event:{event['eventName']}", event.get("dataFields") or {}, event, outcome)
                event_id = event.get("id") or uuid.uuid4().hex
                self.event_receipts[event_id] += 1
                created_at = event.get("createdAt", int(time.time()))
                self.events[event_id] = {
                    **event,
                    "id": event_id,
                    "createdAt": created_at,
                    "dataFields": kept,
                    "user": key,
                }
        return Response(200, {**outcome.body(), "disallowedEventNames": []})

    def _delete_by_email(self, request: Request) -> Response:
        email = unquote(request.path.removeprefix("/api/users/"))
        if self.project_type == "userId":
            return Response(
                400, _api_response("Deleting users by email is not supported in userID-based projects", "BadParams")
            )
        return self._delete(self._keys_with("email", email), email, f"Email: {email} UserId: ")

    def _delete_by_user_id(self, request: Request) -> Response:
        user_id = unquote(request.path.removeprefix(BY_USER_ID))
        return self._delete(self._keys_with("userId", user_id), user_id, f"Email:  UserId: {user_id}")

    def _delete(self, keys: list[str], identifier: str, who: str) -> Response:
        if not keys:
            return Response(400, _api_response(f"User does not exist. {who}", "BadParams"))
        for key in keys:
            del self.users[key]
            for members in self.lists.values():
                members.discard(key)
            self.deleted.append(key)
        return Response(
            200, _api_response(f"All users associated with {identifier} were successfully deleted", "Success")
        )

    # identity

    def _resolve(
        self,
        request: Request,
        item: Mapping[str, Any],
        *,
        create: bool,
        writes_identity: bool,
        missing: str,
        prefer_user_id: bool | None = None,
    ) -> str | Failure:
        """The key of the user an item designates, creating it if allowed, following the project type's rules."""
        email, user_id = item.get("email"), item.get("userId")
        if email is not None and (not EMAIL.fullmatch(email) or self.faults.is_invalid(request.path, email)):
            return Failure("invalidEmails", email)
        if user_id is not None and (not _valid_user_id(user_id) or self.faults.is_invalid(request.path, user_id)):
            return Failure("invalidUserIds", user_id)
        if email is None and user_id is None:
            return Failure(None, None)
        if prefer_user_id is None:
            prefer_user_id = bool(item.get("preferUserId", False))
        if self.project_type == "email":
            return self._resolve_email_project(email, user_id, create, writes_identity, missing, prefer_user_id)
        if self.project_type == "userId":
            if user_id is None:  # userID-based projects identify users by userId only
                return Failure(f"{missing}Emails", email)
            return self._find_or_create(
                self._keys_with("userId", user_id), user_id, email, user_id, create, writes_identity, missing
            )
        return self._resolve_hybrid(email, user_id, create, writes_identity, missing)

    def _resolve_email_project(
        self,
        email: str | None,
        user_id: str | None,
        create: bool,
        writes_identity: bool,
        missing: str,
        prefer_user_id: bool,
    ) -> str | Failure:
        if email is not None:  # email wins; a userId sent with it is written to the profile (support article)
            return self._find_or_create(
                self._keys_with("email", email), email, email, user_id, create, writes_identity, missing
            )
        matches = self._keys_with("userId", user_id)
        if matches:
            return matches[0]
        if create and prefer_user_id:  # Iterable gives such users a placeholder email
            placeholder = f"{hashlib.sha1(user_id.encode()).hexdigest()[:16]}@placeholder.email"
            return self._create(placeholder, placeholder, user_id)
        return Failure(f"{missing}UserIds", user_id)

    def _resolve_hybrid(
        self, email: str | None, user_id: str | None, create: bool, writes_identity: bool, missing: str
    ) -> str | Failure:
        by_user_id = self._keys_with("userId", user_id) if user_id is not None else []
        by_email = self._keys_with("email", email) if email is not None else []
        if by_user_id and by_email and by_user_id != by_email:
            return Failure("conflictEmails", email)
        return self._find_or_create(
            by_user_id or by_email, user_id or email, email, user_id, create, writes_identity, missing
        )

    def _find_or_create(
        self,
        matches: list[str],
        new_key: str,
        email: str | None,
        user_id: str | None,
        create: bool,
        writes_identity: bool,
        missing: str,
    ) -> str | Failure:
        if not matches and create:
            return self._create(new_key, email, user_id)
        if not matches:
            return Failure(f"{missing}UserIds", user_id) if user_id is not None else Failure(f"{missing}Emails", email)
        key = matches[0]
        if writes_identity:
            profile = self.users[key]
            unique = ("email", "userId") if self.project_type == "hybrid" else ()
            for field, value in (("email", email), ("userId", user_id)):
                if value is None or profile.get(field) == value:
                    continue
                if field in unique and profile.get(field) is not None:
                    return Failure({"email": "conflictEmails", "userId": "conflictUserIds"}[field], value)
                profile[field] = value
                self._keys_by_identity[field, value] = key
        return key

    def _create(self, key: str, email: str | None, user_id: str | None) -> str:
        """Add a profile keyed by its unique identifier (hybrid: the one it was created with)."""
        identity = {field: value for field, value in (("email", email), ("userId", user_id)) if value is not None}
        self.users[key] = {**identity, "dataFields": {}}
        self._keys_by_identity.update({(field, value): key for field, value in identity.items()})
        return key

    def _keys_with(self, field: str, value: str) -> list[str]:
        """Keys of the users whose `field` equals `value`."""
        if self.project_type == field:  # email-based projects key users by email, userID-based ones by userId
            return [value] if value in self.users else []
        if self.project_type == "hybrid":
            key = self._keys_by_identity.get((field, value))
            return [key] if key in self.users and self.users[key].get(field) == value else []
        return [key for key, profile in self.users.items() if profile.get(field) == value]

    # data fields

    def _type_mismatches(self, items: list[tuple[str, Mapping[str, Any]]]) -> Response | None:
        """A 400 RequestFieldsTypesMismatched if a field changes type from its first use, here or before."""
        seen = dict(self.field_types)
        errors = {}
        for category, data in items:
            for field, kind, value in _typed_fields(data):
                expected = seen.setdefault((category, field), kind)
                if expected != kind:
                    errors[f"{category}:::{field}"] = {
                        "incomingTypes": [kind],
                        "expectedType": expected,
                        "category": category.split(":")[0],
                        "offendingValue": json.dumps(value),
                        "_type": "UnexpectedType",
                    }
        if not errors:
            return None
        message = "The request does not have the same data types as the existing schema"
        return Response(400, _api_response(message, "RequestFieldsTypesMismatched", {"validationErrors": errors}))

    def _write_fields(self, key: str, item: Mapping[str, Any], body: Mapping[str, Any], outcome: _Outcome) -> None:
        """Merge an item's dataFields into the user's profile; top-level objects are merged only if asked."""
        fields = self.users[key]["dataFields"]
        for name, value in self._accept_fields("user", item.get("dataFields") or {}, body, outcome).items():
            if item.get("mergeNestedObjects") and isinstance(value, dict) and isinstance(fields.get(name), dict):
                fields[name] = {**fields[name], **value}
            else:
                fields[name] = value

    def _accept_fields(
        self, category: str, data: Mapping[str, Any], options: Mapping[str, Any], outcome: _Outcome
    ) -> dict[str, Any]:
        """The fields that may be stored: new ones are dropped when createNewFields is false; types are registered."""
        kept = {}
        for name, value in data.items():
            new = (category, name) not in self.field_types
            if new and options.get("createNewFields") is False:
                outcome.filtered_out.add(name)
                continue
            if new and value is not None:
                outcome.created.add(name)
            kept[name] = value
        for field, kind, _ in _typed_fields(kept):
            self.field_types.setdefault((category, field), kind)
        return kept


class _Outcome:
    """Counts and failedUpdates of a bulk request, keyed by identifier as Iterable reports them."""

    def __init__(self, buckets: tuple[str, ...]) -> None:
        self.success = 0
        self.failures = 0
        self.failed: dict[str, list[str]] = {bucket: [] for bucket in buckets}
        self.created: set[str] = set()
        self.filtered_out: set[str] = set()

    def accept(self, key: str | Failure) -> bool:
        """Count one item; False, with the failure recorded, if it could not be resolved to a user."""
        if isinstance(key, Failure):
            self.failures += 1
            if key.bucket is not None:
                self.failed[key.bucket].append(key.identifier)
            return False
        self.success += 1
        return True

    def body(self) -> dict[str, Any]:
        """The response body; the deprecated top-level lists repeat every failed email and userId."""
        return {
            "successCount": self.success,
            "failCount": self.failures,
            "invalidEmails": [
                value for bucket, values in self.failed.items() if bucket.endswith("Emails") for value in values
            ],
            "invalidUserIds": [
                value for bucket, values in self.failed.items() if bucket.endswith("UserIds") for value in values
            ],
            "createdFields": sorted(self.created),
            "filteredOutFields": sorted(self.filtered_out),
            "failedUpdates": self.failed,
        }


_UPDATE_FAILURES = {
    "invalidEmails": (400, "InvalidEmailAddressError", "Invalid email"),
    "invalidUserIds": (400, "InvalidUserIdError", "Invalid userId"),
    "notFoundEmails": (400, "UnknownEmailError", "Unknown email"),
    "notFoundUserIds": (400, "UnknownUserIdError", "Unknown userId"),
    "conflictEmails": (409, "ExternalKeyConflict", "Email/userId conflict"),
    "conflictUserIds": (409, "ExternalKeyConflict", "Email/userId conflict"),
}


_TYPES = (("boolean", bool), ("number", int | float), ("string", str), ("object", dict), ("array", list))


def _api_response(msg: str, code: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"msg": msg, "code": code, "params": params}


def _invalid_list(list_id: int) -> Response:
    return Response(400, _api_response(f"error.lists.invalidListId: {list_id}", "BadParams"))


def _valid_user_id(user_id: str) -> bool:
    """Non-empty, at most 52 characters, printable ASCII, no trailing space (spec and support article)."""
    return (
        0 < len(user_id) <= MAX_USER_ID_LENGTH
        and user_id.isascii()
        and user_id.isprintable()
        and not user_id.endswith(" ")
    )


def _typed_fields(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted field, type, value) for every non-null field, nested objects included."""
    for name, value in data.items():
        if value is None:
            continue
        # bool before number: True is an int to Python, not to Iterable
        kind = next(kind for kind, types in _TYPES if isinstance(value, types))
        yield prefix + name, kind, value
        if isinstance(value, dict):
            yield from _typed_fields(value, f"{prefix}{name}.")


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@cache
def _validator(spec_path: str) -> Draft4Validator:
    """The validator for the body parameter of POST `spec_path`; Swagger 2.0 schemas are JSON Schema draft 4."""
    spec = _spec()
    (parameter,) = [p for p in spec["paths"][spec_path]["post"]["parameters"] if p["in"] == "body"]
    return Draft4Validator({**parameter["schema"], "definitions": spec["definitions"]})


def _spec_errors(spec_path: str, request: Request) -> dict[str, str]:
    """Where and why the request body breaks the spec, located as Iterable does ("obj.users[1].email")."""
    if not request.is_json:
        return {"obj": "Invalid JSON"}
    errors = {}
    for error in _validator(spec_path).iter_errors(request.body):
        location = "obj" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        errors.setdefault(location, error.message)
    return errors
