"""Benchmark: initial full netsync of 200 port groups and 10,000 VMs (20,000 NICs) against the lab emulators.

    .venv/bin/python bench/bench_netsync.py [--vms 10000] [--port-groups 200] [--hosts 50] [--workers 8]

Prints a table: the pure plan computation (empty controller, and converged: the steady-state recompute),
reading the controller and the agents' ports, applying the plan (HTTP to the config-API emulator with SQLite
and to one vRouter-agent emulator per host), and a no-op re-sync; then the old plugin's figure beside it
(47 s for 217 networks and 1,203 VMs). Everything runs on 127.0.0.1; the emulators are Python, so the apply
figures are bounded by them, not by agentvm.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agentvm.core import netsync
from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.model.agency import PowerState
from agentvm.model.network import Dvs, IpPool, IpRange, NetworkInventory, Nic, PortGroup, SyncPlan, Vm
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.sync import apply_plan, read_controller_state, read_ports
from agentvm.sdn.vrouter import VrouterAgentClient

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def build_inventory(port_groups: int, vms: int, hosts: int) -> NetworkInventory:
    pgs = tuple(
        PortGroup(f"dvportgroup-{i}", f"pg-{i}", "dvs-1", 100 + i, f"pool-{i}") for i in range(port_groups)
    )
    pools = tuple(
        IpPool(f"pool-{i}", f"pool-{i}", f"10.{i // 250}.{i % 250}.0/24", None, (IpRange(
            f"10.{i // 250}.{i % 250}.2", f"10.{i // 250}.{i % 250}.254"),))
        for i in range(port_groups)
    )  # fmt: skip
    machines = []
    for n in range(vms):
        nics = tuple(
            Nic(4000 + k, f"00:50:56:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}:{k:02x}",
                f"dvportgroup-{(2 * n + k) % port_groups}", f"port-{n}-{k}")
            for k in range(2)
        )  # fmt: skip
        machines.append(Vm(f"vm-{n}", f"vm-{n}", f"host-{n % hosts}", PowerState.POWERED_ON, nics))
    return NetworkInventory(
        "bench-vcenter", pgs, pools, tuple(machines), (Dvs("dvs-1", "dvs", frozenset({1, 2})),)
    )


def with_vlans(inv: NetworkInventory, plan: SyncPlan) -> NetworkInventory:
    """The vCenter side of the sync: the plan's DV port VLANs set (ReconfigureDVPort)."""
    vlans = {d.port_key: d.vlan for d in plan.dv_port_vlans}

    def nic(n: Nic) -> Nic:
        return dataclasses.replace(n, port_vlan_id=vlans.get(n.port_key or "", n.port_vlan_id))

    return dataclasses.replace(
        inv, vms=tuple(dataclasses.replace(vm, nics=tuple(map(nic, vm.nics))) for vm in inv.vms)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-groups", type=int, default=200)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    inv = build_inventory(args.port_groups, args.vms, args.hosts)
    nics = sum(len(vm.nics) for vm in inv.vms)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_api = sdn_emulator.start(Path(tmp) / "bench.sqlite")
        agents = vrouter_emulator.start_many([f"host-{h}" for h in range(args.hosts)])
        api = ConfigApiClient(config_api.url, timeout=60)
        clients = {h: VrouterAgentClient(a.url, timeout=60) for h, a in agents.items()}
        pool = ThreadPoolExecutor(max_workers=args.workers)
        try:
            state, t_read = timed(lambda: read_controller_state(api))
            candidates = netsync.port_candidates(inv, state)
            (ports, _), t_ports = timed(lambda: read_ports(clients, candidates))
            plan, t_plan = timed(lambda: netsync.plan(inv, state, ports))
            rows.append(("read controller (empty)", t_read, ""))
            rows.append(
                ("read agents' ports (empty)", t_ports, f"{sum(len(c) for c in candidates.values())} GETs")
            )
            rows.append(
                (
                    "plan, pure (empty controller)",
                    t_plan,
                    f"{len(plan.create)} creates, {len(plan.ports)} port calls",
                )
            )
            result, t_apply = timed(lambda: apply_plan(plan, api, clients, state, map_fn=pool.map))
            assert result.ok, result.failures[:3]
            rows.append(
                (f"apply ({args.workers} workers, HTTP to emulators)", t_apply, f"{result.done} calls")
            )
            rows.append(("initial full sync, total", t_read + t_ports + t_plan + t_apply, ""))

            inv = with_vlans(inv, plan)
            state, t_read2 = timed(lambda: read_controller_state(api))
            candidates = netsync.port_candidates(inv, state)
            (ports, _), t_ports2 = timed(lambda: read_ports(clients, candidates))
            again, t_plan2 = timed(lambda: netsync.plan(inv, state, ports))
            assert again.is_noop, (len(again.create), len(again.update), len(again.delete), len(again.ports))
            rows.append(("re-read controller (converged)", t_read2, f"{len(state.vmis)} interfaces"))
            rows.append(("re-read agents' ports (converged)", t_ports2, ""))
            rows.append(("plan, pure (converged: no-op)", t_plan2, "a full recompute"))

            # steady state: one VM powered off, full recompute + its port calls
            samples = []
            for i in range(20):
                vm = inv.vms[i]
                changed = dataclasses.replace(
                    inv,
                    vms=(
                        *inv.vms[:i],
                        dataclasses.replace(vm, power_state=PowerState.POWERED_OFF),
                        *inv.vms[i + 1 :],
                    ),
                )
                start = time.perf_counter()
                step = netsync.plan(changed, state, ports)
                apply_plan(step, api, clients, state)
                samples.append(time.perf_counter() - start)
                assert len(step.ports) == 2
            samples.sort()
            rows.append(
                ("NIC change -> port call, median (full recompute)", statistics.median(samples), "20 samples")
            )
            rows.append(("NIC change -> port call, p99 (max of 20)", samples[-1], ""))
        finally:
            pool.shutdown()
            api.close()
            for client in clients.values():
                client.close()
            config_api.stop()
            for agent in agents.values():
                agent.stop()

    print(f"\nnetsync: {args.port_groups} port groups, {args.vms} VMs, {nics} NICs, {args.hosts} hosts\n")
    print(f"{'step':<52} {'seconds':>9}  note")
    print("-" * 90)
    for name, seconds, note in rows:
        print(f"{name:<52} {seconds:>9.3f}  {note}")
    print("-" * 90)
    print(f"{'old plugin: 217 networks, 1,203 VMs (full sync)':<52} {47.0:>9.3f}  as reported for it")


if __name__ == "__main__":
    main()
