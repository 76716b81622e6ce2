"""vSphere faults and transport errors → agentvm's error vocabulary, with what to do next.

``Session`` runs every SOAP call through ``to_agentvm_error`` so that callers above the adapter see only
``TransientError`` (retry later), ``ConfigurationError``/``NotFoundError`` (fix the input) and
``AuthenticationError`` (log in again / fix credentials, certificate or thumbprint). The original fault is
kept as ``__cause__`` and its wire name as ``fault_name(error)``, for the few callers that must tell
faults apart (e.g. "already registered").

The table is keyed by the vmodl wire name (``InvalidLogin``); a fault not in it is looked up by its base
classes (``InvalidPowerState`` → ``InvalidState``), and an unknown one is a ConfigurationError.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from agentvm.vsphere.tls import ThumbprintMismatch


@dataclass(frozen=True)
class FaultRule:
    """How one fault is reported: the error class and the advice appended to the message."""

    error: type[AgentvmError]
    advice: str


_T, _C, _A, _N = TransientError, ConfigurationError, AuthenticationError, NotFoundError

FAULTS: Mapping[str, FaultRule] = MappingProxyType(
    {
        # logging in
        "InvalidLogin": FaultRule(_A, "wrong user name or password: check AGENTVM_USERNAME/AGENTVM_PASSWORD"),
        "NotAuthenticated": FaultRule(_A, "the session has expired or was closed: log in again"),
        "NoClientCertificate": FaultRule(
            _A, "no TLS client certificate was sent: set cert_file/key_file for the extension login"
        ),
        "InvalidClientCertificate": FaultRule(
            _A,
            "the client certificate is not the one registered for the extension: run SetExtensionCertificate",
        ),
        "SecurityError": FaultRule(
            _A, "vCenter refused the request for security reasons: check the credentials"
        ),
        "NoPermission": FaultRule(_C, "the user lacks a privilege: grant it on the object named, then retry"),
        "RestrictedVersion": FaultRule(_C, "this ESXi license does not allow the call: use vCenter"),
        # objects
        "ManagedObjectNotFound": FaultRule(
            _N, "the object was deleted or never existed: re-read the inventory"
        ),
        "NotFound": FaultRule(_N, "check the name or key"),
        "FileNotFound": FaultRule(_N, "check the datastore path"),
        "InvalidArgument": FaultRule(_C, "a value in the request is wrong: fix the property named"),
        "InvalidRequest": FaultRule(_C, "the request is malformed for this vCenter version"),
        "InvalidType": FaultRule(_C, "the request names a type this vCenter does not know"),
        "MethodNotFound": FaultRule(_C, "this vCenter does not support the call: check its version"),
        "NotSupported": FaultRule(_C, "this vCenter or host does not support the operation"),
        "NotImplemented": FaultRule(_C, "this vCenter does not implement the call"),
        "DuplicateName": FaultRule(_C, "an object with that name already exists: choose another name"),
        "AlreadyExists": FaultRule(_C, "it already exists"),
        "InvalidName": FaultRule(_C, "the name is not valid: fix it"),
        "InvalidDatastore": FaultRule(_C, "the datastore is not usable: choose another one"),
        "InsufficientResourcesFault": FaultRule(_C, "not enough CPU, memory or slots: free capacity"),
        "NoDiskSpace": FaultRule(_C, "the datastore is full: free space or choose another datastore"),
        "OutOfBounds": FaultRule(_C, "a value is out of range: fix it"),
        "InvalidProperty": FaultRule(_C, "the request names a property this object does not have"),
        "VmConfigFault": FaultRule(_C, "the VM configuration is not valid: fix it"),
        # wait and retry
        "InvalidState": FaultRule(_T, "the object is not in a state that allows this now: retry later"),
        "TaskInProgress": FaultRule(_T, "another task is running on the object: retry when it ends"),
        "ConcurrentAccess": FaultRule(_T, "the object was changed concurrently: re-read it and retry"),
        "ResourceInUse": FaultRule(_T, "the resource is in use: retry later"),
        "HostCommunication": FaultRule(_T, "vCenter cannot reach the host: retry when it is reachable"),
        "HostConnectFault": FaultRule(_T, "vCenter cannot connect to the host: retry later"),
        "Timedout": FaultRule(_T, "the operation timed out: retry"),
        "RequestCanceled": FaultRule(_T, "the request was cancelled: retry"),
        "SystemError": FaultRule(_T, "vCenter reported an internal error: retry later"),
        "HostNotConnected": FaultRule(_T, "the host is not connected: retry when it is back"),
        "HostNotReachable": FaultRule(_T, "the host is not reachable: retry when it is back"),
        "TooManyConsecutiveOverrides": FaultRule(_T, "too many concurrent changes: retry later"),
        # EAM (urn:eam), reached through Session.sibling_stub
        "EamInvalidLogin": FaultRule(_A, "the vCenter session is not valid for EAM: log in again"),
        "NotAuthorized": FaultRule(
            _C, "the user or extension lacks the EAM privilege: grant EAM.Modify/EAM.View"
        ),
        "EamServiceNotInitialized": FaultRule(_T, "EAM is still starting: retry in a minute"),
        "NoConnectionToVCenter": FaultRule(_T, "EAM cannot reach vCenter: retry later"),
        "EamRuntimeFault": FaultRule(_T, "EAM reported an internal error: retry later"),
        "InvalidAgentConfiguration": FaultRule(
            _C, "the agent configuration is not valid: fix the agency spec"
        ),
        "InvalidAgencyScope": FaultRule(
            _C, "a compute resource in the scope is unknown: fix the agency scope"
        ),
        "InvalidUrl": FaultRule(_C, "EAM cannot use or download the URL: fix the OVF/VIB URL"),
        "EamFault": FaultRule(_C, "EAM refused the request: fix the agency spec"),
    }
)

_UNKNOWN = FaultRule(_C, "see the vCenter task and event log for details")

# vCenter names session-scoped objects (a per-session property collector) after the session:
# ``session[<session key>]<id>``. The key is a bearer secret; cookies carry it too.
_SESSION_SCOPED = re.compile(r"session\[[^\]]*\]")
_SESSION_COOKIE = re.compile(r"(vmware_soap_session=)(\"[^\"]*\"|[^;\s]+)")


def redact(text: str) -> str:
    """``text`` without session keys: ``session[<key>]<id>`` becomes ``session[...]<id>`` and a
    ``vmware_soap_session`` cookie value ``...``. Every fault message goes through it (``to_agentvm_error``);
    the controller's event log runs each event through it again."""
    return _SESSION_COOKIE.sub(r"\1...", _SESSION_SCOPED.sub("session[...]", text))


def fault_rule(fault: BaseException) -> tuple[str, FaultRule]:
    """The wire name of a vmodl fault and the rule for it (by its own name or the nearest base class)."""
    for cls in type(fault).__mro__:
        wsdl = getattr(cls, "_wsdlName", None)
        if isinstance(wsdl, str) and wsdl in FAULTS:
            return _fault_name(fault), FAULTS[wsdl]
    return _fault_name(fault), _UNKNOWN


def _fault_name(fault: BaseException) -> str:
    name = getattr(type(fault), "_wsdlName", None)
    return name if isinstance(name, str) else type(fault).__name__


def fault_name(error: BaseException) -> str | None:
    """The vSphere fault name behind an agentvm error raised by this adapter (``"InvalidArgument"``)."""
    name = getattr(error, "fault_name", None)
    return name if isinstance(name, str) else None


def _fault_message(fault: BaseException) -> str:
    msg = getattr(fault, "msg", None) or ""
    if not msg:
        faults = getattr(fault, "faultMessage", None) or []
        msg = "; ".join(str(getattr(m, "message", "") or "") for m in faults if getattr(m, "message", None))
    extra = []
    for attr in ("invalidProperty", "obj", "name"):
        value = getattr(fault, attr, None)
        if value and (isinstance(value, str | int) or hasattr(value, "_moId")):
            shown = getattr(value, "_moId", value)
            extra.append(f"{attr}={shown}")
    text = str(msg).strip()
    if extra:
        text = f"{text} ({', '.join(extra)})" if text else ", ".join(extra)
    return text


def to_agentvm_error(exc: BaseException, *, url: str, what: str = "") -> AgentvmError:
    """Translate a fault or transport error into an agentvm error that names ``what`` and the fix.

    ``url`` is vCenter's SDK URL, ``what`` the operation and object (``"RegisterExtension on
    ExtensionManager"``). Secrets are never part of the message: pyVmomi faults do not carry passwords and
    transport errors are reduced to their class and text. An AgentvmError is returned unchanged.
    """
    if isinstance(exc, AgentvmError):
        return exc
    what = redact(what)
    where = f"{what} at {url}" if what else url
    error: AgentvmError
    if isinstance(exc, ThumbprintMismatch):
        error = AuthenticationError(
            f"the TLS certificate of {url} has thumbprint {exc.actual}, not the pinned "
            f"{exc.expected}: if vCenter's certificate was replaced on purpose, set "
            "AGENTVM_THUMBPRINT/--thumbprint to the new one; otherwise someone may be intercepting "
            "the connection"
        )
    elif isinstance(exc, ssl.SSLCertVerificationError):
        error = AuthenticationError(
            f"the TLS certificate of {url} is not trusted ({exc.verify_message}): give the CA that signed it "
            "with AGENTVM_CA_FILE/--ca-file, or pin it with AGENTVM_THUMBPRINT/--thumbprint, "
            "or (labs only) --insecure"
        )
    elif isinstance(exc, ssl.SSLEOFError) or getattr(exc, "reason", None) == "UNEXPECTED_EOF_WHILE_READING":
        # the server hung up mid-handshake (busy, restarting, or no TLS server): not a credential problem
        error = TransientError(
            f"{url} closed the connection during the TLS handshake: is vCenter up at that address and port?"
        )
    elif isinstance(exc, ssl.SSLError):
        error = AuthenticationError(
            f"TLS handshake with {url} failed ({exc.reason or exc}): check the URL's port, the client "
            "certificate (cert_file/key_file) and the thumbprint/CA settings"
        )
    elif isinstance(exc, ConnectionRefusedError):
        error = TransientError(f"cannot connect to {url}: connection refused; is vCenter up at that address?")
    elif isinstance(exc, socket.timeout | TimeoutError):
        error = TransientError(f"{where}: timed out waiting for vCenter; will retry")
    elif isinstance(exc, socket.gaierror):
        error = ConfigurationError(
            f"cannot resolve the vCenter host name in {url}: {exc.strerror}; fix the URL"
        )
    elif isinstance(exc, OSError | http.client.HTTPException):
        error = TransientError(
            f"{where}: connection to vCenter failed ({type(exc).__name__}: {redact(str(exc))}); will retry"
        )
    elif hasattr(type(exc), "_wsdlName"):
        name, rule = fault_rule(exc)
        detail = redact(_fault_message(exc))
        detail = f": {detail}" if detail else ""
        error = rule.error(f"{name} from {where}{detail}; {rule.advice}")
        error.fault_name = name  # type: ignore[attr-defined]
        return error
    else:
        error = ConfigurationError(f"{where}: unexpected {type(exc).__name__}: {redact(str(exc))}")
    return error
