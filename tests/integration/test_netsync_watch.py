"""The watch-driven netsync (``NetsyncWatch``) on the lab: vcsim pushes updates, the watch plans only the
VMs they touch and calls the config-API and vRouter-agent emulators. Nobody calls ``sync_once`` here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyVmomi import vim

from agentvm.controller.netsync import NetsyncWatch
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.network import SdnVirtualMachine, SdnVmi
from agentvm.vsphere.session import Session
from tests.support.netsync_lab import Sdn, VCenter, eventually, login

pytestmark = pytest.mark.lab


@pytest.fixture
def world(netsync_world: tuple[VCenter, Sdn]) -> tuple[VCenter, Sdn]:
    """vcsim and the SDN emulators (tests/integration/conftest.py)."""
    return netsync_world


@pytest.fixture
def watching(world: tuple[VCenter, Sdn], vcsim: VcsimInfo) -> Iterator[tuple[VCenter, Sdn, NetsyncWatch]]:
    vc, sdn = world
    session: Session = login(vcsim)  # the controller's own session, as in ``agentvm run``
    clients = sdn.clients()
    watch = NetsyncWatch(session, sdn.api, lambda: clients, networks_interval=2.0)
    yield vc, sdn, watch
    watch.stop()
    for client in clients.values():
        client.close()
    session.logout()


def add_nic(vc: VCenter, vm: Any, pg: Any, port_key: str) -> None:
    port = vim.dvs.PortConnection(switchUuid=vc.dvs_uuid, portgroupKey=pg._moId, portKey=port_key)
    card = vim.vm.device.VirtualVmxnet3(
        key=-9, backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    )
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=card)])
    vc.run(vm.ReconfigVM_Task(spec), "add a NIC")


def test_power_off_add_nic_and_delete_follow_without_a_full_sync(
    watching: tuple[VCenter, Sdn, NetsyncWatch],
) -> None:
    vc, sdn, watch = watching
    pg = vc.port_group("pg-w", 700, ("10.70.0.0", "10.70.0.1", "10.70.0.10#50"))
    vm = vc.vm("w-1", pg, host=0)
    vc.run(vm.PowerOnVM_Task(), "power on")
    vc.run(vc.vm("w-2", pg, host=0).PowerOnVM_Task(), "power on")
    host = vc.host_ids()[0]

    def mine() -> dict[str, dict[str, Any]]:
        return {k: p for k, p in sdn.ports()[host].items() if p["display-name"] == "w-1"}

    watch.start()
    eventually(lambda: len(mine()) == 2 and {p["link-state"] for p in mine().values()} == {1})
    assert watch.full_syncs == 1
    assert watch.wait_idle(15)

    vc.run(vm.PowerOffVM_Task(), "power off")
    eventually(lambda: {p["link-state"] for p in mine().values()} == {0})
    assert len(sdn.ports()[host]) == 4  # w-2's ports untouched

    add_nic(vc, vm, pg, "150")
    eventually(lambda: len(mine()) == 3)
    vmis = [v for v in sdn.api.list(SdnVmi) if v.display_name.startswith("w-1 ")]
    assert len(vmis) == 3
    vlans = [p["rx-vlan-id"] for p in sdn.ports()[host].values()]
    assert len(vlans) == len(set(vlans)) == 5

    vc.run(vm.Destroy_Task(), "delete")
    eventually(lambda: mine() == {} and len(sdn.api.list(SdnVmi)) == 2)
    assert [v.display_name for v in sdn.api.list(SdnVirtualMachine)] == ["w-2"]
    assert watch.wait_idle(15)
    assert watch.full_syncs == 1 and watch.incremental_syncs >= 3  # all of it incremental
    assert watch.last_error is None


def test_many_updates_of_one_vm_are_one_plan_and_a_vmotion_moves_its_ports(
    watching: tuple[VCenter, Sdn, NetsyncWatch],
) -> None:
    vc, sdn, watch = watching
    pg = vc.port_group("pg-m", 710, ("10.71.0.0", "10.71.0.1", "10.71.0.10#50"))
    vm = vc.vm("m-1", pg, host=0)
    batches: list[int] = []
    watch.on_batch = lambda timing: batches.append(timing.vms)
    watch.start()
    assert watch.wait_idle(15)
    first, second = vc.host_ids()[:2]

    vc.run(vm.PowerOnVM_Task(), "power on")
    eventually(lambda: {p["link-state"] for p in sdn.ports()[first].values()} == {1})
    vc.run(vm.RelocateVM_Task(vim.vm.RelocateSpec(host=vc.hosts[1].obj)), "vMotion")
    eventually(lambda: sdn.ports()[first] == {} and len(sdn.ports()[second]) == 2)
    assert {v.host for v in sdn.api.list(SdnVmi)} == {second}
    assert watch.wait_idle(15)
    assert batches and max(batches) == 1  # every batch planned the one VM, however many updates it had
    assert watch.full_syncs == 1


def test_nothing_is_synced_while_the_controller_may_not_act_and_a_full_sync_follows(
    watching: tuple[VCenter, Sdn, NetsyncWatch],
) -> None:
    vc, sdn, watch = watching
    pg = vc.port_group("pg-f", 710, ("10.71.0.0", "10.71.0.1", "10.71.0.10#50"))
    vc.run(vc.vm("f-1", pg, host=0).PowerOnVM_Task(), "power on")
    allowed = False
    asked = 0

    def may_act() -> bool:
        nonlocal asked
        asked += 1
        return allowed

    watch.may_act = may_act
    watch.start()
    eventually(lambda: asked >= 6)  # several turns of the watch, each asked and refused
    assert watch.full_syncs == 0
    assert watch.incremental_syncs == 0
    assert not [v for v in sdn.api.list(SdnVmi) if v.display_name.startswith("f-1 ")]

    allowed = True
    eventually(lambda: [v for v in sdn.api.list(SdnVmi) if v.display_name.startswith("f-1 ")] != [])
    assert watch.full_syncs == 1
