"""One agency over every host, at several lab sizes: deploy, four kinds of change, idle cost and memory of
``agentvm run`` in its own process, with the bare-pyVmomi floor measured in the same run and lab.

For each size (argv, default ``64 500 2500``; ``Shape.clustered``: 64 → 1 cluster × 64 hosts, 500 → 5 × 100,
2,500 → 25 × 100, vCenter's maximum) a lab starts in this process (vcsim + the lab's EAM, without the SDN and
vRouter emulators: ``Lab(netsync=False)``; ``--vms`` workload VMs per host, default 2, as
bench_eam_deploy.py). ``agentvm run`` then runs as a separate process (``--backend eam``, the API on
127.0.0.1 port 0, JSON logs in the run's temporary directory, ``--resync`` seconds between full passes) on a
spec whose one agency (the ContrailVM of examples/contrail.yaml, a ``provisioned`` hook, an IP plan big
enough for 4,000 hosts) covers every cluster. Everything this bench measures of agentvm comes from what
that process exposes: ``/api/v1/status``, ``/api/v1/events`` (unix timestamps), ``/metrics``, and
``/proc/PID``.

- deploy: the process started → ``/api/v1/status`` shows every host ready (polled each second); agents/s.
- idle: ``--idle`` seconds with nothing changing, every agent green: vim25 and EAM calls per minute.
- changes, ``--changes`` of each kind (default 20), one at a time, made through another session (the
  bench's own), each waited for to settle before the next. t0 is when the change's task completed. The
  action that ends each one, as the controller exposes it:
  - ``power-off`` (PowerOffVM_Task on an agent VM): the controller's ``resolve`` action event for that host
    (its time: the Resolve answered);
  - ``deleted`` (the agent VM powered off and Destroy_Task): the controller's metrics show every agent
    green again after a pass that ended after its ``resolve`` event for that host, i.e. the redeployed VM
    powered on with its hook answered (``agentvm_agents{state="green"}`` back to the number of hosts;
    polled every 0.1 s, so the time is when the bench saw it);
  - ``host-added`` (AddHost_Task into a cluster, round robin): the metrics show one more green agent, the
    new host's (seen by the bench, every 0.1 s);
  - ``maint-in`` (EnterMaintenanceMode_Task on a host with an agent): the metrics show that host's agent in
    ``state="maintenance"``; then, after ``--maint-hold`` seconds in maintenance mode (default 12: a host
    stays there a while, and the controller's fast polls after the agent VM's power-off are over),
    ``maint-out`` (ExitMaintenanceMode_Task): every agent green again, the agent back on, after a pass that
    ended after the exit.
  ``--kinds`` picks the kinds (e.g. ``--kinds maint``). The controller's agent reads by reason
  (``agentvm_agent_reads_total``) are printed per kind beside the calls by method.
  A change is settled when a controller pass that ended after the action shows every agent green (for
  ``maint-in``: when the host is shown in maintenance). ``→res`` is change → the controller's Resolve
  answered (power-off, deleted), from the same events.
- own: agentvm's own time, from the process's ``agentvm_pass_own_seconds`` histogram (each pass's wall
  time less its calls): the sum over the passes from the change to its action; for power-off also
  ``agentvm_resolve_own_seconds`` (the resolving pass's start → its Resolve, calls excluded, as
  bench_controller.py's); cpu = the process's user+system CPU seconds (``/proc/PID/stat``) from the change
  to its settling (every thread: watch, API, SOAP parsing, the bench's own scrapes).
- calls: ``agentvm_vcenter_call_duration_seconds_count{method}`` (vim25 and EAM calls by method: the EAM
  calls go through the same instrumented sessions) scraped before the change, when the bench sees the
  action's event (``→act``: change → action; the Resolve for power-off and deleted, the ``host-settings``
  action on the new host for host-added; maintenance mode needs no action of agentvm's, so its action is
  the status showing it) and once it settled (``vim→set``, ``eam→set``: change → settled);
  labEAM = vim25 calls the lab's EAM (in this process) made meanwhile.
- memory: VmRSS of the ``agentvm run`` process after deploy, after idle, at the end; VmHWM (its peak).
- floor (after ``agentvm run`` stopped, same lab): a bare pyVmomi client that holds a property filter on the
  agent VMs' ``runtime.powerState`` and, per change, does the minimum: WaitForUpdatesEx until the victim's
  update, AgencyQueryRuntime (EAM SOAP through pyVmomi's eam stubs) until the issue is raised (polled every
  0.05 s: most of its time is the lab's EAM noticing), one Resolve; for ``deleted`` also, after the Resolve,
  AgentQueryRuntime until the redeployed VM's hook is pending, one MarkAsAvailable, and AgentQueryRuntime
  until green (the floor's "redeployed VM green"; it writes no per-host values: the bare minimum). Timed and
  counted the same way (t0 = task completed): to the action (its Resolve) and to settled (for power-off,
  the WaitForUpdatesEx that shows the VM on again; for deleted, the redeployed VM green). Host-added and
  maintenance mode involve no Resolve: no floor.

Robust by construction: every wait is bounded (``--deploy-timeout``, ``--change-timeout``) and says what it
waited for; a size whose deploy times out is reported as such and the next size runs; ``agentvm run`` is
stopped with SIGTERM (then SIGKILL) and the lab (vcsim) stopped in every case. Logs stay in a temporary
directory (printed), as does the solution's certificate (the run's ``--state-dir``).

Run: .venv/bin/python bench/bench_scale.py [HOSTS ...] [--changes 20] [--deploy-timeout 900] [--idle 60]
(``--lab-only``: start and stop the lab at each size, printing its start time and memory.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_eam_deploy import bare_clients
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from agentvm.controller.executor import EAM_METHODS
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.hosts import add_host, ensure_maintenance_mode
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import destroy, ensure_powered_off, power_state

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("power-off", "deleted", "host-added", "maint-in", "maint-out")
AGENCY = "contrail"
QUIET = 15.0  # seconds after the deploy settled before the idle measure: fast_after_change (10 s) + a poll
POLL = 0.1  # how often the bench looks at the controller's events and metrics while waiting

SPEC = """\
apiVersion: agentvm/v1
vcenter:
  url: ${{AGENTVM_URL}}
  username: ${{AGENTVM_USERNAME}}
  passwordEnv: AGENTVM_PASSWORD
  thumbprint: ${{AGENTVM_THUMBPRINT}}
solution:
  key: org.tungsten.agentvm
  label: Tungsten Fabric vRouter
  summary: One ContrailVM (vRouter) per ESXi host, configured for its host
  company: Tungsten Fabric
  version: "1.0.0"
agencies:
  - name: {agency}
    agentName: contrail-vm
    ovf:
      url: ${{AGENTVM_LAB_OVF_URL}}/contrail-vm/contrail-vm.ovf
    scope:
{scope}
    datastore: LocalDS_0
    network: VM Network
    ovfProperties:
      controlNodes: [10.16.0.2, 10.16.0.3, 10.16.0.4]
      dns: [10.16.0.2]
      mtu: 9000
    hooks:
      provisioned: true
    ipPlan:
      cidr: 10.16.0.0/20
      gateway: 10.16.0.1
      range: 10.16.0.10-10.16.15.250
    perHost:
      fabricIp: "{{ip}}"
      prefixLen: "{{prefix}}"
      gateway: "{{gateway}}"
      hostname: "contrail-{{host_short}}"
"""


class BenchError(Exception):
    """A bounded wait ran out, or a process failed: what was waited for, and where to look."""


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = POLL) -> Any:
    """``check()``'s first truthy value, polled every ``interval`` s; BenchError naming ``what`` after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def proc_status(pid: int, field_name: str) -> float:
    """A ``/proc/PID/status`` field in MB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the controller's metrics, scraped ----------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Scrape:
    """What the bench reads from one ``/metrics`` of ``agentvm run``."""

    calls: Counter[str]  # calls by method so far
    own: float  # agentvm_pass_own_seconds: sum over every pass so far
    passes: int
    resolve_own: float
    resolves: int
    states: dict[str, float]  # agents of the agency by state
    reads: Counter[str] = field(default_factory=Counter)  # agentvm_agent_reads_total by reason

    def reads_since(self, before: Scrape) -> Counter[str]:
        reads = Counter(self.reads)
        reads.subtract(before.reads)
        return +reads

    def minus(self, before: Scrape) -> tuple[Counter[str], float, int]:
        calls = Counter(self.calls)
        calls.subtract(before.calls)
        return +calls, self.own - before.own, self.passes - before.passes


def parse_metrics(text: str) -> Scrape:
    calls: Counter[str] = Counter()
    own = resolve_own = 0.0
    passes = resolves = 0
    states: dict[str, float] = {}
    reads: Counter[str] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw, value = match.group(1), match.group(2) or "", float(match.group(3))
        labels = dict(_LABEL.findall(raw))
        if name == "agentvm_vcenter_call_duration_seconds_count":
            calls[labels["method"]] = int(value)
        elif name == "agentvm_pass_own_seconds_sum":
            own += value
        elif name == "agentvm_pass_own_seconds_count":
            passes += int(value)
        elif name == "agentvm_resolve_own_seconds_sum":
            resolve_own = value
        elif name == "agentvm_resolve_own_seconds_count":
            resolves = int(value)
        elif name == "agentvm_agents" and labels.get("agency") == AGENCY:
            states[labels["state"]] = value
        elif name == "agentvm_agent_reads_total":
            reads[labels["reason"]] = int(value)
    return Scrape(calls, own, passes, resolve_own, resolves, states, reads)


def split_calls(calls: Counter[str]) -> tuple[int, int]:
    """(vim25, EAM) call totals."""
    eam_calls = sum(n for m, n in calls.items() if m in EAM_METHODS)
    return sum(calls.values()) - eam_calls, eam_calls


# -- agentvm run, in its own process ------------------------------------------------------------------------


class RunProcess:
    """``agentvm run`` started as a child process from this checkout's source; ``stop()`` always ends it."""

    def __init__(self, spec: Path, env: dict[str, str], work: Path, resync: float) -> None:
        self.log_path = work / "agentvm-run.log"
        child_env = dict(os.environ, **env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        child_env["AGENTVM_STATE_DIR"] = str(work / "state")  # never the user's ~/.local/state
        command = [
            sys.executable,
            "-c",
            "import sys; from agentvm.cli.main import main; sys.argv[0] = 'agentvm'; sys.exit(main())",
            "run",
            "-f",
            str(spec),
            "--backend",
            "eam",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--poll",
            "0.5",
            "--idle-poll",
            "5",
            "--resync",
            f"{resync:g}",
            "--state-dir",
            str(work / "state"),
        ]
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env
            )
        self.pid = self.process.pid
        self.url = ""
        try:
            self.url = wait(self._listening, 120, f"agentvm run to listen (log: {self.log_path})", 0.1)
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> str:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise BenchError(f"agentvm run exited {self.process.returncode}: " + " | ".join(tail))
        for line in self.log_path.read_text(errors="replace").splitlines():
            found = re.search(r"API listening on (http://127\.0\.0\.1:\d+)", line)
            if found:
                return found.group(1)
        return ""

    def get(self, path: str, timeout: float = 30.0) -> bytes:
        if self.process.poll() is not None:
            raise BenchError(f"agentvm run exited {self.process.returncode} (log: {self.log_path})")
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310 (loopback)
            return bytes(response.read())

    def metrics(self) -> Scrape:
        return parse_metrics(self.get("/metrics").decode())

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.get("/api/v1/status")))
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # no full pass yet
                return {}
            raise

    def events(self, after: int) -> tuple[list[dict[str, Any]], int]:
        body = json.loads(self.get(f"/api/v1/events?after={after}&limit=1000"))
        return list(body["events"]), int(body.get("lastEventId") or after)

    def last_event(self) -> int:
        return self.events(0)[1]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass(frozen=True)
class Row:
    """One host row of the status document."""

    host: str
    path: str
    vm: str | None
    ready: bool


def host_rows(status: dict[str, Any]) -> list[Row]:
    rows = []
    for agency in status.get("agencies", []):
        if agency["name"] != AGENCY:
            continue
        for cluster in agency["clusters"]:
            for h in cluster["hosts"]:
                vm = h["vm"]["moid"] if h.get("vm") else None
                ready = h["status"] == "green" and h["powerState"] == "poweredOn" and not h["hookPending"]
                rows.append(Row(h["moid"], h["path"], vm, ready))
    return rows


# -- one size -----------------------------------------------------------------------------------------------


@dataclass
class KindResult:
    e2e: list[float] = field(default_factory=list)
    to_resolve: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)  # pass own time from change to action
    resolve_own: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    vim: list[int] = field(default_factory=list)  # vim25 calls, change → settled
    eam: list[int] = field(default_factory=list)  # EAM calls, change → settled
    to_action: list[int] = field(default_factory=list)  # vim25 + EAM calls, change → action
    lab_eam: list[int] = field(default_factory=list)
    methods: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # agentvm's agent reads to settled, by reason
    error: str = ""


@dataclass
class SizeResult:
    hosts: int
    shape: Shape
    lab_start: float = float("nan")
    vcsim_rss: float = float("nan")
    deploy: float = float("nan")
    deploy_note: str = ""
    idle_vim: float = float("nan")
    idle_eam: float = float("nan")
    idle_methods: Counter[str] = field(default_factory=Counter)
    rss: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, KindResult] = field(default_factory=dict)
    floor: dict[str, KindResult] = field(default_factory=dict)
    log_dir: Path | None = None
    load: tuple[float, ...] = ()  # the machine's 1-minute load average at the start and at the end


class Bench:
    """One size: the lab, ``agentvm run``, the tester's session, and what was measured."""

    def __init__(self, args: argparse.Namespace, hosts: int, work: Path) -> None:
        self.args = args
        self.work = work
        self.shape = Shape.clustered(hosts, vms=args.vms)
        self.result = SizeResult(hosts, self.shape, log_dir=work)
        self.expected = self.shape.host_count  # agents when every host has its agent
        self.rows: list[Row] = []  # the status's host rows when agentvm run stopped (the floor's hosts)

    # -- waiting on the controller ----------------------------------------------------------------------

    def green(self, scrape: Scrape) -> bool:
        s = scrape.states
        return s.get("green", 0) == self.expected and all(
            s.get(k, 0) == 0 for k in ("yellow", "red", "maintenance", "flapping", "misplaced")
        )

    def settle(self, run: RunProcess, after_passes: int, what: str) -> Scrape:
        """A pass that ended after ``after_passes`` passes shows every agent green; that scrape."""
        scrape: Scrape = wait(
            lambda: s if (s := run.metrics()).passes > after_passes and self.green(s) else None,
            self.args.change_timeout,
            f"every agent green again after {what}",
        )
        return scrape

    def resolve_event(
        self, run: RunProcess, after: int, host: str, since: float = 0.0
    ) -> dict[str, Any] | None:
        """The controller's first ``resolve`` action event for ``host`` after event ``after``, at or after
        unix time ``since``."""
        return self.action_event(run, after, host, ("resolve",), since)

    def action_event(
        self, run: RunProcess, after: int, host: str, actions: tuple[str, ...], since: float = 0.0
    ) -> dict[str, Any] | None:
        """The controller's first action event of one of ``actions`` for ``host`` after event ``after``,
        at or after unix time ``since``."""
        events, _ = run.events(after)
        for event in events:
            if (
                float(event.get("time", 0)) >= since
                and event.get("type") == "action"
                and (event.get("data") or {}).get("action") in actions
                and event.get("host") == host
            ):
                return event
        return None

    # -- the run ------------------------------------------------------------------------------------------

    def measure(self) -> SizeResult:
        r = self.result
        r.load = (os.getloadavg()[0],)
        started = time.monotonic()
        lab = Lab(self.shape, netsync=False, log_dir=self.work)
        try:
            info = lab.start()
            r.lab_start = time.monotonic() - started
            r.vcsim_rss = proc_status(lab.pids["vcsim"], "VmRSS")
            print(
                f"{r.hosts} hosts: lab up in {r.lab_start:.1f} s (vcsim {r.vcsim_rss:.0f} MB, this process "
                f"with the lab's EAM {proc_status(os.getpid(), 'VmRSS'):.0f} MB)",
                flush=True,
            )
            if not self.args.lab_only:
                self._with_lab(lab, info)
        finally:
            lab.stop()
            r.load = (*r.load[:1], os.getloadavg()[0])
        return r

    def _with_lab(self, lab: Lab, info: LabInfo) -> None:
        r = self.result
        spec = self.work / "scale.yaml"
        scope = "\n".join(f"      - /DC0/host/DC0_C{i}" for i in range(self.shape.clusters))
        spec.write_text(SPEC.format(agency=AGENCY, scope=scope))
        conn = VCenterConnection(
            url=info.vcsim.url,
            username=info.vcsim.username,
            password=Secret(info.vcsim.password),
            thumbprint=info.vcsim.thumbprint,
        )
        tester = Session.connect(conn)
        try:
            run = RunProcess(spec, info.env(), self.work, self.args.resync)
            try:
                if self._deploy(run):
                    self._idle(run)
                    self._changes(lab, run, tester)
                r.rss["end"] = proc_status(run.pid, "VmRSS")
                r.rss["peak"] = proc_status(run.pid, "VmHWM")
                self.rows = host_rows(run.status())
            finally:
                run.stop()
            if not math.isnan(self.result.deploy) and self.args.changes:  # the floor, alone on the same lab
                self._floor(lab, info, tester)
        finally:
            tester.logout()

    def _deploy(self, run: RunProcess) -> bool:
        r = self.result
        timeout = self.args.deploy_timeout
        last = -1
        step = max(1, self.expected // 10)

        def all_ready() -> bool:
            nonlocal last
            rows = host_rows(run.status())
            ready = sum(row.ready for row in rows)
            if ready // step != last // step:  # progress, every tenth
                print(f"  deploy: {ready}/{self.expected} ready after {time.monotonic() - run.started:.0f} s")
            last = ready
            return ready == self.expected and len(rows) == self.expected

        try:
            wait(all_ready, timeout, f"{self.expected} agents ready", interval=1.0)
        except BenchError:
            r.deploy_note = f"not all ready within {timeout:.0f} s ({max(last, 0)}/{self.expected})"
            print(f"  {r.deploy_note}", flush=True)
            return False
        r.deploy = time.monotonic() - run.started
        r.rss["deploy"] = proc_status(run.pid, "VmRSS")
        print(f"  deployed in {r.deploy:.1f} s ({self.expected / r.deploy:.1f} agents/s)", flush=True)
        return True

    def _idle(self, run: RunProcess) -> None:
        r = self.result
        self.settle(run, run.metrics().passes, "deploy")
        time.sleep(QUIET)  # past the controller's fast polling after the last change (Settings)
        before = run.metrics()
        time.sleep(self.args.idle)
        after = run.metrics()
        calls, _, _ = after.minus(before)
        vim_calls, eam_calls = split_calls(calls)
        minutes = self.args.idle / 60
        r.idle_vim, r.idle_eam = vim_calls / minutes, eam_calls / minutes
        r.idle_methods = Counter({m: round(n / minutes) for m, n in calls.items()})
        r.rss["idle"] = proc_status(run.pid, "VmRSS")
        print(f"  idle: {r.idle_vim:.0f} vim25 + {r.idle_eam:.0f} EAM calls per minute", flush=True)

    def _changes(self, lab: Lab, run: RunProcess, tester: Session) -> None:
        for kind in ("power-off", "deleted", "host-added", "maint"):
            if kind not in self.args.kinds:
                continue
            if kind == "maint":
                results = {k: KindResult() for k in ("maint-in", "maint-out")}
            else:
                results = {kind: KindResult()}
            self.result.kinds.update(results)
            try:
                for i in range(self.args.changes):
                    self._change(kind, i, lab, run, tester, results)
            except (BenchError, OSError) as exc:
                for res in results.values():
                    res.error = str(exc)
                print(f"  {kind}: {exc}", flush=True)
                try:  # the next kind starts from all green, or the size ends
                    self.settle(run, run.metrics().passes, f"the failed {kind} change")
                except BenchError:
                    return
            for name, res in results.items():
                print(
                    f"  {name}: e2e p50 {statistics.median(res.e2e or [float('nan')]):.2f} s "
                    f"over {len(res.e2e)}",
                    flush=True,
                )

    def _victim(self, run: RunProcess, i: int, offset: int) -> Row:
        rows = sorted(host_rows(run.status()), key=lambda row: row.path)
        original = [row for row in rows if "bench-added" not in row.path]
        return original[(offset + i) % len(original)]

    def _change(
        self, kind: str, i: int, lab: Lab, run: RunProcess, tester: Session, results: dict[str, KindResult]
    ) -> None:
        offset = {"power-off": 0, "deleted": 20, "host-added": 0, "maint": 40}[kind]
        victim = self._victim(run, i, offset)
        before = run.metrics()
        mark = run.last_event()
        cpu0 = cpu_seconds(run.pid)
        lab_eam0 = lab.eam.vim_calls if lab.eam is not None else 0
        res = results["maint-in" if kind == "maint" else kind]
        resolved: dict[str, Any] | None = None
        if kind == "power-off":
            assert victim.vm is not None
            ensure_powered_off(tester, MoRef("VirtualMachine", victim.vm))
            t0 = time.time()
            resolved = wait(
                lambda: self.resolve_event(run, mark, victim.host),
                self.args.change_timeout,
                f"a resolve of the power-off on {victim.path}",
            )
            at_action = acted = run.metrics()
            e2e = float(resolved["time"]) - t0
            res.to_resolve.append(e2e)
        elif kind == "deleted":
            assert victim.vm is not None
            destroy(tester, MoRef("VirtualMachine", victim.vm))
            t0 = time.time()
            resolved = wait(
                # not the resolve of the power-off before the Destroy_Task, if the controller was that quick
                lambda: self.resolve_event(run, mark, victim.host, since=t0),
                self.args.change_timeout,
                f"a resolve of the deleted VM on {victim.path}",
            )
            res.to_resolve.append(float(resolved["time"]) - t0)
            acted = run.metrics()
            at_action = self.settle(run, acted.passes, f"the deleted VM on {victim.path}")
            e2e = time.time() - t0
        elif kind == "host-added":
            cluster = tester.content.searchIndex.FindByInventoryPath(
                f"/DC0/host/DC0_C{i % self.shape.clusters}"
            )
            if cluster is None:
                raise BenchError(f"no cluster DC0_C{i % self.shape.clusters} in vcsim")
            green0 = before.states.get("green", 0)
            added = add_host(
                tester, Session.moref(cluster), f"bench-added-{i}.lab", username="root", password="x"
            )
            t0 = time.time()
            self.expected += 1
            wait(  # the action that answers it: the new host's AgentVM settings written
                lambda: self.action_event(run, mark, added.value, ("host-settings",)),
                self.args.change_timeout,
                f"the AgentVM settings of the added host bench-added-{i}.lab",
            )
            acted = run.metrics()
            at_action = wait(
                lambda: s if (s := run.metrics()).states.get("green", 0) > green0 else None,
                self.args.change_timeout,
                f"the agent of the added host bench-added-{i}.lab green",
            )
            e2e = time.time() - t0
        else:  # maintenance mode, in then out
            host = MoRef("HostSystem", victim.host)
            ensure_maintenance_mode(tester, host, True, timeout=self.args.change_timeout)
            t0 = time.time()
            at_action = wait(
                lambda: s if (s := run.metrics()).states.get("maintenance", 0) >= 1 else None,
                self.args.change_timeout,
                f"{victim.path} shown in maintenance mode",
            )
            e2e = time.time() - t0
            cpu = cpu_seconds(run.pid) - cpu0
            # no action of agentvm's answers a host entering or leaving maintenance mode (EAM powers the
            # agent off and on): change → action is change → shown
            self._record(res, before, at_action, at_action, at_action, e2e, None, cpu, lab, lab_eam0)
            res = results["maint-out"]
            # a host stays in maintenance mode for a while (an upgrade, a repair): what the controller does
            # meanwhile is not the exit's cost
            time.sleep(self.args.maint_hold)
            before, cpu0 = run.metrics(), cpu_seconds(run.pid)
            lab_eam0 = lab.eam.vim_calls if lab.eam is not None else 0
            ensure_maintenance_mode(tester, host, False, timeout=self.args.change_timeout)
            t0 = time.time()
            at_action = acted = self.settle(
                run, run.metrics().passes, f"{victim.path} out of maintenance mode"
            )
            e2e = time.time() - t0
        settled = self.settle(run, at_action.passes, f"the {kind} change on {victim.path}")
        if kind == "power-off":
            assert victim.vm is not None
            wait(
                lambda: (
                    power_state(tester, MoRef("VirtualMachine", victim.vm or "")) is PowerState.POWERED_ON
                ),
                self.args.change_timeout,
                f"the agent VM on {victim.path} on again",
            )
        cpu = cpu_seconds(run.pid) - cpu0
        self._record(res, before, acted, at_action, settled, e2e, resolved, cpu, lab, lab_eam0)
        print(
            f"    {kind} {i + 1}: {e2e:.2f} s, {sum(res.to_action[-1:])} calls to the action, "
            f"{sum(res.vim[-1:]) + sum(res.eam[-1:])} to settled",
            flush=True,
        )

    def _record(
        self,
        res: KindResult,
        before: Scrape,
        acted: Scrape,
        at_action: Scrape,
        settled: Scrape,
        e2e: float,
        resolved: dict[str, Any] | None,
        cpu: float,
        lab: Lab,
        lab_eam0: int,
    ) -> None:
        res.e2e.append(e2e)
        _, own, _ = at_action.minus(before)
        res.own.append(own)
        if resolved is not None and at_action.resolves > before.resolves:
            res.resolve_own.append(
                (at_action.resolve_own - before.resolve_own) / (at_action.resolves - before.resolves)
            )
        to_action, _, _ = acted.minus(before)
        res.to_action.append(sum(to_action.values()))
        calls, _, _ = settled.minus(before)
        vim_calls, eam_calls = split_calls(calls)
        res.vim.append(vim_calls)
        res.eam.append(eam_calls)
        res.methods.update(calls)
        res.reasons.update(settled.reads_since(before))
        res.cpu.append(cpu)
        res.lab_eam.append((lab.eam.vim_calls if lab.eam is not None else 0) - lab_eam0)

    # -- the floor ------------------------------------------------------------------------------------

    def _floor(self, lab: Lab, info: LabInfo, tester: Session) -> None:
        """The bare-pyVmomi floor for power-off and deleted (see the module docstring), alone on the lab."""
        floor = Floor(info, self.rows)
        try:
            for kind, offset in (("power-off", 0), ("deleted", 20)):
                res = self.result.floor.setdefault(kind, KindResult())
                try:
                    for i in range(self.args.changes):
                        row = self.rows[(offset + i) % len(self.rows)]
                        floor.change(kind, row, tester, res, self.args.change_timeout)
                        self.rows[(offset + i) % len(self.rows)] = Row(
                            row.host, row.path, floor.vm_of_host[row.host], True
                        )
                except BenchError as exc:
                    res.error = str(exc)
                    print(f"  floor {kind}: {exc}", flush=True)
                    return
                print(
                    f"  floor {kind}: p50 {statistics.median(res.e2e):.2f} s over {len(res.e2e)}", flush=True
                )
        finally:
            floor.close()


class Floor:
    """A bare pyVmomi client: one vim25 session, EAM through pyVmomi's eam stubs on its cookie, a property
    collector of its own with one filter on the agent VMs' ``runtime.powerState``. Counts its calls."""

    def __init__(self, info: LabInfo, rows: list[Row]) -> None:
        self.si, manager = bare_clients(info.vcsim)
        self.agency = next(a for a in manager.QueryAgency() if a.QueryConfig().agencyName == AGENCY)
        # set-up, not timed: which agent serves which host, and its VM
        self.agent_of_host: dict[str, Any] = {}
        self.vm_of_host: dict[str, str | None] = {}
        for agent in self.agency.QueryAgent():
            runtime = agent.QueryRuntime()
            if runtime.host is not None:
                self.agent_of_host[runtime.host._moId] = agent
                self.vm_of_host[runtime.host._moId] = runtime.vm._moId if runtime.vm is not None else None
        self.collector = self.si.content.propertyCollector.CreatePropertyCollector()
        self.version = ""
        self.filter: Any = None
        self._watch([row.vm for row in rows if row.vm])

    def _watch(self, vms: list[str]) -> None:
        """(Re)create the filter on ``vms`` and read its initial state (set-up, not timed)."""
        if self.filter is not None:
            with contextlib.suppress(Exception):
                self.filter.Destroy()
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(obj=vim.VirtualMachine(v, self.si._stub))
                for v in vms
            ],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["runtime.powerState"]
                )
            ],
        )
        self.filter = self.collector.CreateFilter(spec, partialUpdates=False)
        self.version = ""
        self._wait_updates(lambda vm, kind, state: False, 5.0, Counter())

    def _wait_updates(
        self, matches: Callable[[str, str, str | None], bool], timeout: float, calls: Counter[str]
    ) -> bool:
        """WaitForUpdatesEx until an update ``matches`` (vm moid, kind, power state); False on timeout."""
        deadline = time.monotonic() + timeout
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=1)
        while time.monotonic() < deadline:
            calls["WaitForUpdatesEx"] += 1
            try:
                update = self.collector.WaitForUpdatesEx(self.version, options)
            except (vmodl.fault.SystemError, vmodl.fault.ManagedObjectNotFound):
                return True  # vcsim 0.24.2 fails the wait of a filter whose VM was deleted: the wake-up
            if update is None:
                if not self.version:
                    return False  # the initial read, nothing to report
                continue
            self.version = update.version
            for filter_update in update.filterSet or ():
                for obj in filter_update.objectSet or ():
                    state = next(
                        (str(c.val) for c in obj.changeSet or () if c.name == "runtime.powerState"), None
                    )
                    if matches(obj.obj._moId, str(obj.kind), state):
                        return True
            if not self.version:
                return False
        return False

    def change(self, kind: str, row: Row, tester: Session, res: KindResult, timeout: float) -> None:
        calls: Counter[str] = Counter()
        vm = self.vm_of_host.get(row.host)
        agent = self.agent_of_host.get(row.host)
        if vm is None or agent is None:
            raise BenchError(f"the floor found no agent VM on {row.path}")
        wanted = "VmPoweredOff" if kind == "power-off" else "VmNotDeployed"
        if kind == "power-off":
            ensure_powered_off(tester, MoRef("VirtualMachine", vm))
        else:
            destroy(tester, MoRef("VirtualMachine", vm))
        t0 = time.time()
        if not self._wait_updates(
            lambda moid, how, state: moid == vm and (how == "leave" or state == "poweredOff"), timeout, calls
        ):
            raise BenchError(f"the floor's WaitForUpdatesEx did not report the {kind} VM on {row.path}")

        def issue() -> Any:
            calls["AgencyQueryRuntime"] += 1
            for found in self.agency.AgencyQueryRuntime().issue or ():
                if (
                    type(found).__name__.endswith(wanted)
                    and getattr(found, "agent", None) is not None
                    and found.agent._moId == agent._moId
                ):
                    return found
            return None

        found = wait(issue, timeout, f"the lab's EAM to raise {wanted} on {row.path} (floor)", 0.05)
        calls["Resolve"] += 1
        self.agency.Resolve([found.key])
        res.to_resolve.append(time.time() - t0)
        res.to_action.append(sum(calls.values()))
        if kind == "deleted":

            def hook() -> Any:
                calls["AgentQueryRuntime"] += 1
                runtime = agent.QueryRuntime()
                return runtime if runtime.vmHook is not None and runtime.vm is not None else None

            runtime = wait(hook, timeout, f"the redeployed VM's hook on {row.path} (floor)", 0.05)
            calls["MarkAsAvailable"] += 1
            agent.MarkAsAvailable()

            def green() -> bool:
                calls["AgentQueryRuntime"] += 1
                now = agent.QueryRuntime()
                return bool(now.status == "green" and now.vmPowerState == "poweredOn" and now.vmHook is None)

            wait(green, timeout, f"the redeployed VM on {row.path} green (floor)", 0.05)
            self.vm_of_host[row.host] = runtime.vm._moId
            res.e2e.append(time.time() - t0)
            self._watch([v for v in self.vm_of_host.values() if v])  # the new VM in, the deleted one out
        else:
            res.e2e.append(res.to_resolve[-1])
            wait(
                lambda: power_state(tester, MoRef("VirtualMachine", vm)) is PowerState.POWERED_ON,
                timeout,
                f"the agent VM on {row.path} on again (floor)",
            )
            self._wait_updates(  # the wake-up that shows it settled, counted as agentvm's is
                lambda moid, how, state: moid == vm and state == "poweredOn", timeout, calls
            )
        vim_calls, eam_calls = split_calls(calls)
        res.vim.append(vim_calls)
        res.eam.append(eam_calls)
        res.methods.update(calls)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.collector.DestroyPropertyCollector()
        with contextlib.suppress(Exception):
            Disconnect(self.si)


# -- the tables -------------------------------------------------------------------------------------------


def ms(values: list[float], p: float) -> str:
    return "-" if not values else f"{pct(values, p) * 1e3:.0f}"


def mean(values: list[int] | list[float]) -> str:
    return "-" if not values else f"{statistics.mean(values):.1f}"


def print_size(r: SizeResult) -> None:
    shape = f"{r.shape.clusters}x{r.shape.hosts}"
    load = ", ".join(f"{x:.1f}" for x in r.load)
    print(
        f"\n{r.hosts} hosts ({shape}, {r.shape.vms} workload VMs per host): lab start {r.lab_start:.1f} s, "
        f"vcsim {r.vcsim_rss:.0f} MB; deploy "
        + (
            f"{r.deploy:.1f} s ({r.hosts / r.deploy:.1f} agents/s)"
            if not math.isnan(r.deploy)
            else r.deploy_note
        )
        + f"; idle {r.idle_vim:.0f} vim25 + {r.idle_eam:.0f} EAM calls/min; agentvm run RSS MB "
        + ", ".join(f"{k} {v:.0f}" for k, v in r.rss.items())
        + f"; load average {load} (logs: {r.log_dir})"
    )
    if r.idle_methods:
        print(
            "  idle calls/min by method: " + ", ".join(f"{m} {n}" for m, n in r.idle_methods.most_common(8))
        )
    header = (
        f"  {'change':<18} {'n':>3} {'e2e p50':>8} {'e2e p99':>8} {'→res p50':>8} {'→res p99':>8} "
        f"{'own p50':>8} {'own p99':>8} {'resOwn99':>8} {'cpu/chg':>8} {'→act':>6} {'vim→set':>8} "
        f"{'eam→set':>8} {'labEAM':>7}"
    )
    print(
        header + "   (times in ms; own, resOwn and cpu: agentvm's; calls per change: vim25 + EAM to the "
        "action, vim25 and EAM to settled)"
    )
    for who, kinds in (("agentvm", r.kinds), ("floor", r.floor)):
        for kind, res in kinds.items():
            print(
                f"  {who + ' ' + kind:<18} {len(res.e2e):>3} {ms(res.e2e, 50):>8} {ms(res.e2e, 99):>8} "
                f"{ms(res.to_resolve, 50):>8} {ms(res.to_resolve, 99):>8} {ms(res.own, 50):>8} "
                f"{ms(res.own, 99):>8} {ms(res.resolve_own, 99):>8} "
                f"{'-' if not res.cpu else f'{statistics.mean(res.cpu) * 1e3:.0f}':>8} "
                f"{mean(res.to_action):>6} {mean(res.vim):>8} "
                f"{mean(res.eam):>8} {mean(res.lab_eam):>7}" + (f"   ERROR: {res.error}" if res.error else "")
            )
    for who, kinds in (("agentvm", r.kinds), ("floor", r.floor)):
        for kind, res in kinds.items():
            if res.methods and res.e2e:
                n = len(res.e2e)
                top = ", ".join(f"{m} {c / n:.1f}" for m, c in res.methods.most_common(6))
                print(f"  {who} {kind} calls per change (to settled) by method: {top}")
                if res.reasons:
                    why = ", ".join(f"{m} {c / n:.1f}" for m, c in res.reasons.most_common())
                    print(f"  {who} {kind} agent reads per change (to settled) by reason: {why}")
    print("  calls per change, mean (max) to the action / to settled:")
    for kind, res in r.kinds.items():
        if not res.e2e:
            continue
        line = f"    {kind:<10} agentvm {_per_change(res)}"
        if kind in r.floor and r.floor[kind].e2e:
            line += f"   floor {_per_change(r.floor[kind])}"
        print(line)


def _per_change(res: KindResult) -> str:
    settled = [a + b for a, b in zip(res.vim, res.eam, strict=True)]
    return (
        f"{mean(res.to_action)} ({max(res.to_action, default=0)}) / "
        f"{mean(settled)} ({max(settled, default=0)})"
    )


def print_summary(rows: list[SizeResult]) -> None:
    print(
        "\nsummary: one agency over every host (p99 in ms; calls per change = vim25 + EAM, min-max over "
        "every kind, change → action (act) and change → settled (set), agentvm then floor)"
    )
    print(
        f"{'hosts':>6} {'shape':>7} {'deploy s':>9} {'ag/s':>6} {'idle/min':>9} {'RSS MB':>7} "
        f"{'off p99':>8} {'floor':>6} {'del p99':>8} {'floor':>6} {'add p99':>8} {'mm p99':>7} "
        f"{'own p99':>8} {'act/chg':>8} {'floor':>6} {'set/chg':>8} {'floor':>6}"
    )
    for r in rows:
        kinds, floor = r.kinds, r.floor

        def p99(k: dict[str, KindResult], name: str) -> str:
            return ms(k[name].e2e, 99) if name in k else "-"

        per_change = [a + b for res in kinds.values() for a, b in zip(res.vim, res.eam, strict=True)]
        floor_calls = [a + b for res in floor.values() for a, b in zip(res.vim, res.eam, strict=True)]
        to_action = [n for res in kinds.values() for n in res.to_action]
        floor_action = [n for res in floor.values() for n in res.to_action]

        def span(values: list[int], width: int) -> str:
            return f"{(f'{min(values)}-{max(values)}' if values else '-'):>{width}}"

        own = [v for res in kinds.values() for v in res.own]
        deploy = f"{r.deploy:.1f}" if not math.isnan(r.deploy) else "timeout"
        rate = f"{r.hosts / r.deploy:.1f}" if not math.isnan(r.deploy) else "-"
        print(
            f"{r.hosts:>6} {r.shape.clusters}x{r.shape.hosts:<4} {deploy:>9} {rate:>6} "
            f"{r.idle_vim + r.idle_eam:>9.0f} {r.rss.get('peak', float('nan')):>7.0f} "
            f"{p99(kinds, 'power-off'):>8} {p99(floor, 'power-off'):>6} {p99(kinds, 'deleted'):>8} "
            f"{p99(floor, 'deleted'):>6} {p99(kinds, 'host-added'):>8} {p99(kinds, 'maint-in'):>7} "
            f"{ms(own, 99):>8} {span(to_action, 8)} {span(floor_action, 6)} {span(per_change, 8)} "
            f"{span(floor_calls, 6)}"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("hosts", nargs="*", type=int, default=[64, 500, 2500], help="lab sizes (hosts)")
    parser.add_argument("--changes", type=int, default=20, help="changes of each kind (default 20)")
    parser.add_argument("--vms", type=int, default=2, help="workload VMs per host (default 2)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle measure (default 60)")
    parser.add_argument("--resync", type=float, default=60.0, help="agentvm run --resync (default 60 s)")
    parser.add_argument(
        "--deploy-timeout", type=float, default=900.0, help="seconds to wait for every agent ready (900)"
    )
    parser.add_argument(
        "--change-timeout", type=float, default=120.0, help="seconds to wait for each change's action (120)"
    )
    parser.add_argument(
        "--maint-hold",
        type=float,
        default=12.0,
        help="seconds a host stays in maintenance mode before it exits (default 12: past fast_after_change)",
    )
    parser.add_argument(
        "--kinds",
        type=lambda text: tuple(text.split(",")),
        default=("power-off", "deleted", "host-added", "maint"),
        help="the kinds of change, comma-separated (default power-off,deleted,host-added,maint)",
    )
    parser.add_argument(
        "--lab-only", action="store_true", help="only start and stop the lab at each size (its time, memory)"
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that agentvm run and the lab are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"logs and state in {logs}", flush=True)
    results = []
    for hosts in args.hosts:
        work = logs / str(hosts)
        work.mkdir()
        bench = Bench(args, hosts, work)
        try:
            results.append(bench.measure())
        except Exception as exc:  # the next size still runs; the lab and agentvm run are stopped already
            print(f"{hosts} hosts: failed: {type(exc).__name__}: {exc}", flush=True)
            results.append(bench.result)
        if not args.lab_only:
            print_size(results[-1])
    if not args.lab_only:
        print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
