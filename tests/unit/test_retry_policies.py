"""The controller's reconnect and watch delays: the one ``core.heal.Backoff``, jittered, seeded and capped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.retry import WATCH_BACKOFF, Retries, reconnect_backoff


@settings(max_examples=50)
@given(st.integers(0, 2**32), st.floats(1.0, 60.0), st.integers(1, 12))
def test_reconnects_start_at_a_second_and_double_up_to_retry_max(
    seed: int, cap: float, failures: int
) -> None:
    retries: Retries[str] = Retries(reconnect_backoff(cap), seed)
    delays = [retries.failed("pass", 0.0) for _ in range(failures)]
    for n, delay in enumerate(delays, start=1):
        plain = 2.0 ** (n - 1)
        assert min(plain, cap) <= delay <= min(plain * 1.25, cap)
    retries.succeeded("pass")
    assert 1.0 <= retries.failed("pass", 0.0) <= 1.25  # a success starts the count again


@settings(max_examples=20)
@given(st.integers(0, 2**32), st.floats(0.01, 0.99))
def test_a_retry_max_under_a_second_is_every_delay(seed: int, cap: float) -> None:
    retries: Retries[str] = Retries(reconnect_backoff(cap), seed)
    assert [retries.failed("pass", 0.0) for _ in range(4)] == [cap] * 4


@settings(max_examples=30)
@given(st.integers(0, 2**32))
def test_a_failed_watch_restarts_within_half_a_second_then_backs_off_to_ten(seed: int) -> None:
    retries: Retries[str] = Retries(WATCH_BACKOFF, seed)
    delays = [retries.failed("watch", 0.0) for _ in range(8)]
    assert 0.5 <= delays[0] <= 0.625
    assert delays == sorted(delays) and delays[-1] == 10.0


def test_controllers_with_other_seeds_do_not_reconnect_in_step() -> None:
    first = {Retries(reconnect_backoff(10.0), seed).failed("pass", 0.0) for seed in range(20)}
    assert len(first) > 10
