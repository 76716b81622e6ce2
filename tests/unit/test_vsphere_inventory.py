"""Inventory building (paths, datacenters, kinds) and the paged reader, without a server.

The pager is tested here with a stand-in property collector because the lab's vcsim (govmomi 0.24.2)
ignores ``maxObjects`` and never returns a continuation token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import NotFoundError, TransientError
from agentvm.model.inventory import HostPowerState, NetworkKind
from agentvm.vsphere.collector import ObjectProps, paged
from agentvm.vsphere.inventory import build_snapshot


def item(obj: Any, **props: Any) -> ObjectProps:
    return ObjectProps(obj, {k.replace("__", "."): v for k, v in props.items()})


ROOT = vim.Folder("group-d1")
DC = vim.Datacenter("datacenter-2")
HOST_FOLDER = vim.Folder("group-h4")
NET_FOLDER = vim.Folder("group-n6")
CLUSTER = vim.ClusterComputeResource("domain-c7")
STANDALONE = vim.ComputeResource("domain-s9")
H1, H2 = vim.HostSystem("host-21"), vim.HostSystem("host-30")
DVS = vim.dvs.VmwareDistributedVirtualSwitch("dvs-5")
PG = vim.dvs.DistributedVirtualPortgroup("dvportgroup-8")
POOL, CHILD_POOL = vim.ResourcePool("resgroup-8"), vim.ResourcePool("resgroup-12")

RAW = {
    "folders": [
        item(HOST_FOLDER, name="host", parent=DC),
        item(NET_FOLDER, name="network", parent=DC),
    ],
    "datacenters": [item(DC, name="DC0", parent=ROOT)],
    "compute": [
        item(CLUSTER, name="C0", parent=HOST_FOLDER, host=[H1], resourcePool=POOL),
        item(STANDALONE, name="esx-2.example.test", parent=HOST_FOLDER, host=[H2]),
    ],
    "hosts": [
        item(H1, name="esx-1.example.test", parent=CLUSTER, runtime__powerState="standBy"),
        item(H2, name="esx-2.example.test", parent=STANDALONE, runtime__connectionState="bogus"),
    ],
    "networks": [
        item(
            PG,
            name="pg-100",
            parent=NET_FOLDER,
            key="dvportgroup-8",
            config__distributedVirtualSwitch=vim.DistributedVirtualSwitch("dvs-5"),
            config__defaultPortConfig=vim.dvs.VmwareDistributedVirtualSwitch.VmwarePortConfigPolicy(
                vlan=vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec(vlanId=100)
            ),
        )
    ],
    "dvswitches": [item(DVS, name="DVS0", parent=NET_FOLDER, uuid="50 2a 7f")],
    "resource_pools": [
        item(POOL, name="Resources", parent=CLUSTER, owner=CLUSTER),
        item(CHILD_POOL, name="agents", parent=POOL, owner=CLUSTER),
    ],
}


def test_paths_come_from_the_parent_chain() -> None:
    snapshot = build_snapshot(RAW, root_folder="group-d1")
    assert snapshot.find_cluster("domain-c7").path == "/DC0/host/C0"
    assert snapshot.find_host("esx-1.example.test").path == "/DC0/host/C0/esx-1.example.test"
    assert snapshot.resource_pools[1].path == "/DC0/host/C0/Resources/agents"
    assert snapshot.describe(MoRef("HostSystem", "host-21")) == "host-21 (/DC0/host/C0/esx-1.example.test)"
    assert snapshot.describe(MoRef("HostSystem", "host-99")) == "host-99"


def test_hosts_know_their_cluster_datacenter_and_state() -> None:
    snapshot = build_snapshot(RAW, root_folder="group-d1")
    h1, h2 = snapshot.hosts
    assert h1.cluster == MoRef("ClusterComputeResource", "domain-c7") and h1.datacenter == MoRef(
        "Datacenter", "datacenter-2"
    )
    assert h1.power_state is HostPowerState.STANDBY and h1.standby and not h1.usable
    assert h2.cluster is None and h2.parent == MoRef("ComputeResource", "domain-s9")
    assert [c.name for c in snapshot.compute_resources] == ["esx-2.example.test"]


def test_dv_port_group_has_its_switch_uuid_and_vlan() -> None:
    network = build_snapshot(RAW, root_folder="group-d1").find_network("/DC0/network/pg-100")
    assert network.kind is NetworkKind.DISTRIBUTED
    assert network.dvs_uuid == "50 2a 7f" and network.vlan_id == 100


def test_ambiguous_name_asks_for_a_path() -> None:
    raw = dict(RAW)  # a cluster and a standalone host both called "x", in different folders
    raw["compute"] = [
        item(CLUSTER, name="x", parent=HOST_FOLDER),
        item(STANDALONE, name="x", parent=NET_FOLDER),
    ]
    with pytest.raises(NotFoundError, match="ambiguous"):
        build_snapshot(raw, root_folder="group-d1").find_compute_resource("x")


def test_not_found_lists_close_names() -> None:
    snapshot = build_snapshot(RAW, root_folder="group-d1")
    with pytest.raises(NotFoundError, match=r"did you mean /DC0/host/C0"):
        snapshot.find_cluster("/DC0/host/CO")


@dataclass
class Page:
    objects: list[Any]
    token: str | None


@dataclass
class Content:
    obj: Any
    propSet: Sequence[Any]
    missingSet: Sequence[Any] = ()


class FakeCollector:
    """Serves ``n`` objects in pages of ``maxObjects``, remembering which cursors were cancelled."""

    def __init__(self, n: int) -> None:
        self.remaining = [Content(vim.HostSystem(f"host-{i}"), []) for i in range(n)]
        self.size = 0
        self.calls: list[str] = []
        self.cancelled: list[str] = []

    def _page(self) -> Page:
        page, self.remaining = self.remaining[: self.size], self.remaining[self.size :]
        return Page(page, f"t{len(self.calls)}" if self.remaining else None)

    def RetrievePropertiesEx(self, specs: Any, options: Any) -> Page:
        self.calls.append("RetrievePropertiesEx")
        self.size = options.maxObjects
        return self._page()

    def ContinueRetrievePropertiesEx(self, token: str) -> Page:
        self.calls.append("ContinueRetrievePropertiesEx")
        return self._page()

    def CancelRetrievePropertiesEx(self, token: str) -> None:
        self.cancelled.append(token)


def test_paged_read_continues_until_the_last_page() -> None:
    pc = FakeCollector(7)
    with paged(None, spec=None, page_size=3, collector=pc) as items:  # type: ignore[arg-type]
        ids = [o.obj._moId for o in items]
    assert ids == [f"host-{i}" for i in range(7)]
    assert pc.calls == [
        "RetrievePropertiesEx",
        "ContinueRetrievePropertiesEx",
        "ContinueRetrievePropertiesEx",
    ]
    assert pc.cancelled == []


def test_paged_read_cancels_the_cursor_when_left_early() -> None:
    pc = FakeCollector(7)
    with paged(None, spec=None, page_size=3, collector=pc) as items:  # type: ignore[arg-type]
        for obj in items:
            if obj.obj._moId == "host-1":
                break
    assert pc.cancelled == ["t1"]


def test_paged_read_cancels_the_cursor_on_error() -> None:
    pc = FakeCollector(7)
    with (
        pytest.raises(TransientError),
        paged(None, spec=None, page_size=3, collector=pc) as items,  # type: ignore[arg-type]
    ):
        next(items)
        raise TransientError("connection lost")
    assert pc.cancelled == ["t1"]
