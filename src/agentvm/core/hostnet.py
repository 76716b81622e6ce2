"""Host network preparation, decided: an agency's ``hostNetwork`` against what the hosts in scope have.

``plan_host_network(spec, snapshot, hosts)`` makes the checks of OpenStack Nova's VLAN workflow on every host
in scope and returns a ``HostNetPlan``: the changes that would make every host right, what is right already,
and every check that failed, each naming the host (moid and inventory path), the object and the fix. A plan
with any error is ``blocked``: nothing may be changed on any host (``changes`` still says what would have
been done, for ``plan`` to show).

The fabric, per host: the physical NIC exists; the vSwitch exists and is bound to it (missing: created bound
to it when ``create: true`` and the NIC is free); the port group exists on that vSwitch with that VLAN and
security policy (missing: created). The trunk: the distributed switch exists; every host in scope is a
member (not: joined with its uplink NIC when ``join: true``); the DV port group exists on it with the VLAN
ranges and security policy (missing: created).

agentvm changes only what it created (``HostNetworkOwned`` on the host; ``DvPortGroupState.owned``): a
difference on an object of its own is repaired (a drift), on anyone else's it is an error. Each host's new
ownership record is in ``HostNetPlan.owned``.

``plan_teardown(spec, snapshot, hosts)`` removes what agentvm created and only that: its port groups, its
vSwitches once nothing else is on them, its DVS memberships and its DV port group; what it leaves is said.

Pure: values in, values out; the changes are carried out by the vSphere layer, one call each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentvm.model.hostnet import (
    DvPortGroupState,
    DvsState,
    FabricSpec,
    HostNetworkOwned,
    HostNetworkSnapshot,
    HostNetworkSpec,
    HostNetworkState,
    SecurityPolicy,
    TrunkSpec,
)

# -- changes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateVSwitch:
    host: str  # moid
    name: str
    pnic: str


@dataclass(frozen=True)
class CreatePortGroup:
    host: str
    name: str
    vswitch: str
    vlan: int
    security: SecurityPolicy


@dataclass(frozen=True)
class RepairPortGroup:
    """An agentvm port group that drifted (VLAN or security policy changed behind its back)."""

    host: str
    name: str
    vswitch: str
    vlan: int
    security: SecurityPolicy
    was: str  # what it found, for the event: "VLAN 7"


@dataclass(frozen=True)
class JoinDvs:
    host: str
    dvs: str  # the switch's moid
    uplink: str  # the host's physical NIC


@dataclass(frozen=True)
class CreateDvPortGroup:
    dvs: str
    name: str
    vlans: tuple[tuple[int, int], ...]
    security: SecurityPolicy


@dataclass(frozen=True)
class RepairDvPortGroup:
    key: str  # the DV port group's moid
    name: str
    vlans: tuple[tuple[int, int], ...]
    security: SecurityPolicy
    was: str


@dataclass(frozen=True)
class RemovePortGroup:
    host: str
    name: str


@dataclass(frozen=True)
class RemoveVSwitch:
    host: str
    name: str


@dataclass(frozen=True)
class LeaveDvs:
    host: str
    dvs: str


@dataclass(frozen=True)
class DestroyDvPortGroup:
    key: str
    name: str


NetChange = (
    CreateVSwitch
    | CreatePortGroup
    | RepairPortGroup
    | JoinDvs
    | CreateDvPortGroup
    | RepairDvPortGroup
    | RemovePortGroup
    | RemoveVSwitch
    | LeaveDvs
    | DestroyDvPortGroup
)


@dataclass(frozen=True)
class HostNetPlan:
    """``changes`` in the order to make them (switch-level ones first, then per host); ``right``: one line
    per object already as asked; ``errors``: one line per failed check; ``owned``: the hosts whose ownership
    record changes, with the record to write once their changes are made."""

    changes: tuple[NetChange, ...] = ()
    right: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    owned: Mapping[str, HostNetworkOwned] = field(default_factory=dict)
    left: tuple[str, ...] = ()  # teardown: what it leaves because it is not agentvm's
    failed: Mapping[str, str] = field(default_factory=dict)  # host moid -> its first failed check (no label)

    @property
    def blocked(self) -> bool:
        """A check failed: change nothing, on any host."""
        return bool(self.errors)


# -- the checks ----------------------------------------------------------------------------------------------


def vlan_text(vlans: Sequence[tuple[int, int]]) -> str:
    """``1-4094``, ``10,20-30``; ``none`` for no VLAN."""
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in vlans) or "none"


def security_items(policy: SecurityPolicy) -> tuple[tuple[str, bool | None], ...]:
    """The policy's settings by the spec's names, e.g. ``("promiscuous", True)``."""
    return (
        ("promiscuous", policy.promiscuous),
        ("forgedTransmits", policy.forged_transmits),
        ("macChanges", policy.mac_changes),
    )


def _security_differs(want: SecurityPolicy, have: SecurityPolicy) -> list[str]:
    """The settings the spec sets that ``have`` does not match, as ``promiscuous true (is false)``."""
    out: list[str] = []
    for (name, wanted), (_, actual) in zip(security_items(want), security_items(have), strict=True):
        if wanted is not None and wanted != actual:
            shown = "unset" if actual is None else str(actual).lower()
            out.append(f"{name} {str(wanted).lower()} (is {shown})")
    return out


def _nic_user(host: HostNetworkState, pnic: str) -> str | None:
    """What a physical NIC is bound to on the host (``vSwitch vSwitch0``), or None when it is free."""
    vswitch = next((v.name for v in host.vswitches if pnic in v.pnics), None)
    if vswitch is not None:
        return f"vSwitch {vswitch}"
    dvs = next((p.dvs_name for p in host.proxy_switches if pnic in p.pnics), None)
    return f"distributed switch {dvs}" if dvs is not None else None


def _fabric(
    spec: FabricSpec, host: HostNetworkState, changes: list[NetChange], right: list[str], errors: list[str]
) -> HostNetworkOwned:
    """The fabric checks on one host; returns what of it agentvm will create."""
    label = host.label()
    made = HostNetworkOwned()
    devices = [p.device for p in host.pnics]
    if spec.pnic not in devices:
        have = ", ".join(devices) or "none"
        errors.append(
            f"{label}: no physical NIC {spec.pnic} (the host has {have}); fix hostNetwork.fabric.pnic"
        )
        return made
    vswitch = next((v for v in host.vswitches if v.name == spec.vswitch), None)
    if vswitch is None:
        used_by = _nic_user(host, spec.pnic)
        if not spec.create_vswitch:
            errors.append(
                f"{label}: no vSwitch {spec.vswitch}; fix: create it bound to {spec.pnic}, or set "
                "hostNetwork.fabric.create: true"
            )
            return made
        if used_by is not None:
            errors.append(
                f"{label}: physical NIC {spec.pnic} is in use by {used_by}, so vSwitch {spec.vswitch} cannot "
                f"be created on it; fix hostNetwork.fabric.pnic or hostNetwork.fabric.vswitch"
            )
            return made
        changes.append(CreateVSwitch(host.moid, spec.vswitch, spec.pnic))
        made = HostNetworkOwned(vswitches=frozenset({spec.vswitch}))
    elif spec.pnic not in vswitch.pnics:
        bound = ", ".join(vswitch.pnics) or "no physical NIC"
        errors.append(
            f"{label}: vSwitch {spec.vswitch} is bound to {bound}, not {spec.pnic}; fix "
            f"hostNetwork.fabric.pnic or hostNetwork.fabric.vswitch"
        )
        return made
    else:
        right.append(f"{label}: vSwitch {spec.vswitch} on {spec.pnic}")
    group = next((g for g in host.port_groups if g.name == spec.port_group), None)
    ours = spec.port_group in host.owned.port_groups
    if group is None:
        changes.append(CreatePortGroup(host.moid, spec.port_group, spec.vswitch, spec.vlan, spec.security))
        made = HostNetworkOwned(made.vswitches, frozenset({spec.port_group}))
        return made
    if group.vswitch != spec.vswitch:
        whose = "agentvm's, made for another vSwitch" if ours else "not agentvm's"
        errors.append(
            f"{label}: port group {spec.port_group} is on vSwitch {group.vswitch}, not {spec.vswitch} "
            f"({whose}); fix hostNetwork.fabric.vswitch or hostNetwork.fabric.portGroup"
        )
        return made
    drift = ([f"VLAN {group.vlan}"] if group.vlan != spec.vlan else []) + _security_differs(
        spec.security, group.security
    )
    if not drift:
        right.append(f"{label}: port group {spec.port_group} on {spec.vswitch}, VLAN {spec.vlan}")
    elif ours:
        changes.append(
            RepairPortGroup(
                host.moid, spec.port_group, spec.vswitch, spec.vlan, spec.security, "; ".join(drift)
            )
        )
    else:
        errors.append(
            f"{label}: port group {spec.port_group} has {'; '.join(drift)}, not VLAN {spec.vlan} as asked, "
            "and is not agentvm's (agentvm changes only what it created); fix hostNetwork.fabric.vlan, or "
            "the port group"
        )
    return made


def _trunk_switch(
    spec: TrunkSpec, dvs: DvsState, changes: list[NetChange], right: list[str], errors: list[str]
) -> bool:
    """The DV port group; True when agentvm will create it."""
    group: DvPortGroupState | None = next((g for g in dvs.port_groups if g.name == spec.port_group), None)
    where = f"distributed switch {dvs.label()}"
    if group is None:
        changes.append(CreateDvPortGroup(dvs.key, spec.port_group, spec.vlans, spec.security))
        return True
    drift = ([f"VLANs {vlan_text(group.vlans)}"] if group.vlans != spec.vlans else []) + _security_differs(
        spec.security, group.security
    )
    if not drift:
        right.append(f"{where}: DV port group {spec.port_group}, VLANs {vlan_text(spec.vlans)}")
    elif group.owned:
        changes.append(
            RepairDvPortGroup(group.key, spec.port_group, spec.vlans, spec.security, "; ".join(drift))
        )
    else:
        errors.append(
            f"{where}: DV port group {spec.port_group} has {'; '.join(drift)}, not VLANs "
            f"{vlan_text(spec.vlans)} as asked, and is not agentvm's (agentvm changes only what it created); "
            "fix hostNetwork.trunk, or the port group"
        )
    return False


def _trunk_host(
    spec: TrunkSpec,
    dvs: DvsState,
    host: HostNetworkState,
    claimed: set[str],
    changes: list[NetChange],
    right: list[str],
    errors: list[str],
) -> bool:
    """The host's membership of the switch; True when agentvm will join it. ``claimed``: the NICs the fabric
    takes on this host."""
    label = host.label()
    if host.moid in dvs.hosts:
        right.append(f"{label}: member of distributed switch {dvs.name}")
        return False
    if not spec.join:
        errors.append(
            f"{label}: not a member of distributed switch {dvs.name}; fix: add it to the switch, or set "
            "hostNetwork.trunk.join: true with hostNetwork.trunk.uplink"
        )
        return False
    devices = [p.device for p in host.pnics]
    uplink = spec.uplink
    if uplink is None or uplink not in devices:
        have = ", ".join(devices) or "none"
        what = "no hostNetwork.trunk.uplink given" if uplink is None else f"no physical NIC {uplink}"
        errors.append(
            f"{label}: {what} to join distributed switch {dvs.name} with (the host has {have}); "
            "fix hostNetwork.trunk.uplink"
        )
        return False
    used_by = _nic_user(host, uplink) or ("the fabric vSwitch agentvm creates" if uplink in claimed else None)
    if used_by is not None:
        errors.append(
            f"{label}: physical NIC {uplink} is in use by {used_by}, so it cannot be the uplink of "
            f"distributed switch {dvs.name}; fix hostNetwork.trunk.uplink"
        )
        return False
    changes.append(JoinDvs(host.moid, dvs.key, uplink))
    return True


def plan_host_network(
    spec: HostNetworkSpec, snapshot: HostNetworkSnapshot, hosts: Sequence[str]
) -> HostNetPlan:
    """The changes, the right objects and the failed checks for ``hosts`` (moids, in scope order)."""
    changes: list[NetChange] = []
    right: list[str] = []
    errors: list[str] = []
    owned: dict[str, HostNetworkOwned] = {}
    dvs: DvsState | None = None
    if spec.trunk is not None:
        dvs = snapshot.dvs_named(spec.trunk.dvs)
        if dvs is None:
            known = ", ".join(sorted(d.name for d in snapshot.dvses)) or "none"
            errors.append(
                f"no distributed switch {spec.trunk.dvs} (vCenter has {known}); fix hostNetwork.trunk.dvs"
            )
        else:
            _trunk_switch(spec.trunk, dvs, changes, right, errors)
    by_moid = {h.moid: h for h in snapshot.hosts}
    failed: dict[str, str] = {}
    for moid in hosts:
        host = by_moid.get(moid)
        if host is None:
            errors.append(f"{moid}: its networking could not be read (is it still in vCenter?); run again")
            failed[moid] = errors[-1][len(moid) + 2 :]
            continue
        before = len(errors)
        made = _fabric(spec.fabric, host, changes, right, errors) if spec.fabric else HostNetworkOwned()
        joined = False
        if spec.trunk is not None and dvs is not None:
            # a NIC the fabric's new vSwitch takes cannot be the switch's uplink too
            claimed = {spec.fabric.pnic} if spec.fabric is not None and made.vswitches else set()
            joined = _trunk_host(spec.trunk, dvs, host, claimed, changes, right, errors)
        if len(errors) > before:  # every message of a host's check starts with its label
            failed[moid] = errors[before][len(host.label()) + 2 :]
        if made or joined:
            joins = frozenset({dvs.key} if joined and dvs is not None else ())
            owned[moid] = host.owned | made | HostNetworkOwned(dvs_joined=joins)
    # switch-level changes first: a DV port group exists before any host's NIC is wired to it
    switch_level = (CreateDvPortGroup, RepairDvPortGroup)
    ordered: list[NetChange] = [c for c in changes if isinstance(c, switch_level)]
    ordered += [c for c in changes if not isinstance(c, switch_level)]
    return HostNetPlan(tuple(ordered), tuple(right), tuple(errors), owned, failed=failed)


def plan_teardown(spec: HostNetworkSpec, snapshot: HostNetworkSnapshot, hosts: Sequence[str]) -> HostNetPlan:
    """Remove what agentvm created for ``spec`` on ``hosts`` (and its DV port group), and only that."""
    changes: list[NetChange] = []
    left: list[str] = []
    owned: dict[str, HostNetworkOwned] = {}
    by_moid = {h.moid: h for h in snapshot.hosts}
    dvs = snapshot.dvs_named(spec.trunk.dvs) if spec.trunk is not None else None
    for moid in hosts:
        host = by_moid.get(moid)
        if host is None:
            continue
        label = host.label()
        removed_groups: set[str] = set()
        removed_switches: set[str] = set()
        left_dvs: set[str] = set()
        fabric = spec.fabric
        if fabric is not None:
            group = next((g for g in host.port_groups if g.name == fabric.port_group), None)
            if group is not None:
                if fabric.port_group in host.owned.port_groups:
                    changes.append(RemovePortGroup(moid, fabric.port_group))
                    removed_groups.add(fabric.port_group)
                else:
                    left.append(f"{label}: port group {fabric.port_group} (not agentvm's)")
            vswitch = next((v for v in host.vswitches if v.name == fabric.vswitch), None)
            if vswitch is not None:
                others = [g for g in vswitch.port_groups if g not in removed_groups]
                if fabric.vswitch not in host.owned.vswitches:
                    left.append(f"{label}: vSwitch {fabric.vswitch} (not agentvm's)")
                elif others:
                    carries = ", ".join(sorted(others))
                    left.append(f"{label}: vSwitch {fabric.vswitch} (agentvm's, but it carries {carries})")
                else:
                    changes.append(RemoveVSwitch(moid, fabric.vswitch))
                    removed_switches.add(fabric.vswitch)
        if dvs is not None and moid in dvs.hosts:
            if dvs.key in host.owned.dvs_joined:
                changes.append(LeaveDvs(moid, dvs.key))
                left_dvs.add(dvs.key)
            else:
                left.append(f"{label}: membership of distributed switch {dvs.name} (not agentvm's)")
        if removed_groups or removed_switches or left_dvs:
            owned[moid] = HostNetworkOwned(
                vswitches=host.owned.vswitches - removed_switches,
                port_groups=host.owned.port_groups - removed_groups,
                dvs_joined=host.owned.dvs_joined - left_dvs,
            )
    if spec.trunk is not None and dvs is not None:
        dv_group = next((g for g in dvs.port_groups if g.name == spec.trunk.port_group), None)
        if dv_group is not None and dv_group.owned:
            # before any host leaves: a switch refuses to drop a host whose ports are in use
            changes.insert(0, DestroyDvPortGroup(dv_group.key, dv_group.name))
        elif dv_group is not None:
            left.append(f"distributed switch {dvs.label()}: DV port group {dv_group.name} (not agentvm's)")
    return HostNetPlan(tuple(changes), (), (), owned, tuple(left))
