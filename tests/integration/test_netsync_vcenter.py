"""The vCenter plugin end to end: vcsim (SOAP) -> netsync -> config-API emulator + vRouter-agent emulators.

vcsim 0.24.2 has no ReconfigureDVPort_Task and a FetchDVPorts that ignores the ports' own settings; the
lab's Go main adds both (see ``routeDVPortCalls`` in src/agentvm/lab/vcsim/dvports.go).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pyVmomi import vim

from agentvm.controller.netsync import NetsyncReport, sync_once
from agentvm.core.heal import Backoff
from agentvm.core.retry import Retries
from agentvm.lab import vrouter_emulator
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.network import ItemKey, SdnInstanceIp, SdnVirtualMachine, SdnVirtualNetwork, SdnVmi
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.networks import read_dv_port_vlans
from agentvm.vsphere.session import Session
from tests.support.netsync_lab import Sdn, VCenter, login

pytestmark = pytest.mark.lab


@pytest.fixture
def world(netsync_world: tuple[VCenter, Sdn]) -> tuple[VCenter, Sdn]:
    """vcsim and the SDN emulators (tests/integration/conftest.py)."""
    return netsync_world


def sync(vc: VCenter, sdn: Sdn, session: Session | None = None) -> NetsyncReport:
    report = sync_once(session or vc.session, sdn.api, sdn.clients())
    assert report.ok, report.failures
    return report


def ours(report: NetsyncReport) -> list[str]:
    """The items the plan could not map."""
    return [e.item for e in report.plan.errors]


def test_port_group_with_pool_and_a_vm_with_two_nics(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-web", 100, ("10.10.0.0", "10.10.0.1", "10.10.0.100#50"))
    vm = vc.vm("web-1", pg, host=0)
    vc.run(vm.PowerOnVM_Task(), "power on")

    report = sync(vc, sdn)
    assert ours(report) == []
    (vn,) = [v for v in sdn.api.list(SdnVirtualNetwork) if v.fq_name[-1] == "pg-web"]
    assert vn.subnets[0].cidr == "10.10.0.0/24" and vn.subnets[0].gateway == "10.10.0.1"
    assert [(p.start, p.end) for p in vn.subnets[0].allocation_pools] == [("10.10.0.100", "10.10.0.149")]
    vmis = [v for v in sdn.api.list(SdnVmi) if v.vn_uuid == vn.uuid]
    assert len(vmis) == 2
    assert sorted(i.address for i in sdn.api.list(SdnInstanceIp)) == ["10.10.0.100", "10.10.0.101"]

    host = vc.host_ids()[0]
    ports = sdn.ports()[host]
    assert set(ports) == {v.uuid for v in vmis}
    assert {p["link-state"] for p in ports.values()} == {1}  # enabled: the VM is on
    vlans = {p["rx-vlan-id"] for p in ports.values()}
    assert len(vlans) == 2 and not vlans & {0, 4095}
    # the VLANs are on the DV ports in vCenter, read back with FetchDVPorts
    assert set(read_dv_port_vlans(vc.session, vc.session.moref(vc.dvs), ["100", "101"]).values()) == vlans
    assert all(p == {} for h, p in sdn.ports().items() if h != host)
    assert sync_once(vc.session, sdn.api, sdn.clients(), apply=False).plan.is_noop  # converged


def test_power_off_vmotion_and_delete_follow_the_vm(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-app", 200, ("10.20.0.0", "10.20.0.1", "10.20.0.10#20"))
    vm = vc.vm("app-1", pg, host=0)
    other = vc.vm("app-2", pg, host=0)
    for v in (vm, other):
        vc.run(v.PowerOnVM_Task(), "power on")
    sync(vc, sdn)
    first, second = vc.host_ids()[:2]
    mine = set(sdn.ports()[first])
    assert len(mine) == 4

    vc.run(vm.PowerOffVM_Task(), "power off")
    sync(vc, sdn)
    states = {p["display-name"]: p["link-state"] for p in sdn.ports()[first].values()}
    assert states == {"app-1": 0, "app-2": 1}

    addresses = {i.vmi_uuid: i.address for i in sdn.api.list(SdnInstanceIp)}
    vc.run(vm.RelocateVM_Task(vim.vm.RelocateSpec(host=vc.hosts[1].obj)), "vMotion")
    report = sync(vc, sdn)
    assert not report.plan.create and not report.plan.delete  # the interfaces follow, not re-created
    moved = sdn.ports()
    assert {p["display-name"] for p in moved[second].values()} == {"app-1"}
    assert {p["display-name"] for p in moved[first].values()} == {"app-2"}
    assert {i.vmi_uuid: i.address for i in sdn.api.list(SdnInstanceIp)} == addresses
    assert {v.host for v in sdn.api.list(SdnVmi) if v.display_name.startswith("app-1")} == {second}

    vc.run(vm.Destroy_Task(), "delete")
    sync(vc, sdn)
    assert [v.display_name for v in sdn.api.list(SdnVirtualMachine)] == ["app-2"]
    assert len(sdn.api.list(SdnVmi)) == 2 and len(sdn.api.list(SdnInstanceIp)) == 2
    assert sdn.ports()[second] == {} and len(sdn.ports()[first]) == 2


def test_objects_of_others_are_never_touched(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    url = sdn.config_api.url
    theirs = {
        "fq_name": ["default-domain", "default-project", "pg-db"],
        "uuid": "9e9e9e9e-0000-4000-8000-000000000001",
    }
    assert httpx.post(f"{url}/virtual-networks", json={"virtual-network": theirs}).status_code == 200
    foreign_vm = {
        "fq_name": ["their-vm"],
        "uuid": "9e9e9e9e-0000-4000-8000-000000000002",
        "id_perms": {"creator": "admin"},
    }
    assert httpx.post(f"{url}/virtual-machines", json={"virtual-machine": foreign_vm}).status_code == 200
    before = {b["uuid"]: b for t in ("virtual-network", "virtual-machine") for b in sdn.api.list_raw(t)}

    db = vc.port_group("pg-db", 300, ("10.30.0.0", "10.30.0.1", "10.30.0.10#20"))
    web = vc.port_group("pg-web", 301, ("10.31.0.0", "10.31.0.1", "10.31.0.10#20"))
    vc.vm("db-1", db, host=0)
    vc.run(vc.vm("web-1", web, host=1).PowerOnVM_Task(), "power on")
    report = sync(vc, sdn)
    assert [e.kind.value for e in report.plan.errors if "pg-db" in e.item] == ["conflict"]
    after = {b["uuid"]: b for t in ("virtual-network", "virtual-machine") for b in sdn.api.list_raw(t)}
    for uuid, body in before.items():
        assert after[uuid] == body
    assert sorted(i.address for i in sdn.api.list(SdnInstanceIp)) == [
        "10.31.0.10",
        "10.31.0.11",
    ]  # rest went on


def test_restarts_of_controller_and_agentvm_mid_sync_converge_without_duplicates(
    world: tuple[VCenter, Sdn], vcsim: VcsimInfo
) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-many", 400, ("10.40.0.0", "10.40.0.1", "10.40.0.10#100"))
    for n in range(6):
        vc.run(vc.vm(f"m-{n}", pg, host=n % 3).PowerOnVM_Task(), "power on")
    # agentvm "crashes" half-way: only half of the plan's creates were carried out, no ports, no VLANs
    plan = sync_once(vc.session, sdn.api, sdn.clients(), apply=False).plan
    half = dataclasses_replace(plan, create=plan.create[: len(plan.create) // 2], ports=(), dv_port_vlans=())
    from agentvm.sdn.sync import apply_plan

    assert apply_plan(half, sdn.api, sdn.clients()).ok
    sdn.restart_config_api()
    fresh = login(vcsim)  # a new agentvm process: new session, no memory
    sync(vc, sdn, fresh)
    sdn.restart_config_api()
    assert sync_once(fresh, sdn.api, sdn.clients(), apply=False).plan.is_noop
    assert len([v for v in sdn.api.list(SdnVirtualMachine) if v.display_name.startswith("m-")]) == 6
    addresses = [i.address for i in sdn.api.list(SdnInstanceIp)]
    assert len(addresses) == 12 and len(set(addresses)) == 12
    for host, ports in sdn.ports().items():
        vlans = [p["rx-vlan-id"] for p in ports.values()]
        assert len(vlans) == len(set(vlans)), host
    fresh.logout()


def test_a_new_vcsim_is_a_new_world_and_the_old_one_is_cleaned_up(
    world: tuple[VCenter, Sdn], vcsim_factory: Callable[..., VcsimInfo]
) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-old", 500, ("10.50.0.0", "10.50.0.1", "10.50.0.10#20"))
    vc.run(vc.vm("old-1", pg, host=0).PowerOnVM_Task(), "power on")
    sync(vc, sdn)
    # A new simulator has the same instanceUuid (vcsim's is fixed) but none of those VMs/port groups:
    new = VCenter(vcsim_factory())
    report = sync(new, sdn)
    assert not report.plan.create
    assert not [v for v in sdn.api.list(SdnVirtualMachine) if v.display_name == "old-1"]
    assert all(p == {} for p in sdn.ports().values())
    new.session.logout()


def test_an_agent_that_is_down_is_retried_with_backoff(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-r", 600, ("10.60.0.0", "10.60.0.1", "10.60.0.10#20"))
    vc.run(vc.vm("r-1", pg, host=0).PowerOnVM_Task(), "power on")
    vc.run(vc.vm("r-2", pg, host=1).PowerOnVM_Task(), "power on")
    first, second = vc.host_ids()[:2]
    clients = sdn.clients()
    sdn.agents[second].stop()
    now = [1000.0]
    retries: Retries[ItemKey] = Retries(Backoff(base=10, cap=60, jitter=0))

    def sync_with_backoff() -> NetsyncReport:
        """One sync with the items in backoff held back and its failures recorded, as the watch does."""
        waiting = retries.waiting(now[0])
        report = sync_once(vc.session, sdn.api, clients, held=waiting)
        retries.settle({f.key for f in report.failures}, waiting, now[0])
        return report

    report = sync_with_backoff()
    assert report is not None and report.failures
    assert {f.item.rsplit(" on ", 1)[-1] for f in report.failures} == {second}
    assert len(sdn.ports()[first]) == 2  # the rest went on
    assert retries.next_due() == now[0] + 10.0

    sdn.agents[second] = vrouter_emulator.start(second)
    clients[second] = VrouterAgentClient(sdn.agents[second].url)
    report = sync_with_backoff()  # still in backoff: held back, not retried
    assert report is not None and report.deferred and sdn.agents[second].ports() == {}
    now[0] += 10
    report = sync_with_backoff()
    assert report is not None and report.ok
    assert len(sdn.agents[second].ports()) == 2
    assert retries.due == {}


def dataclasses_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_the_switch_uplink_port_group_is_neither_a_network_nor_a_problem(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    report = sync(vc, sdn)
    assert ours(report) == []
    assert [pg.name for pg in report.inventory.port_groups] == ["DC0_DVPG0"]  # not DVS0-DVUplinks-9
    assert not [vn for vn in sdn.api.list(SdnVirtualNetwork) if "DVUplinks" in vn.fq_name[-1]]


def test_the_pool_dns_servers_are_the_subnet_dns_servers(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    dns = ("10.14.0.2", "192.0.2.53")
    vc.port_group("pg-dns", 140, ("10.14.0.0", "10.14.0.1", "10.14.0.10#20"), dns=dns)
    sync(vc, sdn)
    (raw,) = [b for b in sdn.api.list_raw("virtual-network") if b["fq_name"][-1] == "pg-dns"]
    (subnet,) = raw["network_ipam_refs"][0]["attr"]["ipam_subnets"]
    # as Tungsten Fabric's own Neutron plugin maps a subnet's DNS servers: DHCP option 6, space-separated,
    # which the vRouter's DHCP server hands to the VMs
    assert subnet["dhcp_option_list"] == {
        "dhcp_option": [{"dhcp_option_name": "6", "dhcp_option_value": "10.14.0.2 192.0.2.53"}]
    }
    assert subnet["dns_nameservers"] == list(dns)
    (vn,) = [v for v in sdn.api.list(SdnVirtualNetwork) if v.fq_name[-1] == "pg-dns"]
    assert vn.subnets[0].dns_servers == dns
    assert sync_once(vc.session, sdn.api, sdn.clients(), apply=False).plan.is_noop  # read back equal
