"""An emulator of one vRouter agent's port API (the agent listens on 9091; here loopback, any port).

Used by the integration tests, the netsync benchmark and ``agentvm lab up`` (one per host). It validates a
port the way the agent's ``PortIpcHandler::MakeAddVmiUuidRequest`` does: every field present, strings where
it wants strings, integers where it wants integers (``type``, ``rx-vlan-id``, ``tx-vlan-id``,
``vhostuser-mode``), uuids that parse, a MAC with five colons that is not all zero; an array is all or
nothing. Differences, on purpose: the real agent answers a bad port and an unknown port with 500, the
emulator with 400 and 404; ``vhostuser-mode`` is optional for the agent, required here (agentvm sends it).

A remote port (``type`` 2, an ESXi VM) starts disabled, as in the agent. ``GET /port/{id}`` reads one port
(as the agent does, with ``link-state``); ``GET /ports`` (emulator only) lists them all for tests, and
``RunningAgent.journal()`` tells which calls came when.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Json = dict[str, Any]

STRING_FIELDS = ("display-name", "ip-address", "ip6-address", "system-name", "mac-address")
UUID_FIELDS = ("id", "instance-id", "vn-id", "vm-project-id")
INT_FIELDS = ("type", "rx-vlan-id", "tx-vlan-id", "vhostuser-mode")
_UUID_PATH = re.compile(
    r"^/(port|enable-port|disable-port)/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
REMOTE_PORT = 2
JOURNAL_MAX = 100_000  # calls remembered for tests (when, what); the benchmark's 2,500 hosts stay bounded


class PortError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def validate_port(body: Any) -> Json:
    """The port as the agent would store it, or PortError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise PortError(400, "Unexpected Json string")
    for name in UUID_FIELDS:
        value = body.get(name)
        if not isinstance(value, str):
            raise PortError(400, f"Invalid or missing data for <{name}>")
        try:
            uuidlib.UUID(value)
        except ValueError as exc:
            raise PortError(400, f"Invalid or missing data for <{name}>") from exc
    for name in STRING_FIELDS:
        if not isinstance(body.get(name), str):
            raise PortError(400, f"Invalid or missing field for <{name}>")
    for name in INT_FIELDS:
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PortError(400, f"Invalid or missing field for <{name}>")
    mac = body["mac-address"]
    if mac.count(":") != 5 or not re.fullmatch(r"[0-9a-fA-F:]{17}", mac) or set(mac) <= {"0", ":"}:
        raise PortError(400, "Invalid MAC, Use xx:xx:xx:xx:xx:xx format")
    if uuidlib.UUID(body["id"]).int == 0:
        raise PortError(400, "Invalid or missing data for <id>")
    if body["type"] != REMOTE_PORT and uuidlib.UUID(body["vn-id"]).int == 0:
        raise PortError(400, "Invalid VN uuid")
    port = {name: body[name] for name in (*UUID_FIELDS, *STRING_FIELDS, *INT_FIELDS)}
    link_state = body.get("link-state")
    port["link-state"] = (
        link_state if isinstance(link_state, int) else (0 if body["type"] == REMOTE_PORT else 1)
    )
    return port


@dataclass
class VrouterAgentState:
    """The ports of one emulated agent, guarded by a lock (the server is threaded)."""

    ports: dict[str, Json] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    journal: list[tuple[float, str, str]] = field(default_factory=list)  # (perf_counter, method, path)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            with state.lock:
                state.calls += 1
                if len(state.journal) < JOURNAL_MAX:
                    state.journal.append((time.perf_counter(), method, self.path))
                self._reply(200, self._route(state, method, raw))
        except PortError as exc:
            self._reply(exc.status, {"error": str(exc)})

    def _route(self, state: VrouterAgentState, method: str, raw: bytes) -> Any:
        if method == "POST" and self.path == "/port":
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise PortError(400, "Invalid Json string") from exc
            items = body if isinstance(body, list) else [body]
            ports = [validate_port(item) for item in items]  # all or nothing, like the agent
            for port in ports:
                state.ports[port["id"]] = port
            return {}
        if method == "GET" and self.path == "/ports":
            return sorted(state.ports.values(), key=lambda p: p["id"])
        match = _UUID_PATH.match(self.path)
        if match is None:
            raise PortError(404, "Unknown Request")
        verb, port_id = match.groups()
        if verb == "port" and method == "DELETE":
            state.ports.pop(port_id, None)
            return {}
        if verb == "port" and method == "GET":
            if port_id not in state.ports:
                raise PortError(404, "{ Not Found }")
            return state.ports[port_id]
        if verb in ("enable-port", "disable-port") and method == "PUT":
            stored = state.ports.get(port_id)
            if stored is None:
                raise PortError(404, f"Port Not found {port_id}")
            if stored["type"] != REMOTE_PORT:
                raise PortError(400, f"Incorrect Port type for {port_id}")
            stored["link-state"] = 1 if verb == "enable-port" else 0
            return {}
        raise PortError(404, "Unknown Request")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.state = VrouterAgentState()


@dataclass
class RunningAgent:
    """A started agent emulator for ``host``; ``ports()`` is the in-process view for tests."""

    host: str
    url: str
    _server: _Server
    _thread: threading.Thread

    def ports(self) -> dict[str, Json]:
        with self._server.state.lock:
            return {k: dict(v) for k, v in self._server.state.ports.items()}

    def journal(self) -> list[tuple[float, str, str]]:
        """Every call so far: (``time.perf_counter()`` when it arrived, method, path), oldest first. Tests
        compare it with the calls they see elsewhere in the same process (e.g. vCenter's)."""
        with self._server.state.lock:
            return list(self._server.state.journal)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start(host: str = "host", bind: str = "127.0.0.1", port: int = 0) -> RunningAgent:
    """Serve one agent's port API on ``bind:port`` (port 0: any free port); ``host`` is the host's moid."""
    server = _Server((bind, port))
    thread = threading.Thread(target=server.serve_forever, name=f"vrouter-agent-emulator-{host}", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return RunningAgent(host, f"http://{bound_host!s}:{bound_port}", server, thread)


def start_many(hosts: list[str]) -> dict[str, RunningAgent]:
    """One emulated agent per host moid."""
    return {host: start(host) for host in hosts}


def stop_many(agents: list[RunningAgent]) -> None:
    """Stop many agents at once (``Lab.stop``): each ``stop()`` waits up to the server's 0.5 s poll
    interval, so one after the other 2,500 hosts took ~20 minutes; in parallel it takes seconds."""
    if not agents:
        return
    with ThreadPoolExecutor(max_workers=min(256, len(agents)), thread_name_prefix="vrouter-stop") as pool:
        for future in [pool.submit(agent.stop) for agent in agents]:
            future.result()
