"""vCenter extensions (ExtensionManager): register agentvm as a solution, idempotently.

Used by the EAM backend and ``agentvm apply``/``destroy``: EAM agencies belong to a registered extension,
and the controller logs in as that extension with its certificate (``SetExtensionCertificate``). The
solution's lease (``controller.lease``) is kept here too, as hidden extensions (see "lease records";
``ExtensionLeaseStore`` is its ``LeaseStore`` on a vCenter).

vCenter keeps one login certificate per extension and never shows which: agentvm records the one it set
(thumbprints, the machine, the file) in the extension's own ``resourceList``, as a resource module of its
own (``CERTIFICATE_MODULE``), so that an apply from another machine sees that the certificate belongs to
someone (``controller.solution``). vCenter stores resource entries with the extension and returns them
with it; UpdateExtension replaces the whole extension, so ``update_extension`` carries them over.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim

from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.session import Session


@dataclass(frozen=True)
class ManagedEntityType:
    """A VM type the solution manages (``Extension.managedEntityInfo``), shown in the vSphere client."""

    type: str
    description: str = ""


@dataclass(frozen=True)
class ExtensionSpec:
    """What agentvm registers. ``key`` is reverse-DNS (``com.example.agentvm``)."""

    key: str
    version: str
    label: str
    summary: str = ""
    company: str = ""
    admin_email: str = ""
    server_url: str = ""
    managed_entity_types: tuple[ManagedEntityType, ...] = ()
    shown_in_solution_manager: bool = True


@dataclass(frozen=True)
class CertificateRecord:
    """Which login certificate agentvm set on an extension, as recorded in the extension itself.

    ``sha256`` identifies it; ``sha1`` is the thumbprint as vSphere and ``openssl x509 -fingerprint``
    show it. ``host`` is the machine that set it, ``file`` the certificate file there, ``source``
    ``generated`` (under that machine's state dir) or ``spec`` (solution.certFile), ``set_at`` ISO UTC.
    """

    sha256: str
    sha1: str
    host: str
    file: str
    source: str
    set_at: str

    @property
    def generated(self) -> bool:
        return self.source == "generated"


@dataclass(frozen=True)
class RegisteredExtension:
    """An extension as vCenter reports it. ``certificate``: agentvm's record of its login certificate
    (None: nothing recorded, e.g. registered by an older agentvm); not part of what apply compares."""

    key: str
    version: str
    label: str
    summary: str
    company: str
    managed_entity_types: tuple[str, ...]
    certificate: CertificateRecord | None = None


def find_extension(session: Session, key: str) -> RegisteredExtension | None:
    """The registered extension with ``key``, or None."""
    found = session.content.extensionManager.FindExtension(extensionKey=key)
    return _registered(found) if found is not None else None


def register_extension(session: Session, spec: ExtensionSpec) -> None:
    """Register ``spec``. Raises ConfigurationError when the key is already registered (use ensure_*)."""
    try:
        session.content.extensionManager.RegisterExtension(extension=_to_vim(spec))
    except ConfigurationError as exc:
        if fault_name(exc) in {"InvalidArgument", "AlreadyExists"} and find_extension(session, spec.key):
            raise ConfigurationError(
                f"extension {spec.key!r} is already registered in {session.url}: update it "
                "(agentvm apply does) or unregister it first"
            ) from exc
        raise


def update_extension(session: Session, spec: ExtensionSpec) -> None:
    """Replace the registration of ``spec.key``, keeping its resource entries (agentvm's certificate record
    among them). Raises NotFoundError when it is not registered."""
    manager = session.content.extensionManager
    current = manager.FindExtension(extensionKey=spec.key)
    if current is None:
        raise NotFoundError(f"extension {spec.key!r} is not registered in {session.url}: register it")
    ext = _to_vim(spec)
    ext.resourceList = list(current.resourceList or ())
    try:
        manager.UpdateExtension(extension=ext)
    except NotFoundError as exc:
        raise NotFoundError(
            f"extension {spec.key!r} is not registered in {session.url}: register it"
        ) from exc


def ensure_extension(session: Session, spec: ExtensionSpec) -> bool:
    """Registered and up to date. Returns True if anything was changed (registered or updated)."""
    current = find_extension(session, spec.key)
    if current is None:
        register_extension(session, spec)
        return True
    wanted = _registered(_to_vim(spec))
    if dataclasses.replace(current, certificate=None) == wanted:
        return False
    update_extension(session, spec)
    return True


def unregister_extension(session: Session, key: str, *, missing_ok: bool = False) -> bool:
    """Unregister ``key``; returns True if it was registered. NotFoundError if not and not ``missing_ok``."""
    try:
        session.content.extensionManager.UnregisterExtension(extensionKey=key)
    except NotFoundError as exc:
        if missing_ok:
            return False
        raise NotFoundError(f"extension {key!r} is not registered in {session.url}") from exc
    return True


def set_extension_certificate(session: Session, key: str, certificate_pem: str) -> None:
    """Make ``certificate_pem`` the certificate the extension ``key`` logs in with.

    Raises NotFoundError for an unknown key, ConfigurationError for a PEM vCenter does not accept.
    """
    try:
        session.content.extensionManager.SetExtensionCertificate(
            extensionKey=key, certificatePem=certificate_pem
        )
    except NotFoundError as exc:
        raise NotFoundError(
            f"extension {key!r} is not registered in {session.url}: register it first"
        ) from exc


# ------------------------------------------------------------------------------------ certificate record

CERTIFICATE_MODULE = "agentvm.login-certificate"
_CERTIFICATE_LOCALE = "en"
_CERTIFICATE_FORMAT = "1"


def record_extension_certificate(session: Session, key: str, record: CertificateRecord) -> None:
    """Write ``record`` into the extension ``key`` (its ``resourceList``), everything else as it is.

    Called by apply just before SetExtensionCertificate. Raises NotFoundError for an unknown key.
    """
    manager = session.content.extensionManager
    ext = manager.FindExtension(extensionKey=key)
    if ext is None:
        raise NotFoundError(f"extension {key!r} is not registered in {session.url}: register it first")
    values = {
        "format": _CERTIFICATE_FORMAT,
        "sha256": record.sha256,
        "sha1": record.sha1,
        "host": record.host,
        "file": record.file,
        "source": record.source,
        "set": record.set_at,
    }
    entry = vim.Extension.ResourceInfo(
        locale=_CERTIFICATE_LOCALE,
        module=CERTIFICATE_MODULE,
        data=[vim.KeyValue(key=k, value=v) for k, v in values.items()],
    )
    others = [r for r in ext.resourceList or () if r.module != CERTIFICATE_MODULE]
    ext.resourceList = [*others, entry]
    manager.UpdateExtension(extension=ext)


def _certificate_record(ext: Any) -> CertificateRecord | None:
    for resource in getattr(ext, "resourceList", None) or ():
        if resource.module != CERTIFICATE_MODULE:
            continue
        data = {str(kv.key): str(kv.value or "") for kv in resource.data or ()}
        if data.get("format") != _CERTIFICATE_FORMAT or not data.get("sha256"):
            return None
        return CertificateRecord(
            sha256=data["sha256"],
            sha1=data.get("sha1", ""),
            host=data.get("host", "") or "an unknown host",
            file=data.get("file", ""),
            source=data.get("source", ""),
            set_at=data.get("set", ""),
        )
    return None


def _to_vim(spec: ExtensionSpec) -> Any:
    description = vim.Description(label=spec.label, summary=spec.summary or spec.label)
    servers = []
    if spec.server_url:
        servers.append(
            vim.Extension.ServerInfo(
                url=spec.server_url,
                description=description,
                company=spec.company,
                type="HTTPS",
                adminEmail=[spec.admin_email] if spec.admin_email else [],
            )
        )
    return vim.Extension(
        key=spec.key,
        version=spec.version,
        company=spec.company,
        description=description,
        server=servers,
        client=[],
        lastHeartbeatTime=datetime.now(UTC),
        shownInSolutionManager=spec.shown_in_solution_manager,
        solutionManagerInfo=vim.ext.SolutionManagerInfo(),
        managedEntityInfo=[
            vim.ext.ManagedEntityInfo(type=m.type, description=m.description)
            for m in spec.managed_entity_types
        ],
    )


def _registered(ext: Any) -> RegisteredExtension:
    description = ext.description
    return RegisteredExtension(
        key=str(ext.key),
        version=str(ext.version or ""),
        label=str(getattr(description, "label", "") or ""),
        summary=str(getattr(description, "summary", "") or ""),
        company=str(ext.company or ""),
        managed_entity_types=tuple(str(m.type) for m in ext.managedEntityInfo or ()),
        certificate=_certificate_record(ext),
    )


# ------------------------------------------------------------------------------------------- lease records
#
# The solution's lease (controller.lease) is kept in vCenter as hidden extensions named
# ``<solution key>.lease.<generation>``: RegisterExtension refuses a key that exists (vcsim: InvalidArgument;
# govmomi's simulator models vCenter's answer the same way), which makes it the one atomic create-if-absent
# vCenter offers. The holder and its renewals are JSON in ``description.summary``; ``company`` marks the
# record as agentvm's. Only keys of that form are ever read, and only records agentvm wrote are changed.

LEASE_COMPANY = "agentvm lease"
_LEASE_LABEL = "agentvm lease (one actor per solution; do not edit)"
_LEASE_FORMAT = 1


def lease_prefix(solution_key: str) -> str:
    return f"{solution_key}.lease."


def lease_key(solution_key: str, generation: int) -> str:
    return f"{lease_prefix(solution_key)}{generation}"


def read_lease_records(session: Session, solution_key: str) -> list[LeaseRecord]:
    """Every record under ``solution_key``'s lease keys, from one read of ``extensionList``.

    A key of that form whose record agentvm did not write (or cannot parse) comes back with holder None.
    """
    prefix = lease_prefix(solution_key)
    found = []
    for ext in session.content.extensionManager.extensionList or ():
        key = str(ext.key)
        number = key[len(prefix) :] if key.startswith(prefix) else ""
        if not number.isdigit() or number != str(int(number)):
            continue
        found.append(_lease_record(key, int(number), ext))
    return sorted(found, key=lambda r: r.generation)


def register_lease_record(session: Session, solution_key: str, record: LeaseRecord) -> bool:
    """RegisterExtension of ``record``: True when it was created, False when the key exists already (another
    contender won that generation). Other faults, and a refusal while the key does not exist, raise."""
    ext = _lease_vim(solution_key, record)
    try:
        session.content.extensionManager.RegisterExtension(extension=ext)
    except ConfigurationError as exc:
        if fault_name(exc) in {"InvalidArgument", "AlreadyExists"} and find_extension(session, ext.key):
            return False
        raise
    return True


def update_lease_record(session: Session, solution_key: str, record: LeaseRecord) -> None:
    """UpdateExtension of a record agentvm holds (a renewal or the release). NotFoundError when it is gone."""
    session.content.extensionManager.UpdateExtension(extension=_lease_vim(solution_key, record))


def remove_lease_record(session: Session, record: LeaseRecord) -> bool:
    """Unregister a record agentvm wrote; False when it was gone already. Refuses records it did not write."""
    if not record.ours:
        raise ConfigurationError(f"extension {record.key!r} was not written by agentvm; left alone")
    return unregister_extension(session, record.key, missing_ok=True)


def _lease_vim(solution_key: str, record: LeaseRecord) -> Any:
    summary = json.dumps(
        {"format": _LEASE_FORMAT, **record.written()},
        separators=(",", ":"),
        sort_keys=True,
    )
    return vim.Extension(
        key=lease_key(solution_key, record.generation),
        version=str(record.renewals),
        company=LEASE_COMPANY,
        description=vim.Description(label=_LEASE_LABEL, summary=summary),
        server=[],
        client=[],
        lastHeartbeatTime=datetime.now(UTC),
        shownInSolutionManager=False,
    )


def _lease_record(key: str, generation: int, ext: Any) -> LeaseRecord:
    foreign = LeaseRecord(key, generation, None)
    if str(ext.company or "") != LEASE_COMPANY:
        return foreign
    try:
        data = json.loads(str(getattr(ext.description, "summary", "") or ""))
        if not isinstance(data, dict) or data.get("format") != _LEASE_FORMAT:
            return foreign
        holder = LeaseHolder(
            host=str(data["host"]),
            pid=int(data["pid"]),
            command=str(data["command"]),
            started=str(data["started"]),
            token=str(data["token"]),
        )
        return LeaseRecord(
            key,
            generation,
            holder,
            renewals=int(data["renewals"]),
            ttl=float(data["ttl"]),
            released=bool(data["released"]),
        )
    except (ValueError, KeyError, TypeError):
        return foreign


class ExtensionLeaseStore:
    """The lease records of a vCenter, as hidden extensions (the functions above): implements
    ``controller.lease.LeaseStore``. A standalone ESXi host has none: ``vsphere.datastore_files``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def read(self, solution_key: str) -> list[LeaseRecord]:
        return read_lease_records(self.session, solution_key)

    def register(self, solution_key: str, record: LeaseRecord) -> bool:
        return register_lease_record(self.session, solution_key, record)

    def update(self, solution_key: str, record: LeaseRecord) -> None:
        update_lease_record(self.session, solution_key, record)

    def remove(self, record: LeaseRecord) -> bool:
        return remove_lease_record(self.session, record)
