-- One row per customer with computed traits (lifetime value, orders, last order, favourite category).
-- owners: team:data-platform
WITH completed_orders AS (
    SELECT customer_id, amount, category, ordered_at
    FROM orders
    WHERE status = 'completed'
),

order_traits AS (
    SELECT
        customer_id,
        sum(amount) AS lifetime_value,
        count(*) AS order_count,
        max(ordered_at) AS last_order_at
    FROM completed_orders
    GROUP BY customer_id
),

favourite_categories AS (
    SELECT customer_id, category AS favourite_category
    FROM completed_orders
    GROUP BY customer_id, category
    -- Ties go to the alphabetically first category so the trait is stable between runs.
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY count(*) DESC, category) = 1
)

SELECT
    c.customer_id,
    c.email,
    c.phone,
    c.first_name,
    c.last_name,
    c.country,
    c.created_at,
    coalesce(t.lifetime_value, 0) AS lifetime_value,
    coalesce(t.order_count, 0) AS order_count,
    t.last_order_at,
    f.favourite_category,
    -- A new order changes the traits, so it counts as a profile update.
    greatest(c.updated_at, t.last_order_at) AS updated_at
FROM customers AS c
LEFT JOIN order_traits AS t ON t.customer_id = c.customer_id
LEFT JOIN favourite_categories AS f ON f.customer_id = c.customer_id
