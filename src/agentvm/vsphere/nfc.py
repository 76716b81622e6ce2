"""HttpNfcLease: wait until an import lease is ready, upload files through it, complete or abort it.

Used by ``ovf.import_ovf`` (``ImportVApp`` hands back a lease; the disks of the package are uploaded to the
lease's device URLs). Uploads are plain HTTP(S) PUT/POST requests outside SOAP, sent with the session's
cookie and the session's TLS settings (its pinned thumbprint or CA), or the thumbprint the lease gives for
an ESXi host. Each one is counted in ``session.stats`` as ``"PUT /nfc"`` / ``"POST /nfc"``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from agentvm.model.agency import MoRef
from agentvm.model.errors import AgentvmError, ConfigurationError, TransientError
from agentvm.vsphere import tls
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.faults import to_agentvm_error
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeviceUrl:
    """Where one file of the import goes: ``import_key`` matches ``OvfManager.FileItem.deviceId``."""

    import_key: str
    url: str  # may hold "*" for the host: the server the session talks to
    ssl_thumbprint: str | None = None  # of the ESXi host serving the URL, when it is not vCenter


@dataclass(frozen=True)
class LeaseInfo:
    """A ready lease: the VM (or vApp) being created and the URLs to upload its files to."""

    entity: MoRef | None
    device_urls: tuple[DeviceUrl, ...]

    def url_for(self, device_id: str) -> DeviceUrl | None:
        return next((d for d in self.device_urls if d.import_key == device_id), None)


def wait_until_ready(
    session: Session,
    lease: Any,
    *,
    what: str,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> LeaseInfo:
    """Block until ``lease`` is ready; return its entity and device URLs.

    A lease turns ready within seconds (vCenter creates the VM's files first), so this reads ``state``
    with a short, growing pause rather than setting up a property-collector filter; vcsim 0.24.2 also
    answers a read of a just-created lease with a SystemError now and then, which is taken as "not ready
    yet" and retried until ``timeout``. Raises the agentvm error of the lease's fault when it ends in
    ``error``, TransientError when it is not ready in time.
    """
    deadline = time.monotonic() + timeout
    pause = 0.02
    last_error: AgentvmError | None = None
    while True:
        try:
            props = read_one(session, lease, ["state", "info", "error"])
        except TransientError as exc:
            props, last_error = None, exc
        if props is not None:
            state = str(props.get("state", ""))
            if state == "ready":
                return _lease_info(props.get("info"))
            if state == "error":
                fault = props.get("error")
                if fault is None:
                    raise TransientError(f"{what}: the import lease failed without saying why; retry")
                raise to_agentvm_error(fault, url=session.url, what=what) from fault
            if state == "done":
                raise ConfigurationError(f"{what}: the import lease ended before its files were uploaded")
        if time.monotonic() + pause > deadline:
            cause = f" (last error: {last_error})" if last_error else ""
            raise TransientError(f"{what}: the import lease was not ready within {timeout:g} s{cause}")
        sleep(pause)
        pause = min(pause * 2, 1.0)


def _lease_info(info: Any) -> LeaseInfo:
    if info is None:
        return LeaseInfo(None, ())
    entity = info.entity
    urls = tuple(
        DeviceUrl(str(d.importKey or ""), str(d.url), str(d.sslThumbprint) if d.sslThumbprint else None)
        for d in info.deviceUrl or ()
    )
    ref = MoRef(str(entity._wsdlName), str(entity._moId)) if entity is not None else None
    return LeaseInfo(ref, urls)


def upload(
    session: Session,
    device: DeviceUrl,
    source: BinaryIO,
    size: int,
    *,
    create: bool,
    timeout: float = 300.0,
) -> int:
    """Send ``size`` bytes of ``source`` to the device URL; return the bytes sent.

    Files the import creates (``FileItem.create``) go with PUT, disks with POST as stream-optimized VMDKs
    (what vCenter expects, as govc does). Raises TransientError when the upload fails (HTTP status or
    connection), AuthenticationError when the TLS check fails.
    """
    target = _resolve(session, device.url)
    parts = urlsplit(target)
    method = "PUT" if create else "POST"
    conn = _connection(session, parts.scheme, parts.hostname or "", parts.port, device, timeout)
    headers = {
        "Cookie": f'vmware_soap_session="{_session_id(session)}"',
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream" if create else "application/x-vnd.vmware-streamVmdk",
    }
    if create:
        headers["Overwrite"] = "t"
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    session.stats.record(f"{method} /nfc")
    sent = 0
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        while sent < size:
            chunk = source.read(min(_CHUNK, size - sent))
            if not chunk:
                break
            conn.send(chunk)
            sent += len(chunk)
        if sent != size:
            # vCenter still waits for the rest of the announced body: do not wait for its answer (that
            # would sit out ``timeout``), end the upload now (the connection is closed below)
            raise TransientError(
                f"upload to {parts.path}: the source ended after {sent} of {size} bytes; retry"
            )
        response = conn.getresponse()
        body = response.read(2048)
    except AgentvmError:
        raise
    except http.client.IncompleteRead as exc:
        raise TransientError(
            f"upload to {parts.path}: the source ended after {sent + len(exc.partial)} of {size} bytes; retry"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise to_agentvm_error(
            exc, url=session.url, what=f"upload to the import lease ({parts.path})"
        ) from exc
    finally:
        conn.close()
    if response.status >= 300:
        detail = body.decode("utf-8", "replace").strip()[:200]
        raise TransientError(
            f"upload to {parts.path} at {parts.netloc} answered HTTP {response.status} {detail}; retry"
        )
    return sent


def progress(lease: Any, percent: int) -> None:
    """Tell vCenter how far the upload is (keeps the lease from timing out on long uploads)."""
    with contextlib.suppress(AgentvmError):
        lease.HttpNfcLeaseProgress(percent=max(0, min(100, percent)))


def complete(lease: Any) -> None:
    """The files are uploaded: vCenter finishes the import. The lease object is gone afterwards."""
    lease.HttpNfcLeaseComplete()


def abort(lease: Any) -> None:
    """Give up the import; never raises (the lease may already be gone)."""
    with contextlib.suppress(AgentvmError):
        lease.HttpNfcLeaseAbort()


def _resolve(session: Session, url: str) -> str:
    """Replace the ``*`` host vCenter puts in device URLs with the host:port the session talks to."""
    parts = urlsplit(url)
    if parts.netloc != "*" and not parts.netloc.startswith("*:"):
        return url
    conn = session.conn
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    return parts._replace(netloc=f"{host}:{conn.port}").geturl()


def _connection(
    session: Session, scheme: str, host: str, port: int | None, device: DeviceUrl, timeout: float
) -> http.client.HTTPConnection:
    conn = session.conn
    if scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    context = tls.ssl_context(conn)
    to_vcenter = host == conn.host and (port or 443) == conn.port
    if to_vcenter:
        pinned = tls.normalize_thumbprint(conn.thumbprint) if conn.thumbprint else None
    else:
        # an ESXi host serves the upload: pin the thumbprint vCenter gave for it, if it gave one
        pinned = tls.normalize_thumbprint(device.ssl_thumbprint) if device.ssl_thumbprint else None
        if pinned:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the pinned digest replaces chain checks
    return tls.PinnedHTTPSConnection(host, port, context=context, timeout=timeout, pinned=pinned)


def _session_id(session: Session) -> str:
    # every managed object of the session is bound to its instrumented stub, which knows the session id
    session_id = session.content.sessionManager._stub.GetSessionId()
    if not session_id:
        raise ConfigurationError(f"not logged in to {session.url}: log in before uploading")
    return str(session_id)
