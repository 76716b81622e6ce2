"""Read what netsync needs from vCenter, in bulk, and set the VLAN of DV ports.

Called by ``agentvm.controller.netsync`` (``agentvm netsync plan|apply`` and the controller's network sync).

``read_network_snapshot`` costs, whatever the size of the inventory: one ContainerView, one
``RetrievePropertiesEx`` per object type (datacenters, DV switches, DV port groups, VMs; paged with
``ContinueRetrievePropertiesEx``), one ``QueryIpPools`` per datacenter (IP pools are not managed objects)
and one ``FetchDVPorts`` per DV switch that has connected NICs (the VLAN each NIC's DV port carries now).
Never one call per VM, NIC or port.

How vSphere ties an IP pool to a network: the pool lists the networks it serves in
``IpPool.networkAssociation`` (``network`` MoRef + ``networkName``); the port group has no pointer back. A
pool with ``ipv4Config.ipPoolEnabled`` false hands out no addresses (DHCP or static in the guest): that is
an external IPAM, and netsync then takes the guest's own address.

``set_dv_port_vlans`` changes the VLAN of many ports of one switch in one ``ReconfigureDVPort_Task``. The
port group must allow it (``policy.vlanOverrideAllowed``), or vCenter refuses the task.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef, PowerState
from agentvm.model.errors import ConfigurationError
from agentvm.model.hostnet import OWNER_MARK
from agentvm.model.network import Dvs, IpPool, IpRange, NetworkInventory, Nic, PortGroup, Vm
from agentvm.vsphere.collector import (
    DEFAULT_PAGE_SIZE,
    ObjectProps,
    container_view,
    paged,
    property_spec,
    retrieve,
    view_filter_spec,
)
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task
from agentvm.vsphere.watch import WatchSpec

log = logging.getLogger(__name__)

DVS_PROPS = ("name", "uuid", "config")  # config: the PVLAN map lives on the VMware subtype's config
PORTGROUP_PROPS = (
    "name",
    "key",
    "config.distributedVirtualSwitch",
    "config.defaultPortConfig",
    "config.uplink",
    "config.description",  # agentvm's own (hostNetwork's trunk) starts with OWNER_MARK: not a tenant network
)
VM_PROPS = (
    "name",
    "runtime.host",
    "runtime.powerState",
    "config.template",
    "config.managedBy",  # an agent VM (EAM's, the engine's): infrastructure, not a tenant VM
    "config.hardware.device",
    "guest.net",
)

_POWER = {state.value: state for state in PowerState}  # runtime.powerState → the model's enum


@dataclass(frozen=True)
class RawNetworkRead:
    """What the bulk reads returned, before it is turned into a ``NetworkInventory`` (pure from here)."""

    vcenter_uuid: str
    dvses: Sequence[ObjectProps]
    port_groups: Sequence[ObjectProps]
    vms: Sequence[ObjectProps]
    ip_pools: Sequence[tuple[str, Any]]  # (datacenter moid, vim.vApp.IpPool)
    dv_ports: Mapping[str, Sequence[Any]]  # DVS moid -> vim.dvs.DistributedVirtualPort


@dataclass(frozen=True)
class NetworkSnapshot:
    """The inventory, plus each switch's MoRef (its wire type differs between vCenter and simulators)."""

    inventory: NetworkInventory
    dvs_refs: Mapping[str, MoRef]  # DVS moid -> MoRef, for ``set_dv_port_vlans``


def read_network_snapshot(session: Session, *, page_size: int = DEFAULT_PAGE_SIZE) -> NetworkSnapshot:
    """One consistent-enough snapshot of vCenter networking for netsync, with the switches' MoRefs (see the
    module doc for the cost).

    Raises the session's agentvm errors (TransientError: retry; AuthenticationError: log in again).
    """
    content = session.content
    types = [
        vim.Datacenter,
        vim.DistributedVirtualSwitch,
        vim.dvs.DistributedVirtualPortgroup,
        vim.VirtualMachine,
    ]
    read: dict[type, list[ObjectProps]] = {}
    with session.operation("netsync-read"), container_view(session, types) as view:
        for kind, paths in (
            (vim.Datacenter, ("name",)),
            (vim.DistributedVirtualSwitch, DVS_PROPS),
            (vim.dvs.DistributedVirtualPortgroup, PORTGROUP_PROPS),
            (vim.VirtualMachine, VM_PROPS),
        ):
            spec = view_filter_spec(view, [property_spec(kind, paths)])
            with paged(session, spec, page_size=page_size) as items:
                read[kind] = list(items)
        pools: list[tuple[str, Any]] = []
        for dc in read[vim.Datacenter]:
            dc_moid = str(dc.obj._moId)
            pools.extend((dc_moid, pool) for pool in content.ipPoolManager.QueryIpPools(dc.obj) or ())
        dvses = read[vim.DistributedVirtualSwitch]
        wanted = connected_port_keys(read[vim.VirtualMachine], {str(o.get("uuid", "")): o for o in dvses})
        dv_ports: dict[str, list[Any]] = {}
        for dvs in dvses:
            keys = wanted.get(str(dvs.obj._moId))
            if keys:
                criteria = vim.dvs.PortCriteria(portKey=sorted(keys))
                dv_ports[str(dvs.obj._moId)] = list(dvs.obj.FetchDVPorts(criteria) or ())
    raw = RawNetworkRead(
        vcenter_uuid=str(content.about.instanceUuid or ""),
        dvses=dvses,
        port_groups=read[vim.dvs.DistributedVirtualPortgroup],
        vms=read[vim.VirtualMachine],
        ip_pools=pools,
        dv_ports=dv_ports,
    )
    if not raw.vcenter_uuid:
        raise ConfigurationError(
            f"{session.url} reports no about.instanceUuid; netsync derives every SDN id from it, so it "
            "needs a vCenter (not a standalone ESXi host)"
        )
    refs = {str(o.obj._moId): Session.moref(o.obj) for o in dvses}
    return NetworkSnapshot(build_network_inventory(raw), refs)


def connected_port_keys(
    vms: Iterable[ObjectProps], dvs_by_uuid: Mapping[str, ObjectProps]
) -> dict[str, set[str]]:
    """DVS moid -> the DV port keys the VMs' NICs are connected to (the ports whose VLAN is read)."""
    result: dict[str, set[str]] = {}
    for vm in vms:
        for device in vm.get("config.hardware.device") or ():
            connection = _dv_connection(device)
            if connection is None or not connection.portKey:
                continue
            dvs = dvs_by_uuid.get(str(connection.switchUuid or ""))
            if dvs is not None:
                result.setdefault(str(dvs.obj._moId), set()).add(str(connection.portKey))
    return result


# -- pure conversion (unit-tested without a server) ------------------------------------------------------


def build_network_inventory(raw: RawNetworkRead) -> NetworkInventory:
    """Turn the raw reads into the frozen snapshot. Pure. Uplink port groups, agentvm's own port groups (the
    vRouter's trunk, ``hostNetwork``), templates and agent VMs (``config.managedBy``) are left out."""
    dvs_moid_by_uuid = {str(o.get("uuid", "")): str(o.obj._moId) for o in raw.dvses}
    pools, association = _pools(raw.ip_pools)
    uplinks = {
        str(ref._moId) for o in raw.dvses for ref in getattr(o.get("config"), "uplinkPortgroup", None) or ()
    }
    port_groups = tuple(
        _port_group(o, association)
        for o in raw.port_groups
        if not o.get("config.uplink", False) and str(o.obj._moId) not in uplinks and not _agentvms(o.props)
    )
    port_vlans = {
        (dvs_moid, str(port.key)): _port_vlan(port)
        for dvs_moid, ports in raw.dv_ports.items()
        for port in ports
    }
    vms = tuple(_vm(o, dvs_moid_by_uuid, port_vlans) for o in raw.vms if _mirrored(o.props))
    return NetworkInventory(
        vcenter_uuid=raw.vcenter_uuid,
        port_groups=tuple(sorted(port_groups, key=lambda p: p.key)),
        ip_pools=tuple(sorted(pools, key=lambda p: p.id)),
        vms=tuple(sorted(vms, key=lambda v: v.moid)),
        dvses=tuple(sorted((_dvs(o) for o in raw.dvses), key=lambda d: d.key)),
    )


def pool_id(datacenter: str, pool_id: int) -> str:
    """agentvm's id of a vCenter IP pool: pool ids are unique per datacenter only (``datacenter-2:5``)."""
    return f"{datacenter}:{pool_id}"


def _pools(raw: Sequence[tuple[str, Any]]) -> tuple[list[IpPool], dict[str, str]]:
    """The pools, and port-group key -> pool id from each pool's ``networkAssociation``."""
    pools: dict[str, IpPool] = {}
    association: dict[str, str] = {}
    for dc, pool in raw:
        key = pool_id(dc, int(pool.id or 0))
        if key in pools:
            log.warning("IP pool %s (%s) reported twice by vCenter; the first one is used", key, pool.name)
            continue
        pools[key] = ip_pool(key, pool)
        for assoc in pool.networkAssociation or ():
            network = assoc.network
            if network is None or not isinstance(network, vim.dvs.DistributedVirtualPortgroup):
                continue
            moid = str(network._moId)
            if moid in association and association[moid] != key:
                # vCenter allows one pool per network per datacenter; keep the first (sorted) and say so
                log.warning("port group %s is associated with IP pools %s and %s; using %s",
                            moid, association[moid], key, association[moid])  # fmt: skip
                continue
            association[moid] = key
    return list(pools.values()), association


def ip_pool(key: str, pool: Any) -> IpPool:
    """A ``vim.vApp.IpPool`` -> IpPool. Malformed values are passed on as text for core to name."""
    config = pool.ipv4Config
    name = str(pool.name or key)
    if config is None or not config.subnetAddress:
        return IpPool(key, name, cidr="", external_ipam=True)
    return IpPool(
        id=key,
        name=name,
        cidr=_cidr(str(config.subnetAddress), str(config.netmask or "")),
        gateway=str(config.gateway) if config.gateway else None,
        ranges=parse_ranges(str(config.range or "")),
        dhcp=bool(config.dhcpServerAvailable),
        external_ipam=not bool(config.ipPoolEnabled),
        dns_servers=tuple(str(d).strip() for d in config.dns or () if str(d).strip()),
    )


def _cidr(subnet: str, netmask: str) -> str:
    try:
        return str(ipaddress.IPv4Network(f"{subnet}/{netmask}", strict=False))
    except ValueError:
        return f"{subnet}/{netmask}"  # core.ipalloc names it as "not a subnet"


def parse_ranges(text: str) -> tuple[IpRange, ...]:
    """vCenter's ``"10.0.0.10#41, 10.0.1.5#3"`` (first address # count) -> inclusive ranges.

    A malformed part is kept as ``IpRange(part, part)``, which ``core.ipalloc`` reports naming the pool.
    """
    ranges: list[IpRange] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        start, _, count = part.partition("#")
        try:
            first = ipaddress.IPv4Address(start.strip())
            n = int(count)
            last = first + (n - 1)
        except (ValueError, ipaddress.AddressValueError):
            ranges.append(IpRange(part, part))
            continue
        ranges.append(IpRange(str(first), str(last)))
    return tuple(ranges)


def _dvs(o: ObjectProps) -> Dvs:
    pvlans: set[int] = set()
    for entry in getattr(o.get("config"), "pvlanConfig", None) or ():
        pvlans.add(int(entry.primaryVlanId))
        pvlans.add(int(entry.secondaryVlanId))
    return Dvs(str(o.obj._moId), str(o.get("name", "")), frozenset(pvlans))


def vlan_of(setting: Any) -> int | None:
    """The single VLAN of a port setting (VLAN id, or a PVLAN's id); None for none, a trunk or unknown."""
    vlan = getattr(setting, "vlan", None)
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec):
        return int(vlan.vlanId)
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.PvlanSpec):
        return int(vlan.pvlanId)
    return None


def _port_group(o: ObjectProps, association: Mapping[str, str]) -> PortGroup:
    moid = str(o.obj._moId)
    dvs = o.get("config.distributedVirtualSwitch")
    return PortGroup(
        key=moid,
        name=str(o.get("name", "")),
        dvs_key=str(dvs._moId) if dvs is not None else "",
        vlan_id=vlan_of(o.get("config.defaultPortConfig")),
        ip_pool_id=association.get(moid),
    )


def _port_vlan(port: Any) -> int | None:
    config = getattr(port, "config", None)
    return vlan_of(getattr(config, "setting", None))


def _dv_connection(device: Any) -> Any:
    if not isinstance(device, vim.vm.device.VirtualEthernetCard):
        return None
    backing = device.backing
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        return backing.port
    return None


def _vm(
    o: ObjectProps, dvs_moid_by_uuid: Mapping[str, str], port_vlans: Mapping[tuple[str, str], int | None]
) -> Vm:
    return network_vm(str(o.obj._moId), o.props, dvs_moid_by_uuid, port_vlans)


def _mirrored(props: Mapping[str, Any]) -> bool:
    """A tenant VM: not a template, and not an agent VM (one an extension manages: EAM's, the engine's)."""
    return not bool(props.get("config.template", False)) and props.get("config.managedBy") is None


def _agentvms(props: Mapping[str, Any]) -> bool:
    """A DV port group agentvm created (``hostNetwork``'s trunk): its description starts with OWNER_MARK."""
    return str(props.get("config.description") or "").startswith(OWNER_MARK)


def _moid(ref: Any) -> str:
    """A managed object's moid, from a pyVmomi object (``_moId``) or a watch's ``MoRef`` (``value``)."""
    return str(getattr(ref, "_moId", None) or ref.value)


def network_vm(
    moid: str,
    props: Mapping[str, Any],
    dvs_moid_by_uuid: Mapping[str, str],
    port_vlans: Mapping[tuple[str, str], int | None],
) -> Vm:
    """A VM from its ``VM_PROPS`` (a bulk read's, or a watch's merged updates). Pure.

    ``port_vlans``: (DVS moid, port key) -> the VLAN that DV port carries (absent: unknown, None)."""
    guest_ips: dict[int, tuple[str, ...]] = {}
    guest_by_mac: dict[str, tuple[str, ...]] = {}
    for net in props.get("guest.net") or ():
        ips = tuple(str(ip) for ip in net.ipAddress or ())
        if net.deviceConfigId is not None and int(net.deviceConfigId) > 0:
            guest_ips[int(net.deviceConfigId)] = ips
        if net.macAddress:
            guest_by_mac[str(net.macAddress).lower()] = ips
    nics = []
    for device in props.get("config.hardware.device") or ():
        connection = _dv_connection(device)
        if connection is None:
            continue
        mac = str(device.macAddress) if device.macAddress else None
        port_key = str(connection.portKey) if connection.portKey else None
        dvs_moid = dvs_moid_by_uuid.get(str(connection.switchUuid or ""))
        vlan = port_vlans.get((dvs_moid, port_key)) if dvs_moid and port_key else None
        key = int(device.key)
        nics.append(
            Nic(
                device_key=key,
                mac=mac,
                port_group_key=str(connection.portgroupKey or ""),
                port_key=port_key,
                port_vlan_id=vlan,
                guest_ips=guest_ips.get(key) or guest_by_mac.get((mac or "").lower(), ()),
            )
        )
    host = props.get("runtime.host")
    return Vm(
        moid=moid,
        name=str(props.get("name") or ""),
        host=_moid(host) if host is not None else None,
        power_state=_POWER.get(str(props.get("runtime.powerState", "")), PowerState.POWERED_OFF),
        nics=tuple(sorted(nics, key=lambda n: n.device_key)),
    )


# -- DV port VLANs ----------------------------------------------------------------------------------------


def set_dv_port_vlans(
    session: Session, dvs: MoRef | str, vlans: Mapping[str, int], *, timeout: float = 120.0
) -> None:
    """Set the VLAN of each DV port ``key -> vlan`` of switch ``dvs`` in one ``ReconfigureDVPort_Task``.

    Called by the netsync controller with the plan's ``dv_port_vlans`` grouped by switch. Raises the agentvm
    error the task's fault maps to (ConfigurationError e.g. when the port group does not allow VLAN
    override, NotFoundError when a port is gone, TransientError to retry).
    """
    if not vlans:
        return
    ref = dvs if isinstance(dvs, MoRef) else MoRef("VmwareDistributedVirtualSwitch", dvs)
    switch = session.mo(ref)
    vmware = vim.dvs.VmwareDistributedVirtualSwitch
    specs = [
        vim.dvs.DistributedVirtualPort.ConfigSpec(
            operation="edit",
            key=key,
            setting=vmware.VmwarePortConfigPolicy(vlan=vmware.VlanIdSpec(vlanId=vlan, inherited=False)),
        )
        for key, vlan in sorted(vlans.items())
    ]
    what = f"set the VLAN of DV port(s) {', '.join(sorted(vlans))} on {ref.value}"
    with session.operation("netsync-dvport-vlan"):
        task = switch.ReconfigureDVPort_Task(port=specs)
        wait_for_task(session, task, what=what, timeout=timeout)


def read_dv_port_vlans(session: Session, dvs: MoRef | str, port_keys: Iterable[str]) -> dict[str, int | None]:
    """The VLAN each of ``port_keys`` carries now (one ``FetchDVPorts``); absent keys: no such port."""
    ref = dvs if isinstance(dvs, MoRef) else MoRef("VmwareDistributedVirtualSwitch", dvs)
    keys = sorted(set(port_keys))
    ports = session.mo(ref).FetchDVPorts(vim.dvs.PortCriteria(portKey=keys)) or ()
    wanted = set(keys)
    return {str(p.key): _port_vlan(p) for p in ports if str(p.key) in wanted}


# -- what the netsync watch needs (controller.netsync.NetsyncWatch) ------------------------------------------

VM_WATCH = VM_PROPS
"""The VM properties the netsync watch follows (NIC backings and MACs, power, host, guest addresses)."""

NETSYNC_WATCH = (
    WatchSpec(vim.VirtualMachine, VM_WATCH),
    WatchSpec(vim.dvs.DistributedVirtualPortgroup, PORTGROUP_PROPS),
    WatchSpec(vim.DistributedVirtualSwitch, ("name", "uuid")),
)
"""What the netsync watch's ``Watcher`` follows: VMs, DV port groups and switches."""


def watched_vm(
    moid: str,
    props: Mapping[str, Any],
    dvs_moid_by_uuid: Mapping[str, str],
    port_vlans: Mapping[tuple[str, str], int | None],
) -> Vm | None:
    """``network_vm`` of a VM's merged watch updates; None for a template or an agent VM (netsync mirrors
    neither)."""
    if not _mirrored(props):
        return None
    return network_vm(moid, props, dvs_moid_by_uuid, port_vlans)


def vm_port_groups(props: Mapping[str, Any]) -> dict[str, str]:
    """DV port key -> its port group key, from the NIC backings of a VM's ``VM_PROPS``. Pure."""
    out: dict[str, str] = {}
    for device in props.get("config.hardware.device") or ():
        backing = getattr(device, "backing", None)
        port = getattr(backing, "port", None)
        if port is not None and getattr(port, "portKey", None):
            out[str(port.portKey)] = str(port.portgroupKey or "")
    return out


@dataclass(frozen=True)
class NetworksRead:
    """The networking side without the VMs: port groups (with their pools), pools, switches."""

    port_groups: tuple[PortGroup, ...]
    ip_pools: tuple[IpPool, ...]
    dvses: tuple[Dvs, ...]
    dvs_refs: Mapping[str, MoRef]  # DVS moid -> MoRef, for ``set_dv_port_vlans`` / ``fetch_port_vlans``
    dvs_moid_by_uuid: Mapping[str, str]  # DVS uuid (what a NIC backing names) -> moid


def read_networks(session: Session, *, page_size: int = DEFAULT_PAGE_SIZE) -> NetworksRead:
    """Port groups, IP pools and switches: one ``RetrievePropertiesEx`` per type plus one ``QueryIpPools``
    per datacenter. The netsync watch calls it when a port group or switch changes and on a timer (IP pools
    are not managed objects, so no watch sees them change). Raises the session's agentvm errors."""
    content = session.content
    types = [vim.Datacenter, vim.DistributedVirtualSwitch, vim.dvs.DistributedVirtualPortgroup]
    read: dict[type, list[ObjectProps]] = {}
    with session.operation("netsync-read-networks"), container_view(session, types) as view:
        for kind, paths in (
            (vim.Datacenter, ("name",)),
            (vim.DistributedVirtualSwitch, DVS_PROPS),
            (vim.dvs.DistributedVirtualPortgroup, PORTGROUP_PROPS),
        ):
            spec = view_filter_spec(view, [property_spec(kind, paths)])
            with paged(session, spec, page_size=page_size) as items:
                read[kind] = list(items)
        pools: list[tuple[str, Any]] = []
        for dc in read[vim.Datacenter]:
            dc_moid = str(dc.obj._moId)
            pools.extend((dc_moid, pool) for pool in content.ipPoolManager.QueryIpPools(dc.obj) or ())
    dvses = read[vim.DistributedVirtualSwitch]
    raw = RawNetworkRead(
        vcenter_uuid=str(content.about.instanceUuid or ""),
        dvses=dvses,
        port_groups=read[vim.dvs.DistributedVirtualPortgroup],
        vms=(),
        ip_pools=pools,
        dv_ports={},
    )
    inv = build_network_inventory(raw)
    return NetworksRead(
        port_groups=inv.port_groups,
        ip_pools=inv.ip_pools,
        dvses=inv.dvses,
        dvs_refs={str(o.obj._moId): Session.moref(o.obj) for o in dvses},
        dvs_moid_by_uuid={str(o.get("uuid", "")): str(o.obj._moId) for o in dvses},
    )


def vm_port_keys(props: Mapping[str, Any], dvs_moid_by_uuid: Mapping[str, str]) -> set[tuple[str, str]]:
    """(DVS moid, port key) of each NIC of a VM's ``VM_PROPS`` that is connected to a DV port. Pure."""
    keys: set[tuple[str, str]] = set()
    for device in props.get("config.hardware.device") or ():
        connection = _dv_connection(device)
        if connection is None or not connection.portKey:
            continue
        dvs = dvs_moid_by_uuid.get(str(connection.switchUuid or ""))
        if dvs is not None:
            keys.add((dvs, str(connection.portKey)))
    return keys


def fetch_port_vlans(
    session: Session, dvs_refs: Mapping[str, MoRef], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int | None]:
    """The VLAN each (DVS moid, port key) carries now: one ``FetchDVPorts`` per switch, not per port."""
    by_dvs: dict[str, set[str]] = {}
    for dvs, key in keys:
        by_dvs.setdefault(dvs, set()).add(key)
    out: dict[tuple[str, str], int | None] = {}
    for dvs, wanted in sorted(by_dvs.items()):
        ref = dvs_refs.get(dvs)
        if ref is None:
            continue
        for key, vlan in read_dv_port_vlans(session, ref, wanted).items():
            out[(dvs, key)] = vlan
    return out


@dataclass(frozen=True)
class AgentVmAddress:
    """An agent VM's address as it carries it in its extraConfig (``key`` = which entry it came from)."""

    host: str  # host moid
    vm: str  # VM moid
    address: str
    key: str
    powered_on: bool


def read_agent_vm_addresses(
    session: Session, keys: Sequence[str], *, page_size: int = DEFAULT_PAGE_SIZE
) -> list[AgentVmAddress]:
    """Every VM carrying one of ``keys`` in its extraConfig (the first present, in ``keys`` order), with its
    host: one bulk read of ``config.extraConfig`` (heavy, so only the CLI and the controller's start call
    it). VMs with no host or an empty value are left out. Raises the session's agentvm errors."""
    paths = ("runtime.host", "runtime.powerState", "config.extraConfig")
    spec_paths = property_spec(vim.VirtualMachine, paths)
    found: list[AgentVmAddress] = []
    with (
        session.operation("netsync-agent-addresses"),
        container_view(session, [vim.VirtualMachine]) as view,
        paged(session, view_filter_spec(view, [spec_paths]), page_size=page_size) as items,
    ):
        for o in items:
            host = o.get("runtime.host")
            if host is None:
                continue
            extra = {str(opt.key): opt.value for opt in o.get("config.extraConfig") or ()}
            for key in keys:
                value = extra.get(key)
                if value is not None and str(value).strip():
                    found.append(
                        AgentVmAddress(
                            host=_moid(host),
                            vm=str(o.obj._moId),
                            address=str(value).strip(),
                            key=key,
                            powered_on=str(o.get("runtime.powerState", "")) == "poweredOn",
                        )
                    )
                    break
    return sorted(found, key=lambda a: (a.host, a.vm))


def read_host_moids(session: Session) -> dict[str, str]:
    """Host name -> host moid of every host (one bulk read of the names): for maps keyed by host name."""
    hosts = retrieve(session, [vim.HostSystem], [property_spec(vim.HostSystem, ["name"])])
    return {str(h.get("name")): str(h.obj._moId) for h in hosts}
