"""``model.names.natural_key``: numbers inside names compare as numbers."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agentvm.model.names import natural_key

PREFIX = st.text(alphabet="ABCDEFGHIJ_/", min_size=0, max_size=8)


@given(PREFIX, st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20, unique=True))
def test_names_that_differ_in_a_number_sort_by_that_number(prefix: str, numbers: list[int]) -> None:
    names = [f"{prefix}H{n}" for n in numbers]
    assert sorted(names, key=natural_key) == [f"{prefix}H{n}" for n in sorted(numbers)]


@given(st.lists(st.text(alphabet="ab_/01239", max_size=10), max_size=20))
def test_any_names_sort_without_comparing_a_number_to_text(names: list[str]) -> None:
    """ "H1" and "1H" side by side: the keys never put an int against a str (TypeError)."""
    keys = [natural_key(n) for n in sorted(names, key=natural_key)]
    assert all(a <= b for a, b in itertools.pairwise(keys))


def test_the_numbers_of_an_inventory_path_compare_as_numbers() -> None:
    paths = ["/DC0/host/DC0_C1/DC0_C1_H0", "/DC0/host/DC0_C0/DC0_C0_H10", "/DC0/host/DC0_C0/DC0_C0_H2"]
    assert sorted(paths, key=natural_key) == [
        "/DC0/host/DC0_C0/DC0_C0_H2",
        "/DC0/host/DC0_C0/DC0_C0_H10",
        "/DC0/host/DC0_C1/DC0_C1_H0",
    ]
