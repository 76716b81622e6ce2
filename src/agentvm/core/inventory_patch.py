"""Keep an inventory snapshot up to date from the objects that changed, without reading it all again.

Pure (no I/O). Used by ``controller.observe.InventoryKeeper``: the controller's watch names the objects
that entered, changed or left (``InventoryDelta``); the vSphere adapter reads only the changed ones
(``vsphere.inventory.read_objects``, one ``RetrievePropertiesEx``); ``patch_inventory`` puts them into the
last snapshot. The result is what a full read (``vsphere.inventory.read_inventory``) would give, object for
object; new objects come after the ones already known. When the objects read do not make a whole inventory
with the rest (a reference to an object neither known nor read) it answers None: read everything instead.
The full read stays the safety net for what no watch reports (docs/architecture.md, "Observation").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from agentvm.model.agency import MoRef
from agentvm.model.inventory import Cluster, ComputeResource, InventoryObject, InventorySnapshot

_T = TypeVar("_T", bound=InventoryObject)


@dataclass(frozen=True)
class InventoryDelta:
    """What changed in the inventory since a snapshot: objects to read again, objects gone, and whether
    the watch can say exactly (False: changes may have been missed; only a full read will do)."""

    changed: frozenset[MoRef] = frozenset()
    gone: frozenset[MoRef] = frozenset()
    exact: bool = True

    def __or__(self, other: InventoryDelta) -> InventoryDelta:
        """Both deltas, in this order: an object gone and then back is changed, changed and then gone is
        gone."""
        back = {ref.value for ref in other.changed}
        left = {ref.value for ref in other.gone}
        return InventoryDelta(
            frozenset(r for r in self.changed if r.value not in left) | other.changed,
            frozenset(r for r in self.gone if r.value not in back) | other.gone,
            self.exact and other.exact,
        )

    @property
    def empty(self) -> bool:
        return self.exact and not self.changed and not self.gone


_KINDS = tuple(f.name for f in fields(InventorySnapshot) if f.init)


def objects_of(snapshot: InventorySnapshot) -> tuple[InventoryObject, ...]:
    """Every object of ``snapshot``, kind by kind."""
    return tuple(o for kind in _KINDS for o in getattr(snapshot, kind))


def patch_inventory(
    snapshot: InventorySnapshot, read: InventorySnapshot, gone: Collection[MoRef]
) -> InventorySnapshot | None:
    """``snapshot`` with the objects of ``read`` (new or read again) in it and the objects ``gone`` out.

    As vCenter does, a host's VMs leave with it, and so does a standalone compute resource left without a
    host (with its resource pools); a gone host leaves the host list of a cluster not read again. None when
    the result refers to an object it does not hold (a host's parent, datastore or network, a compute
    resource's host or resource pool, a VM's host): the caller reads the whole inventory instead.
    """
    out = {ref.value for ref in gone}
    fresh = {o.moref.value for o in objects_of(read)}
    out -= fresh
    out |= {vm.moref.value for vm in snapshot.vms if vm.host is not None and vm.host.value in out}
    # a standalone compute resource lives as long as its one host
    lone = {
        c.moref.value
        for c in snapshot.compute_resources
        if c.moref.value not in fresh and c.hosts and all(h.value in out for h in c.hosts)
    }
    out |= lone
    out |= {p.moref.value for p in snapshot.resource_pools if p.owner is not None and p.owner.value in lone}
    out -= fresh  # a VM read again on another host stays in its place, as a full read would list it
    merged = {kind: _merge(getattr(snapshot, kind), getattr(read, kind), out) for kind in _KINDS}
    patched = replace(
        InventorySnapshot(**merged),
        clusters=tuple(_without_hosts(c, out) for c in merged["clusters"] if isinstance(c, Cluster)),
        compute_resources=tuple(
            _without_hosts(c, out) for c in merged["compute_resources"] if isinstance(c, ComputeResource)
        ),
    )
    return patched if _whole(patched) else None


def _merge(old: Iterable[_T], new: Iterable[_T], out: Collection[str]) -> tuple[_T, ...]:
    """``old`` without ``out``, each object read again in its place, then the objects new to it."""
    by_moid = {o.moref.value: o for o in new}
    merged = [by_moid.pop(o.moref.value, o) for o in old if o.moref.value not in out]
    return (*merged, *by_moid.values())


_R = TypeVar("_R", Cluster, ComputeResource)


def _without_hosts(resource: _R, out: Collection[str]) -> _R:
    if not any(h.value in out for h in resource.hosts):
        return resource
    return replace(resource, hosts=tuple(h for h in resource.hosts if h.value not in out))


def _whole(snapshot: InventorySnapshot) -> bool:
    """Every reference the planner follows names an object of ``snapshot``."""

    def known(ref: MoRef | None) -> bool:
        return ref is None or snapshot.get(ref) is not None

    for host in snapshot.hosts:
        if not (known(host.parent) and all(map(known, host.datastores)) and all(map(known, host.networks))):
            return False
    resources: tuple[Cluster | ComputeResource, ...] = (*snapshot.clusters, *snapshot.compute_resources)
    for resource in resources:
        if not (known(resource.resource_pool) and all(map(known, resource.hosts))):
            return False
    return all(known(vm.host) for vm in snapshot.vms)
