# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam/vim/vmodl types at run time: their constructors are untyped)
"""pyVmomi ``eam.*`` objects ⇄ agentvm.model values, for the EAM emulator and the EAM client.

Called by ``service.py`` in both directions: requests (Agency.ConfigInfo, Issue for AddIssue) become model
values for the engine; the engine's answers (configs, runtimes, issues) become ``eam.*`` objects that
``soap.reply`` serializes. Mandatory EAM fields always get valid values (docs/eam.md, "Runtime fields");
optional ones are left out rather than sent empty.

Kind-specific issue fields travel in ``Issue.detail`` under these keys (MoRefs as ``"Datastore:ds-1"``):
``download_url`` (CannotAccessAgentOVF), ``error`` (OvfInvalidFormat / OvfInvalidProperty: one or more
messages; InvalidConfig: one message), ``missing_file`` (VmCorrupted), ``custom_agent_vm_datastore`` +
``custom_agent_vm_datastore_name`` (NoCustomAgentVmDatastore), ``custom_agent_vm_network`` +
``custom_agent_vm_network_name`` (NoCustomAgentVmNetwork).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pyVmomi import VmomiSupport, eam, vmodl

from agentvm.model import agency
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    FolderMapping,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    ResourcePoolMapping,
    Status,
    VmHook,
)

_log = logging.getLogger(__name__)


class InvalidArgument(ValueError):
    """A request value EAM would refuse with vmodl.fault.InvalidArgument (the caller maps it)."""

    def __init__(self, message: str, invalid_property: str | None = None) -> None:
        super().__init__(message)
        self.invalid_property = invalid_property


DOWNLOAD_URL = agency.DETAIL_DOWNLOAD_URL
ERROR = agency.DETAIL_ERROR
MISSING_FILE = agency.DETAIL_MISSING_FILE
CUSTOM_DATASTORE = agency.DETAIL_CUSTOM_DATASTORE
CUSTOM_DATASTORE_NAME = agency.DETAIL_CUSTOM_DATASTORE_NAME
CUSTOM_NETWORK = agency.DETAIL_CUSTOM_NETWORK
CUSTOM_NETWORK_NAME = agency.DETAIL_CUSTOM_NETWORK_NAME

# --- managed-object references


def to_mo(ref: MoRef) -> Any:
    """A pyVmomi managed object (no stub) for a model MoRef; ``Agency:agency-1`` → ``eam.Agency``.

    Raises ValueError for a type that neither vim nor EAM knows.
    """
    try:
        mo_type = VmomiSupport.GuessWsdlType(ref.type)
    except KeyError as exc:
        raise ValueError(f"{ref}: {ref.type!r} is not a vSphere or EAM managed-object type") from exc
    return mo_type(ref.value)


def from_mo(mo: Any) -> MoRef:
    """The model MoRef of a pyVmomi managed object: its wsdl type name and id."""
    return MoRef(type(mo)._wsdlName, mo._moId)


def _opt_mo(ref: MoRef | None) -> Any:
    return None if ref is None else to_mo(ref)


def _mos(refs: Iterable[MoRef]) -> list[Any]:
    return [to_mo(r) for r in refs]


def _refs(mos: Iterable[Any] | None) -> tuple[MoRef, ...]:
    return tuple(from_mo(m) for m in mos or ())


def agency_mo(agency: str) -> Any:
    return eam.Agency(agency)


def agent_mo(agent: str) -> Any:
    return eam.Agent(agent)


# --- agent and agency configs


def agent_config_to_eam(config: AgentConfig) -> Any:
    info = eam.Agent.ConfigInfo(
        ovfPackageUrl=config.ovf_package_url,
        productLineId=config.product_line_id,
        hostVersion=config.host_version,
        ovfDiskProvisioning=config.ovf_disk_provisioning,
        vibUrl=config.vib_url,
    )
    if config.ovf_environment:
        prop_type = eam.Agent.OvfEnvironmentInfo.OvfProperty
        info.ovfEnvironment = eam.Agent.OvfEnvironmentInfo(
            ovfProperty=[prop_type(key=p.key, value=p.value) for p in config.ovf_environment]
        )
    return info


def agent_config_from_eam(info: Any) -> AgentConfig:
    env = info.ovfEnvironment
    props = tuple(OvfProperty(p.key, p.value or "") for p in (env.ovfProperty if env else ()) or ())
    return AgentConfig(
        ovf_package_url=info.ovfPackageUrl,
        ovf_environment=props,
        product_line_id=info.productLineId,
        host_version=info.hostVersion,
        ovf_disk_provisioning=info.ovfDiskProvisioning,
        vib_url=info.vibUrl,
    )


def agency_config_to_eam(config: AgencyConfig) -> Any:
    """An ``eam.Agency.ConfigInfo``; booleans are always sent (False is a real answer), lists only if set."""
    info = eam.Agency.ConfigInfo(
        agencyName=config.agency_name,
        agentName=config.agent_name,
        agentConfig=[agent_config_to_eam(a) for a in config.agent_configs],
        scope=eam.Agency.ComputeResourceScope(computeResource=_mos(config.scope)),
        useUuidVmName=config.use_uuid_vm_name,
        preferHostConfiguration=config.prefer_host_configuration,
        manuallyMarkAgentVmAvailableAfterProvisioning=config.manually_mark_available_after_provisioning,
        manuallyMarkAgentVmAvailableAfterPowerOn=config.manually_mark_available_after_power_on,
        optimizedDeploymentEnabled=config.optimized_deployment_enabled,
    )
    if config.agent_vm_datastores:
        info.agentVmDatastore = _mos(config.agent_vm_datastores)
    if config.agent_vm_networks:
        info.agentVmNetwork = _mos(config.agent_vm_networks)
    if config.folders:
        info.folders = [
            eam.Agency.VMFolder(folderId=to_mo(f.folder), datacenterId=to_mo(f.datacenter))
            for f in config.folders
        ]
    if config.resource_pools:
        info.resourcePools = [
            eam.Agency.VMResourcePool(
                resourcePoolId=to_mo(p.resource_pool), computeResourceId=to_mo(p.compute_resource)
            )
            for p in config.resource_pools
        ]
    return info


def agency_config_from_eam(info: Any) -> AgencyConfig:
    """The model config of a request's ``eam.Agency.ConfigInfo``.

    Raises InvalidArgument when agencyName is missing (docs/eam.md, "Methods") or the scope is not a
    ComputeResourceScope. Deprecated fields (manuallyProvisioned, ipPool, ...) are not carried.
    """
    if info is None:
        raise InvalidArgument("the agency config is missing", "agencyConfigInfo")
    if not info.agencyName:
        raise InvalidArgument("agencyName is required: give the agency a name", "agencyName")
    scope = info.scope
    if scope is not None and not isinstance(scope, eam.Agency.ComputeResourceScope):
        raise InvalidArgument("scope must be a ComputeResourceScope (clusters or compute resources)", "scope")

    def flag(value: bool | None, default: bool) -> bool:
        return default if value is None else bool(value)

    return AgencyConfig(
        agency_name=info.agencyName,
        agent_configs=tuple(agent_config_from_eam(a) for a in info.agentConfig or ()),
        scope=_refs(scope.computeResource if scope is not None else ()),
        agent_name=info.agentName,
        use_uuid_vm_name=flag(info.useUuidVmName, False),
        agent_vm_datastores=_refs(info.agentVmDatastore),
        agent_vm_networks=_refs(info.agentVmNetwork),
        prefer_host_configuration=flag(info.preferHostConfiguration, False),
        folders=tuple(
            FolderMapping(from_mo(f.folderId), from_mo(f.datacenterId)) for f in info.folders or ()
        ),
        resource_pools=tuple(
            ResourcePoolMapping(from_mo(p.resourcePoolId), from_mo(p.computeResourceId))
            for p in info.resourcePools or ()
        ),
        manually_mark_available_after_provisioning=flag(
            info.manuallyMarkAgentVmAvailableAfterProvisioning, False
        ),
        manually_mark_available_after_power_on=flag(info.manuallyMarkAgentVmAvailableAfterPowerOn, False),
        optimized_deployment_enabled=flag(info.optimizedDeploymentEnabled, True),
    )


def goal_state_from_eam(text: str | None) -> GoalState:
    """Raises InvalidArgument for anything but enabled / disabled / uninstalled."""
    try:
        return GoalState(text or "")
    except ValueError:
        raise InvalidArgument(
            f"goal state {text!r} is not one of enabled, disabled, uninstalled", "initialGoalState"
        ) from None


# --- issues


def _issue_type(kind: IssueKind) -> Any:
    # IssueKind values are the wsdl names (ManagedHostNotReachable's vmodl name is eam.issue.HostNotReachable)
    return VmomiSupport.GetWsdlType("urn:eam", kind.value)


_AGENT_ISSUE = eam.issue.AgentIssue
_VM_ISSUE = eam.issue.VmIssue


def _detail_list(detail: Mapping[str, str | tuple[str, ...]], key: str) -> list[str]:
    value = detail.get(key, ())
    return [value] if isinstance(value, str) else list(value)


def _description(issue: Issue) -> str:
    where = issue.agent_name or issue.host_name or issue.agency_name
    return f"{issue.kind.value}: {where}"


def issue_to_eam(issue: Issue, solution_id: str) -> Any:
    """The ``eam.issue.<kind>`` for an issue, with the agency, agent, host and VM fields its type has.

    ``solution_id`` is the owning agency's (AgencyIssue.solutionId; it is also used as solutionName, since
    the lab has no extension labels [I]). Raises ValueError when a field the wire type requires (the agent
    and host of an agent issue, the VM of a VM issue) is missing from the model issue.
    """
    issue_type = _issue_type(issue.kind)
    detail = issue.detail
    value = issue_type(
        key=issue.key,
        description=_description(issue),
        time=issue.time,
        agency=agency_mo(issue.agency),
        agencyName=issue.agency_name,
        solutionId=solution_id,
        solutionName=solution_id,
    )
    if issubclass(issue_type, _AGENT_ISSUE):
        if issue.agent is None or issue.host is None:
            raise ValueError(f"issue {issue.key} ({issue.kind}) has no agent or host; EAM requires both")
        value.agent = agent_mo(issue.agent)
        value.agentName = issue.agent_name or ""
        value.host = to_mo(issue.host)
        value.hostName = issue.host_name or ""
    if issubclass(issue_type, _VM_ISSUE):
        if issue.vm is None:
            raise ValueError(f"issue {issue.key} ({issue.kind}) has no VM; EAM requires one")
        value.vm = to_mo(issue.vm)
    kind = issue.kind
    if kind is IssueKind.CANNOT_ACCESS_AGENT_OVF:
        value.downloadUrl = str(detail.get(DOWNLOAD_URL, ""))
    elif kind in (IssueKind.OVF_INVALID_FORMAT, IssueKind.OVF_INVALID_PROPERTY):
        errors = _detail_list(detail, ERROR)
        if errors:
            value.error = [vmodl.fault.InvalidArgument(msg=text) for text in errors]
    elif kind is IssueKind.INVALID_CONFIG:
        value.error = " ".join(_detail_list(detail, ERROR)) or "invalid configuration"
    elif kind is IssueKind.VM_CORRUPTED:
        value.missingFile = detail.get(MISSING_FILE) or None
    elif kind in (IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE, IssueKind.NO_CUSTOM_AGENT_VM_NETWORK):
        _fill_custom(value, kind, detail)
    return value


def _fill_custom(value: Any, kind: IssueKind, detail: Mapping[str, str | tuple[str, ...]]) -> None:
    if kind is IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE:
        refs, names = _detail_list(detail, CUSTOM_DATASTORE), _detail_list(detail, CUSTOM_DATASTORE_NAME)
        value.customAgentVmDatastore = [to_mo(MoRef.parse(r)) for r in refs]
        value.customAgentVmDatastoreName = names
    else:
        refs, names = _detail_list(detail, CUSTOM_NETWORK), _detail_list(detail, CUSTOM_NETWORK_NAME)
        value.customAgentVmNetwork = [to_mo(MoRef.parse(r)) for r in refs]
        value.customAgentVmNetworkName = names


def issue_from_eam(value: Any) -> Issue:
    """A model issue from an ``eam.issue.*`` object (AddIssue, and the translation round trip).

    Raises InvalidArgument for an issue type agentvm does not model (EAM answers AddIssue of an unknown
    type with InvalidArgument too).
    """
    wsdl_name = type(value)._wsdlName
    try:
        kind = IssueKind(wsdl_name)
    except ValueError:
        raise InvalidArgument(
            f"issue type {wsdl_name} is not supported; use one of: {', '.join(k.value for k in IssueKind)}",
            "issue",
        ) from None
    detail: dict[str, str | tuple[str, ...]] = {}
    if kind is IssueKind.CANNOT_ACCESS_AGENT_OVF and value.downloadUrl:
        detail[DOWNLOAD_URL] = value.downloadUrl
    elif kind in (IssueKind.OVF_INVALID_FORMAT, IssueKind.OVF_INVALID_PROPERTY) and value.error:
        detail[ERROR] = tuple(e.msg or type(e)._wsdlName for e in value.error)
    elif kind is IssueKind.INVALID_CONFIG and value.error is not None:
        detail[ERROR] = str(value.error)
    elif kind is IssueKind.VM_CORRUPTED and value.missingFile:
        detail[MISSING_FILE] = value.missingFile
    elif kind is IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE:
        detail[CUSTOM_DATASTORE] = tuple(str(from_mo(m)) for m in value.customAgentVmDatastore or ())
        detail[CUSTOM_DATASTORE_NAME] = tuple(value.customAgentVmDatastoreName or ())
    elif kind is IssueKind.NO_CUSTOM_AGENT_VM_NETWORK:
        detail[CUSTOM_NETWORK] = tuple(str(from_mo(m)) for m in value.customAgentVmNetwork or ())
        detail[CUSTOM_NETWORK_NAME] = tuple(value.customAgentVmNetworkName or ())
    agent = getattr(value, "agent", None)
    host = getattr(value, "host", None)
    vm = getattr(value, "vm", None)
    agency = getattr(value, "agency", None)
    return Issue(
        key=value.key or 0,
        kind=kind,
        time=value.time or datetime.now(UTC),
        agency=agency._moId if agency is not None else "",
        agency_name=getattr(value, "agencyName", None) or "",
        agent=agent._moId if agent is not None else None,
        agent_name=getattr(value, "agentName", None),
        host=from_mo(host) if host is not None else None,
        host_name=getattr(value, "hostName", None),
        vm=from_mo(vm) if vm is not None else None,
        detail=detail,
    )


# --- runtimes


def agency_runtime_to_eam(runtime: AgencyRuntime, solution_id: str) -> Any:
    info = eam.EamObject.RuntimeInfo(
        status=runtime.status.value,
        goalState=runtime.goal_state.value,
        entity=agency_mo(runtime.agency),
    )
    if runtime.issues:
        info.issue = [issue_to_eam(i, solution_id) for i in runtime.issues]
    return info


def agent_runtime_to_eam(runtime: AgentRuntime, solution_id: str) -> Any:
    """``eam.Agent.RuntimeInfo``. receivingHeartBeat (mandatory, deprecated) is true while the VM runs [I]."""
    info = eam.Agent.RuntimeInfo(
        status=runtime.status.value,
        goalState=runtime.goal_state.value,
        entity=agent_mo(runtime.agent),
        vmPowerState=runtime.power_state.value,
        receivingHeartBeat=runtime.power_state is PowerState.POWERED_ON,
        vmName=runtime.vm_name,
        host=to_mo(runtime.host),
        vm=_opt_mo(runtime.vm),
        vmIp=runtime.vm_ip or None,
        esxAgentResourcePool=_opt_mo(runtime.resource_pool),
        esxAgentFolder=_opt_mo(runtime.folder),
        agency=agency_mo(runtime.agency),
    )
    if runtime.issues:
        info.issue = [issue_to_eam(i, solution_id) for i in runtime.issues]
    if runtime.hook is not None:
        info.vmHook = eam.Agent.VmHook(vm=to_mo(runtime.hook.vm), vmState=runtime.hook.state.value)
    return info


def agent_runtime_from_eam(info: Any, host_name: str = "") -> AgentRuntime:
    """The inverse of agent_runtime_to_eam (host_name is not on the wire; the translation tests use it)."""
    hook = info.vmHook
    return AgentRuntime(
        agent=info.entity._moId,
        agency=info.agency._moId,
        host=from_mo(info.host),
        host_name=host_name,
        goal_state=GoalState(info.goalState),
        status=Status(info.status),
        power_state=PowerState(info.vmPowerState),
        vm_name=info.vmName,
        vm=from_mo(info.vm) if info.vm is not None else None,
        vm_ip=info.vmIp,
        hook=VmHook(from_mo(hook.vm), HookState(hook.vmState)) if hook is not None else None,
        issues=tuple(issue_from_eam(i) for i in info.issue or ()),
        resource_pool=from_mo(info.esxAgentResourcePool) if info.esxAgentResourcePool else None,
        folder=from_mo(info.esxAgentFolder) if info.esxAgentFolder else None,
    )


def agency_runtime_from_eam(info: Any) -> AgencyRuntime:
    return AgencyRuntime(
        agency=info.entity._moId,
        goal_state=GoalState(info.goalState),
        status=Status(info.status),
        issues=tuple(issue_from_eam(i) for i in info.issue or ()),
    )


# --- the client side (eam.client): lenient readers of what a real EAM answers
#
# A real EAM raises issue types agentvm does not model (VIB issues, vLCM hooks, newer kinds) and may leave
# optional fields out (runtime.agency, issue.agent). A status read must not fail on them: these readers
# skip unknown issue types (logged) and fill missing ids from the caller's context.


def read_issues(values: Iterable[Any]) -> tuple[Issue, ...]:
    """The issues agentvm models, in order; issues of other types are skipped with a warning."""
    issues = []
    for value in values:
        try:
            issues.append(issue_from_eam(value))
        except InvalidArgument:
            _log.warning(
                "EAM issue %s of type %s is not one agentvm understands; skipped (see the vSphere client)",
                getattr(value, "key", "?"),
                type(value)._wsdlName,
            )
    return tuple(issues)


def read_agency_runtime(info: Any, agency: str) -> AgencyRuntime:
    """An agency's ``EamObject.RuntimeInfo`` → AgencyRuntime; ``agency`` is the id the client asked about."""
    return AgencyRuntime(
        agency=info.entity._moId if info.entity is not None else agency,
        goal_state=GoalState(info.goalState),
        status=Status(info.status),
        issues=read_issues(info.issue or ()),
    )


def read_agent_runtime(info: Any, agent: str, agency: str | None = None) -> AgentRuntime:
    """An ``eam.Agent.RuntimeInfo`` → AgentRuntime, for the agent id the client asked about.

    EAM does not send host names: ``host_name`` is the host's moid unless one of the agent's issues names
    the host. ``agency`` fills ``runtime.agency`` when EAM leaves it out. Raises ValueError when EAM did not
    say which host the agent is for.
    """
    issues = read_issues(info.issue or ())
    if info.host is None:
        raise ValueError(f"EAM's runtime of agent {agent} names no host")
    host = from_mo(info.host)
    host_name = next((i.host_name for i in issues if i.host == host and i.host_name), None) or host.value
    hook = info.vmHook
    return AgentRuntime(
        agent=info.entity._moId if info.entity is not None else agent,
        agency=info.agency._moId if info.agency is not None else (agency or ""),
        host=host,
        host_name=host_name,
        goal_state=GoalState(info.goalState),
        status=Status(info.status),
        power_state=PowerState(info.vmPowerState),
        vm_name=info.vmName or "",
        vm=from_mo(info.vm) if info.vm is not None else None,
        vm_ip=info.vmIp or None,
        hook=VmHook(from_mo(hook.vm), HookState(hook.vmState)) if hook is not None else None,
        issues=issues,
        resource_pool=from_mo(info.esxAgentResourcePool) if info.esxAgentResourcePool else None,
        folder=from_mo(info.esxAgentFolder) if info.esxAgentFolder else None,
    )
