"""``agentvm netsync plan | apply``: one-shot sync of vCenter networking into the SDN controller.

The controller from ``--sdn-url`` / ``$AGENTVM_SDN_URL`` (token from ``$AGENTVM_SDN_TOKEN`` only: never a
flag, it would show in ``ps``). Each host's vRouter agent from ``--vrouter-map`` / ``$AGENTVM_VROUTER_MAP``:
a JSON file ``{"<host moid or name>": "http://<agent VM fabric IP>:9091", ...}`` (``agentvm lab up`` writes
one for the lab's emulated agents). Without a map, each host's agent is its agent VM's fabric IP
(``guestinfo.fabricIp``, else ``guestinfo.agentvm.address``) on ``--vrouter-port``.
``--reserve-vlans 1-100,4000-4094`` keeps VLANs away from the per-port allocation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentvm.cli import exitcodes
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username, connection
from agentvm.cli.output import console, document, fail, print_json
from agentvm.controller.netsync import AGENT_PORT, NetsyncReport, agent_urls_from_agent_vms, sync_once
from agentvm.model.connection import Secret
from agentvm.model.errors import AgentvmError, ConfigurationError
from agentvm.model.network import NetsyncConfig, SdnObject
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.networks import read_host_moids
from agentvm.vsphere.session import Session

app = typer.Typer(help="Mirror vCenter port groups, VMs and NICs into the SDN controller (one shot).")

SdnUrl = Annotated[
    str | None,
    typer.Option("--sdn-url", envvar="AGENTVM_SDN_URL", help="SDN config API, e.g. http://controller:8082."),
]
VrouterMap = Annotated[
    Path | None,
    typer.Option(
        "--vrouter-map",
        envvar="AGENTVM_VROUTER_MAP",
        help='JSON file {"<host moid or name>": "http://<agent IP>:9091"}.',
    ),
]
Project = Annotated[str, typer.Option("--project", help="Project of the virtual networks.")]
ReserveVlans = Annotated[
    str,
    typer.Option(
        "--reserve-vlans",
        envvar="AGENTVM_RESERVE_VLANS",
        help="VLANs never handed out to ports, e.g. 1-100,4000-4094.",
    ),
]
VrouterPort = Annotated[
    int,
    typer.Option("--vrouter-port", help="Port of the vRouter agents found from their agent VMs (no map)."),
]
NetsyncResync = Annotated[
    float,
    typer.Option(
        "--netsync-resync",
        min=1.0,
        help="With --netsync: a full network resync at least this often (s); failed items are retried "
        "sooner, with backoff.",
    ),
]


def parse_vlan_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"1-100,4000-4094,7"`` -> ((1, 100), (4000, 4094), (7, 7)). Raises ConfigurationError naming the
    bad part."""
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            raise ConfigurationError(
                f"--reserve-vlans: {part!r} is not a VLAN or a range like 1-100"
            ) from None
        if not 1 <= start <= end <= 4094:
            raise ConfigurationError(
                f"--reserve-vlans: {part!r} must be within 1-4094 and start at or before its end"
            )
        ranges.append((start, end))
    return tuple(ranges)


Json_ = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def load_vrouter_map(path: Path | None) -> dict[str, str]:
    """The host -> agent URL map in ``path`` ({} without one). Raises ConfigurationError naming the file."""
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read --vrouter-map {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigurationError(f"--vrouter-map {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigurationError(f'--vrouter-map {path} must be a JSON object {{"host-21": "http://..."}}')
    return {str(k): str(v) for k, v in raw.items()}


def agent_clients(session: Session, urls: Mapping[str, str]) -> dict[str, VrouterAgentClient]:
    """Host moid -> agent client; map keys may be host moids or host names (one bulk read of names)."""
    if not urls:
        return {}
    moid_of = read_host_moids(session)
    moids = set(moid_of.values())
    clients: dict[str, VrouterAgentClient] = {}
    for key, url in urls.items():
        moid = key if key in moids else moid_of.get(key)
        if moid is not None:
            clients[moid] = VrouterAgentClient(url)
    return clients


def _item(obj: SdnObject) -> dict[str, Any]:
    return {"type": type(obj).__name__, "uuid": obj.uuid, "fqName": ":".join(obj.fq_name)}


def report_json(report: NetsyncReport) -> dict[str, Any]:
    """The report as ``--json`` prints it: a NetsyncPlan, or after ``apply`` a NetsyncResult with what was
    applied (schemas ``api/schema/netsyncplan-v1.json``, ``netsyncresult-v1.json``; no secrets: the plan
    has none)."""
    plan = report.plan
    out: dict[str, Any] = {
        "vcenter": report.inventory.vcenter_uuid,
        "portGroups": len(report.inventory.port_groups),
        "vms": len(report.inventory.vms),
        "create": [_item(o) for o in plan.create],
        "update": [_item(o) for o in plan.update],
        "delete": [_item(o) for o in plan.delete],
        "ports": [{"action": c.action.value, "host": c.host, "port": c.port.id} for c in plan.ports],
        "dvPortVlans": [
            {"host": d.host, "portGroup": d.port_group_key, "port": d.port_key, "vlan": d.vlan}
            for d in plan.dv_port_vlans
        ],
        "errors": [{"kind": e.kind.value, "item": e.item, "message": e.message} for e in plan.errors],
        "unreachableAgents": dict(report.unreachable_agents),
    }
    if report.applied is not None:
        out["applied"] = {
            "done": report.applied.done + report.dv_ports_done,
            "skipped": report.applied.skipped,
            "failures": [
                {"item": f.item, "message": f.message, "transient": f.transient} for f in report.failures
            ],
        }
    return document("NetsyncPlan" if report.applied is None else "NetsyncResult", out)


def _show(report: NetsyncReport) -> None:
    plan = report.plan
    table = Table("what", "count", title=f"netsync: {len(report.inventory.vms)} VM(s)")
    for name, count in (
        ("create", len(plan.create)),
        ("update", len(plan.update)),
        ("delete", len(plan.delete)),
        ("vRouter port calls", len(plan.ports)),
        ("DV port VLANs", len(plan.dv_port_vlans)),
        ("problems in vCenter", len(plan.errors)),
    ):
        table.add_row(name, str(count))
    console.print(table)
    for error in plan.errors:
        console.print(f"{error.kind.value}: {error.item}: {error.message}", markup=False)
    for host, why in sorted(report.unreachable_agents.items()):
        console.print(f"agent of {host} unreachable: {why}", markup=False)
    for failure in report.failures:
        console.print(f"FAILED {failure.item}: {failure.message}", markup=False)
    if report.applied is not None:
        console.print(f"done: {report.applied.done + report.dv_ports_done} call(s)", markup=False)


def _run(
    apply: bool,
    json_: bool,
    sdn_url: str | None,
    vrouter_map: Path | None,
    project: str,
    conn_args: tuple[str | None, str | None, Path | None, str | None, Path | None, bool],
    reserve_vlans: str = "",
    vrouter_port: int = AGENT_PORT,
) -> None:
    try:
        conn = connection(*conn_args)
        if not sdn_url:
            raise ConfigurationError(
                "no SDN controller: pass --sdn-url or set AGENTVM_SDN_URL "
                "(for the lab: eval $(agentvm lab env))"
            )
        token = os.environ.get("AGENTVM_SDN_TOKEN")
        config = NetsyncConfig(project=project, reserved_vlans=parse_vlan_ranges(reserve_vlans))
        urls = load_vrouter_map(vrouter_map)
        with (
            Session(conn) as session,
            ConfigApiClient(sdn_url, Secret(token) if token else None, config) as api,
        ):
            if vrouter_map is None:  # each host's agent VM says where its agent is
                urls = agent_urls_from_agent_vms(session, port=vrouter_port)
            agents = agent_clients(session, urls)
            try:
                report = sync_once(session, api, agents, config=config, apply=apply)
            finally:
                for client in agents.values():
                    client.close()
    except AgentvmError as exc:
        fail(str(exc), exitcodes.code_for(exc))
    if json_:
        print_json(report_json(report))
    else:
        _show(report)
    if apply and not report.ok:
        raise typer.Exit(exitcodes.FAILED)  # items failed (a transient error as a whole exits 3 above)


@app.command("plan")
def plan_command(
    json_: Json_ = False,
    sdn_url: SdnUrl = None,
    vrouter_map: VrouterMap = None,
    project: Project = "default-project",
    reserve_vlans: ReserveVlans = "",
    vrouter_port: VrouterPort = AGENT_PORT,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
) -> None:
    """Show what a sync would change in the SDN controller, the vRouter agents and the DV ports."""
    _run(
        False,
        json_,
        sdn_url,
        vrouter_map,
        project,
        (url, username, password_file, thumbprint, ca_file, insecure),
        reserve_vlans,
        vrouter_port,
    )


@app.command("apply")
def apply_command(
    json_: Json_ = False,
    sdn_url: SdnUrl = None,
    vrouter_map: VrouterMap = None,
    project: Project = "default-project",
    reserve_vlans: ReserveVlans = "",
    vrouter_port: VrouterPort = AGENT_PORT,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
) -> None:
    """Sync once: networks, interfaces, addresses, vRouter ports and DV port VLANs. Exit 3 if items failed."""
    _run(
        True,
        json_,
        sdn_url,
        vrouter_map,
        project,
        (url, username, password_file, thumbprint, ca_file, insecure),
        reserve_vlans,
        vrouter_port,
    )
