"""``agentvm run`` as a process on the lab: SIGTERM ends it cleanly, SIGKILL mid-deploy loses nothing.

The controller runs as ``python -m agentvm.cli.main run`` with JSON logs on stderr; the test reads the
API address from the ``listen`` log line (``--listen 127.0.0.1:0``), and checks vCenter itself.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import agentvm
from agentvm.lab.world import Lab
from tests.integration.test_controller import ONE_CLUSTER, World, connect, spec_text, wait_for

pytestmark = pytest.mark.lab


class Process:
    """One ``agentvm run`` child; its JSON log lines collected by a reader thread."""

    def __init__(self, world: World, *extra: str) -> None:
        env = {**world.info.env(), "AGENTVM_API_TOKEN": "test-token-123", "PATH": "/usr/bin:/bin"}
        env["PYTHONPATH"] = str(Path(agentvm.__file__).resolve().parents[1])  # the agentvm under test
        env.setdefault("AGENTVM_STATE_DIR", os.environ["AGENTVM_STATE_DIR"])  # the test's (conftest), never ~
        args = ["run", "-f", str(world.spec), "--listen", "127.0.0.1:0", "--log-format", "json"]
        args += ["--poll", "0.2", "--idle-poll", "0.5", "--resync", "2", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentvm.cli.main", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_line(lambda r: r.get("action") == "listen", 60)
        self.url = str(listening["message"]).rsplit(" ", 1)[-1]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def wait_line(self, match: object, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(record)
            if match(record):  # type: ignore[operator]
                return record
        raise AssertionError(f"no such log line within {timeout} s; stderr:\n{''.join(self.raw[-40:])}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    lab = Lab()
    info = lab.start()
    session = connect(info)
    spec = tmp_path / "contrail.yaml"
    spec.write_text(spec_text(**ONE_CLUSTER))
    try:
        yield World(lab, info, session, spec)
    finally:
        session.logout()
        lab.stop()


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
