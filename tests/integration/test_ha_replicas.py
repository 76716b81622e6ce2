"""Replicas of ``agentvm run --coordination etcd://…`` on the lab, with a real etcd: one actor per spec.

Every replica is its own ``agentvm run`` process; etcd is Debian's (the ``etcd`` fixture), reached directly
or through a loopback proxy per replica (``tests.support.tcp_proxy``) to partition one of them. What the
replicas did is checked on the lab's EAM side (in this process): every call it answered, with its opId,
whose prefix names the calling process's reconciler, so the writes of two replicas are told apart. The
lease TTL (etcd's and vCenter's) is 3 s.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agentvm.lab.etcd import Etcd
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.vsphere.inventory import read_inventory
from tests.support.controller_lab import connect, spec_text
from tests.support.replicas import EamCalls, RunProcess, metric, recording, spec_for, wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.lab

ONE_CLUSTER = {"      - /DC0/host/DC0_C1\n": ""}
KEY = "org.tungsten.agentvm"
TTL = "3"
RESOLVES = frozenset({"Resolve", "ResolveAll"})


@pytest.fixture
def eam_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[EamCalls]:
    with recording(monkeypatch) as calls:
        yield calls


@pytest.fixture
def lab() -> Iterator[LabInfo]:
    with Lab(Shape(clusters=1, hosts=2), netsync=False) as info:
        yield info


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "contrail.yaml"
    path.write_text(spec_text(**ONE_CLUSTER))
    return path


class Replicas:
    """The replicas a test started; all killed at the end."""

    def __init__(self) -> None:
        self.runs: list[RunProcess] = []

    def start(self, env: dict[str, str], *args: str) -> RunProcess:
        run = RunProcess(env, *args, "--lease-ttl", TTL)
        self.runs.append(run)
        return run

    def kill(self) -> None:
        for run in self.runs:
            run.kill()


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    started = Replicas()
    try:
        yield started
    finally:
        started.kill()


def role(run: RunProcess, index: int | None = None) -> str | None:
    """The replica's role for its one spec (or item ``index`` of its StatusList)."""
    if run.proc.poll() is not None:
        return None
    doc = run.status()
    if index is not None:
        doc = doc.get("items", [{}])[index] if doc.get("kind") == "StatusList" else {}
    leadership = doc.get("leadership") or {}
    return str(leadership.get("role")) if leadership else None


def green(run: RunProcess) -> bool:
    doc = run.status()
    items = doc.get("items", [doc])
    return all(it.get("agencies") and all(a["status"] == "green" for a in it["agencies"]) for it in items)


def the_leader(runs: Sequence[RunProcess]) -> RunProcess | None:
    """The one replica that leads, once every other live one follows (None meanwhile)."""
    roles = [role(r) for r in runs if r.proc.poll() is None]
    leaders = [r for r in runs if r.proc.poll() is None and role(r) == "leader"]
    if len(leaders) == 1 and roles.count("follower") == len(roles) - 1:
        return leaders[0]
    return None


def power_off_an_agent(info: LabInfo) -> str:
    """Power off one agent VM behind agentvm's back (EAM raises VmPoweredOff); returns its moid."""
    session = connect(info)
    try:
        found = next(v for v in read_inventory(session).vms if v.name.startswith("contrail-vm"))
        task = session.mo(found.moref).PowerOffVM_Task()
        wait_for(lambda: task.info.state in ("success", "error"), "the power-off", 30)
        return found.moref.value
    finally:
        session.logout()


def powered_on(info: LabInfo) -> bool:
    session = connect(info)
    try:
        vms = [v for v in read_inventory(session).vms if v.name.startswith("contrail-vm")]
        return len(vms) == 2 and all(v.power_state.value == "poweredOn" for v in vms)
    finally:
        session.logout()


def test_three_replicas_one_acts_and_a_sigkilled_leader_is_replaced_with_each_call_sent_once(
    lab: LabInfo, spec: Path, etcd: Etcd, eam_calls: EamCalls, replicas: Replicas
) -> None:
    runs = [replicas.start(lab.env(), "-f", str(spec), "--coordination", etcd.url) for _ in range(3)]
    leader = wait_for(lambda: the_leader(runs) if green(runs[0]) else None, "one leader, green", 180)
    followers = [r for r in runs if r is not leader]
    leading = leader.status()["leadership"]
    for follower in followers:
        shown = follower.status()["leadership"]
        assert shown["leader"]["replica"] == leading["replica"]  # named, with since when
        assert shown["leader"]["since"] == leading["leader"]["since"]
        assert metric(follower.get("/metrics").text, "agentvm_leader", solution=KEY) == 0
        assert follower.get("/readyz").json()["controllers"][0]["role"] == "follower"
    assert metric(leader.get("/metrics").text, "agentvm_leader", solution=KEY) == 1
    writers = {c.process for c in eam_calls.writes()}
    assert len(writers) == 1  # one actor: every write from one process's reconciler
    assert [c.method for c in eam_calls.writes()].count("MarkAsAvailable") == 2  # one per agent
    shown = subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "status", "-f", str(spec)],
        env={**RunProcess.base_env(), **lab.env(), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    named = f"controller of {KEY}: agentvm run (host {socket.gethostname()}, pid {leader.proc.pid}, since "
    assert named in shown.stdout  # agentvm status names the leader

    before = len(eam_calls.calls)
    power_off_an_agent(lab)
    leader.wait_line(lambda r: r.get("action") == "resolve", 60)
    leader.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait(10)
    rest = [r for r in runs if r is not leader]
    new = wait_for(lambda: the_leader(rest), "another replica leading", 60)
    took = time.monotonic() - killed
    print(f"takeover {took:.2f} s after SIGKILL (TTL {TTL} s)")
    wait_for(lambda: powered_on(lab) and green(new), "the agent healed, green", 60)
    episode = eam_calls.calls[before:]
    assert [c.method for c in episode if c.method in RESOLVES] == ["Resolve"]  # sent exactly once
    assert [c for c in episode if c.method == "MarkAsAvailable"] == []  # no hook answered again
    new_writes = {c.process for c in eam_calls.writes()} - writers
    assert len(new_writes) <= 1
    assert all(r.stop() == 0 for r in rest)


def test_etcd_stopped_fences_the_leader_and_etcd_back_gives_one_leader(
    lab: LabInfo, spec: Path, etcd: Etcd, eam_calls: EamCalls, replicas: Replicas
) -> None:
    runs = [replicas.start(lab.env(), "-f", str(spec), "--coordination", etcd.url) for _ in range(2)]
    leader = wait_for(lambda: the_leader(runs) if green(runs[0]) else None, "one leader, green", 180)
    etcd.stop()
    fenced = leader.wait_line(
        lambda r: r.get("action") == "leadership" and "not acting any more" in str(r.get("message")), 30
    )
    assert "etcd" in str(fenced["message"])  # says why
    readyz = wait_for(lambda: leader.get("/readyz").status_code == 503 and leader.get("/readyz"), "503", 30)
    assert readyz.json()["controllers"][0]["role"] in ("fenced", "follower")
    assert all(r.proc.poll() is None for r in runs)  # losing the seat never ends the process
    wait_for(lambda: all(role(r) != "leader" for r in runs), "nobody leading while etcd is down", 30)
    wait_for(lambda: all(r.get("/readyz").status_code == 503 for r in runs), "no replica ready", 30)
    power_off_an_agent(lab)  # nobody may heal it while etcd is down
    back = time.perf_counter()
    etcd.restart()
    wait_for(lambda: the_leader(runs), "one leader again", 60)
    wait_for(lambda: powered_on(lab), "the agent healed by the new leader", 60)
    resolves = [c for c in eam_calls.calls if c.method in RESOLVES]
    assert len(resolves) == 1 and resolves[0].started > back  # only once a replica led again


def test_a_leader_partitioned_from_etcd_fences_before_another_acts(
    lab: LabInfo, spec: Path, etcd: Etcd, eam_calls: EamCalls, replicas: Replicas
) -> None:
    proxies = [TcpProxy("127.0.0.1", etcd.client_port).start() for _ in range(2)]
    try:
        runs = [
            replicas.start(lab.env(), "-f", str(spec), "--coordination", f"etcd://127.0.0.1:{p.port}")
            for p in proxies
        ]
        leader = wait_for(lambda: the_leader(runs) if green(runs[0]) else None, "one leader, green", 180)
        other = next(r for r in runs if r is not leader)
        proxies[runs.index(leader)].cut()
        leader.wait_line(
            lambda r: r.get("action") == "leadership" and "not acting" in str(r.get("message")), 30
        )
        wait_for(lambda: role(other) == "leader", "the other replica leading", 60)
        power_off_an_agent(lab)
        wait_for(lambda: powered_on(lab), "healed by the new leader", 60)
        proxies[runs.index(leader)].restore()
        wait_for(lambda: role(leader) == "follower", "the old leader following", 60)
        assert eam_calls.overlapping() == []  # never two replicas' writes at once
        resolves = [c for c in eam_calls.calls if c.method in RESOLVES]
        assert len(resolves) == 1
    finally:
        for proxy in proxies:
            proxy.close()


def test_two_vcenters_two_replicas_one_leadership_each_and_a_kill_moves_it(
    tmp_path: Path, etcd: Etcd, eam_calls: EamCalls, replicas: Replicas
) -> None:
    labs = [Lab(Shape(clusters=1, hosts=2), netsync=False) for _ in range(2)]
    try:
        infos = [lab.start() for lab in labs]
        text = spec_text(**ONE_CLUSTER)
        specs = [
            spec_for(info, tmp_path / f"{i}.yaml", text, f"LAB_PASSWORD_{i}") for i, info in enumerate(infos)
        ]
        env = {f"LAB_PASSWORD_{i}": info.vcsim.password for i, info in enumerate(infos)}
        args = ("-f", str(specs[0]), "-f", str(specs[1]), "--coordination", etcd.url)
        runs = [replicas.start(env, *args) for _ in range(2)]

        def spread() -> bool:
            table = [[role(r, i) for i in range(2)] for r in runs]
            return sorted(row.count("leader") for row in table) == [1, 1]

        wait_for(spread, "one leadership each", 120)
        wait_for(lambda: green(runs[0]) and green(runs[1]), "both vCenters green", 180)
        runs[0].proc.send_signal(signal.SIGKILL)
        runs[0].proc.wait(10)
        wait_for(
            lambda: [role(runs[1], i) for i in range(2)] == ["leader", "leader"], "the other leads both", 60
        )
        wait_for(lambda: green(runs[1]), "both green", 60)
        assert metric(runs[1].get("/metrics").text, "agentvm_leader", vcenter=infos[0].vcsim.url) == 1
        assert metric(runs[1].get("/metrics").text, "agentvm_leader", vcenter=infos[1].vcsim.url) == 1
        assert runs[1].stop() == 0
    finally:
        for lab in labs:
            lab.stop()
