"""A second day with the lab, as a user types it: ``lab up``, ``apply``, ``netsync apply``, ``lab down``, then
``lab up`` and ``apply`` again in the same lab directory ($AGENTVM_LAB_DIR).

vcsim keeps its inventory in memory only, so every ``lab up`` is a new world; the lab's EAM agencies and
the SDN emulator's objects must start with it, never carry over from the world before.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentvm.lab.runner import LabState, pid_alive, read_state
from tests.support.lab_cli import agentvm
from tests.support.netsync_lab import VCenter

pytestmark = pytest.mark.lab


@pytest.fixture
def env(lab_env: dict[str, str]) -> dict[str, str]:
    """The environment of ``agentvm lab`` commands (tests/integration/conftest.py)."""
    return lab_env


SPEC = str(Path(__file__).resolve().parents[2] / "examples" / "contrail.yaml")
SDN_TYPES = ("virtual-network", "virtual-machine", "virtual-machine-interface", "instance-ip")


def lab_up(env: dict[str, str]) -> tuple[LabState, dict[str, str]]:
    """``agentvm lab up``, then ``eval "$(agentvm lab env)"``: the recorded state and the environment."""
    up = agentvm("lab", "up", env=env)
    assert up.returncode == 0, up.stderr
    variables = json.loads(agentvm("lab", "env", "--json", env=env).stdout)["variables"]
    state = read_state(Path(env["AGENTVM_LAB_DIR"]))
    assert state is not None
    status = json.loads(agentvm("lab", "status", "--json", env=env).stdout)
    assert status["world"] == state.vcsim.instance_uuid and uuid.UUID(status["world"])
    return state, {**env, **variables}


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def lab_ports(state: LabState) -> list[int]:
    """Every port the lab listens on: vCenter, its EAM backend, packages, SDN API, each vRouter agent."""
    urls = [state.vcsim.url, state.eam_backend, state.ovf_url, state.sdn_url]
    urls += json.loads(Path(state.vrouter_map).read_text()).values()
    ports = [int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]) for url in urls]
    assert len(ports) == 4 + len(json.loads(Path(state.vrouter_map).read_text()))
    return ports


def lab_down_leaves_nothing(env: dict[str, str], state: LabState) -> None:
    ports = lab_ports(state)
    pids = [state.supervisor_pid, *state.pids.values()]
    assert all(listening(p) for p in ports) and all(pid_alive(p) for p in pids)
    down = agentvm("lab", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert [p for p in ports if listening(p)] == []
    assert [p for p in pids if pid_alive(p)] == []  # gone, or a zombie waiting for init to reap it


def sdn_objects(sdn_url: str) -> dict[str, dict[str, Any]]:
    """uuid -> object of every type netsync writes, as the SDN controller holds them now."""
    found: dict[str, dict[str, Any]] = {}
    for kind in SDN_TYPES:
        with urllib.request.urlopen(f"{sdn_url}/{kind}s?detail=True", timeout=10) as resp:
            for item in json.loads(resp.read())[f"{kind}s"]:
                body = item.get(kind, item)
                found[body["uuid"]] = body
    return found


def apply(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return agentvm("apply", "-f", SPEC, "--timeout", "30", env=env)


def agency_summary(env: dict[str, str]) -> tuple[str, dict[str, int]]:
    """``agentvm status --json``: the colour and the summary of the spec's one agency."""
    done = agentvm("status", "-f", SPEC, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (agency,) = json.loads(done.stdout)["agencies"]
    return agency["status"], agency["summary"]


def netsync(env: dict[str, str], command: str) -> dict[str, Any]:
    done = agentvm("netsync", command, "--json", env=env)
    assert done.stdout, done.stderr
    return dict(json.loads(done.stdout))


def test_apply_on_a_second_day_reaches_all_green_and_netsync_sees_only_the_new_world(
    env: dict[str, str],
) -> None:
    # day 1: the demo, plus a tenant network and VM for netsync to mirror
    state, day1 = lab_up(env)
    vc = VCenter(state.vcsim)
    pg = vc.port_group("pg-day1", 700, ("10.70.0.0", "10.70.0.1", "10.70.0.10#20"))
    vc.run(vc.vm("day1-vm", pg, host=0).PowerOnVM_Task(), "power on")
    vc.session.logout()
    first = apply(day1)
    assert first.returncode == 0, first.stdout + first.stderr
    colour, summary = agency_summary(day1)
    assert colour == "green" and (summary["hosts"], summary["ready"], summary["issues"]) == (6, 6, 0)
    assert netsync(day1, "apply")["applied"]["failures"] == []
    before = sdn_objects(state.sdn_url)
    assert "day1-vm" in {o.get("display_name") for o in before.values()}
    lab_down_leaves_nothing(env, state)

    # day 2: a new vcsim world in the same lab directory
    world1 = state.vcsim.instance_uuid
    state, day2 = lab_up(env)
    assert state.vcsim.instance_uuid != world1
    assert sdn_objects(state.sdn_url) == {}  # the SDN controller starts with the world it runs with
    second = apply(day2)
    assert second.returncode == 0, second.stdout + second.stderr
    colour, summary = agency_summary(day2)
    assert colour == "green" and (summary["hosts"], summary["ready"], summary["issues"]) == (6, 6, 0)

    planned = netsync(day2, "plan")
    assert planned["delete"] == [], planned["delete"]  # nothing of day 1 to clean up
    assert netsync(day2, "apply")["applied"]["failures"] == []
    after = sdn_objects(state.sdn_url)
    assert after and not set(after) & set(before)
    assert "day1-vm" not in {o.get("display_name") for o in after.values()}
    lab_down_leaves_nothing(env, state)


def test_a_world_left_behind_by_a_killed_lab_is_discarded_by_the_next_lab_up(env: dict[str, str]) -> None:
    state, day1 = lab_up(env)
    first = apply(day1)
    assert first.returncode == 0, first.stdout + first.stderr
    os.kill(state.supervisor_pid, signal.SIGKILL)  # no clean stop: the world's state stays on disk
    deadline = time.monotonic() + 30
    while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(state.supervisor_pid)

    again, day2 = lab_up(env)
    log = (Path(env["AGENTVM_LAB_DIR"]) / "runner.log").read_text()
    (line,) = [line for line in log.splitlines() if "discarding the lab state" in line]
    assert state.vcsim.instance_uuid in line and again.vcsim.instance_uuid in line
    assert "eam-state.json" in line and "sdn-config-api.sqlite" in line
    second = apply(day2)
    assert second.returncode == 0, second.stdout + second.stderr
    colour, summary = agency_summary(day2)
    assert colour == "green" and (summary["hosts"], summary["ready"], summary["issues"]) == (6, 6, 0)
    lab_down_leaves_nothing(env, again)
    assert [p for p in state.pids.values() if pid_alive(p)] == []  # day 1's vcsim too
