"""The whole netsync loop (read -> plan -> apply) against the config-API and vRouter-agent emulators.

The vCenter side is a hand-built inventory snapshot; ``vcenter_sets_vlans`` plays ReconfigureDVPort.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentvm.core import netsync
from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.model.agency import PowerState
from agentvm.model.network import (
    Dvs,
    IpPool,
    IpRange,
    NetworkInventory,
    Nic,
    PortGroup,
    SdnInstanceIp,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    SyncErrorKind,
    SyncPlan,
    Vm,
)
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.sync import SyncResult, apply_plan, read_controller_state, read_ports
from agentvm.sdn.vrouter import VrouterAgentClient

HOSTS = ("host-1", "host-2")


class Lab:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.config_api = sdn_emulator.start(db)
        self.agents = vrouter_emulator.start_many(list(HOSTS))
        self.api = ConfigApiClient(self.config_api.url)
        self.clients = {h: VrouterAgentClient(a.url) for h, a in self.agents.items()}

    def restart_config_api(self) -> None:
        self.api.close()
        self.config_api.stop()
        self.config_api = sdn_emulator.start(self.db)
        self.api = ConfigApiClient(self.config_api.url)

    def plan(self, inv: NetworkInventory) -> SyncPlan:
        state = read_controller_state(self.api)
        ports, unreachable = read_ports(self.clients, netsync.port_candidates(inv, state))
        assert unreachable == {}
        return netsync.plan(inv, state, ports)

    def sync(self, inv: NetworkInventory) -> tuple[NetworkInventory, SyncPlan, SyncResult]:
        state = read_controller_state(self.api)
        ports, _ = read_ports(self.clients, netsync.port_candidates(inv, state))
        plan = netsync.plan(inv, state, ports)
        result = apply_plan(plan, self.api, self.clients, state)
        return vcenter_sets_vlans(inv, plan), plan, result

    def close(self) -> None:
        self.api.close()
        for client in self.clients.values():
            client.close()
        self.config_api.stop()
        for agent in self.agents.values():
            agent.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    running = Lab(tmp_path / "config-api.sqlite")
    yield running
    running.close()


def vcenter_sets_vlans(inv: NetworkInventory, plan: SyncPlan) -> NetworkInventory:
    vlans = {d.port_key: d.vlan for d in plan.dv_port_vlans}
    return dataclasses.replace(
        inv,
        vms=tuple(
            dataclasses.replace(
                vm,
                nics=tuple(
                    dataclasses.replace(n, port_vlan_id=vlans.get(n.port_key or "", n.port_vlan_id))
                    for n in vm.nics
                ),
            )
            for vm in inv.vms
        ),
    )


def make_vm(n: int, host: str = "host-1", power: PowerState = PowerState.POWERED_ON) -> Vm:
    nics = tuple(Nic(4000 + i, f"00:50:56:00:{n:02x}:{i:02x}", "dvportgroup-1", f"{n}-{i}") for i in range(2))
    return Vm(f"vm-{n}", f"web-{n}", host, power, nics)


def inventory(*vms: Vm) -> NetworkInventory:
    return NetworkInventory(
        vcenter_uuid="4f1d7a52-1111-2222-3333-444444444444",
        port_groups=(
            PortGroup("dvportgroup-1", "pg-web", "dvs-1", 100, "pool-1"),
            PortGroup("dvportgroup-2", "pg-db", "dvs-1", 101, "pool-2"),
        ),
        ip_pools=(
            IpPool(
                "pool-1", "web", "10.10.0.0/24", "10.10.0.1", (IpRange("10.10.0.100", "10.10.0.199"),), True
            ),
            IpPool("pool-2", "db", "10.20.0.0/24", "10.20.0.1", ()),
        ),
        vms=vms,
        dvses=(Dvs("dvs-1", "dvs", frozenset({1, 2})),),
    )


def test_vm_with_two_nics_gets_network_interfaces_addresses_vlans_and_enabled_ports(lab: Lab) -> None:
    inv, plan, result = lab.sync(inventory(make_vm(1)))
    assert result.ok, result
    assert plan.errors == ()
    (vn,) = [v for v in lab.api.list(SdnVirtualNetwork) if v.fq_name[-1] == "pg-web"]
    assert vn.subnets[0].cidr == "10.10.0.0/24" and vn.subnets[0].dhcp is True
    vmis = lab.api.list(SdnVmi)
    assert len(vmis) == 2 and {v.vn_uuid for v in vmis} == {vn.uuid}
    assert sorted(i.address for i in lab.api.list(SdnInstanceIp)) == ["10.10.0.100", "10.10.0.101"]
    ports = lab.agents["host-1"].ports()
    assert {p["link-state"] for p in ports.values()} == {1}
    assert len({p["rx-vlan-id"] for p in ports.values()}) == 2
    assert lab.agents["host-2"].ports() == {}
    assert lab.plan(inv).is_noop  # converged: a re-run changes nothing


def test_power_off_vmotion_and_delete_follow_the_vm(lab: Lab) -> None:
    inv, _, _ = lab.sync(inventory(make_vm(1), make_vm(2)))
    addresses = {i.vmi_uuid: i.address for i in lab.api.list(SdnInstanceIp)}

    off = dataclasses.replace(
        inv, vms=(dataclasses.replace(inv.vms[0], power_state=PowerState.POWERED_OFF), inv.vms[1])
    )
    inv, _, result = lab.sync(off)
    assert result.ok
    ids = netsync.Ids.for_vcenter(inv.vcenter_uuid)
    vm1_ports = {ids.vmi(n.mac or "") for n in inv.vms[0].nics}
    ports = lab.agents["host-1"].ports()
    assert {ports[p]["link-state"] for p in vm1_ports} == {0}
    assert {p["link-state"] for k, p in ports.items() if k not in vm1_ports} == {1}

    moved = dataclasses.replace(inv, vms=(dataclasses.replace(inv.vms[0], host="host-2"), inv.vms[1]))
    inv, plan, result = lab.sync(moved)
    assert result.ok and not plan.delete and not plan.create
    assert set(lab.agents["host-2"].ports()) == vm1_ports
    assert not vm1_ports & set(lab.agents["host-1"].ports())
    assert {i.vmi_uuid: i.address for i in lab.api.list(SdnInstanceIp)} == addresses  # interfaces kept
    assert lab.plan(inv).is_noop

    gone = dataclasses.replace(inv, vms=inv.vms[1:])
    inv, _, result = lab.sync(gone)
    assert result.ok
    assert lab.agents["host-2"].ports() == {}
    assert [v.display_name for v in lab.api.list(SdnVirtualMachine)] == ["web-2"]
    assert len(lab.api.list(SdnVmi)) == 2 and len(lab.api.list(SdnInstanceIp)) == 2


def test_objects_created_by_someone_else_are_never_touched(lab: Lab) -> None:
    url = lab.config_api.url
    theirs = {
        "fq_name": ["default-domain", "default-project", "pg-web"],
        "uuid": "9e9e9e9e-0000-4000-8000-000000000001",
    }
    assert httpx.post(f"{url}/virtual-networks", json={"virtual-network": theirs}).status_code == 200
    other_vm = {
        "fq_name": ["their-vm"],
        "uuid": "9e9e9e9e-0000-4000-8000-000000000002",
        "id_perms": {"creator": "admin"},
    }
    assert httpx.post(f"{url}/virtual-machines", json={"virtual-machine": other_vm}).status_code == 200
    before = {b["uuid"]: b for t in ("virtual-network", "virtual-machine") for b in lab.api.list_raw(t)}

    inv, plan, result = lab.sync(
        inventory(
            make_vm(1),
            dataclasses.replace(make_vm(2), nics=(Nic(4000, "00:50:56:00:02:00", "dvportgroup-2", "2-0"),)),
        )
    )
    assert [(e.kind, e.item) for e in plan.errors] == [
        (SyncErrorKind.CONFLICT, "port group dvportgroup-1 (pg-web)")
    ]
    assert result.ok
    after = {b["uuid"]: b for t in ("virtual-network", "virtual-machine") for b in lab.api.list_raw(t)}
    for uuid, body in before.items():
        assert after[uuid] == body
    # the rest went on: pg-db and its VM are mirrored
    assert [i.address for i in lab.api.list(SdnInstanceIp)] == ["10.20.0.2"]

    inv, _, _ = lab.sync(
        dataclasses.replace(inv, vms=(), port_groups=())
    )  # deleting all of ours leaves theirs
    remaining = {b["uuid"] for t in ("virtual-network", "virtual-machine") for b in lab.api.list_raw(t)}
    assert remaining == set(before)


def test_restart_of_the_config_api_mid_sync_converges_with_no_duplicates(lab: Lab) -> None:
    inv = inventory(*(make_vm(n, host=HOSTS[n % 2]) for n in range(6)))
    plan = lab.plan(inv)
    half = dataclasses.replace(plan, create=plan.create[: len(plan.create) // 2], ports=())
    assert apply_plan(half, lab.api, lab.clients).ok
    lab.restart_config_api()
    inv, plan, result = lab.sync(inv)
    assert result.ok, result
    lab.restart_config_api()
    assert lab.plan(inv).is_noop
    assert len(lab.api.list(SdnVirtualMachine)) == 6
    assert len(lab.api.list(SdnVmi)) == 12
    addresses = [i.address for i in lab.api.list(SdnInstanceIp)]
    assert len(addresses) == 12 and len(set(addresses)) == 12
    for host in HOSTS:
        vlans = [p["rx-vlan-id"] for p in lab.agents[host].ports().values()]
        assert len(vlans) == 6 and len(set(vlans)) == 6


def test_an_agent_that_is_down_fails_only_its_own_ports(lab: Lab) -> None:
    lab.agents["host-2"].stop()
    inv = inventory(make_vm(1, host="host-1"), make_vm(2, host="host-2"))
    state = read_controller_state(lab.api)
    ports, unreachable = read_ports(lab.clients, netsync.port_candidates(inv, state))
    assert set(unreachable) == {"host-2"}
    plan = netsync.plan(inv, state, ports)
    result = apply_plan(plan, lab.api, lab.clients, state)
    assert {f.item.split(" on ")[-1] for f in result.failures} == {"host-2"}
    assert all(f.transient for f in result.failures)
    assert len(lab.agents["host-1"].ports()) == 2
    assert len(lab.api.list(SdnVmi)) == 4
    lab.agents["host-2"] = vrouter_emulator.start("host-2")  # the agent comes back (on a new port)
    lab.clients["host-2"] = VrouterAgentClient(lab.agents["host-2"].url)
    inv, _, result = lab.sync(inv)
    assert result.ok and len(lab.agents["host-2"].ports()) == 2
