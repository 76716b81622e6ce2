"""Per-host rows of an agency: the apply/destroy progress, the ``status`` table, document and dashboard.

One projection, pure (values in, values out): ``host_rows`` turns one observed agency (its agents' runtimes),
the hosts of its scope and the host conditions (maintenance mode, standby) into one ``HostProgress`` per host
— host, agent VM, power, hook, address, phase, issues. ``controller.solution`` reports them after every poll
of apply/destroy; ``controller.status`` and the controller's loop (``controller.reconcile``) put them in the
``status`` report. On top of a row, ``status_row`` gives the host's ``state`` (the colour of the JSON document
and the dashboard) and agentvm's own findings about it, ``state_word`` the word of the hosts table's state
column, and ``summarize`` counts rows for the title lines. The CLI draws the rows (``cli.render``);
``controller.status`` writes the JSON document the HTTP API serves. Every issue reads as one sentence with
its fix (``issue_sentence``). See docs/architecture.md, "Observation".
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Protocol

from agentvm.core.heal import (
    AgentDisplayState,
    Finding,
    HostConditions,
    Misplaced,
    display_state,
)
from agentvm.model.agency import (
    DETAIL_DOWNLOAD_URL,
    DETAIL_ERROR,
    AgentRuntime,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    PowerState,
    Status,
)
from agentvm.model.desired import ScopeHost
from agentvm.model.inventory import InventorySnapshot
from agentvm.model.names import natural_key

MAINTENANCE = "maintenance"  # the state word of a host in maintenance mode or standby (as the dashboard's)


class Phase(StrEnum):
    """Where one host's agent is, in words for the progress display."""

    WAITING = "waiting"  # no agent yet (EAM has not seen the host, or the agency is being created)
    DEPLOYING = "deploying"
    CONFIGURING = "configuring"  # a VM hook is pending: agentvm writes the host's values
    POWERING_ON = "powering on"
    READY = "ready"
    ISSUE = "issue"
    MISPLACED = "misplaced"  # the agent VM runs on another host (moved by hand): this host has no agent
    REMOVING = "removing"
    REMOVED = "removed"


# One sentence per issue kind: what happened and what fixes it ({host} and {vm} are filled in).
ISSUE_SENTENCES: Mapping[IssueKind, str] = {
    IssueKind.CANNOT_ACCESS_AGENT_OVF: (
        "EAM cannot download the agent OVF {url} for {host}; start the package server or fix ovf.url, "
        "then run agentvm resolve"
    ),
    IssueKind.OVF_INVALID_FORMAT: "the agent OVF is not valid ({error}); fix the package and apply again",
    IssueKind.OVF_INVALID_PROPERTY: (
        "an OVF property of the agent is not valid ({error}); fix ovfProperties/perHost and apply again"
    ),
    IssueKind.INCOMPATIBLE_HOST_VERSION: (
        "{host} runs an ESXi version no agent config of the agency fits; upgrade the host or the package"
    ),
    IssueKind.INSUFFICIENT_RESOURCES: (
        "{host} has too little CPU or memory for the agent VM; free resources, then run agentvm resolve"
    ),
    IssueKind.INSUFFICIENT_SPACE: (
        "the agent VM's datastore on {host} is full; free space, then run agentvm resolve"
    ),
    IssueKind.NO_AGENT_VM_DATASTORE: (
        "{host} has no agent VM datastore; name a datastore in the spec (or set the host's AgentVM "
        "settings) and apply again"
    ),
    IssueKind.NO_AGENT_VM_NETWORK: (
        "{host} has no agent VM network; name a network in the spec (or set the host's AgentVM settings) "
        "and apply again"
    ),
    IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE: (
        "{host} sees none of the agency's datastores; mount one on the host or name another in the spec"
    ),
    IssueKind.NO_CUSTOM_AGENT_VM_NETWORK: (
        "{host} sees none of the agency's networks; connect the host or name another network in the spec"
    ),
    IssueKind.INVALID_CONFIG: "the agent VM {vm} cannot be configured ({error}); fix the package or spec",
    IssueKind.VM_POWERED_OFF: (
        "the agent VM {vm} on {host} was powered off; run agentvm resolve to power it on"
    ),
    IssueKind.VM_SUSPENDED: "the agent VM {vm} on {host} is suspended; run agentvm resolve to power it on",
    IssueKind.VM_POWERED_ON: (
        "the agent VM {vm} on {host} is on although the agency is disabled; run agentvm resolve"
    ),
    IssueKind.VM_NOT_DEPLOYED: ("the agent VM on {host} was deleted; run agentvm resolve to deploy it again"),
    IssueKind.VM_CORRUPTED: "the agent VM {vm} on {host} lost files; run agentvm resolve to redeploy it",
    IssueKind.VM_ORPHANED: (
        "the agent VM {vm} is left on {host}, which is no longer in scope; run agentvm resolve to delete it"
    ),
    IssueKind.MANAGED_HOST_NOT_REACHABLE: (
        "{host} is disconnected or powered off; reconnect it (the issue clears by itself)"
    ),
    IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE: (
        "{host} is in maintenance mode, so its agent VM cannot be deployed; take it out of maintenance "
        "mode or run agentvm resolve"
    ),
    IssueKind.HOST_IN_MAINTENANCE_MODE: (
        "{host} is in maintenance mode and blocks the agent VM; take it out, or run agentvm resolve"
    ),
    IssueKind.HOST_IN_STANDBY_MODE: "{host} is in standby; wake it up (the issue clears by itself)",
}


def issue_sentence(issue: Issue) -> str:
    """The issue as one sentence with its fix, e.g. "the agent VM contrail-vm (1) on DC0_C0_H0 was ..."."""
    host = issue.host_name or (issue.host.value if issue.host else "the host")
    vm = issue.vm_name or (issue.vm.value if issue.vm else "")
    error = issue.detail.get(DETAIL_ERROR, "")
    url = issue.detail.get(DETAIL_DOWNLOAD_URL, "")
    template = ISSUE_SENTENCES.get(issue.kind, "{kind} on {host}; run agentvm resolve")
    return template.format(
        host=host,
        vm=vm or "of the agent",
        error="; ".join(error) if isinstance(error, tuple) else error or "no detail",
        url=url if isinstance(url, str) else ", ".join(url),
        kind=issue.kind.value,
    )


@dataclass(frozen=True)
class HostProgress:
    """One host of an agency while apply/destroy wait (and one row of ``status``)."""

    agency: str
    host: str  # moid
    label: str  # inventory path, or name
    cluster: str  # cluster name, "" for a standalone host
    phase: Phase
    status: Status | None = None
    vm: str | None = None  # moid
    vm_name: str | None = None
    power: PowerState | None = None
    hook: HookState | None = None
    address: str | None = None
    issues: tuple[Issue, ...] = ()
    misplaced: Misplaced | None = None  # its agent VM runs on another host
    maintenance: bool = False  # the host is in maintenance mode or standby (as last read)

    @property
    def shown_phase(self) -> str:
        """The phase as the CLI shows it: ``maintenance`` for a host in maintenance mode or standby whose
        agent is not ready (as the dashboard shows it), else the phase."""
        if self.maintenance and self.phase not in (Phase.READY, Phase.REMOVED):
            return MAINTENANCE
        return self.phase.value

    @property
    def detail(self) -> str:
        sentences = [issue_sentence(i) for i in self.issues]
        if self.misplaced is not None:
            sentences.append(self.misplaced.sentence())
        if sentences:
            return "; ".join(sentences)
        if self.hook is not None:
            return f"{self.hook.value} hook pending"
        if self.shown_phase == MAINTENANCE:
            return "its agent comes when the host leaves maintenance mode or standby"
        return ""


@dataclass(frozen=True)
class Progress:
    """One poll of the agencies apply/destroy wait on."""

    hosts: tuple[HostProgress, ...]
    elapsed: float
    done: bool = False

    def count(self, phase: Phase) -> int:
        return sum(1 for h in self.hosts if h.phase is phase)


def phase_of(agent: AgentRuntime | None, goal: GoalState | None) -> Phase:
    """The phase a host's agent is in, from its runtime (None: no agent yet)."""
    if agent is None:
        return Phase.REMOVED if goal is GoalState.UNINSTALLED else Phase.WAITING
    if goal is GoalState.UNINSTALLED or agent.goal_state is GoalState.UNINSTALLED:
        return Phase.REMOVED if agent.status is Status.GREEN and agent.vm is None else Phase.REMOVING
    if agent.status is Status.RED or agent.issues:
        return Phase.ISSUE
    if agent.hook is not None:
        return Phase.CONFIGURING
    if agent.status is Status.GREEN:
        return Phase.READY
    if agent.vm is None:
        return Phase.DEPLOYING
    return Phase.POWERING_ON if agent.power_state is not PowerState.POWERED_ON else Phase.DEPLOYING


class ObservedAgents(Protocol):
    """What ``host_rows`` reads of one observed agency; ``backends.base.AgencyStatus`` has it."""

    @property
    def agency(self) -> str: ...

    @property
    def goal_state(self) -> GoalState: ...

    @property
    def agents(self) -> tuple[AgentRuntime, ...]: ...


def host_rows(
    agency: str,
    status: ObservedAgents | None,
    hosts: Iterable[ScopeHost],
    addresses: Mapping[str, IPv4Address],
    snapshot: InventorySnapshot | None,
    *,
    uninstall: bool = False,
    misplaced: Iterable[Misplaced] = (),
    conditions: HostConditions | None = None,
) -> tuple[HostProgress, ...]:
    """One row per host of the scope and per agent (a host may have left the scope), by inventory path in
    natural order (H2 before H10).

    ``status``: the agency as observed (None: not created yet, or gone); ``snapshot``: the inventory read
    that names the agent VMs. ``misplaced``: agent VMs found on another host (``core.heal.find_misplaced``);
    their hosts' rows are in phase ``misplaced`` and carry it. ``conditions``: the hosts in maintenance mode
    or standby, whose rows say so (default: as ``snapshot`` has them)."""
    return update_host_rows(
        None,
        agency,
        status,
        hosts,
        addresses,
        snapshot,
        uninstall=uninstall,
        misplaced=misplaced,
        conditions=conditions,
    ).rows


@dataclass(frozen=True)
class HostRows:
    """``host_rows``' rows together with what each row was made from, for ``update_host_rows``."""

    rows: tuple[HostProgress, ...] = ()
    inputs: Mapping[str, tuple[object, ...]] = field(default_factory=dict)  # moid -> what its row is of
    labels: Mapping[str, str] = field(default_factory=dict)  # moid -> the label its row is ordered by
    snapshot: InventorySnapshot | None = None  # the inventory read ``resting`` was taken from
    resting: frozenset[str] = frozenset()  # moids in maintenance mode or standby, as ``snapshot`` has them

    def row(self, moid: str) -> HostProgress | None:
        return self._by_moid.get(moid)

    @functools.cached_property
    def _by_moid(self) -> Mapping[str, HostProgress]:
        return {r.host: r for r in self.rows}


def update_host_rows(
    previous: HostRows | None,
    agency: str,
    status: ObservedAgents | None,
    hosts: Iterable[ScopeHost],
    addresses: Mapping[str, IPv4Address],
    snapshot: InventorySnapshot | None,
    *,
    uninstall: bool = False,
    misplaced: Iterable[Misplaced] = (),
    conditions: HostConditions | None = None,
) -> HostRows:
    """``host_rows`` of these arguments, its rows made again only for the hosts whose inputs differ from
    ``previous``' (the others are reused) and sorted again only when the hosts or their labels changed.
    The controller calls it on every poll: an unchanged agency then costs a lookup per host, not a row."""
    moved = {m.host.value: m for m in misplaced if status is None or m.agency == status.agency}
    goal = GoalState.UNINSTALLED if uninstall else (status.goal_state if status else None)
    agents: dict[str, AgentRuntime] = {a.host.value: a for a in status.agents} if status else {}
    by_moid = {h.moid: h for h in hosts}
    if conditions is not None:
        resting = frozenset(ref.value for ref in (*conditions.maintenance, *conditions.standby))
    elif previous is not None and snapshot is not None and snapshot is previous.snapshot:
        resting = previous.resting  # the same inventory read: the same hosts at rest
    else:
        read = HostConditions.of(snapshot.hosts if snapshot is not None else ())
        resting = frozenset(ref.value for ref in (*read.maintenance, *read.standby))
    old_inputs = previous.inputs if previous is not None else {}
    inputs: dict[str, tuple[object, ...]] = {}
    labels: dict[str, str] = {}
    made: dict[str, HostProgress] = {}
    for moid in by_moid.keys() | agents.keys():
        agent = agents.get(moid)
        host = by_moid.get(moid)
        vm_name = None
        if agent is not None and agent.vm is not None and snapshot is not None:
            vm = snapshot.get(agent.vm)
            vm_name = vm.name if vm is not None else None
        away = moved.get(moid) if agent is not None and agent.vm is not None else None
        address = addresses.get(moid)
        key = (agency, agent, host, address, vm_name, goal, away, moid in resting, uninstall)
        inputs[moid] = key
        labels[moid] = (
            (host.path or host.name) if host else (agent.host_name if agent and agent.host_name else moid)
        )
        kept = previous.row(moid) if previous is not None and old_inputs.get(moid) == key else None
        made[moid] = kept or _row(agency, moid, agent, host, vm_name, goal, away, address, key[7], uninstall)
    if previous is not None and labels == previous.labels:
        order = [r.host for r in previous.rows]
    else:
        order = sorted(labels, key=lambda moid: (natural_key(labels[moid]), natural_key(moid)))
    return HostRows(tuple(made[moid] for moid in order), inputs, labels, snapshot, resting)


def _row(
    agency: str,
    moid: str,
    agent: AgentRuntime | None,
    host: ScopeHost | None,
    vm_name: str | None,
    goal: GoalState | None,
    away: Misplaced | None,
    address: IPv4Address | None,
    resting: bool,
    uninstall: bool,
) -> HostProgress:
    """The row of one host (``update_host_rows``)."""
    phase = phase_of(agent, goal)
    if away is not None and phase not in (Phase.REMOVING, Phase.REMOVED):
        phase = Phase.MISPLACED
    return HostProgress(
        agency=agency,
        host=moid,
        label=(host.path or host.name) if host else (agent.host_name if agent else moid),
        cluster=(host.cluster_name or "") if host else "",
        phase=phase,
        status=agent.status if agent else None,
        vm=agent.vm.value if agent and agent.vm else None,
        vm_name=vm_name or (agent.vm_name if agent and agent.vm else None),
        power=agent.power_state if agent else None,
        hook=agent.hook.state if agent and agent.hook else None,
        address=str(address) if address is not None and not uninstall else None,
        issues=agent.issues if agent else (),
        misplaced=away,
        maintenance=resting,
    )


# ------------------------------------------------------------------------------------------- status


def host_state(
    row: HostProgress, conditions: HostConditions, flapping: Mapping[tuple[str, str], str] | None = None
) -> AgentDisplayState | None:
    """The dashboard colour of one host row: ``core.heal.display_state`` (the rule the metrics' per-agent
    state follows too) of the row's host, issues, status, flapping and misplaced VM."""
    return display_state(
        any(m.value == row.host for m in (*conditions.maintenance, *conditions.standby)),
        row.issues,
        row.status,
        flapping=flapping is not None and (row.agency, row.host) in flapping,
        misplaced=row.misplaced is not None,
    )


def state_word(row: HostProgress, conditions: HostConditions | None = None) -> str:
    """The word the hosts table's ``state`` column shows: ``maintenance`` when the row says so
    (``HostProgress.shown_phase``) or, given ``conditions``, when ``host_state`` says so; else the phase."""
    if row.shown_phase == MAINTENANCE or (
        conditions is not None and host_state(row, conditions) is AgentDisplayState.MAINTENANCE
    ):
        return MAINTENANCE
    return row.phase.value


@dataclass(frozen=True)
class Problem:
    """One of agentvm's own findings about a host (EAM raises no issue for it): its kind and sentence."""

    kind: str
    message: str


FLAPPING = "Flapping"  # the kind of the problem of an agent the controller gave up on


@dataclass(frozen=True)
class HostStatus:
    """One host as ``status`` shows it (table, JSON document, the API and its dashboard): the row, its
    ``state`` (None: no agent yet and not in maintenance mode) and agentvm's own findings about it."""

    row: HostProgress
    state: AgentDisplayState | None
    problems: tuple[Problem, ...] = ()


def status_row(
    row: HostProgress,
    conditions: HostConditions | None = None,
    flapping: Mapping[tuple[str, str], str] | None = None,
) -> HostStatus:
    """``row`` with its state and problems: a misplaced agent VM (``VmOnWrongHost``, its sentence), then
    the controller giving up on a flapping agent (``flapping``: (agency name, host moid) -> why)."""
    problems = []
    if row.misplaced is not None:
        problems.append(Problem(Finding.VM_ON_WRONG_HOST.value, row.misplaced.sentence()))
    why = (flapping or {}).get((row.agency, row.host))
    if why is not None:
        problems.append(Problem(FLAPPING, why))
    state = host_state(row, conditions if conditions is not None else HostConditions(), flapping)
    return HostStatus(row, state, tuple(problems))


@dataclass(frozen=True)
class Summary:
    """How many of some rows are in which phase (the ``status`` title and document, the progress line)."""

    hosts: int
    ready: int
    done: int  # ready or removed
    issues: int  # with an issue or a misplaced agent VM
    hooks_pending: int
    addresses: int


DONE = (Phase.READY, Phase.REMOVED)


def summarize(rows: Iterable[HostProgress]) -> Summary:
    """Count ``rows`` by phase, hook and address."""
    listed = tuple(rows)
    return Summary(
        hosts=len(listed),
        ready=sum(1 for r in listed if r.phase is Phase.READY),
        done=sum(1 for r in listed if r.phase in DONE),
        issues=sum(1 for r in listed if r.phase in (Phase.ISSUE, Phase.MISPLACED)),
        hooks_pending=sum(1 for r in listed if r.hook is not None),
        addresses=sum(1 for r in listed if r.address),
    )
