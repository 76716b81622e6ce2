"""Shared output helpers for the CLI: errors on stderr, JSON on stdout, tables with rich."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import NoReturn

from rich.console import Console

# no emoji codes: a thumbprint's ":CD:" would print as a compact disc
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``agentvm: <message>`` on stderr and exit with ``code``.

    A message of several lines (a spec with several problems) gives one ``agentvm:`` line each, so that
    every line on stderr says where it comes from and a spec with one problem is exactly one line.
    """
    for line in message.splitlines() or [""]:
        err_console.print(f"agentvm: {line}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


API_VERSION = "agentvm/v1"


def document(kind: str, body: Mapping[str, object]) -> dict[str, object]:
    """One ``--json`` document: ``apiVersion``, ``kind`` (its schema is ``api/schema/<kind>-v1.json``), the
    body's camelCase keys. Called by every command's ``--json``."""
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def print_document(kind: str, body: Mapping[str, object]) -> None:
    """Print ``document(kind, body)`` on stdout."""
    print_json(document(kind, body))


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
