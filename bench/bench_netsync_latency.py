"""Benchmark: steady-state latency from a NIC change to the vRouter port call, and the initial full sync.

    .venv/bin/python bench/bench_netsync_latency.py [--sizes 1000,10000] [--changes 200] [--watch-vms 20]

Two parts, one table:

1. **Planner + emulators, at scale** (``--sizes``): a hand-built inventory (N VMs, 2 NICs each, 200 port
   groups, 50 hosts) fully synced into the config-API emulator (SQLite) and one vRouter-agent emulator per
   host; then ``--changes`` single-VM changes (power off/on, a NIC added) each planned by
   ``core.netsync_incremental.plan_change`` and carried out by ``sdn.sync.apply_plan``. "agentvm" is the
   time from the change being known to the port call being issued, minus the time spent waiting on the
   emulators before it; "simulator" is that waiting (config-API creates for a new NIC).
2. **The watch on vcsim** (``--watch-vms``): ``NetsyncWatch`` against the lab's vcsim; VMs powered off and
   on through SOAP. "agentvm" is the watch's own time from receiving the update to issuing the port call;
   "simulator" is vcsim delivering the update (task done -> WaitForUpdatesEx returns) plus vCenter reads.

The initial full sync (read, plan, apply) is printed beside the old plugin's 47 s for 217 networks and 1,203
VMs. Everything runs on 127.0.0.1; the emulators are Python, so their share is theirs, not agentvm's.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.integration: the vSphere admin helper

from bench_netsync import build_inventory

from agentvm.core import netsync, netsync_incremental
from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.model.agency import PowerState
from agentvm.model.network import Nic, Vm
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.sync import apply_plan, read_controller_state, read_ports
from agentvm.sdn.vrouter import VrouterAgentClient

Row = tuple[str, str, str, str]


class Timed:
    """A proxy timing every call of ``target`` (HTTP to an emulator); records when port calls start."""

    PORT_CALLS = ("add_port", "enable_port", "disable_port", "delete_port")

    def __init__(self, target: Any, log: Timeline) -> None:
        self._target = target
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            if name in self.PORT_CALLS:
                self._log.port_call(start)
            try:
                return attr(*args, **kwargs)
            finally:
                if name not in self.PORT_CALLS:
                    self._log.waited(start, time.perf_counter())

        return call


class Timeline:
    """When the first port call of the current change was issued, and the emulator time before it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.first_port: float | None = None
            self.before_port = 0.0

    def port_call(self, at: float) -> None:
        with self.lock:
            if self.first_port is None:
                self.first_port = at

    def waited(self, start: float, end: float) -> None:
        with self.lock:
            if self.first_port is None:
                self.before_port += end - start


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def scale_part(vms: int, changes: int, workers: int) -> list[Row]:
    inv = build_inventory(200, vms, 50)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_api = sdn_emulator.start(Path(tmp) / "bench.sqlite")
        agents = vrouter_emulator.start_many([f"host-{h}" for h in range(50)])
        timeline = Timeline()
        api = ConfigApiClient(config_api.url, timeout=120)
        raw_clients = {h: VrouterAgentClient(a.url, timeout=120) for h, a in agents.items()}
        clients: dict[str, Any] = {h: Timed(c, timeline) for h, c in raw_clients.items()}
        timed_api: Any = Timed(api, timeline)
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            start = time.perf_counter()
            state = read_controller_state(api)
            ports, _ = read_ports(raw_clients, netsync.port_candidates(inv, state))
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            plan, index = netsync_incremental.build(inv, state, ports)
            plan_s = time.perf_counter() - start
            start = time.perf_counter()
            result = apply_plan(plan, api, raw_clients, state, map_fn=pool.map)
            apply_s = time.perf_counter() - start
            assert result.ok, result.failures[:3]
            nics = sum(len(v.nics) for v in inv.vms)
            label = f"{vms:,} VMs / {nics:,} NICs / 200 PGs"
            total = f"{read_s + plan_s + apply_s:.1f} s"
            parts = f"read {read_s:.1f} s + plan {plan_s:.2f} s + apply {apply_s:.1f} s ({workers} workers)"
            rows.append((f"initial full sync, {label}", total, "", parts))
            start = time.perf_counter()
            full = netsync.plan(index.inventory(), index.controller_state(), index.ports)
            full_s = time.perf_counter() - start
            assert full.is_noop
            rows.append((f"  full recompute (old way), {label}", ms(full_s), "", "ms, pure plan, per change"))

            own: dict[str, list[float]] = {"power off/on": [], "NIC added": []}
            sim: dict[str, list[float]] = {"power off/on": [], "NIC added": []}
            vms_sorted = sorted(index.vms)
            vn_state = read_controller_state(api)
            for n in range(changes):
                moid = vms_sorted[(n * 37) % len(vms_sorted)]
                vm = index.vms[moid]
                if n % 4 == 3:
                    kind = "NIC added"
                    extra = Nic(4100 + n, f"00:50:57:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}:01",
                                vm.nics[0].port_group_key, f"extra-{n}")  # fmt: skip
                    new: Vm = dataclasses.replace(vm, nics=(*vm.nics, extra))
                else:
                    kind = "power off/on"
                    off = vm.power_state is PowerState.POWERED_ON
                    new = dataclasses.replace(
                        vm, power_state=PowerState.POWERED_OFF if off else PowerState.POWERED_ON
                    )
                timeline.reset()
                start = time.perf_counter()
                step, after = netsync_incremental.plan_change(index, {moid: new})
                result = apply_plan(step, timed_api, clients, vn_state)
                assert result.ok and step.ports, (result.failures, step)
                assert timeline.first_port is not None
                own[kind].append(timeline.first_port - start - timeline.before_port)
                sim[kind].append(timeline.before_port)
                index = after
            for kind in own:
                rows.append((
                    f"  NIC change -> port call, {kind}, {label}",
                    f"{ms(statistics.median(own[kind]))} / {ms(pct(own[kind], 0.99))}",
                    f"{ms(statistics.median(sim[kind]))} / {ms(pct(sim[kind], 0.99))}",
                    f"ms median / p99 over {len(own[kind])} changes",
                ))  # fmt: skip
        finally:
            pool.shutdown()
            api.close()
            for client in raw_clients.values():
                client.close()
            config_api.stop()
            for agent in agents.values():
                agent.stop()
    return rows


def watch_part(vm_count: int, changes: int) -> list[Row]:
    """The NetsyncWatch against vcsim: power a VM off / on, time update -> port call."""
    from tests.integration.test_netsync_vcenter import VCenter, login

    from agentvm.controller.netsync import BatchTiming, NetsyncWatch
    from agentvm.lab.vcsim import Shape, Vcsim

    sim = Vcsim(Shape())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        vc = VCenter(sim.info)
        config_api = sdn_emulator.start(Path(tmp) / "watch.sqlite")
        agents = vrouter_emulator.start_many(vc.host_ids())
        timeline = Timeline()
        raw = {h: VrouterAgentClient(a.url) for h, a in agents.items()}
        clients: dict[str, Any] = {h: Timed(c, timeline) for h, c in raw.items()}
        api = ConfigApiClient(config_api.url)
        session = login(sim.info)
        batches: list[BatchTiming] = []
        watch = NetsyncWatch(session, Timed(api, timeline), lambda: clients, on_batch=batches.append)  # type: ignore[arg-type]
        try:
            pg = vc.port_group("pg-bench", 900, ("10.90.0.0", "10.90.0.1", "10.90.0.10#200"))
            vms = [vc.vm(f"b-{i}", pg, host=i % 6) for i in range(vm_count)]
            for v in vms:
                vc.run(v.PowerOnVM_Task(), "power on")
            start = time.perf_counter()
            watch.start()
            assert watch.wait_idle(120)
            took = f"{time.perf_counter() - start:.2f} s"
            rows.append((f"watch: start + full sync, {vm_count} VMs on vcsim", took, "", "read, plan, apply"))
            own: list[float] = []
            delivery: list[float] = []
            for n in range(changes):
                vm = vms[n % len(vms)]
                task = vm.PowerOffVM_Task() if (n // len(vms)) % 2 == 0 else vm.PowerOnVM_Task()
                batches.clear()
                timeline.reset()
                vc.run(task, "power")
                done = time.perf_counter()
                deadline = done + 10
                while (not batches or timeline.first_port is None) and time.perf_counter() < deadline:
                    time.sleep(0.002)
                assert batches and timeline.first_port is not None, "no port call within 10 s"
                timing = batches[0]
                waited = timing.vcenter_seconds + timeline.before_port
                own.append(timeline.first_port - timing.received - waited)
                delivery.append(max(0.0, timing.received - done) + timing.vcenter_seconds)
            rows.append((
                f"  watch: power change -> port call, {vm_count} VMs on vcsim",
                f"{ms(statistics.median(own))} / {ms(pct(own, 0.99))}",
                f"{ms(statistics.median(delivery))} / {ms(pct(delivery, 0.99))}",
                f"ms median / p99 over {changes} changes; full syncs: {watch.full_syncs}",
            ))  # fmt: skip
        finally:
            watch.stop()
            session.logout()
            vc.session.logout()
            api.close()
            config_api.stop()
            for agent in agents.values():
                agent.stop()
            sim.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--watch-vms", type=int, default=20)
    parser.add_argument("--watch-changes", type=int, default=60)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    rows: list[Row] = []
    run: list[Callable[[], list[Row]]] = [
        (lambda n=int(s): scale_part(n, args.changes, args.workers)) for s in args.sizes.split(",") if s
    ]
    if args.watch_vms:
        run.append(lambda: watch_part(args.watch_vms, args.watch_changes))
    for part in run:
        rows.extend(part())
    print(f"\n{'what':<66} {'agentvm':>15} {'simulator':>15}  note")
    print("-" * 140)
    for what, own, sim, note in rows:
        print(f"{what:<66} {own:>15} {sim:>15}  {note}")
    print("-" * 140)
    old = "old plugin: full sync of 217 networks, 1,203 VMs"
    print(f"{old:<66} {'47 s':>15} {'':>15}  as reported for it")


if __name__ == "__main__":
    main()
