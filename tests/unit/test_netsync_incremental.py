"""agentvm.core.netsync_incremental: the plan of a small change equals the full plan of the same inputs."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentvm.core import netsync, netsync_incremental
from agentvm.core.netsync_incremental import NetsyncIndex, NetworksChange
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
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SyncErrorKind,
    SyncPlan,
    Vm,
    VrouterPort,
)

PROJECT = "11111111-2222-3333-4444-555555555555"
HOSTS = ("host-1", "host-2", "host-3")
PGS = ("dvportgroup-1", "dvportgroup-2", "dvportgroup-3", "dvportgroup-9")  # -9 is not in vCenter


def mac(n: int) -> str:
    return f"00:50:56:00:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


def base_inventory(vms: tuple[Vm, ...] = ()) -> NetworkInventory:
    return NetworkInventory(
        vcenter_uuid="vc-incr",
        port_groups=(
            PortGroup("dvportgroup-1", "pg-a", "dvs-1", 100, "pool-a"),
            PortGroup("dvportgroup-2", "pg-b", "dvs-1", 200, "pool-b"),
            PortGroup("dvportgroup-3", "pg-c", "dvs-1", 300, None),
        ),
        ip_pools=(
            IpPool("pool-a", "a", "10.1.0.0/24", "10.1.0.1", (IpRange("10.1.0.10", "10.1.0.30"),)),
            IpPool(
                "pool-b", "b", "10.2.0.0/24", None, (IpRange("10.2.0.5", "10.2.0.9"),), external_ipam=False
            ),
        ),
        vms=vms,
        dvses=(Dvs("dvs-1", "dvs", frozenset({1, 2})),),
    )


FOREIGN = ControllerState(
    PROJECT,
    virtual_networks=(),
    virtual_machines=(SdnVirtualMachine("f0000000-0000-4000-8000-000000000001", ("theirs",), "x", "admin"),),
    instance_ips=(
        SdnInstanceIp(
            "f0000000-0000-4000-8000-000000000002",
            ("f0000000-0000-4000-8000-000000000002",),
            "10.1.0.10",
            netsync.Ids.for_vcenter("vc-incr").virtual_network("dvportgroup-1"),
            None,
            "admin",
        ),
    ),
)


@st.composite
def nics(draw: st.DrawFn, n: int) -> tuple[Nic, ...]:
    count = draw(st.integers(0, 3))
    out = []
    for i in range(count):
        mac_n = draw(st.one_of(st.just(n * 4 + i), st.integers(0, 12)))  # sometimes a MAC seen elsewhere
        out.append(
            Nic(
                4000 + i,
                draw(st.sampled_from([mac(mac_n), mac(mac_n), mac(mac_n), None, "zz"])),
                draw(st.sampled_from(PGS)),
                draw(st.sampled_from([f"p{n}-{i}", None])),
                draw(st.one_of(st.none(), st.integers(0, 12))),
                draw(st.sampled_from([(), ("10.2.0.7",), ("10.1.0.11",)])),
            )
        )
    return tuple(out)


@st.composite
def a_vm(draw: st.DrawFn, n: int) -> Vm:
    return Vm(
        f"vm-{n}",
        f"web-{n}",
        draw(st.sampled_from([*HOSTS, None])),
        draw(st.sampled_from([PowerState.POWERED_ON, PowerState.POWERED_OFF])),
        draw(nics(n)),
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[NetworkInventory, ControllerState, NetsyncConfig]:
    count = draw(st.integers(0, 14))
    vms = tuple(draw(a_vm(n)) for n in range(count))
    ctl = draw(st.sampled_from([ControllerState(PROJECT), FOREIGN]))
    reserved = draw(st.sampled_from([(), ((3, 4090),)]))  # 4090: a host holds 4 interfaces at most
    return base_inventory(vms), ctl, NetsyncConfig(reserved_vlans=reserved)


@st.composite
def vm_changes(draw: st.DrawFn, index: NetsyncIndex) -> dict[str, Vm | None]:
    moids = sorted(index.vms)
    kind = draw(st.sampled_from(["power", "host", "gone", "new", "nics", "vlan"]))
    if kind == "new" or not moids:
        n = draw(st.integers(20, 30))
        return {f"vm-{n}": draw(a_vm(n))}
    moid = draw(st.sampled_from(moids))
    vm = index.vms[moid]
    if kind == "power":
        on = vm.power_state is PowerState.POWERED_ON
        return {
            moid: dataclasses.replace(vm, power_state=PowerState.POWERED_OFF if on else PowerState.POWERED_ON)
        }
    if kind == "host":
        return {moid: dataclasses.replace(vm, host=draw(st.sampled_from([*HOSTS, None])))}
    if kind == "gone":
        return {moid: None}
    if kind == "vlan" and vm.nics:
        i = draw(st.integers(0, len(vm.nics) - 1))
        nic = dataclasses.replace(vm.nics[i], port_vlan_id=draw(st.one_of(st.none(), st.integers(0, 12))))
        return {moid: dataclasses.replace(vm, nics=(*vm.nics[:i], nic, *vm.nics[i + 1 :]))}
    return {moid: dataclasses.replace(vm, nics=draw(nics(int(moid.split("-")[1]))))}


@st.composite
def network_changes(draw: st.DrawFn, index: NetsyncIndex) -> NetworksChange:
    pgs, pools, dvses = index.base.port_groups, index.base.ip_pools, index.base.dvses
    kind = draw(st.sampled_from(["vlan", "rename", "pool-range", "external", "pvlan", "drop"]))
    i = draw(st.integers(0, len(pgs) - 1))
    if kind == "vlan":
        pgs = (*pgs[:i], dataclasses.replace(pgs[i], vlan_id=draw(st.sampled_from([None, 7]))), *pgs[i + 1 :])
    elif kind == "rename":
        pgs = (
            *pgs[:i],
            dataclasses.replace(pgs[i], name=draw(st.sampled_from(["pg-a", "pg-z"]))),
            *pgs[i + 1 :],
        )
    elif kind == "drop":
        pgs = pgs[:i] + pgs[i + 1 :]
    elif kind == "pool-range":
        pools = (dataclasses.replace(pools[0], ranges=(IpRange("10.1.0.20", "10.1.0.21"),)), *pools[1:])
    elif kind == "external":
        pools = (*pools[:1], dataclasses.replace(pools[1], external_ipam=not pools[1].external_ipam))
    else:
        dvses = (dataclasses.replace(dvses[0], pvlan_ids=frozenset({1, 2, 5, 6})),)
    return NetworksChange(pgs, pools, dvses)


def full_plan(
    index: NetsyncIndex, vms: dict[str, Vm | None], networks: NetworksChange | None = None
) -> SyncPlan:
    """``core.netsync.plan`` of the index's inventory with the change applied."""
    current = dict(index.vms)
    for moid, vm in vms.items():
        if vm is None:
            current.pop(moid, None)
        else:
            current[moid] = vm
    inv = dataclasses.replace(index.inventory(), vms=tuple(current[m] for m in sorted(current)))
    if networks is not None:
        inv = dataclasses.replace(
            inv, port_groups=networks.port_groups, ip_pools=networks.ip_pools, dvses=networks.dvses
        )
    return netsync.plan(inv, index.controller_state(), index.ports, index.config)


def converged(index: NetsyncIndex) -> bool:
    return netsync.plan(index.inventory(), index.controller_state(), index.ports, index.config).is_noop


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # about 7 s
@given(worlds(), st.data())
def test_incremental_plans_equal_full_plans(
    world: tuple[NetworkInventory, ControllerState, NetsyncConfig], data: st.DataObject
) -> None:
    inv, ctl, cfg = world
    plan, index = netsync_incremental.build(inv, ctl, {}, cfg)
    assert plan == netsync.plan(inv, ctl, {}, cfg)  # the full build is the full plan
    assert converged(index)  # and the index is what the plan leaves behind
    for _ in range(4):  # a few changes in a row, each against the index the previous one left
        if data.draw(st.integers(0, 5)) == 0:
            networks = data.draw(network_changes(index))
            expected = full_plan(index, {}, networks)
            plan, index = netsync_incremental.plan_change(index, networks=networks)
        else:
            change = data.draw(vm_changes(index))
            expected = full_plan(index, change)
            plan, index = netsync_incremental.plan_change(index, change)
        assert plan == expected
        assert converged(index)


def power(index: NetsyncIndex, moid: str, state: PowerState) -> dict[str, Vm | None]:
    return {moid: dataclasses.replace(index.vms[moid], power_state=state)}


def vm(n: int, host: str = "host-1", count: int = 2) -> Vm:
    return Vm(
        f"vm-{n}",
        f"web-{n}",
        host,
        PowerState.POWERED_ON,
        tuple(Nic(4000 + i, mac(n * 4 + i), "dvportgroup-1", f"p{n}-{i}") for i in range(count)),
    )


def test_power_off_is_two_disable_calls_and_nothing_else() -> None:
    _, index = netsync_incremental.build(base_inventory((vm(1), vm(2))), ControllerState(PROJECT), {})
    plan, index = netsync_incremental.plan_change(index, power(index, "vm-1", PowerState.POWERED_OFF))
    assert not plan.create and not plan.update and not plan.delete and not plan.dv_port_vlans
    assert [c.action for c in plan.ports] == [PortAction.DISABLE, PortAction.DISABLE]
    assert {c.port.display_name for c in plan.ports} == {"web-1"}
    assert all(not p.enabled for p in index.ports["host-1"].values() if p.display_name == "web-1")


def test_a_new_nic_gets_the_lowest_free_address_and_vlan_beside_the_others() -> None:
    _, index = netsync_incremental.build(base_inventory((vm(1), vm(2))), ControllerState(PROJECT), {})
    before = dict(index.addresses)
    grown = dataclasses.replace(
        index.vms["vm-2"], nics=(*index.vms["vm-2"].nics, Nic(4002, mac(99), "dvportgroup-1", "p2-2"))
    )
    plan, index = netsync_incremental.plan_change(index, {"vm-2": grown})
    assert [type(o).__name__ for o in plan.create] == ["SdnVmi", "SdnInstanceIp"]
    assert [c.action for c in plan.ports] == [PortAction.ADD, PortAction.ENABLE]
    assert {k: index.addresses[k] for k in before} == before  # nobody else's address moved
    (new,) = set(index.addresses) - set(before)
    assert index.addresses[new] == "10.1.0.14"
    assert sorted(index.vlans.values()) == [3, 4, 5, 6, 7]  # 1, 2 are PVLAN ids


def test_vlan_exhaustion_on_one_host_is_an_error_for_that_interface_only() -> None:
    cfg = NetsyncConfig(reserved_vlans=((3, 4090),))  # usable: 4091-4094
    _, index = netsync_incremental.build(base_inventory((vm(1), vm(2))), ControllerState(PROJECT), {}, cfg)
    plan, index = netsync_incremental.plan_change(index, {"vm-3": vm(3, count=1)})
    assert [e.kind for e in plan.errors] == [SyncErrorKind.VLAN_EXHAUSTED]
    assert "host-1 has no free VLAN left" in plan.errors[0].message
    assert [type(o).__name__ for o in plan.create] == ["SdnVirtualMachine", "SdnVmi", "SdnInstanceIp"]
    assert not plan.ports  # no VLAN, no port: the other four are untouched
    plan, index = netsync_incremental.plan_change(index, {"vm-1": None})  # room again
    assert not plan.errors
    assert {c.port.display_name for c in plan.ports if c.action is PortAction.ADD} == {"web-3"}


def test_the_index_reads_back_as_inventory_controller_and_ports() -> None:
    inv = base_inventory((vm(1), vm(2, host="host-2")))
    plan, index = netsync_incremental.build(inv, ControllerState(PROJECT), {})
    state = index.controller_state()
    assert {o.uuid for o in state.virtual_networks} == {
        o.uuid for o in plan.create if isinstance(o, SdnVirtualNetwork)
    }
    assert {h: len(p) for h, p in index.ports.items()} == {"host-1": 2, "host-2": 2}
    assert all(isinstance(p, VrouterPort) and p.enabled for h in index.ports.values() for p in h.values())
    assert all(n.port_vlan_id is not None for v in index.inventory().vms for n in v.nics)
