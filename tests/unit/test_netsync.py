"""agentvm.core.netsync: vCenter inventory + controller state -> plan. Pure: no lab needed."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentvm.core import netsync
from agentvm.model.agency import PowerState
from agentvm.model.network import (
    ControllerState,
    Dvs,
    IpPool,
    IpRange,
    NetsyncConfig,
    NetworkInventory,
    Nic,
    PortAction,
    PortGroup,
    SdnInstanceIp,
    SdnObject,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    SyncErrorKind,
    SyncPlan,
    Vm,
    VrouterPort,
)

PROJECT = "11111111-2222-3333-4444-555555555555"
Ports = dict[str, dict[str, VrouterPort]]


def mac(n: int) -> str:
    return "00:50:56:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (16, 8, 0))


def inventory(vms: tuple[Vm, ...] = (), **changes: object) -> NetworkInventory:
    base = NetworkInventory(
        vcenter_uuid="vc-0001",
        port_groups=(
            PortGroup("dvportgroup-1", "pg-a", "dvs-1", 100, "pool-a"),
            PortGroup("dvportgroup-2", "pg-b", "dvs-1", 200, "pool-b"),
        ),
        ip_pools=(
            IpPool(
                "pool-a", "a", "10.1.0.0/24", "10.1.0.1", (IpRange("10.1.0.10", "10.1.0.250"),), dhcp=True
            ),
            IpPool("pool-b", "b", "10.2.0.0/16", None, ()),
        ),
        vms=vms,
        dvses=(Dvs("dvs-1", "dvs", frozenset({1, 2, 3})),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def vm(n: int, host: str | None = "host-1", nics: int = 1, power: PowerState = PowerState.POWERED_ON) -> Vm:
    return Vm(
        f"vm-{n}",
        f"web-{n}",
        host,
        power,
        tuple(
            Nic(4000 + i, mac(n * 8 + i), "dvportgroup-1" if i % 2 == 0 else "dvportgroup-2", f"p{n}-{i}")
            for i in range(nics)
        ),
    )


EMPTY = ControllerState(PROJECT)


def simulate(plan: SyncPlan, state: ControllerState, ports: Ports) -> tuple[ControllerState, Ports]:
    """What the controller and agents hold after ``plan`` is applied without failures."""
    objs: dict[str, SdnObject] = {}
    for group in (state.virtual_networks, state.virtual_machines, state.vmis, state.instance_ips):
        objs.update((o.uuid, o) for o in group)
    for obj in plan.delete:
        objs.pop(obj.uuid, None)
    for obj in (*plan.create, *plan.update):
        objs[obj.uuid] = obj
    new_ports = {h: dict(p) for h, p in ports.items()}
    for change in plan.ports:
        host = new_ports.setdefault(change.host, {})
        if change.action is PortAction.DELETE:
            host.pop(change.port.id, None)
        elif change.action is PortAction.ADD:
            host[change.port.id] = dataclasses.replace(change.port, enabled=False)
        else:
            host[change.port.id] = dataclasses.replace(
                host[change.port.id], enabled=change.action is PortAction.ENABLE
            )
    values = sorted(objs.values(), key=lambda o: o.uuid)
    return (
        ControllerState(
            state.project_uuid,
            tuple(o for o in values if isinstance(o, SdnVirtualNetwork)),
            tuple(o for o in values if isinstance(o, SdnVirtualMachine)),
            tuple(o for o in values if isinstance(o, SdnVmi)),
            tuple(o for o in values if isinstance(o, SdnInstanceIp)),
        ),
        new_ports,
    )


def with_dv_vlans(inv: NetworkInventory, plan: SyncPlan) -> NetworkInventory:
    """The vCenter side: the DV port VLANs of the plan set (what ReconfigureDVPort does)."""
    vlans = {d.port_key: d.vlan for d in plan.dv_port_vlans}
    vms = tuple(
        dataclasses.replace(
            v,
            nics=tuple(
                dataclasses.replace(n, port_vlan_id=vlans.get(n.port_key or "", n.port_vlan_id))
                for n in v.nics
            ),
        )
        for v in inv.vms
    )
    return dataclasses.replace(inv, vms=vms)


def converge(
    inv: NetworkInventory, state: ControllerState = EMPTY, ports: Ports | None = None
) -> tuple[NetworkInventory, ControllerState, Ports, SyncPlan]:
    ports = ports or {}
    plan = netsync.plan(inv, state, ports)
    state, ports = simulate(plan, state, ports)
    return with_dv_vlans(inv, plan), state, ports, plan


def addresses(state: ControllerState) -> dict[str | None, str]:
    return {iip.vmi_uuid: iip.address for iip in state.instance_ips}


def vlans(ports: Ports) -> dict[str, tuple[str, int]]:
    return {pid: (host, p.rx_vlan_id) for host, hp in ports.items() for pid, p in hp.items()}


# -- mapping -------------------------------------------------------------------------------------------


def test_port_group_with_pool_becomes_network_with_subnet() -> None:
    plan = netsync.plan(inventory(), EMPTY, {})
    vns = {o.fq_name: o for o in plan.create if isinstance(o, SdnVirtualNetwork)}
    vn = vns[("default-domain", "default-project", "pg-a")]
    assert vn.creator == "agentvm"
    assert vn.subnets[0].cidr == "10.1.0.0/24"
    assert vn.subnets[0].gateway == "10.1.0.1"
    assert vn.subnets[0].allocation_pools == (IpRange("10.1.0.10", "10.1.0.250"),)
    assert vn.subnets[0].dhcp is True
    # no gateway given: the subnet's first address, as the controller would choose
    assert vns[("default-domain", "default-project", "pg-b")].subnets[0].gateway == "10.2.0.1"


def test_project_and_domain_are_configurable() -> None:
    cfg = NetsyncConfig(domain="dom", project="vcenter")
    plan = netsync.plan(inventory((vm(1),)), EMPTY, {}, cfg)
    assert {o.fq_name[:2] for o in plan.create if isinstance(o, SdnVirtualNetwork | SdnVmi)} == {
        ("dom", "vcenter")
    }


def test_vm_with_two_nics_gets_two_interfaces_addresses_vlans_and_enabled_ports() -> None:
    plan = netsync.plan(inventory((vm(1, nics=2),)), EMPTY, {})
    vmis = [o for o in plan.create if isinstance(o, SdnVmi)]
    iips = [o for o in plan.create if isinstance(o, SdnInstanceIp)]
    assert len(vmis) == 2 and len(iips) == 2
    assert {o.mac for o in vmis} == {mac(8), mac(9)}
    adds = [c for c in plan.ports if c.action is PortAction.ADD]
    enables = [c for c in plan.ports if c.action is PortAction.ENABLE]
    assert len(adds) == 2 and len(enables) == 2
    assert len({c.port.rx_vlan_id for c in adds}) == 2
    assert all(c.port.rx_vlan_id == c.port.tx_vlan_id and c.port.type == 2 for c in adds)
    assert {c.port.ip_address for c in adds} == {i.address for i in iips}
    assert {c.port.vm_project_id for c in adds} == {PROJECT}
    assert len(plan.dv_port_vlans) == 2


def test_uuids_are_deterministic_from_vcenter_uuid_and_moid_or_mac() -> None:
    ids = netsync.Ids.for_vcenter("vc-0001")
    plan = netsync.plan(inventory((vm(1),)), EMPTY, {})
    uuids = {o.uuid for o in plan.create}
    assert ids.virtual_network("dvportgroup-1") in uuids
    assert ids.virtual_machine("vm-1") in uuids
    assert ids.vmi(mac(8).upper()) in uuids  # the MAC's spelling does not matter
    assert netsync.Ids.for_vcenter("vc-0002").virtual_machine("vm-1") != ids.virtual_machine("vm-1")


def test_rerun_after_apply_is_a_noop() -> None:
    inv, state, ports, _ = converge(inventory((vm(1, nics=2), vm(2, host="host-2"))))
    again = netsync.plan(inv, state, ports)
    assert again.is_noop, again


def test_power_off_disables_ports_and_power_on_enables_them() -> None:
    inv, state, ports, _ = converge(inventory((vm(1, nics=2),)))
    off = dataclasses.replace(inv, vms=(dataclasses.replace(inv.vms[0], power_state=PowerState.POWERED_OFF),))
    plan = netsync.plan(off, state, ports)
    assert [c.action for c in plan.ports] == [PortAction.DISABLE, PortAction.DISABLE]
    assert not plan.create and not plan.delete and not plan.update


def test_vmotion_moves_the_port_and_keeps_the_interface() -> None:
    inv, state, ports, _ = converge(inventory((vm(1), vm(2))))
    moved = dataclasses.replace(inv, vms=(dataclasses.replace(inv.vms[0], host="host-2"), inv.vms[1]))
    plan = netsync.plan(moved, state, ports)
    assert not plan.create and not plan.delete  # not a delete: the interface follows the VM
    assert [type(o) for o in plan.update] == [SdnVmi]
    assert plan.update[0].host == "host-2"  # type: ignore[union-attr]
    actions = [(c.action, c.host) for c in plan.ports]
    assert actions == [
        (PortAction.DELETE, "host-1"),
        (PortAction.ADD, "host-2"),
        (PortAction.ENABLE, "host-2"),
    ]
    old_address = addresses(state)
    _, state2, ports2 = moved, *simulate(plan, state, ports)
    assert addresses(state2) == old_address
    assert set(ports2["host-1"]) == {netsync.Ids.for_vcenter("vc-0001").vmi(mac(16))}


def test_vm_deleted_removes_its_objects_and_ports() -> None:
    inv, state, ports, _ = converge(inventory((vm(1, nics=2), vm(2))))
    plan = netsync.plan(dataclasses.replace(inv, vms=inv.vms[1:]), state, ports)
    assert not plan.create and not plan.update
    assert [type(o).__name__ for o in plan.delete] == ["SdnInstanceIp"] * 2 + ["SdnVmi"] * 2 + [
        "SdnVirtualMachine"
    ]
    assert [c.action for c in plan.ports] == [PortAction.DELETE, PortAction.DELETE]


def test_address_is_kept_when_an_earlier_vm_appears() -> None:
    inv, state, ports, _ = converge(inventory((vm(5),)))
    before = addresses(state)
    bigger = dataclasses.replace(inv, vms=(vm(1), *inv.vms))
    _, state2, _, _ = converge(bigger, state, ports)
    assert {k: v for k, v in addresses(state2).items() if k in before} == before


def test_external_ipam_uses_the_guests_address() -> None:
    inv = inventory(
        (
            dataclasses.replace(
                vm(1), nics=(Nic(4000, mac(1), "dvportgroup-1", "p", guest_ips=("fe80::1", "10.1.0.77")),)
            ),
        ),
        ip_pools=(IpPool("pool-a", "a", "10.1.0.0/24", "10.1.0.1", (), external_ipam=True),),
        port_groups=(PortGroup("dvportgroup-1", "pg-a", "dvs-1", 100, "pool-a"),),
    )
    plan = netsync.plan(inv, EMPTY, {})
    assert [o.address for o in plan.create if isinstance(o, SdnInstanceIp)] == ["10.1.0.77"]


def test_addresses_used_by_others_are_not_handed_out() -> None:
    ids = netsync.Ids.for_vcenter("vc-0001")
    vn_uuid = ids.virtual_network("dvportgroup-1")
    state = ControllerState(
        PROJECT, instance_ips=(SdnInstanceIp("f1", ("f1",), "10.1.0.10", vn_uuid, None, "admin"),)
    )
    plan = netsync.plan(inventory((vm(1),)), state, {})
    assert [o.address for o in plan.create if isinstance(o, SdnInstanceIp)] == ["10.1.0.11"]


# -- VLANs ---------------------------------------------------------------------------------------------


def test_vlan_already_on_the_port_is_kept_when_free() -> None:
    nic = dataclasses.replace(vm(1).nics[0], port_vlan_id=1234)
    plan = netsync.plan(inventory((dataclasses.replace(vm(1), nics=(nic,)),)), EMPTY, {})
    assert [c.port.rx_vlan_id for c in plan.ports if c.action is PortAction.ADD] == [1234]
    assert plan.dv_port_vlans == ()


def test_vlan_on_a_port_that_is_a_pvlan_id_or_taken_is_replaced() -> None:
    a = dataclasses.replace(vm(1), nics=(dataclasses.replace(vm(1).nics[0], port_vlan_id=2),))  # a PVLAN id
    b = dataclasses.replace(vm(2), nics=(dataclasses.replace(vm(2).nics[0], port_vlan_id=50),))
    c = dataclasses.replace(vm(3), nics=(dataclasses.replace(vm(3).nics[0], port_vlan_id=50),))  # same as b
    plan = netsync.plan(inventory((a, b, c)), EMPTY, {})
    got = sorted(ch.port.rx_vlan_id for ch in plan.ports if ch.action is PortAction.ADD)
    assert 50 in got and len(set(got)) == 3 and not {1, 2, 3} & set(got)


def test_reserved_ranges_are_never_handed_out() -> None:
    cfg = NetsyncConfig(reserved_vlans=((4, 100),))
    plan = netsync.plan(inventory((vm(1, nics=2),)), EMPTY, {}, cfg)
    assert sorted(c.port.rx_vlan_id for c in plan.ports if c.action is PortAction.ADD) == [101, 102]


def test_4095th_interface_on_a_host_gets_a_vlan_exhaustion_error_and_nothing_else_breaks() -> None:
    big_pool = (IpPool("pool-a", "a", "10.1.0.0/16", None, ()),)
    vms = (*(vm(n) for n in range(4095)), vm(9999, host="host-2"))
    inv = inventory(vms, dvses=(), ip_pools=big_pool, port_groups=inventory().port_groups[:1])
    plan = netsync.plan(inv, EMPTY, {})
    assert [e.kind for e in plan.errors] == [SyncErrorKind.VLAN_EXHAUSTED]
    assert "host-1" in plan.errors[0].message and "4094" in plan.errors[0].message
    adds = [c for c in plan.ports if c.action is PortAction.ADD]
    host1 = [c.port.rx_vlan_id for c in adds if c.host == "host-1"]
    assert len(host1) == 4094 and len(set(host1)) == 4094
    assert [c.host for c in adds if c.host == "host-2"] == ["host-2"]
    assert len([o for o in plan.create if isinstance(o, SdnVmi)]) == 4096  # the interface itself exists


# -- bad input -----------------------------------------------------------------------------------------


def test_pool_range_outside_its_subnet_is_an_error_and_the_rest_goes_on() -> None:
    pools = (
        IpPool("pool-a", "a", "10.1.0.0/24", "10.1.0.1", (IpRange("10.9.0.10", "10.9.0.20"),)),
        IpPool("pool-b", "b", "10.2.0.0/16", None, ()),
    )
    plan = netsync.plan(inventory((vm(1, nics=2),), ip_pools=pools), EMPTY, {})
    assert [(e.kind, e.item) for e in plan.errors] == [
        (SyncErrorKind.BAD_INPUT, "port group dvportgroup-1 (pg-a)")
    ]
    assert "outside the subnet" in plan.errors[0].message
    assert [o.fq_name[-1] for o in plan.create if isinstance(o, SdnVirtualNetwork)] == ["pg-b"]
    assert len([o for o in plan.create if isinstance(o, SdnVmi)]) == 1


def test_the_pools_dns_servers_are_the_subnets_and_a_bad_one_is_an_error_naming_it() -> None:
    good = IpPool("pool-a", "a", "10.1.0.0/24", "10.1.0.1", (), dns_servers=("10.1.0.2", "192.0.2.53"))
    bad = IpPool("pool-b", "b", "10.2.0.0/16", None, (), dns_servers=("ns1.example.com",))
    plan = netsync.plan(inventory(ip_pools=(good, bad)), EMPTY, {})
    (vn,) = [o for o in plan.create if isinstance(o, SdnVirtualNetwork)]
    assert vn.subnets[0].dns_servers == ("10.1.0.2", "192.0.2.53")
    assert [e.item for e in plan.errors] == ["port group dvportgroup-2 (pg-b)"]
    assert "ns1.example.com" in plan.errors[0].message and "DNS" in plan.errors[0].message


def test_port_group_losing_its_vlan_keeps_its_existing_objects() -> None:
    inv, state, ports, _ = converge(inventory((vm(1, nics=2),)))
    broken = dataclasses.replace(
        inv, port_groups=(dataclasses.replace(inv.port_groups[0], vlan_id=None), inv.port_groups[1])
    )
    plan = netsync.plan(broken, state, ports)
    assert [e.kind for e in plan.errors] == [SyncErrorKind.BAD_INPUT]
    assert "no VLAN" in plan.errors[0].message
    assert plan.is_noop  # nothing of the broken port group is deleted


def test_nic_without_mac_waits_and_the_other_nic_goes_on() -> None:
    v = vm(1, nics=2)
    v = dataclasses.replace(v, nics=(dataclasses.replace(v.nics[0], mac=None), v.nics[1]))
    plan = netsync.plan(inventory((v,)), EMPTY, {})
    assert [(e.kind, e.item) for e in plan.errors] == [(SyncErrorKind.WAITING, "NIC 4000 of vm-1 (web-1)")]
    assert len([o for o in plan.create if isinstance(o, SdnVmi)]) == 1


def test_ip_pool_exhaustion_is_an_error_for_that_nic_only() -> None:
    pools = (IpPool("pool-a", "a", "10.1.0.0/24", "10.1.0.1", (IpRange("10.1.0.10", "10.1.0.11"),)),)
    pgs = (PortGroup("dvportgroup-1", "pg-a", "dvs-1", 100, "pool-a"),)
    plan = netsync.plan(inventory(tuple(vm(n) for n in range(3)), ip_pools=pools, port_groups=pgs), EMPTY, {})
    assert [e.kind for e in plan.errors] == [SyncErrorKind.IP_EXHAUSTED]
    assert len([o for o in plan.create if isinstance(o, SdnInstanceIp)]) == 2
    assert len([c for c in plan.ports if c.action is PortAction.ADD]) == 3


# -- ownership -----------------------------------------------------------------------------------------


def test_foreign_network_with_the_same_name_is_a_conflict_and_left_alone() -> None:
    foreign = SdnVirtualNetwork("f-vn", ("default-domain", "default-project", "pg-a"), "pg-a", (), "admin")
    plan = netsync.plan(inventory((vm(1, nics=2),)), ControllerState(PROJECT, (foreign,)), {})
    assert [(e.kind, e.item) for e in plan.errors] == [
        (SyncErrorKind.CONFLICT, "port group dvportgroup-1 (pg-a)")
    ]
    assert "f-vn" in plan.errors[0].message
    assert all(o.uuid != "f-vn" for o in (*plan.create, *plan.update, *plan.delete))
    assert [o.fq_name[-1] for o in plan.create if isinstance(o, SdnVirtualNetwork)] == ["pg-b"]


def test_foreign_objects_and_ports_are_never_deleted() -> None:
    foreign_vmi = SdnVmi(
        "f-vmi", ("default-domain", "default-project", "f-vmi"), mac(99), "x", None, creator=None
    )
    foreign_port = VrouterPort(
        "f-vmi", "i", "x", PROJECT, "other", "1.2.3.4", mac(99), "tap", 7, 7, enabled=True
    )
    plan = netsync.plan(
        inventory(), ControllerState(PROJECT, vmis=(foreign_vmi,)), {"host-1": {"f-vmi": foreign_port}}
    )
    assert plan.delete == () and plan.ports == ()


# -- properties ----------------------------------------------------------------------------------------


@st.composite
def inventories(draw: st.DrawFn) -> NetworkInventory:
    count = draw(st.integers(0, 25))
    hosts = draw(st.lists(st.sampled_from(["host-1", "host-2", "host-3"]), min_size=count, max_size=count))
    vms = []
    for n in range(count):
        nics = draw(st.integers(1, 3))
        vlan = draw(st.one_of(st.none(), st.integers(0, 20)))
        base = vm(n, host=hosts[n], nics=nics)
        vms.append(
            dataclasses.replace(
                base, nics=tuple(dataclasses.replace(x, port_vlan_id=vlan) for x in base.nics)
            )
        )
    reserved = draw(st.sampled_from([(), ((5, 10),)]))
    return inventory(tuple(vms)), reserved  # type: ignore[return-value]


@given(inventories(), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_plan_is_deterministic_whatever_the_inventory_order(
    drawn: tuple[NetworkInventory, tuple], rnd: random.Random
) -> None:
    inv, reserved = drawn  # type: ignore[misc]
    cfg = NetsyncConfig(reserved_vlans=reserved)
    shuffled_vms = list(inv.vms)
    rnd.shuffle(shuffled_vms)
    shuffled = dataclasses.replace(inv, vms=tuple(shuffled_vms), port_groups=inv.port_groups[::-1])
    assert netsync.plan(inv, EMPTY, {}, cfg) == netsync.plan(shuffled, EMPTY, {}, cfg)


@given(inventories(), st.integers(1, 10))
@settings(max_examples=40, deadline=None)
def test_adding_unrelated_vms_changes_no_existing_address_or_vlan(
    drawn: tuple[NetworkInventory, tuple], extra: int
) -> None:
    inv, reserved = drawn  # type: ignore[misc]
    cfg = NetsyncConfig(reserved_vlans=reserved)
    plan = netsync.plan(inv, EMPTY, {}, cfg)
    state, ports = simulate(plan, EMPTY, {})
    inv = with_dv_vlans(inv, plan)
    more = dataclasses.replace(
        inv, vms=inv.vms + tuple(vm(1000 + n, host="host-1", nics=2) for n in range(extra))
    )
    plan2 = netsync.plan(more, state, ports, cfg)
    state2, ports2 = simulate(plan2, state, ports)
    old_addresses, new_addresses = addresses(state), addresses(state2)
    assert {k: new_addresses[k] for k in old_addresses} == old_addresses
    old_vlans, new_vlans = vlans(ports), vlans(ports2)
    assert {k: new_vlans[k] for k in old_vlans} == old_vlans
    assert not plan2.delete and not plan2.update


@given(inventories())
@settings(max_examples=40, deadline=None)
def test_vlans_are_unique_per_host_and_never_excluded(drawn: tuple[NetworkInventory, tuple]) -> None:
    inv, reserved = drawn  # type: ignore[misc]
    plan = netsync.plan(inv, EMPTY, {}, NetsyncConfig(reserved_vlans=reserved))
    excluded = {1, 2, 3} | {v for start, end in reserved for v in range(start, end + 1)}
    by_host: dict[str, list[int]] = {}
    for change in plan.ports:
        if change.action is PortAction.ADD:
            by_host.setdefault(change.host, []).append(change.port.rx_vlan_id)
    for got in by_host.values():
        assert len(got) == len(set(got))
        assert all(1 <= v <= 4094 and v not in excluded for v in got)


@given(inventories(), st.lists(st.integers(0, 40), max_size=8))
@settings(max_examples=40, deadline=None)
def test_foreign_objects_are_never_touched(drawn: tuple[NetworkInventory, tuple], seeds: list[int]) -> None:
    inv, _ = drawn  # type: ignore[misc]
    ids = netsync.Ids.for_vcenter(inv.vcenter_uuid)
    foreign_vns = tuple(
        SdnVirtualNetwork(
            f"fvn-{s}",
            ("default-domain", "default-project", f"pg-{'ab'[s % 2]}" if s < 4 else f"x{s}"),
            creator="admin",
        )
        for s in seeds
    )
    foreign_vmis = tuple(  # even the uuid agentvm would give the NIC: a conflict, never an update
        SdnVmi(ids.vmi(mac(s)), ("d", "p", f"v{s}"), mac(s), "fvn", None, creator=None) for s in seeds
    )
    state = ControllerState(
        PROJECT,
        virtual_networks=tuple({v.uuid: v for v in foreign_vns}.values()),
        vmis=tuple({v.uuid: v for v in foreign_vmis}.values()),
    )
    ports = {
        "host-1": {
            v.uuid: VrouterPort(v.uuid, "i", "fvn", PROJECT, "x", "1.1.1.1", v.mac, "t", 9, 9)
            for v in foreign_vmis
        }
    }
    plan = netsync.plan(inv, state, ports)
    foreign = {o.uuid for o in (*state.virtual_networks, *state.vmis)}
    assert not foreign & {o.uuid for o in (*plan.create, *plan.update, *plan.delete)}
    assert not foreign & {c.port.id for c in plan.ports}
