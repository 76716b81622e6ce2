"""The host networking adapter (``agentvm.vsphere.hostnet``) against the lab's vcsim, through pyVmomi.

The lab answers HostNetworkSystem, ReconfigureDvs_Task, the DV port group calls and SetField as vCenter
does (src/agentvm/lab/vcsim/host_network.go, dvs_members.go, custom_fields.go): these tests drive what
agentvm will do to prepare a host's networking, and the faults it must turn into its own errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pyVmomi import vim

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import MoRef
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from agentvm.model.hostnet import (
    OWNER_MARK,
    AgentNicTarget,
    HostNetworkOwned,
    HostNetworkSnapshot,
    HostNetworkState,
    PhysicalNic,
    ProxySwitch,
    SecurityPolicy,
    StandardPortGroup,
)
from agentvm.vsphere import hostnet
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task

pytestmark = pytest.mark.lab

H0, H1, H2 = "DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"  # H2 has vmnic0 only


@pytest.fixture
def world(vcsim_factory: Callable[..., VcsimInfo]) -> VcsimInfo:
    return vcsim_factory(clusters=1, hosts=3, pnics=3, host_pnics={H2: ["vmnic0"]})


@pytest.fixture
def session(world: VcsimInfo) -> Iterator[Session]:
    conn = VCenterConnection(
        url=world.url, username=world.username, password=Secret(world.password), thumbprint=world.thumbprint
    )
    with Session(conn) as s:
        yield s


@pytest.fixture
def hosts(session: Session) -> dict[str, str]:
    """host name -> moid"""
    return {h.name: h.moref.value for h in read_inventory(session).hosts}


def read(session: Session, hosts: dict[str, str]) -> tuple[HostNetworkSnapshot, hostnet.HostNetworkRefs]:
    return hostnet.read_host_networks_refs(
        session, {moid: f"/DC0/host/DC0_C0/{n}" for n, moid in hosts.items()}
    )


def host_state(snapshot: HostNetworkSnapshot, moid: str) -> HostNetworkState:
    state = snapshot.host(moid)
    assert state is not None, f"{moid} missing from the snapshot"
    return state


def port_group(state: HostNetworkState, name: str) -> StandardPortGroup | None:
    return next((p for p in state.port_groups if p.name == name), None)


def new_switch(session: Session, name: str) -> str:
    """A distributed switch of no host, with one uplink name: its moid."""
    dc = session.content.rootFolder.childEntity[0]
    spec = vim.DistributedVirtualSwitch.CreateSpec(
        configSpec=vim.dvs.VmwareDistributedVirtualSwitch.ConfigSpec(
            name=name,
            uplinkPortPolicy=vim.DistributedVirtualSwitch.NameArrayUplinkPortPolicy(
                uplinkPortName=["uplink1"]
            ),
        )
    )
    ref = wait_for_task(session, dc.networkFolder.CreateDVS_Task(spec), what=f"create {name}")
    return str(ref._moId)


def test_every_host_shows_its_nics_and_vswitch0_on_vmnic0(session: Session, hosts: dict[str, str]) -> None:
    snapshot, refs = read(session, hosts)
    assert {h.name for h in snapshot.hosts} == {H0, H1, H2}
    for h in snapshot.hosts:
        want = ["vmnic0"] if h.name == H2 else ["vmnic0", "vmnic1", "vmnic2"]
        assert [n.device for n in h.pnics] == want, h.name
        assert all(isinstance(n, PhysicalNic) and n.mac for n in h.pnics)
        (vswitch0,) = [v for v in h.vswitches if v.name == "vSwitch0"]
        assert vswitch0.pnics == ("vmnic0",)
        assert set(vswitch0.port_groups) == {"VM Network", "Management Network"}
        assert h.moid in refs.network_systems
    macs = [n.mac for h in snapshot.hosts for n in h.pnics]
    assert len(set(macs)) == len(macs), "two NICs share a MAC address"


def test_fabric_vswitch_and_port_group_on_two_hosts(session: Session, hosts: dict[str, str]) -> None:
    _, refs = read(session, hosts)
    ns = {name: refs.network_systems[moid] for name, moid in hosts.items()}
    promiscuous = SecurityPolicy(promiscuous=True, forged_transmits=True, mac_changes=False)
    for name in (H0, H1):
        hostnet.add_vswitch(session, ns[name], "vSwitch1", "vmnic1", label=name, mtu=9000)
        hostnet.add_port_group(
            session, ns[name], "contrail-fabric", "vSwitch1", vlan=100, security=promiscuous, label=name
        )
    snapshot, _ = read(session, hosts)
    for name in (H0, H1):
        state = host_state(snapshot, hosts[name])
        (vswitch1,) = [v for v in state.vswitches if v.name == "vSwitch1"]
        assert (vswitch1.pnics, vswitch1.port_groups, vswitch1.mtu) == (
            ("vmnic1",),
            ("contrail-fabric",),
            9000,
        )
        assert port_group(state, "contrail-fabric") == StandardPortGroup(
            "contrail-fabric", "vSwitch1", 100, promiscuous
        )
    assert port_group(host_state(snapshot, hosts[H2]), "contrail-fabric") is None

    # one Network per name, seen by both hosts: a VM NIC can use it
    nets = [n for n in session.content.rootFolder.childEntity[0].network if n.name == "contrail-fabric"]
    assert len(nets) == 1 and isinstance(nets[0], vim.Network)
    assert {h._moId for h in nets[0].host} == {hosts[H0], hosts[H1]}

    hostnet.update_port_group(
        session, ns[H0], "contrail-fabric", "vSwitch1", vlan=200, security=promiscuous, label=H0
    )
    snapshot, _ = read(session, hosts)
    fabric0 = port_group(host_state(snapshot, hosts[H0]), "contrail-fabric")
    fabric1 = port_group(host_state(snapshot, hosts[H1]), "contrail-fabric")
    assert fabric0 is not None and fabric0.vlan == 200
    assert fabric1 is not None and fabric1.vlan == 100

    hostnet.update_vswitch(session, ns[H1], "vSwitch1", "vmnic2", label=H1)
    snapshot, _ = read(session, hosts)
    (vswitch1,) = [v for v in host_state(snapshot, hosts[H1]).vswitches if v.name == "vSwitch1"]
    assert vswitch1.pnics == ("vmnic2",)

    for name in (H0, H1):
        hostnet.remove_port_group(session, ns[name], "contrail-fabric", label=name)
        hostnet.remove_vswitch(session, ns[name], "vSwitch1", label=name)
    snapshot, _ = read(session, hosts)
    for name in (H0, H1):
        state = host_state(snapshot, hosts[name])
        assert [v.name for v in state.vswitches] == ["vSwitch0"]
        assert port_group(state, "contrail-fabric") is None
    assert not [n for n in session.content.rootFolder.childEntity[0].network if n.name == "contrail-fabric"]


def test_standard_switch_faults_become_the_adapters_errors(session: Session, hosts: dict[str, str]) -> None:
    _, refs = read(session, hosts)
    ns0, ns2 = refs.network_systems[hosts[H0]], refs.network_systems[hosts[H2]]

    with pytest.raises(NotFoundError, match="vmnic1") as missing:
        hostnet.add_vswitch(session, ns2, "vSwitch1", "vmnic1", label=H2)
    assert fault_name(missing.value) == "NotFound"
    with pytest.raises(ConfigurationError, match="free physical NIC vmnic0") as in_use:
        hostnet.add_vswitch(session, ns0, "vSwitch1", "vmnic0", label=H0)
    assert not isinstance(in_use.value, TransientError)

    hostnet.add_vswitch(session, ns0, "vSwitch1", "vmnic1", label=H0)
    with pytest.raises(hostnet.AlreadyThere):
        hostnet.add_vswitch(session, ns0, "vSwitch1", "vmnic2", label=H0)
    with pytest.raises(NotFoundError, match="vSwitch9"):
        hostnet.add_port_group(session, ns0, "contrail-fabric", "vSwitch9", vlan=5, label=H0)
    hostnet.add_port_group(session, ns0, "contrail-fabric", "vSwitch1", vlan=5, label=H0)
    with pytest.raises(hostnet.AlreadyThere):
        hostnet.add_port_group(session, ns0, "contrail-fabric", "vSwitch1", vlan=6, label=H0)
    with pytest.raises(NotFoundError, match="nope"):
        hostnet.update_port_group(session, ns0, "nope", "vSwitch1", vlan=6, label=H0)
    with pytest.raises(NotFoundError, match="nope"):
        hostnet.remove_port_group(session, ns0, "nope", label=H0)
    with pytest.raises(NotFoundError, match="vSwitch9"):
        hostnet.update_vswitch(session, ns0, "vSwitch9", "vmnic2", label=H0)
    with pytest.raises(NotFoundError, match="vSwitch9"):
        hostnet.remove_vswitch(session, ns0, "vSwitch9", label=H0)
    # a vSwitch with a port group on it stays
    with pytest.raises(TransientError, match="vSwitch1") as busy:
        hostnet.remove_vswitch(session, ns0, "vSwitch1", label=H0)
    assert fault_name(busy.value) == "ResourceInUse"


def test_join_a_switch_then_trunk_port_group(session: Session, hosts: dict[str, str]) -> None:
    dvs = new_switch(session, "contrail-dvs")
    snapshot, refs = read(session, hosts)
    version = refs.dvs_versions[dvs]
    (switch,) = [d for d in snapshot.dvses if d.key == dvs]
    assert switch.hosts == frozenset() and switch.uplinks == ("uplink1",)

    # vmnic0 is vSwitch0's; H2 has no vmnic2: nothing changes
    with pytest.raises(ConfigurationError, match="vmnic0 of host DC0_C0_H1 is in use by vSwitch0"):
        hostnet.join_dvs(
            session,
            dvs,
            {hosts[H0]: "vmnic2", hosts[H1]: "vmnic0"},
            config_version=version,
            label="contrail-dvs",
        )
    with pytest.raises(ConfigurationError, match="vmnic2 not found on host DC0_C0_H2"):
        hostnet.join_dvs(session, dvs, {hosts[H2]: "vmnic2"}, config_version=version, label="contrail-dvs")
    snapshot, refs = read(session, hosts)
    assert refs.dvs_versions[dvs] == version
    assert next(d for d in snapshot.dvses if d.key == dvs).hosts == frozenset()

    hostnet.join_dvs(
        session, dvs, {hosts[H0]: "vmnic2", hosts[H1]: "vmnic2"}, config_version=version, label="contrail-dvs"
    )
    snapshot, refs = read(session, hosts)
    (switch,) = [d for d in snapshot.dvses if d.key == dvs]
    assert switch.hosts == {hosts[H0], hosts[H1]}
    assert refs.dvs_versions[dvs] != version
    for name in (H0, H1):
        assert (
            ProxySwitch(switch.uuid, "contrail-dvs", ("vmnic2",))
            in host_state(snapshot, hosts[name]).proxy_switches
        )
    assert not [p for p in host_state(snapshot, hosts[H2]).proxy_switches if p.dvs_uuid == switch.uuid]

    with pytest.raises(TransientError, match="contrail-dvs") as stale:
        hostnet.leave_dvs(session, dvs, [hosts[H1]], config_version=version, label="contrail-dvs")
    assert fault_name(stale.value) == "ConcurrentAccess"
    with pytest.raises(hostnet.AlreadyThere):
        hostnet.join_dvs(
            session, dvs, {hosts[H1]: "vmnic2"}, config_version=refs.dvs_versions[dvs], label="contrail-dvs"
        )

    trunk_security = SecurityPolicy(promiscuous=True, forged_transmits=True, mac_changes=False)
    pg = hostnet.create_dv_port_group(
        session, dvs, "contrail-trunk", vlans=[(1, 4094)], security=trunk_security, label="contrail-dvs"
    )
    assert pg is not None and pg.startswith("dvportgroup-")
    with pytest.raises(hostnet.AlreadyThere):
        hostnet.create_dv_port_group(session, dvs, "contrail-trunk", vlans=[(1, 4094)], label="contrail-dvs")
    snapshot, refs = read(session, hosts)
    (switch,) = [d for d in snapshot.dvses if d.key == dvs]
    (trunk,) = [p for p in switch.port_groups if p.name == "contrail-trunk"]
    assert (trunk.key, trunk.vlans, trunk.security) == (pg, ((1, 4094),), trunk_security)
    assert trunk.owned and trunk.description.startswith(OWNER_MARK)

    hostnet.reconfigure_dv_port_group(
        session,
        pg,
        "contrail-trunk",
        vlans=[(100, 200), (300, 300)],
        security=trunk_security,
        description=hostnet.owned_description("fabric trunk"),
        config_version=refs.dvpg_versions[pg],
        label="contrail-dvs",
    )
    with pytest.raises(TransientError) as stale_pg:
        hostnet.reconfigure_dv_port_group(
            session,
            pg,
            "contrail-trunk",
            vlans=[(1, 4094)],
            description="",
            config_version=refs.dvpg_versions[pg],
            label="contrail-dvs",
        )
    assert fault_name(stale_pg.value) == "ConcurrentAccess"
    snapshot, refs = read(session, hosts)
    (trunk,) = [p for d in snapshot.dvses for p in d.port_groups if p.key == pg]
    assert trunk.vlans == ((100, 200), (300, 300)) and trunk.description.endswith("fabric trunk")

    hostnet.destroy_dv_port_group(session, pg, label="contrail-trunk")
    snapshot, refs = read(session, hosts)
    hostnet.leave_dvs(
        session, dvs, [hosts[H0], hosts[H1]], config_version=refs.dvs_versions[dvs], label="contrail-dvs"
    )
    snapshot, _ = read(session, hosts)
    (switch,) = [d for d in snapshot.dvses if d.key == dvs]
    assert switch.hosts == frozenset() and not [p for p in switch.port_groups if p.name == "contrail-trunk"]
    for name in (H0, H1):
        assert not [p for p in host_state(snapshot, hosts[name]).proxy_switches if p.dvs_uuid == switch.uuid]


def test_ownership_is_recorded_in_a_host_custom_attribute(session: Session, hosts: dict[str, str]) -> None:
    _, refs = read(session, hosts)
    assert refs.owner_field_key is None
    key = hostnet.ensure_owner_field(session, refs)
    assert hostnet.ensure_owner_field(session) == key  # defined already: read back, not defined twice
    first = HostNetworkOwned(vswitches=frozenset({"vSwitch1"}), port_groups=frozenset({"contrail-fabric"}))
    second = HostNetworkOwned(port_groups=frozenset({"contrail-fabric"}), dvs_joined=frozenset({"dvs-21"}))
    hostnet.set_owned(session, hosts[H0], first, key=key, label=H0)
    hostnet.set_owned(session, hosts[H0], second, key=key, label=H0)
    snapshot, refs = read(session, hosts)
    assert refs.owner_field_key == key
    assert host_state(snapshot, hosts[H0]).owned == second
    assert not host_state(snapshot, hosts[H1]).owned
    values = [v for v in session.mo(MoRef("HostSystem", hosts[H0])).customValue if v.key == key]
    assert len(values) == 1, "SetField left the old value beside the new one"


def test_a_vm_nic_on_the_fabric_port_group_keeps_it(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(clusters=1, hosts=1, vms=1)
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn) as session:
        inventory = read_inventory(session)
        (host,) = inventory.hosts
        (vm,) = inventory.vms
        _, refs = read(session, {host.name: host.moref.value})
        ns = refs.network_systems[host.moref.value]
        hostnet.add_vswitch(session, ns, "vSwitch1", "vmnic1", label=host.name)
        hostnet.add_port_group(session, ns, "contrail-fabric", "vSwitch1", vlan=10, label=host.name)
        hostnet.connect_vm_nics(
            session, vm.moref.value, [AgentNicTarget(0, "fabric-net", "contrail-fabric")], label=vm.name
        )
        (nic,) = hostnet.read_vm_nics(session, vm.moref.value)
        assert nic.port_group == "contrail-fabric"
        with pytest.raises(TransientError, match=vm.name) as in_use:
            hostnet.remove_port_group(session, ns, "contrail-fabric", label=host.name)
        assert fault_name(in_use.value) == "ResourceInUse"
        hostnet.connect_vm_nics(
            session, vm.moref.value, [AgentNicTarget(0, "fabric-net", "VM Network")], label=vm.name
        )
        hostnet.remove_port_group(session, ns, "contrail-fabric", label=host.name)
