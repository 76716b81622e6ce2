"""YAML text → a tree of ``Node``s that remember their line, with ``${VAR}`` substitution applied.

PyYAML's ``safe_load`` forgets where each value came from; the spec must say ``contrail.yaml:14``. So
``parse_yaml`` composes the node graph (which carries marks) and converts it itself: mappings keep each
key's line, duplicate keys are problems (PyYAML would keep the last silently), and every string scalar has
its environment references replaced. Called by ``agentvm.spec.loader`` only.

A spec may come from anyone, so parsing is bounded and total: at most ``MAX_BYTES`` of text, ``MAX_DEPTH``
levels of nesting (checked while composing, long before Python's recursion limit), ``MAX_ALIASES`` aliases
and ``MAX_VALUES`` values once aliases are expanded (an 865-byte "billion laughs" file stops here after a
few milliseconds). Scalars are built by agentvm, not by PyYAML's constructors, so a bad date, a
5,000-digit integer or a wrong ``!!bool`` tag is a problem on its line (or, untagged, just text), never an
exception. Any string with a character XML 1.0 cannot carry — every string may end up in a SOAP request
— is a problem too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from agentvm.spec.errors import Problem

MAX_BYTES = 1_048_576  # a spec for 2,500 hosts with an address each is ~150 kB
MAX_DEPTH = 64  # the schema nests 6 levels; aliases can make a graph arbitrarily deep (or recursive)
MAX_ALIASES = 1_000
MAX_VALUES = 50_000  # after expanding aliases; each mapping, list, scalar is one (2,500 hosts: ~3,000)
_MAX_NUMBER = 100  # characters: longer "numbers" stay text (int() of 5,000 digits raises; base 60 is slow)

Kind = Literal["map", "seq", "scalar"]
Scalar = str | int | float | bool | None


@dataclass(slots=True)
class Node:
    """One value of the file. ``raw`` is the scalar's text as written (after substitution)."""

    kind: Kind
    line: int
    path: str
    scalar: Scalar = None
    raw: str = ""
    items: list[Node] = field(default_factory=list)
    entries: dict[str, Node] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)
    original: str = ""  # a string scalar's text before ${VAR} substitution
    broken: bool = False  # a bad ${VAR} reference, already reported: readers skip it silently

    def type_name(self) -> str:
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        if self.scalar is None:
            return "empty"
        return {bool: "a boolean", int: "a number", float: "a number", str: "text"}[type(self.scalar)]


def child_path(parent: str, key: str | int) -> str:
    """``agencies`` + 0 → ``agencies[0]``; ``x`` + ``ipPlan`` → ``x.ipPlan``; odd keys are quoted."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{parent}.{key}" if parent else key
    return f'{parent}["{key}"]'


# ${VAR}, ${VAR:-default}, and $$ for a literal dollar sign.
_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_VARIABLE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace environment references in ``text``; return the result and one message per bad reference.

    ``${VAR:-default}`` uses the default when VAR is unset or empty (as the shell does). Messages never
    contain a variable's value.
    """
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$$":
            return "$"
        body = match.group("body")
        if body is None:
            errors.append(
                "has a '${' without its closing '}'; write ${VAR} or ${VAR:-default}, or $$ for '$'"
            )
            return ""
        ref = _VARIABLE.fullmatch(body)
        if ref is None:
            errors.append(f"'${{{body}}}' is not a variable reference; write ${{VAR}} or ${{VAR:-default}}")
            return ""
        name, default = ref.group("name"), ref.group("default")
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                errors.append(
                    f"environment variable {name} is not set; export {name}=..., "
                    f"or write ${{{name}:-default}}"
                )
                return ""
            return default
        return value

    return _REFERENCE.sub(replace, text), errors


_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_invalid(text: str) -> str | None:
    """The first character of ``text`` that XML 1.0 cannot carry, as ``U+0001``; None when there is none.

    pyVmomi writes strings into SOAP requests as they are, so vCenter and EAM refuse such a request whole.
    Used for every scalar and key here, and for passwords read from a file or the environment.
    """
    bad = _XML_INVALID.search(text)
    return f"U+{ord(bad.group(0)):04X}" if bad else None


class _Refused(Exception):
    """A limit was hit: stop parsing at once (the rest of the file may be a bomb)."""

    def __init__(self, line: int, message: str, path: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer with a depth, node and alias budget (it recurses once per level of nesting)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        line = mark.line + 1
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(line, f"uses more than {MAX_ALIASES:,} aliases; write the values out")
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            raise _Refused(line, f"has more than {MAX_VALUES:,} values; a spec is never this big")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, _TOO_DEEP)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels; a spec is never this deep, flatten it"


def parse_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Node | None, list[Problem]]:
    """Parse one YAML document. Returns (root or None when the file is empty or malformed, problems).

    Never raises: whatever ``text`` holds ends as a root or as problems naming ``file`` (and the line).
    """
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None, [Problem(file, 0, "", too_big())]
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters at once
        root = loader.get_single_node()
    except _Refused as exc:
        return None, [Problem(file, exc.line, "", exc.message)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or exc.context or "unreadable"
        if exc.context and exc.context_mark is not None and exc.problem:
            what += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        return None, [
            Problem(file, line, "", f"is not valid YAML: {what}; check the indentation and quoting")
        ]
    except ReaderError as exc:  # a character YAML does not allow, anywhere in the file
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return None, [
            Problem(file, line, "", f"is not valid YAML: it has the control character {char}; remove it")
        ]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 0, "", f"is not valid YAML: {exc}")]
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        return None, []
    problems: list[Problem] = []
    converter = _Converter(file, env, problems)
    try:
        return converter.convert(root, "", depth=0), problems
    except _Refused as exc:
        return None, [Problem(file, exc.line, exc.path, exc.message)]


def too_big() -> str:
    """The message for a file over MAX_BYTES (the loader says it before reading the rest)."""
    return f"is larger than {MAX_BYTES:,} bytes; a spec is never this big: is it the right file?"


_MERGE_TAG = "tag:yaml.org,2002:merge"
_BUILT = {  # the scalar types the spec has; everything else (dates, binary, ...) stays text
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}
_resolver = Resolver()


class _Converter:
    """yaml.Node graph → Node tree, counting every value so that aliases cannot multiply the work."""

    def __init__(self, file: str, env: Mapping[str, str], problems: list[Problem]) -> None:
        self.file = file
        self.env = env
        self.problems = problems
        self.values = 0
        self.constructor = SafeConstructor()  # one per file: it caches what it built
        self.top: tuple[int, str] | None = None  # the top-level entry being converted: (line, path)

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    def convert(self, node: yaml.Node, path: str, depth: int) -> Node:
        line = node.start_mark.line + 1
        self.values += 1
        if self.values > MAX_VALUES:
            # aliased nodes carry the marks of their anchor: name the top-level entry being read instead
            where, field = self.top or (line, "")
            raise _Refused(
                where,
                f"expands to more than {MAX_VALUES:,} values through aliases; "
                "write the values out instead of nesting aliases",
                field,
            )
        if depth > MAX_DEPTH:  # only through aliases: the composer stops deeper text
            raise _Refused(line, _TOO_DEEP)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, line, path, depth)
        if isinstance(node, yaml.SequenceNode):
            result = Node("seq", line, path)
            result.items = [
                self.convert(item, child_path(path, i), depth + 1) for i, item in enumerate(node.value)
            ]
            return result
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, line, path)

    def _mapping(self, node: yaml.MappingNode, line: int, path: str, depth: int) -> Node:
        result = Node("map", line, path)
        merged: list[Node] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merged += self._merged(value_node, key_line, path, depth)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_line, path, "has a key that is not plain text; quote it")
                continue
            key = str(key_node.value)
            sub = child_path(path, key)
            bad = xml_invalid(key)
            if bad is not None:
                self.problem(key_line, path, f"has a key with the control character {bad}; remove it")
                continue
            if key in result.entries:
                first = result.key_lines[key]
                self.problem(key_line, sub, f"is given twice (first on line {first}); keep one")
                continue
            result.key_lines[key] = key_line
            if depth == 0:
                self.top = (key_line, sub)
            value = self.convert(value_node, sub, depth + 1)
            # report a value at its key's line: for a block mapping or list the value itself starts one
            # line below, where a reader would not look for "agencies[0].ipPlan: needs a cidr"
            value.line = key_line
            result.entries[key] = value
        # YAML's merge key: keys written here win over merged ones, earlier merged mappings over later
        for source in merged:
            for key, value in source.entries.items():
                if key not in result.entries:
                    result.entries[key] = value
                    result.key_lines[key] = source.key_lines[key]
        return result

    def _merged(self, node: yaml.Node, line: int, path: str, depth: int) -> list[Node]:
        """The mappings a ``<<`` key merges in (converted at this mapping's path), or a problem."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(s, yaml.MappingNode) for s in sources):
            return [self.convert(s, path, depth + 1) for s in sources]
        wrong = next(s for s in sources if not isinstance(s, yaml.MappingNode))
        what = self.convert(wrong, path, depth + 1).type_name()
        self.problem(
            line,
            path,
            f"'<<' merges a mapping (or a list of them) into this one, not {what}; write <<: *anchor",
        )
        return []

    def _scalar(self, node: yaml.ScalarNode, line: int, path: str) -> Node:
        raw = str(node.value)
        value = self._construct(node, raw, line, path)
        if isinstance(value, _Broken):
            return Node("scalar", line, path, raw=raw, broken=True)
        if isinstance(value, str):
            text, errors = substitute(value, self.env)
            for message in errors:
                self.problem(line, path, message)
            if errors:
                return Node("scalar", line, path, original=value, broken=True)
            bad = xml_invalid(text)
            if bad is not None:
                # never the text itself: it may be a password from the environment
                came = " (after ${...} substitution)" if xml_invalid(value) is None else ""
                self.problem(
                    line,
                    path,
                    f"has the control character {bad}{came}, which vCenter and EAM refuse; remove it",
                )
                return Node("scalar", line, path, original=value, broken=True)
            return Node("scalar", line, path, scalar=text, raw=text, original=value)
        return Node("scalar", line, path, scalar=value, raw=raw)

    def _construct(self, node: yaml.ScalarNode, raw: str, line: int, path: str) -> Scalar | _Broken:
        """The scalar's value: null, bool, int, float or (for every other tag) its text as written.

        An explicit tag whose text does not fit (``!!bool maybe``) is a problem; an implicit one that does
        not (``2024-13-45`` looks like a date) just stays text.
        """
        tag = node.tag
        if tag not in _BUILT:
            return raw
        implicit = _resolver.resolve(yaml.ScalarNode, raw, (True, False))  # type: ignore[no-untyped-call]
        explicit = node.style is not None or tag != implicit
        if len(raw) <= _MAX_NUMBER:
            try:
                value: Scalar = self.constructor.construct_object(node)
                return value
            except Exception:  # noqa: S110 -- PyYAML's constructors raise whatever their parsing hits
                pass  # (ValueError, KeyError, IndexError for "!!int" with no digits, ...): judged below
        if not explicit:
            return raw
        kind = tag.rsplit(":", 1)[-1]
        article = "an" if kind == "int" else "a"
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        self.problem(
            line,
            path,
            f'is tagged !!{kind}, but "{shown}" is not {article} {kind}; '
            f"remove the tag or write {article} {kind}",
        )
        return _Broken()


class _Broken:
    """A scalar already reported as wrong: readers skip it silently."""
