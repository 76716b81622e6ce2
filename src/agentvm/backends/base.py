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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from agentvm.core.agency_diff import config_changes, is_upgrade
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentRuntime,
    GoalState,
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

    def apply(self, config: AgencyConfig) -> ApplyResult:
        """Create the agency, or update it when its config differs, and enable it when disabled.

        Idempotent: a second call with the same config does nothing and says UNCHANGED. Raises
        ConfigurationError for an agency that is uninstalled (destroy it first) or a config EAM refuses,
        NotFoundError for an unknown scope.
        """
        ...

    def mark_available(self, agent: str) -> None:
        """Answer the agent's pending hook. The caller has already written the hook's VM."""
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


class AgencyBackend:
    """``Backend``'s agency logic over an ``AgencyPort``; subclasses add ``kind`` and the loop methods."""

    kind = "?"

    def __init__(
        self, port: AgencyPort, *, clock: Callable[[], float] = time.monotonic, green_max_age: float = 5.0
    ) -> None:
        self._port = port
        # While an agency is green with no issue, EAM has nothing to say about any agent (a hook pending makes
        # it yellow, an issue red), so its agents' runtimes are reused for up to ``green_max_age`` seconds:
        # a poll costs 3 calls instead of 3 + one per agent. Every change through this backend forgets them.
        self._clock = clock
        self._green_max_age = green_max_age
        self._green: dict[str, tuple[float, tuple[str, ...], tuple[AgentRuntime, ...]]] = {}

    def forget(self) -> None:
        """Drop the reused agent runtimes: the next observe reads every agent (a full pass calls this)."""
        self._green.clear()

    def agency_config(self, agency: str) -> AgencyConfig:
        return self._port.agency_config(agency)

    # -- lookups --------------------------------------------------------------------------------------

    def find(self, name: str) -> str | None:
        ids = self._port.find_agencies(name)
        if len(ids) > 1:
            raise ConfigurationError(
                f"{len(ids)} agencies are named {name!r} ({', '.join(ids)}): agentvm manages one agency per "
                "name; destroy the extra ones (e.g. in the vSphere client) or rename the agency in the spec"
            )
        return ids[0] if ids else None

    def observe(self, name: str) -> AgencyStatus | None:
        agency = self.find(name)
        if agency is None:
            return None
        try:
            return self._observe(agency, name)
        except NotFoundError:
            return None  # destroyed while we looked

    def observe_all(self) -> list[AgencyStatus]:
        found = []
        for agency, name in sorted(self._port.agency_names().items(), key=lambda item: (item[1], item[0])):
            try:
                found.append(self._observe(agency, name))
            except NotFoundError:
                continue
        return found

    def _observe(self, agency: str, name: str) -> AgencyStatus:
        """One agency runtime and its agent list, plus one runtime per agent unless all was green just now."""
        runtime = self._port.agency_runtime(agency)
        ids = tuple(self._port.agency_agents(agency))
        now = self._clock()
        quiet = runtime.status is Status.GREEN and not runtime.issues
        cached = self._green.get(agency)
        if quiet and cached is not None and cached[1] == ids and now - cached[0] <= self._green_max_age:
            return AgencyStatus(agency, name, runtime, cached[2])
        agents = []
        for agent in ids:
            try:
                agents.append(self._port.agent_runtime(agent, agency))
            except NotFoundError:
                continue  # removed between QueryAgent and its runtime (host left the scope)
        agents.sort(key=lambda a: (a.host.value, a.agent))
        if quiet and all(a.status is Status.GREEN and a.hook is None for a in agents):
            self._green[agency] = (now, ids, tuple(agents))
        else:
            self._green.pop(agency, None)
        return AgencyStatus(agency, name, runtime, tuple(agents))

    # -- changes --------------------------------------------------------------------------------------

    def apply(self, config: AgencyConfig) -> ApplyResult:
        self.forget()
        name = config.agency_name
        agency = self.find(name)
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
        self.forget()
        self._port.mark_as_available(agent)

    def resolve(self, issues: Sequence[Issue]) -> tuple[int, ...]:
        self.forget()
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
        self.forget()
        agency = self.find(name)
        if agency is None:
            return False
        self._port.resolve_all(MoRef("Agency", agency))
        return True

    def uninstall(self, name: str) -> bool:
        self.forget()
        agency = self.find(name)
        if agency is None:
            return False
        self._port.set_goal_state(agency, GoalState.UNINSTALLED)
        return True

    def destroy(self, name: str) -> bool:
        self.forget()
        agency = self.find(name)
        if agency is None:
            return False
        self._port.destroy_agency(agency)
        return True
