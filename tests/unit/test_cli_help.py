"""The CLI's help fits an 80-column terminal, shows flags as flags, and `agentvm version` starts light.

Every command and subcommand is found by walking the click tree typer builds (so a new command is covered
without editing this file).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main
from typer import _click as click  # typer 0.29 vendors its own click
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from agentvm.cli.main import app


def _walk(command: click.Command, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, TyperGroup):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            found.extend(_walk(sub, (*path, name)))
    return found


COMMANDS = _walk(typer.main.get_command(app), ())
IDS = [" ".join(path) or "agentvm" for path, _ in COMMANDS]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "xterm"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_tree_has_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {"version", "status", "plan", "apply", "destroy", "resolve", "inventory", "run"}
    assert expected | {"lab status", "lab env", "netsync plan", "netsync apply"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_fits_80_columns_without_cutting(path: tuple[str, ...], command: click.Command) -> None:
    text = _help(path)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    # every option is in the help, in full
    for param in command.params:
        if isinstance(param, TyperOption) and not param.hidden:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, opt


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_boolean_options_are_flags(path: tuple[str, ...], command: click.Command) -> None:
    text = _help(path)
    assert "<bool>" not in text
    for param in command.params:
        if isinstance(param, TyperOption) and param.type_descriptor.annotation is bool:
            assert param.is_flag, f"{' '.join(path)} {param.opts}: a boolean must be a flag"


def test_json_is_a_flag_and_takes_no_value() -> None:
    plain = CliRunner().invoke(app, ["version", "--json"])
    assert plain.exit_code == 0, plain.output
    assert '"kind": "Version"' in plain.output
    valued = CliRunner().invoke(app, ["version", "--json", "true"])
    assert valued.exit_code == 2  # "true" is an unexpected argument: the flag takes none


def _modules_loaded_by(*argv: str) -> set[str]:
    script = (
        "import sys\n"
        f"sys.argv = ['agentvm', {', '.join(repr(a) for a in argv)}]\n"
        "import agentvm.cli.main as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(), check=True
    )
    return set(done.stderr.split("\n"))


def test_version_imports_neither_pyvmomi_nor_rich_tables_nor_the_controller() -> None:
    light = _modules_loaded_by("version")
    heavy = _modules_loaded_by("status", "--help")
    for module in ("pyVmomi", "rich.table", "agentvm.controller", "agentvm.vsphere", "agentvm.api.server"):
        assert module not in light, module
    # the same probe sees them when a command needs them: the check is not blind
    assert {"pyVmomi", "agentvm.controller"} <= heavy
    # version needs the CLI's entry point, its output helpers, the exit codes and the error types
    assert {m for m in light if m.startswith("agentvm")} <= {
        "agentvm",
        "agentvm.cli",
        "agentvm.cli.main",
        "agentvm.cli.output",
        "agentvm.cli.exitcodes",
        "agentvm.model",
        "agentvm.model.errors",
    }
