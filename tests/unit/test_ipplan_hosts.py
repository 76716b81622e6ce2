"""``ipPlan.addresses`` keys must name hosts in the agency's scope; a typo is an error with "did you mean".

Before, an entry for ``DC0_C0_H9`` (a typo of H0) was silently ignored: H0 got a dynamic address instead of
the one its entry gave it. The check needs the inventory, so it runs where the plan meets the hosts
(``core.plan.make_plan``), before any change.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.ipplan import UnknownIpPlanHost, check_static_hosts
from agentvm.core.plan import make_plan
from agentvm.model.desired import IpPlanSpec, ObservedState, ScopeHost
from agentvm.model.errors import ConfigurationError
from agentvm.spec import load_spec_text

A = IPv4Address
SPEC = """\
solution: {key: org.example.t, version: "1.0"}
agencies:
  - name: contrail
    ovf: http://127.0.0.1/c.ovf
    scope: [/DC0/host/DC0_C0]
    ipPlan:
      cidr: 10.10.0.0/24
      addresses:
        KEY: 10.10.0.50
    perHost: {fabricIp: "{ip}"}
"""


def hosts(count: int = 3) -> tuple[ScopeHost, ...]:
    return tuple(
        ScopeHost(
            moid=f"host-{20 + i}",
            name=f"DC0_C0_H{i}",
            path=f"/DC0/host/DC0_C0/DC0_C0_H{i}",
            cluster_moid="domain-c7",
            cluster_path="/DC0/host/DC0_C0",
            cluster_name="DC0_C0",
        )
        for i in range(count)
    )


def plan_for(key: str, scope: tuple[ScopeHost, ...]) -> dict[str, IPv4Address]:
    desired = load_spec_text(SPEC.replace("KEY", key), "c.yaml", env={})
    plan = make_plan(desired, ObservedState(hosts={"contrail": scope}))
    return {a.host.name: a.address for a in plan.addresses["contrail"].addresses}


@pytest.mark.parametrize(
    "key",
    ["DC0_C0_H1", "/DC0/host/DC0_C0/DC0_C0_H1", "host-21", "host/DC0_C0/DC0_C0_H1", "HostSystem:host-21"],
)
def test_entries_by_name_path_or_moid_are_used(key: str) -> None:
    assert plan_for(key, hosts())["DC0_C0_H1"] == A("10.10.0.50")


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("DC0_C0_H9", "DC0_C0_H0"),
        ("dc0_c0_h1", "DC0_C0_H1"),
        ("/DC0/host/DC0_C1/DC0_C0_H2", "/DC0/host/DC0_C0/DC0_C0_H2"),
        ("host-29", "host-20"),
    ],
)
def test_entry_for_a_host_not_in_scope_says_did_you_mean(key: str, closest: str) -> None:
    with pytest.raises(UnknownIpPlanHost) as caught:
        plan_for(key, hosts())
    assert str(caught.value) == (
        f'agency "contrail": ipPlan.addresses: "{key}" is not a host in the scope; did you mean "{closest}"? '
        "Correct the entry or remove it"
    )
    assert isinstance(caught.value, ConfigurationError)  # exit 2, nothing changed


def test_several_unknown_entries_are_named_together() -> None:
    plan = IpPlanSpec(
        network=IPv4Network("10.10.0.0/24"),
        static=(("DC0_C0_H7", A("10.10.0.7")), ("DC0_C0_H8", A("10.10.0.8")), ("DC0_C0_H0", A("10.10.0.9"))),
    )
    with pytest.raises(UnknownIpPlanHost) as caught:
        check_static_hosts(plan, hosts(), agency="contrail")
    assert str(caught.value) == (
        'agency "contrail": ipPlan.addresses: "DC0_C0_H7" and "DC0_C0_H8" are not hosts in the scope; '
        'did you mean "DC0_C0_H0"? Correct the entries or remove them'
    )


def test_entry_when_the_scope_has_no_hosts() -> None:
    with pytest.raises(UnknownIpPlanHost) as caught:
        plan_for("DC0_C0_H0", ())
    assert str(caught.value) == (
        'agency "contrail": ipPlan.addresses: "DC0_C0_H0" is not a host in the scope, which has no hosts; '
        "check agencies[].scope, or remove the entry"
    )


def test_the_check_runs_before_any_change_is_planned() -> None:
    desired = load_spec_text(SPEC.replace("KEY", "DC0_C0_H9"), "c.yaml", env={})
    agency = desired.agencies[0]
    assert agency.ip_plan is not None
    # the same plan without the typo plans changes; with it, make_plan returns nothing at all
    fixed = dataclasses.replace(agency.ip_plan, static=(("DC0_C0_H0", A("10.10.0.50")),))
    good = dataclasses.replace(desired, agencies=(dataclasses.replace(agency, ip_plan=fixed),))
    assert make_plan(good, ObservedState(hosts={"contrail": hosts()})).changes
    with pytest.raises(UnknownIpPlanHost):
        make_plan(desired, ObservedState(hosts={"contrail": hosts()}))


# vCenter names hold no "/" (it escapes it as %2f); keys may hold one (paths, paths under the datacenter)
host_names_st = st.text(alphabet="abcDC0_-H123", min_size=1, max_size=12)
names = st.text(alphabet="abcDC0_-/H123", min_size=1, max_size=12)


@settings(max_examples=100)
@given(st.lists(host_names_st, min_size=1, max_size=8, unique=True), st.data())
def test_a_key_is_accepted_exactly_when_it_names_a_host(host_names: list[str], data: st.DataObject) -> None:
    scope = [ScopeHost(moid=f"host-{i}", name=n, path=f"/DC0/host/C0/{n}") for i, n in enumerate(host_names)]
    identifiers = {x for h in scope for x in (h.moid, h.name, h.path, f"host/C0/{h.name}")}
    key = data.draw(st.one_of(st.sampled_from(sorted(identifiers)), names))
    plan = IpPlanSpec(static=((key, A("10.0.0.1")),))
    if key in identifiers:
        check_static_hosts(plan, scope)
    else:
        with pytest.raises(UnknownIpPlanHost) as caught:
            check_static_hosts(plan, scope)
        guess = str(caught.value).split("did you mean ")[1].split("?")[0].strip('"')
        assert f'"{key}" is not a host in the scope' in str(caught.value)
        assert guess in identifiers  # the suggestion is always a real host


def test_a_key_naming_several_hosts_is_an_error_listing_them() -> None:
    with pytest.raises(UnknownIpPlanHost) as caught:
        plan_for('"DC0_C0_H*"', hosts(2))
    assert str(caught.value) == (
        'agency "contrail": ipPlan.addresses: "DC0_C0_H*" names 2 hosts in the scope '
        "(/DC0/host/DC0_C0/DC0_C0_H0, /DC0/host/DC0_C0/DC0_C0_H1); an address is for one host: use one of "
        "their inventory paths, e.g. /DC0/host/DC0_C0/DC0_C0_H0"
    )
