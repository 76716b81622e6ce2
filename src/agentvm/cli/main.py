"""The ``agentvm`` command. Formats output and maps errors to one-line messages and exit codes.

Conventions from govc, Ansible and kubectl: connection from flags or ``AGENTVM_*`` variables, ``--json`` on
read commands, one line on stderr naming the problem and the fix for every error, non-zero exits.

Commands are registered lazily (``COMMANDS``): a command's module, and with it pyVmomi, the controller and
rich's tables, is imported only when that command runs or its help is shown, so that ``agentvm version``
and ``agentvm status --help`` start in a fraction of a second.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import typer
import typer.core
import typer.main
import typer.models
from typer import _click as click  # typer 0.29 vendors its own click: its types are these

from agentvm.cli import exitcodes
from agentvm.cli.output import fail
from agentvm.model.errors import AgentvmError

# name: (module, attribute), in the order --help lists them. The attribute is a command function (typed
# as typer expects) or a typer.Typer of subcommands. A new command is one row here.
COMMANDS: dict[str, tuple[str, str]] = {
    "inventory": ("agentvm.cli.inventory", "inventory"),
    "plan": ("agentvm.cli.plan", "plan"),
    "apply": ("agentvm.cli.plan", "apply"),
    "status": ("agentvm.cli.status", "status"),
    "resolve": ("agentvm.cli.status", "resolve"),
    "destroy": ("agentvm.cli.destroy", "destroy"),
    "run": ("agentvm.cli.run", "run"),
    "events": ("agentvm.cli.events", "events"),
    "lab": ("agentvm.cli.lab", "app"),
    "netsync": ("agentvm.cli.netsync", "app"),
}


class LazyGroup(typer.core.TyperGroup):
    """The top-level group: the commands of ``COMMANDS`` are built from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        eager = [name for name in self.commands if name not in COMMANDS]
        return [*COMMANDS, *eager]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _build(cmd_name, *COMMANDS[cmd_name])
        return super().get_command(ctx, cmd_name)


def _build(name: str, module: str, attribute: str) -> click.Command:
    target: Any = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    return typer.main.get_command_from_info(
        typer.models.CommandInfo(name=name, callback=target),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
    )


def _fit_help() -> None:
    """Make typer's rich help show flags as flags and never cut a word with "…".

    Typer 0.29 prints ``<bool>`` after every boolean flag (``--json <bool>``, which then rejects
    ``--json true``), and lays each option's help out in rich Columns that crop a word longer than the
    column (a URL in an example) with an ellipsis. Both are fixed here, once, when help is first rendered:
    the flag shows no type, and the help texts fold long words instead of cropping them.
    """
    import typer.rich_utils as rich_utils
    from rich.text import Text

    original: Callable[..., Any] = rich_utils._get_parameter_help
    if getattr(original, "_agentvm_folds", False):
        return

    def folding(*args: Any, **kwargs: Any) -> Any:
        columns = original(*args, **kwargs)
        for item in getattr(columns, "renderables", ()):
            if isinstance(item, Text):
                item.overflow = "fold"
        return columns

    folding._agentvm_folds = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folding


_display_type_rich = typer.core.TyperOption.display_type_rich


def _flag_type(self: typer.core.TyperOption, ctx: click.Context) -> str | None:
    return None if self.is_flag else _display_type_rich(self, ctx)


def _help_patched(format_help: Callable[..., None]) -> Callable[..., None]:
    def format_with_fit(self: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _fit_help()
        format_help(self, ctx, formatter)

    return format_with_fit


typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]
typer.core.TyperCommand.format_help = _help_patched(typer.core.TyperCommand.format_help)  # type: ignore[method-assign]
typer.core.TyperGroup.format_help = _help_patched(typer.core.TyperGroup.format_help)  # type: ignore[method-assign]

app = typer.Typer(
    name="agentvm",
    help="One agent VM on every ESXi host: a vCenter solution over ESX Agent Manager.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


@app.callback()
def _root() -> None:
    # a callback makes typer build a group even though only `version` is registered eagerly
    pass


@app.command()
def version(json_: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Print agentvm's version."""
    from agentvm import __version__

    if json_:
        from agentvm.cli.output import print_document

        print_document("Version", {"version": __version__})
    else:
        typer.echo(__version__)


def main() -> None:
    """Console entry point: run the app, turning agentvm's errors into one line and an exit code."""
    try:
        app()
    except AgentvmError as exc:
        fail(str(exc), exitcodes.code_for(exc))
    except KeyboardInterrupt:
        fail("interrupted", exitcodes.INTERRUPTED)


if __name__ == "__main__":
    main()
