"""The controller's HTTP server under load: bounded streams and requests, no leaked threads, /healthz fast.

Clients are raw sockets driven by one selector (tests.support.http_load), so that every thread
``threading.active_count()`` counts here is the server's or pytest's, never a client's.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agentvm.api.server import Api, ApiServer, Limits
from agentvm.cli.main import app
from agentvm.controller.events import EventLog
from tests.support.controller_lab import World
from tests.support.http_load import Clients, request_bytes
from tests.support.schemas import valid

STREAM = request_bytes("/api/v1/events?stream=1")
STATUS = request_bytes("/api/v1/status")
# what the fake controller serves: a status with no agency yet, as status-v1.json has it
EMPTY_STATUS: dict[str, object] = valid(
    {
        "apiVersion": "agentvm/v1",
        "kind": "Status",
        "vcenter": "https://vc.example/sdk",
        "generatedAt": "2026-12-01T21:00:00Z",
        "agencies": [],
        "missing": [],
    }
)


def _api(events: EventLog, status: Callable[[], dict[str, object]] | None = None) -> Api:
    return Api(
        status=status or (lambda: dict(EMPTY_STATUS)),
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
        with Clients(server.port, 50, STREAM) as clients:
            accepted = sum(reply.status == 200 for reply in clients.replies())
            assert accepted > 0
            _wait_for(lambda: server.streams == accepted, 10, f"{accepted} open streams")
        # the clients are gone: their writers must notice long before the next keepalive comment
        _wait_for(_threads_back_to(baseline), 10, f"the server's threads to fall back to {baseline}")
        assert server.streams == 0 and events.subscribers == 0


def test_a_thousand_stream_clients_get_the_limit_and_the_rest_503() -> None:
    events = EventLog()
    with ApiServer(_api(events), port=0, limits=Limits(max_streams=20, retry_after=7)) as server:
        baseline = threading.active_count()
        with Clients(server.port, 1000, STREAM) as clients:
            replies = clients.replies()
            assert Counter(reply.status for reply in replies) == {200: 20, 503: 980}
            assert {reply.headers.get("retry-after") for reply in replies if reply.status == 503} == {"7"}
            _wait_for(lambda: server.streams == 20, 10, "20 open streams")
            assert threading.active_count() <= baseline + 20  # one thread per stream, none per refusal
            # health is answered while every stream is taken; one more stream is refused, saying why
            for _ in range(20):
                assert httpx.get(f"{server.url}/healthz", timeout=10).text == "ok\n"
            refused = httpx.get(f"{server.url}/api/v1/events?stream=1", timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
            assert "--max-streams" in refused.json()["error"]
            # the streams taken still stream
            events.publish("action", "powered on agent VM contrail-vm-1")
            streaming = [index for index, reply in enumerate(replies) if reply.status == 200]
            assert clients.read_until(b"contrail-vm-1", streaming, timeout=10) == 20
        _wait_for(_threads_back_to(baseline), 10, f"the server's threads to fall back to {baseline}")
        assert server.streams == 0 and events.subscribers == 0
        # and their slots are free again
        with Clients(server.port, 1, STREAM) as again:
            assert [reply.status for reply in again.replies()] == [200]


def test_a_stream_client_that_stops_reading_is_dropped() -> None:
    events = EventLog()
    with ApiServer(_api(events), port=0, limits=Limits(io_timeout=0.5)) as server:
        baseline = threading.active_count()
        with Clients(server.port, 1, STREAM) as clients:
            assert [reply.status for reply in clients.replies()] == [200]
            _wait_for(lambda: server.streams == 1, 10, "the stream to open")
            # far more than the socket buffers hold; the client reads none of it
            for n in range(3000):
                events.publish("action", f"event {n}", data={"blob": "x" * 8000})
            _wait_for(lambda: server.streams == 0, 10, "the server to drop the stream")
            _wait_for(_threads_back_to(baseline), 10, f"the server's threads to fall back to {baseline}")
            assert events.subscribers == 0


def test_requests_are_bounded_and_health_and_streams_do_not_wait_behind_them() -> None:
    events = EventLog()
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def slow_status() -> dict[str, object]:
        entered.release()
        gate.wait(30)
        return dict(EMPTY_STATUS)

    limits = Limits(max_requests=4)
    with ApiServer(_api(events, slow_status), port=0, limits=limits) as server:
        baseline = threading.active_count()
        with Clients(server.port, 4, STATUS) as busy:
            for _ in range(4):
                assert entered.acquire(timeout=10), "the first 4 requests did not reach the controller"
            with Clients(server.port, 996, STATUS) as more:
                replies = more.replies()
            assert Counter(reply.status for reply in replies) == {503: 996}
            assert all(reply.headers.get("retry-after") == "5" for reply in replies)
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            with Clients(server.port, 1, STREAM) as stream:
                assert [reply.status for reply in stream.replies()] == [200]
            gate.set()
            assert [reply.status for reply in busy.replies()] == [200] * 4
        _wait_for(_threads_back_to(baseline), 10, f"the server's threads to fall back to {baseline}")
        assert server.requests == 0


def test_idle_connections_hold_no_thread_and_are_closed_after_the_header_timeout() -> None:
    limits = Limits(header_timeout=1.0, max_waiting=2000)
    with ApiServer(_api(EventLog()), port=0, limits=limits) as server:
        baseline = threading.active_count()
        partial = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # a head that never ends
        with Clients(server.port, 1000) as idle, Clients(server.port, 3, partial) as slow:
            _wait_for(lambda: server.waiting == 1003, 10, "the server to hold 1,003 connections")
            assert threading.active_count() <= baseline
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            assert idle.closed_by_server(timeout=10) == 1000
            assert [reply.status for reply in slow.replies(timeout=10)] == [408] * 3


def test_more_idle_connections_than_it_holds_close_the_oldest_and_health_still_answers() -> None:
    limits = Limits(header_timeout=60.0, max_waiting=100)  # none of them times out in this test
    with ApiServer(_api(EventLog()), port=0, limits=limits) as server:
        baseline = threading.active_count()
        with Clients(server.port, 1000) as idle:
            assert idle.closed_by_server(timeout=10, until=900) == 900
            assert server.waiting <= 100 and threading.active_count() <= baseline
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            with Clients(server.port, 1, STATUS) as late:  # a real request still gets through
                assert [reply.status for reply in late.replies()] == [200]


def test_limits_below_one_are_refused_naming_the_limit() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        Limits(max_streams=0)
    with pytest.raises(ValueError, match="header_timeout"):
        Limits(header_timeout=0)


# ------------------------------------------------------------------------------------- agentvm run


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"AGENTVM_MAX_STREAMS": "0"}, [], "--max-streams"),
        ({"AGENTVM_MAX_REQUESTS": "many"}, [], "--max-requests"),
        ({}, ["--max-requests", "0"], "--max-requests"),
    ],
)
def test_run_refuses_a_limit_below_one_naming_its_flag(
    tmp_path: Path, env: dict[str, str], args: list[str], named: str
) -> None:
    spec = tmp_path / "contrail.yaml"
    spec.write_text("apiVersion: agentvm/v1\n")
    result = CliRunner().invoke(app, ["run", "-f", str(spec), *args], env=env)
    assert result.exit_code == 2 and named in result.output


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


@pytest.mark.lab
def test_run_serves_at_most_agentvm_max_streams(world: World) -> None:
    env = {**world.info.env(), "AGENTVM_MAX_STREAMS": "2", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # a worktree sharing another checkout's venv
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    args = ["run", "-f", str(world.spec), "--listen", "127.0.0.1:0", "--log-format", "json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvm.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _listen_url(proc, timeout=60)
        with Clients(int(url.rsplit(":", 1)[1]), 3, STREAM) as clients:
            assert sorted(reply.status or 0 for reply in clients.replies()) == [200, 200, 503]
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait(10)


def _listen_url(proc: subprocess.Popen[str], timeout: float) -> str:
    """The API's URL from ``agentvm run``'s ``listen`` log line (read on a thread: every wait bounded)."""
    found: queue.Queue[str] = queue.Queue()
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if record.get("action") == "listen":
                    found.put(str(record["message"]).rsplit(" ", 1)[-1])

    threading.Thread(target=read, daemon=True).start()
    try:
        return found.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(
            f"agentvm run did not listen within {timeout} s:\n{''.join(lines[-20:])}"
        ) from None
