"""Synthetic members generated in the warehouse, shared by the benchmarks that need the same shape."""

from __future__ import annotations


def people_sql(first_id: int, count: int) -> str:
    """Customers first_id.., each a pure function of its id, in SQL every engine runs (ids from `range`)."""
    return f"""
        SELECT
            i AS customer_id,
            'customer.' || CAST(i AS VARCHAR) || '@example.com' AS email,
            CASE WHEN i % 20 = 0 THEN NULL ELSE 'name_' || CAST(i % 8 AS VARCHAR) END AS first_name,
            CAST((CAST(i AS BIGINT) * 7919 % 500000) / 100.0 AS DECIMAL(12, 2)) AS ltv,
            CASE i % 4 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'GB' ELSE 'US' END AS country
        FROM range({first_id}, {first_id + count}) AS ids(i)
    """
