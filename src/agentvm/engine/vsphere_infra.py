"""``VSphereInfrastructure``: the engine's ``Infrastructure`` on vim25, through ``agentvm.vsphere``.

Built by whoever runs an ``Engine`` against a vCenter (the lab's EAM emulator, ``backends.direct``):
``VSphereInfrastructure(session)``, then ``start()`` (or ``with``) for the watcher and ``stop()`` at the end.

- Reads are bulk: ``observe`` is one container view and one ``RetrievePropertiesEx`` (folders,
  datacenters, compute resources, networks, datastores together, and the hosts of the scope's compute
  resources only: on a 2,500-host inventory, reading every host made each step take ~1.5 s for a 64-host
  scope), ``find_owned_vms`` one more read of ``config.managedBy`` for every VM
  and one of ``config.extraConfig`` for the VMs managed by the namespace only. The number of calls does
  not grow with the inventory.
- Writes wait for their task (``WaitForUpdatesEx`` on the task), so a read after a write sees it.
- An agent VM carries ``config.managedBy = (namespace, "agent")`` and ``extraConfig`` keys
  ``agentvm.owner``/``agentvm.agency``/``agentvm.agent``/``agentvm.agencyName``/``agentvm.ovfUrl``: after
  a restart, even one that lost the state file, the engine finds its VMs again from vCenter alone. They are
  written into the import spec, so the VM carries them from the moment ImportVApp creates it, together
  with ``agentvm.importing`` (a token unique to the import, cleared by the final reconfigure): a failed
  import that named no VM is found by it and deleted, and a VM that still carries it is half-deployed.
  The OVF environment goes into vApp properties and, for guests that read it with VMware Tools,
  ``guestinfo.<property id>``.
- ``generation()`` grows with every change a background ``Watcher`` (its own property collector) reports
  on hosts, compute resources and VMs.
- Once started, reads cost what changed, not the inventory's size (2,500 hosts and their agent VMs):
  the watcher keeps every VM's ``_VM_PROPERTIES`` up to date, so ``find_owned_vms`` reads only the
  extraConfig of VMs it has not seen before; ``observe`` returns the last read of the same scope while
  the watcher reports no change on a host or compute resource, and the periodic resync re-reads that
  scope in a thread of its own (off the engine's step) and bumps the generation only if it differs.
  Every ``vm_resync_seconds`` the next ``find_owned_vms`` reads everything again, as the safety net for
  what the watch does not carry (extraConfig written by someone else). An own write's result stands in
  for the watcher's view of the VM until the watcher has polled from a moment after the write, so a read
  after a write sees it without waiting, and a change someone else makes after it is never hidden by it.
  Not started (no watcher), every read is a full one.

On a standalone ESXi host's own SDK (a host agent: ``Session(host_agent=True)``) three things differ:
- No ``config.managedBy``: the vSphere API reference describes it as "managed by a VC Extension" (its
  extension is looked up in vCenter's ExtensionManager, which a host agent does not have), and nothing
  says a host keeps it. So on a host agent the engine writes none and finds its VMs by the ``agentvm.*``
  extraConfig marks alone: every VM is a candidate and its marks decide (a host has tens of VMs, not
  40,000; the watcher still means each VM's extraConfig is read once, not at every step).
- No HA: ``start_with_host`` puts the agent VM first in the host's autostart sequence (``vsphere.autostart``:
  started first, so stopped last), and ``destroy_vm`` removes its entry first (ESXi keeps a deleted VM's).
- Maintenance mode: ESXi's EnterMaintenanceMode_Task waits for the host's powered-on VMs, and until it
  completes nothing in the host's state says it is coming; the task is in the host's ``recentTask``. So
  the watcher watches ``recentTask`` too, and ``observe`` reports a host whose EnterMaintenanceMode_Task
  is queued or running as in maintenance mode: the engine powers the agent VM off, and the host enters.

Every method raises only ``engine.infra`` errors: ``InfraError`` for "retry next step", a ``DeployError``
subclass when a deploy fails in a way that becomes an issue on the agent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.core.agent_state import AgentVm, EngineObservation, VmMarker
from agentvm.engine.api import InvalidUrl
from agentvm.engine.infra import (
    DeployError,
    InfraError,
    InsufficientSpace,
    OvfInvalid,
    OvfUnreachable,
)
from agentvm.model.agency import MoRef, OvfProperty, PowerState
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError
from agentvm.model.inventory import InventorySnapshot, ManagedBy
from agentvm.vsphere import autostart, clusters, ovf, vms
from agentvm.vsphere.collector import (
    ObjectProps,
    container_view,
    paged,
    property_spec,
    read_one,
    view_filter_spec,
)
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.inventory import KINDS, build_snapshot
from agentvm.vsphere.session import Session
from agentvm.vsphere.watch import WatchChange, WatchChangeKind, Watcher, WatchSpec

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector

OWNER_KEY = "agentvm.owner"
AGENCY_KEY = "agentvm.agency"
AGENT_KEY = "agentvm.agent"
AGENCY_NAME_KEY = "agentvm.agencyName"  # an engine that lost its state adopts its VMs by it (and host)
OVF_URL_KEY = "agentvm.ovfUrl"
# set (to a token unique to one import) from the moment ImportVApp creates the VM until its configure
# finishes: a VM that still carries it is a half-deployed one, never an agent
IMPORT_KEY = "agentvm.importing"
GUESTINFO_PREFIX = "guestinfo."
MANAGED_BY_TYPE = "agent"  # [I] the type EAM itself uses is not documented (docs/eam.md, "Open questions")
HA_PRIORITY = "highest"  # agent VMs restart first (docs/eam.md, "Maintenance mode, DRS and HA")
# how a standalone host stops its agent VM, last of all its VMs (HostAutoStartManager): a clean shutdown
# through VMware Tools in the guest (an agent without them needs "powerOff", which cuts it off at once)
STOP_ACTION = "guestShutdown"

# EAM's ovfDiskProvisioning → OvfManager's diskProvisioning ("none": leave it to the package)
_DISK_PROVISIONING = {"none": None, "thin": "thin", "thick": "thick"}

_HOST_PROPERTIES = next(k for k in KINDS if k.name == "hosts").specs[0][1]
_OBSERVE_SPECS: tuple[tuple[str, type, tuple[str, ...]], ...] = (
    # (bucket for build_snapshot, type, properties); order matters: the first matching type wins
    ("hosts", vim.HostSystem, _HOST_PROPERTIES),
    ("datacenters", vim.Datacenter, ("name", "parent", "vmFolder")),
    ("folders", vim.Folder, ("name", "parent")),
    ("compute", vim.ComputeResource, ("name", "parent", "host", "resourcePool")),
    ("networks", vim.Network, ("name", "parent")),
    ("datastores", vim.Datastore, ("name", "parent")),
)
# the hosts' properties for which vcsim 0.24.2 publishes no update (with the compute resources' host lists:
# hosts added to a cluster), in the order ``_unreported_same`` compares them
_UNREPORTED = (
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "runtime.powerState",
    "summary.config.agentVmDatastore",
    "summary.config.agentVmNetwork",
)
_VM_PROPERTIES = (
    "name",
    "config.managedBy",
    "config.template",
    "runtime.host",
    "runtime.powerState",
    "guest.ipAddress",
)
_WATCH = (
    WatchSpec(
        vim.HostSystem,
        (
            "parent",
            "runtime.connectionState",
            "runtime.inMaintenanceMode",
            "runtime.powerState",
            "datastore",
            "network",
            "summary.config.agentVmDatastore",
            "summary.config.agentVmNetwork",
        ),
    ),
    WatchSpec(vim.ComputeResource, ("host",)),
    WatchSpec(vim.VirtualMachine, _VM_PROPERTIES),
)
# on a host agent the hosts' recentTask too: a standalone ESXi is "entering maintenance mode" (its
# EnterMaintenanceMode_Task waits for its powered-on VMs) with nothing else in its state to say so
ENTER_MAINTENANCE = "HostSystem.enterMaintenanceMode"
_RUNNING = ("queued", "running")
_HOST_AGENT_WATCH = (
    dataclasses.replace(_WATCH[0], properties=(*_WATCH[0].properties, "recentTask")),
    *_WATCH[1:],
)


class VSphereInfrastructure:
    """The engine's view of, and hands on, one vCenter. Thread-safe: the engine steps in one thread while
    API calls (``observe``/``check_url``) come from another, and the watcher runs in a third.

    ``download_timeout`` bounds each HTTP exchange with the package server, ``task_timeout`` each vCenter
    task, ``watch_max_wait`` each ``WaitForUpdatesEx`` of the watcher (``stop()`` cancels it at once).
    ``resync_seconds`` bumps the generation that often even when the watcher reports nothing (checked
    after each wait, so at ``watch_max_wait`` granularity; None: never): a level-triggered safety net for
    changes a server does not report. vcsim 0.24.2 is such a server: it publishes no update for maintenance
    mode, host connection state, hosts added to a cluster, or (as the lab's ``agent_host_manager.go`` writes
    it) the agent VM settings in ``summary.config``. ``vm_resync_seconds``: how often (at most) the next
    ``find_owned_vms`` reads every VM again instead of using the watcher's (None: never).
    """

    def __init__(
        self,
        session: Session,
        *,
        download_timeout: float = 30.0,
        task_timeout: float = 300.0,
        watch_max_wait: int = 5,
        resync_seconds: float | None = 60.0,
        vm_resync_seconds: float | None = 300.0,
    ) -> None:
        self._session = session
        # a standalone ESXi host's own SDK: no managedBy, autostart instead of HA (module docstring)
        self._host_agent = bool(getattr(session, "host_agent", False))
        self._autostart: dict[MoRef, MoRef] = {}  # host → its HostAutoStartManager
        self._download_timeout = download_timeout
        self._task_timeout = task_timeout
        self._watch_max_wait = watch_max_wait
        self._resync = resync_seconds
        self._vm_resync = vm_resync_seconds
        self._cond = threading.Condition()
        self._generation = 0
        self._lock = threading.Lock()
        self._host_parent: dict[MoRef, MoRef] = {}  # from the last observe; saves a read per pin
        self._vm_cluster: dict[MoRef, MoRef | None] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._refresh_wanted = threading.Event()
        self._watcher: Watcher | None = None
        # what the watcher knows (guarded by _cache): every VM's _VM_PROPERTIES, once its first batch is in
        self._cache = threading.Condition()
        self._vms: dict[MoRef, dict[str, Any]] = {}
        self._vms_ready = False
        self._marks: dict[MoRef, dict[str, str]] = {}  # agentvm.* extraConfig of VMs managed by a namespace
        # when an own deploy wrote a VM's marks: a read that began before it (while the deploy ran, on the
        # engine's workers) must not put back the half-deployed VM's marks over them (``_keep_marks``)
        self._marked_at: dict[MoRef, float] = {}
        # every VM's stamp: a counter value taken at its last change the watcher reported, so that
        # find_owned_vms builds again only the agent VMs that changed (_built: ref → the stamp, marks and
        # namespace it was built from, and the result; only find_owned_vms uses it)
        self._stamp = 0
        self._vm_stamps: dict[MoRef, int] = {}
        self._built: dict[MoRef, tuple[int | None, dict[str, str], str, AgentVm | None]] = {}
        self._full_read_at = time.monotonic() + (vm_resync_seconds or 0.0)
        self._own: dict[MoRef, tuple[dict[str, Any] | None, float]] = {}  # see _wrote
        self._observed: tuple[tuple[MoRef, ...], EngineObservation] | None = None  # the last observe
        self._host_epoch = 0  # grows with every host / compute resource change the watcher reports

    # ================================================================================ watcher lifecycle
    def start(self) -> None:
        """Start the watcher thread (idempotent). ``generation()`` starts it too, on first use."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._watch, name="agentvm-infra-watch", daemon=True)
            self._thread.start()
            self._refresher = threading.Thread(target=self._refresh, name="agentvm-infra-resync", daemon=True)
            self._refresher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the watcher: its wait is cancelled on the server and the thread joined. Final."""
        self._stopping.set()
        self._refresh_wanted.set()
        with self._lock:
            watcher, thread, refresher = self._watcher, self._thread, self._refresher
        if watcher is not None:
            watcher.stop()
        for t in (thread, refresher):
            if t is not None:
                t.join(timeout)
                if t.is_alive():
                    log.warning("%s did not stop within %g s", t.name, timeout)

    def __enter__(self) -> VSphereInfrastructure:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        """The watcher thread: bump the generation on every batch of changes; reconnect after errors."""
        pause = 0.5
        while not self._stopping.is_set():
            try:
                watch = _HOST_AGENT_WATCH if self._host_agent else _WATCH
                with Watcher(self._session, watch, max_wait_seconds=self._watch_max_wait) as watcher:
                    with self._lock:
                        self._watcher = watcher
                    if self._stopping.is_set():
                        watcher.stop()
                    last = time.monotonic()
                    first = True
                    while not watcher.stopped:
                        issued = time.monotonic()  # every wait of this poll starts after this
                        batch = watcher.poll()
                        now = time.monotonic()
                        news = self._take_in(batch, first=first, issued=issued)
                        first = False
                        if batch or news:
                            self._bump()
                        if self._resync is not None and now - last >= self._resync:
                            self._refresh_wanted.set()  # the resync thread looks, and bumps if it differs
                            last = now
                        pause = 0.5
            except Exception as exc:  # this thread must outlive any failure, or changes go unseen
                if self._stopping.is_set():
                    break
                log.warning("inventory watch failed, restarting in %g s: %s", pause, exc)
                self._forget()
                self._bump()  # something may have changed unseen: let the engine look again
                self._stopping.wait(pause)
                pause = min(pause * 2, 30.0)
            finally:
                with self._lock:
                    self._watcher = None
        self._forget()

    def _take_in(self, batch: list[WatchChange], *, first: bool, issued: float) -> bool:
        """Apply a watcher batch to what the watcher knows; ``first``: the watch's initial state;
        ``issued``: when its poll began, so it holds every change made before then, own writes included.
        True when an own write's stand-in was dropped for a different value (the engine must look)."""
        with self._cache:
            if first:  # the whole state: VMs not in it are gone (their marks too)
                self._vms = {}
                self._vm_stamps = {}
                present = {c.moref for c in batch}
                self._marks = {ref: m for ref, m in self._marks.items() if ref in present}
                self._marked_at = {ref: t for ref, t in self._marked_at.items() if ref in present}
            hosts_changed = False
            for change in batch:
                if change.moref.type != "VirtualMachine":
                    hosts_changed = True
                elif change.kind is WatchChangeKind.LEAVE:
                    self._vms.pop(change.moref, None)
                    self._marks.pop(change.moref, None)
                    self._marked_at.pop(change.moref, None)
                    self._vm_stamps.pop(change.moref, None)
                else:
                    self._stamp += 1
                    self._vm_stamps[change.moref] = self._stamp
                    props = self._vms.setdefault(change.moref, {})
                    changed_owner = _key(change.properties) != _key(props) is not None
                    if "config.managedBy" in change.properties and changed_owner:
                        self._marks.pop(change.moref, None)  # another owner: its marks are read again
                    props.update(change.properties)
            if hosts_changed:
                self._host_epoch += 1
                self._observed = None
            # own writes done before this poll began are in what the watcher knows now: their stand-ins
            # go, and if the watcher says otherwise (someone else changed the VM since), the engine looks
            news = False
            for vm, (expected, written) in list(self._own.items()):
                if written <= issued:
                    del self._own[vm]
                    known = self._vms.get(vm)
                    if expected is None:
                        news = news or known is not None
                    else:
                        news = news or known is None or any(known.get(k) != v for k, v in expected.items())
            self._vms_ready = True
            self._cache.notify_all()
            return news

    def _forget(self) -> None:
        """The watch ended: what it knew may be stale, so every read is a full one until it is back."""
        with self._cache:
            self._vms_ready = False
            self._own.clear()
            self._observed = None
            self._host_epoch += 1
            self._cache.notify_all()

    def _refresh(self) -> None:
        """The resync thread: re-read the last observed scope when a resync falls due; bump if it differs
        (or when nothing was observed yet: the engine then looks with a full read). After a read that took
        d seconds it reads again no sooner than 9·d later: on a large inventory (2,500 hosts: seconds per
        read) the resync stays a tenth of the time, however short ``resync_seconds`` is."""
        rest_until = 0.0
        while True:
            self._refresh_wanted.wait()
            if self._stopping.wait(max(0.0, rest_until - time.monotonic())):
                return
            self._refresh_wanted.clear()
            with self._cache:
                observed, epoch = self._observed, self._host_epoch
            if observed is None:
                self._bump()
                continue
            started = time.monotonic()
            try:
                # first the few properties no watch update carries; the whole scope only when they differ
                fresh = None if self._unreported_same(observed) else self._read_scope(observed[0])
                rest_until = time.monotonic() + 9 * (time.monotonic() - started)
                if fresh is None:
                    continue
            except Exception as exc:  # the next step reads again, and reports the failure
                log.warning("resync read failed: %s", exc)
                with self._cache:
                    self._observed = None
                self._bump()
                continue
            with self._cache:
                if self._host_epoch != epoch or self._observed is None:
                    continue  # the watcher reported a change meanwhile: it invalidated and bumped
                differs = fresh != observed[1]
                if differs:
                    self._observed = (observed[0], fresh)
            if differs:
                self._bump()

    def _unreported_same(self, observed: tuple[tuple[MoRef, ...], EngineObservation]) -> bool:
        """One compact read (no view, no folder, network or datastore): the scope's compute resources'
        host lists and their hosts' ``_UNREPORTED`` properties; True when they are what ``observed`` holds.
        At 2,500 hosts it parses a fraction of the whole scope's read, which the resync made every ~30 s
        in the lab's EAM (seconds of Python each, that a power-off landing meanwhile waited on). A value
        it cannot compare counts as different: then the whole scope is read, as before."""
        scope, observation = observed
        if not scope:  # no agency: no compute resource and no host to compare (and nothing to read)
            return not observation.scope and not observation.hosts
        session = self._session
        to_hosts = PC.TraversalSpec(name="hosts", type=vim.ComputeResource, path="host", skip=False)
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=session.mo(cr), skip=False, selectSet=[to_hosts]) for cr in scope],
            propSet=[
                property_spec(vim.ComputeResource, ("host",)),
                property_spec(vim.HostSystem, _UNREPORTED),
            ],
            reportMissingObjectsInResults=True,
        )
        members: dict[MoRef, frozenset[MoRef]] = {}
        hosts: dict[MoRef, tuple[str, ...]] = {}
        with _infra_errors("reading the hosts' state"), paged(session, spec) as items:
            for item in items:
                ref = _ref(item.obj)
                if isinstance(item.obj, vim.HostSystem):
                    hosts[ref] = tuple(_text(item.get(path)) for path in _UNREPORTED)
                else:
                    members[ref] = frozenset(_ref(h) for h in item.get("host") or ())
        wanted = {cr: frozenset(found) for cr, found in observation.scope.items()}
        known = {
            ref: (
                h.connection_state.value,
                str(h.in_maintenance_mode).lower(),
                h.power_state.value,
                h.agent_vm_datastore.value if h.agent_vm_datastore is not None else "",
                h.agent_vm_network.value if h.agent_vm_network is not None else "",
            )
            for ref, h in observation.hosts.items()
        }
        in_scope = {h for found in members.values() for h in found}
        return members == wanted and {h: v for h, v in hosts.items() if h in in_scope} == known

    def _wrote(self, vm: MoRef, props: dict[str, Any] | None) -> None:
        """After an own write on ``vm`` finished: its result (``props``; None: deleted) stands in for the
        watcher's view of the VM until the watcher has polled from a moment after it (``_take_in``), so a
        read after a write sees it without waiting for the watcher, and a change someone else makes after
        it is never hidden by it."""
        with self._cache:
            if not self._vms_ready:
                return
            earlier = self._own.get(vm)
            if props is not None and earlier is not None and earlier[0] is not None:
                props = {**earlier[0], **props}  # a write on a VM whose deploy is not polled yet
            self._own[vm] = (props, time.monotonic())

    def _watched_vms(self) -> dict[MoRef, dict[str, Any]]:
        """The watcher's VMs with the own writes it has not polled yet standing in (lock held)."""
        vms = dict(self._vms)
        for vm, (props, _) in self._own.items():
            if props is None:
                vms.pop(vm, None)
            else:
                vms[vm] = {**vms.get(vm, {}), **props}
        return vms

    def _bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        self.start()
        with self._cond:
            return self._generation

    def wait_for_change(self, since: int, timeout: float) -> int:
        self.start()
        with self._cond:
            self._cond.wait_for(lambda: self._generation != since, timeout=max(0.0, timeout))
            return self._generation

    # ================================================================================ reads
    def observe(self, scope: Collection[MoRef]) -> EngineObservation:
        """One view and one paged read: everything the engine needs about the scope's compute resources;
        no call at all while the watcher runs and has reported no host change since the last read of the
        same scope."""
        key = tuple(scope)
        with self._cache:
            if self._observed is not None and self._observed[0] == key:
                return self._observed[1]
            epoch, ready = self._host_epoch, self._vms_ready
        observation = self._read_scope(key)
        with self._cache:
            if ready and self._vms_ready and self._host_epoch == epoch:
                self._observed = (key, observation)
        return observation

    def _read_scope(self, scope: Collection[MoRef]) -> EngineObservation:
        with _infra_errors("reading the inventory"):
            snapshot, vm_folders, entering = self._read_observation(scope)
        by_value: dict[str, Any] = {
            c.moref.value: c for c in (*snapshot.clusters, *snapshot.compute_resources)
        }
        wanted: dict[MoRef, tuple[MoRef, ...]] = {}
        default_pools: dict[MoRef, MoRef] = {}
        for cr in scope:
            found = by_value.get(cr.value)
            if found is None:
                continue
            wanted[cr] = tuple(found.hosts)
            if found.resource_pool is not None:
                default_pools[found.moref] = default_pools[cr] = found.resource_pool
        in_scope = {h for hosts in wanted.values() for h in hosts}
        hosts = {h.moref: h for h in snapshot.hosts if h.moref in in_scope}
        for ref in entering & hosts.keys():
            # its agent VM must be powered off for the host to get there: the engine's part, as EAM's
            hosts[ref] = dataclasses.replace(hosts[ref], in_maintenance_mode=True)
        with self._lock:
            self._host_parent.update({h.moref: h.parent for h in snapshot.hosts if h.parent is not None})
        names = {o.moref: o.name for o in (*snapshot.datastores, *snapshot.networks)}
        return EngineObservation(
            scope=wanted,
            hosts=hosts,
            default_pools=default_pools,
            default_folders=vm_folders,
            names=names,
        )

    def _read_observation(
        self, scope: Collection[MoRef]
    ) -> tuple[InventorySnapshot, dict[MoRef, MoRef], set[MoRef]]:
        """One read: everything but hosts through a view, and the hosts of the compute resources in
        ``scope`` by traversal from them (a compute resource removed meanwhile is reported missing, not a
        fault). On a host agent also the hosts' recentTask, and the hosts whose EnterMaintenanceMode_Task
        runs (one more read, only while a host has recent tasks)."""
        session = self._session
        others = tuple(s for s in _OBSERVE_SPECS if s[0] != "hosts")
        raw: dict[str, list[ObjectProps]] = {bucket: [] for bucket, _, _ in _OBSERVE_SPECS}
        specs = [
            property_spec(t, (*paths, "recentTask") if self._host_agent and b == "hosts" else paths)
            for b, t, paths in _OBSERVE_SPECS
        ]
        with container_view(session, [t for _, t, _ in others]) as view:
            spec = view_filter_spec(view, specs)
            to_hosts = PC.TraversalSpec(name="hosts", type=vim.ComputeResource, path="host", skip=False)
            spec.objectSet.extend(
                PC.ObjectSpec(obj=session.mo(cr), skip=True, selectSet=[to_hosts]) for cr in scope
            )
            spec.reportMissingObjectsInResults = True
            with paged(session, spec) as items:
                for item in items:
                    bucket = next(b for b, t, _ in _OBSERVE_SPECS if isinstance(item.obj, t))
                    raw[bucket].append(item)
        vm_folders = {
            _ref(o.obj): _ref(o.get("vmFolder")) for o in raw["datacenters"] if o.get("vmFolder") is not None
        }
        root = Session.moref(session.content.rootFolder).value
        entering = self._entering_maintenance(raw["hosts"]) if self._host_agent else set()
        return build_snapshot(raw, root_folder=root), vm_folders, entering

    def _entering_maintenance(self, hosts: Sequence[ObjectProps]) -> set[MoRef]:
        """The hosts whose EnterMaintenanceMode_Task is queued or running (read from their recentTask)."""
        tasks = {task._moId: (task, _ref(o.obj)) for o in hosts for task in o.get("recentTask") or ()}
        if not tasks:
            return set()
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=task, skip=False) for task, _ in tasks.values()],
            propSet=[property_spec(vim.Task, ("info.descriptionId", "info.state"))],
            reportMissingObjectsInResults=True,  # a task gone meanwhile is no fault
        )
        entering: set[MoRef] = set()
        with paged(self._session, spec) as items:
            for item in items:
                running = str(item.get("info.state")) in _RUNNING
                if running and item.get("info.descriptionId") == ENTER_MAINTENANCE:
                    entering.add(tasks[item.obj._moId][1])
        return entering

    def find_owned_vms(self, namespace: str) -> list[AgentVm]:
        """VMs managed by ``namespace`` with its extraConfig marker: two bulk reads (plus the view), or,
        while the watcher runs, its VMs and one read of the extraConfig of those not seen before."""
        with self._cache:
            now = time.monotonic()
            watched = self._vms_ready
            if watched and self._vm_resync is not None and now >= self._full_read_at:
                watched = False
            if watched:
                watched_vms = self._watched_vms().items()
                candidates = {ref: p for ref, p in watched_vms if self._candidate(p, namespace)}
                began = time.monotonic()
                missing = [ref for ref in candidates if ref not in self._marks]
                marks = {ref: self._marks[ref] for ref in candidates if ref in self._marks}
                # an own write's stand-in is not stamped: such a VM is built again
                stamps = {ref: None if ref in self._own else self._vm_stamps.get(ref) for ref in candidates}
        if watched:
            with _infra_errors(f"reading the VMs of {namespace}"):
                try:
                    read = self._extra_config([self._session.mo(ref) for ref in missing]) if missing else {}
                except NotFoundError:
                    read = None  # one was deleted meanwhile: read everything
            if read is not None:
                with self._cache:
                    self._keep_marks(read, began)
                marks.update(read)
                return self._build_agent_vms(candidates, marks, stamps, namespace)
        with self._cache:
            self._full_read_at = time.monotonic() + (self._vm_resync or 0.0)
        with _infra_errors(f"reading the VMs of {namespace}"):
            for attempt in range(3):
                try:
                    return self._owned_vms(namespace)
                except NotFoundError:
                    # a candidate VM was deleted between the two reads: read again
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _build_agent_vms(
        self,
        candidates: Mapping[MoRef, Mapping[str, Any]],
        marks: Mapping[MoRef, dict[str, str]],
        stamps: Mapping[MoRef, int | None],
        namespace: str,
    ) -> list[AgentVm]:
        """``_agent_vm`` of each candidate, reusing the last result of a VM whose stamp, marks and
        namespace are the same (called by find_owned_vms from the engine's step, one at a time)."""
        built: dict[MoRef, tuple[int | None, dict[str, str], str, AgentVm | None]] = {}
        found: list[AgentVm] = []
        last = self._built
        for ref, props in candidates.items():
            stamp, mark = stamps.get(ref), marks.get(ref, _NO_MARKS)
            kept = last.get(ref)
            if (
                kept is not None
                and stamp is not None
                and kept[0] == stamp
                and kept[1] is mark
                and kept[2] == namespace
            ):
                vm = kept[3]
            else:
                vm = _agent_vm(ref, props, mark, namespace)
            built[ref] = (stamp, mark, namespace, vm)
            if vm is not None:
                found.append(vm)
        self._built = built
        return found

    def _keep_marks(self, read: Mapping[MoRef, dict[str, str]], began: float) -> None:
        """Keep the marks read by a read that began at ``began`` (cache lock held), but not over those an
        own deploy wrote since (the read may have seen the VM half-deployed)."""
        for ref, mark in read.items():
            if ref in self._vms and self._marked_at.get(ref, float("-inf")) < began:
                self._marks[ref] = mark

    def _owned_vms(self, namespace: str) -> list[AgentVm]:
        session = self._session
        began = time.monotonic()
        with container_view(session, [vim.VirtualMachine]) as view:
            spec = view_filter_spec(view, [property_spec(vim.VirtualMachine, _VM_PROPERTIES)])
            with paged(session, spec) as items:
                candidates = [
                    o for o in items if self._candidate({p: o.get(p) for p in _VM_PROPERTIES}, namespace)
                ]
        if not candidates:
            return []
        extra = self._extra_config([o.obj for o in candidates])
        with self._cache:
            self._keep_marks(extra, began)
        found: list[AgentVm] = []
        for o in candidates:
            ref = _ref(o.obj)
            props = {p: o.get(p) for p in _VM_PROPERTIES}
            if props["runtime.host"] is not None:
                props["runtime.host"] = _ref(props["runtime.host"])
            vm = _agent_vm(ref, props, extra.get(ref, {}), namespace)
            if vm is not None:
                found.append(vm)
        return found

    def _candidate(self, props: Mapping[str, Any], namespace: str) -> bool:
        """Whether a VM may be one of ``namespace``'s (its marks then decide): on a vCenter one managed
        by the namespace's key; on a host agent, which keeps no managedBy of ours, any VM."""
        if props.get("config.template", False):
            return False
        return self._host_agent or _key(props) == namespace

    def _extra_config(self, objs: Sequence[Any]) -> dict[MoRef, dict[str, str]]:
        """The ``agentvm.*`` extraConfig keys of some VMs, in one paged read."""
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=obj, skip=False) for obj in objs],
            propSet=[property_spec(vim.VirtualMachine, ("config.extraConfig",))],
        )
        result: dict[MoRef, dict[str, str]] = {}
        with paged(self._session, spec) as items:
            for item in items:
                options = item.get("config.extraConfig") or ()
                result[_ref(item.obj)] = {
                    str(o.key): "" if o.value is None else str(o.value)
                    for o in options
                    if str(o.key).startswith("agentvm.")
                }
        return result

    def check_url(self, url: str) -> None:
        """Download the OVF descriptor once; raise ``engine.api.InvalidUrl`` (EAM's fault) if it fails."""
        try:
            ovf.fetch_descriptor(url, timeout=self._download_timeout)
        except ovf.OvfDownloadError as exc:
            raise InvalidUrl(
                url,
                exc.reason,
                connection_refused=exc.connection_refused,
                unknown_host=exc.unknown_host,
                response_code=exc.response_code,
            ) from exc
        except ovf.OvfDescriptorError:
            pass  # downloadable: a bad descriptor is OvfInvalidFormat on the agents, not InvalidUrl

    # ================================================================================ deploy
    def deploy_agent_vm(
        self,
        *,
        host: MoRef,
        ovf_url: str,
        ovf_properties: Sequence[OvfProperty],
        name: str,
        datastore: MoRef,
        network: MoRef,
        folder: MoRef | None,
        pool: MoRef | None,
        marker: VmMarker,
        disk_provisioning: str | None = None,
    ) -> MoRef:
        """Import ``ovf_url`` as ``name`` onto ``host``, powered off, with its OVF environment and marker.

        Raises OvfUnreachable, OvfInvalid, InsufficientSpace, DeployError (vCenter refuses the import or
        the reconfigure) or InfraError (transient; the inventory changed). No VM is left behind on error.
        """
        values = {p.key: p.value for p in ovf_properties}
        managed_by = None if self._host_agent else ManagedBy(marker.namespace, MANAGED_BY_TYPE)
        try:
            descriptor = ovf.fetch_descriptor(ovf_url, timeout=self._download_timeout)
            if pool is None or folder is None:
                default_pool, default_folder = self._defaults_for(host)
                pool, folder = pool or default_pool, folder or default_folder
            placement = ovf.ImportTarget(
                host=host,
                pool=pool,
                folder=folder,
                datastore=datastore,
                network=network,
                disk_provisioning=_DISK_PROVISIONING.get(disk_provisioning or "none", disk_provisioning),
            )
            with self._session.operation(f"deploy-{marker.agent}"):
                result = ovf.import_ovf(
                    self._session,
                    descriptor,
                    name=name,
                    placement=placement,
                    properties=values,
                    timeout=self._task_timeout,
                    managed_by=managed_by,
                    marks={
                        OWNER_KEY: marker.namespace,
                        AGENCY_KEY: marker.agency,
                        AGENT_KEY: marker.agent,
                        AGENCY_NAME_KEY: marker.agency_name,
                        IMPORT_KEY: uuid.uuid4().hex,
                    },
                )
                self._configure(result.vm, name, ovf_url, descriptor, values, marker)
        except AgentvmError as exc:
            raise _deploy_error(exc, ovf_url, name, host) from exc
        with self._lock:
            parent = self._host_parent.get(host)
            if parent is not None:
                self._vm_cluster[result.vm] = parent if parent.type == "ClusterComputeResource" else None
        with self._cache:  # what the final reconfigure wrote: no need to read it back
            self._marked_at[result.vm] = time.monotonic()
            self._marks[result.vm] = {
                OWNER_KEY: marker.namespace,
                AGENCY_KEY: marker.agency,
                AGENT_KEY: marker.agent,
                AGENCY_NAME_KEY: marker.agency_name,
                OVF_URL_KEY: ovf_url,
            }
        self._wrote(
            result.vm,
            {
                "name": name,
                "config.managedBy": None
                if managed_by is None
                else vim.ext.ManagedByInfo(extensionKey=marker.namespace, type=MANAGED_BY_TYPE),
                "config.template": False,
                "runtime.host": host,
                "runtime.powerState": PowerState.POWERED_OFF.value,
            },
        )
        log.info("deployed %s (%s) on %s from %s", name, result.vm, host, ovf_url)
        return result.vm

    def _configure(
        self,
        vm: MoRef,
        name: str,
        ovf_url: str,
        descriptor: ovf.OvfDescriptor,
        values: Mapping[str, str],
        marker: VmMarker,
    ) -> None:
        """OVF environment + owner marker on the new VM; on failure the VM is deleted (no half deploy)."""
        extra = {f"{GUESTINFO_PREFIX}{k}": v for k, v in values.items()}
        extra.update(
            {
                OWNER_KEY: marker.namespace,
                AGENCY_KEY: marker.agency,
                AGENT_KEY: marker.agent,
                AGENCY_NAME_KEY: marker.agency_name,
                OVF_URL_KEY: ovf_url,
                IMPORT_KEY: "",  # configured: a whole agent VM from now on (an empty value removes the key)
            }
        )
        try:
            ovf.configure_vm(
                self._session,
                vm,
                ovf_properties=descriptor.properties,
                values=values,
                extra_config=extra,
                managed_by=None if self._host_agent else ManagedBy(marker.namespace, MANAGED_BY_TYPE),
                label=name,
                timeout=self._task_timeout,
            )
        except BaseException:
            with contextlib.suppress(AgentvmError):
                vms.destroy(self._session, vm, label=name, timeout=self._task_timeout)
            raise

    def _defaults_for(self, host: MoRef) -> tuple[MoRef, MoRef]:
        """The root pool of the host's compute resource and its datacenter's VM folder (a parent walk)."""
        session = self._session
        parent = read_one(session, session.mo(host), ["parent"]).get("parent")
        if parent is None:
            raise NotFoundError(f"{host} has no parent compute resource: is it still in vCenter?")
        pool = read_one(session, parent, ["resourcePool"]).get("resourcePool")
        cursor = parent
        for _ in range(32):  # inventory trees are a few levels deep; bounded in case of a cycle
            if isinstance(cursor, vim.Datacenter):
                folder = read_one(session, cursor, ["vmFolder"]).get("vmFolder")
                if pool is None or folder is None:
                    break
                return _ref(pool), _ref(folder)
            cursor = read_one(session, cursor, ["parent"]).get("parent")
            if cursor is None:
                break
        raise ConfigurationError(f"cannot find the resource pool and VM folder for {host}: give them")

    # ================================================================================ pin, HA, power
    def pin_to_host(self, vm: MoRef, host: MoRef) -> None:
        """A DRS override (disabled, manual) in the host's cluster; no-op for a standalone host."""
        with _infra_errors(f"pinning {vm} to {host}"):
            cluster = self._cluster_of_host(host)
            with self._lock:
                self._vm_cluster[vm] = cluster
            if cluster is not None:
                clusters.ensure_drs_vm_override(
                    self._session, cluster, vm, enabled=False, behavior="manual", timeout=self._task_timeout
                )

    def ha_top_priority(self, vm: MoRef) -> None:
        """An HA override with restart priority "highest" in the VM's cluster; no-op standalone."""
        with _infra_errors(f"setting the HA restart priority of {vm}"):
            with self._lock:
                known = vm in self._vm_cluster
                cluster = self._vm_cluster.get(vm)
            if not known:
                host = read_one(self._session, self._session.mo(vm), ["runtime.host"]).get("runtime.host")
                cluster = self._cluster_of_host(_ref(host)) if host is not None else None
            if cluster is not None:
                clusters.ensure_ha_vm_override(
                    self._session, cluster, vm, restart_priority=HA_PRIORITY, timeout=self._task_timeout
                )

    def _cluster_of_host(self, host: MoRef) -> MoRef | None:
        with self._lock:
            parent = self._host_parent.get(host)
        if parent is None:
            value = read_one(self._session, self._session.mo(host), ["parent"]).get("parent")
            if value is None:
                raise NotFoundError(f"{host} has no parent: is it still in vCenter?")
            parent = _ref(value)
            with self._lock:
                self._host_parent[host] = parent
        return parent if parent.type == "ClusterComputeResource" else None

    def start_with_host(self, vm: MoRef, host: MoRef) -> None:
        """On a host agent: autostart enabled and the VM first in the host's start sequence (so stopped
        last), other VMs' entries kept (``vsphere.autostart``); a no-op on a vCenter, where HA restarts
        agent VMs (``ha_top_priority``). Two calls when it is so already, three when it writes."""
        if not self._host_agent:
            return
        with _infra_errors(f"adding {vm} to the autostart sequence of {host}"):
            autostart.ensure_first(self._session, self._autostart_manager(host), vm, stop_action=STOP_ACTION)

    def _autostart_manager(self, host: MoRef) -> MoRef:
        with self._lock:
            manager = self._autostart.get(host)
        if manager is None:
            manager = autostart.manager_of(self._session, host)
            with self._lock:
                self._autostart[host] = manager
        return manager

    def _leave_autostart(self, vm: MoRef) -> None:
        """On a host agent, the VM's autostart entry removed before the VM is deleted (ESXi keeps the
        entry of a deleted VM, and then refuses to remove it: the VM is no longer its)."""
        if not self._host_agent:
            return
        try:
            host = read_one(self._session, self._session.mo(vm), ["runtime.host"]).get("runtime.host")
        except NotFoundError:
            return  # gone already
        if host is not None:
            autostart.ensure_removed(self._session, self._autostart_manager(_ref(host)), vm)

    def power_on(self, vm: MoRef) -> None:
        with _infra_errors(f"powering on {vm}"):
            vms.ensure_powered_on(self._session, vm, timeout=self._task_timeout)
        self._wrote(vm, {"runtime.powerState": PowerState.POWERED_ON.value})

    def power_off(self, vm: MoRef) -> None:
        with _infra_errors(f"powering off {vm}"):
            vms.ensure_powered_off(self._session, vm, timeout=self._task_timeout)
        self._wrote(vm, {"runtime.powerState": PowerState.POWERED_OFF.value})

    def destroy_vm(self, vm: MoRef) -> None:
        """Power off and delete; a VM that is already gone is fine."""
        # NotFoundError: deleted between the power-off and the delete
        with _infra_errors(f"deleting {vm}"), contextlib.suppress(NotFoundError):
            self._leave_autostart(vm)
            vms.destroy(self._session, vm, timeout=self._task_timeout)
        with self._lock:
            self._vm_cluster.pop(vm, None)
        self._wrote(vm, None)


# ==================================================================================== helpers


@contextlib.contextmanager
def _infra_errors(what: str) -> Iterator[None]:
    """Any agentvm error of the adapter → InfraError (the engine retries at its next step)."""
    try:
        yield
    except AgentvmError as exc:
        raise InfraError(f"{what}: {exc}") from exc


def _deploy_error(exc: AgentvmError, ovf_url: str, name: str, host: MoRef) -> InfraError:
    """Sort a deploy failure into the issue it becomes on the agent, or a retry (InfraError)."""
    if isinstance(exc, ovf.OvfDownloadError):
        reason = exc.reason if exc.url == ovf_url else f"{exc.url}: {exc.reason}"
        return OvfUnreachable(ovf_url, reason)
    if isinstance(exc, ovf.OvfDescriptorError):
        return OvfInvalid(ovf_url, exc.errors)
    if fault_name(exc) in ("NoDiskSpace", "InsufficientDisks"):
        return InsufficientSpace(f"deploying {name} on {host}: {exc}")
    if isinstance(exc, ConfigurationError) and not isinstance(exc, NotFoundError):
        return DeployError(f"deploying {name} on {host}: {exc}")
    # transient, re-login, or an object that vanished (the next observe will show it): retry
    return InfraError(f"deploying {name} on {host}: {exc}")


def _agent_vm(
    ref: MoRef, props: Mapping[str, Any], marks: Mapping[str, str], namespace: str
) -> AgentVm | None:
    """The agent VM of ``namespace`` that a VM's properties and ``agentvm.*`` marks describe, or None
    for a VM managed by the namespace's key but not deployed by this engine (e.g. by EAM for us)."""
    if marks.get(OWNER_KEY) != namespace or not marks.get(AGENCY_KEY) or not marks.get(AGENT_KEY):
        return None
    host = props.get("runtime.host")
    ip = props.get("guest.ipAddress")
    return AgentVm(
        vm=ref,
        name=str(props.get("name") or ""),
        marker=VmMarker(namespace, marks[AGENCY_KEY], marks[AGENT_KEY], marks.get(AGENCY_NAME_KEY, "")),
        host=host if isinstance(host, MoRef) else None,
        power_state=_power(props.get("runtime.powerState")),
        ovf_url=marks.get(OVF_URL_KEY) or None,
        ip=str(ip) if ip else None,
        complete=not marks.get(IMPORT_KEY),
    )


_NO_MARKS: dict[str, str] = {}  # the marks of a VM without any (one object, so that a kept build matches)


def _key(props: Mapping[str, Any]) -> str | None:
    """The extension key a VM is managed by (None: no one's)."""
    key = getattr(props.get("config.managedBy"), "extensionKey", None)
    return str(key) if key is not None else None


def _text(value: Any) -> str:
    """A property value as ``_unreported_same`` compares it: a managed object by its moid, a bool in lower
    case, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "_moId"):
        return str(value._moId)
    return str(value)


def _ref(obj: Any) -> MoRef:
    return MoRef(str(obj._wsdlName), str(obj._moId))


def _power(value: Any) -> PowerState:
    try:
        return PowerState(str(value))
    except ValueError:
        return PowerState.POWERED_OFF
