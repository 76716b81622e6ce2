"""backends.base values: what counts as a change and an upgrade, and how results and observations read."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from agentvm.backends.base import AgencyStatus, ApplyAction, ApplyResult
from agentvm.core.agency_diff import config_changes, is_upgrade
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
    Status,
    VmHook,
)

URLS = st.sampled_from(["http://a/x.ovf", "http://a/y.ovf", None])
# lists in one canonical order: EAM gives their order no meaning, so two configs whose lists differ only in
# order are the same config (see tests/unit/test_core_agency_diff.py for lists in any order)
CLUSTERS = st.lists(st.sampled_from([MoRef("ClusterComputeResource", f"domain-c{i}") for i in range(3)])).map(
    lambda refs: sorted(refs, key=repr)
)

configs = st.builds(
    AgencyConfig,
    agency_name=st.sampled_from(["hello", "contrail"]),
    agent_configs=st.lists(st.builds(AgentConfig, ovf_package_url=URLS), min_size=1, max_size=2).map(
        lambda configs: tuple(sorted(configs, key=repr))
    ),
    scope=CLUSTERS.map(tuple),
    agent_name=st.sampled_from([None, "agent"]),
    manually_mark_available_after_provisioning=st.booleans(),
)


@given(configs, configs)
def test_changed_fields_are_empty_exactly_when_the_configs_are_equal(
    a: AgencyConfig, b: AgencyConfig
) -> None:
    changed = config_changes(a, b)
    assert (changed == ()) == (a == b)
    assert all(getattr(a, f) != getattr(b, f) for f in changed)
    assert a.with_(**{f: getattr(b, f) for f in changed}) == b


@given(configs, configs)
def test_an_upgrade_is_a_change_of_ovf_urls(a: AgencyConfig, b: AgencyConfig) -> None:
    if is_upgrade(a, b):
        assert "agent_configs" in config_changes(a, b)
    assert not is_upgrade(a, a)


def test_describe_reads_as_one_line() -> None:
    result = ApplyResult(
        "agency-1", "hello", ApplyAction.UPDATED, ("agent_configs",), upgrade=True, enabled=True
    )
    assert result.describe() == "agency 'hello' (agency-1): updated (agent_configs, upgrade, enabled)"
    assert ApplyResult("agency-1", "hello", ApplyAction.UNCHANGED).unchanged


def _agent(n: int, status: Status, hook: VmHook | None = None) -> AgentRuntime:
    return AgentRuntime(
        agent=f"agent-{n}",
        agency="agency-1",
        host=MoRef("HostSystem", f"host-{n}"),
        host_name=f"esx-{n}",
        goal_state=GoalState.ENABLED,
        status=status,
        power_state=PowerState.POWERED_ON,
        vm_name=f"hello ({n})",
        hook=hook,
    )


def test_an_agency_is_green_only_when_every_agent_is() -> None:
    hook = VmHook(MoRef("VirtualMachine", "vm-2"), HookState.PROVISIONED)
    issue = Issue(1, IssueKind.VM_POWERED_OFF, datetime(2025, 1, 1, tzinfo=UTC), "agency-1", "hello")
    runtime = AgencyRuntime("agency-1", GoalState.ENABLED, Status.GREEN, (issue,))
    status = AgencyStatus(
        "agency-1", "hello", runtime, (_agent(1, Status.GREEN), _agent(2, Status.YELLOW, hook))
    )
    assert not status.green
    assert [a.agent for a in status.pending_hooks] == ["agent-2"]
    assert status.agent_on(MoRef("HostSystem", "host-1")) is status.agents[0]
    assert status.agent_on(MoRef("HostSystem", "host-9")) is None
    assert status.issues == (issue,) and status.goal_state is GoalState.ENABLED
    assert AgencyStatus("agency-1", "hello", runtime, (_agent(1, Status.GREEN),)).green
