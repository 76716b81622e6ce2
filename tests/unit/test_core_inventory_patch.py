"""Patching a snapshot with the objects a topology change names equals reading the whole inventory again.

A random inventory (clusters, standalone hosts, datastores, networks, VMs) is built as property sets, the
way vCenter answers ``RetrievePropertiesEx``, and turned into a snapshot by the adapter's own
``build_snapshot`` (what ``read_inventory`` does). Random changes follow (hosts added to a cluster or
standalone, moved, removed; VMs created, changed, deleted; a host into maintenance mode); the objects a
watch names for them are read again the way ``read_objects`` reads them (each host with its compute
resource, that one's resource pool, its datastores and networks) and patched in
(``core.inventory_patch.patch_inventory``): the result is the snapshot of a full read of the new inventory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from pyVmomi import vim

from agentvm.core.inventory_patch import InventoryDelta, patch_inventory
from agentvm.model.agency import MoRef
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere.collector import ObjectProps
from agentvm.vsphere.inventory import build_snapshot

ROOT = "group-d1"
PREFIX = "guestinfo.agentvm."
KIND_OF = (  # the adapter's kinds, by the type an object is
    (vim.Folder, "folders"),
    (vim.Datacenter, "datacenters"),
    (vim.ComputeResource, "compute"),
    (vim.HostSystem, "hosts"),
    (vim.VirtualMachine, "vms"),
    (vim.Network, "networks"),
    (vim.Datastore, "datastores"),
    (vim.ResourcePool, "resource_pools"),
)


def ref(obj: Any) -> MoRef:
    return MoRef(str(obj._wsdlName), str(obj._moId))


@dataclass
class World:
    """vCenter's side: every object's properties as vCenter would answer them, in inventory order."""

    objects: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def put(self, obj: Any, **props: Any) -> Any:
        self.objects[obj._moId] = (obj, props)
        return obj

    def props(self, obj: Any) -> dict[str, Any]:
        return self.objects[obj._moId][1]

    def new(self, kind: type, prefix: str) -> Any:
        return kind(f"{prefix}-{next(self.ids)}")

    def of(self, kind: type) -> list[Any]:
        return [o for o, _ in self.objects.values() if type(o) is kind]

    def raw(self, moids: Any = None) -> dict[str, list[ObjectProps]]:
        raw: dict[str, list[ObjectProps]] = {}
        for moid, (obj, props) in self.objects.items():
            if moids is not None and moid not in moids:
                continue
            name = next(name for kind, name in KIND_OF if isinstance(obj, kind))
            raw.setdefault(name, []).append(ObjectProps(obj, dict(props)))
        return raw

    def full_read(self) -> InventorySnapshot:
        return build_snapshot(self.raw(), root_folder=ROOT, extra_config_prefix=PREFIX)

    def read_again(self, refs: set[str], known: InventorySnapshot) -> InventorySnapshot:
        """What ``read_objects`` reads for these objects: each host with what it brings along."""
        moids = {r for r in refs if r in self.objects}
        for moid in list(moids):
            obj, props = self.objects[moid]
            if isinstance(obj, vim.HostSystem):
                parent = props["parent"]
                moids.add(parent._moId)
                moids.add(self.props(parent)["resourcePool"]._moId)
                moids.update(o._moId for o in (*props["datastore"], *props["network"]))
        return build_snapshot(self.raw(moids), root_folder=ROOT, extra_config_prefix=PREFIX, known=known)


def a_world(clusters: int, standalone: int, hosts: int) -> World:
    w = World()
    dc = w.put(vim.Datacenter("datacenter-2"), name="DC0", parent=vim.Folder(ROOT))
    folders = {}
    for name in ("host", "vm", "datastore", "network"):
        folders[name] = w.put(vim.Folder(f"group-{name}"), name=name, parent=dc)
    for i in range(3):
        w.put(
            vim.Datastore(f"datastore-{i}"),
            name=f"ds{i}",
            parent=folders["datastore"],
            **{"summary.accessible": True, "summary.type": "VMFS", "summary.capacity": 100 + i},
        )
        w.put(vim.Network(f"network-{i}"), name=f"net{i}", parent=folders["network"])
    for c in range(clusters):
        cluster = w.put(
            vim.ClusterComputeResource(f"domain-c{c}"), name=f"C{c}", parent=folders["host"], host=[]
        )
        pool = w.put(vim.ResourcePool(f"resgroup-c{c}"), name="Resources", parent=cluster, owner=cluster)
        w.props(cluster)["resourcePool"] = pool
        for _ in range(hosts):
            add_host(w, cluster, 0)
    for _ in range(standalone):
        add_standalone(w, 1)
    return w


def add_host(w: World, cluster: Any, n: int) -> Any:
    host = w.put(
        w.new(vim.HostSystem, "host"),
        parent=cluster,
        datastore=[vim.Datastore(f"datastore-{n % 3}")],
        network=[vim.Network(f"network-{n % 3}"), vim.Network("network-0")],
        **{
            "runtime.inMaintenanceMode": False,
            "runtime.connectionState": "connected",
            "runtime.powerState": "poweredOn",
            "summary.config.product.version": "8.0.2",
        },
    )
    w.props(host)["name"] = f"esx-{host._moId}"
    w.props(cluster)["host"] = [*w.props(cluster)["host"], host]
    return host


def add_standalone(w: World, n: int) -> Any:
    resource = w.put(w.new(vim.ComputeResource, "domain-s"), parent=vim.Folder("group-host"), host=[])
    w.props(resource)["name"] = f"S{resource._moId}"
    pool = w.put(w.new(vim.ResourcePool, "resgroup"), name="Resources", parent=resource, owner=resource)
    w.props(resource)["resourcePool"] = pool
    return add_host(w, resource, n)


@dataclass
class Named:
    """What the controller's watch names, accumulated since the last full read."""

    delta: InventoryDelta = field(default_factory=InventoryDelta)

    def changed(self, *objs: Any) -> None:
        self.delta = self.delta | InventoryDelta(changed=frozenset(ref(o) for o in objs))

    def gone(self, *objs: Any) -> None:
        self.delta = self.delta | InventoryDelta(gone=frozenset(ref(o) for o in objs))


def change(w: World, named: Named, what: int, pick: int) -> None:
    """One change in vCenter, and what the watch names for it."""
    hosts = w.of(vim.HostSystem)
    clusters = w.of(vim.ClusterComputeResource)
    vms = w.of(vim.VirtualMachine)
    host = hosts[pick % len(hosts)] if hosts else None
    if what == 0 and clusters:  # a host added to a cluster
        cluster = clusters[pick % len(clusters)]
        named.changed(add_host(w, cluster, pick), cluster)
    elif what == 1:  # a standalone host added (its compute resource is not watched)
        named.changed(add_standalone(w, pick))
    elif what == 2 and host is not None:  # a host removed: its VMs and a standalone's resource go with it
        parent = w.props(host)["parent"]
        for vm in [v for v in vms if w.props(v)["runtime.host"] is host]:
            del w.objects[vm._moId]
            named.gone(vm)
        del w.objects[host._moId]
        named.gone(host)
        if isinstance(parent, vim.ClusterComputeResource):
            w.props(parent)["host"] = [h for h in w.props(parent)["host"] if h is not host]
            named.changed(parent)
        else:
            del w.objects[w.props(parent)["resourcePool"]._moId]
            del w.objects[parent._moId]
    elif what == 3 and host is not None and clusters:  # a clustered host moved to another cluster
        old, new = w.props(host)["parent"], clusters[pick % len(clusters)]
        if isinstance(old, vim.ClusterComputeResource) and old is not new:
            w.props(old)["host"] = [h for h in w.props(old)["host"] if h is not host]
            w.props(new)["host"] = [*w.props(new)["host"], host]
            w.props(host)["parent"] = new
            named.changed(host, old, new)
    elif what == 4 and host is not None:  # an agent VM created on a host, its address written
        vm = w.put(
            w.new(vim.VirtualMachine, "vm"),
            parent=vim.Folder("group-vm"),
            **{
                "runtime.host": host,
                "runtime.powerState": "poweredOn",
                "config.extraConfig": [
                    vim.option.OptionValue(key=f"{PREFIX}address", value=f"10.0.0.{pick % 250}")
                ],
            },
        )
        w.props(vm)["name"] = f"agent-{vm._moId}"
        named.changed(vm)
    elif what == 5 and vms:  # a VM powered off and moved to another host
        vm = vms[pick % len(vms)]
        w.props(vm)["runtime.powerState"] = "poweredOff"
        if host is not None:
            w.props(vm)["runtime.host"] = host
        named.changed(vm)
    elif what == 6 and vms:  # a VM deleted
        vm = vms[pick % len(vms)]
        del w.objects[vm._moId]
        named.gone(vm)
    elif what == 7 and host is not None:  # a host into maintenance mode
        w.props(host)["runtime.inMaintenanceMode"] = not w.props(host)["runtime.inMaintenanceMode"]
        named.changed(host)


CHANGES = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 1000)), min_size=1, max_size=12)


@given(
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(0, 4),
    st.lists(CHANGES, min_size=1, max_size=3),
)
# a VM moved off a host that is then removed: it keeps its place, as in a full read
@example(1, 0, 2, [[(4, 0), (4, 1)], [(4, 0), (5, 297), (2, 0)]])
def test_patching_what_was_named_equals_a_full_read(
    clusters: int, standalone: int, hosts: int, rounds: list[list[tuple[int, int]]]
) -> None:
    w = a_world(clusters, standalone, hosts)
    snapshot = w.full_read()
    named = Named()
    for batch in rounds:  # several re-plans between full reads: named objects stay named
        for what, pick in batch:
            change(w, named, what, pick)
        read = w.read_again({r.value for r in named.delta.changed - named.delta.gone}, snapshot)
        patched = patch_inventory(snapshot, read, named.delta.gone)
        assert patched == w.full_read()
        assert patched is not None
        snapshot = patched


@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 1000))
def test_a_host_the_read_does_not_bring_makes_no_patch(clusters: int, hosts: int, pick: int) -> None:
    # a cluster read again whose new host was not read: the snapshot would name a host it does not hold
    w = a_world(clusters, 0, hosts)
    snapshot = w.full_read()
    cluster = w.of(vim.ClusterComputeResource)[pick % clusters]
    add_host(w, cluster, pick)
    read = w.read_again({cluster._moId}, snapshot)
    assert patch_inventory(snapshot, read, ()) is None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=12))
def test_deltas_add_up_in_order(steps: list[tuple[bool, int]]) -> None:
    # the last word on an object wins: gone and back is changed, changed and then gone is gone
    total = InventoryDelta()
    last: dict[str, bool] = {}
    for gone, n in steps:
        one = MoRef("VirtualMachine", f"vm-{n}")
        total = total | (
            InventoryDelta(gone=frozenset({one})) if gone else InventoryDelta(changed=frozenset({one}))
        )
        last[one.value] = gone
    assert {r.value for r in total.gone} == {m for m, g in last.items() if g}
    assert {r.value for r in total.changed} == {m for m, g in last.items() if not g}
    assert (total | InventoryDelta(exact=False)).exact is False
