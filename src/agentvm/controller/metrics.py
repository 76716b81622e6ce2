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
import os
import platform
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from agentvm import __version__
from agentvm.core.agent_reads import READ_REASONS
from agentvm.core.heal import Finding, HealClass, heal_class
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

    def declare(self, **labels: str) -> None:
        """Show the series named by ``labels`` at 0 until it is first incremented (Prometheus wants the
        series of a counter present from the start, so that ``rate()`` sees its first increase)."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)


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


class Sampled(Metric):
    """One unlabelled value read when the metrics are rendered (``read()``), e.g. from ``/proc``. A read
    that fails (OSError, ValueError) leaves the sample out rather than failing the whole scrape."""

    def __init__(self, name: str, help_text: str, kind: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.kind = kind
        self._read = read

    def samples(self) -> list[str]:
        try:
            value = self._read()
        except (OSError, ValueError):
            return []
        return [f"{self.name} {format_value(value)}"]


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

    def sampled(self, name: str, help_text: str, kind: str, read: Callable[[], float]) -> Sampled:
        metric = Sampled(name, help_text, kind, read)
        self.register(metric)
        return metric

    def render(self) -> str:
        """The whole exposition, metric families in registration order, ending with a newline."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)


# ------------------------------------------------------------------------------ the process's metrics


def _proc_stat() -> list[str]:
    """The fields of ``/proc/self/stat`` after the command name (which may hold spaces): field 3 first."""
    with open("/proc/self/stat", encoding="ascii") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def resident_memory_bytes() -> float:
    """VmRSS of ``/proc/self/status``, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024  # the kernel says kB: KiB
    raise ValueError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    """User plus system CPU time of the process (utime + stime of ``/proc/self/stat``)."""
    fields = _proc_stat()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_time_seconds() -> float:
    """Unix time the process started: its start in clock ticks after boot (``/proc/self/stat`` field 22)
    plus the boot time (``btime`` of ``/proc/stat``)."""
    ticks = int(_proc_stat()[19])
    with open("/proc/stat", encoding="ascii") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def open_fds() -> float:
    return float(len(os.listdir("/proc/self/fd")))


def register_process_metrics(registry: Registry) -> None:
    """The process metrics Prometheus client libraries export, read from ``/proc/self`` at each scrape
    (Linux; elsewhere the samples are left out, the families stay)."""
    registry.sampled(
        "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", resident_memory_bytes
    )
    registry.sampled(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        cpu_seconds,
    )
    registry.sampled(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        start_time_seconds,
    )
    registry.sampled("process_open_fds", "Number of open file descriptors.", "gauge", open_fds)


# ------------------------------------------------------------------------------ the controller's metrics

# the issue kinds agentvm resolves by itself: their resolve counters are present (0) from the start
RESOLVED_KINDS: tuple[str, ...] = (
    *(k.value for k in IssueKind if heal_class(k) is HealClass.ACTIVE),
    Finding.VM_ON_WRONG_HOST.value,
)

# own time of a pass: from a millisecond (a quiet poll) to seconds (a full pass over thousands of agents)
OWN_TIME_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

AGENT_STATES = ("green", "yellow", "red", "maintenance", "flapping", "misplaced")


class ControllerMetrics:
    """The metrics ``agentvm run`` exposes at ``/metrics``, on their own registry. Called by the controller.

    - ``agentvm_build_info{version,python}``: 1, naming the agentvm and Python versions running;
    - ``agentvm_vcenter_connected``: 1 while the controller's passes succeed, 0 before the first one and
      during an outage (vCenter or EAM unreachable, a login refused);
    - ``agentvm_agents{agency,state}``: agents of each agency by state (green / yellow / red / maintenance /
      flapping / misplaced), every state present for every agency (``set_agents_by_state``);
    - ``agentvm_agent_flapping{agency,host}``: 1 for an agent agentvm gave up on because it kept coming back
      after each heal, 0 for the others of the agencies observed (``set_flapping``);
    - ``agentvm_issues{kind}``: issues observed now, by EAM issue kind;
    - ``agentvm_resolves_attempted_total{kind}`` / ``agentvm_resolves_succeeded_total{kind}``, present at 0
      from the start for every kind agentvm resolves by itself (``RESOLVED_KINDS``);
    - ``agentvm_hook_latency_seconds``: from a hook seen pending to its ``MarkAsAvailable``;
    - ``agentvm_vcenter_call_duration_seconds{method}`` and ``agentvm_vcenter_errors_total{fault}``;
    - ``agentvm_last_full_resync_timestamp_seconds``: unix time of the last full resync (0: none yet);
    - ``agentvm_pass_own_seconds{pass}``: agentvm's own time in each pass (``full`` or ``poll``), its wall
      time less the calls it made, and ``agentvm_resolve_own_seconds``: the same from a pass's start to
      its first Resolve (for benchmarks of a separate ``agentvm run`` process: bench/bench_scale.py);
    - with ``--netsync`` (registered by ``netsync()``, so they only show when the sync runs):
      ``agentvm_netsync_syncs_total{kind}`` (full / incremental syncs made), ``agentvm_netsync_batch_seconds``
      (a watch batch: updates received → every call of its plan returned), ``agentvm_netsync_failures_total``
      (items whose sync failed, each attempt);
    - ``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ``process_start_time_seconds`` and
      ``process_open_fds``, read from ``/proc/self`` at each scrape (``register_process_metrics``).
    """

    def __init__(self, registry: Registry | None = None, *, agencies: Iterable[str] = ()) -> None:
        """``agencies``: the names of the agencies to show in ``agentvm_agents`` before they are observed."""
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.build_info = r.gauge(
            "agentvm_build_info", "Always 1; the labels name the agentvm build.", ("version", "python")
        )
        self.build_info.set(1, version=__version__, python=platform.python_version())
        self.vcenter_connected = r.gauge(
            "agentvm_vcenter_connected",
            "1 while the controller's vCenter (and EAM) session works, 0 before the first pass and during "
            "an outage.",
        )
        self.agents = r.gauge("agentvm_agents", "Agents of each agency by state.", ("agency", "state"))
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
        self.agent_reads = r.counter(
            "agentvm_agent_reads_total",
            "Agent runtimes read (one AgentQueryRuntime each), by why: full (every agent: start, sweep, "
            "reconnect), new, stale (acted on), watch (its VM changed), issue (its issues changed), retry "
            "(in transition), status (its agency's status changed), sweep (the spread sweep).",
            ("reason",),
        )
        self.vcenter_errors = r.counter(
            "agentvm_vcenter_errors_total", "vCenter and EAM calls that failed, by fault.", ("fault",)
        )
        self.last_full_resync = r.gauge(
            "agentvm_last_full_resync_timestamp_seconds", "Unix time of the last full resync (0: none yet)."
        )
        self.pass_own = r.histogram(
            "agentvm_pass_own_seconds",
            "agentvm's own time in each controller pass (full or poll): its wall time less its calls' time.",
            ("pass",),
            buckets=OWN_TIME_BUCKETS,
        )
        self.resolve_own = r.histogram(
            "agentvm_resolve_own_seconds",
            "agentvm's own time from a pass's start to its first Resolve, calls excluded.",
            buckets=OWN_TIME_BUCKETS,
        )
        for reason in READ_REASONS:
            self.agent_reads.declare(reason=reason)
        for kind in RESOLVED_KINDS:
            self.resolves_attempted.declare(kind=kind)
            self.resolves_succeeded.declare(kind=kind)
        self._netsync: NetsyncMetrics | None = None
        self._flapping: Mapping[tuple[str, str], bool] | None = None  # as last set
        self.set_agents_by_state({name: {} for name in agencies})
        self.set_issues_by_kind({})
        register_process_metrics(r)

    def set_agents_by_state(self, by_agency: Mapping[str, Mapping[str, int]]) -> None:
        """Agency name -> agents per state; every state of every agency given is present (0 when absent),
        the agencies not given disappear. ValueError for an unknown state."""
        unknown = {state for counts in by_agency.values() for state in counts} - set(AGENT_STATES)
        if unknown:
            raise ValueError(f"unknown agent state(s) {sorted(unknown)}: use one of {list(AGENT_STATES)}")
        self.agents.replace(
            ({"agency": agency, "state": s}, counts.get(s, 0))
            for agency, counts in by_agency.items()
            for s in AGENT_STATES
        )

    def set_issues_by_kind(self, counts: Mapping[str, int]) -> None:
        """Issues per kind; every known kind is present (0 when absent) so that series stay continuous."""
        kinds = [k.value for k in IssueKind] + sorted(set(counts) - {k.value for k in IssueKind})
        self.issues.replace(({"kind": k}, counts.get(k, 0)) for k in kinds)

    def set_flapping(self, agents: Mapping[tuple[str, str], bool]) -> None:
        """(agency name, host moid) -> flapping, for every agent observed now (the others disappear).
        Called after every poll: the series are replaced only when one of them changed."""
        if agents == self._flapping:
            return
        self._flapping = dict(agents)
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


# families every controller of a process renders alike: shown once, unlabelled, in a merged exposition
PROCESS_FAMILIES = frozenset(
    {
        "agentvm_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    }
)


def _with_labels(sample: str, labels: str) -> str:
    name, brace, rest = sample.partition("{")
    if brace:
        return f"{name}{{{labels},{rest}" if not rest.startswith("}") else f"{name}{{{labels}{rest}"
    name, space, value = sample.partition(" ")
    return f"{name}{{{labels}}}{space}{value}"


def merge_expositions(parts: Sequence[tuple[Mapping[str, str], str]]) -> str:
    """Several registries' ``render()`` as one exposition: each family once (HELP and TYPE from the first
    part that has it), every sample of part i labelled with its labels (e.g. ``vcenter``, ``solution``:
    ``agentvm run`` with several specs), and the process families (``PROCESS_FAMILIES``) once, unlabelled,
    from the first part. Label names already on a sample must differ from the added ones."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for index, (labels, text) in enumerate(parts):
        added = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP "):
                family = line.split(" ", 3)[2]
                if family not in samples:
                    headers[family], samples[family] = [line], []
            elif line.startswith("# TYPE "):
                if len(headers[family]) == 1:
                    headers[family].append(line)
            elif line and family:
                if family in PROCESS_FAMILIES:
                    if index == 0:
                        samples[family].append(line)
                else:
                    samples[family].append(_with_labels(line, added) if added else line)
    return "".join("\n".join(headers[f][:2] + samples[f]) + "\n" for f in samples)


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
