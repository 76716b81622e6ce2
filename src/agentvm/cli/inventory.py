"""``agentvm inventory``: what agentvm sees in vCenter, read in bulk (one round trip per object type)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username, connection
from agentvm.cli.output import console, print_json
from agentvm.core.order import natural_key
from agentvm.model.inventory import Host, InventorySnapshot
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session


def host_row(snapshot: InventorySnapshot, host: Host) -> dict[str, object]:
    """One host as the table and ``--json`` show it."""

    def name(ref: object) -> str | None:
        obj = snapshot.get(ref) if ref is not None else None  # type: ignore[arg-type]
        return obj.name if obj is not None else None

    return {
        "host": host.name,
        "moid": host.moref.value,
        "path": host.path,
        "cluster": name(host.cluster) if host.cluster else None,
        "connection": host.connection_state.value,
        "maintenance": host.in_maintenance_mode,
        "power": host.power_state.value,
        "agentVmDatastore": name(host.agent_vm_datastore),
        "agentVmNetwork": name(host.agent_vm_network),
        "vms": len(snapshot.vms_on(host.moref)),
    }


def inventory(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
) -> None:
    """List datacenters, clusters and hosts with their state and AgentVM settings."""
    conn = connection(url, username, password_file, thumbprint, ca_file, insecure)
    with Session(conn) as session:
        snapshot = read_inventory(session)
        calls = session.stats.total
    rows = [host_row(snapshot, h) for h in sorted(snapshot.hosts, key=lambda h: natural_key(h.path))]
    if json_:
        print_json(
            {
                "vcenter": conn.url,
                "datacenters": [d.path for d in snapshot.datacenters],
                "clusters": [c.path for c in snapshot.clusters],
                "hosts": rows,
                "vms": len(snapshot.vms),
                "networks": [n.path for n in snapshot.networks],
                "datastores": [d.path for d in snapshot.datastores],
            }
        )
        return
    table = Table(
        "cluster",
        "host",
        "connection",
        "maintenance",
        "agent VM datastore",
        "agent VM network",
        "VMs",
        title=f"{conn.url}: {len(snapshot.datacenters)} datacenter(s), {len(snapshot.clusters)} "
        f"cluster(s), {len(snapshot.hosts)} host(s), {len(snapshot.vms)} VM(s)",
    )
    for row in rows:
        table.add_row(
            str(row["cluster"] or "(standalone)"),
            str(row["host"]),
            str(row["connection"]),
            "yes" if row["maintenance"] else "no",
            str(row["agentVmDatastore"] or "-"),
            str(row["agentVmNetwork"] or "-"),
            str(row["vms"]),
        )
    console.print(table)
    console.print(f"read in {calls} vCenter calls", style="dim")


_ = Path  # typer resolves annotations at runtime
