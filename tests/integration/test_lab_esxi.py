"""The lab's standalone ESXi hosts (``Lab(esxi=N, vcenter=False)``, ``agentvm lab up --esxi N``), checked
with bare pyVmomi as a client of a real ESXi would: a host agent (no extensions, no EAM), each host its own
name, UUID, port and certificate, what agentvm's engine will call on a host (ImportVApp with the lease
upload into the host's pool, extraConfig and vApp properties, autostart, maintenance mode, standard
vSwitches), a host restart, and the CLI."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from agentvm.lab.packages import examples_dir
from agentvm.lab.runner import pid_alive
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.agency import MoRef
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.spec import load_spec
from agentvm.vsphere import ovf
from agentvm.vsphere.session import Session
from tests.support.esxi_lab import connected, new_vm, reachable, restart_host, served_thumbprint, the_host
from tests.support.lab_cli import agentvm

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def hosts() -> Iterator[LabInfo]:
    """Three standalone hosts and the package server, no vCenter; shared by the tests that only read or
    make objects of their own."""
    with Lab(esxi=3, vcenter=False) as info:
        yield info


def collect(si: Any, obj: Any, kind: Any, path: str) -> Any:
    """One property of one object through the property collector (RetrievePropertiesEx)."""
    pc = si.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=[path])],
    )
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    return result.objects[0].propSet[0].val


def test_a_host_agent_has_no_extension_manager_and_no_eam(hosts: LabInfo) -> None:
    info = hosts.esxi[0]
    assert info.api_type == "HostAgent" and hosts.vcsim is None
    with connected(info) as si:
        about = si.content.about
        assert about.apiType == "HostAgent" and about.productLineId == "embeddedEsx"
        assert si.content.extensionManager is None
        assert si.content.customFieldsManager is None  # vCenter-only, as on a real ESXi
        _, _, host = the_host(si)
        assert host.configManager.esxAgentHostManager is None
        with pytest.raises(vmodl.fault.NotSupported):
            si.content.sessionManager.LoginExtensionByCertificate("org.tungsten.agentvm")
    request = urllib.request.Request(f"https://{info.host}:{info.port}/eam/sdk", data=b"<x/>", method="POST")
    context = ssl._create_unverified_context()  # noqa: S323 (the lab's self-signed certificate)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert err.value.code == 404


def test_three_hosts_have_their_own_names_uuids_ports_and_thumbprints(hosts: LabInfo) -> None:
    seen = []
    for index, info in enumerate(hosts.esxi, 1):
        assert served_thumbprint(info) == info.thumbprint
        with connected(info) as si:
            _, cr, host = the_host(si)
            seen.append((host.name, host.hardware.systemInfo.uuid, info.port, info.thumbprint))
            assert host.name == cr.name == info.host_name == f"esx-{index:02d}"
            assert host.summary.hardware.uuid == info.host_uuid
            assert [p.device for p in host.config.network.pnic] == ["vmnic0", "vmnic1", "vmnic2"]
    for column in zip(*seen, strict=True):
        assert len(set(column)) == 3, seen


def test_import_vapp_into_the_host_pool_with_the_lease_upload(hosts: LabInfo) -> None:
    info = hosts.esxi[1]
    descriptor = ovf.fetch_descriptor(f"{hosts.ovf_url}/contrail-vm/contrail-vm.ovf")
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn, host_agent=True) as session, connected(info) as si:
        dc, cr, host = the_host(si)
        target = ovf.ImportTarget(
            host=MoRef("HostSystem", host._moId),
            pool=MoRef("ResourcePool", cr.resourcePool._moId),
            folder=MoRef("Folder", dc.vmFolder._moId),
            datastore=MoRef("Datastore", host.datastore[0]._moId),
            network=MoRef("Network", host.network[0]._moId),
            disk_provisioning="thin",
        )
        result = ovf.import_ovf(
            session, descriptor, name="contrail-vm-import", placement=target, properties={}
        )
        vm = vim.VirtualMachine(result.vm.value, si._stub)
        assert vm.name == "contrail-vm-import"
        assert vm.resourcePool == cr.resourcePool and vm.runtime.host == host
        disk = examples_dir() / "contrail-vm" / "contrail-vm-disk1.vmdk"
        assert dict(result.uploaded) == {disk.name: disk.stat().st_size}
        assert vm.runtime.powerState == "poweredOff"


def test_reconfig_sets_extra_config_and_vapp_properties(hosts: LabInfo) -> None:
    with connected(hosts.esxi[0]) as si:
        vm = new_vm(si, "reconfig-vm")
        prop = vim.vApp.PropertyInfo(key=1, id="fabricIp", type="string", value="10.10.0.10")
        WaitForTask(
            vm.ReconfigVM_Task(
                vim.vm.ConfigSpec(
                    extraConfig=[vim.option.OptionValue(key="guestinfo.fabricIp", value="10.10.0.10")],
                    vAppConfig=vim.vApp.VmConfigSpec(
                        property=[vim.vApp.PropertySpec(operation="add", info=prop)]
                    ),
                )
            )
        )
        edit = vim.vApp.PropertyInfo(key=1, value="10.10.0.11")
        WaitForTask(
            vm.ReconfigVM_Task(
                vim.vm.ConfigSpec(
                    vAppConfig=vim.vApp.VmConfigSpec(
                        property=[vim.vApp.PropertySpec(operation="edit", info=edit)]
                    )
                )
            )
        )
        config = collect(si, vm, vim.VirtualMachine, "config")
        assert [(p.id, p.value) for p in config.vAppConfig.property] == [("fabricIp", "10.10.0.11")]
        assert {o.key: o.value for o in config.extraConfig}["guestinfo.fabricIp"] == "10.10.0.10"


def test_reconfigure_autostart_round_trip(hosts: LabInfo) -> None:
    with connected(hosts.esxi[2]) as si:
        _, _, host = the_host(si)
        agent, other = new_vm(si, "autostart-agent"), new_vm(si, "autostart-other")
        manager = host.configManager.autoStartManager
        auto = vim.host.AutoStartManager

        def entry(vm: Any, order: int, start: str = "powerOn", stop: str = "guestShutdown") -> Any:
            return auto.AutoPowerInfo(
                key=vm,
                startOrder=order,
                startDelay=-1,
                stopDelay=-1,
                waitForHeartbeat="systemDefault",
                startAction=start,
                stopAction=stop,
            )

        before = collect(si, manager, vim.host.AutoStartManager, "config").defaults
        manager.ReconfigureAutostart(
            auto.Config(
                defaults=auto.SystemDefaults(enabled=True, startDelay=30), powerInfo=[entry(other, 1)]
            )
        )
        manager.ReconfigureAutostart(auto.Config(powerInfo=[entry(agent, 1)]))  # the agent first
        config = collect(si, manager, vim.host.AutoStartManager, "config")
        assert config.defaults.enabled is True and config.defaults.startDelay == 30
        assert (
            config.defaults.stopDelay == before.stopDelay and config.defaults.stopAction == before.stopAction
        )
        assert [(p.key, p.startOrder) for p in config.powerInfo] == [(agent, 1), (other, 2)]
        assert collect(si, host, vim.HostSystem, "config.autoStart").powerInfo[0].key == agent

        manager.ReconfigureAutostart(auto.Config(powerInfo=[entry(other, 1, "none", "none")]))
        config = collect(si, manager, vim.host.AutoStartManager, "config")
        assert [(p.key, p.startOrder) for p in config.powerInfo] == [(agent, 1)]


def test_power_on_is_refused_while_the_host_is_in_maintenance_mode(hosts: LabInfo) -> None:
    with connected(hosts.esxi[0]) as si:
        _, _, host = the_host(si)
        vm = new_vm(si, "maintenance-vm")
        WaitForTask(host.EnterMaintenanceMode_Task(timeout=0))
        try:
            with pytest.raises(vim.fault.InvalidState) as err:
                WaitForTask(vm.PowerOnVM_Task())
            assert isinstance(err.value, vim.fault.InvalidHostState) and err.value.host == host
            assert vm.runtime.powerState == "poweredOff"
        finally:
            WaitForTask(host.ExitMaintenanceMode_Task(timeout=0))
        WaitForTask(vm.PowerOnVM_Task())
        assert vm.runtime.powerState == "poweredOn"


def test_a_vswitch_and_a_port_group_through_the_host_network_system(hosts: LabInfo) -> None:
    with connected(hosts.esxi[1]) as si:
        _, _, host = the_host(si)
        ns = host.configManager.networkSystem
        ns.AddVirtualSwitch(
            "vSwitch1",
            vim.host.VirtualSwitch.Specification(
                numPorts=64, bridge=vim.host.VirtualSwitch.BondBridge(nicDevice=["vmnic1"])
            ),
        )
        ns.AddPortGroup(
            vim.host.PortGroup.Specification(
                name="contrail-fabric", vlanId=10, vswitchName="vSwitch1", policy=vim.host.NetworkPolicy()
            )
        )
        network = collect(si, host, vim.HostSystem, "config.network")
        switch = next(v for v in network.vswitch if v.name == "vSwitch1")
        assert switch.pnic == ["key-vim.host.PhysicalNic-vmnic1"]
        group = next(p for p in network.portgroup if p.spec.name == "contrail-fabric")
        assert group.spec.vlanId == 10 and group.spec.vswitchName == "vSwitch1"
        with pytest.raises(vim.fault.ResourceInUse):  # vmnic1 is vSwitch1's now
            ns.AddVirtualSwitch(
                "vSwitch2",
                vim.host.VirtualSwitch.Specification(
                    numPorts=64, bridge=vim.host.VirtualSwitch.BondBridge(nicDevice=["vmnic1"])
                ),
            )


def test_a_host_restart_keeps_its_port_and_thumbprint_and_loses_its_vms() -> None:
    lab = Lab(esxi=2, vcenter=False)
    try:
        info = lab.start()
        lab_hosts = {h.host_name: h for h in info.esxi}
        first = lab_hosts["esx-01"]
        with connected(first) as si:
            new_vm(si, "before-restart")
        again = restart_host(lab, "esx-01")
        assert (again.port, again.thumbprint, again.host_uuid) == (
            first.port,
            first.thumbprint,
            first.host_uuid,
        )
        assert again.pid != first.pid and not pid_alive(first.pid)
        assert served_thumbprint(again) == first.thumbprint
        with connected(again) as si:
            dc, _, host = the_host(si)
            assert host.name == "esx-01" and host.hardware.systemInfo.uuid == first.host_uuid
            assert dc.vmFolder.childEntity == []  # a fresh inventory: a real host would keep its VMs
        assert reachable(lab_hosts["esx-02"])  # the other host was never touched
    finally:
        lab.stop()


def test_lab_up_esxi_env_status_restart_and_down_through_the_cli(lab_env: dict[str, str]) -> None:
    up = agentvm("lab", "up", "--esxi", "3", "--no-vcenter", env=lab_env)
    assert up.returncode == 0, up.stderr
    assert "3 standalone ESXi hosts (esx-01..esx-03)" in up.stdout
    variables = json.loads(agentvm("lab", "env", "--json", env=lab_env).stdout)["variables"]
    urls = variables["AGENTVM_ESXI_URLS"].split(",")
    thumbprints = variables["AGENTVM_ESXI_THUMBPRINTS"].split(",")
    assert len(set(urls)) == len(set(thumbprints)) == 3
    assert variables["AGENTVM_ESXI_USERNAME"] == "root" and variables["AGENTVM_ESXI_PASSWORD"]
    for i in (1, 2, 3):
        assert variables[f"AGENTVM_ESXI_{i}_URL"] == urls[i - 1]
        assert variables[f"AGENTVM_ESXI_{i}_THUMBPRINT"] == thumbprints[i - 1]
        assert variables[f"AGENTVM_ESXI_{i}_NAME"] == f"esx-0{i}"
    assert "AGENTVM_URL" not in variables  # no vCenter
    exports = agentvm("lab", "env", env=lab_env).stdout.splitlines()
    assert sorted(line.split("=", 1)[0] for line in exports) == sorted(f"export {k}" for k in variables)

    status = json.loads(agentvm("lab", "status", "--json", env=lab_env).stdout)
    assert status["running"] is True and "vcenter" not in status
    assert [(h["name"], h["url"], h["thumbprint"], h["running"]) for h in status["esxi"]] == [
        (f"esx-0{i}", urls[i - 1], thumbprints[i - 1], True) for i in (1, 2, 3)
    ]

    stop = agentvm("lab", "esxi", "stop", "esx-02", env=lab_env)
    assert stop.returncode == 0 and "esx-02" in stop.stdout and "stopped" in stop.stdout
    stopped = json.loads(agentvm("lab", "status", "--json", env=lab_env).stdout)
    assert [h["running"] for h in stopped["esxi"]] == [True, False, True] and stopped["running"] is False
    start = agentvm("lab", "esxi", "start", "esx-02", env=lab_env)
    assert start.returncode == 0, start.stderr
    assert thumbprints[1] in start.stdout
    restarted = json.loads(agentvm("lab", "status", "--json", env=lab_env).stdout)
    assert restarted["running"] is True
    assert restarted["esxi"][1]["url"] == urls[1] and restarted["esxi"][1]["thumbprint"] == thumbprints[1]
    unknown = agentvm("lab", "esxi", "stop", "esx-09", env=lab_env)
    assert unknown.returncode == 2 and "esx-01, esx-02, esx-03" in unknown.stderr

    pids = [h["pid"] for h in restarted["esxi"]] + [restarted["processes"]["supervisor"]["pid"]]
    down = agentvm("lab", "down", env=lab_env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert not (Path(lab_env["AGENTVM_LAB_DIR"]) / "state.json").exists()


def test_the_standalone_example_parses_with_the_labs_environment(hosts: LabInfo) -> None:
    desired = load_spec(
        Path(__file__).resolve().parents[2] / "examples" / "contrail-esxi.yaml", env=hosts.env()
    )
    assert [h.name for h in desired.esxi] == [h.host_name for h in hosts.esxi]
    assert [(h.connection.url, h.connection.thumbprint) for h in desired.esxi] == [
        (h.url, h.thumbprint) for h in hosts.esxi
    ]
    assert desired.agencies[0].standalone == ("esx-01", "esx-02", "esx-03")
