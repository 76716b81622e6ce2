"""The controller's lab world: a fresh lab, the test's own vCenter session, a spec file, a controller.

Shared by the tests of ``agentvm run`` in-process (``World.start()``) and as a process (``Process``); the
fixture is ``controller_world`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyVmomi import vim

import agentvm
from agentvm.controller.run import Controller, Settings
from agentvm.core.heal import HealPolicy
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import InventorySnapshot, VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


FAST = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=2.0, retry_max=1.0)


T = TypeVar("T")


def connect(info: LabInfo, timeout: float = 30.0) -> Session:
    conn = VCenterConnection(
        url=info.vcsim.url,
        username=info.vcsim.username,
        password=Secret(info.vcsim.password),
        thumbprint=info.vcsim.thumbprint,
    )
    return Session.connect(conn, timeout=timeout)


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 90.0, interval: float = 0.2) -> T:
    """Poll ``check`` every ``interval`` s until it returns something truthy; fail naming ``what`` after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class World:
    lab: Lab
    info: LabInfo
    session: Session  # the test's own session, to look and to break things
    spec: Path
    controller: Controller | None = None
    controller_session: Session | None = None

    def snapshot(self) -> InventorySnapshot:
        return read_inventory(self.session, extra_config_prefix="guestinfo.")

    def agent_vms(self) -> list[VirtualMachine]:
        return sorted(
            (v for v in self.snapshot().vms if v.name.startswith("contrail-vm")), key=lambda v: v.name
        )

    def start(
        self, settings: Settings = FAST, timeout: float = 30.0, policy: HealPolicy | None = None
    ) -> Controller:
        desired = load_spec(self.spec, env=self.info.env())
        self.controller_session = connect(self.info, timeout=timeout)
        self.controller = Controller(
            desired, self.controller_session, settings=settings, policy=policy
        ).start()
        return self.controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            assert not self.controller.join(0), "the controller did not stop"
            self.controller = None

    def all_green(self) -> bool:
        c = self.controller
        if c is None or not c.ready():
            return False
        report = c.reconciler.report
        return (
            bool(report.agencies)
            and all(a.status.green for a in report.agencies)
            and all(v.power_state is PowerState.POWERED_ON for v in self.agent_vms())
        )

    def one_agent_per_host(self, hosts: int) -> list[VirtualMachine]:
        vms = self.agent_vms()
        on = [v for v in vms if v.host is not None]
        assert len({v.host for v in on}) == len(on), f"two agents on one host: {[v.name for v in vms]}"
        return vms if len(vms) == hosts else []

    def events(self, **match: object) -> list[dict[str, object]]:
        assert self.controller is not None
        out = []
        for event in self.controller.events.recent():
            data = event.as_json()
            if all(data.get(k) == v or (data.get("data") or {}).get(k) == v for k, v in match.items()):  # type: ignore[union-attr]
                out.append(data)
        return out


def spec_text(**replace: str) -> str:
    text = (EXAMPLES / "contrail.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


ONE_CLUSTER = {"      - /DC0/host/DC0_C1\n": ""}


def without_host_network(text: str) -> str:
    """The spec without its agency's ``hostNetwork`` section: for tests that count what the agents alone
    cost (the hosts' networking adds its own reads and writes, counted by the hostnet tests)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("    hostNetwork:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return "".join(lines[:start] + lines[end:])


def deployed(world: World, hosts: int = 3, policy: HealPolicy | None = None) -> list[VirtualMachine]:
    """Start the controller on an empty lab: it registers, creates the agency and answers every hook."""
    world.start(policy=policy)
    wait_for(world.all_green, "the controller to deploy every agent and turn green", 120)
    return wait_for(lambda: world.one_agent_per_host(hosts), f"{hosts} agent VMs")


def relocate(session: Session, vm: VirtualMachine, host: MoRef) -> None:
    """Move ``vm`` to ``host`` behind agentvm's back, as an administrator would (RelocateVM)."""
    spec = vim.vm.RelocateSpec(host=session.mo(host))
    wait_for_task(session, session.mo(vm.moref).RelocateVM_Task(spec=spec), what=f"relocate {vm.name}")


def host_doc(document: dict[str, object], moid: str) -> dict[str, object]:
    for agency in document["agencies"]:  # type: ignore[attr-defined]
        for cluster in agency["clusters"]:
            for host in cluster["hosts"]:
                if host["moid"] == moid:
                    return dict(host)
    raise AssertionError(f"host {moid} is not in the status document")


class RunChild:
    """One ``agentvm run`` child (``args`` after ``agentvm``, with ``env``), its JSON log lines collected by a
    reader thread; built once its API listens (``url``)."""

    def __init__(self, env: dict[str, str], args: list[str]) -> None:
        # the agentvm under test
        env = {**env, "PYTHONPATH": str(Path(agentvm.__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentvm.cli.main", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
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

    def wait_line(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(record)
            if match(record):
                return record
        raise AssertionError(f"no such log line within {timeout} s; stderr:\n{''.join(self.raw[-40:])}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Process(RunChild):
    """One ``agentvm run`` child on ``world``'s spec."""

    def __init__(self, world: World, *extra: str) -> None:
        env = {**world.info.env(), "AGENTVM_API_TOKEN": "test-token-123", "PATH": "/usr/bin:/bin"}
        env.setdefault("AGENTVM_STATE_DIR", os.environ["AGENTVM_STATE_DIR"])  # the test's (conftest), never ~
        args = ["run", "-f", str(world.spec), "--listen", "127.0.0.1:0", "--log-format", "json"]
        args += ["--poll", "0.2", "--idle-poll", "0.5", "--resync", "2", *extra]
        super().__init__(env, args)


def controller_world(tmp_path: Path, shape: Shape | None = None, *, netsync: bool = True) -> Iterator[World]:
    """A fresh lab (``shape``, default the lab's own) and a spec of examples/contrail.yaml on one cluster;
    the controller stopped at the end."""
    lab = Lab(shape, netsync=netsync) if shape is not None else Lab(netsync=netsync)
    info = lab.start()
    session = connect(info)
    spec = tmp_path / "contrail.yaml"
    spec.write_text(spec_text(**ONE_CLUSTER))
    w = World(lab, info, session, spec)
    try:
        yield w
    finally:
        try:
            w.stop()
        finally:
            session.logout()
            lab.stop()


@contextlib.contextmanager
def lab_world(tmp_path: Path, hosts: int) -> Iterator[World]:
    """A fresh lab with one cluster of ``hosts`` hosts in scope (a second, out of scope, of one host), without
    the SDN and vRouter emulators."""
    yield from controller_world(tmp_path, Shape(clusters=2, hosts=hosts), netsync=False)


class Calls:
    """Counts the calls of every session of an executor, by method (``add_call_listener``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, method: str, seconds: float, fault: str | None) -> None:
        self.counts[method] += 1

    def since(self, before: Counter[str]) -> Counter[str]:
        return self.counts - before
