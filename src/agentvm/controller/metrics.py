"""A small thread-safe metrics registry and the controller's metrics, in Prometheus text format 0.0.4.

Written by hand rather than with ``prometheus_client``: the controller needs counters, gauges and
histograms with labels and one text rendering, which is less code than a dependency. The controller
updates ``ControllerMetrics``; ``agentvm.api`` serves ``Registry.render()`` at ``/metrics``.

Format rules followed (https://prometheus.io/docs/instrumenting/exposition_formats/): one ``# HELP`` and
one ``# TYPE`` line per metric family before its samples; HELP text escapes ``\\`` and newline; label
values escape ``\\``, ``"`` and newline; histograms expose cumulative ``_bucket{le="..."}`` samples ending
with ``le="+Inf"``, then ``_sum`` and ``_count``; values are Go-parsable floats (``+Inf``, ``-Inf``, ``NaN``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence

from agentvm.model.agency import IssueKind

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Prometheus client libraries' default buckets (seconds): 5 ms to 10 s
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelValues = tuple[str, ...]


def format_value(value: float) -> str:
    """A sample value as Prometheus parses it: integers without a fraction, ``+Inf``/``-Inf``/``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class Metric:
    """What counters, gauges and histograms share: a name, help text, label names and a lock."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"label name {label!r} of metric {name!r} is not a Prometheus label name")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"metric {name!r} repeats a label name: {list(labelnames)}")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        """Label values in ``labelnames`` order. ValueError when the label names are not exactly those."""
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name!r} takes labels {sorted(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> str:
        return "\n".join(self.header() + self.samples()) + "\n"


class _ValueMetric(Metric):
    """A metric with one number per label set (counters and gauges): reading and rendering them."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}
        if not labelnames:
            self._values[()] = 0.0  # an unlabelled metric shows 0 from the start

    def value(self, **labels: str) -> float:
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels_text(self.labelnames, k)} {format_value(v)}" for k, v in items]


class Counter(_ValueMetric):
    """A value that only goes up (restarts at 0 with the process). Name it ``..._total``."""

    kind = "counter"

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (>= 0; ValueError otherwise) to the series named by ``labels``."""
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"counter {self.name!r} cannot go down (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_ValueMetric):
    """A value that goes up and down; ``replace`` swaps every series at once (e.g. agents by state)."""

    kind = "gauge"

    def set(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def replace(self, series: Iterable[tuple[Mapping[str, str], float]]) -> None:
        """Every series at once: the ones not given disappear. A reader never sees half an update."""
        values = {self._key(labels): float(value) for labels, value in series}
        with self._lock:
            self._values = values


class Histogram(Metric):
    """Observations counted in cumulative buckets (upper bounds ``buckets``, then ``+Inf``), sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if "le" in labelnames:
            raise ValueError(f"histogram {name!r} cannot have a label named 'le' (Prometheus reserves it)")
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"histogram {name!r} needs increasing bucket bounds, got {list(buckets)}")
        self.buckets = (*bounds, math.inf)
        # per series: count in each bucket (not cumulative), sum, count
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}
        if not labelnames:
            self._series[()] = ([0] * len(self.buckets), [0.0, 0.0])

    def observe(self, value: float, /, **labels: str) -> None:
        """Count one observation (ValueError for NaN, which belongs in no bucket)."""
        if math.isnan(value):
            raise ValueError(f"histogram {self.name!r} cannot observe NaN")
        key = self._key(labels)
        index = next(i for i, bound in enumerate(self.buckets) if value <= bound)
        with self._lock:
            counts, totals = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
            counts[index] += 1
            totals[0] += value
            totals[1] += 1

    def count(self, **labels: str) -> int:
        key = self._key(labels)
        with self._lock:
            series = self._series.get(key)
            return int(series[1][1]) if series else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), list(t))) for k, (c, t) in self._series.items())
        lines = []
        for key, (counts, (total, count)) in items:
            cumulative = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                cumulative += n
                labels = _labels_text((*self.labelnames, "le"), (*key, format_value(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            plain = _labels_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {format_value(total)}")
            lines.append(f"{self.name}_count{plain} {format_value(count)}")
        return lines


class Registry:
    """Metrics by name, rendered together. Thread-safe: metrics lock themselves, the registry its list."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: Metric) -> None:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is registered twice")
            self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labelnames)
        self.register(metric)
        return metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labelnames)
        self.register(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, help_text, labelnames, buckets)
        self.register(metric)
        return metric

    def render(self) -> str:
        """The whole exposition, metric families in registration order, ending with a newline."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)


# ------------------------------------------------------------------------------ the controller's metrics

AGENT_STATES = ("green", "yellow", "red", "maintenance", "flapping", "misplaced")


class ControllerMetrics:
    """The metrics ``agentvm run`` exposes (issue 5), on their own registry. Called by the controller.

    - ``agentvm_agents{state}``: agents by state (green / yellow / red / maintenance / flapping / misplaced);
    - ``agentvm_agent_flapping{agency,host}``: 1 for an agent agentvm gave up on because it kept coming back
      after each heal, 0 for the others of the agencies observed (``set_flapping``);
    - ``agentvm_issues{kind}``: issues observed now, by EAM issue kind;
    - ``agentvm_resolves_attempted_total{kind}`` / ``agentvm_resolves_succeeded_total{kind}``;
    - ``agentvm_hook_latency_seconds``: from a hook seen pending to its ``MarkAsAvailable``;
    - ``agentvm_vcenter_call_duration_seconds{method}`` and ``agentvm_vcenter_errors_total{fault}``;
    - ``agentvm_last_full_resync_timestamp_seconds``: unix time of the last full resync (0: none yet);
    - with ``--netsync`` (registered by ``netsync()``, so they only show when the sync runs):
      ``agentvm_netsync_syncs_total{kind}`` (full / incremental syncs made), ``agentvm_netsync_batch_seconds``
      (a watch batch: updates received → every call of its plan returned), ``agentvm_netsync_failures_total``
      (items whose sync failed, each attempt).
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.agents = r.gauge("agentvm_agents", "Agents by state.", ("state",))
        self.issues = r.gauge("agentvm_issues", "Issues observed now, by EAM issue kind.", ("kind",))
        self.agent_flapping = r.gauge(
            "agentvm_agent_flapping",
            "1 when agentvm gave up healing the agent because it kept coming back after each heal.",
            ("agency", "host"),
        )
        self.resolves_attempted = r.counter(
            "agentvm_resolves_attempted_total", "Issues agentvm asked to resolve, by kind.", ("kind",)
        )
        self.resolves_succeeded = r.counter(
            "agentvm_resolves_succeeded_total",
            "Issues agentvm resolved that were then gone, by kind.",
            ("kind",),
        )
        self.hook_latency = r.histogram(
            "agentvm_hook_latency_seconds",
            "Time from a VM hook seen pending to its answer (MarkAsAvailable).",
        )
        self.vcenter_call_duration = r.histogram(
            "agentvm_vcenter_call_duration_seconds", "Duration of vCenter and EAM calls.", ("method",)
        )
        self.vcenter_errors = r.counter(
            "agentvm_vcenter_errors_total", "vCenter and EAM calls that failed, by fault.", ("fault",)
        )
        self.last_full_resync = r.gauge(
            "agentvm_last_full_resync_timestamp_seconds", "Unix time of the last full resync (0: none yet)."
        )
        self._netsync: NetsyncMetrics | None = None
        self.set_agents_by_state({})
        self.set_issues_by_kind({})

    def set_agents_by_state(self, counts: Mapping[str, int]) -> None:
        """Agents per state; every state is present (0 when absent). ValueError for an unknown state."""
        unknown = set(counts) - set(AGENT_STATES)
        if unknown:
            raise ValueError(f"unknown agent state(s) {sorted(unknown)}: use one of {list(AGENT_STATES)}")
        self.agents.replace(({"state": s}, counts.get(s, 0)) for s in AGENT_STATES)

    def set_issues_by_kind(self, counts: Mapping[str, int]) -> None:
        """Issues per kind; every known kind is present (0 when absent) so that series stay continuous."""
        kinds = [k.value for k in IssueKind] + sorted(set(counts) - {k.value for k in IssueKind})
        self.issues.replace(({"kind": k}, counts.get(k, 0)) for k in kinds)

    def set_flapping(self, agents: Mapping[tuple[str, str], bool]) -> None:
        """(agency name, host moid) -> flapping, for every agent observed now (the others disappear)."""
        self.agent_flapping.replace(
            ({"agency": agency, "host": host}, 1 if flapping else 0)
            for (agency, host), flapping in agents.items()
        )

    def netsync(self) -> NetsyncMetrics:
        """The network sync's metrics, registered on first use (the controller calls it with --netsync)."""
        if self._netsync is None:
            self._netsync = NetsyncMetrics(self.registry)
        return self._netsync

    def render(self) -> str:
        return self.registry.render()


class NetsyncMetrics:
    """The metrics of ``agentvm run --netsync`` (see ``ControllerMetrics``), on the controller's registry."""

    def __init__(self, registry: Registry) -> None:
        self.syncs = registry.counter(
            "agentvm_netsync_syncs_total", "Network syncs made, by kind (full or incremental).", ("kind",)
        )
        self.batch_seconds = registry.histogram(
            "agentvm_netsync_batch_seconds",
            "Network sync of one watch batch: from the vCenter updates received to the plan carried out.",
        )
        self.failures = registry.counter(
            "agentvm_netsync_failures_total", "Network sync items that failed (each failed attempt)."
        )
