"""The controller's recent events: a bounded in-memory log, and a fan-out to live subscribers.

The controller publishes one event per action it takes and per issue it sees appear or clear; the HTTP
API serves the recent ones at ``/api/v1/events`` and streams new ones as server-sent events, one
``Subscription`` per connected client. Thread-safe: any thread publishes, any thread reads.

Events are numbered from 1 in publication order, so a client that reconnects with the id of the last event
it saw (SSE's ``Last-Event-ID``) gets the ones it missed, as long as they are still in the log. A publisher
never waits for a subscriber: one that falls ``max_pending`` events behind is closed (its client reconnects
and catches up from the log).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from agentvm.vsphere.faults import redact

LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class Event:
    """One thing the controller did or saw. ``host`` is the host's moid, ``host_name`` its inventory path."""

    id: int
    time: float  # unix seconds
    type: str  # "action", "issue", "heal", "hook", "resync", "connection", ...
    message: str
    level: str = "info"
    agency: str | None = None
    host: str | None = None
    host_name: str | None = None
    correlation_id: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)  # JSON values only

    def as_json(self) -> dict[str, object]:
        """The event as the API serves it (``null`` fields left out)."""
        out: dict[str, object] = {"id": self.id, "time": self.time, "type": self.type, "level": self.level}
        out["message"] = self.message
        for name in ("agency", "host", "host_name", "correlation_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.data:
            out["data"] = dict(self.data)
        return out


class Subscription:
    """Events published after it was made, in order. Made by ``EventLog.subscribe``; close it when done.

    ``backlog`` holds the events the subscriber asked to catch up on (after an id), already in the log.
    """

    def __init__(self, log: EventLog, backlog: tuple[Event, ...], max_pending: int) -> None:
        self._log = log
        self.backlog = backlog
        self._pending: collections.deque[Event] = collections.deque()
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._closed = False
        self.overflowed = False

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def _deliver(self, event: Event) -> None:
        """Called by the log under its lock: never blocks."""
        with self._cond:
            if self._closed:
                return
            if len(self._pending) >= self._max_pending:
                self.overflowed = True
                self._closed = True
            else:
                self._pending.append(event)
            self._cond.notify_all()

    def get(self, timeout: float) -> Event | None:
        """The next event, waiting up to ``timeout`` s; None on timeout or once closed and drained."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._pending:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._pending.popleft()

    def close(self) -> None:
        """Stop receiving; a ``get`` waiting now returns None. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._log._unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventLog:
    """The last ``capacity`` events and the live subscriptions; ``clock``: unix seconds (faked in tests)."""

    def __init__(self, capacity: int = 1000, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError(f"an event log needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._next_id = 1
        self._closed = False
        self._secrets: tuple[str, ...] = ()

    def add_secret(self, secret: str) -> None:
        """Never show ``secret`` (a password, a token) in an event: it is replaced by ``***``. Values
        shorter than 4 characters are ignored (they would blank ordinary words)."""
        if len(secret) >= 4:
            with self._lock:
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def _scrub(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _scrub_value(self, value: object) -> object:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list | tuple):
            return [self._scrub_value(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub_value(v) for k, v in value.items()}
        return value

    def publish(
        self,
        type: str,
        message: str,
        *,
        level: str = "info",
        agency: str | None = None,
        host: str | None = None,
        host_name: str | None = None,
        correlation_id: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> Event:
        """Record an event and hand it to every subscriber. Never blocks on a subscriber.

        Raises ValueError for an unknown level, TypeError when ``data`` is not JSON (caught here, not when
        a client reads it). Callers must keep secrets out of ``message`` and ``data``; as a second line
        (``/api/v1/events`` needs no token) every text is scrubbed of session keys (``faults.redact``) and
        of the values given to ``add_secret``.
        """
        if level not in LEVELS:
            raise ValueError(f"event level {level!r} is not one of {list(LEVELS)}")
        payload = dict(data or {})
        json.dumps(payload)  # TypeError now, naming the value, rather than in a client's stream
        message = self._scrub(message)
        payload = {k: self._scrub_value(v) for k, v in payload.items()}
        with self._lock:
            event = Event(
                self._next_id,
                self._clock(),
                type,
                message,
                level,
                agency,
                host,
                host_name,
                correlation_id,
                payload,
            )
            self._next_id += 1
            self._events.append(event)
            # delivered under the lock so that every subscriber sees events in id order
            for subscriber in self._subscribers:
                subscriber._deliver(event)
        return event

    def recent(self, limit: int | None = None, *, after: int | None = None) -> list[Event]:
        """The events still in the log, oldest first: those after id ``after``, the last ``limit`` of them."""
        with self._lock:
            events = [e for e in self._events if after is None or e.id > after]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    @property
    def last_id(self) -> int:
        """The id of the last event published (0: none yet)."""
        with self._lock:
            return self._next_id - 1

    def subscribe(self, *, after: int | None = None, max_pending: int = 1000) -> Subscription:
        """A subscription to events published from now on; with ``after``, ``backlog`` holds those since.

        Made under the log's lock, so no event falls between the backlog and the live ones. A subscription
        made after ``close`` is closed at once.
        """
        with self._lock:
            backlog = tuple(e for e in self._events if after is not None and e.id > after)
            subscription = Subscription(self, backlog, max_pending)
            if self._closed:
                subscription._closed = True
            else:
                self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """Close every subscription (their streams end) and refuse new ones; publishing still records."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.close()
