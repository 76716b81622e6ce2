"""The controller's HTTP server under load: bounded streams and requests, no leaked threads, /healthz fast.

Clients are raw sockets driven by one selector (tests.support.http_load), so that every thread
``threading.active_count()`` counts here is the server's or pytest's, never a client's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from agentvm.api.server import Api, ApiServer
from agentvm.controller.events import EventLog
from tests.support.http_load import Clients, request_bytes

STREAM = request_bytes("/api/v1/events?stream=1")


def _api(events: EventLog, status: Callable[[], dict[str, object]] | None = None) -> Api:
    return Api(
        status=status or (lambda: {"kind": "Status"}),
        ready=lambda: True,
        metrics=str,
        events=events,
    )


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _threads_back_to(baseline: int) -> Callable[[], bool]:
    return lambda: threading.active_count() <= baseline


def test_stream_threads_end_when_their_clients_leave() -> None:
    events = EventLog()
    with ApiServer(_api(events), port=0) as server:  # the default keepalive: 15 s between comments
        baseline = threading.active_count()
        with Clients(server.port, 50) as clients:
            clients.send(STREAM)
            accepted = sum(reply.status == 200 for reply in clients.replies())
            assert accepted > 0
            _wait_for(lambda: server.streams == accepted, 10, f"{accepted} open streams")
        # the clients are gone: their writers must notice long before the next keepalive comment
        _wait_for(_threads_back_to(baseline), 10, f"the server's threads to fall back to {baseline}")
        assert server.streams == 0 and events.subscribers == 0
