"""A client of the controller's HTTP API (``agentvm.api.server``), for ``agentvm events``.

Reads ``/api/v1/events`` as JSON (the recent events) and as server-sent events (the live stream, resumed
with ``Last-Event-ID`` after a dropped connection). Failures are agentvm's errors with the fix:
TransientError when the controller cannot be reached (exit 3), ConfigurationError for a bad ``--server`` or
a request the server refuses (exit 2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from agentvm.model.errors import ConfigurationError, TransientError

SERVER_ENV = "AGENTVM_SERVER"
DEFAULT_SERVER = "http://127.0.0.1:8080"
RECONNECTS = 5  # a stream that drops is resumed this many times, RECONNECT_DELAY s apart, then given up
RECONNECT_DELAY = 2.0  # as the server's "retry:" tells a browser

EventJson = dict[str, Any]


def check_server(url: str) -> str:
    """``url`` without a trailing slash; ConfigurationError unless it is ``http(s)://host[:port]``."""
    parsed = httpx.URL(url.strip()) if "://" in url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"--server {url!r} is not the URL of an agentvm run's API: give http://HOST:PORT "
            f"(default {DEFAULT_SERVER}; agentvm run prints it on its 'API listening on' line)"
        )
    return url.strip().rstrip("/")


class ApiClient:
    """``ApiClient(url)``: the controller's events. ``close()`` (or ``with``) when done."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = check_server(url)
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recent_events(self, limit: int | None = None) -> tuple[list[EventJson], int]:
        """The last ``limit`` events (the server's default: 100), oldest first, and the last event id."""
        params = {"limit": str(limit)} if limit is not None else {}
        try:
            response = self._client.get("/api/v1/events", params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        body = self._json(response)
        events = body.get("events")
        if not isinstance(events, list):
            raise ConfigurationError(f"{self.url}/api/v1/events did not answer with events: is it agentvm?")
        return events, int(body.get("lastEventId") or 0)

    def follow(self, after: int) -> Iterator[EventJson]:
        """Events published after id ``after``, as they come, until the caller stops iterating. A dropped
        stream is resumed from the last event seen; TransientError once it cannot be for ``RECONNECTS``
        tries (the controller stopped)."""
        last = after
        tries = 0
        while True:
            try:
                for event in self._stream(last):
                    tries = 0
                    last = max(last, int(event.get("id") or 0))
                    yield event
            except httpx.HTTPError as exc:
                error: Exception = self._unreachable(exc)
            else:
                error = TransientError(f"the controller at {self.url} closed the event stream")
            tries += 1
            if tries > RECONNECTS:
                raise error
            time.sleep(RECONNECT_DELAY)

    def _stream(self, after: int) -> Iterator[EventJson]:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        timeout = httpx.Timeout(self._client.timeout.connect, read=None)  # idle streams send keepalives
        with self._client.stream("GET", "/api/v1/events", headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                self._json(response)  # raises, with the server's message
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    event = json.loads("\n".join(data))
                    data = []
                    if isinstance(event, dict):
                        yield event

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            text = f"the controller at {self.url} answered {response.status_code}: {message or response.text}"
            if response.status_code >= 500:
                raise TransientError(text.strip())
            raise ConfigurationError(text.strip())
        if not isinstance(body, dict):
            raise ConfigurationError(f"{self.url}/api/v1/events did not answer JSON: is it agentvm's API?")
        return body

    def _unreachable(self, exc: httpx.HTTPError) -> TransientError:
        return TransientError(
            f"cannot reach the agentvm controller at {self.url} ({exc or type(exc).__name__}): start "
            f"`agentvm run`, or pass --server / set ${SERVER_ENV} to its API address"
        )
