"""The engine (``Engine`` + ``VSphereInfrastructure``) on standalone ESXi hosts' own SDK (host agents: no
vCenter, no managedBy kept for us, no EAM, no HA): deploy into the host's pool, datastore, network and
VM folder; the host's values written before the first power-on; autostart first/stop last; heal, maintenance
mode, upgrade, uninstall; the watcher on a host agent. Each test starts its own ``Lab(esxi=N,
vcenter=False)`` and drives one engine per host as ``backends.direct`` does (step, else wait for work)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from agentvm.core.heal import Backoff
from agentvm.engine.api import Caller, ManagedObjectNotFound
from agentvm.engine.manager import Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.lab.packages import PackageServer, examples_dir
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import Lab, LabInfo
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
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere import autostart, vms
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from tests.support.esxi_lab import connected, new_vm, the_host

pytestmark = pytest.mark.lab

NAMESPACE = "org.tungsten.agentvm"
CONTRAIL = "contrail-vm/contrail-vm.ovf"
HELLO = "hello-agent/hello-agent.ovf"
FAST_RETRY = Backoff(base=0.05, factor=2.0, cap=0.2, jitter=0.25, max_attempts=3)


def connection(info: VcsimInfo) -> VCenterConnection:
    return VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )


@dataclass
class HostEngine:
    """One host agent as the engine sees it: its session, infrastructure and engine, and its objects."""

    info: VcsimInfo
    session: Session
    infra: VSphereInfrastructure
    engine: Engine
    compute: MoRef
    host: MoRef
    pool: MoRef
    folder: MoRef
    datastore: MoRef
    network: MoRef

    def agency(self, url: str, **changes: object) -> AgencyConfig:
        return AgencyConfig(
            agency_name="contrail",
            agent_configs=(
                AgentConfig(ovf_package_url=url, ovf_environment=(OvfProperty("dns", "10.0.0.53"),)),
            ),
            scope=(self.compute,),
            agent_vm_datastores=(self.datastore,),
            agent_vm_networks=(self.network,),
        ).with_(**changes)

    def step_until(self, done: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """Drive the engine as backends.direct does (step, else wait for work) until ``done()``."""
        deadline = time.monotonic() + timeout
        while not (result := done()):
            assert time.monotonic() < deadline, f"{self.info.host_name}: timed out waiting for {what}"
            if not self.engine.step():
                self.engine.wait_for_work(0.2)
        return result

    def agent(self, agency: str) -> Any:
        (agent,) = self.engine.agency_agents(agency)
        return self.engine.agent_runtime(agent)

    def green(self, agency: str) -> bool:
        if self.engine.agency_runtime(agency).status is not Status.GREEN:
            return False
        agents = self.engine.agency_agents(agency)
        return len(agents) == 1 and self.agent(agency).power_state is PowerState.POWERED_ON

    def autostart(self) -> autostart.AutostartConfig:
        return autostart.read_config(self.session, autostart.manager_of(self.session, self.host))


def open_host(lab: LabInfo, index: int) -> HostEngine:
    info = lab.esxi[index]
    session = Session(connection(info), host_agent=True)
    session.login()
    inv = read_inventory(session)
    (compute,) = inv.compute_resources
    (host,) = inv.hosts
    assert compute.resource_pool is not None
    folder = next(f.moref for f in inv.folders if f.path == "/ha-datacenter/vm")
    network = next(n.moref for n in inv.networks if n.name == "VM Network")
    infra = VSphereInfrastructure(session, watch_max_wait=1)
    infra.start()
    # the watcher's first batch (the host's whole state) is in: its setup calls are not the engine's
    assert infra.wait_for_change(0, 15.0) > 0, f"{info.host_name}: the watcher never reported"
    engine = Engine(infra, namespace=NAMESPACE, retry=FAST_RETRY)
    return HostEngine(
        info, session, infra, engine, compute.moref, host.moref, compute.resource_pool, folder,
        host.datastores[0], network,
    )  # fmt: skip


def close_host(h: HostEngine) -> None:
    h.engine.drain()
    h.infra.stop()
    h.session.logout()


@pytest.fixture
def lab() -> Iterator[LabInfo]:
    """One standalone host and the package server, no vCenter."""
    with Lab(esxi=1, vcenter=False) as info:
        yield info


@pytest.fixture
def esx(lab: LabInfo) -> Iterator[HostEngine]:
    """The engine on the lab's one host (a host-agent session, a started infrastructure)."""
    h = open_host(lab, 0)
    try:
        yield h
    finally:
        close_host(h)


def vm_object(h: HostEngine, si: Any, vm: MoRef) -> Any:
    return vim.VirtualMachine(vm.value, si._stub)


def events_of(si: Any, vm: Any) -> list[str]:
    """The VM's events, oldest first, through an event history collector (a host agent answers
    QueryEvents with NotImplemented: vcsim's ESX model, as ESXi's hostd)."""
    spec = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"))
    collector = si.content.eventManager.CreateCollectorForEvents(spec)
    try:
        events = []
        while batch := collector.ReadNextEvents(100):
            events.extend(batch)
    finally:
        collector.DestroyCollector()
    return [str(e._wsdlName) for e in sorted(events, key=lambda e: e.key)]


def gone(h: HostEngine, agency: str) -> bool:
    """The agency is destroyed (its runtime answers ManagedObjectNotFound)."""
    try:
        h.engine.agency_runtime(agency)
    except ManagedObjectNotFound:
        return True
    return False


def extra(h: HostEngine, vm: MoRef) -> dict[str, str]:
    return vms.read_extra_config(h.session, vm)


def agent_vms(h: HostEngine) -> list[Any]:
    """Every VM on the host that carries agentvm's owner mark."""
    found = read_inventory(h.session, kinds={"vms"}, extra_config_prefix="agentvm.").vms
    return [v for v in found if v.extra_config.get("agentvm.owner") == NAMESPACE]


# ------------------------------------------------------------------------------------------ 1. deploy


def test_two_hosts_each_get_an_agent_in_their_own_pool_datastore_network_and_folder() -> None:
    with Lab(esxi=2, vcenter=False) as lab:
        engines = [open_host(lab, i) for i in (0, 1)]
        try:
            url = f"{lab.ovf_url}/{CONTRAIL}"
            costs: dict[str, tuple[float, int, Counter[str]]] = {}

            def deploy(h: HostEngine) -> str:
                before = h.session.stats.snapshot()
                began = time.monotonic()
                agency = h.engine.create_agency(Caller("root"), h.agency(url), GoalState.ENABLED)
                h.step_until(lambda: h.green(agency), "the agent green")
                calls = h.session.stats.snapshot() - before
                calls.pop("WaitForUpdatesEx", None)  # the watcher's own waits
                costs[h.info.host_name] = (time.monotonic() - began, sum(calls.values()), calls)
                return agency

            with ThreadPoolExecutor(2) as pool:
                agencies = list(pool.map(deploy, engines))
            for h, agency in zip(engines, agencies, strict=True):
                agent = h.agent(agency)
                assert agent.host == h.host and agent.vm is not None and not agent.issues
                (found,) = [v for v in read_inventory(h.session, kinds={"vms"}).vms if v.moref == agent.vm]
                assert found.host == h.host and found.resource_pool == h.pool
                assert found.path == "/ha-datacenter/vm/contrail (1)"
                # a host agent keeps no managedBy of ours (no extension manager): the marks alone say whose
                assert found.managed_by is None
                marks = extra(h, agent.vm)
                assert (marks["agentvm.owner"], marks["agentvm.agency"]) == (NAMESPACE, agency)
                assert marks["agentvm.ovfUrl"] == url and marks["guestinfo.dns"] == "10.0.0.53"
                with connected(h.info) as si:
                    vm = vm_object(h, si, agent.vm)
                    assert [d._moId for d in vm.datastore] == [h.datastore.value]
                    assert {n._moId for n in vm.network} == {h.network.value}  # both NICs
                    assert vm.parent._moId == h.folder.value
            print()
            for name, (seconds, total, calls) in sorted(costs.items()):
                listed = ", ".join(f"{method} {n}" for method, n in sorted(calls.items()))
                print(f"{name}: deploy to green {seconds:.2f} s, {total} vim25 calls ({listed})")
                # the deploy's calls do not depend on anything but the one host: one import, one upload,
                # one reconfigure, one power-on, the autostart entry, and a handful of reads
                assert calls["ImportVApp"] == calls["ReconfigVM_Task"] == calls["PowerOnVM_Task"] == 1
                assert calls["ReconfigureAutostart"] == 1
        finally:
            for h in engines:
                close_host(h)


def test_an_engine_that_lost_its_state_finds_its_vm_by_the_marks_alone(esx: HostEngine, lab: LabInfo) -> None:
    agency = esx.engine.create_agency(
        Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
    )
    esx.step_until(lambda: esx.green(agency), "the agent green")
    vm = esx.agent(agency).vm

    # what a failed import that named no VM is found by, with no managedBy to narrow the search
    assert vms.find_marked(esx.session, None, {"agentvm.agency": agency}) == [vm]
    assert vms.find_marked(esx.session, None, {"agentvm.agency": "agency-9"}) == []
    fresh = VSphereInfrastructure(esx.session)  # not started: every read a full one
    (found,) = fresh.find_owned_vms(NAMESPACE)
    assert found.vm == vm and found.marker.agency == agency and found.complete
    assert fresh.find_owned_vms("com.example.other") == []
    # a new engine with no state file adopts it: an agency of the same name, no second VM
    with VSphereInfrastructure(esx.session, watch_max_wait=1) as infra:
        engine = Engine(infra, namespace=NAMESPACE, retry=FAST_RETRY)
        again = engine.create_agency(
            Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
        )
        engine.run_until_quiet()
        (agent,) = engine.agency_agents(again)
        assert engine.agent_runtime(agent).vm == vm
        engine.drain()
    assert [v.moref for v in agent_vms(esx)] == [vm]


# ------------------------------------------------------------------------------------------ 2. values first


def hook_pending(h: HostEngine, agency: str, state: HookState = HookState.PROVISIONED) -> Any:
    """The agent's pending hook in ``state``, once the engine raised it (else None)."""
    agents = h.engine.agency_agents(agency)
    if len(agents) != 1:
        return None
    hook = h.agent(agency).hook
    return hook if hook is not None and hook.state is state else None


def write_values_at_the_hook(
    h: HostEngine, si: Any, agency: str, fabric_ip: str, state: HookState = HookState.PROVISIONED
) -> MoRef:
    """As the caller of a hook does (provisioned; prePowerOn for an upgrade's new VM): check the VM never
    ran, write the host's values, MarkAsAvailable. Returns the hook's VM."""
    hook = h.step_until(lambda: hook_pending(h, agency, state), f"the {state.value} hook")
    vm = vm_object(h, si, hook.vm)
    assert vm.runtime.powerState == "poweredOff"
    before = events_of(si, vm)
    assert "VmStartingEvent" not in before and "VmPoweredOnEvent" not in before, before
    # the engine waits for the hook: stepped until it has nothing left to do, it powered nothing on
    h.engine.run_until_quiet()
    assert vm.runtime.powerState == "poweredOff"
    assert h.agent(agency).hook == hook
    vms.ensure_extra_config(
        h.session, hook.vm, {"guestinfo.fabricIp": fabric_ip, "guestinfo.hostname": "esx-01"}
    )
    h.engine.mark_as_available(h.agent(agency).agent)
    return hook.vm


def test_the_hosts_values_are_written_before_the_first_power_on(esx: HostEngine, lab: LabInfo) -> None:
    config = esx.agency(f"{lab.ovf_url}/{CONTRAIL}", manually_mark_available_after_provisioning=True)
    agency = esx.engine.create_agency(Caller("root"), config, GoalState.ENABLED)
    with connected(esx.info) as si:
        vm = write_values_at_the_hook(esx, si, agency, "10.10.0.11")
        esx.step_until(lambda: esx.green(agency), "the agent green after MarkAsAvailable")

        assert esx.agent(agency).vm == vm
        assert extra(esx, vm)["guestinfo.fabricIp"] == "10.10.0.11"
        events = events_of(si, vm_object(esx, si, vm))
        # the values' reconfigure (the last one) comes before the one and only power-on
        assert events.count("VmPoweredOnEvent") == 1, events
        last_reconfigure = len(events) - 1 - events[::-1].index("VmReconfiguredEvent")
        assert last_reconfigure < events.index("VmStartingEvent"), events


# ------------------------------------------------------------------------------------------ 3. autostart


def test_the_agent_starts_first_and_other_vms_keep_their_entries(esx: HostEngine, lab: LabInfo) -> None:
    with connected(esx.info) as si:
        _, _, host = the_host(si)
        other = new_vm(si, "database")
        manager = host.configManager.autoStartManager
        auto = vim.host.AutoStartManager
        manager.ReconfigureAutostart(
            auto.Config(
                powerInfo=[
                    auto.AutoPowerInfo(
                        key=other, startOrder=1, startDelay=10, stopDelay=10, waitForHeartbeat="no",
                        startAction="powerOn", stopAction="powerOff",
                    )
                ]
            )
        )  # fmt: skip
        other_ref = MoRef("VirtualMachine", other._moId)
        assert esx.autostart().enabled is False  # the host's default: off

        agency = esx.engine.create_agency(
            Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
        )
        esx.step_until(lambda: esx.green(agency), "the agent green")
        vm = esx.agent(agency).vm
        assert vm is not None

        config = esx.autostart()
        assert config.enabled is True
        assert config.entries == (
            autostart.AutostartEntry(vm, 1, "powerOn", "guestShutdown"),  # first to start, last to stop
            autostart.AutostartEntry(other_ref, 2, "powerOn", "powerOff"),
        )
        kept = manager.config.powerInfo[1]
        assert (kept.startDelay, kept.stopDelay, kept.waitForHeartbeat) == (10, 10, "no")

        before = esx.session.stats.snapshot()
        esx.infra.start_with_host(vm, esx.host)  # so already: reads, no write
        assert (esx.session.stats.snapshot() - before)["ReconfigureAutostart"] == 0
        assert esx.autostart() == config

        # uninstall: the agent VM and its entry go, the other VM's entry stays
        esx.engine.destroy_agency(Caller("root"), agency)
        esx.step_until(lambda: gone(esx, agency), "the agency gone")
        assert agent_vms(esx) == []
        assert esx.autostart().entries == (autostart.AutostartEntry(other_ref, 1, "powerOn", "powerOff"),)


# ------------------------------------------------------------------------------------------ 4. heal


def issue_kinds(h: HostEngine, agency: str) -> set[IssueKind]:
    return {i.kind for i in h.engine.query_issues(agency)}


def test_powered_off_behind_its_back_is_an_issue_resolved_by_a_power_on(
    esx: HostEngine, lab: LabInfo
) -> None:
    agency = esx.engine.create_agency(
        Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
    )
    esx.step_until(lambda: esx.green(agency), "the agent green")
    vm = esx.agent(agency).vm
    assert vm is not None
    with connected(esx.info) as si:
        WaitForTask(vm_object(esx, si, vm).PowerOffVM_Task())
        esx.step_until(lambda: IssueKind.VM_POWERED_OFF in issue_kinds(esx, agency), "VmPoweredOff")
        assert vms.power_state(esx.session, vm) is PowerState.POWERED_OFF  # not healed without Resolve

        esx.engine.resolve_all(agency)
        esx.step_until(lambda: esx.green(agency) and not issue_kinds(esx, agency), "powered on again")
        assert esx.agent(agency).vm == vm


def test_a_deleted_agent_vm_is_not_deployed_then_redeployed_with_its_autostart_entry(
    esx: HostEngine, lab: LabInfo
) -> None:
    agency = esx.engine.create_agency(
        Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
    )
    esx.step_until(lambda: esx.green(agency), "the agent green")
    first = esx.agent(agency).vm
    assert first is not None
    with connected(esx.info) as si:
        vm = vm_object(esx, si, first)
        WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())
    esx.step_until(lambda: IssueKind.VM_NOT_DEPLOYED in issue_kinds(esx, agency), "VmNotDeployed")

    esx.engine.resolve_all(agency)
    esx.step_until(lambda: esx.green(agency) and esx.agent(agency).vm != first, "redeployed")
    second = esx.agent(agency).vm
    assert second is not None and [v.moref for v in agent_vms(esx)] == [second]
    entries = esx.autostart().entries
    # the new VM first; the deleted VM's entry is kept by the host (ESXi does not remove it itself)
    assert entries[0] == autostart.AutostartEntry(second, 1, "powerOn", "guestShutdown")
    assert [e.vm for e in entries] == [second, first]


# ------------------------------------------------------------------------------ 5. upgrade, uninstall


def test_an_upgrade_replaces_the_vm_with_its_values_written_before_power_on_then_uninstall(
    esx: HostEngine, lab: LabInfo
) -> None:
    config = esx.agency(f"{lab.ovf_url}/{CONTRAIL}", manually_mark_available_after_provisioning=True)
    agency = esx.engine.create_agency(Caller("root"), config, GoalState.ENABLED)
    with connected(esx.info) as si:
        old = write_values_at_the_hook(esx, si, agency, "10.10.0.11")
        esx.step_until(lambda: esx.green(agency), "the agent green")

        new_url = f"{lab.ovf_url}/{HELLO}"
        upgraded = config.with_(
            agent_configs=(
                AgentConfig(ovf_package_url=new_url, ovf_environment=config.agent_configs[0].ovf_environment),
            )
        )
        esx.engine.update_agency(Caller("root"), agency, upgraded)
        # the new VM beside the old one, powered off, until the caller has written its values
        new = write_values_at_the_hook(esx, si, agency, "10.10.0.11", HookState.PRE_POWER_ON)
        assert new != old
        esx.step_until(lambda: esx.green(agency) and esx.agent(agency).vm == new, "the upgrade green")

        (only,) = agent_vms(esx)
        assert only.moref == new and only.extra_config["agentvm.ovfUrl"] == new_url
        assert extra(esx, new)["guestinfo.fabricIp"] == "10.10.0.11"
        events = events_of(si, vm_object(esx, si, new))
        assert events.count("VmPoweredOnEvent") == 1
        last_reconfigure = len(events) - 1 - events[::-1].index("VmReconfiguredEvent")
        assert last_reconfigure < events.index("VmStartingEvent"), events
        assert [e.vm for e in esx.autostart().entries] == [new]  # the old VM's entry went with it

    esx.engine.set_goal_state(Caller("root"), agency, GoalState.UNINSTALLED)
    esx.step_until(lambda: not agent_vms(esx), "the agent VM removed")
    esx.engine.destroy_agency(Caller("root"), agency)
    esx.step_until(lambda: gone(esx, agency), "the agency gone")
    assert esx.autostart().entries == ()
    assert esx.engine.query_agencies(Caller("root")) == []


# ------------------------------------------------------------------------------------------ 6. the watcher


def test_the_watcher_shows_a_power_off_without_a_full_read(esx: HostEngine, lab: LabInfo) -> None:
    agency = esx.engine.create_agency(
        Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
    )
    esx.step_until(lambda: esx.green(agency), "the agent green")
    vm = esx.agent(agency).vm
    assert vm is not None
    esx.engine.run_until_quiet()
    generation = esx.infra.generation()
    before = esx.session.stats.snapshot()
    with connected(esx.info) as si:
        WaitForTask(vm_object(esx, si, vm).PowerOffVM_Task())
    esx.step_until(lambda: IssueKind.VM_POWERED_OFF in issue_kinds(esx, agency), "VmPoweredOff")

    calls = esx.session.stats.snapshot() - before
    calls.pop("WaitForUpdatesEx", None)
    assert esx.infra.generation() > generation  # the watcher's update woke the engine
    # neither observe nor find_owned_vms read anything again: no view, no property read at all
    assert sum(calls.values()) == 0, calls


def test_maintenance_mode_powers_the_agent_off_for_the_host_to_enter_and_on_when_it_leaves(
    esx: HostEngine, lab: LabInfo
) -> None:
    agency = esx.engine.create_agency(
        Caller("root"), esx.agency(f"{lab.ovf_url}/{CONTRAIL}"), GoalState.ENABLED
    )
    esx.step_until(lambda: esx.green(agency), "the agent green")
    vm = esx.agent(agency).vm
    assert vm is not None
    with connected(esx.info) as si:
        _, _, host = the_host(si)
        # as on a real ESXi, the host's task waits until its VMs are powered off: the engine's part
        enter = host.EnterMaintenanceMode_Task(timeout=0)
        esx.step_until(lambda: enter.info.state == "success", "the host in maintenance mode")
        assert host.runtime.inMaintenanceMode
        assert vms.power_state(esx.session, vm) is PowerState.POWERED_OFF
        esx.engine.run_until_quiet()
        assert not issue_kinds(esx, agency)  # powered off for maintenance: no issue
        assert esx.agent(agency).vm == vm  # the same VM, not redeployed

        WaitForTask(host.ExitMaintenanceMode_Task(timeout=0))
        esx.step_until(lambda: esx.green(agency), "powered on again after the exit")
        assert esx.agent(agency).vm == vm and not issue_kinds(esx, agency)


def test_a_disk_that_404s_is_cannot_access_agent_ovf_and_leaves_no_vm_on_the_host(
    esx: HostEngine, tmp_path: Path
) -> None:
    (tmp_path / "hello-agent").mkdir()
    shutil.copy(examples_dir() / HELLO, tmp_path / HELLO)  # the descriptor, not its disk
    server = PackageServer(tmp_path).start()
    try:
        agency = esx.engine.create_agency(
            Caller("root"), esx.agency(f"{server.url}/{HELLO}"), GoalState.ENABLED
        )
        issue = esx.step_until(lambda: esx.engine.query_issues(agency), "an issue")[0]
        assert issue.kind is IssueKind.CANNOT_ACCESS_AGENT_OVF and "HTTP 404" in str(issue.detail["error"])
        assert read_inventory(esx.session, kinds={"vms"}).vms == ()  # the half-imported VM deleted
        assert esx.autostart().entries == ()
    finally:
        server.stop()
