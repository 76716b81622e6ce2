"""netsync: vCenter networking -> the Tungsten Fabric objects and vRouter ports it should be, and the diff.

Called by ``agentvm netsync plan|apply`` and by the controller's network sync, with an inventory snapshot
(``NetworkInventory``), the controller's current objects (``ControllerState``) and the ports each host's
vRouter agent holds now. Returns a ``SyncPlan`` that ``agentvm.sdn.sync.apply_plan`` carries out. Pure: no
I/O, no clock; the same inputs always give the same plan.

Mapping (docs/architecture.md, section "Netsync"):

* port group -> virtual network ``[domain, project, port-group name]``; its IP pool -> the network's subnet;
* VM -> virtual machine ``[uuid]``; NIC -> virtual-machine-interface ``[domain, project, uuid]`` (its MAC) and
  an instance IP: kept across runs, else the lowest free address of the pool's ranges, or the guest's own
  address when the pool's IPAM is external;
* every uuid is a uuid5 of the vCenter's instance uuid and the port group / VM moid or the NIC's MAC, so a
  restart of anything finds the same objects again;
* a VLAN per interface per host (``agentvm.core.vlan``); a VLAN already on the DV port is kept when free;
* only objects whose ``creator`` is agentvm's are updated or deleted; anything else in the way is a conflict.

Bad input (a pool range outside its subnet, a port group without VLAN, a NIC without MAC, ...) becomes a
``SyncError`` for that item; its existing objects and ports are left as they are and the rest goes on.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from agentvm.core.ipalloc import PoolError, SubnetAddresses, pool_subnet
from agentvm.core.vlan import HostVlans, excluded_vlans
from agentvm.model.agency import PowerState
from agentvm.model.network import (
    ControllerState,
    DvPortVlan,
    ItemKey,
    ItemKind,
    NetsyncConfig,
    NetworkInventory,
    Nic,
    PortAction,
    PortChange,
    PortGroup,
    SdnInstanceIp,
    SdnObject,
    SdnSubnet,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    SyncError,
    SyncErrorKind,
    SyncPlan,
    Vm,
    VrouterPort,
    object_key,
)

AGENTVM_NAMESPACE = uuid.UUID("5a1e3c6e-7f0b-5d7e-9a43-6167656e7476")
"""Root of agentvm's uuid5 names; never change it (every object id derives from it)."""

NO_ADDRESS = "0.0.0.0"  # noqa: S104 - what the vRouter agent takes for "no IPv4 address yet"
NO_ADDRESS6 = "::"

HostPorts = Mapping[str, Mapping[str, VrouterPort]]
"""host moid -> port id -> the port as that host's vRouter agent holds it."""


@dataclass(frozen=True)
class Ids:
    """Deterministic uuids for one vCenter (``vcenter_uuid`` = its ``about.instanceUuid``)."""

    namespace: uuid.UUID

    @classmethod
    def for_vcenter(cls, vcenter_uuid: str) -> Ids:
        return cls(uuid.uuid5(AGENTVM_NAMESPACE, vcenter_uuid.lower()))

    def _id(self, kind: str, key: str) -> str:
        return str(uuid.uuid5(self.namespace, f"{kind}:{key}"))

    def virtual_network(self, port_group_key: str) -> str:
        return self._id("virtual-network", port_group_key)

    def subnet(self, port_group_key: str) -> str:
        return self._id("subnet", port_group_key)

    def virtual_machine(self, vm_moid: str) -> str:
        return self._id("virtual-machine", vm_moid)

    def vmi(self, mac: str) -> str:
        return self._id("virtual-machine-interface", normalize_mac(mac))

    def instance_ip(self, mac: str) -> str:
        return self._id("instance-ip", normalize_mac(mac))


def normalize_mac(mac: str) -> str:
    """``00-50-56-AA-BB-CC`` / ``00:50:56:aa:bb:cc`` -> ``00:50:56:aa:bb:cc``."""
    return mac.strip().lower().replace("-", ":")


def valid_mac(mac: str) -> bool:
    parts = mac.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts)


@dataclass(frozen=True)
class MirroredNic:
    """One NIC that will be mirrored: its VM, NIC, network and ids."""

    vm: Vm
    nic: Nic
    mac: str
    vn: SdnVirtualNetwork
    vmi_uuid: str
    iip_uuid: str

    def label(self) -> str:
        return f"NIC {self.nic.device_key} ({self.mac}) of {self.vm.label()}"


class FullSyncPlanner:
    """The state of one ``plan`` call. Not shared, not reused: ``plan()`` makes one and drops it."""

    def __init__(
        self,
        inventory: NetworkInventory,
        controller: ControllerState,
        config: NetsyncConfig,
        existing: Mapping[str, SdnObject] | None = None,
    ) -> None:
        """``existing`` (uuid -> object of ``controller``) may be passed in when the caller already has
        it indexed (``core.netsync_incremental`` plans parts of the inventory against a large state)."""
        self.inv = inventory
        self.ctl = controller
        self.cfg = config
        self.ids = Ids.for_vcenter(inventory.vcenter_uuid)
        self.errors: list[SyncError] = []
        self.protected: set[str] = set()  # uuids whose objects and ports must be left as they are
        self.existing: Mapping[str, SdnObject] = (
            existing if existing is not None else existing_objects(controller)
        )
        self.vn_by_fq = {vn.fq_name: vn for vn in controller.virtual_networks}
        self.pg_by_key = {pg.key: pg for pg in inventory.port_groups}
        self.pool_by_id = {pool.id: pool for pool in inventory.ip_pools}

    def ours(self, obj: SdnObject) -> bool:
        return obj.creator == self.cfg.creator

    def error(self, kind: SyncErrorKind, item: str, message: str) -> None:
        self.errors.append(SyncError(kind, item, message))

    def conflict_with(self, uuid_: str, fq_name: tuple[str, ...] | None, kind: str) -> str | None:
        """A message when a foreign object holds our uuid (or, for networks, our fq name); else None."""
        found = self.existing.get(uuid_)
        if found is not None and not self.ours(found):
            return (
                f"{kind} {uuid_} exists in the controller but was created by "
                f"{found.creator or 'someone else'}; "
                "agentvm leaves it alone - remove or rename it to let agentvm manage this item"
            )
        if fq_name is not None:
            other = self.vn_by_fq.get(fq_name)
            if other is not None and other.uuid != uuid_ and not self.ours(other):
                return (
                    f"{kind} {':'.join(fq_name)} already exists (uuid {other.uuid}, created by "
                    f"{other.creator or 'someone else'}); agentvm leaves it alone - rename the port group "
                    "or remove that object"
                )
        return None

    # -- networks ----------------------------------------------------------------------------------------

    def networks(self) -> dict[str, SdnVirtualNetwork]:
        """Desired virtual networks by port-group key; failed port groups are protected and left out."""
        pools = self.pool_by_id
        result: dict[str, SdnVirtualNetwork] = {}
        names: dict[str, str] = {}
        for pg in sorted(self.inv.port_groups, key=lambda p: p.key):
            vn_uuid = self.ids.virtual_network(pg.key)
            label = f"port group {pg.key} ({pg.name})"
            problem = self._port_group_problem(pg, names)
            subnets: tuple[SdnSubnet, ...] = ()
            if problem is None and pg.ip_pool_id is not None:
                pool = pools.get(pg.ip_pool_id)
                if pool is None:
                    problem = f"its IP pool {pg.ip_pool_id} does not exist; associate an existing pool"
                else:
                    try:
                        subnets = (pool_subnet(pool, self.ids.subnet(pg.key)),)
                    except PoolError as exc:
                        problem = str(exc)
            fq_name = (self.cfg.domain, self.cfg.project, pg.name)
            if problem is not None:
                self.error(SyncErrorKind.BAD_INPUT, label, problem)
                self.protected.add(vn_uuid)
                continue
            conflict = self.conflict_with(vn_uuid, fq_name, "virtual network")
            if conflict is not None:
                self.error(SyncErrorKind.CONFLICT, label, conflict)
                self.protected.add(vn_uuid)
                continue
            names[pg.name] = pg.key
            result[pg.key] = SdnVirtualNetwork(vn_uuid, fq_name, pg.name, subnets, self.cfg.creator)
        return result

    @staticmethod
    def _port_group_problem(pg: PortGroup, names: Mapping[str, str]) -> str | None:
        if pg.vlan_id is None:
            return "it has no VLAN configured; set a VLAN (or PVLAN) on the port group"
        if not 0 <= pg.vlan_id <= 4094:
            return f"its VLAN {pg.vlan_id} is not between 0 and 4094"
        if not pg.name:
            return "it has no name"
        if pg.name in names:
            return (
                f"its name is also the name of port group {names[pg.name]}; virtual networks are named after "
                "port groups, so rename one of them"
            )
        return None

    # -- machines and interfaces ---------------------------------------------------------------------------

    def interfaces(
        self, vns: Mapping[str, SdnVirtualNetwork]
    ) -> tuple[dict[str, SdnVirtualMachine], list[MirroredNic]]:
        known_pgs = {pg.key for pg in self.inv.port_groups}
        machines: dict[str, SdnVirtualMachine] = {}
        interfaces: list[MirroredNic] = []
        macs: dict[str, str] = {}
        for vm in sorted(self.inv.vms, key=lambda v: v.moid):
            machine, items = self.vm_interfaces(vm, vns, known_pgs, macs)
            if machine is not None:
                machines[vm.moid] = machine
            interfaces.extend(items)
        return machines, interfaces

    def vm_interfaces(
        self,
        vm: Vm,
        vns: Mapping[str, SdnVirtualNetwork],
        known_pgs: Collection[str],
        macs: dict[str, str],
    ) -> tuple[SdnVirtualMachine | None, list[MirroredNic]]:
        """One VM's machine (None: not mirrored) and interfaces. ``macs`` (MAC -> NIC label) carries the
        MACs claimed by the VMs before this one in moid order: a MAC seen twice is an error for the later."""
        vm_uuid = self.ids.virtual_machine(vm.moid)
        mirrored = [nic for nic in vm.nics if nic.port_group_key in known_pgs]
        if not mirrored:
            return None, []  # a VM on no DV port group of ours is not mirrored
        conflict = self.conflict_with(vm_uuid, None, "virtual machine")
        if conflict is not None:
            self.error(SyncErrorKind.CONFLICT, vm.label(), conflict)
            self.protected.add(vm_uuid)
            self._protect_nics(mirrored)
            return None, []
        machine = SdnVirtualMachine(vm_uuid, (vm_uuid,), vm.name, self.cfg.creator)
        interfaces: list[MirroredNic] = []
        for nic in sorted(mirrored, key=lambda n: n.device_key):
            item = self._interface(vm, nic, vns, macs)
            if item is not None:
                interfaces.append(item)
        return machine, interfaces

    def _protect_nics(self, nics: Iterable[Nic]) -> None:
        for nic in nics:
            if nic.mac:
                self.protected.add(self.ids.vmi(nic.mac))
                self.protected.add(self.ids.instance_ip(nic.mac))

    def _interface(
        self, vm: Vm, nic: Nic, vns: Mapping[str, SdnVirtualNetwork], macs: dict[str, str]
    ) -> MirroredNic | None:
        label = f"NIC {nic.device_key} of {vm.label()}"
        if not nic.mac:
            self.error(
                SyncErrorKind.WAITING, label, "it has no MAC address yet; it is mirrored once it has one"
            )
            return None
        mac = normalize_mac(nic.mac)
        if not valid_mac(mac):
            self.error(SyncErrorKind.BAD_INPUT, label, f"its MAC {nic.mac!r} is not like 00:50:56:aa:bb:cc")
            return None
        if mac in macs:
            self.error(SyncErrorKind.BAD_INPUT, label, f"its MAC {mac} is also the MAC of {macs[mac]}")
            self._protect_nics([nic])
            return None
        macs[mac] = label
        vn = vns.get(nic.port_group_key)
        if vn is None:  # its port group failed (and is named in the errors): leave its objects alone
            self._protect_nics([nic])
            return None
        vmi_uuid, iip_uuid = self.ids.vmi(mac), self.ids.instance_ip(mac)
        for uuid_, kind in ((vmi_uuid, "virtual-machine-interface"), (iip_uuid, "instance IP")):
            conflict = self.conflict_with(uuid_, None, kind)
            if conflict is not None:
                self.error(SyncErrorKind.CONFLICT, label, conflict)
                self._protect_nics([nic])
                return None
        return MirroredNic(vm, nic, mac, vn, vmi_uuid, iip_uuid)

    # -- addresses ---------------------------------------------------------------------------------------

    def addresses(self, interfaces: list[MirroredNic]) -> dict[str, str]:
        """The instance-IP address of each interface by VMI uuid (absent: no address, error recorded)."""
        by_vn: dict[str, list[MirroredNic]] = defaultdict(list)
        for item in interfaces:
            if item.vn.subnets:
                by_vn[item.vn.uuid].append(item)
        foreign_by_vn: dict[str, list[str]] = defaultdict(list)
        for iip in self.ctl.instance_ips:
            if not self.ours(iip):
                foreign_by_vn[iip.vn_uuid].append(iip.address)
        result: dict[str, str] = {}
        for vn_uuid, members in sorted(by_vn.items()):
            subnet = members[0].vn.subnets[0]
            pool = SubnetAddresses(subnet)
            for address in foreign_by_vn.get(vn_uuid, ()):
                pool.reserve(address)
            external = [m for m in members if self._pool_is_external(m)]
            internal = [m for m in members if not self._pool_is_external(m)]
            for item in external:
                self._guest_address(item, pool, result)
            pending = []
            for item in sorted(internal, key=lambda m: m.vmi_uuid):
                current = self.existing.get(item.iip_uuid)
                if (
                    isinstance(current, SdnInstanceIp)
                    and current.vn_uuid == vn_uuid
                    and pool.keep(current.address)
                ):
                    result[item.vmi_uuid] = current.address
                else:
                    pending.append(item)
            for item in pending:  # sorted by VMI uuid: independent of inventory order
                allocated = pool.allocate()
                if allocated is None:
                    self.error(
                        SyncErrorKind.IP_EXHAUSTED,
                        item.label(),
                        f"no free address left in {subnet.cidr} (ranges {_ranges(subnet)}); "
                        "widen the IP pool's range",
                    )
                    self.protected.add(item.iip_uuid)
                else:
                    result[item.vmi_uuid] = allocated
        return result

    def _pool_is_external(self, item: MirroredNic) -> bool:
        pg = self.pg_by_key.get(item.nic.port_group_key)
        pool = self.pool_by_id.get(pg.ip_pool_id) if pg is not None and pg.ip_pool_id else None
        return pool is not None and pool.external_ipam

    def _guest_address(self, item: MirroredNic, pool: SubnetAddresses, result: dict[str, str]) -> None:
        for address in item.nic.guest_ips:
            if pool.contains(address) and pool.keep(address):
                result[item.vmi_uuid] = address
                return
        self.protected.add(item.iip_uuid)  # keep what it had while the guest reports nothing
        self.error(
            SyncErrorKind.WAITING,
            item.label(),
            "its pool's IPAM is external and the guest reports no free address in "
            f"{item.vn.subnets[0].cidr} yet",
        )

    # -- VLANs -------------------------------------------------------------------------------------------

    def vlans(self, interfaces: list[MirroredNic]) -> dict[str, int]:
        """The VLAN of each interface on its host, by VMI uuid (absent: no host, or exhausted: error)."""
        excluded = excluded_vlans(
            (v for dvs in self.inv.dvses for v in dvs.pvlan_ids), self.cfg.reserved_vlans
        )
        by_host: dict[str, list[MirroredNic]] = defaultdict(list)
        for item in interfaces:
            if item.vm.host is not None:
                by_host[item.vm.host].append(item)
        result: dict[str, int] = {}
        for host, members in sorted(by_host.items()):
            vlans = HostVlans(excluded)
            members = sorted(members, key=lambda m: m.vmi_uuid)
            pending = []
            for item in members:  # the DV port is the source of truth
                on_port = item.nic.port_vlan_id
                if on_port is not None and vlans.keep(on_port):
                    result[item.vmi_uuid] = on_port
                else:
                    pending.append(item)
            still = []
            for item in pending:  # then what agentvm recorded on its interface for this host
                current = self.existing.get(item.vmi_uuid)
                recorded = current.vlan if isinstance(current, SdnVmi) and current.host == host else None
                if recorded is not None and vlans.keep(recorded):
                    result[item.vmi_uuid] = recorded
                else:
                    still.append(item)
            for item in still:
                vlan = vlans.allocate()
                if vlan is None:
                    self.error(
                        SyncErrorKind.VLAN_EXHAUSTED,
                        item.label(),
                        f"host {host} has no free VLAN left: all {vlans.capacity} usable VLANs (1-4094 minus "
                        "PVLAN ids and reserved ranges) carry other interfaces; move the VM to another host",
                    )
                else:
                    result[item.vmi_uuid] = vlan
        return result


def _ranges(subnet: SdnSubnet) -> str:
    return ", ".join(f"{r.start}-{r.end}" for r in subnet.allocation_pools) or "the whole subnet"


_CREATE_ORDER = (SdnVirtualNetwork, SdnVirtualMachine, SdnVmi, SdnInstanceIp)


def dependency_order(objs: Iterable[SdnObject], reverse: bool = False) -> tuple[SdnObject, ...]:
    """Dependency order (networks first), or its reverse for deletes; by uuid within a type."""
    sign = -1 if reverse else 1
    return tuple(sorted(objs, key=lambda o: (sign * _CREATE_ORDER.index(type(o)), o.uuid)))


def needs_replace(old: SdnObject, new: SdnObject) -> bool:
    """True when the controller would refuse the change as an update (an immutable field changed)."""
    if old.fq_name != new.fq_name:
        return True
    if isinstance(old, SdnVmi) and isinstance(new, SdnVmi):
        return old.vn_uuid != new.vn_uuid or old.mac != new.mac
    if isinstance(old, SdnInstanceIp) and isinstance(new, SdnInstanceIp):
        return old.address != new.address or old.vn_uuid != new.vn_uuid
    return False


def existing_objects(controller: ControllerState) -> dict[str, SdnObject]:
    """uuid -> object, for every object of the four types in ``controller``."""
    existing: dict[str, SdnObject] = {}
    for group in (controller.virtual_networks, controller.virtual_machines, controller.vmis):
        for obj in group:
            existing[obj.uuid] = obj
    for iip in controller.instance_ips:
        existing[iip.uuid] = iip
    return existing


@dataclass(frozen=True)
class NicObjects:
    """What one mirrored NIC becomes: its interface, address, vRouter port and DV port VLAN to set."""

    vmi: SdnVmi
    iip: SdnInstanceIp | None
    port: PortChange | None  # action unused: where (host) and what the port should be
    dv_port_vlan: DvPortVlan | None


def nic_objects(
    item: MirroredNic,
    vm_uuid: str,
    address: str | None,
    vlan: int | None,
    project_uuid: str,
    cfg: NetsyncConfig,
) -> NicObjects:
    """The desired objects of one interface given its address and VLAN (shared by ``plan`` and the
    incremental planner, so both build them the same way)."""
    host = item.vm.host if vlan is not None else None
    vmi = SdnVmi(
        uuid=item.vmi_uuid,
        fq_name=(cfg.domain, cfg.project, item.vmi_uuid),
        mac=item.mac,
        vn_uuid=item.vn.uuid,
        vm_uuid=vm_uuid,
        display_name=f"{item.vm.name} NIC {item.nic.device_key}",
        host=host,
        vlan=vlan,
        creator=cfg.creator,
    )
    iip = None
    if address is not None:
        iip = SdnInstanceIp(
            item.iip_uuid, (item.iip_uuid,), address, item.vn.uuid, item.vmi_uuid, cfg.creator
        )
    if host is None or vlan is None:
        return NicObjects(vmi, iip, None, None)
    port = VrouterPort(
        id=item.vmi_uuid,
        instance_id=vm_uuid,
        vn_id=item.vn.uuid,
        vm_project_id=project_uuid,
        display_name=item.vm.name,
        ip_address=address or NO_ADDRESS,
        ip6_address=NO_ADDRESS6,
        mac_address=item.mac,
        system_name=item.vmi_uuid,
        rx_vlan_id=vlan,
        tx_vlan_id=vlan,
        enabled=item.vm.power_state == PowerState.POWERED_ON,
    )
    dv = None
    if item.nic.port_key is not None and item.nic.port_vlan_id != vlan:
        dv = DvPortVlan(host, item.nic.port_group_key, item.nic.port_key, vlan, item.vmi_uuid)
    return NicObjects(vmi, iip, PortChange(PortAction.ADD, host, port), dv)


def plan(
    inventory: NetworkInventory,
    controller: ControllerState,
    ports: HostPorts,
    config: NetsyncConfig | None = None,
) -> SyncPlan:
    """The plan that makes the controller and the vRouter agents mirror ``inventory``.

    ``controller`` holds every object of the four types now in the controller (ours and others');
    ``ports`` the ports each host's agent holds now (see ``port_candidates`` for which to read). Never
    raises for bad input: each bad item is a ``SyncError`` in the plan and its existing objects are kept.
    """
    cfg = config or NetsyncConfig()
    planner = FullSyncPlanner(inventory, controller, cfg)
    vns = planner.networks()
    machines, interfaces = planner.interfaces(vns)
    addresses = planner.addresses(interfaces)
    vlans = planner.vlans(interfaces)

    desired: dict[str, SdnObject] = {vn.uuid: vn for vn in vns.values()}
    desired.update((vm.uuid, vm) for vm in machines.values())
    vm_uuid_by_moid = {moid: vm.uuid for moid, vm in machines.items()}
    desired_ports: dict[str, tuple[str, VrouterPort]] = {}
    dv_port_vlans: list[DvPortVlan] = []
    for item in interfaces:
        objs = nic_objects(
            item,
            vm_uuid_by_moid[item.vm.moid],
            addresses.get(item.vmi_uuid),
            vlans.get(item.vmi_uuid),
            controller.project_uuid,
            cfg,
        )
        desired[item.vmi_uuid] = objs.vmi
        if objs.iip is not None:
            desired[item.iip_uuid] = objs.iip
        if objs.port is not None:
            desired_ports[item.vmi_uuid] = (objs.port.host, objs.port.port)
        if objs.dv_port_vlan is not None:
            dv_port_vlans.append(objs.dv_port_vlan)

    create, update, delete = _diff_objects(planner, desired)
    port_changes = _diff_ports(planner, desired_ports, ports)
    return SyncPlan(
        create=dependency_order(create),
        update=dependency_order(update),
        delete=dependency_order(delete, reverse=True),
        ports=tuple(port_changes),
        dv_port_vlans=tuple(sorted(dv_port_vlans, key=lambda d: (d.host, d.port_key))),
        errors=tuple(planner.errors),
    )


def _diff_objects(
    planner: FullSyncPlanner, desired: Mapping[str, SdnObject]
) -> tuple[list[SdnObject], list[SdnObject], list[SdnObject]]:
    create: list[SdnObject] = []
    update: list[SdnObject] = []
    delete: list[SdnObject] = []
    replaced_vns: set[str] = set()
    for obj in desired.values():
        if isinstance(obj, SdnVirtualNetwork):
            old = planner.existing.get(obj.uuid)
            if old is not None and needs_replace(old, obj):
                replaced_vns.add(obj.uuid)
    for obj in desired.values():
        old = planner.existing.get(obj.uuid)
        if old is None:
            create.append(obj)
        elif old == obj:
            continue
        elif type(old) is not type(obj) or needs_replace(old, obj) or vn_of(obj) in replaced_vns:
            delete.append(old)
            create.append(obj)
        else:
            update.append(obj)
    for old in planner.existing.values():
        if old.uuid in desired or old.uuid in planner.protected or not planner.ours(old):
            continue
        delete.append(old)
    return create, update, delete


def vn_of(obj: SdnObject) -> str | None:
    if isinstance(obj, SdnVmi | SdnInstanceIp):
        return obj.vn_uuid
    return None


def _diff_ports(
    planner: FullSyncPlanner, desired: Mapping[str, tuple[str, VrouterPort]], observed: HostPorts
) -> list[PortChange]:
    ours = {o.uuid for o in planner.existing.values() if isinstance(o, SdnVmi) and planner.ours(o)}
    return nic_port_changes(ours, planner.protected, desired, observed)


def nic_port_changes(
    ours_vmis: Collection[str],
    protected: Collection[str],
    desired: Mapping[str, tuple[str, VrouterPort]],
    observed: HostPorts,
) -> list[PortChange]:
    """The port calls from ``observed`` to ``desired``; ``ours_vmis``: the interfaces agentvm created."""
    ours = set(ours_vmis)
    ours.update(desired)
    deletes: list[PortChange] = []
    adds: list[PortChange] = []
    toggles: list[PortChange] = []
    for host in sorted(observed):
        for port_id, port in sorted(observed[host].items()):
            if port_id not in ours or port_id in protected:
                continue  # not an interface of ours: another tool's port
            wanted = desired.get(port_id)
            if wanted is None or wanted[0] != host:
                deletes.append(PortChange(PortAction.DELETE, host, port))
    for port_id, (host, port) in sorted(desired.items(), key=lambda kv: (kv[1][0], kv[0])):
        current = observed.get(host, {}).get(port_id)
        if current is None or not port.same_config(current):
            adds.append(PortChange(PortAction.ADD, host, port))
            if port.enabled:  # the agent adds a remote port disabled
                toggles.append(PortChange(PortAction.ENABLE, host, port))
        elif current.enabled != port.enabled:
            action = PortAction.ENABLE if port.enabled else PortAction.DISABLE
            toggles.append(PortChange(action, host, port))
    return deletes + adds + toggles


def port_candidates(
    inventory: NetworkInventory, controller: ControllerState, config: NetsyncConfig | None = None
) -> dict[str, set[str]]:
    """Which port ids to read from which host's agent before ``plan``: the interfaces agentvm recorded on
    that host plus the NICs of the VMs now on it. (The agent's API reads one port at a time.)"""
    cfg = config or NetsyncConfig()
    ids = Ids.for_vcenter(inventory.vcenter_uuid)
    result: dict[str, set[str]] = defaultdict(set)
    for vmi in controller.vmis:
        if vmi.creator == cfg.creator and vmi.host is not None:
            result[vmi.host].add(vmi.uuid)
    for vm in inventory.vms:
        if vm.host is None:
            continue
        for nic in vm.nics:
            if nic.mac and valid_mac(normalize_mac(nic.mac)):
                result[vm.host].add(ids.vmi(nic.mac))
    return dict(result)


def hold_back(plan: SyncPlan, keys: Collection[ItemKey]) -> tuple[SyncPlan, tuple[ItemKey, ...]]:
    """``plan`` without the items whose key is in ``keys`` (items in backoff), nor the creates and ports that
    need them: an interface whose DV port change is held is not added to or enabled on its agent either.
    Returns the trimmed plan and the keys actually held back, sorted."""
    if not keys:
        return plan, ()
    held: set[ItemKey] = set()
    blocked = {k.id for k in keys if k.kind is ItemKind.OBJECT}

    def keep_obj(obj: SdnObject) -> bool:
        deps: tuple[str | None, ...] = ()
        if isinstance(obj, SdnVmi):
            deps = (obj.vn_uuid, obj.vm_uuid)
        elif isinstance(obj, SdnInstanceIp):
            deps = (obj.vn_uuid, obj.vmi_uuid)
        if obj.uuid in blocked or any(d in blocked for d in deps if d):
            blocked.add(obj.uuid)
            held.add(object_key(obj))
            return False
        return True

    create = tuple(o for o in plan.create if keep_obj(o))  # in dependency order: blocks propagate
    update = tuple(o for o in plan.update if keep_obj(o))
    delete = tuple(o for o in plan.delete if keep_obj(o))

    waiting_vlan: set[str] = set()  # interfaces whose DV port change is held: their agent is not told

    def keep_vlan(change: DvPortVlan) -> bool:
        if change.key in keys:
            held.add(change.key)
            waiting_vlan.add(change.vmi_uuid)
            return False
        return True

    def keep_port(change: PortChange) -> bool:
        if change.key in keys or change.port.id in blocked:
            held.add(change.key)
            return False
        return change.port.id not in waiting_vlan or change.action is PortAction.DELETE

    dv_port_vlans = tuple(c for c in plan.dv_port_vlans if keep_vlan(c))
    trimmed = replace(
        plan,
        create=create,
        update=update,
        delete=delete,
        ports=tuple(c for c in plan.ports if keep_port(c)),
        dv_port_vlans=dv_port_vlans,
    )
    return trimmed, tuple(sorted(held & set(keys)))
