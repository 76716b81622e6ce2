"""vCenter extensions (ExtensionManager): register agentvm as a solution, idempotently.

Used by the EAM backend and ``agentvm apply``/``destroy``: EAM agencies belong to a registered extension,
and the controller logs in as that extension with its certificate (``SetExtensionCertificate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim

from agentvm.model.errors import ConfigurationError, NotFoundError
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
class RegisteredExtension:
    """An extension as vCenter reports it."""

    key: str
    version: str
    label: str
    summary: str
    company: str
    managed_entity_types: tuple[str, ...]


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
    """Replace the registration of ``spec.key``. Raises NotFoundError when it is not registered."""
    try:
        session.content.extensionManager.UpdateExtension(extension=_to_vim(spec))
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
    if current == wanted:
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
    )
