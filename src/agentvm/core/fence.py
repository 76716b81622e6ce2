"""Self-fencing of a replica that holds an etcd lease, pure: until when may it act, and when to renew.

Called by ``controller.leadership``. etcd counts a lease's TTL from when it *received* the keepalive (or
the grant), which is after the replica sent it: so the lease cannot expire before (start of the last
successful keepalive, on the replica's own monotonic clock) + TTL. The replica acts only until 3/4 of that
TTL and renews every TTL/4, the same fractions as the vCenter lease (``core.lease``): the last quarter is
the margin for clock-rate drift and for a call already under way when the right ends.
"""

from __future__ import annotations

from agentvm.core.lease import FENCE_FRACTION, RENEW_FRACTION, no_later_than

MIN_TTL = 1  # seconds: etcd's TTLs are whole seconds (and etcd raises small ones to its own minimum)


def lease_seconds(ttl: float) -> int:
    """The whole seconds to ask etcd for, for a wanted TTL of ``ttl`` seconds (rounded up)."""
    whole = int(ttl)
    return max(MIN_TTL, whole if whole == ttl else whole + 1)


def keepalive_every(granted: int) -> float:
    """How often to renew a lease etcd granted for ``granted`` seconds."""
    return max(MIN_TTL, granted) * RENEW_FRACTION


def fence_deadline(started: float, reported_ttl: int) -> float | None:
    """Until when (replica's monotonic clock) it may act after a keepalive (or grant) that began at
    ``started`` and to which etcd answered ``reported_ttl`` seconds; None when etcd answered that the
    lease no longer exists (a TTL of 0 or less): then nothing it led is its own any more."""
    if reported_ttl <= 0:
        return None
    return no_later_than(started, reported_ttl * FENCE_FRACTION)
