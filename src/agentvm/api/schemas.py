"""The JSON schemas of the ``agentvm/v1`` documents every ``--json`` prints, shipped under ``api/schema/``.

One file per kind, ``<kind in lower case>-v1.json`` (draft 2020-12): ``Status`` is ``status-v1.json``,
``ApplyResult`` is ``applyresult-v1.json``. A schema refers to another by that file name (``ApplyResult``
embeds its ``Plan``). Read by tests and by anyone who wants to validate agentvm's output.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

API_VERSION = "agentvm/v1"


def schema_file(kind: str) -> str:
    """The file name of ``kind``'s schema, e.g. ``applyresult-v1.json``."""
    return f"{kind.lower()}-v1.json"


def schemas() -> dict[str, dict[str, Any]]:
    """Every shipped schema, by the kind its document carries (``properties.kind.const``)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in resources.files("agentvm.api").joinpath("schema").iterdir():
        if entry.name.endswith(".json"):
            schema: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
            found[str(schema["properties"]["kind"]["const"])] = schema
    return found


def schema_for(kind: str) -> dict[str, Any]:
    """The schema of ``kind``'s document. Raises KeyError for a kind with no schema."""
    text = resources.files("agentvm.api").joinpath("schema", schema_file(kind)).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
