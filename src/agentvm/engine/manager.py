"""``Engine``: agentvm's own ESX Agent Manager — EAM's API (``engine.api.AgentManager``) over vim25.

Callers: the lab's EAM emulator (a SOAP face on it) and ``backends.direct``. They also own the loop: the
engine has no thread of its own. Run ``step()`` whenever ``wait_for_work()`` says there is something to do;
``step`` observes vSphere (through an ``Infrastructure``), reconciles with ``core.agents`` and carries out
the actions, recording each outcome as it finishes. A step with nothing changed (no inventory change, no
API call, no action left) costs one ``generation()`` call.

The actions run concurrently, as vCenter's EAM deploys: at most ``deploy_per_cluster`` at a time in one
cluster (the host's compute resource; a standalone host is its own) and ``deploy_total`` in all; the
actions on one host (a unit) run one after the other, in the plan's order, on the engine's workers.
``step`` hands its plan's units to them and returns; steps never overlap (a step lock); a loop lets
``pace()`` pass between steps while units run, so that it looks again once several have finished, not at
every one (a step at 2,500 agents costs a fraction of a second of the process's GIL). The next step
plans while earlier units still run (a host whose hook was answered is powered on while other hosts of
the same plan still deploy): ``core.agents.reconcile`` is told what is in flight (``InFlight``) and
leaves those hosts alone, so a host never gets a second deploy while its first is running, and an agency
with an upgrade deploy in flight starts no other (one host at a time per agency). A host counts as in
flight from before the step observes vSphere, so a unit that finishes while the step looks is judged at
the next step, by an observation made after it. ``drain`` drops the units not started and waits for the
running ones (a stop).

After a deploy the engine pins the VM to its host and gives it HA's top restart priority (in a cluster),
and has a standalone host start it first and stop it last (``Infrastructure.start_with_host``: its
autostart, since no HA restarts it there); each is a no-op where it does not apply, and a failure is
logged, not fatal (the VM works without them).

API calls and ``step`` may come from different threads: the state is guarded by a lock that is never held
across a vSphere call. State is saved to a JSON file (``engine.store``) after every API change (before the
call returns) and at the end of every step that changed it, outside that lock.

An action that fails for a transient reason (``InfraError``) is held back with jittered, capped exponential
backoff (``retry``, a ``core.heal.Backoff``; the decision is ``core.agent_ops.record``'s, the clock is
this engine's): ``wait_for_work`` wakes when the retry falls due. After ``retry.max_attempts`` failures
the engine gives up with an issue on the agent — OvfInvalidFormat for a deploy, InvalidConfig for a power
operation — and Resolve arms it again. Deleting a VM is retried every ``retry.cap`` seconds at most, never
given up.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from agentvm.core import agent_ops
from agentvm.core.agent_placement import MAX_AGENT_NAME, MAX_UUID_AGENT_NAME, match_agent_config
from agentvm.core.agent_state import (
    Action,
    AgencyState,
    AgentState,
    AgentVm,
    Deployed,
    DeployFailed,
    DeployVm,
    DestroyVm,
    Done,
    EngineObservation,
    EnginePlan,
    EngineState,
    Failed,
    InFlight,
    Outcome,
    PowerOff,
    PowerOn,
)
from agentvm.core.agents import reconcile
from agentvm.core.heal import Backoff
from agentvm.engine.api import (
    Caller,
    InvalidAgencyScope,
    InvalidAgentConfiguration,
    InvalidArgument,
    InvalidState,
    InvalidUrl,
    ManagedObjectNotFound,
    NotAuthorized,
)
from agentvm.engine.infra import DeployError, InfraError, Infrastructure, OvfInvalid
from agentvm.engine.store import StateFile
from agentvm.model.agency import (
    DETAIL_ERROR,
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    GoalState,
    Issue,
    MoRef,
    PowerState,
    Remedy,
    Status,
)

log = logging.getLogger(__name__)

PRODUCT_LINES = ("esx", "embeddedEsx")

# how many actions (deploys, power operations, deletes) run at once: per cluster, and in all
DEPLOY_PER_CLUSTER = 4
DEPLOY_TOTAL = 32
PACE_MIN, PACE_MAX = 0.1, 5.0  # ``Engine.pace`` bounds, seconds


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _by_host(actions: Sequence[Action], obs: EngineObservation) -> list[tuple[MoRef, MoRef, list[Action]]]:
    """The actions grouped by the host they act on, in plan order: (its cluster, the host, its actions).

    The cluster is the host's compute resource (a standalone host's is its own); a VM whose host is not
    observed counts as a host of its own.
    """
    vm_hosts = {v.vm: v.host for v in obs.vms if v.host is not None}
    units: dict[MoRef, tuple[MoRef, MoRef, list[Action]]] = {}
    for action in actions:
        host = action.host if isinstance(action, DeployVm) else vm_hosts.get(action.vm, action.vm)
        if host not in units:
            observed = obs.hosts.get(host)
            cluster = observed.parent if observed is not None and observed.parent is not None else host
            units[host] = (cluster, host, [])
        units[host][2].append(action)
    return list(units.values())


class Engine:
    """Implements ``AgentManager``. ``namespace`` marks the VMs this engine owns (the extension key)."""

    def __init__(
        self,
        infra: Infrastructure,
        state_file: Path | None = None,
        *,
        namespace: str = "agentvm",
        clock: Callable[[], datetime] = _utcnow,
        retry: Backoff = agent_ops.ENGINE_RETRY,
        retry_seed: int | None = None,
        deploy_per_cluster: int = DEPLOY_PER_CLUSTER,
        deploy_total: int = DEPLOY_TOTAL,
    ) -> None:
        """Load the state file if there is one (ValueError when it is unreadable or of another namespace).

        The VMs are re-read from vSphere at the first ``step``, which reconciles the file with them.
        ``retry``: how an action that failed for a transient reason is retried, and when the engine gives
        up with an issue (tests shorten it); ``retry_seed`` fixes its jitter (default: random per engine,
        so that engines do not retry in step). ``deploy_per_cluster`` / ``deploy_total``: how many of a
        step's actions run at once in one cluster and in all (ValueError below 1; 1 and 1: one by one).
        """
        for name, value in (("deploy_per_cluster", deploy_per_cluster), ("deploy_total", deploy_total)):
            if value < 1:
                raise ValueError(f"{name} must be 1 or more (got {value}): it bounds the actions run at once")
        self.deploy_per_cluster = deploy_per_cluster
        self.deploy_total = deploy_total
        self._infra = infra
        self._store = StateFile(state_file) if state_file is not None else None
        loaded = self._store.load() if self._store else None
        if loaded is not None and loaded.namespace != namespace:
            raise ValueError(
                f"{state_file} belongs to the engine of {loaded.namespace!r}, not {namespace!r}: "
                "give this engine its own state file"
            )
        self._state = loaded or EngineState(namespace=namespace)
        self._saved = loaded
        self._clock = clock
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._save_lock = threading.Lock()  # one state-file write at a time (``_persist``)
        self._obs: EngineObservation | None = None
        self._vms_by_ref: dict[MoRef, AgentVm] = {}  # the last observation's VMs, by reference
        self._agent_index: tuple[EngineState | None, dict[str, tuple[AgencyState, AgentState]]] = (None, {})
        self._plan: EnginePlan | None = None
        self._seen: int | None = None
        self._dirty = True
        self._stale: set[str] = set()  # agencies changed by an API call since the last reconcile
        self.retry = retry
        self._seed = retry_seed if retry_seed is not None else secrets.randbits(32)
        self._wake_at: datetime | None = None  # a held retry falls due then: step again
        self._observe_failures = 0  # observations in a row that failed (vSphere unreachable)
        self._observe_at: datetime | None = None  # after a failed one, no observation before then
        # steps that observed vSphere and reconciled (read by tests, which wait for one more pass rather
        # than sleep to show that a pass did not do something)
        self.passes = 0
        # the most actions ever in flight at once, in all and in one cluster (read by tests and benchmarks)
        self.peak_in_flight = 0
        self.peak_in_flight_per_cluster = 0
        # the units handed to the workers (``_dispatch``): queued ones in plan order, and every unit not
        # finished yet by its host; guarded by ``_units`` (never held with ``_lock`` taken inside it)
        self._units = threading.Condition()
        # queued units by cluster, in plan order: those without a deploy (``_quick``), those with one
        self._quick: dict[MoRef, deque[tuple[MoRef, MoRef, list[Action]]]] = {}
        self._queue: dict[MoRef, deque[tuple[MoRef, MoRef, list[Action]]]] = {}
        self._in_flight: dict[MoRef, list[Action]] = {}
        self._running: Counter[MoRef] = Counter()  # units running, by cluster
        self._workers = 0
        self._failure: BaseException | None = None  # an unexpected error of a unit: raised by the next step
        self._step_seconds = 0.0  # what the last step that looked cost (``pace``)

    # ============================================================================ the loop's side
    def step(self, *, act: bool = True) -> bool:
        """Observe, reconcile, act. Returns True when it acted (so another step should follow soon).

        ``act=False`` (``agentvm status``, a read-only command): observe and judge as EAM would (issues
        raised, runtimes current) but carry out no action and save nothing; the next ``step()`` plans
        again from a fresh observation.

        Raises InfraError when vSphere cannot be observed; the next observation then waits with the same
        backoff as a failed action (``retry``; never given up): a step before then does nothing.
        """
        with self._step_lock:
            with self._units:
                failure, self._failure = self._failure, None
            if failure is not None:
                with self._lock:
                    self._dirty = True
                raise failure
            generation = self._infra.generation()
            with self._lock:
                if self._backing_off():
                    return False
                if not self._dirty and generation == self._seen and not self._due():
                    return False
                self._dirty = False
                scope = self._scope()
            in_flight = self._in_flight_now()  # before observing: see the module docstring
            began = time.monotonic()
            try:
                obs = self._infra.observe(scope)
                obs = EngineObservation(
                    scope=obs.scope,
                    hosts=obs.hosts,
                    default_pools=obs.default_pools,
                    default_folders=obs.default_folders,
                    names=obs.names,
                    vms=tuple(self._infra.find_owned_vms(self._state.namespace)),
                )
            except InfraError:
                with self._lock:
                    self._dirty = True
                    self._observe_failures += 1
                    n = self._observe_failures
                    delay = self.retry.delay(n, agent_ops.jitter_fraction(self._seed, "observe", "", n))
                    self._observe_at = self._clock() + timedelta(seconds=delay)
                raise
            with self._lock:
                self._observe_failures, self._observe_at = 0, None
                if self._scope() != scope:
                    # an agency was created, rescoped or forgotten while we looked: this observation has
                    # not seen its hosts, and judging its VMs by it would take them for strays (and delete
                    # them). Look again, with the scope as it is now.
                    self._dirty = True
                    return True
                self._obs = obs
                self._vms_by_ref = {v.vm: v for v in obs.vms}
                self._seen = generation
                plan = reconcile(self._state, obs, self._clock(), in_flight)
                settled = plan.state == self._state
                self._state = plan.state
                self._plan = plan
                self._wake_at = plan.wake_at
                self._stale.clear()
                if not settled:
                    # look again: the state moved on (e.g. an upgrade finished on one host, so the next
                    # host may start); state changes are finite, so this ends at a fixpoint. A unit that
                    # finishes asks for another look too (``_work``).
                    self._dirty = True
                self.passes += 1
                self._step_seconds = time.monotonic() - began
            if not act:
                with self._lock:
                    self._dirty = True  # nothing was carried out: the next step plans it again
                return False
            self._dispatch(plan.actions, obs)
            self._persist()
            return bool(plan.actions) or not settled

    def _scope(self) -> tuple[MoRef, ...]:
        """The compute resources of every agency, in order, each once (lock held)."""
        return tuple(dict.fromkeys(cr for a in self._state.agencies for cr in a.config.scope))

    def _due(self) -> bool:
        """A held retry has fallen due (lock held)."""
        return self._wake_at is not None and self._clock() >= self._wake_at

    def _backing_off(self) -> bool:
        """The last observation failed and the next one is not due yet (lock held)."""
        return self._observe_at is not None and self._clock() < self._observe_at

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until a step has something to do; True when it has (an API
        call, a change in vSphere, or a retry that falls due)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                held = self._backing_off()
                if not held and (self._dirty or self._due()):
                    return True
                seen = self._seen
            if not held and (seen is None or self._infra.generation() != seen):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if held or seen is None:
                time.sleep(min(remaining, 0.05))  # vSphere cannot be observed: wait out the backoff
                continue
            # short slices, so that an API call (which sets _dirty) is noticed soon too
            self._infra.wait_for_change(seen, min(remaining, 0.05))

    def _in_flight_now(self) -> InFlight:
        """The hosts of the units not finished yet, and the agencies with an upgrade deploy among them."""
        with self._units:
            return InFlight(
                hosts=frozenset(self._in_flight),
                upgrades=frozenset(
                    a.agency
                    for actions in self._in_flight.values()
                    for a in actions
                    if isinstance(a, DeployVm) and a.upgrade
                ),
            )

    def pace(self) -> float:
        """Seconds a loop lets pass before its next step: 0 while no unit runs; else four times what the
        last step cost (its GIL share stays under a fifth), from 0.1 to 5 s. A power-on after an answered
        hook waits that long at most."""
        with self._units:
            if not self._in_flight:
                return 0.0
        return min(PACE_MAX, max(PACE_MIN, 4 * self._step_seconds))

    @property
    def in_flight(self) -> int:
        """Units (one host's actions) handed to the workers and not finished yet."""
        with self._units:
            return len(self._in_flight)

    def _dispatch(self, actions: Sequence[Action], obs: EngineObservation) -> None:
        """Queue a plan's actions by host and start workers for them: at most ``deploy_per_cluster`` units
        run at once in one cluster and ``deploy_total`` in all; each outcome is recorded as it finishes."""
        units = _by_host(actions, obs)
        if not units:
            return
        with self._units:
            for cluster, host, steps in units:
                assert host not in self._in_flight, f"{host} planned while its actions still run"
                self._in_flight[host] = steps
                deploys = any(isinstance(a, DeployVm) for a in steps)
                (self._queue if deploys else self._quick).setdefault(cluster, deque()).append(
                    (cluster, host, steps)
                )
            queued = sum(map(len, self._quick.values())) + sum(map(len, self._queue.values()))
            start = min(self.deploy_total - self._workers, queued)
            self._workers += max(start, 0)
        for _ in range(start):
            threading.Thread(target=self._work, name="agentvm-engine-action", daemon=True).start()

    def _take(self) -> tuple[MoRef, MoRef, list[Action]] | None:
        """The next queued unit whose cluster has room (waits for room), those without a deploy first (a
        power-on takes a moment and brings an agent to green; a deploy takes minutes); None when nothing
        is queued (the worker then ends)."""
        with self._units:
            while self._quick or self._queue:
                # a look per cluster, not per queued unit: every finished unit wakes every waiting worker
                for queues in (self._quick, self._queue):
                    cluster = next((c for c in queues if self._running[c] < self.deploy_per_cluster), None)
                    if cluster is None:
                        continue
                    unit = queues[cluster].popleft()
                    if not queues[cluster]:
                        del queues[cluster]
                    self._running[cluster] += 1
                    self.peak_in_flight = max(self.peak_in_flight, sum(self._running.values()))
                    self.peak_in_flight_per_cluster = max(
                        self.peak_in_flight_per_cluster, self._running[cluster]
                    )
                    return unit
                self._units.wait()
            self._workers -= 1
            self._units.notify_all()  # ``drain`` waits for the workers to end
            return None

    def _work(self) -> None:
        while (unit := self._take()) is not None:
            cluster, host, steps = unit
            try:
                for action in steps:
                    self._record(action, self._execute(action))
            except BaseException as exc:  # a bug, not vSphere: the next step raises it, the loop logs it
                with self._units:
                    self._failure = self._failure or exc
            finally:
                with self._lock:
                    self._dirty = True  # look again (before it leaves the flight): the world changed
                with self._units:
                    self._running[cluster] -= 1
                    del self._in_flight[host]
                    self._units.notify_all()

    def drain(self, timeout: float = 10.0) -> bool:
        """Drop the units not started yet (a later step plans them again) and wait up to ``timeout`` s
        for the running ones to finish; True when none is left. For a stop."""
        deadline = time.monotonic() + timeout
        with self._units:
            for queues in (self._quick, self._queue):
                for units in queues.values():
                    for _, host, _ in units:
                        del self._in_flight[host]
            self._quick.clear()
            self._queue.clear()
            self._units.notify_all()
            while self._in_flight or self._workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._units.wait(remaining)
        self._persist()
        return True

    def _record(self, action: Action, outcome: Outcome) -> None:
        with self._lock:
            self._state = agent_ops.record(
                self._state, action, outcome, self._clock(), retry=self.retry, seed=self._seed
            )

    def _execute(self, action: Action) -> Outcome:
        """Carry out one action; ``Failed`` when it failed for a transient reason (``agent_ops.record``
        holds it back, with backoff, and gives up with an issue after ``retry.max_attempts``)."""
        infra = self._infra
        try:
            if isinstance(action, DeployVm):
                return self._deploy(action)
            if isinstance(action, PowerOn):
                infra.power_on(action.vm)
            elif isinstance(action, PowerOff):
                infra.power_off(action.vm)
            elif isinstance(action, DestroyVm):
                infra.destroy_vm(action.vm)
            # what the engine did by itself (a heal's power-on has no other trace in agentvm run's log)
            log.info("carried out %s of %s", type(action).__name__, action.vm)
            return Done()
        except InfraError as e:
            log.warning("%s failed, will retry with backoff: %s", type(action).__name__, e)
            return Failed(str(e))

    def _deploy(self, action: DeployVm) -> Outcome:
        infra = self._infra
        try:
            vm = infra.deploy_agent_vm(
                host=action.host,
                ovf_url=action.ovf_url,
                ovf_properties=action.ovf_properties,
                name=action.name,
                datastore=action.datastore,
                network=action.network,
                folder=action.folder,
                pool=action.pool,
                marker=action.marker,
                disk_provisioning=action.disk_provisioning,
            )
        except DeployError as e:
            log.warning("deploying %s on %s failed: %s", action.name, action.host, e)
            detail: dict[str, str | tuple[str, ...]] = {DETAIL_ERROR: str(e)}
            if isinstance(e, OvfInvalid):
                detail[DETAIL_ERROR] = e.errors
            return DeployFailed(e.issue_kind, detail)
        try:
            # agent VMs stay on their host and restart first (docs/eam.md, "Maintenance mode, DRS and HA");
            # the VM works without these, so a failure here is logged, not fatal
            infra.pin_to_host(vm, action.host)
            infra.ha_top_priority(vm)
        except InfraError as e:
            log.warning("pinning %s to %s failed: %s", vm, action.host, e)
        try:
            # on a standalone host (no HA): the host starts it first and stops it last
            infra.start_with_host(vm, action.host)
        except InfraError as e:
            log.warning("adding %s to the autostart sequence of %s failed: %s", vm, action.host, e)
        return Deployed(vm)

    def _persist(self) -> None:
        """Write the state file when the state changed, without the lock (API readers go on meanwhile;
        JSON of 2,500 agents takes tens of ms). Writers take turns and each writes the state as it is
        then, so the file never goes back to an older state, and a change made before the call is in the
        file when it returns."""
        if self._store is None:
            return
        with self._save_lock:
            with self._lock:
                state = self._state
            if state is not self._saved and state != self._saved:
                self._store.save(state)
            self._saved = state

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """The lock, for an API call that changes the state (``_changed``); the state file is written
        once it is released, before the call returns: an acknowledged change is never lost."""
        try:
            with self._lock:
                yield
        finally:
            self._persist()

    def _changed(self, agency_id: str | None = None) -> None:
        """After an API call changed the state (lock held, by ``_changing``): step again; the agency is
        yellow till then."""
        self._dirty = True
        if agency_id is not None:
            self._stale.add(agency_id)

    def _status(self, agency: AgencyState, planned: Status | None, issues: bool) -> Status:
        if issues:
            return Status.RED  # an issue raised or kept since the last step
        if planned is None or agency.id in self._stale:
            return Status.YELLOW  # changed since the last reconcile: working on it
        return planned

    # ============================================================================ lookups
    def _agency(self, agency_id: str) -> AgencyState:
        agency = self._state.agency(agency_id)
        if agency is None:
            raise ManagedObjectNotFound(MoRef("Agency", agency_id))
        return agency

    def _agent(self, agent_id: str) -> tuple[AgencyState, AgentState]:
        found = self._agents().get(agent_id)
        if found is None:
            raise ManagedObjectNotFound(MoRef("Agent", agent_id))
        return found

    def _agents(self) -> dict[str, tuple[AgencyState, AgentState]]:
        """Agent id → its agency and itself in the current state (lock held): built once per state, so
        that AgentQueryRuntime over 2,500 agents is not 2,500 scans of them."""
        if self._agent_index[0] is not self._state:
            index = {a.id: (agency, a) for agency in self._state.agencies for a in agency.agents}
            self._agent_index = (self._state, index)
        return self._agent_index[1]

    def _writable(self, caller: Caller, agency_id: str) -> AgencyState:
        agency = self._agency(agency_id)
        if caller.extension and agency.solution_id != caller.user:
            # [I] not documented (docs/eam.md, "Ownership"): NotAuthorized is what a solution should expect
            raise NotAuthorized(f"agency {agency_id} belongs to {agency.solution_id}, not to {caller.user}")
        if agency.destroying:
            raise InvalidState(f"agency {agency_id} is being destroyed: its config and goal cannot change")
        return agency

    # ============================================================================ validation
    def _validate(self, config: AgencyConfig) -> None:
        """EAM's synchronous checks (docs/eam.md, "Methods"); raises the fault of the first problem found."""
        if not config.agency_name:
            raise InvalidArgument("agencyName is required: give the agency a name", "agencyName")
        limit = MAX_UUID_AGENT_NAME if config.use_uuid_vm_name else MAX_AGENT_NAME
        if config.use_uuid_vm_name and not config.agent_name:
            raise InvalidArgument("useUuidVmName needs an agentName (at most 43 characters)", "agentName")
        if config.agent_name and len(config.agent_name) > limit:
            raise InvalidArgument(f"agentName is longer than {limit} characters: shorten it", "agentName")
        if not config.agent_configs:
            raise InvalidAgentConfiguration(
                "agentConfig is empty: give at least one agent config", "agentConfig"
            )
        for index, agent in enumerate(config.agent_configs):
            self._validate_agent_config(agent, index)
        if config.scope:
            obs = self._infra.observe(config.scope)
            unknown = [cr for cr in config.scope if cr not in obs.scope]
            if unknown:
                raise InvalidAgencyScope(unknown)
        for url in dict.fromkeys(a.ovf_package_url for a in config.agent_configs if a.ovf_package_url):
            self._infra.check_url(url)

    @staticmethod
    def _validate_agent_config(agent: AgentConfig, index: int) -> None:
        if agent.product_line_id is not None and agent.product_line_id not in PRODUCT_LINES:
            raise InvalidAgentConfiguration(
                f"agentConfig[{index}].productLineId {agent.product_line_id!r} is not one of "
                f"{', '.join(PRODUCT_LINES)}",
                "productLineId",
                index,
            )
        url = agent.ovf_package_url
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidUrl(
                    url, "not an http(s) URL: publish the OVF over HTTP or HTTPS", malformed=True
                )

    # ============================================================================ EsxAgentManager
    def create_agency(self, caller: Caller, config: AgencyConfig, goal: GoalState) -> str:
        """Validate (I/O, outside the lock), then record the agency; agents follow over the next steps."""
        self._validate(config)
        if goal is GoalState.UNINSTALLED:
            raise InvalidArgument("initialGoalState must be enabled or disabled", "initialGoalState")
        with self._changing():
            self._state, agency_id = agent_ops.add_agency(self._state, config, goal, caller.user)
            self._changed(agency_id)
            return agency_id

    def query_agencies(self, caller: Caller) -> list[str]:
        with self._lock:
            return [
                a.id
                for a in self._state.agencies
                if not a.destroying and (not caller.extension or a.solution_id == caller.user)
            ]

    # ============================================================================ Agency
    def agency_config(self, agency: str) -> AgencyConfig:
        with self._lock:
            return self._agency(agency).config

    def agency_runtime(self, agency: str) -> AgencyRuntime:
        with self._lock:
            a = self._agency(agency)
            planned = self._plan.agency_status.get(a.id) if self._plan else None
            status = self._status(a, planned, bool(a.issues) or any(x.issues for x in a.agents))
            return AgencyRuntime(
                agency=a.id,
                goal_state=a.goal,
                status=status,
                issues=tuple(agent_ops.issues_of(self._state, a.id)),
                solution_id=a.solution_id,
            )

    def agency_agents(self, agency: str) -> list[str]:
        with self._lock:
            return [a.id for a in self._agency(agency).agents]

    def agency_solution_id(self, agency: str) -> str:
        with self._lock:
            return self._agency(agency).solution_id

    def update_agency(self, caller: Caller, agency: str, config: AgencyConfig) -> None:
        with self._lock:
            self._writable(caller, agency)
        self._validate(config)
        with self._changing():
            self._writable(caller, agency)
            self._state = agent_ops.update_config(self._state, agency, config)
            self._changed(agency)

    def set_goal_state(self, caller: Caller, agency: str, goal: GoalState) -> None:
        with self._changing():
            current = self._writable(caller, agency)
            if current.goal is GoalState.UNINSTALLED and goal is not GoalState.UNINSTALLED:
                raise InvalidState(
                    f"agency {agency} is uninstalled: create a new agency instead of enabling it"
                )
            self._state = agent_ops.set_goal(self._state, agency, goal)
            self._changed(agency)

    def destroy_agency(self, caller: Caller, agency: str) -> None:
        with self._changing():
            a = self._agency(agency)
            if caller.extension and a.solution_id != caller.user:
                raise NotAuthorized(f"agency {agency} belongs to {a.solution_id}, not to {caller.user}")
            self._state = agent_ops.destroy(self._state, agency)
            self._changed(agency)

    def purge_unclaimed(self, caller: Caller, agency_name: str) -> None:
        """Delete the VMs of agency ``agency_name`` that this engine does not know (deployed by an engine
        whose state is lost): for ``destroy`` with the direct backend. Not part of EAM's API. An agency of
        that name created afterwards adopts them instead."""
        del caller  # the namespace is the owner: every VM it marks is this engine's
        with self._changing():
            self._state = agent_ops.purge(self._state, agency_name)
            self._changed()

    def owned_vms(self, agency_name: str) -> int:
        """How many VMs carrying this engine's marker for agency ``agency_name`` the last step saw."""
        with self._lock:
            vms = self._obs.vms if self._obs is not None else ()
            return sum(1 for v in vms if v.marker.agency_name == agency_name)

    def add_issue(self, agency: str, issue: Issue) -> Issue:
        with self._changing():
            self._agency(agency)
            self._state, stored = agent_ops.add_agency_issue(self._state, agency, issue, self._clock())
            self._changed()
            return stored

    # ============================================================================ Agent
    def agent_config(self, agent: str) -> AgentConfig:
        with self._lock:
            agency, a = self._agent(agent)
            host = self._obs.hosts.get(a.host) if self._obs else None
            matched = match_agent_config(agency.config.agent_configs, host) if host else None
            return matched or agency.config.agent_configs[0]

    def agent_runtime(self, agent: str) -> AgentRuntime:
        with self._lock:
            agency, a = self._agent(agent)
            obs = self._obs
            host = obs.hosts.get(a.host) if obs else None
            vm = self._vms_by_ref.get(a.vm) if a.vm else None
            planned = self._plan.agent_status.get(a.id) if self._plan else None
            status = self._status(agency, planned, bool(a.issues))
            goal = (
                GoalState.UNINSTALLED if agency.effective_goal is GoalState.UNINSTALLED else GoalState.ENABLED
            )
            return AgentRuntime(
                agent=a.id,
                agency=agency.id,
                host=a.host,
                host_name=host.name if host else a.host.value,
                goal_state=goal,
                status=status,
                power_state=vm.power_state if vm else PowerState.POWERED_OFF,
                vm_name=a.vm_name or agency.config.agent_name or agency.config.agency_name,
                vm=a.vm,
                vm_ip=vm.ip if vm else None,
                hook=a.hook,
                issues=a.issues,
            )

    def mark_as_available(self, agent: str) -> None:
        with self._changing():
            agency, a = self._agent(agent)
            if a.hook is None:
                return  # nothing pending: a no-op
            self._state = agent_ops.release_hook(self._state, agent)
            self._changed(agency.id)

    # ============================================================================ EamObject
    def _check_obj(self, obj: str | None) -> None:
        if obj is not None and self._state.agency(obj) is None and obj not in self._agents():
            kind = "Agent" if obj.startswith("agent-") else "Agency"
            raise ManagedObjectNotFound(MoRef(kind, obj))

    def query_issues(self, obj: str | None, keys: Sequence[int] = ()) -> list[Issue]:
        with self._lock:
            self._check_obj(obj)
            issues = agent_ops.issues_of(self._state, obj)
            return [i for i in issues if i.key in set(keys)] if keys else issues

    def resolve(self, obj: str | None, keys: Sequence[int]) -> list[int]:
        """Start the remedies; returns the keys not found, and those this engine cannot act on now.

        [I] Issues whose remedy is "none" (ManagedHostNotReachable, HostInStandbyMode) or taking a host
        out of maintenance mode (which this engine does not do) are kept and reported as not resolvable now;
        passive ones are rechecked by the next step, which drops them if their condition is gone.
        """
        if not keys:
            raise InvalidArgument("Resolve needs at least one issue key", "issueKey")
        with self._changing():
            self._check_obj(obj)
            by_key = {i.key: i for i in agent_ops.issues_of(self._state, obj)}
            self._state, not_found = agent_ops.resolve(self._state, obj, keys)
            stuck = [
                k for k in keys if k in by_key and by_key[k].remedy in (Remedy.NONE, Remedy.EXIT_MAINTENANCE)
            ]
            found = self._state.find_agent(obj) if obj else None
            self._changed(found[0].id if found else obj)
            return [*not_found, *stuck]

    def resolve_all(self, obj: str | None) -> None:
        with self._lock:
            self._check_obj(obj)
            keys = [i.key for i in agent_ops.issues_of(self._state, obj)]
        if keys:
            self.resolve(obj, keys)

    # ============================================================================ for tests and tools
    @property
    def state(self) -> EngineState:
        """The current state (a frozen value)."""
        with self._lock:
            return self._state

    def run_until_quiet(self, max_steps: int = 1000) -> int:
        """Step until a step does nothing and no action is in flight; returns the steps taken. For tests
        and the lab's tools."""
        for n in range(1, max_steps + 1):
            with self._units:
                idle = not self._in_flight  # read first: a unit finishing during the step makes it dirty
            if self.step() or self._dirty:
                continue
            if idle:
                return n
            with self._units:
                if self._in_flight:
                    self._units.wait(0.05)
        raise RuntimeError(f"the engine did not settle within {max_steps} steps")
