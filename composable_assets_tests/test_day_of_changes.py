"""On the retail sample: after a day of changes, each delta holds exactly the expected adds, updates and removes."""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal

import duckdb
import pytest

from composable_assets_tests.demo import SAMPLE_PROJECT_DIR, generator

from .conftest import Recording, SmallProject

DAY = dt.date(2026, 3, 2)
VIP_SQL = (
    "SELECT customer_id, email, first_name, lifetime_value, favourite_category FROM customer_profiles "
    "WHERE lifetime_value > 500 AND last_order_at >= current_date - INTERVAL 90 DAY"
)
NEWSLETTER_SQL = "SELECT customer_id, email, first_name, country, favourite_category FROM customer_profiles WHERE email IS NOT NULL"
# People who asked to be forgotten, unless they granted a consent again afterwards: no audience sends them anything.
FORGOTTEN_SQL = (
    "SELECT r.customer_id FROM deletion_requests AS r WHERE NOT EXISTS (SELECT 1 FROM consents AS c "
    "WHERE c.customer_id = r.customer_id AND c.granted AND c.updated_at > r.requested_at)"
)


@pytest.fixture
def sample(tmp_path):
    project = SmallProject(tmp_path)
    shutil.copytree(SAMPLE_PROJECT_DIR, project.settings.project_dir)
    # Same audiences, same destination names; each destination records what it receives.
    project.write(
        "destinations.yaml",
        "\n".join(f"{name}: {{type: recording, batch_size: 50}}" for name in ("outbox", "braze", "iterable")) + "\n",
    )
    with duckdb.connect(str(project.db)) as con:
        generator.seed(con, customers=3000, seed=7, as_of=dt.date.today())
    return project


def members(project: SmallProject, sql: str) -> dict[str, tuple]:
    """The audience computed independently: the model's own SQL output filtered here, not by the platform.

    Less the people who asked to be forgotten (see the sample's project.yaml `deletion_requests:`).
    """
    model_sql = (SAMPLE_PROJECT_DIR / "models/customer_profiles.sql").read_text()
    with duckdb.connect(str(project.db)) as con:
        con.execute(f"CREATE OR REPLACE TEMP VIEW customer_profiles AS {model_sql}")
        forgotten = {row[0] for row in con.execute(FORGOTTEN_SQL).fetchall()}
        return {str(row[0]): tuple(row[1:]) for row in con.execute(sql).fetchall() if row[0] not in forgotten}


def normalized(fields: dict) -> tuple:
    return tuple(Decimal(str(v)) if isinstance(v, float) else v for v in fields.values())


def test_a_day_of_changes_yields_exactly_the_expected_delta(sample):
    assert sample.sync("vip_customers", date=str(DAY), destination="outbox").success
    assert sample.sync("weekly_newsletter", date=str(DAY), destination="outbox").success
    vip_before, news_before = members(sample, VIP_SQL), members(sample, NEWSLETTER_SQL)
    with duckdb.connect(str(sample.db)) as con:
        generator.apply_day_of_changes(con, dt.date.today(), seed=7, change_rate=0.2)
    vip_after, news_after = members(sample, VIP_SQL), members(sample, NEWSLETTER_SQL)

    Recording.received.clear()
    assert sample.sync("vip_customers", date=str(DAY + dt.timedelta(days=1)), destination="outbox").success
    got = {(r.change, r.key) for r in Recording.received["outbox"]}
    expected = (
        {("add", k) for k in vip_after.keys() - vip_before.keys()}
        | {("remove", k) for k in vip_before.keys() - vip_after.keys()}
        | {("update", k) for k in vip_after.keys() & vip_before.keys() if vip_after[k] != vip_before[k]}
    )
    assert got == expected
    assert {c for c, _ in expected} == {"add", "update", "remove"}, "the day of changes should exercise all three"
    for r in Recording.received["outbox"]:
        if r.change != "remove":
            assert r.identifier == r.key
            assert r.fields["email"] == vip_after[r.key][0]
            assert Decimal(str(r.fields["ltv"])) == vip_after[r.key][2]

    Recording.received.clear()
    assert sample.sync("weekly_newsletter", date=str(DAY + dt.timedelta(days=1)), destination="outbox").success
    got = {(r.change, r.key) for r in Recording.received["outbox"]}
    expected = {("add", k) for k in news_after.keys() - news_before.keys()} | {
        ("update", k) for k in news_after.keys() & news_before.keys() if news_after[k] != news_before[k]
    }
    assert got == expected and expected  # upsert: churned customers are not removed
    assert all(r.identifier == news_after[r.key][0] for r in Recording.received["outbox"])
