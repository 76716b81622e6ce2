"""``agentvm run``: the controller loop — watch vCenter, poll the agents, heal, answer hooks, publish.

Built by ``cli.run`` (which also starts the HTTP server on ``Controller``'s callables) and by tests, which
run it in a thread with short intervals. The only place with loops, threads and clocks:

- the loop thread runs ``Reconciler.full_pass`` at start, after every failure (reconnect = one full
  resync), when the watch reports a topology change, on ``POST /api/v1/resync`` and every
  ``full_resync`` seconds (vcsim publishes no update for maintenance mode or added hosts, so the period is
  the safety net of a level-triggered controller). Every agent is read again (a sweep) at start, after a
  failure, after a new watch's first batch and on a resync request; a topology change and the periodic pass
  only re-plan (a topology change reads only the objects the watch named: ``controller.observe.
  InventoryKeeper``; the whole inventory is read at the times above and every ``full_resync`` seconds),
  and the polls re-read ``sweep_per_minute`` agents a minute, oldest first, so that a lost watch update
  delays an action until that agent's turn and never loses it. In between
  ``Reconciler.poll`` at an adaptive interval, reading the agents the watch says changed: while anything is
  yellow, a hook is pending or a VM or topology change is recent, every ``fast_poll`` for ``fast_follow`` + 1
  polls after such a change or an action the controller took, then doubling at each poll up to ``fast_max``
  (what agentvm's own actions do shows in the watch, which wakes the loop; only EAM's issues and hooks need
  the polls; a host's own change, such as maintenance mode, wakes one poll and starts no fast series: what
  EAM does next to its agent VM shows in the watch); ``slow_poll`` when
  all is green. A retry due sooner shortens the wait. A vCenter change (``controller.watch``) wakes it at
  once.
- the watch thread (``InventoryWatch``) pushes vCenter changes;
- with ``--backend direct`` an engine thread drives ``backend.tick()`` / ``wait_for_work()``;
- with ``--netsync`` the ``NetsyncWatch`` thread (``controller.netsync``) mirrors vCenter networking into
  the SDN controller and the vRouter agents: started and stopped with the controller, asked for a full
  resync whenever the controller does one after a reconnect (or on ``POST /api/v1/resync``). The loop
  publishes what it reports after each turn: failed items and lost connections as ``netsync`` events,
  plan errors (bad input in vCenter) once each, and the sync counts and batch latency as metrics.

With a ``lease`` (``controller.lease``; ``agentvm run`` always passes one, held before the controller is
built), every pass and every engine step first checks that this process still may act: a lease that could
not be renewed in time makes the controller skip its passes (``/readyz`` false, one ``lease`` event) until a
renewal succeeds; a lease lost to another holder stops the controller (``lease_lost`` says why), so that
there are never two actors on one solution. A replica's ``controller.replica.Leadership`` (``agentvm run
--coordination``) is such a lease that ``follows``: while it is not valid the controller is a follower —
its watch goes on, and instead of passes it refreshes the status (``controller.status.report_status``:
reads only, never an EAM or vCenter write) at the poll interval and on every watch batch, observing as an
idle leader's poll does (the inventory patched from the watch after a batch, the agents it names and the
spread sweep; the whole inventory every ``full_resync`` seconds, every agent too at first, on a resync
request and after a failure: ``Controller._follow``); once valid again, its
first pass is a full pass with the sweep (one full resync: whatever the leader before it did is read anew).

Failures (vCenter or EAM unreachable, a session that cannot log in again) are logged, published as one
``connection`` error event per outage, make ``/readyz`` false, and are retried with jittered, capped backoff
(``core.retry.reconnect_backoff``, up to ``Settings.retry_max``; one jitter seed per controller); the
controller never exits for them. ``stop()`` (SIGTERM/SIGINT in the CLI) ends every thread within a few
seconds. Nothing is kept across restarts: every pass recomputes from what it reads.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agentvm.backends.base import Backend
from agentvm.controller.events import EventLog
from agentvm.controller.executor import DEFAULT_WORKERS
from agentvm.controller.lease import Lease
from agentvm.controller.logs import action_log
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.netsync import BatchTiming, NetsyncKey, NetsyncWatch
from agentvm.controller.reconcile import DEFAULT_HOOKS_PER_POLL, PassReport, Reconciler
from agentvm.controller.status import StatusReport, report_status, status_document
from agentvm.controller.watch import Batch, InventoryWatch
from agentvm.core.agent_reads import Look, ReadPolicy
from agentvm.core.heal import HealPolicy
from agentvm.core.retry import WATCH_BACKOFF, Retries, reconnect_backoff
from agentvm.model.agency import MoRef
from agentvm.model.desired import DesiredState
from agentvm.model.errors import AgentvmError, AuthenticationError, TransientError
from agentvm.model.network import SyncError, SyncErrorKind
from agentvm.sdn.sync import ApplyFailure
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]


@dataclass(frozen=True)
class Settings:
    """The controller's timing, in seconds."""

    fast_poll: float = 0.25  # while busy, the polls after a change or an action come this often...
    fast_follow: int = 1  # ...this many more times (EAM raises an issue within a second), then doubling...
    fast_max: float = 2.0  # ...up to this (each poll costs one AgencyQueryRuntime per agency)
    slow_poll: float = 5.0  # when everything is green
    full_resync: float = 60.0  # a full pass at least this often
    network_resync: float = 600.0  # hostNetwork: every host's networking read again at least this often
    retry_max: float = 10.0  # longest wait between attempts while vCenter or EAM is unreachable
    # WaitForUpdatesEx bound: an idle watch costs 60 / this calls a minute (a stop cancels the wait at once)
    watch_max_wait: int = 15
    check_packages: bool = True  # download and check the OVF before an agency change
    fast_after_change: float = 10.0  # poll fast this long after a VM or topology change (EAM reacts later)
    workers: int = DEFAULT_WORKERS  # hooks answered / hosts' settings set at once (1: one after the other)
    sweep_per_minute: float = 60.0  # agents re-read a minute at most between sweeps, whatever the agents
    hooks_per_poll: int = DEFAULT_HOOKS_PER_POLL  # hooks one poll answers at most (the rest: next polls)
    coalesce: float = 0.1  # VM updates within this long of the first cost one poll (the watch holds them)

    def reads(self) -> ReadPolicy:
        """The backends' read policy: the spread sweep re-reads an agent once per ``full_resync`` at most;
        an agent seen unsettled is due again at the next poll (``fast_poll``), not one poll later."""
        return ReadPolicy(
            first_retry=min(ReadPolicy.first_retry, self.fast_poll),
            sweep_per_minute=self.sweep_per_minute,
            sweep_period=self.full_resync,
        )


class Authority(Protocol):
    """What lets a controller act: a ``Lease`` (``follows`` False: lost means stop), or a replica's
    ``controller.replica.Leadership`` (``follows`` True: not valid means follow, read-only)."""

    @property
    def lost(self) -> str | None: ...

    @property
    def follows(self) -> bool: ...

    def valid(self) -> bool: ...


@dataclass(frozen=True)
class Sample:
    """The timing of one change handled (for the benchmark): vCenter update → the first Resolve sent."""

    update_received: float  # perf_counter() when the watch got the update (0: no update preceded)
    pass_started: float
    resolve_sent: float
    own: float  # seconds of agentvm's own work in the pass before the Resolve (calls excluded)
    calls: int  # calls the pass made


class Controller:
    """``Controller(desired, session).run()`` blocks until ``stop()``; ``start()`` runs it on a thread."""

    def __init__(
        self,
        desired: DesiredState,
        session: Session,
        *,
        backend: Backend | None = None,
        settings: Settings = Settings(),
        events: EventLog | None = None,
        metrics: ControllerMetrics | None = None,
        policy: HealPolicy | None = None,
        netsync: NetsyncWatch | None = None,
        lease: Lease | Authority | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``netsync``: the network sync to run alongside (not started yet; the controller starts it in
        ``run`` and stops it on the way out). Its ``on_batch`` is wrapped to feed the metrics. ``lease``:
        the solution's lease, held already and renewed by its ``Keeper``, which calls ``lease_trouble``.
        ``state_dir``: where the solution's generated certificate is kept (``Solution``; default
        ``$AGENTVM_STATE_DIR`` or ``~/.local/state/agentvm``)."""
        self.desired = desired
        self.session = session
        self.settings = settings
        self.events = events if events is not None else EventLog()
        if session.conn.password is not None:  # /api/v1/events is unauthenticated: never show it there
            self.events.add_secret(session.conn.password.reveal())
        self.metrics = (
            metrics if metrics is not None else ControllerMetrics(agencies=[a.name for a in desired.agencies])
        )
        # one jitter seed for this controller's retries (the heal policy's when given: tests fix it)
        seed = policy.seed if policy is not None else secrets.randbits(32)
        self._reconnect: Retries[str] = Retries(reconnect_backoff(settings.retry_max), seed)
        self._network_watch = any(a.host_network is not None for a in desired.agencies)
        self.watch = InventoryWatch(
            session,
            self._on_batch,
            self._on_watch_error,
            max_wait_seconds=settings.watch_max_wait,
            clock=time.perf_counter,
            backoff=Retries(WATCH_BACKOFF, seed),
            coalesce=settings.coalesce,
            network=self._network_watch,
        )
        self.reconciler = Reconciler(
            desired,
            session,
            events=self.events,
            metrics=self.metrics,
            backend=backend,
            policy=policy,
            conditions=self.watch.conditions,
            placements=self.watch.vm_hosts,
            changes=self.watch.changes,
            inventory=self.watch.inventory_delta,
            reads=settings.reads(),
            check_packages=settings.check_packages,
            state_dir=state_dir,
            workers=settings.workers,
            hooks_per_poll=settings.hooks_per_poll,
        )
        self.backend = self.reconciler.backend
        self.reconciler.network_resync = settings.network_resync
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._want_full = True
        self._want_sweep = True  # read every agent at the next full pass
        self._network_hosts: set[MoRef] = set()  # hosts whose networking the watch saw change since
        self._switches_changed = False  # ...and whether a DV port group did
        self._ready = False
        self._healthy = False
        self._outage: str | None = None
        self._disconnected = (
            False  # the last pass failed for want of vCenter, EAM or the host (not bad input)
        )
        self._requests: deque[tuple[Callable[[], JsonObject], Future[JsonObject]]] = deque()
        self._last_update = 0.0
        self._last_vm_update = 0.0  # the last watch batch with VM or topology changes (not hosts' only)
        self._backoff = 0  # busy polls since the last change or action (the wait doubles past fast_follow)
        self._backoff_seen = 0.0  # the watch update the backoff last started from
        self._loop_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self.lease = lease
        self.lease_lost: str | None = None  # why the controller stopped: its lease went to another
        self._following = False  # a replica that may not act now: reading status only
        self._followed: StatusReport | None = None  # the follower's last status read
        self._follow_at = 0.0  # monotonic time of the follower's next status read
        self._follow_seen = 0.0  # the watch update the last status read followed
        self._follow_full_at = 0.0  # monotonic time of the follower's next full read (the safety net)
        self.follow_reads = 0  # the follower's status refreshes so far (tests and benchmarks)
        self._follow_error: str | None = None
        self.samples: deque[Sample] = deque(maxlen=10_000)
        self.passes = 0
        self._loop_ident: int | None = None
        self._pass_call_seconds = 0.0
        self._first_resolve: tuple[float, float] | None = None
        self.reconciler.add_call_listener(self._on_call)  # the extension's session too, opened later
        self.reconciler.executor.add_wait_listener(self._on_pool_wait)
        self.netsync = netsync
        self._netsync_seen = _NetsyncSeen()
        if netsync is not None:
            previous = netsync.on_batch
            batch_seconds = self.metrics.netsync().batch_seconds

            def on_batch(timing: BatchTiming) -> None:  # on the netsync thread; metrics lock themselves
                batch_seconds.observe(max(0.0, timing.applied - timing.received))
                if previous is not None:
                    previous(timing)

            netsync.on_batch = on_batch
            if lease is not None:
                netsync.may_act = lease.valid  # the network sync acts on vCenter and the SDN too

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Controller:
        """Run the controller on a thread of its own; returns at once."""
        self._loop_thread = threading.Thread(target=self.run, name="agentvm-controller", daemon=True)
        self._loop_thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to end; with ``start()``, wait up to ``timeout`` s for the loop to finish.

        Safe from a signal handler (it only sets events) when the caller is not the loop thread.
        """
        self._stop.set()
        self._wake.set()
        thread = self._loop_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the loop started by ``start()`` to end; True while it still runs."""
        thread = self._loop_thread
        if thread is None:
            return False
        thread.join(timeout)
        return thread.is_alive()

    def run(self) -> None:
        """The loop (see the module docstring). Returns after ``stop()``, having stopped its threads."""
        self._loop_ident = threading.get_ident()
        self.watch.start()
        if self.netsync is not None:
            self.netsync.start()
        if not self.backend.self_driving:
            engine = threading.Thread(target=self._drive_engine, name="agentvm-engine", daemon=True)
            engine.start()
            self._threads.append(engine)
        action_log(
            f"controller started for {len(self.desired.agencies)} agency(ies), backend {self.backend.kind}",
            action="start",
        )
        failures = 0
        next_full = 0.0
        try:
            while not self._stop.is_set():
                if not self._may_act():
                    self._wake.clear()  # a watch batch from now on wakes the wait; one before it is seen now
                    if self._following:
                        self._follow()
                    self._wake.wait(0.2)
                    continue
                if self._following:  # leading again: one full resync, every agent read
                    self._following = False
                    with self._lock:
                        self._want_full = self._want_sweep = True
                self._serve_requests()
                now = time.monotonic()
                with self._lock:
                    periodic = now >= next_full  # the whole inventory read again: the safety net
                    full = self._want_full or periodic
                    sweep = full and self._want_sweep
                    self._want_full = False
                    if full:
                        self._want_sweep = False
                    self._wake.clear()
                    update, vm_update = self._last_update, self._last_vm_update
                    network, self._network_hosts = self._network_hosts, set()
                    switches, self._switches_changed = self._switches_changed, False
                # their networking is read again by the re-plan (every host's when a DV port group changed)
                self.reconciler.network_changed(network, switches=switches)
                self.reconciler.network_watched = self._network_watch and self.watch.connected
                try:
                    report = self._pass(full, update, sweep, read=sweep or periodic)
                except Exception as exc:  # the controller outlives every failure
                    failures += 1
                    self._failed(exc, failures)
                    with self._lock:
                        self._want_full = self._want_sweep = True  # after a reconnect: one full resync
                    interval = self._reconnect.failed("pass", time.monotonic())
                else:
                    if failures or self._outage:
                        self._recovered()
                    failures = 0
                    self._reconnect.succeeded("pass")
                    if sweep or periodic:
                        next_full = time.monotonic() + self.settings.full_resync
                    interval = self._interval(report, vm_update)
                self._publish_netsync()
                self._wake.wait(interval)
        finally:
            self._shutdown()

    def _may_act(self) -> bool:
        """False while the lease does not let this process act; stops the controller once it is lost."""
        lease = self.lease
        if lease is None or lease.valid():
            return True
        self._healthy = False
        if lease.follows:
            if not self._following:
                self._following = True
                self._follow_at = 0.0  # read the status at once, every agent: what it kept may be old
                self._follow_full_at = 0.0
                with self._lock:
                    self._want_sweep = True
            return False
        if lease.lost is not None:
            self.lease_lost = lease.lost
            self._stop.set()
        return False

    def _follow(self) -> None:
        """A follower's turn (loop thread): refresh the status when it is due or the watch saw a change.

        It observes as the leader's polls and passes do, and reads only (never an EAM or vCenter write):
        every ``slow_poll`` seconds and at every watch batch, the agents through the backend's cache
        (``note``: only those the watch says changed, plus the spread sweep) over the inventory kept from
        the watch (``controller.observe.InventoryKeeper``: patched with the objects the watch named, read
        only after a watch batch). As the leader's passes, it reads the whole inventory and the agent lists
        every ``full_resync`` seconds, and every agent too (the sweep) at first, after a failure or a watch
        error, on a new watch and on a resync request."""
        now = time.monotonic()
        with self._lock:
            update = self._last_update
            sweep, relist = self._want_sweep, self._want_full
        periodic = now >= self._follow_full_at
        changed = update != self._follow_seen
        if not (sweep or periodic or changed) and now < self._follow_at:
            return
        with self._lock:
            self._want_sweep = self._want_full = False
        self._follow_seen = update
        self._follow_at = now + self.settings.slow_poll
        keeper = self.reconciler.inventory
        try:
            if sweep:
                self.backend.forget()
            watched = self.watch.conditions()
            self.backend.note(
                Look(
                    now,
                    self.watch.changes(),
                    self.settings.reads(),
                    relist=sweep or relist or periodic,
                    parked_hosts=watched.maintenance | watched.standby,
                )
            )
            if sweep or periodic or changed or keeper.snapshot is None:
                snapshot = keeper.read(full=sweep or periodic)
            else:
                snapshot = keeper.snapshot
            self._followed = report_status(self.session.url, snapshot, self.backend, self.desired)
        except Exception as exc:  # the follower outlives every failure, as the loop does
            text = str(exc) if isinstance(exc, AgentvmError) else f"unexpected {type(exc).__name__}: {exc}"
            if self._follow_error is None:
                log.warning("follower cannot read the status: %s", text)
            self._follow_error = text
            self._follow_at = now + min(self.settings.retry_max, self.settings.slow_poll)
            with self._lock:
                self._want_sweep = True  # read everything again once it can
            return
        if sweep or periodic:
            self._follow_full_at = now + self.settings.full_resync
        self._follow_error = None
        self.follow_reads += 1

    @property
    def outage(self) -> str | None:
        """Why the passes fail now (None while they succeed)."""
        return self._outage

    @property
    def disconnected(self) -> bool:
        """True while the passes fail because vCenter, EAM or the host cannot be reached or logged in to
        (``controller.standalone`` then opens the host anew)."""
        return self._disconnected and self._outage is not None

    @property
    def following(self) -> bool:
        """True while this controller may not act and reads the status only (a replica's follower)."""
        return self._following

    def lease_trouble(self, why: str) -> None:
        """The lease's ``Keeper`` could not renew in time, or lost the lease (its thread): say so once."""
        lost = self.lease is not None and self.lease.lost is not None
        text = f"lost the lease: {why}; stopping" if lost else f"not acting: the lease {why}"
        action_log(text, action="lease", level=logging.ERROR)
        self.events.publish("lease", text, level="error")
        self._wake.set()

    def _shutdown(self) -> None:
        self._stop.set()
        if self.netsync is not None:
            self.netsync.stop()
        self.watch.stop()
        for thread in self._threads:
            thread.join(5.0)
        for _, future in list(self._requests):
            future.set_exception(TransientError("the controller is stopping; try again after it restarts"))
        self._requests.clear()
        self.reconciler.close()
        action_log("controller stopped", action="stop")

    # -- one pass -------------------------------------------------------------------------------------

    def _pass(self, full: bool, update: float, sweep: bool = True, *, read: bool = True) -> PassReport:
        self._pass_call_seconds = 0.0
        self._first_resolve = None
        started = time.perf_counter()
        try:
            report = self.reconciler.full_pass(sweep=sweep, read=read) if full else self.reconciler.poll()
        finally:
            for reason, count in self.reconciler.backend.take_read_reasons().items():
                self.metrics.agent_reads.inc(count, reason=reason)
        self.passes += 1
        if full:
            self._ready = True
            self.metrics.last_full_resync.set(time.time())
        self._healthy = True
        self.metrics.vcenter_connected.set(1)
        own_pass = max(0.0, time.perf_counter() - started - self._pass_call_seconds)
        self.metrics.pass_own.observe(own_pass, **{"pass": "full" if full else "poll"})
        if self._first_resolve is not None:
            sent, calls_before = self._first_resolve
            own = max(0.0, sent - started - calls_before)
            self.samples.append(Sample(update, started, sent, own, report.calls))
            self.metrics.resolve_own.observe(own)
        return report

    def _interval(self, report: PassReport, update: float) -> float:
        """The wait before the next pass, which followed the watch's last VM or topology ``update``
        (perf_counter; 0: none)."""
        s = self.settings
        recent = update > 0 and time.perf_counter() - update < s.fast_after_change
        if report.busy or report.actions or recent:
            if report.actions or update != self._backoff_seen:  # something happened: look again soon
                self._backoff, self._backoff_seen = 0, update
            doublings = max(0, self._backoff - s.fast_follow)
            interval = min(max(s.fast_poll, s.fast_max), s.fast_poll * 2.0**doublings)
            self._backoff = min(self._backoff + 1, s.fast_follow + 32)
        else:
            interval = s.slow_poll
        if report.wake_at is not None:
            interval = min(interval, max(0.05, report.wake_at - time.monotonic()))
        return interval

    def _failed(self, exc: Exception, failures: int) -> None:
        self._healthy = False
        if isinstance(exc, TransientError | AuthenticationError):  # not a bad spec: vCenter or EAM is lost
            self.metrics.vcenter_connected.set(0)
            self._disconnected = True
        known = isinstance(exc, AgentvmError)
        text = str(exc) if known else f"unexpected {type(exc).__name__}: {exc}"
        if not known:
            log.error("controller pass failed unexpectedly", exc_info=exc)
        if self._outage is None:
            self._outage = text
            action_log(f"pass failed, retrying: {text}", action="error", level=logging.ERROR)
            self.events.publish("connection", f"cannot reconcile: {text}; retrying", level="error")
        elif failures % 10 == 0:
            log.warning("still failing after %d attempts: %s", failures, text)

    def _recovered(self) -> None:
        self._disconnected = False
        text = "reconnected; full resync done" if self._outage else "recovered"
        self._outage = None
        if self.netsync is not None:
            self.netsync.resync()  # the networks may have changed unseen too
        action_log(text, action="recovered")
        self.events.publish("connection", text)

    # -- the watch and the engine ---------------------------------------------------------------------

    def _on_batch(self, batch: Batch) -> None:
        with self._lock:
            if batch.topology or batch.network_hosts or batch.switches:  # hostNetwork: a drift, or our own
                self._want_full = True
                self._network_hosts.update(batch.network_hosts)
                self._switches_changed = self._switches_changed or batch.switches
            if batch.first:
                self._want_sweep = True  # changes may have gone unseen before this watch
            if batch.vms or batch.hosts or batch.topology:
                self._last_update = batch.received
            if batch.vms or batch.topology:
                # what EAM does next to a VM or a host added shows only in its issues and hooks: poll fast;
                # a host's own change (maintenance mode, connection) is followed by EAM acting on its
                # agent VM, which this watch shows
                self._last_vm_update = batch.received
        self._wake.set()

    def _on_watch_error(self, exc: Exception) -> None:
        with self._lock:
            self._want_full = self._want_sweep = True  # changes may have gone unseen while the watch was down
        self._wake.set()

    def _drive_engine(self) -> None:
        while not self._stop.is_set():
            if self.lease is not None and not self.lease.valid():
                self._stop.wait(0.2)  # the engine acts on the agents too: not without the lease
                continue
            try:
                busy = self.backend.tick()
            except Exception as exc:  # keep driving; the passes report vCenter failures
                log.warning("agent engine step failed, retrying: %s", exc)
                self._stop.wait(1.0)
                continue
            if busy:
                self._wake.set()  # the agents changed: look at them now
            pace = self.backend.pace()
            if pace:  # actions run on the engine's workers: step again once several have finished
                self._stop.wait(pace)
            elif not busy:
                self.backend.wait_for_work(0.5)

    def _on_call(self, method: str, seconds: float, fault: str | None) -> None:
        self.metrics.vcenter_call_duration.observe(seconds, method=method)
        if fault is not None:
            self.metrics.vcenter_errors.inc(fault=fault)
        if threading.get_ident() != self._loop_ident:
            return
        if method == "Resolve" and self._first_resolve is None:
            self._first_resolve = (time.perf_counter() - seconds, self._pass_call_seconds)
        self._pass_call_seconds += seconds

    def _on_pool_wait(self, seconds: float) -> None:
        """The loop thread waited ``seconds`` for a batch whose calls ran on the executor's pool: call
        time, not agentvm's own (``_on_call`` counts the loop thread's calls only)."""
        if threading.get_ident() == self._loop_ident:
            self._pass_call_seconds += seconds

    # -- the network sync ------------------------------------------------------------------------------

    def _publish_netsync(self) -> None:
        """Turn what the netsync thread reported since the last turn into events and metrics (loop thread).

        Never raises: a fault here must not stop the agents' loop."""
        netsync = self.netsync
        if netsync is None:
            return
        try:
            self._netsync_seen.publish(netsync, self.events, self.metrics, self.reconciler.host_path)
        except Exception:  # logged; the next turn tries again
            log.exception("publishing the network sync's state failed")

    # -- the API's callables (any thread) -------------------------------------------------------------

    def ready(self) -> bool:
        """True after the first full pass, while passes succeed (and the lease lets this process act)."""
        return self._ready and self._healthy and (self.lease is None or self.lease.valid())

    def following_ready(self) -> bool:
        """A follower's readiness: it has read the status and its last read succeeded."""
        return self._following and self._followed is not None and self._follow_error is None

    def status(self) -> JsonObject:
        """The status document of the last pass, or a follower's last status read (``status-v1.json``)."""
        if self._following and self._followed is not None:
            return status_document(self._followed, datetime.now(UTC))
        if not self._ready:
            if self._following:
                why = self._follow_error or "it has not read the status yet"
                raise TransientError(f"this replica follows and cannot show the status: {why}; retry shortly")
            raise TransientError("the controller has not finished its first full pass yet; retry shortly")
        return status_document(self.reconciler.report, datetime.now(UTC))

    def metrics_text(self) -> str:
        return self.metrics.render()

    def resync(self, body: JsonObject) -> JsonObject | None:
        """Ask for a full pass now (``POST /api/v1/resync``); returns at once (202)."""
        _ = body
        with self._lock:
            self._want_full = self._want_sweep = True
        if self.netsync is not None:
            self.netsync.resync()  # the network sync too, its items in backoff retried at once
        self._wake.set()
        what = "agents and network sync" if self.netsync is not None else "agents"
        self.events.publish("resync", f"full resync requested through the API ({what})")
        return None

    def resolve(self, body: JsonObject, timeout: float = 30.0) -> JsonObject:
        """Resolve ``{"keys": [..]}`` or everything (``{}`` / ``{"all": true}``) on the loop thread.

        ValueError for a malformed body; NotFoundError for unknown keys; TransientError when the loop
        does not get to it within ``timeout`` s.
        """
        keys = body.get("keys")
        if keys is not None and (
            not isinstance(keys, list)
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys)
        ):
            raise ValueError('"keys" must be a list of issue keys (integers); leave it out to resolve all')
        chosen = None if keys is None or body.get("all") else [int(k) for k in keys]
        future: Future[JsonObject] = Future()
        self._requests.append((lambda: self.reconciler.resolve_keys(chosen), future))
        self._wake.set()
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TransientError(
                f"the controller did not get to the resolve within {timeout:.0f} s"
            ) from None

    def _serve_requests(self) -> None:
        while self._requests:
            func, future = self._requests.popleft()
            try:
                future.set_result(func())
            except Exception as exc:  # handed to the requesting thread
                future.set_exception(exc)


class _NetsyncSeen:
    """What of the netsync's reports the loop has published already, so each thing is said once.

    Reads the watch's attributes from the loop thread: ``last_report`` / ``last_error`` are replaced whole
    (atomic reads), and ``dict(backoff.attempts)`` copies in one step under the GIL.
    """

    MAX_REMEMBERED = 10_000  # plan errors said once each; forgotten wholesale past this many

    def __init__(self) -> None:
        self.report: object | None = None
        self.error: str | None = None
        self.failing: dict[NetsyncKey, str] = {}  # backoff key -> the failure's message
        self.plan_errors: set[tuple[str, str, str]] = set()
        self.syncs = {"full": 0, "incremental": 0}

    def publish(
        self,
        netsync: NetsyncWatch,
        events: EventLog,
        metrics: ControllerMetrics,
        host_path: Callable[[str], str | None] = lambda moid: None,
    ) -> None:
        """``host_path``: a host moid's inventory path, to name the host in events."""
        for kind, count in (("full", netsync.full_syncs), ("incremental", netsync.incremental_syncs)):
            if count > self.syncs[kind]:
                metrics.netsync().syncs.inc(count - self.syncs[kind], kind=kind)
                self.syncs[kind] = count
        error = netsync.last_error
        if error != self.error:
            if error is not None:
                action_log(f"network sync: {error}; reconnecting", action="netsync", level=logging.ERROR)
                events.publish(
                    "netsync", f"network sync cannot reach vCenter or the SDN: {error}", level="error"
                )
            elif self.error is not None:
                events.publish("netsync", "network sync reconnected; full resync done")
            self.error = error
        report = netsync.last_report
        if report is not None and report is not self.report:
            self.report = report
            self._report(report.failures, report.plan.errors, events, metrics)
            for host, why in sorted(report.unreachable_agents.items()):
                if ("unreachable", host, why) not in self.plan_errors:
                    self.plan_errors.add(("unreachable", host, why))
                    path = host_path(host)
                    events.publish(
                        "netsync",
                        f"the vRouter agent of host {path or host} cannot be read: {why}; its ports wait "
                        "for it",
                        level="warning",
                        host=host,
                        host_name=path,
                    )
        attempts = dict(netsync.backoff.attempts)
        for key in [k for k in self.failing if k not in attempts]:
            events.publish("netsync", f"network sync of {key} succeeded after failing")
            del self.failing[key]

    def _report(
        self,
        failures: Sequence[ApplyFailure],
        errors: Sequence[SyncError],
        events: EventLog,
        metrics: ControllerMetrics,
    ) -> None:
        if failures:
            metrics.netsync().failures.inc(len(failures))
        for failure in failures:
            key = failure.key
            if self.failing.get(key) == failure.message:
                continue  # the same failure again, on retry: said already
            self.failing[key] = failure.message
            if "retry" in failure.message:
                retry = ""  # the message says so already
            elif failure.transient:
                retry = "; retried with backoff"
            else:
                retry = "; retried once its cause is fixed"
            action_log(
                f"network sync of {failure.item} failed: {failure.message}",
                action="netsync",
                level=logging.WARNING,
            )
            events.publish(
                "netsync",
                f"network sync of {failure.item} failed: {failure.message}{retry}",
                level="warning" if failure.transient else "error",
                data={"item": failure.item, "key": str(key), "transient": failure.transient},
            )
        if len(self.plan_errors) > self.MAX_REMEMBERED:
            self.plan_errors.clear()
        for error in errors:
            ident = (error.kind.value, error.item, error.message)
            if error.kind is SyncErrorKind.WAITING or ident in self.plan_errors:
                continue
            self.plan_errors.add(ident)
            events.publish(
                "netsync",
                f"network sync skips {error.item}: {error.message}",
                level="warning",
                data={"item": error.item, "kind": error.kind.value},
            )


def api_callables(controller: Controller) -> dict[str, Any]:
    """The keyword arguments of ``agentvm.api.server.Api`` (everything but ``token``) for ``controller``."""
    return {
        "status": controller.status,
        "ready": controller.ready,
        "metrics": controller.metrics_text,
        "events": controller.events,
        "resync": controller.resync,
        "resolve": controller.resolve,
    }
