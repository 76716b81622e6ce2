"""Watch vCenter objects by push: a dedicated property collector and ``WaitForUpdatesEx``.

Used by the controller's watchers (hosts entering maintenance mode, agent VMs powered off or deleted,
port groups and NICs changing). A ``Watcher`` owns a property collector of its own, a container view and
one filter; the first ``poll()`` reports every object as ``enter`` (the initial state), later ones only
what changed. Each wait is bounded (``max_wait_seconds``) so a ``stop()`` from another thread is noticed
at once (it also cancels the wait on the server); ``close()`` destroys the collector, view and filter
whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.model.agency import MoRef
from agentvm.model.errors import AgentvmError, NotFoundError, TransientError
from agentvm.model.inventory import ConnectionState, Host, HostPowerState
from agentvm.vsphere.collector import property_spec, view_filter_spec
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector


class WatchLost(TransientError):
    """The watch's collector is gone with the session it belonged to (the session expired or was closed and
    has logged in again): start a new ``Watcher`` at once, with a full resync; nothing else is wrong."""


class WatchChangeKind(StrEnum):
    ENTER = "enter"  # the object is new to the watch (or this is the initial state)
    MODIFY = "modify"
    LEAVE = "leave"  # deleted, or left the watched container


@dataclass(frozen=True)
class WatchChange:
    """One object's change: its reference, the kind, and the changed properties' new values.

    Values are converted where it helps: managed objects become ``MoRef`` and arrays of them tuples of
    ``MoRef``; a removed property has the value None. Data objects are left as pyVmomi values.
    """

    moref: MoRef
    kind: WatchChangeKind
    properties: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __hash__(self) -> int:
        return hash((self.moref, self.kind, tuple(self.properties)))


@dataclass(frozen=True)
class WatchSpec:
    """What to watch for one type: ``WatchSpec(vim.VirtualMachine, ("runtime.powerState",))``."""

    type: type
    properties: tuple[str, ...]


class Watcher:
    """A push watch of some types/properties under a container (default: the root folder).

    Not thread-safe except for ``stop()``, which any thread may call. Use as a context manager or call
    ``close()``.
    """

    def __init__(
        self, session: Session, specs: Sequence[WatchSpec], *, root: Any = None, max_wait_seconds: int = 5
    ) -> None:
        if not specs:
            raise ValueError("a Watcher needs at least one WatchSpec")
        self._session = session
        self._specs = tuple(specs)
        self._root = root
        self._max_wait = max(0, int(max_wait_seconds))  # 0: answer at once (a caller polling in its loop)
        self._stop = threading.Event()
        self._pc: Any = None
        self._view: Any = None
        self.version = ""

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Create the collector, the view and the filter (three calls). Idempotent."""
        if self._pc is not None:
            return
        content = self._session.content
        self._pc = content.propertyCollector.CreatePropertyCollector()
        try:
            types = list(dict.fromkeys(s.type for s in self._specs))
            self._view = content.viewManager.CreateContainerView(
                self._root or content.rootFolder, types, True
            )
            spec = view_filter_spec(self._view, [property_spec(s.type, s.properties) for s in self._specs])
            self._pc.CreateFilter(spec, partialUpdates=False)
        except BaseException:
            self.close()
            raise

    def poll(self) -> list[WatchChange]:
        """One bounded ``WaitForUpdatesEx``: the changes since the last poll (empty if none or stopped)."""
        self.start()
        changes: list[WatchChange] = []
        while not self._stop.is_set():
            try:
                update = self._pc.WaitForUpdatesEx(
                    self.version, PC.WaitOptions(maxWaitSeconds=self._max_wait)
                )
            except NotFoundError as exc:
                if self._stop.is_set():
                    break
                # a collector lives as long as its session: after an expiry and the session's re-login
                # it is gone, and the watch must start again (a new collector, a full resync)
                raise WatchLost(
                    "the vCenter session of the watch ended (expired or closed); watching again"
                ) from exc
            except AgentvmError:
                if self._stop.is_set():
                    break  # stop() cancelled the wait: RequestCanceled is expected
                raise
            if update is None:
                break
            self.version = update.version
            changes.extend(_changes(update))
            if not update.truncated:
                break
        return changes

    def __iter__(self) -> Iterator[list[WatchChange]]:
        """Batches of changes until ``stop()``; empty batches let the caller notice time passing."""
        while not self._stop.is_set():
            yield self.poll()

    def stop(self) -> None:
        """Ask the watch to end: the current wait is cancelled on the server; ``poll()`` returns soon."""
        self._stop.set()
        pc = self._pc
        if pc is not None:
            with contextlib.suppress(AgentvmError):
                pc.CancelWaitForUpdates()

    def close(self) -> None:
        """Destroy the view and the collector (and with it the filter). Idempotent; never raises."""
        self._stop.set()
        view, pc = self._view, self._pc
        self._view = self._pc = None
        if view is not None:
            with contextlib.suppress(AgentvmError):
                view.DestroyView()
        if pc is not None:
            with contextlib.suppress(AgentvmError):
                pc.DestroyPropertyCollector()


def _changes(update: Any) -> Iterator[WatchChange]:
    for filter_update in update.filterSet or ():
        for obj_update in filter_update.objectSet or ():
            obj = obj_update.obj
            moref = MoRef(str(obj._wsdlName), str(obj._moId))
            props = {}
            for change in obj_update.changeSet or ():
                props[str(change.name)] = None if str(change.op) == "remove" else _convert(change.val)
            yield WatchChange(moref, WatchChangeKind(str(obj_update.kind)), MappingProxyType(props))


def _convert(value: Any) -> Any:
    if hasattr(value, "_moId"):
        return MoRef(str(value._wsdlName), str(value._moId))
    if isinstance(value, list) and value and all(hasattr(v, "_moId") for v in value):
        return tuple(MoRef(str(v._wsdlName), str(v._moId)) for v in value)
    return value


# -- the controller's inventory watch (controller.watch.InventoryWatch) --------------------------------------

HOST_RUNTIME = ("runtime.inMaintenanceMode", "runtime.connectionState", "runtime.powerState")
"""A host's state as the heal policy classifies it (``core.heal.HostConditions.of``)."""

AGENT_VM_PROPERTIES = ("runtime.powerState", "runtime.host", "config.managedBy")
"""What says an agent VM changed: power, host, and (for a VM EAM or the engine created or reconfigured) its
owner marker, which vcsim reports in the VM's first update."""

INVENTORY_WATCH = (
    WatchSpec(vim.HostSystem, (*HOST_RUNTIME, "parent")),
    WatchSpec(vim.ClusterComputeResource, ("host",)),
    WatchSpec(vim.VirtualMachine, AGENT_VM_PROPERTIES),
)
"""Hosts (state, and where they are), clusters' host lists and VMs' power, host and owner marker."""

HOST_NETWORK = ("config.network.vswitch", "config.network.portgroup", "config.network.proxySwitch")
"""A host's networking as ``hostNetwork`` checks it: a change here is a drift to look at, or agentvm's own."""

DV_PORT_GROUP_NETWORK = ("config.defaultPortConfig", "config.description")
"""A DV port group's VLANs, security policy and owner mark (``hostNetwork``'s trunk)."""

INVENTORY_NETWORK_WATCH = (
    WatchSpec(vim.HostSystem, (*HOST_RUNTIME, "parent", *HOST_NETWORK)),
    *INVENTORY_WATCH[1:],
    WatchSpec(vim.dvs.DistributedVirtualPortgroup, DV_PORT_GROUP_NETWORK),
)
"""``INVENTORY_WATCH``, each host's networking and the DV port groups: the controller of a spec with
``hostNetwork``."""

VM_WATCH = (WatchSpec(vim.VirtualMachine, AGENT_VM_PROPERTIES),)
"""VMs only: apply's wait, polled without waiting (``controller.watch.VmWatch``)."""


def host_runtime(host: Host, properties: Mapping[str, Any]) -> Host | None:
    """``host`` with the ``HOST_RUNTIME`` values among ``properties`` (a watch update; the others keep their
    value), or None when the update carries none of them. A value vSphere does not define (or a removed
    property) counts as a host that cannot be reached: disconnected, power unknown. Pure."""
    if not any(p in properties for p in HOST_RUNTIME):
        return None
    changed: dict[str, Any] = {}
    if "runtime.inMaintenanceMode" in properties:
        changed["in_maintenance_mode"] = bool(properties["runtime.inMaintenanceMode"])
    if "runtime.connectionState" in properties:
        changed["connection_state"] = _state(
            ConnectionState, properties["runtime.connectionState"], ConnectionState.DISCONNECTED
        )
    if "runtime.powerState" in properties:
        changed["power_state"] = _state(
            HostPowerState, properties["runtime.powerState"], HostPowerState.UNKNOWN
        )
    return replace(host, **changed)


def _state(enum: type[StrEnum], value: Any, default: Any) -> Any:
    try:
        return enum(str(value)) if value is not None else default
    except ValueError:
        return default
