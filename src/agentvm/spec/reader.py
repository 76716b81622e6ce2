"""Small typed readers over ``Node``s that record problems instead of raising.

The section validators (``vcenter``, ``solution``, ``agencies``) call these; each returns the value, or
None after recording a ``Problem`` that names the file, line, field and fix. Nothing here knows the schema.
"""

from __future__ import annotations

import difflib
import os
import unicodedata
from collections.abc import Collection, Mapping
from pathlib import Path

from agentvm.spec.errors import Problem
from agentvm.spec.yamlnodes import Node

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def suggest(word: str, choices: Collection[str]) -> str | None:
    """The choice closest to a mistyped ``word`` (case-insensitive first), or None if none is close."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def control_character(text: str, *, lines: bool = False) -> str | None:
    """The first control or invisible format character of ``text`` as ``U+0085``, or None.

    XML-invalid characters are refused for every string already (``yamlnodes``); this also finds the ones
    XML carries but names and labels must not have: tab, newline, C1 controls, zero-width characters.
    ``lines`` allows tab and line ends (multi-line summaries, a PEM block as an OVF property).
    """
    for char in text:
        if lines and char in "\t\n\r":
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


class Reader:
    """Collects problems and warnings for one spec file; resolves relative paths against its folder."""

    def __init__(self, file: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.file = file
        self.base_dir = base_dir
        self.env = env
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ recording
    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    def warn(self, line: int, path: str, message: str) -> None:
        self.warnings.append(str(Problem(self.file, line, path, message)))

    # ------------------------------------------------------------------ structure
    def mapping(
        self,
        node: Node,
        allowed: Collection[str],
        required: Mapping[str, str] | None = None,
    ) -> dict[str, Node] | None:
        """The entries of a mapping with only ``allowed`` keys.

        ``required`` maps each required key to an example value used in the "add it" message. Unknown keys
        are reported with a "did you mean" suggestion; the known entries are still returned so that their
        own mistakes are found in the same run.
        """
        if node.kind != "map":
            keys = ", ".join(sorted(allowed))
            self.problem(
                node.line, node.path, f"must be a mapping (with keys {keys}), not {node.type_name()}"
            )
            return None
        for key in node.entries:
            if key not in allowed:
                guess = suggest(key, allowed)
                hint = (
                    f'did you mean "{guess}"?' if guess else "expected one of: " + ", ".join(sorted(allowed))
                )
                sub = node.entries[key].path
                self.problem(node.key_lines[key], sub, f"unknown key; {hint}")
        for key, example in (required or {}).items():
            if key not in node.entries:
                path = f"{node.path}.{key}" if node.path else key
                self.problem(node.line, path, f"is missing; add it, e.g. {key}: {example}")
        return {k: v for k, v in node.entries.items() if k in allowed}

    def sequence(self, node: Node, example: str) -> list[Node] | None:
        """The items of a list; a single scalar is not silently turned into a list."""
        if node.kind != "seq":
            self.problem(node.line, node.path, f"must be a list, e.g. [{example}], not {node.type_name()}")
            return None
        return node.items

    # ------------------------------------------------------------------ scalars
    def text(self, node: Node, example: str, *, allow_empty: bool = False) -> str | None:
        """A scalar as text (numbers keep the digits as written: ``version: 1.10`` is "1.10")."""
        if node.broken:
            return None
        if node.kind != "scalar" or node.scalar is None:
            what = "empty" if node.kind == "scalar" else node.type_name()
            self.problem(node.line, node.path, f"must be text, e.g. {example}, not {what}")
            return None
        value = node.raw.strip() if not isinstance(node.scalar, str) else node.scalar.strip()
        if not value and not allow_empty:
            self.problem(node.line, node.path, f"is empty; give a value, e.g. {example}")
            return None
        return value

    def checked_text(
        self,
        node: Node,
        example: str,
        *,
        limit: int | None = None,
        keeps_blanks: str | None = None,
        lines: bool = False,
        allow_empty: bool = False,
    ) -> str | None:
        """``text`` that vCenter takes as written: no control characters, at most ``limit`` characters.

        ``keeps_blanks`` (who would keep them, e.g. "EAM would keep") makes leading or trailing blanks a
        problem instead of silently trimming them: for names, where the trimmed name is another name.
        """
        value = self.text(node, example, allow_empty=allow_empty)
        if value is None:
            return None
        written = node.scalar if isinstance(node.scalar, str) else value
        if keeps_blanks is not None and written != value and control_character(value) is None:
            self.problem(
                node.line, node.path, f'starts or ends with a blank, which {keeps_blanks}; write "{value}"'
            )
            return None
        bad = control_character(written if keeps_blanks is not None else value, lines=lines)
        if bad is not None:
            self.problem(node.line, node.path, f"has the control character {bad}; remove it")
            return None
        if limit is not None and len(value) > limit:
            self.problem(node.line, node.path, f"is {len(value)} characters; keep it to {limit}")
            return None
        return value

    def boolean(self, node: Node) -> bool | None:
        """true/false (also yes/no/on/off/1/0 as text, so ``${FLAG:-false}`` works)."""
        if node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.scalar, bool):
            return node.scalar
        if node.kind == "scalar" and isinstance(node.scalar, str | int):
            word = str(node.scalar).strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        self.problem(node.line, node.path, f"must be true or false, not {_shown(node)}")
        return None

    def file_path(self, node: Node, what: str, *, must_exist: bool = True) -> str | None:
        """A file path, relative paths taken from the spec file's folder; absolute in the result."""
        text = self.text(node, f"/etc/agentvm/{what}")
        if text is None:
            return None
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            is_file = path.is_file()
        except OSError as exc:  # is_file() lets ENAMETOOLONG, EACCES and the like through
            self.problem(
                node.line,
                node.path,
                f'"{text}" cannot be used as a file name ({exc.strerror}); give the path of the {what}',
            )
            return None
        if must_exist and not is_file:
            self.problem(
                node.line,
                node.path,
                f'file "{path}" does not exist; give the path of the {what} '
                "(relative paths start at the spec file's folder)",
            )
            return None
        return str(path)


def _shown(node: Node) -> str:
    if node.kind == "scalar" and node.scalar is not None:
        return f'"{node.raw}"'
    return node.type_name()
