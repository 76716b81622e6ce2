"""The lab's EAM at scale: CreateAgency to all green, serial and parallel, and power-off → issue.

For each lab size (clusters × hosts) and each mode, a lab starts in this process without its SDN and
vRouter-agent emulators (``Lab(netsync=False)``: one thread per host would tax the EAM being measured).
A plain pyVmomi EAM client (as a solution would use) creates an agency over every cluster with the
hello-agent OVF. Modes: ``serial`` is the lab's EAM with ``deploy_per_cluster=1, deploy_total=1`` (one
action at a time, as before), ``parallel`` its defaults (4 per cluster, 32 in all).

Columns: deploy s = CreateAgency → every agent green (the client polls AgencyQueryRuntime every 0.1 s);
agents/s; vim/host = vim25 calls the lab's EAM made per host deployed; peak = most actions in flight at
once (in all / in one cluster). Then, on the green agency, N times: an agent VM is powered off through
another vCenter session and the time from the power-off task done to VmPoweredOff in the agency's
QueryIssue is taken (p50 / p99, the client polls every 50 ms); the floor beside it is a bare pyVmomi
WaitForUpdatesEx on the same VM's runtime.powerState (task done → update). Last, the engine's own costs
at that size, the parts of a step that observes and reconciles (a quiet step reads only the watcher's
generation), each on its own: ``Infrastructure.observe`` of the scope, ``find_owned_vms``, the CPU time of
``core.agents.reconcile`` and one state-file save (and its size); beside them the same two reads by an
infrastructure without its watcher (full obs, full VMs: every read a full one, what each step paid before
the reads followed the watcher).

Run: .venv/bin/python bench/bench_eam_deploy.py [CxH ...] [--modes serial,parallel] [--trials N]
(default: 2x32 5x100; 25x100 is vCenter's maximum of 2,500 hosts, about 10 min in parallel mode; serial
is skipped above 500 hosts: it takes hours)
"""

from __future__ import annotations

import argparse
import dataclasses
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from pyVim.connect import Connect, Disconnect
from pyVmomi import SoapStubAdapter, eam, vim, vmodl

from agentvm.core.agents import reconcile
from agentvm.engine.store import StateFile
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.lab.eam_service import EAM_NAMESPACE
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.session import Session

MODES = {"serial": (1, 1), "parallel": (4, 32)}
SERIAL_MAX_HOSTS = 500
PC = vmodl.query.PropertyCollector


def bare_clients(vcsim: Any) -> tuple[Any, Any]:
    """The bare-pyVmomi floor's clients on the lab's simulator (a ``VcsimInfo``): a vim25 session (pyVim's
    ``Connect``) and EAM's EsxAgentManager through pyVmomi's eam stubs on that session's cookie, as
    eam/client.py reaches EAM. The other benchmarks' floors use these too."""
    ctx = ssl._create_unverified_context()  # noqa: S323 - loopback lab
    si = Connect(
        host=vcsim.host,
        port=vcsim.port,
        user=vcsim.username,
        pwd=vcsim.password,
        sslContext=ctx,
        version="vim.version.version11",
    )
    stub = SoapStubAdapter(
        host=vcsim.host,
        port=vcsim.port,
        path="/eam/sdk",
        version="eam.version.version7_5",
        sslContext=ctx,
    )
    stub.cookie = si._stub.cookie
    return si, eam.EsxAgentManager("EsxAgentManager", stub)


def connect(info: Any) -> tuple[Any, Any]:
    """``bare_clients`` of a running ``Lab``'s simulator."""
    return bare_clients(info.vcsim)


def wait(what: str, check: Callable[[], Any], timeout: float, every: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f} s")
        time.sleep(every)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def floor_watch(si: Any, vm: Any) -> float:
    """A bare pyVmomi client: task done → WaitForUpdatesEx reports the VM powered off."""
    pc = si.content.propertyCollector.CreatePropertyCollector()
    try:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.powerState"])],
        )
        pc.CreateFilter(spec, partialUpdates=False)
        options = PC.WaitOptions(maxWaitSeconds=10)
        result = pc.WaitForUpdatesEx("", options)  # the initial state
        version = result.version
        task = vm.PowerOffVM_Task()
        while task.info.state not in ("success", "error"):
            time.sleep(0.005)
        done = time.monotonic()
        while True:
            result = pc.WaitForUpdatesEx(version, options)
            if result is None:
                continue
            version = result.version
            changes = [c for fs in result.filterSet for o in fs.objectSet for c in o.changeSet]
            if any(c.name == "runtime.powerState" and c.val == "poweredOff" for c in changes):
                return time.monotonic() - done
    finally:
        pc.Destroy()


def power_off(vm: Any) -> float:
    task = vm.PowerOffVM_Task()
    while task.info.state not in ("success", "error"):
        time.sleep(0.005)
    return time.monotonic()


def deploy(si: Any, manager: Any, ovf_url: str, count: int) -> tuple[Any, float]:
    """A bare pyVmomi solution's deploy: CreateAgency of the hello agent over every cluster, polled every
    0.1 s until the agency is green with ``count`` agents; (the agency, seconds). The lab's own deploy
    time, the floor of bench_apply_pool's apply table too."""
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.ClusterComputeResource], True
    )
    scope = list(view.view)
    host = scope[0].host[0]
    config = eam.Agency.ConfigInfo(
        agencyName="bench",
        agentName="bench-agent",
        scope=eam.Agency.ComputeResourceScope(computeResource=scope),
        agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl=f"{ovf_url}/hello-agent/hello-agent.ovf")],
        agentVmDatastore=[host.datastore[0]],
        agentVmNetwork=[n for n in host.network if type(n) is vim.Network][:1],
    )
    started = time.monotonic()
    agency: Any = manager.CreateAgency(config, "enabled")
    wait(
        "all green",
        lambda: agency.AgencyQueryRuntime().status == "green" and len(agency.QueryAgent()) == count,
        timeout=7200,
        every=0.1,
    )
    return agency, time.monotonic() - started


def measure(clusters: int, hosts: int, mode: str, trials: int) -> dict[str, Any]:
    per_cluster, total = MODES[mode]
    lab = Lab(
        Shape(clusters=clusters, hosts=hosts),
        netsync=False,
        deploy_per_cluster=per_cluster,
        deploy_total=total,
    )
    started = time.monotonic()
    info = lab.start()
    row: dict[str, Any] = {"hosts": clusters * hosts, "mode": mode, "lab_s": time.monotonic() - started}
    try:
        si, manager = connect(info)
        assert lab.eam is not None and lab.eam.engine is not None and lab.eam.infra is not None
        engine, infra = lab.eam.engine, lab.eam.infra
        count = clusters * hosts
        before = lab.eam.vim_calls
        agency, row["deploy_s"] = deploy(si, manager, info.ovf_url, count)
        row["agents_s"] = count / row["deploy_s"]
        row["vim_host"] = (lab.eam.vim_calls - before) / count
        row["peak"] = f"{engine.peak_in_flight}/{engine.peak_in_flight_per_cluster}"

        # power-off → VmPoweredOff in QueryIssue
        agents = agency.QueryAgent()
        vms = [vim.VirtualMachine(a.AgentQueryRuntime().vm._moId, si._stub) for a in agents[: trials + 1]]
        latencies: list[float] = []
        for vm in vms[:trials]:
            done = power_off(vm)
            wait(
                "VmPoweredOff",
                lambda vm=vm: any(
                    type(i).__name__.endswith("VmPoweredOff") and i.vm._moId == vm._moId
                    for i in agency.QueryIssue()
                ),
                timeout=120,
                every=0.05,
            )
            latencies.append(time.monotonic() - done)
        row["issue_p50"], row["issue_p99"] = pct(latencies, 50), pct(latencies, 99)
        row["floor_s"] = floor_watch(si, vms[trials])

        # the parts of one step that observes and reconciles, at this size (a quiet step, nothing changed,
        # reads only the watcher's generation)
        state = engine.state
        refs = tuple(dict.fromkeys(cr for a in state.agencies for cr in a.config.scope))
        row["observe"] = timed(lambda: infra.observe(refs))
        owned: list[Any] = []
        row["owned_vms"] = timed(lambda: owned.extend(infra.find_owned_vms(EAM_NAMESPACE)))
        obs = dataclasses.replace(infra.observe(refs), vms=tuple(owned))
        # the same reads by an infrastructure without its watcher: every read a full one (as before)
        conn = VCenterConnection(
            url=info.vcsim.url,
            username=info.vcsim.username,
            password=Secret(info.vcsim.password),
            thumbprint=info.vcsim.thumbprint or None,
        )
        with Session(conn) as session:
            bare = VSphereInfrastructure(session)
            row["full_observe"] = timed(lambda: bare.observe(refs))
            row["full_vms"] = timed(lambda: bare.find_owned_vms(EAM_NAMESPACE))
        row["reconcile"] = timed(lambda: reconcile(state, obs, datetime.now(UTC)))
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.json"
            row["save"] = timed(lambda: StateFile(path).save(state))
            row["state_kb"] = path.stat().st_size / 1024
        Disconnect(si)
    finally:
        lab.stop()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", default=["2x32", "5x100"])
    parser.add_argument("--modes", default="serial,parallel")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    head = (
        f"{'hosts':>5} {'mode':>8} {'lab s':>6} {'deploy s':>9} {'agents/s':>8} {'vim/host':>8} {'peak':>6} "
        f"{'issue p50/p99 s':>15} {'floor s':>7} | {'observe':>7} {'ownVMs':>6} "
        f"{'reconc':>6} {'save':>6} {'state':>7} | {'full obs':>8} {'full VMs':>8}"
    )
    print(
        f"power-off → VmPoweredOff: {args.trials} trials per row; engine costs in seconds\n{head}", flush=True
    )
    for size in args.sizes:
        clusters, hosts = (int(x) for x in size.split("x"))
        for mode in args.modes.split(","):
            if mode == "serial" and clusters * hosts > SERIAL_MAX_HOSTS:
                continue
            r = measure(clusters, hosts, mode, args.trials)
            print(
                f"{r['hosts']:>5} {r['mode']:>8} {r['lab_s']:>6.1f} {r['deploy_s']:>9.1f} "
                f"{r['agents_s']:>8.2f} "
                f"{r['vim_host']:>8.1f} {r['peak']:>6} {r['issue_p50']:>7.2f}/{r['issue_p99']:<7.2f} "
                f"{r['floor_s']:>7.3f} | {r['observe']:>7.3f} "
                f"{r['owned_vms']:>6.3f} {r['reconcile']:>6.3f} {r['save']:>6.3f} {r['state_kb']:>5.0f}kB | "
                f"{r['full_observe']:>8.3f} {r['full_vms']:>8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
