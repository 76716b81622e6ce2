"""The lab's EAM as a plain pyVmomi EAM client sees it (no agentvm code on the client side).

Each test gets its own lab: vcsim (1 datacenter x 2 clusters x 3 hosts), the lab's EAM (agentvm's engine on
vim25 behind the EAM SOAP emulator, reached through vcsim's /eam/sdk with the vCenter session cookie) and
the package server with examples/hello-agent.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import pytest
from pyVmomi import SoapStubAdapter, eam, vim, vmodl

from agentvm.core.heal import Backoff
from agentvm.lab.vcsim import Shape
from tests.support.lab_eam import (
    TIMEOUT,
    World,
    after_two_passes,
    config,
    green,
    lab_eam_world,
    runtimes,
    wait_until,
)
from tests.support.packages import cut_off_server

pytestmark = pytest.mark.lab


@pytest.fixture
def world(lab_eam_world: World) -> World:
    """The lab with its EAM, seen with pyVmomi (tests/integration/conftest.py)."""
    return lab_eam_world


def on_vcenter(world: World, ref: Any) -> Any:
    """References EAM returns are bound to the EAM stub: rebind them to vCenter to read them."""
    return type(ref)(ref._moId, world.si._stub)


def issue_types(obj: Any) -> list[str]:
    return sorted(type(i).__name__.rsplit(".", 1)[-1] for i in obj.QueryIssue())


def test_an_agency_over_two_clusters_gets_one_green_agent_per_host(world: World) -> None:
    started = time.monotonic()
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    print(f"CreateAgency to all green, 2x3 hosts: {time.monotonic() - started:.2f} s")
    rts = runtimes(agency)
    assert sorted(r.host._moId for r in rts) == sorted(h._moId for h in world.objects(vim.HostSystem))
    for r in rts:
        vm, host = on_vcenter(world, r.vm), on_vcenter(world, r.host)
        assert vm.runtime.host == host and vm.runtime.powerState == "poweredOn"
        cluster = host.parent
        drs = {c.key: c for c in cluster.configurationEx.drsVmConfig}
        das = {c.key: c for c in cluster.configurationEx.dasVmConfig}
        assert vm in drs and (drs[vm].enabled is False or drs[vm].behavior == "manual")
        assert das[vm].dasSettings.restartPriority in ("highest", "high")
    assert [a.QueryConfig().ovfPackageUrl for a in agency.QueryAgent()] == [world.ovf] * 6
    assert agency.QueryIssue() == []


def test_a_provisioned_hook_holds_power_on_until_marked_available(world: World) -> None:
    agency = world.eam.CreateAgency(
        config(world, hook=True, clusters=world.objects(vim.ClusterComputeResource)[:1]), "enabled"
    )
    wait_until("3 pending hooks", lambda: len([r for r in runtimes(agency) if r.vmHook]) == 3)
    after_two_passes(world, agency)  # EAM waits for as long as it takes: nothing powers on meanwhile
    rts = runtimes(agency)
    assert all(r.vmHook.vmState == "provisioned" for r in rts)
    assert all(r.vmPowerState == "poweredOff" and r.status == "yellow" for r in rts)
    first = agency.QueryAgent()[0]
    first.MarkAsAvailable()
    wait_until("the marked agent on", lambda: first.AgentQueryRuntime().vmPowerState == "poweredOn")
    others = agency.QueryAgent()[1:]
    assert all(a.AgentQueryRuntime().vmPowerState == "poweredOff" for a in others)
    for a in others:
        a.MarkAsAvailable()
    wait_until("3 green agents", lambda: green(agency, 3))


def test_a_host_added_to_a_cluster_gets_its_agent(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    cluster = world.objects(vim.ClusterComputeResource)[0]
    task = cluster.AddHost_Task(vim.host.ConnectSpec(hostName="added.lab", force=True), True)
    wait_until("the host added", lambda: task.info.state in ("success", "error"))
    host = task.info.result
    wait_until("7 green agents", lambda: green(agency, 7))
    assert host._moId in [r.host._moId for r in runtimes(agency)]


def test_maintenance_mode_powers_the_agent_off_and_on_without_an_issue(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    rt = runtimes(agency)[0]
    host, vm = on_vcenter(world, rt.host), on_vcenter(world, rt.vm)
    task = host.EnterMaintenanceMode_Task(timeout=0)
    wait_until("maintenance mode", lambda: host.runtime.inMaintenanceMode)
    wait_until("agent off", lambda: vm.runtime.powerState == "poweredOff")
    after_two_passes(world, agency)
    assert agency.QueryIssue() == []
    assert task.info.state in ("success", "running")
    host.ExitMaintenanceMode_Task(timeout=0)
    wait_until("agent on again", lambda: vm.runtime.powerState == "poweredOn")
    wait_until("green", lambda: green(agency, 6))
    assert agency.QueryIssue() == []


def test_powered_off_agent_is_an_issue_until_resolved(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    agent = agency.QueryAgent()[0]
    vm = on_vcenter(world, agent.AgentQueryRuntime().vm)
    vm.PowerOffVM_Task()
    wait_until("VmPoweredOff", lambda: issue_types(agency) == ["VmPoweredOff"])
    assert agency.AgencyQueryRuntime().status == "red"
    after_two_passes(world, agency)  # no silent self-healing: the VM stays off until someone resolves
    assert vm.runtime.powerState == "poweredOff"
    key = agency.QueryIssue()[0].key
    assert agency.Resolve([key]) == []
    wait_until("green again", lambda: green(agency, 6))
    assert vm.runtime.powerState == "poweredOn" and agency.QueryIssue() == []


def test_deleted_agent_is_redeployed_on_resolve_all(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    agent = agency.QueryAgent()[0]
    vm = on_vcenter(world, agent.AgentQueryRuntime().vm)
    vm.PowerOffVM_Task()
    wait_until("powered off", lambda: vm.runtime.powerState == "poweredOff")
    vm.Destroy_Task()
    wait_until("VmNotDeployed", lambda: "VmNotDeployed" in issue_types(agency))
    agency.ResolveAll()
    wait_until("redeployed and green", lambda: green(agency, 6) and not agency.QueryIssue())
    assert agent.AgentQueryRuntime().vm._moId != vm._moId


def test_unreachable_ovf_is_cannot_access_agent_ovf(world: World) -> None:
    with pytest.raises(eam.fault.InvalidUrl):  # EAM downloads the OVF during CreateAgency
        world.eam.CreateAgency(config(world, ovf="http://127.0.0.1:9/nothing.ovf"), "enabled")
    assert world.eam.QueryAgency() == []  # nothing created on a validation fault
    cluster = world.objects(vim.ClusterComputeResource)[0]
    agency = world.eam.CreateAgency(config(world, clusters=[cluster]), "enabled")
    wait_until("3 green agents", lambda: green(agency, 3))
    world.lab._packages.stop()  # type: ignore[union-attr]  # the OVF server goes away
    task = cluster.AddHost_Task(vim.host.ConnectSpec(hostName="added.lab", force=True), True)
    wait_until("the host added", lambda: task.info.state in ("success", "error"))
    wait_until("CannotAccessAgentOVF", lambda: "CannotAccessAgentOVF" in issue_types(agency))
    issue = next(i for i in agency.QueryIssue() if isinstance(i, eam.issue.CannotAccessAgentOVF))
    assert issue.downloadUrl == world.ovf and issue.host._moId == task.info.result._moId
    assert agency.AgencyQueryRuntime().status == "red"


def test_a_host_without_agent_vm_settings_and_no_lists_is_no_agent_vm_datastore(world: World) -> None:
    cluster = world.objects(vim.ClusterComputeResource)[:1]
    agency = world.eam.CreateAgency(config(world, lists=False, clusters=cluster), "enabled")
    wait_until(
        "NoAgentVmDatastore on each host", lambda: issue_types(agency).count("NoAgentVmDatastore") == 3
    )
    assert agency.AgencyQueryRuntime().status == "red"


def test_update_with_a_new_ovf_upgrades_one_host_at_a_time(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    old_vms = {r.host._moId: r.vm._moId for r in runtimes(agency)}
    agency.Update(config(world, ovf=world.ovf + "?v=2"))
    most_at_once = 0
    deadline = time.monotonic() + TIMEOUT * 2
    while time.monotonic() < deadline:
        rts = runtimes(agency)
        most_at_once = max(most_at_once, len(world.agent_vm_names()) - 6)
        if all(r.vm is not None and old_vms[r.host._moId] != r.vm._moId for r in rts) and green(agency, 6):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the upgrade did not finish")
    assert most_at_once <= 1, "more than one host was upgraded at a time"
    assert [a.QueryConfig().ovfPackageUrl for a in agency.QueryAgent()] == [world.ovf + "?v=2"] * 6


def test_uninstall_then_destroy(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    agency.Uninstall()
    wait_until("no agent VMs", lambda: not world.agent_vm_names())
    wait_until("green, uninstalled", lambda: agency.AgencyQueryRuntime().status == "green")
    agency.DestroyAgency()  # asynchronous: gone once its agents are

    def gone() -> bool:
        try:
            agency.AgencyQueryRuntime()
        except vmodl.fault.ManagedObjectNotFound:
            return True
        return False

    wait_until("the agency gone", gone)
    assert world.eam.QueryAgency() == []
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        agency.QueryAgent()


def test_no_session_is_eam_invalid_login(world: World) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stub = SoapStubAdapter(
        host=world.info.vcsim.host,
        port=world.info.vcsim.port,
        path="/eam/sdk",
        version="eam.version.version7_5",
        sslContext=ctx,
    )
    with pytest.raises(eam.fault.InvalidLogin):
        eam.EsxAgentManager("EsxAgentManager", stub).QueryAgency()


def test_a_restarted_eam_has_the_same_agencies_agents_and_issues(world: World) -> None:
    agency = world.eam.CreateAgency(config(world), "enabled")
    wait_until("6 green agents", lambda: green(agency, 6))
    vm = on_vcenter(world, runtimes(agency)[0].vm)
    vm.PowerOffVM_Task()
    wait_until("VmPoweredOff", lambda: issue_types(agency) == ["VmPoweredOff"])
    before = (
        {a._moId for a in world.eam.QueryAgency()},
        sorted(a._moId for a in agency.QueryAgent()),
        issue_types(agency),
    )
    world.lab.restart_eam()
    after = (
        {a._moId for a in world.eam.QueryAgency()},
        sorted(a._moId for a in agency.QueryAgent()),
        issue_types(agency),
    )
    assert after == before
    agency.ResolveAll()
    wait_until("green again", lambda: green(agency, 6))


# ------------------------------------------------------------------------------------------ failed deploys
# Through EAM SOAP only (the spec, which may refuse such input first, is not involved): what the lab's EAM
# leaves in vCenter when a deploy fails.

FAST_RETRY = Backoff(base=0.05, factor=2.0, cap=0.2, jitter=0.25, max_attempts=3)


def test_an_agent_name_with_a_slash_gets_one_vm_per_host_and_leaves_nothing_else(world: World) -> None:
    before = world.names(vim.VirtualMachine)
    cfg = config(world, clusters=world.objects(vim.ClusterComputeResource)[:1])
    cfg.agentName = "bad/name"

    agency = world.eam.CreateAgency(cfg, "enabled")
    wait_until("3 green agents", lambda: green(agency, 3))

    after = world.names(vim.VirtualMachine)
    assert len(after) == len(before) + 3, after
    assert sorted(set(after) - set(before)) == ["bad%2fname (1)", "bad%2fname (2)", "bad%2fname (3)"]
    assert agency.QueryIssue() == []


def test_an_import_cut_off_half_way_gives_up_with_ovf_invalid_format_and_leaves_no_vm(world: World) -> None:
    assert world.lab.eam is not None and world.lab.eam.engine is not None
    world.lab.eam.engine.retry = FAST_RETRY  # the default waits minutes before it gives up
    before = world.names(vim.VirtualMachine)
    with cut_off_server() as packages:
        cfg = config(
            world,
            ovf=f"{packages}/hello-agent/hello-agent.ovf",
            clusters=world.objects(vim.ClusterComputeResource)[:1],
        )
        agency = world.eam.CreateAgency(cfg, "enabled")

        def given_up() -> list[Any]:
            issues = [i for i in agency.QueryIssue() if isinstance(i, eam.issue.OvfInvalidFormat)]
            return issues if len(issues) == 3 else []

        first = wait_until("OvfInvalidFormat on the 3 agents", given_up)
        for issue in first:
            assert f"gave up after {FAST_RETRY.max_attempts} failed attempts" in issue.error[0].msg
        assert world.names(vim.VirtualMachine) == before, "every half-imported VM deleted"
        assert agency.AgencyQueryRuntime().status == "red"

        # Resolve arms the engine again: another round of attempts, the issue again, still no VM
        agency.Resolve([i.key for i in first])
        old = {i.key for i in first}

        def raised_again() -> list[Any]:
            issues = given_up()
            return issues if old.isdisjoint(i.key for i in issues) else []

        again = wait_until("OvfInvalidFormat again after Resolve", raised_again)
        assert len(again) == 3
        assert world.names(vim.VirtualMachine) == before


def test_the_labs_eam_deploys_at_once_within_its_bounds_one_vm_per_host() -> None:
    worlds = lab_eam_world(Shape(clusters=2, hosts=3), deploy_per_cluster=2, deploy_total=3)
    world = next(worlds)
    try:
        lab_eam = world.lab.eam
        assert lab_eam is not None and lab_eam.engine is not None
        agency = world.eam.CreateAgency(config(world), "enabled")
        wait_until("6 green agents", lambda: green(agency, 6))

        engine = lab_eam.engine
        assert (engine.peak_in_flight, engine.peak_in_flight_per_cluster) == (3, 2)
        hosts = [r.host._moId for r in runtimes(agency)]
        assert sorted(hosts) == sorted(h._moId for h in world.objects(vim.HostSystem))
        assert len(world.agent_vm_names()) == 6, "one agent VM per host, no more"
        assert agency.QueryIssue() == []
    finally:
        worlds.close()
