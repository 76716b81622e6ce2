"""The controller's HTTP server (agentvm.api.server) over real HTTP on 127.0.0.1, fed by fakes."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from agentvm.api.auth import BearerToken
from agentvm.api.server import Api, ApiServer
from agentvm.controller.events import EventLog
from agentvm.controller.metrics import ControllerMetrics
from agentvm.model.errors import NotFoundError, TransientError
from tests.support.exposition import parse, sample
from tests.support.schemas import valid

TOKEN = "s3cret-token-for-tests"

# a status with no agency yet, as status-v1.json has it
STATUS: dict[str, object] = valid(
    {
        "apiVersion": "agentvm/v1",
        "kind": "Status",
        "vcenter": "https://vc.example/sdk",
        "generatedAt": "2026-12-01T21:00:00Z",
        "agencies": [],
        "missing": ["contrail"],
    }
)


@dataclass
class Fakes:
    """What the controller would supply, recording the calls the server makes."""

    ready: bool = False
    status: dict[str, object] = field(default_factory=lambda: dict(STATUS))
    resyncs: list[dict[str, object]] = field(default_factory=list)
    resolves: list[dict[str, object]] = field(default_factory=list)
    events: EventLog = field(default_factory=EventLog)
    metrics: ControllerMetrics = field(default_factory=ControllerMetrics)
    status_error: Exception | None = None

    def get_status(self) -> dict[str, object]:
        if self.status_error is not None:
            raise self.status_error
        return self.status

    def resync(self, body: object) -> None:
        assert isinstance(body, dict)
        self.resyncs.append(body)

    def resolve(self, body: object) -> dict[str, object]:
        assert isinstance(body, dict)
        if body.get("host") == "host-404":
            raise NotFoundError("host host-404 is not in the scope of any agency: check the host's moid")
        self.resolves.append(body)
        return {"resolved": [1, 2]}

    def api(self, token: str | None = TOKEN) -> Api:
        return Api(
            status=self.get_status,
            ready=lambda: self.ready,
            metrics=self.metrics.render,
            events=self.events,
            resync=self.resync,
            resolve=self.resolve,
            token=BearerToken(token) if token else None,
        )


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def server(fakes: Fakes) -> Iterator[ApiServer]:
    with ApiServer(fakes.api(), port=0, keepalive=0.3) as running:
        yield running


@pytest.fixture
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_it_listens_on_loopback_on_the_port_it_was_given(server: ApiServer) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0


def test_health_is_ok_and_ready_follows_the_controller(fakes: Fakes, client: httpx.Client) -> None:
    assert client.get("/healthz").text == "ok\n"
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
    fakes.ready = True
    assert client.get("/readyz").json() == {"ready": True}


def test_status_serves_what_the_controller_returns(fakes: Fakes, client: httpx.Client) -> None:
    response = client.get("/api/v1/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == STATUS

    fakes.status_error = TransientError("vCenter vc.example is restarting: retry in a few seconds")
    busy = client.get("/api/v1/status")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "restarting" in busy.json()["error"]

    fakes.status_error = RuntimeError("boom with internals")
    broken = client.get("/api/v1/status")
    assert broken.status_code == 500
    assert "internals" not in broken.text and "controller's log" in broken.json()["error"]


def test_recent_events_as_json(fakes: Fakes, client: httpx.Client) -> None:
    for n in range(5):
        fakes.events.publish("action", f"powered on agent {n}", host=f"host-{n}")
    body = client.get("/api/v1/events", params={"limit": 2}).json()
    assert [e["message"] for e in body["events"]] == ["powered on agent 3", "powered on agent 4"]
    assert body["lastEventId"] == 5
    assert [e["id"] for e in client.get("/api/v1/events?after=3").json()["events"]] == [4, 5]
    assert client.get("/api/v1/events?limit=x").status_code == 400


def test_metrics_parse_as_prometheus_text(fakes: Fakes, client: httpx.Client) -> None:
    fakes.metrics.set_agents_by_state({"contrail": {"green": 3, "red": 1}})
    fakes.metrics.hook_latency.observe(0.3)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse(response.text)
    assert sample(families, "agentvm_agents", agency="contrail", state="red") == 1
    assert sample(families, "agentvm_hook_latency_seconds_count") == 1


# ------------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("path", ["/api/v1/resync", "/api/v1/resolve"])
def test_changes_need_the_bearer_token(fakes: Fakes, client: httpx.Client, path: str) -> None:
    missing = client.post(path, json={})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="agentvm"'
    wrong = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = client.post(path, json={}, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert fakes.resyncs == [] and fakes.resolves == []
    for response in (missing, wrong, basic):
        assert TOKEN not in response.text and "nope" not in response.text


def test_resync_and_resolve_call_the_controller(fakes: Fakes, client: httpx.Client) -> None:
    auth = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    resync = client.post("/api/v1/resync", headers=auth)
    assert resync.status_code == 202 and resync.json() == {"accepted": True}
    assert fakes.resyncs == [{}]

    resolved = client.post("/api/v1/resolve", json={"host": "host-1"}, headers=auth)
    assert resolved.status_code == 200 and resolved.json() == {"resolved": [1, 2]}
    assert fakes.resolves == [{"host": "host-1"}]

    unknown = client.post("/api/v1/resolve", json={"host": "host-404"}, headers=auth)
    assert unknown.status_code == 404 and "host-404" in unknown.json()["error"]
    not_json = client.post("/api/v1/resolve", content=b"{nope", headers=auth)
    assert not_json.status_code == 400
    not_object = client.post("/api/v1/resolve", json=[1], headers=auth)
    assert not_object.status_code == 400 and "object" in not_object.json()["error"]
    too_big = client.post("/api/v1/resolve", content=b" " * (65 * 1024), headers=auth)
    assert too_big.status_code == 413


def test_without_a_token_changes_are_refused(fakes: Fakes) -> None:
    with ApiServer(fakes.api(token=None)) as server:
        response = httpx.post(
            f"{server.url}/api/v1/resync", headers={"Authorization": "Bearer x"}, timeout=10
        )
    assert response.status_code == 403 and "API token" in response.json()["error"]
    assert fakes.resyncs == []


def test_an_action_the_controller_does_not_offer_is_not_implemented(fakes: Fakes) -> None:
    api = Api(
        status=fakes.get_status,
        ready=lambda: True,
        metrics=str,
        events=fakes.events,
        token=BearerToken(TOKEN),
    )
    with ApiServer(api) as server:
        response = httpx.post(
            f"{server.url}/api/v1/resolve", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
    assert response.status_code == 501 and "not offered" in response.json()["error"]


def test_the_token_is_never_logged_or_shown(
    fakes: Fakes, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentvm")
    client.post("/api/v1/resync", headers={"Authorization": f"Bearer {TOKEN}"})
    client.post("/api/v1/resync", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert caplog.records  # requests are logged ...
    assert TOKEN not in caplog.text  # ... without the token
    assert TOKEN not in repr(fakes.api()) and TOKEN not in repr(BearerToken(TOKEN))


def test_wrong_method_unknown_path_and_foreign_host(client: httpx.Client) -> None:
    wrong = client.post("/api/v1/status")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert client.get("/api/v1/nothing").status_code == 404
    assert client.get("/static/../server.py").status_code == 404
    # a page on another site resolving its name to 127.0.0.1 (DNS rebinding) is refused
    assert client.get("/api/v1/status", headers={"Host": "evil.example:80"}).status_code == 421
    assert client.get("/api/v1/status", headers={"Host": "localhost"}).status_code == 200


def test_the_dashboard_is_served_from_the_package(client: httpx.Client) -> None:
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in index.text and "http" not in index.text.replace("http-equiv", "")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    script = client.get("/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")


# ------------------------------------------------------------------------------------------ SSE


class SseReader:
    """Reads a server-sent event stream with http.client, line by line, every read bounded."""

    def __init__(self, server: ApiServer, path: str, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()

    def frame(self) -> list[str]:
        """The lines of the next frame (up to the blank line). TimeoutError after 5 s of silence."""
        lines: list[str] = []
        while True:
            raw = self.response.fp.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if lines:
                    return lines
                continue
            lines.append(line)

    def event(self) -> dict[str, object]:
        """The next frame that carries data, as JSON (skips comments)."""
        while True:
            lines = self.frame()
            data = [line[6:] for line in lines if line.startswith("data: ")]
            if data:
                parsed = json.loads("\n".join(data))
                assert isinstance(parsed, dict)
                return parsed

    def close(self) -> None:
        self.response.close()  # the response holds the socket open too
        self.conn.close()


def test_sse_receives_an_event_published_after_connecting(fakes: Fakes, server: ApiServer) -> None:
    reader = SseReader(server, "/api/v1/events", {"Accept": "text/event-stream"})
    try:
        assert reader.response.status == 200
        assert reader.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert reader.frame() == ["retry: 2000", ": connected"]
        fakes.events.publish("action", "powered on agent VM hello (1)", host="host-21", level="info")
        event = reader.event()
        assert event["message"] == "powered on agent VM hello (1)" and event["host"] == "host-21"
        assert event["id"] == 1
    finally:
        reader.close()


def test_sse_sends_keepalive_comments_while_idle(server: ApiServer) -> None:
    reader = SseReader(server, "/api/v1/events?stream=1")
    try:
        reader.frame()
        started = time.monotonic()
        assert reader.frame() == [": keepalive"]
        assert time.monotonic() - started < 3
    finally:
        reader.close()


def test_sse_resumes_after_the_last_event_id(fakes: Fakes, server: ApiServer) -> None:
    for n in range(4):
        fakes.events.publish("action", f"e{n}")
    reader = SseReader(server, "/api/v1/events?stream=1", {"Last-Event-ID": "2"})
    try:
        reader.frame()
        assert [reader.event()["id"] for _ in range(2)] == [3, 4]
    finally:
        reader.close()


def test_stopping_the_server_ends_open_streams(fakes: Fakes) -> None:
    server = ApiServer(fakes.api(), keepalive=60).start()
    reader = SseReader(server, "/api/v1/events?stream=1")
    reader.frame()
    deadline = time.monotonic() + 5
    while server.streams == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.streams == 1
    ended = threading.Event()

    def read_to_end() -> None:
        try:
            reader.frame()
        except EOFError:
            ended.set()

    thread = threading.Thread(target=read_to_end)
    thread.start()
    started = time.monotonic()
    server.stop(timeout=5)
    assert ended.wait(timeout=5), "the stream did not end when the server stopped"
    assert time.monotonic() - started < 3
    thread.join(timeout=5)
    reader.close()
    assert server.streams == 0 and fakes.events.subscribers == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass


def test_a_client_that_leaves_frees_its_stream(fakes: Fakes, server: ApiServer) -> None:
    reader = SseReader(server, "/api/v1/events?stream=1")
    reader.frame()
    reader.close()
    deadline = time.monotonic() + 5  # noticed at the next keepalive write (0.3 s here)
    while server.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.streams == 0


# ------------------------------------------------------------------------------------------ HEAD


def _raw(
    server: ApiServer, method: str, path: str, accept: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """One request over a bare socket, read to the end: status line, headers (Date left out), body bytes."""
    extra = f"Accept: {accept}\r\n" if accept else ""
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    headers.pop("Date", None)
    return status, headers, body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v1/status", "/api/v1/events", "/metrics", "/"])
def test_head_answers_as_get_without_a_body(fakes: Fakes, server: ApiServer, path: str) -> None:
    fakes.events.publish("action", "powered on agent 1", host="host-1")
    # a GET on each side of the HEAD: what the HEAD answers is compared with a GET that answered the same
    # before and after it (/metrics changes between requests: a counter going from 9 to 10 is one byte more)
    for _ in range(5):
        get_status, get_headers, get_body = _raw(server, "GET", path)
        head_status, head_headers, head_body = _raw(server, "HEAD", path)
        if _raw(server, "GET", path)[:2] == (get_status, get_headers):
            break
    assert get_body  # the GET has a body, of the length both announce
    assert int(get_headers["Content-Length"]) == len(get_body)
    assert (head_status, head_headers, head_body) == (get_status, get_headers, b"")


def test_head_on_the_event_stream_sends_its_headers_and_ends(server: ApiServer) -> None:
    status, headers, body = _raw(server, "HEAD", "/api/v1/events", accept="text/event-stream")
    assert status.endswith("200 OK") and headers["Content-Type"].startswith("text/event-stream")
    assert body == b""
    assert server.streams == 0
