"""The controller's event log (agentvm.controller.events): bounded, ordered, fanned out to subscribers."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.controller.events import EventLog


def _clock() -> EventLog:
    ticks = itertools.count(1_700_000_000)
    return EventLog(capacity=5, clock=lambda: float(next(ticks)))


def test_events_are_numbered_timed_and_kept_up_to_the_capacity() -> None:
    log = _clock()
    for n in range(8):
        log.publish("action", f"powered on agent {n}", host=f"host-{n}")
    recent = log.recent()
    assert [e.id for e in recent] == [4, 5, 6, 7, 8]
    assert recent[0].time == 1_700_000_003.0
    assert log.last_id == 8
    assert [e.id for e in log.recent(2)] == [7, 8]
    assert [e.id for e in log.recent(after=6)] == [7, 8]
    assert log.recent(0) == []


def test_as_json_leaves_out_empty_fields() -> None:
    log = _clock()
    event = log.publish(
        "issue", "VmPoweredOff on host-1", level="warning", host="host-1", data={"kind": "VmPoweredOff"}
    )
    assert event.as_json() == {
        "id": 1,
        "time": 1_700_000_000.0,
        "type": "issue",
        "level": "warning",
        "message": "VmPoweredOff on host-1",
        "host": "host-1",
        "data": {"kind": "VmPoweredOff"},
    }


def test_bad_events_are_refused_at_publication() -> None:
    log = _clock()
    with pytest.raises(ValueError, match="level 'loud'"):
        log.publish("x", "y", level="loud")
    with pytest.raises(TypeError):
        log.publish("x", "y", data={"when": object()})
    assert log.last_id == 0


def test_a_subscriber_gets_what_is_published_after_it_subscribed() -> None:
    log = _clock()
    log.publish("action", "before")
    with log.subscribe() as sub:
        assert sub.backlog == ()
        log.publish("action", "after")
        event = sub.get(timeout=1)
        assert event is not None and event.message == "after"
        assert sub.get(timeout=0.01) is None  # nothing more: times out
    assert log.subscribers == 0


def test_a_reconnecting_subscriber_catches_up_from_the_log() -> None:
    log = _clock()
    for n in range(4):
        log.publish("action", f"e{n}")
    sub = log.subscribe(after=2)
    assert [e.id for e in sub.backlog] == [3, 4]
    sub.close()


def test_a_waiting_subscriber_wakes_when_an_event_is_published_from_another_thread() -> None:
    log = EventLog()
    sub = log.subscribe()
    got: list[str] = []

    def wait() -> None:
        event = sub.get(timeout=10)
        got.append(event.message if event else "timeout")

    thread = threading.Thread(target=wait)
    thread.start()
    log.publish("action", "hello")
    thread.join(timeout=10)
    assert got == ["hello"]


def test_closing_the_log_ends_every_stream() -> None:
    log = EventLog()
    sub = log.subscribe()
    done = threading.Event()

    def wait() -> None:
        assert sub.get(timeout=30) is None
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    log.close()
    assert done.wait(timeout=10)
    thread.join(timeout=10)
    assert sub.closed and log.subscribers == 0
    assert log.subscribe().closed


def test_a_slow_subscriber_is_closed_rather_than_slowing_the_publisher() -> None:
    log = EventLog()
    sub = log.subscribe(max_pending=3)
    for n in range(10):
        log.publish("action", f"e{n}")
    assert sub.overflowed and sub.closed
    assert [sub.get(timeout=0.01) for _ in range(4)][3] is None  # the 3 it had, then the end


@given(st.lists(st.integers(1, 3), min_size=1, max_size=40), st.integers(1, 10))
def test_concurrent_publishers_are_seen_in_id_order(chunks: list[int], capacity: int) -> None:
    log = EventLog(capacity=capacity)
    sub = log.subscribe(max_pending=10_000)

    def publish(n: int) -> None:
        for _ in range(n):
            log.publish("action", "x")

    threads = [threading.Thread(target=publish, args=(n,)) for n in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = []
    while (event := sub.get(timeout=0)) is not None:
        ids.append(event.id)
    assert ids == list(range(1, sum(chunks) + 1))
    assert len(log.recent()) == min(capacity, sum(chunks))
    sub.close()


def test_events_never_carry_a_session_key_or_a_registered_secret() -> None:
    log = EventLog()
    log.add_secret("hunter2-password")
    key = "52c5b6a1-7e0f-4d2a-9f1b-3c4d5e6f7a8b"
    event = log.publish(
        "netsync",
        f"WaitForUpdatesEx on PropertyCollector:session[{key}]52aa failed; password hunter2-password",
        level="error",
        data={"item": f"session[{key}]52aa", "nested": [{"why": "hunter2-password"}]},
    )
    text = str(event.as_json())
    assert key not in text and "hunter2-password" not in text
    assert "session[...]52aa" in event.message and "***" in event.message
    assert log.recent()[-1] == event
