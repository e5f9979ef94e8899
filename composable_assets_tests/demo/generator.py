"""Deterministic, seeded retail source data for the sample project, generated entirely in DuckDB SQL."""

from __future__ import annotations

import datetime
from typing import Any

import duckdb

SOURCE_TABLES: tuple[str, ...] = ("customers", "orders", "web_events", "consents", "deletion_requests")

# Pseudo-randomness is `hash(seed, key, 'salt') % N`: a pure function of its inputs, so every row is
# reproducible no matter how DuckDB parallelises the query. Distinct salts give independent draws.
# Non-literal moduli are cast to UBIGINT like hash(): UBIGINT % BIGINT widens to slow 128-bit arithmetic.

FIRST_NAMES = [
    "Anna", "Ben", "Chloe", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas",
    "Klara", "Liam", "Maria", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sofia", "Tom",
    "Uma", "Victor", "Wendy", "Xavier", "Yara", "Zoe", "Lena", "Marco", "Nina", "Oscar",
]
LAST_NAMES = [
    "Schmidt", "Martin", "Smith", "Johnson", "Visser", "Garcia", "Rossi", "Andersson", "Muller", "Bernard",
    "Brown", "Williams", "Jansen", "Lopez", "Bianchi", "Nilsson", "Weber", "Dubois", "Taylor", "Miller",
]
# Parallel lists: a customer's country index also picks the calling code of their phone number.
COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "SE"]
DIAL_CODES = ["49", "33", "44", "1", "31", "34", "39", "46"]
CATEGORIES = ["shoes", "outerwear", "accessories", "home", "beauty", "sportswear"]

# Customers with ids in [$first_id, $first_id + $count) who sign up during [$signup_from, $signup_from + $span_seconds).
# Ids follow signup order, like a real sequence, so a later day's new customers also get later ids.
_PEOPLE = """
WITH people AS (
    SELECT
        i AS customer_id,
        $first_names[1 + (hash($seed, i, 'first_name') % len($first_names)::UBIGINT)::INT] AS first_name,
        $last_names[1 + (hash($seed, i, 'last_name') % len($last_names)::UBIGINT)::INT] AS last_name,
        1 + (hash($seed, i, 'country') % len($countries)::UBIGINT)::INT AS country_index,
        $signup_from::TIMESTAMP + to_seconds(floor(
            (i - $first_id + hash($seed, i, 'created_at') % 1000 / 1000) * $span_seconds / $count
        )) AS created_at
    FROM range($first_id, $first_id + $count) AS ids(i)
)
SELECT
    customer_id,
    concat(lower(first_name), '.', lower(last_name), '.', customer_id, '@example.com') AS email,
    CASE WHEN hash($seed, customer_id, 'has_phone') % 100 >= 15
        THEN concat('+', $dial_codes[country_index], 1000000000 + hash($seed, customer_id, 'phone') % 9000000000)
    END AS phone,
    first_name,
    last_name,
    $countries[country_index] AS country,
    created_at,
    created_at + to_seconds(floor(
        hash($seed, customer_id, 'updated_at') % 1000000 / 1e6
        * datediff('second', created_at, $signup_from::TIMESTAMP + to_seconds($span_seconds))
    )) AS updated_at
FROM people
"""

# Prices the orders in a `placed(order_id, customer_id, country, placed_from, placed_until)` CTE.
# A few percent of customers are big spenders, which gives the lifetime-value distribution a VIP tail;
# $big_basket_percent of orders are big baskets from anyone (daily orders use them to create new VIPs).
_PRICED_ORDERS = """
SELECT
    order_id,
    customer_id,
    CASE
        WHEN hash($seed, customer_id, 'big_spender') % 100 < 4
            THEN 80 + 320 * (hash($seed, order_id, 'amount') % 10000 / 1e4)
        WHEN hash($seed, order_id, 'big_basket') % 100 < $big_basket_percent
            THEN 200 + 400 * (hash($seed, order_id, 'amount') % 10000 / 1e4)
        ELSE 5 + 115 * pow(hash($seed, order_id, 'amount') % 10000 / 1e4, 2)
    END::DECIMAL(12, 2) AS amount,
    CASE country WHEN 'GB' THEN 'GBP' WHEN 'US' THEN 'USD' ELSE 'EUR' END AS currency,
    CASE
        WHEN hash($seed, order_id, 'status') % 100 < 92 THEN 'completed'
        WHEN hash($seed, order_id, 'status') % 100 < 97 THEN 'refunded'
        ELSE 'cancelled'
    END AS status,
    -- Half of a customer's orders are in their preferred category, so favourite categories are meaningful.
    CASE WHEN hash($seed, order_id, 'category_pick') % 2 = 0
        THEN $categories[1 + (hash($seed, customer_id, 'preferred_category') % len($categories)::UBIGINT)::INT]
        ELSE $categories[1 + (hash($seed, order_id, 'category') % len($categories)::UBIGINT)::INT]
    END AS category,
    placed_from + to_seconds(floor(
        hash($seed, order_id, 'ordered_at') % 1000000 / 1e6 * datediff('second', placed_from, placed_until)
    )) AS ordered_at
FROM placed
"""

# Order counts are geometric with mean $orders_per_customer: many customers never buy, a long tail buys a lot.
# Order ids are dense: each customer's block starts after the running total of everyone before them.
# The running total sorts only (id, count); customer columns are joined back after, which is much cheaper.
_SEED_ORDERS = """
CREATE OR REPLACE TABLE orders AS
WITH counted AS (
    SELECT
        customer_id,
        least(50, floor(
            ln(1 - hash($seed, customer_id, 'order_count') % 1000000 / 1e6)
            / ln($orders_per_customer / (1 + $orders_per_customer))
        ))::BIGINT AS order_count
    FROM customers
),
numbered AS (
    SELECT *, (sum(order_count) OVER (ORDER BY customer_id) - order_count)::BIGINT AS orders_before
    FROM counted
    WHERE order_count > 0
),
placed AS (
    SELECT
        orders_before + unnest(range(1, order_count + 1)) AS order_id,
        customer_id,
        country,
        greatest(created_at, $as_of::TIMESTAMP - INTERVAL 400 DAY) AS placed_from,
        $as_of::TIMESTAMP AS placed_until
    FROM numbered
    JOIN customers USING (customer_id)
)
""" + _PRICED_ORDERS

# Zero to four events per customer, skewed towards the last few days, so some carts are recent.
_SEED_WEB_EVENTS = """
CREATE OR REPLACE TABLE web_events AS
WITH visits AS (
    SELECT customer_id, greatest(created_at, $as_of::TIMESTAMP - INTERVAL 30 DAY) AS seen_from,
        unnest(range((hash($seed, customer_id, 'event_count') % 5)::INT)) AS n
    FROM customers
),
typed AS (
    SELECT *, CASE
            WHEN hash($seed, customer_id, n, 'event_type') % 100 < 55 THEN 'page_view'
            WHEN hash($seed, customer_id, n, 'event_type') % 100 < 75 THEN 'app_open'
            WHEN hash($seed, customer_id, n, 'event_type') % 100 < 92 THEN 'add_to_cart'
            ELSE 'checkout_started'
        END AS event_type
    FROM visits
)
SELECT
    concat('evt_', customer_id, '_', n) AS event_id,
    customer_id,
    event_type,
    CASE WHEN event_type <> 'app_open'
        THEN $categories[1 + (hash($seed, customer_id, n, 'category') % len($categories)::UBIGINT)::INT]
    END AS product_category,
    $as_of::TIMESTAMP - to_seconds(ceil(
        pow(hash($seed, customer_id, n, 'occurred_at') % 1000000 / 1e6, 2)
        * datediff('second', seen_from, $as_of::TIMESTAMP)
    )) AS occurred_at
FROM typed
"""

# One row per customer and purpose for customers with ids >= $first_id, last touched before $until.
_CONSENTS = """
SELECT
    customer_id,
    purpose,
    hash($seed, customer_id, purpose, 'granted') % 100 < granted_percent AS granted,
    created_at + to_seconds(floor(
        hash($seed, customer_id, purpose, 'updated_at') % 1000000 / 1e6
        * datediff('second', created_at, $until::TIMESTAMP)
    )) AS updated_at
FROM customers
CROSS JOIN (VALUES ('email_marketing', 80), ('push', 45), ('advertising', 30)) AS purposes(purpose, granted_percent)
WHERE customer_id >= $first_id
"""

# A fixed number of requests drawn by hash rank, so even a small sample has one.
_SEED_DELETION_REQUESTS = """
CREATE OR REPLACE TABLE deletion_requests AS
SELECT
    concat('dsr_', customer_id) AS request_id,
    customer_id,
    email,
    $as_of::TIMESTAMP - to_seconds(ceil(
        hash($seed, customer_id, 'requested_at') % 1000000 / 1e6
        * datediff('second', greatest(created_at, $as_of::TIMESTAMP - INTERVAL 30 DAY), $as_of::TIMESTAMP)
    )) AS requested_at
FROM customers
-- Sorting ids only and joining back is far cheaper than sorting whole customer rows.
WHERE customer_id IN (
    SELECT customer_id FROM customers ORDER BY hash($seed, customer_id, 'deletion'), customer_id LIMIT $requests
)
"""

# Each day's draws hash ($seed, $day, ...), so a day is reproducible and days differ from each other;
# `% 1000000 < rate * 1000000` picks that share of rows.
_CHURN = """
DELETE FROM customers WHERE hash($seed, $day, customer_id, 'churn') % 1000000 < $change_rate / 10 * 1000000
"""

# Churned customers keep their orders, events and consents, so new ids start after all of them.
_LAST_CUSTOMER_ID = """
SELECT coalesce(max(customer_id), 0) FROM (
    SELECT customer_id FROM customers
    UNION ALL SELECT customer_id FROM orders
    UNION ALL SELECT customer_id FROM web_events
    UNION ALL SELECT customer_id FROM consents
)
"""

# Each edit changes exactly one of email, first_name or country, always to a different value.
_PROFILE_EDITS = """
UPDATE customers AS c SET
    email = CASE e.edit WHEN 0
        THEN concat(lower(c.first_name), '.', lower(c.last_name), '.', c.customer_id, '.',
            strftime($day, '%Y%m%d'), '@example.org')
        ELSE c.email
    END,
    first_name = CASE e.edit WHEN 1
        THEN list_filter($first_names, lambda name: name <> c.first_name)[
            1 + (hash($seed, $day, c.customer_id, 'first_name') % (len($first_names) - 1)::UBIGINT)::INT]
        ELSE c.first_name
    END,
    country = CASE e.edit WHEN 2
        THEN list_filter($countries, lambda code: code <> c.country)[
            1 + (hash($seed, $day, c.customer_id, 'country') % (len($countries) - 1)::UBIGINT)::INT]
        ELSE c.country
    END,
    updated_at = e.edited_at
FROM (
    SELECT
        customer_id,
        hash($seed, $day, customer_id, 'edit_kind') % 3 AS edit,
        $day::TIMESTAMP + to_seconds(hash($seed, $day, customer_id, 'edited_at') % 86400) AS edited_at
    FROM customers
    WHERE hash($seed, $day, customer_id, 'edit') % 1000000 < $change_rate / 2 * 1000000
) AS e
WHERE c.customer_id = e.customer_id
"""

_DAY_ORDERS = """
INSERT INTO orders
WITH placed AS (
    SELECT
        (SELECT coalesce(max(order_id), 0) FROM orders) + row_number() OVER (ORDER BY customer_id) AS order_id,
        customer_id,
        country,
        $day::TIMESTAMP AS placed_from,
        $day::TIMESTAMP + INTERVAL 1 DAY AS placed_until
    FROM customers
    WHERE hash($seed, $day, customer_id, 'order') % 1000000 < $change_rate * 1000000
)
""" + _PRICED_ORDERS

# A few percent of customers visit today; their carts not followed by an order are new cart abandoners.
_DAY_WEB_EVENTS = """
INSERT INTO web_events
WITH visits AS (
    SELECT customer_id, unnest(range(1 + (hash($seed, $day, customer_id, 'event_count') % 3)::INT)) AS n
    FROM customers
    WHERE hash($seed, $day, customer_id, 'visit') % 1000000 < $change_rate * 3 * 1000000
),
typed AS (
    SELECT *, CASE
            WHEN hash($seed, $day, customer_id, n, 'event_type') % 100 < 50 THEN 'page_view'
            WHEN hash($seed, $day, customer_id, n, 'event_type') % 100 < 65 THEN 'app_open'
            WHEN hash($seed, $day, customer_id, n, 'event_type') % 100 < 90 THEN 'add_to_cart'
            ELSE 'checkout_started'
        END AS event_type
    FROM visits
)
SELECT
    concat('evt_', strftime($day, '%Y%m%d'), '_', customer_id, '_', n) AS event_id,
    customer_id,
    event_type,
    CASE WHEN event_type <> 'app_open'
        THEN $categories[1 + (hash($seed, $day, customer_id, n, 'category') % len($categories)::UBIGINT)::INT]
    END AS product_category,
    $day::TIMESTAMP + to_seconds(hash($seed, $day, customer_id, n, 'occurred_at') % 86400) AS occurred_at
FROM typed
"""

_CONSENT_FLIPS = """
UPDATE consents SET
    granted = NOT granted,
    updated_at = $day::TIMESTAMP + to_seconds(hash($seed, $day, customer_id, purpose, 'flipped_at') % 86400)
WHERE hash($seed, $day, customer_id, purpose, 'flip') % 1000000 < $change_rate / 4 * 1000000
    AND customer_id IN (SELECT customer_id FROM customers)
"""

# Like the seed: a fixed handful per day, from customers who have not asked before.
_DAY_DELETION_REQUESTS = """
INSERT INTO deletion_requests
SELECT
    concat('dsr_', customer_id),
    customer_id,
    email,
    $day::TIMESTAMP + to_seconds(hash($seed, $day, customer_id, 'requested_at') % 86400)
FROM customers
WHERE customer_id IN (
    SELECT customer_id FROM customers
    WHERE customer_id NOT IN (SELECT customer_id FROM deletion_requests)
    ORDER BY hash($seed, $day, customer_id, 'deletion'), customer_id
    LIMIT $requests
)
"""


def seed(
    con: duckdb.DuckDBPyConnection,
    customers: int = 2000,
    seed: int = 42,
    as_of: datetime.date | None = None,
    orders_per_customer: float = 3.0,
) -> dict[str, int]:
    """Create or replace every source table; return row counts per table."""
    if customers < 1 or orders_per_customer < 0:
        raise ValueError("customers must be >= 1 and orders_per_customer >= 0")
    as_of = as_of or datetime.datetime.now(datetime.UTC).date()
    _people(con, "CREATE OR REPLACE TABLE customers AS", seed, first_id=1, count=customers,
            signup_from=as_of - datetime.timedelta(days=730), signup_days=730)
    _run(con, _SEED_ORDERS, seed=seed, as_of=as_of, orders_per_customer=orders_per_customer, categories=CATEGORIES,
         big_basket_percent=0)
    _run(con, _SEED_WEB_EVENTS, seed=seed, as_of=as_of, categories=CATEGORIES)
    _run(con, "CREATE OR REPLACE TABLE consents AS" + _CONSENTS, seed=seed, until=as_of, first_id=1)
    _run(con, _SEED_DELETION_REQUESTS, seed=seed, as_of=as_of, requests=max(1, customers // 1000))
    return {table: _run(con, f"SELECT count(*) FROM {table}") for table in SOURCE_TABLES}


def apply_day_of_changes(
    con: duckdb.DuckDBPyConnection, day: datetime.date, seed: int = 42, change_rate: float = 0.02
) -> dict[str, int]:
    """Apply one day of changes (new orders, profile edits, churn, new customers, new events, consent changes, a few deletion requests); return counts per kind of change."""
    daily = {"seed": seed, "day": day, "change_rate": change_rate}
    # One transaction, so a failed day leaves nothing half-applied to retry on top of.
    con.begin()
    try:
        counts = {"churned_customers": _run(con, _CHURN, **daily)}
        counts["profile_edits"] = _run(con, _PROFILE_EDITS, **daily, first_names=FIRST_NAMES, countries=COUNTRIES)
        counts["new_orders"] = _run(con, _DAY_ORDERS, **daily, categories=CATEGORIES, big_basket_percent=10)
        counts["new_web_events"] = _run(con, _DAY_WEB_EVENTS, **daily, categories=CATEGORIES)
        counts["consent_changes"] = _run(con, _CONSENT_FLIPS, **daily)
        population = _run(con, "SELECT count(*) FROM customers")
        counts["deletion_requests"] = _run(con, _DAY_DELETION_REQUESTS, seed=seed, day=day,
                                           requests=max(1, round(population * change_rate / 100)))
        # Sign-ups come last, so nothing above gives a new customer activity from before they signed up.
        last_id = _run(con, _LAST_CUSTOMER_ID)
        counts["new_customers"] = _people(con, "INSERT INTO customers", seed, first_id=last_id + 1,
                                          count=max(1, round(population * change_rate / 4)), signup_from=day)
        _run(con, "INSERT INTO consents" + _CONSENTS, seed=seed, until=day + datetime.timedelta(days=1),
             first_id=last_id + 1)
    except BaseException:
        con.rollback()
        raise
    con.commit()
    return counts


def _people(
    con: duckdb.DuckDBPyConnection,
    statement: str,
    seed: int,
    first_id: int,
    count: int,
    signup_from: datetime.date,
    signup_days: int = 1,
) -> int:
    """Run `statement` (a CREATE ... AS or INSERT INTO prefix) over generated customers; return its row count."""
    return _run(
        con, statement + _PEOPLE, seed=seed, first_id=first_id, count=count, signup_from=signup_from,
        span_seconds=signup_days * 86400, first_names=FIRST_NAMES, last_names=LAST_NAMES,
        countries=COUNTRIES, dial_codes=DIAL_CODES,
    )


def _run(con: duckdb.DuckDBPyConnection, sql: str, **params: Any) -> int:
    """Execute one statement with named parameters; return its single value (a row count for DML)."""
    [(value,)] = con.execute(sql, params).fetchall()
    return value
