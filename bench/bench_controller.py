"""The controller's reaction time, memory and calls per change at several lab sizes (change -> action).

For each inventory size, a lab starts (vcsim + the lab's EAM, in this process), the controller runs
in-process with ``--backend eam``, deploys an agency scoped to one 64-host cluster (the same 64 agents at
every size, so that the inventory size is what varies; deploying 2,500 agents through the lab's EAM would
take ~4 min per run) and turns green. Then N times: an agent VM is powered off through another session,
and the controller's first Resolve of that change is timed.

The lab runs without its SDN and vRouter-agent emulators (``Lab(netsync=False)``): they are one thread
per host in this process and would tax the controller being measured.

Columns: lab s = lab start; deploy s = controller start → 64 agents green; read s = one read of the
whole inventory (what the controller's full pass reads first, ``read_inventory``); watch = power-off
task done → the controller's watch got the update (median); end-to-end = power-off task done → Resolve sent
(includes the lab EAM noticing the power-off and raising VmPoweredOff, and the controller's next poll,
``fast_poll`` = 0.5 s); own = agentvm's own time in the pass that resolved, SOAP calls excluded (from
the pass start to the Resolve); vim/chg and eam/chg = vim25 and EAM calls the controller made between the
power-off and the VM being on again, per change (the calls by method are printed too); labEAM/chg =
vim25 calls the lab's EAM (the simulator's side) made meanwhile; RSS = this process's VmRSS after the run
and its growth since before the controller started (the lab's EAM shares the process: an upper bound).
The vcsim logs stay in a temporary directory (printed); so does the solution's generated login
certificate (the controller's state dir), never the user's ~/.local/state/agentvm.

Run: .venv/bin/python bench/bench_controller.py [HOSTS ...]   (default: 64 512 2500; N=20 each)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from agentvm.controller.executor import EAM_METHODS
from agentvm.controller.run import Controller, Settings
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab
from agentvm.model.agency import PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.spec import load_spec
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import ensure_powered_off, power_state

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHANGES = 20
AGENTS = 64


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def shape_for(hosts: int) -> Shape:
    clusters, standalone = divmod(hosts, AGENTS)
    return Shape(clusters=clusters, hosts=AGENTS, standalone=standalone)


def wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def call_counts(controller: Controller) -> Counter[str]:
    """Every call the controller's sessions made so far, by method."""
    reconciler = controller.reconciler
    sessions = {id(s): s for s in reconciler.executor.sessions()}
    total: Counter[str] = Counter()
    for session in sessions.values():
        total.update(session.stats.snapshot())
    return total


def measure(hosts: int, log_dir: Path) -> dict[str, float]:
    started = time.monotonic()
    lab = Lab(shape_for(hosts), netsync=False, log_dir=log_dir)
    info = lab.start()
    lab_start = time.monotonic() - started
    conn = VCenterConnection(
        url=info.vcsim.url,
        username=info.vcsim.username,
        password=Secret(info.vcsim.password),
        thumbprint=info.vcsim.thumbprint,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-controller-"))
    spec = tmp / "contrail.yaml"
    text = (EXAMPLES / "contrail.yaml").read_text().replace("      - /DC0/host/DC0_C1\n", "")
    spec.write_text(text)
    desired = load_spec(spec, env=info.env())
    tester = Session.connect(conn)
    own_session = Session.connect(conn, correlation_prefix="agentvm-run")
    before = rss_mb()
    settings = Settings(fast_poll=0.5, slow_poll=5.0, full_resync=3600.0)
    # the solution's generated certificate goes to this run's temporary dir, never ~/.local/state
    controller = Controller(desired, own_session, settings=settings, state_dir=tmp / "state").start()
    try:
        started = time.monotonic()
        wait(
            lambda: (
                controller.ready()
                and controller.reconciler.report.agencies
                and controller.reconciler.report.agencies[0].status.green
                and len(controller.reconciler.report.agencies[0].status.agents) == AGENTS
            ),
            900,
            "green",
        )
        deploy = time.monotonic() - started
        read_started = time.monotonic()
        inventory = read_inventory(tester)  # what a full pass reads first (Solution.plan)
        full_read = time.monotonic() - read_started
        vms = [
            v.moref
            for v in inventory.vms
            if v.name.startswith("contrail-vm") and v.power_state is PowerState.POWERED_ON
        ]
        e2e: list[float] = []
        own: list[float] = []
        watch: list[float] = []
        vim_calls: list[int] = []
        eam_calls: list[int] = []
        lab_eam_calls: list[int] = []
        methods: Counter[str] = Counter()
        for i in range(CHANGES):
            vm = vms[i % len(vms)]
            seen = len(controller.samples)
            counts_before = call_counts(controller)
            lab_eam_before = lab.eam.vim_calls if lab.eam is not None else 0
            ensure_powered_off(tester, vm)
            t0 = time.perf_counter()
            wait(lambda s=seen: len(controller.samples) > s, 60, "a resolve")
            sample = controller.samples[seen]
            wait(lambda v=vm: power_state(tester, v) is PowerState.POWERED_ON, 60, "power on")
            counts = call_counts(controller)
            counts.subtract(counts_before)
            methods.update(counts)
            eam = sum(n for m, n in counts.items() if m in EAM_METHODS)
            e2e.append(sample.resolve_sent - t0)
            own.append(sample.own)
            if sample.update_received >= t0:
                watch.append(sample.update_received - t0)
            vim_calls.append(sum(counts.values()) - eam)
            eam_calls.append(eam)
            lab_eam_calls.append((lab.eam.vim_calls if lab.eam is not None else 0) - lab_eam_before)
            time.sleep(0.6)  # let the next poll see green before the next change
        top = ", ".join(f"{m} {n / CHANGES:.1f}" for m, n in methods.most_common(8))
        print(f"{hosts} hosts: calls per change by method: {top}", flush=True)
        return {
            "hosts": hosts,
            "lab": lab_start,
            "deploy": deploy,
            "full_read": full_read,
            "watch_p50": statistics.median(watch) if watch else float("nan"),
            "e2e_p50": statistics.median(e2e),
            "e2e_p99": pct(e2e, 99),
            "own_p50": statistics.median(own),
            "own_p99": pct(own, 99),
            "vim": statistics.mean(vim_calls),
            "eam": statistics.mean(eam_calls),
            "lab_eam": statistics.mean(lab_eam_calls),
            "rss": rss_mb(),
            "rss_growth": rss_mb() - before,
        }
    finally:
        controller.stop()
        tester.logout()
        own_session.logout()
        lab.stop()


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [64, 512, 2500]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-controller-logs-"))
    rows = []
    for n in sizes:
        (log_dir / str(n)).mkdir()
        rows.append(measure(n, log_dir / str(n)))
        print(f"{n} hosts done (vcsim log in {log_dir / str(n)})", flush=True)
    print(f"\ncontroller, {AGENTS} agents, {CHANGES} power-offs per size (times in ms unless said)")
    header = (
        f"{'hosts':>6} {'lab s':>6} {'deploy s':>9} {'read s':>6} {'watch':>6} {'e2e p50':>8} {'e2e p99':>8} "
        f"{'own p50':>8} {'own p99':>8} {'vim/chg':>8} {'eam/chg':>8} {'labEAM/chg':>10} {'RSS MB':>7} "
        f"{'+RSS MB':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['hosts']:>6.0f} {r['lab']:>6.1f} {r['deploy']:>9.1f} {r['full_read']:>6.2f} "
            f"{r['watch_p50'] * 1e3:>6.0f} "
            f"{r['e2e_p50'] * 1e3:>8.0f} {r['e2e_p99'] * 1e3:>8.0f} {r['own_p50'] * 1e3:>8.1f} "
            f"{r['own_p99'] * 1e3:>8.1f} {r['vim']:>8.1f} {r['eam']:>8.1f} {r['lab_eam']:>10.1f} "
            f"{r['rss']:>7.0f} {r['rss_growth']:>8.0f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
