"""What ``agentvm status`` and the apply/destroy progress draw: identifiers whole at 80 columns, hosts in
natural order, the progress summary always on screen, and text from vCenter or a spec never read as markup,
emoji or escape sequences."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agentvm.cli.output import PIPE_WIDTH, console
from agentvm.cli.render import live_view
from agentvm.cli.status import status_view
from agentvm.core.heal import HostConditions
from agentvm.core.progress import Phase, Progress, host_rows
from agentvm.model.agency import MoRef
from agentvm.model.desired import ScopeHost
from tests.support.status_fakes import HOSTS, sixteen_with_one_issue
from tests.support.status_fakes import progress_row as _row
from tests.support.status_fakes import status_report as _report
from tests.support.terminal import tmux_screen


def _draw(renderable: object, width: int = 80, height: int = 24) -> str:
    out = Console(file=io.StringIO(), width=width, height=height, emoji=False, color_system=None)
    out.print(renderable)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def test_status_at_80_columns_shows_every_identifier_whole() -> None:
    text = _draw(status_view(_report(sixteen_with_one_issue())))
    words = set(text.replace("│", " ").split())
    for i in range(HOSTS):
        assert f"DC0_C0_H{i}" in words
        assert f"10.10.0.{10 + i}" in words
        assert f"({i})" in words  # the agent VM's name is whole on one line
    assert "poweredOff" in words
    # the issue is whole: in the issues column when it fits, else on its own line (and the note says so)
    assert "VmPoweredOff" in words or ("(VmPoweredOff)" in words and "issues (listed below)" in text)
    assert all(len(line) <= 80 for line in text.splitlines())


def test_hosts_are_listed_in_natural_order() -> None:
    hosts = [ScopeHost(f"host-{i}", f"DC0_C0_H{i}", f"/DC0/host/DC0_C0/DC0_C0_H{i}") for i in (10, 2, 1, 0)]
    rows = host_rows("a", None, hosts, {}, None)
    assert [r.label.rsplit("/", 1)[-1] for r in rows] == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2", "DC0_C0_H10"]


def test_a_host_in_maintenance_mode_reads_maintenance() -> None:
    rows = [_row(0), _row(1, phase=Phase.WAITING, status=None, vm=None, vm_name=None, power=None)]
    conditions = HostConditions(maintenance=frozenset({MoRef("HostSystem", "host-101")}))
    lines = [
        line for line in _draw(status_view(_report(rows, conditions))).splitlines() if "DC0_C0_H1" in line
    ]
    assert len(lines) == 1 and "maintenance" in lines[0]


def test_the_live_progress_keeps_its_summary_and_host_names_at_80x24() -> None:
    rows = tuple(_row(i, phase=Phase.DEPLOYING if i % 2 else Phase.READY) for i in range(64))
    text = _draw(live_view(Progress(rows, 12.5), height=24), width=80, height=24)
    lines = text.splitlines()
    assert len(lines) <= 24
    assert any("32/64 hosts done" in line for line in lines)
    assert "/DC0/host/…" not in text
    shown = [f"DC0_C0_H{i}" for i in range(1, 64, 2) if f"DC0_C0_H{i} " in text]
    assert shown and shown == sorted(shown, key=lambda n: int(n.rsplit("H", 1)[1]))
    assert "more" in text  # the hosts that do not fit are counted, not silently left out


def test_apply_progress_shows_a_host_in_maintenance_mode_as_maintenance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agentvm.cli.solution import ProgressView

    resting = _row(1, phase=Phase.WAITING, status=None, vm=None, vm_name=None, power=None, maintenance=True)
    rows = (_row(0), resting, _row(2, maintenance=True))  # a ready agent on a host in MM stays "ready"
    live = _draw(live_view(Progress(rows, 3.0), height=24), width=80, height=24)
    (line,) = [x for x in live.splitlines() if "DC0_C0_H1" in x]
    assert "maintenance" in line
    (line,) = [x for x in live.splitlines() if "DC0_C0_H2" in x]
    assert "ready" in line and "maintenance" not in line
    with ProgressView(live=False) as view:
        view(Progress(rows, 3.0))
    out = capsys.readouterr().out
    assert "DC0_C0_H1: maintenance" in out
    assert "DC0_C0_H0: ready" in out
    summary = _draw(status_view(_report(list(rows))))
    (line,) = [x for x in summary.splitlines() if "DC0_C0_H1" in x]
    assert "maintenance" in line


HOSTILE = "[bold]x[/bold] :ab: \x1b[31mred"


def test_names_from_vcenter_are_shown_literally_and_escape_sequences_escaped() -> None:
    row = _row(0, name=f"H{HOSTILE}", vm_name=f"vm {HOSTILE}")
    for text in (_draw(status_view(_report([row]))), _draw(live_view(Progress((row,), 1.0), height=24))):
        flat = "".join(text.split())  # a long cell may fold onto two lines
        assert "[bold]x[/bold]" in flat
        assert ":ab:" in flat
        assert "\\x1b[31mred" in flat
        assert "\x1b" not in text
        assert "🆎" not in text


def test_plain_progress_lines_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    from agentvm.cli.solution import ProgressView

    row = _row(0, name=f"H{HOSTILE}")
    with ProgressView(live=False) as view:
        view(Progress((row,), 1.0))
    out = capsys.readouterr().out
    assert "H[bold]x[/bold] :ab: \\x1b[31mred" in out
    assert "\x1b" not in out


def test_piped_output_is_not_wrapped_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # as a CI (or pytest-xdist) may leave it
    long = "x" * 150
    console.print(long)
    assert capsys.readouterr().out == long + "\n"
    assert PIPE_WIDTH > 150


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from agentvm.cli.status import status_view
from tests.support.status_fakes import sixteen_with_one_issue, status_report
from agentvm.cli.output import console
console.print(status_view(status_report(sixteen_with_one_issue())))
"""


def test_status_in_a_real_80x24_terminal(tmp_path: Path) -> None:
    script = tmp_path / "draw.py"
    script.write_text(SCRIPT.format(root=str(Path(__file__).parents[2])))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    screen = tmux_screen([sys.executable, str(script)], env, width=80, height=24)
    words = set(screen.replace("│", " ").split())
    for i in range(HOSTS):
        assert f"DC0_C0_H{i}" in words
    assert "poweredOff" in words and ("VmPoweredOff" in words or "(VmPoweredOff)" in words)
    assert max(len(line) for line in screen.splitlines()) <= 80


LIVE_SCRIPT = """
import sys, pathlib
sys.path.insert(0, {root!r})
from tests.support.status_fakes import progress_row as _row
from agentvm.cli.render import ProgressView
from agentvm.core.progress import Phase, Progress
rows = tuple(_row(i, phase=Phase.DEPLOYING if i % 2 else Phase.READY) for i in range(64))
with ProgressView() as view:
    assert view.live
    view(Progress(rows, 12.5))
    view._live.refresh()
    pathlib.Path({ready!r}).touch()
    input()
"""


def test_the_live_progress_in_a_real_80x24_terminal(tmp_path: Path) -> None:
    script, ready = tmp_path / "live.py", tmp_path / "ready"
    script.write_text(LIVE_SCRIPT.format(root=str(Path(__file__).parents[2]), ready=str(ready)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    screen = tmux_screen([sys.executable, str(script)], env, width=80, height=24, ready=ready)
    lines = screen.splitlines()
    assert any("32/64 hosts done" in line for line in lines), screen
    assert "DC0_C0_H1" in screen.split() and "/DC0/host/…" not in screen, screen
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80


def test_any_print_of_a_name_shows_it_literally(capsys: pytest.CaptureFixture[str]) -> None:
    """Also the prints that pass a plain string (resolve's lines, other commands' tables)."""
    from rich.table import Table

    table = Table("name")
    table.add_row(HOSTILE)
    console.print(f"agency {HOSTILE}: not created yet")
    console.print(table)
    out = capsys.readouterr().out
    assert "agency [bold]x[/bold] :ab: \\x1b[31mred: not created yet" in out
    assert "[bold]x[/bold] :ab: \\x1b[31mred" in out.splitlines()[-2]
    assert "\x1b" not in out
