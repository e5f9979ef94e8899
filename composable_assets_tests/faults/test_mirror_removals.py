"""A mirror's removal shows at the destination itself, with the default options, for every destination type.

Each test syncs a mirror with no `options:`, lets members leave (one is renamed meanwhile), syncs again, lets one
leaver come back, syncs again, and each time reads the destination's own state, not what was sent: no leaver may
look like a member there, and every member must. Braze and Iterable are their local fakes over real HTTP, the
webhook a receiver that applies what it receives, the outbox its files replayed, Braze CDI and MessageGears the
warehouse tables and view they publish.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from composable_assets.definitions import audience_selection, load_definitions
from composable_assets.warehouse.sql import json_object, row_hash
from composable_assets.destinations import DESTINATION_TYPES
from composable_assets.project import ProjectError, load_project
from composable_assets.runner import run_selection
from composable_assets.scaffold import create_project
from composable_assets.settings import Settings
from composable_assets_tests.fakes import BrazeFake, IterableFake

from ..test_destination_braze import API_KEY, braze_post, leave_intent, materialize, seqs
from ..test_destination_webhook import SECRET, Receiver

LIST_ID = 77
FIELDS = {"name": "name", "score": "score"}
MEMBERS = {str(i) for i in range(11, 21)}  # the fixture's people 1..20 score their id; members score over 10
LEAVERS = {"11", "12", "13"}

MIRROR = """\
model: people_model
primary_key: id
where: score > 10
syncs:
  - destination: {destination}
    mode: mirror
    identifier: {{{identifier}: {column}}}
    fields: {{name: name, score: score}}
"""


def people(left: set[str] = frozenset(), renamed: set[str] = frozenset()) -> list[tuple]:
    """The fixture's people, those in `left` scoring 1 (they leave), those in `renamed` with a new name."""
    return [
        (i, f"p{i}@example.com", f"renamed{i}" if str(i) in renamed else f"name{i}", 1 if str(i) in left else i)
        for i in range(1, 21)
    ]


def mirror(small, destination: str, entry: str, identifier: str = "external_id", column: str = "id") -> None:
    small.write("destinations.yaml", f"{destination}: {entry}\n")
    small.write("audiences/high.yaml", MIRROR.format(destination=destination, identifier=identifier, column=column))


def member_id(key: str, kind: str) -> str:
    """How the destination knows the person with this key: the key itself, or their e-mail address."""
    return key if kind == "external_id" else f"p{key}@example.com"


def sync_and_observe(small, looks_like_members: Callable[[], set[str]], kind: str = "external_id") -> None:
    """Sync three times (everyone; three leave and one is renamed; one comes back), checking the destination each time.

    `looks_like_members`: the identifiers the destination's own state shows as members.
    """
    for left, renamed in ((set(), set()), (LEAVERS, {"14"}), (LEAVERS - {"11"}, {"14"})):
        small.set_people(people(left, renamed))
        outcome = small.sync()
        assert outcome.success, outcome.errors
        assert outcome.syncs[0].count("failed") == 0
        shown = looks_like_members()
        assert shown == {member_id(k, kind) for k in MEMBERS - left}, f"after {sorted(left)} left"


# --- Braze REST -------------------------------------------------------------------------------------------------


@pytest.fixture
def braze_fake(monkeypatch):
    fake = BrazeFake(api_key=API_KEY).start()
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", fake.url)
    monkeypatch.setenv("BRAZE_API_KEY", API_KEY)
    yield fake
    fake.stop()


BRAZE = "{type: braze, rest_endpoint: {env: BRAZE_REST_ENDPOINT}, api_key: {env: BRAZE_API_KEY}, backoff_base_seconds: 0.02}"


def braze_members(fake: BrazeFake, attribute: str = "in_high") -> Callable[[], set[str]]:
    """Profiles whose membership attribute is true, by the identifier they were synced with; every leaver kept its
    profile (clear_attribute), so only the attribute can tell it from a member."""

    def shown() -> set[str]:
        found = set()
        for profile in fake.users.values():
            who = profile.get("external_id") or profile.get("email")
            if profile.get(attribute) is True:
                found.add(who)
            else:
                assert attribute not in profile, f"{who}: {attribute} = {profile[attribute]!r}"
        return found

    return shown


@pytest.mark.parametrize("kind, column", [("external_id", "id"), ("email", "email")])
def test_braze_members_carry_in_audience_and_leavers_lose_it(small, braze_fake, kind, column):
    mirror(small, "braze", BRAZE, kind, column)
    sync_and_observe(small, braze_members(braze_fake), kind)
    # Leavers keep their profiles and attributes: the cleared attribute is what tells them apart.
    assert braze_fake.users["12" if kind == "external_id" else "email:p12@example.com"]["name"] == "name12"


def test_updates_do_not_resend_the_membership_attribute(small, braze_fake):
    mirror(small, "braze", BRAZE)
    small.set_people(people())
    assert small.sync().success
    added = [p for p in braze_fake.data_points if p.attribute == "in_high"]
    assert sorted(p.user for p in added) == sorted(MEMBERS) and {p.value for p in added} == {True}
    before = len(braze_fake.data_points)
    small.set_people(people(renamed={"14"}))
    assert small.sync().success
    assert [(p.user, p.attribute, p.value) for p in braze_fake.data_points[before:]] == [("14", "name", "renamed14")]


def old_ledger(small, destination: str = "braze") -> None:
    """Make the pair's ledger what the release before the membership attribute wrote: the mapped fields alone in its
    row hash (salted with the identifier column and field mapping) and in `_fields`."""
    salt = json.dumps({"identifier": "id", "fields": FIELDS}, sort_keys=True)
    old_hash = row_hash(["id", *FIELDS.values()], salt=salt, alias="a")
    ledger = f'composable."ledger__high__{destination}"'
    small.query(
        f"UPDATE {ledger} SET _hash = s.h, _fields = s.f FROM (SELECT a._key, {old_hash} AS h, "
        f"{json_object(FIELDS, alias='a')} AS f FROM composable.audience__high AS a) AS s WHERE {ledger}._key = s._key"
    )


def test_an_install_synced_before_the_attribute_gets_it_once_then_nothing(small, braze_fake):
    mirror(small, "braze", BRAZE)
    small.set_people(people())
    assert small.sync().success
    # As the release before this one left things: the ledger without the attribute, Braze's profiles without it.
    old_ledger(small)
    for profile in braze_fake.users.values():
        profile.pop("in_high")
    before, requests_before = len(braze_fake.data_points), len(braze_fake.requests)

    upgraded = small.sync()

    assert upgraded.success and upgraded.syncs[0].count("updated") == 10
    sent = [(p.user, p.attribute, p.value) for p in braze_fake.data_points[before:]]
    assert sorted(sent) == sorted((m, "in_high", True) for m in MEMBERS)  # one data point per member, nothing else
    assert braze_members(braze_fake)() == MEMBERS
    requests_after = len(braze_fake.requests)
    again = small.sync()
    assert again.success and again.syncs[0].count("updated") == 0
    assert len(braze_fake.requests) == requests_after > requests_before  # the second run sends nothing
    small.set_people(people(left={"11"}))
    assert small.sync().success
    assert braze_members(braze_fake)() == MEMBERS - {"11"}


def test_after_a_kill_only_profiles_with_the_attribute_are_confirmed(small, braze_fake):
    mirror(small, "braze", BRAZE)
    small.set_people(people())
    materialize(small, sync=False)
    order = sorted(seqs(small).items(), key=lambda item: item[1])
    keys = [key for key, _ in order]
    # The killed run had applied five adds in full; five more profiles hold the fields but not the attribute.
    full = [{"external_id": k, "name": f"name{k}", "score": int(k), "in_high": True} for k in keys[:5]]
    partial = [{"external_id": k, "name": f"name{k}", "score": int(k)} for k in keys[5:]]
    braze_post(braze_fake, "/users/track", {"attributes": full + partial})
    leave_intent(small, order[0][1], order[-1][1])

    outcome = materialize(small, sync=True)

    assert (outcome.syncs[0].count("skipped"), outcome.syncs[0].count("added")) == (5, 5)
    [export] = [r for r in braze_fake.requests if r.path == "/users/export/ids"]
    assert "custom_attributes" in export.body["fields_to_export"]
    assert braze_members(braze_fake)() == MEMBERS


def test_the_init_template_s_braze_sync_removes_a_leaver_observably(tmp_path, braze_fake):
    project = tmp_path / "shop"
    create_project(project, today=dt.date(2026, 3, 3))  # starts 2026-03-02
    audience = project / "audiences" / "high_value_customers.yaml"
    text = audience.read_text()
    # The sync the template leaves commented out, switched on as its comment says.
    assert "  # - destination: braze\n" in text
    lines = text.split("\n")
    start = lines.index("  # - destination: braze")
    lines[start:] = [line.replace("  # ", "  ", 1) for line in lines[start:]]
    audience.write_text("\n".join(lines))
    settings = Settings(project_dir=project, warehouse_url=f"duckdb:///{tmp_path / 'w.duckdb'}", data_dir=tmp_path / "data")
    instance = dg.DagsterInstance.ephemeral()

    def sync() -> None:
        selection = audience_selection(load_project(project), "high_value_customers", "braze")
        outcome = run_selection(load_definitions(settings), selection, "2026-03-02", instance)
        assert outcome.success, outcome.errors

    sync()
    shown = braze_members(braze_fake, "in_high_value_customers")
    assert shown() == {"1", "2", "4", "6", "7"}  # the five customers who spent 500 or more
    model = project / "models" / "customers.sql"
    model.write_text(model.read_text().replace("'Grace', 'US', 830.50", "'Grace', 'US', 83.05"))
    sync()
    assert shown() == {"1", "4", "6", "7"}
    assert braze_fake.users["2"]["first_name"] == "Grace"  # still a profile, no longer a member


# --- Iterable -----------------------------------------------------------------------------------------------------


@pytest.fixture
def iterable_fake(monkeypatch):
    fake = IterableFake(api_key=API_KEY, lists={LIST_ID: "high scorers"}).start()
    monkeypatch.setenv("ITERABLE_BASE_URL", fake.url)
    monkeypatch.setenv("ITERABLE_API_KEY", API_KEY)
    yield fake
    assert fake.spec_violations == []
    fake.stop()


ITERABLE = "{type: iterable, base_url: {env: ITERABLE_BASE_URL}, api_key: {env: ITERABLE_API_KEY}, backoff_base_seconds: 0.02}"


def test_an_iterable_mirror_with_no_way_to_remove_is_refused_when_the_project_loads(small):
    # With neither a list nor on_remove: delete, a leaver could only stay as they are: exactly like a member.
    mirror(small, "iterable", ITERABLE, "email", "email")
    with pytest.raises(ProjectError) as raised:
        load_project(small.settings.project_dir, known_destination_types=DESTINATION_TYPES)
    assert str(raised.value) == (
        "audiences/high.yaml:5: `syncs[0].options`: a mirror to Iterable needs list_id (members subscribed to that "
        "static list, leavers unsubscribed) or on_remove: delete (leavers deleted)"
    )
    small.write("audiences/high.yaml", MIRROR.format(destination="iterable", identifier="email", column="email")
                .replace("mode: mirror", "mode: upsert"))
    load_project(small.settings.project_dir, known_destination_types=DESTINATION_TYPES)  # upsert removes nobody


@pytest.mark.parametrize("options", [f"{{list_id: {LIST_ID}}}", "{on_remove: delete}"])
def test_iterable_leavers_are_off_the_list_or_gone(small, iterable_fake, options):
    mirror(small, "iterable", ITERABLE, "email", "email")
    small.write("audiences/high.yaml", (small.settings.project_dir / "audiences/high.yaml").read_text()
                + f"    options: {options}\n")

    def shown() -> set[str]:
        if "list_id" in options:
            return {iterable_fake.users[key]["email"] for key in iterable_fake.lists[LIST_ID]}
        return {user["email"] for user in iterable_fake.users.values()}

    sync_and_observe(small, shown, "email")


# --- webhook, outbox ----------------------------------------------------------------------------------------------


def test_a_webhook_receiver_applying_what_it_receives_holds_exactly_the_members(small, monkeypatch):
    with Receiver(SECRET) as receiver:
        monkeypatch.setenv("HOOK_SECRET", SECRET)
        mirror(small, "hook", f'{{type: webhook, url: "{receiver.url}", secret: {{env: HOOK_SECRET}}, batch_size: 4}}')

        def shown() -> set[str]:
            state: dict[str, dict] = {}
            for request in receiver.requests:  # in arrival order; the receiver answered 200 to each
                for row in request["body"]["rows"]:
                    who = row["identifier"]["external_id"]
                    if row["operation"] == "remove":
                        state.pop(who, None)
                    else:
                        state[who] = row["fields"]
            return set(state)

        sync_and_observe(small, shown)


def test_replaying_the_outbox_files_gives_exactly_the_members(small):
    mirror(small, "box", "{type: outbox}")

    def shown() -> set[str]:
        state: set[str] = set()
        files = sorted(Path(small.settings.data_dir).rglob("box/high/*/*.jsonl"), key=lambda f: f.stat().st_mtime_ns)
        for line in (json.loads(line) for f in files for line in f.read_text().splitlines()):
            who = line["identifier"]["external_id"]
            (state.discard if line["operation"] == "remove" else state.add)(who)
        return state

    sync_and_observe(small, shown)


# --- warehouse-native: Braze CDI, MessageGears --------------------------------------------------------------------


@pytest.mark.parametrize("kind, column", [("external_id", "id"), ("email", "email")])
def test_braze_cdi_tables_replayed_as_braze_would_show_exactly_the_members(small, kind, column):
    mirror(small, "cdi", "{type: braze_cdi}", kind, column)

    def shown() -> set[str]:
        """Both tables in UPDATED_AT order, applied as Braze's sync does: attributes merged (null removes one), a
        delete row deletes the profile. By external id leavers are deleted (the default); by email, which CDI
        cannot delete by, they lose in_<audience>."""
        id_column = kind.upper()
        rows = small.query(
            f'SELECT UPDATED_AT, "{id_column}", PAYLOAD FROM braze_cdi.HIGH_USERS_ATTRIBUTES_SYNC '
            + (f'UNION ALL SELECT UPDATED_AT, "{id_column}", NULL FROM braze_cdi.HIGH_USERS_DELETE_SYNC '
               if kind == "external_id" else "")
            + "ORDER BY UPDATED_AT"
        )
        profiles: dict[str, dict] = {}
        for _, who, payload in rows:
            if payload is None:
                profiles.pop(who, None)
                continue
            profile = profiles.setdefault(who, {})
            for name, value in json.loads(payload).items():
                if value is None:
                    profile.pop(name, None)
                else:
                    profile[name] = value
        if kind == "external_id":
            return set(profiles)
        return {who for who, profile in profiles.items() if profile.get("in_high") is True}

    sync_and_observe(small, shown, kind)


def test_the_messagegears_view_lists_exactly_the_members(small):
    mirror(small, "mg", "{type: messagegears}")
    sync_and_observe(small, lambda: {key for (key,) in small.query("SELECT external_id FROM messagegears.high")})


# --- what cannot work is refused when the project loads -----------------------------------------------------------


@pytest.mark.parametrize(
    "destination, entry, identifier, options, message",
    [
        (
            "braze", BRAZE, "user_alias", "{on_remove: unsubscribe, subscription_group_id: g1}",
            "on_remove: unsubscribe cannot remove people identified by user_alias",
        ),
        (
            "braze", BRAZE, "external_id", "{on_remove: unsubscribe, subscription_group_id: g1, membership_attribute: vip}",
            "membership_attribute vip would stay true on leavers",
        ),
        ("cdi", "{type: braze_cdi}", "phone", "{on_remove: delete}", "Braze CDI cannot delete users by phone"),
    ],
)
def test_removal_options_that_would_leave_leavers_looking_like_members_are_refused(
    small, destination, entry, identifier, options, message
):
    mirror(small, destination, entry, identifier, "id")
    path = small.settings.project_dir / "audiences/high.yaml"
    path.write_text(path.read_text() + f"    options: {options}\n")
    with pytest.raises(ProjectError) as raised:
        load_project(small.settings.project_dir, known_destination_types=DESTINATION_TYPES)
    assert str(raised.value).startswith(f"audiences/high.yaml:9: `syncs[0].options`: {message}")


def test_a_field_named_like_the_membership_attribute_is_refused(small):
    mirror(small, "braze", BRAZE)
    path = small.settings.project_dir / "audiences/high.yaml"
    path.write_text(path.read_text().replace("{name: name, score: score}", "{name: name, in_high: score}"))
    with pytest.raises(ProjectError) as raised:
        load_project(small.settings.project_dir, known_destination_types=DESTINATION_TYPES)
    assert str(raised.value) == (
        "audiences/high.yaml:8: field `in_high` is the attribute braze sets on members and clears from leavers; "
        "rename the field or the attribute"
    )
