"""The IP plan: deterministic, stable, unique, never a reserved address, and exhaustion caught up front."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.hooks import answer_for
from agentvm.core.ipplan import (
    AddressSource,
    IpPlanExhausted,
    assign_addresses,
    canonical_order,
    per_host_values,
    render_per_host,
)
from agentvm.model.agency import HookState, MoRef, OvfProperty
from agentvm.model.desired import AgencySpec, IpPlanSpec, OvfSource, ScopeEntry, ScopeHost

A = IPv4Address
NET = IPv4Network("10.10.0.0/24")
PLAN = IpPlanSpec(network=NET, gateway=A("10.10.0.1"), first=A("10.10.0.1"), last=A("10.10.0.254"))


def host(n: int, cluster: int = 0) -> ScopeHost:
    return ScopeHost(
        moid=f"host-{n}",
        name=f"esx-{n}.lab.local",
        path=f"/DC0/host/DC0_C{cluster}/esx-{n}.lab.local",
        cluster_moid=f"domain-c{cluster}",
        cluster_path=f"/DC0/host/DC0_C{cluster}",
        cluster_name=f"DC0_C{cluster}",
    )


def addresses(
    plan: IpPlanSpec, hosts: list[ScopeHost], previous: dict[str, IPv4Address] | None = None
) -> dict[str, IPv4Address]:
    return {a.host.moid: a.address for a in assign_addresses(plan, hosts, previous).addresses}


host_ids = st.lists(st.integers(min_value=1, max_value=500), unique=True, min_size=1, max_size=40)


@given(host_ids, st.randoms(use_true_random=False))
def test_same_hosts_in_any_order_get_the_same_addresses(ids: list[int], rnd: random.Random) -> None:
    hosts = [host(i, i % 3) for i in ids]
    shuffled = list(hosts)
    rnd.shuffle(shuffled)
    assert addresses(PLAN, hosts) == addresses(PLAN, shuffled)


@given(host_ids, host_ids)
def test_adding_hosts_never_moves_an_existing_host(first: list[int], extra: list[int]) -> None:
    before_hosts = [host(i) for i in first]
    before = addresses(PLAN, before_hosts)
    grown = before_hosts + [host(i) for i in extra if i not in first]
    after = addresses(PLAN, grown, previous=before)
    assert {moid: after[moid] for moid in before} == before


@given(host_ids, st.data())
def test_removing_hosts_never_moves_the_others(ids: list[int], data: st.DataObject) -> None:
    hosts = [host(i) for i in ids]
    before = addresses(PLAN, hosts)
    kept = data.draw(st.lists(st.sampled_from(hosts), unique=True))
    after = addresses(PLAN, kept, previous=before)
    assert after == {h.moid: before[h.moid] for h in kept}


@st.composite
def plans(draw: st.DrawFn) -> IpPlanSpec:
    prefix = draw(st.integers(min_value=22, max_value=30))
    network = IPv4Network(f"10.20.0.0/{prefix}")
    size = network.num_addresses
    low = draw(st.integers(min_value=0, max_value=size - 1))
    high = draw(st.integers(min_value=low, max_value=size - 1))
    gateway = network.network_address + draw(st.integers(min_value=1, max_value=size - 2))
    static_count = draw(st.integers(min_value=0, max_value=3))
    static = tuple(
        (f"host-{900 + i}", network.network_address + draw(st.integers(min_value=1, max_value=size - 2)))
        for i in range(static_count)
    )
    static = tuple({a: (k, a) for k, a in static if a != gateway}.values())
    return IpPlanSpec(
        network=network,
        gateway=gateway,
        first=network.network_address + low,
        last=network.network_address + high,
        static=static,
    )


@settings(max_examples=200)
@given(plans(), host_ids, st.dictionaries(st.integers(1, 500), st.integers(0, 1023), max_size=20))
def test_addresses_are_unique_in_range_and_never_reserved(
    plan: IpPlanSpec, ids: list[int], raw_previous: dict[int, int]
) -> None:
    assert plan.network is not None and plan.first is not None and plan.last is not None
    hosts = [host(i) for i in ids]
    previous = {
        f"host-{i}": plan.network.network_address + (n % plan.network.num_addresses)
        for i, n in raw_previous.items()
    }
    try:
        result = assign_addresses(plan, hosts, previous)
    except IpPlanExhausted:
        return  # exhaustion is checked exactly below
    given_out = [a.address for a in result.addresses]
    assert len(given_out) == len(set(given_out)) == len(hosts)
    static_addresses = {address for _, address in plan.static}
    for held in result.addresses:
        assert held.address not in (
            plan.gateway,
            plan.network.network_address,
            plan.network.broadcast_address,
        )
        assert held.address not in static_addresses
        assert plan.first <= held.address <= plan.last
        if held.source is AddressSource.KEPT:
            assert previous[held.host.moid] == held.address


@given(st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=20))
def test_exhaustion_is_exact(size: int, count: int) -> None:
    # range .10 .. .10+size-1 with the gateway at .10 when the range is not empty: size-1 free addresses
    first = A("10.10.0.10")
    plan = IpPlanSpec(network=NET, gateway=first, first=first, last=first + size - 1) if size else None
    if plan is None:
        plan = IpPlanSpec(network=NET, gateway=first, first=first + 1, last=first)
    free = max(size - 1, 0)
    hosts = [host(i) for i in range(count)]
    if count <= free:
        assert len(assign_addresses(plan, hosts).addresses) == count
        return
    with pytest.raises(IpPlanExhausted) as caught:
        assign_addresses(plan, hosts, agency="contrail")
    message = str(caught.value)
    assert f"{count} host{'s' if count != 1 else ''} need" in message
    assert f"only {free} of the {max(size, 0)} addresses" in message


def test_exhaustion_message_names_counts_and_fix() -> None:
    plan = IpPlanSpec(network=NET, gateway=A("10.10.0.1"), first=A("10.10.0.10"), last=A("10.10.0.14"))
    hosts = [host(i) for i in range(7)]
    previous = {"host-0": A("10.10.0.12")}
    with pytest.raises(IpPlanExhausted) as caught:
        assign_addresses(plan, hosts, previous, agency="contrail")
    assert str(caught.value) == (
        'agency "contrail": the IP plan is too small: 6 hosts need a new address but only 4 of '
        "the 5 addresses "
        "in 10.10.0.10-10.10.0.14 are free (1 held by other hosts or reserved); widen ipPlan.range (or the "
        "cidr), or take hosts out of the scope"
    )


def test_fresh_plan_follows_inventory_path_in_natural_order() -> None:
    hosts = [host(10), host(2), host(1)]
    assert [h.moid for h in canonical_order(hosts)] == ["host-1", "host-2", "host-10"]
    plan = IpPlanSpec(network=NET, gateway=A("10.10.0.1"), first=A("10.10.0.10"), last=A("10.10.0.200"))
    assert addresses(plan, hosts) == {
        "host-1": A("10.10.0.10"),
        "host-2": A("10.10.0.11"),
        "host-10": A("10.10.0.12"),
    }


def test_new_host_takes_the_next_free_address_even_if_it_sorts_first() -> None:
    plan = IpPlanSpec(network=NET, gateway=A("10.10.0.1"), first=A("10.10.0.10"), last=A("10.10.0.200"))
    before = addresses(plan, [host(5), host(6)])
    after = assign_addresses(plan, [host(5), host(6), host(1)], before)
    assert after.get("host-1") is not None
    assert after.by_moid()["host-1"].address == A("10.10.0.12")
    assert after.by_moid()["host-1"].source is AddressSource.NEW
    assert after.by_moid()["host-5"].source is AddressSource.KEPT


def test_static_entries_win_and_are_never_given_to_others() -> None:
    plan = IpPlanSpec(
        network=NET,
        gateway=A("10.10.0.1"),
        first=A("10.10.0.10"),
        last=A("10.10.0.20"),
        static=(("esx-2.lab.local", A("10.10.0.10")), ("absent-host", A("10.10.0.11"))),
    )
    result = assign_addresses(plan, [host(1), host(2)], previous={"host-2": A("10.10.0.15")})
    by = result.by_moid()
    assert by["host-2"].address == A("10.10.0.10") and by["host-2"].source is AddressSource.STATIC
    assert by["host-1"].address == A("10.10.0.12")


def test_invalid_previous_addresses_are_replaced() -> None:
    plan = IpPlanSpec(network=NET, gateway=A("10.10.0.11"), first=A("10.10.0.10"), last=A("10.10.0.20"))
    previous = {
        "host-1": A("10.10.0.99"),
        "host-2": A("10.10.0.11"),
        "host-3": A("10.10.0.15"),
        "host-4": A("10.10.0.15"),
    }
    by = assign_addresses(plan, [host(1), host(2), host(3), host(4)], previous).by_moid()
    assert by["host-3"].address == A("10.10.0.15") and by["host-3"].source is AddressSource.KEPT  # first wins
    assert [by[m].address for m in ("host-1", "host-2", "host-4")] == [
        A("10.10.0.10"),
        A("10.10.0.12"),
        A("10.10.0.13"),
    ]


def test_static_only_plan_without_entry_for_a_host() -> None:
    plan = IpPlanSpec(static=(("host-1", A("192.168.1.5")),))
    assert addresses(plan, [host(1)]) == {"host-1": A("192.168.1.5")}
    with pytest.raises(IpPlanExhausted, match=r"^1 host in scope without an entry in ipPlan.addresses"):
        assign_addresses(plan, [host(1), host(2)])


def test_duplicate_moids_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="distinct moids"):
        assign_addresses(PLAN, [host(1), host(1)])


AGENCY = AgencySpec(
    name="contrail",
    agent_name="contrail-vm",
    ovf=OvfSource("http://127.0.0.1/c.ovf"),
    scope=(ScopeEntry("/DC0/host/DC0_C0", path="/DC0/host/DC0_C0"),),
    ip_plan=IpPlanSpec(network=NET, gateway=A("10.10.0.1"), first=A("10.10.0.10"), last=A("10.10.0.200")),
    per_host=(
        ("fabricIp", "{ip}"),
        ("prefixLen", "{prefix}"),
        ("netmask", "{netmask}"),
        ("gateway", "{gateway}"),
        ("hostname", "contrail-{host_short}"),
        ("where", "{cluster}/{host}/{host_moid} #{index} {cidr} net {network} {{literal}}"),
    ),
)


def test_per_host_templates_are_rendered() -> None:
    values = render_per_host(AGENCY, host(7, 1), A("10.10.0.11"))
    assert values == (
        OvfProperty("fabricIp", "10.10.0.11"),
        OvfProperty("prefixLen", "24"),
        OvfProperty("netmask", "255.255.255.0"),
        OvfProperty("gateway", "10.10.0.1"),
        OvfProperty("hostname", "contrail-esx-7"),
        OvfProperty("where", "DC0_C1/esx-7.lab.local/host-7 #11 10.10.0.11/24 net 10.10.0.0 {literal}"),
    )


def test_host_named_by_ip_keeps_a_usable_short_name() -> None:
    by_ip = ScopeHost("host-9", "192.168.0.9")
    values = dict((p.key, p.value) for p in render_per_host(AGENCY, by_ip, A("10.10.0.12")))
    assert values["hostname"] == "contrail-192-168-0-9"


def test_per_host_values_assign_then_render_for_every_host() -> None:
    values = per_host_values(AGENCY, [host(2), host(1)])
    assert [dict((p.key, p.value) for p in values[m])["fabricIp"] for m in ("host-1", "host-2")] == [
        "10.10.0.10",
        "10.10.0.11",
    ]


def test_a_provisioned_hook_is_answered_with_the_hosts_values_and_its_address() -> None:
    answer = answer_for(AGENCY, MoRef("VirtualMachine", "vm-3"), host(7, 1), A("10.10.0.11"), agent="agent-1")
    assert (answer.agency, answer.agent, answer.vm.value, answer.host, answer.address) == (
        "contrail",
        "agent-1",
        "vm-3",
        "host-7",
        A("10.10.0.11"),
    )
    assert dict(answer.properties)["fabricIp"] == "10.10.0.11"
    extra = dict(answer.extra_config)
    assert extra["guestinfo.fabricIp"] == "10.10.0.11" and extra["guestinfo.hostname"] == "contrail-esx-7"
    assert extra["guestinfo.agentvm.address"] == "10.10.0.11"
    assert extra["guestinfo.agentvm.agency"] == "contrail"
    assert len(extra) == len(AGENCY.per_host) + 2


def test_a_power_on_hook_is_answered_without_writing_anything() -> None:
    answer = answer_for(
        AGENCY, MoRef("VirtualMachine", "vm-3"), host(7), A("10.10.0.11"), state=HookState.POWERED_ON
    )
    assert answer.properties == () and answer.extra_config == () and answer.state is HookState.POWERED_ON


def test_without_an_ip_plan_no_address_is_recorded() -> None:
    no_plan = AgencySpec(
        name="hello",
        agent_name="hello",
        ovf=OvfSource("http://127.0.0.1/h.ovf"),
        scope=AGENCY.scope,
        per_host=(("name", "{host}"),),
    )
    answer = answer_for(no_plan, MoRef("VirtualMachine", "vm-3"), host(7), None)
    assert dict(answer.extra_config) == {"guestinfo.name": "esx-7.lab.local"}
