"""One actor per spec: concurrent ``apply``/``run`` on one vCenter and solution, guarded by the lease.

Four applies at once give one agency; two controllers never both act (docs/architecture.md, "Leases").
Every ``agentvm`` here is a separate process (``python -m agentvm.cli.main``), as an
operator would start them, against a fresh lab; the lease TTL is shortened through ``AGENTVM_LEASE_TTL``.
What happened is checked independently: the agencies EAM holds, and every MarkAsAvailable the lab's EAM
received (counted per agent inside the lab, which runs in this process).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentvm.controller.executor import extension_spec
from agentvm.eam.client import EamClient
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.spec import load_spec
from agentvm.vsphere.extensions import read_lease_records, register_extension
from agentvm.vsphere.inventory import read_inventory
from tests.support.controller_lab import connect, spec_text, wait_for

pytestmark = pytest.mark.lab

ONE_HOST = {"      - /DC0/host/DC0_C1\n": ""}
KEY = "org.tungsten.agentvm"
# 20 trials take about 110 s on a loaded 2-core machine (about 5.5 s each: four processes, one deploy):
# CI runs 6; AGENTVM_TEST_LEASE_TRIALS=20 gives the figure of 20 trials.
TRIALS = int(os.environ.get("AGENTVM_TEST_LEASE_TRIALS", "6"))
_PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
_STATE = {"AGENTVM_STATE_DIR": os.environ.get("AGENTVM_STATE_DIR", "")}  # the test's (conftest), not ~
APPLIES = 4


def cli(info: LabInfo, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``agentvm ARGS`` as its own process with the lab's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentvm.cli.main", *args],
        env={**info.env(), "PATH": "/usr/bin:/bin", "COLUMNS": "250", **_PYTHONPATH, **_STATE, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def agencies_named(info: LabInfo, name: str) -> int:
    session = connect(info)
    try:
        return list(EamClient(session).agency_names().values()).count(name)
    finally:
        session.logout()


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "contrail.yaml"
    path.write_text(spec_text(**ONE_HOST))
    return path


def test_four_concurrent_applies_create_exactly_one_agency_in_every_trial(spec: Path) -> None:
    counts, failures = [], []
    for trial in range(TRIALS):
        with Lab(Shape(clusters=1, hosts=1), netsync=False) as info:
            if trial % 2:  # every other trial races on the agency alone (the extension is there already)
                session = connect(info)
                desired = load_spec(spec, env=info.env())
                register_extension(session, extension_spec(desired.solution))
                session.logout()
            procs = [
                cli(info, "apply", "-f", str(spec), "--timeout", "60", AGENTVM_LEASE_TTL="3")
                for _ in range(APPLIES)
            ]
            outputs = [p.communicate(timeout=180) for p in procs]
            counts.append(agencies_named(info, "contrail"))
            failures += [err for p, (_out, err) in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert counts == [1] * TRIALS
    assert failures == []


class Run:
    """One ``agentvm run`` child with JSON logs; its stderr lines collected by a reader thread."""

    def __init__(self, info: LabInfo, spec: Path, *extra: str, ttl: str = "3") -> None:
        args = ["run", "-f", str(spec), "--listen", "127.0.0.1:0", "--log-format", "json"]
        args += ["--poll", "0.2", "--idle-poll", "0.5", "--resync", "2", "--lease-ttl", ttl, *extra]
        self.proc = cli(info, *args)
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))

    def wait_line(self, action: str, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if record.get("action") == action:
                return record
        raise AssertionError(f"no {action!r} line within {timeout} s; stderr:\n{''.join(self.raw[-30:])}")

    def actions(self, action: str) -> list[str]:
        return [
            line for line in self.raw if f'"action": "{action}"' in line or f'"action":"{action}"' in line
        ]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Controllers:
    """A lab whose EAM counts every MarkAsAvailable it receives, per agent."""

    lab: Lab
    info: LabInfo
    spec: Path
    marked: Counter[str]
    runs: list[Run]

    def start(self, *extra: str) -> Run:
        run = Run(self.info, self.spec, *extra)
        self.runs.append(run)
        return run

    def fabric_ips(self) -> dict[str, str]:
        session = connect(self.info)
        try:
            vms = read_inventory(session, extra_config_prefix="guestinfo.").vms
        finally:
            session.logout()
        return {
            vm.host.value: vm.extra_config["guestinfo.fabricIp"]
            for vm in vms
            if vm.name.startswith("contrail-vm") and vm.host and "guestinfo.fabricIp" in vm.extra_config
        }

    def lease_holders(self) -> list[int]:
        """The pid of every lease record's holder, by generation."""
        session = connect(self.info)
        try:
            return [r.holder.pid for r in read_lease_records(session, KEY) if r.holder and not r.released]
        finally:
            session.logout()


@pytest.fixture
def controllers(spec: Path) -> Iterator[Controllers]:
    lab = Lab(Shape(clusters=1, hosts=2), netsync=False)
    info = lab.start()
    engine = lab.eam.engine if lab.eam is not None else None
    assert engine is not None
    marked: Counter[str] = Counter()
    mark = engine.mark_as_available

    def counting(agent: str) -> None:
        marked[agent] += 1
        mark(agent)

    engine.mark_as_available = counting  # type: ignore[method-assign]
    world = Controllers(lab, info, spec, marked, [])
    try:
        yield world
    finally:
        for run in world.runs:
            run.kill()
        lab.stop()


def test_two_controllers_on_one_spec_one_acts_and_the_other_refuses_naming_it(
    controllers: Controllers,
) -> None:
    first, second = controllers.start(), controllers.start()
    wait_for(lambda: len(controllers.fabric_ips()) == 2, "both agents configured", 120)
    wait_for(lambda: first.proc.poll() is not None or second.proc.poll() is not None, "one run refusing", 30)
    refused, actor = (first, second) if first.proc.poll() is not None else (second, first)
    assert refused.proc.returncode == 3
    message = "".join(refused.raw)
    assert f"agentvm run (host {socket.gethostname()}, pid {actor.proc.pid}, since " in message
    assert "refusing to act" in message
    assert refused.actions("answer-hook") == []
    assert actor.stop() == 0
    assert len(controllers.marked) == 2
    assert sorted(controllers.marked.values()) == [1, 1]  # one MarkAsAvailable per agent: one actor


def test_a_standby_takes_over_one_ttl_after_the_holder_is_killed(controllers: Controllers) -> None:
    holder = controllers.start()
    holder.wait_line("lease")
    wait_for(lambda: len(controllers.fabric_ips()) == 2, "both agents configured", 120)
    standby = controllers.start("--standby")
    standby.wait_line("lease-wait")
    assert controllers.lease_holders() == [holder.proc.pid]
    # read-only commands never need the lease; apply refuses while a controller holds it
    for command in ("plan", "status"):
        read = cli(controllers.info, command, "-f", str(controllers.spec))
        out, err = read.communicate(timeout=60)
        assert read.returncode == 0, (command, out, err)
    # an apply with nothing to do says so and takes no lease; one with changes refuses
    apply = cli(controllers.info, "apply", "-f", str(controllers.spec), AGENTVM_LEASE_TTL="3")
    out, err = apply.communicate(timeout=60)
    assert apply.returncode == 0, (out, err)
    assert "no changes" in out
    assert controllers.lease_holders() == [holder.proc.pid]
    changed = controllers.spec.with_name("changed.yaml")
    changed.write_text(controllers.spec.read_text().replace('version: "1.0.0"', 'version: "1.0.1"', 1))
    assert changed.read_text() != controllers.spec.read_text()
    apply = cli(controllers.info, "apply", "-f", str(changed), AGENTVM_LEASE_TTL="3")
    _out, err = apply.communicate(timeout=60)
    assert apply.returncode == 3
    assert f"agentvm run (host {socket.gethostname()}, pid {holder.proc.pid}" in err
    assert "that controller applies the spec itself" in err

    killed = time.monotonic()
    holder.kill()  # SIGKILL: the lease is not released
    took = standby.wait_line("lease", 30)
    takeover = time.monotonic() - killed
    print(f"takeover {takeover:.2f} s after kill -9 (TTL 3 s): {took['message']}")
    assert controllers.lease_holders() == [standby.proc.pid]
    url = str(standby.wait_line("listen")["message"]).rsplit(" ", 1)[-1]
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the standby acting", 60)
    assert standby.stop() == 0
    assert sorted(controllers.marked.values()) == [1, 1]


def test_destroy_removes_the_lease_records(spec: Path) -> None:
    with Lab(Shape(clusters=1, hosts=1), netsync=False) as info:
        for args in (["apply", "-f", str(spec)], ["destroy", "-f", str(spec), "--yes"]):
            proc = cli(info, *args, AGENTVM_LEASE_TTL="3")
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (args, out, err)
            session = connect(info)
            try:
                keys = [str(e.key) for e in session.content.extensionManager.extensionList or ()]
            finally:
                session.logout()
            lease_keys = [k for k in keys if k.startswith(f"{KEY}.lease.")]
            if args[0] == "apply":
                assert len(lease_keys) == 1  # released, kept: the highest number always exists
            else:
                assert lease_keys == [] and KEY not in keys


def test_an_apply_refused_by_validation_leaves_no_lease_record(tmp_path: Path) -> None:
    """Nothing is changed on a validation error: not even the lease's record in vCenter."""
    bad = tmp_path / "contrail.yaml"
    bad.write_text(
        spec_text(**ONE_HOST, **{"      - /DC0/host/DC0_C0\n": "      - /DC0/host/NO_SUCH_CLUSTER\n"})
    )
    with Lab(Shape(clusters=1, hosts=1), netsync=False) as info:
        proc = cli(info, "apply", "-f", str(bad), AGENTVM_LEASE_TTL="3")
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert "NO_SUCH_CLUSTER" in err
        session = connect(info)
        try:
            keys = [str(e.key) for e in session.content.extensionManager.extensionList or ()]
        finally:
            session.logout()
    assert [k for k in keys if k.startswith(KEY)] == []
