"""The ``agentvm`` command. Formats output and maps errors to one-line messages and exit codes.

Conventions from govc, Ansible and kubectl: connection from flags or ``AGENTVM_*`` variables, ``--json`` on
read commands, one line on stderr naming the problem and the fix for every error, non-zero exits.
"""

from __future__ import annotations

import typer

from agentvm.cli import lab as lab_commands
from agentvm.cli import netsync as netsync_commands
from agentvm.cli.destroy import destroy
from agentvm.cli.events import events
from agentvm.cli.inventory import inventory
from agentvm.cli.output import fail
from agentvm.cli.plan import apply, plan
from agentvm.cli.run import run
from agentvm.cli.status import resolve, status
from agentvm.model.errors import AgentvmError

app = typer.Typer(
    name="agentvm",
    help="One agent VM on every ESXi host: a vCenter solution over ESX Agent Manager.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lab_commands.app, name="lab")
app.add_typer(netsync_commands.app, name="netsync")
app.command()(inventory)
app.command()(plan)
app.command()(apply)
app.command()(status)
app.command()(resolve)
app.command()(destroy)
app.command()(run)
app.command()(events)


@app.command()
def version() -> None:
    """Print agentvm's version."""
    from agentvm import __version__

    typer.echo(__version__)


def main() -> None:
    """Console entry point: run the app, turning agentvm's errors into one line and an exit code."""
    try:
        app()
    except AgentvmError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
