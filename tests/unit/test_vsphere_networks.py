"""Pure parts of the vCenter side of netsync: IP pool conversion, backoff keys and holding items back."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from pyVmomi import vim

from agentvm.core.heal import Backoff
from agentvm.core.ipalloc import PoolError, pool_subnet
from agentvm.core.netsync import hold_back
from agentvm.core.retry import Retries
from agentvm.model.network import (
    DvPortVlan,
    IpRange,
    ItemKey,
    ItemKind,
    ObjectCall,
    ObjectVerb,
    PortAction,
    PortChange,
    SdnVirtualNetwork,
    SdnVmi,
    SyncPlan,
    VrouterPort,
)
from agentvm.sdn.sync import ApplyFailure
from agentvm.vsphere.networks import ip_pool, parse_ranges, vlan_of


@given(st.integers(0, 2**32 - 300), st.integers(1, 250))
def test_a_range_of_n_addresses_ends_n_minus_one_after_its_start(start: int, count: int) -> None:
    first = ipaddress.IPv4Address(start)
    (r,) = parse_ranges(f"{first}#{count}")
    assert int(ipaddress.IPv4Address(r.end)) - int(ipaddress.IPv4Address(r.start)) == count - 1


def test_several_ranges_and_a_malformed_one_kept_for_core_to_name() -> None:
    assert parse_ranges("10.0.0.10#41, 10.0.1.5#1,nonsense") == (
        IpRange("10.0.0.10", "10.0.0.50"),
        IpRange("10.0.1.5", "10.0.1.5"),
        IpRange("nonsense", "nonsense"),
    )


def _pool(**ipv4: object) -> vim.vApp.IpPool:
    return vim.vApp.IpPool(id=3, name="web", ipv4Config=vim.vApp.IpPool.IpPoolConfigInfo(**ipv4))


def test_an_enabled_pool_becomes_a_subnet_with_its_range() -> None:
    pool = ip_pool(
        "dc-1:3",
        _pool(
            subnetAddress="10.0.0.0",
            netmask="255.255.255.0",
            gateway="10.0.0.1",
            range="10.0.0.100#50",
            dhcpServerAvailable=True,
            ipPoolEnabled=True,
        ),
    )
    assert (pool.cidr, pool.gateway, pool.dhcp, pool.external_ipam) == (
        "10.0.0.0/24",
        "10.0.0.1",
        True,
        False,
    )
    assert pool_subnet(pool, "s").allocation_pools == (IpRange("10.0.0.100", "10.0.0.149"),)


def test_a_disabled_pool_is_external_ipam_and_a_range_outside_is_named() -> None:
    pool = ip_pool(
        "dc-1:3",
        _pool(subnetAddress="10.0.0.0", netmask="255.255.255.0", range="10.9.0.1#5", ipPoolEnabled=False),
    )
    assert pool.external_ipam
    try:
        pool_subnet(pool, "s")
    except PoolError as exc:
        assert "outside the subnet" in str(exc) and "dc-1:3" in str(exc)
    else:
        raise AssertionError("a range outside its subnet must be refused")


def test_a_bad_netmask_is_passed_on_for_core_to_name() -> None:
    pool = ip_pool("dc-1:1", _pool(subnetAddress="10.10.10.0", netmask="10.10.10.255", ipPoolEnabled=True))
    assert pool.cidr == "10.10.10.0/10.10.10.255"


def test_vlan_of_a_vlan_id_a_pvlan_and_a_trunk() -> None:
    v = vim.dvs.VmwareDistributedVirtualSwitch
    assert vlan_of(v.VmwarePortConfigPolicy(vlan=v.VlanIdSpec(vlanId=12))) == 12
    assert vlan_of(v.VmwarePortConfigPolicy(vlan=v.PvlanSpec(pvlanId=7))) == 7
    assert vlan_of(v.VmwarePortConfigPolicy(vlan=v.TrunkVlanSpec())) is None
    assert vlan_of(None) is None


UUID_A = "11111111-1111-4111-8111-111111111111"
UUID_B = "22222222-2222-4222-8222-222222222222"


def test_failure_keys_follow_the_item_names_of_the_sdn_adapter() -> None:
    vn = SdnVirtualNetwork(UUID_A, ("a", "b", "c"))
    created = ApplyFailure(ObjectCall(ObjectVerb.CREATE, "virtual-network", vn), "x", True)
    assert str(created.key) == f"obj:{UUID_A}"
    assert created.item == f"create virtual-network {UUID_A} (a:b:c)"
    port = VrouterPort(UUID_A, UUID_B, UUID_B, UUID_B, "vm", "10.0.0.5", "00:50:56:00:00:01", UUID_A, 5, 5)
    added = ApplyFailure(PortChange(PortAction.ADD, "host-1", port), "x", True)
    assert str(added.key) == f"port:{UUID_A}"
    assert added.item == f"add port {UUID_A} on host-1"
    vlan = ApplyFailure(DvPortVlan("h", "pg-1", "12", 5, "u"), "x", False)
    assert str(vlan.key) == ("dvport:12")
    assert vlan.item == "set VLAN 5 on DV port 12 of pg-1 (interface u, host h)"


def test_holding_back_a_network_holds_back_its_interfaces_and_their_ports() -> None:
    vn = SdnVirtualNetwork(UUID_A, ("d", "p", "n"))
    vmi = SdnVmi(UUID_B, ("d", "p", UUID_B), "00:50:56:00:00:01", UUID_A, None)
    plan = SyncPlan(create=(vn, vmi), dv_port_vlans=(DvPortVlan("h", "pg", "7", 5, UUID_B),))
    trimmed, held = hold_back(plan, {ItemKey(ItemKind.OBJECT, UUID_A), ItemKey(ItemKind.DV_PORT, "7")})
    assert trimmed.create == () and trimmed.dv_port_vlans == ()
    assert [str(k) for k in held] == ["dvport:7", f"obj:{UUID_A}"]
    assert hold_back(plan, set()) == (plan, ())


def test_backoff_doubles_up_to_its_cap_and_forgets_on_success() -> None:
    b = Retries(Backoff(base=1, cap=5, jitter=0))
    assert [b.failed("k", 0) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert b.waiting(4.9) == {"k"} and b.waiting(5) == set()
    b.succeeded("k")
    assert b.next_due() is None


def test_holding_back_a_dv_port_change_holds_back_telling_its_agent_but_not_removing_a_port() -> None:
    port = VrouterPort(UUID_B, UUID_A, UUID_A, UUID_A, "vm", "10.0.0.5", "00:50:56:00:00:01", UUID_B, 5, 5)
    plan = SyncPlan(
        ports=(
            PortChange(PortAction.DELETE, "h0", port),
            PortChange(PortAction.ADD, "h", port),
            PortChange(PortAction.ENABLE, "h", port),
        ),
        dv_port_vlans=(DvPortVlan("h", "pg", "7", 5, UUID_B),),
    )
    trimmed, held = hold_back(plan, {ItemKey(ItemKind.DV_PORT, "7")})
    assert [str(k) for k in held] == ["dvport:7"]
    assert trimmed.dv_port_vlans == () and [c.action for c in trimmed.ports] == [PortAction.DELETE]
