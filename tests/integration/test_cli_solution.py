"""``agentvm plan | apply | status | resolve | destroy`` on the lab, as a user runs them.

The CLI runs in-process through typer's CliRunner with the lab's environment (``lab.env()``: AGENTVM_URL,
AGENTVM_USERNAME, AGENTVM_PASSWORD, AGENTVM_THUMBPRINT, AGENTVM_LAB_OVF_URL); stdin is not a terminal, so
progress comes as plain lines. What the commands did is checked independently, by reading vCenter (the
extension, each host's AgentVM settings, the agent VMs and their guestinfo) and EAM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from agentvm.backends.eam import EamBackend
from agentvm.controller.solution import Solution
from agentvm.controller.status import status_schema
from agentvm.core.scope import resolve_agency
from agentvm.eam.client import EamClient
from agentvm.lab.world import Lab
from agentvm.spec import load_spec
from agentvm.vsphere.extensions import find_extension
from agentvm.vsphere.hosts import add_host, ensure_maintenance_mode
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.certs import make_certificate
from tests.support.cli_lab import (
    EXAMPLES,
    KEY,
    ONE_CLUSTER,
    TIMEOUT,
    World,
    cli_world,
    connect,
    contrail_text,
    ok,
    wait_for,
)
from tests.support.terminal import tmux_screen

pytestmark = pytest.mark.lab


@pytest.fixture
def world(cli_world: World) -> World:
    """The CLI's lab world (tests/integration/conftest.py)."""
    return cli_world


# ------------------------------------------------------------------------------------------ the journey


def test_contrail_on_two_clusters_from_plan_to_destroy(world: World) -> None:
    spec = world.spec(
        text=contrail_text(
            **{
                "url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf": (
                    "url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf${OVF_QUERY:-}"
                )
            }
        )
    )

    # plan: everything to do, nothing done
    out = ok(world.run("plan", "-f", str(spec)))
    assert "register extension org.tungsten.agentvm version 1.0.0" in out
    assert out.count("set AgentVM settings on") == 6
    assert "create agency contrail: contrail-vm on 6 hosts" in out
    assert out.count("gets address 10.10.0.") == 6
    world.nothing_changed()
    planned = json.loads(ok(world.run("plan", "-f", str(spec), "--json")))
    assert planned["kind"] == "Plan" and not planned["noChanges"]
    assert sorted(a["address"] for a in planned["addresses"]["contrail"].values()) == [
        f"10.10.0.{i}" for i in range(10, 16)
    ]

    # apply: 6 agents green, each VM with its own fabric IP from the plan, hooks answered
    out = ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
    assert "registered extension org.tungsten.agentvm" in out
    assert "agency 'contrail'" in out and "created" in out
    hosts = {h.moref.value: h for h in world.snapshot().hosts}
    ips = world.fabric_ips()
    assert sorted(ips.values()) == [f"10.10.0.{i}" for i in range(10, 16)]
    assert len(world.agent_vms()) == 6
    for vm in world.agent_vms():
        assert vm.power_state.value == "poweredOn"
        assert vm.extra_config["guestinfo.gateway"] == "10.10.0.1"
        assert vm.extra_config["guestinfo.prefixLen"] == "24"
        assert vm.host is not None
        assert vm.extra_config["guestinfo.hostname"] == f"contrail-{hosts[vm.host.value].name}"
        assert vm.extra_config["guestinfo.agentvm.address"] == ips[vm.host.value]
    # the host order is the canonical one: H0 of C0 gets the first address
    first = next(h for h in hosts.values() if h.path == "/DC0/host/DC0_C0/DC0_C0_H0")
    assert ips[first.moref.value] == "10.10.0.10"
    for host in hosts.values():
        assert host.agent_vm_datastore is not None and host.agent_vm_network is not None
    extension = find_extension(world.session, KEY)
    assert extension is not None and extension.version == "1.0.0"
    assert extension.label == "Tungsten Fabric vRouter"

    # a second apply does nothing
    out = ok(world.run("apply", "-f", str(spec)))
    assert out.strip().startswith("no changes")
    assert "no changes" in ok(world.run("plan", "-f", str(spec)))

    # a host joins cluster C0: the plan gives it the next address; apply deploys the 7th agent with it
    cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
    new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")
    out = ok(world.run("plan", "-f", str(spec)))
    assert f"{new_host.value} (/DC0/host/DC0_C0/esx-new.lab) gets address 10.10.0.16" in out
    ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
    ips_after = world.fabric_ips()
    assert len(world.agent_vms()) == 7
    assert ips_after[new_host.value] == "10.10.0.16"
    assert {k: v for k, v in ips_after.items() if k != new_host.value} == ips

    # a new OVF URL: the plan shows an upgrade, apply replaces every agent VM and keeps every address
    before = {vm.moref.value for vm in world.agent_vms()}
    out = ok(world.run("plan", "-f", str(spec), OVF_QUERY="?v=2"))
    assert re.search(r"upgrade agency contrail: \S+contrail-vm\.ovf → \S+contrail-vm\.ovf\?v=2", out)
    out = ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT, OVF_QUERY="?v=2"))
    assert "upgrade" in out
    after = world.agent_vms()
    assert len(after) == 7 and not before & {vm.moref.value for vm in after}
    assert world.fabric_ips() == ips_after
    assert "no changes" in ok(world.run("plan", "-f", str(spec), OVF_QUERY="?v=2"))

    # status: a table, and JSON that follows the published schema
    out = ok(world.run("status", "-f", str(spec)))
    assert "7/7 hosts ready" in out and "10.10.0.16" in out
    document = json.loads(ok(world.run("status", "--json")))
    jsonschema.validate(document, status_schema())
    (agency,) = document["agencies"]
    assert agency["status"] == "green" and agency["summary"]["ready"] == 7
    assert sorted(h["address"] for c in agency["clusters"] for h in c["hosts"]) == [
        f"10.10.0.{i}" for i in range(10, 17)
    ]

    # destroy --yes: no agent VM, no agency, no extension; a second destroy has nothing to do
    out = ok(world.run("destroy", "-f", str(spec), "--yes", "--timeout", TIMEOUT))
    assert "destroyed agency contrail" in out and "unregistered extension org.tungsten.agentvm" in out
    assert world.agent_vms() == []
    assert world.agencies() == []
    assert find_extension(world.session, KEY) is None
    assert "nothing to destroy" in ok(world.run("destroy", "-f", str(spec), "--yes"))


def test_status_shows_an_issue_as_a_sentence_and_resolve_fixes_it(world: World) -> None:
    spec = world.spec(text=contrail_text(**{"      - /DC0/host/DC0_C1\n": ""}))
    ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
    vm = world.agent_vms()[0]
    ensure_powered_off(world.session, vm.moref)

    def issue_keys() -> list[int]:
        document = json.loads(ok(world.run("status", "-f", str(spec), "--json")))
        jsonschema.validate(document, status_schema())
        return [
            i["key"]
            for c in document["agencies"][0]["clusters"]
            for h in c["hosts"]
            for i in h["issues"]
            if i["kind"] == "VmPoweredOff"
        ]

    keys = wait_for(issue_keys)
    out = ok(world.run("status", "-f", str(spec)))
    assert "was powered off; run agentvm resolve to power it on" in " ".join(out.split())
    hosts = {h.name for h in world.snapshot().hosts if h.path.startswith("/DC0/host/DC0_C0/")}
    # in a real 80x24 terminal: every host name, VM name and state whole, nothing wider than the screen
    argv = [sys.executable, "-c", "from agentvm.cli.main import main; main()", "status", "-f", str(spec)]
    env = {**os.environ, **world.run_env()}
    screen = tmux_screen(argv, env, width=80, height=24)
    words = set(screen.split())
    assert hosts <= words and "poweredOff" in words and vm.name.split()[0] in words, screen
    assert max(len(line) for line in screen.splitlines()) <= 80, screen
    # piped (a CI log): one line per issue, not wrapped at 80 columns
    piped = subprocess.run(
        argv, env={k: v for k, v in env.items() if k != "COLUMNS"}, capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    (line,) = [line for line in piped.stdout.splitlines() if line.startswith(f"issue #{keys[0]} ")]
    assert line.endswith("was powered off; run agentvm resolve to power it on") and len(line) > 80
    out = ok(world.run("resolve", str(keys[0])))
    assert f"issue {keys[0]}: resolving" in out
    wait_for(lambda: world.snapshot().find_vm(vm.moref.value).power_state.value == "poweredOn")
    wait_for(lambda: not issue_keys())  # EAM drops the issue once it sees the VM on (else apply resolves it)
    assert "no changes" in ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))

    watched = ok(world.run("status", "--watch", "--count", "2", "--interval", "0.2", "--json"))
    assert watched.count('"kind": "Status"') == 2

    bad = world.run("resolve", "999999")
    assert bad.exit_code == 2 and "no issue with key 999999" in bad.stderr
    assert world.run("resolve").exit_code == 2


# ------------------------------------------------------------------------------- the solution's certificate


def test_the_solution_logs_in_with_its_certificate_after_the_first_apply(world: World) -> None:
    cert, key, _pem = make_certificate(world.tmp, "agentvm")
    scope = {"      - /DC0/host/DC0_C1\n": ""}
    by_password = world.spec(
        "by-password.yaml",
        contrail_text(
            **scope,
            **{
                "  # certFile: certs/agentvm.crt ": f"  certFile: {cert}\n  #",
                "  # keyFile: certs/agentvm.key ": f"  keyFile: {key}\n  #",
            },
        ),
    )
    by_certificate = world.spec(
        "by-certificate.yaml",
        by_password.read_text()
        .replace("  username: ${AGENTVM_USERNAME}\n", "  login: certificate\n")
        .replace(
            "  passwordEnv: AGENTVM_PASSWORD        # the password itself never goes in this file\n", ""
        ),
    )
    # before the first apply the extension has no certificate: a clear refusal, nothing changed
    refused = world.run("plan", "-f", str(by_certificate))
    assert refused.exit_code == 4 and "The first apply must log in as a user" in refused.stderr
    world.nothing_changed()

    out = ok(world.run("plan", "-f", str(by_password)))
    assert f"set the login certificate of extension {KEY}" in out
    out = ok(world.run("apply", "-f", str(by_password), "--timeout", TIMEOUT))
    assert "set the login certificate" in out
    assert len(world.fabric_ips()) == 3
    (agency,) = world.agencies()
    assert EamClient(world.session).agency_solution_id(agency) == KEY  # the solution owns the agency

    # later runs log in as the extension and see the same state
    assert "no changes" in ok(world.run("plan", "-f", str(by_certificate)))
    assert "no changes" in ok(world.run("apply", "-f", str(by_certificate)))
    document = json.loads(ok(world.run("status", "-f", str(by_certificate), "--json")))
    jsonschema.validate(document, status_schema())
    assert document["agencies"][0]["summary"]["ready"] == 3
    out = ok(world.run("destroy", "-f", str(by_certificate), "--yes", "--timeout", TIMEOUT))
    assert "unregistered extension" in out
    assert find_extension(world.session, KEY) is None
    assert world.agencies() == [] and world.agent_vms() == []


# ------------------------------------------------------------------------------------------- bad input


def test_destroy_asks_and_refuses_without_a_terminal(world: World) -> None:
    result = world.run("destroy", "-f", str(world.spec()))
    assert result.exit_code == 2
    assert "pass --yes to confirm" in result.stderr


@pytest.fixture
def lab_for_bad_input(tmp_path: Path) -> Iterator[World]:
    yield from cli_world(tmp_path)


def test_every_bad_input_is_one_line_a_non_zero_exit_and_nothing_changed(lab_for_bad_input: World) -> None:
    world = lab_for_bad_input
    good_sha = hashlib.sha256((EXAMPLES / "contrail-vm/contrail-vm.ovf").read_bytes()).hexdigest()
    cases: list[tuple[str, dict[str, str], dict[str, str], int, str]] = [
        (
            "unknown cluster",
            {"- /DC0/host/DC0_C1": "- /DC0/host/DC0_C9"},
            {},
            2,
            "scope entry /DC0/host/DC0_C9: no cluster or compute resource '/DC0/host/DC0_C9'",
        ),
        ("wrong password", {}, {"AGENTVM_PASSWORD": "wrong"}, 4, "wrong user name or password"),
        ("thumbprint mismatch", {}, {"AGENTVM_THUMBPRINT": "AB:" * 19 + "AB"}, 4, "thumbprint"),
        (
            "OVF unreachable",
            {"url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf": "url: http://127.0.0.1:1/x.ovf"},
            {},
            2,
            "the OVF http://127.0.0.1:1/x.ovf cannot be downloaded (connection refused)",
        ),
        (
            "wrong sha256",
            {
                "url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf": (
                    "url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf\n      sha256: " + "0" * 64
                ),
            },
            {},
            2,
            f"has sha256 {good_sha}, but ovf.sha256 in the spec is {'0' * 64}",
        ),
        (
            "IP plan too small",
            {"range: 10.10.0.10-10.10.0.200": "range: 10.10.0.10-10.10.0.13"},
            {},
            2,
            "the IP plan is too small: 6 hosts need a new address but only 4",
        ),
        (
            "two agencies with one name",
            {
                "agencies:\n": (
                    "agencies:\n  - {name: contrail, ovf: http://x/y.ovf, scope: [/DC0/host/DC0_C0]}\n"
                )
            },
            {},
            2,
            "contrail",
        ),
        (
            "malformed YAML",
            {"apiVersion: agentvm/v1\n": "apiVersion: [agentvm/v1\n"},
            {},
            2,
            "contrail.yaml:",
        ),
    ]
    for name, replace, env, code, message in cases:
        spec = world.spec("contrail.yaml", contrail_text(**replace))
        for command in ("plan", "apply"):
            result = world.run(command, "-f", str(spec), **env)
            assert result.exit_code == code, (name, command, result.exit_code, result.stdout, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert lines and lines[-1].startswith("agentvm: "), (name, result.stderr)
            assert message in " ".join(result.stderr.split()), (name, result.stderr)
            assert result.stdout == "", (name, result.stdout)
            world.nothing_changed()

    # EAM unreachable: the lab's EAM stops; vCenter itself still answers
    assert world.lab.eam is not None
    world.lab.eam.stop()
    result = world.run("apply", "-f", str(world.spec()))
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert "EAM" in result.stderr or "eam" in result.stderr
    assert find_extension(world.session, KEY) is None
    assert [h.agent_vm_datastore for h in world.snapshot().hosts] == [None] * 6


def test_an_agency_name_taken_twice_in_eam_stops_apply_before_any_change(world: World) -> None:
    spec = world.spec()
    ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
    client = EamClient(world.session)
    (agency,) = client.query_agencies()
    config = client.agency_config(agency)
    client.create_agency(config)  # e.g. another tool created one with the same name
    result = world.run("apply", "-f", str(spec))
    assert result.exit_code == 2
    assert "2 agencies are named 'contrail'" in result.stderr
    assert "destroy the extra ones" in result.stderr


# ------------------------------------------------------------------------------------ who owns the agencies


def state_dir(world: World) -> Path:
    """Where the solution's generated certificate of this lab must be: <state dir>/<vcenter>/<key>."""
    host_port = world.info.vcsim.url.split("://", 1)[1].split("/", 1)[0]
    return Path(world.run_env()["AGENTVM_STATE_DIR"]) / host_port.replace(":", "_") / KEY


def certificate_spec(world: World, source: Path, cert: Path, key: Path) -> Path:
    """``source`` switched to ``login: certificate`` with these certificate files (the documented switch)."""
    text = source.read_text().replace(
        "  # certFile: certs/agentvm.crt ", f"  certFile: {cert}\n  keyFile: {key}\n  #"
    )
    text = text.replace("  username: ${AGENTVM_USERNAME}\n", "  login: certificate\n").replace(
        "  passwordEnv: AGENTVM_PASSWORD        # the password itself never goes in this file\n", ""
    )
    return world.spec("by-certificate.yaml", text)


def test_a_password_apply_without_a_certificate_gives_the_agency_to_the_solution(world: World) -> None:
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    out = ok(world.run("plan", "-f", str(spec)))
    assert f"set the login certificate of extension {KEY} to a new one" in " ".join(out.split())
    directory = state_dir(world)
    assert not directory.exists()  # plan changes nothing, not even here

    out = " ".join(ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT)).split())
    cert, key = directory / "solution.crt", directory / "solution.key"
    assert f"generated {cert}" in out and str(key) in out  # apply says where it keeps them
    assert cert.stat().st_mode & 0o777 == 0o600 and key.stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o077 == 0
    (agency,) = world.agencies()
    assert EamClient(world.session).agency_solution_id(agency) == KEY  # the solution's, not the user's
    assert len(world.fabric_ips()) == 3

    # the generated pair is the solution's login from now on: a certificate spec sees the same agency
    by_certificate = certificate_spec(world, spec, cert, key)
    assert "no changes" in ok(world.run("plan", "-f", str(by_certificate)))
    assert "no changes" in ok(world.run("apply", "-f", str(spec)))
    assert world.agencies() == [agency]


def test_switching_to_certificate_login_keeps_the_users_agency_and_every_address(world: World) -> None:
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    # an agency created through a user login (as an older agentvm did): it belongs to the user
    desired = load_spec(spec, env={**os.environ, **world.info.env()})
    (agency_spec,) = desired.agencies
    config = resolve_agency(agency_spec, world.snapshot()).config
    user_eam = EamClient(world.session)
    agency = user_eam.create_agency(config)
    owner = user_eam.agency_solution_id(agency)
    assert owner == world.info.vcsim.username

    # a password apply finds it, says whose it is, answers its hooks; never a second agency
    result = world.run("apply", "-f", str(spec), "--timeout", TIMEOUT)
    out = ok(result)
    said = " ".join(result.stderr.split())
    assert f'agency "contrail" ({agency}) belongs to {owner}, not to the solution {KEY}' in said
    assert "create agency" not in out
    assert world.agencies() == [agency]
    ips = world.fabric_ips()
    assert sorted(ips.values()) == ["10.10.0.10", "10.10.0.11", "10.10.0.12"]

    # the switch to login: certificate: the same agency, the same address on every host, nothing to do
    directory = state_dir(world)
    by_certificate = certificate_spec(world, spec, directory / "solution.crt", directory / "solution.key")
    planned = json.loads(ok(world.run("plan", "-f", str(by_certificate), "--json")))
    assert planned["noChanges"], planned["changes"]
    assert {moid: a["address"] for moid, a in planned["addresses"]["contrail"].items()} == ips
    assert "no changes" in ok(world.run("apply", "-f", str(by_certificate)))
    assert world.agencies() == [agency]
    assert world.fabric_ips() == ips
    # status with that login shows the adopted agency too (EAM lists it to its owner only)
    shown = json.loads(ok(world.run("status", "-f", str(by_certificate), "--json")))
    assert [a["name"] for a in shown["agencies"]] == ["contrail"], shown

    # without the record of the adopted agency a certificate login cannot see it: a refusal, not a second
    (directory / "agencies.json").unlink()
    for command in ("plan", "apply"):
        refused = world.run(command, "-f", str(by_certificate))
        assert refused.exit_code == 2, (command, refused.stdout, refused.stderr)
        message = " ".join(refused.stderr.split())
        assert f"the solution {KEY} does not own it" in message and "vcenter.login: password" in message
    assert world.agencies() == [agency]
    assert world.fabric_ips() == ips

    # a change of the spec goes to the adopted agency through the login that may change it
    changed = world.spec("changed.yaml", spec.read_text().replace("mtu: 9000", "mtu: 1500"))
    out = ok(world.run("apply", "-f", str(changed), "--timeout", TIMEOUT))
    assert f"agency 'contrail' ({agency}): updated (agent_configs)" in out
    assert world.agencies() == [agency]
    mtu = {p.key: p.value for p in user_eam.agency_config(agency).agent_configs[0].ovf_environment}["mtu"]
    assert mtu == "1500"

    # a password destroy removes the adopted agency through the same login
    out = ok(world.run("destroy", "-f", str(spec), "--yes", "--timeout", TIMEOUT))
    assert "destroyed agency contrail" in out
    assert world.agencies() == [] and world.agent_vms() == []


# ---------------------------------------------------------------------------------- apply heals while waiting


def test_apply_powers_on_an_agent_vm_powered_off_behind_its_back(world: World) -> None:
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
    vm = world.agent_vms()[0]
    ensure_powered_off(world.session, vm.moref)
    wait_for(lambda: "VmPoweredOff" in ok(world.run("status", "-f", str(spec), "--json")))

    assert "resolve VmPoweredOff" in ok(world.run("plan", "-f", str(spec)))
    result = world.run("apply", "-f", str(spec), "--timeout", TIMEOUT, "--json")
    report = json.loads(ok(result))
    assert report["green"] and report["problems"] == []
    assert any("resolved VmPoweredOff" in a and "attempt 1 of" in a for a in report["actions"])
    assert world.snapshot().find_vm(vm.moref.value).power_state.value == "poweredOn"
    assert "no changes" in ok(world.run("apply", "-f", str(spec)))


def test_a_passive_issue_stops_apply_at_once_naming_the_issue_the_host_and_the_fix(world: World) -> None:
    # the agent VMs use each host's AgentVM network, and no host has one: EAM raises NoAgentVmNetwork
    spec = world.spec(text=contrail_text(**ONE_CLUSTER, **{"network: VM Network": "network: host"}))
    result = world.run("apply", "-f", str(spec), "--timeout", "300", "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert not report["green"]
    assert report["polls"] <= 10  # a wait of 300 s polls about 150 times
    # the plan warned about the hosts already; the last line says why apply stopped
    assert "has no AgentVM network and agency contrail uses the host's settings" in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("agentvm: apply stopped: contrail: NoAgentVmNetwork #")
    hosts = {h.moref.value: h for h in world.snapshot().hosts}
    named = re.findall(r"NoAgentVmNetwork #\d+ on host (host-\d+) \(([^)]+)\)", message)
    assert sorted(named) == sorted((moid, h.path) for moid, h in hosts.items() if "DC0_C0" in h.path)
    assert "fix: set the host's agent VM network" in message
    assert world.agent_vms() == []


def test_an_agent_vm_powered_off_while_apply_waits_is_powered_on_by_apply(world: World) -> None:
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    desired = load_spec(spec, env={**os.environ, **world.info.env()})
    eam_view = EamBackend(world.session)
    powered_off: list[str] = []

    def sleep(seconds: float) -> None:
        """Between two polls of the wait: once EAM calls an agent green, power its VM off and let EAM see
        it (apply cannot finish meanwhile: it is in this call)."""
        time.sleep(seconds)
        status = eam_view.observe("contrail")
        green = [a.vm for a in status.agents if a.status.value == "green" and a.vm] if status else []
        if powered_off or not green:
            return
        ensure_powered_off(world.session, green[0])
        powered_off.append(green[0].value)

        def raised() -> bool:
            now = eam_view.observe("contrail")
            return now is not None and "VmPoweredOff" in {i.kind.value for i in now.issues}

        wait_for(raised)

    with Solution(desired, world.session, sleep=sleep, state_dir=world.tmp / "state") as solution:
        report = solution.apply(timeout=120)
    assert powered_off, "no agent VM ran before apply ended"
    assert report.green and report.problems == ()
    assert [a for a in report.actions if "resolved VmPoweredOff" in a and "attempt 1 of" in a]
    assert world.snapshot().find_vm(powered_off[0]).power_state.value == "poweredOn"


def test_a_host_in_maintenance_mode_does_not_hold_apply_until_its_timeout(world: World) -> None:
    """Its agent is deployed when it leaves maintenance mode (by EAM or the controller): apply says so and
    ends once every other host is ready, instead of polling until --timeout."""
    host = next(h for h in world.snapshot().hosts if h.path.endswith("DC0_C0/DC0_C0_H1"))
    ensure_maintenance_mode(world.session, host.moref, True)
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    result = world.run("apply", "-f", str(spec), "--timeout", "300", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["polls"] <= 40  # a wait of 300 s polls about 150 times
    assert "DC0_C0_H1" in result.stderr and "maintenance mode" in result.stderr
    assert len(world.fabric_ips()) == 2  # the other two hosts have their agent, configured
    # status reads "maintenance" for that host, as the dashboard does
    out = ok(world.run("status", "-f", str(spec)))
    (row,) = [ln for ln in out.splitlines() if "DC0_C0_H1" in ln.split() and not ln.startswith("issue")]
    assert "maintenance" in row.split(), out


def test_status_watch_taller_than_the_terminal_hides_no_host(tmp_path: Path) -> None:
    """30 hosts in a 24-line terminal: every host is drawn (the terminal scrolls), none left out."""
    from agentvm.lab.vcsim import Shape

    with Lab(Shape(clusters=1, hosts=30), netsync=False) as info:
        session = connect(info)
        world = World(Lab(), info, session, tmp_path)  # the Lab object is unused: info is the running lab
        try:
            spec = world.spec(text=contrail_text(**ONE_CLUSTER))
            ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
            hosts = {h.name for h in world.snapshot().hosts}
            assert len(hosts) == 30
            argv = [sys.executable, "-m", "agentvm.cli.main", "status", "-f", str(spec), "-w"]
            argv += ["--count", "2", "--interval", "0.2"]
            screen = tmux_screen(argv, {**os.environ, **world.run_env()}, width=80, height=24)
        finally:
            session.logout()
    assert hosts <= set(screen.split()), screen
