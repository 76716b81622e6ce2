"""``controller.replica.Leadership``: the right to act is the etcd seat AND the solution's vCenter lease.

Driven turn by turn (its steward's ``_turn``, no thread) over a scripted seat and a scripted vCenter lease:
hypothesis runs random sequences of seat changes (won, lost, another leads, etcd unreachable), lease
outcomes (renewed, late, taken over, held by another, vCenter unreachable) and turns, and checks after each
step that it never lets the controller act unless both hold, that it writes to vCenter (take, renew) only
while it holds the seat, that it releases the vCenter lease at the first turn without the seat, and that
each change of role is said exactly once and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentvm.controller.replica import Leadership
from agentvm.core.lease import Judgement, LeaseVerdict
from agentvm.model.coordination import LeaderInfo
from agentvm.model.errors import TransientError
from agentvm.model.lease import LeaseHolder

ME, OTHER = "r-me", "r-other"
HOLDER = LeaseHolder("ctl-2", 77, "run", "2026-01-01T00:00:00Z", "tok")


@dataclass
class Seat:
    """An etcd seat as the Coordinator shows it (``SeatLike``), set by the test."""

    is_valid: bool = False
    leading: str | None = None  # the replica etcd says leads it
    why: str | None = None
    transitions: int = 0
    listeners: list[Callable[[bool], None]] = field(default_factory=list)

    def valid(self) -> bool:
        return self.is_valid

    def leader(self) -> LeaderInfo | None:
        if self.leading is None:
            return None
        return LeaderInfo(self.leading, "host", 1, "2026-01-01T00:00:00Z")

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        self.listeners.append(callback)


@dataclass
class World:
    """What vCenter does with the lease next, and every lease call with the seat's validity at the time."""

    seat: Seat
    take: str = "mine"  # mine / held / unreachable
    renewal: str = "ok"  # ok / late / lost
    writes: list[tuple[str, bool]] = field(default_factory=list)  # (call, seat valid then)
    leases: list[ScriptedLease] = field(default_factory=list)


class ScriptedLease:
    """The solution's vCenter lease (``LeaseLike``) answering as ``World`` says."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.held = False
        self.is_valid = False
        self.lost: str | None = None
        world.leases.append(self)

    def valid(self) -> bool:
        return self.held and self.is_valid and self.lost is None

    def step(self) -> Judgement:
        self.world.writes.append(("take", self.world.seat.is_valid))
        if self.world.take == "unreachable":
            raise TransientError("vCenter did not answer")
        if self.world.take == "held":
            return Judgement(LeaseVerdict.HELD, 2, (), holder=HOLDER, alive=True, expires_in=3.0)
        self.held = self.is_valid = True
        return Judgement(LeaseVerdict.MINE, 2, ())

    def renew(self) -> bool:
        self.world.writes.append(("renew", self.world.seat.is_valid))
        if self.world.renewal == "ok":
            self.is_valid = True
            return True
        self.is_valid = False
        if self.world.renewal == "lost":
            self.lost = "taken over by agentvm run (host ctl-2)"
            self.held = False  # another holds it now
        return False

    def observe(self) -> Judgement:
        return Judgement(LeaseVerdict.HELD, 2, (), holder=HOLDER)

    def release(self) -> None:
        self.held = self.is_valid = False


class LeadershipMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.seat = Seat()
        self.world = World(self.seat)
        self.said: list[tuple[str, str]] = []
        self.leadership = Leadership(
            self.seat,
            lambda: ScriptedLease(self.world),
            ttl=4.0,
            replica=ME,
            say=lambda level, text: self.said.append((level, text)),
        )
        self.roles: list[tuple[str, str | None]] = [(self.leadership.role, self.leadership.why)]
        self.leader_changes = 0

    # -- the world changes --------------------------------------------------------------------------------

    @rule(
        valid=st.booleans(),
        leading=st.sampled_from([None, ME, OTHER]),
        why=st.sampled_from([None, "etcd unreachable: connection refused", "the seat's lease expired"]),
    )
    def seat_changes(self, valid: bool, leading: str | None, why: str | None) -> None:
        if valid:
            leading, why = ME, None  # a valid seat is one this replica leads
        self.seat.is_valid, self.seat.leading, self.seat.why = valid, leading, why
        for listener in self.seat.listeners:
            listener(valid)

    @rule(
        take=st.sampled_from(["mine", "held", "unreachable"]), renewal=st.sampled_from(["ok", "late", "lost"])
    )
    def vcenter_changes(self, take: str, renewal: str) -> None:
        self.world.take, self.world.renewal = take, renewal

    @rule()
    def lease_runs_out(self) -> None:
        """The held lease's validity ran out between renewals (its clock, not a call)."""
        for lease in self.world.leases:
            lease.is_valid = False

    # -- the steward's turn --------------------------------------------------------------------------------

    @rule()
    def turn(self) -> None:
        was_leader = self.leadership.role == "leader"
        before = len(self.said)
        pause = self.leadership._turn(1.0)
        assert 0 < pause <= 1.0
        now = (self.leadership.role, self.leadership.why)
        changed = now != self.roles[-1]
        # each change of role (or of why) is said once; no change, nothing said
        assert len(self.said) == before + (1 if changed else 0), (self.roles[-1], now, self.said[before:])
        if changed:
            self.roles.append(now)
        if (self.leadership.role == "leader") != was_leader:
            self.leader_changes += 1
        assert self.leadership.leader_transitions == self.leader_changes
        # the role says what the controller may do now
        assert (self.leadership.role == "leader") == self.leadership.valid()
        if not self.seat.is_valid:
            # without the seat: the vCenter lease released at once, and a follower or fenced
            assert not any(lease.held for lease in self.world.leases)
            assert self.leadership.role in ("follower", "fenced")
            # fenced: nobody it knows of acts (nobody leads, or etcd names it while its seat is not valid),
            # or it cannot reach etcd (whom it last read may be old); else it follows the named leader
            unreachable = (self.seat.why or "").startswith("etcd unreachable")
            fenced = self.seat.leading in (None, ME) or unreachable
            assert self.leadership.role == ("fenced" if fenced else "follower")
        if self.leadership.role == "leader":
            assert self.said[-1][0] == "info" or not changed

    @precondition(lambda self: self.leadership.role == "leader")
    @rule()
    def the_seat_is_lost_while_leading(self) -> None:
        """Between turns: the controller must stop acting at once, before the steward notices."""
        self.seat.is_valid, self.seat.leading = False, OTHER
        assert not self.leadership.valid()

    # -- always --------------------------------------------------------------------------------------------

    @invariant()
    def acts_only_with_the_seat_and_the_vcenter_lease(self) -> None:
        if self.leadership.valid():
            assert self.seat.is_valid
            assert any(lease.valid() for lease in self.world.leases)

    @invariant()
    def writes_to_vcenter_only_while_holding_the_seat(self) -> None:
        assert all(seat_valid for _, seat_valid in self.world.writes), self.world.writes


TestLeadership = LeadershipMachine.TestCase
TestLeadership.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
