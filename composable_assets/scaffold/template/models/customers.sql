-- One row per customer with their lifetime value.
-- owners: team:data
-- The rows are written inline so that this project runs before it is connected to anything. Replace
-- this SELECT with one over your own warehouse tables, keeping the column names the audience uses:
--   SELECT c.id AS customer_id, c.email, c.first_name, c.country, sum(o.amount) AS lifetime_value
--   FROM crm.customers AS c LEFT JOIN shop.orders AS o ON o.customer_id = c.id GROUP BY ALL
-- or over a file loaded with `composable seed customers.csv --table raw_customers`: SELECT ... FROM raw_customers
SELECT customer_id, email, first_name, country, lifetime_value
FROM (
    VALUES
        (1, 'ada@example.com', 'Ada', 'GB', 1250.00),
        (2, 'grace@example.com', 'Grace', 'US', 830.50),
        (3, 'alan@example.com', 'Alan', 'GB', 120.00),
        (4, 'edsger@example.com', 'Edsger', 'NL', 640.00),
        (5, 'barbara@example.com', 'Barbara', 'US', 45.90),
        (6, 'tim@example.com', 'Tim', 'GB', 2100.00),
        (7, 'margaret@example.com', 'Margaret', 'US', 505.25),
        (8, 'linus@example.com', 'Linus', 'FI', 99.00)
) AS customers (customer_id, email, first_name, country, lifetime_value)
