"""Replicas of ``agentvm run`` elect one leader per seat (vCenter instanceUuid, solution key) through etcd.

``agentvm run --coordination etcd://HOST:PORT[,HOST:PORT…]`` makes one ``Coordinator`` per process; each
spec it runs asks for a ``Seat`` and acts on that vCenter only while ``seat.valid()``. Without
``--coordination`` nothing here is used (the vCenter lease of ``controller.lease`` guards a single ``run``).

## In etcd
Every replica holds one etcd lease (TTL ``ttl`` seconds, whole seconds: etcd's minimum is 2 s with its
default heartbeat) and, attached to it, ``/agentvm/v1/members/<replica>`` (JSON: replica, host, pid, since,
and the seats it wants). The leader of a seat holds ``/agentvm/v1/leaders/<vcenter>/<solution>`` (JSON:
replica, host, pid, since), also attached to its lease. A campaign is one transaction "create_revision(key)
== 0 → put it with my lease, else read it": etcd serialises transactions, so a seat has at most one leader
key, and the loser learns the winner in the same request. (etcd's election API would need a second key
per candidate and one blocked request per campaign; the transaction is one request and gives the same
guarantee.) A resign is "lease(key) == my lease → delete it". When a replica dies its lease expires after
the TTL and etcd deletes its keys; ``stop()`` revokes the lease, which deletes them at once.

## Self-fencing (decisions in ``core.fence``, pure)
The loop renews the lease every TTL/4. A seat is valid only while (a) the key is known to be this
replica's — its campaign's transaction succeeded, or a read since the last failure shows the key attached
to this replica's lease — and (b) the clock is before 3/4 TTL after the start of the last successful
keepalive: etcd counts the TTL from when it received that keepalive, later than we sent it, so the lease
cannot have expired before then. Any failed request to etcd fences every seat at once (an event says
why), and a seat becomes valid again only after etcd answers a keepalive and then a read (or a new
campaign) shows the key is this replica's. If etcd restarted and kept the lease (it does: leases survive
a restart, their TTL counted afresh), the key attached to it is still this replica's and holding it again
is right: nobody else could have created that key while it existed. If the lease expired meanwhile, the
keepalive says so (TTL ≤ 0): the replica joins again with a new lease and campaigns like a newcomer.

## Rounds
The loop runs a round at every keepalive and at once when something changed: it reads the prefix (one
range request) when it may be stale, and asks ``core.spread.plan`` what to campaign for and what to
resign. After each read it keeps one watch on the prefix from the next revision, so a change (a leader
that stopped, a member that joined) wakes every replica at once, and an idle round costs one keepalive
and nothing else: no read while the watch is up. A watch that ends, or any failed request, brings the
read back.

## Spreading (``core.spread``, pure)
See there for the rules and why they converge. ``hold_down`` (default one TTL) is how long an imbalance
must last before a seat moves.

Callers: ``agentvm run`` (controller.run) and the tests. Listeners and ``on_event`` are called on the
Coordinator's threads (or the caller's, for ``stop``/``release``): they must not block.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from agentvm.core.fence import fence_deadline, keepalive_every, lease_seconds
from agentvm.core.spread import View, led_after_campaign, led_after_read, plan
from agentvm.etcd.client import Entry, EtcdClient, EtcdError, Watch
from agentvm.model.coordination import Endpoint, LeaderInfo, SeatKey
from agentvm.model.errors import ConfigurationError

__all__ = [
    "COORDINATION_ENV",
    "CoordinationError",
    "Coordinator",
    "Endpoint",
    "LeaderInfo",
    "Seat",
    "SeatKey",
    "parse_coordination",
]

log = logging.getLogger(__name__)

COORDINATION_ENV = "AGENTVM_COORDINATION"
PREFIX = "/agentvm/v1/"
MEMBERS = PREFIX + "members/"
LEADERS = PREFIX + "leaders/"
SCHEME = "etcd://"
EXAMPLE = "etcd://127.0.0.1:2379"
UNREACHABLE = "etcd unreachable"

EventSink = Callable[[SeatKey | None, str, str], None]  # (seat or None for the replica, level, text)


class CoordinationError(ConfigurationError):
    """The coordination setting is wrong; ``str()`` names the value and the fix."""


def parse_coordination(text: str) -> tuple[Endpoint, ...]:
    """``etcd://HOST:PORT[,HOST:PORT…]`` → its endpoints, in order. Raises CoordinationError naming the
    value and the expected form (``--coordination`` or ``$AGENTVM_COORDINATION``)."""

    def bad(why: str) -> CoordinationError:
        return CoordinationError(
            f"coordination {text!r}: {why}; expected etcd://HOST:PORT[,HOST:PORT…] (e.g. {EXAMPLE}), "
            f"in --coordination or ${COORDINATION_ENV}"
        )

    value = text.strip()
    if not value.startswith(SCHEME):
        raise bad("it must start with etcd://")
    rest = value[len(SCHEME) :].rstrip("/")
    if not rest:
        raise bad("no endpoint")
    endpoints: list[Endpoint] = []
    for part in rest.split(","):
        item = part.strip()
        if item.startswith("["):  # [IPv6]:PORT
            host, sep, port_text = item[1:].partition("]:")
        else:
            host, sep, port_text = item.rpartition(":")
        if not sep or not host or any(c in host for c in "/@?# []"):
            raise bad(f"{item!r} is not HOST:PORT")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise bad(f"{item!r} has no port between 1 and 65535")
        endpoint = Endpoint(host, int(port_text))
        if endpoint in endpoints:
            raise bad(f"{item} is given twice")
        endpoints.append(endpoint)
    return tuple(endpoints)


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def leader_key(seat: SeatKey) -> str:
    return f"{LEADERS}{quote(seat.vcenter, safe='')}/{quote(seat.solution, safe='')}"


def _seat_of(key: str) -> SeatKey | None:
    vcenter, sep, solution = key.removeprefix(LEADERS).partition("/")
    return SeatKey(unquote(vcenter), unquote(solution)) if sep and vcenter and solution else None


@dataclass(frozen=True)
class _Leader:
    info: LeaderInfo
    lease: int


def _leader_of(entry: Entry) -> _Leader | None:
    try:
        raw = json.loads(entry.value)
        info = LeaderInfo(str(raw["replica"]), str(raw["host"]), int(raw["pid"]), str(raw["since"]))
    except (ValueError, KeyError, TypeError):
        return None
    return _Leader(info, entry.lease)


def _member_pid(entry: Entry | None) -> str:
    try:
        raw = json.loads(entry.value) if entry is not None else {}
        return f" (pid {int(raw['pid'])} on {raw['host']})"
    except (ValueError, KeyError, TypeError):
        return ""


def _member_of(entry: Entry) -> tuple[str, frozenset[SeatKey]] | None:
    try:
        raw = json.loads(entry.value)
        seats = frozenset(SeatKey(str(v), str(s)) for v, s in raw.get("seats", []))
        return str(raw["replica"]), seats
    except (ValueError, KeyError, TypeError):
        return None


class Seat:
    """This replica's wish to lead one seat (from ``Coordinator.seat``). Thread-safe."""

    def __init__(self, coordinator: Coordinator, key: SeatKey) -> None:
        self.key = key
        self._coordinator = coordinator
        self._listeners: list[Callable[[bool], None]] = []
        self.released = False

    def valid(self) -> bool:
        """True while this replica leads the seat and its lease is known valid right now: act only then."""
        return self._coordinator._valid(self.key)

    def leader(self) -> LeaderInfo | None:
        """Who leads the seat, as last read from etcd (this replica included); None: nobody."""
        return self._coordinator._leader(self.key)

    @property
    def why(self) -> str | None:
        """None while valid; else why not, for events, ``/readyz`` and status."""
        return self._coordinator._why(self.key)

    @property
    def transitions(self) -> int:
        """Changes of this seat's leader seen by this replica (the first leader seen counts as one)."""
        return self._coordinator._transitions[self.key]

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        """``callback(valid)`` whenever ``valid()`` changes (from a Coordinator thread: do not block)."""
        self._listeners.append(callback)

    def release(self) -> None:
        """Stop leading this seat (its key is deleted if it is this replica's) and stop campaigning for it."""
        self._coordinator._release(self)

    def __repr__(self) -> str:
        return f"Seat({self.key}, valid={self.valid()})"


class Coordinator:
    """One per replica process (see the module docstring): ``start()``, ``seat(key)`` per spec, ``stop()``.

    ``ttl``: the lease's TTL in seconds (rounded up to whole seconds; etcd may raise it to its minimum).
    ``hold_down``: seconds an imbalance lasts before a seat moves (default: the TTL). ``timeout``: seconds
    per request to etcd (default: a keepalive period, so that a hung request is given up before the next).
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        ttl: float = 15.0,
        replica: str | None = None,
        on_event: EventSink | None = None,
        hold_down: float | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = lease_seconds(ttl)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.replica = replica or f"{self.host}-{self.pid}-{secrets.token_hex(3)}"
        self.hold_down = float(self.ttl if hold_down is None else hold_down)
        self._on_event = on_event
        self._clock = clock
        self._client = EtcdClient(endpoints, timeout=timeout or max(0.5, keepalive_every(self.ttl)))
        self._lock = threading.RLock()
        self._notify_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._fence_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        # -- state, under _lock
        self._lease: int | None = None
        self._granted = self.ttl
        self._deadline = 0.0  # monotonic: act until then (core.fence)
        self._keepalive_at = 0.0
        self._trouble: str | None = "not started"  # why etcd is not usable now (None: it is)
        self._since = _now_text()
        self._wants: dict[SeatKey, Seat] = {}
        self._led: set[SeatKey] = set()  # confirmed this replica's since the last failure
        self._leaders: dict[SeatKey, _Leader] = {}
        self._members: dict[str, frozenset[SeatKey]] = {}
        self._member_dirty = True
        self._member_lease: int | None = None  # the lease this replica's member key is attached to
        self._dirty = True  # something under the prefix may have changed since the last read
        self._watch: Watch | None = None
        self._imbalanced_since: float | None = None
        self._reported: dict[SeatKey, bool] = {}
        self._last_leader: dict[SeatKey, str] = {}
        self._transitions: Counter[SeatKey] = Counter()

    @property
    def calls(self) -> Counter[str]:
        """Requests sent to etcd, by kind (grant, keepalive, range, txn, put, revoke, timetolive)."""
        return self._client.calls

    @property
    def lease_id(self) -> int | None:
        """This replica's etcd lease (None before it joined, or after it lost it)."""
        return self._lease

    @property
    def watching(self) -> bool:
        """True while the watch on the prefix is up (rounds then read only when something changed)."""
        with self._lock:
            return self._watch is not None and self._watch.alive

    @property
    def fence_deadline(self) -> float:
        """Until when (this process's monotonic clock) the lease is known valid (0: it is not)."""
        return self._deadline

    # -- life -------------------------------------------------------------------------------------------

    def start(self) -> Coordinator:
        """Start the loop (join: lease, member key; then keepalives and campaigns) and the fence timer.
        Returns at once: etcd being down is not an error here, ``healthy()`` and ``why`` say so."""
        for name, target in (("agentvm-coordinator", self._run), ("agentvm-fence", self._fence)):
            thread = threading.Thread(target=target, name=f"{name}-{self.replica}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Resign every seat and revoke the lease (etcd deletes this replica's keys at once, so another
        replica takes over now, not after a TTL). Best effort when etcd is unreachable: then the lease
        expires after its TTL."""
        self._stopping.set()
        self._wake.set()
        self._fence_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(self._client.timeout * 4 + 1.0)
        self._drop_watch()
        with self._lock:
            lease, self._lease = self._lease, None
            led = sorted(self._led)
            self._led.clear()
            self._trouble = "stopped"
        self._notify()
        if lease is not None:
            try:
                self._client.revoke(lease)
            except EtcdError as exc:
                self._event(
                    None, "warning", f"could not revoke lease on stop (it expires in {self.ttl} s): {exc}"
                )
        for seat in led:
            self._event(seat, "info", f"resigned {seat}: replica {self.replica} stopped")
        self._client.close()

    def seat(self, key: SeatKey) -> Seat:
        """This replica wants to lead ``key`` (when the spread policy gives it to it); the same Seat for the
        same key until it is released."""
        with self._lock:
            seat = self._wants.get(key)
            if seat is None:
                seat = Seat(self, key)
                self._wants[key] = seat
                self._reported[key] = False
                self._member_dirty = True
        self._wake.set()
        return seat

    def members(self) -> tuple[str, ...]:
        """The live replicas (this one included once joined), as last read from etcd."""
        with self._lock:
            found = set(self._members)
            if self._lease is not None:
                found.add(self.replica)
            return tuple(sorted(found))

    def healthy(self) -> bool:
        """etcd answered the last request and this replica's lease is known valid."""
        with self._lock:
            return self._trouble is None and self._lease is not None and self._clock() < self._deadline

    @property
    def trouble(self) -> str | None:
        """Why ``healthy()`` is false (None when healthy), for ``/readyz``."""
        with self._lock:
            if self._trouble is not None:
                return self._trouble
            if self._clock() >= self._deadline:
                return f"the etcd lease could not be renewed in time (TTL {self._granted} s)"
            return None

    # -- seats (called through Seat) --------------------------------------------------------------------

    def _valid(self, key: SeatKey) -> bool:
        with self._lock:
            return (
                key in self._led
                and key in self._wants
                and self._trouble is None
                and self._lease is not None
                and self._clock() < self._deadline
            )

    def _leader(self, key: SeatKey) -> LeaderInfo | None:
        with self._lock:
            leader = self._leaders.get(key)
            return leader.info if leader is not None else None

    def _why(self, key: SeatKey) -> str | None:
        with self._lock:
            seat = self._wants.get(key)
            if seat is None:
                return "released by this replica"
            if self._valid(key):
                return None
            trouble = self.trouble
            if trouble is not None and trouble != "not started":
                return trouble
            leader = self._leaders.get(key)
            if leader is not None and leader.info.replica != self.replica:
                return f"led by {leader.info.describe()}"
            if trouble == "not started" or self._lease is None:
                return "not joined yet"
            return "nobody leads it yet: campaigning"

    def _release(self, seat: Seat) -> None:
        with self._lock:
            if self._wants.get(seat.key) is not seat:
                return
            del self._wants[seat.key]
            seat.released = True
            had = seat.key in self._led
            self._led.discard(seat.key)
            self._member_dirty = True
            lease = self._lease
        self._notify(also=[seat])
        if had and lease is not None:
            try:
                self._client.delete_if_lease(leader_key(seat.key), lease)
            except EtcdError as exc:
                self._event(seat.key, "warning", f"could not resign {seat.key} in etcd: {exc}")
            else:
                self._event(seat.key, "info", f"resigned {seat.key}: released")
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except EtcdError as exc:
                self._fail(str(exc))
            except Exception as exc:  # the loop outlives every failure; seats fence meanwhile
                log.exception("coordination step failed")
                self._fail(f"{type(exc).__name__}: {exc}")
            self._notify()
            with self._lock:
                wait = max(0.0, self._keepalive_at - self._clock())
            if self._wake.wait(wait):
                self._wake.clear()

    def _step(self) -> None:
        if self._lease is None:
            self._join()
        elif self._clock() >= self._keepalive_at:
            self._keepalive()
            if self._lease is None:  # lost: join again at once
                self._join()
        with self._lock:
            lease = self._lease
            dirty = self._member_dirty
            self._member_dirty = False
        if lease is None or self._stopping.is_set():
            return
        if self._member_lease != lease:
            if not self._claim_member(lease):
                return
        elif dirty:
            self._client.put(MEMBERS + self.replica, self._member_value(), lease)
        with self._lock:
            watching = self._watch is not None and self._watch.alive
            stale, self._dirty = self._dirty or not watching, False
        if stale:  # idle, with the watch up, a round costs one keepalive and nothing else
            self._read(lease)
        self._spread(lease)

    def _claim_member(self, lease: int) -> bool:
        """Create this replica's member key (one transaction). Another live process with the same replica
        id holds it: then act on nothing and try again each round (a restarted replica of fixed id waits
        there for its previous life's lease to expire)."""
        ok, current = self._client.create(MEMBERS + self.replica, self._member_value(), lease)
        if ok or (current is not None and current.lease == lease):
            with self._lock:
                self._member_lease = lease
            return True
        holder = _member_pid(current)
        text = (
            f"replica id {self.replica} is in use by another process{holder}: not acting until it stops "
            "(or its etcd lease expires); give each replica its own id"
        )
        with self._lock:
            first = self._trouble != text
            self._trouble = text
            self._led.clear()
        if first:
            self._event(None, "error", text)
        return False

    def _join(self) -> None:
        started = self._clock()
        grant = self._client.grant(self.ttl)
        with self._lock:
            self._lease = grant.lease
            self._granted = grant.ttl
            self._deadline = fence_deadline(started, grant.ttl) or 0.0
            self._keepalive_at = started + keepalive_every(grant.ttl)
            self._member_dirty = True
            self._since = _now_text()
        self._fence_wake.set()
        self._event(None, "info", f"replica {self.replica} joined (etcd lease TTL {grant.ttl} s)")

    def _keepalive(self) -> None:
        lease = self._lease
        assert lease is not None
        started = self._clock()
        ttl = self._client.keepalive(lease)
        deadline = fence_deadline(started, ttl)
        with self._lock:
            late = self._trouble is None and self._clock() >= self._deadline
            if deadline is None:
                lost = sorted(self._led)
                self._lease = None
                self._led.clear()
                self._deadline = 0.0
            else:
                self._granted = ttl
                self._deadline = deadline
                self._keepalive_at = started + keepalive_every(ttl)
        self._fence_wake.set()
        if late and deadline is not None:
            self._event(None, "info", f"the etcd lease of replica {self.replica} is renewed again")
        if deadline is None:
            self._notify()
            self._event(
                None,
                "error",
                f"the etcd lease of replica {self.replica} expired; joining again"
                + (f" (stopped leading {', '.join(map(str, lost))})" if lost else ""),
            )

    def _read(self, lease: int) -> None:
        revision, entries = self._client.range_prefix(PREFIX)
        self._ensure_watch(revision)
        members: dict[str, frozenset[SeatKey]] = {}
        leaders: dict[SeatKey, _Leader] = {}
        for entry in entries:
            if entry.key.startswith(MEMBERS):
                member = _member_of(entry)
                if member is not None:
                    members[member[0]] = member[1]
            elif entry.key.startswith(LEADERS):
                seat, leader = _seat_of(entry.key), _leader_of(entry)
                if seat is not None and leader is not None:
                    leaders[seat] = leader
        recovered = False
        with self._lock:
            if self._lease != lease:
                return
            self._members = members
            self._leaders = leaders
            leases = {s: leader.lease for s, leader in leaders.items()}
            self._led = set(led_after_read(leases, lease, self._wants))
            recovered = (self._trouble or "").startswith(UNREACHABLE)
            self._trouble = None
        if recovered:
            self._event(
                None, "info", f"etcd answers again; replica {self.replica} leads {len(self._led)} seats"
            )
        self._seen(leaders)

    def _ensure_watch(self, revision: int) -> None:
        """Watch the prefix from just after the read at ``revision``: every later change wakes the loop
        for a read at once (a leader that stops is replaced now, not at the next keepalive)."""
        with self._lock:
            if self._watch is not None or self._stopping.is_set():
                return
            holder: list[Watch] = []

            def changed() -> None:
                with self._lock:
                    self._dirty = True
                self._wake.set()

            def ended(why: str) -> None:
                log.debug("%s", why)
                with self._lock:
                    if holder and self._watch is holder[0]:
                        self._watch = None
                    self._dirty = True
                self._wake.set()

            watch = self._client.watch_prefix(PREFIX, revision + 1, changed, ended)
            holder.append(watch)
            self._watch = watch

    def _drop_watch(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
            self._dirty = True
        if watch is not None:
            watch.cancel()

    def _seen(self, leaders: dict[SeatKey, _Leader]) -> None:
        changes: list[tuple[SeatKey, LeaderInfo]] = []
        with self._lock:
            for seat in self._wants:
                leader = leaders.get(seat)
                if leader is not None and self._last_leader.get(seat) != leader.info.replica:
                    self._last_leader[seat] = leader.info.replica
                    self._transitions[seat] += 1
                    changes.append((seat, leader.info))
        for seat, info in changes:
            if info.replica == self.replica:
                self._event(seat, "info", f"replica {self.replica} leads {seat}")
            else:
                self._event(seat, "info", f"{seat} is led by {info.describe()}")

    def _spread(self, lease: int) -> None:
        with self._lock:
            wants = dict(self._members)
            wants[self.replica] = frozenset(self._wants)
            view = View(wants=wants, leaders={s: leader.info.replica for s, leader in self._leaders.items()})
            decided = plan(
                view,
                self.replica,
                now=self._clock(),
                imbalanced_since=self._imbalanced_since,
                hold_down=self.hold_down,
            )
            self._imbalanced_since = decided.imbalanced_since
        for seat in decided.resign:
            with self._lock:
                self._led.discard(seat)  # stop acting first, then give it up
            self._notify()
            if self._client.delete_if_lease(leader_key(seat), lease):
                with self._lock:
                    self._leaders.pop(seat, None)
                self._event(seat, "info", f"resigned {seat} to spread the leaderships over the replicas")
        won: dict[SeatKey, _Leader] = {}
        for seat in decided.campaign:
            since = _now_text()
            value = json.dumps({"replica": self.replica, "host": self.host, "pid": self.pid, "since": since})
            ok, current = self._client.create(leader_key(seat), value.encode(), lease)
            with self._lock:
                if self._lease != lease:
                    return
                found = _leader_of(current) if current is not None else None
                holder = current.lease if current is not None else None
                self._led = set(
                    led_after_campaign(self._led, seat, won=ok, holder=holder, lease=lease, wants=self._wants)
                )
                if ok:
                    leader = _Leader(LeaderInfo(self.replica, self.host, self.pid, since), lease)
                elif found is not None:
                    leader = found
                else:
                    continue
                self._leaders[seat] = leader
                won[seat] = leader
        if won:
            self._seen(won)
        if decided.resign or decided.campaign:
            with self._lock:
                self._dirty = True
            self._wake.set()  # read again at once: the others' moves follow ours

    def _member_value(self) -> bytes:
        with self._lock:
            seats = sorted(self._wants)
        raw = {
            "replica": self.replica,
            "host": self.host,
            "pid": self.pid,
            "since": self._since,
            "seats": [[s.vcenter, s.solution] for s in seats],
        }
        return json.dumps(raw).encode()

    def _fail(self, why: str) -> None:
        self._drop_watch()
        with self._lock:
            first = not (self._trouble or "").startswith(UNREACHABLE)
            lost = sorted(self._led)
            self._led.clear()
            self._trouble = f"{UNREACHABLE}: {why}"
            self._member_dirty = True
            self._keepalive_at = self._clock() + keepalive_every(self._granted)
        if first:
            self._event(
                None,
                "error",
                f"etcd unreachable: {why}; replica {self.replica} stopped acting"
                + (f" on {', '.join(map(str, lost))}" if lost else ""),
            )
        for seat in lost:
            self._event(seat, "error", f"stopped leading {seat}: etcd unreachable: {why}")

    # -- fencing and notification -----------------------------------------------------------------------

    def _fence(self) -> None:
        """Wakes at the fence deadline, so that listeners hear of a lease that ran out at that moment, even
        while the loop is stuck in a request."""
        while not self._stopping.is_set():
            with self._lock:
                wait = self._deadline - self._clock()
            if wait > 0:
                if self._fence_wake.wait(wait):
                    self._fence_wake.clear()
                    continue
            else:
                self._fence_wake.wait()
                self._fence_wake.clear()
                continue
            self._notify()
            with self._lock:
                expired = (
                    self._trouble is None and self._lease is not None and self._clock() >= self._deadline
                )
            if expired:
                self._event(
                    None,
                    "error",
                    f"the etcd lease could not be renewed in time: replica {self.replica} stopped acting",
                )

    def _notify(self, also: Sequence[Seat] = ()) -> None:
        with self._notify_lock:
            changed: list[tuple[Seat, bool]] = []
            with self._lock:
                for seat in [*self._wants.values(), *also]:
                    valid = self._valid(seat.key)
                    if self._reported.get(seat.key, False) != valid:
                        self._reported[seat.key] = valid
                        changed.append((seat, valid))
                for seat in also:
                    self._reported.pop(seat.key, None)
            for seat, valid in changed:
                for callback in list(seat._listeners):
                    try:
                        callback(valid)
                    except Exception:
                        log.exception("a leadership listener of %s failed", seat.key)

    def _event(self, seat: SeatKey | None, level: str, text: str) -> None:
        getattr(log, level if level in ("info", "warning", "error") else "info")("%s", text)
        if self._on_event is not None:
            try:
                self._on_event(seat, level, text)
            except Exception:
                log.exception("the coordination event sink failed")
