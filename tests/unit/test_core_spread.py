"""``core.spread``: replicas share the seats out without talking, through one create transaction per seat.

The model: etcd is a dict seat → leader's lease (a create succeeds only on an absent key, as etcd's
transaction does; a create may land without its answer reaching the replica); each replica acts only on
its last read, which may be stale, and believes it leads exactly what ``led_after_read`` and
``led_after_campaign`` (the Coordinator's own rules) tell it; members join and leave (leaving deletes
their keys, as a revoked or expired lease does). Under any such schedule, a replica never believes it
leads a seat etcd does not give it, ``plan`` never campaigns for a seat it saw led nor resigns one it did
not see itself lead; and once the schedule stops, fair rounds converge to every wanted seat led and the
shares balanced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.spread import Round, View, counts, led_after_campaign, led_after_read, plan, score
from agentvm.model.coordination import SeatKey

HOLD = 1.0
SEATS = [SeatKey(f"vc-{i}", "contrail") for i in range(7)] + [SeatKey("vc-0", "other")]


@dataclass
class Replica:
    name: str
    wants: frozenset[SeatKey]
    lease: int = 0
    view: View = field(default_factory=lambda: View({}, {}))
    believes: set[SeatKey] = field(default_factory=set)
    since: float | None = None


@dataclass
class World:
    etcd: dict[SeatKey, str] = field(default_factory=dict)
    replicas: dict[str, Replica] = field(default_factory=dict)
    now: float = 0.0

    def lease_of(self, name: str) -> int:
        return self.replicas[name].lease

    def read(self, r: Replica) -> None:
        r.view = View({m: x.wants for m, x in self.replicas.items()}, dict(self.etcd))
        leases = {s: self.lease_of(leader) for s, leader in self.etcd.items()}
        r.believes = set(led_after_read(leases, r.lease, r.wants))

    def act(self, r: Replica, lost_answers: int = 0) -> Round:
        decided = plan(r.view, r.name, now=self.now, imbalanced_since=r.since, hold_down=HOLD)
        r.since = decided.imbalanced_since
        seen_mine = {s for s, leader in r.view.leaders.items() if leader == r.name}
        assert set(decided.resign) <= seen_mine, "resigns a seat it did not see itself lead"
        assert not set(decided.campaign) & set(r.view.leaders), "campaigns for a seat it saw led"
        assert set(decided.campaign) <= r.wants
        for seat in decided.resign:
            r.believes.discard(seat)  # stop acting first
            if self.etcd.get(seat) == r.name:  # delete only if attached to my lease
                del self.etcd[seat]
        for n, seat in enumerate(decided.campaign):
            won = seat not in self.etcd  # create_revision == 0
            if won:
                self.etcd[seat] = r.name
            if n < lost_answers:  # the answer was lost: the replica learns nothing from this one
                continue
            holder = None if won else self.lease_of(self.etcd[seat])
            r.believes = set(
                led_after_campaign(r.believes, seat, won=won, holder=holder, lease=r.lease, wants=r.wants)
            )
        return decided

    def leave(self, name: str) -> None:
        del self.replicas[name]
        for seat in [s for s, leader in self.etcd.items() if leader == name]:
            del self.etcd[seat]

    def check_safety(self) -> None:
        for r in self.replicas.values():
            for seat in r.believes:
                assert self.etcd.get(seat) == r.name, f"{r.name} believes it leads {seat}"

    def settle(self, sweeps: int) -> int:
        """Fair rounds (read then act, every replica in turn) until a sweep changes nothing."""
        for sweep in range(sweeps):
            before = dict(self.etcd)
            for r in list(self.replicas.values()):
                self.read(r)
                self.act(r)
                self.check_safety()
            self.now += HOLD
            if self.etcd == before and all(r.since is None for r in self.replicas.values()):
                return sweep
        raise AssertionError(f"no convergence after {sweeps} sweeps: {self.etcd}")


def wants_of(draw: st.DrawFn, homogeneous: bool, all_seats: list[SeatKey]) -> frozenset[SeatKey]:
    if homogeneous:
        return frozenset(all_seats)
    return frozenset(draw(st.lists(st.sampled_from(all_seats), min_size=1, max_size=len(all_seats))))


@st.composite
def schedules(draw: st.DrawFn) -> tuple[World, bool, list[tuple[str, str]]]:
    homogeneous = draw(st.booleans())
    all_seats = SEATS[: draw(st.integers(min_value=1, max_value=len(SEATS)))]
    world = World()
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        world.replicas[f"r{i}"] = Replica(f"r{i}", wants_of(draw, homogeneous, all_seats), lease=100 + i)
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["read", "act", "act-lossy", "tick", "join", "leave"]),
                st.sampled_from("012345"),
            ),
            max_size=60,
        )
    )
    # a new member's wants are drawn up front: hypothesis draws outside the run stay reproducible
    joiners = [wants_of(draw, homogeneous, all_seats) for _ in steps]
    world.joiners = joiners  # type: ignore[attr-defined]
    return world, homogeneous, steps


@given(schedules())
def test_any_schedule_is_safe_and_then_converges_to_every_seat_led_and_fair_shares(
    drawn: tuple[World, bool, list[tuple[str, str]]],
) -> None:
    world, homogeneous, steps = drawn
    joiners = world.joiners  # type: ignore[attr-defined]
    for n, (op, which) in enumerate(steps):
        name = f"r{which}"
        r = world.replicas.get(name)
        if op == "read" and r is not None:
            world.read(r)
        elif op == "act" and r is not None:
            world.act(r)  # on a possibly stale read
        elif op == "act-lossy" and r is not None:
            world.act(r, lost_answers=1)  # its first campaign lands, but the answer does not reach it
        elif op == "tick":
            world.now += HOLD / 2
        elif op == "join" and r is None:
            world.replicas[name] = Replica(name, joiners[n], lease=1000 + n)  # a new life, a new lease
        elif op == "leave" and r is not None and len(world.replicas) > 1:
            world.leave(name)
        world.check_safety()
    world.settle(sweeps=200)
    wanted = set().union(*(r.wants for r in world.replicas.values()))
    assert set(world.etcd) == wanted, "a wanted seat is left without a leader"
    assert all(world.etcd[s] in world.replicas and s in world.replicas[world.etcd[s]].wants for s in wanted)
    tally = counts(View({m: r.wants for m, r in world.replicas.items()}, world.etcd))
    if homogeneous:
        seats, members = len(wanted), len(world.replicas)
        assert all(seats // members <= c <= -(-seats // members) for c in tally.values()), tally
    for seat, leader in world.etcd.items():  # no seat could move to a member two or more below its leader
        for m, r in world.replicas.items():
            assert not (m != leader and seat in r.wants and tally[m] <= tally[leader] - 2), (seat, tally)


def test_a_newcomer_gets_its_share_only_after_the_hold_down() -> None:
    seats = frozenset(SEATS[:4])
    view = View({"a": seats, "b": seats}, dict.fromkeys(seats, "a"))
    first = plan(view, "a", now=10.0, imbalanced_since=None, hold_down=5.0)
    assert first.resign == () and first.imbalanced_since == 10.0
    still = plan(view, "a", now=14.9, imbalanced_since=first.imbalanced_since, hold_down=5.0)
    assert still.resign == ()
    then = plan(view, "a", now=15.0, imbalanced_since=still.imbalanced_since, hold_down=5.0)
    assert len(then.resign) == 1
    # the one given up is a's lowest rendezvous score: the same one on every replica and every run
    assert then.resign[0] == min(seats, key=lambda s: (score(s, "a"), s))
    assert plan(view, "b", now=15.0, imbalanced_since=None, hold_down=5.0) == Round((), (), None)


def test_free_seats_are_taken_at_once_by_the_least_loaded() -> None:
    seats = frozenset(SEATS[:3])
    view = View({"a": seats, "b": seats}, {SEATS[0]: "a"})
    assert plan(view, "a", now=0.0, imbalanced_since=None, hold_down=5.0).campaign == ()
    # b leads none: it takes one, then, level with a, the other too (ties take; etcd settles races)
    taken = plan(view, "b", now=0.0, imbalanced_since=None, hold_down=5.0).campaign
    assert sorted(taken) == [SEATS[1], SEATS[2]]
    assert (
        plan(
            View(view.wants, {SEATS[0]: "a", SEATS[1]: "a"}),
            "a",
            now=0.0,
            imbalanced_since=None,
            hold_down=5.0,
        ).campaign
        == ()
    )
    alone = View({"a": seats}, {})
    assert sorted(plan(alone, "a", now=0.0, imbalanced_since=None, hold_down=5.0).campaign) == sorted(seats)


def test_a_seat_it_leads_but_no_longer_wants_is_resigned_at_once() -> None:
    view = View({"a": frozenset({SEATS[0]})}, {SEATS[0]: "a", SEATS[1]: "a"})
    assert plan(view, "a", now=0.0, imbalanced_since=None, hold_down=5.0).resign == (SEATS[1],)


def test_a_replica_leads_only_what_etcd_attached_to_its_own_lease() -> None:
    a, b = SEATS[0], SEATS[1]
    assert led_after_read({a: 7, b: 8}, 7, {a, b}) == {a}
    assert led_after_read({a: 7}, 7, {b}) == frozenset()  # no longer wanted
    assert led_after_campaign(set(), a, won=False, holder=8, lease=7, wants={a}) == frozenset()
    assert led_after_campaign(set(), a, won=False, holder=None, lease=7, wants={a}) == frozenset()
    assert led_after_campaign(set(), a, won=False, holder=7, lease=7, wants={a}) == {a}  # landed earlier
    assert led_after_campaign({b}, a, won=True, holder=None, lease=7, wants={a, b}) == {a, b}


def test_two_replicas_on_the_same_stale_read_one_wins_and_the_other_believes_nothing() -> None:
    world = World()
    for i in range(2):
        world.replicas[f"r{i}"] = Replica(f"r{i}", frozenset(SEATS[:1]), lease=100 + i)
    r0, r1 = world.replicas["r0"], world.replicas["r1"]
    world.read(r0)
    world.read(r1)
    assert world.act(r0).campaign == (SEATS[0],)
    assert world.act(r1).campaign == (SEATS[0],)  # on its stale read the seat looked free
    world.check_safety()
    assert world.etcd == {SEATS[0]: "r0"} and r0.believes == {SEATS[0]} and r1.believes == set()
    # the winner whose answer was lost learns it leads on its next campaign or read, not before
    world = World(replicas={"r0": Replica("r0", frozenset(SEATS[:1]), lease=100)})
    r0 = world.replicas["r0"]
    world.read(r0)
    world.act(r0, lost_answers=1)
    assert world.etcd == {SEATS[0]: "r0"} and r0.believes == set()
    world.act(r0)  # same stale read: campaigns again, loses to its own key
    assert r0.believes == {SEATS[0]}
