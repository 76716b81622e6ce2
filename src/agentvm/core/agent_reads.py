"""Which agents' runtimes to read now: observation that costs per change, not per agent. Pure.

The backend (``backends.base.AgencyBackend``) keeps, per agency, the agent runtimes it read last
(``AgencyReads``) and asks this module, at every observe, which agents to read again (``plan_reads``); it
carries the answer out (one AgentQueryRuntime each) and records what it read (``after_reads``). Callers that
watch vCenter (the controller's loop, apply's wait) hand the backend what the VM watch saw (``Changes``)
and their clock's ``now``; nothing here reads a clock.

Watched, an agency's look costs one AgencyQueryRuntime (its issue list) plus one read per agent that:

- (a) the VM watch says changed: its VM or its hook's VM was powered on/off, moved or is gone;
- (b) sits on a host where a VM carrying an owner marker (``config.managedBy``) appeared or was
  reconfigured: EAM (or the engine) deployed a VM there, whose hook may be pending;
- (c) is named by an issue of the agency that was not there at its last read, or whose issue went away;
- (d/e) was last seen not settled — a pending hook, or neither green nor holding an issue (EAM has not
  caught up with the change yet; with ``ReadPolicy.follow_undeployed`` off, not an agent that merely waits
  for its first VM, nor one powered off without a pending hook on a host in maintenance mode or standby
  (``Look.parked_hosts``), which waits for its host and is read when the host leaves those) — read again
  with a per-agent backoff (every ``first_retry`` for ``follow`` reads, then doubling to ``max_retry``
  while it reads the same; back to the start when it moved or was acted on), and all of them at once when
  the agency's status changed, so that
  the cost is bounded by the agents in transition;
- was marked stale by an action on it (a hook answered; unwatched callers: an issue resolved), or is new
  (not read yet); but none that the caller is acting on right now (``Look.busy``: apply's hook answers in
  flight; the answer holds it back or marks it stale when done, and what the watch saw of a busy agent
  meanwhile has it read at the look after: ``ReadPlan.deferred``);
- is next in the spread sweep: ``sweep_per_minute`` agents a minute at most, oldest read first, and no
  faster than every agent once per ``sweep_period`` — the safety net that heals a lost watch update.

An agent the caller holds (``held_back``: its hook due and queued for agentvm to answer) is
not read on its backoff nor when the agency's status changes: agentvm itself is what changes it next, and
the watch shows the result (EAM powers the VM on: (a)). Still held at the next look, it is read after
``max_retry`` at most (a fallback), and at once for any reason above but the backoff.

The agent list (QueryAgent) is read only when the caller re-plans (``relist``), after ``forgotten``, at the
first look, or when a marked VM appeared on a host with no known agent (a new agent). ``forgotten`` (a full
sweep) reads every agent at the next look.

Unwatched (a caller without a watch: ``agentvm status``), every look lists the agents and reads every one,
unless the agency is green with no issue and every agent was read green within ``green_max_age`` s with
the same agent list.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agentvm.model.agency import AgentRuntime, Issue, MoRef, PowerState, Status


@dataclass(frozen=True)
class ReadPolicy:
    """How often agents are read again. Seconds; ``sweep_per_minute`` agents per minute."""

    first_retry: float = 0.5  # an agent seen unsettled is read again this soon...
    follow: int = 3  # ...this many more times while it reads the same, then doubling
    max_retry: float = 8.0
    sweep_per_minute: float = 60.0  # the spread sweep's rate at most (idle cost, whatever the agents)
    sweep_period: float = 60.0  # ...and no agent re-read by the sweep more often than this
    green_max_age: float = 5.0  # unwatched: a green agency's agents are reused this long
    # False: a watched look does not follow an agent that has no VM and no hook yet (EAM is still to deploy
    # it) with the backoff: the watch names its host when a marked VM appears there, and from that read on it
    # is followed as any other; the sweep reads it meanwhile, oldest first (apply's wait, during a deploy)
    follow_undeployed: bool = True


@dataclass(frozen=True)
class Changes:
    """What the VM watch saw since the caller's last look (``controller.watch.InventoryWatch``)."""

    vms: frozenset[MoRef] = frozenset()  # VMs whose power or host changed, or that appeared or disappeared
    marked_hosts: frozenset[MoRef] = frozenset()  # hosts where a VM with config.managedBy appeared/changed

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.vms | other.vms, self.marked_hosts | other.marked_hosts)

    def __bool__(self) -> bool:
        return bool(self.vms or self.marked_hosts)


@dataclass(frozen=True)
class Look:
    """One caller's look through the backend: what changed, its ``now``, its policy, whether it re-plans."""

    now: float
    changes: Changes = Changes()
    policy: ReadPolicy = ReadPolicy()
    relist: bool = False  # a full pass re-plans: read the agent list (QueryAgent) again
    watched: bool = True  # False: a caller without a watch (every look lists and reads, see the module)
    # agents the caller is acting on right now (apply's hook answers in flight): a watched look does not
    # read them, not even for the sweep; the action marks them stale when it is done, and they are read then
    busy: frozenset[str] = frozenset()
    # hosts in maintenance mode or standby (the watch's): an agent there waits for its host, not for EAM, and
    # is not followed with the backoff; the watch names its VM when EAM powers it on again, the agency's
    # issues name it if EAM raises one, and the sweep reads it meanwhile
    parked_hosts: frozenset[MoRef] = frozenset()


@dataclass(frozen=True)
class AgentSeen:
    """One agent as last read, and when to read it again."""

    runtime: AgentRuntime
    read_at: float
    issues: frozenset[int]  # keys of the agency's issues naming this agent when it was read
    retry_at: float | None = None  # not settled: read again at this time
    delay: float = 0.0  # the backoff's current delay (0: settled)
    same: int = 0  # reads in a row that found it unchanged and not settled
    held: bool = False  # held back by the caller: ``retry_at`` is only a fallback, a status change is not

    @property
    def vms(self) -> frozenset[MoRef]:
        vms = {self.runtime.vm} if self.runtime.vm is not None else set()
        if self.runtime.hook is not None:
            vms.add(self.runtime.hook.vm)
        return frozenset(vms)


@dataclass(frozen=True)
class AgencyReads:
    """What the backend knows of one agency's agents between looks."""

    ids: tuple[str, ...] = ()  # the agent list as last read (QueryAgent)
    agents: Mapping[str, AgentSeen] = field(default_factory=dict)
    listed: bool = False  # the agent list was read at least once
    full: bool = True  # read every agent (and the list) at the next look
    stale: frozenset[str] = frozenset()  # agents to read at the next look (acted on)
    hold: frozenset[str] = frozenset()  # agents held back since the last look (``held_back``)
    pending: Changes = Changes()  # watch changes not looked at yet
    credit: float = 0.0  # the sweep's reads earned and not spent
    credited_at: float | None = None
    watched: bool = False  # the last look was a watched one
    status: Status | None = None  # the agency's status at the last look
    parked: frozenset[MoRef] = frozenset()  # ``Look.parked_hosts`` at the last look

    def noted(self, changes: Changes) -> AgencyReads:
        """These reads with more watch changes to look at."""
        return replace(self, pending=self.pending | changes) if changes else self

    def forgotten(self) -> AgencyReads:
        """Read every agent and the agent list at the next look (a full sweep)."""
        return replace(self, full=True)

    def marked_stale(self, agents: Iterable[str]) -> AgencyReads:
        """Read these agents at the next look (an action changed them)."""
        return replace(self, stale=self.stale | frozenset(agents))

    def held_back(self, agents: Iterable[str]) -> AgencyReads:
        """Do not read these agents on their backoff nor on a status change: their hook was answered, or
        is due and queued, and agentvm (not EAM) is what changes them next. Read them when the watch or an
        issue says they changed, else after ``max_retry`` at most."""
        return replace(self, hold=self.hold | frozenset(agents))

    def runtimes(self) -> tuple[AgentRuntime, ...]:
        """The agents as last read, in the agent list's order."""
        return tuple(self.agents[a].runtime for a in self.ids if a in self.agents)


def settled(agent: AgentRuntime, named: Collection[int]) -> bool:
    """True when nothing about ``agent`` is expected to change by itself: green with no hook, or holding an
    issue (its next change shows in the agency's issue list). A pending hook is not settled."""
    if agent.hook is not None:
        return False
    return (agent.status is Status.GREEN) or bool(agent.issues) or bool(named)


def issues_by_agent(issues: Iterable[Issue]) -> dict[str, frozenset[int]]:
    """The agency's issue keys per agent they name (agency-level issues name none)."""
    out: dict[str, set[int]] = {}
    for issue in issues:
        if issue.agent:
            out.setdefault(issue.agent, set()).add(issue.key)
    return {a: frozenset(keys) for a, keys in out.items()}


def must_list(state: AgencyReads | None, look: Look) -> bool:
    """True when this look reads the agent list (QueryAgent) before deciding."""
    if state is None or not look.watched or state.full or not state.listed or look.relist:
        return True
    if not state.pending.marked_hosts:
        return False
    hosts = {s.runtime.host for s in state.agents.values()}
    return any(h not in hosts for h in state.pending.marked_hosts)


@dataclass(frozen=True)
class ReadPlan:
    """The agents to read now, in order, and the sweep's remaining credit."""

    read: tuple[str, ...]
    swept: tuple[str, ...] = ()  # those of ``read`` that only the sweep chose
    credit: float = 0.0
    reuse: bool = False  # unwatched: nothing to read, the agents as last read stand
    # busy agents (``Look.busy``) that the watch, an issue or a stale mark named: read at the next look,
    # so that a change seen while the caller acted on them (its hook answer's power-on) is not spent unread
    deferred: tuple[str, ...] = ()
    # why the agents of ``read`` are read: a count per reason (``READ_REASONS``)
    reasons: Mapping[str, int] = field(default_factory=dict)


# full (every agent: the first look, a sweep), unwatched (a caller without a watch reads every agent), and
# for a watched look: new (not read yet), stale (acted on), watch (the VM watch named it), host (its host
# left maintenance mode or standby), issue (its issues changed), retry (its backoff is due), status (the
# agency's status changed while it was unsettled), sweep (the spread sweep)
READ_REASONS = ("full", "unwatched", "new", "stale", "watch", "host", "issue", "retry", "status", "sweep")


def plan_reads(
    state: AgencyReads | None,
    ids: Sequence[str],
    issues: Sequence[Issue],
    look: Look,
    *,
    quiet: bool = False,
    status: Status | None = None,
) -> ReadPlan:
    """Which of ``ids`` (the agent list, fresh or as last read) to read now.

    ``issues``: the agency's issue list as just read; ``quiet``: the agency is green with no issue, the only
    reason an unwatched look reuses what was read; ``status``: the agency's status as just read — when it
    differs from the last look's, every agent not settled is read now (the last of them may just have
    turned green).
    """
    known = state.agents if state is not None else {}
    if not look.watched:
        return _plan_unwatched(state, ids, quiet, look)
    now, policy = look.now, look.policy
    if state is None or state.full or not state.watched:
        return ReadPlan(tuple(ids), credit=0.0, reasons=_all(ids, "full"))
    named = issues_by_agent(issues)
    pending = state.pending
    moved = status is not None and status is not state.status
    unparked = state.parked - look.parked_hosts  # hosts that left maintenance mode or standby
    chosen: list[str] = []
    deferred: list[str] = []
    reasons: dict[str, int] = {}
    for agent in ids:
        seen = known.get(agent)
        if agent in look.busy:
            if seen is not None and (
                agent in state.stale
                or _watch_names(seen, pending)
                or named.get(agent, frozenset()) != seen.issues
            ):
                deferred.append(agent)  # what the watch saw of it is kept for the look after its action
            continue
        why = _why(seen, agent, state, pending, named, moved, now, unparked)
        if why is not None:
            chosen.append(agent)
            reasons[why] = reasons.get(why, 0) + 1
    credit = _credit(state, len(ids), now, policy)
    budget = math.floor(credit)
    swept: tuple[str, ...] = ()
    if budget > 0:  # the oldest few, without sorting every agent at every look
        picked = set(chosen)
        candidates = (a for a in ids if a not in picked and a in known and a not in look.busy)
        swept = tuple(heapq.nsmallest(budget, candidates, key=lambda a: (known[a].read_at, a)))
    if swept:
        reasons["sweep"] = len(swept)
    return ReadPlan((*chosen, *swept), swept, credit - len(swept), deferred=tuple(deferred), reasons=reasons)


def _why(
    seen: AgentSeen | None,
    agent: str,
    state: AgencyReads,
    pending: Changes,
    named: Mapping[str, frozenset[int]],
    moved: bool,
    now: float,
    unparked: frozenset[MoRef],
) -> str | None:
    """Why a watched look reads ``agent`` now (one of ``READ_REASONS``), or None: it is not read."""
    if seen is None:
        return "new"
    if agent in state.stale:
        return "stale"
    if _watch_names(seen, pending):
        return "watch"
    if seen.runtime.host in unparked:
        return "host"
    if named.get(agent, frozenset()) != seen.issues:
        return "issue"
    if agent not in state.hold and _retry_due(seen, moved, now):
        return "retry" if seen.retry_at is not None and seen.retry_at <= now else "status"
    return None


def _watch_names(seen: AgentSeen, pending: Changes) -> bool:
    """The watch saw the agent's VM (or its hook's VM) change, or a marked VM on its host."""
    return bool(seen.vms & pending.vms) or seen.runtime.host in pending.marked_hosts


def _retry_due(seen: AgentSeen, moved: bool, now: float) -> bool:
    if seen.retry_at is None:
        return False
    return seen.retry_at <= now or (moved and not seen.held)


def _plan_unwatched(state: AgencyReads | None, ids: Sequence[str], quiet: bool, look: Look) -> ReadPlan:
    if state is None or state.full or state.watched or state.stale or not quiet or tuple(ids) != state.ids:
        return ReadPlan(tuple(ids), reasons=_all(ids, "unwatched"))
    oldest = look.now - look.policy.green_max_age
    seen = [state.agents.get(a) for a in ids]
    if all(
        s is not None and s.runtime.status is Status.GREEN and s.runtime.hook is None and s.read_at >= oldest
        for s in seen
    ):
        return ReadPlan((), reuse=True)
    return ReadPlan(tuple(ids), reasons=_all(ids, "unwatched"))


def _all(ids: Sequence[str], reason: str) -> dict[str, int]:
    return {reason: len(ids)} if ids else {}


def sweep_rate(agents: int, policy: ReadPolicy) -> float:
    """Agents per second the spread sweep reads: every agent once per ``sweep_period`` when that stays
    within ``sweep_per_minute``, else ``sweep_per_minute`` (so every agent within agents / rate minutes)."""
    if agents <= 0 or policy.sweep_per_minute <= 0:
        return 0.0
    per_period = agents / policy.sweep_period if policy.sweep_period > 0 else math.inf
    return min(policy.sweep_per_minute / 60.0, per_period)


def _credit(state: AgencyReads, agents: int, now: float, policy: ReadPolicy) -> float:
    rate = sweep_rate(agents, policy)
    if state.credited_at is None or rate == 0.0:
        return 0.0 if rate == 0.0 else state.credit
    earned = state.credit + rate * max(0.0, now - state.credited_at)
    return min(earned, 1.0 + rate * 10.0)  # a long pause does not turn into a burst


def _waits_for_deploy(
    runtime: AgentRuntime, old: AgentSeen | None, previous: AgencyReads, look: Look
) -> bool:
    """True when ``ReadPolicy.follow_undeployed`` is off and this watched read found ``runtime`` waiting for
    its deploy — no VM, no hook — and nothing says its VM is coming: no marked VM was seen on its host since
    the last look, and it was not followed already."""
    return (
        not look.policy.follow_undeployed
        and look.watched
        and runtime.vm is None
        and runtime.hook is None
        and runtime.host not in previous.pending.marked_hosts
        and (old is None or old.delay == 0)
    )


def _waits_for_host(runtime: AgentRuntime, look: Look) -> bool:
    """True when this watched read found ``runtime`` powered off with no hook on a host in maintenance mode
    or standby: it waits for its host, and the watch names its VM when it is powered on again (read now
    powered on, its host may already be leaving: it is followed as any other)."""
    return (
        look.watched
        and runtime.host in look.parked_hosts
        and runtime.hook is None
        and runtime.power_state is not PowerState.POWERED_ON
    )


def after_reads(
    state: AgencyReads | None,
    ids: Sequence[str],
    read: Mapping[str, AgentRuntime],
    issues: Sequence[Issue],
    look: Look,
    plan: ReadPlan,
    *,
    listed: bool,
    status: Status | None = None,
) -> AgencyReads:
    """The reads after this look: ``read`` holds the runtimes read now (an agent of ``plan.read`` missing
    from it is gone); ``ids`` the agent list used. The watch changes, stale marks and holds are spent (an
    agent held and not read now keeps its last read, to be read again after ``max_retry`` at most)."""
    previous = state if state is not None else AgencyReads()
    now, policy = look.now, look.policy
    named = issues_by_agent(issues)
    gone = {a for a in plan.read if a not in read}
    kept_ids = tuple(a for a in ids if a not in gone)
    agents: dict[str, AgentSeen] = {}
    for agent in kept_ids:
        if agent in read:
            runtime = read[agent]
            keys = named.get(agent, frozenset())
            old = previous.agents.get(agent)
            if (
                settled(runtime, keys)
                or _waits_for_deploy(runtime, old, previous, look)
                or _waits_for_host(runtime, look)
            ):
                agents[agent] = AgentSeen(runtime, now, keys)
            else:
                # followed closely after it moved or was acted on, then doubling while nothing moves
                same = 0
                if (
                    old is not None
                    and old.delay > 0
                    and agent not in previous.stale
                    and old.runtime == runtime
                ):
                    same = old.same + 1
                delay = min(policy.max_retry, policy.first_retry * 2 ** max(0, same - policy.follow))
                agents[agent] = AgentSeen(runtime, now, keys, now + delay, delay, same)
        elif agent in previous.hold and agent in previous.agents:
            fallback = now + policy.max_retry
            agents[agent] = replace(
                previous.agents[agent], retry_at=fallback, delay=policy.max_retry, held=True
            )
        elif agent in previous.agents:
            agents[agent] = previous.agents[agent]
    if not look.watched:
        credit, credited_at = 0.0, None
    elif not previous.watched or previous.full:
        credit, credited_at = 0.0, now
    else:
        credit, credited_at = plan.credit, now
    return AgencyReads(
        ids=kept_ids,
        agents=agents,
        listed=previous.listed or listed,
        full=False,
        stale=frozenset(a for a in plan.deferred if a in agents),
        pending=Changes(),
        credit=credit,
        credited_at=credited_at,
        watched=look.watched,
        status=status,
        parked=look.parked_hosts,
    )
