"""**Draft, not yet run against the lab and not used by any command: no test covers it yet.**

Host networking through vim25: read every host's NICs, vSwitches, port groups and DVS memberships in bulk,
and make one change per call (standard vSwitch / port group, the ownership attribute, DVS membership, DV port
groups, the agent VM's NICs).

Reads: ``read_host_networks`` is one ``RetrievePropertiesEx`` (paged) for all the hosts given plus the
``CustomFieldsManager``'s field list, and one for every distributed switch and DV port group (a traversal from
the root folder, no view to create and destroy): two calls whatever the number of hosts. Writes take plain
arguments (names, moids, what the read gave) and never read first, so a caller that read once pays one call
per change (plus the task wait of ``vsphere.tasks`` for the ``*_Task`` methods).

On a standalone host (``Session.host_agent``: no CustomFieldsManager) the ownership record is the file
``OWNER_FILE`` on the host's first datastore (``vsphere.datastore_files``): the read adds one GET (and,
once per session, the datastore's choice), a record written is a PUT and a rename; there is no switch.

Faults become agentvm errors naming the object and the fix. Creating something that exists already raises
``AlreadyThere`` (a ConfigurationError): it is not silently taken as agentvm's, so the caller can drop
its claim.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.model.agency import MoRef
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError, TransientError
from agentvm.model.hostnet import (
    OWNER_FIELD,
    OWNER_MARK,
    AgentNicTarget,
    DvPortGroupState,
    DvsState,
    HostNetworkOwned,
    HostNetworkSnapshot,
    HostNetworkState,
    PhysicalNic,
    ProxySwitch,
    SecurityPolicy,
    StandardPortGroup,
    VSwitch,
)
from agentvm.vsphere.collector import DEFAULT_PAGE_SIZE, ObjectProps, paged, read_one
from agentvm.vsphere.datastore_files import DatastoreFiles
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.ovf import nic_changes
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task

PC = vmodl.query.PropertyCollector

HOST_PROPS = (
    "name",
    "config.network.pnic",
    "config.network.vswitch",
    "config.network.portgroup",
    "config.network.proxySwitch",
    "configManager.networkSystem",
    "customValue",
)
DVS_PROPS = ("name", "uuid", "summary.hostMember", "config.uplinkPortPolicy", "config.configVersion")
DVPG_PROPS = (
    "name",
    "key",
    "config.distributedVirtualSwitch",
    "config.defaultPortConfig",
    "config.description",
)
DVPG_VERSION = "config.configVersion"
_EXISTS = frozenset({"AlreadyExists", "DuplicateName"})
_NUM_PORTS = 128
_DEFAULT_SECURITY = SecurityPolicy()


class AlreadyThere(ConfigurationError):
    """A create found the object there already: it is someone's, not known to be agentvm's."""


@dataclass(frozen=True)
class HostNetworkRefs:
    """What the changes need beside the snapshot: each host's ``HostNetworkSystem``, each switch's and DV port
    group's ``configVersion`` (vCenter refuses a reconfigure with a stale one), the owner field's key."""

    network_systems: Mapping[str, MoRef] = field(default_factory=dict)  # host moid -> HostNetworkSystem
    dvs_versions: Mapping[str, str] = field(default_factory=dict)  # DVS moid -> configVersion
    dvpg_versions: Mapping[str, str] = field(default_factory=dict)  # DV port group moid -> configVersion
    owner_field_key: int | None = None  # None: the field is not defined yet


# -- reads ---------------------------------------------------------------------------------------------------


def read_host_networks(
    session: Session, hosts: Mapping[str, str], *, page_size: int = DEFAULT_PAGE_SIZE
) -> HostNetworkSnapshot:
    """The hosts ``hosts`` (moid -> inventory path) and every distributed switch: two calls in all."""
    return read_host_networks_refs(session, hosts, page_size=page_size)[0]


def read_switches(session: Session, *, page_size: int = DEFAULT_PAGE_SIZE) -> tuple[DvsState, ...]:
    """Every distributed switch and its DV port groups: one call."""
    return _read_switches(session, page_size)[0]


def read_host_networks_refs(
    session: Session, hosts: Mapping[str, str], *, page_size: int = DEFAULT_PAGE_SIZE
) -> tuple[HostNetworkSnapshot, HostNetworkRefs]:
    """``read_host_networks`` and the references its changes need. A host that no longer exists is left
    out of the snapshot (vCenter omits it); the caller sees it missing by moid."""
    cfm = None if session.host_agent else session.content.customFieldsManager
    objects = [PC.ObjectSpec(obj=session.mo(MoRef("HostSystem", moid))) for moid in hosts]
    if cfm is not None:
        objects.append(PC.ObjectSpec(obj=cfm))
    spec = PC.FilterSpec(
        objectSet=objects,
        propSet=[
            PC.PropertySpec(type=vim.HostSystem, pathSet=list(HOST_PROPS)),
            PC.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]),
        ],
        reportMissingObjectsInResults=False,
    )
    host_props: list[ObjectProps] = []
    fields: Sequence[Any] = ()
    with session.operation("hostnet-read-hosts"), paged(session, spec, page_size=page_size) as items:
        for o in items:
            if isinstance(o.obj, vim.CustomFieldsManager):
                fields = o.get("field") or ()
            else:
                host_props.append(o)
    key = owner_field_key(fields)
    if session.host_agent:
        key = HOST_AGENT_KEY
    dvses, dvs_versions, dvpg_versions = _read_switches(session, page_size)
    by_uuid = {d.uuid: d.name for d in dvses}
    states = tuple(
        sorted(
            (_host_state(o, hosts.get(str(o.obj._moId), ""), key, by_uuid) for o in host_props),
            key=lambda h: h.moid,
        )
    )
    if session.host_agent and states:  # the host's record is a file on its datastore: one GET
        owned = HostNetworkOwned.decode(_read_owner_file(session))
        states = tuple(dataclasses.replace(h, owned=owned) for h in states)
    refs = HostNetworkRefs(
        network_systems={
            str(o.obj._moId): Session.moref(o.get("configManager.networkSystem"))
            for o in host_props
            if o.get("configManager.networkSystem") is not None
        },
        dvs_versions=dvs_versions,
        dvpg_versions=dvpg_versions,
        owner_field_key=key,
    )
    return HostNetworkSnapshot(hosts=states, dvses=dvses), refs


def owner_field_key(fields: Iterable[Any]) -> int | None:
    """The key of the ``OWNER_FIELD`` custom attribute among ``fields`` (on HostSystem or on every type)."""
    for f in fields:
        if f.name == OWNER_FIELD and f.managedObjectType in (None, vim.HostSystem):
            return int(f.key)
    return None


def _read_switches(
    session: Session, page_size: int
) -> tuple[tuple[DvsState, ...], dict[str, str], dict[str, str]]:
    """Every DVS and DV port group in one ``RetrievePropertiesEx``: root folder -> datacenters -> network
    folders (recursively) -> switches and port groups."""
    folder = PC.TraversalSpec(
        name="folder",
        type=vim.Folder,
        path="childEntity",
        skip=False,
        selectSet=[PC.SelectionSpec(name="folder"), PC.SelectionSpec(name="dc")],
    )
    dc = PC.TraversalSpec(
        name="dc",
        type=vim.Datacenter,
        path="networkFolder",
        skip=False,
        selectSet=[PC.SelectionSpec(name="folder")],
    )
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=session.content.rootFolder, skip=True, selectSet=[folder, dc])],
        propSet=[
            PC.PropertySpec(type=vim.DistributedVirtualSwitch, pathSet=list(DVS_PROPS)),
            PC.PropertySpec(type=vim.dvs.DistributedVirtualPortgroup, pathSet=[*DVPG_PROPS, DVPG_VERSION]),
        ],
    )
    switches: list[ObjectProps] = []
    groups: list[ObjectProps] = []
    with session.operation("hostnet-read-switches"), paged(session, spec, page_size=page_size) as items:
        for o in items:
            if isinstance(o.obj, vim.DistributedVirtualSwitch):
                switches.append(o)
            elif isinstance(o.obj, vim.dvs.DistributedVirtualPortgroup):
                groups.append(o)
    pgs_by_dvs: dict[str, list[DvPortGroupState]] = {}
    for g in groups:
        pg = dv_port_group_state(g)
        pgs_by_dvs.setdefault(pg.dvs_key, []).append(pg)
    dvses = tuple(
        sorted(
            (
                DvsState(
                    key=str(s.obj._moId),
                    name=str(s.get("name", "")),
                    uuid=str(s.get("uuid", "")),
                    hosts=frozenset(str(h._moId) for h in s.get("summary.hostMember") or ()),
                    uplinks=tuple(
                        str(n)
                        for n in getattr(s.get("config.uplinkPortPolicy"), "uplinkPortName", None) or ()
                    ),
                    port_groups=tuple(sorted(pgs_by_dvs.get(str(s.obj._moId), ()), key=lambda p: p.name)),
                )
                for s in switches
            ),
            key=lambda d: d.key,
        )
    )
    return (
        dvses,
        {str(s.obj._moId): str(s.get("config.configVersion", "")) for s in switches},
        {str(g.obj._moId): str(g.get(DVPG_VERSION, "")) for g in groups},
    )


def _host_state(o: ObjectProps, path: str, key: int | None, dvs_names: Mapping[str, str]) -> HostNetworkState:
    vswitches = tuple(
        VSwitch(
            name=str(v.name),
            pnics=tuple(str(n) for n in getattr(getattr(v.spec, "bridge", None), "nicDevice", None) or ()),
            port_groups=tuple(_pg_name(p) for p in v.portgroup or ()),
            mtu=int(v.mtu) if v.mtu else None,
        )
        for v in o.get("config.network.vswitch") or ()
    )
    port_groups = tuple(
        StandardPortGroup(
            name=str(p.spec.name),
            vswitch=str(p.spec.vswitchName),
            vlan=int(p.spec.vlanId or 0),
            security=_std_security(getattr(p.spec.policy, "security", None)),
        )
        for p in o.get("config.network.portgroup") or ()
    )
    proxies = tuple(
        ProxySwitch(
            dvs_uuid=str(p.dvsUuid),
            dvs_name=str(p.dvsName or dvs_names.get(str(p.dvsUuid), "")),
            pnics=tuple(
                str(s.pnicDevice) for s in getattr(getattr(p.spec, "backing", None), "pnicSpec", None) or ()
            ),
        )
        for p in o.get("config.network.proxySwitch") or ()
    )
    owned_text = next(
        (str(v.value) for v in o.get("customValue") or () if key is not None and v.key == key), None
    )
    return HostNetworkState(
        moid=str(o.obj._moId),
        name=str(o.get("name", "")),
        path=path,
        pnics=tuple(
            PhysicalNic(str(n.device), str(n.mac) if n.mac else None)
            for n in o.get("config.network.pnic") or ()
        ),
        vswitches=vswitches,
        port_groups=port_groups,
        proxy_switches=proxies,
        owned=HostNetworkOwned.decode(owned_text),
    )


def _pg_name(key: str) -> str:
    # HostVirtualSwitch.portgroup holds keys "key-vim.host.PortGroup-<name>"
    return str(key).removeprefix("key-vim.host.PortGroup-")


def _std_security(policy: Any) -> SecurityPolicy:
    if policy is None:
        return SecurityPolicy()
    return SecurityPolicy(policy.allowPromiscuous, policy.forgedTransmits, policy.macChanges)


def _bool_policy(value: Any) -> bool | None:
    if value is None or (getattr(value, "inherited", False) and getattr(value, "value", None) is None):
        return None
    got = getattr(value, "value", None)
    return bool(got) if got is not None else None


def dv_port_group_state(o: ObjectProps) -> DvPortGroupState:
    """A DV port group's ``DVPG_PROPS`` as a model value (VLAN trunk ranges or id, security, description)."""
    setting = o.get("config.defaultPortConfig")
    vlan = getattr(setting, "vlan", None)
    vlans: tuple[tuple[int, int], ...] = ()
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.TrunkVlanSpec):
        vlans = tuple((int(r.start), int(r.end)) for r in vlan.vlanId or ())
    elif isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec) and vlan.vlanId:
        vlans = ((int(vlan.vlanId), int(vlan.vlanId)),)
    sec = getattr(setting, "securityPolicy", None)
    security = (
        SecurityPolicy(
            _bool_policy(sec.allowPromiscuous),
            _bool_policy(sec.forgedTransmits),
            _bool_policy(sec.macChanges),
        )
        if sec is not None
        else SecurityPolicy()
    )
    description = str(o.get("config.description") or "")
    dvs = o.get("config.distributedVirtualSwitch")
    return DvPortGroupState(
        key=str(o.obj._moId),
        name=str(o.get("name", "")),
        dvs_key=str(dvs._moId) if dvs is not None else "",
        vlans=vlans,
        security=security,
        description=description,
        owned=description.startswith(OWNER_MARK),
    )


# -- standard vSwitches and port groups (HostNetworkSystem, one call each, no task) --------------------------


def _exists(exc: AgentvmError, what: str) -> AgentvmError:
    if fault_name(exc) in _EXISTS:
        return AlreadyThere(f"{what}: it exists already and is not recorded as agentvm's ({exc})")
    return exc


def _vswitch_spec(pnic: str, mtu: int | None) -> Any:
    return vim.host.VirtualSwitch.Specification(
        numPorts=_NUM_PORTS, mtu=mtu, bridge=vim.host.VirtualSwitch.BondBridge(nicDevice=[pnic])
    )


def add_vswitch(
    session: Session, network_system: MoRef, name: str, pnic: str, *, label: str, mtu: int | None = None
) -> None:
    """Create standard vSwitch ``name`` bound to physical NIC ``pnic`` on host ``label``. ``AlreadyThere``
    when a vSwitch of that name exists; ConfigurationError naming the NIC when the host has no such NIC."""
    what = f"create vSwitch {name} on {label} bound to {pnic}"
    try:
        session.mo(network_system).AddVirtualSwitch(vswitchName=name, spec=_vswitch_spec(pnic, mtu))
    except (ConfigurationError, TransientError) as exc:
        raise _named(_exists(exc, what), what, pnic) from exc


def update_vswitch(
    session: Session, network_system: MoRef, name: str, pnic: str, *, label: str, mtu: int | None = None
) -> None:
    """Bind vSwitch ``name`` on host ``label`` to ``pnic`` (its only uplink) and set its MTU."""
    what = f"bind vSwitch {name} on {label} to {pnic}"
    try:
        session.mo(network_system).UpdateVirtualSwitch(vswitchName=name, spec=_vswitch_spec(pnic, mtu))
    except (ConfigurationError, TransientError) as exc:
        raise _named(exc, what, pnic) from exc


def remove_vswitch(session: Session, network_system: MoRef, name: str, *, label: str) -> None:
    """Remove vSwitch ``name`` from host ``label``; NotFoundError naming it when it is not there."""
    what = f"remove vSwitch {name} from {label}"
    try:
        session.mo(network_system).RemoveVirtualSwitch(vswitchName=name)
    except (ConfigurationError, TransientError) as exc:
        raise _named(exc, what, None) from exc


def _pg_spec(name: str, vswitch: str, vlan: int, security: SecurityPolicy) -> Any:
    return vim.host.PortGroup.Specification(
        name=name,
        vswitchName=vswitch,
        vlanId=vlan,
        policy=vim.host.NetworkPolicy(
            security=vim.host.NetworkPolicy.SecurityPolicy(
                allowPromiscuous=security.promiscuous,
                forgedTransmits=security.forged_transmits,
                macChanges=security.mac_changes,
            )
        ),
    )


def add_port_group(
    session: Session,
    network_system: MoRef,
    name: str,
    vswitch: str,
    *,
    vlan: int = 0,
    security: SecurityPolicy = _DEFAULT_SECURITY,
    label: str,
) -> None:
    """Create standard port group ``name`` on ``vswitch`` of host ``label`` with VLAN ``vlan``.
    ``AlreadyThere`` when a port group of that name exists on the host."""
    what = f"create port group {name} (VLAN {vlan}) on vSwitch {vswitch} of {label}"
    try:
        session.mo(network_system).AddPortGroup(portgrp=_pg_spec(name, vswitch, vlan, security))
    except (ConfigurationError, TransientError) as exc:
        raise _named(_exists(exc, what), what, None) from exc


def update_port_group(
    session: Session,
    network_system: MoRef,
    name: str,
    vswitch: str,
    *,
    vlan: int = 0,
    security: SecurityPolicy = _DEFAULT_SECURITY,
    label: str,
) -> None:
    """Set port group ``name`` of host ``label`` to ``vswitch``, VLAN ``vlan`` and ``security``."""
    what = f"update port group {name} (VLAN {vlan}, vSwitch {vswitch}) of {label}"
    try:
        session.mo(network_system).UpdatePortGroup(
            pgName=name, portgrp=_pg_spec(name, vswitch, vlan, security)
        )
    except (ConfigurationError, TransientError) as exc:
        raise _named(exc, what, None) from exc


def remove_port_group(session: Session, network_system: MoRef, name: str, *, label: str) -> None:
    """Remove standard port group ``name`` from host ``label``."""
    what = f"remove port group {name} from {label}"
    try:
        session.mo(network_system).RemovePortGroup(pgName=name)
    except (ConfigurationError, TransientError) as exc:
        raise _named(exc, what, None) from exc


def _named(exc: AgentvmError, what: str, pnic: str | None) -> AgentvmError:
    """``exc`` (from a HostNetworkSystem or task call) as the error this adapter raises: naming ``what``,
    keeping its fault name and its kind, except that a physical NIC the host lacks or another switch uses
    (``NotFound``, ``ResourceInUse``, ``InvalidArgument`` of a call given ``pnic``) is a ConfigurationError
    naming the NIC: waiting does not free it (vSphere's ``ResourceInUse`` is otherwise TransientError)."""
    if isinstance(exc, AlreadyThere):
        return exc
    name = fault_name(exc)
    out: AgentvmError
    if pnic is not None and name in ("InvalidArgument", "ResourceInUse", "NotFound"):
        cls = NotFoundError if name == "NotFound" else ConfigurationError
        out = cls(f"cannot {what}: ({exc}); check that the host has a free physical NIC {pnic}")
    elif name in ("NotFound", "ManagedObjectNotFound"):
        out = NotFoundError(f"cannot {what}: not found ({exc}); check the name against the host's networking")
    elif isinstance(exc, TransientError):
        out = TransientError(f"cannot {what}: {exc}")
    else:
        out = ConfigurationError(f"cannot {what}: {exc}")
    return _with_fault(out, name)


def _with_fault(error: AgentvmError, name: str | None) -> AgentvmError:
    """``error`` carrying the fault name of the error it replaces, for ``fault_name``."""
    error.fault_name = name  # type: ignore[attr-defined]
    return error


# -- the ownership record (custom attribute on the host; a file on a host agent) ---------------------------

HOST_AGENT_KEY = 0
"""The owner "key" on a host agent, which has no CustomFieldsManager: the record is ``OWNER_FILE``."""

OWNER_FILE = f"{OWNER_FIELD}.txt"
"""On a standalone host (a host agent): the file ``[<datastore>] .agentvm/<OWNER_FILE>`` on the host's first
datastore (where the lease's records are: ``vsphere.datastore_files``) holds ``HostNetworkOwned.encode()``,
as the ``OWNER_FIELD`` attribute does on a vCenter's host."""

# one file store per session: it makes .agentvm once (its datastore is chosen once per session anyway)
_files_by_session: weakref.WeakKeyDictionary[Session, DatastoreFiles] = weakref.WeakKeyDictionary()
_files_lock = threading.Lock()


def _owner_files(session: Session) -> DatastoreFiles:
    with _files_lock:
        files = _files_by_session.get(session)
        if files is None:
            files = _files_by_session[session] = DatastoreFiles(session)
        return files


def _read_owner_file(session: Session) -> str | None:
    """The host agent's ownership record (None: never written); a record that is not UTF-8 owns nothing."""
    content = _owner_files(session).read_file(OWNER_FILE)
    if content is None:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def ensure_owner_field(session: Session, refs: HostNetworkRefs | None = None) -> int:
    """The key of the ``OWNER_FIELD`` attribute, defined on HostSystem if it is not yet: no call when
    ``refs`` knows it, else one ``AddCustomFieldDef`` (and one read of the fields if another client defined it
    meanwhile). On a host agent (no CustomFieldsManager; the record is a file) ``HOST_AGENT_KEY``, no call."""
    if refs is not None and refs.owner_field_key is not None:
        return refs.owner_field_key
    if session.host_agent:
        return HOST_AGENT_KEY
    cfm = session.content.customFieldsManager
    try:
        return int(cfm.AddCustomFieldDef(name=OWNER_FIELD, moType=vim.HostSystem).key)
    except ConfigurationError as exc:
        if fault_name(exc) not in _EXISTS:
            raise
    key = owner_field_key(read_one(session, cfm, ["field"]).get("field") or ())
    if key is None:
        raise ConfigurationError(
            f"a custom attribute named {OWNER_FIELD} exists for another object type: "
            "remove it in vCenter (Custom Attributes) so agentvm can define it on hosts"
        )
    return key


def set_owned(session: Session, host: str, owned: HostNetworkOwned, *, key: int, label: str) -> None:
    """Record ``owned`` on host ``host`` (moid) in the ``OWNER_FIELD`` attribute ``key``: one ``SetField``.
    On a host agent, in the file ``OWNER_FILE`` on the host's datastore instead (``key`` unused): a PUT and a
    rename (``vsphere.datastore_files``; the first write of a session makes ``.agentvm`` too)."""
    if session.host_agent:
        try:
            _owner_files(session).write_file(OWNER_FILE, owned.encode().encode())
        except AgentvmError as exc:
            raise _named(exc, f"record agentvm's host networking on {label}", None) from exc
        return
    try:
        session.content.customFieldsManager.SetField(
            entity=session.mo(MoRef("HostSystem", host)), key=key, value=owned.encode()
        )
    except ConfigurationError as exc:
        raise _named(exc, f"record agentvm's host networking on {label}", None) from exc


# -- distributed switches ------------------------------------------------------------------------------------


def _members_spec(session: Session, version: str, members: Mapping[str, str | None], operation: str) -> Any:
    host_specs = []
    for host, pnic in sorted(members.items()):
        backing = (
            vim.dvs.HostMember.PnicBacking(pnicSpec=[vim.dvs.HostMember.PnicSpec(pnicDevice=pnic)])
            if pnic and operation == "add"
            else None
        )
        host_specs.append(
            vim.dvs.HostMember.ConfigSpec(
                operation=operation, host=session.mo(MoRef("HostSystem", host)), backing=backing
            )
        )
    return vim.DistributedVirtualSwitch.ConfigSpec(configVersion=version, host=host_specs)


def join_dvs(
    session: Session,
    dvs: str,
    members: Mapping[str, str | None],
    *,
    config_version: str,
    label: str,
    timeout: float = 600.0,
) -> None:
    """Add hosts to DVS ``dvs`` (moid), each (host moid -> physical NIC) with that NIC as its uplink, all in
    one ``ReconfigureDvs_Task``. ``config_version`` is the switch's as read (``HostNetworkRefs``)."""
    _reconfigure_dvs(
        session, dvs, _members_spec(session, config_version, members, "add"), label, "add", members, timeout
    )


def leave_dvs(
    session: Session,
    dvs: str,
    hosts: Iterable[str],
    *,
    config_version: str,
    label: str,
    timeout: float = 600.0,
) -> None:
    """Remove hosts (moids) from DVS ``dvs`` in one ``ReconfigureDvs_Task``."""
    members = dict.fromkeys(hosts, None)
    _reconfigure_dvs(
        session,
        dvs,
        _members_spec(session, config_version, members, "remove"),
        label,
        "remove",
        members,
        timeout,
    )


def _reconfigure_dvs(
    session: Session,
    dvs: str,
    spec: Any,
    label: str,
    operation: str,
    members: Mapping[str, str | None],
    timeout: float,
) -> None:
    switch = session.mo(MoRef("VmwareDistributedVirtualSwitch", dvs))
    names = ", ".join(f"{h}" + (f" ({p})" if p else "") for h, p in sorted(members.items()))
    what = f"{operation} host(s) {names} {'to' if operation == 'add' else 'from'} distributed switch {label}"
    try:
        task = switch.ReconfigureDvs_Task(spec=spec)
        wait_for_task(session, task, what=what, timeout=timeout)
    except (ConfigurationError, TransientError) as exc:
        if isinstance(exc, AlreadyThere):
            raise
        name = fault_name(exc)
        if name in _EXISTS:
            raise AlreadyThere(f"{what}: a host is a member already ({exc})") from exc
        out: AgentvmError
        if name == "ConcurrentAccess":
            out = TransientError(f"cannot {what}: the switch changed since it was read ({exc}); re-read it")
        elif isinstance(exc, TransientError) and not (name == "ResourceInUse" and operation == "add"):
            out = TransientError(f"cannot {what}: {exc}")
        else:
            # a NIC the host lacks or a vSwitch uses (ResourceInUse): waiting does not free it
            out = ConfigurationError(
                f"cannot {what}: {exc}; check the hosts and that each physical NIC is free"
            )
        raise _with_fault(out, name) from exc


def _dvpg_spec(
    name: str,
    vlans: Sequence[tuple[int, int]],
    security: SecurityPolicy,
    description: str,
    version: str | None,
) -> Any:
    vmware = vim.dvs.VmwareDistributedVirtualSwitch

    def policy(value: bool | None) -> Any:
        return vim.BoolPolicy(inherited=value is None, value=value)

    return vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
        name=name,
        type="earlyBinding",
        numPorts=_NUM_PORTS if version is None else None,
        description=description,
        configVersion=version,
        defaultPortConfig=vmware.VmwarePortConfigPolicy(
            vlan=vmware.TrunkVlanSpec(
                inherited=False, vlanId=[vim.NumericRange(start=s, end=e) for s, e in vlans]
            ),
            securityPolicy=vmware.SecurityPolicy(
                inherited=False,
                allowPromiscuous=policy(security.promiscuous),
                forgedTransmits=policy(security.forged_transmits),
                macChanges=policy(security.mac_changes),
            ),
        ),
    )


def owned_description(text: str = "") -> str:
    """A DV port group description marking it agentvm's: ``OWNER_MARK`` first, then ``text``."""
    return f"{OWNER_MARK}{': ' + text if text else ''}"


def create_dv_port_group(
    session: Session,
    dvs: str,
    name: str,
    *,
    vlans: Sequence[tuple[int, int]],
    security: SecurityPolicy = _DEFAULT_SECURITY,
    description: str | None = None,
    label: str,
    timeout: float = 300.0,
) -> str | None:
    """Create DV port group ``name`` on DVS ``dvs`` (moid) carrying the trunk ``vlans``, its description
    ``description`` (default ``owned_description()``): one ``CreateDVPortgroup_Task``. Returns its moid when
    vCenter reports it. ``AlreadyThere`` when a port group of that name exists on the switch."""
    what = f"create DV port group {name} on {label}"
    spec = _dvpg_spec(
        name, vlans, security, owned_description() if description is None else description, None
    )
    try:
        task = session.mo(MoRef("VmwareDistributedVirtualSwitch", dvs)).CreateDVPortgroup_Task(spec=spec)
        result = wait_for_task(session, task, what=what, timeout=timeout)
    except ConfigurationError as exc:
        raise _named(_exists(exc, what), what, None) from exc
    return str(result._moId) if result is not None and hasattr(result, "_moId") else None


def reconfigure_dv_port_group(
    session: Session,
    port_group: str,
    name: str,
    *,
    vlans: Sequence[tuple[int, int]],
    security: SecurityPolicy = _DEFAULT_SECURITY,
    description: str,
    config_version: str,
    label: str,
    timeout: float = 300.0,
) -> None:
    """Set DV port group ``port_group`` (moid) to ``vlans``, ``security`` and ``description``."""
    what = f"reconfigure DV port group {name} ({port_group}) on {label}"
    spec = _dvpg_spec(name, vlans, security, description, config_version)
    try:
        task = session.mo(MoRef("DistributedVirtualPortgroup", port_group)).ReconfigureDVPortgroup_Task(
            spec=spec
        )
        wait_for_task(session, task, what=what, timeout=timeout)
    except ConfigurationError as exc:
        raise _named(exc, what, None) from exc


def destroy_dv_port_group(session: Session, port_group: str, *, label: str, timeout: float = 300.0) -> None:
    """Destroy DV port group ``port_group`` (moid): one ``Destroy_Task``."""
    what = f"destroy DV port group {label}"
    try:
        task = session.mo(MoRef("DistributedVirtualPortgroup", port_group)).Destroy_Task()
        wait_for_task(session, task, what=what, timeout=timeout)
    except ConfigurationError as exc:
        raise _named(exc, what, None) from exc


# -- the agent VM's NICs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmNic:
    """One NIC of a VM in device order (``position`` = its index in the OVF order of networks)."""

    key: int
    position: int
    mac: str | None
    port_group: str | None = None  # standard backing: the port group name
    dvs_uuid: str | None = None
    dv_port_group: str | None = None
    port_key: str | None = None


def read_vm_nics(session: Session, vm: str) -> tuple[VmNic, ...]:
    """The NICs of VM ``vm`` (moid) and their backings, in device order: one read."""
    devices = read_one(session, session.mo(MoRef("VirtualMachine", vm)), ["config.hardware.device"]).get(
        "config.hardware.device"
    )
    if devices is None:
        raise NotFoundError(f"VM {vm} has no devices to read: it is gone or not a VM; re-read the inventory")
    return _nics(devices)


def _nics(devices: Iterable[Any]) -> tuple[VmNic, ...]:
    cards = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    out = []
    for i, d in enumerate(cards):
        b = d.backing
        port = getattr(b, "port", None)
        out.append(
            VmNic(
                key=int(d.key),
                position=i,
                mac=str(d.macAddress) if d.macAddress else None,
                port_group=str(b.deviceName)
                if isinstance(b, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo)
                else None,
                dvs_uuid=str(port.switchUuid) if port is not None else None,
                dv_port_group=str(port.portgroupKey) if port is not None and port.portgroupKey else None,
                port_key=str(port.portKey) if port is not None and port.portKey else None,
            )
        )
    return tuple(out)


def connect_vm_nics(
    session: Session, vm: str, nics: Sequence[AgentNicTarget], *, label: str, timeout: float = 300.0
) -> None:
    """Connect the NICs of VM ``vm`` (moid) at the positions ``nics`` name (device order) to their port
    groups: one read of the devices and one ``ReconfigVM_Task`` (``vsphere.ovf.nic_changes``; the hook
    does the same inside its ``configure_vm``)."""
    obj = session.mo(MoRef("VirtualMachine", vm))
    devices = read_one(session, obj, ["config.hardware.device"]).get("config.hardware.device")
    if devices is None:
        raise NotFoundError(f"VM {label} has no devices to read: it is gone; re-read the inventory")
    spec = vim.vm.ConfigSpec(deviceChange=nic_changes(devices, nics, label))
    wait_for_task(
        session, obj.ReconfigVM_Task(spec=spec), what=f"connect the NICs of {label}", timeout=timeout
    )
