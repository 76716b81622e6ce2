"""Replicas on etcd: leader SIGKILL → first action by the new leader; etcd requests when idle; memory.

A lab (``--hosts`` hosts, default 2, in ``Shape.clustered``'s clusters, without the SDN emulators) and
Debian's etcd start in this process; N ``agentvm run --coordination`` replicas (default 3) run as their
own processes on one spec (one agency over every cluster), with the lease TTL ``--ttl`` (etcd's and
vCenter's, default 3 s) and the idle poll ``--idle-poll`` (default 0.5 s; ``agentvm run``'s own default is
5). Once one leads and every agent is green:

1. **Idle**: for ``--idle`` seconds (default 60) nothing changes; each replica's
   ``agentvm_etcd_requests_total``, its vCenter and EAM calls (``agentvm_vcenter_call_duration_seconds``'s
   counts, by method) and its CPU (``process_cpu_seconds_total``) are scraped before and after: per
   replica per minute, leader and followers side by side (what a follower costs against an idle leader).
   Beside it the resident memory (``process_resident_memory_bytes``) of the leader and of a follower.
2. **Failover**, ``--trials`` times (default 20): the leader is SIGKILLed and, at once, an agent VM is
   powered off (EAM raises VmPoweredOff: the controller's fix is a Resolve). The time from the SIGKILL to
   the first Resolve the lab's EAM receives from another replica is the failover time (first action by
   the new leader). A new replica is started in the killed one's place before the next trial.

The floor (no agentvm): the TTL itself. A takeover cannot come earlier than the dead leader's etcd lease
expiring, one TTL after its last keepalive (up to TTL/4 before the kill), plus the first full pass.

Run: .venv/bin/python bench/bench_failover.py [--trials 20] [--ttl 3]
[--replicas 3] [--idle 60] [--hosts 2] [--idle-poll 0.5] [--src DIR]

``--trials 0`` measures the idle minute only; ``--src`` runs the replicas from another agentvm source tree
(a checkout's ``src``: the before of a change).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentvm.lab.eam_emulator import server as eam_server
from agentvm.lab.etcd import Etcd
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (ROOT / "examples" / "contrail.yaml").read_text()


def spec_text(clusters: int) -> str:
    """examples/contrail.yaml over every cluster of the lab, with addresses for up to ~4,000 hosts."""
    scope = "".join(f"      - /DC0/host/DC0_C{i}\n" for i in range(clusters))
    text = EXAMPLE.replace("      - /DC0/host/DC0_C0\n      - /DC0/host/DC0_C1\n", scope)
    text = text.replace("cidr: 10.10.0.0/24", "cidr: 10.10.0.0/20")
    return text.replace("range: 10.10.0.10-10.10.0.200", "range: 10.10.0.10-10.10.15.250")


class Resolves:
    """Every Resolve the lab's EAM answers: (perf_counter when received, opId)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        answer = eam_server._Handler._answer

        def recorded(handler: Any, body: bytes, version: str) -> tuple[int, bytes]:
            if b"<Resolve " in body or b"<ResolveAll " in body:
                text = body.decode("utf-8", "replace")
                tag = text.find("<operationID")
                start = text.find(">", tag) + 1
                with self.lock:
                    self.seen.append((time.perf_counter(), text[start : text.find("<", start)]))
            result: tuple[int, bytes] = answer(handler, body, version)
            return result

        eam_server._Handler._answer = recorded  # type: ignore[method-assign]

    def after(self, since: float) -> list[tuple[float, str]]:
        with self.lock:
            return [r for r in self.seen if r[0] >= since]


class Replica:
    """One ``agentvm run --coordination`` process; its API address read from its ``listen`` log line."""

    def __init__(
        self, env: dict[str, str], spec: Path, coordination: str, ttl: float, log: Path, idle_poll: float
    ) -> None:
        args = ["run", "-f", str(spec), "--coordination", coordination, "--lease-ttl", f"{ttl:g}"]
        args += ["--listen", "127.0.0.1:0", "--log-format", "json", "--poll", "0.2"]
        args += ["--idle-poll", f"{idle_poll:g}"]
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentvm.cli.main", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        found = wait(lambda: re.search(r"API listening on (http://\S+)\"", log.read_text()), 90, "listen")
        self.url = found.group(1)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:  # noqa: S310 (loopback)
            return str(answer.read().decode())

    def role(self) -> str | None:
        try:
            text = self.get("/readyz")
        except OSError as exc:  # 503 is an HTTPError, an OSError: read its body
            body = getattr(exc, "read", None)
            text = body().decode() if body else ""
        found = re.search(r'"role":\s*"(\w+)"', text)
        return found.group(1) if found else None

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def etcd_requests(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in self.get("/metrics").splitlines():
            match = re.match(r'agentvm_etcd_requests_total\{kind="(\w+)"\} (\S+)', line)
            if match:
                found[match.group(1)] = float(match.group(2))
        return found

    def calls(self) -> dict[str, float]:
        """vCenter and EAM calls so far, by method; and ``cpu``: the process's CPU seconds."""
        found: dict[str, float] = {}
        for line in self.get("/metrics").splitlines():
            match = re.match(r'agentvm_vcenter_call_duration_seconds_count\{method="(\w+)"\} (\S+)', line)
            if match:
                found[match.group(1)] = float(match.group(2))
            elif line.startswith("process_cpu_seconds_total "):
                found["cpu"] = float(line.rsplit(" ", 1)[1])
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def leader(replicas: list[Replica]) -> Replica | None:
    roles = [r.role() for r in replicas]
    if roles.count("leader") == 1 and roles.count("follower") == len(roles) - 1:
        return replicas[roles.index("leader")]
    return None


def session_of(info: LabInfo) -> Session:
    conn = VCenterConnection(
        url=info.vcsim.url,
        username=info.vcsim.username,
        password=Secret(info.vcsim.password),
        thumbprint=info.vcsim.thumbprint or None,
    )
    return Session.connect(conn)


def agents_on(session: Session, hosts: int) -> bool:
    vms = [v for v in read_inventory(session).vms if v.name.startswith("contrail-vm")]
    return len(vms) == hosts and all(v.power_state.value == "poweredOn" for v in vms)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--idle-poll", type=float, default=0.5)
    parser.add_argument("--src", type=Path, default=None)
    args = parser.parse_args(argv)
    hosts = args.hosts
    shape = Shape.clustered(hosts)
    resolves = Resolves()
    with tempfile.TemporaryDirectory(prefix="agentvm-failover-") as tmp:
        work = Path(tmp)
        etcd = Etcd(work / "etcd").start()
        lab = Lab(shape, netsync=False)
        info = lab.start()
        replicas: list[Replica] = []
        try:
            spec = work / "contrail.yaml"
            spec.write_text(spec_text(shape.clusters))
            env = {**info.env(), "PATH": "/usr/bin:/bin", "AGENTVM_STATE_DIR": str(work / "state")}
            env["PYTHONPATH"] = (
                str(args.src.resolve()) if args.src else os.environ.get("PYTHONPATH", str(ROOT / "src"))
            )
            started = 0

            def start() -> Replica:
                nonlocal started
                started += 1
                log = work / f"replica-{started}.log"
                return Replica(env, spec, etcd.url, args.ttl, log, args.idle_poll)

            replicas = [start() for _ in range(args.replicas)]
            session = session_of(info)
            wait(
                lambda: leader(replicas) and agents_on(session, hosts),
                180 + hosts,
                "one leader and every agent on",
            )
            time.sleep(max(2 * args.ttl, 15.0))  # settled: the first passes and campaigns are over
            # 1. idle
            before = [r.etcd_requests() for r in replicas]
            calls_before = [r.calls() for r in replicas]
            idle_started = time.monotonic()
            time.sleep(args.idle)
            minutes = (time.monotonic() - idle_started) / 60
            after = [r.etcd_requests() for r in replicas]
            calls_after = [r.calls() for r in replicas]
            the = leader(replicas)
            assert the is not None
            rss_leader = the.metric("process_resident_memory_bytes") / 2**20
            rss_followers = [
                r.metric("process_resident_memory_bytes") / 2**20 for r in replicas if r is not the
            ]
            where = f"lab {shape.clusters}x{hosts // shape.clusters} hosts, idle poll {args.idle_poll:g} s"
            print(f"# bench_failover: {args.replicas} replicas, TTL {args.ttl:g} s, {where}")
            print(f"# replicas run from {env['PYTHONPATH']}")
            print(f"\nidle {args.idle:.0f} s: etcd requests per replica per minute")
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                kinds = {k: (a.get(k, 0) - b.get(k, 0)) / minutes for k in a}
                role = "leader" if replicas[i] is the else "follower"
                detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items()) if v)
                print(f"  replica {i + 1} ({role}): {sum(kinds.values()):.1f}/min ({detail})")
            print(f"\nidle {args.idle:.0f} s: vCenter and EAM calls and own CPU per replica per minute")
            for i, (b, a) in enumerate(zip(calls_before, calls_after, strict=True)):
                per = {k: (a.get(k, 0) - b.get(k, 0)) / minutes for k in a}
                cpu = per.pop("cpu", 0.0)
                role = "leader" if replicas[i] is the else "follower"
                detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items()) if v)
                print(f"  replica {i + 1} ({role}): {sum(per.values()):.1f} calls/min, CPU {cpu:.2f} s/min")
                print(f"    {detail}")
            followers = ", ".join(f"{m:.1f}" for m in rss_followers)
            print(f"\nRSS: leader {rss_leader:.1f} MB, followers {followers} MB")
            # 2. failover
            times: list[float] = []
            for trial in range(args.trials):
                the = wait(lambda: leader(replicas), 60, "one leader")
                wait(lambda: agents_on(session, hosts), 60 + hosts, "every agent on")
                vm = next(v for v in read_inventory(session).vms if v.name.startswith("contrail-vm"))
                killed = time.perf_counter()
                the.kill()
                task = session.mo(vm.moref).PowerOffVM_Task()
                replicas.remove(the)
                first = wait(lambda k=killed: resolves.after(k), 120, "the new leader's Resolve")
                took = first[0][0] - killed
                times.append(took)
                print(f"  trial {trial + 1}: first Resolve {took:.2f} s after SIGKILL ({task.info.state})")
                wait(lambda: agents_on(session, hosts), 60 + hosts, "the agent healed")
                replicas.append(start())
            if not times:
                session.logout()
                return 0
            print(
                f"\nfailover (SIGKILL → first Resolve by the new leader), {len(times)} trials, "
                f"TTL {args.ttl:g} s: "
                f"p50 {statistics.median(times):.2f} s, p99 {pct(times, 99):.2f} s, "
                f"min {min(times):.2f}, max {max(times):.2f}"
            )
            session.logout()
        finally:
            for r in replicas:
                r.stop()
            lab.stop()
            etcd.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
