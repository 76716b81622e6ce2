"""Per-key retry bookkeeping on the project's one backoff policy (``core.heal.Backoff``).

The heal policy keeps its attempts in ``HealState``; other retry paths that need "this item failed, when
may it be tried again?" per key use ``Retries``: the network sync (``controller.netsync``: a failed SDN
object, vRouter port or DV port is held out of the following syncs until its delay is over, the rest goes
on) and its reconnects. Delays are jittered exponential and capped, exactly as the heal policy's:
``Backoff.delay(attempt, fraction)``, with a jitter fraction derived from a seed, the key and the attempt
(no randomness, so the same inputs always give the same delays; many controllers with different seeds do
not retry in step). Pure: no clock (``now`` is an argument, seconds on any monotonic scale), no I/O.

Unlike a heal, a retry here never gives up: ``Backoff.max_attempts`` is not used, a key fails on at the cap
until it succeeds or is forgotten (its cause may be fixed any time, and one item costs one call).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentvm.core.heal import Backoff, jitter_fraction

NETSYNC_BACKOFF = Backoff(base=1.0, factor=2.0, cap=30.0, jitter=0.25)
"""The network sync's items: a DV port or vRouter port that failed is tried again within 30 s at most, so a
fixed cause converges in seconds rather than at the next full resync."""


@dataclass
class Retries:
    """Which keys failed, how often, and when each may be tried again (``now`` + its delay).

    ``attempts`` and ``due`` are plain dicts that readers on other threads may copy (``dict(...)`` is one
    step under the GIL); only the owner's thread changes them.
    """

    policy: Backoff = NETSYNC_BACKOFF
    seed: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def delay(self, key: str, attempt: int) -> float:
        """Seconds to wait after failure number ``attempt`` (1-based) of ``key``."""
        return self.policy.delay(attempt, jitter_fraction(self.seed, key, attempt))

    def failed(self, key: str, now: float) -> float:
        """Record a failure of ``key`` at ``now``; returns the delay before it may be tried again."""
        n = self.attempts.get(key, 0) + 1
        self.attempts[key] = n
        delay = self.delay(key, n)
        self.due[key] = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        """``key`` worked (or is no longer wanted): it starts afresh next time it fails."""
        self.attempts.pop(key, None)
        self.due.pop(key, None)

    def clear(self) -> None:
        """Forget every key (a resync asked for by a person: whatever failed may work now)."""
        self.attempts.clear()
        self.due.clear()

    def waiting(self, now: float) -> set[str]:
        """The keys whose delay is not over at ``now``."""
        return {k for k, t in self.due.items() if t > now}

    def next_due(self) -> float | None:
        """The earliest time a key may be tried again; None when nothing failed."""
        return min(self.due.values(), default=None)
