"""core.plan_text: the sentence of every typed change is rendered from its value, nothing stored in it."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.hostnet import (
    CreateDvPortGroup,
    CreatePortGroup,
    CreateVSwitch,
    RepairDvPortGroup,
    RepairPortGroup,
)
from agentvm.core.ipplan import AddressSource
from agentvm.core.plan import (
    AnswerHook,
    AssignAddress,
    Change,
    ChangeKind,
    CreateAgency,
    DestroyAgency,
    FieldChange,
    HeldCertificate,
    HostSetting,
    JoinSwitch,
    PrepareHostNetwork,
    PrepareSwitch,
    PurgeOrphans,
    RecordCertificate,
    RegisterExtension,
    ResolveIssue,
    SetCertificate,
    SetHostSettings,
    UninstallAgency,
    UnregisterExtension,
    UpdateAgency,
    UpdateExtension,
    UpgradeAgency,
)
from agentvm.core.plan_text import describe, describe_all
from agentvm.model.agency import HookState, Issue, IssueKind, MoRef
from agentvm.model.desired import DesiredState, ScopeHost
from agentvm.model.hostnet import HostNetworkOwned, SecurityPolicy
from agentvm.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {
    "AGENTVM_URL": "https://127.0.0.1:18989/sdk",
    "AGENTVM_USERNAME": "u",
    "AGENTVM_PASSWORD": "p",
    "AGENTVM_THUMBPRINT": "ab" * 32,
    "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:18080",
}
HOST = ScopeHost("host-21", "DC0_C0_H0", "/DC0/host/DC0_C0/DC0_C0_H0", "domain-c7")
VM = MoRef("VirtualMachine", "vm-42")


@pytest.fixture(scope="module")
def desired() -> DesiredState:
    return load_spec(EXAMPLES / "contrail.yaml", env=ENV)


def every_change(desired: DesiredState) -> list[Change]:
    """One change of each kind, as the planner makes them."""
    solution, agency = desired.solution, desired.agencies[0]
    when = datetime(2026, 1, 1, tzinfo=UTC)
    on = MoRef("HostSystem", "host-21")
    issue = Issue(7, IssueKind.VM_POWERED_OFF, when, "agency-1", agency.name, "agent-3", host=on)
    return [
        RegisterExtension(solution),
        UpdateExtension(solution, (FieldChange("version", "1.0", "1.1"), FieldChange("label", "a", "b"))),
        SetCertificate(solution.key, None, "/state/x", None),
        RecordCertificate(solution.key, "AB:CD", "/state/x/solution.crt"),
        SetHostSettings(HOST, agency.name, HostSetting("LocalDS_0", MoRef("Datastore", "datastore-1"))),
        CreateAgency(agency, 3),
        UpdateAgency(agency.name, ("scope", "ovfProperties")),
        UpgradeAgency(agency.name, "http://old/a.ovf", "http://new/a.ovf", ("agentName",)),
        AssignAddress(agency.name, HOST, IPv4Address("10.10.0.10"), AddressSource.NEW),
        AnswerHook(agency.name, "agent-3", VM, HookState.PROVISIONED, HOST.moid, HOST),
        ResolveIssue(agency.name, issue, HOST),
        PurgeOrphans(agency.name),
        UninstallAgency(agency.name),
        DestroyAgency(agency.name),
        UnregisterExtension(solution.key),
    ]


H21 = "host-21 (/DC0/host/DC0_C0/DC0_C0_H0)"
TRUSTING = SecurityPolicy(promiscuous=True, forged_transmits=True)


def host_network_changes() -> list[Change]:
    return [
        PrepareSwitch(
            "contrail", CreateDvPortGroup("dvs-9", "trunk", ((1, 4094),), TRUSTING), "dvs-9 (DSwitch0)"
        ),
        PrepareSwitch(
            "contrail",
            RepairDvPortGroup("dvportgroup-3", "trunk", ((1, 4094),), SecurityPolicy(), "VLANs 1-100"),
            "dvs-9 (DSwitch0)",
        ),
        JoinSwitch("contrail", "dvs-9", "dvs-9 (DSwitch0)", (("host-21", H21, "vmnic2"),)),
        PrepareHostNetwork(
            "contrail",
            "host-21",
            H21,
            (
                CreateVSwitch("host-21", "vSwitch1", "vmnic1"),
                CreatePortGroup("host-21", "fabric", "vSwitch1", 12, SecurityPolicy()),
            ),
            HostNetworkOwned(frozenset({"vSwitch1"}), frozenset({"fabric"})),
        ),
        PrepareHostNetwork(
            "contrail",
            "host-21",
            H21,
            (RepairPortGroup("host-21", "fabric", "vSwitch1", 12, TRUSTING, "VLAN 7"),),
        ),
    ]


def test_host_network_changes_say_what_they_create_where_and_what_they_repair() -> None:
    changes = host_network_changes()
    assert describe_all(changes) == [
        "contrail: create DV port group trunk on distributed switch dvs-9 (DSwitch0): VLANs 1-4094, "
        "promiscuous true, forgedTransmits true",
        "contrail: repair DV port group trunk on distributed switch dvs-9 (DSwitch0): VLANs 1-4094 "
        "(was VLANs 1-100)",
        f"contrail: add 1 host to distributed switch dvs-9 (DSwitch0): {H21} with vmnic2",
        f"contrail: on {H21}: create vSwitch vSwitch1 on vmnic1; create port group fabric on vSwitch "
        "vSwitch1, VLAN 12",
        f"contrail: on {H21}: repair port group fabric on vSwitch vSwitch1: VLAN 12, promiscuous true, "
        "forgedTransmits true (was VLAN 7)",
    ]
    assert [(c.target, c.agency, c.host) for c in changes] == [
        ("dvs-9", "contrail", None),
        ("dvportgroup-3", "contrail", None),
        ("dvs-9", "contrail", None),
        ("host-21", "contrail", "host-21"),
        ("host-21", "contrail", "host-21"),
    ]


def test_one_class_per_kind_and_every_one_renders_one_line(desired: DesiredState) -> None:
    one_each = [host_network_changes()[i] for i in (0, 2, 3)]
    assert sorted(c.kind.value for c in every_change(desired) + one_each) == sorted(
        k.value for k in ChangeKind
    )
    changes = every_change(desired) + host_network_changes()
    for change in changes:
        text = describe(change)
        assert text and "\n" not in text


def test_the_sentences_read_as_before(desired: DesiredState) -> None:
    lines = describe_all(every_change(desired))
    assert lines[:2] == [
        "register extension org.tungsten.agentvm version 1.0.0",
        "update extension org.tungsten.agentvm: version 1.0 → 1.1, label 'a' → 'b'",
    ]
    assert lines[2] == (
        "set the login certificate of extension org.tungsten.agentvm to a new one, generated into /state/x "
        "(the spec names none)"
    )
    assert lines[4] == "set AgentVM settings on host-21 (/DC0/host/DC0_C0/DC0_C0_H0): datastore LocalDS_0"
    assert lines[6:10] == [
        "update agency contrail: scope, ovfProperties changed",
        "upgrade agency contrail: http://old/a.ovf → http://new/a.ovf (also agentName)",
        "contrail: host-21 (/DC0/host/DC0_C0/DC0_C0_H0) gets address 10.10.0.10",
        "contrail: answer the pending provisioned hook of host-21 (/DC0/host/DC0_C0/DC0_C0_H0)",
    ]
    assert lines[10].startswith(
        "contrail: resolve VmPoweredOff #7 on host host-21 (/DC0/host/DC0_C0/DC0_C0_H0): "
    )
    assert lines[11:] == [
        "remove the agent VMs of agency contrail, whose engine state was lost",
        "uninstall agency contrail: remove every agent VM",
        "destroy agency contrail",
        "unregister extension org.tungsten.agentvm",
    ]
    assert describe_all([]) == ["no changes"]


def test_destroys_changes_name_their_agency_or_extension(desired: DesiredState) -> None:
    name, key = desired.agencies[0].name, desired.solution.key
    for change in (PurgeOrphans(name), UninstallAgency(name), DestroyAgency(name)):
        assert (change.target, change.agency, change.host) == ("contrail", "contrail", None)
    unregister = UnregisterExtension(key)
    assert (unregister.target, unregister.agency, unregister.host) == ("org.tungsten.agentvm", None, None)


def test_a_spec_certificate_names_whose_logins_fail(desired: DesiredState) -> None:
    held = HeldCertificate("ci-1", "12:34", "/home/ci/.local/state/agentvm/solution.crt", generated=True)
    change = SetCertificate(desired.solution.key, "/etc/agentvm/cert.pem", "/state/x", None, held)
    assert describe(change) == (
        "set the login certificate of extension org.tungsten.agentvm to /etc/agentvm/cert.pem, replacing "
        "the one generated on ci-1 (SHA-1 12:34): logins with that one (e.g. an agentvm run there) fail "
        "from then on"
    )
    kept = SetCertificate(desired.solution.key, None, "/state/x", "/state/x/solution.crt")
    assert (
        describe(kept)
        == "set the login certificate of extension org.tungsten.agentvm to /state/x/solution.crt"
    )


ADDRESSES = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)


@given(ADDRESSES, st.none() | ADDRESSES, st.sampled_from([AddressSource.NEW, AddressSource.STATIC]))
def test_an_address_line_says_what_the_host_had_and_why(
    address: IPv4Address, previous: IPv4Address | None, source: AddressSource
) -> None:
    text = describe(AssignAddress("hello", HOST, address, source, previous))
    assert text.startswith("hello: host-21 (/DC0/host/DC0_C0/DC0_C0_H0) ")
    if previous is None:
        assert f"gets address {address}" in text
    else:
        assert f"address {previous} → {address}" in text
    assert text.endswith(" (ipPlan.addresses)") == (source is AddressSource.STATIC)
    assert text.endswith("(the old one is no longer in the plan)") == (
        previous is not None and source is AddressSource.NEW
    )


@given(st.sampled_from([None, "LocalDS_0"]), st.sampled_from([None, "VM Network"]), st.booleans())
def test_host_settings_name_what_is_filled_in_found_or_not(
    datastore: str | None, network: str | None, found: bool
) -> None:
    ref = MoRef("Datastore", "datastore-1") if found else None
    change = SetHostSettings(
        HOST,
        "hello",
        HostSetting(datastore, ref) if datastore else None,
        HostSetting(network, None) if network else None,
    )
    parts = [f"datastore {datastore}"] if datastore else []
    parts += [f"network {network}"] if network else []
    assert (
        describe(change)
        == f"set AgentVM settings on host-21 (/DC0/host/DC0_C0/DC0_C0_H0): {', '.join(parts)}"
    )
