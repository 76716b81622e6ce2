"""The project's one backoff policy (``Backoff``, also reached as ``core.heal.Backoff``) and per-key retry
bookkeeping on it (``Retries``).

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

import hashlib
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def jitter_fraction(seed: int, key: str, attempt: int) -> float:
    """A fraction in [0, 1) fixed by the seed, the key and the attempt: same inputs, same jitter.

    The jitter of every backoff in agentvm (heals, the engine's retries, the network sync's items): no
    randomness, so the same inputs always give the same delays, and controllers with other seeds (or other
    keys) do not retry in step.
    """
    digest = hashlib.blake2b(f"{seed}|{key}|{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Backoff:
    """The project's one retry timing (heals per issue kind, the engine's actions, the network sync's items,
    the controller's reconnects): delays ``base * factor**(n-1)``, stretched by up to ``jitter``, capped.

    ``factor >= 1 + jitter`` is required so that jittered delays still never decrease from one attempt to
    the next (the largest stretch of delay n is at most the smallest delay n+1).
    """

    base: float = 5.0  # seconds between the first and the second resolve
    factor: float = 2.0
    cap: float = 300.0  # no delay is longer
    jitter: float = 0.25  # each delay is stretched by a fraction in [0, jitter)
    max_attempts: int = 5  # resolves before giving up
    grace: float = 0.0  # seconds an issue must stay before its first resolve (0: at once)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base}, cap={self.cap}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {self.jitter}")
        if self.factor < 1 + self.jitter:
            raise ValueError(
                f"backoff factor {self.factor} must be at least 1 + jitter ({1 + self.jitter}) so that "
                "delays never decrease"
            )
        if self.max_attempts < 1:
            raise ValueError(f"backoff max_attempts must be at least 1, got {self.max_attempts}")
        if self.grace < 0:
            raise ValueError(f"backoff grace must be 0 or more, got {self.grace}")

    def delay(self, attempt: int, fraction: float) -> float:
        """Seconds to wait after resolve number ``attempt`` (1-based); ``fraction`` in [0, 1): jitter."""
        raw = self.base * self.factor ** (attempt - 1) * (1 + self.jitter * fraction)
        return min(self.cap, raw)


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
