"""Braze REST: profile attributes through /users/track; leavers cleared, unsubscribed or deleted.

destinations.yaml:
    braze:
      type: braze
      rest_endpoint: {env: BRAZE_REST_ENDPOINT}   # e.g. https://rest.fra-01.braze.eu
      api_key: {env: BRAZE_API_KEY}               # needs users.track, users.export.ids
                                                  # (+ users.delete / subscription.status.set)

Events (streams/*.yaml) go through /users/track too, as `events` or, with `options.purchase`, as `purchases`:
at most `event_batch_size` (75) objects per request, on the same workspace budget as attributes. Braze does not
deduplicate events, so an event is never resent once it may have arrived: batches in flight when a stream run
was killed are recorded `in_doubt` instead (at most once). The event id travels as the property `event_id`
(option `id_property`), so anything reading Braze's event data can still tell events apart.

Stream sync options (`options:`):
    purchase: {product_id: col, price: col, currency: col, quantity: col}   send purchases (quantity optional)
    alias_label: crm                                                        (identifier user_alias)
    id_property: event_id                                                   property carrying the event id; null: none

Audience sync options (`options:`):
    on_remove: clear_attribute | unsubscribe | delete   (mirror mode; default clear_attribute)
    membership_attribute: in_vip                          (true on members, cleared from leavers; default in_<audience>)
    subscription_group_id: "..."                          (unsubscribe: subscribed on add, unsubscribed on removal)
    alias_label: crm                                      (identifier user_alias: the alias label)

Membership must show at Braze, not only in our ledger. With on_remove: clear_attribute (the default) a
mirror's members carry the membership attribute, `in_<audience>: true` unless `membership_attribute` names
another, and a leaver's is set to null (Braze removes it): segment on it. The attribute is one of the sync's
fields (`membership_fields`): it enters every row's hash and the ledger like a mapped field. So an add sends
it, an update sends it only if the ledger lacks it, and a sync that gains it (an install that synced members
before it existed, a new membership_attribute, upsert turned mirror) changes every member's hash once: the
next delta updates each member with just that attribute, one data point each, and nothing after. Given
explicitly, membership_attribute is carried in upsert mode too, and with on_remove: delete (a leaver's whole
profile goes). Refused when the project loads, because leavers would still look like members:
membership_attribute with on_remove: unsubscribe (it would stay true on leavers), and unsubscribe by
user_alias (Braze sets subscription states by external_id, email or phone only).

Only changed attributes are sent for an update (Braze bills per data point). Minor errors come back by
index and reject just that row; a fatal 400 rejects the rows of that request.

After a killed sync, rows that were in flight are looked up with /users/export/ids (50 per request, its own
rate budget) and not sent again when the profile already shows them: every attribute we would send has that
value, the membership attribute among them (it is under custom_attributes; a removal: the membership
attribute is gone, or the user is, for delete). Rows identified by email or phone, unsubscriptions and
subscription-group adds are not looked up (the export takes one address per request and shows no
subscription-group state) and are sent again, as is a row whose value Braze stores in another form (a date,
a normalized phone): confirmation errs towards sending.

Deletion requests (governance/deletion.py) go to POST /users/delete (`forget`): 50 ids a request, one identifier type
a request, e-mail and phone with a prioritization, on the delete budget. Braze answers a count, not which ids it found.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from sqlglot import exp

from ..project import SecretRef, resolve_setting
from ..warehouse.sql import DIALECT
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
    PreparedBatch,
    Record,
    Session,
    Target,
    iso_time,
)
from .changes import changed_fields
from .http import ApiSettings, HttpClient, Limit, RateBudget, Steps, Transfers, account_key, budgets

TRACK_MAX_OBJECTS = 75  # per array in one /users/track request
IDS_PER_REQUEST = 50  # /users/delete, /subscription/status/set and /users/export/ids
# Profile fields /users/export/ids returns at the top level; every other attribute comes under custom_attributes.
STANDARD_ATTRIBUTES = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "phone",
        "country",
        "language",
        "dob",
        "gender",
        "home_city",
        "time_zone",
        "email_subscribe",
        "push_subscribe",
    }
)
# Keys of an attributes object that name the profile or steer Braze rather than set an attribute.
NOT_ATTRIBUTES = frozenset({"external_id", "user_alias", "braze_id", "_update_existing_only"})


class BrazeSettings(ApiSettings):
    rest_endpoint: str | SecretRef
    api_key: SecretRef
    batch_size: int = Field(default=TRACK_MAX_OBJECTS, ge=1, le=TRACK_MAX_OBJECTS)
    # Events or purchases per /users/track request (50 on "Monthly Active Users CY 24-25" plans).
    event_batch_size: int = Field(default=TRACK_MAX_OBJECTS, ge=1, le=TRACK_MAX_OBJECTS)
    concurrency: int = Field(default=8, ge=1, le=64)
    # Per workspace, as documented: 3,000 requests per 3 s on /users/track; 20,000/min delete; 5,000/min subscriptions.
    track_limit: Limit = Limit(3000, 3.0)
    delete_limit: Limit = Limit(20000, 60.0)
    subscription_limit: Limit = Limit(5000, 60.0)
    # /users/export/ids, used only after a killed sync: 250/min for workspaces onboarded since 2024-08-22.
    export_limit: Limit = Limit(250, 60.0)


class BrazeSyncOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_remove: Literal["clear_attribute", "unsubscribe", "delete"] = "clear_attribute"
    membership_attribute: str | None = Field(default=None, min_length=1)
    subscription_group_id: str | None = None
    alias_label: str | None = None

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> BrazeSyncOptions:
        if self.on_remove == "unsubscribe" and not self.subscription_group_id:
            raise ValueError("on_remove: unsubscribe needs subscription_group_id")
        sync = info.context or {}  # the sync's mode and identifier type, when the project loads
        if sync.get("mode") == "mirror" and self.on_remove == "unsubscribe":
            # Leavers must stop looking like members at Braze.
            if sync.get("identifier_type") == "user_alias":
                raise ValueError(
                    "on_remove: unsubscribe cannot remove people identified by user_alias (Braze sets subscription "
                    "states by external_id, email or phone); use clear_attribute or delete"
                )
            if self.membership_attribute:
                raise ValueError(
                    f"membership_attribute {self.membership_attribute} would stay true on leavers: on_remove: "
                    "unsubscribe does not clear it; use on_remove: clear_attribute, or drop membership_attribute"
                )
        return self


def membership_attribute(options: BrazeSyncOptions, audience: str, mode: str) -> str | None:
    """The attribute members carry (true) and leavers lose (cleared); None when membership shows otherwise."""
    if options.membership_attribute:
        return options.membership_attribute
    if mode == "mirror" and options.on_remove == "clear_attribute":
        return f"in_{audience}"
    return None


class BrazePurchaseColumns(BaseModel):
    """Which table columns make a Braze purchase object."""

    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1)
    price: str = Field(min_length=1)
    currency: str = Field(min_length=1)
    quantity: str | None = None


class BrazeEventOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purchase: BrazePurchaseColumns | None = None
    alias_label: str | None = None
    id_property: str | None = "event_id"

    def columns(self) -> dict[str, str]:
        """Option name -> table column, for the purchase fields."""
        if self.purchase is None:
            return {}
        return {f"purchase.{name}": column for name, column in self.purchase.model_dump().items() if column}


class Braze(Destination):
    type_name = "braze"
    kind = "braze"
    Settings = BrazeSettings
    SyncOptions = BrazeSyncOptions
    EventOptions = BrazeEventOptions
    identifier_types = ("external_id", "user_alias", "email", "phone")

    @property
    def capabilities(self) -> Capabilities:
        config = self.config
        track = config.track_limit
        return Capabilities.of(
            Limits(config.batch_size, track.requests, track.window_seconds),
            # Events share /users/track and its workspace budget with attributes.
            events=Limits(config.event_batch_size, track.requests, track.window_seconds),
            concurrency=config.concurrency,
            idempotent_events=False,  # Braze keeps every event it receives: a resend is a duplicate
            forget_batch_size=IDS_PER_REQUEST,
        )

    def _connect(self) -> tuple[HttpClient, dict[str, RateBudget]]:
        config = self.config
        endpoint = resolve_setting(config.rest_endpoint)
        api_key = config.api_key.resolve()
        client = config.client(
            endpoint, {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}, (api_key,)
        )
        account = account_key(endpoint, api_key)
        rate_budgets = budgets(
            self.coordination,
            f"braze:{account}",
            {
                "track": config.track_limit,
                "delete": config.delete_limit,
                "subscription": config.subscription_limit,
                "export": config.export_limit,
            },
        )
        return client, rate_budgets

    def open(self, target: Target) -> Session:
        if target.events:
            return BrazeEventSession(*self._connect(), target)
        return BrazeSession(*self._connect(), target)

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        """POST /users/delete (50 ids, one identifier type a request), on the workspace's delete budget.

        Braze answers a count, not which ids it found: 0 means none was there (not_found); otherwise every id is
        recorded deleted, with the count in the response. The deletion itself is asynchronous at Braze.
        """
        client, rate_budgets = self._connect()
        try:
            label = getattr(target.options, "alias_label", None) or target.source
            body = users_delete_body(target.identifier_type, list(identifiers), label)
            response = client.request("POST", "/users/delete", json=body, budget=rate_budgets["delete"])
            answer = client.answer(response)
            if response.status_code >= 400:
                status = FAILED
            else:
                status = NOT_FOUND if _json(response).get("deleted") == 0 else DELETED
            return [Forgotten(identifier, status, answer) for identifier in identifiers]
        finally:
            client.close()
            for budget in rate_budgets.values():
                budget.close()

    def payloads(self, batch: Sequence[Record], target: Target) -> list[dict[str, Any]]:
        options = cast(BrazeSyncOptions, target.options)  # validated with SyncOptions when the project loads
        out: list[dict[str, Any]] = []
        for record in batch:
            if record.operation == "upsert":
                out.append({"endpoint": "/users/track", "attributes": [attribute_object(record, target, options)]})
            elif options.on_remove == "clear_attribute":
                out.append({"endpoint": "/users/track", "attributes": [removal_object(record, target, options)]})
            else:
                out.append(
                    {"endpoint": _removal_endpoint(options), "identifier": {target.identifier_type: record.identifier}}
                )
        return out

    @classmethod
    def membership_fields(cls, options: BaseModel, audience: str, mode: str, identifier_type: str) -> dict[str, Any]:
        name = membership_attribute(
            cast(BrazeSyncOptions, options), audience, mode
        )  # validated with SyncOptions when the project loads
        return {name: True} if name else {}


def identifier_object(record: Record, target: Target, options: BrazeSyncOptions) -> dict[str, Any]:
    """How Braze finds the profile: exactly one identifier per object."""
    if target.identifier_type == "user_alias":
        # Alias-only profiles are update-only by default; a new member must be created.
        return {
            "user_alias": {"alias_name": record.identifier, "alias_label": options.alias_label or target.audience},
            "_update_existing_only": False,
        }
    return {target.identifier_type: record.identifier}


def attribute_object(record: Record, target: Target, options: BrazeSyncOptions) -> dict[str, Any]:
    """A member's attributes object: what changed, the membership attribute included (it is one of the fields)."""
    obj = identifier_object(record, target, options)
    obj.update(changed_fields(record))
    if record.change == "add":
        # An add computed before the attribute was among the fields (a delta left from an earlier release).
        if membership := membership_attribute(options, target.audience, target.mode):
            obj.setdefault(membership, True)
        if options.subscription_group_id:
            obj["subscription_groups"] = [
                {"subscription_group_id": options.subscription_group_id, "subscription_state": "subscribed"}
            ]
    return obj


def removal_object(record: Record, target: Target, options: BrazeSyncOptions) -> dict[str, Any]:
    """A leaver under clear_attribute: the membership attribute set to null (Braze removes it)."""
    obj = identifier_object(record, target, options)
    name = membership_attribute(options, target.audience, "mirror")
    assert name is not None  # a mirror under clear_attribute always names the attribute
    obj[name] = None  # only a mirror removes
    return obj


def users_delete_body(kind: str, ids: list[str], alias_label: str) -> dict[str, Any]:
    """The body of POST /users/delete for ids of one identifier type (Braze takes one type a request)."""
    if kind == "external_id":
        return {"external_ids": ids}
    if kind == "user_alias":
        return {"user_aliases": [{"alias_name": i, "alias_label": alias_label} for i in ids]}
    # email or phone: Braze needs a prioritization to pick one profile
    key, field = ("email_addresses", "email") if kind == "email" else ("phone_numbers", "phone")
    return {key: [{field: i, "prioritization": ["identified", "most_recently_updated"]} for i in ids]}


def _removal_endpoint(options: BrazeSyncOptions) -> str:
    return "/users/delete" if options.on_remove == "delete" else "/subscription/status/set"


class AttributeText:
    """A member's attributes object as JSON text, spliced from the fields' JSON text the warehouse wrote.

    The same object `attribute_object` builds, without parsing the fields and encoding them again: for an add,
    the identifier object's members, then the fields as they are. Only where that is certainly the same object;
    otherwise `text` answers None and the caller builds the dict:
    - an update (only changed fields are sent: the fields must be compared with the previous ones);
    - a null anywhere in the text (an add leaves nulls out), or NaN/Infinity (not JSON);
    - a field named like a member of the identifier object (the field would replace the identifier);
    - a membership attribute the text does not end with as `true` (an add must carry it);
    - a subscription group to join (an add carries it).
    """

    def __init__(self, target: Target, options: BrazeSyncOptions):
        self.alias = target.identifier_type == "user_alias"
        if self.alias:
            label = _encode(options.alias_label or target.audience)
            self.head, self.tail = (
                '{"user_alias":{"alias_name":',
                f',"alias_label":{label}}},"_update_existing_only":false',
            )
            names: tuple[str, ...] = ("user_alias", "_update_existing_only")
        else:
            self.head, self.tail = "{" + _encode(target.identifier_type) + ":", ""
            names = (target.identifier_type,)
        self.refused = ("null", "NaN", "Infinity", *(_encode(name) for name in names))
        membership = membership_attribute(options, target.audience, target.mode)
        self.ending = f"{_encode(membership)}:true}}" if membership else None
        self.usable = not options.subscription_group_id

    def sql(self, change: str, identifier: str, fields: str) -> str | None:
        """The same object as `text`, written by the warehouse (DuckDB dialect): NULL where `text` answers None."""
        if not self.usable:
            return None
        # LIKE's `_` matches any character, so a refused name matches more texts than it names: those rows are only
        # built in Python, as `text` would have them.
        refused = " OR ".join(f"{fields} LIKE {_literal('%' + word + '%')}" for word in self.refused)
        conditions = [f"{change} = 'add'", f"{fields} LIKE '{{%}}'", f"NOT ({refused})"]
        if self.ending is not None:
            conditions.append(f"right({fields}, {len(self.ending)}) = {_literal(self.ending)}")
        head = f"{_literal(self.head)} || to_json({identifier}) || {_literal(self.tail)}"
        # Nothing but whitespace between the braces, as `text` strips it: one anchored match, not a trimmed copy
        # of every row's fields (that copy was half the CPU of writing the objects).
        empty = f"regexp_matches({fields}, '^\\{{\\s*\\}}$')"
        spliced = f"CASE WHEN {empty} THEN {head} || '}}' ELSE {head} || ',' || substr({fields}, 2) END"
        return f"CASE WHEN {' AND '.join(conditions)} THEN {spliced} END"

    def texts(self, records: Sequence[Record]) -> list[str | None]:
        """The spliced object of each record, None where it must be built as a dict."""
        # One search over the whole batch's text for what rules splicing out; per row only if it finds something.
        together = "".join([r.fields_text or "" for r in records])
        checked = not any(word in together for word in self.refused)
        return [self.text(r, checked) for r in records]

    def text(self, record: Record, checked: bool = False) -> str | None:
        fields = record.fields_text
        if not self.usable or record.change != "add" or fields is None:
            return None
        if fields[:1] != "{" or fields[-1:] != "}" or (not checked and any(word in fields for word in self.refused)):
            return None
        if self.ending is not None and not fields.endswith(self.ending):
            return None
        try:
            head = self.head + _encode(record.identifier) + self.tail
        except TypeError:  # not text: json.dumps writes it as it must be
            return None
        inner = fields[1:-1]
        return f"{head},{inner}}}" if inner.strip() else head + "}"


#: A JSON string, as json.dumps writes it (ASCII only); TypeError for anything but text.
_encode = encode_basestring_ascii


def _literal(text: str) -> str:
    """A SQL string literal (DuckDB dialect, as the rest of our SQL)."""
    return exp.Literal.string(text).sql(DIALECT)


class BrazeSession(Session[Record]):
    def __init__(self, client: HttpClient, budgets: dict[str, RateBudget], target: Target):
        self.client = client
        self.budgets = budgets
        self.target = target
        self.options = cast(BrazeSyncOptions, target.options)  # validated with SyncOptions when the project loads
        self.spliced = AttributeText(target, self.options)

    def object_sql(self, change: str, identifier: str, fields: str) -> str | None:
        return self.spliced.sql(change, identifier, fields)

    def send(self, batch: Sequence[Record]) -> BatchResult:
        return self.client.drive(self._steps(batch))

    def concurrent(self, concurrency: int) -> Transfers[BatchResult]:
        return self.client.transfers(concurrency, self._steps)

    def _steps(self, batch: Sequence[Record]) -> Steps[BatchResult]:
        """One batch's requests as steps, run by `send` (in its thread) or by `concurrent` (many batches at once)."""
        result = BatchResult()
        if isinstance(batch, PreparedBatch):  # adds whose objects the warehouse wrote: sent as they are
            yield from self._post_track(batch.objects, batch.seqs, result)
            return result
        # Upserts and attribute-clearing removals share /users/track; other removals go to their endpoint.
        if self.options.on_remove == "clear_attribute":
            tracked, others = list(batch), []
        else:
            tracked = [r for r in batch if r.change != "remove"]
            others = [r for r in batch if r.change == "remove"] if len(tracked) < len(batch) else []
        if tracked:
            yield from self._track(tracked, result)
        for i in range(0, len(others), IDS_PER_REQUEST):
            chunk = others[i : i + IDS_PER_REQUEST]
            if self.options.on_remove == "delete":
                yield from self._delete(chunk, result)
            else:
                yield from self._unsubscribe(chunk, result)
        return result

    def _track(self, records: list[Record], result: BatchResult) -> Steps[None]:
        # Each object as JSON text: spliced from the fields' text where that gives the same object, else encoded.
        objects = []
        for r, text in zip(records, self.spliced.texts(records)):
            if text is None:
                obj = (
                    attribute_object(r, self.target, self.options)
                    if r.operation == "upsert"
                    else removal_object(r, self.target, self.options)
                )
                text = json.dumps(obj, separators=(",", ":"))
            objects.append(text)
        yield from self._post_track(objects, [r.seq for r in records], result)

    def _post_track(self, objects: list[str], seqs: list[int], result: BatchResult) -> Steps[None]:
        """One /users/track request of these attribute objects (JSON text each), answered per object by seq."""
        request = '{"attributes":[' + ",".join(objects) + "]}"
        response = yield from self.client.exchange(
            "POST", "/users/track", data=request.encode(), budget=self.budgets["track"]
        )
        body = _json(response)
        if response.status_code >= 400:
            reason = f"HTTP {response.status_code}: {self.client.redact(str(body.get('message', response.text[:200])))}"
            result.rejected.update(dict.fromkeys(seqs, reason))
            return
        minor = {
            e.get("index"): str(e.get("type", "rejected"))
            for e in body.get("errors", []) or []
            if e.get("input_array") == "attributes"
        }
        if not minor:  # the usual answer: every object taken
            result.acknowledged += seqs
        for index, seq in enumerate(seqs if minor else ()):
            if index in minor:
                result.rejected[seq] = minor[index]
            else:
                result.acknowledged.append(seq)
        result.payloads.extend(objects)

    def _delete(self, records: list[Record], result: BatchResult) -> Steps[None]:
        label = self.options.alias_label or self.target.audience
        body = users_delete_body(self.target.identifier_type, [r.identifier for r in records], label)
        yield from self._ids_request("/users/delete", body, records, result, self.budgets["delete"])

    def _unsubscribe(self, records: list[Record], result: BatchResult) -> Steps[None]:
        kind = self.target.identifier_type
        if kind not in ("external_id", "email", "phone"):
            result.rejected.update({r.seq: f"cannot unsubscribe by {kind}" for r in records})
            return
        body = {
            "subscription_group_id": self.options.subscription_group_id,
            "subscription_state": "unsubscribed",
            kind: [r.identifier for r in records],
        }
        yield from self._ids_request("/subscription/status/set", body, records, result, self.budgets["subscription"])

    def _ids_request(
        self, path: str, body: dict, records: list[Record], result: BatchResult, budget: RateBudget
    ) -> Steps[None]:
        response = yield from self.client.exchange("POST", path, json=body, budget=budget)
        if response.status_code >= 400:
            message = self.client.redact(str(_json(response).get("message", response.text[:200])))
            result.rejected.update({r.seq: f"HTTP {response.status_code}: {message}" for r in records})
            return
        result.acknowledged.extend(r.seq for r in records)
        result.payloads.append({"endpoint": path, **body})

    def confirm(self, records: Sequence[Record]) -> list[int]:
        """Seqs of the records whose profiles already show them applied, looked up 50 at a time."""
        if self.target.identifier_type not in ("external_id", "user_alias"):
            return []  # by email or phone the export takes one address per request, and may find several profiles
        expected = {r.seq: attributes for r in records if (attributes := self._expected(r)) is not None}
        askable = [r for r in records if r.seq in expected]
        confirmed: list[int] = []
        for i in range(0, len(askable), IDS_PER_REQUEST):
            chunk = askable[i : i + IDS_PER_REQUEST]
            standard = set().union(*(expected[r.seq] for r in chunk)) & STANDARD_ATTRIBUTES
            try:
                profiles = self._export(chunk, sorted(standard))
            except DestinationError:  # the lookup is refused or down: whatever is unconfirmed is simply sent again
                break
            if profiles is not None:
                confirmed += [r.seq for r in chunk if self._applied(r, expected[r.seq], profiles.get(r.identifier))]
        return confirmed

    def _expected(self, record: Record) -> dict[str, Any] | None:
        """The attributes `record` sets on its profile ({} for a deletion); None when the export cannot show them."""
        if record.operation == "upsert":
            obj = attribute_object(record, self.target, self.options)
        elif self.options.on_remove == "clear_attribute":
            obj = removal_object(record, self.target, self.options)
        else:
            return {} if self.options.on_remove == "delete" else None
        attributes = {name: value for name, value in obj.items() if name not in NOT_ATTRIBUTES}
        return None if "subscription_groups" in attributes else attributes

    def _applied(self, record: Record, attributes: dict[str, Any], profile: dict[str, Any] | None) -> bool:
        """Whether an exported profile (None: no such user) already holds `attributes` as `record` sets them."""
        if record.operation == "remove" and self.options.on_remove == "delete":
            return profile is None
        if profile is None:
            # A cleared attribute is as absent from a missing profile; an applied upsert would have created it.
            return record.operation == "remove"
        custom = profile.get("custom_attributes") or {}
        return all(
            _same_json(value, (profile if name in STANDARD_ATTRIBUTES else custom).get(name))
            for name, value in attributes.items()
        )

    def _export(self, records: list[Record], standard: list[str]) -> dict[str, dict[str, Any]] | None:
        """Exported profiles by our identifier (absent: no such user); None when Braze refused the lookup."""
        label = self.options.alias_label or self.target.audience
        if self.target.identifier_type == "user_alias":
            aliases = [{"alias_name": r.identifier, "alias_label": label} for r in records]
            body: dict[str, Any] = {"user_aliases": aliases, "fields_to_export": ["user_aliases"]}
        else:
            body = {"external_ids": [r.identifier for r in records], "fields_to_export": ["external_id"]}
        body["fields_to_export"] += ["custom_attributes", *standard]
        response = self.client.request("POST", "/users/export/ids", json=body, budget=self.budgets["export"])
        if response.status_code >= 400:
            return None
        profiles: dict[str, dict[str, Any]] = {}
        for user in _json(response).get("users") or []:
            if self.target.identifier_type == "user_alias":
                names = [a.get("alias_name") for a in user.get("user_aliases") or [] if a.get("alias_label") == label]
            else:
                names = [user.get("external_id")]
            profiles.update((name, user) for name in names if name is not None)
        return profiles

    def stats(self) -> dict[str, float]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()
        for budget in self.budgets.values():
            budget.close()


class BrazeEventSession(Session[Event]):
    """Events or purchases through /users/track; minor errors come back by index and reject that event only."""

    def __init__(self, client: HttpClient, budgets: dict[str, RateBudget], target: Target):
        self.client = client
        self.budgets = budgets
        self.target = target
        self.options = cast(BrazeEventOptions, target.options)  # validated with EventOptions when the project loads
        self.array = "purchases" if self.options.purchase is not None else "events"

    def send(self, batch: Sequence[Event]) -> BatchResult:
        objects = [event_object(e, self.target, self.options) for e in batch]
        # Braze keeps every event it receives: a request that may have arrived is not sent again (OutcomeUnknown).
        response = self.client.request(
            "POST",
            "/users/track",
            json={self.array: objects},
            budget=self.budgets["track"],
            retry_unknown_outcome=False,
        )
        body = _json(response)
        errors = {
            e.get("index"): str(e.get("type", "rejected"))
            for e in body.get("errors", []) or []
            if isinstance(e, dict) and e.get("input_array") == self.array
        }
        result = BatchResult(payloads=objects)
        if response.status_code >= 400:
            # A fatal error names each object's problem when it has one ("Valid data must be provided ...").
            reason = f"HTTP {response.status_code}: {self.client.redact(str(body.get('message', response.text[:200])))}"
            result.rejected.update({e.seq: errors.get(i, reason) for i, e in enumerate(batch)})
            return result
        for index, event in enumerate(batch):
            if index in errors:
                result.rejected[event.seq] = errors[index]
            else:
                result.acknowledged.append(event.seq)
        return result

    def stats(self) -> dict[str, float]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()
        for budget in self.budgets.values():
            budget.close()


def event_object(event: Event, target: Target, options: BrazeEventOptions) -> dict[str, Any]:
    """One Braze event object, or a purchase object when the stream sync sends purchases."""
    if target.identifier_type == "user_alias":
        obj: dict[str, Any] = {
            "user_alias": {"alias_name": event.identifier, "alias_label": options.alias_label or target.stream},
            "_update_existing_only": False,
        }
    else:
        obj = {target.identifier_type: event.identifier}
    # Braze stores no null property (and bills what it stores): leave nulls out.
    properties = {name: value for name, value in event.properties.items() if value is not None}
    if options.id_property:
        properties[options.id_property] = event.event_id
    if options.purchase is not None:
        extras = event.extras
        obj["product_id"] = None if extras.get("purchase.product_id") is None else str(extras["purchase.product_id"])
        obj["currency"] = None if extras.get("purchase.currency") is None else str(extras["purchase.currency"]).upper()
        obj["price"] = extras.get("purchase.price")
        if options.purchase.quantity and extras.get("purchase.quantity") is not None:
            obj["quantity"] = extras["purchase.quantity"]
    else:
        obj["name"] = event.name
    obj["time"] = iso_time(event.time)
    if properties:
        obj["properties"] = properties
    return obj


def _same_json(sent: Any, held: Any) -> bool:
    """Equal as JSON values: numbers by value (1 == 1.0), booleans never equal to numbers, null equal to absent."""
    if isinstance(sent, bool) or isinstance(held, bool):
        return sent is held
    if isinstance(sent, int | float) and isinstance(held, int | float):
        return sent == held
    if isinstance(sent, list) and isinstance(held, list):
        return len(sent) == len(held) and all(map(_same_json, sent, held))
    if isinstance(sent, dict) and isinstance(held, dict):
        return sent.keys() == held.keys() and all(_same_json(sent[k], held[k]) for k in sent)
    return sent == held


def _json(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
