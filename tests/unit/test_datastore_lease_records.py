"""The lease records of a standalone ESXi host as files (``vsphere.datastore_files``): directory names,
``record.json`` written and read back, what is not agentvm's record, and how ``core.lease`` judges a
directory whose record is not written yet (pure: no lab)."""

from __future__ import annotations

import json

import pytest

from agentvm.core.lease import MIN_TTL, LeaseVerdict, confirm, judge
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere.datastore_files import (
    UNWRITTEN_COMMAND,
    generation_of,
    lease_dir_name,
    parse_record,
    record_json,
)

KEY = "org.tungsten.agentvm"
HOLDER = LeaseHolder(host="ctl-1", pid=4242, command="run", started="2026-12-04T18:00:00Z", token="ab" * 8)


def test_directory_names_round_trip_and_only_our_generations_count() -> None:
    assert lease_dir_name(KEY, 42) == "org.tungsten.agentvm.lease.42"
    assert generation_of("org.tungsten.agentvm.lease.42", KEY) == 42
    assert generation_of("org.tungsten.agentvm.lease.42/", KEY) == 42  # a browser's folder path
    for other in (
        "org.tungsten.agentvm.lease.042",  # not the name agentvm writes
        "org.tungsten.agentvm.lease.",
        "org.tungsten.agentvm.lease.4a",
        "org.tungsten.agentvm.lease.-4",
        "org.tungsten.agentvm.lease.\uff14\uff12",  # full-width digits: str.isdigit() says yes
        "org.tungsten.other.lease.42",
        "org.tungsten.agentvm.lease.42.old",
        ".tmp-org.tungsten.agentvm.lease.42-abab.json",
    ):
        assert generation_of(other, KEY) is None, other


def test_a_record_reads_back_as_written() -> None:
    record = LeaseRecord(lease_dir_name(KEY, 7), 7, HOLDER, renewals=12, ttl=15.0, released=True)
    content = record_json(KEY, record)
    assert parse_record(KEY, 7, content) == record
    data = json.loads(content)
    assert data["solution"] == KEY and data["generation"] == 7 and data["format"] == 1


@pytest.mark.parametrize(
    "content",
    [
        b"",  # a file cut short
        b'{"format":1,"solution":"org.tungsten.agentvm"',
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
    ],
)
def test_a_file_that_is_not_a_whole_record_is_not_ours(content: bytes) -> None:
    record = parse_record(KEY, 7, content)
    assert record.holder is None and record.generation == 7 and record.key == lease_dir_name(KEY, 7)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", 2),
        ("solution", "org.tungsten.other"),  # copied from another solution's directory
        ("generation", 8),  # copied from another generation
        ("pid", "4242"),
        ("pid", True),
        ("renewals", 1.5),
        ("released", "false"),
        ("ttl", None),
        ("token", ""),
        ("token", "unwritten:org.tungsten.agentvm.lease.7"),
    ],
)
def test_a_record_with_a_wrong_field_is_not_ours(field: str, value: object) -> None:
    data = json.loads(record_json(KEY, LeaseRecord(lease_dir_name(KEY, 7), 7, HOLDER, renewals=1, ttl=15.0)))
    data[field] = value
    assert parse_record(KEY, 7, json.dumps(data).encode()).holder is None
    del data[field]
    assert parse_record(KEY, 7, json.dumps(data).encode()).holder is None


def test_a_directory_without_its_record_holds_the_lease_until_seen_unchanged_for_the_minimum_ttl() -> None:
    unwritten = parse_record(KEY, 8, None)
    assert unwritten.ours and not unwritten.released
    assert unwritten.holder is not None and unwritten.holder.command == UNWRITTEN_COMMAND
    held = judge([unwritten], token="me", now=100.0)
    assert held.verdict is LeaseVerdict.HELD and held.holder == unwritten.holder
    still = judge([unwritten], token="me", seen=held.seen, now=100.0 + MIN_TTL / 2)
    assert still.verdict is LeaseVerdict.HELD
    free = judge([unwritten], token="me", seen=held.seen, now=100.0 + MIN_TTL)
    assert free.verdict is LeaseVerdict.FREE and free.next_generation == 9


def test_a_record_written_into_a_judged_empty_directory_stops_the_contender_that_judged_it() -> None:
    unwritten = parse_record(KEY, 8, None)
    first = judge([unwritten], token="me", now=0.0)
    free = judge([unwritten], token="me", seen=first.seen, now=MIN_TTL)
    assert free.verdict is LeaseVerdict.FREE
    mine = LeaseRecord(lease_dir_name(KEY, 9), 9, LeaseHolder("b", 2, "apply", "", "me"))
    assert confirm([unwritten, mine], generation=9, token="me", judged=free.judged)
    written = LeaseRecord(lease_dir_name(KEY, 8), 8, HOLDER, ttl=15.0)  # its contender caught up
    assert not confirm([written, mine], generation=9, token="me", judged=free.judged)
    # and that contender, confirming its own 8, sees the record above it
    assert not confirm([written, mine], generation=8, token=HOLDER.token, judged=())
