"""Host network preparation (hostNetwork) at several lab sizes: agentvm's plan and apply against the
bare-pyVmomi floor in the same run.

For each size (``--sizes``, CLUSTERSxHOSTS, default ``1x64,8x64``: 64 and 512 hosts) a fresh lab vcsim
(3 physical NICs per host, DVS0 with every host a member) is started twice: once for agentvm, once for the
floor.

- agentvm: the ``hostNetwork`` of examples/contrail.yaml over every cluster (vSwitch1 created on vmnic1 with
  the port group contrail-fabric, VLAN 12, on every host; the DV port group contrail-trunk, VLANs 1-4094,
  on DVS0), planned with ``controller.hostnet.plan_host_networks`` (the read: two calls whatever the size)
  and carried out with ``HostNetworkWriter`` as apply does: the switch change first, then every host's
  change on a pool of ``--workers`` (apply's pool size, 8). Then a second plan (what the next apply or the
  controller's full pass reads): it must find nothing to do.
- floor: a bare pyVmomi client that knows each host's HostNetworkSystem from one ``RetrievePropertiesEx``
  and sends ``AddVirtualSwitch`` and ``AddPortGroup`` per host on the same number of threads, plus one
  ``CreateDVPortgroup_Task`` (and its task read): the minimum, without reading what is there first and
  without agentvm's ownership record (one ``SetField`` per host).

Calls are vim25 SOAP calls counted by method (agentvm: its session's ``CallStats``; the floor: counted
around its own calls). ``calls/host`` is the apply's calls over the hosts; it must not grow with the size.

Run: .venv/bin/python bench/bench_hostnet.py [--sizes 1x64,8x64] [--workers 8] [--delay MS]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_eam_deploy import bare_clients
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from agentvm.controller.hostnet import HostNetworkWriter, plan_host_networks
from agentvm.core.plan import PrepareHostNetwork
from agentvm.core.scope import resolve_agency
from agentvm.lab.vcsim import Shape, VcsimInfo, running
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.spec import load_spec_text
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "contrail.yaml"
WIDE = {
    "    scope:\n      - /DC0/host/DC0_C0\n      - /DC0/host/DC0_C1\n": '    scope: ["/DC0/host/*"]\n',
    "cidr: 10.10.0.0/24": "cidr: 10.10.0.0/20",
    "range: 10.10.0.10-10.10.0.200": "range: 10.10.0.10-10.10.15.200",
    "        vlan: 0\n": "        vlan: 12\n",
}
PC = vmodl.query.PropertyCollector


def spec_text() -> str:
    text = EXAMPLE.read_text()
    for old, new in WIDE.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def agentvm_run(info: VcsimInfo, workers: int) -> dict[str, Any]:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    env = {
        "AGENTVM_URL": info.url,
        "AGENTVM_USERNAME": info.username,
        "AGENTVM_THUMBPRINT": info.thumbprint or "",
        "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:1",
        "AGENTVM_PASSWORD": info.password,
    }
    desired = load_spec_text(spec_text(), env=env)
    (spec,) = desired.agencies
    with Session(conn) as session:
        hosts = resolve_agency(spec, read_inventory(session)).hosts
        before = session.stats.snapshot()
        started = time.perf_counter()
        plan = plan_host_networks(session, [(spec, hosts)])
        planned = time.perf_counter() - started
        read_calls = session.stats.snapshot() - before
        assert not plan.errors, plan.errors
        writer = HostNetworkWriter(session, plan.owner_field_key)
        before = session.stats.snapshot()
        started = time.perf_counter()
        per_host = [c for c in plan.changes if isinstance(c, PrepareHostNetwork)]
        for change in plan.changes:
            if not isinstance(change, PrepareHostNetwork):
                writer.carry_out(change)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(writer.carry_out, per_host))
        applied = time.perf_counter() - started
        apply_calls = session.stats.snapshot() - before
        before = session.stats.snapshot()
        started = time.perf_counter()
        again = plan_host_networks(session, [(spec, hosts)])
        replanned = time.perf_counter() - started
        replan_calls = session.stats.snapshot() - before
        assert not again.changes and not again.errors, (again.changes[:3], again.errors[:3])
    return {
        "hosts": len(hosts),
        "plan_s": planned,
        "plan_calls": sum(read_calls.values()),
        "apply_s": applied,
        "apply_calls": apply_calls,
        "replan_s": replanned,
        "replan_calls": sum(replan_calls.values()),
        "changes": len(plan.changes),
    }


def floor_run(info: VcsimInfo, workers: int) -> dict[str, Any]:
    si, _eam = bare_clients(info)  # the other benchmarks' floor client (bench_eam_deploy.py)
    calls: Counter[str] = Counter()
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.HostSystem, vim.DistributedVirtualSwitch], True
        )
        spec = PC.FilterSpec(
            objectSet=[
                PC.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[PC.TraversalSpec(name="v", type=vim.view.ContainerView, path="view")],
                )
            ],
            propSet=[
                PC.PropertySpec(type=vim.HostSystem, pathSet=["configManager.networkSystem"]),
                PC.PropertySpec(type=vim.DistributedVirtualSwitch, pathSet=["name"]),
            ],
        )
        started = time.perf_counter()
        result = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        calls["RetrievePropertiesEx"] += 1
        systems = []
        switch = None
        while True:
            for o in result.objects:
                props = {p.name: p.val for p in o.propSet}
                if isinstance(o.obj, vim.HostSystem):
                    systems.append(props["configManager.networkSystem"])
                elif props.get("name") == "DVS0":
                    switch = o.obj
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
            calls["ContinueRetrievePropertiesEx"] += 1
        assert switch is not None
        vmware = vim.dvs.VmwareDistributedVirtualSwitch
        task = switch.CreateDVPortgroup_Task(
            spec=vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
                name="contrail-trunk",
                type="earlyBinding",
                numPorts=128,
                defaultPortConfig=vmware.VmwarePortConfigPolicy(
                    vlan=vmware.TrunkVlanSpec(inherited=False, vlanId=[vim.NumericRange(start=1, end=4094)])
                ),
            )
        )
        calls["CreateDVPortgroup_Task"] += 1
        while task.info.state not in ("success", "error"):
            calls["RetrievePropertiesEx"] += 1
            time.sleep(0.01)
        calls["RetrievePropertiesEx"] += 1

        def one(system: Any) -> None:
            bridge = vim.host.VirtualSwitch.BondBridge(nicDevice=["vmnic1"])
            system.AddVirtualSwitch(
                vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=128, bridge=bridge)
            )
            system.AddPortGroup(
                portgrp=vim.host.PortGroup.Specification(
                    name="contrail-fabric", vswitchName="vSwitch1", vlanId=12, policy=vim.host.NetworkPolicy()
                )
            )

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, systems))
        calls["AddVirtualSwitch"] += len(systems)
        calls["AddPortGroup"] += len(systems)
        seconds = time.perf_counter() - started
        view.Destroy()
    finally:
        Disconnect(si)
    return {"hosts": len(systems), "apply_s": seconds, "apply_calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1x64,8x64", help="CLUSTERSxHOSTS, comma-separated")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--delay", type=int, default=0, help="ms added to every SOAP call")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        clusters, hosts = (int(x) for x in size.split("x"))
        shape = Shape(clusters=clusters, hosts=hosts, pnics=3)
        with running(shape, delay=args.delay) as info:
            ours = agentvm_run(info, args.workers)
        with running(shape, delay=args.delay) as info:
            floor = floor_run(info, args.workers)
        rows.append((size, ours, floor))
        calls, floor_calls = sum(ours["apply_calls"].values()), sum(floor["apply_calls"].values())
        print(
            f"{size}: {ours['hosts']} hosts; agentvm plan {ours['plan_s']:.2f} s ({ours['plan_calls']} "
            f"calls), apply {ours['apply_s']:.2f} s ({calls} calls: {dict(ours['apply_calls'])}), "
            "second plan "
            f"{ours['replan_s']:.2f} s ({ours['replan_calls']} calls, no changes); floor apply "
            f"{floor['apply_s']:.2f} s ({floor_calls} calls: {dict(floor['apply_calls'])})",
            flush=True,
        )
    print()
    print(
        f"{'hosts':>6} {'plan s':>7} {'plan calls':>10} {'apply s':>8} {'floor s':>8} {'x floor':>7} "
        f"{'calls/host':>10} {'floor calls/host':>16} {'replan s':>9} {'replan calls':>12}"
    )
    for _size, ours, floor in rows:
        n = ours["hosts"]
        per_host = sum(ours["apply_calls"].values()) / n
        floor_per_host = sum(floor["apply_calls"].values()) / n
        print(
            f"{n:>6} {ours['plan_s']:>7.2f} {ours['plan_calls']:>10} {ours['apply_s']:>8.2f} "
            f"{floor['apply_s']:>8.2f} {ours['apply_s'] / floor['apply_s']:>7.2f} {per_host:>10.2f} "
            f"{floor_per_host:>16.2f} {ours['replan_s']:>9.2f} {ours['replan_calls']:>12}"
        )


if __name__ == "__main__":
    main()
