"""What the executor's bounded pool (``Executor.carry_out_all``) gains: hosts' AgentVM settings and apply.

Three tables, each with the pool at 1 worker (one change after the other, as before the pool) and at 8:

- host settings alone: every host of a fresh vcsim gets its AgentVM datastore and network
  (``SetHostSettings`` through ``carry_out_all``), with the simulator answering at once and with
  ``--delay`` milliseconds per call (a real vCenter answers in milliseconds). The floor, same run: a bare
  pyVmomi client that reads every host's EsxAgentHostManager in one call and then sends one
  ``EsxAgentHostManagerUpdateConfig`` per host, in turn and on 8 threads.
- hooks alone: every agent's provisioned hook pending at once (nobody answered them), answered a quarter
  each way: the executor's pool at 1 and 8 workers, and the floor, bare pyVmomi (ReconfigVM_Task of one
  guestinfo value, polling its task, MarkAsAvailable) in turn and on 8 threads.
- apply: ``agentvm apply --json`` of the contrail example (provisioned hook) over every host of the lab, run
  as a user runs it (its own process; the seconds are the whole command), through the lab's EAM (deploying
  in parallel, its default bounds), to all green, with its AgentQueryRuntime calls (counted by the lab's
  EAM); the floor, same run and same bounds, is the lab's own deploy (a bare pyVmomi CreateAgency without
  hooks, to all green: bench/bench_eam_deploy.py ``deploy``), and "x floor" is apply's time over it. Both
  run against a fresh lab (vcsim, the lab's EAM, the package server) in a process of its own
  (``LabProcess``), so neither shares the lab EAM's process or GIL. The pool size is apply's (8).

Measured on the lab (2 shared cores, load ~20): 500 hosts' settings with 10 ms per call took 17.3 s with
the pool at 1 and 3.3 s at 8 (floor 6.9 s in turn, 1.2 s on 8 threads; agentvm makes 3 calls per host, the
floor 1); 32 hooks 2.71 s at 1, 1.19 s at 8 (floor 2.84 / 1.89 s). apply, with the lab in a process of
its own (loaded machine, figures vary by 30 % between runs): 500 hosts 58.0 s against the floor's 45.1 s
(1.29x, 1,264 AgentQueryRuntime, 7 polls) with the hooks answered in one blocking batch per poll; 48.4 s
against 32.9 s (1.47x, 1,603 AgentQueryRuntime, 9 polls) with each hook answered as it appears; 2,500
hosts 455.0 s against 222.5 s (2.04x, 11,954 AgentQueryRuntime, 16 polls): the wait is bound by its
agent reads, one after the other (~38 ms each against the lab's EAM). With the engine no longer waiting
for its batch (an answered agent powered on while the others deploy) and the wait's reads at scale, on a
machine about twice as slow: 500 hosts 86.9 s against 69.6 s (1.25x; the code before: 95.4 s against
71.5 s, 1.33x), 2,500 hosts 885.3 s against 505.1 s (1.75x, 12,363 AgentQueryRuntime, 10 polls); the lab
process is the bottleneck there (GIL-bound at ~107 % CPU while apply used ~4 %). 2026-12-04, 2,500 hosts, a
shared machine: 675.3 s against 263.4 s (2.56x, 11,015 AgentQueryRuntime, 11 polls: each poll read about a
thousand agents one after the other); with one look's reads 8 at a time (``EamBackend``'s read_workers)
433.8 s against 248.9 s (1.74x, 16,238 AgentQueryRuntime, 125 polls).
Run: .venv/bin/python bench/bench_apply_pool.py [--settings 64,500] [--delay 10] [--hooks 128]
[--apply 64,500]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_eam_deploy import bare_clients
from bench_eam_deploy import deploy as eam_deploy
from pyVim.connect import Disconnect
from pyVmomi import eam, vim, vmodl

from agentvm.controller.executor import DEFAULT_WORKERS, AgencyWait, Executor
from agentvm.controller.planner import AGENCY_KINDS
from agentvm.controller.solution import Solution
from agentvm.core.plan import HostSetting, SetHostSettings
from agentvm.lab.vcsim import Shape, Vcsim, VcsimInfo
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.agency import AgentRuntime
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.desired import ScopeHost
from agentvm.spec import load_spec_text
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

MANAGER = "configManager.esxAgentHostManager"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "contrail.yaml"
WIDE = {  # the example over every cluster of the lab, with addresses for 4,031 hosts (25 x 100 fits)
    "    scope:\n      - /DC0/host/DC0_C0\n      - /DC0/host/DC0_C1\n": '    scope: ["/DC0/host/*"]\n',
    "cidr: 10.10.0.0/24": "cidr: 10.10.0.0/20",
    "range: 10.10.0.10-10.10.0.200": "range: 10.10.0.10-10.10.15.200",
}


def shape(hosts: int) -> Shape:
    """Clusters of at most 100 hosts."""
    clusters = max(1, -(-hosts // 100))
    return Shape(clusters=clusters, hosts=hosts // clusters, dvs=False)


def conn(info: VcsimInfo) -> VCenterConnection:
    return VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )


def spec_text() -> str:
    """The example over every cluster, without its ``hostNetwork`` section: this bench measures the agents'
    deploy against the lab's own (which prepares no host); bench_hostnet.py measures host networking."""
    text = EXAMPLE.read_text()
    for old, new in WIDE.items():
        assert old in text, old
        text = text.replace(old, new)
    lines = text.splitlines(keepends=True)
    start = next(
        i for i, line in enumerate(lines) if line == "    hostNetwork:" or line.startswith("    hostNetwork:")
    )
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return "".join(lines[:start] + lines[end:])


def env(info: VcsimInfo, ovf_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    return {
        **os.environ,
        "AGENTVM_URL": info.url,
        "AGENTVM_USERNAME": info.username,
        "AGENTVM_PASSWORD": info.password,
        "AGENTVM_THUMBPRINT": info.thumbprint,
        "AGENTVM_LAB_OVF_URL": ovf_url,
    }


# ------------------------------------------------------------------------------------------ host settings


def agentvm_settings(hosts: int, delay: int, workers: int) -> tuple[float, int]:
    """(seconds, vim25 calls) to set every host's settings through the executor's pool."""
    with Vcsim(shape(hosts), delay=delay) as sim, Session(conn(sim.info)) as session:
        desired = load_spec_text(spec_text(), env=env(sim.info))
        found = sorted(read_inventory(session).hosts, key=lambda h: h.name)
        changes = [
            SetHostSettings(
                ScopeHost(h.moref.value, h.name, h.path),
                "contrail",
                datastore=HostSetting("LocalDS_0", h.datastores[0]),
                network=HostSetting("VM Network", h.networks[0]),
            )
            for h in found
        ]
        with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
            executor = Executor.open(desired, session, state_dir=Path(tmp), workers=workers)
            before = session.stats.total
            started = time.perf_counter()
            outcomes = executor.carry_out_all(changes)
            seconds = time.perf_counter() - started
            assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error][:3]
            return seconds, session.stats.total - before


def floor_settings(hosts: int, delay: int, threads: int) -> tuple[float, int]:
    """(seconds, calls) of bare pyVmomi: one bulk read of the managers, one UpdateConfig per host."""
    with Vcsim(shape(hosts), delay=delay) as sim:
        info = sim.info
        si, _ = bare_clients(info)
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
            pc = vmodl.query.PropertyCollector
            spec = pc.FilterSpec(
                objectSet=[
                    pc.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[pc.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)],
                    )
                ],
                propSet=[
                    pc.PropertySpec(
                        type=vim.HostSystem,
                        pathSet=["configManager.esxAgentHostManager", "datastore", "network"],
                    )
                ],
            )
            started = time.perf_counter()
            result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
            objects = list(result.objects)
            calls = 1
            while result.token:
                result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
                objects += result.objects
                calls += 1
            jobs: list[Callable[[], Any]] = []
            for obj in objects:
                props = {p.name: p.val for p in obj.propSet}
                manager = props[MANAGER]
                config = vim.host.EsxAgentHostManager.ConfigInfo(
                    agentVmDatastore=props["datastore"][0], agentVmNetwork=props["network"][0]
                )
                jobs.append(lambda m=manager, c=config: m.EsxAgentHostManagerUpdateConfig(configInfo=c))
            run_all(jobs, threads)
            seconds = time.perf_counter() - started
            return seconds, calls + len(jobs)
        finally:
            Disconnect(si)


def run_all(jobs: list[Callable[[], Any]], threads: int) -> None:
    if threads == 1:
        for job in jobs:
            job()
        return
    lock = threading.Lock()
    pending = list(jobs)

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop()
            job()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


# ------------------------------------------------------------------------------------------------- hooks


def hooks_alone(hosts: int) -> list[tuple[str, float, int]]:
    """Every agent's provisioned hook pending at once, answered a quarter each way: agentvm's pool at 1
    and 8 workers, bare pyVmomi in turn and on 8 threads; (how, seconds, hooks) per quarter."""
    lab = Lab(shape(hosts), netsync=False)
    info = lab.start()
    try:
        desired = load_spec_text(spec_text(), env={**os.environ, **info.env()})
        with (
            tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp,
            Session(conn(info.vcsim)) as session,
            Solution(desired, session, state_dir=Path(tmp)) as solution,
        ):
            plan = solution.plan()
            for change in plan.changes:  # what apply does before its wait; nobody answers the hooks
                if (
                    change.agency is None
                    or isinstance(change, SetHostSettings)
                    or change.kind in AGENCY_KINDS
                ):
                    solution.executor.carry_out(change)
            agency = plan.observation.agencies[0]
            assignment = plan.spec_plan.addresses[agency.name]
            wait = AgencyWait(
                agency.resolved,
                addresses={h.host.moid: h.address for h in assignment.addresses},
                snapshot=plan.observation.snapshot,
            )
            deadline = time.monotonic() + 1800
            while True:
                wait.status = solution.backend.observe(agency.name)
                if wait.status is not None and len(wait.status.pending_hooks) == hosts:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the hooks were not all pending within 1800 s")
                time.sleep(1.0)
            agents = list(wait.status.pending_hooks)
            quarter = len(agents) // 4
            rows = []
            for n, workers in enumerate((1, 8)):
                part = agents[n * quarter : (n + 1) * quarter]
                answers = [solution.executor.hook_answer(wait, a) for a in part]
                solution.executor.workers = workers
                started = time.perf_counter()
                outcomes = solution.executor.carry_out_all(answers)
                rows.append((f"agentvm, pool {workers}", time.perf_counter() - started, len(part)))
                assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error][:3]
            for n, threads in ((2, 1), (3, 8)):
                part = agents[n * quarter : (n + 1) * quarter]
                rows.append((f"floor, {threads} thread(s)", floor_hooks(info, part, threads), len(part)))
            return rows
    finally:
        lab.stop()


def floor_hooks(info: LabInfo, agents: list[AgentRuntime], threads: int) -> float:
    """Bare pyVmomi answering these hooks: ReconfigVM_Task (a guestinfo value), its wait, MarkAsAvailable."""
    si, manager = bare_clients(info.vcsim)
    try:
        stub = manager._stub

        def answer(agent: AgentRuntime) -> None:
            assert agent.hook is not None
            vm = vim.VirtualMachine(agent.hook.vm.value, si._stub)
            spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="guestinfo.floor", value="1")])
            task = vm.ReconfigVM_Task(spec=spec)
            while task.info.state in ("queued", "running"):  # pyVim's WaitForTask shares one collector
                time.sleep(0.005)
            assert task.info.state == "success", task.info.error
            eam.Agent(agent.agent, stub).MarkAsAvailable()

        started = time.perf_counter()
        run_all([lambda a=a: answer(a) for a in agents], threads)
        return time.perf_counter() - started
    finally:
        Disconnect(si)


# -------------------------------------------------------------------------------------------------- apply


class LabProcess:
    """A lab of ``hosts`` hosts (vcsim, the lab's EAM, the package server; no SDN emulators) in a Python
    process of its own (this file with ``--serve-lab``), so that what is measured against it does not
    share a process, nor the GIL, with the lab's EAM. ``close()`` (or this process ending: its stdin
    closes) stops it."""

    def __init__(self, hosts: int) -> None:
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-lab", str(hosts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in, self._out = self.process.stdin, self.process.stdout
        line = self._out.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the lab process exited {self.process.poll()} before it was up")
        raw = json.loads(line)
        self.vcsim = VcsimInfo(**raw["vcsim"])
        self.env: dict[str, str] = raw["env"]
        self.ovf_url: str = raw["ovf_url"]

    def eam_calls(self) -> Counter[str]:
        """EAM requests the lab's EAM answered so far, by method, from every client."""
        self._in.write("calls\n")
        self._in.flush()
        return Counter(json.loads(self._out.readline()))

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._in.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def serve_lab(hosts: int) -> None:
    """The child of ``LabProcess``: run the lab, answer ``calls`` lines, stop at the end of stdin."""
    lab = Lab(shape(hosts), netsync=False)
    info = lab.start()
    try:
        print(
            json.dumps({"vcsim": dataclasses.asdict(info.vcsim), "env": info.env(), "ovf_url": info.ovf_url})
        )
        sys.stdout.flush()
        for line in sys.stdin:
            if line.strip() == "calls":
                assert lab.eam is not None
                print(json.dumps(lab.eam.eam_calls()), flush=True)
    finally:
        lab.stop()


def lab_own_deploy(hosts: int) -> float:
    """Seconds of the lab's own deploy (bare pyVmomi CreateAgency, no hooks, to all green: the floor),
    against a lab in its own process."""
    lab = LabProcess(hosts)
    try:
        si, manager = bare_clients(lab.vcsim)
        try:
            _, seconds = eam_deploy(si, manager, lab.ovf_url, hosts)
            return seconds
        finally:
            Disconnect(si)
    finally:
        lab.close()


def agentvm_apply(hosts: int) -> tuple[bool, float, int, int, int, int]:
    """(green, seconds, vim25 calls, EAM calls, polls, AgentQueryRuntime calls) of ``agentvm apply`` over
    every host, run as a user runs it: its own process, against a lab in another. The seconds are the
    command's whole run (start-up and login included)."""
    lab = LabProcess(hosts)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
            spec = Path(tmp) / "contrail.yaml"
            spec.write_text(spec_text())
            child_env = {**os.environ, **lab.env, "AGENTVM_STATE_DIR": str(Path(tmp) / "state")}
            child_env["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            command = [
                sys.executable,
                "-c",
                "import sys; from agentvm.cli.main import main; sys.argv[0] = 'agentvm'; sys.exit(main())",
                "apply",
                "-f",
                str(spec),
                "--json",
                "--timeout",
                "3600",
            ]
            before = lab.eam_calls()
            started = time.perf_counter()
            done = subprocess.run(command, env=child_env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            reads = (lab.eam_calls() - before)["AgentQueryRuntime"]
            if done.returncode not in (0, 1):
                raise RuntimeError(f"agentvm apply exited {done.returncode}: {done.stderr.strip()[-500:]}")
            report = json.loads(done.stdout)
            calls = report["calls"]
            return report["green"], seconds, calls["vim25"], calls["eam"], report["polls"], reads
    finally:
        lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="64,500", help="host counts for the host-settings table")
    parser.add_argument("--apply", default="64,500", help="host counts for the apply table ('' for none)")
    parser.add_argument("--delay", type=int, default=10, help="ms per SOAP call in the second settings run")
    parser.add_argument("--hooks", default="128", help="host counts for the hooks table ('' for none)")
    parser.add_argument("--serve-lab", type=int, help=argparse.SUPPRESS)  # LabProcess's child
    args = parser.parse_args()
    if args.serve_lab is not None:
        serve_lab(args.serve_lab)
        return
    sizes = [int(n) for n in args.settings.split(",") if n]
    print("host settings: seconds (vim25 calls)")
    print(f"{'hosts':>6} {'delay':>6} {'pool 1':>14} {'pool 8':>14} {'floor, 1 thread':>16} {'floor, 8':>14}")
    for hosts in sizes:
        for delay in (0, args.delay):
            cells = [
                agentvm_settings(hosts, delay, 1),
                agentvm_settings(hosts, delay, 8),
                floor_settings(hosts, delay, 1),
                floor_settings(hosts, delay, 8),
            ]
            text = " ".join(
                f"{f'{s:.2f} ({c})':>{w}}" for (s, c), w in zip(cells, (14, 14, 16, 14), strict=True)
            )
            print(f"{hosts:>6} {delay:>4}ms {text}", flush=True)
    for hosts in [int(n) for n in args.hooks.split(",") if n]:
        print(f"\nhooks alone: {hosts} provisioned hooks pending at once, a quarter answered each way")
        for how, seconds, count in hooks_alone(hosts):
            print(f"{how:>22} {count:>4} hooks {seconds:>7.2f} s {count / seconds:>7.1f} hooks/s", flush=True)
    applies = [int(n) for n in args.apply.split(",") if n]
    if applies:
        print("\napply to all green (contrail, provisioned hook, lab's EAM deploying in parallel)")
        print(
            f"{'hosts':>6} {'workers':>8} {'green':>6} {'seconds':>8} {'x floor':>8} {'vim25':>7} {'EAM':>7} "
            f"{'AgentQR':>8} {'polls':>6}"
        )
    for hosts in applies:
        # the floor: the lab's own deploy (bare pyVmomi CreateAgency, no hooks, to all green), same bounds,
        # the lab in a process of its own as for apply
        floor = lab_own_deploy(hosts)
        for workers in (DEFAULT_WORKERS,):  # apply's pool size
            green, seconds, vim_calls, eam_calls, polls, reads = agentvm_apply(hosts)
            print(
                f"{hosts:>6} {workers:>8} {green!s:>6} {seconds:>8.1f} {seconds / floor:>8.2f} "
                f"{vim_calls:>7} {eam_calls:>7} {reads:>8} {polls:>6}",
                flush=True,
            )
        print(
            f"{hosts:>6} {'floor':>8} {'True':>6} {floor:>8.1f}   (the lab's own deploy, no hooks)",
            flush=True,
        )


if __name__ == "__main__":
    main()
