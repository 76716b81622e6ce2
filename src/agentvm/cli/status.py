"""``agentvm status`` and ``agentvm resolve``: see the agents and their issues, and ask EAM to fix them.

``status`` names the solution's controller (with a spec: the ``agentvm run`` holding its lease, which with
``--coordination`` is the leader), then shows, per agency, one row per host (cluster, agent VM, power,
pending hook, address, issues as sentences with their fix); ``--json`` prints the documented
``agentvm/v1`` Status document (``agentvm/api/schema/status-v1.json``); ``--watch`` redraws until
interrupted (or ``--count`` times).
``resolve KEY...`` resolves issues by key, ``resolve --all`` every issue of the agencies and moves every
agent VM found on another host than its agent's back to its host (EAM raises no issue for that).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from agentvm.backends.eam import EamBackend
from agentvm.cli import esxi, exitcodes
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.output import console, fail, print_document, print_json, text
from agentvm.cli.solution import (
    ConnectionFlags,
    EngineStateDir,
    Json,
    OptionalSpecFile,
    StateDir,
    guard,
    hosts_table,
    issue_lines,
    load,
    session_for,
)
from agentvm.controller.identity import SolutionIdentity, default_state_dir, solution_dir
from agentvm.controller.lease import current_holder
from agentvm.controller.status import StatusReport, collect_status, status_document
from agentvm.core.progress import issue_sentence, summarize
from agentvm.model.agency import Issue
from agentvm.model.desired import DesiredState
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.lease import LeaseHolder
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import ensure_on_host


def status_view(report: StatusReport, controller: Controlled | None = None) -> Group:
    """The status of every agency as tables (``cli.render``: identifiers never cut, hosts in maintenance
    mode read "maintenance") and one line per issue; every name from vCenter or the spec as ``Text``.
    ``controller``: with a spec, the line naming the ``agentvm run`` that leads the solution."""
    parts: list[RenderableType] = []
    if controller is not None:
        parts.append(text(controller.line()))
    for agency in report.agencies:
        s = agency.status
        counted = summarize(agency.hosts)
        title = (
            f"agency {s.name} ({s.agency}): {s.status.value}, goal {s.goal_state.value}, "
            f"{counted.ready}/{counted.hosts} hosts ready"
        )
        parts.append(hosts_table(agency.hosts, title, report.conditions))
        parts += issue_lines(agency.hosts)
        for row in agency.hosts:
            if row.misplaced is not None:
                parts.append(text(f"misplaced on {row.label}: {row.misplaced.sentence()}", style="red"))
        for issue in s.issues:
            if issue.agent is None:
                parts.append(text(f"issue #{issue.key} of agency {s.name}: {issue_sentence(issue)}"))
    for name in report.missing:
        parts.append(text(f"agency {name}: not created yet (run agentvm apply)"))
    if not report.agencies and not report.missing:
        parts.append(Text("no agencies"))
    return Group(*parts)


@dataclass(frozen=True)
class Controlled:
    """Who acts on the spec's solution: the holder of its lease in vCenter (None: nobody). With
    ``agentvm run --coordination`` the seat's leader holds that lease, so this names the leader too."""

    solution: str
    holder: LeaseHolder | None

    def line(self) -> str:
        if self.holder is None:
            return f"controller of {self.solution}: none (no agentvm run holds its lease)"
        return f"controller of {self.solution}: {self.holder.describe()}"

    def json(self) -> dict[str, object] | None:
        h = self.holder
        return {"host": h.host, "pid": h.pid, "command": h.command, "since": h.started} if h else None


def _controller(session: Session, desired: DesiredState | None) -> Controlled | None:
    """The solution's controller, with a spec (one read of the extension list); None without one."""
    if desired is None:
        return None
    return Controlled(desired.solution.key, current_holder(session, desired.solution.key))


def _document(report: StatusReport, session: Session, desired: DesiredState | None) -> dict[str, object]:
    doc = status_document(report, datetime.now(UTC))
    controlled = _controller(session, desired)
    if controlled is not None:
        doc["solution"] = controlled.solution
        doc["controller"] = controlled.json()
    return doc


def _backend(session: Session, desired: DesiredState | None, state_dir: Path | None) -> EamBackend:
    """EAM on ``session``; logged in as the extension, it also sees the agencies apply adopted (a user
    owns them, and EAM lists an agency to its owner only: ``controller.identity`` recorded their ids)."""
    backend = EamBackend(session)
    if desired is not None and session.conn.by_certificate:
        base = state_dir if state_dir is not None else default_state_dir()
        identity = SolutionIdentity(solution_dir(base, session.url, desired.solution.key))
        for adopted in identity.adopted().values():
            backend.client.also_see(adopted.agency)
    return backend


@guard
def status(
    file: OptionalSpecFile = None,
    json_: Json = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw until interrupted.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between redraws.")] = 2.0,
    count: Annotated[int, typer.Option("--count", min=0, help="With --watch: stop after N draws.")] = 0,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    state_dir: EngineStateDir = None,
    hosts_at_once: esxi.HostsAtOnce = esxi.DEFAULT_HOSTS_AT_ONCE,
) -> None:
    """Per cluster and host: agent VM, power state, pending hook, address, issues (with their fix).

    With esxi: hosts in the spec: per standalone host, grouped as standalone (no --watch yet)."""
    desired = load(file) if file is not None else None
    if desired is not None and desired.esxi:
        if watch:
            raise ConfigurationError("--watch is not supported with esxi: hosts yet; run status again")
        esxi.run_status(desired, json_=json_, state_dir=state_dir, at_once=hosts_at_once)
        return
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    with session_for(desired, flags) as session:
        backend = _backend(session, desired, state_dir)
        if not watch:
            report = collect_status(session, backend, desired)
            if json_:
                print_json(_document(report, session, desired))
            else:
                console.print(status_view(report, _controller(session, desired)))
            return
        drawn = 0
        live = Live(console=console, auto_refresh=False) if console.is_terminal and not json_ else None
        try:
            if live is not None:
                live.__enter__()
            while count == 0 or drawn < count:
                report = collect_status(session, backend, desired)
                if json_:
                    print_json(_document(report, session, desired))
                elif live is not None:
                    live.update(status_view(report, _controller(session, desired)), refresh=True)
                else:
                    console.print(status_view(report, _controller(session, desired)))
                drawn += 1
                if count == 0 or drawn < count:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.__exit__(None, None, None)


@guard
def resolve(
    keys: Annotated[list[int] | None, typer.Argument(help="Issue keys (see agentvm status).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Resolve every issue of the agencies.")] = False,
    file: OptionalSpecFile = None,
    json_: Json = False,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    state_dir: StateDir = None,
) -> None:
    """Ask EAM to fix issues: power agent VMs on again, redeploy deleted ones, re-check the rest; with
    --all also move agent VMs that run on another host back to theirs."""
    if all_ == bool(keys):
        fail("give issue keys (from agentvm status) or --all, not both and not neither", exitcodes.BAD_INPUT)
    desired = load(file) if file is not None else None
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    issues: list[dict[str, object]] = []  # the ResolveResult document's lists
    moved: list[dict[str, object]] = []
    not_moved: list[dict[str, object]] = []

    def say(line: str) -> None:
        if not json_:
            console.print(line, highlight=False)

    with session_for(desired, flags) as session:
        backend = _backend(session, desired, state_dir)
        report = collect_status(session, backend, desired)
        if all_:
            for agency in report.agencies:
                backend.resolve_all(agency.name)
                say(f"resolving all {len(agency.status.issues)} issue(s) of agency {agency.name}")
                issues += [_resolved(i, agency.name, True) for i in agency.status.issues]
            for found in report.misplaced:
                where = found.runs_on_name or found.runs_on.value
                vm: dict[str, object] = {
                    "vm": found.vm_name,
                    "agency": found.agency_name,
                    "host": found.host_name,
                    "from": where,
                }
                try:
                    ensure_on_host(
                        session, found.vm, found.host, pool=found.resource_pool, label=found.vm_name
                    )
                except NotFoundError as exc:
                    say(f"agent VM {found.vm_name} not moved: {exc}")
                    not_moved.append({**vm, "reason": str(exc)})
                    continue
                moved.append(vm)
                say(
                    f"moved the agent VM {found.vm_name} of agency {found.agency_name} back to "
                    f"{found.host_name} from {where}"
                )
        else:
            agency_of = {i.key: a.name for a in report.agencies for i in a.status.issues}
            known: dict[int, Issue] = {i.key: i for a in report.agencies for i in a.status.issues}
            unknown = [k for k in keys or () if k not in known]
            if unknown:
                listed = ", ".join(str(k) for k in sorted(known)) or "none"
                raise ConfigurationError(
                    f"no issue with key {', '.join(map(str, unknown))} (current keys: {listed}); "
                    "run agentvm status to see them"
                )
            left = set(backend.resolve([known[k] for k in keys or ()]))
            for key in keys or ():
                verdict = "cannot be resolved now" if key in left else "resolving"
                say(f"issue {key}: {verdict}: {issue_sentence(known[key])}")
                issues.append(_resolved(known[key], agency_of[key], key not in left))
    if json_:
        print_document("ResolveResult", {"issues": issues, "moved": moved, "notMoved": not_moved})


def _resolved(issue: Issue, agency: str, resolving: bool) -> dict[str, object]:
    """One issue in the ResolveResult document: resolving is false when EAM cannot resolve it now."""
    return {
        "key": issue.key,
        "kind": issue.kind.value,
        "agency": agency,
        "resolving": resolving,
        "message": issue_sentence(issue),
    }
