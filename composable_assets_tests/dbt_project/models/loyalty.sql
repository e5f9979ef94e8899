select customer_id, points * 2 as double_points from {{ source('crm', 'loyalty_points') }}
