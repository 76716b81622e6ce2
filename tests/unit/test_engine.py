"""The engine against an in-memory vSphere: the EAM behaviours agentvm relies on (docs/eam.md), at
engine level."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core import agent_ops
from agentvm.core.agent_state import DeployVm, EngineState, Failed, VmMarker, retry_for
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
from agentvm.engine.infra import InfraError
from agentvm.engine.manager import Engine
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    GoalState,
    HookState,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    Status,
)
from tests.support.fake_infra import NETWORK, SHARED_DS, FakeInfra, FakeVm

OVF = "http://127.0.0.1:8000/hello-agent/hello-agent.ovf"
OVF2 = "http://127.0.0.1:8000/hello-agent/v2/hello-agent.ovf"
SOLUTION = Caller("com.example.hello", extension=True)


def clock() -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC)


def config(*scope: MoRef, url: str = OVF, **changes: object) -> AgencyConfig:
    base = AgencyConfig(
        agency_name="hello",
        agent_configs=(AgentConfig(ovf_package_url=url, ovf_environment=(OvfProperty("greeting", "hi"),)),),
        scope=scope,
        agent_name="hello-agent",
    )
    return base.with_(**changes) if changes else base


@pytest.fixture
def infra() -> FakeInfra:
    return FakeInfra()


def engine_for(infra: FakeInfra, path: Path | None = None) -> Engine:
    return Engine(infra, path, namespace="com.vmware.vim.eam", clock=clock)


def issue_kinds(engine: Engine, obj: str) -> list[IssueKind]:
    return [i.kind for i in engine.query_issues(obj)]


def power_of(infra: FakeInfra, vm: MoRef) -> PowerState:
    return infra.vms[vm].power


def test_two_clusters_of_three_hosts_get_six_green_pinned_agents(infra: FakeInfra) -> None:
    c1, c2 = infra.add_cluster(3), infra.add_cluster(3)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(c1, c2), GoalState.ENABLED)
    engine.run_until_quiet()

    agents = engine.agency_agents(agency)
    assert len(agents) == 6
    runtimes = [engine.agent_runtime(a) for a in agents]
    assert {r.host for r in runtimes} == set(infra.hosts)
    assert all(r.status is Status.GREEN and r.power_state is PowerState.POWERED_ON for r in runtimes)
    assert engine.agency_runtime(agency).status is Status.GREEN
    assert len(infra.vms) == 6
    for vm in infra.vms.values():
        assert vm.pinned_to == vm.host and vm.ha_top
        assert vm.autostart_on == vm.host  # start_with_host after every deploy (a no-op in a cluster)
        assert vm.properties == (OvfProperty("greeting", "hi"),)
        assert vm.datastore == MoRef("Datastore", f"datastore-{vm.host.value}")  # the host's setting
    assert sorted(v.name for v in infra.vms.values()) == sorted(f"hello-agent ({n})" for n in range(1, 7))


def test_quiet_step_costs_only_a_generation_read(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    observed = infra.calls["observe"]
    assert engine.step() is False
    assert infra.calls["observe"] == observed


def test_provisioned_hook_holds_power_on_until_mark_as_available(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(
        SOLUTION, config(cluster, manually_mark_available_after_provisioning=True), GoalState.ENABLED
    )
    engine.run_until_quiet()
    (agent,) = engine.agency_agents(agency)
    runtime = engine.agent_runtime(agent)
    assert runtime.hook is not None and runtime.hook.state is HookState.PROVISIONED
    assert runtime.hook.vm == runtime.vm
    assert runtime.power_state is PowerState.POWERED_OFF
    assert runtime.status is Status.YELLOW
    assert engine.agency_runtime(agency).status is Status.YELLOW

    engine.mark_as_available(agent)
    engine.run_until_quiet()
    runtime = engine.agent_runtime(agent)
    assert runtime.hook is None and runtime.power_state is PowerState.POWERED_ON
    assert runtime.status is Status.GREEN
    engine.mark_as_available(agent)  # nothing pending: a no-op


def test_added_host_gets_a_seventh_agent(infra: FakeInfra) -> None:
    c1, c2 = infra.add_cluster(3), infra.add_cluster(3)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(c1, c2), GoalState.ENABLED)
    engine.run_until_quiet()
    new_host = infra.add_host(c2)
    engine.run_until_quiet()
    assert len(engine.agency_agents(agency)) == 7
    (vm,) = infra.vms_on(new_host)
    assert power_of(infra, vm.vm) is PowerState.POWERED_ON
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_removed_host_loses_its_agent(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    infra.remove_host(infra.clusters[cluster][0])
    engine.run_until_quiet()
    assert len(engine.agency_agents(agency)) == 1
    assert engine.agency_runtime(agency).status is Status.GREEN


@pytest.mark.parametrize("vcenter_powers_off", [False, True])
def test_maintenance_mode_in_and_out_powers_off_then_on_without_issue(
    infra: FakeInfra, vcenter_powers_off: bool
) -> None:
    cluster = infra.add_cluster(2)
    host = infra.clusters[cluster][0]
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()

    infra.enter_maintenance(host, power_off_agents=vcenter_powers_off)
    engine.run_until_quiet()
    (vm,) = infra.vms_on(host)
    assert power_of(infra, vm.vm) is PowerState.POWERED_OFF
    assert engine.query_issues(agency) == []
    assert engine.agency_runtime(agency).status is Status.GREEN

    infra.exit_maintenance(host)
    engine.run_until_quiet()
    assert power_of(infra, vm.vm) is PowerState.POWERED_ON
    assert engine.query_issues(agency) == []
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_maintenance_exit_brings_the_powered_on_hook_back(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    host = infra.clusters[cluster][0]
    engine = engine_for(infra)
    agency = engine.create_agency(
        SOLUTION, config(cluster, manually_mark_available_after_power_on=True), GoalState.ENABLED
    )
    engine.run_until_quiet()
    (agent,) = engine.agency_agents(agency)
    hook = engine.agent_runtime(agent).hook
    assert hook is not None and hook.state is HookState.POWERED_ON
    engine.mark_as_available(agent)
    engine.run_until_quiet()
    assert engine.agent_runtime(agent).status is Status.GREEN

    infra.enter_maintenance(host)
    engine.run_until_quiet()
    infra.exit_maintenance(host)
    engine.run_until_quiet()
    hook = engine.agent_runtime(agent).hook
    assert hook is not None and hook.state is HookState.POWERED_ON


def test_user_power_off_is_red_until_resolved_then_on_and_green(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    agent = engine.agency_agents(agency)[0]
    vm = engine.agent_runtime(agent).vm
    assert vm is not None

    infra.user_power_off(vm)
    engine.run_until_quiet()
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.VM_POWERED_OFF and issue.agent == agent and issue.vm == vm
    assert power_of(infra, vm) is PowerState.POWERED_OFF  # no silent self-healing
    assert engine.agent_runtime(agent).status is Status.RED
    assert engine.agency_runtime(agency).status is Status.RED

    assert engine.resolve(agency, [issue.key, 9999]) == [9999]  # through the agency, and an unknown key
    engine.run_until_quiet()
    assert power_of(infra, vm) is PowerState.POWERED_ON
    assert engine.query_issues(agency) == []
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_suspended_vm_is_vm_suspended(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    (vm,) = infra.vms
    infra.user_suspend(vm)
    engine.run_until_quiet()
    assert issue_kinds(engine, agency) == [IssueKind.VM_SUSPENDED]
    engine.resolve_all(agency)
    engine.run_until_quiet()
    assert power_of(infra, vm) is PowerState.POWERED_ON and engine.query_issues(agency) == []


def test_power_off_issue_clears_by_itself_when_the_user_powers_back_on(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    (vm,) = infra.vms
    infra.user_power_off(vm)
    engine.run_until_quiet()
    assert issue_kinds(engine, agency) == [IssueKind.VM_POWERED_OFF]
    infra.user_power_on(vm)
    engine.run_until_quiet()
    assert engine.query_issues(agency) == []


def test_deleted_vm_is_not_redeployed_until_resolve_all(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    host = infra.clusters[cluster][0]
    (vm,) = infra.vms_on(host)
    infra.delete_vm(vm.vm)
    engine.run_until_quiet()
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.VM_NOT_DEPLOYED and issue.host == host
    assert infra.vms_on(host) == []
    assert engine.agency_runtime(agency).status is Status.RED

    engine.resolve_all(agency)
    engine.run_until_quiet()
    (redeployed,) = infra.vms_on(host)
    assert redeployed.vm != vm.vm and redeployed.power is PowerState.POWERED_ON
    assert engine.query_issues(agency) == []
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_unreachable_ovf_at_deploy_is_cannot_access_agent_ovf(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    infra.unreachable.add(OVF)  # reachable when checked, gone when deployed
    engine.run_until_quiet()
    issues = engine.query_issues(agency)
    assert [i.kind for i in issues] == [IssueKind.CANNOT_ACCESS_AGENT_OVF] * 2
    assert all(i.detail["download_url"] == OVF for i in issues)
    assert engine.agency_runtime(agency).status is Status.RED
    deploys = infra.calls["deploy_agent_vm"]
    engine.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == deploys  # not retried without Resolve

    infra.unreachable.clear()
    engine.resolve_all(agency)
    engine.run_until_quiet()
    assert engine.query_issues(agency) == [] and len(infra.vms) == 2


def test_malformed_ovf_is_ovf_invalid_format(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    infra.malformed.add(OVF)
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.OVF_INVALID_FORMAT
    assert issue.detail["error"] == ("line 1: not an OVF envelope",)
    # an Update to a good URL removes the condition
    engine.update_agency(SOLUTION, agency, config(cluster, url=OVF2))
    engine.run_until_quiet()
    assert engine.query_issues(agency) == [] and len(infra.vms) == 1


def test_an_import_vcenter_refuses_is_a_latched_agent_issue_eam_can_report(infra: FakeInfra) -> None:
    from agentvm.eam.translate import issue_to_eam

    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    infra.refused.add(OVF)
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.OVF_INVALID_FORMAT and issue.vm is None
    assert "refused" in str(issue.detail["error"])
    deploys = infra.calls["deploy_agent_vm"]
    engine.run_until_quiet()  # latched: no redeploy loop until Resolve or a new OVF URL
    assert infra.calls["deploy_agent_vm"] == deploys
    assert type(issue_to_eam(issue, "s")).__name__.endswith("OvfInvalidFormat")  # no VM needed on the wire


def test_host_without_agent_settings_and_agency_without_lists(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1, agent_settings=False)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    assert sorted(issue_kinds(engine, agency)) == [
        IssueKind.NO_AGENT_VM_DATASTORE,
        IssueKind.NO_AGENT_VM_NETWORK,
    ]
    assert infra.vms == {}
    assert engine.agency_runtime(agency).status is Status.RED

    # passive: once the agency names candidates the host sees, the issues go and the agent is deployed
    engine.update_agency(
        SOLUTION, agency, config(cluster, agent_vm_datastores=(SHARED_DS,), agent_vm_networks=(NETWORK,))
    )
    engine.run_until_quiet()
    assert engine.query_issues(agency) == []
    (vm,) = infra.vms.values()
    assert vm.datastore == SHARED_DS


def test_agency_lists_that_the_host_cannot_see_are_no_custom_issues(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    missing = MoRef("Datastore", "datastore-elsewhere")
    agency = engine.create_agency(
        SOLUTION, config(cluster, agent_vm_datastores=(missing,)), GoalState.ENABLED
    )
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE
    assert issue.detail["custom_agent_vm_datastore"] == (str(missing),)


def test_new_ovf_url_upgrades_every_agent_one_host_at_a_time(infra: FakeInfra) -> None:
    c1, c2 = infra.add_cluster(2), infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(c1, c2), GoalState.ENABLED)
    engine.run_until_quiet()
    old = set(infra.vms)
    infra.power_log.clear()

    engine.update_agency(SOLUTION, agency, config(c1, c2, url=OVF2))
    assert engine.agency_runtime(agency).status is Status.YELLOW  # working on it, before the first step
    for _ in range(2000):
        idle = engine.in_flight == 0  # read first: a unit finishing during the step leaves work behind
        acted = engine.step()
        # at no time are two hosts mid-upgrade: at most one host has two agent VMs
        assert sum(1 for h in infra.hosts if len(infra.vms_on(h)) > 1) <= 1
        if acted:
            continue
        if idle and not engine.wait_for_work(0):
            break
        engine.wait_for_work(0.05)  # a unit still runs on a worker (a loaded machine): until it ends

    assert {v.ovf_url for v in infra.vms.values()} == {OVF2}
    assert not old & set(infra.vms)
    assert all(v.power is PowerState.POWERED_ON for v in infra.vms.values())
    assert len(infra.vms) == 4 and engine.agency_runtime(agency).status is Status.GREEN
    # per host: deploy the replacement, remove the old VM, power the replacement on; hosts in sequence
    kinds = [k for k, _ in infra.power_log]
    assert kinds == ["deploy", "destroy", "on"] * 4


def test_upgrade_with_pre_power_on_hook(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    engine.update_agency(
        SOLUTION, agency, config(cluster, url=OVF2, manually_mark_available_after_provisioning=True)
    )
    engine.run_until_quiet()
    hooked = [engine.agent_runtime(a) for a in engine.agency_agents(agency)]
    pending = [r for r in hooked if r.hook is not None]
    assert len(pending) == 1  # one host at a time
    (runtime,) = pending
    assert runtime.hook is not None and runtime.hook.state is HookState.PRE_POWER_ON
    assert runtime.hook.vm != runtime.vm  # the replacement, beside the old VM
    assert infra.vms[runtime.hook.vm].ovf_url == OVF2 and runtime.vm in infra.vms

    for _ in range(4):
        for a in engine.agency_agents(agency):
            engine.mark_as_available(a)
        engine.run_until_quiet()
    assert {v.ovf_url for v in infra.vms.values()} == {OVF2} and len(infra.vms) == 2
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_uninstall_removes_every_agent_vm_and_ends_green(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(3)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    engine.set_goal_state(SOLUTION, agency, GoalState.UNINSTALLED)
    engine.run_until_quiet()
    assert infra.vms == {}
    assert engine.agency_runtime(agency).status is Status.GREEN
    assert engine.agency_runtime(agency).goal_state is GoalState.UNINSTALLED
    with pytest.raises(InvalidState):
        engine.set_goal_state(SOLUTION, agency, GoalState.ENABLED)


def test_disabled_agency_keeps_vms_off_and_flags_a_user_power_on(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.DISABLED)
    engine.run_until_quiet()
    (vm,) = infra.vms.values()
    assert power_of(infra, vm.vm) is PowerState.POWERED_OFF
    assert engine.agency_runtime(agency).status is Status.GREEN
    infra.user_power_on(vm.vm)
    engine.run_until_quiet()
    assert issue_kinds(engine, agency) == [IssueKind.VM_POWERED_ON]
    assert power_of(infra, vm.vm) is PowerState.POWERED_ON
    engine.resolve_all(agency)
    engine.run_until_quiet()
    assert power_of(infra, vm.vm) is PowerState.POWERED_OFF and engine.query_issues(agency) == []

    engine.set_goal_state(SOLUTION, agency, GoalState.ENABLED)
    engine.run_until_quiet()
    assert power_of(infra, vm.vm) is PowerState.POWERED_ON
    engine.set_goal_state(SOLUTION, agency, GoalState.DISABLED)
    engine.run_until_quiet()
    assert power_of(infra, vm.vm) is PowerState.POWERED_OFF and engine.query_issues(agency) == []


def test_destroy_is_asynchronous_then_managed_object_not_found(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    engine.destroy_agency(SOLUTION, agency)
    assert engine.agency_runtime(agency).agency == agency  # still readable until the agents are gone
    with pytest.raises(InvalidState):
        engine.update_agency(SOLUTION, agency, config(cluster))
    assert engine.query_agencies(SOLUTION) == []
    engine.run_until_quiet()
    assert infra.vms == {}
    with pytest.raises(ManagedObjectNotFound):
        engine.agency_runtime(agency)
    with pytest.raises(ManagedObjectNotFound):
        engine.destroy_agency(SOLUTION, agency)


def test_disconnected_host_is_not_reachable_until_it_is_back(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(2)
    host = infra.clusters[cluster][0]
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    infra.disconnect(host)
    engine.run_until_quiet()
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.MANAGED_HOST_NOT_REACHABLE
    assert engine.resolve(agency, [issue.key]) == [issue.key]  # not remediable
    infra.reconnect(host)
    engine.run_until_quiet()
    assert engine.query_issues(agency) == []
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_incompatible_host_version(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1, version="7.0.3")
    engine = engine_for(infra)
    cfg = config(cluster).with_(agent_configs=(AgentConfig(ovf_package_url=OVF, host_version="8.*"),))
    agency = engine.create_agency(SOLUTION, cfg, GoalState.ENABLED)
    engine.run_until_quiet()
    assert issue_kinds(engine, agency) == [IssueKind.INCOMPATIBLE_HOST_VERSION]
    assert infra.vms == {}


def test_create_agency_validates_and_creates_nothing_on_failure(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    with pytest.raises(InvalidAgentConfiguration):
        engine.create_agency(SOLUTION, config(cluster).with_(agent_configs=()), GoalState.ENABLED)
    with pytest.raises(InvalidAgencyScope) as scope_error:
        engine.create_agency(
            SOLUTION, config(MoRef("ClusterComputeResource", "domain-c404")), GoalState.ENABLED
        )
    assert scope_error.value.unknown == (MoRef("ClusterComputeResource", "domain-c404"),)
    with pytest.raises(InvalidArgument):
        engine.create_agency(SOLUTION, config(cluster, agency_name=""), GoalState.ENABLED)
    with pytest.raises(InvalidUrl) as malformed:
        engine.create_agency(SOLUTION, config(cluster, url="ftp:/nope"), GoalState.ENABLED)
    assert malformed.value.malformed
    infra.unreachable.add(OVF)
    with pytest.raises(InvalidUrl) as refused:
        engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    assert refused.value.connection_refused
    assert engine.query_agencies(SOLUTION) == []
    engine.run_until_quiet()
    assert infra.vms == {}


def test_another_solution_sees_and_changes_nothing_of_ours(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    other = Caller("com.example.other", extension=True)
    assert engine.query_agencies(other) == []
    assert engine.query_agencies(Caller("administrator@vsphere.local")) == [agency]
    assert engine.agency_solution_id(agency) == SOLUTION.user
    with pytest.raises(NotAuthorized):
        engine.update_agency(other, agency, config(cluster))
    with pytest.raises(NotAuthorized):
        engine.destroy_agency(other, agency)


def test_issue_keys_are_never_reused(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    (vm,) = infra.vms
    seen: list[int] = []
    for _ in range(3):
        infra.user_power_off(vm)
        engine.run_until_quiet()
        (issue,) = engine.query_issues(agency)
        seen.append(issue.key)
        engine.resolve_all(agency)
        engine.run_until_quiet()
    assert len(set(seen)) == 3


def test_restart_rebuilds_the_same_agencies_agents_and_issues(infra: FakeInfra, tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    c1, c2 = infra.add_cluster(2), infra.add_cluster(1)
    engine = engine_for(infra, state)
    agency = engine.create_agency(
        SOLUTION, config(c1, c2, manually_mark_available_after_provisioning=True), GoalState.ENABLED
    )
    engine.run_until_quiet()
    agents = engine.agency_agents(agency)
    for a in agents[:2]:
        engine.mark_as_available(a)
    engine.run_until_quiet()
    powered_off = engine.agent_runtime(agents[0]).vm
    assert powered_off is not None
    infra.user_power_off(powered_off)
    engine.run_until_quiet()
    before = {a: engine.agent_runtime(a) for a in agents}
    issues_before = engine.query_issues(agency)
    assert [i.kind for i in issues_before] == [IssueKind.VM_POWERED_OFF]

    restarted = engine_for(infra, state)
    restarted.run_until_quiet()
    assert restarted.query_agencies(SOLUTION) == [agency]
    assert restarted.agency_agents(agency) == agents
    assert {a: restarted.agent_runtime(a) for a in agents} == before
    assert restarted.query_issues(agency) == issues_before
    # and it carries on where the first one stopped: the third agent's hook is still pending
    restarted.mark_as_available(agents[2])
    restarted.resolve_all(agency)
    restarted.run_until_quiet()
    assert restarted.agency_runtime(agency).status is Status.GREEN
    assert all(v.power is PowerState.POWERED_ON for v in infra.vms.values())


def test_restart_after_vm_deleted_while_down_reports_vm_not_deployed(
    infra: FakeInfra, tmp_path: Path
) -> None:
    state = tmp_path / "engine.json"
    cluster = infra.add_cluster(1)
    engine = engine_for(infra, state)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    (vm,) = infra.vms
    infra.delete_vm(vm)
    restarted = engine_for(infra, state)
    restarted.run_until_quiet()
    assert issue_kinds(restarted, agency) == [IssueKind.VM_NOT_DEPLOYED]
    assert infra.vms == {}


def deployed_then_state_lost(infra: FakeInfra, state: Path, hosts: int) -> tuple[MoRef, dict[MoRef, MoRef]]:
    """An agency on a cluster of ``hosts`` hosts, deployed by an engine whose state file is then lost:
    (the cluster, each agent VM's host)."""
    cluster = infra.add_cluster(hosts)
    engine = engine_for(infra, state)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    state.unlink()
    return cluster, {vm: v.host for vm, v in infra.vms.items()}


def test_a_lost_state_adopts_the_marked_vms_by_agency_name_and_host_and_redeploys_none(
    infra: FakeInfra, tmp_path: Path
) -> None:
    state = tmp_path / "engine.json"
    cluster, before = deployed_then_state_lost(infra, state, 3)
    deploys = infra.calls["deploy_agent_vm"]
    assert len(before) == 3

    fresh = engine_for(infra, state)
    fresh.run_until_quiet()
    assert {vm: v.host for vm, v in infra.vms.items()} == before, "VMs of an unknown agency are kept"
    agency = fresh.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    fresh.run_until_quiet()

    agents = [fresh.agent_runtime(a) for a in fresh.agency_agents(agency)]
    assert {a.vm: a.host for a in agents} == before, "each host's own VM, adopted"
    assert infra.calls["deploy_agent_vm"] == deploys, "nothing redeployed"
    assert fresh.agency_runtime(agency).status is Status.GREEN
    assert all(v.power is PowerState.POWERED_ON for v in infra.vms.values())
    # a VM deployed later gets a number none of the adopted ones has (vCenter refuses duplicate names)
    assert agents[0].vm is not None
    infra.delete_vm(agents[0].vm)
    fresh.run_until_quiet()
    fresh.resolve_all(agency)
    fresh.run_until_quiet()
    assert sorted(v.name for v in infra.vms.values()) == [f"hello-agent ({n})" for n in (2, 3, 4)]


def test_an_agency_created_while_a_step_looks_at_vsphere_still_adopts_the_vms_of_a_lost_state(
    infra: FakeInfra, tmp_path: Path
) -> None:
    # the controller creates the agency on its thread while the engine's step is reading vSphere for the
    # scope it had (none): that step must not judge the new agency's VMs by an observation made without
    # its hosts (they looked like second VMs of the agency and were deleted, then all redeployed)
    state = tmp_path / "engine.json"
    cluster, before = deployed_then_state_lost(infra, state, 3)
    deploys = infra.calls["deploy_agent_vm"]

    fresh = engine_for(infra, state)
    created: list[str] = []
    infra.during_observe = lambda: created.append(
        fresh.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    )
    fresh.step()
    assert created, "the agency was created during the step's observation"
    fresh.run_until_quiet()

    assert infra.calls["destroy_vm"] == 0, "no VM deleted"
    assert infra.calls["deploy_agent_vm"] == deploys, "nothing redeployed"
    agents = [fresh.agent_runtime(a) for a in fresh.agency_agents(created[0])]
    assert {a.vm: a.host for a in agents} == before, "each host's own VM, adopted"


def test_a_lost_state_never_adopts_another_agencys_vms(infra: FakeInfra, tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    cluster = infra.add_cluster(1)
    engine = engine_for(infra, state)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    (old,) = infra.vms
    state.unlink()
    fresh = engine_for(infra, state)
    # same ids as before (the counters start over), another name: not the same agency
    agency = fresh.create_agency(SOLUTION, config(cluster, agency_name="other"), GoalState.ENABLED)
    fresh.run_until_quiet()
    (agent,) = [fresh.agent_runtime(a) for a in fresh.agency_agents(agency)]
    assert agent.vm is not None and agent.vm != old
    assert old in infra.vms, "the other agency's VM is left alone"
    # a VM of another engine (another namespace) is never touched either
    other = Engine(infra, None, namespace="com.example.other", clock=clock)
    other.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    other.run_until_quiet()
    fresh.run_until_quiet()
    assert len(infra.vms) == 3


def test_purge_deletes_the_vms_of_an_agency_a_lost_state_knew(infra: FakeInfra, tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    cluster = infra.add_cluster(2)
    engine = engine_for(infra, state)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.create_agency(SOLUTION, config(cluster, agency_name="kept"), GoalState.ENABLED)
    engine.run_until_quiet()
    assert len(infra.vms) == 4
    state.unlink()
    fresh = engine_for(infra, state)

    fresh.purge_unclaimed(SOLUTION, "hello")
    fresh.run_until_quiet()

    assert [v.marker.agency_name for v in infra.vms.values()] == ["kept", "kept"]
    assert fresh.state.purge == ()


def test_a_half_deployed_vm_is_deleted_not_adopted(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    (host,) = infra.clusters[cluster]
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    # what an engine stopped in the middle of an import leaves: the VM carries the marker of the agent
    # the first reconcile creates (agent-2), and the import token (complete=False)
    half = MoRef("VirtualMachine", "vm-half")
    marker = VmMarker("com.vmware.vim.eam", agency, "agent-2", "hello")
    infra.vms[half] = FakeVm(
        half, "hello-agent (1)", host, PowerState.POWERED_OFF, marker, OVF, (), SHARED_DS, NETWORK, None,
        None, complete=False,
    )  # fmt: skip

    engine.run_until_quiet()

    assert half not in infra.vms
    (agent,) = [engine.agent_runtime(a) for a in engine.agency_agents(agency)]
    assert agent.agent == "agent-2" and agent.vm is not None and agent.vm != half
    assert agent.status is Status.GREEN


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


RETRY = Backoff(base=10.0, factor=2.0, cap=40.0, jitter=0.25, max_attempts=4)


def test_a_transient_deploy_failure_backs_off_then_gives_up_and_resolve_arms_it_again(
    infra: FakeInfra,
) -> None:
    cluster = infra.add_cluster(1)
    infra.flaky.add(OVF)
    now = Clock()
    engine = Engine(infra, None, namespace="com.vmware.vim.eam", clock=now, retry=RETRY, retry_seed=7)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)

    engine.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == 1
    assert engine.agency_runtime(agency).status is Status.YELLOW  # working on it: no issue yet
    engine.run_until_quiet()  # any number of steps before the delay: no new attempt
    assert infra.calls["deploy_agent_vm"] == 1
    assert engine.wait_for_work(0) is False
    now.advance(9.9)
    engine.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == 1, "not before base (10 s)"
    delays, last = [], now.now - timedelta(seconds=9.9)
    for attempt in range(2, 5):
        while infra.calls["deploy_agent_vm"] < attempt:
            now.advance(0.1)
            if engine.wait_for_work(0):  # the retry fell due: the wait says so
                engine.run_until_quiet()
        delays.append((now.now - last).total_seconds())
        last = now.now
    # exponential with jitter in [0, 25 %), capped at 40 s; never shorter than the previous one
    assert 10.0 <= delays[0] <= 12.6 and 20.0 <= delays[1] <= 25.1 and 40.0 <= delays[2] <= 40.1
    assert delays == sorted(delays)
    issues = engine.query_issues(agency)
    assert [i.kind for i in issues] == [IssueKind.OVF_INVALID_FORMAT]
    assert "gave up after 4 failed attempts" in issues[0].detail["error"][0]
    now.advance(3600)
    engine.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == 4, "given up: no more attempts"
    assert infra.vms == {}

    infra.flaky.clear()
    engine.resolve(agency, [issues[0].key])
    engine.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == 5, "Resolve arms it again, at once"
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_a_power_on_that_keeps_failing_gives_up_with_invalid_config(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    now = Clock()
    engine = Engine(infra, None, namespace="com.vmware.vim.eam", clock=now, retry=RETRY, retry_seed=7)
    agency = engine.create_agency(
        SOLUTION, config(cluster, manually_mark_available_after_provisioning=True), GoalState.ENABLED
    )
    engine.run_until_quiet()
    ((vm, _),) = infra.vms.items()
    infra.power_fails.add(vm)
    (agent,) = engine.agency_agents(agency)
    engine.mark_as_available(agent)
    for _ in range(20):
        engine.run_until_quiet()
        now.advance(15)
    assert infra.calls["power_on"] == RETRY.max_attempts
    (issue,) = engine.query_issues(agency)
    assert issue.kind is IssueKind.INVALID_CONFIG and "gave up after 4" in str(issue.detail["error"])

    infra.power_fails.clear()
    engine.resolve(agency, [issue.key])
    engine.run_until_quiet()
    assert power_of(infra, vm) is PowerState.POWERED_ON
    assert engine.query_issues(agency) == []


def test_an_unreachable_vcenter_is_observed_again_with_backoff(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    now = Clock()
    engine = Engine(infra, None, namespace="com.vmware.vim.eam", clock=now, retry=RETRY, retry_seed=7)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    infra.down = True
    observed = infra.calls["observe"]
    for expected in range(1, 6):
        with pytest.raises(InfraError):
            engine.step()
        assert infra.calls["observe"] == observed + expected
        for _ in range(50):  # the callers' loops: any number of steps before the backoff is over
            assert engine.step() is False
        assert engine.wait_for_work(0) is False
        now.advance(RETRY.cap * (1 + RETRY.jitter))
        assert engine.wait_for_work(0) is True
    assert infra.calls["observe"] == observed + 5
    infra.down = False
    engine.run_until_quiet()
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_retries_survive_a_restart(infra: FakeInfra, tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    cluster = infra.add_cluster(1)
    infra.flaky.add(OVF)
    now = Clock()
    engine = Engine(infra, state, namespace="com.vmware.vim.eam", clock=now, retry=RETRY, retry_seed=7)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    restarted = Engine(infra, state, namespace="com.vmware.vim.eam", clock=now, retry=RETRY, retry_seed=7)
    restarted.run_until_quiet()
    assert infra.calls["deploy_agent_vm"] == 1, "the restarted engine waits out the same delay"
    assert restarted.state.retries == engine.state.retries


def test_state_file_of_another_namespace_is_refused(infra: FakeInfra, tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    engine_for(infra, state).create_agency(SOLUTION, config(), GoalState.ENABLED)
    with pytest.raises(ValueError, match="its own state file"):
        Engine(infra, state, namespace="agentvm")


def test_add_issue_sets_key_and_time_and_resolve_drops_it(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(1)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    template = engine.agency_runtime(agency)
    from agentvm.model.agency import Issue

    stored = engine.add_issue(
        agency,
        Issue(key=0, kind=IssueKind.INVALID_CONFIG, time=datetime(2000, 1, 1), agency="x", agency_name="y"),
    )
    assert stored.key > 0 and stored.time == clock() and stored.agency == agency
    assert engine.agency_runtime(agency).status is Status.RED and template.status is Status.GREEN
    assert engine.query_issues(agency, [stored.key]) == [stored]
    assert engine.resolve(agency, [stored.key]) == []
    assert engine.query_issues(agency) == []
    assert engine.query_issues(None) == [] and engine.resolve(None, [stored.key]) == [stored.key]


@settings(max_examples=40, deadline=None)
@given(
    base=st.floats(0.01, 10.0),
    factor=st.floats(1.3, 4.0),
    cap_ratio=st.floats(1.0, 100.0),
    jitter=st.floats(0.0, 0.29),
    max_attempts=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_retries_are_jittered_exponential_capped_never_shorter_and_end_in_one_issue(
    base: float, factor: float, cap_ratio: float, jitter: float, max_attempts: int, seed: int
) -> None:
    retry = Backoff(base=base, factor=factor, cap=base * cap_ratio, jitter=jitter, max_attempts=max_attempts)
    infra = FakeInfra()
    cluster = infra.add_cluster(1)
    state, _ = agent_ops.add_agency(
        EngineState(namespace="ns"), config(cluster), GoalState.ENABLED, SOLUTION.user
    )
    now = clock()
    plan = reconcile(state, infra.observe([cluster]), now)
    (action,) = plan.actions
    assert isinstance(action, DeployVm)
    state, previous = plan.state, 0.0
    for attempt in range(1, max_attempts + 1):
        state = agent_ops.record(state, action, Failed("cut off"), now, retry=retry, seed=seed)
        held = retry_for(state.retries, action)
        assert held is not None and held.attempts == attempt
        delay = (held.not_before - now).total_seconds()
        raw = base * factor ** (attempt - 1)
        assert min(retry.cap, raw) - 1e-6 <= delay <= min(retry.cap, raw * (1 + jitter)) + 1e-6
        assert delay >= previous - 1e-6, "never shorter than the one before"
        previous = delay
        assert held.gave_up is (attempt == max_attempts)
        later = reconcile(state, infra.observe([cluster]), held.not_before)
        early = reconcile(state, infra.observe([cluster]), held.not_before - timedelta(microseconds=1))
        assert not any(isinstance(a, DeployVm) for a in early.actions), "held until due"
        due = [a for a in later.actions if isinstance(a, DeployVm)]
        assert len(due) == (0 if held.gave_up else 1), "due: tried again, unless given up"
        assert early.wake_at == (None if held.gave_up else held.not_before)
    issues = agent_ops.issues_of(state, action.agency)
    assert [i.kind for i in issues] == [IssueKind.OVF_INVALID_FORMAT]


# ============================================================================ actions run at once, bounded


def _step_in_thread(engine: Engine) -> threading.Thread:
    thread = threading.Thread(target=engine.step, daemon=True)
    thread.start()
    return thread


def _wait(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_steps_deploys_run_at_once_within_the_bounds_and_readers_see_each_as_it_finishes(
    infra: FakeInfra,
) -> None:
    clusters = [infra.add_cluster(5) for _ in range(3)]
    engine = Engine(infra, None, namespace="ns", clock=clock, deploy_per_cluster=2, deploy_total=5)
    agency = engine.create_agency(SOLUTION, config(*clusters), GoalState.ENABLED)
    infra.hold()
    stepping = _step_in_thread(engine)

    assert infra.wait_in_flight(5), "5 deploys at once"
    assert max(infra.max_in_flight_by_cluster.values()) == 2
    infra.let_finish(1)
    _wait("one agent deployed", lambda: any(engine.agent_runtime(a).vm for a in engine.agency_agents(agency)))
    assert engine.in_flight == 14, "recorded while the step's other deploys are still running"
    deployed = [a for a in engine.agency_agents(agency) if engine.agent_runtime(a).vm is not None]
    assert len(deployed) == 1
    infra.let_finish()
    stepping.join(10)
    engine.run_until_quiet()

    assert infra.max_in_flight == 5
    assert max(infra.max_in_flight_by_cluster.values()) == 2  # never more than 2 in one cluster
    assert infra.calls["deploy_agent_vm"] == 15
    assert all(len(infra.vms_on(h)) == 1 for h in infra.hosts)
    assert engine.agency_runtime(agency).status is Status.GREEN


def hooked_engine(infra: FakeInfra, *, hosts: int, at_once: int) -> tuple[Engine, str]:
    """An engine running ``at_once`` actions at once, and an agency over a new cluster of ``hosts`` hosts
    with a provisioned hook (so that each power-on waits for its answer)."""
    cluster = infra.add_cluster(hosts)
    engine = Engine(
        infra, None, namespace="ns", clock=clock, deploy_per_cluster=at_once, deploy_total=at_once
    )
    agency = engine.create_agency(
        SOLUTION, config(cluster, manually_mark_available_after_provisioning=True), GoalState.ENABLED
    )
    return engine, agency


def test_an_answered_agent_is_powered_on_while_the_other_deploys_of_its_plan_still_run(
    infra: FakeInfra,
) -> None:
    engine, agency = hooked_engine(infra, hosts=4, at_once=4)
    infra.hold()
    _step_in_thread(engine)
    assert infra.wait_in_flight(4), "the 4 deploys at once"
    infra.let_finish(1)
    _wait("one agent deployed", lambda: any(engine.agent_runtime(a).vm for a in engine.agency_agents(agency)))
    (first,) = [a for a in engine.agency_agents(agency) if engine.agent_runtime(a).vm is not None]
    engine.mark_as_available(first)
    _wait("its unit to end", lambda: engine.in_flight == 3)

    _step_in_thread(engine)  # the loop steps again: the answer and the finished deploy made it dirty
    assert infra.wait_in_flight(4), "its power-on started while the other 3 deploys are held"
    assert infra.deploys_in_flight == 3
    infra.let_finish()
    _wait("all in flight to end", lambda: engine.in_flight == 0)
    for agent in engine.agency_agents(agency):
        if agent != first:
            engine.mark_as_available(agent)
    engine.run_until_quiet()
    assert engine.agency_runtime(agency).status is Status.GREEN
    assert infra.calls["deploy_agent_vm"] == 4 and infra.calls["power_on"] == 4


def test_a_queued_power_on_goes_before_the_queued_deploys_and_the_loop_is_paced_meanwhile(
    infra: FakeInfra,
) -> None:
    engine, agency = hooked_engine(infra, hosts=3, at_once=1)
    assert engine.pace() == 0.0  # nothing in flight: the loop waits for work as before
    infra.hold()
    _step_in_thread(engine).join(10)
    assert infra.wait_in_flight(1) and engine.in_flight == 3  # one deploy running, two queued
    assert 0.1 <= engine.pace() <= 5.0
    infra.let_finish(1)
    _wait("the first agent deployed", lambda: engine.in_flight == 2 and infra.wait_in_flight(1))
    (first,) = [a for a in engine.agency_agents(agency) if engine.agent_runtime(a).vm is not None]
    engine.mark_as_available(first)
    _step_in_thread(engine).join(10)  # its power-on is queued behind the third host's deploy
    assert engine.in_flight == 3
    infra.let_finish()
    _wait("all in flight to end", lambda: engine.in_flight == 0)

    first_vm = engine.agent_runtime(first).vm
    kinds = [(kind, vm == first_vm) for kind, vm in infra.power_log]
    assert kinds[:4] == [("deploy", True), ("deploy", False), ("on", True), ("deploy", False)]
    assert engine.pace() == 0.0


def test_drain_drops_the_units_not_started_and_waits_for_the_running_ones(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(6)
    engine = Engine(infra, None, namespace="ns", clock=clock, deploy_per_cluster=2, deploy_total=2)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    infra.hold()
    _step_in_thread(engine).join(10)
    assert infra.wait_in_flight(2) and engine.in_flight == 6  # 2 running, 4 queued
    draining = threading.Thread(target=engine.drain, daemon=True)
    draining.start()
    _wait("the queued units to be dropped", lambda: engine.in_flight == 2)
    infra.let_finish()
    draining.join(10)
    assert not draining.is_alive() and engine.in_flight == 0
    assert infra.calls["deploy_agent_vm"] == 2  # the 4 dropped were never started
    engine.run_until_quiet()  # a later step plans them again
    assert infra.calls["deploy_agent_vm"] == 6
    assert all(len(infra.vms_on(h)) == 1 for h in infra.clusters[cluster])
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_power_operations_and_deletes_are_bounded_too(infra: FakeInfra) -> None:
    clusters = [infra.add_cluster(4) for _ in range(2)]
    engine = Engine(infra, None, namespace="ns", clock=clock, deploy_per_cluster=3, deploy_total=4)
    agency = engine.create_agency(SOLUTION, config(*clusters), GoalState.ENABLED)
    engine.run_until_quiet()
    assert infra.calls["power_on"] == 8
    infra.reset_concurrency()

    engine.set_goal_state(SOLUTION, agency, GoalState.UNINSTALLED)
    infra.hold()
    stepping = _step_in_thread(engine)
    assert infra.wait_in_flight(4), "4 deletes at once"
    infra.let_finish()
    stepping.join(10)
    engine.run_until_quiet()

    assert infra.calls["destroy_vm"] == 8 and not infra.vms
    assert infra.max_in_flight == 4
    assert max(infra.max_in_flight_by_cluster.values()) == 3


def test_one_by_one_when_both_bounds_are_one(infra: FakeInfra) -> None:
    cluster = infra.add_cluster(4)
    engine = Engine(infra, None, namespace="ns", clock=clock, deploy_per_cluster=1, deploy_total=1)
    engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)
    engine.run_until_quiet()
    assert infra.max_in_flight == 1 and infra.calls["deploy_agent_vm"] == 4


def test_a_step_that_starts_while_another_deploys_plans_nothing_again(infra: FakeInfra) -> None:
    c1, c2 = infra.add_cluster(3), infra.add_cluster(3)
    engine = engine_for(infra)
    agency = engine.create_agency(SOLUTION, config(c1, c2), GoalState.ENABLED)
    infra.hold()
    first = _step_in_thread(engine)
    assert infra.wait_in_flight(6), "every host's deploy at once (4 per cluster, 32 in all)"
    # vSphere changes meanwhile (a cluster out of scope), and the loop and an API caller both step
    infra.add_cluster(1)
    second, third = _step_in_thread(engine), _step_in_thread(engine)
    infra.let_finish()
    for thread in (first, second, third):
        thread.join(10)
    engine.run_until_quiet()

    assert infra.calls["deploy_agent_vm"] == 6, "no deploy planned twice"
    assert all(len(infra.vms_on(h)) == 1 for h in infra.clusters[c1] + infra.clusters[c2])
    assert engine.agency_runtime(agency).status is Status.GREEN


def test_an_upgrade_stays_one_host_at_a_time_while_actions_run_at_once(infra: FakeInfra) -> None:
    c1, c2 = infra.add_cluster(3), infra.add_cluster(3)
    engine = engine_for(infra)  # the default bounds: 4 per cluster, 32 in all
    agency = engine.create_agency(SOLUTION, config(c1, c2), GoalState.ENABLED)
    infra.hold()
    stepping = _step_in_thread(engine)
    assert infra.wait_in_flight(6), "the first deploys run at once"
    infra.let_finish()
    stepping.join(10)
    engine.run_until_quiet()
    infra.reset_concurrency()

    engine.update_agency(SOLUTION, agency, config(c1, c2, url=OVF2))
    engine.run_until_quiet()

    assert infra.max_deploys_in_flight == 1
    assert {v.ovf_url for v in infra.vms.values()} == {OVF2} and len(infra.vms) == 6
    assert engine.agency_runtime(agency).status is Status.GREEN


@pytest.mark.parametrize("bound", ["deploy_per_cluster", "deploy_total"])
def test_a_bound_below_one_is_refused_by_name(infra: FakeInfra, bound: str) -> None:
    with pytest.raises(ValueError, match=f"{bound} must be 1 or more \\(got 0\\)"):
        Engine(infra, None, namespace="ns", **{bound: 0})  # type: ignore[arg-type]


def test_a_look_without_acting_judges_but_carries_out_nothing_and_saves_nothing(
    infra: FakeInfra, tmp_path: Path
) -> None:
    cluster = infra.add_cluster(2)
    state_file = tmp_path / "engine.json"
    engine = engine_for(infra, state_file)
    agency = engine.create_agency(SOLUTION, config(cluster), GoalState.ENABLED)  # two deploys due
    saved = state_file.read_bytes()
    observed = infra.calls["observe"]

    assert engine.step(act=False) is False

    assert infra.calls["observe"] == observed + 1  # it looked...
    assert infra.calls["deploy_agent_vm"] == 0 and engine.in_flight == 0  # ...and carried out nothing
    assert infra.vms == {}
    assert state_file.read_bytes() == saved
    assert len(engine.agency_agents(agency)) == 2  # judged: an agent per host, to be deployed
    assert engine.agency_runtime(agency).status is not Status.GREEN

    engine.run_until_quiet()  # a step after the look carries out what is due
    assert infra.calls["deploy_agent_vm"] == 2
    assert engine.agency_runtime(agency).status is Status.GREEN
