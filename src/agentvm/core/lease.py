"""The lease's decisions, pure: given the records read from vCenter and what I saw before, what now?

Called by ``controller.lease``, which does the reading, the writing and the clock; the protocol and the
argument for why it gives one actor are in ``controller.lease``'s docstring. Every function here takes
the observer's monotonic time as an argument and keeps no state: the caller carries the ``Sighting``.

- ``judge``: is the lease mine, free (register ``next_generation``), or held by another (and if so: seen
  renewing, and how long until it counts as expired)?
- ``confirm``: after my RegisterExtension succeeded, may I hold it?
- ``still_mine``: after my renewal was written, is the lease still mine?
- ``stale``: the lower records of ours a new holder removes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentvm.model.lease import LeaseHolder, LeaseRecord

MIN_TTL = 1.0  # a record claiming less is judged with this (a holder cannot promise to fence faster)
RENEW_FRACTION = 0.25  # the holder renews every TTL/4 ...
FENCE_FRACTION = 0.75  # ... and stops acting 3/4 TTL after the start of its last confirmed renewal


class Verdict(StrEnum):
    MINE = "mine"  # the highest record of ours is mine and not released
    FREE = "free"  # none, released, or seen unchanged for a full TTL: register next_generation
    HELD = "held"  # another holds it: wait, or refuse


@dataclass(frozen=True)
class Sighting:
    """What an observer remembers of the highest record: its generation and renewals, when (on its own
    monotonic clock) it first saw exactly those, and how often it saw them change while it watched."""

    generation: int
    renewals: int
    since: float
    changes: int = 0


@dataclass(frozen=True)
class Judgement:
    """``judge``'s answer. ``top``: the highest record of ours (the one judged), None when there is none.

    FREE: register ``next_generation``, then ``confirm`` with ``judged=top``. HELD: ``holder`` holds it;
    ``alive`` when it was seen renewing (or changing hands) while watched; ``expires_in`` seconds (on the
    observer's clock) until it counts as expired if it is not renewed meanwhile.
    """

    verdict: Verdict
    top: LeaseRecord | None
    next_generation: int
    sighting: Sighting | None
    holder: LeaseHolder | None = None
    alive: bool = False
    expires_in: float = 0.0


def _ours(records: Iterable[LeaseRecord]) -> list[LeaseRecord]:
    return [r for r in records if r.ours]


def highest(records: Iterable[LeaseRecord]) -> LeaseRecord | None:
    """The highest record agentvm wrote (records it did not write only take numbers)."""
    return max(_ours(records), key=lambda r: r.generation, default=None)


def ttl_of(record: LeaseRecord) -> float:
    return max(MIN_TTL, record.ttl)


def judge(records: Sequence[LeaseRecord], *, token: str, seen: Sighting | None, now: float) -> Judgement:
    """Judge the lease from one read of its records (see the module docstring).

    Expiry is judged as Kubernetes' leader election does: only by watching, on the observer's own clock,
    the same generation and renewals for a full TTL; no wall-clock time written by anyone is compared.
    """
    numbered = max((r.generation for r in records), default=0)
    next_generation = numbered + 1
    top = highest(records)
    if top is None:
        return Judgement(Verdict.FREE, None, next_generation, None)
    holder = top.holder
    assert holder is not None  # highest() returns records of ours only
    if top.released:
        return Judgement(Verdict.FREE, top, next_generation, None)
    if holder.token == token:
        return Judgement(Verdict.MINE, top, next_generation, None)
    if seen is not None and (seen.generation, seen.renewals) == (top.generation, top.renewals):
        sighting = seen
    else:
        changes = seen.changes + 1 if seen is not None else 0
        sighting = Sighting(top.generation, top.renewals, now, changes)
    left = ttl_of(top) - (now - sighting.since)
    if left <= 0:
        return Judgement(Verdict.FREE, top, next_generation, sighting, holder)
    return Judgement(
        Verdict.HELD, top, next_generation, sighting, holder, alive=sighting.changes > 0, expires_in=left
    )


def confirm(
    records: Sequence[LeaseRecord], *, generation: int, token: str, judged: LeaseRecord | None
) -> bool:
    """After my RegisterExtension of ``generation`` succeeded, read again: may I hold it?

    Yes only when (a) ``generation`` is the highest record of ours and mine (a contender who read long ago
    can register a number a holder has since removed as stale: it is then not the highest), and (b) the
    record I judged free is still there, unchanged (its holder renewed after my judging read, or a destroy
    removed the records meanwhile: then I do not hold it, and release mine).
    """
    top = highest(records)
    if top is None or top.generation != generation or top.released:
        return False
    if top.holder is None or top.holder.token != token:
        return False
    if judged is None:
        return True
    now_judged = next((r for r in records if r.generation == judged.generation), None)
    return judged.same_state(now_judged)


def still_mine(records: Sequence[LeaseRecord], *, generation: int, token: str) -> bool:
    """After my renewal of ``generation`` was written, read again: is the lease still mine?"""
    top = highest(records)
    return (
        top is not None
        and top.generation == generation
        and not top.released
        and top.holder is not None
        and top.holder.token == token
    )


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
    return renew_started + max(MIN_TTL, ttl) * FENCE_FRACTION
