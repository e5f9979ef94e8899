"""Braze REST fake: /users/track, /users/delete, subscription status and /users/export/ids, behind fixed-window limits.

Choices where Braze's docs are silent (the destination API notes, section 1): an update-only object for an unknown
user is counted as processed and changes nothing; a /users/track request in which every object has a minor error
is the fatal 400 "Valid data must be provided ..." (Segment fixture); /users/delete counts the ids that matched a user.
/users/export/ids answers 200, leaves out fields a profile does not have, ignores field names it does not know, lists
unknown external_ids in `invalid_user_ids`, and has its own window (250 per minute) apart from the workspace's.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections import Counter
from datetime import datetime
from http import HTTPStatus
from typing import Any, NamedTuple

from .server import FakeServer, FixedWindows, Request, Response

TRACK_ARRAYS = ("attributes", "events", "purchases")
PRIMARY_IDENTIFIERS = ("external_id", "user_alias", "braze_id")
UPDATE_ONLY_BY_DEFAULT = ("user_alias", "braze_id")  # Braze creates no profile for these unless told to
DELETE_ID_TYPES = ("external_ids", "user_aliases", "braze_ids", "email_addresses", "phone_numbers")
PRIORITIZATIONS = ("identified", "unidentified", "most_recently_updated")
SUBSCRIPTION_STATES = ("subscribed", "unsubscribed")
MAX_IDS = 50
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
MISSING_IDENTIFIER = "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required"
TOO_MANY_IDS = "The max number of ids per request was exceeded"
EMAIL_AND_PHONE = "Either an email address or a phone number should be provided, but not both."
TOO_MANY_EXPORT_IDS = "The max number of external_ids and aliases per request was exceeded"
EXPORT_SINGLE_IDS = ("device_id", "braze_id", "email_address", "phone")
EXPORT_IDENTIFIER_NEEDED = f"Give external_ids and/or user_aliases, or exactly one of {', '.join(EXPORT_SINGLE_IDS)}"
# What /users/export/ids returns at the top level of a user; other attributes come under custom_attributes.
EXPORT_STANDARD_FIELDS = frozenset(
    {"external_id", "braze_id", "email", "first_name", "last_name", "phone", "country", "language", "dob", "gender",
     "home_city", "time_zone", "email_subscribe", "push_subscribe"}
)
# Profile keys that are not custom attributes: identifiers, and subscription groups (kept apart by Braze).
NOT_CUSTOM_ATTRIBUTES = frozenset({*PRIMARY_IDENTIFIERS, "subscription_groups"})


class DataPoint(NamedTuple):
    """One attribute value Braze received (and would bill) for one user."""

    user: str
    attribute: str
    value: Any


class BrazeFake(FakeServer):
    """A Braze workspace on 127.0.0.1 with one REST API key."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        rate_limit: int | None = 3000,
        rate_window_seconds: float = 3.0,
        max_objects: int = 75,
        max_objects_total: int | None = None,
        export_rate_limit: int | None = 250,
        export_window_seconds: float = 60.0,
    ) -> None:
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        self.export_rate_limit = export_rate_limit
        self.export_window_seconds = export_window_seconds
        self.max_objects = max_objects
        # Workspaces on the "Monthly Active Users CY 24-25" plan: at most this many objects across the three arrays.
        self.max_objects_total = max_objects_total
        super().__init__(api_key)

    def received_event_ids(self, id_property: str = "event_id") -> Counter[str]:
        """How many times each event id arrived, read from the `id_property` of every event and purchase kept.

        Braze itself keeps every event it receives (no deduplication): an id counted twice is a duplicate event.
        """
        return Counter(
            str(obj["properties"][id_property])
            for obj in (*self.events, *self.purchases)
            if isinstance(obj.get("properties"), dict) and id_property in obj["properties"]
        )

    def max_requests_in_window(self) -> int:
        """The most authenticated requests, 429s included, in one workspace rate window (exports have their own)."""
        return self._windows.max_count()

    def _reset_state(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.data_points: list[DataPoint] = []
        self.subscriptions: dict[tuple[str, str], str] = {}
        self._windows = FixedWindows(self.rate_limit, self.rate_window_seconds)
        self._export_windows = FixedWindows(self.export_rate_limit, self.export_window_seconds)
        self._updated: dict[str, int] = {}  # user -> sequence of its last update, for "most recently updated"
        self._sequence = itertools.count()

    def _injected_response(self, status: int) -> Response:
        if status == 429:  # an injected 429 says the window is spent, as a real one would
            return Response(429, {"message": "Rate Limited"}, self._windows.headers(time.time(), self.rate_limit))
        return Response(status, {"message": HTTPStatus(status).phrase}, self._windows.headers(time.time()))

    def _handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return Response(401, {"message": "Invalid API key"})
        windows = self._export_windows if request.path == "/users/export/ids" else self._windows
        allowed, rate_headers = windows.hit(time.time())
        if not allowed:
            return Response(429, {"message": "Rate Limited"}, rate_headers)
        route = {
            "/users/track": self._track,
            "/users/delete": self._delete,
            "/users/export/ids": self._export_ids,
            "/subscription/status/set": self._subscription_v1,
            "/v2/subscription/status/set": self._subscription_v2,
        }.get(request.path)
        if route is None or request.method != "POST":
            response = Response(404, {"message": "Not Found"})
        elif not isinstance(request.body, dict):
            response = Response(400, {"message": "Bad Request"})
        else:
            response = route(request)
        response.headers.update(rate_headers)
        return response

    # /users/track

    def _track(self, request: Request) -> Response:
        arrays = {name: request.body[name] for name in TRACK_ARRAYS if name in request.body}
        if not all(isinstance(objects, list) for objects in arrays.values()):
            return Response(400, {"message": "Bad Request"})
        if any(len(objects) > self.max_objects for objects in arrays.values()) or (
            self.max_objects_total is not None and sum(map(len, arrays.values())) > self.max_objects_total
        ):
            return Response(400, {"message": "Max Input Length Exceeded"})
        if not any(arrays.values()):
            return Response(400, {"message": NO_VALID_DATA})
        body: dict[str, Any] = {"message": "success"}
        errors = []
        for name, objects in arrays.items():
            processed = 0
            for index, obj in enumerate(objects):
                problem = self._track_object(request, name, obj)
                if problem is None:
                    processed += 1
                else:
                    errors.append({"type": problem, "input_array": name, "index": index})
            body[f"{name}_processed"] = processed
        if errors:
            body["errors"] = errors
            if len(errors) == sum(len(objects) for objects in arrays.values()):
                return Response(400, {"message": NO_VALID_DATA, "errors": errors})
        return Response(201, body)

    def _track_object(self, request: Request, array: str, obj: Any) -> str | None:
        """Apply one attributes/events/purchases object; return its minor error, if any."""
        if not isinstance(obj, dict):
            return "object expected"
        identifier = _identifier(obj)
        if isinstance(identifier, str):
            return identifier
        field, value = identifier
        problem = {"events": _event_problem, "purchases": _purchase_problem}.get(array, lambda _: None)(obj)
        if problem:
            return problem
        if self.faults.is_invalid(request.path, value["alias_name"] if field == "user_alias" else value):
            return f"provided {field} is blacklisted and disallowed"
        user = self._locate(field, value)
        if user is None:
            if obj.get("_update_existing_only", field in UPDATE_ONLY_BY_DEFAULT):
                return None
            user = _key(field, value)
            self.users[user] = {field: value}
        if array == "attributes":
            self._set_attributes(user, field, obj)
        else:
            getattr(self, array).append({"user": user, **obj})
        self._updated[user] = next(self._sequence)
        return None

    def _set_attributes(self, user: str, identifier_field: str, obj: dict[str, Any]) -> None:
        profile = self.users[user]
        for name, value in obj.items():
            # "_"-prefixed keys are flags such as _update_existing_only, not attributes
            if name.startswith("_") or name in PRIMARY_IDENTIFIERS or name == identifier_field:
                continue
            self.data_points.append(DataPoint(user, name, value))
            if value is None:
                profile.pop(name, None)
            elif isinstance(value, dict) and value.keys() == {"inc"}:
                profile[name] = profile.get(name, 0) + value["inc"]
            elif isinstance(value, dict) and value and value.keys() <= {"add", "remove"}:
                items = list(profile.get(name) or []) + list(value.get("add", []))
                profile[name] = [item for item in items if item not in value.get("remove", [])]
            else:
                profile[name] = value

    def _locate(self, field: str, value: Any) -> str | None:
        """The profile an identifier designates: by key, or for email/phone the one Braze would pick."""
        if field in PRIMARY_IDENTIFIERS:
            key = _key(field, value)
            return key if key in self.users else None
        # Several profiles may share an email or phone: prefer identified ones, then the most recently updated (doc).
        matches = [user for user, profile in self.users.items() if profile.get(field) == value]
        return max(
            matches, key=lambda user: ("external_id" in self.users[user], self._updated.get(user, -1)), default=None
        )

    # /users/delete

    def _delete(self, request: Request) -> Response:
        given = [id_type for id_type in DELETE_ID_TYPES if id_type in request.body]
        if len(given) != 1:
            return Response(400, {"message": f"Exactly one of {', '.join(DELETE_ID_TYPES)} must be provided"})
        id_type = given[0]
        ids = request.body[id_type]
        if not isinstance(ids, list):
            return Response(400, {"message": f"'{id_type}' must be an array"})
        if len(ids) > MAX_IDS:
            return Response(400, {"message": TOO_MANY_IDS})
        resolved = [self._delete_target(id_type, entry) for entry in ids]
        problems = [result for result in resolved if isinstance(result, Response)]
        if problems:
            return problems[0]
        users = {user for user in resolved if user is not None}
        for user in users:
            del self.users[user]
            self.deleted.append(user)
        return Response(201, {"message": "success", "deleted": len(users)})

    def _delete_target(self, id_type: str, entry: Any) -> str | Response | None:
        """The user one delete entry designates, None if none, or a 400 for a malformed entry."""
        if id_type in ("external_ids", "braze_ids"):
            field = "external_id" if id_type == "external_ids" else "braze_id"
            return (
                self._locate(field, entry) if isinstance(entry, str) else Response(400, {"message": f"Invalid {field}"})
            )
        if id_type == "user_aliases":
            problem = _alias_problem(entry)
            return Response(400, {"message": problem}) if problem else self._locate("user_alias", entry)
        field = "email" if id_type == "email_addresses" else "phone"
        if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
            return Response(400, {"message": f"Each of '{id_type}' needs '{field}'"})
        prioritization = entry.get("prioritization")
        if (
            not prioritization
            or not isinstance(prioritization, list)
            or not set(prioritization) <= set(PRIORITIZATIONS)
        ):
            return Response(
                400, {"message": f"'prioritization' must be a non-empty array of {', '.join(PRIORITIZATIONS)}"}
            )
        candidates = [user for user, profile in self.users.items() if profile.get(field) == entry[field]]
        for rule in prioritization:
            if len(candidates) <= 1:
                break
            if rule == "most_recently_updated":
                candidates = [max(candidates, key=lambda user: self._updated.get(user, -1))]
            else:
                preferred = [
                    user for user in candidates if ("external_id" in self.users[user]) == (rule == "identified")
                ]
                candidates = preferred or candidates
        # still ambiguous after prioritization: Braze deletes nothing (doc)
        return candidates[0] if len(candidates) == 1 else None

    # /users/export/ids: reads profiles; not data points

    def _export_ids(self, request: Request) -> Response:
        body = request.body
        fields = body.get("fields_to_export")
        if not isinstance(fields, list) or not fields or not all(isinstance(name, str) for name in fields):
            return Response(400, {"message": "'fields_to_export' must be a non-empty array of field names"})
        external_ids, aliases = body.get("external_ids") or [], body.get("user_aliases") or []
        singles = [name for name in EXPORT_SINGLE_IDS if body.get(name) is not None]
        if not isinstance(external_ids, list) or not isinstance(aliases, list):
            return Response(400, {"message": "'external_ids' and 'user_aliases' must be arrays"})
        if len(external_ids) + len(aliases) > MAX_IDS:
            return Response(400, {"message": TOO_MANY_EXPORT_IDS})
        if len(singles) + bool(external_ids or aliases) != 1:
            return Response(400, {"message": EXPORT_IDENTIFIER_NEEDED})
        users: list[str] = []
        invalid: list[str] = []
        for external_id in external_ids:
            if not isinstance(external_id, str):
                return Response(400, {"message": "Invalid external_id"})
            user = self._locate("external_id", external_id)
            if user is None:
                invalid.append(external_id)
            else:
                users.append(user)
        for alias in aliases:
            problem = _alias_problem(alias)
            if problem:
                return Response(400, {"message": problem})
            user = self._locate("user_alias", alias)
            if user is not None:
                users.append(user)
        for name in singles:
            # Several profiles may share an email or phone: each is exported. No profile has a device here.
            field = "email" if name == "email_address" else name
            users += [user for user, profile in self.users.items() if profile.get(field) == body[name]]
        exported = [self._exported(user, fields) for user in dict.fromkeys(users)]
        return Response(200, {"message": "success", "users": exported, "invalid_user_ids": invalid})

    def _exported(self, user: str, fields: list[str]) -> dict[str, Any]:
        """One profile as /users/export/ids shows it: the asked-for fields it has, custom attributes nested."""
        profile = copy.deepcopy(self.users[user])
        out: dict[str, Any] = {}
        for name in fields:
            if name == "custom_attributes":
                custom = {k: v for k, v in profile.items() if k not in EXPORT_STANDARD_FIELDS | NOT_CUSTOM_ATTRIBUTES}
                if custom:
                    out[name] = custom
            elif name == "user_aliases":
                if "user_alias" in profile:
                    out[name] = [profile["user_alias"]]
            elif name in EXPORT_STANDARD_FIELDS and name in profile:
                out[name] = profile[name]
        return out

    # subscription groups

    def _subscription_v1(self, request: Request) -> Response:
        return self._set_subscriptions([request.body], ("external_id", "email", "phone"))

    def _subscription_v2(self, request: Request) -> Response:
        groups = request.body.get("subscription_groups")
        if not isinstance(groups, list) or not groups:
            return Response(400, {"message": "'subscription_groups' must be a non-empty array"})
        return self._set_subscriptions(groups, ("external_ids", "emails", "phones"))

    def _set_subscriptions(self, groups: list[Any], id_fields: tuple[str, str, str]) -> Response:
        changes = []
        for group in groups:
            if not isinstance(group, dict):
                return Response(400, {"message": "Bad Request"})
            group_id, state = group.get("subscription_group_id"), group.get("subscription_state")
            if not isinstance(group_id, str) or not group_id:
                return Response(400, {"message": "'subscription_group_id' is required"})
            if state not in SUBSCRIPTION_STATES:
                return Response(400, {"message": "'subscription_state' must be 'subscribed' or 'unsubscribed'"})
            external_ids, emails, phones = (_as_list(group.get(name)) for name in id_fields)
            if emails and phones:
                return Response(400, {"message": EMAIL_AND_PHONE})
            if not (external_ids or emails or phones):
                return Response(400, {"message": f"One of {', '.join(id_fields)} is required"})
            if max(len(external_ids), len(emails), len(phones)) > MAX_IDS:
                return Response(400, {"message": TOO_MANY_IDS})
            changes += [((group_id, identifier), state) for identifier in external_ids + emails + phones]
        self.subscriptions.update(changes)
        return Response(201, {"message": "success"})


def _identifier(obj: dict[str, Any]) -> tuple[str, Any] | str:
    """The (field, value) identifying a /users/track object, or its minor error."""
    primary = [field for field in PRIMARY_IDENTIFIERS if obj.get(field) is not None]
    if len(primary) > 1:
        return "only one of 'external_id', 'user_alias' or 'braze_id' may be provided"
    # email and phone identify only when no primary identifier does; otherwise they are attributes. Email wins (doc).
    field = next(
        iter(primary), "email" if obj.get("email") is not None else "phone" if obj.get("phone") is not None else None
    )
    if field is None:
        return MISSING_IDENTIFIER
    value = obj[field]
    if field == "user_alias":
        return _alias_problem(value) or (field, value)
    if not isinstance(value, str) or not value:
        return f"'{field}' must be a non-empty string"
    return field, value


def _alias_problem(alias: Any) -> str | None:
    if isinstance(alias, dict) and all(
        isinstance(alias.get(part), str) and alias[part] for part in ("alias_name", "alias_label")
    ):
        return None
    return "'user_alias' needs 'alias_name' and 'alias_label'"


def _key(field: str, value: Any) -> str:
    """The key of `users` for an identifier."""
    if field == "external_id":
        return value
    if field == "user_alias":
        return f"alias:{value['alias_name']}:{value['alias_label']}"
    return f"{field.removesuffix('_id')}:{value}"  # braze:<id>, email:<e>, phone:<p>


def _event_problem(obj: dict[str, Any]) -> str | None:
    if not isinstance(obj.get("name"), str) or not obj["name"]:
        return "'name' is required"
    return _time_problem(obj)


def _purchase_problem(obj: dict[str, Any]) -> str | None:
    for required in ("product_id", "currency", "price", "time"):
        if obj.get(required) is None:
            return f"'{required}' is required"
    if not isinstance(obj["price"], int | float) or isinstance(obj["price"], bool):
        return "'price' must be a number"
    currency = obj["currency"]
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        return "'currency' must be an ISO-4217 code"
    quantity = obj.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
        return "'quantity' must be an integer from 1 to 100"
    return _time_problem(obj)


def _time_problem(obj: dict[str, Any]) -> str | None:
    if obj.get("time") is None:
        return "'time' is required"
    try:
        datetime.fromisoformat(obj["time"])
    except (TypeError, ValueError):
        return "'time' must be an ISO-8601 time"
    return None


def _as_list(value: Any) -> list[Any]:
    """Braze v1 takes a single id or an array of ids."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
