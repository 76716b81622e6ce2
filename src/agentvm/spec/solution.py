"""The ``solution`` section: the vCenter extension agentvm registers (and may log in as)."""

from __future__ import annotations

import re

from agentvm.model.desired import SolutionSpec
from agentvm.spec.reader import Reader
from agentvm.spec.yamlnodes import Node

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,126}")

# vCenter documents no limits for the extension's description; these keep it to what its UI shows
MAX_LABEL = 255
MAX_SUMMARY = 1_024
MAX_VERSION = 64

ALLOWED = ("key", "label", "summary", "company", "version", "certFile", "keyFile")


def read_solution(r: Reader, node: Node) -> SolutionSpec | None:
    """Validate ``solution``; the certificate and key (both or neither) must exist."""
    fields = r.mapping(node, ALLOWED, required={"key": "org.example.agentvm", "version": '"1.0.0"'})
    if fields is None:
        return None
    key = r.text(fields["key"], "org.example.agentvm") if "key" in fields else None
    if key is not None and not _KEY.fullmatch(key):
        r.problem(
            fields["key"].line,
            fields["key"].path,
            f'"{key}" is not an extension key; use letters, digits, dots, dashes (at most 127), '
            "e.g. org.example.agentvm",
        )
        key = None
    version = r.checked_text(fields["version"], '"1.0.0"', limit=MAX_VERSION) if "version" in fields else None
    label = r.checked_text(fields["label"], "My agents", limit=MAX_LABEL) if "label" in fields else key
    summary = (
        r.checked_text(
            fields["summary"], "What the agents do", limit=MAX_SUMMARY, lines=True, allow_empty=True
        )
        if "summary" in fields
        else ""
    )
    company = (
        r.checked_text(fields["company"], "Example Inc.", limit=MAX_LABEL, allow_empty=True)
        if "company" in fields
        else ""
    )
    cert = r.file_path(fields["certFile"], "extension certificate (PEM)") if "certFile" in fields else None
    private = r.file_path(fields["keyFile"], "extension private key (PEM)") if "keyFile" in fields else None
    if ("certFile" in fields) != ("keyFile" in fields):
        given, missing = ("certFile", "keyFile") if "certFile" in fields else ("keyFile", "certFile")
        r.problem(
            fields[given].line,
            f"{node.path}.{missing}",
            f"is missing: {given} and {missing} go together; add {missing} or remove {given}",
        )
    if key is None or version is None or label is None or summary is None or company is None:
        return None
    return SolutionSpec(
        key=key,
        label=label,
        summary=summary,
        company=company,
        version=version,
        cert_file=cert,
        key_file=private,
    )
