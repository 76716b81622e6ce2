"""One actor per vCenter and solution: the lease that ``apply``, ``destroy`` and ``run`` hold while they act.

Two applies at once could both create agency ``contrail`` (EAM checks nothing), and two controllers on one
spec both answered the same hook. Until controllers elect a leader through etcd, every actor takes this
lease first: ``Solution.apply``/``destroy`` for their duration (``holding``), ``agentvm run`` for its life
(``Lease`` + ``Keeper``, checked before every pass). ``plan`` and ``status`` only read and never take it.

## Where it lives
In vCenter itself, so it is per vCenter by construction, as hidden extensions (``shownInSolutionManager``
false) named ``<solution key>.lease.<N>`` (``vsphere.extensions``): N is the generation, the record holds
the holder (host, pid, command, start time, a random token), a renewal counter, the TTL and a released flag.

On a standalone ESXi host (a host agent, ``about.apiType`` HostAgent: no ExtensionManager) the records are
directories ``[<datastore>] .agentvm/<solution key>.lease.<N>`` on the host's first datastore by name,
the record a file in each (``vsphere.datastore_files``, which says why every process picks the same
datastore and how a record is rewritten without a reader ever seeing half of it). ``lease_store(session)``
picks the ``LeaseStore`` (read, register, update, remove); ``Lease``, ``holding`` and ``current_holder``
take it from the session, so their callers are the same for both.

## The one atomic primitive
vCenter has no compare-and-swap, but ``RegisterExtension`` of a key that exists is refused (extension keys
are unique: the vSphere SDK documentation requires it, and govmomi's simulator answers InvalidArgument, as
the lab's does). On a host, ``FileManager.MakeDirectory`` (no parent directories) of a directory that
exists is refused with FileAlreadyExists. So for every N at most one contender's RegisterExtension (or
MakeDirectory) succeeds: the generation numbers are the only thing contended, and each has exactly one
owner. Everything else is ordinary reads and updates of one's own record.

## The protocol (decisions in ``core.lease``, pure; simulated under random schedules in its tests)
- **Acquire.** Read the records (one read of ``extensionList``; on a host one search and a GET per record).
  The lease is free when every live (unreleased) record of ours is expired: this observer has seen that record
  — same generation, same holder token, same renewal counter — unchanged for a full TTL on its own monotonic
  clock (Kubernetes' leader election: no wall-clock time written by anyone is ever compared, so skew does not
  matter). When free, RegisterExtension N+1 (N: the highest number under the prefix; with no record of ours at
  all, a random number below 2**40 starts a fresh series). Then read again and hold only if (a) my record is
  there and nothing of ours is above it, and (b) every other record of ours is exactly what I judged: none
  renewed, added or removed since. Otherwise mark mine released and try again. Once holding, remove the lower
  records of ours. A holder never removes its own record to release: it marks it released, so numbers only
  grow within a series (``destroy`` alone removes everything, at the very end, when it unregisters the
  solution; the next series starts at a random number).
- **Renew.** Every TTL/4: UpdateExtension of my record with the counter + 1, then read again; mine still
  there and no live record of ours above it → I may act until 3/4 TTL after this renewal *began*
  (``core.lease.valid_until``). Otherwise I have lost it. A holder that cannot renew in time stops acting
  by itself (self-fencing): ``apply`` aborts at its next poll, ``run`` skips its passes (and its engine
  steps) until a renewal succeeds, and stops once another holds the lease.
- **Release.** Mark my record released: the next contender takes it at once. A ``kill -9``'d holder's
  record stays live: the next contender takes over one TTL after it first saw it.

## Why never two actors
Take holder A of generation k and a contender B.
1. B holds only after judging every live record free, A's among them: released (A stopped acting before
   writing that), or unchanged for a TTL on B's clock since B's read at time t. The renewal that wrote
   what B saw began before t, so A's right to act from it ended 3/4 TTL later, before B's judging read at
   t + TTL: clocks need only run at about the same *rate* (the last quarter TTL is the margin).
2. A renewal of k that A began before B's judging read but that landed later: if it landed before B's
   confirming read, B sees k changed and does not hold (rule b); if it landed after, A's own confirming
   read comes later still and sees B's live record above k, so A never extends its right.
3. A record above the holder's that is not a holder's (a contender that lost its confirmation, or died
   right after registering) does not free the lease: judging looks at every live record, not the highest.
4. A contender that read long ago, and registers a number since removed as stale, finds records it did
   not judge (rule b). A holder that stalled across a ``destroy`` renews a number the new random series
   does not use: its UpdateExtension finds no record, and it has lost.
5. Two contenders for the same N: RegisterExtension lets one through.
So at any time at most one process may act. The residual risk is the granularity of self-fencing: a pass
(or an apply step) already under way when the right ends finishes its current call; the quarter-TTL margin
covers calls shorter than that (keep the TTL well above the vCenter call timeout for strict bounds). The
simulation in ``tests/unit/test_core_lease.py`` checks exactly this statement under random interleavings,
stalled writes, kills, destroys and clock-rate drift of 5 %; it (or a scenario pinned there) fails when
rule (b), per-record judging, the fence margin, the live-record-above check or the fresh series is taken
away (rule (a) is implied by (b); it stays as a cheap second guard).

## Who waits, who refuses
``apply``/``destroy`` wait for another apply/destroy (bounded, then fail naming the holder), and fail as
soon as the holder is seen alive when it is an ``agentvm run`` (the controller applies the spec itself).
``run`` refuses, naming the holder, as soon as it sees it alive (exit non-zero), or with ``--standby`` waits
and takes over when it is released or expires. TTL: ``$AGENTVM_LEASE_TTL`` seconds (default 15).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from agentvm.core.lease import (
    FRESH_RANGE,
    Judgement,
    LeaseVerdict,
    Sighting,
    confirm,
    judge,
    renew_every,
    stale,
    still_mine,
    ttl_of,
    valid_until,
)
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError, TransientError
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere.datastore_files import DatastoreLeaseStore
from agentvm.vsphere.extensions import ExtensionLeaseStore
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

TTL_ENV = "AGENTVM_LEASE_TTL"
DEFAULT_TTL = 15.0
MIN_TTL = 1.0
MAX_TTL = 3600.0

T = TypeVar("T")


class LeaseStore(Protocol):
    """Where a solution's lease records live: the protocol needs only these four operations, and of them
    one atomic primitive: ``register`` of a generation that exists is refused (returns False).

    ``ExtensionLeaseStore`` (hidden extensions, on a vCenter) and ``DatastoreLeaseStore`` (directories on
    the host's first datastore, on a standalone ESXi host); ``lease_store`` picks one for a session.
    """

    def read(self, solution_key: str) -> list[LeaseRecord]:
        """Every record of the solution's lease, by generation, from one read."""
        ...

    def register(self, solution_key: str, record: LeaseRecord) -> bool:
        """Create ``record``: False when its generation exists already (another contender has it)."""
        ...

    def update(self, solution_key: str, record: LeaseRecord) -> None:
        """Replace a record agentvm holds (renewal, release). NotFoundError when it is gone."""
        ...

    def remove(self, record: LeaseRecord) -> bool:
        """Remove a record agentvm wrote; False when it was gone already."""
        ...


def lease_store(session: Session) -> LeaseStore:
    """The lease store of ``session``'s server: records on the host's datastore for a standalone ESXi host
    (``about.apiType`` HostAgent: it has no ExtensionManager), hidden extensions on a vCenter. Reads the
    ``about`` the login fetched: no call."""
    if session.host_agent or str(session.content.about.apiType or "") == "HostAgent":
        return DatastoreLeaseStore(session)
    return ExtensionLeaseStore(session)


class LeaseHeldError(TransientError):
    """Another agentvm holds the solution's lease (``holder``); retry when it is done, or stop it."""

    def __init__(self, message: str, holder: LeaseHolder | None) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLostError(TransientError):
    """The lease was lost (not renewed in time, or taken over): this process stopped acting."""


def lease_ttl(env: Mapping[str, str] | None = None) -> float:
    """The TTL from ``$AGENTVM_LEASE_TTL`` (seconds), else 15. A bad value is a ConfigurationError."""
    text = (os.environ if env is None else env).get(TTL_ENV, "").strip()
    if not text:
        return DEFAULT_TTL
    try:
        ttl = float(text)
    except ValueError:
        ttl = float("nan")
    if not MIN_TTL <= ttl <= MAX_TTL:  # also false for nan
        raise ConfigurationError(
            f"${TTL_ENV}={text!r} is not a number of seconds between {MIN_TTL:g} and {MAX_TTL:g}; "
            f"unset it for the default ({DEFAULT_TTL:g} s)"
        )
    return ttl


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Lease:
    """This process's view of one solution's lease on one vCenter (see the module docstring).

    ``step()`` makes one attempt; ``acquire()`` loops; ``renew()``/``valid()``/``check()`` while held;
    ``release()`` or ``retire()`` at the end. Thread-safe: the ``Keeper`` renews from its own thread.
    ``observe()`` judges without registering (a follower replica watching the holder's renewals, so that
    once it may contend its sightings are old already). ``follows`` False: a controller whose lease is lost
    stops (a replica's ``controller.replica.Leadership`` says True: it turns follower instead).
    """

    follows = False

    def __init__(
        self,
        session: Session,
        solution_key: str,
        command: str,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self._store: LeaseStore | None = None
        self.solution_key = solution_key
        self.ttl = lease_ttl() if ttl is None else ttl
        self.me = LeaseHolder(
            host=socket.gethostname(),
            pid=os.getpid(),
            command=command,
            started=_now_text(),
            token=secrets.token_hex(8),
        )
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._record: LeaseRecord | None = None
        self._valid_until = 0.0
        self._seen: tuple[Sighting, ...] = ()
        self.lost: str | None = None  # why the lease was lost, once it was
        self.last: Judgement | None = None
        self.acquired_after: float | None = None  # seconds acquire() waited
        self.renew_error: str | None = None  # why the last renewal could not reach the server (None: it did)

    # -- state ------------------------------------------------------------------------------------------

    @property
    def store(self) -> LeaseStore:
        """Where the records are (``lease_store``), chosen at first use: the session may log in later."""
        with self._lock:
            if self._store is None:
                self._store = lease_store(self.session)
            return self._store

    @property
    def where(self) -> str:
        return f"the lease of solution {self.solution_key} on {self.session.url}"

    @property
    def held(self) -> bool:
        with self._lock:
            return self._record is not None and self.lost is None

    @property
    def generation(self) -> int | None:
        with self._lock:
            return self._record.generation if self._record is not None else None

    def valid(self) -> bool:
        """True while this process may act: it holds the lease and its last renewal is recent enough."""
        with self._lock:
            return self._record is not None and self.lost is None and self._clock() < self._valid_until

    def check(self) -> None:
        """Raise LeaseLostError unless ``valid()``: called before acting."""
        if not self.valid():
            why = self.lost or "it could not be renewed in time"
            raise LeaseLostError(f"lost {self.where} ({why}); stopped before acting again")

    def guard(self, callback: Callable[[T], None] | None) -> Callable[[T], None]:
        """``callback`` with ``check()`` in front (for apply's ``on_progress``, called after every poll)."""

        def guarded(value: T) -> None:
            self.check()
            if callback is not None:
                callback(value)

        return guarded

    # -- acquire ----------------------------------------------------------------------------------------

    def observe(self) -> Judgement:
        """One read and judgement, never a write: keeps the sightings ``step()`` judges expiry from, so a
        replica that observed the holder renewing takes over one TTL after the holder's last renewal was
        first seen (not one TTL after it started to contend). Raises vCenter's errors."""
        with self._lock:
            if self.held:
                assert self.last is not None
                return self.last
            records = self.store.read(self.solution_key)
            verdict = judge(records, token=self.me.token, seen=self._seen, now=self._clock())
            self._seen = verdict.seen
            self.last = verdict
            return verdict

    def step(self) -> Judgement:
        """One attempt: read, judge, and when free register the next generation and confirm it.

        Returns the judgement: MINE when this process holds the lease now.
        """
        with self._lock:
            if self.held:
                assert self.last is not None
                return self.last
            records = self.store.read(self.solution_key)
            fresh = 1 + secrets.randbelow(FRESH_RANGE)
            verdict = judge(records, token=self.me.token, seen=self._seen, now=self._clock(), fresh=fresh)
            self._seen = verdict.seen
            self.last = verdict
            if verdict.verdict is not LeaseVerdict.FREE:
                if verdict.verdict is LeaseVerdict.MINE:  # ours from before (not with a fresh token)
                    raise AgentvmError(f"{self.where}: a record carries this process's token")
                return verdict
            mine = LeaseRecord(
                key="",
                generation=verdict.next_generation,
                holder=self.me,
                renewals=0,
                ttl=self.ttl,
            )
            started = self._clock()
            if not self.store.register(self.solution_key, mine):
                log.debug("generation %d of %s went to another contender", mine.generation, self.where)
                return replace(verdict, verdict=LeaseVerdict.HELD, alive=False)  # seen nothing renewing yet
            records = self.store.read(self.solution_key)
            if not confirm(records, generation=mine.generation, token=self.me.token, judged=verdict.judged):
                log.info(
                    "generation %d of %s is not the lease any more; releasing it", mine.generation, self.where
                )
                self._write(replace(mine, released=True))
                return replace(verdict, verdict=LeaseVerdict.HELD, alive=False)  # seen nothing renewing yet
            self._record = next(r for r in records if r.generation == mine.generation)
            self._valid_until = valid_until(started, self.ttl)
            self._seen = ()
            for old in stale(records, mine.generation):
                try:
                    self.store.remove(old)
                except AgentvmError as exc:  # harmless: released or expired; the next holder removes it
                    log.info("could not remove the old lease record %s: %s", old.key, exc)
            self.last = replace(verdict, verdict=LeaseVerdict.MINE, holder=self.me)
            for old in (r for r in verdict.judged if not r.released and r.holder is not None):
                log.warning(
                    "took over %s from %s: it was not renewed for %.0f s",
                    self.where,
                    old.holder.describe() if old.holder else "?",
                    ttl_of(old),
                )
            return self.last

    def acquire(
        self,
        *,
        wait: float | None,
        give_up: Callable[[Judgement], bool] | None = None,
        stop: threading.Event | None = None,
        on_wait: Callable[[Judgement], None] | None = None,
    ) -> None:
        """Take the lease, waiting at most ``wait`` seconds (None: until ``stop``).

        ``give_up(judgement)`` True ends the wait at once. Raises LeaseHeldError naming the holder;
        vCenter's errors as they come. ``on_wait`` is told every time the holder (or its state) changes.
        """
        started = self._clock()
        told: tuple[str, int] | None = None
        while True:
            verdict = self.step()
            if verdict.verdict is LeaseVerdict.MINE:
                self.acquired_after = self._clock() - started
                return
            holder = verdict.holder
            if holder is not None and on_wait is not None and (holder.token, verdict.next_generation) != told:
                told = (holder.token, verdict.next_generation)
                on_wait(verdict)
            waited = self._clock() - started
            if (give_up is not None and give_up(verdict)) or (wait is not None and waited >= wait):
                raise LeaseHeldError(self.held_message(verdict, waited), holder)
            if stop is not None and stop.is_set():
                raise LeaseHeldError(f"stopped while waiting for {self.where}", holder)
            pause = min(max(0.05, self.ttl / 8), 1.0)
            if verdict.expires_in > 0:
                pause = min(pause, verdict.expires_in + 0.01)
            if wait is not None:
                pause = min(pause, max(0.0, wait - waited) + 0.01)
            if stop is not None:
                stop.wait(pause)
            else:
                self._sleep(pause)

    def held_message(self, verdict: Judgement, waited: float) -> str:
        holder = verdict.holder
        who = holder.describe() if holder is not None else "another agentvm"
        if holder is not None and holder.command == "run" and self.me.command != "run":
            return (
                f"{who} holds {self.where}: that controller applies the spec itself; stop it to "
                f"{self.me.command} by hand, or change the spec it runs"
            )
        if holder is not None and holder.command == "run":
            return (
                f"{who} holds {self.where}: it is the controller of this solution; refusing to act "
                "(never two controllers: stop it first, or start this one with --standby to take over "
                "when it stops)"
            )
        return (
            f"{who} holds {self.where}; waited {waited:.0f} s: let it finish and try again"
            f" (a holder that died is taken over {ttl_of(verdict.top) if verdict.top else self.ttl:.0f} s "
            "after it stopped renewing)"
        )

    # -- while held -------------------------------------------------------------------------------------

    def renew(self) -> bool:
        """Renew once (see the module docstring). True: renewed. False: not now (vCenter's error; the right
        to act runs out by itself). Sets ``lost`` when the lease is no longer this process's."""
        with self._lock:
            record = self._record
            if record is None or self.lost is not None:
                return False
            started = self._clock()
            renewed = replace(record, renewals=record.renewals + 1)
            try:
                self.store.update(self.solution_key, renewed)
                records = self.store.read(self.solution_key)
            except NotFoundError:
                self.lost = "its record was removed"
                return False
            except AgentvmError as exc:
                log.warning("could not renew %s: %s", self.where, exc)
                self.renew_error = str(exc)
                return False
            self.renew_error = None
            self._record = renewed
            if not still_mine(records, generation=renewed.generation, token=self.me.token):
                other = max(
                    (r for r in records if r.ours and not r.released),
                    key=lambda r: r.generation,
                    default=None,
                )
                taker = other.holder.describe() if other is not None and other.holder else "another agentvm"
                self.lost = f"taken over by {taker}"
                return False
            self._valid_until = valid_until(started, self.ttl)
            return True

    def release(self) -> None:
        """Mark my record released (best effort: unreleased, it expires after one TTL)."""
        with self._lock:
            record = self._record
            if record is None or self.lost is not None:
                self._record = None
                return
            self._record = None
            self.lost = "released"
            try:
                self._write(replace(record, released=True))
            except AgentvmError as exc:
                log.warning("could not release %s (it expires in %.0f s): %s", self.where, self.ttl, exc)

    def retire(self) -> None:
        """Remove every lease record of ours, mine last (``destroy``, after unregistering the solution).
        Only while the lease is valid; records agentvm did not write stay."""
        with self._lock:
            self.check()
            assert self._record is not None
            mine = self._record
            for record in stale(self.store.read(self.solution_key), mine.generation):
                self.store.remove(record)
            self.store.remove(mine)
            self._record = None
            self.lost = "retired"

    def _write(self, record: LeaseRecord) -> None:
        with contextlib.suppress(NotFoundError):  # gone already: nothing to release
            self.store.update(self.solution_key, record)


class Keeper:
    """Renews a held ``Lease`` every TTL/4 on a thread of its own until ``stop()``; ``on_lost`` is called
    (on that thread) once the lease is lost or could not be renewed before its right to act ran out."""

    def __init__(self, lease: Lease, *, on_lost: Callable[[str], None] | None = None) -> None:
        self.lease = lease
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentvm-lease", daemon=True)

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def _run(self) -> None:
        every = renew_every(self.lease.ttl)
        fenced = False
        while not self._stop.wait(every):
            try:
                self.lease.renew()
            except Exception:  # the keeper outlives every failure; validity runs out by itself
                log.exception("renewing %s failed", self.lease.where)
            if self.lease.lost is not None:
                if self.on_lost is not None:
                    self.on_lost(self.lease.lost)
                return
            valid = self.lease.valid()
            if not valid and not fenced:
                log.error("%s could not be renewed in time: not acting until it is", self.lease.where)
                if self.on_lost is not None:
                    self.on_lost("could not be renewed in time")
            fenced = not valid


def current_holder(session: Session, solution_key: str) -> LeaseHolder | None:
    """The holder of the highest live lease record of the solution (one read; None: no live record). What
    ``agentvm status`` names as the solution's controller: with ``--coordination`` the seat's leader takes
    this lease too, so it is the leader in both modes. A holder that died shows until its record is taken
    over or released."""
    live = [r for r in lease_store(session).read(solution_key) if r.ours and not r.released and r.holder]
    top = max(live, key=lambda r: r.generation, default=None)
    return top.holder if top is not None else None


@contextmanager
def holding(
    session: Session,
    solution_key: str,
    command: str,
    *,
    wait: float,
    ttl: float | None = None,
) -> Iterator[Lease]:
    """Hold the solution's lease for a block (``apply``/``destroy``): wait up to ``wait`` s for another
    apply or destroy, fail at once when an ``agentvm run`` is seen holding it alive; renewed meanwhile;
    released on the way out (unless ``retire()``d). Raises LeaseHeldError naming the holder."""
    lease = Lease(session, solution_key, command, ttl=ttl)

    def is_controller(verdict: Judgement) -> bool:
        return verdict.alive and verdict.holder is not None and verdict.holder.command == "run"

    def waiting(verdict: Judgement) -> None:
        if verdict.holder is not None:
            log.warning("waiting for %s, held by %s", lease.where, verdict.holder.describe())

    lease.acquire(wait=wait, give_up=is_controller, on_wait=waiting)
    keeper = Keeper(lease).start()
    try:
        yield lease
    finally:
        keeper.stop()
        lease.release()
