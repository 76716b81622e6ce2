"""The one object that owns a vCenter connection: TLS, login, re-login, correlation ids, fault mapping.

Everything in ``agentvm.vsphere`` (inventory, watch, tasks, small ops) and the EAM client go through a
``Session``; nobody else builds or touches a pyVmomi stub. Managed objects handed out (``session.content``,
``session.mo(moref)``, anything returned by a call) are bound to the session's instrumented stub, so every
call made on them:

- carries a correlation id (SOAP header ``operationID``: ``<prefix>-<n>``; see ``operation()``), which
  vCenter writes into its logs and tasks;
- is counted (``session.stats``), so tests and benchmarks can assert round trips;
- is retried once after a transparent re-login when vCenter answers ``NotAuthenticated`` (session expired,
  terminated, or vCenter restarted);
- raises only agentvm errors (``faults.to_agentvm_error``), with the vSphere fault as ``__cause__``.

Session ids are secrets: they appear in logs only truncated (``session_hint``).

A session is shared by threads (the executor's pool carries out changes concurrently): pyVmomi's stub keeps
a locked pool of HTTP connections and a per-thread request context (where the opId goes); the call counts
are locked; one re-login serves every thread that saw the session expire (``_generation``); the correlation
id is a ContextVar, so a thread runs under the caller's only if it runs in a copy of the caller's context.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import itertools
import logging
import secrets
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any

from pyVmomi import vim
from pyVmomi.SoapAdapter import SoapStubAdapter, StubAdapterBase
from pyVmomi.VmomiSupport import GetRequestContext, GetServiceVersions, GetWsdlType, versionIdMap

from agentvm.model.agency import MoRef
from agentvm.model.connection import VCenterConnection
from agentvm.model.errors import AgentvmError, AuthenticationError, ConfigurationError
from agentvm.vsphere import tls
from agentvm.vsphere.faults import fault_name, redact, to_agentvm_error

log = logging.getLogger(__name__)

_OPERATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentvm_operation", default=None)
_LOGIN_METHODS = frozenset({"Login", "LoginExtensionByCertificate", "RetrieveServiceContent", "Logout"})
_SESSION_FAULTS = frozenset({"NotAuthenticated", "EamInvalidLogin"})
_OPID_HEADER = "operationID"
# HTTP connections kept open per endpoint: enough for the executor's pool (8 workers by default) and its
# caller; past it, a concurrent call opens (and closes) a connection of its own: one TLS handshake each
_CONNECTIONS = 16


class CallStats:
    """How many SOAP calls a session made, by method wire name. Thread-safe; read with ``snapshot()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, method: str) -> None:
        with self._lock:
            self._counts[method] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class _InstrumentedStub(StubAdapterBase):
    """The stub every managed object of a session is bound to: opId, counting, re-login, fault mapping."""

    def __init__(self, session: Session, soap: Any) -> None:
        StubAdapterBase.__init__(self, version=soap.version)
        self._session = session
        self.soap = soap

    def InvokeMethod(self, mo: Any, info: Any, args: Any) -> Any:
        return self._session._invoke(self, mo, info, args)

    def GetSessionId(self) -> Any:
        return self.soap.GetSessionId()


class Session:
    """A logged-in vim25 session to one vCenter (or ESXi).

    Construct, then ``login()`` (or use ``Session.connect(conn)``, or ``with Session(conn) as s:``).
    ``timeout`` bounds every HTTP exchange, in seconds. ``correlation_prefix`` starts every opId.
    """

    def __init__(
        self,
        conn: VCenterConnection,
        *,
        timeout: float = 60.0,
        correlation_prefix: str = "agentvm",
        host_agent: bool = False,
    ) -> None:
        """``host_agent``: the server must be a standalone ESXi host (about.apiType HostAgent), else a
        vCenter; ``login`` refuses the other kind (ConfigurationError) before sending any credential."""
        self.conn = conn
        self.host_agent = host_agent
        self.url = f"{conn.scheme}://{_host_port(conn)}{conn.path}"
        self.timeout = timeout
        self.stats = CallStats()
        self._prefix = f"{correlation_prefix}-{secrets.token_hex(3)}"
        self._seq = itertools.count(1)  # next() on it is atomic: opIds stay unique across threads
        self._pinned = tls.normalize_thumbprint(conn.thumbprint) if conn.thumbprint else None
        self._check_login_settings()
        self._ssl: ssl.SSLContext | None = tls.ssl_context(conn) if conn.scheme == "https" else None
        self._lock = threading.Lock()
        self._generation = 0  # bumped on every successful login; guards against double re-login
        self._logged_in = False
        self._soap: Any = None
        self._stub: _InstrumentedStub | None = None
        self._siblings: list[Any] = []
        self._content: Any = None
        self.api_version = ""
        # called after every SOAP exchange with (method, seconds, fault name or None); the controller
        # feeds its call-latency metrics from here. Listeners must be quick and must not raise.
        self.call_listeners: list[Callable[[str, float, str | None], None]] = []

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def connect(cls, conn: VCenterConnection, **kwargs: Any) -> Session:
        """A new session, logged in. Raises AuthenticationError, TransientError or ConfigurationError."""
        session = cls(conn, **kwargs)
        session.login()
        return session

    def __enter__(self) -> Session:
        if not self._logged_in:
            self.login()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.logout()

    def __repr__(self) -> str:
        state = f"session {self.session_hint}" if self._logged_in else "not logged in"
        return f"Session({self.url}, user={self.user!r}, {state})"

    def _check_login_settings(self) -> None:
        c = self.conn
        if c.extension_key or c.cert_file:
            if not (c.extension_key and c.cert_file):
                raise ConfigurationError(
                    "an extension login needs both extension_key and cert_file (and key_file unless the key "
                    "is in the certificate file)"
                )
            if c.scheme != "https":
                raise ConfigurationError(f"an extension login needs HTTPS, but the URL is {self.url}")
        elif not (c.username and c.password):
            raise ConfigurationError(
                f"no credentials for {self.url}: set AGENTVM_USERNAME and AGENTVM_PASSWORD, or log in as an "
                "extension with extension_key, cert_file and key_file"
            )

    # -- what callers use --------------------------------------------------------------------------

    @property
    def user(self) -> str:
        """Who this session logs in as: the user name, or the extension key for a certificate login."""
        return (self.conn.extension_key if self.conn.by_certificate else self.conn.username) or ""

    @property
    def content(self) -> Any:
        """``vim.ServiceContent``: the managers (propertyCollector, viewManager, extensionManager, ...)."""
        if self._content is None:
            raise AuthenticationError(f"not logged in to {self.url}: call Session.login() first")
        return self._content

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @property
    def session_hint(self) -> str:
        """The first 8 characters of the session id: enough to match vCenter's log, useless to an attacker."""
        sid = self._soap.GetSessionId() if self._soap is not None else None
        return f"{sid[:8]}..." if sid else "(none)"

    def mo(self, moref: MoRef) -> Any:
        """The pyVmomi managed object for ``moref``, bound to this session (calls on it are instrumented)."""
        if self._stub is None:
            raise AuthenticationError(f"not logged in to {self.url}: call Session.login() first")
        try:
            cls = GetWsdlType("urn:vim25", moref.type)
        except KeyError as exc:
            raise ConfigurationError(f"{moref}: {moref.type} is not a vSphere managed-object type") from exc
        return cls(moref.value, self._stub)

    @staticmethod
    def moref(obj: Any) -> MoRef:
        """A pyVmomi managed object → MoRef (``HostSystem:host-21``)."""
        return MoRef(str(obj._wsdlName), str(obj._moId))

    @contextlib.contextmanager
    def operation(self, name: str) -> Iterator[str]:
        """Run a block under one correlation id: its calls carry ``<name>-<n>`` (per thread/task context)."""
        token = _OPERATION.set(name)
        try:
            yield name
        finally:
            _OPERATION.reset(token)

    def keepalive(self) -> datetime:
        """A cheap call that keeps the session from idling out; returns vCenter's clock."""
        now: datetime = self._service_instance().CurrentTime()
        return now

    def current_user_name(self) -> str:
        """``sessionManager.currentSession.userName`` as vCenter sees it (for extensions: the key)."""
        current = self.content.sessionManager.currentSession
        return str(current.userName) if current else ""

    def sibling_stub(self, path: str = "/eam/sdk", version: str = "eam.version.version7_5") -> Any:
        """A stub for another SOAP endpoint of the same server (EAM), sharing TLS settings and session.

        The returned stub is instrumented like the session's own: correlation ids, counting, fault mapping,
        and after a re-login (``NotAuthenticated`` / ``EamInvalidLogin``) it gets the new session cookie.
        Build EAM objects on it: ``eam.EsxAgentManager("EsxAgentManager", session.sibling_stub())``.
        """
        if self._soap is None:
            raise AuthenticationError(f"not logged in to {self.url}: call Session.login() first")
        soap = self._new_soap(path=path, version=version)
        soap.SetSessionId(self._soap.GetSessionId())
        self._siblings.append(soap)
        return _InstrumentedStub(self, soap)

    # -- login / logout ----------------------------------------------------------------------------

    def login(self) -> None:
        """Connect (TLS checks first), negotiate the API version and log in.

        Raises AuthenticationError (wrong password, wrong certificate, untrusted or mismatched server
        certificate — always before any credential is sent), TransientError (vCenter unreachable) or
        ConfigurationError (bad settings).
        """
        with self._lock:
            if self._soap is None:
                version = self._negotiate_version()
                self._soap = self._new_soap(path=self.conn.path, version=version)
                self._stub = _InstrumentedStub(self, self._soap)
                self.api_version = versionIdMap.get(version, version)
            self._login_locked()

    def _login_locked(self) -> None:
        si = self._service_instance()
        self._content = si.RetrieveContent()
        self._check_api_type(str(self._content.about.apiType or ""))
        manager = self._content.sessionManager
        try:
            if self.conn.by_certificate:
                manager.LoginExtensionByCertificate(extensionKey=self.conn.extension_key)
            else:
                assert self.conn.password is not None  # checked in __init__
                manager.Login(userName=self.conn.username, password=self.conn.password.reveal())
        except AuthenticationError as exc:
            raise self._login_refused(exc) from exc.__cause__
        self._generation += 1
        self._logged_in = True
        for sibling in self._siblings:
            sibling.SetSessionId(self._soap.GetSessionId())
        log.info("logged in to %s as %s (session %s)", self.url, self.user, self.session_hint)

    def _check_api_type(self, api_type: str) -> None:
        """Refuse a host agent where a vCenter is expected, and the other way round (ConfigurationError
        naming the URL and what to write instead): everything a vCenter session does (extensions, EAM,
        clusters) is missing on a host, and a host's own calls make no sense on a vCenter."""
        if api_type == "HostAgent" and not self.host_agent:
            raise ConfigurationError(
                f"{self.url} is an ESXi host (about.apiType HostAgent), not a vCenter: name it in the spec's "
                "esxi: list instead of vcenter.url/AGENTVM_URL, e.g. "
                f"`esxi: [{{url: {self.url}, username: root, passwordEnv: ESXI_PASSWORD, thumbprint: ...}}]`"
            )
        if api_type == "VirtualCenter" and self.host_agent:
            raise ConfigurationError(
                f"{self.url} is a vCenter (about.apiType VirtualCenter), not an ESXi host: name it as "
                "vcenter.url in the spec instead of in the esxi: list"
            )

    def _login_refused(self, exc: AuthenticationError) -> AuthenticationError:
        if fault_name(exc) != "InvalidLogin":
            return exc
        if self.conn.by_certificate:
            return AuthenticationError(
                f"{self.url} refused the login of extension {self.conn.extension_key!r} with the certificate "
                f"{self.conn.cert_file}: register the extension and set this certificate on it "
                "(SetExtensionCertificate), or use the certificate that was set"
            )
        return AuthenticationError(
            f"wrong user name or password for {self.url} (user {self.conn.username!r}): "
            "check AGENTVM_USERNAME/AGENTVM_PASSWORD"
        )

    def logout(self) -> None:
        """Log out and drop the connections. Idempotent; a failure to log out is logged, not raised."""
        with self._lock:
            if self._logged_in and self._content is not None:
                try:
                    self._content.sessionManager.Logout()
                except AgentvmError as exc:
                    log.info("logout from %s failed (ignored): %s", self.url, exc)
            self._logged_in = False
            for soap in [self._soap, *self._siblings]:
                if soap is not None:
                    soap.DropConnections()

    close = logout

    # -- the call path -----------------------------------------------------------------------------

    def _next_opid(self) -> str:
        return f"{_OPERATION.get() or self._prefix}-{next(self._seq)}"

    def _invoke(self, outer: _InstrumentedStub, mo: Any, info: Any, args: Any) -> Any:
        method = str(info.wsdlName)
        generation = self._generation
        try:
            return self._send(outer, mo, info, args)
        except AgentvmError as exc:
            if fault_name(exc) not in _SESSION_FAULTS or method in _LOGIN_METHODS or not self._logged_in:
                raise
            log.info("%s: session %s is no longer valid; logging in again", self.url, self.session_hint)
        with self._lock:
            if self._generation == generation:  # nobody else re-logged in meanwhile
                self._login_locked()
        return self._send(outer, mo, info, args)

    def _send(self, outer: _InstrumentedStub, mo: Any, info: Any, args: Any) -> Any:
        """One SOAP exchange with the correlation id set; faults and transport errors mapped."""
        method = str(info.wsdlName)
        opid = self._next_opid()
        context = GetRequestContext()
        previous = context.get(_OPID_HEADER)
        context[_OPID_HEADER] = opid
        self.stats.record(method)
        log.debug("%s %s on %s (opId %s)", self.url, method, redact(str(getattr(mo, "_moId", "?"))), opid)
        started = time.perf_counter()
        try:
            status, result = outer.soap.InvokeMethod(mo, info, args, outer)
        except Exception as exc:
            error = to_agentvm_error(exc, url=self.url, what=_what(method, mo))
            self._notify(method, started, fault_name(error) or type(exc).__name__)
            raise error from exc
        finally:
            if previous is None:
                context.pop(_OPID_HEADER, None)
            else:
                context[_OPID_HEADER] = previous
        if status == 200:
            self._notify(method, started, None)
            return result
        if isinstance(result, BaseException):
            error = to_agentvm_error(result, url=self.url, what=_what(method, mo))
            self._notify(method, started, fault_name(error) or type(result).__name__)
            raise error from result
        self._notify(method, started, f"HTTP {status}")
        raise to_agentvm_error(http.client.HTTPException(f"HTTP {status}"), url=self.url, what=method)

    def _notify(self, method: str, started: float, fault: str | None) -> None:
        seconds = time.perf_counter() - started
        for listener in self.call_listeners:
            listener(method, seconds, fault)

    def _service_instance(self) -> Any:
        return vim.ServiceInstance("ServiceInstance", self._stub)

    # -- plumbing ----------------------------------------------------------------------------------

    def _new_soap(self, *, path: str, version: str) -> Any:
        conn = self.conn
        kwargs: dict[str, Any] = {"httpConnectionTimeout": self.timeout, "poolSize": _CONNECTIONS}
        if conn.scheme == "https":
            kwargs["sslContext"] = self._ssl
            port = conn.port
        else:
            port = -conn.port  # pyVmomi's convention for plain HTTP
        soap: Any = SoapStubAdapter(host=conn.host, port=port, path=path, version=version, **kwargs)
        if conn.scheme == "https":
            # our connection class: the pinned thumbprint is checked on every new TLS connection
            soap.scheme = tls.connection_factory(self._pinned)
        return soap

    def _negotiate_version(self) -> str:
        """The newest vim25 version both pyVmomi and the server speak (``/sdk/vimServiceVersions.xml``).

        This is the first connection to the server, so the TLS checks (trust, pinning) happen here, before
        any SOAP call and any credential.
        """
        conn = self.conn
        http_conn: http.client.HTTPConnection
        if conn.scheme == "https":
            http_conn = tls.PinnedHTTPSConnection(
                conn.host, conn.port, context=self._ssl, timeout=self.timeout, pinned=self._pinned
            )
        elif conn.scheme == "http":
            http_conn = http.client.HTTPConnection(conn.host, conn.port, timeout=self.timeout)
        else:
            raise ConfigurationError(f"{conn.url}: the URL must start with https:// (or http:// for a lab)")
        self.stats.record("GET vimServiceVersions.xml")
        try:
            http_conn.request("GET", conn.path.rstrip("/") + "/vimServiceVersions.xml")
            response = http_conn.getresponse()
            body = response.read()
            status = response.status
        except Exception as exc:
            raise _first_contact_error(conn, exc) or to_agentvm_error(
                exc, url=self.url, what="connecting"
            ) from exc
        finally:
            http_conn.close()
        if conn.scheme == "http" and _https_only(status, body, response.getheader("Location") or ""):
            raise ConfigurationError(
                f"{conn.url} answers HTTPS, not plain HTTP: write {_with_scheme(conn, 'https')}"
            )
        supported = GetServiceVersions("vim25")
        if status != 200:
            log.info(
                "%s has no vimServiceVersions.xml (HTTP %s); assuming %s", self.url, status, supported[0]
            )
            return str(supported[0])
        return _pick_version(body, supported, self.url)


# what OpenSSL says when the server answers a TLS hello in plain HTTP
_PLAIN_HTTP_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
)


def _first_contact_error(conn: VCenterConnection, exc: BaseException) -> ConfigurationError | None:
    """A wrong URL recognised on the first connection, with the fix; None when it is not one of them.

    Called by ``_negotiate_version`` only: later, a refused connection is vCenter restarting (transient).
    """
    if (
        conn.scheme == "https"
        and isinstance(exc, ssl.SSLError)
        and getattr(exc, "reason", None) in _PLAIN_HTTP_REASONS
    ):
        return ConfigurationError(
            f"{conn.url} answers plain HTTP, not HTTPS: write {_with_scheme(conn, 'http')}"
        )
    if conn.scheme == "http" and isinstance(exc, http.client.BadStatusLine | ConnectionResetError):
        return ConfigurationError(
            f"{conn.url} answers no plain HTTP: if it is HTTPS, write {_with_scheme(conn, 'https')}"
        )
    if isinstance(exc, ConnectionRefusedError) and not conn.has_port:
        host = _bracketed(conn.host)
        return ConfigurationError(
            f"cannot connect to {conn.url}: nothing listens on {host}:{conn.port}, the port a URL without "
            f"one means; write vCenter's port in the URL, e.g. {conn.scheme}://{host}:8989{conn.path}"
        )
    return None


def _https_only(status: int, body: bytes, location: str) -> bool:
    """Whether a plain-HTTP answer says "use HTTPS": a redirect to https://, or Go's and nginx's 400."""
    if status in (301, 302, 307, 308):
        return location.startswith("https://")
    return status == 400 and b"HTTPS" in body.upper()


def _with_scheme(conn: VCenterConnection, scheme: str) -> str:
    """The URL with the other scheme (its port kept if it names one)."""
    port = f":{conn.port}" if conn.has_port else ""
    return f"{scheme}://{_bracketed(conn.host)}{port}{conn.path}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _pick_version(body: bytes, supported: list[str], url: str) -> str:
    try:
        root = ET.fromstring(body)  # noqa: S314 (the server is authenticated by TLS by now)
    except ET.ParseError as exc:
        raise ConfigurationError(f"{url}/vimServiceVersions.xml is not XML: is this a vCenter?") from exc
    offered: set[str] = set()
    for namespace in root.iter("namespace"):
        if (namespace.findtext("name") or "urn:vim25") != "urn:vim25":
            continue
        offered.update(v.text or "" for v in namespace.iter("version"))
    for version in supported:
        if versionIdMap.get(version) in offered:
            return str(version)
    raise ConfigurationError(f"{url} speaks vim25 {sorted(offered)}, none of which pyVmomi supports")


def _host_port(conn: VCenterConnection) -> str:
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    default = 443 if conn.scheme == "https" else 80
    return host if conn.port == default else f"{host}:{conn.port}"


def _what(method: str, mo: Any) -> str:
    kind = getattr(mo, "_wsdlName", None)
    moid = getattr(mo, "_moId", None)
    return f"{method} on {kind}:{moid}" if kind and moid else method
