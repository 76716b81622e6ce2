"""Shared output helpers for the CLI: errors on stderr, JSON on stdout, tables with rich.

Text that comes from vCenter, a spec or a user is never read as rich markup or emoji: print it with
``markup=False`` or as ``Text`` (``text()``), and pass it through ``shown()`` so that an escape sequence in a
VM name reaches the terminal as ``\\x1b[31m``, not as a colour. Piped output (a CI log, ``| grep``) is not
wrapped at 80 columns: the consoles are ``PIPE_WIDTH`` wide when their stream is not a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from rich.console import Console, ConsoleDimensions
from rich.text import Text

PIPE_WIDTH = 4096  # columns when stdout is not a terminal: a line is as long as it is, as govc prints it


class _Console(Console):
    """The CLI's rich console: no markup and no emoji codes (the text printed comes from vCenter, a spec or
    a user: ``[bold]`` and ``:ab:`` print as they are), control characters in any string it renders (a
    print, a table cell, a title) written as escapes, and ``PIPE_WIDTH`` wide when its stream is not a
    terminal instead of rich's 80 columns (or COLUMNS, or the width of whatever other stream is a tty):
    COLUMNS applies on a terminal only."""

    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, emoji=False, markup=False)
        # the size is the stream's when printing, not COLUMNS/LINES at import: a terminal's own (or
        # COLUMNS), PIPE_WIDTH when piped, whatever COLUMNS a parent process (pytest-xdist, a CI) left
        self._width = self._height = None

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(_escape_controls(text), **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, self._height or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# no emoji codes: a thumbprint's ":CD:" would print as a compact disc
console = _Console()
err_console = _Console(stderr=True)


def _escape_controls(text: str) -> str:
    """``text`` with control characters other than newline and tab written as escapes."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def shown(value: object) -> str:
    """``value`` as text with control characters written as escapes (``\\x1b``, ``\\n``): one line, and no
    escape sequence ever reaches the terminal from a name vCenter or a spec holds."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def text(value: object, style: str = "") -> Text:
    """``value`` as a rich ``Text`` (never parsed as markup or emoji), control characters escaped."""
    return Text(shown(value), style=style)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``agentvm: <message>`` on stderr and exit with ``code``.

    A message of several lines (a spec with several problems) gives one ``agentvm:`` line each, so that
    every line on stderr says where it comes from and a spec with one problem is exactly one line.
    """
    for line in message.splitlines() or [""]:
        err_console.print(f"agentvm: {shown(line)}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


API_VERSION = "agentvm/v1"


def document(kind: str, body: Mapping[str, object]) -> dict[str, object]:
    """One ``--json`` document: ``apiVersion``, ``kind`` (its schema is ``api/schema/<kind>-v1.json``), the
    body's camelCase keys. Called by every command's ``--json``."""
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def print_document(kind: str, body: Mapping[str, object]) -> None:
    """Print ``document(kind, body)`` on stdout."""
    print_json(document(kind, body))


def warn(message: str) -> None:
    """Print ``agentvm: warning: <message>`` on stderr (one line, never markup)."""
    err_console.print(f"agentvm: warning: {shown(message)}", markup=False, highlight=False, soft_wrap=True)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
