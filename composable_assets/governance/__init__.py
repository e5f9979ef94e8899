"""Governance: column lineage, consent, send gates, deletion requests, provenance and archival."""
