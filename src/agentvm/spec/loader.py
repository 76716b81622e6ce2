"""Load a spec file: YAML → validated ``DesiredState``, or one ``SpecError`` listing every problem.

Called by the CLI (``plan``, ``apply``, ``status -f``, ``destroy``) and by the lab's demo. Reads the file,
the environment (``${VAR}`` references, ``passwordEnv``) and a ``passwordFile`` if one is named; nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agentvm.model.desired import DesiredState
from agentvm.spec.agencies import read_agencies
from agentvm.spec.errors import Problem, SpecError
from agentvm.spec.esxi import read_esxi
from agentvm.spec.reader import Reader
from agentvm.spec.solution import read_solution
from agentvm.spec.vcenter import read_vcenter
from agentvm.spec.yamlnodes import MAX_BYTES, Node, parse_yaml, too_big

API_VERSION = "agentvm/v1"
ALLOWED = ("apiVersion", "vcenter", "esxi", "solution", "agencies")


def load_spec(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> DesiredState:
    """Read and validate the spec at ``path`` (``env`` defaults to ``os.environ``).

    Raises SpecError (a ConfigurationError) naming file, line, field and fix for every problem found,
    and nothing else, whatever the file holds (``tests/unit/test_spec_fuzz.py`` holds it to that).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:  # never more than the limit: -f /dev/zero must not fill the memory
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(
            [Problem(name, 0, "", "does not exist; give the path of a spec file with -f")]
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError([Problem(name, 0, "", f"cannot be read ({reason}); check the file")]) from None
    if len(data) > MAX_BYTES:
        raise SpecError([Problem(name, 0, "", too_big())])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            [Problem(name, line, "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8")]
        ) from None
    return load_spec_text(text, name, env=env, base_dir=Path(name).resolve().parent)


def load_spec_text(
    text: str,
    file: str = "<spec>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> DesiredState:
    """Validate spec ``text``; ``file`` names it in messages, ``base_dir`` anchors relative paths."""
    environment = os.environ if env is None else env
    root, problems = parse_yaml(text, file, environment)
    r = Reader(file, base_dir or Path.cwd(), environment)
    r.problems.extend(problems)
    if root is None:
        if not r.problems:
            r.problem(0, "", "is empty; start from examples/hello-agent.yaml")
        raise SpecError(r.problems)
    fields = r.mapping(
        root,
        ALLOWED,
        required={"solution": "{key: org.example.agentvm, ...}", "agencies": "[{name: hello, ...}]"},
    )
    if fields is None:
        raise SpecError(r.problems)
    if "apiVersion" in fields:
        version = r.text(fields["apiVersion"], API_VERSION)
        if version is not None and version != API_VERSION:
            r.problem(
                fields["apiVersion"].line, "apiVersion", f'"{version}" is not supported; write {API_VERSION}'
            )
    solution = read_solution(r, fields["solution"]) if "solution" in fields else None
    vcenter = read_vcenter(r, fields["vcenter"], solution) if "vcenter" in fields else None
    esxi = read_esxi(r, fields["esxi"]) if "esxi" in fields else ()
    # without a vcenter section but with esxi, the hosts are all there is (no vCenter from flags either)
    has_vcenter = "vcenter" in fields or "esxi" not in fields
    if esxi and not has_vcenter and solution is not None:
        _no_extension_certificate(r, fields["solution"])
    names = None if esxi is None else tuple(h.name for h in esxi)
    agencies = read_agencies(r, fields["agencies"], names, has_vcenter) if "agencies" in fields else None
    invalid = ("vcenter" in fields and vcenter is None) or esxi is None
    if r.problems or solution is None or agencies is None or invalid:
        raise SpecError(r.problems or [Problem(file, 0, "", "is not valid")])
    return DesiredState(
        source=file,
        solution=solution,
        agencies=agencies,
        vcenter=vcenter,
        warnings=tuple(r.warnings),
        esxi=esxi or (),
    )


def _no_extension_certificate(r: Reader, solution: Node) -> None:
    """With standalone hosts alone, the solution's extension certificate has nothing to log in to."""
    for key in ("certFile", "keyFile"):
        node = solution.entries.get(key) if solution.kind == "map" else None
        if node is not None:
            r.problem(
                node.line,
                node.path,
                "is the certificate of a vCenter extension, and this spec has standalone hosts only "
                "(esxi:, no vcenter:); remove it",
            )
