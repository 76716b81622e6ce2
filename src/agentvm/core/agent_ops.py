"""Changes to the engine state that are not a reconcile: action outcomes and EAM API calls. Pure.

Called by ``agentvm.engine.manager``: ``record`` after each action it carried out, the others from its
``AgentManager`` methods (after validating and authorising the call, which needs I/O and lives there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from agentvm.core.agent_state import (
    DESTROY,
    Action,
    AgencyState,
    AgentState,
    Deployed,
    DeployFailed,
    DeployVm,
    DestroyVm,
    EngineState,
    Failed,
    Outcome,
    PowerOff,
    PowerOn,
    Retry,
    retry_for,
    retry_key,
)
from agentvm.core.agents import LATCHED, OVF_URL
from agentvm.core.heal import Backoff
from agentvm.core.heal import jitter_fraction as heal_jitter
from agentvm.model.agency import (
    DETAIL_DOWNLOAD_URL,
    DETAIL_ERROR,
    AgencyConfig,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    VmHook,
)

# ------------------------------------------------------------------------------------------- outcomes


# Transient failures of the engine's own actions (ImportVApp refused with a SystemError, an upload cut
# off, a power-on that times out): retried after 2, 4, 8, 16, 32 s (each stretched by up to 25 %), then the
# engine gives up with an issue on the agent. Destroys never give up (a VM left behind is worse than a
# retry every ``cap`` seconds).
ENGINE_RETRY = Backoff(base=2.0, factor=2.0, cap=300.0, jitter=0.25, max_attempts=6)


def jitter_fraction(seed: int, kind: str, target: str, attempt: int) -> float:
    """The engine's jitter for one action on one target (``core.heal.jitter_fraction``)."""
    return heal_jitter(seed, f"{kind}|{target}", attempt)


def record(
    state: EngineState,
    action: Action,
    outcome: Outcome,
    now: datetime,
    *,
    retry: Backoff = ENGINE_RETRY,
    seed: int = 0,
) -> EngineState:
    """The state after ``action`` had ``outcome``. An agent that vanished meanwhile is left alone (a VM
    deployed for it is then a stray, which the next reconcile deletes).

    ``Failed``: the action is held back for ``retry.delay`` (jittered by ``seed``); after
    ``retry.max_attempts`` failures a deploy raises OvfInvalidFormat (latched, like any deploy failure) and
    a power operation InvalidConfig; Resolve arms them again. Any other outcome ends the action's retry.
    """
    previous = retry_for(state.retries, action)
    kind, target = retry_key(action)
    state = state.with_(retries=tuple(r for r in state.retries if (r.kind, r.target) != (kind, target)))
    if isinstance(outcome, Failed):
        return _record_failure(state, action, outcome, previous, now, retry, seed)
    if action.agency is None or action.agent is None:
        return state
    agency = state.agency(action.agency)
    agent = agency.agent(action.agent) if agency else None
    if agency is None or agent is None:
        return state
    config = agency.config
    if isinstance(action, DeployVm):
        if isinstance(outcome, DeployFailed):
            return _add_deploy_issue(state, agency, agent, action, outcome, now)
        if not isinstance(outcome, Deployed):
            return state
        if action.upgrade:
            hook = (
                VmHook(outcome.vm, HookState.PRE_POWER_ON)
                if config.manually_mark_available_after_provisioning
                else agent.hook
            )
            agent = agent.with_(
                upgrade_vm=outcome.vm,
                upgrade_vm_name=action.name,
                upgrade_ovf_url=action.ovf_url,
                upgrading=True,
                hook=hook,
            )
        else:
            hook = (
                VmHook(outcome.vm, HookState.PROVISIONED)
                if config.manually_mark_available_after_provisioning
                else None
            )
            agent = agent.with_(
                vm=outcome.vm, vm_name=action.name, vm_ovf_url=action.ovf_url, powered=False, hook=hook
            )
    elif isinstance(action, PowerOn):
        if action.vm != agent.vm:
            return state
        hook = (
            VmHook(action.vm, HookState.POWERED_ON) if config.manually_mark_available_after_power_on else None
        )
        agent = agent.with_(powered=True, hook=hook, power_off_requested=False)
    elif isinstance(action, PowerOff):
        if action.vm != agent.vm:
            return state
        hook = None if agent.hook and agent.hook.state is HookState.POWERED_ON else agent.hook
        agent = agent.with_(powered=False, power_off_requested=False, hook=hook)
    elif isinstance(action, DestroyVm):
        agent = _after_destroy(agent, action)
    return state.replace_agency(_replace_agent(agency, agent))


def _record_failure(
    state: EngineState,
    action: Action,
    outcome: Failed,
    previous: Retry | None,
    now: datetime,
    retry: Backoff,
    seed: int,
) -> EngineState:
    """Hold ``action`` back after its failure number ``attempts`` (its old retry already gone from
    ``state``); give up with an issue on the agent once ``retry.max_attempts`` failed."""
    kind, target = retry_key(action)
    attempts = (previous.attempts if previous is not None else 0) + 1
    delay = retry.delay(attempts, jitter_fraction(seed, kind, target, attempts))
    entry = Retry(
        kind=kind,
        target=target,
        attempts=attempts,
        not_before=now + timedelta(seconds=delay),
        error=outcome.error,
        agency=action.agency,
        agent=action.agent,
        detail=action.ovf_url if isinstance(action, DeployVm) else "",
    )
    found = state.find_agent(action.agent) if action.agent is not None else None
    if kind == DESTROY or found is None or attempts < retry.max_attempts:
        return state.with_(retries=(*state.retries, entry))
    error = f"gave up after {attempts} failed attempts (Resolve tries again); the last: {outcome.error}"
    entry = entry.with_(gave_up=True, error=error)
    state = state.with_(retries=(*state.retries, entry))
    if isinstance(action, DeployVm):
        agency, agent = found
        failure = DeployFailed(IssueKind.OVF_INVALID_FORMAT, {DETAIL_ERROR: (error,)})
        return _add_deploy_issue(state, agency, agent, action, failure, now)
    return state  # a power operation: reconcile raises InvalidConfig while the retry has given up


def _after_destroy(agent: AgentState, action: DestroyVm) -> AgentState:
    if action.vm == agent.upgrade_vm:
        hook = None if agent.hook and agent.hook.vm == action.vm else agent.hook
        return agent.with_(
            upgrade_vm=None, upgrade_vm_name=None, upgrade_ovf_url=None, upgrading=False, hook=hook
        )
    if action.vm != agent.vm:
        return agent
    if agent.upgrade_vm is not None:
        # the old VM of an upgrade is gone: the replacement becomes the agent's VM and is powered on next
        return agent.with_(
            vm=agent.upgrade_vm,
            vm_name=agent.upgrade_vm_name,
            vm_ovf_url=agent.upgrade_ovf_url,
            powered=False,
            hook=None,
            upgrade_vm=None,
            upgrade_vm_name=None,
            upgrade_ovf_url=None,
        )
    return agent.with_(vm=None, vm_name=None, vm_ovf_url=None, powered=False, hook=None)


def _add_deploy_issue(
    state: EngineState,
    agency: AgencyState,
    agent: AgentState,
    action: DeployVm,
    outcome: DeployFailed,
    now: datetime,
) -> EngineState:
    detail = {**outcome.detail, OVF_URL: action.ovf_url}
    if outcome.kind is IssueKind.CANNOT_ACCESS_AGENT_OVF:
        detail.setdefault(DETAIL_DOWNLOAD_URL, action.ovf_url)
    issue = Issue(
        key=state.next_issue_key,
        kind=outcome.kind,
        time=now,
        agency=agency.id,
        agency_name=agency.config.agency_name,
        agent=agent.id,
        agent_name=agent.vm_name or agency.config.agent_name or agency.config.agency_name,
        host=agent.host,
        vm=agent.vm,
        vm_name=agent.vm_name,
        detail=detail,
    )
    kept = tuple(i for i in agent.issues if i.kind is not outcome.kind)
    agent = agent.with_(issues=(*kept, issue))
    state = state.with_(next_issue_key=state.next_issue_key + 1)
    return state.replace_agency(_replace_agent(agency, agent))


def _replace_agent(agency: AgencyState, agent: AgentState) -> AgencyState:
    return agency.with_(agents=tuple(agent if a.id == agent.id else a for a in agency.agents))


# ------------------------------------------------------------------------------------------- API calls


def add_agency(
    state: EngineState, config: AgencyConfig, goal: GoalState, solution_id: str
) -> tuple[EngineState, str]:
    """A new agency (already validated by the caller); its agents appear at the next reconcile."""
    agency_id = f"agency-{state.next_id}"
    agency = AgencyState(id=agency_id, config=config, goal=goal, solution_id=solution_id)
    purge = tuple(n for n in state.purge if n != config.agency_name)  # its VMs are adopted instead
    state = state.with_(agencies=(*state.agencies, agency), next_id=state.next_id + 1, purge=purge)
    return state, agency_id


def update_config(state: EngineState, agency_id: str, config: AgencyConfig) -> EngineState:
    """Replace the config whole (EAM's Update); the next reconciles converge to it."""
    agency = _agency(state, agency_id)
    return state.replace_agency(agency.with_(config=config))


def set_goal(state: EngineState, agency_id: str, goal: GoalState) -> EngineState:
    return state.replace_agency(_agency(state, agency_id).with_(goal=goal))


def destroy(state: EngineState, agency_id: str) -> EngineState:
    """Mark for destruction: agents are removed over the next reconciles, then the agency is forgotten."""
    return state.replace_agency(_agency(state, agency_id).with_(destroying=True))


def purge(state: EngineState, agency_name: str) -> EngineState:
    """Delete the VMs of agency ``agency_name`` that no agent of this engine claims (their agency was
    created by an engine whose state is lost). Reconcile carries it out and drops the name once none is
    left. Called by ``destroy`` with the direct backend, for a spec agency the engine does not know."""
    if agency_name in state.purge:
        return state
    return state.with_(purge=(*state.purge, agency_name))


def release_hook(state: EngineState, agent_id: str) -> EngineState:
    """MarkAsAvailable: clear the agent's pending hook (a no-op when none is pending)."""
    found = state.find_agent(agent_id)
    if found is None or found[1].hook is None:
        return state
    agency, agent = found
    return state.replace_agency(_replace_agent(agency, agent.with_(hook=None)))


def add_agency_issue(
    state: EngineState, agency_id: str, issue: Issue, now: datetime
) -> tuple[EngineState, Issue]:
    """AddIssue (deprecated): the engine overwrites key and time; the issue stays until resolved."""
    agency = _agency(state, agency_id)
    stored = Issue(
        key=state.next_issue_key,
        kind=issue.kind,
        time=now,
        agency=agency.id,
        agency_name=agency.config.agency_name,
        agent=issue.agent,
        agent_name=issue.agent_name,
        host=issue.host,
        host_name=issue.host_name,
        vm=issue.vm,
        vm_name=issue.vm_name,
        detail=dict(issue.detail),
    )
    state = state.with_(next_issue_key=state.next_issue_key + 1)
    return state.replace_agency(agency.with_(issues=(*agency.issues, stored))), stored


def issues_of(state: EngineState, obj: str | None) -> list[Issue]:
    """The issues of an agency (its own and its agents') or of an agent; the manager has none (EAM 6.5+)."""
    if obj is None:
        return []
    agency = state.agency(obj)
    if agency is not None:
        return [*agency.issues, *(i for a in agency.agents for i in a.issues)]
    found = state.find_agent(obj)
    return list(found[1].issues) if found else []


def resolve(state: EngineState, obj: str | None, keys: Sequence[int]) -> tuple[EngineState, list[int]]:
    """Start the remedy of each requested issue of ``obj``; returns the new state and the keys not found.

    Active remedies act through the state: VmPoweredOff/VmSuspended → the engine powers the VM on again
    (with the poweredOn hook, as a new power-on cycle); VmPoweredOn → powered off; VmNotDeployed and deploy
    failures → the latch is dropped so the VM is deployed again. Issues whose condition is computed from
    the inventory (NoAgentVm…, IncompatibleHostVersion, ManagedHostNotReachable …) are passive: they are
    kept here and the caller's next reconcile drops them if their condition is gone (a recheck), or keeps
    them under the same key when it is not (the caller then reports them as not resolvable now).
    """
    wanted = set(keys)
    present = {i.key for i in issues_of(state, obj)}
    not_found = [k for k in keys if k not in present]
    hits = wanted & present
    if not hits:
        return state, not_found
    agencies: list[AgencyState] = []
    rearmed: set[str] = set()
    for agency in state.agencies:
        agency = agency.with_(issues=tuple(i for i in agency.issues if i.key not in hits))
        rearmed.update(a.id for a in agency.agents if any(i.key in hits for i in a.issues))
        agents = tuple(_resolve_agent(agent, hits) for agent in agency.agents)
        agencies.append(agency.with_(agents=agents))
    # a resolved agent starts its retries afresh (this is how a give-up is armed again)
    retries = tuple(r for r in state.retries if r.agent not in rearmed)
    return state.with_(agencies=tuple(agencies), retries=retries), not_found


def _resolve_agent(agent: AgentState, hits: Iterable[int]) -> AgentState:
    keys = set(hits)
    for issue in agent.issues:
        if issue.key not in keys:
            continue
        if issue.kind in (IssueKind.VM_POWERED_OFF, IssueKind.VM_SUSPENDED):
            agent = agent.with_(powered=False)  # "not on by us": the next reconcile powers it on
        elif issue.kind is IssueKind.VM_POWERED_ON:
            agent = agent.with_(power_off_requested=True)
        elif issue.kind not in LATCHED:
            continue  # passive: the next reconcile rechecks
        agent = agent.with_(issues=tuple(i for i in agent.issues if i.key != issue.key))
    return agent


def _agency(state: EngineState, agency_id: str) -> AgencyState:
    agency = state.agency(agency_id)
    if agency is None:
        raise KeyError(agency_id)
    return agency
