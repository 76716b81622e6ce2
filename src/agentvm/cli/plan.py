"""``agentvm plan -f SPEC`` and ``agentvm apply -f SPEC``: what would change, then change it.

Both validate first (``controller.solution.Solution.plan``): an unknown cluster, a wrong password or
thumbprint, an unreachable EAM or OVF, a wrong sha256, a too small IP plan, two agencies with one name or a
malformed spec end here with one line on stderr and a non-zero exit, and nothing is changed.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agentvm.cli import esxi, exitcodes
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.output import console, err_console, fail, print_document, print_json
from agentvm.cli.solution import (
    ConnectionFlags,
    EngineStateDir,
    Json,
    ProgressView,
    SpecFile,
    StateDir,
    Timeout,
    guard,
    hosts_table,
    issue_lines,
    load,
    session_for,
)
from agentvm.controller.planner import SolutionPlan
from agentvm.controller.solution import DEFAULT_TIMEOUT, ApplyReport, Solution
from agentvm.core.plan import ChangeKind
from agentvm.core.plan_text import describe
from agentvm.model.errors import AgentvmError

MARKS = {
    ChangeKind.REGISTER_EXTENSION: "+",
    ChangeKind.CREATE_AGENCY: "+",
    ChangeKind.ASSIGN_ADDRESS: "+",
}  # every other kind changes what is there: "~"


def _warn(plan: SolutionPlan) -> None:
    for warning in plan.warnings:
        err_console.print(f"agentvm: warning: {warning}", markup=False, highlight=False, soft_wrap=True)


def _print_plan(plan: SolutionPlan) -> None:
    for line in plan.host_network.right:  # hostNetwork: what is as asked already, per host
        console.print(f"= {line}", markup=False, highlight=False, soft_wrap=True)
    if plan.empty:
        console.print("no changes", highlight=False)
        return
    for change in plan.changes:
        mark = MARKS.get(change.kind, "~")
        console.print(f"{mark} {describe(change)}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(plan.changes)} change(s)", style="bold", highlight=False)


@guard
def plan(
    file: SpecFile,
    json_: Json = False,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    state_dir: StateDir = None,
    detailed_exitcode: bool = typer.Option(
        False,
        "--detailed-exitcode",
        help="Exit 0 when there are no changes, 2 when there are, 1 on any error (as terraform plan).",
    ),
    hosts_at_once: esxi.HostsAtOnce = esxi.DEFAULT_HOSTS_AT_ONCE,
) -> None:
    """Show what apply would change (extension, host settings, agencies, addresses); change nothing.

    With esxi: hosts in the spec, per standalone host (their own connections; --url and the other
    vCenter flags are not used)."""
    try:
        desired = load(file)
        if desired.esxi:
            esxi.run_plan(
                desired,
                json_=json_,
                state_dir=state_dir,
                at_once=hosts_at_once,
                detailed_exitcode=detailed_exitcode,
            )
            return
        flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
        with (
            session_for(desired, flags) as session,
            Solution(desired, session, state_dir=state_dir) as solution,
        ):
            result = solution.plan()
    except AgentvmError as exc:
        # with --detailed-exitcode, 2 means "changes present": every error is 1, as terraform's
        fail(str(exc), exitcodes.PLAN_ERROR if detailed_exitcode else exitcodes.code_for(exc))
    _warn(result)
    if json_:
        print_json(result.to_json())
    else:
        _print_plan(result)
    if detailed_exitcode and not result.empty:
        raise typer.Exit(exitcodes.PLAN_CHANGES)


def _summary(report: ApplyReport) -> None:
    if report.hosts:
        title = "agents" if report.green else "agents (not all green)"
        console.print(hosts_table(report.hosts, title))
        for line in issue_lines(report.hosts):
            console.print(line, soft_wrap=True)
    table = Table.grid(padding=(0, 2))
    table.add_row("wall time", f"{report.seconds:.2f} s")
    table.add_row("vCenter calls", f"{report.vim_calls} vim25, {report.eam_calls} EAM")
    console.print(table)


@guard
def apply(
    file: SpecFile,
    timeout: Timeout = DEFAULT_TIMEOUT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Accepted for scripts; apply never asks."),
    json_: Json = False,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    state_dir: EngineStateDir = None,
    hosts_at_once: esxi.HostsAtOnce = esxi.DEFAULT_HOSTS_AT_ONCE,
) -> None:
    """Register the solution, prepare the hosts, create/update the agencies, configure each agent; wait.

    Agencies belong to the solution: EAM calls log in as the extension, with solution.certFile/keyFile or
    a certificate generated on the first apply under --state-dir (printed). With esxi: hosts in the spec:
    every standalone host planned first, then each applied with agentvm's own engine (its state under
    --state-dir), --hosts-at-once at a time."""
    _ = yes  # apply is declarative and idempotent: nothing to confirm
    desired = load(file)
    if desired.esxi:
        esxi.run_apply(desired, json_=json_, state_dir=state_dir, at_once=hosts_at_once, timeout=timeout)
        return
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    with (
        session_for(desired, flags) as session,
        Solution(desired, session, state_dir=state_dir) as solution,
        ProgressView(live=False if json_ else None) as view,
    ):
        report = solution.apply(timeout=timeout, on_progress=None if json_ else view)
    _warn(report.plan)
    if json_:
        print_document(
            "ApplyResult",
            {
                "plan": report.plan.to_json(),
                "actions": list(report.actions),
                "green": report.green,
                "problems": list(report.problems),
                "seconds": round(report.seconds, 3),
                "polls": report.polls,
                "calls": {"vim25": report.vim_calls, "eam": report.eam_calls},
            },
        )
    elif not report.changed:
        console.print("no changes", highlight=False)
        if not report.green:
            console.print("(some agents are not green: see agentvm status)", highlight=False)
    else:
        for action in report.actions:
            console.print(f"✓ {action}", markup=False, highlight=False, soft_wrap=True)
        _summary(report)
    if report.problems:
        fail(f"apply stopped: {'; '.join(report.problems)}", exitcodes.FAILED)
    if not report.green:
        yellow = sum(1 for h in report.hosts if h.phase.value != "ready")
        fail(
            f"{yellow} host(s) not ready after {timeout:.0f} s; see `agentvm status` for their issues, "
            "`agentvm resolve --all` to retry, or apply again with a longer --timeout",
            exitcodes.FAILED,
        )


_ = Path
