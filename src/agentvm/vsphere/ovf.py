"""Deploy an OVF package onto a host: fetch the descriptor, CreateImportSpec, ImportVApp, upload, configure.

Used by the agent engine (``engine.vsphere_infra``) to deploy agent VMs, and usable by anyone who imports
OVFs. The steps, each a plain vim25 operation:

1. ``fetch_descriptor`` downloads the ``.ovf`` over HTTP(S) (``OvfDownloadError`` when it cannot), and
   ``parse_descriptor`` reads its networks and properties (``OvfDescriptorError`` when it is not OVF);
2. ``import_ovf``: ``OvfManager.CreateImportSpec`` → ``ResourcePool.ImportVApp`` → wait for the lease →
   upload every file item (downloaded from beside the descriptor) → ``HttpNfcLeaseComplete``. On any
   failure the lease is aborted and the half-created VM deleted, so nothing is left behind;
3. ``configure_vm`` sets vApp properties, ``extraConfig`` and ``config.managedBy`` in one reconfigure
   (vCenter does not always apply ``propertyMapping``: vcsim 0.24.2 ignores it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO
from urllib.parse import urljoin

from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError
from agentvm.model.hostnet import AgentNicTarget
from agentvm.model.inventory import ManagedBy
from agentvm.vsphere import nfc
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task
from agentvm.vsphere.vms import destroy, find_marked

log = logging.getLogger(__name__)

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
MAX_DESCRIPTOR_BYTES = 4 << 20  # agent descriptors are a few KB; anything this big is not one
# direct connections: the package server is named by the agency's URL, not by this process's environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OvfDownloadError(AgentvmError):
    """The descriptor or a file it references cannot be downloaded. Fields say why, for EAM's InvalidUrl."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        connection_refused: bool = False,
        unknown_host: bool = False,
        response_code: int | None = None,
    ) -> None:
        super().__init__(f"cannot download {url}: {reason}; check that the package server serves it")
        self.url = url
        self.reason = reason
        self.connection_refused = connection_refused
        self.unknown_host = unknown_host
        self.response_code = response_code


class OvfDescriptorError(ConfigurationError):
    """The descriptor is not a valid OVF, or vCenter rejects it (``CreateImportSpec`` errors)."""

    def __init__(self, url: str, errors: Sequence[str]) -> None:
        super().__init__(f"the OVF {url} is not valid: {'; '.join(errors)}; fix the package")
        self.url = url
        self.errors = tuple(errors)


@dataclass(frozen=True)
class OvfPropertyDef:
    """One ``ProductSection/Property`` of the descriptor. ``id`` is ``[class.]key[.instance]``."""

    id: str
    type: str = "string"
    default: str = ""
    user_configurable: bool = False
    label: str = ""


ETHERNET_RESOURCE_TYPE = "10"  # CIM ResourceType of an Ethernet adapter item


@dataclass(frozen=True)
class OvfDescriptor:
    """A downloaded descriptor: its text (for CreateImportSpec), its URL, networks and properties."""

    url: str
    text: str
    networks: tuple[str, ...] = ()
    properties: tuple[OvfPropertyDef, ...] = ()
    # the network of each Ethernet item, in the VirtualHardwareSection's order: the VM's NICs once imported
    nic_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportTarget:
    """Where to import: every field is required by ImportVApp on vCenter."""

    host: MoRef
    pool: MoRef
    folder: MoRef
    datastore: MoRef
    network: MoRef  # every network of the OVF is mapped to this one (as EAM does for agent VMs)
    disk_provisioning: str | None = None  # OvfManager's diskProvisioning: "thin", "thick", ...


@dataclass(frozen=True)
class ImportResult:
    """The imported VM and, per file of the package, the bytes uploaded."""

    vm: MoRef
    uploaded: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


# ------------------------------------------------------------------------------------------ descriptor


def fetch_descriptor(url: str, *, timeout: float = 30.0) -> OvfDescriptor:
    """Download and parse the descriptor at ``url``.

    Raises OvfDownloadError (unreachable, HTTP error, too big) or OvfDescriptorError (not an OVF).
    """
    with open_url(url, timeout=timeout) as (response, _size):
        body = response.read(MAX_DESCRIPTOR_BYTES + 1)
    if len(body) > MAX_DESCRIPTOR_BYTES:
        raise OvfDownloadError(url, f"it is larger than {MAX_DESCRIPTOR_BYTES} bytes, not an OVF descriptor")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OvfDescriptorError(url, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    return parse_descriptor(text, url)


@contextlib.contextmanager
def open_url(url: str, *, timeout: float = 30.0) -> Iterator[tuple[BinaryIO, int | None]]:
    """An open HTTP(S) response for ``url`` and its Content-Length (if sent); closed at the end.

    Raises OvfDownloadError naming what went wrong (refused, unknown host, HTTP status, timeout).
    """
    try:
        response = _OPENER.open(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise OvfDownloadError(url, f"HTTP {exc.code} {exc.reason}", response_code=exc.code) from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise OvfDownloadError(
            url,
            _reason_text(reason),
            connection_refused=isinstance(reason, ConnectionRefusedError),
            unknown_host=isinstance(reason, socket.gaierror),
        ) from exc
    except (OSError, ValueError) as exc:
        raise OvfDownloadError(url, _reason_text(exc)) from exc
    try:
        length = response.headers.get("Content-Length")
        yield response, int(length) if length and length.isdigit() else None
    finally:
        response.close()


def _reason_text(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def parse_descriptor(text: str, url: str) -> OvfDescriptor:
    """Read the networks and properties of an OVF descriptor. Raises OvfDescriptorError when it is not one.

    The descriptor comes from the agency's package server; Python's expat refuses entity expansion bombs,
    and nothing here resolves external entities.
    """
    try:
        root = ET.fromstring(text)  # noqa: S314 (see the docstring)
    except ET.ParseError as exc:
        raise OvfDescriptorError(url, [f"line {exc.position[0]}: {exc}"]) from exc
    if root.tag != f"{{{OVF_NS}}}Envelope":
        raise OvfDescriptorError(url, [f"the root element is {root.tag}, not an OVF Envelope ({OVF_NS})"])
    if root.find(f".//{{{OVF_NS}}}VirtualSystem") is None:
        raise OvfDescriptorError(url, ["there is no VirtualSystem: agentvm deploys a single VM"])
    ovf = f"{{{OVF_NS}}}"
    networks = tuple(n.get(f"{ovf}name", "") for n in root.iterfind(f".//{ovf}NetworkSection/{ovf}Network"))
    properties: list[OvfPropertyDef] = []
    for section in root.iterfind(f".//{ovf}ProductSection"):
        prefix = section.get(f"{ovf}class")
        suffix = section.get(f"{ovf}instance")
        for prop in section.iterfind(f"{ovf}Property"):
            key = prop.get(f"{ovf}key")
            if not key:
                raise OvfDescriptorError(url, ["a ProductSection Property has no ovf:key"])
            prop_id = ".".join(p for p in (prefix, key, suffix) if p)
            properties.append(
                OvfPropertyDef(
                    id=prop_id,
                    type=prop.get(f"{ovf}type", "string"),
                    default=prop.get(f"{ovf}value", ""),
                    user_configurable=prop.get(f"{ovf}userConfigurable", "false").lower() == "true",
                    label=(prop.findtext(f"{ovf}Label") or "").strip(),
                )
            )
    rasd = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
    nics = tuple(
        (item.findtext(f"{rasd}Connection") or "").strip()
        for item in root.iterfind(f".//{ovf}VirtualHardwareSection/{ovf}Item")
        if (item.findtext(f"{rasd}ResourceType") or "").strip() == ETHERNET_RESOURCE_TYPE
    )
    return OvfDescriptor(url, text, tuple(n for n in networks if n), tuple(properties), nics)


# ------------------------------------------------------------------------------------------ import


def import_ovf(
    session: Session,
    descriptor: OvfDescriptor,
    *,
    name: str,
    placement: ImportTarget,
    properties: Mapping[str, str],
    timeout: float = 300.0,
    managed_by: ManagedBy | None = None,
    marks: Mapping[str, str] | None = None,
) -> ImportResult:
    """Import the package as VM ``name`` on ``placement.host``; the VM is left powered off.

    Calls: CreateImportSpec, ImportVApp, one or more lease reads, one upload per file, lease progress and
    HttpNfcLeaseComplete. Raises OvfDescriptorError (vCenter rejects the descriptor), OvfDownloadError (a
    file of the package cannot be downloaded) or the session's agentvm errors; in every failure case the
    lease is aborted and any VM it created is deleted first.

    ``managed_by`` and ``marks`` (extraConfig) go into the import spec itself, so the VM carries them from
    the moment ImportVApp creates it. ImportVApp creates the VM before it hands out the lease, and can fail
    after that (vcsim 0.24.2 does, for a name with a ``/``): with no lease there is no entity to delete,
    so the VM is then found by ``marks`` (give them a value unique to this import) and deleted: among the
    VMs managed by ``managed_by``, or among all VMs without it (a standalone host, which keeps no
    managedBy of ours). Without ``marks`` such a VM cannot be found, and is left behind.
    """
    spec = _import_spec(session, descriptor, name, placement, properties)
    config = spec.importSpec.configSpec
    if marks:
        config.extraConfig = [
            *(config.extraConfig or ()),
            *(vim.option.OptionValue(key=k, value=v) for k, v in marks.items()),
        ]
    if managed_by is not None:
        config.managedBy = vim.ext.ManagedByInfo(extensionKey=managed_by.extension_key, type=managed_by.type)
    pool = session.mo(placement.pool)
    what = f"import of {name} from {descriptor.url}"
    try:
        lease = pool.ImportVApp(spec.importSpec, session.mo(placement.folder), session.mo(placement.host))
    except BaseException:
        _remove_marked(session, managed_by, marks, name)
        raise
    entity: MoRef | None = None
    try:
        info = nfc.wait_until_ready(session, lease, what=what, timeout=timeout)
        entity = info.entity  # read before HttpNfcLeaseComplete: the lease is gone afterwards
        if entity is None:
            raise ConfigurationError(f"{what}: the lease names no VM; is this a vApp package?")
        uploaded = _upload_files(session, lease, info, spec.fileItem or (), descriptor, timeout)
        nfc.complete(lease)
    except BaseException:
        nfc.abort(lease)
        if entity is not None:
            _remove_half_deployed(session, entity, name)
        else:
            _remove_marked(session, managed_by, marks, name)
        raise
    return ImportResult(entity, MappingProxyType(uploaded))


def _import_spec(
    session: Session,
    descriptor: OvfDescriptor,
    name: str,
    placement: ImportTarget,
    properties: Mapping[str, str],
) -> Any:
    network = session.mo(placement.network)
    params = vim.OvfManager.CreateImportSpecParams(
        entityName=name,
        hostSystem=session.mo(placement.host),
        networkMapping=[vim.OvfManager.NetworkMapping(name=n, network=network) for n in descriptor.networks],
        propertyMapping=[vim.KeyValue(key=k, value=v) for k, v in properties.items()],
        diskProvisioning=placement.disk_provisioning,
    )
    manager = session.content.ovfManager
    try:
        result = manager.CreateImportSpec(
            descriptor.text, session.mo(placement.pool), session.mo(placement.datastore), params
        )
    except ConfigurationError as exc:
        # a descriptor vCenter cannot parse comes back as InvalidArgument(ovfDescriptor) or an Ovf* fault
        cause, name = exc.__cause__, fault_name(exc) or ""
        if name.startswith("Ovf") or getattr(cause, "invalidProperty", None) == "ovfDescriptor":
            raise OvfDescriptorError(descriptor.url, [_fault_text(cause)]) from exc
        raise
    errors = [_fault_text(e) for e in result.error or ()]
    if errors or result.importSpec is None:
        raise OvfDescriptorError(descriptor.url, errors or ["vCenter returned no import spec"])
    for warning in result.warning or ():
        log.info("importing %s from %s: %s", name, descriptor.url, _fault_text(warning))
    return result


def _fault_text(fault: Any) -> str:
    text = getattr(fault, "msg", None) or ""
    if not text:
        text = "; ".join(str(m.message) for m in getattr(fault, "faultMessage", None) or () if m.message)
    return str(text) or type(fault).__name__


def _upload_files(
    session: Session,
    lease: Any,
    info: nfc.LeaseInfo,
    items: Sequence[Any],
    descriptor: OvfDescriptor,
    timeout: float,
) -> dict[str, int]:
    uploaded: dict[str, int] = {}
    total = sum(int(i.size or 0) for i in items) or 1
    done = 0
    for item in items:
        device = info.url_for(str(item.deviceId))
        if device is None:
            raise ConfigurationError(
                f"import of {descriptor.url}: vCenter gave no upload URL for {item.path} ({item.deviceId})"
            )
        source_url = urljoin(descriptor.url, str(item.path))
        with open_url(source_url, timeout=timeout) as (source, length):
            size = length if length is not None else int(item.size or 0)
            sent = nfc.upload(session, device, source, size, create=bool(item.create), timeout=timeout)
        uploaded[str(item.path)] = sent
        done += sent
        nfc.progress(lease, int(100 * done / total))
    return uploaded


def _remove_marked(
    session: Session, managed_by: ManagedBy | None, marks: Mapping[str, str] | None, name: str
) -> None:
    """Delete the VMs a failed import created but did not name (found by their marks). Never raises."""
    if not marks:
        return
    try:
        found = find_marked(session, managed_by.extension_key if managed_by else None, marks)
    except AgentvmError as exc:
        log.error("could not look for the VM of a failed import of %s: %s; look for it by hand", name, exc)
        return
    for vm in found:
        log.info("deleting %s, created by a failed import of %s", vm, name)
        _remove_half_deployed(session, vm, name)


def _remove_half_deployed(session: Session, vm: MoRef, name: str) -> None:
    """Delete the VM of a failed import (vCenter deletes it on abort; vcsim does not). Logs, never raises."""
    try:
        destroy(session, vm, label=name)
    except NotFoundError:
        pass
    except AgentvmError as exc:
        log.error("could not delete %s (%s) after a failed import: %s; delete it by hand", name, vm, exc)


# ------------------------------------------------------------------------------------------ configure


def configure_vm(
    session: Session,
    vm: MoRef,
    *,
    ovf_properties: Sequence[OvfPropertyDef] = (),
    values: Mapping[str, str],
    extra_config: Mapping[str, str],
    managed_by: ManagedBy | None = None,
    nics: Sequence[AgentNicTarget] = (),
    label: str | None = None,
    timeout: float = 300.0,
) -> None:
    """Set the VM's OVF environment and markers in one ReconfigVM_Task (two calls plus the task wait);
    ``nics`` connects the VM's NICs (by position, in device order) to their port groups in the same one.

    vApp properties: every property of ``ovf_properties`` (descriptor defaults) and of ``values`` is set,
    by id: an existing property is edited, a new one added (transport ``com.vmware.guestInfo``).
    ``extra_config`` and ``managed_by`` are written as given. Raises the session's agentvm errors.
    """
    read = read_one(
        session, session.mo(vm), ["config.vAppConfig", *(["config.hardware.device"] if nics else [])]
    )
    current = read.get("config.vAppConfig")
    existing = {str(p.id): p for p in getattr(current, "property", None) or ()}
    next_key = max((int(p.key) for p in existing.values()), default=-1) + 1
    defs = {d.id: d for d in ovf_properties}
    specs = []
    for prop_id in dict.fromkeys([*defs, *values]):
        d = defs.get(prop_id) or OvfPropertyDef(prop_id, user_configurable=True)
        value = values.get(prop_id, d.default)
        if prop_id in existing:
            info = vim.vApp.PropertyInfo(key=existing[prop_id].key, id=prop_id, value=value)
            specs.append(vim.vApp.PropertySpec(operation="edit", info=info))
        else:
            info = vim.vApp.PropertyInfo(
                key=next_key,
                id=prop_id,
                value=value,
                defaultValue=d.default,
                type=d.type,
                userConfigurable=d.user_configurable,
                label=d.label or None,
            )
            next_key += 1
            specs.append(vim.vApp.PropertySpec(operation="add", info=info))
    config = vim.vm.ConfigSpec(
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in extra_config.items()],
    )
    if specs:
        config.vAppConfig = vim.vApp.VmConfigSpec(
            ovfEnvironmentTransport=["com.vmware.guestInfo"], property=specs
        )
    if managed_by is not None:
        config.managedBy = vim.ext.ManagedByInfo(extensionKey=managed_by.extension_key, type=managed_by.type)
    if nics:
        config.deviceChange = nic_changes(read.get("config.hardware.device") or (), nics, label or vm.value)
    task = session.mo(vm).ReconfigVM_Task(spec=config)
    wait_for_task(session, task, what=f"set the OVF environment of {label or vm.value}", timeout=timeout)


def nic_changes(devices: Sequence[Any], nics: Sequence[AgentNicTarget], label: str) -> list[Any]:
    """The device edits that connect NIC ``n.position`` (the VM's Ethernet cards in device order, which is
    the OVF's order) to ``n``'s port group: a standard one by name, or the DV port group on its switch.
    ConfigurationError naming the VM when it has fewer NICs than the positions need."""
    cards = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    missing = sorted({n.position for n in nics} - set(range(len(cards))))
    if missing:
        raise ConfigurationError(
            f"VM {label} has {len(cards)} NIC(s), so it has no NIC {missing[0] + 1} for "
            f"{next(n.network for n in nics if n.position == missing[0])}; check the OVF's networks against "
            "hostNetwork.agentNics"
        )
    changes = []
    for nic in nics:
        card = cards[nic.position]
        if nic.dvs_uuid is not None and nic.dv_port_group is not None:
            card.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(switchUuid=nic.dvs_uuid, portgroupKey=nic.dv_port_group)
            )
        else:
            card.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=nic.port_group)
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=card))
    return changes
