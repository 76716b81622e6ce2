"""EAM faults, as the Session reports them, → agentvm errors that name the agency and the fix.

Called by ``client.EamClient`` around every EAM call. The Session has already turned the pyVmomi fault or
transport error into an agentvm error (keeping the fault as ``__cause__`` and its wire name as
``fault_name``); this module rewrites the few that a user meets, in the words of an agency:

- ``InvalidUrl`` → ConfigurationError naming the URL and why EAM could not use it;
- ``InvalidAgencyScope`` → NotFoundError listing the compute resources vCenter does not know;
- ``InvalidAgentConfiguration`` → ConfigurationError naming the field;
- ``ManagedObjectNotFound`` → NotFoundError naming the agency or agent;
- ``EamServiceNotInitialized`` → TransientError (EAM is still starting);
- no answer from EAM at all (HTTP 502/503 from vCenter's /eam/sdk route, connection refused, timeout) →
  TransientError "EAM is not reachable at <url>: ...".

Anything else is returned unchanged: the Session's message already names the call and the fix.
"""

from __future__ import annotations

from typing import Any

from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError, TransientError


def _fault_name(error: AgentvmError) -> str | None:
    name = getattr(error, "fault_name", None)
    return name if isinstance(name, str) else None


def _tag(error: AgentvmError, name: str | None) -> AgentvmError:
    if name is not None:
        error.fault_name = name  # type: ignore[attr-defined]
    return error


def _moid(obj: Any) -> str:
    return str(getattr(obj, "_moId", obj))


def _url_reason(fault: Any) -> str:
    if getattr(fault, "malformedUrl", False):
        return "the URL does not parse (it must be http:// or https://)"
    if getattr(fault, "unknownHost", False):
        return "vCenter cannot resolve its host name"
    if getattr(fault, "connectionRefused", False):
        return "the connection was refused"
    code = getattr(fault, "responseCode", None)
    if code:
        return f"the server answered HTTP {code}"
    return str(getattr(fault, "msg", "") or "it cannot be downloaded")


def map_error(error: AgentvmError, *, what: str, eam_url: str) -> AgentvmError:
    """The error to raise for ``error``, raised by an EAM call on ``what`` (``"agency 'hello' (agency-1)"``).

    ``eam_url`` is the EAM endpoint, for "not reachable" messages. Returns ``error`` itself when there is
    nothing better to say. The result keeps ``fault_name`` so callers can still tell faults apart.
    """
    name = _fault_name(error)
    fault = error.__cause__
    if name is None:
        if isinstance(error, TransientError):
            reason = f"{type(fault).__name__}: {fault}" if fault is not None else str(error)
            return TransientError(
                f"EAM is not reachable at {eam_url}: {reason}; check that vCenter's ESX Agent Manager "
                "service is running, then retry"
            )
        return error
    if name == "InvalidUrl":
        url = getattr(fault, "url", None) or "(no URL given)"
        return _tag(
            ConfigurationError(
                f"EAM cannot use the URL {url} of {what}: {_url_reason(fault)}; publish the OVF at an "
                "http(s) URL that vCenter can download and fix the agency's OVF URL"
            ),
            name,
        )
    if name == "InvalidAgencyScope":
        unknown = ", ".join(_moid(m) for m in getattr(fault, "unknownComputeResource", None) or ())
        return _tag(
            NotFoundError(
                f"the scope of {what} names compute resources that vCenter does not know: "
                f"{unknown or '(not listed by EAM)'}; fix the agency's scope (cluster paths or moids)"
            ),
            name,
        )
    if name == "InvalidAgentConfiguration":
        field = getattr(fault, "invalidField", None)
        detail = str(getattr(fault, "msg", "") or "")
        where = f" (field {field})" if field else ""
        return _tag(
            ConfigurationError(
                f"EAM refused the agent configuration of {what}{where}: {detail or 'it is not valid'}; "
                "fix the agency spec"
            ),
            name,
        )
    if name == "ManagedObjectNotFound":
        return _tag(
            NotFoundError(f"{what} does not exist (any more) in EAM: it was destroyed; look it up again"),
            name,
        )
    if name == "EamServiceNotInitialized":
        return _tag(
            TransientError(
                f"EAM at {eam_url} is still starting (EamServiceNotInitialized): retry in a minute"
            ),
            name,
        )
    if name == "NotAuthorized":
        return _tag(
            ConfigurationError(
                f"EAM does not let this session change {what}: another solution owns it, or the user lacks "
                "EAM.Modify; log in as the solution that created it or grant the privilege"
            ),
            name,
        )
    return error
