"""Alerts (project.yaml `alerts:`): whom to tell when a sync fails, a send gate holds a delta or a delivery goes stale."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .secret_refs import SecretRef, url_credential

AlertKind = Literal["sync_failed", "gate_held", "freshness_degraded"]
#: What an alert can be about; an entry without `on:` gets all of them.
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
SLACK_API_URL = "https://slack.com/api/"


def _reference_only(value: Any) -> Any:
    """A secret may only be written `{env: NAME}`; the error never repeats what was written."""
    if isinstance(value, (SecretRef, dict)):
        return value
    raise ValueError(
        "write it as {env: VARIABLE_NAME}: secrets come from environment variables, never from project files"
    )


Secret = Annotated[SecretRef, BeforeValidator(_reference_only)]


def _known_kind(value: Any) -> Any:
    if value not in ALERT_KINDS:
        raise ValueError(f"unknown alert {str(value)[:40]!r}; use {', '.join(ALERT_KINDS)}")
    return value


Kind = Annotated[AlertKind, BeforeValidator(_known_kind)]


def _http_url(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        credential = url_credential(value)
        if credential:
            raise ValueError(f"must not carry a credential ({credential}): write the URL as {{env: VARIABLE_NAME}}")
    return value


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


class SlackAlert(BaseModel):
    """A Slack channel, posted to with a bot token (chat.postMessage)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1)
    token: Secret
    # Slack's Web API; GovSlack workspaces use https://slack-gov.com/api/.
    api_url: HttpUrl = SLACK_API_URL


class WebhookAlert(BaseModel):
    """A URL receiving each alert as JSON, signed like the webhook destination's requests."""

    model_config = ConfigDict(extra="forbid")

    # Hook URLs often embed a token: {env: NAME} keeps it out of the file.
    url: Annotated[str | SecretRef, BeforeValidator(_http_url)]
    secret: Secret


class AlertSpec(BaseModel):
    """One entry of `alerts:`: one channel (`slack:` or `webhook:`) and what it is told about (`on:`)."""

    model_config = ConfigDict(extra="forbid")

    slack: SlackAlert | None = None
    webhook: WebhookAlert | None = None
    on: list[Kind] = Field(default=list(ALERT_KINDS), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _on_is_a_key(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads an unquoted `on:` key as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _one_channel(self) -> AlertSpec:
        if (self.slack is None) == (self.webhook is None):
            raise ValueError("name exactly one channel: `slack:` or `webhook:`")
        return self

    @property
    def channel(self) -> SlackAlert | WebhookAlert:
        return self.slack or self.webhook  # type: ignore[return-value]
