"""BigQuery for tests: the real google-cloud-bigquery client against the local REST stand-in (fakes/bigquery.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

BIGQUERY_PROJECT = "test-project"
BIGQUERY_DATASET = "composable_test"


@pytest.fixture
def bigquery_fake(tmp_path: Path):
    """The stand-in serving one project, its datasets in a DuckDB file under tmp_path; the URL's dataset exists."""
    pytest.importorskip("google.cloud.bigquery")
    from composable_assets_tests.fakes.bigquery import BigQueryFake

    fake = BigQueryFake(tmp_path / "bigquery.duckdb", project=BIGQUERY_PROJECT).start()
    fake.create_dataset(BIGQUERY_DATASET)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def bigquery_url(bigquery_fake, monkeypatch) -> Iterator[str]:
    """A `bigquery://` URL whose engine talks to the stand-in (plain http, so anonymous credentials)."""
    monkeypatch.setenv("COMPOSABLE_BIGQUERY_ENDPOINT", bigquery_fake.url)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield f"bigquery://{BIGQUERY_PROJECT}/{BIGQUERY_DATASET}"
