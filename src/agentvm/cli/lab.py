"""``agentvm lab``: the local simulated vSphere (vcsim + emulators) on loopback."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentvm.cli import exitcodes
from agentvm.cli.output import console, fail, print_document
from agentvm.engine.manager import DEPLOY_PER_CLUSTER, DEPLOY_TOTAL
from agentvm.lab import runner, vcsim
from agentvm.lab.vcsim import LabError, Shape

app = typer.Typer(help="Run the local lab: a simulated vCenter with EAM, on 127.0.0.1.", no_args_is_help=True)

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the lab keeps its state (default $AGENTVM_LAB_DIR or ./.lab)."),
]


def _dir(state_dir: Path | None) -> Path:
    return state_dir.resolve() if state_dir else runner.default_state_dir()


@app.command()
def build(force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False) -> None:
    """Build the vCenter simulator (cached by the hash of its source)."""
    try:
        path, seconds = vcsim.build(force=force)
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    if seconds:
        console.print(f"built {path} in {seconds:.1f} s")


@app.command()
def up(
    datacenters: Annotated[int, typer.Option(help="Datacenters.")] = 1,
    clusters: Annotated[int, typer.Option(help="Clusters per datacenter.")] = 2,
    hosts: Annotated[int, typer.Option(help="Hosts per cluster.")] = 3,
    standalone: Annotated[int, typer.Option(help="Standalone hosts per datacenter.")] = 0,
    vms: Annotated[int, typer.Option(help="Workload VMs per host.")] = 0,
    dvs: Annotated[bool, typer.Option(help="A distributed switch per datacenter.")] = True,
    pnics: Annotated[
        int,
        typer.Option(
            help="Physical NICs per host (vmnic0..; vSwitch0 is bound to vmnic0; examples/contrail.yaml uses "
            "vmnic1 and vmnic2)."
        ),
    ] = 3,
    port: Annotated[int, typer.Option(help="vCenter port on 127.0.0.1 (0 = any free port).")] = 0,
    plain_http: Annotated[bool, typer.Option(help="Serve plain HTTP instead of HTTPS.")] = False,
    deploy_per_cluster: Annotated[
        int, typer.Option(help="The lab's EAM: agent VMs deployed at once per cluster.")
    ] = DEPLOY_PER_CLUSTER,
    deploy_total: Annotated[
        int, typer.Option(help="The lab's EAM: agent VMs deployed at once in all.")
    ] = DEPLOY_TOTAL,
    etcd: Annotated[
        bool,
        typer.Option(
            "--etcd",
            help="Also run etcd on 127.0.0.1, for `agentvm run --coordination` (Debian's etcd-server).",
        ),
    ] = False,
    esxi: Annotated[
        int,
        typer.Option(
            "--esxi",
            help="Standalone ESXi hosts (esx-01..esx-N), each a host-agent simulator on its own port "
            "with its own certificate.",
        ),
    ] = 0,
    vcenter: Annotated[
        bool,
        typer.Option(help="Run the vCenter (with EAM and the SDN emulators); --no-vcenter: hosts alone."),
    ] = True,
    state_dir: StateDir = None,
) -> None:
    """Start the lab (building the simulator first if needed); a running lab is reused."""
    shape = Shape(datacenters, clusters, hosts, standalone, vms, dvs, pnics)
    if not 0 <= port <= 65535:
        fail(f"--port must be 0-65535 (got {port})", exitcodes.BAD_INPUT)
    if esxi < 0:
        fail(f"--esxi must be 0 or more (got {esxi})", exitcodes.BAD_INPUT)
    if not vcenter and esxi == 0:
        fail("--no-vcenter needs standalone hosts: add --esxi N (1 or more)", exitcodes.BAD_INPUT)
    try:
        state, started = runner.up(
            _dir(state_dir),
            shape,
            port=port,
            plain_http=plain_http,
            deploy_per_cluster=deploy_per_cluster,
            deploy_total=deploy_total,
            etcd=etcd,
            esxi=esxi,
            vcenter=vcenter,
        )
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    verb = f"started in {state.start_seconds:.2f} s" if started else "already running"
    parts = [f"vCenter {state.vcsim.url} ({shape.host_count} hosts)"] if state.vcsim is not None else []
    if state.esxi:
        parts.append(
            f"{len(state.esxi)} standalone ESXi hosts ({state.esxi[0].host_name}..{state.esxi[-1].host_name})"
        )
    console.print(
        f"lab {verb}: {', '.join(parts)}, "
        f"packages {state.ovf_url}"
        + (f", etcd {state.coordination}" if state.coordination else "")
        + "\nrun `eval $(agentvm lab env)` to use it; `agentvm lab down` to stop it",
        highlight=False,
    )


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop every process the lab started."""
    try:
        state = runner.down(_dir(state_dir))
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    if state is None:
        console.print("no lab is running; nothing to stop")
    else:
        console.print(
            f"lab stopped (pids {state.supervisor_pid}, {', '.join(map(str, state.pids.values()))})"
        )


@app.command()
def status(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Say what runs where."""
    try:
        state, alive = runner.status(_dir(state_dir))
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    if state is None:
        if json_:
            print_document("LabStatus", {"running": False})
        else:
            console.print("no lab is running; start one with `agentvm lab up`")
        raise typer.Exit(exitcodes.NO_LAB)
    running = all(alive.values())
    if json_:
        print_document(
            "LabStatus",
            {
                "running": running,
                "processes": {
                    name: {"pid": pid, "running": alive.get(name, False)}
                    for name, pid in {"supervisor": state.supervisor_pid, **state.pids}.items()
                },
                **(
                    {
                        "vcenter": state.vcsim.url,
                        # vCenter about.instanceUuid: new on every `lab up`
                        "world": state.vcsim.instance_uuid,
                        "eam": state.vcsim.eam_url,
                    }
                    if state.vcsim is not None
                    else {}
                ),
                "esxi": [
                    {
                        "name": h.host_name,
                        "url": h.url,
                        "thumbprint": h.thumbprint,
                        "hostUuid": h.host_uuid,
                        "pid": state.pids.get(h.host_name, h.pid),
                        "running": alive.get(h.host_name, False),
                    }
                    for h in state.esxi
                ],
                "packages": state.ovf_url,
                "shape": state.info.shape.__dict__,
            },
        )
    else:
        table = Table("part", "pid", "running", "address")
        table.add_row("supervisor", str(state.supervisor_pid), _yes(alive["supervisor"]), "")
        if state.vcsim is not None:
            table.add_row(
                "vcsim", str(state.pids.get("vcsim", "")), _yes(alive.get("vcsim", False)), state.vcsim.url
            )
            table.add_row(
                "EAM",
                str(state.supervisor_pid),
                _yes(alive["supervisor"]),
                f"{state.vcsim.eam_url} -> {state.eam_backend}",
            )
        for h in state.esxi:
            table.add_row(
                h.host_name, str(state.pids.get(h.host_name, "")), _yes(alive.get(h.host_name, False)), h.url
            )
        table.add_row("packages", str(state.supervisor_pid), _yes(alive["supervisor"]), state.ovf_url)
        if state.coordination:
            table.add_row(
                "etcd", str(state.pids.get("etcd", "")), _yes(alive.get("etcd", False)), state.coordination
            )
        console.print(table)
    if not running:
        raise typer.Exit(exitcodes.FAILED)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


@app.command()
def env(
    json_: Annotated[bool, typer.Option("--json", help="One JSON object instead of export lines.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Print the AGENTVM_* variables that point agentvm (and spec files) at the lab."""
    try:
        state = runner.read_state(_dir(state_dir))
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    if state is None or not runner.pid_alive(state.supervisor_pid):
        fail("no lab is running: start one with `agentvm lab up`", exitcodes.NO_LAB)
    variables = state.info.env()
    if json_:
        print_document("LabEnv", {"variables": variables})
    else:
        for key, value in variables.items():
            typer.echo(f"export {key}={shlex.quote(value)}")


esxi_app = typer.Typer(
    help="Stop or start one of the lab's standalone ESXi hosts (a host restart).", no_args_is_help=True
)
app.add_typer(esxi_app, name="esxi")


@esxi_app.command("stop")
def esxi_stop(
    name: Annotated[str, typer.Argument(help="The host, as `agentvm lab status` names it (esx-01).")],
    state_dir: StateDir = None,
) -> None:
    """Stop one standalone host's simulator: the host is unreachable until `agentvm lab esxi start`."""
    try:
        host, running = runner.esxi_stop(_dir(state_dir), name)
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    console.print(
        f"{name} ({host.url}) " + ("stopped" if running else "was not running; nothing to stop"),
        highlight=False,
    )


@esxi_app.command("start")
def esxi_start(
    name: Annotated[str, typer.Argument(help="The host, as `agentvm lab status` names it (esx-01).")],
    state_dir: StateDir = None,
) -> None:
    """Start a stopped standalone host again, on its port with its certificate (an empty inventory)."""
    try:
        host, started = runner.esxi_start(_dir(state_dir), name)
    except LabError as exc:
        fail(str(exc), exc.exit_code)
    console.print(
        f"{name} ({host.url}) "
        + ("started, thumbprint " + host.thumbprint if started else "is already running"),
        highlight=False,
    )
