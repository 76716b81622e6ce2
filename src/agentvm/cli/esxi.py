"""``agentvm plan | apply | status | destroy`` of a spec with standalone ESXi hosts (``esxi:``).

Called by ``cli.plan``, ``cli.status`` and ``cli.destroy`` when the spec lists ``esxi:`` hosts. Each host is
a small vCenter of one host with no extension and no EAM: per host, one ``Session(host_agent=True)``, the
direct engine on it (``cli.run.open_direct_engine``: its own state file under ``--state-dir``, one per host
URL) and one ``controller.solution.Solution`` with the host's own spec (``core.standalone.host_spec``), so
that plan, apply and destroy are the vCenter ones, per host.

- **Connect and plan everywhere first.** Every host is logged in to, then planned, concurrently and at
  most ``--hosts-at-once`` (``$AGENTVM_HOSTS_AT_ONCE``, default 8) at a time, before any change: a wrong
  password, an unknown thumbprint, an unreachable host or a spec that does not fit one host stops the
  command with one line naming the failed host (``esx-02 (https://…/sdk)``; several: each, in ``esxi:``
  order) and the fix in its ``esxi:`` entry, exit 4 (authentication, TLS), 3 (unreachable) or 2 (bad input;
  the first failed host's code), and nothing is changed on any host.
- **One IP plan for the fleet** (``core.standalone.fleet_addresses``): each host's current addresses are
  read first, then every host in an agency's scope gets its own address, pinned in its spec.
- **apply** then applies every host concurrently; one host failing does not stop the others: the summary
  names each failed host and why, exit 1.
- **status** shows the hosts grouped as ``standalone`` (the Status document's ``standalone`` list); a host
  that cannot be reached is shown with the reason, the others still. The engine reloads its state from the
  file and looks once (``Engine.step(act=False)``): it observes the host and judges, and carries out
  nothing, so status changes nothing on any host.
- **destroy** removes every agency of the spec from every host, concurrently (``--host-network``: and what
  agentvm created for hostNetwork there).

- **hostNetwork** (``fabric`` only: the spec refuses ``trunk`` on standalone hosts) is each host's own
  Solution's, as on a vCenter: its plan makes the Nova checks and lists the host's vSwitch/port group
  changes, with ``= …`` lines for what is right already (``plan --json``: per host under ``standalone`` and
  at the top prefixed with the esxi name). A failed check is one line for its host (``HostNetworkError``'s
  checks joined), so the fleet's plan stops with nothing changed on any host, exit 2. The ownership record
  is a file on each host's datastore (``vsphere.hostnet`` on a host agent). ``status`` shows each host's
  ``hostNetwork`` state, the others ``held`` when one host fails a check; ``destroy --host-network`` tears
  down what agentvm created on each host.

A spec whose agencies scope both a vCenter's clusters and ``esxi:`` hosts stops when it loads, before any
connection (``core.standalone.check_spec``, exit 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import typer

from agentvm.cli import exitcodes
from agentvm.cli.output import console, fail, print_document, print_json, text, warn
from agentvm.cli.render import hosts_table, issue_lines
from agentvm.cli.run import DirectEngine, default_state_dir, open_direct_engine
from agentvm.controller.planner import HostNetworkError, SolutionPlan
from agentvm.controller.solution import ApplyReport, DestroyReport, Solution
from agentvm.controller.status import StatusReport, collect_status, status_document
from agentvm.core.plan import STANDALONE_SKIPPED, AssignAddress
from agentvm.core.plan_text import describe
from agentvm.core.progress import issue_sentence, summarize
from agentvm.core.standalone import fleet_addresses, host_spec, with_fleet_sources
from agentvm.model.connection import Secret
from agentvm.model.desired import DesiredState, PasswordSource, StandaloneHostSpec
from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    TransientError,
)
from agentvm.vsphere.session import Session

HOSTS_AT_ONCE_ENV = "AGENTVM_HOSTS_AT_ONCE"
DEFAULT_HOSTS_AT_ONCE = 8

HostsAtOnce = Annotated[
    int,
    typer.Option(
        "--hosts-at-once",
        envvar=HOSTS_AT_ONCE_ENV,
        min=1,
        help="With esxi: in the spec, how many standalone hosts are connected to, planned and changed at "
        f"once (default {DEFAULT_HOSTS_AT_ONCE}).",
    ),
]

T = TypeVar("T")


# ------------------------------------------------------------------------------------------- checks


def where(host: StandaloneHostSpec) -> str:
    """How every message names a standalone host: its esxi name and URL."""
    return f"{host.name} ({host.connection.url})"


class HostError(AgentvmError):
    """One standalone host failed: the message names it; ``exit_code`` is its error's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _host_fix(message: str, host: StandaloneHostSpec) -> str:
    """The session's fixes, written for a vCenter from flags, as the fixes of ``host``'s esxi: entry."""
    entry = f"esxi: entry {host.name} of the spec"
    match host.password_source:  # where the password comes from, for the message (never the password)
        case PasswordSource.ENVIRONMENT:
            source = f"${host.password_origin}"
        case PasswordSource.FILE:
            source = f"passwordFile {host.password_origin}"
        case _:
            source = "the password prompted for"
    for vcenter, fix in (
        ("check AGENTVM_USERNAME/AGENTVM_PASSWORD", f"check the username and {source} of {entry}"),
        (
            "set AGENTVM_THUMBPRINT/--thumbprint to the new one",
            f"set the thumbprint of {entry} to the new one",
        ),
        ("is vCenter up at that address?", f"is the host up at that address (the url of {entry})?"),
        ("vCenter's certificate", "the host's certificate"),
    ):
        message = message.replace(vcenter, fix)
    return message


def _named(host: StandaloneHostSpec, exc: BaseException) -> AgentvmError:
    """``exc`` as one line naming ``host`` and the fix in its esxi: entry, of the same kind (so the same
    exit code); never with its password."""
    text = str(exc).replace("\n", " ") or type(exc).__name__
    message = _host_fix(f"{where(host)}: {text}", host)
    password = host.connection.password
    if password is not None and password.reveal() and password.reveal() in message:
        message = message.replace(password.reveal(), "********")
    if isinstance(exc, AuthenticationError):
        return AuthenticationError(message)
    if isinstance(exc, TransientError):
        return TransientError(message)
    if isinstance(exc, ConfigurationError):
        return ConfigurationError(message)
    return HostError(message, exitcodes.code_for(exc))


def _one_error(errors: Sequence[AgentvmError]) -> AgentvmError:
    """Several hosts' errors as one: the exit code of the first (in esxi: order), every host's line."""
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    return HostError(
        f"{len(errors)} hosts failed, nothing was changed on any host: " + "; ".join(map(str, errors)),
        exitcodes.code_for(first),
    )


def _password(host: StandaloneHostSpec) -> StandaloneHostSpec:
    """``host`` with its password: read from the spec's source already, or asked on a terminal."""
    conn = host.connection
    if conn.password is not None:
        return host
    if host.password_source is PasswordSource.PROMPT and sys.stdin.isatty():
        password = typer.prompt(f"password for {conn.username} on {where(host)}", hide_input=True)
        return dataclasses.replace(host, connection=dataclasses.replace(conn, password=Secret(password)))
    source = f"set {host.password_origin}" if host.password_origin else "give it passwordEnv or passwordFile"
    raise ConfigurationError(f"{where(host)}: no password for {conn.username}: {source} in the spec")


# -------------------------------------------------------------------------------------------- fleet


@dataclass
class Member:
    """One standalone host of the fleet: its spec entry, session, engine and (once planned) Solution."""

    host: StandaloneHostSpec
    session: Session
    engine: DirectEngine
    solution: Solution | None = None
    plan: SolutionPlan | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.solution is not None:
                self.solution.close()
        with contextlib.suppress(Exception):
            self.engine.close()
        with contextlib.suppress(Exception):
            self.session.logout()

    def calls(self) -> int:
        """vim25 calls of this host's sessions so far (the Solution's and the engine's)."""
        return self.session.stats.total + self.engine.session.stats.total


@dataclass(frozen=True)
class Done(Generic[T]):
    """One host's outcome: its value, or the error that named it."""

    host: StandaloneHostSpec
    value: T | None = None
    error: AgentvmError | None = None


@dataclass
class Fleet:
    """The spec's standalone hosts, connected: ``with Fleet.open(desired, ...) as fleet: ...``."""

    desired: DesiredState
    state_dir: Path
    at_once: int
    members: list[Member] = field(default_factory=list)
    unreachable: list[Done[None]] = field(default_factory=list)  # status: the hosts it could not reach

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        desired: DesiredState,
        state_dir: Path | None,
        *,
        at_once: int = DEFAULT_HOSTS_AT_ONCE,
        timeout: float = 60.0,
        tolerate: bool = False,
    ) -> Iterator[Fleet]:
        """Log in to every host of ``desired.esxi`` (at most ``at_once`` at a time) and open its engine.
        Raises one error naming every host that failed, after closing the others (nothing changed);
        ``tolerate``: keeps those in ``unreachable`` instead (status)."""
        fleet = cls(desired, state_dir or default_state_dir(), at_once)
        hosts = [_password(h) for h in desired.esxi]
        done = fleet.each_host(hosts, lambda h: fleet._connect(h, timeout))
        fleet.members = [d.value for d in done if d.value is not None]
        failed = [d for d in done if d.error is not None]
        try:
            if failed and not tolerate:
                raise _one_error([d.error for d in failed if d.error is not None])
            fleet.unreachable = [Done(d.host, None, d.error) for d in failed]
            yield fleet
        finally:
            fleet.each(lambda m: m.close())

    def _connect(self, host: StandaloneHostSpec, timeout: float) -> Member:
        session = Session(host.connection, host_agent=True, timeout=timeout)
        session.login()
        try:
            engine = open_direct_engine(
                host.connection, self.desired, self.state_dir, timeout=timeout, host_agent=True
            )
        except BaseException:
            session.logout()
            raise
        return Member(host, session, engine)

    def each_host(
        self, hosts: Sequence[StandaloneHostSpec], work: Callable[[StandaloneHostSpec], T]
    ) -> list[Done[T]]:
        """``work`` on every host, at most ``at_once`` at a time; each error named after its host."""

        def one(host: StandaloneHostSpec) -> Done[T]:
            try:
                return Done(host, work(host))
            except Exception as exc:  # one host's failure never stops the others
                return Done(host, error=_named(host, exc))

        if not hosts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.at_once, len(hosts)), thread_name_prefix="esxi") as pool:
            return list(pool.map(one, hosts))

    def each(self, work: Callable[[Member], T]) -> list[Done[T]]:
        """``work`` on every connected host (``each_host``), in esxi: order."""
        by_host = {id(m.host): m for m in self.members}
        return self.each_host([m.host for m in self.members], lambda h: work(by_host[id(h)]))

    # -- plan -------------------------------------------------------------------------------------------

    def plan(self, *, check_packages: bool = True) -> None:
        """Plan every host (each member's ``plan`` and ``solution``); raise, naming every host that failed,
        before anything is changed. First each host's current addresses, then the fleet's IP plan, then
        each host's plan with its addresses pinned."""
        seen = _raise_any(self.each(self.observe_member))
        previous: dict[str, dict[str, IPv4Address]] = {}  # agency -> esxi name -> address
        for member, (_, _, addresses) in zip(self.members, seen, strict=True):
            for agency, address in addresses.items():
                previous.setdefault(agency, {})[member.name] = address
        fleet = {a.name: fleet_addresses(a, previous.get(a.name)) for a in self.desired.agencies}
        found = {m.name: (moid, scope) for m, (moid, scope, _) in zip(self.members, seen, strict=True)}

        def plan_host(member: Member) -> SolutionPlan:
            mine = {
                agency: by_host[member.name].address
                for agency, by_host in fleet.items()
                if member.name in by_host
            }
            moid, scope = found[member.name]
            spec = host_spec(self.desired, member.name, addresses=mine, host_moid=moid, scope=scope)
            member.solution = Solution(
                spec, member.session, backend=member.engine.backend, state_dir=self.state_dir
            )
            try:
                plan = member.solution.plan(check_packages=check_packages)
            except HostNetworkError as exc:  # one line: each failed check of this host
                raise ConfigurationError(
                    f"hostNetwork: {'; '.join(exc.errors)}; nothing was changed on any host"
                ) from exc
            core = with_fleet_sources(plan.spec_plan, member.name, fleet)
            by_key = {_key(c): c for c in core.changes}
            changes = tuple(by_key.get(_key(c), c) for c in plan.changes)
            member.plan = dataclasses.replace(plan, spec_plan=core, changes=changes)
            return member.plan

        _raise_any(self.each(plan_host))

    def observe_member(self, member: Member) -> tuple[str, str, dict[str, IPv4Address]]:
        """(the host's moid on its host agent, its compute resource's path, agency name -> the address its
        agent VM carries)."""
        spec = host_spec(self.desired, member.name)
        with Solution(spec, member.session, backend=member.engine.backend, state_dir=self.state_dir) as s:
            observation = s.observe()
        hosts = observation.snapshot.hosts
        if len(hosts) != 1:
            raise ConfigurationError(
                f"shows {len(hosts)} hosts, not one: is it an ESXi host? list only ESXi hosts under esxi:"
            )
        moid = hosts[0].moref.value
        found = {a.resolved.spec.name: a.addresses[moid] for a in observation.agencies if moid in a.addresses}
        resources = observation.snapshot.compute_resources
        scope = resources[0].path if len(resources) == 1 else ""
        return moid, scope, found

    def solution_of(self, member: Member, *, every_agency: bool) -> Solution:
        spec = host_spec(self.desired, member.name, every_agency=every_agency)
        member.solution = Solution(
            spec, member.session, backend=member.engine.backend, state_dir=self.state_dir
        )
        return member.solution


def _key(change: object) -> object:
    """What identifies an address change of a host whatever its source says; other changes are their own
    key."""
    if isinstance(change, AssignAddress):
        return (change.agency_name, change.scope_host, change.address)
    return id(change)


def _raise_any(done: list[Done[T]]) -> list[T]:
    errors = [d.error for d in done if d.error is not None]
    if errors:
        raise _one_error(errors)
    return [d.value for d in done]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ results


def plan_document(fleet: Fleet) -> dict[str, Any]:
    """The Plan document (``plan --json``) of a fleet: every host's changes and addresses, named by its
    esxi name (``host``), and per host under ``standalone``; ``skipped`` says what is not planned, why."""
    changes: list[dict[str, Any]] = []
    addresses: dict[str, dict[str, Any]] = {}
    per_host: dict[str, Any] = {}
    warnings: list[str] = []
    network: dict[str, list[str]] = {"right": [], "errors": []}
    for member in fleet.members:
        assert member.plan is not None
        doc: dict[str, Any] = member.plan.to_json()
        for kind, lines in doc["hostNetwork"].items():
            network[kind] += [f"{member.name}: {line}" for line in lines]
        for change in doc["changes"]:  # a host is its esxi name here: its moid is ha-host on every host
            if change["host"] is not None:
                target = member.name if change["target"] == change["host"] else change["target"]
                change = {**change, "host": member.name, "target": target}
            changes.append(change)
        for agency, held in doc["addresses"].items():
            for entry in held.values():
                addresses.setdefault(agency, {})[member.name] = {**entry, "host": member.name}
        warnings += [f"{member.name}: {w}" for w in doc["warnings"]]
        per_host[member.name] = {
            "url": member.host.connection.url,
            "changes": doc["changes"],
            "noChanges": doc["noChanges"],
            "hostNetwork": doc["hostNetwork"],
        }
    return {
        "apiVersion": "agentvm/v1",
        "kind": "Plan",
        "changes": changes,
        "addresses": addresses,
        "warnings": warnings,
        "hostNetwork": network,
        "noChanges": not changes,
        "standalone": per_host,
        "skipped": [STANDALONE_SKIPPED],
    }


def plan_lines(fleet: Fleet) -> list[str]:
    """``agentvm plan``'s text for a fleet: per host its changes (or none), the total, the skipped line."""
    lines: list[str] = []
    total = 0
    for member in fleet.members:
        assert member.plan is not None
        changes = member.plan.changes
        total += len(changes)
        lines.append(f"{where(member.host)}: {len(changes) or 'no'} change(s)")
        lines += [f"  = {line}" for line in member.plan.host_network.right]  # hostNetwork as asked already
        for change in changes:
            mark = (
                "+" if change.kind.value in {"register-extension", "create-agency", "assign-address"} else "~"
            )
            lines.append(f"  {mark} {describe(change)}")
    lines.append(f"{total or 'no'} change(s) on {len(fleet.members)} standalone host(s)")
    lines.append(f"note: {STANDALONE_SKIPPED}")
    return lines


def fleet_status(fleet: Fleet) -> list[Done[StatusReport]]:
    """Every host's status (each host's spec with every agency), the unreachable ones with their reason."""

    def one(member: Member) -> StatusReport:
        spec = host_spec(fleet.desired, member.name, every_agency=True)
        # the engine reloaded its state from the file: one look observes the host (its agents' power, VMs,
        # issues) and judges, carrying out nothing (status changes nothing)
        member.engine.backend.look()
        return collect_status(member.session, member.engine.backend, spec)

    done = _held(fleet.each(one))
    unreachable: list[Done[StatusReport]] = [Done(d.host, None, d.error) for d in fleet.unreachable]
    by_name = {d.host.name: d for d in [*done, *unreachable]}
    return [by_name[h.name] for h in fleet.desired.esxi if h.name in by_name]


def _held(done: list[Done[StatusReport]]) -> list[Done[StatusReport]]:
    """A failed hostNetwork check on one host stops plan and apply on every host: then the others'
    ``preparing`` is ``held``, as on a vCenter (``controller.hostnet.HostNetworkShown``)."""
    reports = [d.value for d in done if d.value is not None]
    if not any(s.state == "error" for r in reports for s in r.host_network.values()):
        return done

    def hold(report: StatusReport) -> StatusReport:
        shown = {
            moid: dataclasses.replace(s, state="held") if s.state == "preparing" else s
            for moid, s in report.host_network.items()
        }
        return dataclasses.replace(report, host_network=shown)

    return [dataclasses.replace(d, value=hold(d.value)) if d.value is not None else d for d in done]


def status_json(fleet: Fleet, done: list[Done[StatusReport]]) -> dict[str, Any]:
    """The Status document of a fleet: no vCenter (``vcenter`` empty, no agencies of its own) and the
    hosts under ``standalone``, each with its agencies, or ``error`` when it could not be read."""
    now = datetime.now(UTC)
    hosts: list[dict[str, Any]] = []
    for d in done:
        entry: dict[str, Any] = {"name": d.host.name, "url": d.host.connection.url}
        if d.value is not None:
            doc = status_document(d.value, now)
            entry |= {
                "reachable": True,
                "error": None,
                "agencies": doc["agencies"],
                "missing": doc["missing"],
            }
        else:
            entry |= {"reachable": False, "error": str(d.error), "agencies": [], "missing": []}
        hosts.append(entry)
    return {
        "apiVersion": "agentvm/v1",
        "kind": "Status",
        "vcenter": "",
        "generatedAt": now.isoformat(),
        "agencies": [],
        "missing": [],
        "solution": fleet.desired.solution.key,
        "standalone": hosts,
    }


def relabel(report: ApplyReport, name: str) -> ApplyReport:
    """``report`` with its hosts named by their esxi name (on every host agent the host is ``ha-host``)."""
    rows = tuple(dataclasses.replace(h, host=name, label=name, cluster="standalone") for h in report.hosts)
    return dataclasses.replace(report, hosts=rows)


def destroy_each(fleet: Fleet, timeout: float, *, host_network: bool = False) -> list[Done[DestroyReport]]:
    """Every agency of the spec destroyed on every host, concurrently; each host's report or error.
    ``host_network``: then what agentvm created for hostNetwork on the host, and only that, is removed."""

    def one(member: Member) -> DestroyReport:
        solution = fleet.solution_of(member, every_agency=True)
        report = solution.destroy(timeout=timeout, host_network=host_network)
        return dataclasses.replace(report, vim_calls=member.calls())

    return fleet.each(one)


def apply_each(fleet: Fleet, timeout: float) -> list[Done[ApplyReport]]:
    """Every planned host applied, concurrently; one host's failure does not stop the others."""

    def one(member: Member) -> ApplyReport:
        assert member.solution is not None
        report = member.solution.apply(timeout=timeout)
        return dataclasses.replace(relabel(report, member.name), vim_calls=member.calls())

    return fleet.each(one)


# ------------------------------------------------------------------------------------------ commands


def run_plan(
    desired: DesiredState, *, json_: bool, state_dir: Path | None, at_once: int, detailed_exitcode: bool
) -> None:
    """``agentvm plan`` of a spec with esxi: hosts (see the module docstring)."""
    try:
        with Fleet.open(desired, state_dir, at_once=at_once) as fleet:
            fleet.plan()
            doc = plan_document(fleet)
            lines = plan_lines(fleet)
    except AgentvmError as exc:
        fail(str(exc), exitcodes.PLAN_ERROR if detailed_exitcode else exitcodes.code_for(exc))
    for warning in doc["warnings"]:
        warn(warning)
    if json_:
        print_json(doc)
    else:
        for line in lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if detailed_exitcode and not doc["noChanges"]:
        raise typer.Exit(exitcodes.PLAN_CHANGES)


def run_apply(
    desired: DesiredState, *, json_: bool, state_dir: Path | None, at_once: int, timeout: float
) -> None:
    """``agentvm apply`` of a spec with esxi: hosts: plan every host, then apply every host concurrently."""
    with Fleet.open(desired, state_dir, at_once=at_once) as fleet:
        fleet.plan()
        plan = plan_document(fleet)
        done = apply_each(fleet, timeout)
    failed = [d for d in done if d.error is not None]
    reports = [(d.host, d.value) for d in done if d.value is not None]
    why = {d.host.name: reason for d in done if (reason := _why_not(d, timeout)) is not None}
    for warning in plan["warnings"]:
        warn(warning)
    if json_:
        print_document(
            "ApplyResult",
            {
                "plan": plan,
                "actions": [f"{h.name}: {a}" for h, r in reports for a in r.actions],
                "green": not why,
                "problems": [f"{where(d.host)}: {why[d.host.name]}" for d in done if d.host.name in why],
                "seconds": round(max((r.seconds for _, r in reports), default=0.0), 3),
                "polls": sum(r.polls for _, r in reports),
                "calls": {"vim25": sum(r.vim_calls for _, r in reports), "eam": 0},
                "standalone": {
                    d.host.name: {
                        "url": d.host.connection.url,
                        "ok": d.host.name not in why,
                        "error": why.get(d.host.name),
                        "actions": list(d.value.actions) if d.value is not None else [],
                        "seconds": round(d.value.seconds, 3) if d.value is not None else None,
                        "calls": d.value.vim_calls if d.value is not None else None,
                    }
                    for d in done
                },
            },
        )
    else:
        if not any(r.changed for _, r in reports) and not failed:
            console.print("no changes", highlight=False)
        for host, report in reports:
            for action in report.actions:
                console.print(f"✓ {host.name}: {action}", markup=False, highlight=False, soft_wrap=True)
        rows = tuple(row for _, r in reports for row in r.hosts)
        if rows and any(r.changed for _, r in reports):
            console.print(hosts_table(rows, "agents on standalone hosts"))
            for line in issue_lines(rows):
                console.print(line, soft_wrap=True)
        for host, report in reports:
            console.print(
                f"{host.name}: {report.seconds:.2f} s, {report.vim_calls} vim25 calls",
                style="dim",
                highlight=False,
            )
        console.print(f"note: {STANDALONE_SKIPPED}", highlight=False, soft_wrap=True)
    if why:
        lines = [f"{where(d.host)}: {why[d.host.name]}" for d in done if d.host.name in why]
        fail(
            f"apply failed on {len(why)} of {len(done)} host(s), the others were applied: "
            + "; ".join(lines),
            exitcodes.FAILED,
        )


def _why_not(done: Done[ApplyReport], timeout: float) -> str | None:
    """Why a host's apply did not end green (its error, the issue that stopped it, or what its agents
    still were at the timeout, with their issues); None when it did."""
    if done.error is not None:
        return str(done.error).removeprefix(f"{where(done.host)}: ")
    report = done.value
    if report is None or report.green:
        return None
    if report.problems:
        return "; ".join(report.problems)
    waiting = [row for row in report.hosts if row.phase.value != "ready"]
    states = ", ".join(sorted({row.shown_phase for row in waiting})) or "not ready"
    issues = "; ".join(issue_sentence(i) for row in waiting for i in row.issues)
    return (
        f"agent not ready after {timeout:.0f} s ({states}{': ' + issues if issues else ''}); see agentvm "
        "status -f SPEC, fix what it says and apply again"
    )


def run_destroy(
    desired: DesiredState,
    *,
    json_: bool,
    state_dir: Path | None,
    at_once: int,
    timeout: float,
    host_network: bool = False,
) -> None:
    """``agentvm destroy`` of a spec with esxi: hosts: every agency of the spec off every host; with
    ``host_network`` also the vSwitches and port groups agentvm created for hostNetwork (only those)."""
    with Fleet.open(desired, state_dir, at_once=at_once) as fleet:
        done = destroy_each(fleet, timeout, host_network=host_network)
    failed = [d for d in done if d.error is not None]
    reports = [(d.host, d.value) for d in done if d.value is not None]
    left = [f"{h.name}: {line}" for h, r in reports for line in r.network_left]
    kept = sum(r.host_network_left for _, r in reports)
    if json_:
        print_document(
            "DestroyResult",
            {
                "actions": [f"{h.name}: {a}" for h, r in reports for a in r.actions],
                "seconds": round(max((r.seconds for _, r in reports), default=0.0), 3),
                "calls": {"vim25": sum(r.vim_calls for _, r in reports), "eam": 0},
                "hostNetworkLeft": left,
            },
        )
    else:
        if not any(r.actions for _, r in reports) and not failed:
            console.print("nothing to destroy", highlight=False)
        for host, report in reports:
            for action in report.actions:
                console.print(f"✓ {host.name}: {action}", markup=False, highlight=False, soft_wrap=True)
        for line in left:
            console.print(f"left (not agentvm's): {line}", markup=False, highlight=False, soft_wrap=True)
        if not host_network and kept:
            console.print(
                f"the hosts' networking agentvm prepared (hostNetwork) is left as it is on {kept} host(s); "
                "`agentvm destroy --host-network` removes what agentvm created",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        fail(
            f"destroy failed on {len(failed)} of {len(done)} host(s): "
            + "; ".join(str(d.error) for d in failed),
            exitcodes.code_for(failed[0].error) if failed[0].error is not None else exitcodes.FAILED,
        )


def run_status(desired: DesiredState, *, json_: bool, state_dir: Path | None, at_once: int) -> None:
    """``agentvm status -f SPEC`` with esxi: hosts: every host's agents, grouped as standalone; a host
    that cannot be reached is shown with the reason, the others still (exit 0)."""
    with Fleet.open(desired, state_dir, at_once=at_once, tolerate=True) as fleet:
        done = fleet_status(fleet)
        if json_:
            print_json(status_json(fleet, done))
            return
    for d in done:
        if d.value is None:
            console.print(text(f"standalone {where(d.host)}: unreachable: {d.error}", style="red"))
            continue
        console.print(text(f"standalone {where(d.host)}", style="bold"))
        report = d.value
        for agency in report.agencies:
            rows = tuple(
                dataclasses.replace(r, host=d.host.name, label=d.host.name, cluster="standalone")
                for r in agency.hosts
            )
            counted = summarize(rows)
            status = agency.status
            title = f"agency {status.name}: {status.status.value}, {counted.ready}/{counted.hosts} ready"
            console.print(hosts_table(rows, title))
            for line in issue_lines(rows):
                console.print(line, soft_wrap=True)
        for name in report.missing:
            console.print(text(f"agency {name}: not created yet (run agentvm apply)"))
        for shown in report.host_network.values():  # hostNetwork: the one host's networking
            style = {"ready": "green", "error": "red"}.get(shown.state, "yellow")
            words = f"{shown.state}: {shown.message}" if shown.message else shown.state
            console.print(text(f"hostNetwork: {words}", style=style), soft_wrap=True)
