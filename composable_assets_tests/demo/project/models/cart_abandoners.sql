-- Customers who added something to their cart in the last 48 hours and have not ordered since.
-- owners: team:crm
WITH last_carts AS (
    SELECT customer_id, occurred_at AS last_cart_at, product_category AS cart_category
    FROM web_events
    WHERE event_type = 'add_to_cart'
        AND occurred_at >= current_timestamp - INTERVAL 48 HOUR
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC, event_id) = 1
)

SELECT
    c.customer_id,
    c.email,
    c.first_name,
    l.last_cart_at,
    l.cart_category
FROM last_carts AS l
JOIN customers AS c ON c.customer_id = l.customer_id
WHERE NOT EXISTS (
    SELECT 1
    FROM orders AS o
    WHERE o.customer_id = l.customer_id
        AND o.ordered_at >= l.last_cart_at
)
