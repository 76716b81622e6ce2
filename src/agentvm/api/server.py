"""The controller's HTTP server: health, status JSON, events (JSON and server-sent), metrics, dashboard.

Started by ``agentvm run``, which supplies everything the server serves as callables and objects in an
``Api`` — the server holds no business logic, so it is tested with fakes and wired by the controller.

Routes (``ApiServer`` binds 127.0.0.1 by default):

=======  =====================  ============================================================================
GET      ``/healthz``           200 while the process serves requests
GET      ``/readyz``            200 once ``Api.ready()`` says so (a first full sync happened), else 503
GET      ``/api/v1/status``     ``Api.status()`` as JSON
GET      ``/api/v1/events``     recent events as JSON (``?limit=``, ``?after=``); as server-sent events with
                                ``Accept: text/event-stream`` or ``?stream=1`` (``Last-Event-ID`` resumes)
GET      ``/metrics``           ``Api.metrics()``, Prometheus text format 0.0.4
POST     ``/api/v1/resync``     ``Api.resync(body)``; needs ``Authorization: Bearer <token>``
POST     ``/api/v1/resolve``    ``Api.resolve(body)``; needs the token too
GET      ``/``, ``/static/*``   the dashboard (files shipped in ``agentvm/api/static``)
=======  =====================  ============================================================================

Errors are JSON ``{"error": "..."}``: agentvm's errors map to 400 (configuration), 404 (not found) and 503
(transient, with ``Retry-After``); anything else is a 500 that says to look at the controller's log (the
details go there, not to the client).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class ApiServer:
    """The HTTP server on its own thread: ``with ApiServer(api) as server: ... server.url``.

    ``host`` is 127.0.0.1 unless told otherwise (the token guards changes, not reads: bind elsewhere only
    behind something that authenticates readers). ``port`` 0 picks a free one. ``keepalive`` is the
    seconds between SSE keepalive comments. On a loopback address, requests whose ``Host`` is not a
    loopback name are refused (a web page cannot reach the API through DNS rebinding).
    """

    def __init__(
        self,
        api: Api,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive: float = 15.0,
        static: StaticFiles | None = None,
    ) -> None:
        self.api = api
        self.keepalive = keepalive
        self.static = static if static is not None else StaticFiles.from_package()
        self._httpd = _HttpServer((host, port), _Handler, self)
        self._thread: threading.Thread | None = None
        self._streams: set[Subscription] = set()
        self._streams_lock = threading.Condition()
        self._stopping = False
        try:
            self.loopback_only = ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback_only = host == "localhost"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> Self:
        """Serve on a daemon thread; returns at once."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="agentvm-api", daemon=True
        )
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
        with self._streams_lock:
            while self._streams and (remaining := deadline - time.monotonic()) > 0:
                self._streams_lock.wait(remaining)
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()

    @property
    def streams(self) -> int:
        """Event streams open now."""
        with self._streams_lock:
            return len(self._streams)

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


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], owner: ApiServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


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
    server: _HttpServer
    server_version = "agentvm"
    sys_version = ""
    timeout = 30  # seconds to send a request: a slow client cannot hold a thread forever

    # -- dispatch -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        try:
            if owner.loopback_only and not self._host_is_loopback():
                raise _HttpError(HTTPStatus.MISDIRECTED_REQUEST, "this API answers on a loopback name only")
            if method == "GET" and path.startswith("/static/"):
                self._static(path.removeprefix("/static/"))
                return
            allowed = _ROUTES.get(path)
            if allowed is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            if method not in allowed:
                raise _HttpError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{path} takes {', '.join(sorted(allowed))}",
                    {"Allow": ", ".join(sorted(allowed))},
                )
            self._route(method, path, query)
        except _HttpError as error:
            self._send_json(error.status, {"error": error.message}, error.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        except Exception:
            log.exception("API request %s %s failed", method, path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error: see the controller's log"}
            )

    def _route(self, method: str, path: str, query: Mapping[str, list[str]]) -> None:
        api = self.server.owner.api
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready = bool(api.ready())
            self._send_json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, {"ready": ready})
        elif path == "/api/v1/status":
            self._send_json(HTTPStatus.OK, _call(api.status))
        elif path == "/metrics":
            self._send(HTTPStatus.OK, api.metrics().encode(), METRICS_CONTENT_TYPE)
        elif path == "/api/v1/events":
            if _wants_stream(self.headers.get("Accept"), query):
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
        token = self.server.owner.api.token
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
        events = self.server.owner.api.events
        limit = _int_param(query, "limit", DEFAULT_EVENTS, 0, events.capacity)
        after = _int_param(query, "after", None, 0, None)
        recent = events.recent(limit, after=after)
        self._send_json(
            HTTPStatus.OK, {"events": [e.as_json() for e in recent], "lastEventId": events.last_id}
        )

    def _stream_events(self, query: Mapping[str, list[str]]) -> None:
        """Server-sent events until the client leaves or the server stops; a comment every keepalive s."""
        owner = self.server.owner
        after = _int_param(query, "after", None, 0, None)
        last_event_id = self.headers.get("Last-Event-ID")
        if last_event_id and last_event_id.strip().isdigit():
            after = int(last_event_id)
        subscription = owner._open_stream(after)
        if subscription is None:
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping")
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.send_header("X-Accel-Buffering", "no")  # proxies must not buffer the stream
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.close_connection = True
            # "retry" tells EventSource how soon to reconnect; the comment opens the stream at once
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            for missed in subscription.backlog:
                self.wfile.write(_sse_frame(missed))
            next_keepalive = time.monotonic() + owner.keepalive
            while True:
                event = subscription.get(timeout=max(0.0, next_keepalive - time.monotonic()))
                if event is not None:
                    self.wfile.write(_sse_frame(event))
                elif subscription.closed:
                    break  # the server is stopping, or this client fell too far behind
                if time.monotonic() >= next_keepalive:
                    self.wfile.write(b": keepalive\n\n")
                    next_keepalive = time.monotonic() + owner.keepalive
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client left
        finally:
            owner._close_stream(subscription)

    def _static(self, name: str) -> None:
        found = self.server.owner.static.get(name)
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
