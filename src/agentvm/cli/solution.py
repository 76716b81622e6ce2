"""What the solution commands (plan, apply, status, resolve, destroy) share: spec, login, progress, tables.

The connection is govc's precedence, setting by setting: a flag, else its ``AGENTVM_*`` variable
(``cli.connect``), else the spec's ``vcenter`` section. A password the spec says to prompt for is asked on
the terminal, and is an error without one. Progress is a live table on a terminal and plain lines
otherwise (CI logs).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentvm.cli import connect, exitcodes
from agentvm.cli.output import console, err_console, fail
from agentvm.controller.identity import STATE_DIR_ENV
from agentvm.controller.progress import HostProgress, Phase, Progress, issue_sentence
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

PHASE_STYLE = {
    Phase.READY: "green",
    Phase.REMOVED: "green",
    Phase.ISSUE: "red",
    Phase.CONFIGURING: "cyan",
    Phase.WAITING: "dim",
}
LIVE_ROWS = 24  # beyond this many hosts the live view lists only the hosts that are not done


def guard(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command: an AgentvmError becomes one line on stderr and its exit code (also under CliRunner)."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AgentvmError as exc:
            fail(str(exc), exitcodes.code_for(exc))

    return wrapper


def load(path: Path) -> DesiredState:
    """Load the spec and print its warnings on stderr. Raises SpecError (exit 2)."""
    desired = load_spec(path)
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


# ------------------------------------------------------------------------------------------- progress


def _row(h: HostProgress) -> list[Text | str]:
    style = PHASE_STYLE.get(h.phase, "yellow")
    return [
        h.agency,
        h.label,
        Text(h.phase.value, style=style),
        h.vm_name or "-",
        h.address or "-",
        h.detail,
    ]


def _live_table(progress: Progress) -> Group:
    done = (Phase.READY, Phase.REMOVED)
    rows = progress.hosts
    if len(rows) > LIVE_ROWS:
        rows = tuple(h for h in rows if h.phase not in done)[:LIVE_ROWS]
    table = Table("agency", "host", "phase", "agent VM", "address", "detail", expand=False)
    for h in rows:
        table.add_row(*_row(h))
    finished = sum(1 for h in progress.hosts if h.phase in done)
    line = Text(
        f"{finished}/{len(progress.hosts)} hosts done, {progress.count(Phase.ISSUE)} with issues, "
        f"{progress.elapsed:.1f} s",
        style="bold",
    )
    return Group(table, line)


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
            self._live.update(_live_table(progress))
            return
        for h in progress.hosts:
            state = (h.phase, h.vm, h.hook, len(h.issues))
            if self._seen.get((h.agency, h.host)) == state:
                continue
            self._seen[(h.agency, h.host)] = state
            parts = [f"[{progress.elapsed:6.1f}s] {h.agency} {h.label}: {h.phase.value}"]
            if h.vm_name:
                parts.append(h.vm_name)
            if h.address:
                parts.append(h.address)
            if h.detail:
                parts.append(f"({h.detail})")
            console.print(" ".join(parts), markup=False, highlight=False, soft_wrap=True)


def hosts_table(rows: Sequence[HostProgress], title: str) -> Table:
    """The summary / status table: one row per host; columns with nothing to say are left out."""
    columns: list[tuple[str, Callable[[HostProgress], Text | str]]] = [
        ("agency", lambda h: h.agency),
        ("cluster", lambda h: h.cluster or "(standalone)"),
        ("host", lambda h: h.label.rsplit("/", 1)[-1]),
        ("agent VM", lambda h: h.vm_name or "-"),
        ("power", lambda h: h.power.value if h.power else "-"),
        ("hook", lambda h: h.hook.value if h.hook else "-"),
        ("address", lambda h: h.address or "-"),
        ("state", lambda h: Text(h.phase.value, style=PHASE_STYLE.get(h.phase, "yellow"))),
        ("issues", lambda h: ", ".join(f"{i.kind.value} #{i.key}" for i in h.issues) or "-"),
    ]
    optional = {
        "agency": len({h.agency for h in rows}) > 1,
        "hook": any(h.hook for h in rows),
        "address": any(h.address for h in rows),
        "issues": any(h.issues for h in rows),
    }
    shown = [(name, cell) for name, cell in columns if optional.get(name, True)]
    table = Table(title=title)
    for name, _ in shown:
        table.add_column(name, overflow="fold", no_wrap=name not in ("issues",))
    for h in rows:
        table.add_row(*(cell(h) for _, cell in shown))
    return table


def issue_lines(rows: Sequence[HostProgress]) -> list[Text]:
    """One line per issue of ``rows``: its key, its host and the sentence that says what fixes it."""
    return [
        Text(f"issue #{i.key} on {h.label.rsplit('/', 1)[-1]}: {issue_sentence(i)}", style="red")
        for h in rows
        for i in h.issues
    ]
