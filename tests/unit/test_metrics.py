"""The metrics registry (agentvm.controller.metrics) and its Prometheus text format 0.0.4."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentvm
from agentvm.controller.metrics import (
    ControllerMetrics,
    Counter,
    Gauge,
    Histogram,
    Registry,
    format_value,
    merge_expositions,
)
from agentvm.model.agency import IssueKind
from tests.support.exposition import parse, sample


def test_help_and_type_lines_come_before_the_samples() -> None:
    registry = Registry()
    registry.counter("jobs_total", "Jobs done.", ("kind",)).inc(2, kind="a")
    registry.gauge("temperature", "How hot.").set(21.5)
    text = registry.render()
    assert text.splitlines()[:4] == [
        "# HELP jobs_total Jobs done.",
        "# TYPE jobs_total counter",
        'jobs_total{kind="a"} 2',
        "# HELP temperature How hot.",
    ]
    families = parse(text)
    assert families["jobs_total"].type == "counter" and families["temperature"].type == "gauge"
    assert sample(families, "temperature") == 21.5


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    gauge = registry.gauge("odd", 'Help with a \\ backslash\nand a newline and "quotes".', ("path",))
    gauge.set(1, path='C:\\dir "quoted"\nnext')
    text = registry.render()
    assert '# HELP odd Help with a \\\\ backslash\\nand a newline and "quotes".' in text
    assert 'odd{path="C:\\\\dir \\"quoted\\"\\nnext"} 1' in text
    assert sample(parse(text), "odd", path='C:\\dir "quoted"\nnext') == 1


@given(st.text(max_size=30))
def test_any_label_value_round_trips(value: str) -> None:
    registry = Registry()
    registry.gauge("g", "A gauge.", ("v",)).set(3, v=value)
    text = registry.render()
    assert text.count("\n") == 3  # escaping keeps every sample on one line
    assert sample(parse(text), "g", v=value) == 3


def test_histogram_has_cumulative_buckets_ending_with_inf_then_sum_and_count() -> None:
    registry = Registry()
    hist = registry.histogram("latency_seconds", "Latency.", ("op",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(value, op="read")
    lines = registry.render().splitlines()
    assert lines[2:] == [
        'latency_seconds_bucket{op="read",le="0.1"} 2',
        'latency_seconds_bucket{op="read",le="1"} 3',
        'latency_seconds_bucket{op="read",le="+Inf"} 4',
        'latency_seconds_sum{op="read"} 3.65',
        'latency_seconds_count{op="read"} 4',
    ]
    assert hist.count(op="read") == 4


def test_an_unlabelled_histogram_is_exposed_before_any_observation() -> None:
    registry = Registry()
    registry.histogram("h_seconds", "H.", buckets=(1.0,))
    assert registry.render().splitlines()[2:] == [
        'h_seconds_bucket{le="1"} 0',
        'h_seconds_bucket{le="+Inf"} 0',
        "h_seconds_sum 0",
        "h_seconds_count 0",
    ]


def test_values_are_written_as_prometheus_parses_them() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert float(format_value(1e-7)) == 1e-7


def test_mistakes_are_refused_with_the_metric_named() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "C.", ("kind",))
    with pytest.raises(ValueError, match=r"c_total.*cannot go down"):
        counter.inc(-1, kind="x")
    with pytest.raises(ValueError, match=r"c_total.*takes labels \['kind'\]"):
        counter.inc(1, other="x")
    with pytest.raises(ValueError, match="registered twice"):
        registry.counter("c_total", "again")
    with pytest.raises(ValueError, match="not a Prometheus name"):
        Gauge("bad-name", "x")
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        Gauge("g", "x", ("__reserved",))
    with pytest.raises(ValueError, match="'le'"):
        Histogram("h", "x", ("le",))
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "x", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="NaN"):
        Histogram("h", "x").observe(math.nan)


def test_gauge_replace_drops_the_series_not_given() -> None:
    gauge = Gauge("g", "G.", ("k",))
    gauge.set(1, k="a")
    gauge.replace([({"k": "b"}, 2)])
    assert gauge.samples() == ['g{k="b"} 2']


def test_counters_are_exact_under_concurrent_increments() -> None:
    counter = Counter("c_total", "C.", ("t",))
    hist = Histogram("h", "H.")

    def work() -> None:
        for _ in range(2000):
            counter.inc(t="x")
            hist.observe(0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert counter.value(t="x") == 8000
    assert hist.count() == 8000


def test_the_controller_metrics_have_the_names_issue_5_asks_for() -> None:
    metrics = ControllerMetrics()
    metrics.set_agents_by_state({"contrail": {"green": 5, "red": 1}})
    metrics.set_issues_by_kind({IssueKind.VM_POWERED_OFF.value: 1})
    metrics.resolves_attempted.inc(kind=IssueKind.VM_POWERED_OFF.value)
    metrics.resolves_succeeded.inc(kind=IssueKind.VM_POWERED_OFF.value)
    metrics.hook_latency.observe(0.2)
    metrics.vcenter_call_duration.observe(0.01, method="RetrievePropertiesEx")
    metrics.vcenter_errors.inc(fault="NotAuthenticated")
    metrics.last_full_resync.set(1_700_000_000)
    metrics.pass_own.observe(0.003, **{"pass": "poll"})
    metrics.resolve_own.observe(0.02)
    metrics.set_flapping({("contrail", "host-21"): True, ("contrail", "host-22"): False})
    families = parse(metrics.render())

    assert {name: f.type for name, f in families.items()} == {
        "agentvm_build_info": "gauge",
        "agentvm_vcenter_connected": "gauge",
        "agentvm_agents": "gauge",
        "agentvm_issues": "gauge",
        "agentvm_agent_flapping": "gauge",
        "agentvm_resolves_attempted_total": "counter",
        "agentvm_resolves_succeeded_total": "counter",
        "agentvm_hook_latency_seconds": "histogram",
        "agentvm_vcenter_call_duration_seconds": "histogram",
        "agentvm_vcenter_errors_total": "counter",
        "agentvm_agent_reads_total": "counter",
        "agentvm_last_full_resync_timestamp_seconds": "gauge",
        "agentvm_pass_own_seconds": "histogram",
        "agentvm_resolve_own_seconds": "histogram",
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds_total": "counter",
        "process_start_time_seconds": "gauge",
        "process_open_fds": "gauge",
    }
    states = ("green", "yellow", "red", "maintenance", "flapping", "misplaced")
    by_state = [sample(families, "agentvm_agents", agency="contrail", state=s) for s in states]
    assert by_state == [5, 0, 1, 0, 0, 0]
    assert sample(families, "agentvm_issues", kind="VmPoweredOff") == 1
    assert sample(families, "agentvm_issues", kind="VmNotDeployed") == 0  # every kind stays present
    assert sample(families, "agentvm_resolves_succeeded_total", kind="VmPoweredOff") == 1
    assert sample(families, "agentvm_hook_latency_seconds_bucket", le="0.25") == 1
    assert sample(families, "agentvm_hook_latency_seconds_bucket", le="0.1") == 0
    assert sample(families, "agentvm_vcenter_call_duration_seconds_count", method="RetrievePropertiesEx") == 1
    assert sample(families, "agentvm_vcenter_errors_total", fault="NotAuthenticated") == 1
    assert sample(families, "agentvm_last_full_resync_timestamp_seconds") == 1_700_000_000
    assert sample(families, "agentvm_pass_own_seconds_bucket", **{"pass": "poll", "le": "0.0025"}) == 0
    assert sample(families, "agentvm_pass_own_seconds_bucket", **{"pass": "poll", "le": "0.005"}) == 1
    assert sample(families, "agentvm_resolve_own_seconds_count") == 1
    assert sample(families, "agentvm_agent_flapping", agency="contrail", host="host-21") == 1
    assert sample(families, "agentvm_agent_flapping", agency="contrail", host="host-22") == 0

    with pytest.raises(ValueError, match="unknown agent state"):
        metrics.set_agents_by_state({"contrail": {"purple": 1}})


def test_build_info_process_metrics_and_connection_gauge_as_prometheus_expects() -> None:
    metrics = ControllerMetrics()
    families = parse(metrics.render())
    (build,) = families["agentvm_build_info"].samples
    assert build[1] == {"version": agentvm.__version__, "python": platform.python_version()}
    assert build[2] == 1
    assert sample(families, "agentvm_vcenter_connected") == 0  # no pass yet
    metrics.vcenter_connected.set(1)
    assert sample(parse(metrics.render()), "agentvm_vcenter_connected") == 1

    # the process's own figures, checked against what the standard library says of this process
    rss = sample(families, "process_resident_memory_bytes")
    ps_rss = 1024 * int(ps("rss"))  # ps says KiB
    assert rss > 1024 * 1024 and abs(rss - ps_rss) < 0.25 * ps_rss  # the heap moves a little in between
    cpu = sample(families, "process_cpu_seconds_total")
    used = os.times()
    assert 0 < cpu <= used.user + used.system + 0.02  # the kernel's ticks are 10 ms
    started = sample(families, "process_start_time_seconds")
    assert started == pytest.approx(ps_start_time(), abs=2.0)  # ps says whole seconds
    fds = sample(families, "process_open_fds")
    with open(os.devnull) as extra:
        assert sample(parse(metrics.render()), "process_open_fds") == fds + 1
        assert extra.fileno() >= 0


def ps(field: str) -> str:
    """One field of this process as ``ps`` reports it."""
    return subprocess.run(
        ["ps", "-o", f"{field}=", "-p", str(os.getpid())], capture_output=True, text=True, check=True
    ).stdout.strip()


def ps_start_time() -> float:
    """This process's start time as ``ps`` computes it: now minus the elapsed seconds ps reports."""
    return time.time() - int(ps("etimes"))


def test_resolve_counters_are_present_at_zero_from_the_start_for_every_kind_agentvm_resolves() -> None:
    families = parse(ControllerMetrics().render())
    for name in ("agentvm_resolves_attempted_total", "agentvm_resolves_succeeded_total"):
        kinds = {labels["kind"]: value for _, labels, value in families[name].samples}
        assert {"VmPoweredOff", "VmNotDeployed", "VmOnWrongHost"} <= set(kinds)
        assert "OvfInvalidFormat" not in kinds  # passive: a person fixes it, agentvm never resolves it
        assert set(kinds.values()) == {0}


def test_agents_by_state_carry_their_agency_and_known_agencies_show_from_the_start() -> None:
    metrics = ControllerMetrics(agencies=["contrail", "hello"])
    families = parse(metrics.render())
    assert {(labels["agency"], value) for _, labels, value in families["agentvm_agents"].samples} == {
        ("contrail", 0),
        ("hello", 0),
    }
    metrics.set_agents_by_state({"contrail": {"green": 2}, "hello": {"red": 1}})
    families = parse(metrics.render())
    assert sample(families, "agentvm_agents", agency="contrail", state="green") == 2
    assert sample(families, "agentvm_agents", agency="hello", state="red") == 1
    assert sample(families, "agentvm_agents", agency="hello", state="green") == 0


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=12), st.integers(min_value=0, max_value=5)),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_several_controllers_merge_into_one_exposition_labelled_by_vcenter_and_solution(
    controllers: list[tuple[str, int]],
) -> None:
    parts = []
    for url, connected in controllers:
        metrics = ControllerMetrics(agencies=["contrail"])
        metrics.vcenter_connected.set(connected)
        metrics.hook_latency.observe(0.2)
        metrics.resolves_attempted.inc(connected, kind="VmPoweredOff")
        parts.append(({"vcenter": url, "solution": "org.x"}, metrics.render()))
    families = parse(merge_expositions(parts))  # strict: each family once, HELP and TYPE before samples
    for url, connected in controllers:
        labels = {"vcenter": url, "solution": "org.x"}
        assert sample(families, "agentvm_vcenter_connected", **labels) == connected
        assert (
            sample(families, "agentvm_resolves_attempted_total", kind="VmPoweredOff", **labels) == connected
        )
        assert sample(families, "agentvm_hook_latency_seconds_count", **labels) == 1
        assert sample(families, "agentvm_agents", agency="contrail", state="green", **labels) == 0
    assert len(families["process_open_fds"].samples) == 1  # the process's own, once, unlabelled
    assert families["process_open_fds"].samples[0][1] == {}
    assert len(families["agentvm_build_info"].samples) == 1
