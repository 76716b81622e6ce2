"""``core.retry.Retries``: the network sync's per-item retries on the project's one backoff policy."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.heal import Backoff
from agentvm.core.retry import Retries

policies = st.builds(
    Backoff,
    base=st.floats(0.1, 10.0),
    factor=st.floats(1.5, 3.0),
    cap=st.floats(10.0, 600.0),
    jitter=st.floats(0.0, 0.49),
)


@settings(max_examples=60)
@given(policies, st.integers(0, 2**32), st.text(min_size=1, max_size=20), st.integers(1, 30))
def test_delays_are_jittered_exponential_never_decreasing_and_capped(
    policy: Backoff, seed: int, key: str, failures: int
) -> None:
    retries = Retries(policy, seed)
    delays = [retries.failed(key, 0.0) for _ in range(failures)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    for n, delay in enumerate(delays, start=1):
        plain = policy.base * policy.factor ** (n - 1)
        assert min(plain, policy.cap) <= delay <= min(plain * (1 + policy.jitter), policy.cap)
    assert retries.attempts == {key: failures}
    assert Retries(policy, seed).failed(key, 0.0) == delays[0]  # no randomness: same inputs, same delay


@settings(max_examples=30)
@given(st.integers(0, 2**32), st.integers(1, 20))
def test_a_key_waits_until_its_delay_is_over_and_starts_afresh_after_success(seed: int, n: int) -> None:
    retries = Retries(Backoff(base=1.0, cap=30.0), seed)
    for _ in range(n):
        delay = retries.failed("dvport:7", 100.0)
    assert retries.waiting(100.0 + delay - 0.001) == {"dvport:7"}
    assert retries.waiting(100.0 + delay) == set()
    assert retries.next_due() == 100.0 + delay
    retries.succeeded("dvport:7")
    assert retries.next_due() is None and retries.attempts == {}
    assert retries.failed("dvport:7", 0.0) <= 1.0 * 1.25  # the first delay again


def test_different_seeds_do_not_retry_in_step() -> None:
    delays = {Retries(seed=seed).failed("port:x", 0.0) for seed in range(20)}
    assert len(delays) > 10


def test_clear_forgets_every_key() -> None:
    retries = Retries()
    retries.failed("a", 0.0)
    retries.failed("b", 0.0)
    retries.clear()
    assert retries.waiting(0.0) == set() and retries.next_due() is None
