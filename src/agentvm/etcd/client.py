"""A small, typed, counted client of etcd v3 over etcd3gw: what ``controller.leadership`` needs, nothing more.

Every request goes through ``EtcdClient._call``, which counts it by name in ``calls`` (the figure "calls to
etcd per replica per minute"), serialises requests (one HTTP session per client; callers are the
Coordinator's loop and the threads that stop or release), bounds each by ``timeout`` seconds and turns
any failure into ``EtcdError`` (transient, naming the endpoint). With several endpoints (members of one etcd
cluster, any of which answers linearizably), a request that cannot reach one is sent to the next, each
endpoint at most once per request, and the client stays on the one that answered. Retrying is safe for
the Coordinator: a keepalive's fence deadline counts from when the first attempt began (earlier than
the one that succeeded), a create that did land the first time is seen as held by the caller's own
lease, and the other writes are idempotent.

Why etcd3gw (pinned in pyproject): it is maintained (OpenStack's tooz uses it), pure Python over etcd's
JSON gateway with ``requests`` (no grpc wheel to build), and works with etcd 3.4 as Debian ships it.
python-etcd3 speaks grpc and has had no release since 2020; aetcd is asyncio, and agentvm's controller
runs on threads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import etcd3gw

from agentvm.model.coordination import Endpoint
from agentvm.model.errors import TransientError

T = TypeVar("T")

_UNREACHABLE = (etcd3gw.exceptions.ConnectionFailedError, etcd3gw.exceptions.ConnectionTimeoutError)

API_PATH = "/v3/"  # etcd >= 3.4; fixed, so that no request is spent discovering it


class EtcdError(TransientError):
    """etcd could not be reached, or refused a request; ``str()`` names the endpoint and the cause."""


@dataclass(frozen=True)
class Entry:
    """One key as etcd holds it: its value, the lease it is attached to (0: none) and its revisions."""

    key: str
    value: bytes
    lease: int
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Grant:
    lease: int
    ttl: int  # seconds, as etcd granted it (etcd raises a TTL below its minimum to the minimum)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _entry(raw: dict[str, Any]) -> Entry:
    return Entry(
        key=base64.b64decode(raw["key"]).decode(errors="replace"),
        value=base64.b64decode(raw.get("value", "")),
        lease=int(raw.get("lease", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
    )


class EtcdClient:
    """etcd at ``endpoints`` (tried in turn when one is unreachable). Thread-safe; ``close()`` at the end."""

    def __init__(self, endpoints: Sequence[Endpoint], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._index = 0
        self._client = self._connect()

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint the next request goes to."""
        return self.endpoints[self._index]

    def _connect(self) -> etcd3gw.Etcd3Client:
        where = self.endpoints[self._index]
        return etcd3gw.Etcd3Client(host=where.host, port=where.port, timeout=self.timeout, api_path=API_PATH)

    def _call(self, name: str, request: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        with self._lock:
            failures: list[str] = []
            for _ in self.endpoints:
                self.calls[name] += 1
                client = self._client
                try:
                    return request(client)
                except _UNREACHABLE as exc:
                    failures.append(f"etcd at {self.endpoint} did not answer {name}: {_reason(exc)}")
                    if len(self.endpoints) == 1:
                        break
                    client.session.close()
                    self._index = (self._index + 1) % len(self.endpoints)
                    self._client = self._connect()
                except Exception as exc:  # etcd answered an error, or not JSON: transient too
                    raise EtcdError(f"etcd at {self.endpoint} refused {name}: {_reason(exc)}") from None
            raise EtcdError("; ".join(failures))

    def _post(self, client: etcd3gw.Etcd3Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = client.post(client.get_url(path), data=json.dumps(body))
        return answer

    # -- leases -----------------------------------------------------------------------------------------

    def grant(self, ttl: int) -> Grant:
        """A new lease of ``ttl`` seconds (etcd may grant more: its minimum)."""
        raw = self._call("grant", lambda c: self._post(c, "/lease/grant", {"TTL": ttl, "ID": 0}))
        return Grant(lease=int(raw["ID"]), ttl=int(raw["TTL"]))

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``: its TTL again, counted from when etcd received this request; 0 or less when
        the lease no longer exists (it expired, or was revoked)."""
        raw = self._call("keepalive", lambda c: self._post(c, "/lease/keepalive", {"ID": lease}))
        return int(raw.get("result", {}).get("TTL", 0))  # the gateway leaves zero values out

    def time_to_live(self, lease: int) -> tuple[int, int]:
        """(seconds left, rounded down, granted TTL) of ``lease`` as etcd sees it now; (-1, 0) when it does
        not exist. The gateway leaves zero values out: a lease in its last second answers no TTL (0 here)."""
        raw = self._call("timetolive", lambda c: self._post(c, "/kv/lease/timetolive", {"ID": lease}))
        return int(raw.get("TTL", 0)), int(raw.get("grantedTTL", 0))

    def revoke(self, lease: int) -> None:
        """Revoke ``lease``: etcd deletes every key attached to it, at once."""
        self._call("revoke", lambda c: self._post(c, "/kv/lease/revoke", {"ID": lease}))

    # -- keys -------------------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int) -> None:
        body = {"key": _b64(key), "value": _b64(value), "lease": lease}
        self._call("put", lambda c: self._post(c, "/kv/put", body))

    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, Entry | None]:
        """One transaction: if ``key`` does not exist, put it attached to ``lease`` → (True, None); else
        read it → (False, the entry that holds it). Never two winners: etcd serialises transactions."""
        k = _b64(key)
        body = {
            "compare": [{"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            "success": [{"request_put": {"key": k, "value": _b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": k}}],
        }
        raw = self._call("txn", lambda c: self._post(c, "/kv/txn", body))
        if raw.get("succeeded"):
            return True, None
        kvs = [kv for r in raw.get("responses", []) for kv in r.get("response_range", {}).get("kvs", [])]
        return False, (_entry(kvs[0]) if kvs else None)

    def delete_if_lease(self, key: str, lease: int) -> bool:
        """One transaction: delete ``key`` only if it is attached to ``lease``. True when it was."""
        k = _b64(key)
        body = {
            "compare": [{"key": k, "result": "EQUAL", "target": "LEASE", "lease": lease}],
            "success": [{"request_delete_range": {"key": k}}],
            "failure": [],
        }
        raw = self._call("txn", lambda c: self._post(c, "/kv/txn", body))
        return bool(raw.get("succeeded"))

    def range_prefix(self, prefix: str) -> tuple[int, tuple[Entry, ...]]:
        """(the store's revision, every key under ``prefix``) in one linearizable read."""
        body = {"key": _b64(prefix), "range_end": _prefix_end(prefix)}
        raw = self._call("range", lambda c: self._post(c, "/kv/range", body))
        revision = int(raw.get("header", {}).get("revision", 0))
        return revision, tuple(_entry(kv) for kv in raw.get("kvs", []))

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int,
        on_change: Callable[[], None],
        on_end: Callable[[str], None],
    ) -> Watch:
        """Watch every key under ``prefix`` from ``start_revision`` on (one request, counted as ``watch``,
        on a connection of its own): ``on_change()`` after every batch of events, ``on_end(why)`` once
        when the stream ends for any reason but ``cancel()``. Both are called on the watch's thread."""
        with self._lock:
            self.calls["watch"] += 1
            where = self.endpoint
        return Watch(where, self.timeout, prefix, start_revision, on_change, on_end).start()

    def close(self) -> None:
        with self._lock:
            self._client.session.close()


class Watch:
    """One watch stream of etcd's JSON gateway (``/v3/watch``), read on a thread of its own.

    ``created`` is set once etcd confirmed the watch: from then on no change under the prefix goes
    unreported (etcd delivers a watch's events in order, from its start revision, without gaps) until
    the stream ends, which ``on_end`` reports. A silent stream (etcd paused) is not detected here: the
    caller's keepalives are.
    """

    def __init__(
        self,
        where: Endpoint,
        timeout: float,
        prefix: str,
        start_revision: int,
        on_change: Callable[[], None],
        on_end: Callable[[str], None],
    ) -> None:
        self.where = where
        self._timeout = timeout
        self._body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": start_revision,
            }
        }
        self._on_change = on_change
        self._on_end = on_end
        self.created = threading.Event()
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        self._client = etcd3gw.Etcd3Client(
            host=where.host, port=where.port, timeout=timeout, api_path=API_PATH
        )
        self._thread = threading.Thread(target=self._run, name=f"agentvm-etcd-watch-{where}", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.created.is_set() and self._thread.is_alive() and not self._cancelled.is_set()

    def cancel(self) -> None:
        """End the stream (no ``on_end``); safe from any thread, idempotent."""
        self._cancelled.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)
        with contextlib.suppress(Exception):
            self._client.session.close()

    def _run(self) -> None:
        why = "the stream ended"
        try:
            client = self._client
            response = client.session.post(
                client.get_url("/watch"),
                data=json.dumps(self._body),
                stream=True,
                timeout=(self._timeout, None),
            )
            with self._lock:
                self._response = response
            if self._cancelled.is_set():
                _shutdown(response)
                return
            if response.status_code != 200:
                why = f"etcd answered HTTP {response.status_code}"
                return
            buffer = b""
            for chunk in response.iter_content(chunk_size=None):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if buffer.strip().endswith(b"}"):  # a whole message without its newline yet
                    with contextlib.suppress(ValueError):
                        json.loads(buffer)
                        lines.append(buffer)
                        buffer = b""
                for line in lines:
                    if line.strip() and not self._handle(json.loads(line)):
                        why = "etcd cancelled the watch"
                        return
        except Exception as exc:
            why = _reason(exc)
        finally:
            if not self._cancelled.is_set():
                self._on_end(f"the watch on etcd at {self.where} ended: {why}")

    def _handle(self, message: dict[str, Any]) -> bool:
        result = message.get("result", {})
        if "error" in message or result.get("canceled"):
            return False
        if result.get("created"):
            self.created.set()
        if result.get("events"):
            self._on_change()
        return True


def _shutdown(response: Any) -> None:
    """Interrupt a thread blocked reading ``response`` (closing it from another thread does not)."""
    with contextlib.suppress(Exception):
        sock = socket.fromfd(response.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    with contextlib.suppress(Exception):
        response.close()


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "detail_text", None)
    text = str(detail or exc or type(exc).__name__).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
