"""An agency's ``hostNetwork`` section: read into the model, and every mistake named with its fix."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.model.hostnet import AgentNics, FabricSpec, HostNetworkSpec, SecurityPolicy, TrunkSpec
from agentvm.spec import SpecError, load_spec_text
from tests.support.specs import GOOD

SECTION = """\
    hostNetwork:
      fabric:
        pnic: vmnic1
        vswitch: vSwitch1
        create: true
        portGroup: contrail-fabric
        vlan: 12
      trunk:
        dvs: DSwitch0
        join: true
        uplink: vmnic2
        portGroup: contrail-trunk
        vlans: 1-4094
        promiscuous: true
        forgedTransmits: true
      agentNics:
        fabric: fabric-net
        trunk: trunk-net
"""


def with_section(section: str) -> str:
    return GOOD + section


def load(section: str) -> HostNetworkSpec | None:
    spec = load_spec_text(with_section(section), "contrail.yaml", env={"PW": "x"})
    return spec.agencies[0].host_network


def problems(section: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(with_section(section), "contrail.yaml", env={"PW": "x"})
    return [str(p) for p in caught.value.problems]


def test_the_whole_section_is_read_into_the_model() -> None:
    assert load(SECTION) == HostNetworkSpec(
        fabric=FabricSpec("vmnic1", "vSwitch1", "contrail-fabric", 12, True, SecurityPolicy()),
        trunk=TrunkSpec(
            "DSwitch0", "contrail-trunk", ((1, 4094),), True, "vmnic2", SecurityPolicy(True, True, None)
        ),
        agent_nics=AgentNics("fabric-net", "trunk-net"),
    )


def test_without_the_section_there_is_no_host_network_and_defaults_fill_a_short_one() -> None:
    assert load("") is None
    short = "    hostNetwork:\n      trunk: {dvs: DSwitch0, portGroup: t}\n"
    assert load(short) == HostNetworkSpec(trunk=TrunkSpec("DSwitch0", "t", ((1, 4094),)))


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("100", ((100, 100),)),
        ('"10,20-30"', ((10, 10), (20, 30))),
        ("[1-100, 50-200, 300]", ((1, 200), (300, 300))),
        ("[5, 6, 7-9]", ((5, 9),)),
    ],
)
def test_trunk_vlans_are_read_sorted_and_merged(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    network = load(f"    hostNetwork:\n      trunk: {{dvs: D, portGroup: t, vlans: {text}}}\n")
    assert network is not None and network.trunk is not None
    assert network.trunk.vlans == ranges


@given(st.lists(st.tuples(st.integers(1, 4094), st.integers(0, 200)), min_size=1, max_size=6))
def test_any_valid_ranges_read_back_as_exactly_the_vlans_written(items: list[tuple[int, int]]) -> None:
    ranges = [(a, min(4094, a + n)) for a, n in items]
    text = ", ".join(f"{a}-{b}" for a, b in ranges)
    network = load(f"    hostNetwork:\n      trunk: {{dvs: D, portGroup: t, vlans: [{text}]}}\n")
    assert network is not None and network.trunk is not None
    read = network.trunk.vlans
    assert {v for a, b in read for v in range(a, b + 1)} == {v for a, b in ranges for v in range(a, b + 1)}
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(read))  # merged, sorted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("vlan: 12", "vlan: 4095"),
            "contrail.yaml:26: agencies[0].hostNetwork.fabric.vlan: is 4095 (all VLANs, guest tagging); the "
            "fabric is an access network: give its VLAN id, or 0 for untagged",
        ),
        (
            ("vlan: 12", "vlan: 5000"),
            "contrail.yaml:26: agencies[0].hostNetwork.fabric.vlan: is 5000; a VLAN id is 0 (untagged) to "
            "4094",
        ),
        (
            ("vlan: 12", "vlan: blue"),
            "contrail.yaml:26: agencies[0].hostNetwork.fabric.vlan: must be a VLAN id from 0 (untagged) to "
            "4094, not 'blue'",
        ),
        (
            ("vlans: 1-4094", "vlans: 1-4095"),
            "contrail.yaml:32: agencies[0].hostNetwork.trunk.vlans: has 1-4095; trunk VLANs are 1-4094 (4095 "
            "is never a trunk VLAN)",
        ),
        (
            ("vlans: 1-4094", "vlans: 0-10"),
            "contrail.yaml:32: agencies[0].hostNetwork.trunk.vlans: has 0-10; trunk VLANs are 1-4094",
        ),
        (
            ("vlans: 1-4094", "vlans: 300-200"),
            "contrail.yaml:32: agencies[0].hostNetwork.trunk.vlans: has 300-200; write a range low to high: "
            "200-300",
        ),
        (
            ("vlans: 1-4094", "vlans: 1-4094,x"),
            'contrail.yaml:32: agencies[0].hostNetwork.trunk.vlans: has "x"; write VLANs like 1-4094 or '
            "10,20-30",
        ),
        (
            ("pnic: vmnic1", "pnic: eth1"),
            'contrail.yaml:22: agencies[0].hostNetwork.fabric.pnic: is "eth1"; name a physical NIC as ESXi '
            "does, e.g. vmnic1",
        ),
        (
            ("uplink: vmnic2", "uplink: vmnic1"),
            "contrail.yaml:30: agencies[0].hostNetwork.trunk.uplink: is vmnic1, the fabric's physical NIC "
            "too (hostNetwork.fabric.pnic); a NIC rides on one switch: give the distributed switch "
            "another NIC",
        ),
        (
            ("        uplink: vmnic2\n", ""),
            "contrail.yaml:27: agencies[0].hostNetwork.trunk.uplink: is missing; join: true adds each host "
            "that is not a member with this physical NIC as its uplink: add it, e.g. uplink: vmnic2",
        ),
        (
            ("        trunk: trunk-net\n", "        trunk: fabric-net\n"),
            'contrail.yaml:37: agencies[0].hostNetwork.agentNics.trunk: is "fabric-net", the fabric\'s OVF '
            "network too; each goes on its own network",
        ),
        (
            ("portGroup: contrail-fabric", "portGrup: contrail-fabric"),
            "contrail.yaml:25: agencies[0].hostNetwork.fabric.portGrup: unknown key; did you mean "
            '"portGroup"?',
        ),
        (
            ("create: true", "create: maybe"),
            'contrail.yaml:24: agencies[0].hostNetwork.fabric.create: must be true or false, not "maybe"',
        ),
    ],
)
def test_each_mistake_is_named_with_its_fix(change: tuple[str, str], message: str) -> None:
    assert message in problems(SECTION.replace(*change))


def test_a_missing_required_key_says_what_to_add() -> None:
    assert problems("    hostNetwork:\n      fabric: {pnic: vmnic1, portGroup: p}\n") == [
        "contrail.yaml:21: agencies[0].hostNetwork.fabric.vswitch: is missing; add it, e.g. vswitch: vSwitch1"
    ]


def test_agent_nics_need_the_part_they_wire_to_and_the_hook() -> None:
    no_trunk = "    hostNetwork:\n      fabric: {pnic: vmnic1, vswitch: v, portGroup: p}\n"
    no_trunk += "      agentNics: {trunk: t}\n"
    assert problems(no_trunk) == [
        "contrail.yaml:22: agencies[0].hostNetwork.agentNics.trunk: names the OVF network to wire to the "
        "trunk, but there is no hostNetwork.trunk; add it, or remove agentNics.trunk"
    ]
    no_hook = with_section(SECTION).replace(
        '    perHost:\n      fabricIp: "{ip}"\n', "    hooks: {provisioned: false}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec_text(no_hook, "contrail.yaml", env={"PW": "x"})
    assert [str(p) for p in caught.value.problems] == [
        "contrail.yaml:34: agencies[0].hostNetwork.agentNics: wires the agent VM's NICs through the "
        "provisioned hook, which hooks.provisioned: false turns off; turn the hook on, or remove agentNics"
    ]


def test_an_empty_section_is_an_error_with_an_example() -> None:
    assert problems("    hostNetwork: {}\n") == [
        "contrail.yaml:20: agencies[0].hostNetwork: is empty; describe the fabric or the trunk, e.g. "
        "{fabric: {pnic: vmnic1, vswitch: vSwitch1, portGroup: contrail-fabric}}"
    ]
