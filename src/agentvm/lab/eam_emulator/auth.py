# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam/vim/vmodl types at run time: their constructors are untyped)
"""Who is calling EAM: the vCenter session behind the ``vmware_soap_session`` cookie.

EAM has no login of its own (docs/eam.md, "Endpoint"): every call carries a vCenter session's cookie. The
server calls a ``SessionChecker`` (cookie value → Caller, or None when there is no such live session) for
every request. ``VcenterSessionChecker`` is the real one: it asks vCenter (the lab's vcsim) about the
session with that very cookie. Its target can be set after the emulator has started, because vcsim has to
be given the emulator's URL first (``set_target``).
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter

from agentvm.engine.api import Caller

SessionChecker = Callable[[str], Caller | None]
"""Cookie value → the caller of that live vCenter session, or None. May raise VcenterUnreachable."""

_COOKIE = re.compile(r'(?:^|[;,]\s*)vmware_soap_session\s*=\s*(?:"([^"]*)"|([^;,\s]*))')


class VcenterUnreachable(Exception):
    """vCenter could not be asked about the session (answered with eam.fault.NoConnectionToVCenter)."""


def session_cookie(header: str | None) -> str | None:
    """The ``vmware_soap_session`` value of a Cookie header (quotes removed), or None if absent/empty."""
    if not header:
        return None
    match = _COOKIE.search(header)
    if not match:
        return None
    value = match.group(1) if match.group(1) is not None else match.group(2)
    return value or None


@dataclass(frozen=True)
class _Target:
    url: str
    thumbprint: str | None


class VcenterSessionChecker:
    """A SessionChecker that asks vCenter ``sessionManager.currentSession`` with the caller's own cookie.

    One RetrievePropertiesEx per check (after one RetrieveServiceContent per target) reads the session's
    userName and ExtensionManager.extensionList (the user is an extension when its name is a registered
    extension key). Answers are cached per cookie for ``cache_seconds`` (at most 2 s), so a Logout is
    noticed within that time. ``url`` is vCenter's SDK URL (``https://127.0.0.1:PORT/sdk`` with
    ``thumbprint``, or ``http://…``); without one every check raises VcenterUnreachable until
    ``set_target`` is called.
    """

    def __init__(
        self,
        url: str | None = None,
        thumbprint: str | None = None,
        *,
        cache_seconds: float = 1.5,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= cache_seconds <= 2:
            raise ValueError(f"cache_seconds must be within 0..2 s, got {cache_seconds}")
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._target: _Target | None = None
        self._service_ids: tuple[str, str, str | None] | None = None
        if url is not None:
            self.set_target(url, thumbprint)

    def set_target(self, url: str, thumbprint: str | None = None) -> None:
        """Point the checker at vCenter's SDK URL; https needs the server's SHA-1/SHA-256 thumbprint.

        Raises ValueError for a URL that is not http(s) on 127.0.0.1 or an https URL without thumbprint.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(
                f"vCenter URL {url!r} must be http(s)://127.0.0.1:PORT/sdk (the lab is loopback)"
            )
        if parts.scheme == "https" and not thumbprint:
            raise ValueError(f"{url}: give vCenter's certificate thumbprint to check its TLS certificate")
        with self._lock:
            self._target = _Target(url, thumbprint)
            self._service_ids = None
            self._cache.clear()

    def __call__(self, cookie: str) -> Caller | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(cookie)
            target = self._target
        if cached is not None and cached[0] > now:
            return cached[1]
        if target is None:
            raise VcenterUnreachable("the EAM emulator has not been told where vCenter is (set_target)")
        caller = self._ask(target, cookie)
        with self._lock:
            # drop expired answers so the cache stays as small as the set of live sessions
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[cookie] = (now + self._cache_seconds, caller)
        return caller

    def _stub(self, target: _Target, cookie: str) -> Any:
        parts = urlsplit(target.url)
        kwargs: dict[str, Any] = {}
        if parts.scheme == "https":
            # a verifying context: pyVmomi checks the pinned thumbprint when CA verification fails (as it
            # does for the lab's self-signed certificate); with CERT_NONE it would never check it at all
            kwargs = {"sslContext": ssl.create_default_context(), "thumbprint": target.thumbprint}
        return SoapStubAdapter(
            url=target.url,
            version="vim.version.version11",  # vSphere 6.5: what the lab's vcsim announces
            sessionId=cookie,
            httpConnectionTimeout=self._timeout,
            **kwargs,
        )

    def _read_service_ids(self, stub: Any) -> tuple[str, str, str | None]:
        """The property collector's, SessionManager's and ExtensionManager's ids (no session needed)."""
        content: Any = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
        extension_manager = content.extensionManager
        ids = (
            content.propertyCollector._moId,
            content.sessionManager._moId,
            extension_manager._moId if extension_manager is not None else None,
        )
        with self._lock:
            self._service_ids = ids
        return ids

    def _ask(self, target: _Target, cookie: str) -> Caller | None:
        """One RetrievePropertiesEx with the caller's cookie; a fault means no usable session."""
        stub = self._stub(target, cookie)
        collector = vmodl.query.PropertyCollector
        try:
            ids = self._service_ids or self._read_service_ids(stub)
            objects = [collector.ObjectSpec(obj=vim.SessionManager(ids[1], stub))]
            props = [collector.PropertySpec(type=vim.SessionManager, pathSet=["currentSession"])]
            if ids[2] is not None:
                objects.append(collector.ObjectSpec(obj=vim.ExtensionManager(ids[2], stub)))
                props.append(collector.PropertySpec(type=vim.ExtensionManager, pathSet=["extensionList"]))
            spec = collector.FilterSpec(objectSet=objects, propSet=props)
            result = collector(ids[0], stub).RetrievePropertiesEx(
                specSet=[spec], options=collector.RetrieveOptions()
            )
        except vmodl.MethodFault:
            # NotAuthenticated, or any other refusal: this cookie does not stand for a usable session
            return None
        except Exception as exc:
            # connection refused, TLS or thumbprint mismatch, HTTP error, garbage: vCenter cannot be asked
            raise VcenterUnreachable(f"{target.url}: {type(exc).__name__}") from None
        finally:
            stub.DropConnections()
        values: dict[str, Any] = {}
        for obj in result.objects if result else ():
            for prop in obj.propSet or ():
                values[prop.name] = prop.val
        session = values.get("currentSession")
        if session is None or not session.userName:
            return None
        keys = {ext.key for ext in values.get("extensionList") or ()}
        return Caller(user=session.userName, extension=session.userName in keys)
