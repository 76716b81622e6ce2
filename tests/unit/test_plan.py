"""core.plan: desired vs observed → ordered changes with one-line descriptions, or "no changes"."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agentvm.core.ipplan import IpPlanExhausted
from agentvm.core.plan import ChangeKind, agency_view, make_plan
from agentvm.core.plan_text import describe, describe_all
from agentvm.model.desired import (
    DesiredState,
    ExtensionState,
    HostAgentSettings,
    ObservedState,
    ScopeHost,
)
from agentvm.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {
    "AGENTVM_URL": "https://127.0.0.1:18989/sdk",
    "AGENTVM_USERNAME": "u",
    "AGENTVM_PASSWORD": "p",
    "AGENTVM_THUMBPRINT": "ab" * 32,
    "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:18080",
}
A = IPv4Address


@pytest.fixture
def desired() -> DesiredState:
    return load_spec(EXAMPLES / "contrail.yaml", env=ENV)


def lab_hosts(per_cluster: int = 3) -> tuple[ScopeHost, ...]:
    return tuple(
        ScopeHost(
            moid=f"host-{10 * c + h}",
            name=f"DC0_C{c}_H{h}",
            path=f"/DC0/host/DC0_C{c}/DC0_C{c}_H{h}",
            cluster_moid=f"domain-c{c}",
            cluster_path=f"/DC0/host/DC0_C{c}",
            cluster_name=f"DC0_C{c}",
        )
        for c in (0, 1)
        for h in range(per_cluster)
    )


def converged(desired: DesiredState, hosts: tuple[ScopeHost, ...]) -> ObservedState:
    """What vCenter looks like after a successful apply of ``desired``."""
    solution = desired.solution
    agency = desired.agencies[0]
    fresh = make_plan(desired, ObservedState(hosts={agency.name: hosts}))
    addresses = {h.host.moid: h.address for h in fresh.addresses[agency.name].addresses}
    return ObservedState(
        extension=ExtensionState(solution.version, solution.label, solution.summary, solution.company),
        host_settings={h.moid: HostAgentSettings("LocalDS_0", "VM Network") for h in hosts},
        agencies={agency.name: agency_view(agency)},
        hosts={agency.name: hosts},
        addresses={agency.name: addresses},
    )


def test_fresh_vcenter_gets_everything_in_order(desired: DesiredState) -> None:
    plan = make_plan(desired, ObservedState(hosts={"contrail": lab_hosts()}))
    kinds = [c.kind for c in plan.changes]
    assert (
        kinds
        == [ChangeKind.REGISTER_EXTENSION]
        + [ChangeKind.SET_HOST_SETTINGS] * 6
        + [ChangeKind.CREATE_AGENCY]
        + [ChangeKind.ASSIGN_ADDRESS] * 6
    )
    lines = describe_all(plan.changes)
    assert lines[0] == "register extension org.tungsten.agentvm version 1.0.0"
    assert lines[1] == (
        "set AgentVM settings on host-0 (/DC0/host/DC0_C0/DC0_C0_H0): datastore LocalDS_0, network VM Network"
    )
    assert lines[7] == (
        "create agency contrail: contrail-vm on 6 hosts of /DC0/host/DC0_C0, /DC0/host/DC0_C1 "
        "from http://127.0.0.1:18080/contrail-vm/contrail-vm.ovf"
    )
    assert lines[8] == "contrail: host-0 (/DC0/host/DC0_C0/DC0_C0_H0) gets address 10.10.0.10"
    assert lines[13] == "contrail: host-12 (/DC0/host/DC0_C1/DC0_C1_H2) gets address 10.10.0.15"


def test_second_apply_with_nothing_changed_plans_nothing(desired: DesiredState) -> None:
    plan = make_plan(desired, converged(desired, lab_hosts()))
    assert plan.empty
    assert describe_all(plan.changes) == ["no changes"]


def test_added_host_gets_the_next_address_and_keeps_the_others(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    new = ScopeHost(
        "host-3", "DC0_C0_H3", "/DC0/host/DC0_C0/DC0_C0_H3", "domain-c0", "/DC0/host/DC0_C0", "DC0_C0"
    )
    grown = dataclasses.replace(observed, hosts={"contrail": (*lab_hosts(), new)})
    plan = make_plan(desired, grown)
    assert describe_all(plan.changes) == [
        "set AgentVM settings on host-3 (/DC0/host/DC0_C0/DC0_C0_H3): datastore LocalDS_0, "
        "network VM Network",
        "contrail: host-3 (/DC0/host/DC0_C0/DC0_C0_H3) gets address 10.10.0.16",
    ]


def test_changed_ovf_url_is_an_upgrade(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    old = dataclasses.replace(
        observed.agencies["contrail"], ovf_url="http://127.0.0.1:18080/contrail-vm/old.ovf"
    )
    plan = make_plan(desired, dataclasses.replace(observed, agencies={"contrail": old}))
    assert [c.kind for c in plan.changes] == [ChangeKind.UPGRADE_AGENCY]
    assert describe_all(plan.changes) == [
        "upgrade agency contrail: http://127.0.0.1:18080/contrail-vm/old.ovf → "
        "http://127.0.0.1:18080/contrail-vm/contrail-vm.ovf"
    ]


def test_other_agency_differences_are_an_update_naming_the_fields(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    old = dataclasses.replace(observed.agencies["contrail"], scope=("/DC0/host/DC0_C0",), ovf_properties=())
    plan = make_plan(desired, dataclasses.replace(observed, agencies={"contrail": old}))
    assert describe_all(plan.changes) == ["update agency contrail: scope, ovfProperties changed"]


def test_order_of_observed_lists_does_not_matter(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    agency = observed.agencies["contrail"]
    shuffled = dataclasses.replace(
        agency, scope=tuple(reversed(agency.scope)), ovf_properties=agency.ovf_properties[::-1]
    )
    assert make_plan(desired, dataclasses.replace(observed, agencies={"contrail": shuffled})).empty


def test_extension_version_change_is_an_update(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    assert observed.extension is not None
    older = dataclasses.replace(observed, extension=dataclasses.replace(observed.extension, version="0.9.0"))
    assert describe_all(make_plan(desired, older).changes) == [
        "update extension org.tungsten.agentvm: version 0.9.0 → 1.0.0"
    ]


def test_host_settings_set_by_an_admin_are_never_overwritten(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    settings = dict(observed.host_settings)
    settings["host-0"] = HostAgentSettings("OtherDS", None)
    plan = make_plan(desired, dataclasses.replace(observed, host_settings=settings))
    assert describe_all(plan.changes) == [
        "set AgentVM settings on host-0 (/DC0/host/DC0_C0/DC0_C0_H0): network VM Network"
    ]


def test_use_host_settings_without_them_is_a_warning_not_a_change(desired: DesiredState) -> None:
    agency = dataclasses.replace(
        desired.agencies[0],
        datastore=dataclasses.replace(desired.agencies[0].datastore, use_host_settings=True),
    )
    state = dataclasses.replace(desired, agencies=(agency,))
    observed = converged(state, lab_hosts(1))
    observed = dataclasses.replace(observed, host_settings={})
    plan = make_plan(state, observed)
    assert [describe(c) for c in plan.changes if c.kind is ChangeKind.SET_HOST_SETTINGS] == [
        "set AgentVM settings on host-0 (/DC0/host/DC0_C0/DC0_C0_H0): network VM Network",
        "set AgentVM settings on host-10 (/DC0/host/DC0_C1/DC0_C1_H0): network VM Network",
    ]
    assert plan.warnings[0] == (
        "host-0 (/DC0/host/DC0_C0/DC0_C0_H0) has no AgentVM datastore and agency contrail uses the host's "
        "settings; set it in vCenter (host > Configure > Agent VM Settings) or name a datastore in the spec"
    )


def test_address_outside_a_narrowed_range_is_replaced(desired: DesiredState) -> None:
    observed = converged(desired, lab_hosts())
    addresses = dict(observed.addresses["contrail"])
    addresses["host-1"] = A("10.10.0.250")
    plan = make_plan(desired, dataclasses.replace(observed, addresses={"contrail": addresses}))
    assert describe_all(plan.changes) == [
        "contrail: host-1 (/DC0/host/DC0_C0/DC0_C0_H1) address 10.10.0.250 → 10.10.0.11 "
        "(the old one is no longer in the plan)"
    ]


def test_plan_too_small_fails_before_any_change(desired: DesiredState) -> None:
    agency = desired.agencies[0]
    assert agency.ip_plan is not None
    tiny = dataclasses.replace(agency.ip_plan, last=A("10.10.0.13"))
    state = dataclasses.replace(desired, agencies=(dataclasses.replace(agency, ip_plan=tiny),))
    with pytest.raises(IpPlanExhausted, match=r"6 hosts need a new address but only 4 of the 4 addresses"):
        make_plan(state, ObservedState(hosts={"contrail": lab_hosts()}))
