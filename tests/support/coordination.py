"""Coordinators on a test's etcd: start several, record what their seats' listeners heard, stop them all."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from agentvm.controller.leadership import Coordinator, Seat, SeatKey, parse_coordination
from tests.support.controller_lab import wait_for

T = TypeVar("T")

TTL = 2.0  # etcd's minimum with its default heartbeat (it raises 1 to 2)


def until(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Wait for ``check()`` to be truthy (a condition reached: an event, not a delay) and return it."""
    return wait_for(check, what, timeout, interval=0.02)


@dataclass
class Journal:
    """Every validity change of every seat, in the order the listeners heard them: (replica, seat, valid)."""

    entries: list[tuple[str, SeatKey, bool]] = field(default_factory=list)
    events: list[tuple[str, SeatKey | None, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listen(self, replica: str, seat: Seat) -> None:
        def heard(valid: bool) -> None:
            with self.lock:
                self.entries.append((replica, seat.key, valid))

        seat.add_listener(heard)

    def sink(self, replica: str) -> Callable[[SeatKey | None, str, str], None]:
        def event(seat: SeatKey | None, level: str, text: str) -> None:
            with self.lock:
                self.events.append((replica, seat, level, text))

        return event

    def index(self, replica: str, key: SeatKey, valid: bool) -> int | None:
        with self.lock:
            for i, entry in enumerate(self.entries):
                if entry == (replica, key, valid):
                    return i
        return None

    def texts(self, replica: str, level: str) -> list[str]:
        with self.lock:
            return [t for r, _, lv, t in self.events if r == replica and lv == level]


@contextmanager
def coordinators(
    url: str | Sequence[str],
    count: int,
    *,
    journal: Journal | None = None,
    ttl: float = TTL,
    hold_down: float = 0.3,
    first: int = 0,
) -> Iterator[list[Coordinator]]:
    """``count`` started Coordinators named r<first>, r<first+1>, … (``url`` per replica, or one for all);
    stopped after."""
    urls = [url] * count if isinstance(url, str) else list(url)
    started: list[Coordinator] = []
    try:
        for i, where in enumerate(urls):
            name = f"r{first + i}"
            sink = journal.sink(name) if journal is not None else None
            started.append(
                Coordinator(
                    parse_coordination(where), ttl=ttl, replica=name, on_event=sink, hold_down=hold_down
                )
            )
        for c in started:
            c.start()
        yield started
    finally:
        for c in started:
            c.stop()


def seats(coordinators: Sequence[Coordinator], key: SeatKey, journal: Journal | None = None) -> list[Seat]:
    found = [c.seat(key) for c in coordinators]
    if journal is not None:
        for c, seat in zip(coordinators, found, strict=True):
            journal.listen(c.replica, seat)
    return found


def valid(seats: Sequence[Seat]) -> list[int]:
    """The indexes of the seats that are valid now."""
    return [i for i, s in enumerate(seats) if s.valid()]


def proxied(port: int) -> str:
    """The coordination URL of a loopback proxy (``tests.support.tcp_proxy``) in front of etcd."""
    return f"etcd://127.0.0.1:{port}"
