"""The network sync: vCenter -> Tungsten Fabric config API, vRouter agents and DV port VLANs.

Two entry points:

* ``sync_once(...)`` — one full sync, used by ``agentvm netsync plan|apply``: read vCenter
  (``vsphere.networks``), the controller and the agents' ports (``sdn.sync``), compute the plan
  (``core.netsync.plan``), carry it out (``sdn.sync.apply_plan``), then set the DV port VLANs
  (``vsphere.networks.set_dv_port_vlans``, one task per switch). Never raises for one failed item.
* ``NetsyncRunner`` — the same sync driven by events (``notify()`` from the controller's watch, de-duplicated:
  many notifications while a sync runs give one more sync), a full resync on every (re)connect
  (``resync()``), and a retry with exponential backoff of each failed item: an item that failed is held
  out of the following syncs until its backoff is over, so a broken object or an agent that is down is
  not hammered while the rest goes on.

Level-triggered: every sync recomputes the plan from what is observed, so a restart of agentvm, vCenter or
the SDN controller costs one resync and loses nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from agentvm.core import netsync
from agentvm.model.errors import AgentvmError, AuthenticationError, TransientError
from agentvm.model.network import (
    DvPortVlan,
    NetsyncConfig,
    NetworkInventory,
    PortChange,
    SdnInstanceIp,
    SdnObject,
    SdnVmi,
    SyncPlan,
)
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.sync import ApplyFailure, ApplyResult, MapFn, apply_plan, read_controller_state, read_ports
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.networks import NetworkSnapshot, read_network_snapshot, set_dv_port_vlans
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class NetsyncReport:
    """What one sync saw and did. ``applied`` is None for a dry run (``agentvm netsync plan``)."""

    inventory: NetworkInventory
    plan: SyncPlan
    applied: ApplyResult | None = None
    dv_ports_done: int = 0
    dv_port_failures: tuple[ApplyFailure, ...] = ()
    unreachable_agents: Mapping[str, str] = field(default_factory=dict)
    deferred: tuple[str, ...] = ()  # items held back by their backoff

    @property
    def failures(self) -> tuple[ApplyFailure, ...]:
        return (self.applied.failures if self.applied else ()) + self.dv_port_failures

    @property
    def ok(self) -> bool:
        """Everything planned was done (plan errors such as bad input are reported, not counted)."""
        return not self.failures and not (self.applied and self.applied.skipped) and not self.deferred


def dv_port_key(change: DvPortVlan) -> str:
    return f"dvport:{change.port_key}"


def set_vlans(
    session: Session, snapshot: NetworkSnapshot, changes: tuple[DvPortVlan, ...]
) -> tuple[int, list[ApplyFailure]]:
    """Set the planned DV port VLANs: one ReconfigureDVPort task per switch; if a switch's task fails, each
    of its ports once more on its own, so one bad port does not hold back the others."""
    dvs_of_pg = {pg.key: pg.dvs_key for pg in snapshot.inventory.port_groups}
    by_dvs: dict[str, dict[str, DvPortVlan]] = defaultdict(dict)
    failures: list[ApplyFailure] = []
    for change in changes:
        dvs = dvs_of_pg.get(change.port_group_key)
        if dvs is None or dvs not in snapshot.dvs_refs:
            failures.append(_dv_failure(change, f"port group {change.port_group_key} has no known switch"))
            continue
        by_dvs[dvs][change.port_key] = change
    done = 0
    for dvs, ports in sorted(by_dvs.items()):
        ref = snapshot.dvs_refs[dvs]
        try:
            set_dv_port_vlans(session, ref, {k: c.vlan for k, c in ports.items()})
            done += len(ports)
            continue
        except AuthenticationError:
            raise
        except AgentvmError as exc:
            if len(ports) == 1:
                (change,) = ports.values()
                failures.append(_dv_failure(change, str(exc), isinstance(exc, TransientError)))
                continue
        for key, change in sorted(ports.items()):
            try:
                set_dv_port_vlans(session, ref, {key: change.vlan})
                done += 1
            except AuthenticationError:
                raise
            except AgentvmError as exc:
                failures.append(_dv_failure(change, str(exc), isinstance(exc, TransientError)))
    return done, failures


def _dv_failure(change: DvPortVlan, message: str, transient: bool = False) -> ApplyFailure:
    return ApplyFailure(
        f"set VLAN {change.vlan} on DV port {change.port_key} of {change.port_group_key} "
        f"(interface {change.vmi_uuid}, host {change.host})",
        message,
        transient,
    )


def sync_once(
    session: Session,
    api: ConfigApiClient,
    agents: Mapping[str, VrouterAgentClient],
    *,
    config: NetsyncConfig | None = None,
    apply: bool = True,
    map_fn: MapFn = map,
    hold: Callable[[SyncPlan], tuple[SyncPlan, tuple[str, ...]]] | None = None,
) -> NetsyncReport:
    """One full sync (or, with ``apply=False``, only the plan). ``agents``: host moid -> its agent's client.

    ``hold`` lets the runner take items still in backoff out of the plan. Raises only when reading fails
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
    deferred: tuple[str, ...] = ()
    if hold is not None:
        plan, deferred = hold(plan)
    result = apply_plan(plan, api, agents, state, map_fn)
    done, vlan_failures = set_vlans(session, snapshot, plan.dv_port_vlans)
    report = NetsyncReport(inventory, plan, result, done, tuple(vlan_failures), unreachable, deferred)
    for failure in report.failures:
        log.warning("netsync: %s failed: %s", failure.item, failure.message)
    return report


# -- backoff ----------------------------------------------------------------------------------------------


def failure_key(failure: ApplyFailure) -> str:
    """The backoff key of a failed item: ``obj:<uuid>``, ``port:<uuid>`` or ``dvport:<key>``.

    ``sdn.sync`` names every item with its uuid (object uuid, or the port's VMI uuid) first.
    """
    if failure.item.startswith("set VLAN "):
        return f"dvport:{failure.item.split(' on DV port ', 1)[1].split(' ', 1)[0]}"
    found = _UUID.search(failure.item)
    ident = found.group(0) if found else failure.item
    return f"port:{ident}" if " port " in f" {failure.item} " else f"obj:{ident}"


@dataclass
class Backoff:
    """Per-item exponential backoff: ``base * 2**(failures-1)`` seconds, at most ``cap``."""

    base: float = 1.0
    cap: float = 300.0
    attempts: dict[str, int] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def failed(self, key: str, now: float) -> float:
        n = self.attempts.get(key, 0) + 1
        self.attempts[key] = n
        delay = min(self.cap, self.base * 2.0 ** (n - 1))
        self.due[key] = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        self.attempts.pop(key, None)
        self.due.pop(key, None)

    def waiting(self, now: float) -> set[str]:
        return {k for k, t in self.due.items() if t > now}

    def next_due(self) -> float | None:
        return min(self.due.values(), default=None)


def hold_back(plan: SyncPlan, keys: set[str]) -> tuple[SyncPlan, tuple[str, ...]]:
    """``plan`` without the items whose backoff key is in ``keys`` (and the creates and ports that need
    them); returns the trimmed plan and the keys actually held back."""
    if not keys:
        return plan, ()
    held: set[str] = set()
    blocked = {k.split(":", 1)[1] for k in keys if k.startswith("obj:")}

    def keep_obj(obj: SdnObject) -> bool:
        deps: tuple[str | None, ...] = ()
        if isinstance(obj, SdnVmi):
            deps = (obj.vn_uuid, obj.vm_uuid)
        elif isinstance(obj, SdnInstanceIp):
            deps = (obj.vn_uuid, obj.vmi_uuid)
        if obj.uuid in blocked or any(d in blocked for d in deps if d):
            blocked.add(obj.uuid)
            held.add(f"obj:{obj.uuid}")
            return False
        return True

    create = tuple(o for o in plan.create if keep_obj(o))  # in dependency order: blocks propagate
    update = tuple(o for o in plan.update if keep_obj(o))
    delete = tuple(o for o in plan.delete if keep_obj(o))

    def keep_port(change: PortChange) -> bool:
        key = f"port:{change.port.id}"
        if key in keys or change.port.id in blocked:
            held.add(key)
            return False
        return True

    def keep_vlan(change: DvPortVlan) -> bool:
        if dv_port_key(change) in keys:
            held.add(dv_port_key(change))
            return False
        return True

    trimmed = replace(
        plan,
        create=create,
        update=update,
        delete=delete,
        ports=tuple(c for c in plan.ports if keep_port(c)),
        dv_port_vlans=tuple(c for c in plan.dv_port_vlans if keep_vlan(c)),
    )
    return trimmed, tuple(sorted(held & keys))


# -- the runner -------------------------------------------------------------------------------------------


class NetsyncRunner:
    """Keeps vCenter networking mirrored: syncs on ``notify()``/``resync()``, every ``interval`` seconds,
    and when a failed item's backoff is over. ``run(stop)`` is the loop (a thread of the controller).

    ``session`` re-logs in by itself; ``agents`` is called before every sync for the current host moid ->
    agent client map (a host's agent address is its agent VM's fabric IP, which may change).
    """

    def __init__(
        self,
        session: Session,
        api: ConfigApiClient,
        agents: Callable[[], Mapping[str, VrouterAgentClient]],
        *,
        config: NetsyncConfig | None = None,
        interval: float = 300.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        map_fn: MapFn = map,
    ) -> None:
        self.session = session
        self.api = api
        self.agents = agents
        self.config = config or api.config
        self.interval = interval
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.map_fn = map_fn
        self.last_report: NetsyncReport | None = None
        self.last_error: str | None = None
        self.syncs = 0
        self._last_sync: float | None = None
        self._wake = threading.Event()
        self._sync_lock = threading.Lock()

    def notify(self) -> None:
        """Something changed in vCenter (a watch event): sync soon. Many calls before the sync = one sync."""
        self._wake.set()

    def resync(self) -> None:
        """A (re)connect: every sync is a full one, so this is a notify that also forgets the backoff of
        items, since what failed before the reconnect may well work now."""
        self.backoff.attempts.clear()
        self.backoff.due.clear()
        self._wake.set()

    def sync(self) -> NetsyncReport | None:
        """One sync now, items in backoff held back. Returns its report, or None when reading failed (the
        reason is in ``last_error`` and the whole sync is retried with backoff)."""
        with self._sync_lock:
            self._wake.clear()
            now = self.clock()
            waiting = self.backoff.waiting(now)
            self.syncs += 1
            self._last_sync = now
            try:
                report = sync_once(
                    self.session,
                    self.api,
                    self.agents(),
                    config=self.config,
                    map_fn=self.map_fn,
                    hold=lambda plan: hold_back(plan, waiting),
                )
            except AgentvmError as exc:
                self.last_error = str(exc)
                delay = self.backoff.failed("sync", now)
                log.warning("netsync: sync failed, retrying in %.0f s: %s", delay, exc)
                return None
            self.backoff.succeeded("sync")
            self.last_error = None
            failed = {failure_key(f) for f in report.failures}
            for key in sorted(failed):
                self.backoff.failed(key, now)
            for key in list(self.backoff.due):  # attempted and done, or no longer planned at all
                if key not in failed and key not in waiting:
                    self.backoff.succeeded(key)
            self.last_report = report
            return report

    def seconds_to_next(self) -> float:
        """How long the loop may sleep: until the earliest backoff is over, at most ``interval``."""
        now = self.clock()
        if self._last_sync is None:
            return 0.0
        due = self.backoff.next_due()
        wait = self._last_sync + self.interval - now
        if due is not None:
            wait = min(wait, due - now)
        return max(0.0, wait)

    def run(self, stop: threading.Event) -> None:
        """Sync at once (a start is a (re)connect), then whenever woken, until ``stop`` is set."""
        self.resync()
        while not stop.is_set():
            if self._wake.is_set() or self.seconds_to_next() == 0.0:
                self.sync()
                continue
            self._wake.wait(min(self.seconds_to_next(), 1.0))  # bounded: ``stop`` is noticed within 1 s
