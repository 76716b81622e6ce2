"""The agent engine's memory and vocabulary as frozen values: state, observation, actions, outcomes.

``core.agents`` decides with these; ``agentvm.engine`` persists the state, fills the observation from
vSphere (through its ``Infrastructure``) and carries out the actions. Nothing here does I/O.

The state holds what cannot be read back from vCenter: the agency configs and goal states, which VM is
which agent's, what the engine *meant* the power state to be (so that a VM powered off by someone else is
told apart from one the engine powered off for maintenance mode), pending hooks, latched issues and the
counters that keep issue keys and ids unique across the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Self

from agentvm.model.agency import (
    AgencyConfig,
    GoalState,
    Issue,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    Status,
    VmHook,
)
from agentvm.model.inventory import Host

# --------------------------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class VmMarker:
    """What the engine writes on every VM it deploys (extraConfig), so that it finds them after a restart.

    ``namespace`` tells engines apart (the owning extension key); ``agency`` and ``agent`` are ids.
    """

    namespace: str
    agency: str
    agent: str
    # the agency's name: an engine that lost its state finds its VMs again by (name, host), since ids are
    # counters that start over ("" on VMs deployed before this was written)
    agency_name: str = ""


@dataclass(frozen=True)
class AgentVm:
    """One VM that carries the engine's marker, as observed now."""

    vm: MoRef
    name: str
    marker: VmMarker
    host: MoRef | None
    power_state: PowerState
    ovf_url: str | None = None  # the URL it was deployed from (kept in its extraConfig)
    ip: str | None = None
    complete: bool = True  # False: an import that never finished (a half-deployed VM, never an agent)


@dataclass(frozen=True)
class EngineObservation:
    """What the engine needs to know about vSphere for one reconcile.

    ``scope``: each scoped compute resource that exists → its hosts (an unknown one is simply absent).
    ``hosts``: those hosts. ``default_pools``: compute resource → the pool for agent VMs when the agency
    maps none. ``default_folders``: datacenter → the folder for agent VMs when the agency maps none.
    ``names``: display names of datastores and networks (for NoCustom… issue details). ``vms``: every VM
    that carries this engine's marker.
    """

    scope: Mapping[MoRef, tuple[MoRef, ...]] = field(default_factory=dict)
    hosts: Mapping[MoRef, Host] = field(default_factory=dict)
    default_pools: Mapping[MoRef, MoRef] = field(default_factory=dict)
    default_folders: Mapping[MoRef, MoRef] = field(default_factory=dict)
    names: Mapping[MoRef, str] = field(default_factory=dict)
    vms: tuple[AgentVm, ...] = ()


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class AgentState:
    """One agent: the engine's bookkeeping for one host in scope.

    ``powered``: the engine powered ``vm`` on and has not powered it off since. When it is True and the VM
    is observed off, someone else powered it off (VmPoweredOff); when it is False the engine powers the VM
    on as soon as nothing holds it (hook, maintenance mode, goal disabled).
    ``upgrading``: this agent is the one being upgraded (rolling, one host at a time per agency); it stays
    True until the replacement VM is running and released.
    """

    id: str
    host: MoRef
    vm: MoRef | None = None
    vm_name: str | None = None
    vm_ovf_url: str | None = None
    powered: bool = False
    hook: VmHook | None = None
    upgrade_vm: MoRef | None = None
    upgrade_vm_name: str | None = None
    upgrade_ovf_url: str | None = None
    upgrading: bool = False
    power_off_requested: bool = False
    issues: tuple[Issue, ...] = ()

    def with_(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AgencyState:
    """One agency: its config, goal, owner, agents and agency-level issues (from AddIssue)."""

    id: str
    config: AgencyConfig
    goal: GoalState
    solution_id: str
    destroying: bool = False
    agents: tuple[AgentState, ...] = ()
    issues: tuple[Issue, ...] = ()
    vm_counter: int = 0  # "<agentName> (N)": N grows with every VM deployed, so names never clash

    def with_(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def effective_goal(self) -> GoalState:
        """A destroyed agency is uninstalled first, then forgotten."""
        return GoalState.UNINSTALLED if self.destroying else self.goal

    def agent(self, agent_id: str) -> AgentState | None:
        return next((a for a in self.agents if a.id == agent_id), None)


@dataclass(frozen=True)
class Retry:
    """An action that failed for a transient reason, held back until ``not_before``.

    ``kind`` and ``target`` name the action (``retry_key``): ("deploy", agent id),
    ("power-on", agent id), ("power-off", agent id or VM moid), ("destroy", VM moid). ``attempts`` failed so
    far; ``gave_up``: the engine stopped retrying and raised an issue (only Resolve arms it again).
    ``detail`` ties a deploy retry to its OVF URL (another URL starts afresh).
    """

    kind: str
    target: str
    attempts: int
    not_before: datetime
    error: str
    agency: str | None = None
    agent: str | None = None
    gave_up: bool = False
    detail: str = ""

    def with_(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EngineState:
    """Everything the engine persists. Issue keys and ids come from counters that never go back."""

    namespace: str
    agencies: tuple[AgencyState, ...] = ()
    next_issue_key: int = 1
    next_id: int = 1
    retries: tuple[Retry, ...] = ()  # actions held back after a transient failure
    # agency names whose unclaimed VMs are to be deleted (destroy with a lost state: ``agent_ops.purge``)
    purge: tuple[str, ...] = ()

    def with_(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def agency(self, agency_id: str) -> AgencyState | None:
        return next((a for a in self.agencies if a.id == agency_id), None)

    def replace_agency(self, agency: AgencyState) -> EngineState:
        return self.with_(agencies=tuple(agency if a.id == agency.id else a for a in self.agencies))

    def find_agent(self, agent_id: str) -> tuple[AgencyState, AgentState] | None:
        for agency in self.agencies:
            agent = agency.agent(agent_id)
            if agent is not None:
                return agency, agent
        return None


# --------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class DeployVm:
    """Deploy the agent's OVF onto ``host`` (pinned, HA top priority); ``upgrade``: beside the old VM."""

    agency: str
    agent: str
    host: MoRef
    ovf_url: str
    ovf_properties: tuple[OvfProperty, ...]
    name: str
    datastore: MoRef
    network: MoRef
    folder: MoRef | None
    pool: MoRef | None
    marker: VmMarker
    disk_provisioning: str | None = None
    upgrade: bool = False


@dataclass(frozen=True)
class PowerOn:
    agency: str
    agent: str
    vm: MoRef


@dataclass(frozen=True)
class PowerOff:
    agency: str
    agent: str | None
    vm: MoRef


@dataclass(frozen=True)
class DestroyVm:
    """Power off (if needed) and delete ``vm``. ``agent`` is None for a stray VM that carries our marker."""

    agency: str | None
    agent: str | None
    vm: MoRef


Action = DeployVm | PowerOn | PowerOff | DestroyVm


# what a retry is kept under (``Retry.kind``)
DEPLOY, POWER_ON, POWER_OFF, DESTROY = "deploy", "power-on", "power-off", "destroy"
POWER_KINDS = frozenset({POWER_ON, POWER_OFF})


def retry_key(action: Action) -> tuple[str, str]:
    """What a retry of ``action`` is kept under: (kind, agent id or VM moid)."""
    if isinstance(action, DeployVm):
        return DEPLOY, action.agent
    if isinstance(action, PowerOn):
        return POWER_ON, action.agent
    if isinstance(action, PowerOff):
        return POWER_OFF, action.agent or action.vm.value
    return DESTROY, action.vm.value


def retry_for(retries: tuple[Retry, ...], action: Action) -> Retry | None:
    """The retry held for ``action``, if any (a deploy retry of another OVF URL does not count)."""
    key = retry_key(action)
    found = next((r for r in retries if (r.kind, r.target) == key), None)
    if found is not None and isinstance(action, DeployVm) and found.detail != action.ovf_url:
        return None
    return found


@dataclass(frozen=True)
class Deployed:
    """Outcome of DeployVm: the new VM."""

    vm: MoRef


@dataclass(frozen=True)
class DeployFailed:
    """Outcome of DeployVm that becomes an issue on the agent (CannotAccessAgentOVF, OvfInvalidFormat…)."""

    kind: IssueKind
    detail: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """Outcome of PowerOn / PowerOff / DestroyVm that succeeded (a VM already gone counts as destroyed)."""


@dataclass(frozen=True)
class Failed:
    """Outcome of any action that failed for a transient reason: retried later, with backoff."""

    error: str


Outcome = Deployed | DeployFailed | Done | Failed


@dataclass(frozen=True)
class InFlight:
    """What the engine still carries out from earlier plans when it reconciles (queued or running).

    ``hosts``: the hosts those actions act on (a VM whose host is not observed stands for a host of its
    own, by its reference); reconcile leaves every agent and VM there as it is, plans nothing there and
    counts them as working (yellow), so no second deploy is planned for a host whose first is not recorded
    yet. ``upgrades``: the agencies with an upgrade deploy among those actions: no other host of theirs
    starts one (one host at a time per agency).
    """

    hosts: frozenset[MoRef] = frozenset()
    upgrades: frozenset[str] = frozenset()


NOTHING_IN_FLIGHT = InFlight()


@dataclass(frozen=True)
class EnginePlan:
    """What one reconcile decided: the new state, the actions to carry out, and every status."""

    state: EngineState
    actions: tuple[Action, ...]
    agent_status: Mapping[str, Status]
    agency_status: Mapping[str, Status]
    wake_at: datetime | None = None  # the earliest retry held back (reconcile again then)
