"""A small, typed, counted client of etcd v3 over etcd3gw: what ``controller.leadership`` needs, nothing more.

Every request goes through ``EtcdClient._call``, which counts it by name in ``calls`` (the figure "calls to
etcd per replica per minute"), serialises requests (one HTTP session per client; callers are the
Coordinator's loop and the threads that stop or release), bounds each by ``timeout`` seconds and turns
any failure into ``EtcdError`` (transient, naming the endpoint). With several endpoints, a request that
cannot reach one moves the client on to the next for the following requests: a keepalive is never retried
within the same request (its caller's fence deadline counts from when it began).

Why etcd3gw (pinned in pyproject): it is maintained (OpenStack's tooz uses it), pure Python over etcd's
JSON gateway with ``requests`` (no grpc wheel to build), and works with etcd 3.4 as Debian ships it.
python-etcd3 speaks grpc and has had no release since 2020; aetcd is asyncio, and agentvm's controller
runs on threads.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import etcd3gw

from agentvm.model.coordination import Endpoint
from agentvm.model.errors import TransientError

T = TypeVar("T")

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
            self.calls[name] += 1
            client = self._client
            try:
                return request(client)
            except Exception as exc:  # etcd3gw raises its own errors, requests' and JSON's: all transient
                where = self.endpoint
                if len(self.endpoints) > 1:
                    client.session.close()
                    self._index = (self._index + 1) % len(self.endpoints)
                    self._client = self._connect()
                raise EtcdError(f"etcd at {where} did not answer {name}: {_reason(exc)}") from None

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
        return int(raw.get("result", {}).get("TTL", -1))

    def time_to_live(self, lease: int) -> tuple[int, int]:
        """(seconds left, granted TTL) of ``lease`` as etcd sees it now; (-1, 0) when it does not exist."""
        raw = self._call("timetolive", lambda c: self._post(c, "/kv/lease/timetolive", {"ID": lease}))
        return int(raw.get("TTL", -1)), int(raw.get("grantedTTL", 0))

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

    def close(self) -> None:
        with self._lock:
            self._client.session.close()


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "detail_text", None)
    text = str(detail or exc or type(exc).__name__).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
