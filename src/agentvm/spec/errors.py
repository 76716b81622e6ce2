"""Spec problems and the one error that carries them all.

Every validator in ``agentvm.spec`` records a ``Problem`` (file, line, field path, message with the fix)
instead of raising, so one run reports many mistakes; ``load_spec`` raises ``SpecError`` at the end.
The CLI prints ``str(error)`` — one line per problem — and exits with ConfigurationError's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentvm.model.errors import ConfigurationError

# Beyond this many problems the rest are counted, not listed: the first ones usually explain the others.
MAX_PROBLEMS = 20


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a spec file: ``contrail.yaml:14: agencies[0].ipPlan.cidr: <message>``."""

    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    path: str  # the field path, e.g. agencies[0].ipPlan.cidr; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return printable(text)


def printable(text: str) -> str:
    """``text`` with control and line-separator characters written as escapes (``\\x85``): one line.

    A message may quote what the spec holds (a cidr, a path, a file name); it must stay one line on a
    terminal and never carry an escape sequence to it.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class SpecError(ConfigurationError):
    """The spec file is wrong. ``problems`` lists every mistake found (sorted by line)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.line, p.path)))
        shown = [str(p) for p in self.problems[:MAX_PROBLEMS]]
        hidden = len(self.problems) - len(shown)
        if hidden > 0:
            shown.append(f"... and {hidden} more problem{'s' if hidden > 1 else ''}; fix these first")
        super().__init__("\n".join(shown))
