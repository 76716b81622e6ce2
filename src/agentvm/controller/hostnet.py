"""Host network preparation in plans: read the hosts in scope once, decide with ``core.hostnet``, turn the
decision into plan changes, and carry those out.

Called by ``controller.planner`` (``plan_host_networks``: what ``agentvm plan`` shows and ``apply`` and the
controller's full pass do, before the agencies) and ``controller.executor`` (``carry_out``). The read is two
calls whatever the number of hosts (``vsphere.hostnet.read_host_networks_refs``); the changes are, in order,
the trunk's DV port group (``PrepareSwitch``), every host that joins the distributed switch in one
reconfigure (``JoinSwitch``), then each host's vSwitch and port group (``PrepareHostNetwork``, one per host,
carried out concurrently with the other hosts'). agentvm's record of what it created on a host is written
*before* the objects it names (once per host, by the first change that touches it), so a create that is
cut short still leaves the object recognisable as agentvm's; a record naming something missing makes the
next plan create it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentvm.core.hostnet import (
    CreateDvPortGroup,
    CreatePortGroup,
    CreateVSwitch,
    DestroyDvPortGroup,
    JoinDvs,
    LeaveDvs,
    RemovePortGroup,
    RemoveVSwitch,
    RepairDvPortGroup,
    RepairPortGroup,
    plan_host_network,
    plan_teardown,
)
from agentvm.core.plan import HostNetworkChange, JoinSwitch, PrepareHostNetwork, PrepareSwitch
from agentvm.core.plan_text import host_network_text
from agentvm.model.agency import MoRef
from agentvm.model.desired import AgencySpec, ScopeHost
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.hostnet import HostNetworkOwned, HostNetworkSnapshot
from agentvm.vsphere import hostnet as vhostnet
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.ovf import OvfDescriptor
from agentvm.vsphere.session import Session


@dataclass(frozen=True)
class HostNetworkPlan:
    """The host network changes of a whole spec, what is right already, and every failed check."""

    changes: tuple[HostNetworkChange, ...] = ()
    right: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    snapshot: HostNetworkSnapshot | None = None  # None: no agency has a hostNetwork section (nothing read)
    owner_field_key: int | None = None
    hosts: Mapping[str, HostNetworkShown] = field(default_factory=dict)  # host moid -> its state, for status
    read_hosts: int = 0  # hosts whose networking this plan read (the others from a kept read)


@dataclass(frozen=True)
class HostNetworkShown:
    """One host's networking as ``status``, the API and the dashboard show it: ``state`` is ``ready`` (as
    asked), ``preparing`` (this plan changes it), ``held`` (it would, but another host fails a check: nothing
    changes anywhere) or ``error`` (it fails a check; ``message`` says which and the fix)."""

    state: str
    message: str = ""


def changed_hosts(changes: Sequence[HostNetworkChange]) -> dict[str, str]:
    """The hosts these changes change (host moid -> the first change's words): each one's
    ``PrepareHostNetwork`` and the members of a ``JoinSwitch``."""
    out: dict[str, str] = {}
    for change in changes:
        if isinstance(change, PrepareHostNetwork):
            out.setdefault(change.host_moid, host_network_text(change))
        elif isinstance(change, JoinSwitch):
            for moid, _, uplink in change.members:
                out.setdefault(moid, f"join distributed switch {change.switch} with {uplink}")
    return out


def shown_states(
    hosts: Sequence[str], failed: Mapping[str, str], blocked: bool, changes: Sequence[HostNetworkChange]
) -> dict[str, HostNetworkShown]:
    """Each host's ``HostNetworkShown`` from a plan: its first failed check, else what the plan changes
    there (``held`` when the plan is ``blocked``: a check failed somewhere)."""
    changing = changed_hosts(changes)
    out: dict[str, HostNetworkShown] = {}
    for moid in hosts:
        if moid in failed:
            out[moid] = HostNetworkShown("error", failed[moid])
        elif moid in changing:
            out[moid] = HostNetworkShown("held" if blocked else "preparing", changing[moid])
        else:
            out[moid] = HostNetworkShown("ready")
    return out


def plan_host_networks(
    session: Session,
    agencies: Sequence[tuple[AgencySpec, Sequence[ScopeHost]]],
    *,
    known: HostNetworkSnapshot | None = None,
) -> HostNetworkPlan:
    """Read the hosts of every agency with a ``hostNetwork`` section and decide. Changes nothing.

    ``known``: a read that still stands for the hosts it holds: only the others are read (with the
    switches; no call when there are none)."""
    wanted = [(spec, hosts) for spec, hosts in agencies if spec.host_network is not None]
    if not wanted:
        return HostNetworkPlan()
    paths = {h.moid: h.path for _, hosts in wanted for h in hosts}
    snapshot, refs, read_hosts = _read(session, paths, known)
    by_moid = {h.moid: h for h in snapshot.hosts}
    changes: list[HostNetworkChange] = []
    right: list[str] = []
    errors: list[str] = []
    records: dict[str, HostNetworkOwned] = {}
    failed: dict[str, str] = {}
    per_agency = []
    for spec, hosts in wanted:
        assert spec.host_network is not None
        decided = plan_host_network(spec.host_network, snapshot, [h.moid for h in hosts])
        per_agency.append((spec.name, decided))
        right += decided.right
        errors += decided.errors
        failed = {**decided.failed, **failed}  # a host's first failed check, of the first agency that has one
        for moid, owned in decided.owned.items():
            records[moid] = records.get(moid, HostNetworkOwned()) | owned
    recorded: set[str] = set()  # hosts whose record an earlier change writes

    def record(moid: str) -> HostNetworkOwned | None:
        owned = records.get(moid)
        host = by_moid.get(moid)
        if owned is None or moid in recorded or (host is not None and host.owned == owned):
            return None
        recorded.add(moid)
        return owned

    dvs_label = {d.key: d.label() for d in snapshot.dvses}
    for name, decided in per_agency:
        joins: dict[str, list[tuple[str, str, str]]] = {}
        steps: dict[str, list[CreateVSwitch | CreatePortGroup | RepairPortGroup]] = {}
        for step in decided.changes:
            if isinstance(step, CreateDvPortGroup):
                changes.append(PrepareSwitch(name, step, dvs_label.get(step.dvs, step.dvs)))
            elif isinstance(step, RepairDvPortGroup):
                switch = next(
                    (d for d in snapshot.dvses if any(g.key == step.key for g in d.port_groups)), None
                )
                changes.append(PrepareSwitch(name, step, switch.label() if switch else step.key))
            elif isinstance(step, JoinDvs):
                joins.setdefault(step.dvs, []).append((step.host, by_moid[step.host].label(), step.uplink))
            elif isinstance(step, CreateVSwitch | CreatePortGroup | RepairPortGroup):
                steps.setdefault(step.host, []).append(step)
        for key, members in joins.items():
            written = tuple((moid, r) for moid, _, _ in members if (r := record(moid)) is not None)
            changes.append(JoinSwitch(name, key, dvs_label.get(key, key), tuple(members), owned=written))
        for moid, host_steps in steps.items():
            changes.append(
                PrepareHostNetwork(
                    name,
                    moid,
                    by_moid[moid].label(),
                    tuple(host_steps),
                    record(moid),
                    refs.network_systems.get(moid),
                )
            )
    shown = shown_states(list(paths), failed, bool(errors), changes)
    return HostNetworkPlan(
        tuple(changes), tuple(right), tuple(errors), snapshot, refs.owner_field_key, shown, read_hosts
    )


def nic_positions(spec: AgencySpec, descriptor: OvfDescriptor) -> dict[str, int]:
    """``agentNics`` role (fabric, trunk) -> the position of its NIC among the OVF's Ethernet items (the
    imported VM's NICs in device order). ConfigurationError naming the agency, the network and the fix when
    the OVF has no NIC on that network."""
    nics = spec.host_network.agent_nics if spec.host_network is not None else None
    out: dict[str, int] = {}
    for role, network in (("fabric", nics.fabric if nics else None), ("trunk", nics.trunk if nics else None)):
        if network is None:
            continue
        if network not in descriptor.nic_networks:
            have = ", ".join(dict.fromkeys(descriptor.nic_networks)) or "no NIC at all"
            raise ConfigurationError(
                f'agency "{spec.name}": hostNetwork.agentNics.{role} is {network}, but the OVF '
                f"{spec.ovf.url} has no NIC on a network of that name (its NICs are on: {have}); fix "
                f"hostNetwork.agentNics.{role}, or the OVF"
            )
        out[role] = descriptor.nic_networks.index(network)
    return out


def _read(
    session: Session, paths: dict[str, str], known: HostNetworkSnapshot | None
) -> tuple[HostNetworkSnapshot, vhostnet.HostNetworkRefs, int]:
    """The hosts ``paths`` names and the switches, and how many hosts were read; from ``known`` for the hosts
    it has (see ``plan_host_networks``)."""
    if known is None:
        return (*vhostnet.read_host_networks_refs(session, paths), len(paths))
    have = {h.moid: h for h in known.hosts if h.moid in paths}
    new = {moid: path for moid, path in paths.items() if moid not in have}
    if not new:
        # a kept read comes from a plan that changed nothing, so nothing here needs a host's network system
        return HostNetworkSnapshot(tuple(have.values()), known.dvses), vhostnet.HostNetworkRefs(), 0
    read, refs = vhostnet.read_host_networks_refs(session, new)
    hosts = tuple(sorted([*have.values(), *read.hosts], key=lambda h: h.moid))
    return HostNetworkSnapshot(hosts, read.dvses), refs, len(new)


class HostNetworkWriter:
    """Carries out host network changes on ``session``; knows the owner attribute's key (``key``: as the
    plan read it, None: defined at the first record, once, whichever thread gets there first) and the
    trunk DV port groups (switch name, group name -> switch uuid, group moid) as read or created."""

    def __init__(self, session: Session, key: int | None = None) -> None:
        self.session = session
        self._key = key
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], tuple[str, str]] = {}

    def learn(self, snapshot: HostNetworkSnapshot | None) -> None:
        """The DV port groups ``snapshot`` shows (a plan's read)."""
        if snapshot is None:
            return
        with self._lock:
            for dvs in snapshot.dvses:
                for group in dvs.port_groups:
                    self._groups[(dvs.name, group.name)] = (dvs.uuid, group.key)

    def trunk_group(self, dvs: str, port_group: str) -> tuple[str, str]:
        """(switch uuid, DV port group moid) of ``port_group`` on the switch named ``dvs``; read (one call
        for every switch) when not known. NotFoundError when it is not there (not created yet)."""
        with self._lock:
            found = self._groups.get((dvs, port_group))
        if found is not None:
            return found
        self.learn(HostNetworkSnapshot(dvses=vhostnet.read_switches(self.session)))
        with self._lock:
            found = self._groups.get((dvs, port_group))
        if found is None:
            raise NotFoundError(
                f"distributed switch {dvs} has no DV port group {port_group} (yet): the agent VM's trunk NIC "
                "is wired once agentvm has created it (hostNetwork.trunk)"
            )
        return found

    def learn_key(self, key: int | None) -> None:
        """The owner attribute's key as a plan read it (None: not defined yet, or not read)."""
        if key is not None:
            with self._lock:
                self._key = key

    def owner_key(self) -> int:
        with self._lock:
            if self._key is None:
                self._key = vhostnet.ensure_owner_field(self.session)
            return self._key

    def record(self, host: str, owned: HostNetworkOwned, label: str) -> None:
        vhostnet.set_owned(self.session, host, owned, key=self.owner_key(), label=label)

    def carry_out(self, change: HostNetworkChange) -> str:
        """Make ``change``; one sentence saying what was done."""
        s = self.session
        match change:
            case PrepareSwitch(step=CreateDvPortGroup() as step, switch=switch):
                vhostnet.create_dv_port_group(
                    s, step.dvs, step.name, vlans=step.vlans, security=step.security, label=switch
                )
                with self._lock:  # its moid is read when a NIC needs it (vCenter's task result may lack it)
                    self._groups = {k: v for k, v in self._groups.items() if k[1] != step.name}
            case PrepareSwitch(step=RepairDvPortGroup() as step, switch=switch):
                version = _version(s, MoRef("DistributedVirtualPortgroup", step.key))
                vhostnet.reconfigure_dv_port_group(
                    s,
                    step.key,
                    step.name,
                    vlans=step.vlans,
                    security=step.security,
                    description=vhostnet.owned_description(),
                    config_version=version,
                    label=switch,
                )
            case JoinSwitch(dvs=dvs, members=members, switch=switch):
                labels = {moid: label for moid, label, _ in members}
                for moid, owned in change.owned:
                    self.record(moid, owned, labels[moid])
                version = _version(s, MoRef("VmwareDistributedVirtualSwitch", dvs))
                uplinks: dict[str, str | None] = {moid: uplink for moid, _, uplink in members}
                vhostnet.join_dvs(s, dvs, uplinks, config_version=version, label=switch)
            case PrepareHostNetwork(host_moid=moid, where=where, steps=steps):
                if change.owned is not None:
                    self.record(moid, change.owned, where)
                system = change.network_system or _network_system(s, moid)
                for host_step in steps:
                    _host_step(s, system, host_step, where)
        return host_network_text(change)


def _host_step(
    s: Session, system: MoRef, step: CreateVSwitch | CreatePortGroup | RepairPortGroup, where: str
) -> None:
    match step:
        case CreateVSwitch(name=name, pnic=pnic):
            vhostnet.add_vswitch(s, system, name, pnic, label=where)
        case CreatePortGroup(name=name, vswitch=vswitch, vlan=vlan, security=security):
            vhostnet.add_port_group(s, system, name, vswitch, vlan=vlan, security=security, label=where)
        case RepairPortGroup(name=name, vswitch=vswitch, vlan=vlan, security=security):
            vhostnet.update_port_group(s, system, name, vswitch, vlan=vlan, security=security, label=where)


def _version(s: Session, ref: MoRef) -> str:
    """A switch's or DV port group's ``config.configVersion`` now (vCenter refuses a stale one): one read.
    A collector that cannot follow the path into the switch's config (govmomi's simulator: ``config`` is
    an interface there) answers nothing for it: then the whole ``config`` is read."""
    version = read_one(s, s.mo(ref), ["config.configVersion"]).get("config.configVersion")
    if version is None:
        version = getattr(read_one(s, s.mo(ref), ["config"]).get("config"), "configVersion", None)
    return str(version or "")


def _network_system(s: Session, host: str) -> MoRef:
    found = read_one(s, s.mo(MoRef("HostSystem", host)), ["configManager.networkSystem"]).get(
        "configManager.networkSystem"
    )
    return MoRef("HostNetworkSystem", str(found._moId))


@dataclass(frozen=True)
class Teardown:
    """What ``tear_down`` did (one line per action) and what it left because it is not agentvm's."""

    actions: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


def owned_hosts(session: Session, agencies: Sequence[tuple[AgencySpec, Sequence[ScopeHost]]]) -> int:
    """How many hosts of these agencies carry networking agentvm created: two calls (none without
    hostNetwork)."""
    wanted = [(spec, hosts) for spec, hosts in agencies if spec.host_network is not None]
    if not wanted:
        return 0
    paths = {h.moid: h.path for _, hosts in wanted for h in hosts}
    snapshot = vhostnet.read_host_networks(session, paths)
    return sum(1 for h in snapshot.hosts if h.owned)


def tear_down(session: Session, agencies: Sequence[tuple[AgencySpec, Sequence[ScopeHost]]]) -> Teardown:
    """Remove what agentvm created for these agencies' ``hostNetwork`` (``core.hostnet.plan_teardown``) and
    only that, once their agent VMs are gone: the trunk DV port group, then on each host the fabric port group
    and vSwitch (each host's record updated first), then the hosts agentvm joined leave the switch (one
    reconfigure per switch). Raises the adapters' errors (destroy stops; a second one goes on from there)."""
    wanted = [(spec, hosts) for spec, hosts in agencies if spec.host_network is not None]
    if not wanted:
        return Teardown()
    paths = {h.moid: h.path for _, hosts in wanted for h in hosts}
    snapshot, refs = vhostnet.read_host_networks_refs(session, paths)
    by_moid = {h.moid: h for h in snapshot.hosts}
    writer = HostNetworkWriter(session, refs.owner_field_key)
    actions: list[str] = []
    left: list[str] = []
    for spec, hosts in wanted:
        assert spec.host_network is not None
        plan = plan_teardown(spec.host_network, snapshot, [h.moid for h in hosts])
        left += plan.left
        leaving: dict[str, list[str]] = {}
        for step in plan.changes:
            if isinstance(step, DestroyDvPortGroup):
                vhostnet.destroy_dv_port_group(session, step.key, label=f"{step.name} ({step.key})")
                actions.append(f"{spec.name}: destroyed DV port group {step.name} ({step.key})")
            elif isinstance(step, LeaveDvs):
                leaving.setdefault(step.dvs, []).append(step.host)
        for moid in sorted({c.host for c in plan.changes if isinstance(c, RemovePortGroup | RemoveVSwitch)}):
            host = by_moid[moid]
            system = refs.network_systems.get(moid) or _network_system(session, moid)
            for step in plan.changes:
                if isinstance(step, RemovePortGroup) and step.host == moid:
                    vhostnet.remove_port_group(session, system, step.name, label=host.label())
                    actions.append(f"{spec.name}: removed port group {step.name} from {host.label()}")
            for step in plan.changes:
                if isinstance(step, RemoveVSwitch) and step.host == moid:
                    vhostnet.remove_vswitch(session, system, step.name, label=host.label())
                    actions.append(f"{spec.name}: removed vSwitch {step.name} from {host.label()}")
            if moid not in {h for hosts_ in leaving.values() for h in hosts_}:
                writer.record(moid, plan.owned.get(moid, HostNetworkOwned()), host.label())
        for dvs, members in leaving.items():
            switch = next((d for d in snapshot.dvses if d.key == dvs), None)
            label = switch.label() if switch is not None else dvs
            version = _version(session, MoRef("VmwareDistributedVirtualSwitch", dvs))
            vhostnet.leave_dvs(session, dvs, members, config_version=version, label=label)
            for moid in members:
                writer.record(moid, plan.owned.get(moid, HostNetworkOwned()), by_moid[moid].label())
            shown = ", ".join(by_moid[m].label() for m in members)
            actions.append(
                f"{spec.name}: removed {len(members)} host(s) from distributed switch {label}: {shown}"
            )
    return Teardown(tuple(actions), tuple(left))
