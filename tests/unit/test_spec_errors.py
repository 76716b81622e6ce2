"""Bad spec files: every problem names file, line, field and fix, and several are reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvm.model.errors import ConfigurationError
from agentvm.spec import SpecError, load_spec, load_spec_text
from tests.support.specs import GOOD


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "contrail.yaml", env={"PW": "x"} if env is None else env)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def test_the_base_file_of_these_tests_is_valid() -> None:
    load_spec_text(GOOD, "contrail.yaml", env={"PW": "x"})


def test_spec_error_is_a_configuration_error() -> None:
    assert issubclass(SpecError, ConfigurationError)


def test_malformed_yaml_names_its_line() -> None:
    text = GOOD.replace("    scope:\n", "    scope: [unclosed\n")
    assert problems(text) == [
        "contrail.yaml:14: is not valid YAML: expected ',' or ']', but got ':' (while parsing a "
        "flow sequence "
        "that starts on line 12); check the indentation and quoting"
    ]


def test_bad_indentation_names_its_line() -> None:
    (message,) = problems("solution:\n  key: a\n version: 1\n")
    assert message.startswith("contrail.yaml:3: is not valid YAML")


def test_unknown_key_typo_suggests_the_right_one() -> None:
    text = GOOD.replace("    scope:\n", "    scpoe:\n")
    assert problems(text) == [
        "contrail.yaml:9: agencies[0].scope: is missing; add it, e.g. scope: [/DC0/host/DC0_C0]",
        'contrail.yaml:12: agencies[0].scpoe: unknown key; did you mean "scope"?',
    ]


def test_unknown_key_in_ip_plan_suggests_cidr() -> None:
    text = GOOD.replace("      cidr:", "      cdir:")
    assert 'contrail.yaml:15: agencies[0].ipPlan.cdir: unknown key; did you mean "cidr"?' in problems(text)


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    text = GOOD.replace("  version:", "  colour: blue\n  version:")
    assert problems(text) == [
        "contrail.yaml:7: solution.colour: unknown key; expected one of: certFile, company, key, keyFile, "
        "label, summary, version"
    ]


def test_bad_cidr_names_file_line_field_and_fix() -> None:
    text = GOOD.replace("10.10.0.0/24", "10.0.0.300/24")
    assert problems(text) == [
        'contrail.yaml:15: agencies[0].ipPlan.cidr: "10.0.0.300/24" is not a CIDR; write it like 10.10.0.0/24'
    ]


def test_cidr_with_host_bits_shows_the_subnet() -> None:
    text = GOOD.replace("10.10.0.0/24", "10.10.0.5/24")
    assert problems(text) == [
        'contrail.yaml:15: agencies[0].ipPlan.cidr: "10.10.0.5/24" has host bits set; write the '
        "subnet: 10.10.0.0/24"
    ]


def test_range_outside_the_cidr_and_gateway_at_broadcast() -> None:
    text = GOOD.replace("10.10.0.10-10.10.0.200", "10.10.0.10-10.10.1.20").replace(
        "gateway: 10.10.0.1", "gateway: 10.10.0.255"
    )
    assert problems(text) == [
        "contrail.yaml:16: agencies[0].ipPlan.gateway: 10.10.0.255 is the broadcast address of 10.10.0.0/24; "
        "give another one",
        "contrail.yaml:17: agencies[0].ipPlan.range: 10.10.1.20 outside 10.10.0.0/24; keep the "
        "range inside the cidr",
    ]


def test_duplicate_agency_names_point_at_the_first() -> None:
    second = GOOD[GOOD.index("  - name: contrail") :]
    text = GOOD + second
    assert problems(text) == [
        'contrail.yaml:20: agencies[1].name: agency "contrail" is already described on line 9; '
        "give each agency its own name"
    ]


def test_missing_environment_variable_is_named_with_the_fix() -> None:
    text = GOOD.replace("https://vc.example.com/sdk", "${AGENTVM_URL}")
    assert problems(text) == [
        "contrail.yaml:2: vcenter.url: environment variable AGENTVM_URL is not set; export AGENTVM_URL=..., "
        "or write ${AGENTVM_URL:-default}",
    ]


def test_unterminated_reference_is_an_error() -> None:
    text = GOOD.replace("http://127.0.0.1/c.ovf", "${OVF_URL/c.ovf")
    assert problems(text) == [
        "contrail.yaml:11: agencies[0].ovf.url: has a '${' without its closing '}'; write ${VAR} or "
        "${VAR:-default}, or $$ for '$'"
    ]


def test_several_problems_are_reported_together_in_line_order() -> None:
    text = (
        GOOD.replace("https://vc.example.com/sdk", "${NOPE}")
        .replace("10.10.0.0/24", "10.0.0.300/24")
        .replace("/DC0/host/DC0_C0", "/DC0/DC0_C0")
        .replace('version: "1.0"', "version:")
    )
    found = problems(text)
    assert [m.split(":")[1] for m in found] == ["2", "7", "13", "15"]
    assert found[1] == 'contrail.yaml:7: solution.version: must be text, e.g. "1.0.0", not empty'
    assert found[2] == (
        'contrail.yaml:13: agencies[0].scope[0]: "/DC0/DC0_C0" is not the inventory path of a cluster or '
        "host; write it like /DC0/host/DC0_C0 (datacenter, then host, then the cluster)"
    )


def test_too_many_problems_are_counted_not_listed() -> None:
    many = "".join(f"  extra{i}: 1\n" for i in range(20 + 5))  # 20 problems are listed, at most
    text = GOOD.replace("solution:\n", "solution:\n" + many)
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "contrail.yaml", env={"PW": "x"})
    lines = str(caught.value).splitlines()
    assert len(caught.value.problems) == 20 + 5
    assert len(lines) == 20 + 1
    assert lines[-1] == "... and 5 more problems; fix these first"


def test_duplicate_key_is_an_error_not_a_silent_override() -> None:
    text = GOOD.replace("  key: org.example.t\n", "  key: org.example.t\n  key: org.example.u\n")
    assert problems(text) == ["contrail.yaml:7: solution.key: is given twice (first on line 6); keep one"]


def test_agent_name_too_long_for_uuid_names() -> None:
    text = GOOD.replace("    ovf:\n", f"    agentName: {'a' * 44}\n    useUuidVmName: true\n    ovf:\n")
    assert problems(text) == [
        "contrail.yaml:10: agencies[0].agentName: is 44 characters; EAM allows 43 with useUuidVmName: true; "
        "shorten it"
    ]


def test_bad_sha256_and_non_http_ovf_url() -> None:
    text = GOOD.replace("url: http://127.0.0.1/c.ovf", "url: ftp://h/c.ovf\n      sha256: abc")
    assert problems(text) == [
        'contrail.yaml:11: agencies[0].ovf.url: "ftp://h/c.ovf" is not an http(s) URL; EAM '
        "downloads the OVF, "
        "so give it like https://files.example.com/agent/agent.ovf",
        'contrail.yaml:12: agencies[0].ovf.sha256: "abc" is not a SHA-256; give the 64 hex digits that '
        "sha256sum prints for the OVF",
    ]


def test_unknown_template_field_suggests_one() -> None:
    text = GOOD.replace('"{ip}"', '"{gatway}"')
    assert problems(text) == [
        'contrail.yaml:19: agencies[0].perHost.fabricIp: "{gatway}" is not a template field; '
        "did you mean {gateway}?"
    ]


def test_template_that_needs_the_plan_without_a_plan() -> None:
    text = GOOD[: GOOD.index("    ipPlan:")] + '    perHost: {fabricIp: "{ip}"}\n'
    assert problems(text) == [
        "contrail.yaml:14: agencies[0].perHost.fabricIp: {ip} comes from the IP plan; add "
        "ipPlan to this agency"
    ]


def test_typo_in_scope_type_suggests_the_type() -> None:
    text = GOOD.replace("/DC0/host/DC0_C0", "ClusterComputeResorce:domain-c7")
    assert problems(text) == [
        'contrail.yaml:13: agencies[0].scope[0]: "ClusterComputeResorce:domain-c7" is not a cluster or host '
        "reference; did you mean ClusterComputeResource:domain-c7?"
    ]


def test_static_address_twice_and_gateway() -> None:
    text = GOOD.replace(
        "      range: 10.10.0.10-10.10.0.200\n",
        "      range: 10.10.0.10-10.10.0.200\n      addresses:\n        h1: 10.10.0.5\n        "
        "h2: 10.10.0.5\n"
        "        h3: 10.10.0.1\n",
    )
    assert problems(text) == [
        "contrail.yaml:20: agencies[0].ipPlan.addresses.h2: 10.10.0.5 is already given to h1; "
        "give each host its own",
        "contrail.yaml:21: agencies[0].ipPlan.addresses.h3: 10.10.0.1 is the gateway; give the "
        "host another address",
    ]


def test_two_password_sources_conflict() -> None:
    text = GOOD.replace("  passwordEnv: PW\n", "  passwordEnv: PW\n  passwordFile: /nonexistent\n")
    assert problems(text) == [
        "contrail.yaml:5: vcenter.passwordFile: conflicts with passwordEnv; give the password one way only"
    ]


def test_certificate_login_without_certificate() -> None:
    text = GOOD.replace("  username: admin\n  passwordEnv: PW\n", "  login: certificate\n")
    assert problems(text) == [
        "contrail.yaml:3: vcenter.login: certificate login needs solution.certFile and solution.keyFile; "
        "add them or use login: password"
    ]


def test_insecure_with_a_thumbprint_is_contradictory() -> None:
    text = GOOD.replace(
        "  passwordEnv: PW\n", f"  passwordEnv: PW\n  thumbprint: {'ab' * 32}\n  insecure: true\n"
    )
    assert problems(text) == [
        "contrail.yaml:6: vcenter.insecure: insecure: true turns certificate checks off, so "
        "thumbprint/caFile "
        "would be ignored; remove insecure (or them)"
    ]


def test_secret_from_the_environment_is_never_quoted_in_errors() -> None:
    text = GOOD.replace("  passwordEnv: PW\n", "  password: ${PW}\n").replace(
        "key: org.example.t", "key: 'bad key'"
    )
    found = problems(text, env={"PW": "topsecret"})
    assert found and all("topsecret" not in m for m in found)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.yaml: does not exist; give the path of a spec file with -f"):
        load_spec(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(SpecError, match=r"empty.yaml: is empty; start from examples/hello-agent.yaml"):
        load_spec(empty)


def test_top_level_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "contrail.yaml:1: must be a mapping (with keys agencies, apiVersion, esxi, solution, vcenter), "
        "not a list"
    ]
