"""hostNetwork under the controller (the code of ``agentvm run``), on the lab: a host added to the cluster is
prepared before its agent VM is let on, with both NICs wired; a VLAN changed behind agentvm's back is put
back on agentvm's own port group and reported, with the fix, on anyone else's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from agentvm.controller.run import Settings
from agentvm.controller.status import status_document, status_schema
from agentvm.model.agency import MoRef
from agentvm.model.hostnet import AgentNicTarget, HostNetworkSnapshot, HostNetworkState
from agentvm.model.inventory import PowerState, VirtualMachine
from agentvm.vsphere import hostnet
from agentvm.vsphere.hosts import add_host
from agentvm.vsphere.session import Session
from tests.support.controller_lab import Calls, World, controller_world, deployed, host_doc, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from controller_world(tmp_path)


def read(session: Session, world: World) -> HostNetworkSnapshot:
    return hostnet.read_host_networks(session, {h.moref.value: h.path for h in world.snapshot().hosts})


def host(snapshot: HostNetworkSnapshot, moid: str) -> HostNetworkState:
    return next(h for h in snapshot.hosts if h.moid == moid)


def test_a_host_added_is_prepared_then_its_agent_is_let_on_with_both_nics_wired(world: World) -> None:
    deployed(world)  # the example on one cluster of three hosts
    cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
    new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")

    def agent_on_new_host() -> VirtualMachine | None:
        return next(
            (v for v in world.agent_vms() if v.host == new_host and v.power_state is PowerState.POWERED_ON),
            None,
        )

    vm = wait_for(agent_on_new_host, "an agent VM on the new host, powered on", 120)
    snapshot = read(world.session, world)
    added = host(snapshot, new_host.value)
    (dvs,) = [d for d in snapshot.dvses if d.name == "DVS0"]
    (trunk,) = [g for g in dvs.port_groups if g.name == "contrail-trunk"]
    assert [(v.name, v.pnics) for v in added.vswitches if v.name == "vSwitch1"] == [("vSwitch1", ("vmnic1",))]
    assert [g.vswitch for g in added.port_groups if g.name == "contrail-fabric"] == ["vSwitch1"]
    assert new_host.value in dvs.hosts
    assert [p.pnics for p in added.proxy_switches if p.dvs_name == "DVS0"] == [("vmnic2",)]
    assert added.owned.dvs_joined == {dvs.key}  # joined by agentvm: it is agentvm's to undo
    nics = hostnet.read_vm_nics(world.session, vm.moref.value)
    assert [(n.port_group, n.dv_port_group) for n in nics] == [("contrail-fabric", None), (None, trunk.key)]
    # prepared first: the host's networking actions come before the answer that lets its agent VM on
    prepared = [e["id"] for e in world.events(action="host-network") if e.get("host") == new_host.value]
    prepared += [
        e["id"]
        for e in world.events(action="host-network")
        if e.get("host") is None and new_host.value in str(e["message"])
    ]
    answered = [e["id"] for e in world.events(action="answer-hook", host=new_host.value)]
    assert prepared and answered and max(prepared) < min(answered), (prepared, answered)
    wait_for(lambda: world.one_agent_per_host(4), "exactly one agent per host")


def test_a_vlan_changed_behind_agentvms_back_is_repaired_on_its_own_port_group_and_reported_on_anyone_elses(
    world: World,
) -> None:
    # someone else made the fabric port group on one host before agentvm came: agentvm finds it right
    # and leaves it theirs
    snapshot = world.snapshot()
    theirs = next(h for h in snapshot.hosts if h.path == "/DC0/host/DC0_C0/DC0_C0_H1")
    _, refs = hostnet.read_host_networks_refs(world.session, {theirs.moref.value: theirs.path})
    system = refs.network_systems[theirs.moref.value]
    hostnet.add_vswitch(world.session, system, "vSwitch1", "vmnic1", label=theirs.name)
    hostnet.add_port_group(world.session, system, "contrail-fabric", "vSwitch1", label=theirs.name)
    deployed(world)
    before = read(world.session, world)
    assert not host(before, theirs.moref.value).owned
    ours = next(h for h in before.hosts if h.path == "/DC0/host/DC0_C0/DC0_C0_H0")
    assert ours.owned.port_groups == {"contrail-fabric"}
    controller = world.controller
    assert controller is not None
    first = controller.events.last_id
    _, refs = hostnet.read_host_networks_refs(world.session, {ours.moid: ours.path})
    hostnet.update_port_group(
        world.session, refs.network_systems[ours.moid], "contrail-fabric", "vSwitch1", vlan=7, label=ours.name
    )

    def fabric_vlan(moid: str) -> int:
        groups = host(read(world.session, world), moid).port_groups
        return next(g.vlan for g in groups if g.name == "contrail-fabric")

    wait_for(lambda: fabric_vlan(ours.moid) == 0, "agentvm to put its port group's VLAN back", 60)
    repairs = [e["message"] for e in world.events(action="host-network") if int(e["id"]) > first]
    assert repairs == [
        f"on {ours.label()}: repair port group contrail-fabric on vSwitch vSwitch1: VLAN 0 (was VLAN 7)"
    ]
    # the same on the port group agentvm found and did not make: reported once, with the fix, not changed
    hostnet.update_port_group(world.session, system, "contrail-fabric", "vSwitch1", vlan=9, label=theirs.name)

    def warned() -> list[dict[str, object]]:
        return [
            e
            for e in world.events(level="warning")
            if int(e["id"]) > first and theirs.moref.value in str(e["message"])
        ]

    wait_for(warned, "a warning about the other port group", 30)
    full_passes = {controller.metrics.last_full_resync.value()}

    def three_more_full_passes() -> bool:
        full_passes.add(controller.metrics.last_full_resync.value())
        return len(full_passes) > 3

    wait_for(three_more_full_passes, "three full passes after the warning", 60)
    (warning,) = warned()
    assert (
        f"{theirs.moref.value} ({theirs.path}): port group contrail-fabric has VLAN 9, not VLAN 0 as asked, "
        "and is not agentvm's (agentvm changes only what it created); fix hostNetwork.fabric.vlan, or the "
        "port group"
    ) in str(warning["message"])
    assert fabric_vlan(theirs.moref.value) == 9
    # status (the API's document, as the dashboard gets it) shows each host's networking
    document = status_document(controller.reconciler.report, datetime.now(UTC))
    jsonschema.validate(document, status_schema())
    shown = {moid: host_doc(document, moid).get("network") for moid in (ours.moid, theirs.moref.value)}
    assert shown[ours.moid] == {"state": "ready", "message": None}
    assert shown[theirs.moref.value] == {
        "state": "error",
        "message": "port group contrail-fabric has VLAN 9, not VLAN 0 as asked, and is not agentvm's "
        "(agentvm changes only what it created); fix hostNetwork.fabric.vlan, or the port group",
    }
    assert [e["message"] for e in world.events(action="host-network") if int(e["id"]) > first] == repairs


def test_a_host_added_while_another_fails_a_check_waits_with_its_agent_off_until_it_is_fixed(
    world: World,
) -> None:
    deployed(world)
    controller = world.controller
    assert controller is not None
    broken = next(h for h in world.snapshot().hosts if h.path == "/DC0/host/DC0_C0/DC0_C0_H0")
    _, refs = hostnet.read_host_networks_refs(world.session, {broken.moref.value: broken.path})
    system = refs.network_systems[broken.moref.value]
    hostnet.update_vswitch(world.session, system, "vSwitch1", "vmnic2", label=broken.name)  # by hand

    def status_of(moid: str) -> object:
        document = status_document(controller.reconciler.report, datetime.now(UTC))
        try:
            return host_doc(document, moid).get("network")
        except AssertionError:
            return None  # not in the report yet

    failed = {
        "state": "error",
        "message": "vSwitch vSwitch1 is bound to vmnic2, not vmnic1; fix hostNetwork.fabric.pnic or "
        "hostNetwork.fabric.vswitch",
    }
    wait_for(
        lambda: status_of(broken.moref.value) == failed, "a full pass to find the host's check failing", 30
    )
    cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
    new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")
    wait_for(
        lambda: (
            status_of(new_host.value)
            == {"state": "held", "message": "join distributed switch dvs-9 (DVS0) with vmnic2"}
        ),
        "the new host held",
        60,
    )
    vm = wait_for(
        lambda: next((v for v in world.agent_vms() if v.host == new_host), None),
        "EAM to deploy on the new host",
    )
    full_passes = {controller.metrics.last_full_resync.value()}

    def three_more_full_passes() -> bool:
        full_passes.add(controller.metrics.last_full_resync.value())
        return len(full_passes) > 3

    wait_for(three_more_full_passes, "three full passes while another host fails its check", 60)
    held = next(v for v in world.agent_vms() if v.moref == vm.moref)
    assert held.power_state is PowerState.POWERED_OFF, "its hook was answered before its host was prepared"
    assert not world.events(action="answer-hook", host=new_host.value)
    assert status_of(broken.moref.value) == failed
    hostnet.update_vswitch(world.session, system, "vSwitch1", "vmnic1", label=broken.name)  # fixed
    on = wait_for(
        lambda: next(
            (v for v in world.agent_vms() if v.host == new_host and v.power_state is PowerState.POWERED_ON),
            None,
        ),
        "the new host's agent VM on once every host passes its checks",
        60,
    )
    nics = hostnet.read_vm_nics(world.session, on.moref.value)
    assert [n.port_group for n in nics][:1] == ["contrail-fabric"] and nics[1].dv_port_group is not None
    assert status_of(new_host.value) == {"state": "ready", "message": None}


def test_a_host_dropped_from_the_distributed_switch_is_joined_again_with_its_uplink(world: World) -> None:
    deployed(world)
    controller = world.controller
    assert controller is not None
    snapshot = read(world.session, world)
    (dvs,) = [d for d in snapshot.dvses if d.name == "DVS0"]
    dropped = next(h for h in snapshot.hosts if h.path == "/DC0/host/DC0_C0/DC0_C0_H2")
    first = controller.events.last_id
    # vCenter refuses to drop a host whose VMs use the switch: the administrator moves the agent VM's trunk
    # NIC off it first (agentvm does not put a NIC back once its hook is answered: see the notes)
    (vm,) = [v for v in world.agent_vms() if v.host is not None and v.host.value == dropped.moid]
    hostnet.connect_vm_nics(
        world.session, vm.moref.value, [AgentNicTarget(1, "trunk-net", "VM Network")], label=vm.name
    )
    version = str(world.session.mo(MoRef("VmwareDistributedVirtualSwitch", dvs.key)).config.configVersion)
    hostnet.leave_dvs(
        world.session, dvs.key, [dropped.moid], config_version=version, label=dvs.name
    )  # by hand
    assert dropped.moid not in next(d for d in read(world.session, world).dvses if d.key == dvs.key).hosts

    def member() -> bool:
        return dropped.moid in next(d for d in read(world.session, world).dvses if d.key == dvs.key).hosts

    wait_for(member, "agentvm to add the host to the switch again", 60)
    back = host(read(world.session, world), dropped.moid)
    assert [p.pnics for p in back.proxy_switches if p.dvs_name == "DVS0"] == [("vmnic2",)]
    assert back.owned.dvs_joined == {dvs.key}  # joined by agentvm now: its to undo
    joins = [e["message"] for e in world.events(action="host-network") if int(e["id"]) > first]
    assert joins == [f"add 1 host to distributed switch {dvs.label()}: {dropped.label()} with vmnic2"]


def test_a_drift_is_seen_by_the_watch_and_repaired_reading_only_that_hosts_networking(world: World) -> None:
    # the periodic full pass far apart: what repairs the drift is the watch on the hosts' networking
    quiet = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=600.0, retry_max=1.0, sweep_per_minute=6.0)
    world.start(settings=quiet)
    wait_for(world.all_green, "the controller to deploy every agent and turn green", 120)
    controller = world.controller
    assert controller is not None
    calls = Calls()
    controller.reconciler.add_call_listener(calls)
    snapshot = read(world.session, world)
    ours = next(h for h in snapshot.hosts if h.path == "/DC0/host/DC0_C0/DC0_C0_H0")
    _, refs = hostnet.read_host_networks_refs(world.session, {ours.moid: ours.path})
    first, before = controller.events.last_id, Counter(calls.counts)
    hostnet.update_port_group(
        world.session, refs.network_systems[ours.moid], "contrail-fabric", "vSwitch1", vlan=5, label=ours.name
    )

    def fabric_vlan() -> int:
        groups = host(read(world.session, world), ours.moid).port_groups
        return next(g.vlan for g in groups if g.name == "contrail-fabric")

    wait_for(lambda: fabric_vlan() == 0, "the watch to show the drift and agentvm to repair it", 30)
    repairs = [e["message"] for e in world.events(action="host-network") if int(e["id"]) > first]
    assert repairs == [
        f"on {ours.label()}: repair port group contrail-fabric on vSwitch vSwitch1: VLAN 0 (was VLAN 5)"
    ]
    spent = calls.since(before)
    # the re-plan read that host's networking (and the switches), not every host's
    assert spent["UpdatePortGroup"] == 1, spent
    assert controller.reconciler.planner.network_reads_hosts == 1, spent


def test_while_the_watch_follows_the_hosts_networking_the_periodic_pass_reads_none_of_it(
    world: World,
) -> None:
    deployed(world)  # FAST: a full pass every 2 s
    controller = world.controller
    assert controller is not None
    full_passes = {controller.metrics.last_full_resync.value()}
    reads: list[int] = []

    def three_more_full_passes() -> bool:
        if controller.metrics.last_full_resync.value() not in full_passes:
            full_passes.add(controller.metrics.last_full_resync.value())
            reads.append(controller.reconciler.planner.network_reads_hosts)
        return len(full_passes) > 3

    wait_for(three_more_full_passes, "three periodic full passes", 60, interval=0.05)
    assert reads == [0, 0, 0], reads  # every host's networking stands from the last read, the watch on it


def test_a_trunk_changed_behind_agentvms_back_is_seen_by_the_watch_and_repaired(world: World) -> None:
    quiet = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=600.0, retry_max=1.0, sweep_per_minute=6.0)
    world.start(settings=quiet)
    wait_for(world.all_green, "the controller to deploy every agent and turn green", 120)
    controller = world.controller
    assert controller is not None
    (dvs,) = [d for d in read(world.session, world).dvses if d.name == "DVS0"]
    (trunk,) = [g for g in dvs.port_groups if g.name == "contrail-trunk"]
    first = controller.events.last_id
    version = str(world.session.mo(MoRef("DistributedVirtualPortgroup", trunk.key)).config.configVersion)
    hostnet.reconfigure_dv_port_group(
        world.session,
        trunk.key,
        trunk.name,
        vlans=((1, 100),),
        security=trunk.security,
        description=trunk.description,
        config_version=version,
        label=dvs.name,
    )

    def vlans() -> tuple[tuple[int, int], ...]:
        (switch,) = [d for d in read(world.session, world).dvses if d.name == "DVS0"]
        return next(g.vlans for g in switch.port_groups if g.name == "contrail-trunk")

    wait_for(
        lambda: vlans() == ((1, 4094),), "the watch to show the trunk's change and agentvm to repair it", 30
    )
    repairs = [e["message"] for e in world.events(action="host-network") if int(e["id"]) > first]
    assert repairs == [
        f"repair DV port group contrail-trunk on distributed switch {dvs.label()}: VLANs 1-4094, promiscuous "
        "true, forgedTransmits true (was VLANs 1-100)"
    ], repairs
