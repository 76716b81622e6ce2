"""The lease's pure decisions (agentvm.core.lease), and the protocol built on them never giving two actors.

The last test runs the protocol of ``controller.lease`` — read, judge, RegisterExtension, read, confirm;
renew = UpdateExtension then read; release; destroy's removal of every record — for several contenders
over one linearizable store of records (what vCenter's ExtensionManager is), under schedules hypothesis
chooses: any interleaving of the calls, a write landing anywhere between its call's start and its reply,
time passing in between, processes killed (-9) at any point, and clocks whose rates differ by up to 5 %.
After every step at most one process may act.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.lease import (
    LeaseVerdict,
    Sighting,
    confirm,
    judge,
    renew_every,
    stale,
    still_mine,
    valid_until,
)
from agentvm.model.lease import LeaseHolder, LeaseRecord

TTL = 10.0


def holder(token: str, command: str = "apply") -> LeaseHolder:
    return LeaseHolder(host="h", pid=1, command=command, started="2026-12-01T00:00:00Z", token=token)


def record(generation: int, token: str | None, renewals: int = 0, *, released: bool = False) -> LeaseRecord:
    who = holder(token) if token is not None else None
    return LeaseRecord(f"k.lease.{generation}", generation, who, renewals, TTL, released)


# -- judge -----------------------------------------------------------------------------------------------


def test_no_record_is_free_and_the_first_generation_is_1() -> None:
    verdict = judge([], token="me", now=0.0)
    assert (verdict.verdict, verdict.next_generation, verdict.judged) == (LeaseVerdict.FREE, 1, ())


def test_a_released_record_is_free_at_once() -> None:
    verdict = judge([record(4, "a", 7, released=True)], token="me", now=0.0)
    assert verdict.verdict is LeaseVerdict.FREE and verdict.next_generation == 5


def test_a_live_record_of_mine_is_mine() -> None:
    assert judge([record(2, "me")], token="me", now=0.0).verdict is LeaseVerdict.MINE


def test_anothers_record_is_held_until_seen_unchanged_for_a_full_ttl() -> None:
    records = [record(3, "a", 5)]
    first = judge(records, token="me", now=100.0)
    assert first.verdict is LeaseVerdict.HELD and first.expires_in == TTL and not first.alive
    almost = judge(records, token="me", seen=first.seen, now=100.0 + TTL - 0.01)
    assert almost.verdict is LeaseVerdict.HELD and almost.holder == holder("a")
    expired = judge(records, token="me", seen=almost.seen, now=100.0 + TTL)
    assert expired.verdict is LeaseVerdict.FREE and expired.judged == tuple(records)
    assert expired.next_generation == 4


def test_a_renewal_restarts_the_observers_clock_and_shows_the_holder_alive() -> None:
    seen = judge([record(3, "a", 5)], token="me", now=0.0).seen
    renewed = judge([record(3, "a", 6)], token="me", seen=seen, now=TTL + 1)
    assert renewed.verdict is LeaseVerdict.HELD and renewed.alive
    assert renewed.seen == (Sighting(3, "a", 6, TTL + 1),)


def test_a_new_holder_under_an_old_number_is_a_new_record() -> None:
    """After a destroy numbering starts again: generation 1, renewals 0 of another holder is not the same."""
    seen = judge([record(1, "a")], token="me", now=0.0).seen
    verdict = judge([record(1, "b")], token="me", seen=seen, now=TTL + 1)
    assert verdict.verdict is LeaseVerdict.HELD and verdict.holder == holder("b")


def test_a_dead_contenders_record_above_a_live_holder_does_not_free_the_lease() -> None:
    """A contender that registered above the holder and died (or lost its confirmation) leaves a record
    that expires; the holder below it, still renewing, keeps the lease held."""
    seen = judge([record(3, "a", 1), record(4, "b")], token="me", now=0.0).seen
    later = judge([record(3, "a", 2), record(4, "b")], token="me", seen=seen, now=TTL + 1)
    assert later.verdict is LeaseVerdict.HELD and later.holder == holder("a") and later.alive
    released = judge([record(3, "a", 2), record(4, "b", released=True)], token="me", now=0.0)
    assert released.verdict is LeaseVerdict.HELD and released.holder == holder("a")


@given(
    renewals=st.integers(0, 10**6),
    since=st.floats(-1e6, 1e6, allow_nan=False),
    waited=st.floats(0, 1e4, allow_nan=False),
)
def test_expiry_depends_only_on_how_long_this_observer_saw_the_same_state(
    renewals: int, since: float, waited: float
) -> None:
    records = [record(9, "a", renewals)]
    seen = judge(records, token="me", now=since).seen
    verdict = judge(records, token="me", seen=seen, now=since + waited)
    assert (verdict.verdict is LeaseVerdict.FREE) == (TTL - ((since + waited) - since) <= 0)


@given(
    ours=st.lists(st.integers(1, 50), unique=True, max_size=5),
    foreign=st.lists(st.integers(1, 80), unique=True, max_size=5),
)
def test_records_agentvm_did_not_write_only_take_numbers(ours: list[int], foreign: list[int]) -> None:
    foreign = [g for g in foreign if g not in ours]
    records = [record(g, "a", released=True) for g in ours] + [record(g, None) for g in foreign]
    verdict = judge(records, token="me", now=0.0)
    assert verdict.verdict is LeaseVerdict.FREE  # a foreign record is never judged held
    assert verdict.next_generation == max([0, *ours, *foreign]) + 1
    assert all(r.ours for r in verdict.judged)
    assert all(r.ours for r in stale(records, 10**6))  # and never removed


# -- confirm and still_mine ---------------------------------------------------------------------------


def test_confirm_needs_my_record_on_top_and_every_other_record_as_judged() -> None:
    judged = (record(3, "x", released=True), record(4, "a", 7))
    mine = record(5, "me")
    assert confirm([*judged, mine], generation=5, token="me", judged=judged)
    assert confirm([*judged, mine, record(9, None)], generation=5, token="me", judged=judged)
    renewed = (judged[0], replace(judged[1], renewals=8))
    assert not confirm([*renewed, mine], generation=5, token="me", judged=judged)
    assert not confirm([judged[1], mine], generation=5, token="me", judged=judged)  # one removed
    assert not confirm([mine], generation=5, token="me", judged=judged)  # a destroy removed them
    assert not confirm([*judged, mine, record(6, "b")], generation=5, token="me", judged=judged)
    assert not confirm([*judged, record(5, "b")], generation=5, token="me", judged=judged)
    assert not confirm([*judged, record(2, "c"), mine], generation=5, token="me", judged=judged)
    assert confirm([mine], generation=5, token="me", judged=())


def test_still_mine_after_a_renewal() -> None:
    assert still_mine([record(3, "a"), record(4, "me", 2)], generation=4, token="me")
    assert not still_mine([record(4, "me", 2), record(5, "b")], generation=4, token="me")
    assert not still_mine([record(4, "me", 2, released=True)], generation=4, token="me")
    assert not still_mine([], generation=4, token="me")


def test_a_holder_renews_and_fences_well_within_the_ttl() -> None:
    assert renew_every(TTL) * 2 < TTL * 0.75 < TTL
    assert valid_until(100.0, TTL) == 100.0 + TTL * 0.75  # a holder stops acting at 3/4 of the TTL


# -- the protocol --------------------------------------------------------------------------------------


@dataclass
class Process:
    """One contender running controller.lease's sequence of calls; ``phase`` is where it is in it."""

    index: int
    rate: float  # its monotonic clock runs at this rate of real time
    token: str = ""
    phase: str = "idle"
    seen: tuple[Sighting, ...] = ()
    generation: int = 0
    judged: tuple[LeaseRecord, ...] = ()
    started: float = 0.0
    renewals: int = 0
    until: float = float("-inf")
    dead: bool = False
    attempts: int = 0

    def clock(self, now: float) -> float:
        return now * self.rate

    def acting(self, now: float) -> bool:
        return not self.dead and self.phase.startswith("hold") and self.clock(now) < self.until


@dataclass
class World:
    processes: list[Process]
    store: dict[int, LeaseRecord] = field(default_factory=dict)
    now: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def records(self) -> list[LeaseRecord]:
        return sorted(self.store.values(), key=lambda r: r.generation)

    def mine(self, p: Process, renewals: int = 0, *, released: bool = False) -> LeaseRecord:
        return LeaseRecord(f"k.lease.{p.generation}", p.generation, holder(p.token), renewals, TTL, released)

    def update(self, p: Process, rec: LeaseRecord) -> bool:
        if rec.generation not in self.store:
            return False  # NotFound
        self.store[rec.generation] = rec
        return True

    def step(self, p: Process) -> None:  # one branch per call of the protocol
        if p.dead:
            return
        now = p.clock(self.now)
        if p.phase == "idle":  # read, judge
            if not p.token:
                p.attempts += 1
                p.token = f"p{p.index}.{p.attempts}"
            fresh = self.rng.randrange(1, 2**40)
            verdict = judge(self.records(), token=p.token, seen=p.seen, now=now, fresh=fresh)
            p.seen = verdict.seen
            if verdict.verdict is LeaseVerdict.FREE:
                p.phase, p.generation, p.judged, p.started = (
                    "registering",
                    verdict.next_generation,
                    verdict.judged,
                    now,
                )
        elif p.phase == "registering":  # RegisterExtension lands: create-if-absent
            if p.generation in self.store:
                p.phase = "idle"
            else:
                self.store[p.generation] = self.mine(p)
                p.phase = "registered"
        elif p.phase == "registered":  # read again, confirm
            records = self.records()
            if confirm(records, generation=p.generation, token=p.token, judged=p.judged):
                p.phase, p.renewals, p.until, p.seen = "hold-cleaning", 0, valid_until(p.started, TTL), ()
                p.judged = tuple(stale(records, p.generation))
            else:
                self.update(p, self.mine(p, released=True))
                p.phase = "idle"
        elif p.phase == "hold-cleaning":  # holding; UnregisterExtension of the lower records of ours
            for old in p.judged:
                self.store.pop(old.generation, None)
            p.phase = "hold"
        elif p.phase == "hold":  # a renewal begins
            p.phase, p.started = "hold-renewing", now
        elif p.phase == "hold-renewing":  # UpdateExtension lands
            p.renewals += 1
            p.phase = "hold-renewed" if self.update(p, self.mine(p, p.renewals)) else "lost"
        elif p.phase == "hold-renewed":  # read again
            if still_mine(self.records(), generation=p.generation, token=p.token):
                p.phase, p.until = "hold", valid_until(p.started, TTL)
            else:
                p.phase = "lost"
        elif p.phase == "lost":
            p.phase, p.token, p.until = "idle", "", float("-inf")

    def release(self, p: Process) -> None:
        if not p.dead and p.phase.startswith("hold"):
            p.phase, p.until = "releasing", float("-inf")  # stops acting before the write
            self.update(p, self.mine(p, p.renewals, released=True))
            p.phase, p.token = "idle", ""

    def retire(self, p: Process) -> None:  # destroy: remove every record of ours, mine last
        if p.acting(self.now):
            for old in stale(self.records(), p.generation):
                self.store.pop(old.generation, None)
            p.until = float("-inf")
            self.store.pop(p.generation, None)
            p.phase, p.token = "idle", ""


PROCESSES = 3


def random_schedule(seed: int) -> tuple[list[tuple[int, int, float]], list[float]]:
    """(what, which process, how long) events and the processes' clock rates, from ``seed``: mostly calls
    and time passing, now and then a kill -9, a release or a destroy. A seeded generator rather than
    hypothesis' own lists, whose small, boundary-biased values rarely let a TTL pass between two calls."""
    rng = random.Random(seed)
    rates = [rng.uniform(0.95, 1.05) for _ in range(PROCESSES)]
    size = rng.randrange(1, 400)
    return [
        (rng.randrange(100), rng.randrange(PROCESSES), rng.uniform(0, TTL / 3)) for _ in range(size)
    ], rates


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_under_any_schedule_at_most_one_process_acts(seed: int) -> None:
    schedule, rates = random_schedule(seed)
    world = World([Process(i, rate) for i, rate in enumerate(rates)], rng=random.Random(seed))
    for what, which, seconds in schedule:
        p = world.processes[which]
        if what < 70:
            world.step(p)
        elif what < 94:
            world.now += seconds
        elif what < 96:
            p.dead = True
        elif what < 98:
            world.release(p)
        else:
            world.retire(p)
        acting = [p.index for p in world.processes if p.acting(world.now)]
        assert len(acting) <= 1, (acting, world.store)


@settings(max_examples=50, deadline=None)
@given(kill_at=st.integers(0, 30))
def test_a_killed_holder_is_taken_over_one_ttl_after_its_last_renewal(kill_at: int) -> None:
    """Liveness: with steps every 0.1 s, the survivor acts within one TTL (+ its polling) of the kill."""
    world = World([Process(0, 1.0), Process(1, 1.0)])
    holder_, other = world.processes
    for _ in range(3):
        world.step(holder_)  # read, register, confirm: holds
    assert holder_.acting(world.now)
    for i in range(kill_at):
        world.now += 0.1
        world.step(holder_ if i % 2 else other)
    holder_.dead = True
    killed = world.now
    while not other.acting(world.now):
        world.now += 0.1
        world.step(other)
        assert world.now - killed < TTL + 1.0


def acquire(world: World, p: Process) -> None:
    """Read, register, confirm, remove the lower records: holding."""
    for _ in range(4):
        world.step(p)
    assert p.phase == "hold" and p.acting(world.now)


def test_a_stalled_holders_late_renewal_after_a_takeover_does_not_give_it_back_the_lease() -> None:
    world = World([Process(0, 1.0), Process(1, 1.0)])
    old, new = world.processes
    acquire(world, old)
    world.step(new)  # the other starts watching
    world.step(old)  # a renewal begins ... and stalls
    world.now += TTL
    for _ in range(3):
        world.step(new)  # judged expired, registered, confirmed (the old record not removed yet)
    assert new.acting(world.now) and not old.acting(world.now)
    world.step(old)  # the stalled UpdateExtension lands on the old record
    world.step(old)  # and its read shows the new holder above it
    assert old.phase == "lost" and new.acting(world.now)


def test_a_holder_that_stalled_across_a_destroy_cannot_renew_a_new_holders_record() -> None:
    world = World([Process(0, 1.0), Process(1, 1.0), Process(2, 1.0)], rng=random.Random(7))
    old, destroyer, new = world.processes
    acquire(world, old)
    world.step(destroyer)
    world.step(old)  # a renewal begins and stalls
    world.now += TTL
    acquire(world, destroyer)
    world.retire(destroyer)  # destroy: every record removed, numbering starts again
    acquire(world, new)
    assert new.generation != old.generation  # a fresh series does not reuse the old numbers
    world.step(old)  # the stalled UpdateExtension finds its record gone
    assert old.phase == "lost" and new.acting(world.now)
