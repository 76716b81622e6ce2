"""One ``agentvm run`` process: its controllers (one per spec), who leads each, and what its API serves.

Built by ``cli.run``; the API's callables (``Replica.api_callables``) serve every controller at once.

## Without ``--coordination``
Every spec's controller holds its solution's lease in vCenter (``controller.lease``) for its life, as a
single ``run`` always did: a second ``run`` on the same vCenter and solution refuses, naming the holder.

## With ``--coordination etcd://…``
Every replica runs a controller for every spec; for each spec's seat (vCenter instanceUuid, solution key;
``controller.leadership``) only the replica whose ``Seat.valid()`` is true acts. ``Leadership`` is what the
controller checks before each pass and engine step, and it is valid only while *both* hold:

- the etcd seat: the replicas' election, which moves leadership within one etcd lease TTL when a replica
  dies, and spreads the seats over the replicas;
- the solution's lease in vCenter, taken by the seat's leader once it wins the seat and released as soon as
  the seat is not valid (fenced, lost, resigned). This keeps ``apply``/``destroy`` and a ``run`` without
  coordination excluded from a coordinated estate, exactly as against a single ``run``: they see the lease
  held. It also keeps the vCenter side safe on its own should etcd ever grant a seat twice (a
  misconfigured cluster, a restored backup): two replicas cannot both hold the vCenter lease.

A follower observes the lease record (``Lease.observe``, one extensionList read per TTL/4: reads only), so
that when it wins the seat after a leader was killed, the dead leader's record has been watched unchanged
since about its last renewal: the takeover waits about one TTL after that renewal, not a TTL for the etcd
seat and then another for the vCenter lease. A leader that resigned or fenced released its record (marked
released), which the next leader takes at once.

Losing the seat never ends the process: the controller turns follower (``Controller`` with a lease that
``follows``: its watch and read-only status go on), an event and ``/readyz`` say why, and when it wins again
its first pass is a full pass with the sweep.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agentvm.controller.events import EventLog
from agentvm.controller.metrics import Registry, merge_expositions
from agentvm.controller.run import Controller
from agentvm.core.lease import Judgement, LeaseVerdict, renew_every
from agentvm.model.errors import AgentvmError, NotFoundError, TransientError

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]


class LeaderLike(Protocol):
    """Who leads a seat (``model.coordination.LeaderInfo``)."""

    @property
    def replica(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def since(self) -> str: ...


class SeatLike(Protocol):
    """A replica's seat (``controller.leadership.Seat``): valid while this replica leads it."""

    @property
    def why(self) -> str | None: ...

    @property
    def transitions(self) -> int: ...

    def valid(self) -> bool: ...

    def leader(self) -> LeaderLike | None: ...

    def add_listener(self, callback: Callable[[bool], None]) -> None: ...


class LeaseLike(Protocol):
    """The solution's lease in vCenter as ``Leadership`` uses it (``controller.lease.Lease``)."""

    @property
    def lost(self) -> str | None: ...

    def valid(self) -> bool: ...

    def renew(self) -> bool: ...

    def step(self) -> Judgement: ...

    def observe(self) -> Judgement: ...

    def release(self) -> None: ...


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Leadership:
    """The right of this replica to act on one spec: its etcd seat and the solution's vCenter lease, both
    (see the module docstring). Given to the spec's ``Controller`` as its lease (``follows``: not valid
    means follow, never stop). ``start()`` runs its steward thread: it takes the vCenter lease when the seat
    is won, renews it every TTL/4 while leading, releases it as soon as the seat is not valid, and observes
    it while following. ``say(level, text)`` is told every change of role, once each."""

    follows = True
    lost: str | None = None  # a replica never loses for good: it follows

    def __init__(
        self,
        seat: SeatLike,
        make_lease: Callable[[], LeaseLike],
        *,
        ttl: float,
        replica: str,
        say: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seat = seat
        self.ttl = ttl
        self.replica = replica
        self._make_lease = make_lease
        self._say = say
        self._clock = clock
        self._lease: LeaseLike | None = None  # the vCenter lease while leading
        self._observer: LeaseLike | None = None  # its sightings, while not holding
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentvm-leadership", daemon=True)
        self.role = (
            "starting"  # leader / follower / waiting (seat won, vCenter lease held by another) / fenced
        )
        self.since: str | None = None  # when this replica took up its current role (ISO UTC)
        self.why: str | None = None
        self.leading_since: str | None = None
        self.leader_transitions = 0  # times this replica became or stopped being the leader
        seat.add_listener(lambda valid: self._wake.set())

    # -- what the controller checks --------------------------------------------------------------------

    def valid(self) -> bool:
        """True while the seat is valid and the vCenter lease is held and valid."""
        lease = self._lease
        return lease is not None and lease.valid() and self.seat.valid()

    # -- the steward ------------------------------------------------------------------------------------

    def start(self) -> Leadership:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the steward and release the vCenter lease (the seat itself is resigned by the Coordinator)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10.0)
        self._release()

    def _run(self) -> None:
        every = renew_every(self.ttl)
        while not self._stop.is_set():
            pause = every
            try:
                pause = self._turn(every)
            except Exception:  # the steward outlives every failure; validity runs out by itself
                log.exception("leadership of %s: a turn failed", self.replica)
            self._wake.wait(pause)
            self._wake.clear()

    def _turn(self, every: float) -> float:
        """One look: returns the seconds until the next (a seat change wakes it at once)."""
        if not self.seat.valid():
            if self._lease is not None:
                self._release()
            self._follow()
            return every
        lease = self._lease
        if lease is not None:
            if lease.renew() or lease.valid():
                self._set("leader", None)
                return every
            if lease.lost is not None:
                self._lease = None  # taken by another holder; judged afresh
                self._set("waiting", f"the solution's lease in vCenter was {lease.lost}")
            else:  # vCenter did not answer in time: not acting until a renewal succeeds
                self._set("fenced", "the solution's lease in vCenter could not be renewed in time")
            return min(every, 1.0)
        observer = self._observer if self._observer is not None else self._make_lease()
        self._observer = observer
        try:
            verdict = observer.step()
        except AgentvmError as exc:
            self._set("waiting", f"cannot take the solution's lease in vCenter: {exc}")
            return min(every, 1.0)
        if verdict.verdict is LeaseVerdict.MINE:
            self._lease, self._observer = observer, None
            self._set("leader", None)
            return every
        holder = verdict.holder.describe() if verdict.holder is not None else "another agentvm"
        self._set("waiting", f"won the seat; the solution's lease in vCenter is still held by {holder}")
        pause = min(every, 1.0)
        if verdict.expires_in > 0:
            pause = min(pause, verdict.expires_in + 0.01)
        return pause

    def _follow(self) -> None:
        why = self.seat.why
        leader = self.seat.leader()
        # fenced: nobody this replica knows of acts, or it cannot reach etcd (what it last read may be old)
        fenced = (
            leader is None or leader.replica == self.replica or (why or "").startswith("etcd unreachable")
        )
        self._set("fenced" if fenced else "follower", why or ("nobody leads" if leader is None else None))
        observer = self._observer if self._observer is not None else self._make_lease()
        self._observer = observer
        try:
            observer.observe()
        except AgentvmError as exc:
            log.debug("observing the solution's lease failed: %s", exc)

    def _release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        lease.release()
        self._observer = None

    def _set(self, role: str, why: str | None) -> None:
        with self._lock:
            if role == self.role and why == self.why:
                return
            was_leader = self.role == "leader"
            self.role, self.why = role, why
            self.since = _now_text()
            if (role == "leader") != was_leader:
                self.leader_transitions += 1
                self.leading_since = self.since if role == "leader" else None
        if role == "leader":
            self._say("info", "leading: took the seat and the solution's lease; one full resync")
        elif was_leader:
            self._say("error", f"not acting any more: {why or 'the seat is not valid'}; following")
        elif role == "follower":
            leader = self.seat.leader()
            who = (
                f"replica {leader.replica} (pid {leader.pid} on {leader.host}) since {leader.since}"
                if leader is not None
                else "nobody yet"
            )
            self._say("info", f"following: led by {who}")
        else:
            self._say("warning", f"{role}: {why}")

    def document(self) -> dict[str, object]:
        """The ``leadership`` object of the status document."""
        leader = self.seat.leader()
        return {
            "replica": self.replica,
            "role": self.role,
            "since": self.since,
            "why": self.why,
            "leader": _leader_json(leader),
            "transitions": self.seat.transitions,
        }


def _leader_json(leader: LeaderLike | None) -> dict[str, object] | None:
    if leader is None:
        return None
    return {"replica": leader.replica, "host": leader.host, "pid": leader.pid, "since": leader.since}


def _ask(members: Sequence[Member]) -> str:
    """Whom to ask instead, for a request this replica does not serve because it follows."""
    named = []
    for m in members:
        leader = m.leadership.seat.leader() if m.leadership is not None else None
        who = f"replica {leader.replica} (pid {leader.pid} on {leader.host})" if leader else "nobody yet"
        named.append(f"{m.solution} on {m.url} is led by {who}")
    return "; ".join(named) + " (retry there, or here once this replica leads)"


@dataclass
class Member:
    """One spec of this process: its controller and, with coordination, its ``Leadership``."""

    vcenter: str  # vCenter's instanceUuid (the URL when unknown)
    url: str
    solution: str
    controller: Controller
    leadership: Leadership | None = None
    since: str = ""  # without coordination: when its lease was taken

    def leads(self) -> bool:
        return self.leadership.valid() if self.leadership is not None else self.controller.lease is not None

    def labels(self) -> dict[str, str]:
        return {"vcenter": self.url, "solution": self.solution}

    def leadership_json(self, replica: str) -> dict[str, object]:
        if self.leadership is not None:
            return self.leadership.document()
        me = {"replica": replica, "host": socket.gethostname(), "pid": os.getpid(), "since": self.since}
        return {"replica": replica, "role": "leader", "since": self.since, "why": None, "leader": me}

    def ready(self) -> tuple[bool, str | None]:
        """(ready, why not): a leader while its passes succeed, a follower while it reads the status."""
        c = self.controller
        if self.leadership is None or self.leadership.role == "leader":
            if c.ready():
                return True, None
            return False, "not ready: its first full pass has not succeeded yet, or the last one failed"
        role, why = self.leadership.role, self.leadership.why
        if role == "follower" and c.following_ready():
            return True, None
        return False, f"{role}: {why}" if why else role


class Replica:
    """Every controller of one ``agentvm run`` and the API over them all (``api_callables``).

    With one spec the status document, ``/metrics`` and the resync/resolve bodies are what a single
    controller serves (the status gains its ``solution`` and ``leadership``); with several, ``/api/v1/status``
    is a ``StatusList`` of each (vCenter, solution)'s own document, ``/metrics`` labels each controller's
    series with ``vcenter`` and ``solution``, and resync/resolve go to every controller (or the one a body's
    ``solution``/``vcenter`` names)."""

    def __init__(
        self,
        members: Sequence[Member],
        events: EventLog,
        *,
        replica: str,
        etcd_calls: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """``etcd_calls``: the Coordinator's requests to etcd by kind so far (with coordination), shown as
        ``agentvm_etcd_requests_total{kind}``."""
        self.members = tuple(members)
        self.events = events
        self.replica = replica
        self._etcd_calls = etcd_calls
        self.registry = Registry()
        self.leader = self.registry.gauge(
            "agentvm_leader",
            "1 when this replica leads the vCenter's solution, 0 when it follows.",
            ("vcenter", "solution"),
        )
        self.transitions = self.registry.counter(
            "agentvm_leader_transitions_total",
            "Leader changes of the vCenter's solution seen by this replica.",
            ("vcenter", "solution"),
        )
        self._counted: dict[int, int] = {}
        self.etcd_requests = (
            self.registry.counter(
                "agentvm_etcd_requests_total", "Requests this replica sent to etcd, by kind.", ("kind",)
            )
            if etcd_calls is not None
            else None
        )
        self._etcd_counted: dict[str, int] = {}

    def _update_leader_metrics(self) -> None:
        if self._etcd_calls is not None and self.etcd_requests is not None:
            for kind, count in dict(self._etcd_calls()).items():
                delta = count - self._etcd_counted.get(kind, 0)
                if delta > 0:
                    self.etcd_requests.inc(delta, kind=kind)
                    self._etcd_counted[kind] = count
        for i, m in enumerate(self.members):
            labels = m.labels()
            self.leader.set(1 if m.leads() else 0, **labels)
            seen = m.leadership.seat.transitions if m.leadership is not None else 0
            delta = seen - self._counted.get(i, 0)
            if delta > 0:
                self.transitions.inc(delta, **labels)
                self._counted[i] = seen
            else:
                self.transitions.declare(**labels)

    # -- the API's callables -----------------------------------------------------------------------------

    def status(self) -> JsonObject:
        docs = [self._member_status(m) for m in self.members]
        if len(docs) == 1:
            return docs[0]
        return {"apiVersion": "agentvm/v1", "kind": "StatusList", "items": docs}

    def _member_status(self, m: Member) -> dict[str, Any]:
        try:
            doc = dict(m.controller.status())
        except TransientError as exc:
            if len(self.members) == 1:
                raise
            doc = {
                "apiVersion": "agentvm/v1",
                "kind": "Status",
                "vcenter": m.url,
                "agencies": [],
                "missing": [],
                "generatedAt": datetime.now(UTC).isoformat(),
                "error": str(exc),
            }
        doc["solution"] = m.solution
        doc["leadership"] = m.leadership_json(self.replica)
        return doc

    def ready(self) -> bool:
        return all(m.ready()[0] for m in self.members)

    def readiness(self) -> dict[str, object]:
        """``/readyz``'s body: ready, and each (vCenter, solution) with its role and why it is not ready."""
        items = []
        for m in self.members:
            ok, why = m.ready()
            role = m.leadership.role if m.leadership is not None else "leader"
            items.append({"vcenter": m.url, "solution": m.solution, "role": role, "ready": ok, "why": why})
        return {"ready": all(i["ready"] for i in items), "controllers": items}

    def metrics_text(self) -> str:
        self._update_leader_metrics()
        own = self.registry.render()
        if len(self.members) == 1:
            return self.members[0].controller.metrics_text() + own
        parts = [(m.labels(), m.controller.metrics_text()) for m in self.members]
        return merge_expositions(parts) + own

    def _chosen(self, body: JsonObject) -> list[Member]:
        solution, vcenter = body.get("solution"), body.get("vcenter")
        chosen = [
            m
            for m in self.members
            if (solution is None or m.solution == solution)
            and (vcenter is None or vcenter in (m.url, m.vcenter))
        ]
        if not chosen:
            known = ", ".join(f"{m.solution} on {m.url}" for m in self.members)
            raise NotFoundError(
                f"no controller for solution {solution!r} on vCenter {vcenter!r} (here: {known})"
            )
        return chosen

    def resync(self, body: JsonObject) -> JsonObject | None:
        """Ask the chosen controllers this replica leads for a full pass (``POST /api/v1/resync``).

        A follower does not take it (nor keep it for later: a replica that wins a seat resyncs anyway):
        when it leads none of them, TransientError (503) saying so and naming each leader; when it leads
        some, those resync and the answer (200) lists the others under ``following`` with their leader."""
        chosen = self._chosen(body)
        rest = {k: v for k, v in body.items() if k not in ("solution", "vcenter")}
        following = [m for m in chosen if m.leadership is not None and not m.leads()]
        if len(following) == len(chosen):
            raise TransientError("this replica follows and only the leader resyncs: " + _ask(following))
        for m in chosen:
            if m not in following:
                m.controller.resync(rest)
        if not following:
            return None
        return {
            "accepted": True,
            "following": [
                {
                    "solution": m.solution,
                    "vcenter": m.url,
                    "leader": _leader_json(m.leadership.seat.leader() if m.leadership else None),
                }
                for m in following
            ],
        }

    def resolve(self, body: JsonObject) -> JsonObject:
        """Resolve on the chosen controllers this replica leads (``POST /api/v1/resolve``): with one spec
        its ``Reconciler.resolve_keys`` answer, with several a ``ResolveList`` (``resolvelist-v1.json``).
        TransientError (503) naming the leaders when it leads none of them."""
        chosen = self._chosen(body)
        rest = {k: v for k, v in body.items() if k not in ("solution", "vcenter")}
        leading = [m for m in chosen if m.leads()]
        if not leading:
            raise TransientError(
                "this replica does not lead that solution now and only the leader resolves: " + _ask(chosen)
            )
        if len(self.members) == 1:
            return leading[0].controller.resolve(rest)
        return {
            "apiVersion": "agentvm/v1",
            "kind": "ResolveList",
            "results": [
                {"solution": m.solution, "vcenter": m.url, **m.controller.resolve(rest)} for m in leading
            ],
        }

    def api_callables(self) -> dict[str, Any]:
        """The keyword arguments of ``agentvm.api.server.Api`` (everything but ``token``)."""
        return {
            "status": self.status,
            "ready": self.ready,
            "readiness": self.readiness,
            "metrics": self.metrics_text,
            "events": self.events,
            "resync": self.resync,
            "resolve": self.resolve,
        }
