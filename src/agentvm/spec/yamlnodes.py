"""YAML text → a tree of ``Node``s that remember their line, with ``${VAR}`` substitution applied.

PyYAML's ``safe_load`` forgets where each value came from; the spec must say ``contrail.yaml:14``. So
``parse_yaml`` composes the node graph (which carries marks) and converts it itself: mappings keep each
key's line, duplicate keys are problems (PyYAML would keep the last silently), and every string scalar has
its environment references replaced. Called by ``agentvm.spec.loader`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import yaml
from yaml.constructor import SafeConstructor

from agentvm.spec.errors import Problem

Kind = Literal["map", "seq", "scalar"]
Scalar = str | int | float | bool | None


@dataclass
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


def parse_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Node | None, list[Problem]]:
    """Parse one YAML document. Returns (root or None when the file is empty or malformed, problems)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or exc.context or "unreadable"
        if exc.context and exc.context_mark is not None and exc.problem:
            what += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        return None, [
            Problem(file, line, "", f"is not valid YAML: {what}; check the indentation and quoting")
        ]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 0, "", f"is not valid YAML: {exc}")]
    if root is None:
        return None, []
    problems: list[Problem] = []
    return _convert(root, "", file, env, problems, depth=0), problems


_constructor = SafeConstructor()
_MAX_DEPTH = 64  # aliases can make a graph arbitrarily deep (or recursive); a spec is never this deep


def _convert(
    node: yaml.Node, path: str, file: str, env: Mapping[str, str], problems: list[Problem], depth: int
) -> Node:
    line = node.start_mark.line + 1
    if depth > _MAX_DEPTH:
        problems.append(Problem(file, line, path, "nests too deeply (a recursive alias?); flatten it"))
        return Node("scalar", line, path)
    if isinstance(node, yaml.MappingNode):
        _constructor.flatten_mapping(node)  # resolves '<<' merge keys the way safe_load does
        result = Node("map", line, path)
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(file, key_line, path, "has a key that is not plain text; quote it"))
                continue
            key = str(key_node.value)
            sub = child_path(path, key)
            if key in result.entries:
                first = result.key_lines[key]
                problems.append(
                    Problem(file, key_line, sub, f"is given twice (first on line {first}); keep one")
                )
                continue
            result.key_lines[key] = key_line
            value = _convert(value_node, sub, file, env, problems, depth + 1)
            # report a value at its key's line: for a block mapping or list the value itself starts one
            # line below, where a reader would not look for "agencies[0].ipPlan: needs a cidr"
            value.line = key_line
            result.entries[key] = value
        return result
    if isinstance(node, yaml.SequenceNode):
        result = Node("seq", line, path)
        result.items = [
            _convert(item, child_path(path, i), file, env, problems, depth + 1)
            for i, item in enumerate(node.value)
        ]
        return result
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node, line, path, file, env, problems)


def _scalar(
    node: yaml.ScalarNode, line: int, path: str, file: str, env: Mapping[str, str], problems: list[Problem]
) -> Node:
    raw = str(node.value)
    try:
        value = _constructor.construct_object(node)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        text, errors = substitute(value, env)
        problems.extend(Problem(file, line, path, message) for message in errors)
        if errors:
            return Node("scalar", line, path, original=value, broken=True)
        return Node("scalar", line, path, scalar=text, raw=text, original=value)
    if value is None or isinstance(value, bool | int | float):
        return Node("scalar", line, path, scalar=value, raw=raw)
    # dates, binary and the like: keep the text as written, the spec has no such fields
    return Node("scalar", line, path, scalar=raw, raw=raw)
