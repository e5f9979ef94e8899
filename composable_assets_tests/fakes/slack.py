"""Slack Web API fake: chat.postMessage, as https://api.slack.com/methods/chat.postMessage documents it.

Slack answers HTTP 200 with `{"ok": false, "error": "..."}` for a refused call: `not_authed` without a token,
`invalid_auth` for an unknown one, `channel_not_found` for a channel the workspace does not have, `no_text` for a
message without text, blocks or attachments. A call it throttles is HTTP 429 with Retry-After. The token comes as
`Authorization: Bearer <token>` (or a `token` form field); the arguments as JSON or as a form.
"""

from __future__ import annotations

import itertools
import time
from typing import Any
from urllib.parse import parse_qs

from .server import FakeServer, Request, Response

POST_MESSAGE = "/api/chat.postMessage"


class SlackFake(FakeServer):
    """One Slack workspace on 127.0.0.1 with a bot token and some channels (`#name` -> channel ID)."""

    def __init__(self, token: str = "xoxb-test", channels: tuple[str, ...] = ("#general",)) -> None:
        self.channel_names = channels
        super().__init__(token)

    @property
    def api_url(self) -> str:
        """What a WebClient takes as `base_url`."""
        return f"{self.url}/api/"

    def _reset_state(self) -> None:
        self.channels = {name: f"C{n:08d}" for n, name in enumerate(self.channel_names, start=1)}
        # Every message posted: {"channel": ID, "text": ..., "ts": ...}.
        self.messages: list[dict[str, Any]] = []
        self._ts = itertools.count(1)

    def posted(self, channel: str) -> list[str]:
        """The texts posted to `#name`, oldest first."""
        channel_id = self.channels[channel]
        return [m["text"] for m in self.messages if m["channel"] == channel_id]

    def _handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != POST_MESSAGE:
            return Response(404, {"ok": False, "error": "unknown_method"})
        arguments = request.body if request.is_json and isinstance(request.body, dict) else _form(request.raw)
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ").strip() or arguments.get("token")
        if not token:
            return Response(200, {"ok": False, "error": "not_authed"})
        if token != self.api_key:
            return Response(200, {"ok": False, "error": "invalid_auth"})
        channel = str(arguments.get("channel") or "")
        channel_id = self.channels.get(channel) or (channel if channel in self.channels.values() else None)
        if channel_id is None:
            return Response(200, {"ok": False, "error": "channel_not_found"})
        text = arguments.get("text")
        if not text and not arguments.get("blocks") and not arguments.get("attachments"):
            return Response(200, {"ok": False, "error": "no_text"})
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = {"channel": channel_id, "text": text, "ts": ts}
        self.messages.append(message)
        return Response(200, {"ok": True, "channel": channel_id, "ts": ts,
                              "message": {"type": "message", "text": text, "ts": ts, "bot_id": "B00000001"}})

    def _injected_response(self, status: int) -> Response:
        if status == 429:
            return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        return Response(status, {"ok": False, "error": "internal_error"})


def _form(raw: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, one value per field."""
    return {key: values[0] for key, values in parse_qs(raw.decode(errors="replace")).items()}
