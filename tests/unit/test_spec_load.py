"""Loading valid spec files: the examples, environment substitution, password sources, placements."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from agentvm.model.agency import MoRef, OvfProperty
from agentvm.model.connection import Secret
from agentvm.model.desired import PasswordSource, ScopeHost
from agentvm.spec import load_spec, load_spec_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
THUMBPRINT = ":".join(["AB"] * 20)
LAB_ENV = {
    "AGENTVM_URL": "https://127.0.0.1:18989/sdk",
    "AGENTVM_USERNAME": "administrator@vsphere.local",
    "AGENTVM_PASSWORD": "s3cret-pass",
    "AGENTVM_THUMBPRINT": THUMBPRINT,
    "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:18080",
}

MINIMAL = """\
solution: {key: org.example.t, version: "1.0"}
agencies:
  - name: a
    ovf: http://127.0.0.1/a.ovf
    scope: [/DC0/host/DC0_C0]
"""


def test_contrail_example_loads_with_the_lab_environment() -> None:
    state = load_spec(EXAMPLES / "contrail.yaml", env=LAB_ENV)

    assert state.warnings == ()
    assert state.vcenter is not None
    conn = state.vcenter.connection
    assert conn.url == "https://127.0.0.1:18989/sdk"
    assert conn.username == "administrator@vsphere.local"
    assert conn.password == Secret("s3cret-pass")
    assert conn.thumbprint == THUMBPRINT
    assert state.vcenter.password_source is PasswordSource.ENVIRONMENT
    assert state.vcenter.password_origin == "AGENTVM_PASSWORD"
    (agency,) = state.agencies
    assert agency.name == "contrail"
    assert agency.ovf.url == "http://127.0.0.1:18080/contrail-vm/contrail-vm.ovf"
    assert [s.path for s in agency.scope] == ["/DC0/host/DC0_C0", "/DC0/host/DC0_C1"]
    assert OvfProperty("controlNodes", "10.10.0.2,10.10.0.3,10.10.0.4") in agency.ovf_properties
    assert OvfProperty("dns", "10.10.0.2") in agency.ovf_properties
    assert agency.ip_plan is not None
    assert agency.ip_plan.network == IPv4Network("10.10.0.0/24")
    assert agency.ip_plan.gateway == IPv4Address("10.10.0.1")
    assert (agency.ip_plan.first, agency.ip_plan.last) == (
        IPv4Address("10.10.0.10"),
        IPv4Address("10.10.0.200"),
    )
    assert dict(agency.per_host) == {
        "fabricIp": "{ip}",
        "prefixLen": "{prefix}",
        "gateway": "{gateway}",
        "hostname": "contrail-{host_short}",
    }
    assert agency.provisioned_hook is True


def test_hello_agent_example_loads_with_the_lab_environment() -> None:
    state = load_spec(EXAMPLES / "hello-agent.yaml", env=LAB_ENV)

    (agency,) = state.agencies
    assert agency.ovf.url == "http://127.0.0.1:18080/hello-agent/hello-agent.ovf"
    assert agency.agent_name == "hello-agent"  # defaults to the agency name
    assert agency.ip_plan is None


def test_password_never_appears_in_the_repr_of_the_loaded_state() -> None:
    state = load_spec(EXAMPLES / "contrail.yaml", env=LAB_ENV)
    assert "s3cret-pass" not in repr(state)


def test_environment_default_is_used_when_the_variable_is_unset_or_empty() -> None:
    text = MINIMAL.replace("http://127.0.0.1/a.ovf", "${OVF:-http://127.0.0.1/default.ovf}")
    assert load_spec_text(text, env={}).agencies[0].ovf.url == "http://127.0.0.1/default.ovf"
    assert load_spec_text(text, env={"OVF": ""}).agencies[0].ovf.url == "http://127.0.0.1/default.ovf"
    assert load_spec_text(text, env={"OVF": "http://h/x.ovf"}).agencies[0].ovf.url == "http://h/x.ovf"


def test_double_dollar_is_a_literal_dollar() -> None:
    text = MINIMAL + "    ovfProperties: {price: 'costs $$5 ${X}'}\n"
    state = load_spec_text(text, env={"X": "now"})
    assert state.agencies[0].ovf_properties == (OvfProperty("price", "costs $5 now"),)


def test_vcenter_section_is_optional_for_the_cli_to_fill_in() -> None:
    assert load_spec_text(MINIMAL, env={}).vcenter is None


def test_password_env_unset_means_the_cli_prompts() -> None:
    text = "vcenter: {url: vc.example.com, username: u, passwordEnv: MY_PW}\n" + MINIMAL
    vc = load_spec_text(text, env={}).vcenter
    assert vc is not None
    assert vc.needs_password_prompt and vc.password_origin == "MY_PW"
    assert vc.connection.password is None


def test_password_file_is_read_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("from-a-file\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("vcenter: {url: vc.example.com, username: u, passwordFile: pw.txt}\n" + MINIMAL)
    vc = load_spec(spec, env={}).vcenter
    assert vc is not None
    assert vc.password_source is PasswordSource.FILE
    assert vc.connection.password == Secret("from-a-file")


def test_literal_password_is_allowed_with_a_warning_that_does_not_show_it() -> None:
    text = "vcenter:\n  url: vc.example.com\n  username: u\n  password: hunter2\n" + MINIMAL
    state = load_spec_text(text, "s.yaml", env={})
    assert state.vcenter is not None
    assert state.vcenter.password_source is PasswordSource.LITERAL
    assert state.vcenter.connection.password == Secret("hunter2")
    assert len(state.warnings) == 1
    assert state.warnings[0].startswith(
        "s.yaml:4: vcenter.password: the password is written in the spec file"
    )
    assert "hunter2" not in state.warnings[0]


def test_password_from_a_whole_reference_counts_as_environment_without_warning() -> None:
    text = "vcenter: {url: vc.example.com, username: u, password: '${PW}'}\n" + MINIMAL
    state = load_spec_text(text, env={"PW": "x"})
    assert state.warnings == ()
    assert state.vcenter is not None
    assert state.vcenter.password_source is PasswordSource.ENVIRONMENT
    assert state.vcenter.password_origin == "PW"


def test_certificate_login_takes_key_and_files_from_the_solution(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "vcenter: {url: vc.example.com, login: certificate, insecure: true}\n"
        + MINIMAL.replace('version: "1.0"', 'version: "1.0", certFile: c.pem, keyFile: k.pem')
    )
    state = load_spec(spec, env={})
    assert state.vcenter is not None
    conn = state.vcenter.connection
    assert conn.by_certificate
    assert conn.extension_key == "org.example.t"
    assert conn.cert_file == str(tmp_path / "c.pem")
    assert conn.key_file == str(tmp_path / "k.pem")
    assert state.vcenter.password_source is PasswordSource.NONE
    assert any("TLS certificate checks are off" in w for w in state.warnings)


def test_scope_accepts_paths_moids_and_typed_references() -> None:
    text = MINIMAL.replace(
        "[/DC0/host/DC0_C0]", "[/DC0/host/DC0_C0, domain-c7, 'ClusterComputeResource:domain-c9', host-42]"
    )
    scope = load_spec_text(text, env={}).agencies[0].scope
    assert scope[0].path == "/DC0/host/DC0_C0"
    assert scope[1].moref == MoRef("ClusterComputeResource", "domain-c7")
    assert scope[2].moref == MoRef("ClusterComputeResource", "domain-c9")
    assert scope[3].moref == MoRef("HostSystem", "host-42")


def test_placements_by_cluster_and_host_with_a_default() -> None:
    text = MINIMAL + (
        "    datastore: host\n"
        "    network:\n"
        '      "*": VM Network\n'
        "      /DC0/host/DC0_C1: Fabric\n"
        "      host-99: Special\n"
    )
    agency = load_spec_text(text, env={}).agencies[0]
    assert agency.datastore.use_host_settings
    in_c1 = ScopeHost("host-30", "h30", "/DC0/host/DC0_C1/h30", "domain-c9", "/DC0/host/DC0_C1", "DC0_C1")
    special = ScopeHost("host-99", "h99", "/DC0/host/DC0_C1/h99", "domain-c9", "/DC0/host/DC0_C1", "DC0_C1")
    elsewhere = ScopeHost("host-10", "h10", "/DC0/host/DC0_C0/h10", "domain-c7", "/DC0/host/DC0_C0", "DC0_C0")
    assert agency.network.for_host(in_c1) == "Fabric"
    assert agency.network.for_host(special) == "Special"
    assert agency.network.for_host(elsewhere) == "VM Network"
    assert agency.datastore.for_host(elsewhere) is None


def test_version_keeps_its_digits_as_written() -> None:
    state = load_spec_text(MINIMAL.replace('"1.0"', "1.10"), env={})
    assert state.solution.version == "1.10"


@pytest.mark.parametrize("flag", ["true", "'yes'", "${FLAG:-true}"])
def test_booleans_accept_yaml_and_text_forms(flag: str) -> None:
    text = MINIMAL + f"    useUuidVmName: {flag}\n    agentName: short\n"
    assert load_spec_text(text, env={}).agencies[0].use_uuid_vm_name is True


def test_ip_plan_without_range_spans_the_subnet_and_keeps_static_entries() -> None:
    spec = MINIMAL + (
        "    ipPlan:\n"
        "      cidr: 10.1.0.0/24\n"
        "      gateway: 10.1.0.1\n"
        "      addresses: {host-21: 10.1.0.50, /DC0/host/DC0_C0/H1: 10.1.0.51}\n"
        '    perHost: {ip: "{ip}", mask: "{netmask}", name: "{host_short}-{index}"}\n'
    )
    plan = load_spec_text(spec, env={}).agencies[0].ip_plan
    assert plan is not None
    assert plan.first == IPv4Address("10.1.0.1") and plan.last == IPv4Address("10.1.0.254")
    assert dict(plan.static) == {
        "host-21": IPv4Address("10.1.0.50"),
        "/DC0/host/DC0_C0/H1": IPv4Address("10.1.0.51"),
    }
