"""Read a vCenter inventory in bulk into an ``InventorySnapshot``.

Called by the engine, the backends and the controller (on start and after every reconnect: a full resync).
Cost: one ContainerView, then ONE ``RetrievePropertiesEx`` whose filter spec holds every kind's property
spec (paged with ``ContinueRetrievePropertiesEx``), then the view is destroyed: 3 round trips whatever the
size of the inventory, plus one per extra page. Pages hold up to ``INVENTORY_PAGE_SIZE`` objects of any
kind, so that at vCenter's maximum of 2,500 hosts the whole inventory is a page or two (vCenter may still
return smaller pages; every page is read). Inventory paths are computed from the parent chain of the objects
read, with no further calls. VM ``extraConfig`` is heavy, so it is read only when a key prefix is asked for.

``read_objects`` reads a few hosts, clusters and VMs again the same way (one ``RetrievePropertiesEx``, no
view), for the controller's re-plan on a topology change (``controller.observe.InventoryKeeper``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef, PowerState
from agentvm.model.inventory import (
    Cluster,
    ComputeResource,
    ConnectionState,
    Datacenter,
    Datastore,
    DistributedSwitch,
    Folder,
    Host,
    HostPowerState,
    InventorySnapshot,
    ManagedBy,
    Network,
    NetworkKind,
    ResourcePool,
    VirtualMachine,
)
from agentvm.vsphere.collector import (
    PC,
    ObjectProps,
    container_view,
    paged,
    property_spec,
    view_filter_spec,
)
from agentvm.vsphere.session import Session


@dataclass(frozen=True)
class Kind:
    """One object kind of the inventory: the types it covers and the properties read for each."""

    name: str
    specs: tuple[tuple[type, tuple[str, ...]], ...]


VM_EXTRA_CONFIG = "config.extraConfig"

KINDS: tuple[Kind, ...] = (
    Kind("folders", ((vim.Folder, ("name", "parent")),)),
    Kind("datacenters", ((vim.Datacenter, ("name", "parent")),)),
    Kind(
        "compute",
        (
            (vim.ComputeResource, ("name", "parent", "host", "resourcePool")),
            # configurationEx, not the nested path: drsConfig/dasConfig are on the subtype ClusterConfigInfoEx
            (vim.ClusterComputeResource, ("configurationEx",)),
        ),
    ),
    Kind(
        "hosts",
        (
            (
                vim.HostSystem,
                (
                    "name",
                    "parent",
                    "runtime.connectionState",
                    "runtime.inMaintenanceMode",
                    "runtime.powerState",
                    "datastore",
                    "network",
                    "summary.config.product.version",
                    "summary.config.product.productLineId",
                    "summary.config.agentVmDatastore",
                    "summary.config.agentVmNetwork",
                    "configManager.esxAgentHostManager",
                ),
            ),
        ),
    ),
    Kind(
        "vms",
        (
            (
                vim.VirtualMachine,
                (
                    "name",
                    "parent",
                    "runtime.host",
                    "runtime.powerState",
                    "resourcePool",
                    "config.managedBy",
                    "config.template",
                ),
            ),
        ),
    ),
    Kind(
        "networks",
        (
            (vim.Network, ("name", "parent")),
            (
                vim.dvs.DistributedVirtualPortgroup,
                ("key", "config.distributedVirtualSwitch", "config.defaultPortConfig", "config.uplink"),
            ),
        ),
    ),
    Kind("dvswitches", ((vim.DistributedVirtualSwitch, ("name", "parent", "uuid")),)),
    Kind(
        "datastores",
        (
            (
                vim.Datastore,
                (
                    "name",
                    "parent",
                    "summary.accessible",
                    "summary.type",
                    "summary.capacity",
                    "summary.freeSpace",
                ),
            ),
        ),
    ),
    Kind("resource_pools", ((vim.ResourcePool, ("name", "parent", "owner")),)),
)
KIND_NAMES = frozenset(k.name for k in KINDS)
# objects per page of the full read (all kinds together): 2,500 hosts and their agent VMs fit one page, and
# up to 10,000 VMs two; parsing such a page costs a few MB
INVENTORY_PAGE_SIZE = 10_000
_ALWAYS = frozenset({"folders", "datacenters", "compute"})  # needed for every path


def read_inventory(
    session: Session,
    *,
    kinds: Collection[str] | None = None,
    extra_config_prefix: str | None = None,
    page_size: int = INVENTORY_PAGE_SIZE,
) -> InventorySnapshot:
    """The inventory under the root folder, read in bulk.

    ``kinds`` limits the read to some of ``KIND_NAMES`` (folders, datacenters and compute resources are
    always read: paths need them). ``extra_config_prefix`` (e.g. ``"guestinfo.agentvm."``) adds each VM's
    extraConfig entries whose key starts with it. Raises the session's agentvm errors.
    """
    wanted = set(KIND_NAMES if kinds is None else kinds) | _ALWAYS
    unknown = wanted - KIND_NAMES
    if unknown:
        raise ValueError(f"unknown inventory kinds {sorted(unknown)}; choose from {sorted(KIND_NAMES)}")
    selected = [k for k in KINDS if k.name in wanted]
    types: list[type] = []
    for kind in selected:
        types.extend(t for t, _ in kind.specs if t not in types)
    specs = []
    for kind in selected:
        for kind_type, paths in kind.specs:
            if kind.name == "vms" and extra_config_prefix is not None:
                paths = (*paths, VM_EXTRA_CONFIG)
            specs.append(property_spec(kind_type, paths))
    # the kinds' types are disjoint hierarchies, so an object's kind is the one whose first type it is
    by_type = [(kind.specs[0][0], kind.name) for kind in selected]
    raw: dict[str, list[ObjectProps]] = {kind.name: [] for kind in selected}
    with (
        container_view(session, types) as view,
        paged(session, view_filter_spec(view, specs), page_size=page_size) as items,
    ):
        for item in items:
            name = next((name for kind_type, name in by_type if isinstance(item.obj, kind_type)), None)
            if name is not None:
                raw[name].append(item)
    root = Session.moref(session.content.rootFolder).value
    return build_snapshot(raw, root_folder=root, extra_config_prefix=extra_config_prefix)


# what an object read again brings along: a host its compute resource (and that one's resource pool: a new
# standalone host's), its datastores and its networks, so that a host added is read whole in one call
_ALONG = (
    ("hostParent", vim.HostSystem, "parent", ("computePool",)),
    ("hostDatastores", vim.HostSystem, "datastore", ()),
    ("hostNetworks", vim.HostSystem, "network", ()),
    ("computePool", vim.ComputeResource, "resourcePool", ()),
)
_TYPES = frozenset({"HostSystem", "ClusterComputeResource", "ComputeResource", "VirtualMachine"})


def read_objects(
    session: Session,
    refs: Collection[MoRef],
    *,
    known: InventorySnapshot,
    extra_config_prefix: str | None = None,
) -> InventorySnapshot:
    """These hosts, clusters, compute resources and VMs (and what a host brings along: its compute
    resource and that one's resource pool, its datastores and networks) as ``read_inventory`` would read
    them, in ONE ``RetrievePropertiesEx`` whatever the size of the inventory; paths and datacenters are
    taken from ``known`` (the snapshot these objects are patched into: ``core.inventory_patch``).

    Called by ``controller.observe.InventoryKeeper`` for a topology change. Raises ValueError for a
    reference of another type, and the session's agentvm errors (NotFoundError when one of them is gone
    meanwhile: read everything instead).
    """
    if not refs:
        return InventorySnapshot()
    unknown = sorted({r.type for r in refs} - set(_TYPES))
    if unknown:
        raise ValueError(f"cannot read objects of type {unknown} alone; choose from {sorted(_TYPES)}")
    specs = []
    for kind in KINDS:
        for kind_type, paths in kind.specs:
            if kind.name == "vms" and extra_config_prefix is not None:
                paths = (*paths, VM_EXTRA_CONFIG)
            specs.append(property_spec(kind_type, paths))
    along = [
        PC.TraversalSpec(
            name=name,
            type=kind_type,
            path=path,
            skip=False,
            selectSet=[PC.SelectionSpec(name=n) for n in then],
        )
        for name, kind_type, path, then in _ALONG
    ]
    objects = [
        PC.ObjectSpec(obj=session.mo(r), skip=False, selectSet=along if r.type == "HostSystem" else [])
        for r in sorted(refs, key=lambda r: (r.type, r.value))
    ]
    by_type = [(kind.specs[0][0], kind.name) for kind in KINDS]
    raw: dict[str, list[ObjectProps]] = {kind.name: [] for kind in KINDS}
    seen: set[str] = set()
    with paged(
        session, PC.FilterSpec(objectSet=objects, propSet=specs), page_size=INVENTORY_PAGE_SIZE
    ) as items:
        for item in items:
            moid = str(item.obj._moId)
            name = next((name for kind_type, name in by_type if isinstance(item.obj, kind_type)), None)
            if name is not None and moid not in seen:
                seen.add(moid)
                raw[name].append(item)
    root = Session.moref(session.content.rootFolder).value
    return build_snapshot(raw, root_folder=root, extra_config_prefix=extra_config_prefix, known=known)


def build_snapshot(
    raw: Mapping[str, Sequence[ObjectProps]],
    *,
    root_folder: str,
    extra_config_prefix: str | None = None,
    known: InventorySnapshot | None = None,
) -> InventorySnapshot:
    """Turn the raw property sets into the frozen snapshot (pure; unit-testable without a server).

    ``known``: a snapshot whose paths and datacenters the objects of ``raw`` may hang from (``raw`` is then
    a few objects read again: ``read_objects``); the objects of ``raw`` itself are taken as read."""
    tree = _Tree(root_folder)
    if known is not None:
        tree.seed(known, {str(o.obj._moId) for items in raw.values() for o in items})
    for items in raw.values():
        for item in items:
            tree.add(item)
    get = raw.get
    return InventorySnapshot(
        datacenters=tuple(
            Datacenter(_ref(o.obj), o.get("name", ""), tree.path(o.obj)) for o in get("datacenters", ())
        ),
        folders=tuple(_folder(o, tree) for o in get("folders", ())),
        clusters=tuple(
            _cluster(o, tree) for o in get("compute", ()) if isinstance(o.obj, vim.ClusterComputeResource)
        ),
        compute_resources=tuple(
            _compute(o, tree) for o in get("compute", ()) if not isinstance(o.obj, vim.ClusterComputeResource)
        ),
        hosts=tuple(_host(o, tree) for o in get("hosts", ())),
        vms=tuple(_vm(o, tree, extra_config_prefix) for o in get("vms", ())),
        networks=tuple(_network(o, tree) for o in get("networks", ())),
        dvswitches=tuple(
            DistributedSwitch(
                _ref(o.obj),
                o.get("name", ""),
                tree.path(o.obj),
                uuid=o.get("uuid", ""),
                datacenter=tree.dc(o.obj),
            )
            for o in get("dvswitches", ())
        ),
        datastores=tuple(_datastore(o, tree) for o in get("datastores", ())),
        resource_pools=tuple(
            ResourcePool(
                _ref(o.obj),
                o.get("name", ""),
                tree.path(o.obj),
                owner=_opt(o.get("owner")),
                parent=_opt(o.get("parent")),
            )
            for o in get("resource_pools", ())
        ),
    )


class _Tree:
    """Names and parents of everything read, to compute inventory paths and datacenters locally."""

    def __init__(self, root_folder: str) -> None:
        self.root = root_folder
        self.name: dict[str, str] = {}
        self.parent: dict[str, str] = {}
        self.is_dc: set[str] = set()
        self.dvs_uuid: dict[str, str] = {}
        self._paths: dict[str, str] = {root_folder: ""}
        self._dc: dict[str, MoRef | None] = {}  # datacenters of objects known from an earlier snapshot

    def seed(self, known: InventorySnapshot, fresh: Collection[str]) -> None:
        """What ``known`` says of its objects' paths, parents and datacenters, except for ``fresh`` (the
        objects read again: they may have moved)."""
        for kind in (
            known.datacenters,
            known.folders,
            known.clusters,
            known.compute_resources,
            known.hosts,
            known.vms,
            known.networks,
            known.dvswitches,
            known.datastores,
            known.resource_pools,
        ):
            for o in kind:
                moid = o.moref.value
                if moid in fresh:
                    continue
                self.name[moid] = o.name
                if o.path:
                    self._paths[moid] = o.path
                parent = getattr(o, "parent", None)
                if isinstance(parent, MoRef):
                    self.parent[moid] = parent.value
                if isinstance(o, Datacenter):
                    self.is_dc.add(moid)
                elif hasattr(o, "datacenter"):
                    self._dc[moid] = o.datacenter
                if isinstance(o, DistributedSwitch) and o.uuid:
                    self.dvs_uuid[moid] = o.uuid

    def add(self, item: ObjectProps) -> None:
        moid = str(item.obj._moId)
        if "name" in item.props:
            self.name[moid] = str(item.props["name"])
        parent = item.props.get("parent")
        if parent is not None:
            self.parent[moid] = str(parent._moId)
        if isinstance(item.obj, vim.Datacenter):
            self.is_dc.add(moid)
        if isinstance(item.obj, vim.DistributedVirtualSwitch) and item.props.get("uuid"):
            self.dvs_uuid[moid] = str(item.props["uuid"])

    def path(self, obj: Any) -> str:
        moid = obj if isinstance(obj, str) else str(obj._moId)
        known = self._paths.get(moid)
        if known is not None:
            return known
        chain: list[str] = []
        cursor: str | None = moid
        # walk up to an object whose path is known (at worst the root folder); bounded by the tree's size
        while cursor is not None and cursor not in self._paths and len(chain) <= len(self.name):
            chain.append(cursor)
            cursor = self.parent.get(cursor)
        base = self._paths.get(cursor, "") if cursor is not None else ""
        for item in reversed(chain):
            base = f"{base}/{self.name.get(item, item)}"
            self._paths[item] = base
        return self._paths[moid]

    def dc(self, obj: Any) -> MoRef | None:
        cursor: str | None = str(obj._moId)
        for _ in range(len(self.parent) + 1):
            if cursor is None:
                return None
            if cursor in self.is_dc:
                return MoRef("Datacenter", cursor)
            if cursor in self._dc:
                return self._dc[cursor]
            cursor = self.parent.get(cursor)
        return None


def _ref(obj: Any) -> MoRef:
    return MoRef(str(obj._wsdlName), str(obj._moId))


def _opt(obj: Any) -> MoRef | None:
    return _ref(obj) if obj is not None else None


def _refs(objs: Any) -> tuple[MoRef, ...]:
    return tuple(_ref(o) for o in objs or ())


def _enum(factory: Callable[[str], Any], value: Any, default: Any) -> Any:
    try:
        return factory(str(value)) if value is not None else default
    except ValueError:
        return default


def _folder(o: ObjectProps, tree: _Tree) -> Folder:
    return Folder(_ref(o.obj), o.get("name", ""), tree.path(o.obj), parent=_opt(o.get("parent")))


def _cluster(o: ObjectProps, tree: _Tree) -> Cluster:
    config = o.get("configurationEx")
    drs = getattr(getattr(config, "drsConfig", None), "enabled", None)
    das = getattr(getattr(config, "dasConfig", None), "enabled", None)
    return Cluster(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        datacenter=tree.dc(o.obj),
        hosts=_refs(o.get("host")),
        resource_pool=_opt(o.get("resourcePool")),
        drs_enabled=bool(drs),
        ha_enabled=bool(das),
    )


def _compute(o: ObjectProps, tree: _Tree) -> ComputeResource:
    return ComputeResource(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        datacenter=tree.dc(o.obj),
        hosts=_refs(o.get("host")),
        resource_pool=_opt(o.get("resourcePool")),
    )


def _host(o: ObjectProps, tree: _Tree) -> Host:
    parent = o.get("parent")
    return Host(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        datacenter=tree.dc(o.obj),
        parent=_opt(parent),
        cluster=_ref(parent) if isinstance(parent, vim.ClusterComputeResource) else None,
        connection_state=_enum(ConnectionState, o.get("runtime.connectionState"), ConnectionState.CONNECTED),
        in_maintenance_mode=bool(o.get("runtime.inMaintenanceMode", False)),
        power_state=_enum(HostPowerState, o.get("runtime.powerState"), HostPowerState.UNKNOWN),
        datastores=_refs(o.get("datastore")),
        networks=_refs(o.get("network")),
        product_version=str(o.get("summary.config.product.version", "")),
        product_line_id=str(o.get("summary.config.product.productLineId", "")),
        agent_vm_datastore=_opt(o.get("summary.config.agentVmDatastore")),
        agent_vm_network=_opt(o.get("summary.config.agentVmNetwork")),
        esx_agent_host_manager=_opt(o.get("configManager.esxAgentHostManager")),
    )


def _vm(o: ObjectProps, tree: _Tree, prefix: str | None) -> VirtualMachine:
    managed = o.get("config.managedBy")
    extra: dict[str, str] = {}
    if prefix is not None:
        for option in o.get(VM_EXTRA_CONFIG) or ():
            key = str(option.key)
            if key.startswith(prefix):
                extra[key] = "" if option.value is None else str(option.value)
    return VirtualMachine(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        datacenter=tree.dc(o.obj),
        host=_opt(o.get("runtime.host")),
        power_state=_enum(PowerState, o.get("runtime.powerState"), PowerState.POWERED_OFF),
        resource_pool=_opt(o.get("resourcePool")),
        template=bool(o.get("config.template", False)),
        managed_by=ManagedBy(str(managed.extensionKey), str(managed.type or "")) if managed else None,
        extra_config=MappingProxyType(extra),
    )


def _network(o: ObjectProps, tree: _Tree) -> Network:
    kind = NetworkKind.STANDARD
    dvs = dvs_uuid = key = None
    vlan_id: int | None = None
    if isinstance(o.obj, vim.dvs.DistributedVirtualPortgroup):
        kind = NetworkKind.DISTRIBUTED
        dvs = _opt(o.get("config.distributedVirtualSwitch"))
        dvs_uuid = tree.dvs_uuid.get(dvs.value) if dvs else None
        key = o.get("key")
        vlan = getattr(o.get("config.defaultPortConfig"), "vlan", None)
        if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec):
            vlan_id = int(vlan.vlanId)
    elif isinstance(o.obj, vim.OpaqueNetwork):
        kind = NetworkKind.OPAQUE
    return Network(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        kind=kind,
        datacenter=tree.dc(o.obj),
        dvs=dvs,
        dvs_uuid=dvs_uuid,
        portgroup_key=str(key) if key else None,
        vlan_id=vlan_id,
        uplink=bool(o.get("config.uplink", False)),
    )


def _datastore(o: ObjectProps, tree: _Tree) -> Datastore:
    return Datastore(
        _ref(o.obj),
        o.get("name", ""),
        tree.path(o.obj),
        datacenter=tree.dc(o.obj),
        accessible=bool(o.get("summary.accessible", True)),
        type=str(o.get("summary.type", "")),
        capacity=int(o.get("summary.capacity", 0)),
        free_space=int(o.get("summary.freeSpace", 0)),
    )
