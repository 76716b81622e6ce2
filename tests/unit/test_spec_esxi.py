"""The spec's ``esxi:`` list of standalone hosts and agencies scoped to them: what parses, and every
mistake named with file, line, field and fix (a name or URL twice, a scope naming an unknown host,
vCenter-only options with standalone hosts), secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agentvm.model.connection import VCenterConnection
from agentvm.model.desired import PasswordSource
from agentvm.spec import SpecError, load_spec, load_spec_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "s3cr3t-esx"

HOSTS = """\
esxi:
  - url: https://127.0.0.1:9001/sdk
    name: esx-01
    username: root
    passwordEnv: ESX_PW
    thumbprint: AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD
  - url: https://esx-02.example.com/sdk
    username: root
    passwordEnv: ESX_PW
"""
REST = """\
solution:
  key: org.example.t
  version: "1.0"
agencies:
  - name: contrail
    ovf:
      url: http://127.0.0.1/c.ovf
    scope: SCOPE
    ipPlan:
      cidr: 10.10.0.0/24
      gateway: 10.10.0.1
      range: 10.10.0.10-10.10.0.200
    perHost:
      fabricIp: "{ip}"
"""
ENV = {"ESX_PW": SECRET, "PW": "vc-pw"}


def spec(scope: str = "all", hosts: str = HOSTS, extra: str = "") -> str:
    return hosts + REST.replace("SCOPE", scope) + extra


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "esxi.yaml", env=ENV if env is None else env)
    messages = [str(p) for p in caught.value.problems]
    assert all(SECRET not in m for m in messages)
    return messages


def test_standalone_hosts_with_scope_all() -> None:
    desired = load_spec_text(spec(), "esxi.yaml", env=ENV)
    assert desired.vcenter is None
    assert [h.name for h in desired.esxi] == ["esx-01", "esx-02.example.com"]  # default: the URL's host
    first = desired.esxi[0]
    assert first.connection.url == "https://127.0.0.1:9001/sdk" and first.connection.username == "root"
    assert first.connection.thumbprint == "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD"
    assert first.connection.password is not None and first.connection.password.reveal() == SECRET
    assert first.password_source is PasswordSource.ENVIRONMENT and first.password_origin == "ESX_PW"
    (agency,) = desired.agencies
    assert agency.standalone == ("esx-01", "esx-02.example.com") and agency.scope == ()
    assert SECRET not in repr(desired)


def test_a_scope_list_names_hosts_case_blind_in_the_order_of_esxi() -> None:
    desired = load_spec_text(spec("[ESX-02.example.com, esx-01]"), "esxi.yaml", env=ENV)
    assert desired.agencies[0].standalone == ("esx-01", "esx-02.example.com")


def test_the_password_defaults_to_agentvm_esxi_password_and_else_a_prompt() -> None:
    hosts = "esxi:\n  - url: https://esx-01.example.com/sdk\n    username: root\n"
    desired = load_spec_text(spec(hosts=hosts), "esxi.yaml", env={"AGENTVM_ESXI_PASSWORD": SECRET})
    assert desired.esxi[0].password_origin == "AGENTVM_ESXI_PASSWORD"
    prompted = load_spec_text(spec(hosts=hosts), "esxi.yaml", env={})
    assert prompted.esxi[0].needs_password_prompt and prompted.esxi[0].connection.password is None


def test_beside_a_vcenter_other_scope_entries_are_the_vcenters() -> None:
    vcenter = "vcenter:\n  url: https://vc.example.com/sdk\n  username: admin\n  passwordEnv: PW\n"
    desired = load_spec_text(vcenter + spec("[esx-01, /DC0/host/DC0_C0]"), "esxi.yaml", env=ENV)
    (agency,) = desired.agencies
    assert agency.standalone == ("esx-01",) and [e.text for e in agency.scope] == ["/DC0/host/DC0_C0"]


def test_a_host_named_twice() -> None:
    hosts = HOSTS.replace(
        "https://esx-02.example.com/sdk\n", "https://esx-02.example.com/sdk\n    name: esx-01\n"
    )
    assert problems(spec(hosts=hosts)) == [
        'esxi.yaml:8: esxi[1].name: host "esx-01" is already listed on line 3; give each host its own name'
    ]


def test_a_url_listed_twice() -> None:
    hosts = HOSTS.replace("https://esx-02.example.com/sdk", "https://127.0.0.1:9001/sdk")
    assert problems(spec(hosts=hosts)) == [
        "esxi.yaml:7: esxi[1].url: https://127.0.0.1:9001/sdk is already listed on line 2; "
        "list each host once"
    ]


def test_a_scope_naming_an_unknown_host_says_which_hosts_there_are() -> None:
    assert problems(spec("[esx-1]")) == [
        'esxi.yaml:17: agencies[0].scope[0]: "esx-1" is not a host of esxi: (esx-01, esx-02.example.com), '
        "and this spec has no vcenter; did you mean esx-01?"
    ]


def test_scope_all_without_esxi() -> None:
    vcenter = "vcenter:\n  url: https://vc.example.com/sdk\n  username: admin\n  passwordEnv: PW\n"
    (message,) = problems(spec(hosts=vcenter))
    assert message.startswith("esxi.yaml:12: agencies[0].scope: all means every standalone host of esxi:")


def test_certificate_login_is_refused_on_a_host() -> None:
    hosts = HOSTS.replace("    name: esx-01\n", "    name: esx-01\n    login: certificate\n")
    (message,) = problems(spec(hosts=hosts))
    assert message.startswith("esxi.yaml:4: esxi[0].login: is vCenter's")
    assert "remove login" in message


@pytest.mark.parametrize(
    ("extra", "line", "field", "fix"),
    [
        ("    hooks:\n      provisioned: true\n", 24, "agencies[0].hooks", "remove hooks"),
        ("    datastore: host\n", 24, "agencies[0].datastore", "name the datastore"),
        ("    network: host\n", 24, "agencies[0].network", "name the network"),
        (
            "    hostNetwork:\n      trunk:\n        dvs: DVS0\n        portGroup: t\n        vlans: 1-10\n",
            25,
            "agencies[0].hostNetwork.trunk",
            "remove trunk",
        ),
    ],
)
def test_vcenter_only_agency_options_are_refused_on_standalone_hosts(
    extra: str, line: int, field: str, fix: str
) -> None:
    (message,) = problems(spec(extra=extra))
    assert message.startswith(f"esxi.yaml:{line}: {field}: ") and fix in message, message


def test_the_solutions_extension_certificate_is_refused_without_a_vcenter(tmp_path: Path) -> None:
    cert = tmp_path / "a.crt"
    cert.write_text("x")
    text = spec().replace('  version: "1.0"\n', f'  version: "1.0"\n  certFile: {cert}\n  keyFile: {cert}\n')
    messages = problems(text)
    assert [m.split(": ")[1] for m in messages] == ["solution.certFile", "solution.keyFile"]
    assert all("certificate of a vCenter extension" in m for m in messages)


def test_a_wrong_password_variable_is_not_echoed() -> None:
    hosts = HOSTS.replace(
        "passwordEnv: ESX_PW\n    thumbprint", "password: ${ESX_PW}\n    passwordFile: /x\n    thumbprint"
    )
    (message,) = problems(spec(hosts=hosts))
    assert "conflicts with password" in message


@given(st.lists(st.from_regex(r"esx-[0-9]{2}", fullmatch=True), min_size=1, max_size=6, unique=True))
def test_any_set_of_unique_names_parses_and_all_is_all_of_them(names: list[str]) -> None:
    hosts = "esxi:\n" + "".join(
        f"  - url: https://127.0.0.1:{9000 + i}/sdk\n    name: {n}\n"
        "    username: root\n    passwordEnv: ESX_PW\n"
        for i, n in enumerate(names)
    )
    desired = load_spec_text(spec(hosts=hosts), "esxi.yaml", env=ENV)
    assert [h.name for h in desired.esxi] == names
    assert desired.agencies[0].standalone == tuple(names)
    subset = load_spec_text(spec(f"[{names[-1]}]", hosts=hosts), "esxi.yaml", env=ENV)
    assert subset.agencies[0].standalone == (names[-1],)


def test_the_example_parses_with_the_labs_variables() -> None:
    env = {
        "AGENTVM_ESXI_USERNAME": "root",
        "AGENTVM_ESXI_PASSWORD": SECRET,
        "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:8000",
    }
    for i in (1, 2, 3):
        env[f"AGENTVM_ESXI_{i}_URL"] = f"https://127.0.0.1:{9000 + i}/sdk"
        env[f"AGENTVM_ESXI_{i}_NAME"] = f"esx-0{i}"
        env[f"AGENTVM_ESXI_{i}_THUMBPRINT"] = ":".join([f"{i:02X}"] * 20)
    desired = load_spec(EXAMPLES / "contrail-esxi.yaml", env=env)
    assert [h.name for h in desired.esxi] == ["esx-01", "esx-02", "esx-03"]
    assert [h.connection.url for h in desired.esxi] == [env[f"AGENTVM_ESXI_{i}_URL"] for i in (1, 2, 3)]
    (agency,) = desired.agencies
    assert agency.standalone == ("esx-01", "esx-02", "esx-03")
    assert agency.ip_plan is not None and agency.host_network is not None
    assert agency.host_network.trunk is None and agency.host_network.fabric is not None
    assert desired.warnings == ()
    assert isinstance(desired.esxi[0].connection, VCenterConnection)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--netsync"], "--netsync needs a vCenter's networks; drop --netsync"),
        (["--coordination", "etcd://127.0.0.1:2379"], "--coordination is not supported with standalone"),
        (["-f", "SECOND"], "agentvm run takes one spec then"),
    ],
)
def test_run_refuses_what_it_cannot_do_with_standalone_hosts(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """Before any connection (the hosts' addresses are not listening), exit 2, one line."""
    from typer.testing import CliRunner

    from agentvm.cli.main import app

    doc = yaml.safe_load((EXAMPLES / "contrail-esxi.yaml").read_text())
    del doc["agencies"][0]["hostNetwork"]
    spec = tmp_path / "esxi.yaml"
    spec.write_text(yaml.safe_dump(doc))
    env = {
        "AGENTVM_ESXI_USERNAME": "root",
        "AGENTVM_ESXI_PASSWORD": SECRET,
        "AGENTVM_LAB_OVF_URL": "http://x",
    }
    for i in (1, 2, 3):
        env[f"AGENTVM_ESXI_{i}_URL"] = f"https://127.0.0.1:{9000 + i}/sdk"
        env[f"AGENTVM_ESXI_{i}_NAME"] = f"esx-0{i}"
        env[f"AGENTVM_ESXI_{i}_THUMBPRINT"] = ":".join([f"{i:02X}"] * 20)
    flags = [str(spec) if f == "SECOND" else f for f in flags]
    args = ["run", "-f", str(spec), "--listen", "127.0.0.1:0", *flags]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert SECRET not in result.output
