"""hostNetwork.fabric on three standalone ESXi hosts of the lab (``Lab(esxi=3, vcenter=False)``), through
the CLI as a user runs it (a child process), read back through each host's own vSphere: what apply prepares
on every host (vSwitch1 on vmnic1, contrail-fabric with its VLAN, the agent VM's fabric NIC on it, the
ownership record in a file on the host's datastore), a second plan/apply that changes nothing, a failed Nova
check on one host that stops plan and apply with that one line and nothing changed on any host, and what
destroy removes (with --host-network, only agentvm's). Mirrors tests/integration/test_hostnet_cli.py."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentvm.lab.packages import examples_dir
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.hostnet import HostNetworkState
from agentvm.vsphere import hostnet
from agentvm.vsphere.datastore_files import DatastoreFiles
from agentvm.vsphere.hostnet import HostNetworkRefs
from agentvm.vsphere.session import Session
from tests.support.esxi_lab import collect_host_state, connected
from tests.support.lab_cli import agentvm
from tests.support.schemas import valid

pytestmark = pytest.mark.lab

VLAN = 12
HOSTS = ("esx-01", "esx-02", "esx-03")
NO_VMNIC1 = "no physical NIC vmnic1 (the host has vmnic0, vmnic2); fix hostNetwork.fabric.pnic"


def label(name: str) -> str:
    """How plan lines name a standalone host's one host: its moid on its host agent and inventory path."""
    return f"ha-host (/ha-datacenter/host/{name}/{name})"


@pytest.fixture
def lab() -> Iterator[LabInfo]:
    with Lab(esxi=3, vcenter=False) as info:
        yield info


def example(tmp_path: Path) -> Path:
    """examples/contrail-esxi.yaml as it is, but the fabric port group on VLAN ``VLAN``."""
    doc = yaml.safe_load((examples_dir() / "contrail-esxi.yaml").read_text())
    doc["agencies"][0]["hostNetwork"]["fabric"]["vlan"] = VLAN
    path = tmp_path / "contrail-esxi.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def environment(info: LabInfo, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **info.env(), "AGENTVM_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "250"}


@contextlib.contextmanager
def host_session(info: VcsimInfo) -> Iterator[Session]:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    session = Session.connect(conn, host_agent=True)
    try:
        yield session
    finally:
        session.logout()


def read(info: VcsimInfo) -> tuple[HostNetworkState, HostNetworkRefs]:
    """The host's networking as agentvm reads it (its ownership record from the datastore file)."""
    with host_session(info) as session:
        snapshot, refs = hostnet.read_host_networks_refs(session, {"ha-host": ""})
    (host,) = snapshot.hosts
    return host, refs


def owner_file(info: VcsimInfo) -> bytes | None:
    with host_session(info) as session:
        return DatastoreFiles(session).read_file(hostnet.OWNER_FILE)


def everything(info: LabInfo) -> list[object]:
    """What agentvm could change on every host: VMs, vSwitches, port groups, autostart, the networking as
    read, and the ownership file."""
    states: list[object] = []
    for host in info.esxi:
        with connected(host) as si:
            states.append(collect_host_state(si))
        states.append(read(host)[0])
        states.append(owner_file(host))
    return states


def fabric_nics(info: VcsimInfo) -> list[list[str | None]]:
    """Each VM on the host: the standard port group each of its NICs is on, in device order."""
    with host_session(info) as session, connected(info) as si:
        vms = si.content.rootFolder.childEntity[0].vmFolder.childEntity
        return [[n.port_group for n in hostnet.read_vm_nics(session, vm._moId)] for vm in vms]


def ok(result: object) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def test_apply_prepares_every_host_and_wires_each_agent_vm_then_changes_nothing(
    lab: LabInfo, tmp_path: Path
) -> None:
    spec = example(tmp_path)
    env = environment(lab, tmp_path)
    before = [read(h)[0] for h in lab.esxi]
    assert all("vSwitch1" not in {v.name for v in h.vswitches} for h in before)

    plan = ok(agentvm("plan", "-f", str(spec), env=env))
    for name in HOSTS:
        assert (
            f"  ~ contrail: on {label(name)}: create vSwitch vSwitch1 on vmnic1; create port group "
            f"contrail-fabric on vSwitch vSwitch1, VLAN {VLAN}\n"
        ) in plan, plan
    assert [read(h)[0] for h in lab.esxi] == before  # plan changed nothing

    ok(agentvm("apply", "-f", str(spec), "--timeout", "60", env=env, timeout=240))
    for host in lab.esxi:
        state, _ = read(host)
        assert [(v.name, v.pnics) for v in state.vswitches if v.name == "vSwitch1"] == [
            ("vSwitch1", ("vmnic1",))
        ]
        assert [(g.vswitch, g.vlan) for g in state.port_groups if g.name == "contrail-fabric"] == [
            ("vSwitch1", VLAN)
        ]
        assert state.owned.vswitches == {"vSwitch1"} and state.owned.port_groups == {"contrail-fabric"}
        assert owner_file(host) == b"vswitch=vSwitch1;portgroup=contrail-fabric"
        # the OVF's fabric-net NIC (its first) on the port group; trunk-net stays on the agency's network
        assert fabric_nics(host) == [["contrail-fabric", "VM Network"]], host.host_name

    again = ok(agentvm("plan", "-f", str(spec), env=env))
    for name in HOSTS:
        assert f"{name} ({lab.esxi[HOSTS.index(name)].url}): no change(s)\n" in again, again
        assert f"  = {label(name)}: port group contrail-fabric on vSwitch1, VLAN {VLAN}\n" in again, again
    document = valid(json.loads(ok(agentvm("plan", "-f", str(spec), "--json", env=env))))
    assert document["noChanges"]
    for name in HOSTS:
        right = f"{label(name)}: port group contrail-fabric on vSwitch1, VLAN {VLAN}"
        assert right in document["standalone"][name]["hostNetwork"]["right"]
        assert f"{name}: {right}" in document["hostNetwork"]["right"]
    assert document["hostNetwork"]["errors"] == []
    prepared = everything(lab)
    second = ok(agentvm("apply", "-f", str(spec), env=env, timeout=240))
    assert second.startswith("no changes"), second
    assert everything(lab) == prepared

    status = valid(json.loads(ok(agentvm("status", "-f", str(spec), "--json", env=env))))
    networks = [
        (host["name"], row["network"])
        for host in status["standalone"]
        for agency in host["agencies"]
        for cluster in agency["clusters"]
        for row in cluster["hosts"]
    ]
    assert networks == [(name, {"state": "ready", "message": None}) for name in HOSTS]
    table = ok(agentvm("status", "-f", str(spec), env=env))
    assert table.count("hostNetwork: ready\n") == 3, table


def test_a_failed_check_on_one_host_stops_plan_and_apply_with_that_line_and_nothing_changed(
    tmp_path: Path,
) -> None:
    with Lab(esxi=3, vcenter=False, host_pnics={"esx-02": ["vmnic0", "vmnic2"]}) as lab:
        spec = example(tmp_path)
        env = environment(lab, tmp_path)
        before = everything(lab)
        second = lab.esxi[1]
        for command in (["plan"], ["apply", "--timeout", "30"]):
            result = agentvm(*command, "-f", str(spec), env=env, timeout=240)
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert [line for line in result.stderr.splitlines() if line.startswith("agentvm:")] == [
                f"agentvm: esx-02 ({second.url}): hostNetwork: {label('esx-02')}: {NO_VMNIC1}; nothing was "
                "changed on any host"
            ], result.stderr
        table = ok(agentvm("status", "-f", str(spec), env=env))
        assert table.count("hostNetwork: preparing: ") == 0 and table.count("hostNetwork: held: ") == 2, table
        assert f"hostNetwork: error: {NO_VMNIC1}\n" in table, table
        status = valid(json.loads(ok(agentvm("status", "-f", str(spec), "--json", env=env))))
        assert [h["name"] for h in status["standalone"]] == list(HOSTS)  # no agency yet: no rows to show
        assert everything(lab) == before


def test_destroy_leaves_the_networking_unless_asked_and_then_removes_only_agentvms(
    lab: LabInfo, tmp_path: Path
) -> None:
    spec = example(tmp_path)
    env = environment(lab, tmp_path)
    ok(agentvm("apply", "-f", str(spec), "--timeout", "60", env=env, timeout=240))
    kept = lab.esxi[1]  # someone adds a port group of their own to agentvm's vSwitch on esx-02
    with host_session(kept) as session:
        _, refs = read(kept)
        hostnet.add_port_group(session, refs.network_systems["ha-host"], "theirs", "vSwitch1", label="esx-02")
    prepared = [read(h)[0] for h in lab.esxi]

    plain = ok(agentvm("destroy", "-f", str(spec), "--yes", "--timeout", "60", env=env, timeout=240))
    assert "is left as it is on 3 host(s); `agentvm destroy --host-network` removes" in plain, plain
    for host in lab.esxi:
        with connected(host) as si:
            assert collect_host_state(si)["vms"] == []
    assert [read(h)[0] for h in lab.esxi] == prepared

    out = ok(agentvm("destroy", "-f", str(spec), "--yes", "--host-network", "--json", env=env, timeout=240))
    document = valid(json.loads(out))
    assert document["hostNetworkLeft"] == [
        f"esx-02: {label('esx-02')}: vSwitch vSwitch1 (agentvm's, but it carries theirs)"
    ]
    assert sorted(a for a in document["actions"] if "removed" in a) == sorted(
        [
            f"esx-0{i}: contrail: removed port group contrail-fabric from {label(f'esx-0{i}')}"
            for i in (1, 2, 3)
        ]
        + [f"esx-0{i}: contrail: removed vSwitch vSwitch1 from {label(f'esx-0{i}')}" for i in (1, 3)]
    )
    for host in lab.esxi:
        state, _ = read(host)
        names = {g.name for g in state.port_groups}
        switches = {v.name for v in state.vswitches}
        assert "contrail-fabric" not in names
        assert {"VM Network", "Management Network"} <= names and "vSwitch0" in switches
        if host is kept:
            assert "theirs" in names and "vSwitch1" in switches
            assert owner_file(host) == b"vswitch=vSwitch1"
        else:
            assert "vSwitch1" not in switches and not state.owned
            assert owner_file(host) == b""
    again = ok(agentvm("destroy", "-f", str(spec), "--yes", "--host-network", env=env, timeout=240))
    assert "nothing to destroy" in again and "removed" not in again, again


def test_agentvms_own_port_group_changed_behind_its_back_is_repaired_on_that_host_alone(
    lab: LabInfo, tmp_path: Path
) -> None:
    """What makes the port group agentvm's on a standalone host is the record in the datastore file: the same
    change to anyone else's port group is an error (test_hostnet_cli's wrong VLAN)."""
    spec = example(tmp_path)
    env = environment(lab, tmp_path)
    ok(agentvm("apply", "-f", str(spec), "--timeout", "60", env=env, timeout=240))
    third = lab.esxi[2]
    with host_session(third) as session:
        _, refs = read(third)
        system = refs.network_systems["ha-host"]
        hostnet.update_port_group(session, system, "contrail-fabric", "vSwitch1", vlan=7, label="esx-03")
    others = [read(h)[0] for h in lab.esxi[:2]]
    plan = ok(agentvm("plan", "-f", str(spec), env=env))
    assert (
        f"  ~ contrail: on {label('esx-03')}: repair port group contrail-fabric on vSwitch vSwitch1: "
        f"VLAN {VLAN} (was VLAN 7)\n"
    ) in plan, plan
    assert "esx-01 (" in plan and plan.count(": no change(s)\n") == 2, plan
    ok(agentvm("apply", "-f", str(spec), "--timeout", "60", env=env, timeout=240))
    state, _ = read(third)
    assert [(g.vswitch, g.vlan) for g in state.port_groups if g.name == "contrail-fabric"] == [
        ("vSwitch1", VLAN)
    ]
    assert [read(h)[0] for h in lab.esxi[:2]] == others
    assert "no changes" in ok(agentvm("apply", "-f", str(spec), env=env, timeout=240))
