-- Every order with its buyer's email, one row per order: what the purchases stream forwards.
-- owners: team:data-platform
SELECT
    o.order_id,
    o.customer_id,
    c.email,
    o.amount,
    o.currency,
    o.category,
    o.status,
    o.ordered_at
FROM orders AS o
LEFT JOIN customers AS c ON c.customer_id = o.customer_id
