"""``agentvm events``' pure parts: ``--since`` and the one-line rendering of an event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.cli.events import event_document, event_line, parse_since
from agentvm.model.errors import ConfigurationError
from tests.support.schemas import valid_event

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("2d", 172_800), ("1.5h", 5400), ("250ms", 0.25)],
)
def test_since_takes_a_duration_before_now(text: str, seconds: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(NOW - seconds)


@given(st.integers(0, 10_000), st.integers(0, 59), st.integers(0, 59))
def test_since_durations_add_their_parts(hours: int, minutes: int, seconds: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s"
    assert parse_since(text, NOW) == pytest.approx(NOW - (3600 * hours + 60 * minutes + seconds))


def test_since_takes_an_rfc_3339_time_with_its_zone() -> None:
    expected = datetime(2026, 12, 1, 21, 0, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T21:00:00Z", NOW) == expected
    assert parse_since("2026-12-01T22:00:00+01:00", NOW) == expected
    assert parse_since("2026-12-01t21:00:00.000z", NOW) == expected


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5x", "-10m", "m10", "2026-12-01", "10m 5s"])
def test_since_refuses_anything_else_naming_both_forms(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"neither a duration .* nor an RFC 3339 time"):
        parse_since(text, NOW)


def test_since_refuses_a_time_without_a_zone() -> None:
    with pytest.raises(ConfigurationError, match="no time zone: add Z"):
        parse_since("2026-12-01T21:00:00", NOW)


def test_an_event_line_names_agency_and_host_path_and_escapes_control_characters() -> None:
    event = {
        "id": 7,
        "time": datetime(2026, 12, 1, 21, 0, 5, tzinfo=UTC).timestamp(),
        "type": "heal",
        "level": "warning",
        "message": "VmPoweredOff on /DC0/host/C0/H10 is gone\x1b[2J",
        "agency": "contrail",
        "host": "host-21",
        "host_name": "/DC0/host/C0/H10",
    }
    valid_event(event_document(event))  # an event the API serves, as the schema has it
    line = event_line(event)
    assert line.startswith("2026-12-01T21:00:05Z warning heal       contrail /DC0/host/C0/H10 VmPoweredOff")
    assert "\x1b" not in line and line.endswith("is gone\\x1b[2J")
    bare_event = valid_event({"id": 1, "time": 0, "type": "resync", "level": "info", "message": "m"})
    bare = event_line(bare_event)
    assert bare == "1970-01-01T00:00:00Z info    resync     - - m"


def test_the_json_of_an_event_uses_camel_case_keys() -> None:
    event = {"id": 1, "host_name": "/DC0/host/H0", "correlation_id": "agentvm-run-1", "data": {"k": 1}}
    assert event_document(event) == {
        "id": 1,
        "hostName": "/DC0/host/H0",
        "correlationId": "agentvm-run-1",
        "data": {"k": 1},
    }
