"""Everything vCenter or EAM would refuse (or mangle) for its shape is refused when the spec loads.

Before, ``agentName: bad/name`` loaded, and the engine then left a VM behind at every retry; a control
character in an OVF property loaded, and apply registered the extension and set six hosts' AgentVM settings
before EAM refused the agency. Each case here is refused with the field and the fix, before anything runs.
"""

from __future__ import annotations

import pytest

from agentvm.spec import SpecError, load_spec_text

GOOD = """\
solution:
  key: org.example.t
  label: Example agents
  version: "1.0"
agencies:
  - name: contrail
    agentName: contrail-vm
    ovf: http://127.0.0.1/c.ovf
    scope: [/DC0/host/DC0_C0]
    ovfProperties:
      dns: 10.0.0.2
    ipPlan: {cidr: 10.10.0.0/24, gateway: 10.10.0.1}
    perHost:
      fabricIp: "{ip}"
"""


def one_problem(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "c.yaml", env=env or {})
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 1, found
    return found[0]


def test_the_base_file_of_these_tests_is_valid() -> None:
    agency = load_spec_text(GOOD, "c.yaml", env={}).agencies[0]
    assert agency.agent_name == "contrail-vm"


# ------------------------------------------------------------------------------------ agent VM names


@pytest.mark.parametrize(
    ("name", "char", "escaped", "fixed"),
    [
        ("bad/name", "/", "%2f", "bad-name"),
        ("bad\\\\name", "\\", "%5c", "bad-name"),
        ("50%", "%", "%25", "50-"),
    ],
)
def test_agent_name_with_a_character_vcenter_escapes(name: str, char: str, escaped: str, fixed: str) -> None:
    shown = name.replace("\\\\", "\\")
    assert one_problem(GOOD.replace("agentName: contrail-vm", f'agentName: "{name}"')) == (
        f'c.yaml:7: agencies[0].agentName: "{shown}" has "{char}", which vCenter stores as "{escaped}" in '
        f"VM names, so agentvm and EAM would not find the agent VMs by name; write e.g. {fixed}"
    )


def test_agency_name_is_the_agent_name_when_there_is_none() -> None:
    text = GOOD.replace("    agentName: contrail-vm\n", "").replace("name: contrail", "name: a/b")
    assert one_problem(text) == (
        'c.yaml:6: agencies[0].name: "a/b" has "/", which vCenter stores as "%2f" in VM names, so agentvm '
        "and EAM would not find the agent VMs by name; write e.g. a-b, or add an agentName"
    )


@pytest.mark.parametrize("value", ['" contrail-vm"', '"contrail-vm "', '"\\tcontrail-vm"'])
def test_agent_name_with_leading_or_trailing_blanks(value: str) -> None:
    assert one_problem(GOOD.replace("agentName: contrail-vm", f"agentName: {value}")) == (
        "c.yaml:7: agencies[0].agentName: starts or ends with a blank, which vCenter would keep in the VM "
        'names; write "contrail-vm"'
    )


@pytest.mark.parametrize(
    ("escape", "code"), [("\\t", "0009"), ("\\n", "000A"), ("\\x85", "0085"), ("\\u200b", "200B")]
)
def test_agent_name_with_a_control_or_invisible_character(escape: str, code: str) -> None:
    assert one_problem(GOOD.replace("agentName: contrail-vm", f'agentName: "contrail{escape}vm"')) == (
        f"c.yaml:7: agencies[0].agentName: has the control character U+{code}; remove it"
    )


def test_agent_name_of_seventy_characters_is_fine_and_seventy_one_is_not() -> None:
    load_spec_text(GOOD.replace("agentName: contrail-vm", f"agentName: {'a' * 70}"), "c.yaml", env={})
    assert one_problem(GOOD.replace("agentName: contrail-vm", f"agentName: {'a' * 71}")) == (
        "c.yaml:7: agencies[0].agentName: is 71 characters; EAM allows 70; shorten it"
    )


def test_non_ascii_agent_names_are_fine() -> None:
    text = GOOD.replace("agentName: contrail-vm", "agentName: vRouter-Zürich")
    assert load_spec_text(text, "c.yaml", env={}).agencies[0].agent_name == "vRouter-Zürich"


# ------------------------------------------------------------------------------------ agency names


def test_agency_name_with_leading_blank() -> None:
    assert one_problem(GOOD.replace("name: contrail", 'name: " contrail"')) == (
        'c.yaml:6: agencies[0].name: starts or ends with a blank, which EAM would keep; write "contrail"'
    )


def test_agency_name_with_a_control_character() -> None:
    assert one_problem(GOOD.replace("name: contrail", 'name: "con\\ttrail"')) == (
        "c.yaml:6: agencies[0].name: has the control character U+0009; remove it"
    )


def test_agency_name_of_81_characters() -> None:
    assert one_problem(GOOD.replace("name: contrail", f"name: {'a' * 81}")) == (
        "c.yaml:6: agencies[0].name: is 81 characters; keep it to 80"
    )


# ------------------------------------------------------------------------------------ the extension


def test_extension_label_with_a_control_character() -> None:
    assert one_problem(GOOD.replace("label: Example agents", 'label: "Example\\x85agents"')) == (
        "c.yaml:3: solution.label: has the control character U+0085; remove it"
    )


def test_extension_label_too_long() -> None:
    assert one_problem(GOOD.replace("label: Example agents", f"label: {'L' * 256}")) == (
        "c.yaml:3: solution.label: is 256 characters; keep it to 255"
    )


def test_extension_summary_may_have_lines_but_not_other_controls() -> None:
    text = GOOD.replace("  label: Example agents\n", "  label: x\n  summary: |\n    one\n    two\n")
    assert load_spec_text(text, "c.yaml", env={}).solution.summary == "one\ntwo"
    text = GOOD.replace("  label: Example agents\n", '  label: x\n  summary: "a\\x9bb"\n')
    assert one_problem(text) == "c.yaml:4: solution.summary: has the control character U+009B; remove it"


def test_extension_key_that_vcenter_refuses() -> None:
    assert one_problem(GOOD.replace("key: org.example.t", "key: org/example")).startswith(
        'c.yaml:2: solution.key: "org/example" is not an extension key'
    )


# ------------------------------------------------------------------------------------ OVF properties


def test_ovf_property_value_with_a_control_character() -> None:
    # it used to pass plan, and apply changed vCenter before EAM refused the agency
    assert one_problem(GOOD.replace("dns: 10.0.0.2", 'dns: "10.0.0.2\\x01"')) == (
        "c.yaml:11: agencies[0].ovfProperties.dns: has the control character U+0001, which vCenter and "
        "EAM refuse; remove it"
    )


def test_ovf_property_value_with_a_control_character_from_the_environment() -> None:
    text = GOOD.replace("dns: 10.0.0.2", "dns: ${DNS}")
    assert one_problem(text, env={"DNS": "10.0.0.2\x1b[2J"}) == (
        "c.yaml:11: agencies[0].ovfProperties.dns: has the control character U+001B (after ${...} "
        "substitution), which vCenter and EAM refuse; remove it"
    )


def test_ovf_property_value_in_a_list_with_a_control_character() -> None:
    text = GOOD.replace("dns: 10.0.0.2", 'dns: [10.0.0.2, "10.0.0.3\\x02"]')
    assert "agencies[0].ovfProperties.dns[1]: has the control character U+0002" in one_problem(text)


def test_ovf_property_key_with_a_control_character() -> None:
    text = GOOD.replace("dns: 10.0.0.2", '"dn\\x01s": 10.0.0.2')
    assert one_problem(text) == (
        "c.yaml:11: agencies[0].ovfProperties: has a key with the control character U+0001; remove it"
    )


def test_ovf_property_value_too_long() -> None:
    text = GOOD.replace("dns: 10.0.0.2", f"dns: {'1' * 65_536}")
    assert one_problem(text) == (
        "c.yaml:11: agencies[0].ovfProperties.dns: is 65,536 characters; an OVF property value is at most "
        "65,535"
    )


def test_ovf_property_key_too_long() -> None:
    key = "k" * 256
    text = GOOD.replace("dns: 10.0.0.2", f"{key}: 1")
    assert one_problem(text) == (
        f"c.yaml:11: agencies[0].ovfProperties.{key}: is 256 characters; an OVF property key is at most 255"
    )


# ------------------------------------------------------------------------------------ guestinfo keys


def test_per_host_key_too_long_for_guestinfo() -> None:
    key = "k" * 246  # guestinfo.<key> would be 256
    text = GOOD.replace('fabricIp: "{ip}"', f'{key}: "{{ip}}"')
    assert one_problem(text) == (
        f"c.yaml:14: agencies[0].perHost.{key}: is 246 characters; it is also written as guestinfo.{key}, "
        "and a VM's extraConfig key is at most 255 characters: keep it to 245"
    )


@pytest.mark.parametrize("key", ["agentvm.address", "AgentVM.agency", "agentvm.x"])
def test_per_host_key_in_agentvm_own_guestinfo_namespace(key: str) -> None:
    text = GOOD.replace('fabricIp: "{ip}"', f'{key}: "{{ip}}"')
    assert one_problem(text) == (
        f'c.yaml:14: agencies[0].perHost["{key}"]: would be written as guestinfo.{key}, and '
        "guestinfo.agentvm.* is where agentvm keeps each agent's address and agency; choose another key"
    )
