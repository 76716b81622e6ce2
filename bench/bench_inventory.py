"""Inventory read: agentvm's ``read_inventory`` vs a bare pyVmomi ``RetrievePropertiesEx`` (same properties).

    .venv/bin/python bench/bench_inventory.py [--sizes 2x3x1,4x25x4] [--repeat 5]
        [--delay MS] [--method-delay RetrievePropertiesEx:50,...]

Each size is CLUSTERSxHOSTSxVMS (hosts per cluster, VMs per host). For each, a fresh lab vcsim is started;
both readers run ``--repeat`` times in the same process and the best wall time is reported. The bare
reader is the floor: one container view, one ``RetrievePropertiesEx`` per object kind with the same
PropertySpecs, no conversion. ``patch``: what a topology change costs the controller instead: one host and
its cluster read again (``read_objects``) and patched into the snapshot (``patch_inventory``), checked
equal to the full read. Round trips are counted at the HTTP level for both. ``--delay`` (ms added to every
SOAP call) and ``--method-delay`` (ms added to the methods named) make the simulator answer with a real
vCenter's latency, so the round trips cost what they would there.
"""

from __future__ import annotations

import argparse
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter

from agentvm.core.inventory_patch import patch_inventory
from agentvm.lab.vcsim import LabError, Shape, parse_method_delay, running
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.inventory import KINDS, read_inventory, read_objects
from agentvm.vsphere.session import Session

PC = vmodl.query.PropertyCollector


def bare_read(content: Any) -> tuple[int, int]:
    """(objects, round trips): the floor, with the same view and property specs as read_inventory."""
    types: list[type] = []
    for kind in KINDS:
        types.extend(t for t, _ in kind.specs if t not in types)
    view = content.viewManager.CreateContainerView(content.rootFolder, types, True)
    trips, objects = 1, 0
    traverse = PC.TraversalSpec(name="traverseView", path="view", skip=False, type=vim.view.ContainerView)
    for kind in KINDS:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[PC.PropertySpec(type=t, pathSet=list(p)) for t, p in kind.specs],
        )
        result = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=1000))
        trips += 1
        while result is not None:
            objects += len(result.objects)
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(token=result.token)
            trips += 1
    view.DestroyView()
    return objects, trips + 1


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2x3x1,4x25x4,8x50x5")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--delay", type=int, default=0, help="ms the simulator adds to every SOAP call")
    parser.add_argument(
        "--method-delay", default="", help="ms it adds to given methods: RetrievePropertiesEx:50,..."
    )
    args = parser.parse_args()
    try:
        latency = {"delay": args.delay, "method_delay": parse_method_delay(args.method_delay)}
        if args.delay < 0:
            raise LabError(f"--delay must be 0 or more milliseconds (got {args.delay})", 2)
    except LabError as e:
        parser.error(str(e))
    rows = []
    for size in args.sizes.split(","):
        clusters, hosts, vms = (int(x) for x in size.split("x"))
        with running(Shape(clusters=clusters, hosts=hosts, vms=vms), **latency) as info:
            conn = VCenterConnection(
                url=info.url,
                username=info.username,
                password=Secret(info.password),
                thumbprint=info.thumbprint,
            )
            with Session(conn) as session:
                before = session.stats.total
                read_inventory(session)  # warm-up (connection pool, caches)
                per_read = session.stats.total - before
                t_agentvm, inv = best(lambda s=session: read_inventory(s), args.repeat)
                # a topology change as the controller handles it: one host and its cluster read again
                # (with what a host brings along) and patched into the snapshot
                host = inv.hosts[len(inv.hosts) // 2]
                named = [host.moref] + ([host.cluster] if host.cluster is not None else [])
                before = session.stats.total
                t_patch, patched = best(
                    lambda s=session, i=inv, n=named: patch_inventory(i, read_objects(s, n, known=i), ()),
                    args.repeat,
                )
                per_patch = (session.stats.total - before) // args.repeat
                assert patched == inv, "the patched snapshot differs from the full read"
            url = urlsplit(info.url)
            stub = SoapStubAdapter(
                host=url.hostname,
                port=url.port,
                path="/sdk",
                version="vim.version.version11",
                sslContext=ssl._create_unverified_context(),  # noqa: S323 (loopback lab, benchmark only)
            )
            content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            content.sessionManager.Login(info.username, info.password)
            t_bare, (objects, bare_trips) = best(lambda c=content: bare_read(c), args.repeat)
            content.sessionManager.Logout()
        rows.append(
            (
                size,
                len(inv.hosts),
                len(inv.vms),
                objects,
                t_bare,
                bare_trips,
                t_agentvm,
                per_read,
                t_patch,
                per_patch,
            )
        )
    header = (
        "size",
        "hosts",
        "vms",
        "objects",
        "bare s",
        "bare trips",
        "agentvm s",
        "agentvm trips",
        "ratio",
        "patch s",
        "patch trips",
    )
    print(" | ".join(f"{h:>13}" for h in header))
    for size, h, v, o, tb, rb, ta, ra, tp, rp in rows:
        cells = (size, h, v, o, f"{tb:.4f}", rb, f"{ta:.4f}", ra, f"{ta / tb:.2f}x", f"{tp:.4f}", rp)
        print(" | ".join(f"{c!s:>13}" for c in cells))


if __name__ == "__main__":
    main()
