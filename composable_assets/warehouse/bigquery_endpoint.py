"""dagster-gcp's BigQueryResource pointed at another API endpoint (COMPOSABLE_BIGQUERY_ENDPOINT), e.g. a stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster_gcp import BigQueryResource
from google.api_core.client_options import ClientOptions
from google.cloud import bigquery


class BigQueryAtEndpoint(BigQueryResource):
    """The same resource and client; only the endpoint differs (the resource itself has no field for one)."""

    api_endpoint: str

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        credentials = None
        if self.api_endpoint.startswith("http://"):
            # A Google token must never travel unencrypted: a plain-HTTP endpoint (a local stand-in) gets none.
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        yield bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=credentials,
            client_options=ClientOptions(api_endpoint=self.api_endpoint),
        )
