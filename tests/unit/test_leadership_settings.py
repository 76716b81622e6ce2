"""``controller.leadership.parse_coordination``: the ``--coordination`` / ``$AGENTVM_COORDINATION`` value."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.controller.leadership import CoordinationError, Endpoint, leader_key, parse_coordination
from agentvm.model.coordination import SeatKey
from agentvm.model.errors import ConfigurationError


def test_one_and_several_endpoints_in_order() -> None:
    assert parse_coordination("etcd://127.0.0.1:2379") == (Endpoint("127.0.0.1", 2379),)
    assert parse_coordination(" etcd://a.example:1, b.example:2,[::1]:3/ ") == (
        Endpoint("a.example", 1),
        Endpoint("b.example", 2),
        Endpoint("::1", 3),
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "must start with etcd://"),
        ("http://127.0.0.1:2379", "must start with etcd://"),
        ("127.0.0.1:2379", "must start with etcd://"),
        ("etcd://", "no endpoint"),
        ("etcd://127.0.0.1", "is not HOST:PORT"),
        ("etcd://:2379", "is not HOST:PORT"),
        ("etcd://user@host:2379", "is not HOST:PORT"),
        ("etcd://host:0", "no port between 1 and 65535"),
        ("etcd://host:65536", "no port between 1 and 65535"),
        ("etcd://host:port", "no port between 1 and 65535"),
        ("etcd://a:1,,b:2", "is not HOST:PORT"),
        ("etcd://a:1,a:1", "given twice"),
    ],
)
def test_a_bad_value_is_named_with_the_expected_form(value: str, why: str) -> None:
    with pytest.raises(CoordinationError) as caught:
        parse_coordination(value)
    message = str(caught.value)
    assert repr(value) in message and why in message
    assert "etcd://HOST:PORT[,HOST:PORT…]" in message and "AGENTVM_COORDINATION" in message
    assert isinstance(caught.value, ConfigurationError)  # exit code 2, like every bad input


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), st.integers(1, 65535)),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_what_it_parses_is_what_was_written(endpoints: list[tuple[str, int]]) -> None:
    text = "etcd://" + ",".join(f"{h}:{p}" for h, p in endpoints)
    assert parse_coordination(text) == tuple(Endpoint(h, p) for h, p in endpoints)


def test_seat_keys_stay_one_path_segment_each() -> None:
    key = leader_key(SeatKey("4d2c/x", "a b"))
    assert key == "/agentvm/v1/leaders/4d2c%2Fx/a%20b"
