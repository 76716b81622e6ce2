"""The network sync: vCenter -> Tungsten Fabric config API, vRouter agents and DV port VLANs.

Two entry points (docs/architecture.md, section "Netsync"):

* ``sync_once(...)`` — one full sync, used by ``agentvm netsync plan|apply``: read vCenter
  (``vsphere.networks``), the controller and the agents' ports (``sdn.sync``), compute the plan
  (``core.netsync.plan``) and carry it out (``sdn.sync.apply_plan``). Never raises for one failed item.
* ``NetsyncWatch`` — the controller's ``netsync`` thread: the same sync driven by a vCenter watch, a full
  sync on every (re)connect and incremental plans in between, and a retry with jittered, capped
  exponential backoff (``core.retry.Retries`` on the project's one ``Backoff``) of each failed item: an
  item that failed is held out of the following syncs until its backoff is over
  (``core.netsync.hold_back``), so a broken object or an agent that is down is not hammered while the rest
  goes on. Items and their failures are keyed by ``model.network.ItemKey`` (``port:<uuid>``, ...).

The DV port first, then the vRouter: within a sync, old ports come off the agents, then the DV port VLANs
are set (one ReconfigureDVPort task per switch) and read back (one FetchDVPorts per switch), and only then
are ports added or enabled — only those whose DV port carries the VLAN the agent is told (an agent told a
VLAN the DV port does not tag would take that NIC's traffic for another interface's). An interface whose
DV port is not confirmed waits, and its DV port is retried with backoff.

Level-triggered: every sync recomputes the plan from what is observed, so a restart of agentvm, vCenter or
the SDN controller costs one resync and loses nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from agentvm.core import netsync, netsync_incremental
from agentvm.core.netsync import hold_back
from agentvm.core.netsync_incremental import NetsyncIndex, NetworksChange
from agentvm.core.retry import Retries
from agentvm.model.agency import MoRef
from agentvm.model.errors import AgentvmError, AuthenticationError, TransientError
from agentvm.model.network import (
    ADDRESS_KEY,
    ControllerState,
    DvPortVlan,
    ItemKey,
    NetsyncConfig,
    NetworkInventory,
    SdnVirtualNetwork,
    SyncPlan,
    Vm,
)
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.sync import ApplyFailure, MapFn, SyncResult, apply_plan, read_controller_state, read_ports
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.networks import (
    NETSYNC_WATCH,
    NetworkSnapshot,
    NetworksRead,
    fetch_port_vlans,
    read_agent_vm_addresses,
    read_dv_port_vlans,
    read_network_snapshot,
    read_networks,
    set_dv_port_vlans,
    vm_port_groups,
    vm_port_keys,
    watched_vm,
)
from agentvm.vsphere.session import Session
from agentvm.vsphere.watch import WatchChange, WatchChangeKind, Watcher, WatchLost

log = logging.getLogger(__name__)

FULL_RESYNC_SECONDS = 3600.0
"""How often the netsync watch reads everything again by default (``agentvm run --netsync-resync``): the
safety net of a level-triggered sync; failed items do not wait for it (their retries are seconds apart)."""


@dataclass(frozen=True)
class NetsyncReport:
    """What one sync saw and did. ``applied`` is None for a dry run (``agentvm netsync plan``)."""

    inventory: NetworkInventory
    plan: SyncPlan
    applied: SyncResult | None = None
    dv_ports_done: int = 0
    dv_port_failures: tuple[ApplyFailure, ...] = ()
    unreachable_agents: Mapping[str, str] = field(default_factory=dict)
    deferred: tuple[ItemKey, ...] = ()  # items held back by their backoff

    @property
    def failures(self) -> tuple[ApplyFailure, ...]:
        return (self.applied.failures if self.applied else ()) + self.dv_port_failures

    @property
    def ok(self) -> bool:
        """Everything planned was done (plan errors such as bad input are reported, not counted)."""
        return not self.failures and not (self.applied and self.applied.skipped) and not self.deferred


@dataclass(frozen=True)
class VlanResult:
    """What ``set_vlans`` did: ports set and read back, failures, and the interfaces (VMI uuids) whose DV
    port is not confirmed to carry its VLAN, which must not be told to their vRouter agent."""

    done: int = 0
    failures: tuple[ApplyFailure, ...] = ()
    unconfirmed: frozenset[str] = frozenset()


def set_vlans(session: Session, snapshot: NetworkSnapshot, changes: tuple[DvPortVlan, ...]) -> VlanResult:
    """Set the planned DV port VLANs and read them back: one ReconfigureDVPort task per switch (if it fails,
    each of its ports once more on its own, so one bad port does not hold back the others), then one
    FetchDVPorts per switch. A port counts as done only when vCenter reads back the VLAN asked for."""
    dvs_of_pg = {pg.key: pg.dvs_key for pg in snapshot.inventory.port_groups}
    by_dvs: dict[str, dict[str, DvPortVlan]] = defaultdict(dict)
    failures: list[ApplyFailure] = []
    for change in changes:
        dvs = dvs_of_pg.get(change.port_group_key)
        if dvs is None or dvs not in snapshot.dvs_refs:
            failures.append(_dv_failure(change, f"port group {change.port_group_key} has no known switch"))
            continue
        by_dvs[dvs][change.port_key] = change
    confirmed: set[str] = set()
    for dvs, ports in sorted(by_dvs.items()):
        ref = snapshot.dvs_refs[dvs]
        attempted = _set_switch_vlans(session, ref, ports, failures)
        if not attempted:
            continue
        try:
            carried = read_dv_port_vlans(session, ref, attempted)
        except AuthenticationError:
            raise
        except AgentvmError as exc:
            failures.extend(
                _dv_failure(ports[k], f"its VLAN could not be read back: {exc}", True) for k in attempted
            )
            continue
        for key in sorted(attempted):
            change = ports[key]
            if carried.get(key) == change.vlan:
                confirmed.add(change.vmi_uuid)
            else:
                failures.append(
                    _dv_failure(
                        change,
                        f"vCenter reads back VLAN {carried.get(key)} on the port after the change; "
                        "retried with backoff",
                        True,
                    )
                )
    unconfirmed = frozenset(c.vmi_uuid for c in changes) - confirmed
    return VlanResult(len(confirmed), tuple(failures), unconfirmed)


def _set_switch_vlans(
    session: Session, ref: MoRef, ports: Mapping[str, DvPortVlan], failures: list[ApplyFailure]
) -> list[str]:
    """ReconfigureDVPort for the ports of one switch; the keys whose change vCenter accepted."""
    try:
        set_dv_port_vlans(session, ref, {k: c.vlan for k, c in ports.items()})
        return sorted(ports)
    except AuthenticationError:
        raise
    except AgentvmError as exc:
        if len(ports) == 1:
            (change,) = ports.values()
            failures.append(_dv_failure(change, str(exc), isinstance(exc, TransientError)))
            return []
    accepted = []
    for key, change in sorted(ports.items()):
        try:
            set_dv_port_vlans(session, ref, {key: change.vlan})
            accepted.append(key)
        except AuthenticationError:
            raise
        except AgentvmError as exc:
            failures.append(_dv_failure(change, str(exc), isinstance(exc, TransientError)))
    return accepted


def _dv_failure(change: DvPortVlan, message: str, transient: bool = False) -> ApplyFailure:
    return ApplyFailure(change, message, transient)


def sync_once(
    session: Session,
    api: ConfigApiClient,
    agents: Mapping[str, VrouterAgentClient],
    *,
    config: NetsyncConfig | None = None,
    apply: bool = True,
    map_fn: MapFn = map,
    held: Collection[ItemKey] = (),
) -> NetsyncReport:
    """One full sync (or, with ``apply=False``, only the plan). ``agents``: host moid -> its agent's client.

    ``held``: the keys of items still in backoff, taken out of the plan (``core.netsync.hold_back``) and
    listed in the report's ``deferred``. Raises only when reading fails
    (vCenter or the controller unreachable: TransientError; bad credentials: AuthenticationError; the
    project missing: ConfigurationError); failures of single items are in the report.
    """
    cfg = config or api.config
    snapshot = read_network_snapshot(session)
    inventory = snapshot.inventory
    state = read_controller_state(api)
    ports, unreachable = read_ports(agents, netsync.port_candidates(inventory, state, cfg))
    for host, why in sorted(unreachable.items()):
        log.warning("netsync: vRouter agent of host %s not readable: %s", host, why)
    plan = netsync.plan(inventory, state, ports, cfg)
    for error in plan.errors:
        log.warning("netsync: %s: %s: %s", error.kind.value, error.item, error.message)
    if not apply:
        return NetsyncReport(inventory, plan, unreachable_agents=unreachable)
    plan, deferred = hold_back(plan, held)
    vlans = VlanResult()

    def dv_ports_first() -> frozenset[str]:  # the old ports are off the agents, the new not yet on
        nonlocal vlans
        vlans = set_vlans(session, snapshot, plan.dv_port_vlans)
        return vlans.unconfirmed

    result = apply_plan(plan, api, agents, state, map_fn, before_ports=dv_ports_first)
    report = NetsyncReport(inventory, plan, result, vlans.done, vlans.failures, unreachable, deferred)
    for failure in report.failures:
        log.warning("netsync: %s failed: %s", failure.item, failure.message)
    return report


# -- the vRouter agents' addresses --------------------------------------------------------------------------

FABRIC_IP_KEY = "guestinfo.fabricIp"
"""Where the ContrailVM carries its fabric IP (examples/contrail.yaml ``perHost.fabricIp``)."""
AGENT_PORT = 9091  # the vRouter agent's port API


def agent_urls_from_agent_vms(
    session: Session,
    port: int = AGENT_PORT,
    keys: tuple[str, ...] = (FABRIC_IP_KEY, ADDRESS_KEY),
) -> dict[str, str]:
    """Host moid -> ``http://<fabric IP>:<port>``: each host's vRouter agent is its agent VM's fabric IP,
    read back from the agent VM's extraConfig (``keys`` in order of preference; agentvm writes both when it
    answers the VM's hook). One bulk read. Where a host has several such VMs (an upgrade in progress) the
    powered-on one wins, then the preferred key, then the lowest moid. Values that are not IP addresses are
    skipped with a warning. Called by ``agentvm netsync`` without ``--vrouter-map`` and by ``agentvm run``.
    """
    best: dict[str, tuple[tuple[bool, int, str], str]] = {}
    for found in read_agent_vm_addresses(session, keys):
        try:
            ip = ipaddress.ip_address(found.address)
        except ValueError:
            log.warning(
                "netsync: VM %s on host %s carries %s=%r, which is not an IP address; its agent is skipped",
                found.vm, found.host, found.key, found.address,
            )  # fmt: skip
            continue
        host_part = f"[{ip}]" if ip.version == 6 else str(ip)
        rank = (not found.powered_on, keys.index(found.key), found.vm)
        if found.host not in best or rank < best[found.host][0]:
            best[found.host] = (rank, f"http://{host_part}:{port}")
    return {host: url for host, (_, url) in sorted(best.items())}


# -- the watch-driven sync ------------------------------------------------------------------------------


class LoopKey(StrEnum):
    """The watch's own retry keys, next to its items' ``ItemKey``s."""

    WATCH = "watch"  # the watch failed: it reconnects once the delay is over
    AGENTS = "agents"  # a full sync could not read every vRouter agent: the next one waits for the delay


NetsyncKey = ItemKey | LoopKey


@dataclass(frozen=True)
class BatchTiming:
    """One incremental sync of the watch, for metrics and the latency benchmark (``clock`` seconds).

    ``received``: the watch's poll returned the updates; ``planned``: the plan is made (vCenter reads for
    new DV ports included, ``vcenter_seconds`` of it); ``applied``: every call of the plan returned."""

    received: float
    planned: float
    applied: float
    vcenter_seconds: float
    vms: int
    plan: SyncPlan


class NetsyncWatch:
    """Watch-driven, de-duplicated network sync: the controller's ``netsync`` thread.

    ``start()`` runs a thread that watches VMs (NIC backings and MACs, power, host, guest addresses), DV
    port groups and switches with a ``vsphere.watch.Watcher``; on every (re)connect it makes a full sync
    (``core.netsync_incremental.build``) and then turns each batch of updates into one incremental plan for
    the VMs it touched (many updates of one VM: one plan), carried out with ``sdn.sync.apply_plan`` and the
    DV port VLANs. Port groups and IP pools are re-read when a port group or switch changes and every
    ``networks_interval`` seconds (IP pools are not managed objects: nothing can watch them). An item that
    fails is held back with jittered, capped exponential backoff (``backoff``: ``core.retry.Retries`` keyed
    by ``ItemKey`` and the watch's own ``LoopKey``s; by default ``NETSYNC_BACKOFF`` with a random seed),
    and a full resync follows once its delay is over (seconds, not the next ``resync_interval``). While
    ``may_act()`` is False (the controller's lease is not known valid) nothing is changed; a full sync
    follows once it is True again. ``stop()`` ends the thread; ``wait_idle()`` is for tests.
    """

    def __init__(
        self,
        session: Session,
        api: ConfigApiClient,
        agents: Callable[[], Mapping[str, VrouterAgentClient]],
        *,
        config: NetsyncConfig | None = None,
        backoff: Retries[NetsyncKey] | None = None,
        networks_interval: float = 30.0,
        resync_interval: float = FULL_RESYNC_SECONDS,
        max_wait_seconds: int = 1,
        clock: Callable[[], float] = time.monotonic,
        map_fn: MapFn = map,
        on_batch: Callable[[BatchTiming], None] | None = None,
        may_act: Callable[[], bool] | None = None,
    ) -> None:
        self.session = session
        self.api = api
        self.agents = agents
        self.config = config or api.config
        # a seed of its own by default, as the heal policy's: controllers do not retry in step
        self.backoff: Retries[NetsyncKey] = (
            backoff if backoff is not None else Retries(seed=secrets.randbits(32))
        )
        self.networks_interval = networks_interval
        self.resync_interval = resync_interval
        self.max_wait_seconds = max_wait_seconds
        self.clock = clock
        self.map_fn = map_fn
        self.on_batch = on_batch
        # False while this process must not act (the controller's lease could not be renewed in time):
        # changes are then only noted, and a full sync follows once it may act again
        self.may_act = may_act or (lambda: True)
        self.index: NetsyncIndex | None = None
        self.last_error: str | None = None
        self.last_report: NetsyncReport | None = None
        self.full_syncs = 0
        self.incremental_syncs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._cond = threading.Condition()
        self._poll_seq = 0  # polls started
        self._idle_seq = -1  # the last poll that found nothing to do
        self._props: dict[str, dict[str, Any]] = {}  # VM moid -> its VM_WATCH properties so far
        self._networks: NetworksRead | None = None
        self._networks_at = 0.0
        self._full_at = 0.0
        self._needs_full = True
        self._vns: ControllerState | None = None
        self._lost = 0  # watches lost to an ended session since the last full sync
        self._resync_requested = threading.Event()

    # -- the controller's handle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the watch thread (a full sync first). Idempotent while running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="netsync-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the current wait on vCenter is cancelled; returns when it has ended."""
        self._stop.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            self._cond.notify_all()

    def resync(self) -> None:
        """Ask for a full sync at the next turn, whatever is in backoff (``POST /api/v1/resync``, a
        reconnect of the controller). Any thread; the watch thread takes the request within a poll (about
        ``max_wait_seconds``) and forgets the items' backoff itself: whatever failed may work now."""
        self._resync_requested.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until a poll that started after this call found nothing to do, everything before it being
        carried out; False on timeout. For tests: a change made before the call has then been synced."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._poll_seq + 1
            while self._idle_seq < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    # -- the thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except WatchLost as exc:
                self._lost += 1
                self._needs_full = True  # every (re)connect is a full resync
                if self._lost == 1:  # a session expiry: routine, the session has logged in again
                    log.info("netsync watch: %s", exc)
                    continue
                self._failed(exc)  # lost again before a full sync went through: back off
            except Exception as exc:  # the thread must live on: log it, reconnect after a backoff
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not isinstance(exc, AgentvmError):
            log.exception("netsync watch: unexpected error")
        self.last_error = str(exc)
        delay = self.backoff.failed(LoopKey.WATCH, self.clock())
        log.warning("netsync watch: %s; reconnecting in %.0f s", exc, delay)
        self._needs_full = True  # every (re)connect is a full resync
        self._stop.wait(delay)

    def _watch(self) -> None:
        with Watcher(self.session, NETSYNC_WATCH, max_wait_seconds=self.max_wait_seconds) as watcher:
            self._watcher = watcher
            if self._stop.is_set():
                return
            self._props = {}
            self._take(watcher.poll())  # the initial state of everything
            self._needs_full = True
            while not self._stop.is_set():
                self._take_resync_request()
                now = self.clock()
                if self._needs_full and (self.backoff.next_due() or 0.0) <= now and self.may_act():
                    self._full_sync()
                with self._cond:
                    self._poll_seq += 1
                    seq = self._poll_seq
                changes = watcher.poll()
                received = self.clock()
                dirty, networks_changed = self._take(changes)
                self._take_resync_request()
                now = self.clock()
                refresh = networks_changed or now - self._networks_at >= self.networks_interval
                if now - self._full_at >= self.resync_interval:
                    self._needs_full = True
                if not self.may_act():
                    self._needs_full = True
                    continue
                if self._needs_full and (self.backoff.next_due() or 0.0) <= now:
                    self._full_sync()
                elif dirty or refresh:
                    self._incremental(dirty, refresh, received)
                if not dirty and not networks_changed and not self._busy(now):
                    with self._cond:
                        self._idle_seq = seq
                        self._cond.notify_all()
        self._watcher = None

    def _take_resync_request(self) -> None:
        if self._resync_requested.is_set():
            self._resync_requested.clear()
            self.backoff.clear()
            self._needs_full = True

    def _busy(self, now: float) -> bool:
        due = self._needs_full and (self.backoff.next_due() or 0.0) <= now
        return due or self._resync_requested.is_set()

    def _take(self, changes: list[WatchChange]) -> tuple[set[str], bool]:
        """Merge updates into the per-VM properties; the VMs touched, and whether networking changed."""
        dirty: set[str] = set()
        networks_changed = False
        for change in changes:
            if change.moref.type != "VirtualMachine":
                networks_changed = True
                continue
            moid = change.moref.value
            dirty.add(moid)
            if change.kind is WatchChangeKind.LEAVE:
                self._props.pop(moid, None)
            else:
                self._props.setdefault(moid, {}).update(change.properties)
        return dirty, networks_changed

    def _full_sync(self) -> None:
        """Read everything, plan everything, carry it out; the index starts again from what was read."""
        now = self.clock()
        waiting = self.backoff.waiting(now)
        self.full_syncs += 1
        self._full_at = now
        snapshot = read_network_snapshot(self.session)
        self._networks = read_networks(self.session)
        self._networks_at = now
        state = read_controller_state(self.api)
        agents = self.agents()
        ports, unreachable = read_ports(
            agents, netsync.port_candidates(snapshot.inventory, state, self.config)
        )
        for host, why in sorted(unreachable.items()):
            log.warning("netsync: vRouter agent of host %s not readable: %s", host, why)
        plan, index = netsync_incremental.build(snapshot.inventory, state, ports, self.config)
        self._vns = ControllerState(state.project_uuid, virtual_networks=state.virtual_networks)
        report = self._apply(plan, index, waiting, snapshot.inventory, now)
        self.last_report = replace(report, unreachable_agents=unreachable)
        self.backoff.succeeded(LoopKey.WATCH)
        self.last_error = None
        self._lost = 0
        if unreachable:
            self.backoff.failed(LoopKey.AGENTS, now)
            self._needs_full = True

    def _incremental(self, dirty: set[str], refresh: bool, received: float) -> None:
        index = self.index
        if index is None:
            self._needs_full = True
            return
        vcenter = 0.0
        networks_change = None
        if refresh:
            start = self.clock()
            self._networks = read_networks(self.session)
            vcenter += self.clock() - start
            self._networks_at = self.clock()
            read = self._networks
            if (read.port_groups, read.ip_pools, read.dvses) != (
                index.base.port_groups,
                index.base.ip_pools,
                index.base.dvses,
            ):
                networks_change = NetworksChange(read.port_groups, read.ip_pools, read.dvses)
        assert self._networks is not None
        vms, seconds = self._vms(index, dirty)
        vcenter += seconds
        if not vms and networks_change is None:
            return
        plan, after = netsync_incremental.plan_change(index, vms, networks_change)
        planned = self.clock()
        self.incremental_syncs += 1
        report = self._apply(plan, after, self.backoff.waiting(planned), index.base, planned)
        self.last_report = report
        if self.on_batch is not None:
            self.on_batch(BatchTiming(received, planned, self.clock(), vcenter, len(vms), report.plan))

    def _vms(self, index: NetsyncIndex, dirty: set[str]) -> tuple[dict[str, Vm | None], float]:
        """The new value of each dirty VM (None: gone or a template). DV ports new to a VM are read from
        vCenter (one FetchDVPorts per switch); the VLAN of ports it had already is taken from the index.
        Returns the VMs and the seconds spent waiting for vCenter."""
        assert self._networks is not None
        by_uuid = self._networks.dvs_moid_by_uuid
        known: dict[tuple[str, str], int | None] = {}
        fetch: set[tuple[str, str]] = set()
        for moid in dirty:
            props = self._props.get(moid)
            if props is None:
                continue
            before = index.vms.get(moid)
            had = {(n.port_group_key, n.port_key): n.port_vlan_id for n in before.nics} if before else {}
            pg_of_port = vm_port_groups(props)
            for dvs, key in vm_port_keys(props, by_uuid):
                pg = pg_of_port.get(key, "")
                if (pg, key) in had:
                    known[(dvs, key)] = had[(pg, key)]
                else:
                    fetch.add((dvs, key))
        seconds = 0.0
        if fetch:
            start = self.clock()
            known.update(fetch_port_vlans(self.session, self._networks.dvs_refs, fetch))
            seconds = self.clock() - start
        out: dict[str, Vm | None] = {}
        for moid in sorted(dirty):
            props = self._props.get(moid)
            out[moid] = None if props is None else watched_vm(moid, props, by_uuid, known)
        return out, seconds

    def _apply(
        self,
        plan: SyncPlan,
        after: NetsyncIndex,
        waiting: set[NetsyncKey],
        networking: NetworkInventory,
        now: float,
    ) -> NetsyncReport:
        """Carry out ``plan`` (items in backoff held back); keep ``after`` as the index when everything was
        done, else keep it but ask for a full resync once the failed items' backoff is over."""
        for error in plan.errors:
            log.debug("netsync: %s: %s: %s", error.kind.value, error.item, error.message)
        trimmed, deferred = hold_back(plan, {k for k in waiting if isinstance(k, ItemKey)})
        if any(isinstance(o, SdnVirtualNetwork) for o in (*plan.create, *plan.delete, *plan.update)):
            vns = tuple(o for o in after.existing.values() if isinstance(o, SdnVirtualNetwork))
            self._vns = ControllerState(after.project_uuid, virtual_networks=vns)
        state = self._vns
        # fq names of refs: networks now in the controller plus those this plan creates
        assert self._networks is not None
        snapshot = NetworkSnapshot(after.base, self._networks.dvs_refs)
        vlans = VlanResult()

        def dv_ports_first() -> frozenset[str]:  # the old ports are off the agents, the new not yet on
            nonlocal vlans
            vlans = set_vlans(self.session, snapshot, trimmed.dv_port_vlans)
            return vlans.unconfirmed

        result = apply_plan(trimmed, self.api, self.agents(), state, self.map_fn, before_ports=dv_ports_first)
        report = NetsyncReport(networking, plan, result, vlans.done, vlans.failures, {}, deferred)
        failed = {f.key for f in report.failures}
        self.backoff.settle(failed, waiting, now, keep=tuple(LoopKey))
        for key in sorted(failed):
            log.warning("netsync: %s failed", key)
        self.index = after
        if failed or deferred or result.skipped:
            self._needs_full = True  # the index assumed success: read the truth once the backoff is over
        else:
            self._needs_full = False
            self.backoff.succeeded(LoopKey.AGENTS)
        return report
