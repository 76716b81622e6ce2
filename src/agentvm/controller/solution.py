"""agentvm as a vCenter solution, one shot: plan, apply and destroy one spec, and wait for the result.

Called by the CLI (``agentvm plan | apply | destroy``). ``Solution(desired, session)`` plans with a
``controller.planner.Planner`` and acts with a ``controller.executor.Executor`` over the backend it is given
(default: EAM on ``session``; the executor logs in as the extension when it can, so that the agencies belong
to the solution). Data flows one way: observe → ``core.plan.make_plan`` → typed changes → executor; what this
module adds is the waiter on top.

- ``plan()`` validates everything (inventory names, OVF URL and sha256, IP plan size, per-host templates,
  duplicate agencies, EAM reachable) and changes nothing.
- ``apply()`` starts a VM watch (``controller.watch.VmWatch``) and plans first — every validation error is
  raised before the first change; the plan under the lease, and the wait after it, read only the agents
  that the watch saw change or that are not settled (``core.agent_reads``), every agent again only when
  another actor held the lease in between — then carries out
  the plan's changes in order (extension, certificate, hosts' AgentVM settings, agencies), answers each
  pending ``provisioned`` hook (the host's values written into the hook's VM, then MarkAsAvailable; again
  only as ``core.hooks`` says) — the hosts' settings concurrently through the executor's bounded pool
  (``Executor.carry_out_all``), each due hook as soon as a poll finds it on a pool as bounded
  (``_Answering``) while the wait looks on, not reading the agents being answered — and waits until every
  agency is green or
  the timeout passes, reporting a ``Progress`` after each poll. While it waits it heals with
  ``core.heal`` — the controller's policy: active issues (VmPoweredOff, VmNotDeployed, …) are resolved
  with backoff and a bounded number of tries; a passive issue (a person must act), or an active one given
  up on, stops the wait at once: the report's ``problems`` name the issue, the host and the fix.
- ``destroy()``: Uninstall → wait until green → DestroyAgency → unregister the extension. Agent VMs left
  by an agency the backend no longer knows (the direct engine's lost state) are purged and waited for too.

EAM has no push notifications for hooks (docs/eam.md), so the wait polls: every 0.25 s while something
changes, backing off to 2 s while nothing does. A backend that is not ``self_driving`` (the direct
engine) is driven in the pauses instead of sleeping: ``tick``, and ``wait_for_work`` when it had nothing to
do. See docs/architecture.md, "Plans and the executor".
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agentvm.backends.base import Backend
from agentvm.controller.executor import DEFAULT_WORKERS, AgencyWait, Executor, Outcome
from agentvm.controller.hostnet import owned_hosts, tear_down
from agentvm.controller.identity import SolutionIdentity
from agentvm.controller.lease import holding, lease_store
from agentvm.controller.observe import AgencyObservation, Observation, read_addresses, read_snapshot
from agentvm.controller.planner import AGENCY_KINDS, Planner, SolutionPlan
from agentvm.controller.watch import VmWatch
from agentvm.core.agent_reads import Changes, Look, ReadPolicy
from agentvm.core.heal import (
    HealDecision,
    HealPlan,
    HealPolicy,
    HealState,
    HostConditions,
    Verdict,
    plan_heal_agencies,
)
from agentvm.core.hooks import HookKey, hook_key, hooks_due
from agentvm.core.plan import (
    AnswerHook,
    DestroyAgency,
    JoinSwitch,
    PrepareHostNetwork,
    PrepareSwitch,
    PurgeOrphans,
    SetHostSettings,
    UninstallAgency,
    UnregisterExtension,
    UpgradeAgency,
)
from agentvm.core.plan_text import issue_label
from agentvm.core.progress import HostProgress, Progress, host_rows
from agentvm.core.scope import ResolvedAgency, resolve_agency, scoped_hosts
from agentvm.model.agency import AgencyConfig, AgentRuntime, Issue
from agentvm.model.desired import DesiredState, SolutionSpec
from agentvm.model.errors import NotFoundError, TransientError
from agentvm.model.inventory import InventorySnapshot
from agentvm.model.lease import LeaseRecord
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
POLL_FIRST = 0.25
POLL_MAX = 2.0

ProgressCallback = Callable[[Progress], None]


# ----------------------------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyReport:
    """What apply did, each host's final state, and what it cost."""

    plan: SolutionPlan
    actions: tuple[str, ...]
    hosts: tuple[HostProgress, ...]
    green: bool
    seconds: float
    vim_calls: int
    eam_calls: int
    problems: tuple[str, ...] = ()  # why the wait stopped early: issue, host and fix, one line each
    polls: int = 0  # looks through the VM watch, the plans' and the wait's: one WaitForUpdatesEx each

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class Solution:
    """One spec's solution on one vCenter. ``with Solution(desired, session) as s: s.apply()``.

    Plans with a ``Planner`` (strict: an ``ipPlan.addresses`` entry naming no host in scope is an error)
    and acts with an ``Executor``; what it adds is the wait.

    ``session`` is logged in (user, or the extension by certificate). Closing the Solution logs out the
    sessions it opened itself (the extension's), never ``session``.
    """

    def __init__(
        self,
        desired: DesiredState,
        session: Session,
        *,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        state_dir: Path | None = None,
        policy: HealPolicy | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        """``backend``: what runs the agents (default: EAM on ``session``). ``state_dir``: where the
        solution's generated certificate is kept (``controller.identity``; default ``$AGENTVM_STATE_DIR``
        or ``~/.local/state/agentvm``). ``policy``: the heal policy of apply's wait (default: the
        controller's, with a random jitter seed). ``workers``: how many hosts' settings, and how many
        hooks, apply sets or answers at once (``Executor.carry_out_all``; 1: one after the other)."""
        self.desired = desired
        self.session = session
        self._clock = clock
        self._sleep = sleep
        self.executor = Executor.open(desired, session, backend=backend, state_dir=state_dir, workers=workers)
        self.planner = Planner(desired, self.executor)
        self.policy = policy if policy is not None else HealPolicy(seed=secrets.randbits(32))
        # how the wait re-reads agents between the VM watch's changes: an agent still to be deployed is read
        # again when a marked VM appears on its host, not at every poll while it waits (at 2,500 hosts a
        # deploy takes minutes: that was every agent at every poll)
        self.reads = ReadPolicy(follow_undeployed=False)

    def __enter__(self) -> Solution:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out the sessions this Solution opened itself (the extension's), never ``session``."""
        self.executor.close()

    @property
    def solution(self) -> SolutionSpec:
        return self.desired.solution

    @property
    def backend(self) -> Backend:
        """The backend the executor acts through now (the extension's login once it logged in)."""
        return self.executor.backend

    @property
    def identity(self) -> SolutionIdentity:
        return self.executor.identity

    def call_counts(self) -> tuple[int, int]:
        """(vim25 calls, EAM calls) made so far by every session of this Solution."""
        return self.executor.call_counts()

    def observe(self, snapshot: InventorySnapshot | None = None) -> Observation:
        """Read everything the plan needs (see ``controller.observe``). Changes nothing."""
        return self.planner.observe(snapshot)

    def plan(self, *, check_packages: bool = True) -> SolutionPlan:
        """Observe and compare; validate what apply needs (``Planner.plan``). Changes nothing."""
        return self.planner.plan(check_packages=check_packages)

    # -- apply --------------------------------------------------------------------------------------

    def apply(
        self, *, timeout: float = DEFAULT_TIMEOUT, on_progress: ProgressCallback | None = None
    ) -> ApplyReport:
        """Carry out the plan and wait until green (see the module docstring).

        Holds the solution's lease throughout (``controller.lease``: waits up to ``timeout`` for another
        apply/destroy; LeaseHeldError naming the holder, as soon as it is seen renewing when it is an
        ``agentvm run``), so that concurrent applies act one after the other. Raises the plan's validation
        errors before changing anything, the lease included; afterwards the adapters' errors. The report's
        ``green`` is False when the timeout passed first, or when the wait stopped on an issue a person must
        fix (``problems`` then says which, where, and the fix).
        """
        started = self._clock()
        # the VM watch starts before the first read of the agents: from then on every agent VM's change is
        # seen, so the plan under the lease and the wait read only the agents that changed (or are not
        # settled), not every agent again
        try:
            with VmWatch(self.session) as watch:
                # the lease's records before the first read: unchanged but for ours once we hold it, nobody
                # else can have acted in between (``_nobody_acted``)
                before = lease_store(self.session).read(self.solution.key)
                self._look(watch, relist=True)
                # validate before the lease: a spec error must leave vCenter as it was, not even a lease
                # record
                plan = self.plan()
                if self._nothing_to_do(plan):
                    return self._unchanged(plan, started, polls=1)
                with holding(self.session, self.solution.key, "apply", wait=timeout) as lease:
                    return self._apply(
                        watch,
                        quiet=_nobody_acted(
                            before, lease.generation, lease.last.judged if lease.last else None
                        ),
                        timeout=timeout,
                        on_progress=lease.guard(on_progress),
                    )
        finally:
            self.backend.note(None)  # observes after apply read as without a watch again

    def _look(self, watch: VmWatch, *, relist: bool = False, busy: frozenset[str] = frozenset()) -> None:
        """Hand the backend what the VM watch saw since the last look (one WaitForUpdatesEx): the next
        observes read the agents it names, those not settled and the sweep's (``core.agent_reads``);
        every agent when the watch (re)started. ``relist``: the agent lists are read again (a plan).
        ``busy``: the agents whose hook answer is in flight, not read now (their answer marks them stale)."""
        ex = self.executor
        # the plan's extension login replaces the backend: log in first, so that the look reaches the
        # backend that observes (a login already made is kept; a refused one the plan tries again)
        unlogged = ex.wants_certificate() and not self.session.conn.by_certificate
        if relist and unlogged and ex.eam_session is ex.session:
            ex.certificate_accepted = ex.try_extension_login()
        changes = watch.take()
        if changes is None:  # the watch (re)started: what happened before it is unknown
            self.backend.forget()
        self.backend.note(Look(self._clock(), changes or Changes(), self.reads, relist=relist, busy=busy))

    @staticmethod
    def _nothing_to_do(plan: SolutionPlan) -> bool:
        return plan.empty and all(a.status is None or a.status.green for a in plan.observation.agencies)

    def _unchanged(self, plan: SolutionPlan, started: float, *, polls: int = 0) -> ApplyReport:
        hosts = self._final_hosts(plan.observation)
        vim, eam = self.call_counts()
        return ApplyReport(plan, (), hosts, True, self._clock() - started, vim, eam, polls=polls)

    def _apply(
        self, watch: VmWatch, *, quiet: bool, timeout: float, on_progress: ProgressCallback | None
    ) -> ApplyReport:
        """Plan again under the lease and carry it out. ``quiet``: nobody else held the lease since the
        first plan, so the agents it read stand but for what the VM watch saw change (and what is not
        settled); otherwise another apply or destroy may have acted unseen: every agent is read again."""
        started = self._clock()
        if not quiet:
            self.backend.forget()
        self._look(watch, relist=True)
        plan = self.plan()
        actions: list[str] = []
        if self._nothing_to_do(plan):  # another apply did it while this one waited for the lease
            return self._unchanged(plan, started, polls=2)
        # the solution-wide and switch changes first, in plan order; the hosts' settings and networking
        # together, concurrently
        settings: list[SetHostSettings | PrepareHostNetwork] = []
        for change in plan.changes:
            if isinstance(change, SetHostSettings | PrepareHostNetwork):
                settings.append(change)
                continue
            actions += self._set_host_settings(settings)
            settings = []
            if change.agency is None or isinstance(change, PrepareSwitch | JoinSwitch):
                actions.append(self.executor.carry_out(change))
        actions += self._set_host_settings(settings)
        waits: list[AgencyWait] = []
        rewrites: list[tuple[AnswerHook, str]] = []
        for agency in plan.observation.agencies:
            wait = self._apply_agency(plan, agency, actions, rewrites)
            if wait is not None:
                waits.append(wait)
        actions += self._rewrite_addresses(rewrites)
        outcome = self._wait(
            waits,
            timeout=timeout,
            started=started,
            on_progress=on_progress,
            heal=True,
            actions=actions,
            watch=watch,
            polls=2,
        )
        hosts = tuple(h for w in waits for h in self._progress_rows(w))
        vim, eam = self.call_counts()
        return ApplyReport(
            plan,
            tuple(actions),
            hosts,
            outcome.done,
            self._clock() - started,
            vim,
            eam,
            tuple(self._problem_line(waits, d) for d in outcome.stopped),
            outcome.polls,
        )

    def _set_host_settings(self, changes: list[SetHostSettings | PrepareHostNetwork]) -> list[str]:
        """Set these hosts' AgentVM settings and networking concurrently (``Executor.carry_out_all``); what
        was done.
        A host that fails does not stop the others: once they are done, its error is raised."""
        outcomes = self.executor.carry_out_all(changes)
        _raise_first_error(outcomes)
        return [o.text for o in outcomes if o.text is not None]

    def _where(self, waits: list[AgencyWait], issue: Issue) -> str:
        wait = next((w for w in waits if w.status is not None and w.status.agency == issue.agency), None)
        if wait is None:
            return issue.agency_name
        return issue_label(issue, wait.resolved.host(issue.host.value) if issue.host is not None else None)

    def _problem_line(self, waits: list[AgencyWait], decision: HealDecision) -> str:
        """One line for an issue that stopped the wait: the agency, the issue, its host, why, the fix."""
        issue = decision.issues[-1]
        name, where = issue.agency_name, self._where(waits, issue)
        if decision.verdict in (Verdict.GAVE_UP, Verdict.FLAPPING):
            return f"{name}: {decision.reason}; fix: {decision.fix}"
        return f"{name}: {issue.kind.value} #{issue.key} on {where} needs a person; fix: {decision.fix}"

    def _rewrite_addresses(self, rewrites: list[tuple[AnswerHook, str]]) -> list[str]:
        """Write the planned values into these running agent VMs concurrently (``Executor.write_all``);
        what was done. A VM that fails does not stop the others: once they are done, its error is raised."""
        outcomes = self.executor.write_all([change for change, _ in rewrites])
        done = [text for (_, text), o in zip(rewrites, outcomes, strict=True) if o.error is None]
        _raise_first_error(outcomes)
        return done

    def _apply_agency(
        self,
        plan: SolutionPlan,
        agency: AgencyObservation,
        actions: list[str],
        rewrites: list[tuple[AnswerHook, str]],
    ) -> AgencyWait | None:
        """Carry out the agency's change (in ``actions``); the address rewrites it needs go to
        ``rewrites`` (the values, and the line saying so) for ``_rewrite_addresses``; its wait, or None."""
        name = agency.name
        kinds = plan.kinds(name)
        assignment = plan.spec_plan.addresses.get(name)
        wait = AgencyWait(
            agency.resolved,
            addresses={h.host.moid: h.address for h in assignment.addresses} if assignment else {},
            snapshot=plan.observation.snapshot,
        )
        change = next((c for c in plan.changes if c.agency == name and c.kind in AGENCY_KINDS), None)
        if change is not None:
            actions.append(self.executor.carry_out(change))
            if isinstance(change, UpgradeAgency) and agency.status is not None:
                wait.replaced_vms = {a.vm.value for a in agency.status.agents if a.vm is not None}
        elif not kinds and (agency.status is None or agency.status.green):
            return None  # nothing to do and nothing to wait for
        # a host whose running VM carries another address than planned (a static entry changed, a range
        # shrank): write the new values into that VM now (all agencies' together, concurrently); the guest
        # reads them at its next boot
        if agency.status is not None and change is None:
            for agent in agency.status.agents:
                planned = wait.addresses.get(agent.host.value)
                carried = agency.addresses.get(agent.host.value)
                if agent.vm is not None and agent.hook is None and carried and planned and carried != planned:
                    values = self.executor.host_values(wait, agent.vm, agent.host.value)
                    rewrites.append(
                        (values, f"{name}: wrote {planned} into {agent.vm_name} ({agent.vm.value})")
                    )
        return wait

    # -- hooks --------------------------------------------------------------------------------------

    def _answer_hooks(self, waits: list[AgencyWait], answering: _Answering) -> bool:
        """Start answering the agencies' pending hooks that ``core.hooks`` says are due and that are not
        being answered already, every agency's on the one bounded pool (``answering``); True when any was
        started. Returns at once: the answers run while the wait goes on polling (``_answered``)."""
        now = self._clock()
        started = False
        for wait in waits:
            if wait.status is None or wait.uninstall:
                continue
            for agent in hooks_due(wait.status.pending_hooks, wait.answered, now, fresh=wait.status.fresh):
                if hook_key(agent) in answering:
                    continue
                answering.start(wait, agent, self.executor.hook_answer(wait, agent))
                started = True
        return started

    def _answered(self, answering: _Answering, *, everything: bool = False) -> bool:
        """Take in the hook answers that finished since the last look (``everything``: wait for those
        still running first): each is recorded as answered now, in ``core.hooks``' terms; True when any
        was. A failed one (other than NotFoundError: the agent is gone, its host left the scope, as the
        controller says) is raised once every answer started has finished, the others logged."""
        finished = answering.finished(wait=everything)
        if any(o.error is not None and not isinstance(o.error, NotFoundError) for _, _, o in finished):
            finished += answering.finished(wait=True)  # the others finish first, as in one batch
        now = self._clock()
        acted = False
        for wait, agent, outcome in finished:
            if outcome.error is not None:
                continue
            wait.answered[hook_key(agent)] = now
            acted = True
            assert isinstance(outcome.change, AnswerHook)
            log.info(
                "%s: answered the %s hook of %s", wait.name, outcome.change.state.value, agent.host.value
            )
        _raise_first_error([o for _, _, o in finished], ignore=NotFoundError)
        return acted

    # -- waiting ------------------------------------------------------------------------------------

    def _wait(
        self,
        waits: list[AgencyWait],
        *,
        timeout: float,
        started: float,
        on_progress: ProgressCallback | None,
        heal: bool = False,
        actions: list[str] | None = None,
        watch: VmWatch | None = None,
        polls: int = 0,
    ) -> _Outcome:
        """Poll until every wait is done or ``timeout`` (from now) passes.

        ``watch``: the VM watch to look through (apply's, started before its plans; ``polls`` its looks so
        far); None: one of its own, for the wait.

        ``heal``: after each observation, decide with ``core.heal.plan_heal_agencies`` (the controller's
        policy and backoff, ``self.policy``): resolve what it says to resolve now (one line in ``actions``
        per resolve), and stop at once on a failure — a passive issue, or an active one resolved
        ``max_attempts`` times in vain — since no amount of waiting fixes those.
        """
        with contextlib.ExitStack() as stack:
            if watch is None:
                # observes after the wait read as without a watch again (after the watch is closed)
                stack.callback(self.backend.note, None)
                watch = stack.enter_context(VmWatch(self.session))
            # each look reads the agents the VM watch says changed, those not settled yet (not done) and
            # the sweep's (``core.agent_reads``), as the controller's polls do; hooks answered meanwhile
            answering = _Answering(self.executor)
            stack.callback(answering.close)
            return self._polls(
                waits,
                watch,
                answering,
                timeout=timeout,
                started=started,
                on_progress=on_progress,
                heal=heal,
                actions=actions,
                polls=polls,
            )

    def _polls(
        self,
        waits: list[AgencyWait],
        watch: VmWatch,
        answering: _Answering,
        *,
        timeout: float,
        started: float,
        on_progress: ProgressCallback | None,
        heal: bool,
        actions: list[str] | None,
        polls: int,
    ) -> _Outcome:
        """``_wait``'s polls, with the hook answers of ``answering`` running meanwhile."""
        deadline = self._clock() + timeout
        interval = POLL_FIRST
        previous: object = None
        healing = HealState()
        while True:
            # an agent whose answer is in flight is not read: it would read pending still, and its answer
            # marks it to be read once done
            self._look(watch, busy=answering.agents())
            for wait in waits:
                wait.status = self.backend.observe(wait.name)
            acted = self._answered(answering)
            acted = self._answer_hooks(waits, answering) or acted or bool(answering)
            polls += 1
            wake_at: float | None = None
            stopped: tuple[HealDecision, ...] = ()
            if heal:
                decided = self._heal_step(waits, healing, actions)
                healing, wake_at = decided.state, decided.wake_at
                stopped = tuple(d for d in decided.decisions if d.failure)
                acted = acted or bool(decided.resolves)
            done = all(w.done() for w in waits)
            rows = tuple(h for w in waits for h in self._progress_rows(w))
            if on_progress is not None:
                on_progress(Progress(rows, self._clock() - started, done))
            if done:
                return _Outcome(True, polls)
            if stopped:
                return _Outcome(False, polls, stopped)
            now = self._clock()
            if now >= deadline:
                return _Outcome(False, polls)
            state = tuple((r.host, r.phase, r.vm) for r in rows)
            interval = POLL_FIRST if acted or state != previous else min(POLL_MAX, interval * 1.5)
            previous = state
            pause = min(interval, max(0.0, deadline - now))
            if wake_at is not None:
                pause = min(pause, max(0.0, wake_at - now))
            self._pause(pause)

    def _pause(self, seconds: float) -> None:
        """Let up to ``seconds`` pass before the next look. A backend that is not ``self_driving`` does its
        agent work meanwhile: one ``tick``, and when that did nothing, ``wait_for_work`` for the rest (it
        returns as soon as there is work); a self-driving one (EAM) is left to itself: sleep."""
        if self.backend.self_driving:
            self._sleep(seconds)
        elif not self.backend.tick():
            self.backend.wait_for_work(seconds)

    def _heal_step(self, waits: list[AgencyWait], state: HealState, actions: list[str] | None) -> HealPlan:
        """One heal decision over the waits' last observations; resolves what it says to resolve now."""
        statuses = [w.status for w in waits if w.status is not None and not w.uninstall]
        snapshot = next((w.snapshot for w in waits if w.snapshot is not None), None)
        conditions = HostConditions.of(snapshot.hosts) if snapshot is not None else HostConditions()
        decided = plan_heal_agencies(statuses, state, self._clock(), self.policy, conditions)
        if decided.resolves:
            left = set(self.executor.resolve(decided.resolves))
            for decision in decided.by_verdict(Verdict.RESOLVE):
                issue = decision.issues[-1]
                where = self._where(waits, issue)
                note = " (EAM could not start it now)" if left & {i.key for i in decision.issues} else ""
                text = (
                    f"{issue.agency_name}: resolved {issue.kind.value} #{issue.key} on {where}, attempt "
                    f"{decision.attempt} of {self.policy.backoff(issue.kind).max_attempts}{note}"
                )
                log.info("%s", text)
                if actions is not None:
                    actions.append(text)
        return decided

    def _progress_rows(self, wait: AgencyWait) -> tuple[HostProgress, ...]:
        return host_rows(
            wait.name,
            wait.status,
            wait.resolved.hosts,
            wait.addresses,
            wait.snapshot,
            uninstall=wait.uninstall,
        )

    def _final_hosts(self, observation: Observation) -> tuple[HostProgress, ...]:
        return tuple(
            row
            for agency in observation.agencies
            for row in host_rows(
                agency.resolved.spec.name,
                agency.status,
                agency.resolved.hosts,
                read_addresses(observation.snapshot, agency.status),
                observation.snapshot,
            )
        )

    # -- destroy ------------------------------------------------------------------------------------

    def destroy(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
        host_settings: bool = False,
        host_network: bool = False,
    ) -> DestroyReport:
        """Uninstall every agency of the spec, wait until green, destroy them, unregister the extension.

        Agencies that do not exist are skipped, so a second destroy does nothing, except that the agent
        VMs the backend still sees for such a name are purged (``Backend.purge_orphans``). Raises
        TransientError when the agents are not gone within ``timeout`` (the agencies and the extension are
        then left in place).
        Holds the solution's lease as ``apply`` does, and removes its records at the very end. The hosts'
        AgentVM settings stay unless ``host_settings``: then those apply recorded as set by agentvm and
        still equal to what it set are cleared (``DestroyReport.host_settings_left`` counts the others).
        So does the hosts' networking (``hostNetwork``) unless ``host_network``: then what agentvm created,
        and only that, is removed once the agent VMs are gone (``controller.hostnet.tear_down``;
        ``DestroyReport.host_network_left`` counts the hosts that keep some, ``network_left`` says what was
        not agentvm's).
        """
        with holding(self.session, self.solution.key, "destroy", wait=timeout) as lease:
            report = self._destroy(
                timeout=timeout,
                on_progress=lease.guard(on_progress),
                host_settings=host_settings,
                host_network=host_network,
            )
            lease.retire()
            return report

    def _destroy(
        self, *, timeout: float, on_progress: ProgressCallback | None, host_settings: bool, host_network: bool
    ) -> DestroyReport:
        started = self._clock()
        if self.executor.wants_certificate() and not self.session.conn.by_certificate:
            self.executor.try_extension_login()
        self.executor.adopt()
        if not self.backend.self_driving:
            self.backend.tick()  # a backend driven from here looks first: which agencies and VMs exist
        snapshot = read_snapshot(self.session)
        actions: list[str] = []
        waits = []
        orphaned: list[str] = []
        for spec in self.desired.agencies:
            if self.backend.find(spec.name) is None:
                purging = self.executor.remove(PurgeOrphans(spec.name))
                if purging is not None:
                    actions.append(purging)
                    orphaned.append(spec.name)
                continue
            try:
                resolved = resolve_agency(spec, snapshot)
            except NotFoundError:  # the scope is gone from the inventory: nothing to show per host
                resolved = ResolvedAgency(spec, _empty_config(spec.name), (), ())
            actions.append(self.executor.carry_out(UninstallAgency(spec.name)))
            waits.append(AgencyWait(resolved, uninstall=True, snapshot=snapshot))
        if not self._wait(waits, timeout=timeout, started=started, on_progress=on_progress).done:
            left = sum(1 for w in waits for a in (w.status.agents if w.status else ()) if a.vm is not None)
            raise TransientError(
                f"{left} agent VM(s) still there after {timeout:.0f} s; see agentvm status, resolve the "
                "issues and run destroy again"
            )
        for wait in waits:
            if (destroyed := self.executor.remove(DestroyAgency(wait.name))) is not None:
                actions.append(destroyed)
        deadline = self._clock() + timeout
        for wait in waits:  # DestroyAgency is asynchronous: wait until EAM forgets the agency
            while self.backend.find(wait.name) is not None and self._clock() < deadline:
                self._pause(POLL_FIRST)
        names = [w.name for w in waits] + orphaned
        while (pending := [n for n in names if self.backend.orphans(n)]) and self._clock() < deadline:
            self._pause(POLL_FIRST)
        if pending:
            left = sum(self.backend.orphans(n) for n in pending)
            raise TransientError(
                f"{left} agent VM(s) of {', '.join(pending)} still there after {timeout:.0f} s; see "
                "agentvm status and run destroy again"
            )
        left = len(self.identity.host_settings())
        if host_settings:
            actions += self.executor.clear_host_settings(snapshot)
            left = 0
        scoped = [(spec, scoped_hosts(spec, snapshot)) for spec in self.desired.agencies]
        network_left: tuple[str, ...] = ()
        if host_network:
            teardown = tear_down(self.session, scoped)
            actions += teardown.actions
            network_left = teardown.left
            network_hosts = 0
        else:
            network_hosts = owned_hosts(self.session, scoped)
        if (unregistered := self.executor.remove(UnregisterExtension(self.solution.key))) is not None:
            actions.append(unregistered)
        vim, eam = self.call_counts()
        return DestroyReport(
            tuple(actions),
            self._clock() - started,
            vim,
            eam,
            host_settings_left=left,
            host_network_left=network_hosts,
            network_left=network_left,
        )


class _Answering:
    """The hook answers apply's wait has in flight: a bounded pool of ``Executor.workers`` threads (as
    ``Executor.carry_out_all``'s) that answers each due hook as soon as a poll finds it — its values written
    into its VM, then MarkAsAvailable, one ``Executor.carry_out`` each — while the wait goes on polling.
    Used by one wait loop's thread; ``close()`` drops the answers not started and waits for the others."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._pool = ThreadPoolExecutor(max_workers=executor.workers, thread_name_prefix="agentvm-hook")
        self._running: dict[HookKey, tuple[AgencyWait, AgentRuntime, Future[Outcome]]] = {}

    def __contains__(self, key: HookKey) -> bool:
        return key in self._running

    def __bool__(self) -> bool:
        return bool(self._running)

    def agents(self) -> frozenset[str]:
        """The agents whose answer is queued or running."""
        return frozenset(agent for agent, _ in self._running)

    def start(self, wait: AgencyWait, agent: AgentRuntime, answer: AnswerHook) -> None:
        # in a copy of the caller's context: the correlation id the answer runs under is the caller's
        future = self._pool.submit(contextvars.copy_context().run, self._answer, answer)
        self._running[hook_key(agent)] = (wait, agent, future)

    def _answer(self, answer: AnswerHook) -> Outcome:
        try:
            text = self._executor.carry_out(answer)
        except Exception as exc:  # the wait reports it: one answer's failure never stops the others
            return Outcome(answer, None, error=exc)
        return Outcome(answer, None, text=text)

    def finished(self, *, wait: bool = False) -> list[tuple[AgencyWait, AgentRuntime, Outcome]]:
        """The answers done since the last call, in the order they were started (``wait``: all of them,
        once those still running are done)."""
        done = [key for key, (_, _, f) in self._running.items() if wait or f.done()]
        out = []
        for key in done:
            wait_, agent, future = self._running.pop(key)
            out.append((wait_, agent, future.result()))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _raise_first_error(outcomes: list[Outcome], ignore: type[Exception] | None = None) -> None:
    """Raise the first error of a batch, once every change of it was carried out (the others are
    logged); errors of type ``ignore`` are none."""
    errors = [o.error for o in outcomes if o.error is not None]
    errors = [e for e in errors if ignore is None or not isinstance(e, ignore)]
    for error in errors[1:]:
        log.warning("%s", error)
    if errors:
        raise errors[0]


def _nobody_acted(
    before: list[LeaseRecord], generation: int | None, judged: Sequence[LeaseRecord] | None
) -> bool:
    """True when no other apply, destroy or run can have held the solution's lease between the read of
    ``before`` (its records then) and this process taking ``generation``.

    With records then: every one was released and ours is the very next number (numbers only grow; a
    series started anew after a destroy starts at a random one, see ``controller.lease``).

    With no record then (the first apply on this vCenter, or after a destroy removed them): when this
    process's winning attempt still judged no record of ours (``judged``, the records it read just before
    registering, which its confirmation checked unchanged after). Whoever held the lease in between left
    a record — released, unless a destroy removed its own at the end; what such a destroy did (agent VMs
    removed: the VM watch saw it; the agency destroyed: the plan under the lease lists the agencies again)
    is seen without reading every agent. None (unknown): False."""
    if generation is None:
        return False
    if not before:
        return judged is not None and not judged
    # a record agentvm did not write (holder None) counts for the numbering only: nobody holds it
    released = all(r.released or r.holder is None for r in before)
    return released and generation == max(r.generation for r in before) + 1


@dataclass(frozen=True)
class _Outcome:
    """How a wait ended: all done, or not (timeout, or the heal decisions that stopped it)."""

    done: bool
    polls: int
    stopped: tuple[HealDecision, ...] = ()


@dataclass(frozen=True)
class DestroyReport:
    actions: tuple[str, ...]
    seconds: float
    vim_calls: int
    eam_calls: int
    host_settings_left: int = 0  # hosts whose AgentVM settings agentvm set and destroy left in place
    host_network_left: int = 0  # hosts that keep networking agentvm created (destroy without --host-network)
    network_left: tuple[str, ...] = ()  # --host-network: what it found but left, not being agentvm's


def _empty_config(name: str) -> AgencyConfig:
    return AgencyConfig(agency_name=name, agent_configs=())
