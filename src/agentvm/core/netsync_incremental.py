"""Incremental netsync: the plan for a small change, computed from an index of the last synced state.

``core.netsync.plan`` recomputes everything (about 1.5 s at 10,000 VMs). A watch-driven sync sees one VM
at a time: its NICs, power state or host changed, or it is gone; now and then a port group or IP pool. This
module keeps the inputs of the last plan and what was decided for every item as a frozen ``NetsyncIndex``
and plans only what a change can affect:

* the changed VMs, plus every VM sharing a MAC with one of them (a MAC seen twice is an error for the VM
  later in moid order, so those VMs decide together);
* the address assignment of every virtual network one of their interfaces was or is on (kept addresses,
  the lowest free one for new interfaces: all members of the network together, as ``plan`` does);
* the VLAN assignment of every host one of their interfaces was or is on (all interfaces of the host);
* and then the objects, vRouter ports and DV port VLANs of the interfaces whose result changed.

The result is the plan ``core.netsync.plan`` would make for the same inputs (a hypothesis property in
tests/unit/test_netsync_incremental.py checks exactly that) provided the index is converged: the
controller and agents hold what the index's last plan decided. Each call returns the plan and the index as
it will be once that plan is carried out; the caller keeps it if the apply succeeded and falls back to a
full resync (``build``) otherwise, and on every (re)connect.

Pure: no I/O, no clock. Called by ``agentvm.controller.netsync.NetsyncWatch`` and the latency benchmark.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from agentvm.core.netsync import (
    FullSyncPlanner,
    HostPorts,
    Ids,
    MirroredNic,
    NicObjects,
    dependency_order,
    existing_objects,
    needs_replace,
    nic_objects,
    nic_port_changes,
    normalize_mac,
    valid_mac,
    vn_of,
)
from agentvm.model.network import (
    ControllerState,
    DvPortVlan,
    Dvs,
    IpPool,
    NetsyncConfig,
    NetworkInventory,
    PortAction,
    PortChange,
    PortGroup,
    SdnInstanceIp,
    SdnObject,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    SyncError,
    SyncPlan,
    Vm,
    VrouterPort,
)

K = TypeVar("K")
V = TypeVar("V")

_EMPTY: Mapping[str, frozenset[str]] = MappingProxyType({})


def _frozen(d: dict[K, V]) -> Mapping[K, V]:
    return MappingProxyType(d)


@dataclass(frozen=True)
class NetworksChange:
    """The networking side re-read: all port groups, IP pools and switches (they are few)."""

    port_groups: tuple[PortGroup, ...]
    ip_pools: tuple[IpPool, ...]
    dvses: tuple[Dvs, ...]


@dataclass(frozen=True)
class NetsyncIndex:
    """The inputs of the last plan and its decisions, indexed by item. Immutable: every method returns a
    new index; mappings are shared between indexes where they did not change."""

    config: NetsyncConfig
    base: NetworkInventory  # vcenter uuid, port groups, pools, switches; vms empty
    project_uuid: str
    vms: Mapping[str, Vm]  # moid -> VM
    existing: Mapping[str, SdnObject]  # the controller: uuid -> object (ours and others')
    foreign_iips: Mapping[str, tuple[SdnInstanceIp, ...]]  # vn uuid -> others' instance IPs in it
    ports: Mapping[str, Mapping[str, VrouterPort]]  # host -> port id -> port its agent holds
    port_hosts: Mapping[str, frozenset[str]]  # port id -> hosts holding it
    # decisions
    vns: Mapping[str, SdnVirtualNetwork]  # port group key -> its network
    net_errors: tuple[SyncError, ...]
    net_protected: frozenset[str]
    machines: Mapping[str, SdnVirtualMachine]  # moid -> machine
    vm_items: Mapping[str, tuple[MirroredNic, ...]]  # moid -> its interfaces
    vm_errors: Mapping[str, tuple[SyncError, ...]]  # moid -> its errors (only VMs with some)
    vm_protected: Mapping[str, frozenset[str]]
    pg_vms: Mapping[str, frozenset[str]]  # port group key -> moids with a NIC on it
    mac_vms: Mapping[str, frozenset[str]]  # normalized MAC -> moids with a NIC of that MAC
    items: Mapping[str, MirroredNic]  # vmi uuid -> interface
    vn_members: Mapping[str, frozenset[str]]  # vn uuid -> vmi uuids
    host_members: Mapping[str, frozenset[str]]  # host -> vmi uuids
    addresses: Mapping[str, str]  # vmi uuid -> address
    addr_errors: Mapping[str, tuple[SyncError, ...]]  # vn uuid -> errors
    addr_protected: Mapping[str, frozenset[str]]  # vn uuid -> protected uuids
    vlans: Mapping[str, int]  # vmi uuid -> VLAN on its host
    vlan_errors: Mapping[str, tuple[SyncError, ...]]  # host -> errors
    protected: Mapping[str, int]  # uuid -> how many decisions protect it

    @property
    def ids(self) -> Ids:
        return Ids.for_vcenter(self.base.vcenter_uuid)

    def inventory(self) -> NetworkInventory:
        """The inventory the index stands for (VMs sorted by moid)."""
        return dataclasses.replace(self.base, vms=tuple(self.vms[m] for m in sorted(self.vms)))

    def controller_state(self) -> ControllerState:
        """The controller state the index stands for (objects sorted by uuid)."""
        values = sorted(self.existing.values(), key=lambda o: o.uuid)
        return ControllerState(
            self.project_uuid,
            tuple(o for o in values if isinstance(o, SdnVirtualNetwork)),
            tuple(o for o in values if isinstance(o, SdnVirtualMachine)),
            tuple(o for o in values if isinstance(o, SdnVmi)),
            tuple(o for o in values if isinstance(o, SdnInstanceIp)),
        )

    def errors(self) -> tuple[SyncError, ...]:
        """Every item that could not be planned, in ``plan``'s order."""
        out = list(self.net_errors)
        for group in (self.vm_errors, self.addr_errors, self.vlan_errors):
            for key in sorted(group):
                out.extend(group[key])
        return tuple(out)

    def vm_uuid(self, moid: str) -> str:
        return self.ids.virtual_machine(moid)


# -- entry points ---------------------------------------------------------------------------------------


def build(
    inventory: NetworkInventory,
    controller: ControllerState,
    ports: HostPorts,
    config: NetsyncConfig | None = None,
) -> tuple[SyncPlan, NetsyncIndex]:
    """The full plan (equal to ``core.netsync.plan`` for the same inputs) and the index as it will be once
    the plan is carried out. Called on every (re)connect: the index starts from what was read."""
    cfg = config or NetsyncConfig()
    existing = existing_objects(controller)
    foreign: dict[str, list[SdnInstanceIp]] = {}
    for iip in controller.instance_ips:
        if iip.creator != cfg.creator:
            foreign.setdefault(iip.vn_uuid, []).append(iip)
    port_hosts: dict[str, set[str]] = {}
    for host, held in ports.items():
        for port_id in held:
            port_hosts.setdefault(port_id, set()).add(host)
    empty = NetsyncIndex(
        config=cfg,
        base=dataclasses.replace(inventory, vms=()),
        project_uuid=controller.project_uuid,
        vms=_frozen({}),
        existing=_frozen(existing),
        foreign_iips=_frozen({k: tuple(v) for k, v in foreign.items()}),
        ports=_frozen({h: _frozen(dict(p)) for h, p in ports.items()}),
        port_hosts=_frozen({k: frozenset(v) for k, v in port_hosts.items()}),
        vns=_frozen({}),
        net_errors=(),
        net_protected=frozenset(),
        machines=_frozen({}),
        vm_items=_frozen({}),
        vm_errors=_frozen({}),
        vm_protected=_frozen({}),
        pg_vms=_EMPTY,
        mac_vms=_EMPTY,
        items=_frozen({}),
        vn_members=_EMPTY,
        host_members=_EMPTY,
        addresses=_frozen({}),
        addr_errors=_frozen({}),
        addr_protected=_EMPTY,
        vlans=_frozen({}),
        vlan_errors=_frozen({}),
        protected=_frozen({}),
    )
    change = NetworksChange(inventory.port_groups, inventory.ip_pools, inventory.dvses)
    return _Step(empty, full=True).run({vm.moid: vm for vm in inventory.vms}, change)


def plan_change(
    index: NetsyncIndex,
    vms: Mapping[str, Vm | None] | None = None,
    networks: NetworksChange | None = None,
) -> tuple[SyncPlan, NetsyncIndex]:
    """The plan for ``vms`` (moid -> its new value, None: gone) and/or a new networking side, against a
    converged ``index``; and the index once the plan is carried out. Equal to ``core.netsync.plan`` of the
    changed inventory against ``index``'s controller and ports."""
    return _Step(index, full=False).run(dict(vms or {}), networks)


# -- one step ---------------------------------------------------------------------------------------------


class _Step:
    """The bookkeeping of one ``build`` / ``plan_change`` call. Not shared, not reused."""

    def __init__(self, index: NetsyncIndex, *, full: bool) -> None:
        self.old = index
        self.full = full
        self.cfg = index.config
        self.ids = index.ids

    # The order below mirrors ``plan``: networks, interfaces, addresses, VLANs, objects, ports.
    def run(
        self, changed: dict[str, Vm | None], networks: NetworksChange | None
    ) -> tuple[SyncPlan, NetsyncIndex]:
        old = self.old
        base = old.base
        vns, net_errors, net_protected = old.vns, old.net_errors, old.net_protected
        dirty_pgs: set[str] = set()
        all_hosts = self.full
        if networks is not None:
            base = dataclasses.replace(
                old.base, port_groups=networks.port_groups, ip_pools=networks.ip_pools, dvses=networks.dvses
            )
            vns, net_errors, net_protected = self._networks(base)
            dirty_pgs = self._dirty_port_groups(old, base, vns)
            if base.dvses != old.base.dvses:
                all_hosts = True  # PVLAN ids changed: every host's VLANs
                changed.update({m: old.vms[m] for m in old.vms if m not in changed})
        for pg in dirty_pgs:
            for moid in old.pg_vms.get(pg, ()):
                changed.setdefault(moid, old.vms[moid])
        self._close_over_macs(changed)

        # interfaces of the changed VMs, in moid order (the MAC check depends on it)
        planner = FullSyncPlanner(base, ControllerState(old.project_uuid), self.cfg, old.existing)
        known_pgs = {pg.key for pg in base.port_groups}
        macs: dict[str, str] = {}
        vms = dict(old.vms)
        machines = dict(old.machines)
        vm_items = dict(old.vm_items)
        vm_errors = dict(old.vm_errors)
        vm_protected = dict(old.vm_protected)
        items = dict(old.items)
        protected: Counter[str] = Counter(old.protected)
        if networks is not None:
            protected.subtract(old.net_protected)
            protected.update(net_protected)
        touched: set[str] = set()  # vmi uuids whose objects and port are re-derived
        scope: set[str] = set()  # object uuids compared with the controller
        port_scope: set[str] = set()  # port ids compared with the agents
        affected_vns: set[str] = set()
        affected_hosts: set[str] = set()
        for moid in sorted(changed):
            new_vm = changed[moid]
            before = old.vms.get(moid)
            for version in (before, new_vm):
                if version is not None:
                    uuids = self._nic_uuids(version)
                    scope.update(uuids)
                    port_scope.update(uuids[::2])
            scope.add(self.ids.virtual_machine(moid))
            for item in old.vm_items.get(moid, ()):
                affected_vns.add(item.vn.uuid)
                if item.vm.host is not None:
                    affected_hosts.add(item.vm.host)
                items.pop(item.vmi_uuid, None)
                touched.add(item.vmi_uuid)
            protected.subtract(old.vm_protected.get(moid, frozenset()))
            machines.pop(moid, None)
            vm_items.pop(moid, None)
            vm_errors.pop(moid, None)
            vm_protected.pop(moid, None)
        for moid in sorted(changed):  # a second pass: a MAC may move from one changed VM to another
            new_vm = changed[moid]
            if new_vm is None:
                vms.pop(moid, None)
                continue
            vms[moid] = new_vm
            planner.errors, planner.protected = [], set()
            machine, new_items = planner.vm_interfaces(new_vm, vns, known_pgs, macs)
            if machine is not None:
                machines[moid] = machine
            if new_items:
                vm_items[moid] = tuple(new_items)
            if planner.errors:
                vm_errors[moid] = tuple(planner.errors)
            if planner.protected:
                vm_protected[moid] = frozenset(planner.protected)
                protected.update(planner.protected)
            for item in new_items:
                items[item.vmi_uuid] = item
                touched.add(item.vmi_uuid)
                affected_vns.add(item.vn.uuid)
                if item.vm.host is not None:
                    affected_hosts.add(item.vm.host)

        vn_members = _regroup(old.vn_members, old, items, touched, lambda i: i.vn.uuid)
        host_members = _regroup(old.host_members, old, items, touched, lambda i: i.vm.host)
        if all_hosts:
            affected_hosts = set(host_members) | set(old.host_members)

        # addresses: every member of each affected network
        addresses = dict(old.addresses)
        addr_errors = dict(old.addr_errors)
        addr_protected = dict(old.addr_protected)
        for vn_uuid in sorted(affected_vns):
            protected.subtract(old.addr_protected.get(vn_uuid, frozenset()))
            addr_errors.pop(vn_uuid, None)
            addr_protected.pop(vn_uuid, None)
            members = sorted(
                (items[u] for u in vn_members.get(vn_uuid, ())),
                key=lambda i: (i.vm.moid, i.nic.device_key),
            )
            ctl = ControllerState(old.project_uuid, instance_ips=old.foreign_iips.get(vn_uuid, ()))
            vn_planner = FullSyncPlanner(base, ctl, self.cfg, old.existing)
            result = vn_planner.addresses(members)
            for member in members:
                address = result.get(member.vmi_uuid)
                if address != addresses.get(member.vmi_uuid):
                    touched.add(member.vmi_uuid)
                if address is None:
                    addresses.pop(member.vmi_uuid, None)
                else:
                    addresses[member.vmi_uuid] = address
            if vn_planner.errors:
                addr_errors[vn_uuid] = tuple(vn_planner.errors)
            if vn_planner.protected:
                addr_protected[vn_uuid] = frozenset(vn_planner.protected)
                protected.update(vn_planner.protected)
        for uuid_ in touched:
            if uuid_ not in items:
                addresses.pop(uuid_, None)

        # VLANs: every interface of each affected host
        vlans = dict(old.vlans)
        vlan_errors = dict(old.vlan_errors)
        host_planner = FullSyncPlanner(base, ControllerState(old.project_uuid), self.cfg, old.existing)
        for host in sorted(affected_hosts):
            vlan_errors.pop(host, None)
            members = [items[u] for u in host_members.get(host, ())]
            host_planner.errors = []
            on_host = host_planner.vlans(members)
            for one in members:
                vlan = on_host.get(one.vmi_uuid)
                if vlan != vlans.get(one.vmi_uuid):
                    touched.add(one.vmi_uuid)
                if vlan is None:
                    vlans.pop(one.vmi_uuid, None)
                else:
                    vlans[one.vmi_uuid] = vlan
            if host_planner.errors:
                vlan_errors[host] = tuple(host_planner.errors)
        for uuid_ in touched:
            if uuid_ not in items or items[uuid_].vm.host is None:
                vlans.pop(uuid_, None)

        # desired objects and ports of what was touched
        desired: dict[str, SdnObject] = {}
        desired_ports: dict[str, tuple[str, VrouterPort]] = {}
        dv_port_vlans: list[DvPortVlan] = []
        for moid in changed:
            if moid in machines:
                desired[machines[moid].uuid] = machines[moid]
        for uuid_ in touched:
            found = items.get(uuid_)
            scope.add(uuid_)
            port_scope.add(uuid_)
            if found is None:
                continue
            scope.add(found.iip_uuid)
            objs: NicObjects = nic_objects(
                found,
                machines[found.vm.moid].uuid,
                addresses.get(uuid_),
                vlans.get(uuid_),
                old.project_uuid,
                self.cfg,
            )
            desired[uuid_] = objs.vmi
            if objs.iip is not None:
                desired[found.iip_uuid] = objs.iip
            if objs.port is not None:
                desired_ports[uuid_] = (objs.port.host, objs.port.port)
            if objs.dv_port_vlan is not None:
                dv_port_vlans.append(objs.dv_port_vlan)
        vn_scope = {vn.uuid for vn in vns.values()} if networks is not None else set()
        vn_scope |= {vn.uuid for vn in old.vns.values()} if networks is not None else set()
        vn_scope |= {self.ids.virtual_network(pg) for pg in dirty_pgs}
        for vn in vns.values():
            if vn.uuid in vn_scope:
                desired[vn.uuid] = vn
        scope |= vn_scope
        if self.full:
            scope |= set(old.existing) | set(desired)
            port_scope |= set(old.port_hosts) | set(desired_ports)

        is_protected = {u for u in scope | port_scope if protected.get(u, 0) > 0}
        create, update, delete = self._diff_objects(scope, desired, is_protected)
        port_changes = self._diff_ports(port_scope, desired_ports, is_protected)
        plan = SyncPlan(
            create=dependency_order(create),
            update=dependency_order(update),
            delete=dependency_order(delete, reverse=True),
            ports=tuple(port_changes),
            dv_port_vlans=tuple(sorted(dv_port_vlans, key=lambda d: (d.host, d.port_key))),
        )
        pg_vms, mac_vms = _claims(old, changed)
        index = NetsyncIndex(
            config=self.cfg,
            base=base,
            project_uuid=old.project_uuid,
            vms=_frozen(vms),
            existing=old.existing,
            foreign_iips=old.foreign_iips,
            ports=old.ports,
            port_hosts=old.port_hosts,
            vns=vns,
            net_errors=net_errors,
            net_protected=net_protected,
            machines=_frozen(machines),
            vm_items=_frozen(vm_items),
            vm_errors=_frozen(vm_errors),
            vm_protected=_frozen(vm_protected),
            pg_vms=pg_vms,
            mac_vms=mac_vms,
            items=_frozen(items),
            vn_members=vn_members,
            host_members=host_members,
            addresses=_frozen(addresses),
            addr_errors=_frozen(addr_errors),
            addr_protected=_frozen(addr_protected),
            vlans=_frozen(vlans),
            vlan_errors=_frozen(vlan_errors),
            protected=_frozen({k: n for k, n in protected.items() if n > 0}),
        )
        plan = dataclasses.replace(plan, errors=index.errors())
        return plan, carried_out(index, plan)

    # -- pieces ------------------------------------------------------------------------------------------

    def _networks(
        self, base: NetworkInventory
    ) -> tuple[Mapping[str, SdnVirtualNetwork], tuple[SyncError, ...], frozenset[str]]:
        known = tuple(o for o in self.old.existing.values() if isinstance(o, SdnVirtualNetwork))
        planner = FullSyncPlanner(
            base, ControllerState(self.old.project_uuid, virtual_networks=known), self.cfg, self.old.existing
        )
        vns = planner.networks()
        return _frozen(vns), tuple(planner.errors), frozenset(planner.protected)

    @staticmethod
    def _dirty_port_groups(
        old: NetsyncIndex, base: NetworkInventory, vns: Mapping[str, SdnVirtualNetwork]
    ) -> set[str]:
        """Port groups whose network, pool or settings changed (their VMs are re-planned)."""

        def view(inv: NetworkInventory) -> dict[str, tuple[PortGroup, IpPool | None]]:
            pools = {p.id: p for p in inv.ip_pools}
            return {pg.key: (pg, pools.get(pg.ip_pool_id or "")) for pg in inv.port_groups}

        before, after = view(old.base), view(base)
        dirty = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        dirty |= {k for k in old.vns.keys() | vns.keys() if old.vns.get(k) != vns.get(k)}
        return dirty

    def _nic_uuids(self, vm: Vm) -> list[str]:
        """vmi, iip, vmi, iip, ... uuids of the VM's NICs that have a valid MAC."""
        out: list[str] = []
        for nic in vm.nics:
            if nic.mac and valid_mac(normalize_mac(nic.mac)):
                out += [self.ids.vmi(nic.mac), self.ids.instance_ip(nic.mac)]
        return out

    def _close_over_macs(self, changed: dict[str, Vm | None]) -> None:
        """Add every VM sharing a MAC (before or after) with a changed VM, transitively."""
        old = self.old
        queue = list(changed)
        seen_macs: set[str] = set()
        while queue:
            moid = queue.pop()
            for version in (old.vms.get(moid), changed.get(moid)):
                for mac in _macs(version):
                    if mac in seen_macs:
                        continue
                    seen_macs.add(mac)
                    for other in old.mac_vms.get(mac, ()):
                        if other not in changed:
                            changed[other] = old.vms[other]
                            queue.append(other)

    def _diff_objects(
        self, scope: Iterable[str], desired: Mapping[str, SdnObject], protected: set[str]
    ) -> tuple[list[SdnObject], list[SdnObject], list[SdnObject]]:
        """``core.netsync._diff_objects`` over the uuids in ``scope`` only."""
        existing = self.old.existing
        replaced_vns = {
            u
            for u, obj in desired.items()
            if isinstance(obj, SdnVirtualNetwork) and u in existing and needs_replace(existing[u], obj)
        }
        create: list[SdnObject] = []
        update: list[SdnObject] = []
        delete: list[SdnObject] = []
        for uuid_ in scope:
            new = desired.get(uuid_)
            current = existing.get(uuid_)
            if new is None:
                if current is not None and current.creator == self.cfg.creator and uuid_ not in protected:
                    delete.append(current)
            elif current is None:
                create.append(new)
            elif current == new:
                continue
            elif type(current) is not type(new) or needs_replace(current, new) or vn_of(new) in replaced_vns:
                delete.append(current)
                create.append(new)
            else:
                update.append(new)
        return create, update, delete

    def _diff_ports(
        self, scope: Iterable[str], desired: Mapping[str, tuple[str, VrouterPort]], protected: set[str]
    ) -> list[PortChange]:
        """``core.netsync._diff_ports`` over the port ids in ``scope`` only."""
        old = self.old
        observed: dict[str, dict[str, VrouterPort]] = {}
        ours: set[str] = set()
        for port_id in scope:
            for host in old.port_hosts.get(port_id, ()):
                observed.setdefault(host, {})[port_id] = old.ports[host][port_id]
            current = old.existing.get(port_id)
            if isinstance(current, SdnVmi) and current.creator == self.cfg.creator:
                ours.add(port_id)
        return nic_port_changes(ours, protected, desired, observed)


def _macs(vm: Vm | None) -> set[str]:
    if vm is None:
        return set()
    return {normalize_mac(n.mac) for n in vm.nics if n.mac and valid_mac(normalize_mac(n.mac))}


def _regroup(
    groups: Mapping[str, frozenset[str]],
    old: NetsyncIndex,
    items: Mapping[str, MirroredNic],
    touched: Iterable[str],
    get: Callable[[MirroredNic], str | None],
) -> Mapping[str, frozenset[str]]:
    """``groups`` (group -> vmi uuids) with the touched interfaces moved to their new group (``get``)."""
    out = dict(groups)
    edits: dict[str, set[str]] = {}
    for uuid_ in touched:
        before = old.items.get(uuid_)
        after = items.get(uuid_)
        g_before = get(before) if before is not None else None
        g_after = get(after) if after is not None else None
        if g_before == g_after:
            continue
        if g_before is not None:
            edits.setdefault(g_before, set(out.get(g_before, ())))
            edits[g_before].discard(uuid_)
        if g_after is not None:
            edits.setdefault(g_after, set(out.get(g_after, ())))
            edits[g_after].add(uuid_)
    for group, members in edits.items():
        if members:
            out[group] = frozenset(members)
        else:
            out.pop(group, None)
    return _frozen(out)


def _claims(
    old: NetsyncIndex, changed: Mapping[str, Vm | None]
) -> tuple[Mapping[str, frozenset[str]], Mapping[str, frozenset[str]]]:
    """The port group -> VMs and MAC -> VMs indexes after ``changed``."""
    pg_vms = dict(old.pg_vms)
    mac_vms = dict(old.mac_vms)
    edits_pg: dict[str, set[str]] = {}
    edits_mac: dict[str, set[str]] = {}
    for moid, new in changed.items():
        before = old.vms.get(moid)
        pgs_before = {n.port_group_key for n in before.nics} if before is not None else set()
        pgs_after = {n.port_group_key for n in new.nics} if new is not None else set()
        for pg in pgs_before ^ pgs_after:
            edits_pg.setdefault(pg, set(pg_vms.get(pg, ())))
            (edits_pg[pg].add if pg in pgs_after else edits_pg[pg].discard)(moid)
        macs_before, macs_after = _macs(before), _macs(new)
        for mac in macs_before ^ macs_after:
            edits_mac.setdefault(mac, set(mac_vms.get(mac, ())))
            (edits_mac[mac].add if mac in macs_after else edits_mac[mac].discard)(moid)
    for target, edits in ((pg_vms, edits_pg), (mac_vms, edits_mac)):
        for k, members in edits.items():
            if members:
                target[k] = frozenset(members)
            else:
                target.pop(k, None)
    return _frozen(pg_vms), _frozen(mac_vms)


def carried_out(index: NetsyncIndex, plan: SyncPlan) -> NetsyncIndex:
    """``index`` once ``plan`` is carried out without failure: the controller's objects, the agents' ports
    and the DV ports' VLANs as the plan leaves them."""
    existing = index.existing
    if plan.create or plan.update or plan.delete:  # a power change alone copies nothing this large
        existing = dict(existing)
        for obj in plan.delete:
            existing.pop(obj.uuid, None)
        for obj in (*plan.create, *plan.update):
            existing[obj.uuid] = obj
        existing = _frozen(existing)
    ports = dict(index.ports)
    port_hosts = dict(index.port_hosts)
    copied: dict[str, dict[str, VrouterPort]] = {}

    def host_ports(host: str) -> dict[str, VrouterPort]:
        if host not in copied:
            copied[host] = dict(ports.get(host, {}))
        return copied[host]

    for change in plan.ports:
        held = host_ports(change.host)
        pid = change.port.id
        if change.action is PortAction.DELETE:
            held.pop(pid, None)
            port_hosts[pid] = port_hosts.get(pid, frozenset()) - {change.host}
            if not port_hosts[pid]:
                del port_hosts[pid]
        elif change.action is PortAction.ADD:
            held[pid] = dataclasses.replace(change.port, enabled=False)  # the agent adds it disabled
            port_hosts[pid] = port_hosts.get(pid, frozenset()) | {change.host}
        elif pid in held:
            held[pid] = dataclasses.replace(held[pid], enabled=change.action is PortAction.ENABLE)
    for host, held in copied.items():
        ports[host] = _frozen(held)
    vms = index.vms
    items = index.items
    vm_items = index.vm_items
    if plan.dv_port_vlans:
        vms, items, vm_items = dict(vms), dict(items), dict(vm_items)
        for dv in plan.dv_port_vlans:
            item = items.get(dv.vmi_uuid)
            if item is None:
                continue
            moid, device = item.vm.moid, item.nic.device_key
            vm = vms[moid]
            vm = dataclasses.replace(
                vm,
                nics=tuple(
                    dataclasses.replace(n, port_vlan_id=dv.vlan) if n.device_key == device else n
                    for n in vm.nics
                ),
            )
            vms[moid] = vm
            nic = next(n for n in vm.nics if n.device_key == device)
            items[dv.vmi_uuid] = dataclasses.replace(item, vm=vm, nic=nic)
            vm_items[moid] = tuple(items[i.vmi_uuid] for i in vm_items.get(moid, ()))
        vms, items, vm_items = _frozen(vms), _frozen(items), _frozen(vm_items)
    return dataclasses.replace(
        index,
        existing=existing,
        ports=_frozen(ports),
        port_hosts=_frozen(port_hosts),
        vms=vms,
        items=items,
        vm_items=vm_items,
    )
