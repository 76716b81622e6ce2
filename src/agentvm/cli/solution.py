"""What the solution commands (plan, apply, status, resolve, destroy) share: spec, login, progress, tables.

The connection is govc's precedence, setting by setting: a flag, else its ``AGENTVM_*`` variable
(``cli.connect``), else the spec's ``vcenter`` section. A password the spec says to prompt for is asked on
the terminal, and is an error without one. Progress is a live table on a terminal and plain lines
otherwise (CI logs).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from agentvm.cli import connect, exitcodes
from agentvm.cli.output import err_console, fail
from agentvm.cli.render import ProgressView as ProgressView  # re-exported: plan, destroy and status use them
from agentvm.cli.render import hosts_table as hosts_table
from agentvm.cli.render import issue_lines as issue_lines
from agentvm.controller.identity import STATE_DIR_ENV
from agentvm.core.standalone import check_spec
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.desired import DesiredState, PasswordSource
from agentvm.model.errors import AgentvmError, AuthenticationError, ConfigurationError
from agentvm.spec import load_spec
from agentvm.vsphere.session import Session

P = ParamSpec("P")
R = TypeVar("R")

SpecFile = Annotated[
    Path, typer.Option("-f", "--file", help="The spec file (YAML), e.g. examples/contrail.yaml.")
]
OptionalSpecFile = Annotated[
    Path | None,
    typer.Option("-f", "--file", help="The spec file: limit to its agencies and use its vCenter section."),
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Timeout = Annotated[
    float, typer.Option("--timeout", min=1.0, help="Seconds to wait for the agents (default 600).")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        help="Where the solution's generated login certificate is kept, under <vcenter>/<solution key>/ "
        "(default ~/.local/state/agentvm). vCenter keeps one certificate per extension: use the state dir "
        "of the machine that set it (or copy its solution.crt and solution.key).",
    ),
]
# run and destroy: the same directory also holds the direct backend's engine state
EngineStateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        help="agentvm's state on this machine (default ~/.local/state/agentvm): the solution's login "
        "certificate under <vcenter>/<solution key>/ (EAM), and with --backend direct the engine's state. "
        "Use the one the first apply or run used.",
    ),
]


def guard(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command: an AgentvmError becomes one line on stderr and its exit code (also under CliRunner)."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AgentvmError as exc:
            fail(str(exc), exitcodes.code_for(exc))

    return wrapper


def load(path: Path, *, standalone: bool = True) -> DesiredState:
    """Load the spec and print its warnings on stderr. Raises SpecError (exit 2); for a spec with
    standalone hosts (``esxi:``, carried out by ``cli.esxi``) ConfigurationError (exit 2) for what they
    cannot do yet (``core.standalone.check_spec``), or at all when the command does not carry them out
    (``standalone`` False; every command carries them out now: plan, apply, status, destroy and run)."""
    desired = load_spec(path)
    if desired.esxi and not standalone:
        names = ", ".join(h.name for h in desired.esxi)
        raise ConfigurationError(
            f"{path}: esxi: standalone ESXi hosts ({names}) are not supported by this command "
            "(issue 15); agentvm plan, apply, status, destroy and run carry them out"
        )
    if desired.esxi:
        check_spec(desired)
    for warning in desired.warnings:
        err_console.print(f"agentvm: warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    return desired


@dataclass(frozen=True)
class ConnectionFlags:
    """The connection flags of a command (with their ``AGENTVM_*`` fallbacks): they win over the spec."""

    url: str | None = None
    username: str | None = None
    password_file: Path | None = None
    thumbprint: str | None = None
    ca_file: Path | None = None
    insecure: bool = False

    def connection(self) -> VCenterConnection:
        return connect.connection(
            self.url, self.username, self.password_file, self.thumbprint, self.ca_file, self.insecure
        )

    def over(self, base: VCenterConnection) -> VCenterConnection:
        """``base`` (the spec's connection) with what these flags and ``AGENTVM_*`` give in its place."""
        return connect.override(
            base, self.url, self.username, self.password_file, self.thumbprint, self.ca_file, self.insecure
        )


def spec_connection(desired: DesiredState | None, flags: ConnectionFlags) -> VCenterConnection:
    """The vCenter connection: flag > ``AGENTVM_*`` variable > the spec's ``vcenter`` section, as govc.

    Each setting on its own (``--url`` alone keeps the spec's user); a password the spec says to prompt for
    is asked on a terminal when nothing else gives one.
    """
    if desired is None or desired.vcenter is None:
        return flags.connection()
    spec = desired.vcenter
    conn = flags.over(spec.connection)
    connect.warn_if_insecure(conn.url, flags.insecure)  # the spec's own insecure: true has its spec warning
    if conn.by_certificate or conn.password is not None:
        return conn
    variable = spec.password_origin or "AGENTVM_PASSWORD"
    if spec.password_source is PasswordSource.PROMPT and sys.stdin.isatty():
        password = typer.prompt(f"vCenter password for {conn.username}", hide_input=True)
        return dataclasses.replace(conn, password=Secret(password))
    raise ConfigurationError(
        f"no vCenter password for {conn.username}: set {variable}, or use vcenter.passwordFile in "
        f"{desired.source}"
    )


def login(conn: VCenterConnection) -> Session:
    """A logged-in session; a refused certificate login says how the certificate gets registered."""
    try:
        return Session.connect(conn)
    except AuthenticationError as exc:
        if conn.by_certificate:
            raise AuthenticationError(
                f"{exc}. The first apply must log in as a user (vcenter.login: password, with "
                "solution.certFile/keyFile): it registers the extension and sets its certificate"
            ) from exc
        raise


@contextmanager
def session_for(desired: DesiredState | None, flags: ConnectionFlags) -> Iterator[Session]:
    session = login(spec_connection(desired, flags))
    try:
        yield session
    finally:
        session.logout()
