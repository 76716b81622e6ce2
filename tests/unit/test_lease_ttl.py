"""The lease TTL setting (``$AGENTVM_LEASE_TTL``): a number of seconds in range, else one clear error."""

from __future__ import annotations

import pytest

from agentvm.controller.lease import lease_ttl
from agentvm.model.errors import ConfigurationError


def test_unset_or_empty_is_the_default_of_15_s() -> None:
    assert lease_ttl({}) == 15.0
    assert lease_ttl({"AGENTVM_LEASE_TTL": " "}) == 15.0


def test_a_number_of_seconds_is_taken() -> None:
    assert lease_ttl({"AGENTVM_LEASE_TTL": "2.5"}) == 2.5


@pytest.mark.parametrize("text", ["abc", "0.5", "0", "-3", "nan", "inf", "3601"])
def test_anything_else_names_the_variable_and_the_range(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"\$AGENTVM_LEASE_TTL=.* between 1 and 3600"):
        lease_ttl({"AGENTVM_LEASE_TTL": text})
