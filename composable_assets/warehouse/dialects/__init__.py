"""Per-engine rewrite rules applied by `warehouse.dialect.render`, one module per target dialect."""
