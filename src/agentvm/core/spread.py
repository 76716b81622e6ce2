"""Which seats a replica campaigns for and which it resigns, pure: leaderships spread over the replicas.

Called by ``controller.leadership`` once per round, with what it last read from etcd: the live members
(each publishes the seats it wants to lead) and who leads each seat. Every replica runs the same rules on
the same view, so they agree without talking; etcd's create transaction settles any race, and this module
never assumes a campaign was won: ``plan`` only proposes, and the seats a replica leads are only ever
what ``led_after_read`` and ``led_after_campaign`` say — keys etcd showed attached to its own lease.

The rules, for replica ``me`` leading ``c`` seats:
- **Campaign** for a free seat it wants (nobody leads it) only while it leads no more than any other member
  that wants that seat: the least loaded take free seats first; among equals etcd picks one. Free seats are
  tried in the order of the rendezvous score (a stable hash of seat and replica), so equals mostly aim at
  different seats. A free seat is taken at once: a seat nobody leads is a vCenter nobody watches.
- **Resign** one seat when another member that wants it leads two or more fewer (``c - 2`` or less), once
  that imbalance has lasted ``hold_down`` seconds (a member that joins and leaves again moves nothing). It
  resigns its seat of lowest rendezvous score among those such a member wants; the less loaded member then
  takes it (the resigner is not the least loaded candidate any more, so it does not take it back).
- A seat it leads but no longer wants is resigned at once.

Every move takes a seat from a replica with ``c`` to one with at most ``c - 2``, so the sum of the squared
counts falls: the rounds converge to every wanted seat led and, when every member wants every seat, each
member leading ``floor(S/M)`` or ``ceil(S/M)`` of the ``S`` seats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from agentvm.model.coordination import SeatKey


@dataclass(frozen=True)
class View:
    """What one replica last read: ``wants`` per live member, and the replica leading each led seat."""

    wants: Mapping[str, frozenset[SeatKey]]
    leaders: Mapping[SeatKey, str]


@dataclass(frozen=True)
class Round:
    """``plan``'s answer: campaign for these, resign these, and what to pass as ``imbalanced_since`` next."""

    campaign: tuple[SeatKey, ...] = ()
    resign: tuple[SeatKey, ...] = ()
    imbalanced_since: float | None = None


def score(seat: SeatKey, replica: str) -> int:
    """The rendezvous score of ``replica`` for ``seat``: stable across processes and runs."""
    digest = hashlib.sha256(f"{seat.vcenter}\0{seat.solution}\0{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def counts(view: View) -> dict[str, int]:
    """Seats led per replica: every member (0 when it leads none) and every leader."""
    tally = dict.fromkeys(view.wants, 0)
    for replica in view.leaders.values():
        tally[replica] = tally.get(replica, 0) + 1
    return tally


def plan(view: View, me: str, *, now: float, imbalanced_since: float | None, hold_down: float) -> Round:
    """One round for ``me`` (see the module docstring). ``now`` and ``imbalanced_since`` are the caller's
    monotonic clock: the imbalance it saw began at ``imbalanced_since`` (None: it saw none)."""
    mine = view.wants.get(me, frozenset())
    tally = counts(view)
    led = sorted(seat for seat, replica in view.leaders.items() if replica == me)
    unwanted = tuple(seat for seat in led if seat not in mine)
    count = len(led) - len(unwanted)

    def others(seat: SeatKey) -> list[int]:
        return [tally[m] for m, wanted in view.wants.items() if m != me and seat in wanted]

    campaign: list[SeatKey] = []
    projected = count
    free = sorted((s for s in mine if s not in view.leaders), key=lambda s: (-score(s, me), s))
    for seat in free:
        loads = others(seat)
        if not loads or projected <= min(loads):
            campaign.append(seat)
            projected += 1

    movable = [s for s in led if s in mine and any(load <= count - 2 for load in others(s))]
    if not movable:
        return Round(tuple(campaign), unwanted, None)
    since = now if imbalanced_since is None else imbalanced_since
    if now - since < hold_down:
        return Round(tuple(campaign), unwanted, since)
    give = min(movable, key=lambda s: (score(s, me), s))
    return Round(tuple(campaign), (*unwanted, give), since)


def led_after_read(
    leases: Mapping[SeatKey, int], lease: int, wants: Collection[SeatKey]
) -> frozenset[SeatKey]:
    """After a read of the leader keys (seat → the lease its key is attached to): the seats this replica
    (holding ``lease``) leads. Only keys on its own lease count, and only seats it still wants."""
    return frozenset(seat for seat, held in leases.items() if held == lease and seat in wants)


def led_after_campaign(
    led: Collection[SeatKey],
    seat: SeatKey,
    *,
    won: bool,
    holder: int | None,
    lease: int,
    wants: Collection[SeatKey],
) -> frozenset[SeatKey]:
    """After the create transaction for ``seat``: ``won`` when it succeeded; otherwise ``holder`` is the
    lease the existing key is attached to (None: unknown). A lost campaign leads nothing, unless the key
    was already on this replica's own lease (an earlier attempt that landed without its answer)."""
    if seat in wants and (won or holder == lease):
        return frozenset((*led, seat))
    return frozenset(led)
