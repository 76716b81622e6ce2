"""The controller's HTTP server: health, status JSON, events (JSON and server-sent), metrics, dashboard.

Started by ``agentvm run``, which supplies everything the server serves as callables and objects in an
``Api`` — the server holds no business logic, so it is tested with fakes and wired by the controller.

Routes (``ApiServer`` binds 127.0.0.1 by default):

=======  =====================  ============================================================================
GET      ``/healthz``           200 while the process serves requests (never refused, never queued)
GET      ``/readyz``            200 once ``Api.ready()`` says so (a first full sync happened), else 503;
                                the body says why (``Api.readiness``: each controller's role, when set)
GET      ``/api/v1/status``     ``Api.status()`` as JSON
GET      ``/api/v1/events``     recent events as JSON (``?limit=``, ``?after=``); as server-sent events with
                                ``Accept: text/event-stream`` or ``?stream=1`` (``Last-Event-ID`` resumes)
GET      ``/metrics``           ``Api.metrics()``, Prometheus text format 0.0.4
POST     ``/api/v1/resync``     ``Api.resync(body)``; needs ``Authorization: Bearer <token>``
POST     ``/api/v1/resolve``    ``Api.resolve(body)``; needs the token too
GET      ``/``, ``/static/*``   the dashboard (files shipped in ``agentvm/api/static``)
=======  =====================  ============================================================================

``HEAD`` is answered on every ``GET`` route with the same status and headers and no body.

Errors are JSON ``{"error": "..."}``: agentvm's errors map to 400 (configuration), 404 (not found) and 503
(transient, with ``Retry-After``); anything else is a 500 that says to look at the controller's log (the
details go there, not to the client).

Load (``Limits``): one thread, the acceptor, holds every connection that has not sent its whole request
head yet (up to ``max_waiting`` of them, each for ``header_timeout`` s: an idle or slow client costs a
socket, never a thread). It answers ``/healthz``, refusals and malformed requests itself, so that health
never waits behind anything, and hands every other request to a thread of its own: at most
``max_streams`` event streams and ``max_requests`` other requests at once, the next one is answered 503
with ``Retry-After``. A stream's writer checks every ``liveness`` s that its client is still connected and
ends (unsubscribing) when it is not; a client that stops reading is dropped after ``io_timeout`` s.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import json
import logging
import re
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

from agentvm.api.auth import BearerToken, Check
from agentvm.api.static import StaticFiles
from agentvm.controller.events import Event, EventLog, Subscription
from agentvm.controller.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]
MAX_BODY = 64 * 1024  # resync and resolve take small JSON objects
DEFAULT_EVENTS = 100
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_HEAD = 72 * 1024  # request line and headers (http.server itself takes 64 KiB a line and 100 headers)
LINGER = 2.0  # s an answered connection is read and discarded before it is closed (see _Acceptor._answer)
BACKLOG = 1024  # connections the kernel queues before the acceptor takes them (capped by somaxconn)
ACCEPTS_PER_TURN = 64  # new connections taken per turn of the acceptor, between reads of waiting ones
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Limits:
    """How much the server takes at once; ``agentvm run --max-streams/--max-requests`` set the first two.

    ``max_streams`` event streams and ``max_requests`` other requests (status, metrics, events as JSON,
    resync, resolve, the dashboard's files) are served at once, each on its own thread; one more is
    answered 503 with ``Retry-After: retry_after``. ``/healthz`` is never counted: the acceptor answers it.
    ``max_waiting`` connections may be still sending their request head, for ``header_timeout`` s each (no
    thread: one more closes the oldest). A request's reads and writes give up after ``io_timeout`` s (a
    client that stops reading its stream). A stream checks every ``liveness`` s that its client is there.
    ValueError for a limit below 1 or a time that is not positive.
    """

    max_streams: int = 64
    max_requests: int = 32
    max_waiting: int = 256
    header_timeout: float = 10.0
    io_timeout: float = 30.0
    liveness: float = 1.0
    retry_after: int = 5

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_requests", "max_waiting", "retry_after"):
            if getattr(self, name) < 1:
                raise ValueError(f"the API's {name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "io_timeout", "liveness"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the API's {name} must be more than 0 s, got {getattr(self, name)}")


class _Lane(Enum):
    """The limit a request handed off by the acceptor is counted against: event streams, or the others."""

    STREAM = "stream"
    REQUEST = "request"


@dataclass(frozen=True)
class Api:
    """What the server serves. Each callable is called on a request thread and must be thread-safe.

    ``status`` returns the status document; ``ready`` says whether a first full sync happened; ``metrics``
    renders the Prometheus text; ``resync`` and ``resolve`` take the request's JSON object (``{}`` when the
    body is empty) and return a JSON object or None (then ``{"accepted": true}``, 202). They may raise
    agentvm errors, or ValueError for a request they cannot take (400); left None, the endpoint answers
    501. ``token`` None refuses every POST (403).
    """

    status: Callable[[], JsonObject]
    ready: Callable[[], bool]
    metrics: Callable[[], str]
    events: EventLog
    resync: Callable[[JsonObject], JsonObject | None] | None = None  # None: 501
    resolve: Callable[[JsonObject], JsonObject | None] | None = None
    token: BearerToken | None = field(default=None, repr=False)
    readiness: Callable[[], JsonObject] | None = (
        None  # /readyz's body (with "ready"); None: {"ready": ready()}
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (IPv4 or IPv6 literal, or a name) and ``port`` (0: any free one).

    OSError when the address cannot be bound (in use, not on this machine, no IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class ApiServer:
    """The HTTP server on its own thread: ``with ApiServer(api) as server: ... server.url``.

    ``host`` is 127.0.0.1 unless told otherwise (the token guards changes, not reads: bind elsewhere only
    behind something that authenticates readers). ``port`` 0 picks a free one. ``keepalive`` is the
    seconds between SSE keepalive comments; ``limits`` bound what it serves at once (see ``Limits``). On a
    loopback address, requests whose ``Host`` is not a loopback name are refused (a web page cannot reach
    the API through DNS rebinding). OSError when the address cannot be bound. ``listener``: a socket from
    ``bind`` (``agentvm run`` binds before it logs in, so that a busy port fails first); the server owns
    and closes it.
    """

    def __init__(
        self,
        api: Api,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive: float = 15.0,
        static: StaticFiles | None = None,
        limits: Limits | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        self.api = api
        self.keepalive = keepalive
        self.static = static if static is not None else StaticFiles.from_package()
        self.limits = limits if limits is not None else Limits()
        self._listener = listener if listener is not None else bind(host, port)
        host = str(self._listener.getsockname()[0])
        self._acceptor = _Acceptor(self, self._listener)
        self._thread: threading.Thread | None = None
        self._streams: set[Subscription] = set()
        self._streams_lock = threading.Condition()
        self._stopping = False
        self._admission = threading.Lock()
        self._busy = {_Lane.STREAM: 0, _Lane.REQUEST: 0}
        self._refused = 0
        self._refusal_logged = 0.0
        try:
            self.loopback_only = ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback_only = host == "localhost"

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        host = str(self._listener.getsockname()[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> Self:
        """Serve on a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self._acceptor.run, name="agentvm-api", daemon=True)
        self._thread.start()
        log.info("API listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End every event stream, stop accepting, close the socket; waits up to ``timeout`` s for streams."""
        with self._streams_lock:
            self._stopping = True
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        deadline = time.monotonic() + timeout
        self._acceptor.stop()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        else:
            self._acceptor.close()
        with self._streams_lock:
            while self._streams and (remaining := deadline - time.monotonic()) > 0:
                self._streams_lock.wait(remaining)

    @property
    def streams(self) -> int:
        """Event streams open now."""
        with self._streams_lock:
            return len(self._streams)

    @property
    def requests(self) -> int:
        """Requests other than streams being served now, on their threads."""
        with self._admission:
            return self._busy[_Lane.REQUEST]

    @property
    def waiting(self) -> int:
        """Connections held by the acceptor: still sending their request head, or just answered."""
        return self._acceptor.held

    @property
    def refused(self) -> int:
        """Requests answered 503 because ``max_streams`` or ``max_requests`` were being served."""
        with self._admission:
            return self._refused

    def _hand_off(self, lane: _Lane, conn: socket.socket, address: tuple[str, int], head: bytes) -> None:
        """Serve a request on a thread of its own if ``lane`` has room, else _HttpError 503. Acceptor only."""
        limit = self.limits.max_streams if lane is _Lane.STREAM else self.limits.max_requests
        with self._admission:
            if self._busy[lane] >= limit:
                self._refused += 1
                refused, now = self._refused, time.monotonic()
                full = True
            else:
                self._busy[lane] += 1
                full = False
        if full:
            if now - self._refusal_logged >= 60:  # one line a minute, however many are refused
                self._refusal_logged = now
                log.warning("API at its limit of %d %ss: %d refused so far", limit, lane.value, refused)
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                _full_message(lane, limit, self.limits.retry_after),
                self._retry(),
            )
        thread = threading.Thread(
            target=self._serve_connection, args=(lane, conn, address, head), name=f"agentvm-api-{lane.value}"
        )
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError:  # the process cannot start another thread
            self._release(lane)
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, "the server cannot take more requests now", self._retry()
            ) from None

    def _serve_connection(
        self, lane: _Lane, conn: socket.socket, address: tuple[str, int], head: bytes
    ) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(self.limits.io_timeout)
            _Handler(self, conn, address, head, admitted=True)
        except Exception:
            log.exception("API connection from %s failed", address[0])
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()
            self._release(lane)

    def _release(self, lane: _Lane) -> None:
        with self._admission:
            self._busy[lane] -= 1

    def _retry(self) -> dict[str, str]:
        return {"Retry-After": str(self.limits.retry_after)}

    def _open_stream(self, after: int | None) -> Subscription | None:
        """A subscription registered for closing on stop; None once stopping."""
        with self._streams_lock:
            if self._stopping:
                return None
            subscription = self.api.events.subscribe(after=after)
            self._streams.add(subscription)
            return subscription

    def _close_stream(self, subscription: Subscription) -> None:
        subscription.close()
        with self._streams_lock:
            self._streams.discard(subscription)
            self._streams_lock.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class _Waiting:
    """A connection still sending its request head."""

    address: tuple[str, int]
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class _Accept:
    """Sentinel selector data: the listening socket."""


class _Wake:
    """Sentinel selector data: the socket ``stop`` writes to."""


class _Acceptor:
    """The server's one thread for connections without a thread: accepts them, reads their request heads
    without blocking, answers what costs nothing (``/healthz``, refusals, errors) and hands the rest to
    ``ApiServer._hand_off``. Connections it answered are read until the client closes, at most ``LINGER``
    s (closing one with unread data would reset it and lose the answer). Everything here runs on the
    acceptor's thread except ``stop``, ``close`` and ``held``.
    """

    def __init__(self, owner: ApiServer, listener: socket.socket) -> None:
        self._owner = owner
        self._limits = owner.limits
        self._listener = listener
        listener.setblocking(False)
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _Accept)
        self._selector.register(self._wake_read, selectors.EVENT_READ, _Wake)
        self._waiting: dict[socket.socket, _Waiting] = {}  # oldest first: all wait header_timeout
        self._lingering: dict[socket.socket, float] = {}  # oldest first: deadlines
        self._paused_until: float | None = None  # accept() ran out of file descriptors
        self._stopped = threading.Event()
        self._closed = False

    @property
    def held(self) -> int:
        return len(self._waiting) + len(self._lingering)

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                now = time.monotonic()
                self._expire(now)
                for key, _ in self._selector.select(self._next_timeout(now)):
                    if key.data is _Accept:
                        self._accept()
                    elif key.data is _Wake:
                        with contextlib.suppress(OSError):
                            self._wake_read.recv(64)
                    elif isinstance(key.fileobj, socket.socket):
                        try:
                            self._readable(key.fileobj)
                        except Exception:  # one connection's trouble must not stop the others
                            log.exception("API: a connection from %s failed", key.fileobj)
                            self._waiting.pop(key.fileobj, None)
                            self._drop(key.fileobj)
        except Exception:
            log.exception("the API's acceptor failed: the API no longer answers")
        finally:
            self.close()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def close(self) -> None:
        """Close the listening socket and every connection held (after ``run`` ends, or instead of it)."""
        if self._closed:
            return
        self._closed = True
        for conn in [*self._waiting, *self._lingering]:
            conn.close()
        self._waiting.clear()
        self._lingering.clear()
        self._selector.close()
        for sock in (self._listener, self._wake_read, self._wake_write):
            sock.close()

    # -- the loop's steps -----------------------------------------------------------------------------

    def _next_timeout(self, now: float) -> float:
        deadlines = [1.0 + now]
        if self._waiting:
            deadlines.append(next(iter(self._waiting.values())).deadline)
        if self._lingering:
            deadlines.append(next(iter(self._lingering.values())))
        if self._paused_until is not None:
            deadlines.append(self._paused_until)
        return max(0.0, min(deadlines) - now)

    def _expire(self, now: float) -> None:
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, _Accept)
        while self._waiting:
            conn, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                break
            del self._waiting[conn]
            if waiting.head:  # it started a request: say why it ends
                self._answer(
                    conn, _error_response(HTTPStatus.REQUEST_TIMEOUT, "the request head took too long")
                )
            else:
                self._drop(conn)
        while self._lingering:
            conn, deadline = next(iter(self._lingering.items()))
            if deadline > now:
                break
            self._drop(conn)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                conn, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                out_of_descriptors = error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
                # free one if it can, else stop accepting for a moment (the listener would stay readable
                # and spin this loop)
                if out_of_descriptors and not self._evict():
                    log.warning("API: cannot accept connections (%s): pausing", error.strerror)
                    self._selector.unregister(self._listener)
                    self._paused_until = time.monotonic() + 0.1
                return
            conn.setblocking(False)
            if self.held >= self._limits.max_waiting:
                self._evict()
            self._waiting[conn] = _Waiting(address, time.monotonic() + self._limits.header_timeout)
            self._selector.register(conn, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Make room for one connection: close the oldest answered one, else the oldest waiting one
        (after one last read: its head may have arrived). False: nothing held."""
        if self._lingering:
            self._drop(next(iter(self._lingering)))
            return True
        if self._waiting:
            conn = next(iter(self._waiting))
            self._readable(conn)
            if conn in self._waiting:
                del self._waiting[conn]
                self._drop(conn)
            return True
        return False

    def _readable(self, conn: socket.socket) -> None:
        waiting = self._waiting.get(conn)
        if waiting is None and conn not in self._lingering:
            return  # handed off or dropped earlier in this turn (by _evict): no longer the acceptor's
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if waiting is None:  # lingering: discard what it sends until it closes
            if not chunk:
                self._drop(conn)
            return
        if not chunk:
            del self._waiting[conn]
            self._drop(conn)
            return
        start = max(0, len(waiting.head) - 3)
        waiting.head += chunk
        if _HEAD_END.search(waiting.head, start) is None:
            if len(waiting.head) > MAX_HEAD:
                del self._waiting[conn]
                message = f"the request line and headers are limited to {MAX_HEAD} bytes"
                self._answer(conn, _error_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, message))
            return
        del self._waiting[conn]
        self._selector.unregister(conn)  # from here a worker may own it
        try:
            handler = _Handler(self._owner, conn, waiting.address, bytes(waiting.head), admitted=False)
        except Exception:  # http.server's own parsing failed: nothing was handed off
            conn.close()
            raise
        if not handler.handed_off:
            self._selector.register(conn, selectors.EVENT_READ)
            self._answer(conn, handler.output)

    def _answer(self, conn: socket.socket, response: bytes) -> None:
        """Send a short response without blocking, then linger; a response that does not fit at once in
        the socket's buffer (never, for the few hundred bytes answered here) is dropped with the
        connection."""
        try:
            sent = conn.send(response) if response else 0
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            sent = -1
        if sent != len(response):
            self._drop(conn)
        else:
            self._lingering[conn] = time.monotonic() + LINGER

    def _drop(self, conn: socket.socket) -> None:
        self._lingering.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)  # KeyError: not registered (being handed off)
        conn.close()


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


_ROUTES: Mapping[str, frozenset[str]] = {
    "/healthz": frozenset({"GET"}),
    "/readyz": frozenset({"GET"}),
    "/api/v1/status": frozenset({"GET"}),
    "/api/v1/events": frozenset({"GET"}),
    "/metrics": frozenset({"GET"}),
    "/api/v1/resync": frozenset({"POST"}),
    "/api/v1/resolve": frozenset({"POST"}),
    "/": frozenset({"GET"}),
}

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


class _Handler(BaseHTTPRequestHandler):
    """One request, whose head has arrived whole. Made twice for a request served on a thread: first by
    the acceptor (``admitted`` False: reads the head from memory, writes into ``output``), which answers
    ``/healthz`` and errors there or hands the request to ``ApiServer._hand_off``; then on that thread
    (``admitted`` True: on the socket, with the head read before the socket's own bytes)."""

    server_version = "agentvm"
    sys_version = ""

    def __init__(
        self, owner: ApiServer, conn: socket.socket, address: tuple[str, int], head: bytes, *, admitted: bool
    ) -> None:
        # BaseRequestHandler's constructor wants a socketserver; this is what it does, on an ApiServer
        self.owner = owner
        self.request = self.connection = conn
        self.client_address = address
        self.admitted = admitted
        self.handed_off = False
        self.head_only = False  # a HEAD request: headers as for GET, no body
        self.output = b""
        self._head = head
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        if self.admitted:
            self.rfile = io.BufferedReader(_Prefixed(self._head, self.connection))
            self.wfile = _SocketWriter(self.connection)
        else:
            self.rfile = io.BytesIO(self._head)
            self.wfile = self._buffer = io.BytesIO()

    def finish(self) -> None:
        if not self.admitted:
            self.output = self._buffer.getvalue()
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.wfile.close()
        self.rfile.close()

    # -- dispatch -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        """HEAD is GET without the body (RFC 9110): same status and headers, Content-Length included."""
        self.head_only = True
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        owner = self.owner
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        try:
            if owner.loopback_only and not self._host_is_loopback():
                raise _HttpError(HTTPStatus.MISDIRECTED_REQUEST, "this API answers on a loopback name only")
            static = method == "GET" and path.startswith("/static/")
            allowed = frozenset({"GET"}) if static else _ROUTES.get(path)
            if allowed is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            if method not in allowed:
                raise _HttpError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{path} takes {', '.join(sorted(allowed))}",
                    {"Allow": ", ".join(sorted(allowed))},
                )
            if not self.admitted and path != "/healthz":
                # on the acceptor: only /healthz and errors are answered here, never the controller's code
                stream = path == "/api/v1/events" and _wants_stream(self.headers.get("Accept"), query)
                lane = _Lane.STREAM if stream else _Lane.REQUEST
                owner._hand_off(lane, self.connection, self.client_address, self._head)
                self.handed_off = True
                return
            if static:
                self._static(path.removeprefix("/static/"))
            else:
                self._route(method, path, query)
        except _HttpError as error:
            self._send_json(error.status, {"error": error.message}, error.headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client left, or stopped reading or sending for io_timeout s
        except Exception:
            log.exception("API request %s %s failed", method, path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error: see the controller's log"}
            )

    def _route(self, method: str, path: str, query: Mapping[str, list[str]]) -> None:
        api = self.owner.api
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            readiness = dict(api.readiness()) if api.readiness is not None else {"ready": bool(api.ready())}
            ready = bool(readiness.get("ready"))
            self._send_json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, readiness)
        elif path == "/api/v1/status":
            self._send_json(HTTPStatus.OK, _call(api.status))
        elif path == "/metrics":
            self._send(HTTPStatus.OK, api.metrics().encode(), METRICS_CONTENT_TYPE)
        elif path == "/api/v1/events":
            if _wants_stream(self.headers.get("Accept"), query) and self.head_only:
                self._stream_headers()  # no stream: a HEAD ends with the headers
            elif _wants_stream(self.headers.get("Accept"), query):
                self._stream_events(query)
            else:
                self._recent_events(query)
        elif path in ("/api/v1/resync", "/api/v1/resolve"):
            self._authorize()
            body = self._read_json()
            action = api.resync if path == "/api/v1/resync" else api.resolve
            if action is None:
                raise _HttpError(HTTPStatus.NOT_IMPLEMENTED, f"{path} is not offered by this server")
            result = _call(lambda: action(body))
            if result is None:
                self._send_json(HTTPStatus.ACCEPTED, {"accepted": True})
            else:
                self._send_json(HTTPStatus.OK, result)
        elif path == "/":
            self._static("index.html")

    # -- pieces ---------------------------------------------------------------------------------------

    def _host_is_loopback(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if ":" in host else host
        return name.lower() in LOOPBACK_NAMES

    def _authorize(self) -> None:
        token = self.owner.api.token
        if token is None:
            raise _HttpError(
                HTTPStatus.FORBIDDEN,
                "changes through the API are disabled: start `agentvm run` with an API token",
            )
        check = token.check(self.headers.get("Authorization"))
        if check is Check.MISSING:
            raise _HttpError(
                HTTPStatus.UNAUTHORIZED,
                "this endpoint needs 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="agentvm"'},
            )
        if check is Check.INVALID:
            raise _HttpError(
                HTTPStatus.UNAUTHORIZED,
                "the bearer token is not valid",
                {"WWW-Authenticate": 'Bearer realm="agentvm", error="invalid_token"'},
            )

    def _read_json(self) -> JsonObject:
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        if length < 0 or length > MAX_BODY:
            raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is limited to {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def _recent_events(self, query: Mapping[str, list[str]]) -> None:
        events = self.owner.api.events
        limit = _int_param(query, "limit", DEFAULT_EVENTS, 0, events.capacity)
        after = _int_param(query, "after", None, 0, None)
        recent = events.recent(limit, after=after)
        self._send_json(
            HTTPStatus.OK, {"events": [e.as_json() for e in recent], "lastEventId": events.last_id}
        )

    def _stream_events(self, query: Mapping[str, list[str]]) -> None:
        """Server-sent events until the client leaves or the server stops; a comment every keepalive s."""
        owner = self.owner
        after = _int_param(query, "after", None, 0, None)
        last_event_id = self.headers.get("Last-Event-ID")
        if last_event_id and last_event_id.strip().isdigit():
            after = int(last_event_id)
        subscription = owner._open_stream(after)
        if subscription is None:
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping")
        try:
            self._stream_headers()
            # "retry" tells EventSource how soon to reconnect; the comment opens the stream at once
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            for missed in subscription.backlog:
                self.wfile.write(_sse_frame(missed))
            next_keepalive = time.monotonic() + owner.keepalive
            next_check = time.monotonic() + owner.limits.liveness
            while True:
                wait = min(next_keepalive, next_check) - time.monotonic()
                event = subscription.get(timeout=max(0.0, wait))
                if event is not None:
                    self.wfile.write(_sse_frame(event))
                elif subscription.closed:
                    break  # the server is stopping, or this client fell too far behind
                now = time.monotonic()
                if now >= next_check:
                    # a write to a client that left succeeds until its RST comes back: ask the socket
                    if _client_gone(self.connection):
                        break
                    next_check = now + owner.limits.liveness
                if now >= next_keepalive:
                    self.wfile.write(b": keepalive\n\n")
                    next_keepalive = now + owner.keepalive
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client left, or stopped reading for io_timeout s
        finally:
            owner._close_stream(subscription)

    def _stream_headers(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")  # proxies must not buffer the stream
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True

    def _static(self, name: str) -> None:
        found = self.owner.static.get(name)
        if found is None:
            raise _HttpError(HTTPStatus.NOT_FOUND, f"no such file: /static/{name}")
        content, content_type = found
        self._send(HTTPStatus.OK, content, content_type, {"Cache-Control": "no-cache"})

    # -- responses ------------------------------------------------------------------------------------

    def _send_json(self, status: HTTPStatus, body: object, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"
        self._send(status, data, "application/json", {"Cache-Control": "no-store", **(headers or {})})

    def _send(
        self, status: HTTPStatus, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # the request line and status only: never headers (the token travels in one)
        log.debug("API %s - %s", self.address_string(), format % args)


def _call(func: Callable[[], JsonObject | None]) -> JsonObject | None:
    """Call a supplied callable, mapping agentvm's errors to HTTP ones (messages are meant for users)."""
    try:
        return func()
    except NotFoundError as error:
        raise _HttpError(HTTPStatus.NOT_FOUND, str(error)) from None
    except (ConfigurationError, ValueError) as error:
        raise _HttpError(HTTPStatus.BAD_REQUEST, str(error)) from None
    except TransientError as error:
        raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, str(error), {"Retry-After": "5"}) from None
    except AuthenticationError as error:
        # the controller's own login to vCenter failed: the client can do nothing but wait
        raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, str(error), {"Retry-After": "30"}) from None
    except AgentvmError as error:
        raise _HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, str(error)) from None


def _wants_stream(accept: str | None, query: Mapping[str, list[str]]) -> bool:
    if query.get("stream", [""])[-1].lower() in ("1", "true", "yes"):
        return True
    return bool(accept) and "text/event-stream" in (accept or "").lower()


def _int_param(
    query: Mapping[str, list[str]], name: str, default: int | None, low: int, high: int | None
) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"?{name}= must be a whole number") from None
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"?{name}= must be {limit}")
    return value


def _sse_frame(event: Event) -> bytes:
    """One server-sent event: its id (for Last-Event-ID) and its JSON on one ``data:`` line."""
    data = json.dumps(event.as_json(), separators=(",", ":"), default=str)
    return f"id: {event.id}\ndata: {data}\n\n".encode()


def _full_message(lane: _Lane, limit: int, retry_after: int) -> str:
    if lane is _Lane.STREAM:
        return (
            f"{limit} event streams are open, the most this server serves (agentvm run --max-streams): "
            f"retry in {retry_after} s"
        )
    return (
        f"{limit} requests are being answered, the most this server takes at once "
        f"(agentvm run --max-requests): retry in {retry_after} s"
    )


def _error_response(status: HTTPStatus, message: str) -> bytes:
    """A whole JSON error response, for a connection whose request could not be parsed (acceptor only)."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    head = [f"HTTP/1.0 {status.value} {status.phrase}", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store"]
    head += [f"{name}: {value}" for name, value in _SECURITY_HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _client_gone(conn: socket.socket) -> bool:
    """Whether the peer closed or reset the connection (it sends nothing once it sent its request)."""
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLERR | select.POLLHUP)
    if not poller.poll(0):
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""  # readable: EOF, or bytes a client should not send
    except OSError:
        return True


class _Prefixed(io.RawIOBase):
    """A socket's bytes after ``prefix`` (the head the acceptor read). Closing it leaves the socket open."""

    def __init__(self, prefix: bytes, conn: socket.socket) -> None:
        self._prefix = memoryview(prefix)
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        return self._conn.recv_into(buffer)


class _SocketWriter(io.BufferedIOBase):
    """Writes straight to the socket, whole (``sendall``: a socket's ``write`` may send part)."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._conn.sendall(data)
        return len(data)
