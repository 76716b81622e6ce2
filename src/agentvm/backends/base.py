"""What the controller and the CLI need from "something that runs agents", in model values.

Two implementations: ``backends.eam.EamBackend`` (vCenter's ESX Agent Manager, through ``eam.EamClient``)
and ``backends.direct.DirectBackend`` (agentvm's own ``engine.Engine`` on vim25, for vCenters without EAM).
Callers: ``agentvm apply / status / resolve / destroy`` and the controller (``agentvm run``).

``Backend`` is the protocol; ``AgencyBackend`` carries it out once for both, over ``AgencyPort`` — the
EAM calls (by agency and agent id) that both EAM and the engine answer. So both paths have the same
semantics: what "apply" does, what counts as a change, which object a Resolve goes to.

Agencies are named by their ``agency_name``; two visible agencies with one name is a configuration error
(the fix is to destroy one). Errors are agentvm errors only: ConfigurationError / NotFoundError (fix the
input), TransientError (retry later), AuthenticationError.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from agentvm.core.agency_diff import config_changes, is_upgrade
from agentvm.core.agent_reads import AgencyReads, Look, ReadPolicy, after_reads, must_list, plan_reads
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentRuntime,
    GoalState,
    HookState,
    Issue,
    MoRef,
    Status,
)
from agentvm.model.errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from agentvm.eam.client import EamClient
    from agentvm.vsphere.session import Session

# ------------------------------------------------------------------------------------------------ values


class ApplyAction(StrEnum):
    """What ``apply`` did to an agency."""

    CREATED = "created"
    UPDATED = "updated"  # Update with a changed config (an OVF URL change is also an upgrade)
    ENABLED = "enabled"  # the agency was disabled; its config was already right
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of ``apply``: the agency, what was done, and which config fields changed."""

    agency: str  # the agency's id
    name: str
    action: ApplyAction
    changed: tuple[str, ...] = ()  # AgencyConfig field names that differed (empty unless UPDATED)
    upgrade: bool = False  # an agent config's OVF URL changed: EAM replaces every agent VM
    enabled: bool = False  # the agency was disabled and is now enabled (also with UPDATED)

    @property
    def unchanged(self) -> bool:
        return self.action is ApplyAction.UNCHANGED

    def describe(self) -> str:
        """One line for the CLI: ``agency 'hello' (agency-1): updated (scope, agent_configs; upgrade)``."""
        text = f"agency {self.name!r} ({self.agency}): {self.action.value}"
        notes = list(self.changed)
        if self.upgrade:
            notes.append("upgrade")
        if self.enabled and self.action is not ApplyAction.ENABLED:
            notes.append("enabled")
        return f"{text} ({', '.join(notes)})" if notes else text


@dataclass(frozen=True)
class AgencyStatus:
    """One observation of an agency: its runtime and one ``AgentRuntime`` per host, ordered by host.

    Each agent carries the host, its VM, power state, pending hook, issues and status. ``issues`` are the
    agency's (EAM aggregates its agents' issues into them).
    """

    agency: str  # the agency's id
    name: str
    runtime: AgencyRuntime
    agents: tuple[AgentRuntime, ...]
    # the agents this observation read (the others are as last read); None: every one of them
    fresh: frozenset[str] | None = None

    @property
    def status(self) -> Status:
        return self.runtime.status

    @property
    def goal_state(self) -> GoalState:
        return self.runtime.goal_state

    @property
    def issues(self) -> tuple[Issue, ...]:
        return self.runtime.issues

    @property
    def green(self) -> bool:
        """Goal reached: the agency and every agent green."""
        return self.runtime.status is Status.GREEN and all(a.status is Status.GREEN for a in self.agents)

    @property
    def pending_hooks(self) -> tuple[AgentRuntime, ...]:
        """The agents whose VM hook waits for an answer (write ``agent.hook.vm``, then ``mark_available``)."""
        return tuple(a for a in self.agents if a.hook is not None)

    def agent_on(self, host: MoRef) -> AgentRuntime | None:
        return next((a for a in self.agents if a.host == host), None)


# -------------------------------------------------------------------------------------------- protocol


class Backend(Protocol):
    """Observe and drive the agencies of one vCenter. Every call is safe to repeat (level-triggered)."""

    kind: str  # "eam" or "direct"

    @property
    def login_owns_agencies(self) -> bool:
        """True when an agency belongs to the login that creates it (EAM: so agentvm logs in as its
        extension, and a login sees only its own agencies); False when they belong to the solution key
        whatever the login (the engine)."""
        ...

    @property
    def eam_client(self) -> EamClient | None:
        """The EAM client when the agencies live in vCenter's EAM (ownership and adoption), else None."""
        ...

    def with_login(self, session: Session) -> Backend:
        """This backend through another logged-in session (the extension's); itself when logins do not
        matter (``login_owns_agencies`` False)."""
        ...

    def agency_config(self, agency: str) -> AgencyConfig:
        """The config the agency with id ``agency`` holds now. NotFoundError when it is gone."""
        ...

    def take_read_reasons(self) -> dict[str, int]:
        """The agent runtimes read since the last call, counted by why (``core.agent_reads.READ_REASONS``);
        the count starts again at 0 (the controller's ``agentvm_agent_reads_total``)."""
        ...

    def find(self, name: str) -> str | None:
        """The id of the agency named ``name``, or None. ConfigurationError when two have that name."""
        ...

    def observe(self, name: str) -> AgencyStatus | None:
        """The agency named ``name`` and its agents now, or None when there is no such agency."""
        ...

    def observe_all(self) -> list[AgencyStatus]:
        """Every visible agency (a solution sees its own), ordered by name."""
        ...

    def forget(self) -> None:
        """Read every agent again at the next observe (agent runtimes may be reused while all is green)."""
        ...

    def note(self, look: Look | None) -> None:
        """What a caller that watches vCenter saw since its last look (``core.agent_reads``): from now on,
        observes reuse agent runtimes and read only the agents that this and earlier looks say to read.
        None: the caller stopped watching; observes read as for an unwatched caller again."""
        ...

    def listed(self, names: Mapping[str, str]) -> None:
        """Agency id -> name of every visible agency, as the caller just read it (``EamClient.agency_names``
        of this backend's client) after its ``note`` of a relisting look: that look's observes find the
        agencies by it instead of reading the list again. The next ``note`` drops it."""
        ...

    def apply(self, config: AgencyConfig) -> ApplyResult:
        """Create the agency, or update it when its config differs, and enable it when disabled.

        Idempotent: a second call with the same config does nothing and says UNCHANGED. Raises
        ConfigurationError for an agency that is uninstalled (destroy it first) or a config EAM refuses,
        NotFoundError for an unknown scope.
        """
        ...

    def mark_available(self, agent: str) -> None:
        """Answer the agent's pending hook. The caller has already written the hook's VM. The agent is
        read at the next look: only EAM shows the hook cleared (a post-power-on hook changes nothing the
        VM watch sees), so holding it for a VM change would leave it unread until the fallback."""
        ...

    def hold(self, agency: str, agents: Sequence[str]) -> None:
        """A watching caller will answer these agents' pending hooks itself (due, queued for a later
        poll): do not read them again on their backoff meanwhile. Without a watch: nothing."""
        ...

    def resolve(self, issues: Sequence[Issue]) -> tuple[int, ...]:
        """Resolve these issues (each on the agent or agency that holds it); returns the keys left over."""
        ...

    def resolve_all(self, name: str) -> bool:
        """ResolveAll on the agency named ``name``; False when there is no such agency."""
        ...

    def uninstall(self, name: str) -> bool:
        """Goal ``uninstalled``: every agent VM is removed; False when there is no such agency."""
        ...

    def destroy(self, name: str) -> bool:
        """Destroy the agency (call ``uninstall`` and wait for green first); False when there is none."""
        ...

    def purge_orphans(self, name: str) -> str | None:
        """Start deleting the agent VMs of agency ``name`` that no agency holds any more (the backend lost
        its record of the agency: the engine's state dir); returns what was started, or None when there
        are none. Called by destroy for a name ``find`` does not know. EAM keeps its agencies: None."""
        ...

    def orphans(self, name: str) -> int:
        """How many agent VMs of agency ``name`` no agency holds are still there, as last seen, a purge
        asked for and not carried out yet counting at least one; destroy waits for 0 before it
        unregisters. EAM: 0."""
        ...

    @property
    def self_driving(self) -> bool:
        """True when the agents are driven elsewhere (EAM): ``tick`` and ``wait_for_work`` do nothing."""
        ...

    def tick(self) -> bool:
        """Do one round of agent work (observe vSphere, act); True when it acted and another should follow.

        The controller calls it in its loop, ``Solution``'s wait in its pauses. Raises TransientError when
        vSphere cannot be observed.
        """
        ...

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until ``tick`` has work; True when it has. EAM: False at once."""
        ...

    def pace(self) -> float:
        """Seconds the loop lets pass before the next ``tick`` while earlier actions still run (0: none
        run; ``Engine.pace``). EAM: 0."""
        ...


# ------------------------------------------------------------------------------------ shared behaviour


class AgencyPort(Protocol):
    """The EAM calls both backends are made of, by agency / agent id, raising agentvm errors only."""

    def find_agencies(self, name: str) -> list[str]: ...

    def agency_names(self) -> dict[str, str]: ...

    def create_agency(self, config: AgencyConfig, goal: GoalState) -> str: ...

    def agency_config(self, agency: str) -> AgencyConfig: ...

    def agency_runtime(self, agency: str) -> AgencyRuntime: ...

    def agency_agents(self, agency: str) -> list[str]: ...

    def agent_runtime(self, agent: str, agency: str | None = None) -> AgentRuntime: ...

    def update_agency(self, agency: str, config: AgencyConfig) -> None: ...

    def set_goal_state(self, agency: str, goal: GoalState) -> None: ...

    def destroy_agency(self, agency: str) -> None: ...

    def mark_as_available(self, agent: str) -> None: ...

    def resolve(self, obj: MoRef | None, keys: Sequence[int]) -> list[int]: ...

    def resolve_all(self, obj: MoRef | None) -> None: ...


# hooks whose answer EAM follows with a power-on (what a VM watch sees)
_POWERS_ON_NEXT = frozenset({HookState.PROVISIONED, HookState.PRE_POWER_ON})


class AgencyBackend:
    """``Backend``'s agency logic over an ``AgencyPort``; subclasses add ``kind`` and the loop methods.

    Keeps, per agency, the agent runtimes it read last and reads again only those that
    ``core.agent_reads.plan_reads`` names: for a watching caller (``note``) the agents that changed, are in
    transition or are next in the spread sweep; for others every agent unless all was green just now.
    """

    kind = "?"

    def __init__(
        self,
        port: AgencyPort,
        *,
        clock: Callable[[], float] = time.monotonic,
        green_max_age: float = 5.0,
        read_workers: int = 1,
    ) -> None:
        self._port = port
        # the agent runtimes one look reads are read this many at a time (EAM answers concurrently; at
        # 2,500 agents a look that reads a thousand of them one after the other took a minute on the lab)
        self._read_workers = max(1, read_workers)
        # Unwatched, while an agency is green with no issue EAM has nothing to say about any agent (a hook
        # pending makes it yellow, an issue red), so its agents' runtimes are reused for up to
        # ``green_max_age`` seconds: a poll costs 3 calls instead of 3 + one per agent.
        self._clock = clock
        self._green_max_age = green_max_age
        self._reads: dict[str, AgencyReads] = {}  # agency id -> its agents as last read
        # the executor's pool answers hooks from several threads at once: their stale marks are taken in turn
        self._marks = threading.Lock()
        self._look: Look | None = None  # the watching caller's last look (None: unwatched)
        self._ids: dict[str, str] = {}  # agency name -> id, reused between a watching caller's full passes
        self._moved = False  # set by another thread: the agents changed where no watch sees it (the engine)
        # agency id -> name as listed during the current relisting look (``listed``); None: not listed yet
        self._listed: Mapping[str, str] | None = None
        # agent runtimes read since ``take_read_reasons``, by why (``core.agent_reads.READ_REASONS``)
        self._read_reasons: Counter[str] = Counter()

    def forget(self) -> None:
        """Read every agent and agent list again at the next observe (a full sweep calls this)."""
        self._reads = {a: r.forgotten() for a, r in self._reads.items()}
        self._ids.clear()

    def take_read_reasons(self) -> dict[str, int]:
        with self._marks:
            taken = dict(self._read_reasons)
            self._read_reasons.clear()
        return taken

    def note(self, look: Look | None) -> None:
        self._look = look
        self._listed = None  # a listing serves the look it was read in, never a later one
        if look is not None and look.changes:
            self._reads = {a: r.noted(look.changes) for a, r in self._reads.items()}

    def _agents_moved(self) -> None:
        """The agents changed in a way no vCenter watch shows (the engine acted): the next observe reads
        every agent again. Any thread; the flag is only cleared by the observing thread, before it reads."""
        self._moved = True

    def _forget_if_moved(self) -> None:
        if self._moved:
            self._moved = False
            self.forget()

    def _forget_agency(self, agency: str | None) -> None:
        self._listed = None  # agencies change: the next find reads the list again
        with self._marks:
            if agency is not None and agency in self._reads:
                self._reads[agency] = self._reads[agency].forgotten()

    def _watched(self) -> bool:
        return self._look is not None and self._look.watched

    def hold(self, agency: str, agents: Sequence[str]) -> None:
        if not self._watched():
            return
        with self._marks:
            reads = self._reads.get(agency)
            if reads is not None:
                self._reads[agency] = reads.held_back([a for a in agents if a in reads.agents])

    def _hold_any(self, agents: Sequence[str]) -> None:
        with self._marks:
            for key, reads in list(self._reads.items()):
                mine = [a for a in agents if a in reads.agents]
                if mine:
                    self._reads[key] = reads.held_back(mine)

    def _mark_stale(self, agency: str | None, agents: Sequence[str]) -> None:
        with self._marks:
            for key, reads in list(self._reads.items()):
                if agency is None or key == agency:
                    mine = [a for a in agents if a in reads.agents]
                    if mine:
                        self._reads[key] = reads.marked_stale(mine)

    def agency_config(self, agency: str) -> AgencyConfig:
        return self._port.agency_config(agency)

    # -- lookups --------------------------------------------------------------------------------------

    def listed(self, names: Mapping[str, str]) -> None:
        if self._look is not None and self._look.relist:
            self._listed = dict(names)

    def find(self, name: str) -> str | None:
        return self._one(name, self._port.find_agencies(name))

    def _one(self, name: str, ids: Sequence[str]) -> str | None:
        if len(ids) > 1:
            raise ConfigurationError(
                f"{len(ids)} agencies are named {name!r} ({', '.join(ids)}): agentvm manages one agency per "
                "name; destroy the extra ones (e.g. in the vSphere client) or rename the agency in the spec"
            )
        return ids[0] if ids else None

    def observe(self, name: str) -> AgencyStatus | None:
        self._forget_if_moved()
        look = self._look
        known = self._ids.get(name) if look is not None and not look.relist else None
        if known is not None:
            try:
                return self._observe(known, name)
            except NotFoundError:
                self._ids.pop(name, None)  # destroyed, or another agency now has the name: look it up
        listed = self._listed if look is not None and look.relist else None
        if listed is not None:  # this full pass read the agency list already (the executor's adopt)
            agency = self._one(name, [i for i, n in listed.items() if n == name])
        else:
            agency = self.find(name)
        if agency is None:
            return None
        try:
            status = self._observe(agency, name)
        except NotFoundError:
            return None  # destroyed while we looked
        if look is not None:
            self._ids[name] = agency
        return status

    def observe_all(self) -> list[AgencyStatus]:
        self._forget_if_moved()
        found = []
        for agency, name in sorted(self._port.agency_names().items(), key=lambda item: (item[1], item[0])):
            try:
                found.append(self._observe(agency, name))
            except NotFoundError:
                continue
        return found

    def _observe(self, agency: str, name: str) -> AgencyStatus:
        """One agency runtime; the agent list when ``core.agent_reads.must_list`` says so (else as last
        read), and one runtime per agent ``plan_reads`` names; the others as last read."""
        look = self._look or Look(
            self._clock(), policy=ReadPolicy(green_max_age=self._green_max_age), watched=False
        )
        runtime = self._port.agency_runtime(agency)
        state = self._reads.get(agency)
        listed = state is None or must_list(state, look)
        ids = tuple(self._port.agency_agents(agency)) if listed or state is None else state.ids
        quiet = runtime.status is Status.GREEN and not runtime.issues
        plan = plan_reads(state, ids, runtime.issues, look, quiet=quiet, status=runtime.status)
        with self._marks:
            self._read_reasons.update(plan.reasons)
        read = self._read_agents(agency, plan.read)
        reads = after_reads(
            state, ids, read, runtime.issues, look, plan, listed=listed, status=runtime.status
        )
        with self._marks:  # marks made by other threads while this look read (hooks answered meanwhile)
            current = self._reads.get(agency)
            if current is not None and current is not state:
                reads = reads.marked_stale(
                    current.stale - (state.stale if state is not None else frozenset())
                ).held_back(current.hold - (state.hold if state is not None else frozenset()))
            self._reads[agency] = reads
        agents = sorted(reads.runtimes(), key=lambda a: (a.host.value, a.agent))
        return AgencyStatus(agency, name, runtime, tuple(agents), frozenset(read))

    def _read_agents(self, agency: str, agents: Collection[str]) -> dict[str, AgentRuntime]:
        """One runtime per agent, ``read_workers`` at a time; an agent removed meanwhile is left out (its
        host left the scope between QueryAgent and its runtime). The first other error is raised, once
        every read started has ended."""

        def one(agent: str) -> AgentRuntime | None:
            try:
                return self._port.agent_runtime(agent, agency)
            except NotFoundError:
                return None

        workers = min(self._read_workers, len(agents))
        if workers <= 1:
            found = [(agent, one(agent)) for agent in agents]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="agentvm-read") as pool:
                # a context each: one Context cannot be entered by two threads at once
                futures = [
                    (agent, pool.submit(contextvars.copy_context().run, one, agent)) for agent in agents
                ]
            found = [(agent, future.result()) for agent, future in futures]
        return {agent: runtime for agent, runtime in found if runtime is not None}

    # -- changes --------------------------------------------------------------------------------------

    def apply(self, config: AgencyConfig) -> ApplyResult:
        name = config.agency_name
        agency = self.find(name)
        self._forget_agency(agency)  # its agents change with their agency's config (the others do not)
        if agency is None:
            created = self._port.create_agency(config, GoalState.ENABLED)
            return ApplyResult(created, name, ApplyAction.CREATED)
        runtime = self._port.agency_runtime(agency)
        if runtime.goal_state is GoalState.UNINSTALLED:
            raise ConfigurationError(
                f"agency {name!r} ({agency}) is uninstalled and EAM cannot enable it again: finish with "
                "`agentvm destroy`, then apply to create it anew"
            )
        current = self._port.agency_config(agency)
        changed = config_changes(current, config)
        if changed:
            self._port.update_agency(agency, config)
        enabled = runtime.goal_state is GoalState.DISABLED
        if enabled:
            self._port.set_goal_state(agency, GoalState.ENABLED)
        if changed:
            action = ApplyAction.UPDATED
        elif enabled:
            action = ApplyAction.ENABLED
        else:
            action = ApplyAction.UNCHANGED
        return ApplyResult(
            agency, name, action, changed, bool(changed) and is_upgrade(current, config), enabled
        )

    def mark_available(self, agent: str) -> None:
        if self._watched() and self._hook_state(agent) in _POWERS_ON_NEXT:
            # EAM powers the VM on next: the watch shows it, and the agent is read then (else after
            # ``max_retry``); a post-power-on hook's answer changes nothing a watch sees: read it next look
            self._hold_any([agent])
        else:
            self._mark_stale(None, [agent])
        self._port.mark_as_available(agent)

    def _hook_state(self, agent: str) -> HookState | None:
        """The state of ``agent``'s pending hook as last read (None: none, or not read)."""
        with self._marks:
            for reads in self._reads.values():
                seen = reads.agents.get(agent)
                if seen is not None:
                    return seen.runtime.hook.state if seen.runtime.hook is not None else None
        return None

    def resolve(self, issues: Sequence[Issue]) -> tuple[int, ...]:
        for issue in issues:  # what was resolved is read again at the next observe, nothing else
            if issue.agent:
                # watched: read when the issue leaves the agency's list, or the watch shows its VM change
                if not self._watched():
                    self._mark_stale(issue.agency, [issue.agent])
            else:
                self._forget_agency(issue.agency)
        # each issue goes to the object that holds it (EAM documents Resolve per object; resolving an agent's
        # issue through its agency is only an inference), one call per holder
        by_holder: dict[MoRef, list[int]] = {}
        for issue in issues:
            holder = MoRef("Agent", issue.agent) if issue.agent else MoRef("Agency", issue.agency)
            by_holder.setdefault(holder, []).append(issue.key)
        left: list[int] = []
        for holder, keys in by_holder.items():
            try:
                left += self._port.resolve(holder, keys)
            except NotFoundError:
                left += keys  # the agent or agency is gone: nothing to resolve there
        return tuple(left)

    def resolve_all(self, name: str) -> bool:
        agency = self.find(name)
        if agency is None:
            return False
        self._forget_agency(agency)
        self._port.resolve_all(MoRef("Agency", agency))
        return True

    def uninstall(self, name: str) -> bool:
        agency = self.find(name)
        if agency is None:
            return False
        self._forget_agency(agency)
        self._port.set_goal_state(agency, GoalState.UNINSTALLED)
        return True

    def destroy(self, name: str) -> bool:
        agency = self.find(name)
        if agency is None:
            return False
        self._forget_agency(agency)
        self._port.destroy_agency(agency)
        return True
