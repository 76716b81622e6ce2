"""TEST DOUBLE — an in-memory ``AgentManager`` for testing the EAM emulator's SOAP layer end to end.

Not used by the product: agentvm's real AgentManager is ``agentvm.engine`` on vim25. This one keeps
agencies, agents and issues in dictionaries, converges instantly (an agent is deployed the moment its
agency is created) and follows EAM's rules where the SOAP layer can observe them: one agent per host in
scope, first matching agent config, hooks that hold power-on until MarkAsAvailable, issue keys unique
across the server, Resolve returning the keys it did not find, owner filtering for extension callers,
NotAuthorized for another solution's agency, InvalidState for Enable after Uninstall, and
ManagedObjectNotFound after DestroyAgency. Tests inject issues with ``raise_issue``.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    PowerState,
    Remedy,
    Status,
    VmHook,
)


@dataclass
class _Agent:
    id: str
    agency: str
    host: MoRef
    host_name: str
    config: AgentConfig
    vm: MoRef | None = None
    vm_name: str = ""
    power: PowerState = PowerState.POWERED_OFF
    hook: VmHook | None = None
    issues: dict[int, Issue] = field(default_factory=dict)


@dataclass
class _Agency:
    id: str
    config: AgencyConfig
    goal: GoalState
    solution_id: str
    owned_by_extension: bool
    agents: dict[str, _Agent] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)  # AddIssue's, on the agency itself


class MemoryAgentManager:
    """``hosts``: compute resource → its hosts as (host MoRef, host name); the whole simulated inventory."""

    def __init__(self, hosts: Mapping[MoRef, Sequence[tuple[MoRef, str]]]) -> None:
        self._hosts = {cr: tuple(hs) for cr, hs in hosts.items()}
        self._lock = threading.RLock()
        self._agencies: dict[str, _Agency] = {}
        self._ids = itertools.count(1)
        self._issue_keys = itertools.count(1)

    # --- EsxAgentManager

    def create_agency(self, caller: Caller, config: AgencyConfig, goal: GoalState) -> str:
        self._validate(config)
        with self._lock:
            agency = _Agency(
                id=f"agency-{next(self._ids)}",
                config=config,
                goal=goal,
                solution_id=caller.user,
                owned_by_extension=caller.extension,
            )
            self._agencies[agency.id] = agency
            self._converge(agency)
            return agency.id

    def query_agencies(self, caller: Caller) -> list[str]:
        with self._lock:
            return [
                a.id for a in self._agencies.values() if not caller.extension or a.solution_id == caller.user
            ]

    # --- Agency

    def agency_config(self, agency: str) -> AgencyConfig:
        with self._lock:
            return self._agency(agency).config

    def agency_runtime(self, agency: str) -> AgencyRuntime:
        with self._lock:
            a = self._agency(agency)
            runtimes = [self._agent_runtime(a, ag) for ag in a.agents.values()]
            issues = tuple(a.issues.values()) + tuple(i for r in runtimes for i in r.issues)
            if any(r.status is Status.RED for r in runtimes) or a.issues:
                status = Status.RED
            elif any(r.status is Status.YELLOW for r in runtimes):
                status = Status.YELLOW
            else:
                status = Status.GREEN
            return AgencyRuntime(a.id, a.goal, status, issues, a.solution_id)

    def agency_agents(self, agency: str) -> list[str]:
        with self._lock:
            return list(self._agency(agency).agents)

    def agency_solution_id(self, agency: str) -> str:
        with self._lock:
            return self._agency(agency).solution_id

    def update_agency(self, caller: Caller, agency: str, config: AgencyConfig) -> None:
        self._validate(config)
        with self._lock:
            a = self._writable(caller, agency)
            a.config = config
            self._converge(a)

    def set_goal_state(self, caller: Caller, agency: str, goal: GoalState) -> None:
        with self._lock:
            a = self._writable(caller, agency)
            if goal is GoalState.ENABLED and a.goal is GoalState.UNINSTALLED:
                raise InvalidState(
                    f"agency {agency} is uninstalled; create a new agency instead of enabling it"
                )
            a.goal = goal
            self._converge(a)

    def destroy_agency(self, caller: Caller, agency: str) -> None:
        with self._lock:
            self._writable(caller, agency)
            del self._agencies[agency]

    def add_issue(self, agency: str, issue: Issue) -> Issue:
        with self._lock:
            a = self._agency(agency)
            stored = dataclasses.replace(issue, key=next(self._issue_keys), time=datetime.now(UTC))
            target = a.agents.get(stored.agent) if stored.agent else None
            (target.issues if target else a.issues)[stored.key] = stored
            return stored

    # --- Agent

    def agent_config(self, agent: str) -> AgentConfig:
        with self._lock:
            return self._agent(agent)[1].config

    def agent_runtime(self, agent: str) -> AgentRuntime:
        with self._lock:
            return self._agent_runtime(*self._agent(agent))

    def mark_as_available(self, agent: str) -> None:
        with self._lock:
            a, ag = self._agent(agent)
            if ag.hook is None:
                return
            if ag.hook.state is HookState.PROVISIONED:
                ag.hook = None
                self._power_on(a, ag)
            else:
                ag.hook = None

    # --- EamObject

    def query_issues(self, obj: str | None, keys: Sequence[int] = ()) -> list[Issue]:
        with self._lock:
            issues = self._issues_of(obj)
            return [i for i in issues if not keys or i.key in keys]

    def resolve(self, obj: str | None, keys: Sequence[int]) -> list[int]:
        with self._lock:
            known = {i.key: i for i in self._issues_of(obj)}
            missing = [k for k in keys if k not in known]
            for key in keys:
                if key in known:
                    self._remediate(known[key])
            return missing

    def resolve_all(self, obj: str | None) -> None:
        with self._lock:
            for issue in self._issues_of(obj):
                self._remediate(issue)

    # --- test helpers

    def raise_issue(self, agent: str, kind: IssueKind, **detail: str | tuple[str, ...]) -> Issue:
        """Put an issue on an agent as the engine would on seeing the condition (VmPoweredOff powers off)."""
        with self._lock:
            a, ag = self._agent(agent)
            if kind in (IssueKind.VM_POWERED_OFF, IssueKind.VM_SUSPENDED):
                ag.power = (
                    PowerState.POWERED_OFF if kind is IssueKind.VM_POWERED_OFF else PowerState.SUSPENDED
                )
            issue = Issue(
                key=next(self._issue_keys),
                kind=kind,
                time=datetime.now(UTC),
                agency=a.id,
                agency_name=a.config.agency_name,
                agent=ag.id,
                agent_name=ag.vm_name,
                host=ag.host,
                host_name=ag.host_name,
                vm=ag.vm,
                vm_name=ag.vm_name,
                detail=dict(detail),
            )
            ag.issues[issue.key] = issue
            return issue

    # --- internals

    def _validate(self, config: AgencyConfig) -> None:
        if not config.agency_name:
            raise InvalidArgument("agencyName is required", "agencyName")
        if not config.agent_configs:
            raise InvalidAgentConfiguration(
                "agentConfig is empty: give at least one agent config", "agentConfig"
            )
        for index, agent in enumerate(config.agent_configs):
            url = agent.ovf_package_url
            if url is not None and not url.startswith(("http://", "https://")):
                raise InvalidUrl(url, "the OVF URL must be http(s)", malformed=True)
            if agent.ovf_disk_provisioning not in (None, "none", "thin", "thick"):
                raise InvalidAgentConfiguration(
                    f"ovfDiskProvisioning {agent.ovf_disk_provisioning!r} is not none/thin/thick",
                    "ovfDiskProvisioning",
                    index,
                )
        unknown = [cr for cr in config.scope if cr not in self._hosts]
        if unknown:
            raise InvalidAgencyScope(unknown)

    def _agency(self, agency: str) -> _Agency:
        try:
            return self._agencies[agency]
        except KeyError:
            raise ManagedObjectNotFound(MoRef("Agency", agency)) from None

    def _writable(self, caller: Caller, agency: str) -> _Agency:
        a = self._agency(agency)
        if caller.extension and a.solution_id != caller.user:
            raise NotAuthorized(f"agency {agency} belongs to {a.solution_id}, not to {caller.user}")
        return a

    def _agent(self, agent: str) -> tuple[_Agency, _Agent]:
        for a in self._agencies.values():
            if agent in a.agents:
                return a, a.agents[agent]
        raise ManagedObjectNotFound(MoRef("Agent", agent))

    def _issues_of(self, obj: str | None) -> list[Issue]:
        if obj is None:
            return []  # no issues are attached to the EsxAgentManager any more
        if obj in self._agencies:
            a = self._agencies[obj]
            return list(a.issues.values()) + [i for ag in a.agents.values() for i in ag.issues.values()]
        return list(self._agent(obj)[1].issues.values())

    def _remediate(self, issue: Issue) -> None:
        a = self._agencies.get(issue.agency)
        ag = a.agents.get(issue.agent) if a and issue.agent else None
        holder = ag.issues if ag else (a.issues if a else {})
        holder.pop(issue.key, None)
        if a is not None and ag is not None and issue.remedy is Remedy.POWER_ON:
            self._power_on(a, ag)

    def _converge(self, a: _Agency) -> None:
        """Instant convergence: one agent per host in scope, the first config that matches the host."""
        if a.goal is GoalState.UNINSTALLED:
            a.agents.clear()
            return
        wanted = {host: name for cr in a.config.scope for host, name in self._hosts[cr]}
        for agent_id in [i for i, ag in a.agents.items() if ag.host not in wanted]:
            del a.agents[agent_id]
        have = {ag.host for ag in a.agents.values()}
        for host, name in wanted.items():
            if host in have:
                continue
            agent_id = f"agent-{next(self._ids)}"
            ag = _Agent(agent_id, a.id, host, name, a.config.agent_configs[0])
            ag.vm = MoRef("VirtualMachine", f"vm-{agent_id}")
            ag.vm_name = f"{a.config.agent_name or a.config.agency_name} ({len(a.agents) + 1})"
            a.agents[agent_id] = ag
            if a.config.manually_mark_available_after_provisioning:
                ag.hook = VmHook(ag.vm, HookState.PROVISIONED)
            elif a.goal is GoalState.ENABLED:
                self._power_on(a, ag)
        for ag in a.agents.values():
            ag.config = a.config.agent_configs[0]
            if a.goal is GoalState.DISABLED:
                ag.power = PowerState.POWERED_OFF

    def _power_on(self, a: _Agency, ag: _Agent) -> None:
        if a.goal is not GoalState.ENABLED or ag.vm is None:
            return
        ag.power = PowerState.POWERED_ON
        if a.config.manually_mark_available_after_power_on:
            ag.hook = VmHook(ag.vm, HookState.POWERED_ON)

    def _agent_runtime(self, a: _Agency, ag: _Agent) -> AgentRuntime:
        issues = tuple(ag.issues.values())
        if issues:
            status = Status.RED
        elif ag.hook is not None:
            status = Status.YELLOW
        else:
            status = Status.GREEN
        return AgentRuntime(
            agent=ag.id,
            agency=a.id,
            host=ag.host,
            host_name=ag.host_name,
            goal_state=GoalState.UNINSTALLED if a.goal is GoalState.UNINSTALLED else GoalState.ENABLED,
            status=status,
            power_state=ag.power,
            vm_name=ag.vm_name,
            vm=ag.vm,
            hook=ag.hook,
            issues=issues,
        )
