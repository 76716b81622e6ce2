"""``agentvm run`` as a process on the lab: SIGTERM ends it cleanly, SIGKILL mid-deploy loses nothing.

The controller runs as ``python -m agentvm.cli.main run`` with JSON logs on stderr; the test reads the
API address from the ``listen`` log line (``--listen 127.0.0.1:0``), and checks vCenter itself.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.support.controller_lab import Process, World, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


def test_sigterm_stops_the_controller_cleanly_with_exit_0(world: World) -> None:
    process = Process(world)
    try:
        wait_for(lambda: httpx.get(f"{process.url}/readyz").status_code == 200, "readyz", 90)
        status = httpx.get(f"{process.url}/api/v1/status").json()
        assert status["kind"] == "Status"
        assert httpx.post(f"{process.url}/api/v1/resync").status_code == 401  # no token, no change
        headers = {"Authorization": "Bearer test-token-123"}
        assert httpx.post(f"{process.url}/api/v1/resync", headers=headers).status_code == 202
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(15) == 0
        assert time.monotonic() - started < 10
        process.wait_line(lambda r: r.get("action") == "exit", 5)
        text = "".join(process.raw)
        assert "test-token-123" not in text and world.info.vcsim.password not in text
    finally:
        process.kill()


def test_a_controller_killed_mid_deploy_and_restarted_leaves_one_agent_per_host(world: World) -> None:
    first = Process(world)
    try:
        # kill it as soon as it has answered the first hook: the other agents are still being deployed
        first.wait_line(lambda r: r.get("action") == "answer-hook", 90)
    finally:
        first.kill()
    second = Process(world)
    try:
        wait_for(
            lambda: (
                httpx.get(f"{second.url}/api/v1/status").status_code == 200
                and all(
                    a["status"] == "green"
                    for a in httpx.get(f"{second.url}/api/v1/status").json()["agencies"]
                )
            ),
            "green after the restart",
            120,
        )
        vms = wait_for(lambda: world.one_agent_per_host(3), "exactly one agent per host")
        assert sorted(v.extra_config["guestinfo.fabricIp"] for v in vms) == [
            "10.10.0.10",
            "10.10.0.11",
            "10.10.0.12",
        ]
        # no orphans: every contrail VM in the inventory is one of EAM's agents
        status = httpx.get(f"{second.url}/api/v1/status").json()
        agents = {
            h["vm"]["moid"] for a in status["agencies"] for c in a["clusters"] for h in c["hosts"] if h["vm"]
        }
        assert {v.moref.value for v in world.agent_vms()} == agents
    finally:
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(15) == 0
