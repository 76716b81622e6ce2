"""A vCenter inventory as frozen values: what ``agentvm.vsphere.inventory`` read in one bulk pass.

Built by the vSphere adapter; read by the engine, the backends, the controller and the CLI. Every object
carries its managed-object reference *and* its inventory path, so messages read
``host-21 (/DC0/host/C0/H0)`` (see ``describe()``). Lookups take every form govc takes (``model.names``) and
raise ``NotFoundError`` naming the reference and the closest names, so a typo in a spec gets a useful answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from agentvm.model.agency import MoRef, PowerState
from agentvm.model.errors import NotFoundError
from agentvm.model.names import select


class ConnectionState(StrEnum):
    """``HostSystem.runtime.connectionState``."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    NOT_RESPONDING = "notResponding"


class HostPowerState(StrEnum):
    """``HostSystem.runtime.powerState``."""

    POWERED_ON = "poweredOn"
    POWERED_OFF = "poweredOff"
    STANDBY = "standBy"
    UNKNOWN = "unknown"


class NetworkKind(StrEnum):
    STANDARD = "standard"  # a standard vSwitch port group (vim.Network)
    DISTRIBUTED = "distributed"  # a DV port group
    OPAQUE = "opaque"  # NSX opaque network


def describe(moref: MoRef, path: str | None) -> str:
    """``host-21 (/DC0/host/C0/H0)``, or just ``host-21`` when the path is unknown."""
    return f"{moref.value} ({path})" if path else moref.value


@dataclass(frozen=True)
class InventoryObject:
    """What every inventory object has: its reference, its name and its inventory path."""

    moref: MoRef
    name: str
    path: str

    def describe(self) -> str:
        return describe(self.moref, self.path)


@dataclass(frozen=True)
class Folder(InventoryObject):
    parent: MoRef | None = None


@dataclass(frozen=True)
class Datacenter(InventoryObject):
    pass


@dataclass(frozen=True)
class Cluster(InventoryObject):
    """A ``ClusterComputeResource``."""

    datacenter: MoRef | None = None
    hosts: tuple[MoRef, ...] = ()
    resource_pool: MoRef | None = None
    drs_enabled: bool = False
    ha_enabled: bool = False


@dataclass(frozen=True)
class ComputeResource(InventoryObject):
    """A standalone host's ``ComputeResource`` (not a cluster)."""

    datacenter: MoRef | None = None
    hosts: tuple[MoRef, ...] = ()
    resource_pool: MoRef | None = None


@dataclass(frozen=True)
class Host(InventoryObject):
    """A ``HostSystem``. ``parent`` is its cluster or standalone compute resource."""

    datacenter: MoRef | None = None
    parent: MoRef | None = None
    cluster: MoRef | None = None  # set when the parent is a cluster
    connection_state: ConnectionState = ConnectionState.CONNECTED
    in_maintenance_mode: bool = False
    power_state: HostPowerState = HostPowerState.POWERED_ON
    datastores: tuple[MoRef, ...] = ()
    networks: tuple[MoRef, ...] = ()
    product_version: str = ""
    product_line_id: str = ""  # "esx" / "embeddedEsx"
    agent_vm_datastore: MoRef | None = None  # summary.config.agentVmDatastore
    agent_vm_network: MoRef | None = None  # summary.config.agentVmNetwork
    esx_agent_host_manager: MoRef | None = None  # configManager.esxAgentHostManager

    @property
    def standby(self) -> bool:
        return self.power_state is HostPowerState.STANDBY

    @property
    def usable(self) -> bool:
        """Connected, powered on and not in maintenance mode: an agent VM can run here."""
        return (
            self.connection_state is ConnectionState.CONNECTED
            and self.power_state is HostPowerState.POWERED_ON
            and not self.in_maintenance_mode
        )


@dataclass(frozen=True)
class ManagedBy:
    """``VirtualMachine.config.managedBy``: the extension that owns a VM (EAM marks its agent VMs)."""

    extension_key: str
    type: str


@dataclass(frozen=True)
class VirtualMachine(InventoryObject):
    datacenter: MoRef | None = None
    host: MoRef | None = None
    power_state: PowerState = PowerState.POWERED_OFF
    resource_pool: MoRef | None = None
    template: bool = False
    managed_by: ManagedBy | None = None
    # only the keys that start with the prefix asked for, and only when asked (extraConfig is heavy)
    extra_config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __hash__(self) -> int:  # extra_config is a mapping; identity is the reference
        return hash(self.moref)


@dataclass(frozen=True)
class Network(InventoryObject):
    """A port group: standard, distributed (with its switch's uuid and VLAN) or opaque."""

    kind: NetworkKind = NetworkKind.STANDARD
    datacenter: MoRef | None = None
    dvs: MoRef | None = None
    dvs_uuid: str | None = None
    portgroup_key: str | None = None
    vlan_id: int | None = None  # a single VLAN; None for trunk, PVLAN or standard port groups
    uplink: bool = False


@dataclass(frozen=True)
class DistributedSwitch(InventoryObject):
    uuid: str = ""
    datacenter: MoRef | None = None


@dataclass(frozen=True)
class Datastore(InventoryObject):
    datacenter: MoRef | None = None
    accessible: bool = True
    type: str = ""
    capacity: int = 0
    free_space: int = 0


@dataclass(frozen=True)
class ResourcePool(InventoryObject):
    owner: MoRef | None = None  # the cluster or compute resource
    parent: MoRef | None = None


_T = TypeVar("_T", bound=InventoryObject)


def _index(objects: Iterable[InventoryObject]) -> Mapping[str, InventoryObject]:
    # keyed by moid: ids are unique within a vCenter, and a reference read from a property may name a base
    # type (DistributedVirtualSwitch) where the object itself is a subtype (VmwareDistributedVirtualSwitch)
    return MappingProxyType({o.moref.value: o for o in objects})


@dataclass(frozen=True)
class InventorySnapshot:
    """Everything read in one pass. Lookups are by reference, path or id; nothing here does I/O."""

    datacenters: tuple[Datacenter, ...] = ()
    folders: tuple[Folder, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    compute_resources: tuple[ComputeResource, ...] = ()
    hosts: tuple[Host, ...] = ()
    vms: tuple[VirtualMachine, ...] = ()
    networks: tuple[Network, ...] = ()
    dvswitches: tuple[DistributedSwitch, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    resource_pools: tuple[ResourcePool, ...] = ()
    _by_ref: Mapping[str, InventoryObject] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        everything: list[InventoryObject] = [
            *self.datacenters,
            *self.folders,
            *self.clusters,
            *self.compute_resources,
            *self.hosts,
            *self.vms,
            *self.networks,
            *self.dvswitches,
            *self.datastores,
            *self.resource_pools,
        ]
        # frozen: the index is computed once, here, and never changes
        object.__setattr__(self, "_by_ref", _index(everything))

    def __hash__(self) -> int:
        return hash((self.hosts, self.clusters))

    def get(self, moref: MoRef) -> InventoryObject | None:
        return self._by_ref.get(moref.value)

    def describe(self, moref: MoRef) -> str:
        """``host-21 (/DC0/host/C0/H0)`` for a known object, ``host-21`` for one not in the snapshot."""
        obj = self._by_ref.get(moref.value)
        return obj.describe() if obj else moref.value

    @property
    def datacenter_paths(self) -> tuple[str, ...]:
        """Where relative references (``host/DC0_C0``) are taken from."""
        return tuple(d.path for d in self.datacenters)

    def resolve(self, ref: str, objects: Iterable[_T], what: str) -> tuple[_T, ...]:
        """Every object of ``objects`` that ``ref`` names (``model.names``: path, relative path, unique
        name, glob, moid or typed moid): one, or all a glob matches. NotFoundError names ``ref``."""
        return select(ref, objects, what=what, datacenters=self.datacenter_paths)

    def find_cluster(self, ref: str) -> Cluster:
        """A cluster by inventory path (``/DC0/host/C0``), moid (``domain-c7``) or unique name."""
        return _find(self.clusters, ref, "cluster", self.datacenter_paths)

    def find_host(self, ref: str) -> Host:
        """A host by inventory path, moid or unique name (``esx-01.example.com``)."""
        return _find(self.hosts, ref, "host", self.datacenter_paths)

    def find_compute_resource(self, ref: str) -> Cluster | ComputeResource:
        """A cluster or standalone compute resource: what an agency's scope is made of."""
        both: tuple[Cluster | ComputeResource, ...] = (*self.clusters, *self.compute_resources)
        return _find(both, ref, "cluster or compute resource", self.datacenter_paths)

    def find_vm(self, ref: str) -> VirtualMachine:
        return _find(self.vms, ref, "VM", self.datacenter_paths)

    def find_network(self, ref: str) -> Network:
        return _find(self.networks, ref, "network", self.datacenter_paths)

    def hosts_of(self, compute_resource: MoRef) -> tuple[Host, ...]:
        """The hosts of a cluster or standalone compute resource, in inventory order."""
        return tuple(
            h for h in self.hosts if h.parent is not None and h.parent.value == compute_resource.value
        )

    def vms_on(self, host: MoRef) -> tuple[VirtualMachine, ...]:
        return tuple(vm for vm in self.vms if vm.host is not None and vm.host.value == host.value)


def _find(objects: Iterable[_T], ref: str, what: str, datacenters: Sequence[str] = ()) -> _T:
    """Exactly one object ``ref`` names (``model.names``); a glob must match exactly one here."""
    hits = select(ref, objects, what=what, datacenters=datacenters)
    if len(hits) > 1:
        paths = ", ".join(o.path for o in hits)
        raise NotFoundError(f"the pattern {ref!r} matches {len(hits)} objects ({paths}): name one {what}")
    return hits[0]
