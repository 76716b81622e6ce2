"""The agent engine's brain: agencies + observed vSphere → next actions, issues and statuses (docs/eam.md).

Pure: no I/O, no clock (``now`` is an argument), no threads. ``agentvm.engine.manager`` calls
``reconcile`` on every step, carries out the actions through its Infrastructure and feeds each result back
with ``core.agent_ops.record``; API calls change the state through ``core.agent_ops`` too.

Rules carried out here (each as EAM behaves, or marked [I] where docs/eam.md says it is inferred):

- one agent per host in scope (union of the agency's clusters and standalone compute resources), using
  the first agent config whose productLineId / hostVersion match; none → IncompatibleHostVersion;
- deploy → ``provisioned`` hook (if flagged) → power on → ``poweredOn`` hook (if flagged) → green;
- maintenance mode / standby: the agent VM is powered off, no issue; on exit it is powered on again (and
  the poweredOn hook comes back);
- a VM powered off / suspended by someone else → VmPoweredOff / VmSuspended; deleted → VmNotDeployed;
  powered on in a disabled agency → VmPoweredOn. **Nothing is repaired without Resolve** (EAM does not
  heal silently; agentvm's controller is the one that resolves);
- host disconnected → ManagedHostNotReachable, which clears by itself when the host is back;
- a new OVF URL → rolling upgrade, one host at a time per agency;
- issues clear by themselves when their condition is gone, and keys come from a counter that never goes
  back, so a key is never reused;
- an action that failed for a transient reason is held back until its retry is due
  (``EnginePlan.wake_at``), and an agent whose power operation the engine gave up on has InvalidConfig
  until Resolve;
- VMs with this engine's marker: a half-deployed one is deleted; one of a known agency that no agent holds
  is adopted by the agent of its host (by agency name: ids start over when the state is lost) or deleted;
  one of an agency this engine does not know is kept, unless its name is being purged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agentvm.core.agent_placement import AgentPlacement, Detail, choose_placement, match_agent_config, vm_name
from agentvm.core.agent_state import (
    NOTHING_IN_FLIGHT,
    POWER_KINDS,
    Action,
    AgencyState,
    AgentState,
    AgentVm,
    DeployVm,
    DestroyVm,
    EngineObservation,
    EnginePlan,
    EngineState,
    InFlight,
    PowerOff,
    PowerOn,
    Retry,
    VmMarker,
    retry_for,
)
from agentvm.model.agency import (
    DETAIL_ERROR,
    AgentConfig,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    PowerState,
    Status,
)
from agentvm.model.inventory import ConnectionState, Host

# Issues that stay until Resolve (or until the config they were raised for changes); they hold (re)deploy.
DEPLOY_FAILURES = frozenset(
    {
        IssueKind.CANNOT_ACCESS_AGENT_OVF,
        IssueKind.OVF_INVALID_FORMAT,
        IssueKind.OVF_INVALID_PROPERTY,
        IssueKind.INSUFFICIENT_RESOURCES,
        IssueKind.INSUFFICIENT_SPACE,
    }
)
LATCHED = DEPLOY_FAILURES | {IssueKind.VM_NOT_DEPLOYED}

OVF_URL = "ovfUrl"  # the issue detail that ties a deploy failure to the URL it was raised for


@dataclass
class _Counters:
    """The state's counters while one reconcile runs (a local, so the function stays pure)."""

    next_issue_key: int
    next_id: int

    def issue_key(self) -> int:
        key = self.next_issue_key
        self.next_issue_key += 1
        return key

    def new_id(self, prefix: str) -> str:
        value = f"{prefix}-{self.next_id}"
        self.next_id += 1
        return value


@dataclass
class _AgencyContext:
    agency: AgencyState
    obs: EngineObservation
    vms: Mapping[MoRef, AgentVm]
    vms_by_agent: Mapping[str, list[AgentVm]]
    counters: _Counters
    now: datetime
    namespace: str
    retries: tuple[Retry, ...] = ()
    claimed: set[MoRef] = field(default_factory=set)  # VMs some agent holds (adoption takes none of them)
    in_flight: InFlight = NOTHING_IN_FLIGHT
    upgrade_busy: bool = False
    vm_counter: int = 0
    wake_at: datetime | None = None  # the earliest retry this agency holds back
    actions: list[Action] = field(default_factory=list)


def connected(host: Host) -> bool:
    return host.connection_state is ConnectionState.CONNECTED


def host_down(host: Host) -> bool:
    """In maintenance mode or standby: agent VMs stay powered off there, and that is not an issue."""
    return host.in_maintenance_mode or host.standby


def reconcile(
    state: EngineState, obs: EngineObservation, now: datetime, in_flight: InFlight = NOTHING_IN_FLIGHT
) -> EnginePlan:
    """Decide the next actions for every agency from the state and what is observed now.

    The returned state already absorbs what was observed (new agents, issues raised or cleared, VMs found
    deleted); it never assumes an action succeeded: ``agent_ops.record`` does that per outcome. So the plan's
    state is consistent whether or not its actions are carried out, and reconciling the same state against
    the same observation gives the same plan.

    ``in_flight``: what earlier plans still carry out. Their hosts are left alone (agents kept as they are,
    yellow; no action there), and an agency with an upgrade deploy in flight starts no other: a plan made
    while earlier actions run never repeats or contradicts them, and uses no VM number twice.
    """
    counters = _Counters(state.next_issue_key, state.next_id)
    ours = [v for v in obs.vms if v.marker.namespace == state.namespace]
    vms = {v.vm: v for v in ours if v.complete}
    by_agent: dict[str, list[AgentVm]] = {}
    for v in vms.values():
        by_agent.setdefault(v.marker.agent, []).append(v)
    held = {v for agency in state.agencies for a in agency.agents for v in (a.vm, a.upgrade_vm) if v}

    agencies: list[AgencyState] = []
    actions: list[Action] = []
    agent_status: dict[str, Status] = {}
    agency_status: dict[str, Status] = {}
    wakes: list[datetime] = []
    for agency in state.agencies:
        ctx = _AgencyContext(
            agency, obs, vms, by_agent, counters, now, state.namespace, state.retries, held, in_flight
        )
        new_agency, statuses = _reconcile_agency(ctx)
        actions.extend(ctx.actions)
        if ctx.wake_at is not None:
            wakes.append(ctx.wake_at)
        agent_status.update(statuses)
        if new_agency.destroying and not new_agency.agents:
            continue  # destroyed: every agent is gone, so the agency is forgotten
        agencies.append(new_agency)
        agency_status[agency.id] = _agency_status(new_agency, statuses)

    claimed = {v for agency in agencies for a in agency.agents for v in (a.vm, a.upgrade_vm) if v is not None}
    purging: set[str] = set()
    for v in ours:
        if v.vm in claimed or v.vm in in_flight.hosts or v.host in in_flight.hosts:
            continue  # claimed, or on a host whose actions still run (a deploy there not recorded yet)
        host = obs.hosts.get(v.host) if v.host else None
        if host is not None and not connected(host):
            continue  # cannot be deleted now; looked at again once the host is back
        if not v.complete:
            # a half-deployed VM: an import that failed, or the engine stopped in the middle of one
            actions.append(DestroyVm(None, None, v.vm))
        elif any(_belongs(v.marker, a) for a in agencies):
            # one of our agencies', but no agent owns it: the engine stopped between deploying it and
            # recording it, or it is a second VM for one host (never leave a half-deployed VM behind)
            actions.append(DestroyVm(None, None, v.vm))
        elif v.marker.agency_name and v.marker.agency_name in state.purge:
            purging.add(v.marker.agency_name)
            actions.append(DestroyVm(None, None, v.vm))
        # otherwise: an agency this engine does not know (its state was lost): kept, to be adopted when
        # an agency of that name is created again (see _AgentPass._adopt), or deleted by a purge

    live_agents = {a.id for agency in agencies for a in agency.agents}
    seen_vms = {v.vm.value for v in ours}
    retries = tuple(
        r for r in state.retries if (r.agent in live_agents if r.agent is not None else r.target in seen_vms)
    )
    actions, wake_at = _hold(actions, retries, now)
    wake_at = min([*wakes, wake_at] if wake_at is not None else wakes, default=None)
    new_state = state.with_(
        agencies=tuple(agencies),
        next_issue_key=counters.next_issue_key,
        next_id=counters.next_id,
        retries=retries,
        purge=tuple(n for n in state.purge if n in purging),
    )
    return EnginePlan(new_state, tuple(actions), agent_status, agency_status, wake_at)


def _vm_number(name: str) -> int:
    """N of a VM named ``<agentName> (N)``; 0 for any other name."""
    head, _, tail = name.rpartition(" (")
    return int(tail[:-1]) if head and tail.endswith(")") and tail[:-1].isdigit() else 0


def _belongs(marker: VmMarker, agency: AgencyState) -> bool:
    """Whether a VM with ``marker`` is ``agency``'s: by name (ids start over when a state is lost), or by
    id for VMs that carry no name."""
    if marker.agency_name:
        return marker.agency_name == agency.config.agency_name
    return marker.agency == agency.id


def _hold(
    actions: list[Action], retries: tuple[Retry, ...], now: datetime
) -> tuple[list[Action], datetime | None]:
    """Drop the actions whose retry is not due yet (or gave up); returns the rest and the next due time."""
    kept: list[Action] = []
    wake_at: datetime | None = None
    for action in actions:
        retry = retry_for(retries, action)
        if retry is None or (not retry.gave_up and retry.not_before <= now):
            kept.append(action)
        elif not retry.gave_up:
            wake_at = retry.not_before if wake_at is None else min(wake_at, retry.not_before)
    return kept, wake_at


def _agency_status(agency: AgencyState, statuses: Mapping[str, Status]) -> Status:
    """Red if any issue (the agency's or an agent's), yellow while any agent is working, else green."""
    mine = [statuses[a.id] for a in agency.agents]
    if agency.issues or Status.RED in mine:
        return Status.RED
    if Status.YELLOW in mine or agency.destroying:
        return Status.YELLOW
    return Status.GREEN


def _hosts_in_scope(agency: AgencyState, obs: EngineObservation) -> list[MoRef]:
    if agency.effective_goal is GoalState.UNINSTALLED:
        return []
    hosts: list[MoRef] = []
    seen: set[MoRef] = set()
    for compute_resource in agency.config.scope:
        for host in obs.scope.get(compute_resource, ()):
            if host not in seen and host in obs.hosts:
                seen.add(host)
                hosts.append(host)
    return hosts


def _reconcile_agency(ctx: _AgencyContext) -> tuple[AgencyState, dict[str, Status]]:
    agency = ctx.agency
    wanted = _hosts_in_scope(agency, ctx.obs)
    wanted_set = set(wanted)
    by_host = {a.host: a for a in agency.agents}
    ctx.vm_counter = agency.vm_counter
    upgrading = {a.id for a in agency.agents if a.upgrading and a.host in wanted_set}
    upgrade_in_flight = agency.id in ctx.in_flight.upgrades
    ctx.upgrade_busy = bool(upgrading) or upgrade_in_flight
    agents: list[AgentState] = []
    statuses: dict[str, Status] = {}
    for host_ref in wanted:
        if host_ref in ctx.in_flight.hosts:
            _keep_in_flight(by_host.get(host_ref), agents, statuses)
            continue
        agent = by_host.get(host_ref) or AgentState(id=ctx.counters.new_id("agent"), host=host_ref)
        agent_pass = _AgentPass(ctx, agent, ctx.obs.hosts[host_ref])
        agent, status = agent_pass.run()
        if agent.upgrading or agent_pass.upgrade_started:
            upgrading.add(agent.id)
        else:
            upgrading.discard(agent.id)  # its upgrade finished in this pass: the next host may start now
        ctx.upgrade_busy = bool(upgrading) or upgrade_in_flight
        agents.append(agent)
        statuses[agent.id] = status
    for agent in agency.agents:
        if agent.host in wanted_set:
            continue
        if agent.host in ctx.in_flight.hosts:
            _keep_in_flight(agent, agents, statuses)
            continue
        leaving = _remove_agent(ctx, agent)
        if leaving is not None:
            agents.append(leaving[0])
            statuses[agent.id] = leaving[1]
    return agency.with_(agents=tuple(agents), vm_counter=ctx.vm_counter), statuses


def _keep_in_flight(agent: AgentState | None, agents: list[AgentState], statuses: dict[str, Status]) -> None:
    """An agent on a host whose earlier actions still run: kept as it is until their outcomes are recorded
    (none yet: its agent is made at a later reconcile)."""
    if agent is not None:
        agents.append(agent)
        statuses[agent.id] = Status.RED if agent.issues else Status.YELLOW


def _new_issue(
    ctx: _AgencyContext, agent: AgentState, host: Host | None, kind: IssueKind, detail: Detail
) -> Issue:
    vm = agent.vm or agent.upgrade_vm
    return Issue(
        key=ctx.counters.issue_key(),
        kind=kind,
        time=ctx.now,
        agency=ctx.agency.id,
        agency_name=ctx.agency.config.agency_name,
        agent=agent.id,
        agent_name=agent.vm_name or ctx.agency.config.agent_name or ctx.agency.config.agency_name,
        host=agent.host,
        host_name=host.name if host else None,
        vm=vm,
        vm_name=agent.vm_name if agent.vm else agent.upgrade_vm_name,
        detail=dict(detail),
    )


def _merge_issues(
    ctx: _AgencyContext,
    agent: AgentState,
    host: Host | None,
    kept: list[Issue],
    conditions: list[tuple[IssueKind, Detail]],
) -> tuple[Issue, ...]:
    """Keep an existing issue (same key, same time) while its kind's condition holds; raise new ones."""
    result = list(kept)
    for kind, detail in conditions:
        if any(i.kind == kind for i in result):
            continue
        existing = next((i for i in agent.issues if i.kind == kind), None)
        if existing is not None and dict(existing.detail) == dict(detail):
            result.append(existing)
        else:
            result.append(_new_issue(ctx, agent, host, kind, detail))
    return tuple(result)


def _remove_agent(ctx: _AgencyContext, agent: AgentState) -> tuple[AgentState, Status] | None:
    """A host left the scope (or the agency is uninstalled): delete its VMs, then forget the agent."""
    host = ctx.obs.hosts.get(agent.host)
    existing = [v for v in (agent.upgrade_vm, agent.vm) if v is not None and v in ctx.vms]
    if host is not None and not connected(host) and existing:
        # the VMs cannot be deleted until the host is back [I: EAM would raise VmOrphaned once it is]
        issues = _merge_issues(ctx, agent, host, [], [(IssueKind.MANAGED_HOST_NOT_REACHABLE, {})])
        return agent.with_(issues=issues, hook=None), Status.RED
    if not existing:
        return None
    for vm in existing:
        ctx.actions.append(DestroyVm(ctx.agency.id, agent.id, vm))
    return agent.with_(issues=(), hook=None), Status.YELLOW


class _AgentPass:
    """One agent on one host in scope, for one reconcile. ``run`` returns the new agent and its status."""

    def __init__(self, ctx: _AgencyContext, agent: AgentState, host: Host) -> None:
        self.ctx = ctx
        self.agent = agent
        self.host = host
        self.conditions: list[tuple[IssueKind, Detail]] = []
        self.actions: list[Action] = []
        self.busy = False  # working towards the goal: yellow
        self.upgrade_started = False  # this pass deployed a replacement VM (upgrading once recorded)

    # ----------------------------------------------------------------------------------------- driver
    def run(self) -> tuple[AgentState, Status]:
        ctx = self.ctx
        if not connected(self.host):
            # nothing can be observed or done there; keep what we knew, and say why
            kept = [i for i in self.agent.issues if i.kind is not IssueKind.MANAGED_HOST_NOT_REACHABLE]
            conditions: list[tuple[IssueKind, Detail]] = [(IssueKind.MANAGED_HOST_NOT_REACHABLE, {})]
            issues = _merge_issues(ctx, self.agent, self.host, kept, conditions)
            return self.agent.with_(issues=issues), Status.RED

        self._follow_vms()
        config = match_agent_config(ctx.agency.config.agent_configs, self.host)
        if config is None:
            self.conditions.append((IssueKind.INCOMPATIBLE_HOST_VERSION, {}))
        desired_url = config.ovf_package_url if config else self.agent.vm_ovf_url
        kept = [i for i in self.agent.issues if i.kind in LATCHED and self._still_latched(i, desired_url)]
        held = bool(kept)

        if config is not None and desired_url is None:
            self._remove_vms()  # an agent config without an OVF: no VM on this host
        elif self.agent.vm is None:
            if config is not None and desired_url is not None and not held:
                self._install(config, desired_url)
        else:
            self._manage_power()
            if config is not None and desired_url is not None:
                self._upgrade(config, desired_url, held)

        for retry in ctx.retries:
            if retry.agent == self.agent.id and retry.gave_up and retry.kind in POWER_KINDS:
                # the engine gave up powering the VM on/off: a person must look (Resolve arms it again)
                self.conditions.append((IssueKind.INVALID_CONFIG, {DETAIL_ERROR: retry.error}))
        agent = self.agent
        if (
            agent.upgrading
            and agent.upgrade_vm is None
            and agent.hook is None
            and not self.actions
            and not self.busy
            and agent.vm_ovf_url == desired_url
        ):
            agent = agent.with_(upgrading=False)  # this host is done: the next one may start
        issues = _merge_issues(ctx, agent, self.host, kept, self.conditions)
        agent = agent.with_(issues=issues)
        ctx.actions.extend(self.actions)
        if issues:
            status = Status.RED
        elif self.actions or self.busy or agent.hook is not None or agent.upgrading:
            status = Status.YELLOW
        else:
            status = Status.GREEN
        self.agent = agent
        return agent, status

    # ----------------------------------------------------------------------------------------- steps
    def _follow_vms(self) -> None:
        """Absorb what happened to the agent's VMs since the last reconcile."""
        a = self.agent
        vms = self.ctx.vms
        if a.upgrade_vm is not None and a.upgrade_vm not in vms:
            # the replacement vanished: forget it; the upgrade starts again in its turn
            hook = None if a.hook and a.hook.vm == a.upgrade_vm else a.hook
            a = a.with_(upgrade_vm=None, upgrade_vm_name=None, upgrade_ovf_url=None, hook=hook)
        if a.vm is not None and a.vm not in vms:
            if a.upgrade_vm is not None:
                # the old VM went away mid-upgrade: the replacement simply takes its place
                a = a.with_(
                    vm=a.upgrade_vm,
                    vm_name=a.upgrade_vm_name,
                    vm_ovf_url=a.upgrade_ovf_url,
                    powered=False,
                    upgrade_vm=None,
                    upgrade_vm_name=None,
                    upgrade_ovf_url=None,
                    hook=None,
                )
            else:
                # deleted by someone: VmNotDeployed, and no redeploy until Resolve (docs/eam.md, "Issues")
                self.agent = a.with_(vm=None, vm_name=None, vm_ovf_url=None, powered=False, hook=None)
                lost = _new_issue(self.ctx, a, self.host, IssueKind.VM_NOT_DEPLOYED, {})
                a = self.agent.with_(issues=(*self.agent.issues, lost))
        if a.vm is None:
            # a VM deployed for this agent that was never recorded (the engine stopped in between), or one
            # of this agency on this host deployed by an engine whose state is lost: adopt it
            found = [v for v in self.ctx.vms_by_agent.get(a.id, []) if v.vm != a.upgrade_vm]
            found = [
                v
                for v in found
                if v.marker.agency == self.ctx.agency.id
                and v.marker.agency_name in ("", self.ctx.agency.config.agency_name)
                and v.host == a.host
            ]
            if not found:
                name = self.ctx.agency.config.agency_name
                found = sorted(
                    (
                        v
                        for v in self.ctx.vms.values()
                        if v.marker.agency_name == name and v.host == a.host and v.vm not in self.ctx.claimed
                    ),
                    key=lambda v: v.vm.value,
                )
            if found:
                v = found[0]
                self.ctx.claimed.add(v.vm)
                # later VMs of the agency must not reuse its number: vCenter refuses a duplicate name
                self.ctx.vm_counter = max(self.ctx.vm_counter, _vm_number(v.name))
                a = a.with_(
                    vm=v.vm,
                    vm_name=v.name,
                    vm_ovf_url=v.ovf_url,
                    powered=v.power_state is PowerState.POWERED_ON,
                    issues=tuple(i for i in a.issues if i.kind is not IssueKind.VM_NOT_DEPLOYED),
                )
        self.agent = a

    def _still_latched(self, issue: Issue, desired_url: str | None) -> bool:
        if issue.kind is IssueKind.VM_NOT_DEPLOYED:
            return self.agent.vm is None
        # a deploy failure is about one URL: an Update to another URL removes its condition
        return issue.detail.get(OVF_URL) == desired_url

    def _placement(self) -> AgentPlacement | None:
        ctx = self.ctx
        host = self.host
        result = choose_placement(
            ctx.agency.config,
            host,
            default_pool=ctx.obs.default_pools.get(host.parent) if host.parent else None,
            default_folder=ctx.obs.default_folders.get(host.datacenter) if host.datacenter else None,
            names=ctx.obs.names,
        )
        if isinstance(result, AgentPlacement):
            return result
        self.conditions.extend(result)
        return None

    def _deploy(self, config: AgentConfig, url: str, *, upgrade: bool) -> bool:
        placement = self._placement()
        if placement is None:
            return False
        ctx = self.ctx
        action = DeployVm(
            agency=ctx.agency.id,
            agent=self.agent.id,
            host=self.agent.host,
            ovf_url=url,
            ovf_properties=config.ovf_environment,
            name=vm_name(ctx.agency.config, ctx.namespace, self.agent.id, ctx.vm_counter + 1),
            datastore=placement.datastore,
            network=placement.network,
            folder=placement.folder,
            pool=placement.pool,
            marker=VmMarker(ctx.namespace, ctx.agency.id, self.agent.id, ctx.agency.config.agency_name),
            disk_provisioning=config.ovf_disk_provisioning,
            upgrade=upgrade,
        )
        retry = retry_for(ctx.retries, action)
        if retry is not None and (retry.gave_up or retry.not_before > ctx.now):
            # held back after a failure (no VM number used up: names stay "(1)", "(2)", …)
            self.busy = True
            if not retry.gave_up:
                ctx.wake_at = retry.not_before if ctx.wake_at is None else min(ctx.wake_at, retry.not_before)
            return False
        ctx.vm_counter += 1
        self.actions.append(action)
        return True

    def _install(self, config: AgentConfig, url: str) -> None:
        if self.host.in_maintenance_mode:
            # never deploy onto a host in MM; EAM (7.2+) says so with this issue [its remedy, taking the
            # host out of MM, is not done by this engine: Resolve reports the key as not resolvable now]
            self.conditions.append((IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE, {}))
        elif self.host.standby:
            self.busy = True  # DPM wakes the host when it is needed; deploy then [I]
        else:
            self._deploy(config, url, upgrade=False)

    def _remove_vms(self) -> None:
        a = self.agent
        for vm in (a.upgrade_vm, a.vm):
            if vm is not None:
                self.actions.append(DestroyVm(self.ctx.agency.id, a.id, vm))

    def _manage_power(self) -> None:
        """Power the agent's VM per goal, host state and hooks; raise the power issues. Never heal."""
        a = self.agent
        vm = a.vm
        assert vm is not None
        observed = self.ctx.vms[vm].power_state
        hook = a.hook if a.hook is not None and a.hook.vm == vm else None
        goal = self.ctx.agency.effective_goal
        if host_down(self.host):
            if hook is not None and hook.state is HookState.POWERED_ON:
                a = a.with_(hook=None)  # the VM goes down; the hook comes back with the next power-on [I]
            if observed is not PowerState.POWERED_OFF:
                self.actions.append(PowerOff(self.ctx.agency.id, a.id, vm))
            a = a.with_(powered=False)
        elif goal is GoalState.ENABLED:
            if a.powered:
                if observed is PowerState.POWERED_OFF:
                    self.conditions.append((IssueKind.VM_POWERED_OFF, {}))
                elif observed is PowerState.SUSPENDED:
                    self.conditions.append((IssueKind.VM_SUSPENDED, {}))
            elif hook is not None and hook.state is HookState.PROVISIONED:
                self.busy = True  # the provisioned hook holds the power-on until MarkAsAvailable
            elif observed is PowerState.POWERED_ON:
                a = a.with_(powered=True)  # already on (adopted after a restart): nothing to do
            else:
                self.actions.append(PowerOn(self.ctx.agency.id, a.id, vm))
        else:  # disabled: deployed but kept powered off
            if hook is not None and hook.state is HookState.POWERED_ON:
                a = a.with_(hook=None)
            if a.powered:
                if observed is PowerState.POWERED_OFF:
                    a = a.with_(powered=False)
                else:
                    self.actions.append(PowerOff(self.ctx.agency.id, a.id, vm))
            elif observed is PowerState.POWERED_OFF:
                a = a.with_(power_off_requested=False)
            elif a.power_off_requested:
                self.actions.append(PowerOff(self.ctx.agency.id, a.id, vm))
            else:
                self.conditions.append((IssueKind.VM_POWERED_ON, {}))
        self.agent = a

    def _settled(self) -> bool:
        """At its goal with nothing pending: the rolling upgrade may take this host now."""
        a = self.agent
        running_or_needs_not = a.powered or self.ctx.agency.effective_goal is not GoalState.ENABLED
        return a.hook is None and not self.actions and not self.conditions and running_or_needs_not

    def _upgrade(self, config: AgentConfig, url: str, held: bool) -> None:
        """New OVF URL: deploy the replacement beside the old VM, prePowerOn hook, remove the old VM.

        The replacement is powered on only after the old VM is gone [I: VMware does not say; two data-plane
        agents on one host must not run at once]. One host at a time per agency [I: no batch size is
        documented]; a host whose upgrade fails (red) holds the roll until it is resolved.
        """
        a = self.agent
        if a.upgrade_vm is not None:
            if a.upgrade_ovf_url != url:
                self.actions.append(DestroyVm(self.ctx.agency.id, a.id, a.upgrade_vm))  # superseded
            elif a.hook is not None and a.hook.vm == a.upgrade_vm:
                self.busy = True  # prePowerOn: the solution prepares the replacement
            elif not host_down(self.host):
                assert a.vm is not None
                self.actions.append(DestroyVm(self.ctx.agency.id, a.id, a.vm))  # then the swap
            else:
                self.busy = True
            return
        if a.vm_ovf_url == url:
            return
        self.busy = True
        if held or host_down(self.host) or self.ctx.upgrade_busy or not self._settled():
            return
        if self._deploy(config, url, upgrade=True):
            self.upgrade_started = True
