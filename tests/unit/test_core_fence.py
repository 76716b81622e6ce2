"""``core.fence``: until when a replica holding an etcd lease may act, and how often it renews."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import example, given
from hypothesis import strategies as st

from agentvm.core.fence import fence_deadline, keepalive_every, lease_seconds

starts = st.floats(min_value=0, max_value=1e9, allow_nan=False)
ttls = st.integers(min_value=1, max_value=3600)


@given(starts, ttls)
@example(0.02, 64)  # 0.02 + 48 rounds up: the deadline must not
def test_the_deadline_ends_before_the_lease_can_expire_with_a_keepalive_period_to_spare(
    started: float, ttl: int
) -> None:
    # etcd counts the TTL from when it received the keepalive: never before it was sent at `started`.
    # Compared exactly (Fraction): a deadline rounded up by one float ulp is already too late.
    deadline = fence_deadline(started, ttl)
    assert deadline is not None
    assert started < deadline
    assert Fraction(deadline) + Fraction(keepalive_every(ttl)) <= Fraction(started) + ttl


@given(starts, ttls)
def test_at_least_two_keepalives_are_tried_before_the_deadline(started: float, ttl: int) -> None:
    deadline = fence_deadline(started, ttl)
    assert deadline is not None
    assert started + 2 * keepalive_every(ttl) < deadline


@given(starts, st.integers(min_value=-5, max_value=0))
def test_a_lease_etcd_no_longer_has_leaves_no_right_to_act(started: float, ttl: int) -> None:
    assert fence_deadline(started, ttl) is None


@given(st.floats(min_value=0.001, max_value=3600, allow_nan=False))
def test_the_ttl_asked_of_etcd_is_whole_seconds_never_below_the_wanted_one(ttl: float) -> None:
    asked = lease_seconds(ttl)
    assert isinstance(asked, int)
    assert asked >= ttl
    assert asked < max(ttl, 1) + 1


def test_whole_seconds_stay_as_they_are() -> None:
    assert [lease_seconds(t) for t in (1, 2, 2.0, 2.5, 15)] == [1, 2, 2, 3, 15]
