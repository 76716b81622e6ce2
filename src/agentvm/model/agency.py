"""Agencies, agents, hooks and issues: EAM's vocabulary as frozen values.

Used by the engine (agentvm's own EAM-equivalent), the EAM backend (which translates pyVmomi's ``eam.*``
objects to and from these), the lab's EAM emulator and the controller. Field names follow EAM's API
(docs/eam.md) in snake_case, so a reader can map one to the other without a table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Self


@dataclass(frozen=True, order=True)
class MoRef:
    """A managed-object reference: type and id, e.g. ``HostSystem:host-21``."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> MoRef:
        """``"HostSystem:host-21"`` → MoRef. Raises ValueError when there is no ``type:`` prefix."""
        kind, sep, value = text.partition(":")
        if not sep or not kind or not value:
            raise ValueError(f"{text!r} is not a managed-object reference like HostSystem:host-21")
        return cls(kind, value)


class GoalState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    UNINSTALLED = "uninstalled"


class Status(StrEnum):
    """EAM's status: yellow while working, red when an issue blocks the goal, green when it is reached."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class PowerState(StrEnum):
    """A VM's power state: ``VirtualMachine.runtime.powerState``, EAM's ``vmPowerState``."""

    POWERED_ON = "poweredOn"
    POWERED_OFF = "poweredOff"
    SUSPENDED = "suspended"


class HookState(StrEnum):
    """What a pending VM hook waits for (``Agent.RuntimeInfo.vmHook.vmState``)."""

    PROVISIONED = "provisioned"
    POWERED_ON = "poweredOn"
    PRE_POWER_ON = "prePowerOn"


class IssueKind(StrEnum):
    """The ``eam.issue.*`` types agentvm raises or understands (docs/eam.md, "Issues")."""

    CANNOT_ACCESS_AGENT_OVF = "CannotAccessAgentOVF"
    OVF_INVALID_FORMAT = "OvfInvalidFormat"
    OVF_INVALID_PROPERTY = "OvfInvalidProperty"
    INCOMPATIBLE_HOST_VERSION = "IncompatibleHostVersion"
    INSUFFICIENT_RESOURCES = "InsufficientResources"
    INSUFFICIENT_SPACE = "InsufficientSpace"
    NO_AGENT_VM_DATASTORE = "NoAgentVmDatastore"
    NO_AGENT_VM_NETWORK = "NoAgentVmNetwork"
    NO_CUSTOM_AGENT_VM_DATASTORE = "NoCustomAgentVmDatastore"
    NO_CUSTOM_AGENT_VM_NETWORK = "NoCustomAgentVmNetwork"
    INVALID_CONFIG = "InvalidConfig"
    VM_POWERED_OFF = "VmPoweredOff"
    VM_SUSPENDED = "VmSuspended"
    VM_POWERED_ON = "VmPoweredOn"
    VM_NOT_DEPLOYED = "VmNotDeployed"
    VM_CORRUPTED = "VmCorrupted"
    VM_ORPHANED = "VmOrphaned"
    MANAGED_HOST_NOT_REACHABLE = "ManagedHostNotReachable"
    VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE = "VmRequiresHostOutOfMaintenanceMode"
    HOST_IN_MAINTENANCE_MODE = "HostInMaintenanceMode"
    HOST_IN_STANDBY_MODE = "HostInStandbyMode"


class Remedy(StrEnum):
    """What ``Resolve`` does for an issue kind."""

    POWER_ON = "power-on"  # active: power the agent VM on
    POWER_OFF = "power-off"  # active: power the agent VM off (disabled agency)
    REDEPLOY = "redeploy"  # active: deploy the agent VM again
    REMOVE_VM = "remove-vm"  # active: delete an orphaned VM
    EXIT_MAINTENANCE = "exit-maintenance"  # active: take the host out of maintenance mode, then act
    RECHECK = "recheck"  # passive: drop the issue if its condition is gone
    NONE = "none"  # not remediable through Resolve; clears by itself


REMEDIES: Mapping[IssueKind, Remedy] = {
    IssueKind.CANNOT_ACCESS_AGENT_OVF: Remedy.REDEPLOY,
    IssueKind.OVF_INVALID_FORMAT: Remedy.RECHECK,
    IssueKind.OVF_INVALID_PROPERTY: Remedy.RECHECK,
    IssueKind.INCOMPATIBLE_HOST_VERSION: Remedy.REDEPLOY,
    IssueKind.INSUFFICIENT_RESOURCES: Remedy.REDEPLOY,
    IssueKind.INSUFFICIENT_SPACE: Remedy.REDEPLOY,
    IssueKind.NO_AGENT_VM_DATASTORE: Remedy.RECHECK,
    IssueKind.NO_AGENT_VM_NETWORK: Remedy.RECHECK,
    IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE: Remedy.RECHECK,
    IssueKind.NO_CUSTOM_AGENT_VM_NETWORK: Remedy.RECHECK,
    IssueKind.INVALID_CONFIG: Remedy.RECHECK,
    IssueKind.VM_POWERED_OFF: Remedy.POWER_ON,
    IssueKind.VM_SUSPENDED: Remedy.POWER_ON,
    IssueKind.VM_POWERED_ON: Remedy.POWER_OFF,
    IssueKind.VM_NOT_DEPLOYED: Remedy.REDEPLOY,
    IssueKind.VM_CORRUPTED: Remedy.REDEPLOY,
    IssueKind.VM_ORPHANED: Remedy.REMOVE_VM,
    IssueKind.MANAGED_HOST_NOT_REACHABLE: Remedy.NONE,
    IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE: Remedy.EXIT_MAINTENANCE,
    IssueKind.HOST_IN_MAINTENANCE_MODE: Remedy.EXIT_MAINTENANCE,
    IssueKind.HOST_IN_STANDBY_MODE: Remedy.NONE,
}


# Keys of Issue.detail: the kind-specific fields of EAM's issue types, one vocabulary for the engine that
# raises issues and the EAM translation that puts them on the wire. References are written "Datastore:ds-1".
DETAIL_DOWNLOAD_URL = "download_url"  # CannotAccessAgentOVF.downloadUrl
DETAIL_ERROR = "error"  # OvfInvalidFormat / OvfInvalidProperty (one or more), InvalidConfig (one)
DETAIL_MISSING_FILE = "missing_file"  # VmCorrupted.missingFile
DETAIL_CUSTOM_DATASTORE = "custom_agent_vm_datastore"  # NoCustomAgentVmDatastore candidates
DETAIL_CUSTOM_DATASTORE_NAME = "custom_agent_vm_datastore_name"
DETAIL_CUSTOM_NETWORK = "custom_agent_vm_network"  # NoCustomAgentVmNetwork candidates
DETAIL_CUSTOM_NETWORK_NAME = "custom_agent_vm_network_name"


@dataclass(frozen=True)
class OvfProperty:
    key: str
    value: str


@dataclass(frozen=True)
class AgentConfig:
    """One ``eam.Agent.ConfigInfo``: what to run on a host whose product line and version match."""

    ovf_package_url: str | None = None
    ovf_environment: tuple[OvfProperty, ...] = ()
    product_line_id: str | None = None  # "esx" / "embeddedEsx"; None matches any
    host_version: str | None = None  # "7.0.3", "7.*"; None matches any
    ovf_disk_provisioning: str | None = None  # "none" / "thin" / "thick"
    vib_url: str | None = None


@dataclass(frozen=True)
class ResourcePoolMapping:
    resource_pool: MoRef
    compute_resource: MoRef


@dataclass(frozen=True)
class FolderMapping:
    folder: MoRef
    datacenter: MoRef


@dataclass(frozen=True)
class AgencyConfig:
    """One ``eam.Agency.ConfigInfo``. ``Update`` replaces it whole (docs/eam.md, "Methods")."""

    agency_name: str
    agent_configs: tuple[AgentConfig, ...]
    scope: tuple[MoRef, ...] = ()  # ClusterComputeResource / ComputeResource
    agent_name: str | None = None  # VM names "<agent_name> (N)"; defaults to agency_name
    use_uuid_vm_name: bool = False  # VM names "<agent_name>-<uuid>"
    agent_vm_datastores: tuple[MoRef, ...] = ()
    agent_vm_networks: tuple[MoRef, ...] = ()
    prefer_host_configuration: bool = False
    folders: tuple[FolderMapping, ...] = ()
    resource_pools: tuple[ResourcePoolMapping, ...] = ()
    manually_mark_available_after_provisioning: bool = False
    manually_mark_available_after_power_on: bool = False
    optimized_deployment_enabled: bool = True

    def with_(self, **changes: object) -> Self:
        """A copy with some fields changed (frozen values are never edited in place)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class VmHook:
    """A pending hook: EAM waits on ``vm`` (which may differ from the agent's VM during an upgrade)."""

    vm: MoRef
    state: HookState


@dataclass(frozen=True)
class Issue:
    """An EAM issue. Keys are unique across the server; match issues by kind and agent, not by key."""

    key: int
    kind: IssueKind
    time: datetime
    agency: str  # the agency's id
    agency_name: str
    agent: str | None = None  # the agent's id (None for agency issues)
    agent_name: str | None = None
    host: MoRef | None = None
    host_name: str | None = None
    vm: MoRef | None = None
    vm_name: str | None = None
    # kind-specific fields: download_url, error, missing_file, candidate datastores/networks ...
    detail: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    @property
    def remedy(self) -> Remedy:
        return REMEDIES[self.kind]


@dataclass(frozen=True)
class AgentRuntime:
    """One agent (one host) as EAM reports it in ``Agent.QueryRuntime``."""

    agent: str  # the agent's id
    agency: str
    host: MoRef
    host_name: str
    goal_state: GoalState
    status: Status
    power_state: PowerState
    vm_name: str
    vm: MoRef | None = None
    vm_ip: str | None = None
    hook: VmHook | None = None
    issues: tuple[Issue, ...] = ()
    resource_pool: MoRef | None = None
    folder: MoRef | None = None


@dataclass(frozen=True)
class AgencyRuntime:
    """One agency as EAM reports it in ``Agency.QueryRuntime``: its issues aggregate its agents'."""

    agency: str  # the agency's id
    goal_state: GoalState
    status: Status
    issues: tuple[Issue, ...] = ()
    solution_id: str | None = None
