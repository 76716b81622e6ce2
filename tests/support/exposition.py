"""A strict reader of the Prometheus text exposition format 0.0.4, for tests of what agentvm renders.

Stricter than Prometheus where it helps find mistakes: every sample must belong to a family declared by a
HELP and a TYPE line before it, families are contiguous, and histogram buckets must be cumulative and end
with ``le="+Inf"`` equal to ``_count``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


@dataclass
class Family:
    name: str
    help: str = ""
    type: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], text)


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad label set at {text[pos:]!r}"
        assert match["name"] not in out, f"label {match['name']} repeated"
        out[match["name"]] = _unescape(match["value"])
        pos = match.end()
    return out


def _value(text: str) -> float:
    assert re.fullmatch(r"[+-]?Inf|NaN|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text), f"bad value {text!r}"
    return float(text.replace("Inf", "inf"))


def parse(text: str) -> dict[str, Family]:
    """Families by name. AssertionError naming the first line that breaks the format."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):  # only \n ends a line (not str.splitlines' others)
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} declared twice"
            current = families[name] = Family(name, help=_unescape(help_text))
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None and current.name == name, f"TYPE for {name} without its HELP first"
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            current.type = kind
        elif line.startswith("#"):
            continue
        else:
            match = _SAMPLE.match(line)
            assert match, f"bad sample line {line!r}"
            assert current is not None and current.type, f"sample before HELP/TYPE: {line!r}"
            name = match["name"]
            allowed = {current.name}
            if current.type == "histogram":
                allowed = {f"{current.name}_bucket", f"{current.name}_sum", f"{current.name}_count"}
            assert name in allowed, f"sample {name} outside its family {current.name}"
            current.samples.append((name, _labels(match["labels"]), _value(match["value"])))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for name, labels, value in family.samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if name.endswith("_bucket"):
            series.setdefault(key, []).append((_value(labels["le"]), value))
        elif name.endswith("_count"):
            counts[key] = value
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and math.isinf(bounds[-1]), f"{family.name}{key}: buckets {bounds}"
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{family.name}{key}: buckets not cumulative {values}"
        assert values[-1] == counts[key], f"{family.name}{key}: +Inf bucket != _count"


def sample(families: dict[str, Family], name: str, **labels: str) -> float:
    """The value of one sample, by its sample name and exact labels. KeyError when it is not there."""
    for family in families.values():
        for sample_name, sample_labels, value in family.samples:
            if sample_name == name and sample_labels == labels:
                return value
    raise KeyError(f"{name}{labels}")
