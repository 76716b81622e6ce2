"""The network sync's item keys: typed values rendered as ``<kind>:<id>`` and read back, and the retry
bookkeeping of one sync keyed by them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.heal import Backoff
from agentvm.core.retry import Retries
from agentvm.model.network import ItemKey, ItemKind

KINDS = {"obj": ItemKind.OBJECT, "port": ItemKind.PORT, "dvport": ItemKind.DV_PORT}
keys = st.builds(ItemKey, st.sampled_from(list(ItemKind)), st.text(min_size=1, max_size=40))


@settings(max_examples=80)
@given(keys)
def test_a_key_reads_back_from_its_text(key: ItemKey) -> None:
    assert ItemKey.parse(str(key)) == key


@settings(max_examples=80)
@given(st.sampled_from(sorted(KINDS)), st.text(min_size=1, max_size=40))
def test_the_text_is_the_kind_a_colon_and_the_id(kind: str, ident: str) -> None:
    key = ItemKey.parse(f"{kind}:{ident}")
    assert (key.kind, key.id) == (KINDS[kind], ident)
    assert str(key) == f"{kind}:{ident}"


@settings(max_examples=40)
@given(keys, keys)
def test_different_keys_render_differently(a: ItemKey, b: ItemKey) -> None:
    assert (str(a) == str(b)) == (a == b)


@pytest.mark.parametrize("text", ["", "port", "port:", "vm:1", ":x", "obj-1"])
def test_text_that_is_not_a_key_is_refused_with_the_text_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not an item key") as raised:
        ItemKey.parse(text)
    assert repr(text) in str(raised.value)


def test_keys_sort_by_kind_then_id_like_their_text() -> None:
    texts = ["port:b", "obj:z", "dvport:7", "port:a", "obj:a"]
    assert [str(k) for k in sorted(ItemKey.parse(t) for t in texts)] == sorted(texts)


def test_a_sync_settles_failed_waiting_and_done_keys() -> None:
    port_a, port_b, dv = (
        ItemKey(ItemKind.PORT, "a"),
        ItemKey(ItemKind.PORT, "b"),
        ItemKey(ItemKind.DV_PORT, "7"),
    )
    retries: Retries[ItemKey | str] = Retries(Backoff(base=1.0, cap=8.0, jitter=0))
    for key in (port_a, port_b, dv, "watch"):
        retries.failed(key, 0.0)
    # at 0.5 every delay still runs: the sync held each item back, so nothing is settled
    retries.settle(set(), retries.waiting(0.5), 0.5, keep=("watch",))
    assert set(retries.due) == {port_a, port_b, dv, "watch"}
    # at 1.0 all are due: port_b fails again, the others were done; the loop's own key is kept
    retries.settle({port_b}, retries.waiting(1.0), 1.0, keep=("watch",))
    assert retries.attempts == {port_b: 2, "watch": 1}
    assert retries.due == {port_b: 3.0, "watch": 1.0}


def test_a_jitter_is_drawn_from_the_key_text_so_typed_and_text_keys_wait_alike() -> None:
    policy = Backoff(base=1.0, cap=30.0, jitter=0.25)
    typed: Retries[ItemKey] = Retries(policy, seed=7)
    text: Retries[str] = Retries(policy, seed=7)
    key = ItemKey(ItemKind.PORT, "11111111-1111-4111-8111-111111111111")
    assert [typed.failed(key, 0.0) for _ in range(4)] == [text.failed(str(key), 0.0) for _ in range(4)]
