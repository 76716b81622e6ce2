"""``agentvm destroy -f SPEC``: uninstall the agents, destroy the agencies, unregister the solution.

EAM's order (EAM.md section 2): Uninstall → wait until green → DestroyAgency; then the extension goes.
It asks first, unless ``--yes``; without a terminal to ask on and without ``--yes`` it refuses.
"""

from __future__ import annotations

import sys

import typer

from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.output import console, fail
from agentvm.cli.solution import (
    ConnectionFlags,
    ProgressView,
    SpecFile,
    Timeout,
    Yes,
    guard,
    load,
    session_for,
)
from agentvm.controller.solution import DEFAULT_TIMEOUT, Solution


@guard
def destroy(
    file: SpecFile,
    yes: Yes = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
) -> None:
    """Remove every agent VM of the spec's agencies, destroy the agencies and unregister the extension."""
    desired = load(file)
    names = ", ".join(a.name for a in desired.agencies)
    what = f"agencies {names} (every agent VM) and extension {desired.solution.key}"
    if not yes:
        if not sys.stdin.isatty():
            fail(f"destroy would remove {what}; pass --yes to confirm (there is no terminal to ask on)", 2)
        if not typer.confirm(f"Remove {what}?", default=False):
            fail("nothing destroyed", 1)
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    with (
        session_for(desired, flags) as session,
        Solution(desired, session) as solution,
        ProgressView() as view,
    ):
        report = solution.destroy(timeout=timeout, on_progress=view)
    if not report.actions:
        console.print("nothing to destroy", highlight=False)
    for action in report.actions:
        console.print(f"✓ {action}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{report.seconds:.2f} s, {report.vim_calls} vim25 + {report.eam_calls} EAM calls", style="dim"
    )
