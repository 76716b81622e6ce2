"""The controller's push watch on vCenter: hosts, clusters' host lists and VMs' power states.

Started by ``controller.run.Controller`` on a thread of its own. A ``vsphere.watch.Watcher`` (a dedicated
property collector, ``WaitForUpdatesEx`` with the version tracked and a bounded wait) reports:

- hosts: ``runtime.inMaintenanceMode``, ``runtime.connectionState``, ``runtime.powerState``, ``parent``;
- clusters: ``host`` (a host added or removed);
- VMs: ``runtime.powerState``, ``runtime.host`` and ``config.managedBy`` (an agent VM powered off, moved,
  deleted or added; a VM created or reconfigured by EAM or the engine carries the owner marker).

Each batch is classified and handed to ``on_batch``: ``topology`` (a host or cluster entered, left or moved:
the controller re-plans, patching its inventory with the objects named: ``inventory_delta()``), ``hosts``
(a host's condition changed) or ``vms`` (a VM's power changed or it appeared/disappeared: the controller
polls the agents now, reading those VMs' agents: ``changes()``, ``core.agent_reads.Changes``). The first
batch is the initial state and is not reported as a change (the controller reads every agent after it:
``Batch.first``). Batches of VM changes only are held for ``coalesce`` seconds after the first of them and
handed over as one (``Batch.merged``): the VM updates of one change (a delete is a power-off then a removal;
a redeploy a creation then a power-on) cost the controller one poll, not one each; any other batch is handed
over at once, with whatever was held. The host conditions seen last are kept (``conditions()``) so the heal
policy can tell maintenance mode from a failure between full passes, and so is every VM's host
(``vm_hosts()``) so an agent VM moved to another host by hand is seen without reading the inventory again.

The watch specs and the reading of a host's runtime properties into a model ``Host`` are the vSphere
adapter's (``vsphere.watch.INVENTORY_WATCH``, ``host_runtime``); ``conditions()`` classifies those hosts with
the heal policy's own ``HostConditions.of`` (docs/architecture.md, section "Observation").

After any error (vCenter unreachable, session terminated: the collector died with it) the watch closes its
collector, reports the error through ``on_error``, waits with jittered, capped backoff
(``core.retry.WATCH_BACKOFF``; the controller gives it its seed) and starts a new one; the batch of a new
watch is reported as ``topology`` because changes may have been missed.

``VmWatch`` is the same VM watch without a thread, for apply's wait: one ``WaitForUpdatesEx`` that does
not wait, per look.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from agentvm.core.agent_reads import Changes
from agentvm.core.heal import HostConditions
from agentvm.core.inventory_patch import InventoryDelta
from agentvm.core.retry import WATCH_BACKOFF, Retries
from agentvm.model.agency import MoRef
from agentvm.model.inventory import Host
from agentvm.vsphere.session import Session
from agentvm.vsphere.watch import (
    HOST_NETWORK,
    INVENTORY_NETWORK_WATCH,
    INVENTORY_WATCH,
    VM_WATCH,
    WatchChange,
    WatchChangeKind,
    Watcher,
    host_runtime,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One classified batch of changes, with the monotonic time it was received."""

    received: float
    topology: bool  # hosts or clusters entered/left/moved, or the first batch of a new watch
    hosts: bool  # a host's maintenance / connection / power state changed
    vms: tuple[MoRef, ...]  # VMs whose power changed, or that appeared or disappeared
    changes: int
    marked_hosts: tuple[MoRef, ...] = ()  # hosts where a VM carrying an owner marker appeared or changed
    first: bool = False  # the initial state of a new watch: changes may have been missed before it
    network_hosts: tuple[MoRef, ...] = ()  # hosts whose networking changed (a watch with ``network``)
    switches: bool = False  # a DV port group appeared, changed or went (a watch with ``network``)

    def merged(self, later: Batch) -> Batch:
        """This batch and a later one as one: the earlier receipt time, every change of both."""
        return Batch(
            min(self.received, later.received),
            self.topology or later.topology,
            self.hosts or later.hosts,
            tuple(dict.fromkeys((*self.vms, *later.vms))),
            self.changes + later.changes,
            tuple(dict.fromkeys((*self.marked_hosts, *later.marked_hosts))),
            self.first or later.first,
            tuple(dict.fromkeys((*self.network_hosts, *later.network_hosts))),
            self.switches or later.switches,
        )


_CANCEL_AGAIN = 0.25  # seconds between CancelWaitForUpdates while a stopped watch's thread still waits


class InventoryWatch:
    """``InventoryWatch(session, on_batch, on_error).start()``; ``stop()`` cancels the current wait and ends
    the thread (within ``timeout``)."""

    def __init__(
        self,
        session: Session,
        on_batch: Callable[[Batch], None],
        on_error: Callable[[Exception], None],
        *,
        max_wait_seconds: int = 1,
        clock: Callable[[], float] = time.monotonic,
        backoff: Retries[str] | None = None,
        coalesce: float = 0.0,
        network: bool = False,
    ) -> None:
        """``backoff``: the delays before a new watch after a failure (default ``core.retry.WATCH_BACKOFF``,
        seed 0); ``clock`` stamps the batches and the failures; ``coalesce``: seconds a batch of VM changes
        waits for more before it is handed over (0: at once); ``network``: also each host's networking
        (``vsphere.watch.HOST_NETWORK``; ``Batch.network_hosts``)."""
        self._specs = INVENTORY_NETWORK_WATCH if network else INVENTORY_WATCH
        if coalesce < 0:
            raise ValueError(f"coalesce must be 0 or more seconds (got {coalesce})")
        self._coalesce = coalesce
        self._held: Batch | None = None  # VM changes waiting for the end of their window
        self._timer: threading.Timer | None = None
        self._session = session
        self._on_batch = on_batch
        self._on_error = on_error
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._backoff: Retries[str] = backoff if backoff is not None else Retries(WATCH_BACKOFF)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._hosts: dict[MoRef, Host] = {}  # each host's state as last reported (name and path unknown)
        self._vm_hosts: dict[MoRef, MoRef] = {}
        self._marked: set[MoRef] = set()  # VMs carrying an owner marker
        self._cluster_hosts: dict[MoRef, tuple[MoRef, ...]] = {}  # each cluster's host list, as reported
        self._changes = Changes()  # the VM changes since the last ``changes()``
        self._delta = InventoryDelta(exact=False)  # the objects named since the last ``inventory_delta()``
        self._watcher: Watcher | None = None
        self._thread: threading.Thread | None = None
        self.connected = False

    def start(self) -> InventoryWatch:
        self._thread = threading.Thread(target=self._run, name="agentvm-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the current wait on the server and join the thread (a held batch is dropped)."""
        self._stopping.set()
        with self._lock:
            watcher = self._watcher
            timer, self._timer, self._held = self._timer, None, None
        if timer is not None:
            timer.cancel()
        if watcher is not None:
            watcher.stop()
        if self._thread is None:
            return
        # a cancel that reached the server before the wait began cancels nothing: ask again until the
        # thread has ended (a wait lasts up to max_wait seconds otherwise)
        deadline = time.monotonic() + timeout
        self._thread.join(min(timeout, _CANCEL_AGAIN))
        while self._thread.is_alive() and time.monotonic() < deadline:
            if watcher is not None:
                watcher.stop()
            self._thread.join(min(_CANCEL_AGAIN, max(0.0, deadline - time.monotonic())))

    def conditions(self) -> HostConditions:
        """The hosts in maintenance mode, standby or unreachable, as last reported."""
        with self._lock:
            hosts = list(self._hosts.values())
        return HostConditions.of(hosts)

    def vm_hosts(self, vms: Iterable[MoRef] | None = None) -> dict[MoRef, MoRef]:
        """The ``runtime.host`` of ``vms`` (every VM when None) as last reported; a VM the watch has not
        seen (or without a host) is absent."""
        with self._lock:
            if vms is None:
                return dict(self._vm_hosts)
            return {vm: host for vm in vms if (host := self._vm_hosts.get(vm)) is not None}

    def changes(self) -> Changes:
        """The VM changes reported since the last call (and forgets them). Any thread."""
        with self._lock:
            taken, self._changes = self._changes, Changes()
        return taken

    def inventory_delta(self) -> InventoryDelta:
        """The hosts, clusters and VMs that entered, changed or left since the last call (and forgets
        them), for ``controller.observe.InventoryKeeper``; not exact before a first batch, or when a
        failure or a new watch may have hidden some. Any thread."""
        with self._lock:
            taken, self._delta = self._delta, InventoryDelta()
        return taken

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with Watcher(self._session, self._specs, max_wait_seconds=self._max_wait) as watcher:
                    with self._lock:
                        self._watcher = watcher
                    if self._stopping.is_set():
                        break
                    first = True
                    for changes in watcher:
                        received = self._clock()
                        self.connected = True
                        self._backoff.succeeded("watch")
                        if changes or first:
                            self._hand_over(self._classify(changes, received, first))
                        first = False
            except Exception as exc:  # the watch must outlive every failure, or changes go unseen
                self.connected = False
                with self._lock:
                    self._delta = InventoryDelta(exact=False)
                if self._stopping.is_set():
                    break
                pause = self._backoff.failed("watch", self._clock())
                log.warning("vCenter watch failed, starting a new one in %.1f s: %s", pause, exc)
                self._on_error(exc)
                self._stopping.wait(pause)
            finally:
                with self._lock:
                    self._watcher = None

    def _hand_over(self, batch: Batch) -> None:
        """Give ``batch`` to ``on_batch`` now, or, for VM changes only, at the end of its window."""
        vms_only = not (batch.topology or batch.hosts or batch.first)
        with self._lock:
            if self._held is not None:
                batch = self._held.merged(batch)
            if vms_only and self._coalesce > 0:
                self._held = batch
                if self._timer is None:
                    self._timer = threading.Timer(self._coalesce, self._flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._held = None
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._on_batch(batch)

    def _flush(self) -> None:
        with self._lock:
            batch, self._held, self._timer = self._held, None, None
        if batch is not None and not self._stopping.is_set():
            self._on_batch(batch)

    def _classify(self, changes: list[WatchChange], received: float, first: bool) -> Batch:
        topology = first
        hosts_changed = False
        vms: list[MoRef] = []
        network: list[MoRef] = []
        switches = False
        moved: set[MoRef] = set()  # hosts that entered or left a cluster's host list
        with self._lock:
            if first:
                self._vm_hosts.clear()  # a new watch reports every VM again
                self._marked.clear()
                self._cluster_hosts.clear()
            for change in changes:
                ref, props = change.moref, change.properties
                if ref.type == "HostSystem":
                    if change.kind is WatchChangeKind.LEAVE:
                        self._hosts.pop(ref, None)
                        topology = True
                        continue
                    # until told otherwise: connected, powered on, not in maintenance mode
                    state = self._hosts.setdefault(ref, Host(ref, "", ""))
                    if change.kind is WatchChangeKind.ENTER or "parent" in props:
                        topology = True
                    elif not first and any(p in props for p in HOST_NETWORK):
                        network.append(ref)
                    updated = host_runtime(state, props)
                    if updated is not None:
                        self._hosts[ref] = updated
                        hosts_changed = True
                elif ref.type == "DistributedVirtualPortgroup":
                    switches = switches or not first
                elif ref.type == "ClusterComputeResource":
                    topology = True
                    if "host" in props or change.kind is WatchChangeKind.LEAVE:
                        # a host added to a cluster may not be in the watch's view (vcsim): read it, and
                        # a host that left the list too (moved, or gone: that read says so)
                        listed = props.get("host")
                        now = set(listed) if isinstance(listed, tuple) else set()
                        moved.update(now ^ set(self._cluster_hosts.get(ref, ())))
                        self._cluster_hosts[ref] = tuple(now)
            inventory = [
                c for c in changes if c.moref.type != "DistributedVirtualPortgroup"
            ]  # not inventory's
            named = InventoryDelta(
                frozenset(c.moref for c in inventory if c.kind is not WatchChangeKind.LEAVE)
                | frozenset(() if first else moved),
                frozenset(c.moref for c in inventory if c.kind is WatchChangeKind.LEAVE),
                not first,
            )
            self._delta = named if first else self._delta | named
            vm_changes = [c for c in changes if c.moref.type == "VirtualMachine"]
            vms = [c.moref for c in vm_changes]
            marked = vm_changed(vm_changes, self._vm_hosts, self._marked)
            if not first:
                self._changes = self._changes | marked
        return Batch(
            received,
            topology,
            hosts_changed,
            tuple(vms),
            len(changes),
            tuple(marked.marked_hosts),
            first,
            tuple(network),
            switches,
        )


def vm_changed(changes: Iterable[WatchChange], vm_hosts: dict[MoRef, MoRef], marked: set[MoRef]) -> Changes:
    """The agent-relevant ``Changes`` of these VM updates, keeping ``vm_hosts`` (each VM's ``runtime.host``)
    and ``marked`` (the VMs that carry an owner marker) up to date: every VM named, and the host of each VM
    that got an owner marker (``config.managedBy``: EAM or the engine created or reconfigured it) or, carrying
    one, got a host (vCenter may report a new VM's host after the VM itself)."""
    vms: set[MoRef] = set()
    hosts: set[MoRef] = set()
    for change in changes:
        ref, props = change.moref, change.properties
        vms.add(ref)
        if change.kind is WatchChangeKind.LEAVE:
            vm_hosts.pop(ref, None)
            marked.discard(ref)
            continue
        if "runtime.host" in props:
            host = props["runtime.host"]
            if isinstance(host, MoRef):
                vm_hosts[ref] = host
            else:
                vm_hosts.pop(ref, None)
        newly = False
        if "config.managedBy" in props:
            if props["config.managedBy"] is not None:
                marked.add(ref)
                newly = True
            else:
                marked.discard(ref)
        if (newly or ("runtime.host" in props and ref in marked)) and ref in vm_hosts:
            hosts.add(vm_hosts[ref])
    return Changes(frozenset(vms), frozenset(hosts))


class VmWatch:
    """The VM watch for a caller's own loop (apply's wait): ``take()`` asks vCenter once, without waiting.

    ``with VmWatch(session) as watch: ... watch.take()``. Costs three calls to start, then one
    ``WaitForUpdatesEx`` per ``take()``, two to close.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._watcher: Watcher | None = None
        self._vm_hosts: dict[MoRef, MoRef] = {}
        self._marked: set[MoRef] = set()

    def __enter__(self) -> VmWatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def take(self) -> Changes | None:
        """The VM changes since the last ``take()``; None when changes may have been missed (the first
        look of a new watch, or the watch failed and starts again at the next call): read everything."""
        first = self._watcher is None
        try:
            if self._watcher is None:
                self._watcher = Watcher(self._session, VM_WATCH, max_wait_seconds=0)
                self._vm_hosts.clear()
                self._marked.clear()
            changed = vm_changed(self._watcher.poll(), self._vm_hosts, self._marked)
        except Exception as exc:  # a lost watch costs a full read, never the wait itself
            log.warning("the VM watch of the wait failed, reading every agent: %s", exc)
            self.close()
            return None
        return None if first else changed

    def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
