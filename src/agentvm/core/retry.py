"""Per-key retry bookkeeping on the project's one backoff policy (``core.heal.Backoff``).

The heal policy keeps its attempts in ``HealState``; every other retry path that needs "this failed, when
may it be tried again?" uses ``Retries``: the network sync (``controller.netsync``: a failed SDN object,
vRouter port or DV port is held out of the following syncs until its delay is over, the rest goes on) and
its watch's reconnects, the controller's passes while vCenter is unreachable (``controller.run``) and its
inventory watch (``controller.watch``). Delays are jittered exponential and capped, exactly as the heal
policy's: ``Backoff.delay(attempt, fraction)``, with a jitter fraction derived from a seed, the key and the
attempt (no randomness, so the same inputs always give the same delays; many controllers with different
seeds do not retry in step). Pure: no clock (``now`` is an argument, seconds on any monotonic scale), no
I/O: the callers read the clock and sleep.

Unlike a heal, a retry here never gives up: ``Backoff.max_attempts`` is not used, a key fails on at the cap
until it succeeds or is forgotten (its cause may be fixed any time, and one item costs one call).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agentvm.core.heal import Backoff, jitter_fraction

K = TypeVar("K", bound=Hashable)

NETSYNC_BACKOFF = Backoff(base=1.0, factor=2.0, cap=30.0, jitter=0.25)
"""The network sync's items: a DV port or vRouter port that failed is tried again within 30 s at most, so a
fixed cause converges in seconds rather than at the next full resync."""

WATCH_BACKOFF = Backoff(base=0.5, factor=2.0, cap=10.0, jitter=0.25)
"""The controller's inventory watch after its collector failed: a new one within 0.5 s, then doubling up
to 10 s while vCenter stays unreachable."""


def reconnect_backoff(cap: float) -> Backoff:
    """The controller's passes while vCenter or EAM is unreachable: 1 s after the first failure (``cap`` if
    shorter), doubling up to ``cap`` seconds (``Settings.retry_max``)."""
    return Backoff(base=min(1.0, cap), factor=2.0, cap=cap, jitter=0.25)


@dataclass
class Retries(Generic[K]):
    """Which keys failed, how often, and when each may be tried again (``now`` + its delay).

    Keys are any hashable values (the network sync's ``ItemKey``s, a loop's name); the jitter of a key is
    drawn from ``str(key)``. ``attempts`` and ``due`` are plain dicts that readers on other threads may copy
    (``dict(...)`` is one step under the GIL); only the owner's thread changes them.
    """

    policy: Backoff = NETSYNC_BACKOFF
    seed: int = 0
    attempts: dict[K, int] = field(default_factory=dict)
    due: dict[K, float] = field(default_factory=dict)

    def delay(self, key: K, attempt: int) -> float:
        """Seconds to wait after failure number ``attempt`` (1-based) of ``key``."""
        return self.policy.delay(attempt, jitter_fraction(self.seed, str(key), attempt))

    def failed(self, key: K, now: float) -> float:
        """Record a failure of ``key`` at ``now``; returns the delay before it may be tried again."""
        n = self.attempts.get(key, 0) + 1
        self.attempts[key] = n
        delay = self.delay(key, n)
        self.due[key] = now + delay
        return delay

    def succeeded(self, key: K) -> None:
        """``key`` worked (or is no longer wanted): it starts afresh next time it fails."""
        self.attempts.pop(key, None)
        self.due.pop(key, None)

    def clear(self) -> None:
        """Forget every key (a resync asked for by a person: whatever failed may work now)."""
        self.attempts.clear()
        self.due.clear()

    def waiting(self, now: float) -> set[K]:
        """The keys whose delay is not over at ``now``."""
        return {k for k, t in self.due.items() if t > now}

    def next_due(self) -> float | None:
        """The earliest time a key may be tried again; None when nothing failed."""
        return min(self.due.values(), default=None)

    def settle(
        self, failed: Iterable[K], waiting: Collection[K], now: float, keep: Collection[K] = ()
    ) -> None:
        """After a sync: each ``failed`` key fails once more at ``now``; every other key with a delay that
        was not ``waiting`` (so it was attempted and done, or is no longer planned at all) succeeded.
        ``keep``: keys that are not items of the sync (a loop's own), left as they are."""
        failed = set(failed)
        for key in sorted(failed, key=str):
            self.failed(key, now)
        for key in list(self.due):
            if key not in failed and key not in waiting and key not in keep:
                self.succeeded(key)
