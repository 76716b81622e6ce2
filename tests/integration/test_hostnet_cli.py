"""hostNetwork through the CLI, on the lab: what apply prepares on every host, the Nova checks that stop it
with nothing changed, and what destroy removes (only agentvm's). Everything is read back through vSphere."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentvm.lab.world import Lab
from agentvm.model.hostnet import HostNetworkSnapshot, HostNetworkState, SecurityPolicy
from agentvm.vsphere import hostnet
from agentvm.vsphere.hostnet import HostNetworkRefs
from agentvm.vsphere.session import Session
from tests.support.cli_lab import World, connect, contrail_text, ok

pytestmark = pytest.mark.lab

FABRIC_VLAN = {"        vlan: 0\n": "        vlan: 12\n"}
TRUST = SecurityPolicy(promiscuous=True, forged_transmits=True)


@pytest.fixture
def lab_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    """``lab_world(host_pnics=...)``: a fresh lab shaped so, and the CLI world on it."""
    labs: list[tuple[Lab, Session]] = []

    def start(**kwargs: object) -> World:
        lab = Lab(**kwargs)  # type: ignore[arg-type]
        info = lab.start()
        session = connect(info)
        labs.append((lab, session))
        return World(lab, info, session, tmp_path)

    yield start
    for lab, session in labs:
        session.logout()
        lab.stop()


def read(world: World) -> tuple[HostNetworkSnapshot, HostNetworkRefs]:
    hosts = {h.moref.value: h.path for h in world.snapshot().hosts}
    return hostnet.read_host_networks_refs(world.session, hosts)


def on(snapshot: HostNetworkSnapshot, name: str) -> HostNetworkState:
    return next(h for h in snapshot.hosts if h.name == name)


def test_apply_prepares_every_host_and_wires_each_agent_vms_two_nics_then_changes_nothing(
    cli_world: World,
) -> None:
    spec = cli_world.spec(text=contrail_text(**FABRIC_VLAN))
    ok(cli_world.run("apply", "-f", str(spec), "--timeout", "120"))
    snapshot, _ = read(cli_world)
    (dvs,) = [d for d in snapshot.dvses if d.name == "DVS0"]
    (trunk,) = [g for g in dvs.port_groups if g.name == "contrail-trunk"]
    assert (trunk.vlans, trunk.security, trunk.owned) == (((1, 4094),), TRUST, True)
    assert len(snapshot.hosts) == 6
    for host in snapshot.hosts:
        assert [(v.name, v.pnics) for v in host.vswitches if v.name == "vSwitch1"] == [
            ("vSwitch1", ("vmnic1",))
        ]
        assert [(g.vswitch, g.vlan) for g in host.port_groups if g.name == "contrail-fabric"] == [
            ("vSwitch1", 12)
        ]
        assert host.moid in dvs.hosts
        assert host.owned.vswitches == {"vSwitch1"} and host.owned.port_groups == {"contrail-fabric"}
    vms = cli_world.agent_vms()
    assert len(vms) == 6
    for vm in vms:
        nics = hostnet.read_vm_nics(cli_world.session, vm.moref.value)
        assert [(n.port_group, n.dvs_uuid, n.dv_port_group) for n in nics] == [
            ("contrail-fabric", None, None),
            (None, dvs.uuid, trunk.key),
        ], vm.name
    again = ok(cli_world.run("plan", "-f", str(spec)))
    assert "no changes" in again
    assert f"= {on(snapshot, 'DC0_C0_H0').label()}: port group contrail-fabric on vSwitch1, VLAN 12" in again
    assert "no changes" in ok(cli_world.run("apply", "-f", str(spec), "--timeout", "60"))
    status = json.loads(ok(cli_world.run("status", "-f", str(spec), "--json")))
    networks = [h["network"] for a in status["agencies"] for c in a["clusters"] for h in c["hosts"]]
    assert networks == [{"state": "ready", "message": None}] * 6
    # the vCenter plugin mirrors tenant networks and VMs: not the vRouter's own trunk, nor the agent VMs
    netsync = json.loads(ok(cli_world.run("netsync", "plan", "--json")))
    assert netsync["errors"] == [] and netsync["vms"] == 0
    assert "contrail-trunk" not in json.dumps(netsync["portGroups"])


def _vswitch_on_another_nic(session: Session, host: HostNetworkState, refs: HostNetworkRefs) -> None:
    hostnet.add_vswitch(session, refs.network_systems[host.moid], "vSwitch1", "vmnic2", label=host.name)


def _port_group_on_another_vswitch(session: Session, host: HostNetworkState, refs: HostNetworkRefs) -> None:
    system = refs.network_systems[host.moid]
    hostnet.add_port_group(session, system, "contrail-fabric", "vSwitch0", label=host.name)


def _someone_elses_port_group_with_another_vlan(
    session: Session, host: HostNetworkState, refs: HostNetworkRefs
) -> None:
    system = refs.network_systems[host.moid]
    hostnet.add_vswitch(session, system, "vSwitch1", "vmnic1", label=host.name)
    hostnet.add_port_group(session, system, "contrail-fabric", "vSwitch1", vlan=7, label=host.name)


CHECKS = [
    (
        "missing pnic",
        None,
        "no physical NIC vmnic1 (the host has vmnic0, vmnic2); fix hostNetwork.fabric.pnic",
    ),
    (
        "vSwitch on another pnic",
        _vswitch_on_another_nic,
        "vSwitch vSwitch1 is bound to vmnic2, not vmnic1; fix hostNetwork.fabric.pnic or "
        "hostNetwork.fabric.vswitch",
    ),
    (
        "port group on another vSwitch",
        _port_group_on_another_vswitch,
        "port group contrail-fabric is on vSwitch vSwitch0, not vSwitch1 (not agentvm's); fix "
        "hostNetwork.fabric.vswitch or hostNetwork.fabric.portGroup",
    ),
    (
        "wrong VLAN",
        _someone_elses_port_group_with_another_vlan,
        "port group contrail-fabric has VLAN 7, not VLAN 12 as asked, and is not agentvm's (agentvm changes "
        "only what it created); fix hostNetwork.fabric.vlan, or the port group",
    ),
]


@pytest.mark.parametrize(("name", "arrange", "message"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_failed_nova_check_on_one_host_stops_apply_with_one_error_and_nothing_changed_on_any_host(
    lab_world: Callable[..., World],
    name: str,
    arrange: Callable[[Session, HostNetworkState, HostNetworkRefs], None] | None,
    message: str,
) -> None:
    pnics = {"host_pnics": {"DC0_C1_H2": ["vmnic0", "vmnic2"]}} if arrange is None else {}
    world = lab_world(**pnics)
    before, refs = read(world)
    victim = on(before, "DC0_C1_H2")
    if arrange is not None:
        arrange(world.session, victim, refs)
        before, _ = read(world)
    spec = world.spec(text=contrail_text(**FABRIC_VLAN))
    for command in (["plan"], ["apply", "--timeout", "30"]):
        result = world.run(*command, "-f", str(spec))
        assert result.exit_code == 2, (name, command, result.stdout, result.stderr)
        assert result.stderr.splitlines() == [
            "agentvm: hostNetwork: 1 check failed; nothing was changed on any host:",
            f"agentvm:   {victim.label()}: {message}",
        ], result.stderr
    world.nothing_changed()
    after, _ = read(world)
    assert after == before


def test_destroy_leaves_the_networking_unless_asked_and_then_removes_only_agentvms(cli_world: World) -> None:
    spec = cli_world.spec()
    ok(cli_world.run("apply", "-f", str(spec), "--timeout", "120"))
    snapshot, refs = read(cli_world)
    kept = on(snapshot, "DC0_C0_H1")  # someone adds a port group of their own to agentvm's vSwitch
    hostnet.add_port_group(
        cli_world.session, refs.network_systems[kept.moid], "theirs", "vSwitch1", label=kept.name
    )
    prepared, _ = read(cli_world)
    again = cli_world.run("destroy", "-f", str(spec), "--yes", "--timeout", "120")
    assert "is left as it is on 6 host(s); `agentvm destroy --host-network` removes" in ok(again)
    assert cli_world.agent_vms() == []
    left, _ = read(cli_world)
    assert left.hosts == prepared.hosts
    assert left.dvses == prepared.dvses
    out = ok(cli_world.run("destroy", "-f", str(spec), "--yes", "--host-network", "--timeout", "120"))
    assert f"left (not agentvm's): {kept.label()}: vSwitch vSwitch1 (agentvm's, but it carries theirs)" in out
    gone, _ = read(cli_world)
    (dvs,) = [d for d in gone.dvses if d.name == "DVS0"]
    assert "contrail-trunk" not in {g.name for g in dvs.port_groups}
    for host in gone.hosts:
        names = {g.name for g in host.port_groups}
        assert "contrail-fabric" not in names
        switches = {v.name for v in host.vswitches}
        if host.moid == kept.moid:
            assert "theirs" in names and "vSwitch1" in switches
            assert host.owned.vswitches == {"vSwitch1"} and not host.owned.port_groups
        else:
            assert "vSwitch1" not in switches and not host.owned
        assert {"VM Network", "Management Network"} <= names and "vSwitch0" in switches
        assert host.moid in dvs.hosts  # the lab's hosts were members before: not agentvm's to take away
