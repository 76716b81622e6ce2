"""One level-triggered pass of ``agentvm run``: observe, decide, act — nothing kept but what is read back.

Called by ``controller.run.Controller`` on its loop thread only (not thread-safe; the API reads the
published ``StatusReport`` and metrics, which are immutable / locked). ``Reconciler`` has a
``controller.planner.Planner`` and a ``controller.executor.Executor``, so it plans and acts with exactly the
code of ``agentvm apply``:

- ``full_pass()``: ``Planner.plan`` (one bulk inventory read, the extension, every agency and its config),
  then the plan's changes — register/update the extension, set the AgentVM settings of hosts that joined
  the scope (before EAM needs them), create/update/enable the agencies — then ``poll``. A sweeping one
  (the default) reads every agent again; one that only re-plans (a topology change) reads the agent lists.
  Given ``changes`` (the VM watch's), observing reads only the agents that changed, are in transition or
  are next in the spread sweep (``core.agent_reads``).
- ``poll()``: observe every agency through the backend, answer each pending hook when ``core.hooks`` says
  it is due (the host's values written into ``vmHook.vm``, then MarkAsAvailable: ``Executor.answer_hook``;
  all those due at once through the executor's bounded pool, ``Executor.carry_out_all``, as are the
  hosts' settings of a full pass),
  and heal with ``core.heal`` (resolve active issues with backoff, give up after N and say so, report
  passive ones with their fix, leave hosts in maintenance mode alone). Before resolving, the hosts
  concerned are read again (one call for all, ``vsphere.hosts.read_hosts``, classified by
  ``core.heal.HostConditions.of``) so a host that just entered maintenance mode is never taken for a
  failure. An agent VM that runs on another host than its agent's (moved by hand; EAM raises no issue for
  it and does not undo it) is found from vCenter's ``runtime.host`` (the watch's, else the last full
  pass's) and moved back (``Executor.move_back``) under the same backoff; an agent that keeps
  coming back broken after each heal is given up on as flapping (``core.heal``), shown so on its host and
  in ``agentvm_agent_flapping``.

Every action is one structured log line and one event with a correlation id: the vCenter/EAM calls of the
action carry it as their SOAP ``operationID`` prefix. Duplicates never cause a second action: a hook is
answered once per (agent, VM) until it stays pending ``core.hooks.REANSWER_AFTER`` seconds; an issue is
resolved under the heal policy's backoff per agent and kind; every other action is an idempotent
``ensure_*``. See docs/architecture.md, "Plans and the executor".
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentvm.backends.base import AgencyStatus, Backend
from agentvm.controller.events import EventLog
from agentvm.controller.executor import DEFAULT_WORKERS, AgencyWait, Executor
from agentvm.controller.hostnet import HostNetworkShown
from agentvm.controller.logs import action_log
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.observe import InventoryKeeper, Reused
from agentvm.controller.planner import AGENCY_KINDS, Planner, SolutionPlan
from agentvm.controller.status import LiveStatus, StatusReport
from agentvm.core.agent_reads import Changes, Look, ReadPolicy
from agentvm.core.heal import (
    Finding,
    HealClass,
    HealDecision,
    HealKey,
    HealPolicy,
    HealState,
    HostConditions,
    Misplaced,
    Verdict,
    count_kinds,
    find_misplaced,
    heal_class,
    observed_issues,
    plan_heal_agencies,
)
from agentvm.core.hooks import hook_key, hooks_due
from agentvm.core.inventory_patch import InventoryDelta
from agentvm.core.plan import (
    AnswerHook,
    ChangeKind,
    JoinSwitch,
    PrepareHostNetwork,
    PrepareSwitch,
    SetHostSettings,
    UpdateAgency,
)
from agentvm.model.agency import AgentRuntime, GoalState, HookState, Issue, MoRef
from agentvm.model.desired import DesiredState
from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from agentvm.model.inventory import Host, InventorySnapshot, VirtualMachine
from agentvm.vsphere.hosts import read_host_runtime
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

CERTIFICATE_KINDS = frozenset({ChangeKind.SET_CERTIFICATE, ChangeKind.RECORD_CERTIFICATE})
# hooks one poll answers at most: a few rounds of the executor's pool, so that a poll during a mass deploy
# ends (status, metrics) within seconds; the rest are answered by the next polls
DEFAULT_HOOKS_PER_POLL = 4 * DEFAULT_WORKERS


@dataclass(frozen=True)
class PassReport:
    """What one pass saw and did."""

    full: bool
    actions: int  # actions taken (extension, host settings, agency, hooks, resolves)
    busy: bool  # something is yellow or a hook is pending: poll fast
    wake_at: float | None  # when the heal policy wants to look again (a retry is due)
    seconds: float
    calls: int  # vCenter + EAM calls the pass made
    resolve_started: float | None = None  # perf_counter() when the first Resolve of the pass was sent


@dataclass
class _Tracked:
    """Per-process bookkeeping that only de-duplicates; a restart rebuilds it from what it reads."""

    hook_seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (agent, vm) -> first seen
    issues: dict[tuple[str, int], Issue] = field(default_factory=dict)  # (agency, key) -> issue
    misplaced: dict[tuple[str, str], Misplaced] = field(default_factory=dict)  # (agency, agent) -> found


class Reconciler:
    """``Reconciler(desired, session, events=..., metrics=...)``: ``full_pass()`` / ``poll()``.

    Plans with a ``controller.planner.Planner`` and acts with a ``controller.executor.Executor`` (the
    code of ``agentvm apply``) over ``backend``: None for EAM on ``session``, or a ``DirectBackend``.
    ``conditions`` gives the host conditions the watch saw last (maintenance, standby, unreachable);
    ``placements`` the hosts of the given VMs as the watch saw them last (without it, the last full pass's
    inventory); ``changes`` the VM watch's changes since it was last called (without it every poll reads
    every agent unless all is green, as ``agentvm status`` does), read as ``reads`` says; ``clock`` is
    monotonic seconds (faked in tests); ``state_dir`` is where the solution's generated certificate is kept
    (``agentvm run --state-dir``); ``workers`` how many due hooks, and how many hosts' settings, are
    answered or set at once (``Executor.carry_out_all``; 1: one after the other); ``hooks_per_poll`` how
    many hooks one poll answers at most (the others wait for the next poll, held back from the backend's
    re-reads meanwhile, so that a mass deploy's status and metrics move between batches).
    """

    def __init__(
        self,
        desired: DesiredState,
        session: Session,
        *,
        events: EventLog,
        metrics: ControllerMetrics,
        backend: Backend | None = None,
        policy: HealPolicy | None = None,
        conditions: Callable[[], HostConditions] | None = None,
        placements: Callable[[Collection[MoRef]], Mapping[MoRef, MoRef]] | None = None,
        changes: Callable[[], Changes] | None = None,
        inventory: Callable[[], InventoryDelta] | None = None,
        reads: ReadPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        check_packages: bool = True,
        state_dir: Path | None = None,
        workers: int = DEFAULT_WORKERS,
        hooks_per_poll: int = DEFAULT_HOOKS_PER_POLL,
    ) -> None:
        if hooks_per_poll < 1:
            raise ConfigurationError(f"hooks_per_poll must be 1 or more (got {hooks_per_poll})")
        self._hooks_per_poll = hooks_per_poll
        self.desired = desired
        self.session = session
        self._clock = clock
        self.executor = Executor.open(desired, session, backend=backend, state_dir=state_dir, workers=workers)
        # a host that left the scope is a warning: the others stay managed
        self.planner = Planner(desired, self.executor, strict_static_hosts=False)
        self._warned: set[str] = set()  # plan warnings published as events, until they go away
        self.events = events
        self.metrics = metrics
        self.policy = policy if policy is not None else HealPolicy(seed=secrets.randbits(32))
        self._conditions = conditions or HostConditions
        self._placements = placements
        self._changes = changes
        self.reads = reads if reads is not None else ReadPolicy()
        self._check_packages = check_packages
        self._waits: dict[str, AgencyWait] = {}
        self._acted_on: set[str] = set()  # agencies the last full pass changed: its poll reads them again
        self._heal = HealState()
        self._tracked = _Tracked()
        self._cid = f"agentvm-run-{secrets.token_hex(3)}"
        self._seq = itertools.count(1)
        self.snapshot: InventorySnapshot | None = None
        self.inventory = InventoryKeeper(session, inventory)  # the snapshot a re-plan patches
        self.report: StatusReport = StatusReport(session.url, ())
        self._resolve_started: float | None = None
        self._reuse: Reused | None = None  # what a re-plan for a topology change reuses (``_reusable``)

    @property
    def backend(self) -> Backend:
        """The backend the executor acts through now (the extension's login once it logged in)."""
        return self.executor.backend

    def close(self) -> None:
        """Log out the sessions the executor opened (the extension's), never ``session``."""
        self.executor.close()

    def add_call_listener(self, listener: Callable[[str, float, str | None], None]) -> None:
        """Call ``listener(method, seconds, fault)`` after every call of every session (``Executor``)."""
        self.executor.add_call_listener(listener)

    # -- passes ---------------------------------------------------------------------------------------

    def full_pass(self, *, sweep: bool = True, read: bool = True) -> PassReport:
        """Plan against everything observed now, act on the plan, then ``poll``. Raises adapters' errors.

        ``sweep``: read every agent again (after a reconnect, a new watch, a resync request); False: only
        re-plan, reading each agency's agent list (a topology change, the periodic pass). ``read``: read the
        whole inventory (always with ``sweep``); False (a topology change): read only what ``inventory``
        named since (``controller.observe.InventoryKeeper``)."""
        started, calls = self._clock(), self._calls()
        if sweep:
            self.backend.forget()  # every agent read again, whatever was reused between polls
        # a re-plan for a topology change reuses the extension, the agencies' configs and ids and the last
        # adoption (a host added or gone changes none of them); the agent list is read when the watch shows
        # a marked VM on a host with no known agent (the new host's); the periodic pass reads them all
        reuse = self._reuse if not (read or sweep) else None
        self._note(relist=reuse is None)
        snapshot = self.inventory.read(full=read or sweep)
        # the hosts' networking: read again only where the watch saw it change, unless a sweep, the watch
        # not following it, or the last read of every host's being older than ``network_resync``
        now = self._clock()
        known = not sweep and self.network_watched and now - self._network_read_at < self.network_resync
        plan = self.planner.plan(
            check_packages=self._check_packages, snapshot=snapshot, reuse=reuse, network_known=known
        )
        if self.planner.network_reads_hosts and not known and reuse is None:
            self._network_read_at = now
        for warning in plan.warnings:  # each once, while it lasts (an unknown ipPlan host, say)
            if warning not in self._warned:
                self.events.publish("warning", warning, level="warning")
        self._warned = set(plan.warnings)
        actions = self._act_on_plan(plan)
        self._host_network = _after(plan.host_network.hosts)
        self._reuse = self._reusable(plan)
        self.snapshot = plan.observation.snapshot
        waits: dict[str, AgencyWait] = {}
        for agency in plan.observation.agencies:
            assignment = plan.spec_plan.addresses.get(agency.name)
            addresses = {h.host.moid: h.address for h in assignment.addresses} if assignment else {}
            old = self._waits.get(agency.name)
            waits[agency.name] = AgencyWait(
                agency.resolved,
                addresses=addresses,
                snapshot=self.snapshot,
                answered=dict(old.answered) if old else {},
            )
        self._waits = waits
        # an agency the plan did not change is, as the plan just observed it, what EAM holds: the poll does
        # not read it again (the hosts' settings and the extension change no agency; a changed agency is
        # read afresh)
        observed = {a.name: a.status for a in plan.observation.agencies if a.name not in self._acted_on}
        polled = self.poll(observed=observed)
        return PassReport(
            True,
            actions + polled.actions,
            polled.busy,
            polled.wake_at,
            self._clock() - started,
            self._calls() - calls,
            polled.resolve_started,
        )

    network_watched = False  # the controller's watch follows the hosts' networking (``network_changed``)
    network_resync = 600.0  # ...and every host's is read again at least this often (seconds) all the same
    _network_read_at = -math.inf  # when every host's networking was last read

    def network_changed(self, hosts: Collection[MoRef], *, switches: bool = False) -> None:
        """The watch saw these hosts' networking change (or, ``switches``, a DV port group): the next re-plan
        reads it again (every host's and the switches, for a DV port group; ``hostNetwork``)."""
        if switches:
            self.planner.forget_network(None)
        elif hosts:
            self.planner.forget_network(h.value for h in hosts)

    def poll(self, *, observed: Mapping[str, AgencyStatus | None] | None = None) -> PassReport:
        """Observe the agencies, answer hooks, heal, publish status and metrics. Raises adapters' errors.

        ``observed``: agencies as the full pass that calls this just read them (none changed since), used
        instead of observing them again."""
        started, calls = self._clock(), self._calls()
        self._resolve_started = None
        if observed is None or any(name not in observed for name in self._waits):
            self._note(relist=False)
        statuses: list[AgencyStatus] = []
        actions = 0
        budget = self._hooks_per_poll
        for wait in self._waits.values():
            wait.status = (
                observed[wait.name]
                if observed is not None and wait.name in observed
                else self.backend.observe(wait.name)
            )
            if wait.status is not None:
                statuses.append(wait.status)
                answered, budget = self._answer(wait, budget)
                actions += answered
        conditions = self._host_conditions()
        misplaced = self._misplaced(statuses)
        self._track_issues(statuses, conditions)
        self._track_misplaced(misplaced)
        actions += self._heal_now(statuses, conditions, misplaced)
        self._publish(statuses, conditions, misplaced)
        busy = any(not s.green or s.pending_hooks for s in statuses) or any(
            w.status is None for w in self._waits.values()
        )
        return PassReport(
            False,
            actions,
            busy,
            self._heal_wake,
            self._clock() - started,
            self._calls() - calls,
            self._resolve_started,
        )

    def _reusable(self, plan: SolutionPlan) -> Reused | None:
        """What the next re-plan for a topology change may take from this pass's observation: the
        extension, unless this pass wrote it (or its certificate), and the configs of the agencies it did
        not change. None: read everything again."""
        if any(c.agency is None and c.host is None for c in plan.changes):
            return None
        configs = {
            a.status.agency: a.config
            for a in plan.observation.agencies
            if a.status is not None and a.config is not None and a.name not in self._acted_on
        }
        return Reused(plan.observation.extension, configs)

    def _note(self, *, relist: bool) -> None:
        """Hand the backend what the VM watch saw since the last look (nothing without a watch)."""
        if self._changes is not None:
            watched = self._conditions()
            parked = watched.maintenance | watched.standby
            self.backend.note(Look(self._clock(), self._changes(), self.reads, relist, parked_hosts=parked))

    # -- acting on the plan ---------------------------------------------------------------------------

    def _act_on_plan(self, plan: SolutionPlan) -> int:
        """Carry out the plan's changes (hooks and issues are the poll's), one action each; an agency
        found disabled is enabled even when its config is right."""
        done = 0
        self._acted_on = set()
        snapshot = plan.observation.snapshot
        hosts: list[SetHostSettings | PrepareHostNetwork] = []  # together, concurrently, in plan order
        for change in plan.changes:
            if isinstance(change, SetHostSettings | PrepareHostNetwork):
                hosts.append(change)
                self.inventory.acted_on([MoRef("HostSystem", change.host)])  # its settings read again
                continue
            done += self._set_host_settings(hosts, snapshot)
            hosts = []
            if isinstance(change, PrepareSwitch | JoinSwitch):
                self._act(
                    "host-network", functools.partial(self.executor.carry_out, change), agency=change.agency
                )
                done += 1
            elif change.agency is None:
                action = "certificate" if change.kind in CERTIFICATE_KINDS else "extension"
                self._act(action, functools.partial(self.executor.carry_out, change))
                done += 1
        done += self._set_host_settings(hosts, snapshot)
        for agency in plan.observation.agencies:
            planned = next(
                (c for c in plan.changes if c.agency == agency.name and c.kind in AGENCY_KINDS), None
            )
            disabled = agency.status is not None and agency.status.goal_state is GoalState.DISABLED
            if planned is None and disabled:
                planned = UpdateAgency(agency.name, (), agency.resolved.config)
            if planned is not None:
                self._acted_on.add(agency.name)
                self._act("agency", functools.partial(self.executor.carry_out, planned), agency=agency.name)
                done += 1
        return done

    def _set_host_settings(
        self, changes: Sequence[SetHostSettings | PrepareHostNetwork], snapshot: InventorySnapshot
    ) -> int:
        """Set these hosts' AgentVM settings and networking concurrently (``Executor.carry_out_all``), one
        action each
        (its own correlation id, log line and event). A host that fails is reported and does not stop
        the others; once they are done, the first error is raised (the pass fails and is retried)."""
        if not changes:
            return 0
        cids = [self._new_cid() for _ in changes]
        outcomes = self.executor.carry_out_all(changes, operations=cids)
        done = 0
        failed: Exception | None = None
        for change, cid, outcome in zip(changes, cids, outcomes, strict=True):
            where = {
                "agency": change.agency,
                "host": self._host_path(snapshot, change.host),
                "host_moid": change.host,
            }
            action = "host-network" if isinstance(change, PrepareHostNetwork) else "host-settings"
            if outcome.error is not None:
                self._report_failure(action, outcome.error, cid, **where)
                failed = failed or outcome.error
                continue
            assert outcome.text is not None
            self._report(action, outcome.text, cid, **where)
            done += 1
        if failed is not None:
            raise failed
        return done

    def _new_cid(self) -> str:
        return f"{self._cid}-{next(self._seq)}"

    def _act(
        self,
        action: str,
        do: Callable[[], str],
        *,
        agency: str | None = None,
        host: str | None = None,
        host_moid: str | None = None,
    ) -> str:
        """Run one action under a fresh correlation id; log it and publish it as an event."""
        cid = self._new_cid()
        with self.session.operation(cid):
            text = do()
        self._report(action, text, cid, agency=agency, host=host, host_moid=host_moid)
        return cid

    def _report(
        self,
        action: str,
        text: str,
        cid: str,
        *,
        agency: str | None = None,
        host: str | None = None,
        host_moid: str | None = None,
    ) -> None:
        """One action line and one event for an action done under ``cid``."""
        action_log(text, action=action, correlation_id=cid, agency=agency, host=host, host_moid=host_moid)
        self.events.publish(
            "action",
            text,
            agency=agency,
            host=host_moid,
            host_name=host,
            correlation_id=cid,
            data={"action": action},
        )

    def _report_failure(
        self,
        action: str,
        error: Exception,
        cid: str,
        *,
        agency: str | None = None,
        host: str | None = None,
        host_moid: str | None = None,
    ) -> None:
        """One error line and one error event for an action of a batch that failed under ``cid``."""
        text = f"{action} failed on {host or host_moid or agency}: {error}"
        action_log(
            text,
            action=action,
            correlation_id=cid,
            agency=agency,
            host=host,
            host_moid=host_moid,
            level=logging.ERROR,
        )
        self.events.publish(
            "action",
            text,
            level="error",
            agency=agency,
            host=host_moid,
            host_name=host,
            correlation_id=cid,
            data={"action": action, "failed": True},
        )

    # -- hooks ----------------------------------------------------------------------------------------

    def _network_unready(self, wait: AgencyWait, due: Sequence[AgentRuntime]) -> list[AgentRuntime]:
        """The due agents whose provisioned hook wires NICs (``hostNetwork.agentNics``) on a host whose
        networking the last full pass did not find ready (a failed check, held, or not planned yet)."""
        network = wait.resolved.spec.host_network
        if network is None or not (network.agent_nics.fabric or network.agent_nics.trunk):
            return []

        def unready(agent: AgentRuntime) -> bool:
            if agent.hook is None or agent.hook.state is not HookState.PROVISIONED:
                return False
            shown = self._host_network.get(agent.host.value)
            return shown is None or shown.state != "ready"

        return [a for a in due if unready(a)]

    def _answer(self, wait: AgencyWait, budget: int) -> tuple[int, int]:
        """Answer the agency's pending hooks that ``core.hooks`` says are due, one action each, ``budget``
        at most; the due ones beyond it are held back (``Backend.hold``) for the next poll. Returns the
        hooks answered and the budget left."""
        status = wait.status
        if status is None:
            return 0, budget
        now = self._clock()
        pending = {hook_key(a) for a in status.pending_hooks}
        for key in [k for k in self._tracked.hook_seen if k not in pending]:
            del self._tracked.hook_seen[key]
        for agent in status.pending_hooks:
            self._tracked.hook_seen.setdefault(hook_key(agent), now)
        # every due hook of the poll at once (``Executor.carry_out_all``), each its own action: its values
        # worked out here under its correlation id, written into its VM and marked available on the pool
        due: list[tuple[AgentRuntime, str, str, str, AnswerHook]] = []  # agent, moid, path, cid, change
        failed: Exception | None = None
        due_now = hooks_due(status.pending_hooks, wait.answered, now, fresh=status.fresh)
        unready = self._network_unready(wait, due_now)
        if unready:  # its NICs go on networks its host does not have as asked yet: answered once it has
            self.backend.hold(status.agency, [a.agent for a in unready])
            due_now = [a for a in due_now if a not in unready]
        later = due_now[budget:]
        if later:  # agentvm answers them at the next polls: nothing to read meanwhile
            self.backend.hold(status.agency, [a.agent for a in later])
        for agent in due_now[:budget]:
            moid = agent.host.value
            path = self._host_path(wait.snapshot, moid) or agent.host_name
            cid = self._new_cid()
            try:
                with self.session.operation(cid):
                    change = self.executor.hook_answer(wait, agent)
            except NotFoundError:
                continue  # the agent went away (its host left the scope)
            except Exception as exc:  # reported now, raised once the others are answered
                self._report_failure("answer-hook", exc, cid, agency=wait.name, host=path, host_moid=moid)
                failed = failed or exc
                continue
            due.append((agent, moid, path, cid, change))
        outcomes = self.executor.carry_out_all([d[4] for d in due], operations=[d[3] for d in due])
        done = 0
        for (agent, moid, path, cid, change), outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome.error, NotFoundError):
                continue  # the agent went away (its host left the scope)
            if outcome.error is not None:
                self._report_failure(
                    "answer-hook", outcome.error, cid, agency=wait.name, host=path, host_moid=moid
                )
                failed = failed or outcome.error
                continue
            planned = wait.addresses.get(change.host_moid)
            address = f" with address {planned}" if planned else ""
            text = (
                f"{wait.name}: answered the {change.state.value} hook of {change.vm.value} on {path}{address}"
            )
            self._report("answer-hook", text, cid, agency=wait.name, host=path, host_moid=moid)
            key = hook_key(agent)
            wait.answered[key] = now
            self.metrics.hook_latency.observe(max(0.0, self._clock() - self._tracked.hook_seen[key]))
            done += 1
        if failed is not None:
            raise failed
        return done, budget - len(due_now[:budget])

    # -- healing --------------------------------------------------------------------------------------

    _heal_wake: float | None = None

    def _host_conditions(self) -> HostConditions:
        watched = self._conditions()
        return watched if self.snapshot is None else watched.over(self.snapshot.hosts)

    def _fresh_conditions(self, hosts: Sequence[MoRef], conditions: HostConditions) -> HostConditions:
        """``conditions`` with ``hosts`` read again now (one call each): vcsim reports no update for
        maintenance mode, and a host may have entered it since the last full pass."""
        maintenance, standby, unreachable = (
            set(conditions.maintenance),
            set(conditions.standby),
            set(conditions.unreachable),
        )
        for host in hosts:
            try:
                read = HostConditions.of([read_host_runtime(self.session, host)])
            except NotFoundError:
                unreachable.add(host)
                continue
            for group, now in (
                (maintenance, read.maintenance),
                (standby, read.standby),
                (unreachable, read.unreachable),
            ):
                group.discard(host)
                group.update(now)
        return HostConditions(
            frozenset(maintenance), frozenset(standby), frozenset(unreachable), conditions.known
        )

    def _misplaced(self, statuses: Sequence[AgencyStatus]) -> tuple[Misplaced, ...]:
        """The agents whose VM runs on another host: the watch's ``runtime.host``, else the full pass's.
        Looks up the agent VMs only (a dict lookup each), whatever the number of VMs in vCenter."""
        agent_vms = {a.vm for s in statuses for a in s.agents if a.vm is not None}
        placed: dict[MoRef, MoRef] = {}
        if self.snapshot is not None:
            for vm in agent_vms:
                found = self.snapshot.get(vm)
                if isinstance(found, VirtualMachine) and found.host is not None:
                    placed[vm] = found.host
        if self._placements is not None:
            placed.update(self._placements(agent_vms))
        names = {h.moref: h.name for h in self.snapshot.hosts} if self.snapshot is not None else {}
        return find_misplaced(statuses, placed, names)

    def _heal_now(
        self,
        statuses: Sequence[AgencyStatus],
        conditions: HostConditions,
        misplaced: Sequence[Misplaced] = (),
    ) -> int:
        now = self._clock()
        plan = plan_heal_agencies(statuses, self._heal, now, self.policy, conditions, misplaced)
        if plan.resolves or plan.migrations:
            acting = [*(i.host for i in plan.resolves), *(m.host for m in plan.migrations)]
            hosts = sorted({h for h in acting if h is not None}, key=lambda m: m.value)
            fresh = self._fresh_conditions(hosts, conditions)
            if fresh != conditions:
                plan = plan_heal_agencies(statuses, self._heal, now, self.policy, fresh, misplaced)
        self._heal = plan.state
        self._heal_wake = plan.wake_at
        for key in plan.healed:
            self.metrics.resolves_succeeded.inc(kind=key.kind.value)
            agency, host = self._subject(statuses, key)
            path = self._host_path(self.snapshot, host) if host else None
            where = path or host or f"agency {agency}"
            self.events.publish(
                "heal",
                f"{key.kind.value} on {where} is gone after agentvm resolved it",
                agency=agency,
                host=host,
                host_name=path,
                data={"kind": key.kind.value},
            )
        for decision in plan.decisions:
            if decision.announce:
                self._announce(decision, statuses)
        done = 0
        for decision in plan.by_verdict(Verdict.RESOLVE):
            if decision.misplaced is not None:
                done += self._move_back(decision.misplaced, decision.reason)
        resolving = tuple(d for d in plan.by_verdict(Verdict.RESOLVE) if d.issues)
        if not resolving:
            return done
        issues = plan.resolves

        def resolve() -> str:
            self._resolve_started = self._resolve_started or time.perf_counter()
            left = self.executor.resolve(issues)
            for issue in issues:
                self.metrics.resolves_attempted.inc(kind=issue.kind.value)
            reasons = "; ".join(d.reason for d in resolving)
            kept = f" ({len(left)} could not be resolved now)" if left else ""
            return f"resolved {len(issues)} issue(s): {reasons}{kept}"

        first = resolving[0].issues[0]
        self._act(
            "resolve",
            resolve,
            agency=first.agency_name,
            host=self._issue_host(first),
            host_moid=first.host.value if first.host else None,
        )
        return done + 1

    def _move_back(self, found: Misplaced, reason: str) -> int:
        """Move a misplaced agent VM back to its agent's host (RelocateVM), as one action."""
        host_path = self._host_path(self.snapshot, found.host.value) or found.host_name

        def move() -> str:
            self.metrics.resolves_attempted.inc(kind=Finding.VM_ON_WRONG_HOST.value)
            moved = self.executor.move_back(found)
            where = found.runs_on_name or found.runs_on.value
            done = "moved" if moved else "found"
            return (
                f"{found.agency_name}: {done} the agent VM {found.vm_name} back on {host_path} from {where}: "
                f"{reason}"
            )

        try:
            self._act("migrate", move, agency=found.agency_name, host=host_path, host_moid=found.host.value)
        except NotFoundError:
            return 0  # the VM or the host went away meanwhile: the next observation says what is left
        except (ConfigurationError, TransientError) as exc:
            # vCenter refused the move (InvalidState, no shared storage, ...): said once per attempt, and the
            # heal backoff retries and gives up as for any other heal; a lost vCenter fails the next observe
            text = (
                f"could not move the agent VM {found.vm_name} back to {host_path}: {exc}; "
                "retrying with backoff"
            )
            action_log(
                text, action="migrate", agency=found.agency_name, host=host_path, level=logging.WARNING
            )
            self.events.publish(
                "heal",
                text,
                level="warning",
                agency=found.agency_name,
                host=found.host.value,
                host_name=host_path,
                data={"action": "migrate", "kind": Finding.VM_ON_WRONG_HOST.value, "failed": True},
            )
            return 0
        return 1

    def _subject(self, statuses: Sequence[AgencyStatus], key: HealKey) -> tuple[str, str | None]:
        """(agency name, host moid) of a heal key, which holds EAM's ids (``agency-1``, ``agent-3``): the
        names an operator reads. From this observation, else from the issues seen last."""
        for status in statuses:
            if status.agency == key.agency:
                agent = next((a for a in status.agents if a.agent == key.agent), None)
                return status.name, agent.host.value if agent is not None and key.agent else None
        for issue in self._tracked.issues.values():
            if issue.agency == key.agency:
                host = issue.host.value if issue.host is not None and issue.agent == key.agent else None
                return issue.agency_name, host if key.agent else None
        return key.agency, None

    def _announce(self, decision: HealDecision, statuses: Sequence[AgencyStatus] = ()) -> None:
        agency, known_host = self._subject(statuses, decision.key)
        if decision.agency_name != decision.key.agency:
            agency = decision.agency_name  # the issue's or the misplaced VM's own name
        host = decision.host or (MoRef("HostSystem", known_host) if known_host else None)
        host_name = self._host_path(self.snapshot, host.value) if host else None
        host_name = host_name or decision.host_name
        failure = decision.verdict in (Verdict.GAVE_UP, Verdict.FLAPPING)
        level = "error" if failure else "warning"
        text = f"{decision.reason}; fix: {decision.fix}"
        action_log(
            text,
            action=decision.verdict.value,
            agency=agency,
            host=host_name,
            host_moid=host.value if host else None,
            level=logging.ERROR if failure else logging.WARNING,
        )
        data: dict[str, object] = {"verdict": decision.verdict.value, "kind": decision.key.kind.value}
        if decision.issues:
            data["key"] = decision.issues[-1].key
        self.events.publish(
            "heal",
            text,
            level=level,
            agency=agency,
            host=host.value if host else None,
            host_name=host_name,
            data=data,
        )

    def _track_issues(self, statuses: Sequence[AgencyStatus], conditions: HostConditions) -> None:
        """One event when an issue appears and one when it clears (level info: the heal events judge)."""
        now = {(i.agency, i.key): i for i in observed_issues(statuses)}
        for ref, issue in now.items():
            if ref not in self._tracked.issues:
                quiet = heal_class(issue.kind) is HealClass.MAINTENANCE or (
                    issue.host is not None and issue.host in conditions.maintenance
                )
                note = " (host in maintenance mode: expected)" if quiet else ""
                self.events.publish(
                    "issue",
                    f"issue {issue.key} {issue.kind.value} on {self._issue_host(issue) or issue.agency_name}"
                    f"{note}",
                    agency=issue.agency_name,
                    host=issue.host.value if issue.host else None,
                    host_name=self._issue_host(issue),
                    data={"key": issue.key, "kind": issue.kind.value, "state": "raised"},
                )
        for ref, issue in self._tracked.issues.items():
            if ref not in now:
                self.events.publish(
                    "issue",
                    f"issue {issue.key} {issue.kind.value} cleared",
                    agency=issue.agency_name,
                    host=issue.host.value if issue.host else None,
                    host_name=self._issue_host(issue),
                    data={"key": issue.key, "kind": issue.kind.value, "state": "cleared"},
                )
        self._tracked.issues = now

    def _track_misplaced(self, misplaced: Sequence[Misplaced]) -> None:
        """One ``issue`` event when an agent VM is found on another host and one when it is back."""
        now = {(m.agency, m.agent): m for m in misplaced}
        kind = Finding.VM_ON_WRONG_HOST.value
        for ref, found in now.items():
            if ref not in self._tracked.misplaced:
                self.events.publish(
                    "issue",
                    found.sentence(),
                    level="warning",
                    agency=found.agency_name,
                    host=found.host.value,
                    host_name=self._host_path(self.snapshot, found.host.value) or found.host_name,
                    data={
                        "kind": kind,
                        "state": "raised",
                        "vm": found.vm.value,
                        "runsOn": found.runs_on.value,
                    },
                )
        for ref, found in self._tracked.misplaced.items():
            if ref not in now:
                self.events.publish(
                    "issue",
                    f"the agent VM {found.vm_name} runs on {found.host_name} again",
                    agency=found.agency_name,
                    host=found.host.value,
                    host_name=self._host_path(self.snapshot, found.host.value) or found.host_name,
                    data={"kind": kind, "state": "cleared", "vm": found.vm.value},
                )
        self._tracked.misplaced = now

    # -- publishing -----------------------------------------------------------------------------------

    def _publish(
        self,
        statuses: Sequence[AgencyStatus],
        conditions: HostConditions,
        misplaced: Sequence[Misplaced] = (),
    ) -> None:
        """Publish the status report and the agents' metrics of this poll. Only what changed since the last
        poll is computed again (``controller.status.LiveStatus``): a poll that saw no change costs a lookup
        per host, whatever the number of agents."""
        if self._live is None:
            self._live = LiveStatus()
        live = self._live
        live.forget(w.name for w in self._waits.values())
        given_up = dict(self._flapping_decisions())  # keys agentvm gave up on as flapping -> why
        flapping_agents = frozenset(k.agent for k in given_up if k.agent is not None)
        moved = frozenset(m.agent for m in misplaced)
        by_agency: dict[str, Mapping[str, int]] = {
            w.name: {} for w in self._waits.values()
        }  # not observed yet: every state at 0
        for s in statuses:
            by_agency[s.name] = live.counts(s, conditions, flapping_agents, moved)
        self.metrics.set_agents_by_state(by_agency)
        self.metrics.set_issues_by_kind(count_kinds(observed_issues(statuses)))
        self.metrics.set_flapping(
            {(s.name, a.host.value): a.agent in flapping_agents for s in statuses for a in s.agents}
        )
        why_of: dict[tuple[str, str | None], str] = {}  # (agency id, agent id) -> why, the first key's
        for k, t in given_up.items():
            why_of.setdefault((k.agency, k.agent), t)
        flapping: dict[tuple[str, str], str] = {}
        for s in statuses if why_of else ():
            for a in s.agents:
                why = why_of.get((s.agency, a.agent))
                if why is not None:
                    flapping[(s.name, a.host.value)] = why
        reports = []
        missing = []
        for wait in self._waits.values():
            if wait.status is None:
                missing.append(wait.name)
                continue
            reports.append(
                live.report(
                    wait.name, wait.status, wait.resolved.hosts, wait.addresses, self.snapshot, misplaced
                )
            )
        self.report = StatusReport(
            self.session.url, tuple(reports), tuple(missing), conditions, flapping, self._host_network
        )

    _live: LiveStatus | None = None  # made by the first _publish
    _host_network: Mapping[str, HostNetworkShown] = {}  # each host's networking after the last full pass

    def _flapping_decisions(self) -> list[tuple[HealKey, str]]:
        """(key, sentence) of every key the heal state gave up on as flapping."""
        out = []
        for key in sorted(self._heal.flapping, key=HealKey.sort_key):
            attempts = self._heal.attempts[key]
            out.append(
                (
                    key,
                    f"agentvm gave up healing {key.kind.value}: it came back {attempts.recurred} time(s) "
                    f"after {attempts.count} heal(s); find what keeps undoing it, then run agentvm resolve",
                )
            )
        return out

    # -- helpers --------------------------------------------------------------------------------------

    def resolve_keys(self, keys: Sequence[int] | None) -> dict[str, object]:
        """Resolve the observed issues with these keys (all when None, which also moves every misplaced agent
        VM back: ``"moved"`` lists them), on the loop thread. For the API.

        Raises NotFoundError naming unknown keys. The heal backoff of what was resolved starts afresh.
        """
        known = {i.key: i for i in self._tracked.issues.values()}
        moved: list[str] = []
        if keys is None:
            chosen = list(known.values())
            for found in list(self._tracked.misplaced.values()):
                if self._move_back(found, "on request"):
                    moved.append(found.vm.value)
                self._heal = self._heal.with_forgotten([HealKey.misplaced(found)])
        else:
            unknown = [k for k in keys if k not in known]
            if unknown:
                listed = ", ".join(str(k) for k in sorted(known)) or "none"
                raise NotFoundError(
                    f"no issue with key {', '.join(map(str, unknown))} (current keys: {listed})"
                )
            chosen = [known[k] for k in keys]
        if not chosen:
            return {"resolved": [], "left": [], **({"moved": moved} if keys is None else {})}
        left: tuple[int, ...] = ()

        def resolve() -> str:
            nonlocal left
            left = self.executor.resolve(chosen)
            return f"resolved {len(chosen)} issue(s) on request: {', '.join(str(i.key) for i in chosen)}"

        agencies = {i.agency_name for i in chosen}
        hosts = {i.host.value for i in chosen if i.host is not None}
        one_host = next(iter(hosts)) if len(hosts) == 1 and all(i.host for i in chosen) else None
        self._act(
            "resolve",
            resolve,
            agency=next(iter(agencies)) if len(agencies) == 1 else None,
            host=self._issue_host(chosen[0]) if one_host else None,
            host_moid=one_host,
        )
        self._heal = self._heal.with_forgotten(HealKey.of(i) for i in chosen)
        result: dict[str, object] = {
            "resolved": [i.key for i in chosen if i.key not in left],
            "left": list(left),
        }
        if keys is None:
            result["moved"] = moved
        return result

    def _calls(self) -> int:
        return self.executor.calls()

    def host_path(self, moid: str) -> str | None:
        """The inventory path of host ``moid`` as the last full pass read it (None: unknown). Any thread."""
        return self._host_path(self.snapshot, moid)

    @staticmethod
    def _host_path(snapshot: InventorySnapshot | None, moid: str) -> str | None:
        if snapshot is None:
            return None
        found = snapshot.get(MoRef("HostSystem", moid))  # by moid in one lookup: called per host and hook
        if isinstance(found, Host):
            return found.path or None
        try:
            return snapshot.find_host(moid).path or None
        except (NotFoundError, ConfigurationError):
            return None

    def _issue_host(self, issue: Issue) -> str | None:
        if issue.host is None:
            return None
        return self._host_path(self.snapshot, issue.host.value) or issue.host_name


def _after(planned: Mapping[str, HostNetworkShown]) -> dict[str, HostNetworkShown]:
    """Each host's networking once the full pass carried its plan out: what it was preparing is ready (a
    change that failed failed the pass, which is retried and plans it again)."""
    return {
        moid: HostNetworkShown("ready") if shown.state == "preparing" else shown
        for moid, shown in planned.items()
    }
