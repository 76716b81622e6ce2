"""controller.watch.vm_changed: the VMs and hosts a batch of VM updates names for the agents' reads."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from agentvm.controller.watch import vm_changed
from agentvm.model.agency import MoRef
from agentvm.vsphere.watch import WatchChange, WatchChangeKind

VM = MoRef("VirtualMachine", "vm-9")
HOST = MoRef("HostSystem", "host-3")
MARKER = object()  # any non-None value: pyVmomi's ManagedByInfo in a real update


def change(kind: WatchChangeKind, **props: Any) -> WatchChange:
    return WatchChange(VM, kind, MappingProxyType({k.replace("_", "."): v for k, v in props.items()}))


def test_a_new_vm_with_a_marker_names_its_host() -> None:
    hosts: dict[MoRef, MoRef] = {}
    marked: set[MoRef] = set()
    seen = vm_changed(
        [change(WatchChangeKind.ENTER, runtime_host=HOST, config_managedBy=MARKER)], hosts, marked
    )
    assert seen.vms == {VM} and seen.marked_hosts == {HOST}


def test_a_marked_vm_whose_host_comes_in_a_later_update_names_the_host_then() -> None:
    hosts: dict[MoRef, MoRef] = {}
    marked: set[MoRef] = set()
    first = vm_changed([change(WatchChangeKind.ENTER, config_managedBy=MARKER)], hosts, marked)
    assert first.vms == {VM} and first.marked_hosts == frozenset()
    later = vm_changed([change(WatchChangeKind.MODIFY, runtime_host=HOST)], hosts, marked)
    assert later.marked_hosts == {HOST}
    power = vm_changed([change(WatchChangeKind.MODIFY, runtime_powerState="poweredOn")], hosts, marked)
    assert power.vms == {VM} and power.marked_hosts == frozenset()  # a power change names the VM only


def test_an_unmarked_vm_names_no_host_and_a_deleted_one_is_forgotten() -> None:
    hosts: dict[MoRef, MoRef] = {}
    marked: set[MoRef] = set()
    assert (
        vm_changed([change(WatchChangeKind.ENTER, runtime_host=HOST)], hosts, marked).marked_hosts
        == frozenset()
    )
    vm_changed([change(WatchChangeKind.MODIFY, config_managedBy=MARKER)], hosts, marked)
    gone = vm_changed([change(WatchChangeKind.LEAVE)], hosts, marked)
    assert gone.vms == {VM} and VM not in hosts and VM not in marked
