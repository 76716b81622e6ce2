"""Validate a JSON document against the schema of its kind, shipped in src/agentvm/api/schema/.

For documents agentvm prints and for the ones tests write by hand to feed a renderer or the dashboard: a
hand-written document that its schema refuses would test a shape agentvm never produces.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from referencing import Registry, Resource

from agentvm.api.schemas import schema_for, schemas


def registry() -> Registry[Any]:
    """Every shipped schema by its ``$id``, so that one can refer to another (ApplyResult -> Plan)."""
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas().values())


def validator(kind: str) -> jsonschema.Draft202012Validator:
    """A validator for ``kind`` that resolves references to the other schemas."""
    return jsonschema.Draft202012Validator(schema_for(kind), registry=registry())


def valid(document: Any) -> Any:
    """``document`` itself, after checking it against the schema its ``kind`` names (ValidationError if
    it does not conform)."""
    validator(str(document["kind"])).validate(document)
    return document


def valid_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` itself, after checking it as one event of an ``Events`` document (camelCase keys)."""
    valid(
        {"apiVersion": "agentvm/v1", "kind": "Events", "server": "http://127.0.0.1:1", "lastEventId": 1}
        | {"events": [event]}
    )
    return event
