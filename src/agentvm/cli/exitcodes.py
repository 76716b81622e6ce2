"""The exit codes of every ``agentvm`` command: one table, for scripts (README, "Exit codes").

==== =========================================================================================
0    ok (``plan --detailed-exitcode``: ok and no changes)
1    failed: apply stopped on an issue, agents not ready in time, netsync items failed, an error
     with no better code
2    bad input: usage, the spec, a URL, a missing or unknown object, a required lab that is not
     running (``agentvm lab up`` first); with ``plan --detailed-exitcode``: changes present
3    vCenter or EAM unreachable, or a transient fault: running the same command later may work
4    authentication: wrong user or password, a refused certificate, a thumbprint mismatch
5    ``agentvm lab``: the Go toolchain is missing or building the simulator failed
130  interrupted (Ctrl-C)
==== =========================================================================================

``plan --detailed-exitcode`` is terraform's: 0 no changes, 2 changes present, 1 any error (so a script
cannot mistake bad input for pending changes). The commands map errors through ``code_for``; the codes
are fixed here and nowhere else.
"""

from __future__ import annotations

from agentvm.model.errors import AgentvmError, AuthenticationError, ConfigurationError, TransientError

OK = 0
FAILED = 1
BAD_INPUT = 2
UNREACHABLE = 3
AUTHENTICATION = 4
INTERRUPTED = 130

NO_LAB = BAD_INPUT  # "no lab is running": the command needs one; `agentvm lab up` is the fix

PLAN_NO_CHANGES = 0  # plan --detailed-exitcode
PLAN_CHANGES = 2
PLAN_ERROR = 1


def code_for(error: BaseException) -> int:
    """The exit code for an error a command ends with (ConfigurationError includes SpecError)."""
    if isinstance(error, AuthenticationError):
        return AUTHENTICATION
    if isinstance(error, TransientError):
        return UNREACHABLE
    if isinstance(error, ConfigurationError):
        return BAD_INPUT
    if isinstance(error, AgentvmError):
        code = error.exit_code  # a subclass may name its own (documented) code
        return code if code in (FAILED, BAD_INPUT, UNREACHABLE, AUTHENTICATION) else FAILED
    return FAILED
