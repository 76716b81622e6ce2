"""vCenter networking and its Tungsten Fabric mirror as frozen values: the "vCenter plugin" vocabulary.

Three groups, read top to bottom:

* the **inventory** side (what the vSphere adapter observes): distributed switches, DV port groups with their
  VLAN and IP-pool association, IP pools, and VMs with their NICs;
* the **SDN** side (what the SDN adapter reads from / writes to the controller and the vRouter agents):
  virtual network (+ subnets), virtual machine, virtual-machine-interface, instance IP, vRouter port;
* the **plan** (what ``agentvm.core.netsync`` decides and ``agentvm.sdn.sync`` carries out): objects to
  create / update / delete, vRouter port calls, DV port VLANs, and per-item errors. Each item has a typed
  key (``ItemKey``: what retries, holds and events name it by) and a ``label()`` for a person.

Field names follow the vSphere and Tungsten Fabric APIs in snake_case. Addresses are strings in their usual
text form (``10.0.0.5``, ``10.0.0.0/24``, ``00:50:56:aa:bb:cc``); the core parses them where it needs to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from agentvm.model.agency import PowerState

CREATOR = "agentvm"
"""What agentvm writes into ``id_perms.creator``; only objects carrying it are ever updated or deleted."""

ADDRESS_KEY = "guestinfo.agentvm.address"
AGENCY_KEY = "guestinfo.agentvm.agency"  # the agency whose IP plan gave that address
"""The agent VM's extraConfig key for its host's address from the IP plan (written when agentvm answers the
VM's hook): the network sync's fallback for where that host's vRouter agent listens."""

# ---------------------------------------------------------------------------------------------------------
# inventory (vCenter side)


@dataclass(frozen=True)
class IpRange:
    """An inclusive address range, e.g. ``10.0.0.10`` - ``10.0.0.50`` (vCenter's ``10.0.0.10#41``)."""

    start: str
    end: str


@dataclass(frozen=True)
class IpPool:
    """A vCenter IP pool (``vim.vApp.IpPool``): the subnet a port group's VMs get their addresses from.

    ``external_ipam`` means the addresses are managed outside (DHCP server, static in the guest): agentvm
    then uses the guest's own address instead of allocating one.
    """

    id: str
    name: str
    cidr: str  # "10.0.0.0/24"
    gateway: str | None = None
    ranges: tuple[IpRange, ...] = ()
    dhcp: bool = False
    external_ipam: bool = False
    dns_servers: tuple[str, ...] = ()  # ``ipv4Config.dns``, in order


@dataclass(frozen=True)
class Dvs:
    """A distributed virtual switch; its PVLAN ids are never handed out as per-port VLANs."""

    key: str  # moid, "dvs-21"
    name: str
    pvlan_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class PortGroup:
    """A DV port group. ``vlan_id`` is its configured VLAN (or PVLAN primary); None means not configured."""

    key: str  # moid, "dvportgroup-31"
    name: str
    dvs_key: str
    vlan_id: int | None
    ip_pool_id: str | None = None


@dataclass(frozen=True)
class Nic:
    """A VM's virtual NIC on a DV port. ``port_vlan_id`` is the VLAN currently set on its DV port, if any."""

    device_key: int  # 4000, 4001, ...
    mac: str | None
    port_group_key: str
    port_key: str | None = None  # DV port key, None until the NIC is connected
    port_vlan_id: int | None = None
    guest_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vm:
    """A VM with its NICs. ``host`` is the moid of the ESXi host it runs on (None if it has none)."""

    moid: str  # "vm-42"
    name: str
    host: str | None
    power_state: PowerState
    nics: tuple[Nic, ...] = ()

    def label(self) -> str:
        """How messages name the VM: ``vm-42 (web-1)``."""
        return f"{self.moid} ({self.name})"


@dataclass(frozen=True)
class NetworkInventory:
    """One consistent snapshot of what netsync needs from one vCenter (``vcenter_uuid``: instanceUuid)."""

    vcenter_uuid: str
    port_groups: tuple[PortGroup, ...] = ()
    ip_pools: tuple[IpPool, ...] = ()
    vms: tuple[Vm, ...] = ()
    dvses: tuple[Dvs, ...] = ()


@dataclass(frozen=True)
class NetsyncConfig:
    """Where netsync puts things in the controller and which VLANs it may hand out."""

    domain: str = "default-domain"
    project: str = "default-project"
    ipam_fq_name: tuple[str, ...] = ("default-domain", "default-project", "default-network-ipam")
    reserved_vlans: tuple[tuple[int, int], ...] = ()  # inclusive ranges never handed out
    creator: str = CREATOR


# ---------------------------------------------------------------------------------------------------------
# SDN side (Tungsten Fabric config API and vRouter agent)


@dataclass(frozen=True)
class SdnSubnet:
    """One ``ipam_subnets`` entry of a virtual network's network-ipam ref."""

    cidr: str
    gateway: str | None
    allocation_pools: tuple[IpRange, ...] = ()
    dhcp: bool = False
    subnet_uuid: str | None = None
    dns_servers: tuple[str, ...] = ()  # handed to the VMs by the vRouter's DHCP (option 6)


@dataclass(frozen=True)
class SdnVirtualNetwork:
    uuid: str
    fq_name: tuple[str, ...]
    display_name: str = ""
    subnets: tuple[SdnSubnet, ...] = ()
    creator: str | None = None


@dataclass(frozen=True)
class SdnVirtualMachine:
    uuid: str
    fq_name: tuple[str, ...]
    display_name: str = ""
    creator: str | None = None


@dataclass(frozen=True)
class SdnVmi:
    """A virtual-machine-interface. ``host`` and ``vlan`` are agentvm's record (annotations) of where its
    vRouter port was put, so a vMotion or a restart finds the old port again."""

    uuid: str
    fq_name: tuple[str, ...]
    mac: str
    vn_uuid: str
    vm_uuid: str | None
    display_name: str = ""
    host: str | None = None
    vlan: int | None = None
    creator: str | None = None


@dataclass(frozen=True)
class SdnInstanceIp:
    uuid: str
    fq_name: tuple[str, ...]
    address: str
    vn_uuid: str
    vmi_uuid: str | None
    creator: str | None = None


SdnObject = SdnVirtualNetwork | SdnVirtualMachine | SdnVmi | SdnInstanceIp


@dataclass(frozen=True)
class ControllerState:
    """What the controller holds now (all objects of the four types, ours and others')."""

    project_uuid: str
    virtual_networks: tuple[SdnVirtualNetwork, ...] = ()
    virtual_machines: tuple[SdnVirtualMachine, ...] = ()
    vmis: tuple[SdnVmi, ...] = ()
    instance_ips: tuple[SdnInstanceIp, ...] = ()


REMOTE_PORT = 2
"""The vRouter agent's port type for a port of a VM outside the agent's own OS (an ESXi VM)."""


@dataclass(frozen=True)
class VrouterPort:
    """A port as the vRouter agent's ``POST /port`` takes it (field names in snake_case), plus its state."""

    id: str  # the VMI uuid
    instance_id: str  # the VM uuid
    vn_id: str
    vm_project_id: str
    display_name: str
    ip_address: str
    mac_address: str
    system_name: str
    rx_vlan_id: int
    tx_vlan_id: int
    ip6_address: str = "::"
    type: int = REMOTE_PORT
    vhostuser_mode: int = 0
    enabled: bool = False

    def same_config(self, other: VrouterPort) -> bool:
        """Equal apart from the enabled state (which has its own calls)."""
        return self == replace(other, enabled=self.enabled)


# ---------------------------------------------------------------------------------------------------------
# the plan


class PortAction(StrEnum):
    ADD = "add"  # POST /port (also replaces a port whose fields changed)
    ENABLE = "enable"  # PUT /enable-port/{id}
    DISABLE = "disable"  # PUT /disable-port/{id}
    DELETE = "delete"  # DELETE /port/{id}


class ItemKind(StrEnum):
    """What a planned item acts on, as its key names it."""

    OBJECT = "obj"  # a config-API object (virtual network, VM, interface, instance IP), by uuid
    PORT = "port"  # a vRouter agent's port, by its interface (VMI) uuid
    DV_PORT = "dvport"  # a DV port's VLAN, by the port's key


@dataclass(frozen=True, order=True)
class ItemKey:
    """The identity of a planned item across syncs: what its retries, holds and events are keyed by.

    ``str(key)`` is ``<kind>:<id>`` (``port:<uuid>``, ``obj:<uuid>``, ``dvport:<port key>``): the form the
    controller's events (``data.key``) and logs show; ``ItemKey.parse`` reads it back.
    """

    kind: ItemKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> ItemKey:
        """The key ``str(key)`` rendered. Raises ValueError naming ``text`` when it is not one."""
        kind, sep, ident = text.partition(":")
        try:
            if sep and ident:
                return cls(ItemKind(kind), ident)
        except ValueError:
            pass
        kinds = ", ".join(k.value for k in ItemKind)
        raise ValueError(f"{text!r} is not an item key: expected <kind>:<id> with kind one of {kinds}")


def object_key(obj: SdnObject) -> ItemKey:
    """The key of a config-API object's create, update or delete."""
    return ItemKey(ItemKind.OBJECT, obj.uuid)


class ObjectVerb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class ObjectCall:
    """One config-API call of a plan: ``verb`` an object; ``type_name`` is its config-API type
    (``virtual-network``), which the SDN adapter knows."""

    verb: ObjectVerb
    type_name: str
    obj: SdnObject

    @property
    def key(self) -> ItemKey:
        return object_key(self.obj)

    def label(self) -> str:
        """For a person: ``create virtual-network <uuid> (<fq name>)``."""
        return f"{self.verb.value} {self.type_name} {self.obj.uuid} ({':'.join(self.obj.fq_name)})"


@dataclass(frozen=True)
class PortChange:
    action: PortAction
    host: str  # host moid; the caller maps it to that host's agent address
    port: VrouterPort

    @property
    def key(self) -> ItemKey:
        return ItemKey(ItemKind.PORT, self.port.id)

    def label(self) -> str:
        """For a person: ``add port <uuid> on <host>``."""
        return f"{self.action.value} port {self.port.id} on {self.host}"


@dataclass(frozen=True)
class DvPortVlan:
    """A VLAN to set on a DV port with ReconfigureDVPort (the vCenter side carries it out)."""

    host: str
    port_group_key: str
    port_key: str
    vlan: int
    vmi_uuid: str

    @property
    def key(self) -> ItemKey:
        return ItemKey(ItemKind.DV_PORT, self.port_key)

    def label(self) -> str:
        """For a person: ``set VLAN <n> on DV port <key> of <port group> (interface <uuid>, host <moid>)``."""
        return (
            f"set VLAN {self.vlan} on DV port {self.port_key} of {self.port_group_key} "
            f"(interface {self.vmi_uuid}, host {self.host})"
        )


SyncItem = ObjectCall | PortChange | DvPortVlan
"""One planned item as carried out: what a failure names (``ApplyFailure.subject``)."""


class SyncErrorKind(StrEnum):
    BAD_INPUT = "bad-input"  # fix it in vCenter: pool range outside subnet, port group without VLAN, ...
    CONFLICT = "conflict"  # an object not agentvm's is in the way; agentvm leaves it alone
    VLAN_EXHAUSTED = "vlan-exhausted"
    IP_EXHAUSTED = "ip-exhausted"
    WAITING = "waiting"  # not an error yet: e.g. a NIC with no MAC, a guest with no address so far


@dataclass(frozen=True)
class SyncError:
    """One item that could not be planned; the rest of the sync goes on. ``item`` names it for a person."""

    kind: SyncErrorKind
    item: str
    message: str


@dataclass(frozen=True)
class SyncPlan:
    """Everything one sync would do, in the order it must be done.

    ``create`` is in dependency order (networks, machines, interfaces, addresses) and ``delete`` in the
    reverse, and all deletes run before any create: an object whose immutable field changed (an instance
    IP's address, an interface's network) is in both, deleted and created again with the same uuid.
    ``ports`` is in call order; ``dv_port_vlans`` lists only ports whose VLAN must change.
    """

    create: tuple[SdnObject, ...] = ()
    update: tuple[SdnObject, ...] = ()
    delete: tuple[SdnObject, ...] = ()
    ports: tuple[PortChange, ...] = ()
    dv_port_vlans: tuple[DvPortVlan, ...] = ()
    errors: tuple[SyncError, ...] = ()

    @property
    def is_noop(self) -> bool:
        """True when nothing would change (errors do not count: they are reported, not acted on)."""
        return not (self.create or self.update or self.delete or self.ports or self.dv_port_vlans)
