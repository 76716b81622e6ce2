"""``agentvm events [-f] [--json] [--since]`` against a controller on the lab.

The controller runs in-process (``tests.support.controller_lab.World``) behind a real ``ApiServer``;
``agentvm events`` runs as a process reading that API. A powered-off agent VM makes the controller heal
it: its heal events must name the agency by name and the host by inventory path, in the API and in the
CLI's output.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

import agentvm
from agentvm.api.server import Api, ApiServer
from agentvm.controller.run import api_callables
from agentvm.model.agency import PowerState
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.controller_lab import World, deployed, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


def cli(*args: str, server: str) -> subprocess.Popen[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(agentvm.__file__).resolve().parents[1]),
        "AGENTVM_SERVER": server,
        "AGENTVM_STATE_DIR": os.environ["AGENTVM_STATE_DIR"],
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agentvm.cli.main", "events", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(*args: str, server: str) -> tuple[int, str, str]:
    proc = cli(*args, server=server)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture
def served(world: World) -> Iterator[tuple[World, str]]:
    deployed(world)
    assert world.controller is not None
    with ApiServer(Api(**api_callables(world.controller)), port=0) as server:
        yield world, server.url


def heal_one(world: World) -> str:
    """Power an agent VM off and wait for the controller to power it on again; its host's moid."""
    victim = world.agent_vms()[0]
    assert victim.host is not None
    ensure_powered_off(world.session, victim.moref)
    wait_for(
        lambda: (
            next(v for v in world.agent_vms() if v.moref == victim.moref).power_state is PowerState.POWERED_ON
        ),
        "the agent VM powered on again",
    )
    wait_for(lambda: world.events(type="heal"), "a heal event")
    return victim.host.value


def events_schema() -> dict[str, object]:
    """The schema shipped in the package (read as a file: the test does not trust the code's loader)."""
    text = (Path(agentvm.__file__).parent / "api" / "schema" / "events-v1.json").read_text()
    schema: dict[str, object] = json.loads(text)
    return schema


def host_path(world: World, moid: str) -> str:
    return next(h.path for h in world.snapshot().hosts if h.moref.value == moid)


def test_heal_events_name_the_agency_and_the_host_path(served: tuple[World, str]) -> None:
    world, url = served
    moid = heal_one(world)
    path = host_path(world, moid)
    assert path.startswith("/DC0/host/")
    body = httpx.get(f"{url}/api/v1/events", params={"limit": 1000}).json()  # curl's way, no Accept
    about_agents = [e for e in body["events"] if e["type"] in ("heal", "issue", "action") and "agency" in e]
    heals = [e for e in about_agents if e["type"] == "heal"]
    assert heals, body
    for event in about_agents:
        assert event["agency"] == "contrail", event
    for event in heals:
        assert event.get("host") == moid and event.get("host_name") == path, event
        assert "agent-" not in event["message"], event  # EAM's agent ids mean nothing to an operator

    code, out, err = run_cli(server=url)
    assert code == 0, err
    lines = [line for line in out.splitlines() if " heal " in line]
    assert lines and all(" contrail " in line and f" {path} " in line for line in lines), out

    code, out, err = run_cli("--json", server=url)
    assert code == 0, err
    document = json.loads(out)
    jsonschema.validate(document, events_schema())
    assert document["kind"] == "Events" and document["apiVersion"] == "agentvm/v1"
    assert [e["id"] for e in document["events"]] == [e["id"] for e in body["events"]][-100:]
    assert any(e["type"] == "heal" and e["hostName"] == path for e in document["events"])

    code, out, err = run_cli("--json", "--since", "2100-01-01T00:00:00Z", server=url)
    assert code == 0 and json.loads(out)["events"] == [], err
    code, out, err = run_cli("--since", "1d", "-n", "1000", server=url)
    assert code == 0 and len(out.splitlines()) == len(body["events"]), err


def test_events_follow_prints_new_events_as_they_come(served: tuple[World, str]) -> None:
    world, url = served
    proc = cli("-f", "--json", "--since", "1s", server=url)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert world.controller is not None
        moid = heal_one(world)
        path = host_path(world, moid)
        seen: list[dict[str, object]] = []
        while not any(e["type"] == "heal" for e in seen):
            seen.append(json.loads(lines.get(timeout=60)))
        ids = [int(str(e["id"])) for e in seen]
        assert ids == sorted(set(ids)), ids  # each once, in order
        schema = events_schema()
        for event in seen:  # each line is one event of the Events schema
            jsonschema.validate(event, {"$defs": schema["$defs"], "$ref": "#/$defs/event"})
        heal = next(e for e in seen if e["type"] == "heal")
        assert heal["agency"] == "contrail" and heal["hostName"] == path, heal
    finally:
        proc.kill()
        proc.wait(10)


def test_no_controller_at_the_server_is_one_line_and_exit_3() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = probe.getsockname()[1]  # closed below: nothing listens there afterwards
    code, out, err = run_cli(server=f"http://127.0.0.1:{free}")
    assert code == 3 and out == "", err
    assert err.count("\n") == 1 and f"http://127.0.0.1:{free}" in err and "AGENTVM_SERVER" in err


@pytest.mark.parametrize("server", ["127.0.0.1:8080", "ftp://127.0.0.1:8080", "http://"])
def test_a_server_that_is_not_an_http_url_is_one_line_and_exit_2(server: str) -> None:
    code, _, err = run_cli(server=server)
    assert code == 2 and err.count("\n") == 1 and "--server" in err and "http://HOST:PORT" in err, err
