# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam/vim/vmodl types at run time: their constructors are untyped)
"""Engine faults → the EAM / vmodl SOAP faults a pyVmomi client raises as typed exceptions.

Called by ``service.py`` around every engine call. One table, one-to-one with the EngineFault subclasses
of ``agentvm.engine.api``; anything else (a bug) becomes EamSystemFault with a short message, and the
traceback stays in the server log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyVmomi import eam, vmodl

from agentvm.eam.translate import agent_config_to_eam, to_mo
from agentvm.engine import api
from agentvm.model.agency import AgentConfig, MoRef


def _mo_or_none(ref: MoRef) -> Any:
    try:
        return to_mo(ref)
    except ValueError:
        return None


def to_soap_fault(exc: api.EngineFault, agent_configs: Sequence[AgentConfig] = ()) -> Any:
    """The pyVmomi fault for an engine fault; its ``msg`` is the engine's message.

    ``agent_configs``: the request's agent configs, so that InvalidAgentConfiguration can carry the
    offending entry (``invalidAgentConfiguration``) as EAM does.
    """
    message = str(exc)
    if isinstance(exc, api.ManagedObjectNotFound):
        fault: Any = vmodl.fault.ManagedObjectNotFound(msg=message, obj=_mo_or_none(exc.obj))
        if fault.obj is None:  # obj is mandatory on the wire; an unknown type cannot be referenced
            return eam.fault.EamSystemFault(msg=message)
        return fault
    if isinstance(exc, api.InvalidArgument):
        return vmodl.fault.InvalidArgument(msg=message, invalidProperty=exc.invalid_property)
    if isinstance(exc, api.InvalidAgentConfiguration):
        fault = eam.fault.InvalidAgentConfiguration(msg=message, invalidField=exc.invalid_field)
        if exc.index is not None and 0 <= exc.index < len(agent_configs):
            fault.invalidAgentConfiguration = agent_config_to_eam(agent_configs[exc.index])
        return fault
    if isinstance(exc, api.InvalidAgencyScope):
        unknown = [m for m in (_mo_or_none(r) for r in exc.unknown) if m is not None]
        return eam.fault.InvalidAgencyScope(msg=message, unknownComputeResource=unknown)
    if isinstance(exc, api.InvalidUrl):
        return eam.fault.InvalidUrl(
            msg=message,
            url=exc.url,
            malformedUrl=exc.malformed,
            unknownHost=exc.unknown_host,
            connectionRefused=exc.connection_refused,
            responseCode=exc.response_code,
        )
    if isinstance(exc, api.InvalidState):
        return eam.fault.InvalidState(msg=message)
    if isinstance(exc, api.NotAuthorized):
        return eam.fault.NotAuthorized(msg=message)
    # an EngineFault subclass this table does not know yet: still the engine's own words
    return eam.fault.EamSystemFault(msg=message)


def invalid_login() -> Any:
    return eam.fault.InvalidLogin(
        msg="no valid vCenter session: log in to vCenter's /sdk and send its vmware_soap_session cookie"
    )


def no_connection_to_vcenter(reason: str) -> Any:
    return eam.fault.NoConnectionToVCenter(msg=f"cannot check the session with vCenter: {reason}")


def method_not_found(receiver: Any, method: str) -> Any:
    return vmodl.fault.MethodNotFound(
        msg=f"{method} is not a method of {type(receiver)._wsdlName}", receiver=receiver, method=method
    )


def invalid_request(reason: str) -> Any:
    return vmodl.fault.InvalidRequest(msg=f"not a valid EAM SOAP request: {reason}")


def system_fault() -> Any:
    return eam.fault.EamSystemFault(msg="internal error in the EAM emulator; see its log")
