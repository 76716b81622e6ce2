"""The lease's decisions, pure: given the records read from vCenter and what I saw before, what now?

Called by ``controller.lease``, which does the reading, the writing and the clock; the protocol and the
argument for why it gives one actor are in ``controller.lease``'s docstring. Every function here takes
the observer's monotonic time as an argument and keeps no state: the caller carries the ``Sighting``.

- ``judge``: is the lease free (register ``next_generation``), or held by another (and if so: seen
  renewing, and how long until it counts as expired)?
- ``confirm``: after my RegisterExtension succeeded, may I hold it?
- ``still_mine``: after my renewal was written, is the lease still mine?
- ``stale``: the lower records of ours a new holder removes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from agentvm.model.lease import LeaseHolder, LeaseRecord

MIN_TTL = 1.0  # a record claiming less is judged with this (a holder cannot promise to fence faster)
FRESH_RANGE = 2**40  # a new series of generations starts at a random number below this
RENEW_FRACTION = 0.25  # the holder renews every TTL/4 ...
FENCE_FRACTION = 0.75  # ... and stops acting 3/4 TTL after the start of its last confirmed renewal


class LeaseVerdict(StrEnum):
    MINE = "mine"  # a live record of ours carries my token (only after this process acquired it)
    FREE = "free"  # every record of ours is released, or seen unchanged for a full TTL: register next
    HELD = "held"  # another holds it: wait, or refuse


@dataclass(frozen=True)
class Sighting:
    """One live record as an observer saw it: generation, holder token and renewals, and when (on the
    observer's own monotonic clock) it first saw exactly those. The token matters: after a ``destroy``
    numbering starts again, and generation 1 with 0 renewals may be a new holder's record."""

    generation: int
    token: str
    renewals: int
    since: float


@dataclass(frozen=True)
class Judgement:
    """``judge``'s answer.

    FREE: register ``next_generation``, then ``confirm`` with ``judged``. HELD: ``holder`` holds it (the
    highest live record not yet expired); ``alive`` when a record was seen renewing while watched;
    ``expires_in`` seconds (observer's clock) until every live record counts as expired if none is
    renewed meanwhile. ``seen``: what to pass to the next ``judge``. ``top``: the highest record of ours.
    """

    verdict: LeaseVerdict
    next_generation: int
    judged: tuple[LeaseRecord, ...]
    seen: tuple[Sighting, ...] = ()
    holder: LeaseHolder | None = None
    alive: bool = False
    expires_in: float = 0.0

    @property
    def top(self) -> LeaseRecord | None:
        return highest(self.judged)


def _ours(records: Iterable[LeaseRecord]) -> list[LeaseRecord]:
    return [r for r in records if r.ours]


def _token(record: LeaseRecord) -> str:
    return record.holder.token if record.holder is not None else ""


def highest(records: Iterable[LeaseRecord]) -> LeaseRecord | None:
    """The highest record agentvm wrote (records it did not write only take numbers)."""
    return max(_ours(records), key=lambda r: r.generation, default=None)


def ttl_of(record: LeaseRecord) -> float:
    return max(MIN_TTL, record.ttl)


def judge(
    records: Sequence[LeaseRecord],
    *,
    token: str,
    seen: Sequence[Sighting] = (),
    now: float,
    fresh: int = 1,
) -> Judgement:
    """Judge the lease from one read of its records (see the module docstring).

    Free only when *every* live (unreleased) record of ours has expired: a record left above the holder's
    by a contender that lost its confirmation, or that died right after registering, never hides a
    holder that is still renewing. Expiry is judged as Kubernetes' leader election does: only by watching,
    on the observer's own clock, the same record with the same renewals for a full TTL; no wall-clock time
    written by anyone is ever compared.

    ``fresh``: the generation to start from when there is no record of ours at all (a new vCenter, or
    after a ``destroy`` removed them): the caller draws it at random from a large range, so that numbers
    are not reused across such resets — a holder that stalled before the reset could otherwise land its
    renewal (UpdateExtension, which cannot compare-and-swap) on a new holder's record of the same number.
    Contenders that draw different numbers see each other's record in ``confirm`` and retry.
    """
    ours = tuple(sorted(_ours(records), key=lambda r: r.generation))
    numbered = max((r.generation for r in records), default=0)
    next_generation = numbered + 1 if ours else max(fresh, numbered + 1)
    live = [r for r in ours if not r.released]
    if any(_token(r) == token for r in live):
        return Judgement(LeaseVerdict.MINE, next_generation, ours)
    before = {(s.generation, s.token): s for s in seen}
    sightings: list[Sighting] = []
    alive = False
    holder: LeaseHolder | None = None
    expires_in = 0.0
    for record in live:
        previous = before.get((record.generation, _token(record)))
        if previous is not None and previous.renewals == record.renewals:
            sighting = previous
        else:
            alive = alive or previous is not None
            sighting = Sighting(record.generation, _token(record), record.renewals, now)
        sightings.append(sighting)
        left = ttl_of(record) - (now - sighting.since)
        if left > 0:
            holder = record.holder  # live records come lowest first: the highest unexpired one names it
            expires_in = max(expires_in, left)
    if holder is None:
        return Judgement(LeaseVerdict.FREE, next_generation, ours, tuple(sightings))
    return Judgement(
        LeaseVerdict.HELD, next_generation, ours, tuple(sightings), holder, alive=alive, expires_in=expires_in
    )


def confirm(
    records: Sequence[LeaseRecord], *, generation: int, token: str, judged: Sequence[LeaseRecord]
) -> bool:
    """After my RegisterExtension of ``generation`` succeeded, read again: may I hold it?

    Yes only when (a) my record is there, mine, and no record of ours is above it (a contender who read
    long ago may register a number a holder has since removed as stale), and (b) every other record of
    ours is exactly what I judged free: none renewed after my judging read, none new, none removed (after
    a ``destroy`` removed the records, numbering starts again). Otherwise I release mine and do not hold.
    """
    ours = _ours(records)
    mine = [r for r in ours if r.generation == generation]
    if len(mine) != 1 or _token(mine[0]) != token or mine[0].released:
        return False
    if any(r.generation > generation for r in ours):
        return False
    others = sorted((r for r in ours if r.generation != generation), key=lambda r: r.generation)
    wanted = sorted(judged, key=lambda r: r.generation)
    return len(others) == len(wanted) and all(a.same_state(b) for a, b in zip(others, wanted, strict=True))


def still_mine(records: Sequence[LeaseRecord], *, generation: int, token: str) -> bool:
    """After my renewal of ``generation`` was written, read again: is the lease still mine? No when my
    record is gone, released or not mine, or when a live record of ours is above it (a taker)."""
    ours = _ours(records)
    mine = [r for r in ours if r.generation == generation]
    if len(mine) != 1 or _token(mine[0]) != token or mine[0].released:
        return False
    return not any(r.generation > generation and not r.released for r in ours)


def stale(records: Sequence[LeaseRecord], generation: int) -> list[LeaseRecord]:
    """The records of ours below ``generation``, which its holder removes (never anyone else's)."""
    return sorted((r for r in _ours(records) if r.generation < generation), key=lambda r: r.generation)


def renew_every(ttl: float) -> float:
    """How often a holder renews a lease of ``ttl`` seconds."""
    return max(MIN_TTL, ttl) * RENEW_FRACTION


def valid_until(renew_started: float, ttl: float) -> float:
    """Until when (holder's monotonic clock) a holder may act after a renewal begun at ``renew_started``
    and confirmed by ``still_mine``: 3/4 TTL, the last quarter being the margin for clock-rate drift and for
    an action already under way."""
    return no_later_than(renew_started, max(MIN_TTL, ttl) * FENCE_FRACTION)


def no_later_than(start: float, span: float) -> float:
    """``start + span`` as a float never later than the exact sum: a deadline rounded up by one ulp
    would let its holder act a moment after the margin it was promised."""
    end = start + span
    if Fraction(end) > Fraction(start) + Fraction(span):
        end = math.nextafter(end, -math.inf)
    return end
