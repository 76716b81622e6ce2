"""The EAM emulator's HTTP face: SOAP 1.1 POSTs to ``/eam/sdk`` on 127.0.0.1.

``start()`` is called by the lab (``agentvm lab up``) and by tests. The lab's vcsim forwards its own
``/eam/sdk`` route to this server's base URL (``--eam-backend``), so vim25 and EAM share one endpoint and
one session cookie; the path arrives unchanged. Every request is authenticated by its vCenter session
cookie before its body is even parsed.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentvm.engine.api import AgentManager, Caller
from agentvm.lab.eam_emulator import faults, soap
from agentvm.lab.eam_emulator.auth import SessionChecker, VcenterUnreachable, session_cookie
from agentvm.lab.eam_emulator.service import PARAM_TYPES, EamService, SoapFault

log = logging.getLogger(__name__)

SDK_PATHS = frozenset({"/eam/sdk", "/eam/sdk/", "/sdk", "/sdk/"})
MAX_BODY = 16 * 1024 * 1024  # far above any EAM request; a bound so one client cannot exhaust memory


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart binds the same port again at once

    def __init__(
        self,
        address: tuple[str, int],
        service: EamService,
        checker: SessionChecker,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            super().__init__(address, _Handler)
        else:  # a socket bound (and listening) before vcsim started: no other process can take its port
            super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
            self.socket.close()
            self.socket = sock
        self.service = service
        self.checker = checker


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a restarted emulator never leaves clients on a stale socket
    protocol_version = "HTTP/1.0"
    server: _Server

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in SDK_PATHS:
            self._send(404, b"not found: EAM is at /eam/sdk\n", "text/plain")
            return
        version = soap.version_from_soap_action(self.headers.get("SOAPAction"))
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self._send(413, b"request too large\n", "text/plain")
            return
        body = self.rfile.read(length)
        status, payload = self._answer(body, version)
        self._send(status, payload, "text/xml; charset=utf-8")

    def do_GET(self) -> None:
        self._send(405, b"EAM answers SOAP POSTs at /eam/sdk\n", "text/plain")

    def _answer(self, body: bytes, version: str) -> tuple[int, bytes]:
        method = "?"
        try:
            caller = self._caller()
            request = soap.parse_request(body, version, PARAM_TYPES)
            method = request.method
            value, result_type = self.server.service.call(caller, request, version)
            return 200, soap.reply(request.method, value, result_type, version)
        except SoapFault as exc:
            return 500, soap.fault_reply(exc.fault, version)
        except soap.RequestError as exc:
            return 500, soap.fault_reply(faults.invalid_request(str(exc)), version)
        except Exception:
            # a bug: the client gets a short typed fault, the log gets the traceback (no request body,
            # which may hold OVF property values)
            log.exception("EAM emulator: %s failed", method)
            return 500, soap.fault_reply(faults.system_fault(), version)

    def _caller(self) -> Caller:
        cookie = session_cookie(self.headers.get("Cookie"))
        if cookie is None:
            raise SoapFault(faults.invalid_login())
        try:
            caller = self.server.checker(cookie)
        except VcenterUnreachable as exc:
            raise SoapFault(faults.no_connection_to_vcenter(str(exc))) from None
        if caller is None:
            raise SoapFault(faults.invalid_login())
        return caller

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # the default writes every request to stderr; keep it at debug level (no cookies are logged)
        log.debug("EAM emulator %s: " + format, self.address_string(), *args)


@dataclass
class EmulatorServer:
    """A running emulator. ``url`` is the base URL (vcsim's ``--eam-backend``)."""

    host: str
    port: int
    service: EamService
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port; idempotent. Returns once the serving thread has ended."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start(
    agent_manager: AgentManager,
    session_checker: SessionChecker,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
) -> EmulatorServer:
    """Serve EAM for ``agent_manager`` on ``host:port`` (port 0: a free one) in a background thread.

    Give a port to start again where a stopped emulator was, or ``sock``, a listening loopback socket the
    caller bound earlier (its port told to vcsim before EAM could log in). Raises ValueError for a host
    other than loopback, and OSError when the port cannot be bound.
    """
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the EAM emulator listens on loopback only, not {host!r}")
    service = EamService(agent_manager)
    server = _Server((host, port), service, session_checker, sock)
    bound_port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},  # how soon stop() is noticed
        name=f"eam-emulator-{bound_port}",
        daemon=True,
    )
    thread.start()
    return EmulatorServer("127.0.0.1", int(bound_port), service, server, thread)
