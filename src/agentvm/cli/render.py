"""How the CLI draws hosts: the ``status`` / ``plan`` / apply-summary table and the live apply/destroy view.

Called by ``cli.status``, ``cli.plan`` and ``cli.destroy`` (through ``cli.solution``). Promises, at any
width: a name, moid, address or state is never cut (its column is as wide as its longest value; a column
that does not fit is left out, with a line that says so, rather than squeezed); only free text (issue
sentences) folds; hosts come in natural order (``core.progress.host_rows``); the live view's summary
line ("N/M hosts done") is always on screen, first, with as many hosts as fit below it. Every value from
vCenter, a spec or a user goes in as ``Text`` with control characters escaped (``cli.output.text``): never
markup, emoji or an escape sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentvm.cli.output import console, shown, text
from agentvm.core.heal import HostConditions
from agentvm.core.progress import (
    DONE,
    MAINTENANCE,
    HostProgress,
    Phase,
    Progress,
    issue_sentence,
    state_word,
    summarize,
)

PHASE_STYLE = {
    Phase.READY: "green",
    Phase.REMOVED: "green",
    Phase.ISSUE: "red",
    Phase.CONFIGURING: "cyan",
    Phase.WAITING: "dim",
}
GAP = 3  # columns between two table columns (box.SIMPLE_HEAD: one divider and one space either side)


def host_name(row: HostProgress) -> str:
    """The host's name (the last element of its inventory path)."""
    return row.label.rsplit("/", 1)[-1]


R = TypeVar("R")


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column of a ``FittedTable``: its header and the cell of a row."""

    name: str
    cell: Callable[[R], Text]
    free_text: bool = False  # folds; every other column is an identifier and is never cut
    dropped_note: str = ""  # what the note says when the column is left out


@dataclass(frozen=True)
class FittedTable(Generic[R]):
    """A table of rows (hosts, say) that fits the width it is drawn at: identifier columns at their full
    width, the free text column folding, and columns left out (in ``drop_order``) with a note when they do
    not fit."""

    title: str
    rows: tuple[R, ...]
    columns: tuple[Column[R], ...]
    drop_order: tuple[str, ...]
    footer: tuple[Text, ...] = field(default=())

    def __rich_console__(self, con: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        columns = list(self.columns)
        cells = {c.name: [c.cell(h) for h in self.rows] for c in columns}

        def need(column: Column[R]) -> int:
            values = [Text(column.name), *cells[column.name]]
            if column.free_text:  # folds at spaces: its longest word must fit
                return max((len(w) for v in values for w in v.plain.split()), default=1)
            return max(v.cell_len for v in values)

        dropped: list[Column[R]] = []
        for name in self.drop_order:
            if sum(need(c) for c in columns) + GAP * (len(columns) - 1) <= width:
                break
            column = next((c for c in columns if c.name == name), None)
            if column is not None and len(columns) > 1:
                columns.remove(column)
                dropped.append(column)
        table = Table(
            title=text(self.title) if self.title else None,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for c in columns:
            table.add_column(
                c.name,
                overflow="fold",
                no_wrap=not c.free_text,
                min_width=None if c.free_text else need(c),
                ratio=1 if c.free_text else None,
            )
        for i in range(len(self.rows)):
            table.add_row(*(cells[c.name][i] for c in columns))
        yield table
        if dropped:
            notes = "; ".join(c.dropped_note or c.name for c in dropped)
            yield Text(f"(not shown at {width} columns: {notes}; widen the terminal or use --json)")
        yield from self.footer


def _state(conditions: HostConditions | None) -> Callable[[HostProgress], Text]:
    def cell(h: HostProgress) -> Text:
        word = state_word(h, conditions)
        if word == MAINTENANCE:
            return Text(MAINTENANCE, style="yellow")
        return Text(word, style=PHASE_STYLE.get(h.phase, "yellow"))

    return cell


def hosts_table(
    rows: Sequence[HostProgress], title: str, conditions: HostConditions | None = None
) -> FittedTable[HostProgress]:
    """The summary / status table: one row per host; columns with nothing to say are left out.

    ``conditions``: the hosts in maintenance mode or standby, whose state reads ``maintenance`` (as on the
    dashboard). The issues are also listed one per line (``issue_lines``), so the issues column is the
    first one left out when the table does not fit."""
    columns: list[Column[HostProgress]] = [
        Column("agency", lambda h: text(h.agency)),
        Column("cluster", lambda h: text(h.cluster or "(standalone)")),
        Column("host", lambda h: text(host_name(h))),
        Column("agent VM", lambda h: text(h.vm_name or "-")),
        Column("power", lambda h: text(h.power.value if h.power else "-")),
        Column("hook", lambda h: text(h.hook.value if h.hook else "-")),
        Column("address", lambda h: text(h.address or "-")),
        Column("state", _state(conditions)),
        Column(
            "issues",
            lambda h: text(", ".join(f"{i.kind.value} #{i.key}" for i in h.issues) or "-"),
            free_text=True,
            dropped_note="issues (listed below)",
        ),
    ]
    optional = {
        "agency": len({h.agency for h in rows}) > 1,
        "hook": any(h.hook for h in rows),
        "address": any(h.address for h in rows),
        "issues": any(h.issues for h in rows),
    }
    shown_columns = tuple(c for c in columns if optional.get(c.name, True))
    drop = ("issues", "cluster", "hook", "agency", "power", "address", "agent VM")
    return FittedTable(title, tuple(rows), shown_columns, drop)


def issue_lines(rows: Sequence[HostProgress]) -> list[Text]:
    """One line per issue of ``rows``: its key, kind, host and the sentence that says what fixes it."""
    return [
        text(f"issue #{i.key} ({i.kind.value}) on {host_name(h)}: {issue_sentence(i)}", style="red")
        for h in rows
        for i in h.issues
    ]


# ------------------------------------------------------------------------------------------- progress


def _summary(progress: Progress) -> Text:
    counted = summarize(progress.hosts)
    return Text(
        f"{counted.done}/{counted.hosts} hosts done, {progress.count(Phase.ISSUE)} with issues, "
        f"{progress.elapsed:.1f} s",
        style="bold",
    )


def _progress_table(rows: Iterable[HostProgress], agencies: int, more: int) -> FittedTable[HostProgress]:
    columns: list[Column[HostProgress]] = [
        Column("agency", lambda h: text(h.agency)),
        Column("host", lambda h: text(host_name(h))),
        Column("phase", lambda h: Text(h.shown_phase, style=PHASE_STYLE.get(h.phase, "yellow"))),
        Column("agent VM", lambda h: text(h.vm_name or "-")),
        Column("address", lambda h: text(h.address or "-")),
        Column("detail", lambda h: text(h.detail), free_text=True),
    ]
    if agencies < 2:
        columns = columns[1:]
    footer = (Text(f"… and {more} more hosts (the ones still in progress are listed first)", style="dim"),)
    return FittedTable(
        "", tuple(rows), tuple(columns), ("detail", "agency", "address", "agent VM"), footer if more else ()
    )


@dataclass(frozen=True)
class LiveView:
    """The live apply/destroy view at the size it is drawn: the summary line first, then as many hosts as
    fit in ``height`` lines (the ones not done first, in natural order), then how many were left out."""

    progress: Progress
    height: int | None = None

    def __rich_console__(self, con: Console, options: ConsoleOptions) -> RenderResult:
        height = self.height or options.height or con.height
        hosts = self.progress.hosts
        ordered = [h for h in hosts if h.phase not in DONE] + [h for h in hosts if h.phase in DONE]
        agencies = len({h.agency for h in hosts})
        summary = _summary(self.progress)
        budget = max(height - 1, 1)  # the summary line
        count = min(len(ordered), max(budget - 2, 0))  # header and its rule
        while True:
            more = len(ordered) - count
            shown_rows = sorted(ordered[:count], key=hosts.index)
            table = _progress_table(shown_rows, agencies, more)
            lines = con.render_lines(table, options.update(height=None), pad=False)
            if len(lines) <= budget or count == 0:
                break
            count -= max(1, (len(lines) - budget) // 2)
            count = max(count, 0)
        yield summary
        if count or not more:
            yield table
        else:
            yield Text(f"… {more} hosts (the terminal is too small to list them)", style="dim")


def live_view(progress: Progress, height: int | None = None) -> LiveView:
    """The renderable ``ProgressView`` shows on a terminal (``height``: lines available, default the
    console's)."""
    return LiveView(progress, height)


class ProgressView:
    """The ``on_progress`` callback of apply/destroy: a live table on a terminal, plain lines otherwise."""

    def __init__(self, *, live: bool | None = None) -> None:
        self.live = console.is_terminal if live is None else live
        self._live: Live | None = None
        self._seen: dict[tuple[str, str], tuple[object, ...]] = {}

    def __enter__(self) -> ProgressView:
        if self.live:
            self._live = Live(console=console, refresh_per_second=8, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def __call__(self, progress: Progress) -> None:
        if self._live is not None:
            self._live.update(live_view(progress))
            return
        for h in progress.hosts:
            state = (h.phase, h.vm, h.hook, len(h.issues))
            if self._seen.get((h.agency, h.host)) == state:
                continue
            self._seen[(h.agency, h.host)] = state
            parts = [f"[{progress.elapsed:6.1f}s] {h.agency} {h.label}: {h.shown_phase}"]
            if h.vm_name:
                parts.append(h.vm_name)
            if h.address:
                parts.append(h.address)
            if h.detail:
                parts.append(f"({h.detail})")
            console.print(shown(" ".join(parts)), markup=False, highlight=False, soft_wrap=True)
