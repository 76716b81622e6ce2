"""The heal policy: which observed issues the controller resolves now, which it waits out, which it reports.

Called by the controller (``agentvm run``) after every observation of the agencies: it passes the issues it
sees, the hosts' conditions, the current time and the previous ``HealState``; it gets back a ``HealPlan``
— the issues to resolve now, one ``HealDecision`` (with a human reason and fix) per issue, the next time
it should wake up for a retry, and the new state to keep. Pure: no clock (``now`` is an argument, seconds
on any monotonic scale), no randomness (jitter is derived from ``HealPolicy.seed``, the agent and the
attempt number), no I/O. The same inputs always give the same plan.

Issue kinds fall in four classes (docs/eam.md, "Issues"; docs/architecture.md, "Healing"):

- **active** — Resolve makes EAM act (power on, redeploy, remove an orphan): resolved automatically with
  jittered exponential backoff *per agent and kind* (EAM may raise the same problem again under a new key,
  so the key of the issue is no identity), capped, giving up after ``max_attempts`` and saying so;
- **passive** — Resolve only re-checks (bad OVF, no datastore, invalid config): a person must fix the
  cause; reported with the fix, never resolved in a loop (EAM drops the issue itself once it is fixed);
- **maintenance** — the host is in maintenance mode or standby: not a failure; resolving would take the
  host out of maintenance mode behind its administrator's back, so nothing is done;
- **unreachable** — ``ManagedHostNotReachable``: waited out, it clears when the host is back. Every other
  issue on a host in maintenance mode, standby or unreachable is held the same way and costs no attempt.

Besides EAM's issues, agentvm heals one problem EAM has no issue for: an agent VM that runs on another host
than its agent's (``Misplaced``, found by ``find_misplaced`` from vCenter's inventory: RelocateVM or vMotion
by hand). Its remedy is to move the VM back (``HealPlan.migrations``); it is an active kind
(``Finding.VM_ON_WRONG_HOST``) with the same backoff, give-up and flapping rules.

A key absent from an observation is cleared: if agentvm had resolved it, it is listed once in
``HealPlan.healed`` (the controller counts a successful resolve). Its attempts are **not** forgotten at once:
only after it has stayed away ``HealPolicy.settle`` seconds. A problem that comes back sooner continues its
backoff and its attempt count where they were, so an agent that is broken again each time it is healed is
not fought forever: after ``max_attempts`` resolves (or ``flap_limit`` resolves within ``flap_window``
seconds, whatever the settle periods in between) agentvm gives up with ``Verdict.FLAPPING`` (it came back
after a resolve) or ``Verdict.GAVE_UP`` (it never went away), says so once, and the agent's host shows
``flapping``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Self

from agentvm.core.retry import Backoff as Backoff  # the one backoff; heal, engine and netsync use it
from agentvm.core.retry import jitter_fraction as jitter_fraction
from agentvm.model.agency import (
    DETAIL_DOWNLOAD_URL,
    DETAIL_ERROR,
    DETAIL_MISSING_FILE,
    AgentRuntime,
    GoalState,
    Issue,
    IssueKind,
    MoRef,
    Status,
)
from agentvm.model.inventory import ConnectionState, Host, HostPowerState

# ------------------------------------------------------------------------------------------ kinds


class HealClass(StrEnum):
    """How the controller treats an issue kind."""

    ACTIVE = "active"  # resolve with backoff
    PASSIVE = "passive"  # report with its fix; a person acts
    MAINTENANCE = "maintenance"  # host in maintenance mode / standby: not a failure
    UNREACHABLE = "unreachable"  # host not reachable: wait it out


HEAL_CLASSES: Mapping[IssueKind, HealClass] = {
    IssueKind.CANNOT_ACCESS_AGENT_OVF: HealClass.ACTIVE,
    IssueKind.OVF_INVALID_FORMAT: HealClass.PASSIVE,
    IssueKind.OVF_INVALID_PROPERTY: HealClass.PASSIVE,
    IssueKind.INCOMPATIBLE_HOST_VERSION: HealClass.ACTIVE,
    IssueKind.INSUFFICIENT_RESOURCES: HealClass.ACTIVE,
    IssueKind.INSUFFICIENT_SPACE: HealClass.ACTIVE,
    IssueKind.NO_AGENT_VM_DATASTORE: HealClass.PASSIVE,
    IssueKind.NO_AGENT_VM_NETWORK: HealClass.PASSIVE,
    IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE: HealClass.PASSIVE,
    IssueKind.NO_CUSTOM_AGENT_VM_NETWORK: HealClass.PASSIVE,
    IssueKind.INVALID_CONFIG: HealClass.PASSIVE,
    IssueKind.VM_POWERED_OFF: HealClass.ACTIVE,
    IssueKind.VM_SUSPENDED: HealClass.ACTIVE,
    IssueKind.VM_POWERED_ON: HealClass.ACTIVE,
    IssueKind.VM_NOT_DEPLOYED: HealClass.ACTIVE,
    IssueKind.VM_CORRUPTED: HealClass.ACTIVE,
    IssueKind.VM_ORPHANED: HealClass.ACTIVE,
    IssueKind.MANAGED_HOST_NOT_REACHABLE: HealClass.UNREACHABLE,
    # EAM's remedy for these two is "take the host out of maintenance mode": never ours to decide
    IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE: HealClass.MAINTENANCE,
    IssueKind.HOST_IN_MAINTENANCE_MODE: HealClass.MAINTENANCE,
    IssueKind.HOST_IN_STANDBY_MODE: HealClass.MAINTENANCE,
}


class Finding(StrEnum):
    """Problems agentvm finds itself, for which EAM raises no issue (named like EAM's issue types)."""

    VM_ON_WRONG_HOST = "VmOnWrongHost"  # the agent VM runs on another host than its agent's


HealKind = IssueKind | Finding


def heal_class(kind: HealKind) -> HealClass:
    """The class of an issue kind; kinds agentvm does not know are passive (never resolved in a loop)."""
    if isinstance(kind, Finding):
        return HealClass.ACTIVE  # agentvm moves the VM back itself
    return HEAL_CLASSES.get(kind, HealClass.PASSIVE)


_FIXES: Mapping[IssueKind, str] = {
    IssueKind.CANNOT_ACCESS_AGENT_OVF: "make the agent's OVF URL reachable from vCenter; agentvm redeploys",
    IssueKind.OVF_INVALID_FORMAT: "fix the agent's OVF package (or its URL in the spec) and apply again",
    IssueKind.OVF_INVALID_PROPERTY: "fix the OVF properties in the spec and apply again",
    IssueKind.INCOMPATIBLE_HOST_VERSION: "add an agent config for this host's ESXi version to the spec, "
    "or upgrade the host",
    IssueKind.INSUFFICIENT_RESOURCES: "free CPU or memory on the host (or lower the agent VM's "
    "reservation); agentvm redeploys",
    IssueKind.INSUFFICIENT_SPACE: "free space on the agent VM datastore; agentvm redeploys",
    IssueKind.NO_AGENT_VM_DATASTORE: "set the host's agent VM datastore, or list datastores in the spec, "
    "and apply again",
    IssueKind.NO_AGENT_VM_NETWORK: "set the host's agent VM network, or list networks in the spec, "
    "and apply again",
    IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE: "make one of the spec's agent VM datastores available on this "
    "host, or change the list and apply again",
    IssueKind.NO_CUSTOM_AGENT_VM_NETWORK: "make one of the spec's agent VM networks available on this "
    "host, or change the list and apply again",
    IssueKind.INVALID_CONFIG: "fix the agent VM's configuration (spec or host settings) and apply again",
    IssueKind.VM_POWERED_OFF: "agentvm powers the agent VM on",
    IssueKind.VM_SUSPENDED: "agentvm powers the agent VM on",
    IssueKind.VM_POWERED_ON: "agentvm powers the agent VM off (the agency is disabled)",
    IssueKind.VM_NOT_DEPLOYED: "agentvm deploys the agent VM again",
    IssueKind.VM_CORRUPTED: "agentvm deletes the agent VM and deploys it again",
    IssueKind.VM_ORPHANED: "agentvm removes the orphaned agent VM",
    IssueKind.MANAGED_HOST_NOT_REACHABLE: "reconnect or power on the host; the issue clears by itself",
    IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE: "none needed: the agent is deployed when the host "
    "leaves maintenance mode",
    IssueKind.HOST_IN_MAINTENANCE_MODE: "none needed: the agent is handled when the host leaves "
    "maintenance mode",
    IssueKind.HOST_IN_STANDBY_MODE: "none needed: the agent is handled when the host leaves standby",
}


def fix_for(issue: Issue) -> str:
    """What makes ``issue`` go away, in a person's words, with the issue's own details when it has any."""
    text = _FIXES.get(issue.kind, "see the issue in the vSphere client; EAM clears it once fixed")
    details = []
    for name, label in ((DETAIL_DOWNLOAD_URL, "URL"), (DETAIL_ERROR, "error"), (DETAIL_MISSING_FILE, "file")):
        value = issue.detail.get(name)
        if value:
            details.append(f"{label}: {value if isinstance(value, str) else '; '.join(value)}")
    return f"{text} ({', '.join(details)})" if details else text


# ------------------------------------------------------------------------------------------ policy


@dataclass(frozen=True)
class HealPolicy:
    """Backoff per issue kind (``default`` for the others) and the seed that makes jitter deterministic.

    The controller picks a seed once at start (so that many controllers do not retry in step); tests fix it.
    ``settle``: seconds a problem must stay away before its attempts are forgotten (a shorter recovery
    keeps the count and the backoff); ``flap_limit`` / ``flap_window``: at most that many resolves of one
    key within that many seconds, settle periods or not, before agentvm gives up on it as flapping.
    """

    default: Backoff = field(default_factory=Backoff)
    per_kind: Mapping[HealKind, Backoff] = field(
        default_factory=lambda: {
            # redeploying cannot fix a host version no agent config matches: try twice, then say so
            IssueKind.INCOMPATIBLE_HOST_VERSION: Backoff(base=60.0, cap=600.0, max_attempts=2),
            IssueKind.INSUFFICIENT_RESOURCES: Backoff(base=30.0, cap=900.0, max_attempts=5),
            IssueKind.INSUFFICIENT_SPACE: Backoff(base=30.0, cap=900.0, max_attempts=5),
            IssueKind.CANNOT_ACCESS_AGENT_OVF: Backoff(base=15.0, cap=600.0, max_attempts=6),
        }
    )
    seed: int = 0
    settle: float = 120.0
    flap_limit: int = 5
    flap_window: float = 600.0

    def __post_init__(self) -> None:
        if self.settle < 0:
            raise ValueError(f"heal settle period must be 0 or more seconds, got {self.settle}")
        if self.flap_limit < 1 or self.flap_window <= 0:
            raise ValueError(
                f"heal flapping bound needs flap_limit >= 1 and flap_window > 0, got {self.flap_limit} "
                f"resolves in {self.flap_window} s"
            )

    def backoff(self, kind: HealKind) -> Backoff:
        return self.per_kind.get(kind, self.default)

    def jitter(self, key: HealKey, attempt: int) -> float:
        """A fraction in [0, 1) fixed by the seed, the key and the attempt: same inputs, same jitter."""
        return jitter_fraction(self.seed, f"{key.agency}|{key.agent}|{key.kind.value}", attempt)

    def delay(self, key: HealKey, attempt: int) -> float:
        """Seconds to wait after resolve number ``attempt`` of ``key``."""
        return self.backoff(key.kind).delay(attempt, self.jitter(key, attempt))


# ------------------------------------------------------------------------------------------ state


@dataclass(frozen=True)
class HealKey:
    """What one backoff is kept for: an agent (or, for agency issues, the agency) and an issue kind."""

    agency: str
    agent: str | None
    kind: HealKind

    @classmethod
    def of(cls, issue: Issue) -> HealKey:
        return cls(issue.agency, issue.agent, issue.kind)

    @classmethod
    def misplaced(cls, found: Misplaced) -> HealKey:
        return cls(found.agency, found.agent, Finding.VM_ON_WRONG_HOST)

    def sort_key(self) -> tuple[str, str, str]:
        """Agency issues (no agent) first, then by agent and kind: plans list keys in this order."""
        return (self.agency, self.agent or "", self.kind.value)

    def __str__(self) -> str:
        holder = f"agent {self.agent}" if self.agent else f"agency {self.agency}"
        return f"{self.kind.value} on {holder}"


@dataclass(frozen=True)
class Attempts:
    """Resolves done for one key in its current episode: how many, when the last one was, when the next is
    allowed; ``cleared_at``: when it was first seen gone (None while it is there); ``recurred``: times it came
    back after a resolve; ``resolved``: when it was resolved within the flap window (kept across episodes)."""

    count: int
    last: float
    next_at: float
    gave_up: bool = False
    cleared_at: float | None = None
    recurred: int = 0
    resolved: tuple[float, ...] = ()
    flapping: bool = False  # gave up because it kept coming back


@dataclass(frozen=True)
class HealState:
    """What the heal policy remembers between observations. Empty at start (a restart retries afresh)."""

    attempts: Mapping[HealKey, Attempts] = field(default_factory=dict)

    @property
    def flapping(self) -> frozenset[HealKey]:
        """The keys agentvm gave up on because they kept coming back (until they settle or are resolved)."""
        return frozenset(k for k, a in self.attempts.items() if a.gave_up and a.flapping)

    def with_forgotten(self, keys: Iterable[HealKey] | None = None) -> Self:
        """A copy without ``keys`` (all when None): they start afresh, e.g. after a person's resolve."""
        if keys is None:
            return dataclasses.replace(self, attempts={})
        drop = set(keys)
        return dataclasses.replace(self, attempts={k: v for k, v in self.attempts.items() if k not in drop})


# ------------------------------------------------------------------------------------------ hosts


@dataclass(frozen=True)
class HostConditions:
    """Hosts on which an agent is expected to be down (maintenance, standby) or cannot be reached."""

    maintenance: frozenset[MoRef] = frozenset()
    standby: frozenset[MoRef] = frozenset()
    unreachable: frozenset[MoRef] = frozenset()
    known: frozenset[MoRef] = frozenset()  # the hosts these conditions speak for (``of``: every host given)

    @classmethod
    def of(cls, hosts: Iterable[Host]) -> HostConditions:
        """From the observed inventory's hosts."""
        maintenance, standby, unreachable, known = set(), set(), set(), set()
        for host in hosts:
            known.add(host.moref)
            if host.in_maintenance_mode:
                maintenance.add(host.moref)
            if host.power_state is HostPowerState.STANDBY:
                standby.add(host.moref)
            elif (
                host.connection_state is not ConnectionState.CONNECTED
                or host.power_state is not HostPowerState.POWERED_ON
            ):
                unreachable.add(host.moref)
        return cls(frozenset(maintenance), frozenset(standby), frozenset(unreachable), frozenset(known))

    def over(self, hosts: Iterable[Host]) -> HostConditions:
        """These conditions for the hosts they know, ``hosts``' own (an older read: the last full pass) for
        the others: a watch that saw a host leave maintenance mode outweighs the full pass that read it in."""
        rest = HostConditions.of(h for h in hosts if h.moref not in self.known)
        return HostConditions(
            self.maintenance | rest.maintenance,
            self.standby | rest.standby,
            self.unreachable | rest.unreachable,
            self.known | rest.known,
        )


# ------------------------------------------------------------------------------------------ decisions


class Verdict(StrEnum):
    RESOLVE = "resolve"  # resolve now (for a misplaced VM: move it back)
    BACKOFF = "backoff"  # resolved before and still there (or back): wait until ``next_at``
    GAVE_UP = "gave-up"  # ``max_attempts`` resolves did not clear it: a person must look
    FLAPPING = "flapping"  # it keeps coming back after agentvm resolves it: given up, a person must look
    REPORT = "report"  # passive: a person must fix the cause
    WAIT = "wait"  # the host is unreachable: wait until it is back
    EXPECTED = "expected"  # maintenance mode / standby: not a failure


FAILURES = frozenset({Verdict.GAVE_UP, Verdict.FLAPPING, Verdict.REPORT})


@dataclass(frozen=True)
class Misplaced:
    """An agent VM that runs on another host (``runs_on``) than its agent's (``host``): moved by hand.

    EAM raises no issue for it and does not move it back; the agent's host has no agent meanwhile.
    """

    agency: str  # the agency's id
    agency_name: str
    agent: str
    host: MoRef
    host_name: str
    vm: MoRef
    vm_name: str
    runs_on: MoRef
    runs_on_name: str | None = None
    resource_pool: MoRef | None = None  # the agent's pool as EAM reports it (where the VM belongs)

    def sentence(self) -> str:
        """What is wrong and what fixes it, in one sentence (status, events)."""
        where = self.runs_on_name or self.runs_on.value
        return (
            f"the agent VM {self.vm_name} of {self.host_name} runs on {where} (moved by hand), so "
            f"{self.host_name} has no agent; run agentvm resolve --all to move it back"
        )


@dataclass(frozen=True)
class HealDecision:
    """What to do about one key now: its issues (usually one) or misplaced VM, the verdict, why, the fix."""

    key: HealKey
    issues: tuple[Issue, ...]
    verdict: Verdict
    reason: str
    fix: str
    attempt: int = 0  # resolves done so far, counting this one when the verdict is RESOLVE
    next_at: float | None = None  # RESOLVE, BACKOFF: when the next resolve (or giving up) is due
    announce: bool = False  # first decision in this verdict for the key: log it (GAVE_UP, FLAPPING, REPORT)
    misplaced: Misplaced | None = None

    @property
    def failure(self) -> bool:
        """True when a person should look (passive issue, or agentvm gave up)."""
        return self.verdict in FAILURES

    @property
    def host(self) -> MoRef | None:
        if self.misplaced is not None:
            return self.misplaced.host
        return next((i.host for i in self.issues if i.host is not None), None)

    @property
    def host_name(self) -> str | None:
        if self.misplaced is not None:
            return self.misplaced.host_name
        return next((i.host_name for i in self.issues if i.host_name), None)

    @property
    def agency_name(self) -> str:
        if self.misplaced is not None:
            return self.misplaced.agency_name
        return self.issues[-1].agency_name if self.issues else self.key.agency


@dataclass(frozen=True)
class HealPlan:
    """The outcome of one ``plan_heal``: what to do now, when to look again, and the state to keep."""

    decisions: tuple[HealDecision, ...]
    state: HealState
    wake_at: float | None  # the earliest ``next_at`` (RESOLVE, BACKOFF); None when no retry can follow
    healed: tuple[HealKey, ...] = ()  # keys agentvm had resolved and that are now gone

    @property
    def resolves(self) -> tuple[Issue, ...]:
        """The issues to pass to ``Backend.resolve`` now."""
        return tuple(i for d in self.decisions if d.verdict is Verdict.RESOLVE for i in d.issues)

    @property
    def migrations(self) -> tuple[Misplaced, ...]:
        """The misplaced agent VMs to move back to their hosts now."""
        return tuple(
            d.misplaced for d in self.decisions if d.verdict is Verdict.RESOLVE and d.misplaced is not None
        )

    def by_verdict(self, verdict: Verdict) -> tuple[HealDecision, ...]:
        return tuple(d for d in self.decisions if d.verdict is verdict)


class ObservedAgencyStatus(Protocol):
    """What ``plan_heal_agencies`` reads of an observation; ``backends.base.AgencyStatus`` has it."""

    @property
    def agency(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def issues(self) -> tuple[Issue, ...]: ...

    @property
    def agents(self) -> tuple[AgentRuntime, ...]: ...


def observed_issues(observed: Iterable[ObservedAgencyStatus]) -> tuple[Issue, ...]:
    """Every issue of these agencies and their agents, once each (EAM lists agent issues on both)."""
    seen: dict[tuple[str, int], Issue] = {}
    for agency in observed:
        for issue in (*agency.issues, *(i for a in agency.agents for i in a.issues)):
            seen.setdefault((issue.agency, issue.key), issue)
    return tuple(seen.values())


def find_misplaced(
    observed: Iterable[ObservedAgencyStatus],
    vm_hosts: Mapping[MoRef, MoRef],
    host_names: Mapping[MoRef, str] | None = None,
) -> tuple[Misplaced, ...]:
    """The agents whose VM runs on another host than the agent's, by ``vm_hosts`` (VM → ``runtime.host``
    as vCenter's inventory says now). VMs absent from ``vm_hosts`` (not read yet) and agents being
    uninstalled are skipped. Called by the controller after every observation and by ``agentvm status``."""
    names = host_names or {}
    found = []
    for agency in observed:
        for agent in agency.agents:
            if agent.vm is None or agent.goal_state is GoalState.UNINSTALLED:
                continue
            runs_on = vm_hosts.get(agent.vm)
            if runs_on is None or runs_on == agent.host:
                continue
            found.append(
                Misplaced(
                    agency.agency,
                    agency.name,
                    agent.agent,
                    agent.host,
                    names.get(agent.host) or agent.host_name or agent.host.value,
                    agent.vm,
                    agent.vm_name or agent.vm.value,
                    runs_on,
                    names.get(runs_on),
                    agent.resource_pool,
                )
            )
    return tuple(found)


def plan_heal_agencies(
    observed: Sequence[ObservedAgencyStatus],
    state: HealState,
    now: float,
    policy: HealPolicy,
    hosts: HostConditions = HostConditions(),
    misplaced: Iterable[Misplaced] = (),
) -> HealPlan:
    """``plan_heal`` over one observation of these agencies (keys of other agencies are kept as they are)."""
    return plan_heal(
        observed_issues(observed),
        state,
        now,
        policy,
        hosts,
        scope=frozenset(a.agency for a in observed),
        misplaced=misplaced,
    )


def plan_heal(
    issues: Iterable[Issue],
    state: HealState,
    now: float,
    policy: HealPolicy,
    hosts: HostConditions = HostConditions(),
    *,
    scope: Collection[str] | None = None,
    misplaced: Iterable[Misplaced] = (),
) -> HealPlan:
    """Decide what to do about ``issues`` and ``misplaced``, every problem observed now in the agencies of
    ``scope``.

    ``scope`` is the agency ids that were observed (None: all; every key absent from ``issues`` is then
    cleared). ``now`` is in the same seconds as earlier calls. Raises nothing; never mutates its inputs.
    """
    grouped: dict[HealKey, list[Issue]] = {}
    for issue in issues:
        grouped.setdefault(HealKey.of(issue), []).append(issue)
    moved = {HealKey.misplaced(m): m for m in misplaced}
    # a host EAM calls unreachable (or in maintenance) is so, whatever the inventory said a moment ago
    on_hosts = [(i.host, heal_class(i.kind)) for found in grouped.values() for i in found if i.host]
    unreachable_hosts = hosts.unreachable | {h for h, c in on_hosts if c is HealClass.UNREACHABLE}
    quiet_hosts = hosts.maintenance | hosts.standby | {h for h, c in on_hosts if c is HealClass.MAINTENANCE}

    attempts: dict[HealKey, Attempts] = {}
    healed: list[HealKey] = []
    for key, previous in state.attempts.items():
        if key in grouped or key in moved:
            continue
        if scope is not None and key.agency not in scope:
            attempts[key] = previous  # not observed this time: keep
            continue
        if previous.cleared_at is None and previous.count and not previous.gave_up:
            healed.append(key)
        kept = _absent(previous, now, policy)
        if kept is not None:
            attempts[key] = kept

    decisions = []
    for key in sorted({*grouped, *moved}, key=HealKey.sort_key):
        found = tuple(sorted(grouped.get(key, ()), key=lambda i: i.key))
        decision, kept = _decide(
            key,
            found,
            moved.get(key),
            state.attempts.get(key),
            now,
            policy,
            quiet_hosts,
            unreachable_hosts,
        )
        decisions.append(decision)
        if kept is not None:
            attempts[key] = kept

    # wake for the next retry of what was resolved now (if it stays) or is backing off
    waits = [d.next_at for d in decisions if d.next_at is not None]
    return HealPlan(
        tuple(decisions),
        HealState(attempts),
        min(waits, default=None),
        tuple(sorted(healed, key=HealKey.sort_key)),
    )


def _in_window(times: tuple[float, ...], now: float, policy: HealPolicy) -> tuple[float, ...]:
    """The resolve times still inside the flap window ending ``now`` (closed: ``now - window`` counts)."""
    return tuple(t for t in times if t >= now - policy.flap_window)


def _absent(previous: Attempts, now: float, policy: HealPolicy) -> Attempts | None:
    """What to remember of a key not observed now (None: nothing). Attempts are forgotten only once it has
    stayed away ``settle`` seconds; resolves inside the flap window are remembered even then."""
    if previous.count == 0 and not previous.resolved and not previous.gave_up:
        return None  # only seen (passive, or within its grace): nothing to carry
    cleared_at = previous.cleared_at if previous.cleared_at is not None else now
    if now - cleared_at < policy.settle:
        return dataclasses.replace(previous, cleared_at=cleared_at)
    recent = _in_window(previous.resolved, now, policy)
    if not recent:
        return None
    return Attempts(0, previous.last, now, cleared_at=cleared_at, resolved=recent)


def _carry(previous: Attempts | None, now: float, policy: HealPolicy, grace: float) -> Attempts | None:
    """The attempts a key observed now continues from: its episode goes on when it came back sooner than
    ``settle`` (counted as a recurrence), starts afresh (count 0) after, and None is a first sighting."""
    if previous is None:
        return None
    recent = _in_window(previous.resolved, now, policy)
    if previous.cleared_at is not None and now - previous.cleared_at >= policy.settle:
        if not recent:
            return None
        return Attempts(0, previous.last, now + grace, resolved=recent)
    # it came back after agentvm's resolve had cleared it (a new EAM key alone proves nothing: EAM may
    # raise a persisting issue again under a new key)
    came_back = previous.count > 0 and previous.cleared_at is not None
    return dataclasses.replace(
        previous,
        cleared_at=None,
        resolved=recent,
        recurred=previous.recurred + (1 if came_back else 0),
    )


def _decide(
    key: HealKey,
    issues: tuple[Issue, ...],
    misplaced: Misplaced | None,
    previous: Attempts | None,
    now: float,
    policy: HealPolicy,
    quiet: Collection[MoRef],
    unreachable: Collection[MoRef],
) -> tuple[HealDecision, Attempts | None]:
    """One key's decision and the attempts to keep for it (None: nothing to remember)."""
    kind = key.kind
    cls = heal_class(kind)
    if misplaced is not None:
        fix = f"agentvm moves the agent VM back to {misplaced.host_name} (or: agentvm resolve --all)"
        host: MoRef | None = misplaced.host
        named = misplaced.host_name
    else:
        fix = fix_for(issues[-1])
        host = next((i.host for i in issues if i.host is not None), None)
        named = _host_name(issues)
    where = f" on {named}" if named else ""
    the_host = f"host {named}" if named else "the host"

    def decision(
        verdict: Verdict, reason: str, attempt: int = 0, next_at: float | None = None
    ) -> HealDecision:
        return HealDecision(key, issues, verdict, reason, fix, attempt, next_at, misplaced=misplaced)

    if cls is HealClass.MAINTENANCE:
        return decision(
            Verdict.EXPECTED, f"{the_host} is in maintenance mode or standby: not a failure"
        ), None
    if cls is HealClass.UNREACHABLE:
        return decision(Verdict.WAIT, f"{the_host} is not reachable: waiting until it is back"), None
    if cls is HealClass.PASSIVE:
        # announced once: the first time agentvm sees the key (it keeps no attempts, only the sighting)
        seen = Attempts(0, now, now) if previous is None else dataclasses.replace(previous, cleared_at=None)
        reason = f"{kind.value} needs a person: agentvm does not resolve it in a loop"
        return dataclasses.replace(decision(Verdict.REPORT, reason), announce=previous is None), seen

    # active kinds: held (and their backoff forgotten) while the host cannot take the action
    if host is not None and host in quiet:
        reason = f"{the_host} is in maintenance mode or standby: {kind.value} is expected, not resolved"
        return decision(Verdict.EXPECTED, reason), None
    if host is not None and host in unreachable:
        return decision(
            Verdict.WAIT, f"{the_host} is not reachable: {kind.value} is resolved once it is back"
        ), None

    backoff = policy.backoff(kind)
    current = _carry(previous, now, policy, backoff.grace)
    if current is None:
        if backoff.grace > 0:
            # first sighting: give the issue its grace (an operator may be mid-change) before resolving
            next_at = now + backoff.grace
            reason = f"{kind.value}{where}: first resolve in {backoff.grace:.1f} s unless it clears"
            return decision(Verdict.BACKOFF, reason, 0, next_at), Attempts(0, now, next_at)
        current = Attempts(0, now, now)
    if current.gave_up:
        return _gave_up(key, issues, misplaced, current, fix, policy, announce=False), current
    if now < current.next_at:
        if current.count == 0:
            reason = f"{kind.value}{where}: first resolve in {current.next_at - now:.1f} s unless it clears"
        else:
            again = "is back" if current.recurred else "is still there"
            reason = (
                f"{kind.value}{where} {again} after {current.count} resolve(s): next attempt in "
                f"{current.next_at - now:.1f} s"
            )
        return decision(Verdict.BACKOFF, reason, current.count, current.next_at), current
    count = current.count + 1
    if count > backoff.max_attempts or len(current.resolved) >= policy.flap_limit:
        # flapping: it came back after a resolve, in this episode or (resolves of earlier ones still in
        # the window) across settle periods; else it simply never went away
        flapping = current.recurred > 0 or len(current.resolved) > current.count
        gave_up = dataclasses.replace(current, gave_up=True, flapping=flapping)
        return _gave_up(key, issues, misplaced, gave_up, fix, policy, announce=True), gave_up
    next_at = now + policy.delay(key, count)
    action = "moving the agent VM back" if misplaced is not None else "resolving"
    reason = f"{action} ({kind.value}{where}): attempt {count} of {backoff.max_attempts}"
    kept = dataclasses.replace(
        current,
        count=count,
        last=now,
        next_at=next_at,
        resolved=(*current.resolved, now),
    )
    return decision(Verdict.RESOLVE, reason, count, next_at), kept


def _gave_up(
    key: HealKey,
    issues: tuple[Issue, ...],
    misplaced: Misplaced | None,
    attempts: Attempts,
    fix: str,
    policy: HealPolicy,
    *,
    announce: bool,
) -> HealDecision:
    where = (misplaced.host_name if misplaced else _host_name(issues)) or key.agent or key.agency
    retry = f"agentvm tries again once it has stayed away {policy.settle:.0f} s or is resolved by hand"
    if attempts.flapping:
        reason = (
            f"gave up on {key.kind.value} on {where}: it came back {attempts.recurred} time(s) after agentvm "
            f"resolved it ({len(attempts.resolved)} resolve(s) in {policy.flap_window:.0f} s), so something "
            f"keeps undoing the fix: a person must look ({retry})"
        )
        verdict = Verdict.FLAPPING
    else:
        reason = (
            f"gave up on {key.kind.value} on {where} after {attempts.count} resolve(s) did not clear it: a "
            f"person must look ({retry})"
        )
        verdict = Verdict.GAVE_UP
    return HealDecision(
        key, issues, verdict, reason, fix, attempts.count, announce=announce, misplaced=misplaced
    )


def _host_name(issues: Sequence[Issue]) -> str:
    for issue in issues:
        if issue.host is not None:
            return f"{issue.host.value} ({issue.host_name})" if issue.host_name else issue.host.value
    return ""


# ------------------------------------------------------------------------------------------ summaries


class AgentDisplayState(StrEnum):
    """How the dashboard and ``agentvm_agents{state}`` show an agent: EAM's status, or one of agentvm's
    own findings (maintenance, flapping, misplaced)."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    MAINTENANCE = "maintenance"
    FLAPPING = "flapping"  # agentvm gave up on it: it kept coming back after each heal
    MISPLACED = "misplaced"  # its VM runs on another host


def agent_state(
    agent: AgentRuntime,
    hosts: HostConditions = HostConditions(),
    *,
    flapping: Collection[str] = (),
    misplaced: Collection[str] = (),
) -> AgentDisplayState:
    """``maintenance`` when the agent's host is in maintenance mode or standby (or an issue says so) —
    not a failure, whatever EAM's status — else ``flapping`` / ``misplaced`` when the agent's id is in
    those, else the agent's own status (green / yellow / red)."""
    shown = display_state(
        agent.host in hosts.maintenance or agent.host in hosts.standby,
        agent.issues,
        agent.status,
        flapping=agent.agent in flapping,
        misplaced=agent.agent in misplaced,
    )
    assert shown is not None  # an agent always has a status
    return shown


def display_state(
    host_away: bool,
    issues: Iterable[Issue],
    status: Status | None,
    *,
    flapping: bool = False,
    misplaced: bool = False,
) -> AgentDisplayState | None:
    """The one rule for how an agent (or a host row) is shown, for the metrics, the status document, the
    dashboard and the CLI: ``maintenance`` when the host is in maintenance mode or standby or an issue
    says so (not a failure, whatever EAM's status), else ``flapping``, else ``misplaced``, else the
    agent's own status; None when there is no agent (no status) and nothing else applies. ``host_away``:
    the agent's host is in maintenance mode or standby (``HostConditions``)."""
    if host_away:
        return AgentDisplayState.MAINTENANCE
    if any(heal_class(i.kind) is HealClass.MAINTENANCE for i in issues):
        return AgentDisplayState.MAINTENANCE
    if flapping:
        return AgentDisplayState.FLAPPING
    if misplaced:
        return AgentDisplayState.MISPLACED
    return AgentDisplayState(status.value) if status is not None else None


def count_states(
    agents: Iterable[AgentRuntime],
    hosts: HostConditions = HostConditions(),
    *,
    flapping: Collection[str] = (),
    misplaced: Collection[str] = (),
) -> dict[str, int]:
    """Agents per ``AgentDisplayState`` value, every state present (0 when none): ``agentvm_agents``'
    input."""
    counts = {state.value: 0 for state in AgentDisplayState}
    for agent in agents:
        counts[agent_state(agent, hosts, flapping=flapping, misplaced=misplaced).value] += 1
    return counts


def count_kinds(issues: Iterable[Issue]) -> dict[str, int]:
    """Issues per kind (``IssueKind`` value), only the kinds present: ``agentvm_issues``' input."""
    counts: dict[str, int] = {}
    for issue in issues:
        counts[issue.kind.value] = counts.get(issue.kind.value, 0) + 1
    return counts
