"""``agentvm destroy -f SPEC``: uninstall the agents, destroy the agencies, unregister the solution.

EAM's order (docs/eam.md): Uninstall → wait until green → DestroyAgency; then the extension goes.
It asks first, unless ``--yes``; without a terminal to ask on and without ``--yes`` it refuses.

``--backend direct`` does the same, through the same ``Solution.destroy`` and under the same lease, with
agentvm's own engine on its ``--state-dir`` (as ``run --backend direct``, whose state-dir lock it takes)
as the backend, which the wait drives until every agent VM is gone; the VMs of an agency whose engine
state was lost are found by the owner marker they carry and purged.

``--state-dir`` is the one state dir of agentvm on this machine, as for ``run``: with EAM it holds the
solution's login certificate (and its record of adopted agencies), with ``--backend direct`` the engine's
state as well.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from typing import Annotated

import typer

from agentvm.backends.base import Backend
from agentvm.cli import esxi, exitcodes
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.output import console, fail, print_document
from agentvm.cli.run import BackendKind, DirectEngine, default_state_dir, open_direct_engine
from agentvm.cli.solution import (
    ConnectionFlags,
    EngineStateDir,
    Json,
    ProgressView,
    SpecFile,
    Timeout,
    Yes,
    guard,
    load,
    session_for,
)
from agentvm.controller.solution import DEFAULT_TIMEOUT, Solution
from agentvm.model.errors import ConfigurationError


@guard
def destroy(
    file: SpecFile,
    yes: Yes = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    backend: Annotated[
        BackendKind,
        typer.Option("--backend", help="eam: vCenter's EAM; direct: agentvm's own engine (as run used)."),
    ] = BackendKind.EAM,
    state_dir: EngineStateDir = None,
    json_: Json = False,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    host_settings: Annotated[
        bool,
        typer.Option(
            "--host-settings",
            help="Also clear the hosts' AgentVM datastore/network that apply set (only those, and only "
            "where they are still what it set). Without it they stay.",
        ),
    ] = False,
    host_network: Annotated[
        bool,
        typer.Option(
            "--host-network",
            help="Also remove the hosts' networking agentvm created for hostNetwork (its port groups, "
            "vSwitches, DV port group and switch memberships; only those). Without it they stay.",
        ),
    ] = False,
    hosts_at_once: esxi.HostsAtOnce = esxi.DEFAULT_HOSTS_AT_ONCE,
) -> None:
    """Remove every agent VM of the spec's agencies, destroy the agencies and unregister the extension.

    The hosts' AgentVM settings and networking stay as they are, unless --host-settings / --host-network.
    With esxi: hosts in the spec: every agency off every standalone host, with agentvm's own engine (as
    apply used it), --hosts-at-once at a time."""
    desired = load(file)
    if desired.esxi and host_settings:
        raise ConfigurationError(
            f"{file}: --host-settings has nothing to remove on standalone hosts (no AgentVM settings, "
            "which only vCenter keeps): drop it"
        )
    names = ", ".join(a.name for a in desired.agencies)
    what = f"agencies {names} (every agent VM) and extension {desired.solution.key}"
    if desired.esxi:
        what = f"agencies {names} (every agent VM) on {len(desired.esxi)} standalone host(s)"
    if not yes:
        if not sys.stdin.isatty():
            fail(
                f"destroy would remove {what}; pass --yes to confirm (there is no terminal to ask on)",
                exitcodes.BAD_INPUT,
            )
        if not typer.confirm(f"Remove {what}?", default=False):
            fail("nothing destroyed", exitcodes.FAILED)
    if desired.esxi:
        esxi.run_destroy(
            desired,
            json_=json_,
            state_dir=state_dir,
            at_once=hosts_at_once,
            timeout=timeout,
            host_network=host_network,
        )
        return
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    with session_for(desired, flags) as session, contextlib.ExitStack() as stack:
        chosen: Backend | None = None
        direct: DirectEngine | None = None
        if backend is BackendKind.DIRECT:  # the engine's state-dir lock first: refused while a run holds it
            direct = open_direct_engine(
                session.conn, desired, state_dir or default_state_dir(), timeout=min(timeout, 30.0)
            )
            stack.callback(direct.close)
            chosen = direct.backend
        with (
            Solution(desired, session, backend=chosen, state_dir=state_dir) as solution,
            ProgressView(live=False if json_ else None) as view,
        ):
            report = solution.destroy(
                timeout=timeout,
                on_progress=None if json_ else view,
                host_settings=host_settings,
                host_network=host_network,
            )
        if direct is not None:  # the engine's own session deleted the VMs: count its calls too
            report = replace(report, vim_calls=report.vim_calls + direct.session.stats.total)
    if json_:
        print_document(
            "DestroyResult",
            {
                "actions": list(report.actions),
                "seconds": round(report.seconds, 3),
                "calls": {"vim25": report.vim_calls, "eam": report.eam_calls},
                "hostNetworkLeft": list(report.network_left),
            },
        )
        return
    if not report.actions:
        console.print("nothing to destroy", highlight=False)
    for action in report.actions:
        console.print(f"✓ {action}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{report.seconds:.2f} s, {report.vim_calls} vim25 + {report.eam_calls} EAM calls", style="dim"
    )
    if not host_settings:
        hosts = (
            f" (agentvm set them on {report.host_settings_left} host(s))" if report.host_settings_left else ""
        )
        console.print(
            f"the hosts' AgentVM settings are left as they are{hosts}; `agentvm destroy --host-settings` "
            "clears the ones agentvm set",
            highlight=False,
            soft_wrap=True,
        )
    for line in report.network_left:
        console.print(f"left (not agentvm's): {line}", markup=False, highlight=False, soft_wrap=True)
    if not host_network and report.host_network_left:
        console.print(
            f"the hosts' networking agentvm prepared (hostNetwork) is left as it is on "
            f"{report.host_network_left} host(s); `agentvm destroy --host-network` removes what agentvm "
            "created",
            highlight=False,
            soft_wrap=True,
        )
