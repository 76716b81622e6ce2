"""agentvm.core.vlan and agentvm.core.ipalloc: the per-host VLAN and per-subnet address books."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.ipalloc import PoolError, SubnetAddresses, pool_subnet
from agentvm.core.vlan import HostVlans, excluded_vlans
from agentvm.model.network import IpPool, IpRange


def test_excluded_vlans_clip_reserved_ranges_to_1_4094() -> None:
    assert excluded_vlans([7, 5000], [(0, 2), (4093, 5000)]) == frozenset({1, 2, 7, 4093, 4094})


def test_keep_refuses_excluded_taken_and_out_of_range_vlans() -> None:
    vlans = HostVlans(frozenset({10}))
    assert vlans.keep(11) and not vlans.keep(11)
    assert not vlans.keep(10) and not vlans.keep(0) and not vlans.keep(4095) and not vlans.keep(None)


def test_allocate_skips_kept_and_excluded_then_runs_out() -> None:
    vlans = HostVlans(frozenset(range(3, 4095)))
    assert vlans.keep(1)
    assert vlans.allocate() == 2
    assert vlans.allocate() is None
    assert vlans.capacity == 2


@given(st.sets(st.integers(1, 4094), max_size=50), st.sets(st.integers(1, 4094), max_size=50))
def test_allocations_are_unique_and_never_excluded(excluded: set[int], kept: set[int]) -> None:
    vlans = HostVlans(frozenset(excluded))
    held = {v for v in sorted(kept) if vlans.keep(v)}
    got = []
    while (v := vlans.allocate()) is not None:
        got.append(v)
    assert len(got) == len(set(got)) and not set(got) & (held | excluded)
    assert len(got) + len(held) == vlans.capacity


def test_pool_range_outside_subnet_is_refused_with_the_pool_named() -> None:
    pool = IpPool("7", "prod", "10.0.0.0/24", "10.0.0.1", (IpRange("10.0.1.5", "10.0.1.9"),))
    with pytest.raises(PoolError, match=r"IP pool 7 \(prod\): range 10.0.1.5-10.0.1.9 is outside the subnet"):
        pool_subnet(pool, "u")


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (IpPool("1", "a", "nonsense"), "is not a subnet"),
        (IpPool("1", "a", "10.0.0.0/24", "10.0.9.1"), "gateway 10.0.9.1 is outside"),
        (IpPool("1", "a", "10.0.0.0/24", None, (IpRange("10.0.0.9", "10.0.0.2"),)), "ends before it starts"),
    ],
)
def test_bad_pools_are_refused(pool: IpPool, message: str) -> None:
    with pytest.raises(PoolError, match=message):
        pool_subnet(pool, "u")


def test_addresses_come_from_the_ranges_lowest_first_skipping_the_gateway() -> None:
    subnet = pool_subnet(IpPool("1", "a", "10.0.0.0/29", "10.0.0.2", (IpRange("10.0.0.1", "10.0.0.3"),)), "u")
    book = SubnetAddresses(subnet)
    assert [book.allocate(), book.allocate(), book.allocate()] == ["10.0.0.1", "10.0.0.3", None]


def test_without_ranges_the_whole_subnet_minus_network_broadcast_and_gateway_is_used() -> None:
    book = SubnetAddresses(pool_subnet(IpPool("1", "a", "10.0.0.0/30"), "u"))
    assert book.allocate() == "10.0.0.2"  # .1 is the default gateway
    assert book.allocate() is None
