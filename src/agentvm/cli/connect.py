"""Connection flags shared by every command that talks to vCenter, with ``AGENTVM_*`` fallbacks (as govc).

The password never comes from a flag (it would show in ``ps``): from ``$AGENTVM_PASSWORD``, a file, or a
prompt when a terminal is attached.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentvm.cli.output import warn
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import ConfigurationError
from agentvm.spec.errors import printable
from agentvm.spec.urls import url_problem
from agentvm.spec.vcenter import VCENTER_EXAMPLE

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="AGENTVM_URL", help="vCenter URL, e.g. https://vc.example.com/sdk."),
]
Username = Annotated[str | None, typer.Option("--username", envvar="AGENTVM_USERNAME", help="vCenter user.")]
PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", envvar="AGENTVM_PASSWORD_FILE", help="Read the password from this file."),
]
Thumbprint = Annotated[
    str | None,
    typer.Option(
        "--thumbprint", envvar="AGENTVM_THUMBPRINT", help="Pin the server's TLS certificate (SHA-1/256)."
    ),
]
CaFile = Annotated[
    Path | None, typer.Option("--ca-file", envvar="AGENTVM_CA_FILE", help="Trust this CA bundle.")
]
Insecure = Annotated[
    bool,
    typer.Option("--insecure", envvar="AGENTVM_INSECURE", help="Do not verify TLS (explicit choice only)."),
]


def connection(
    url: str | None,
    username: str | None,
    password_file: Path | None,
    thumbprint: str | None,
    ca_file: Path | None,
    insecure: bool,
) -> VCenterConnection:
    """Build the connection settings; raises ConfigurationError naming the missing piece and the fix."""
    if not url:
        raise ConfigurationError(
            "no vCenter URL: pass --url or set AGENTVM_URL (for the lab: eval $(agentvm lab env))"
        )
    check_url(url)
    if not username:
        raise ConfigurationError("no vCenter user: pass --username or set AGENTVM_USERNAME")
    password = _password(password_file)
    warn_if_insecure(url, insecure)
    return VCenterConnection(
        url=url,
        username=username,
        password=password,
        thumbprint=thumbprint or None,
        ca_file=str(ca_file) if ca_file else None,
        insecure=insecure,
    )


def check_url(url: str) -> None:
    """Raise ConfigurationError, with the fix, when ``--url``/``AGENTVM_URL`` is no URL agentvm can use."""
    problem = url_problem(
        url, VCENTER_EXAMPLE, credentials="use --username/AGENTVM_USERNAME and AGENTVM_PASSWORD"
    )
    if problem is not None:  # checked before any socket: AGENTVM_URL=42 would reach host 0.0.0.42
        raise ConfigurationError(f"--url/AGENTVM_URL: {printable(problem)}")


def override(
    base: VCenterConnection,
    url: str | None,
    username: str | None,
    password_file: Path | None,
    thumbprint: str | None,
    ca_file: Path | None,
    insecure: bool,
) -> VCenterConnection:
    """The spec's connection with each setting a flag or ``AGENTVM_*`` variable gives put in its place.

    govc's precedence, setting by setting: flag > environment > spec (typer has already put the flag
    before the variable). The password: ``--password-file``/``AGENTVM_PASSWORD_FILE``, then
    ``AGENTVM_PASSWORD``, then the spec's. Called by ``cli.solution.spec_connection``.
    """
    changes: dict[str, object] = {}
    if url:
        check_url(url)
        changes["url"] = url
    if username:
        changes["username"] = username
    if (password := _given_password(password_file)) is not None:
        changes["password"] = password
    if thumbprint:
        changes["thumbprint"] = thumbprint
    if ca_file:
        changes["ca_file"] = str(ca_file)
    if insecure:
        changes["insecure"] = True
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def warn_if_insecure(url: str, insecure: bool) -> None:
    """Say on stderr what ``--insecure`` costs, each time a command uses it (a spec's ``vcenter.insecure``
    has its spec warning)."""
    if insecure:
        warn(
            f"--insecure: the TLS certificate of {url} is not checked, so anyone on the path can read the "
            "login and answer in vCenter's place; pin it with --thumbprint or give --ca-file instead"
        )


def _given_password(password_file: Path | None) -> Secret | None:
    """The password from ``--password-file`` or ``$AGENTVM_PASSWORD``; None when neither gives one."""
    if password_file is not None:
        try:
            return Secret(password_file.read_text().rstrip("\n"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read --password-file {password_file}: {exc.strerror}") from None
    if value := os.environ.get("AGENTVM_PASSWORD"):
        return Secret(value)
    return None


def _password(password_file: Path | None) -> Secret:
    if (password := _given_password(password_file)) is not None:
        return password
    if sys.stdin.isatty():
        return Secret(typer.prompt("vCenter password", hide_input=True))
    raise ConfigurationError("no vCenter password: set AGENTVM_PASSWORD or pass --password-file")
