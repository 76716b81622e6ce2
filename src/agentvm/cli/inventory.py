"""``agentvm inventory``: what agentvm sees in vCenter, read in bulk (one round trip per object type)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username, connection
from agentvm.cli.output import console, print_document
from agentvm.model.inventory import Host, InventoryObject, InventorySnapshot
from agentvm.model.names import natural_key
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
        print_document(
            "Inventory",
            {
                "vcenter": conn.url,
                "datacenters": [d.path for d in snapshot.datacenters],
                "clusters": [c.path for c in snapshot.clusters],
                "hosts": rows,
                "vms": len(snapshot.vms),
                "networks": [n.path for n in snapshot.networks],
                "datastores": [d.path for d in snapshot.datastores],
                "objects": [
                    {"kind": k, "name": n, "path": p, "moid": m} for k, n, p, m in object_rows(snapshot)
                ],
            },
        )
        return
    cells = [
        [
            str(row["cluster"] or "(standalone)"),
            str(row["host"]),
            str(row["moid"]),
            str(row["connection"]),
            "yes" if row["maintenance"] else "no",
            str(row["agentVmDatastore"] or "-"),
            str(row["agentVmNetwork"] or "-"),
            str(row["vms"]),
        ]
        for row in rows
    ]
    whole = ("cluster", "host", "moid", "connection", "maintenance")
    table = Table(
        *(_whole(name, [c[i] for c in cells]) for i, name in enumerate(whole)),
        # the free text folds so that names, moids and states are never cut
        Column("agent VM datastore", overflow="fold"),
        Column("agent VM network", overflow="fold"),
        _whole("VMs", [c[7] for c in cells]),
        title=f"{conn.url}: {len(snapshot.datacenters)} datacenter(s), {len(snapshot.clusters)} "
        f"cluster(s), {len(snapshot.hosts)} host(s), {len(snapshot.vms)} VM(s)",
    )
    for cell in cells:
        table.add_row(*cell)
    console.print(table)
    console.print(object_table(snapshot, console.width))
    console.print(f"read in {calls} vCenter calls", style="dim")


def object_rows(snapshot: InventorySnapshot) -> list[tuple[str, str, str, str]]:
    """(kind, name, inventory path, moid) of every datacenter, cluster, standalone compute resource,
    datastore and network: what a spec may name them by (``model.names``), in natural order of path."""
    groups: list[tuple[str, tuple[InventoryObject, ...]]] = [
        ("datacenter", snapshot.datacenters),
        ("cluster", snapshot.clusters),
        ("compute resource", snapshot.compute_resources),
        ("datastore", snapshot.datastores),
        ("network", snapshot.networks),
    ]
    return [
        (kind, obj.name, obj.path, obj.moref.value)
        for kind, objects in groups
        for obj in sorted(objects, key=lambda o: natural_key(o.path))
    ]


def object_table(snapshot: InventorySnapshot, width: int) -> Table:
    """Every object with its moid; the path folds, the name and moid are never cut. When those leave the
    path no room in ``width`` columns, the path is dropped, with a note (``--json`` has it)."""
    rows = object_rows(snapshot)
    columns = [_whole(h, [r[i] for r in rows]) for i, h in ((0, "kind"), (1, "name"), (3, "moid"))]
    room = width - sum(c.min_width or 0 for c in columns) - 3 * len(columns) - 4
    with_path = room >= 12
    if with_path:
        columns.append(Column("path", overflow="fold"))
    title = "objects (name them by path, path under the datacenter, unique name, glob or moid)"
    table = Table(
        *columns,
        title=title if with_path else f"{title}; paths left out for width: see --json",
        show_edge=room >= 0,  # without its outer frame, two more columns for a long moid (vcsim's)
    )
    for kind, name, path, moid in rows:
        table.add_row(kind, name, moid, *((path,) if with_path else ()))
    return table


def _whole(header: str, values: list[str]) -> Column:
    """A column as wide as its widest value: identifiers and states are never cut."""
    return Column(header, no_wrap=True, min_width=max([len(header), *map(len, values)]))


_ = Path  # typer resolves annotations at runtime
