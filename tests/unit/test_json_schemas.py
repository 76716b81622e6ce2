"""The schemas under ``agentvm/api/schema/``: valid draft 2020-12, one per kind, each named after its kind.

The documents themselves are validated against them in tests/integration/test_json_documents.py.
"""

from __future__ import annotations

from importlib import resources

import jsonschema
import pytest

from agentvm.api.schemas import schemas
from tests.support.schemas import validator

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# the kinds of the documents ``--json`` prints (Events comes with `agentvm events`)
KINDS = [
    "Plan",
    "ApplyResult",
    "DestroyResult",
    "Status",
    "ResolveResult",
    "Inventory",
    "NetsyncPlan",
    "NetsyncResult",
    "LabStatus",
    "LabEnv",
    "Version",
]
FILES = sorted(
    e.name for e in resources.files("agentvm.api").joinpath("schema").iterdir() if e.name.endswith(".json")
)


def test_every_kind_has_a_schema_and_every_schema_a_kind() -> None:
    assert set(KINDS) <= set(schemas())
    assert len(schemas()) == len(FILES)  # no two files claim one kind


@pytest.mark.parametrize("name", FILES)
def test_each_schema_is_a_valid_draft_2020_12_schema_in_the_status_style(name: str) -> None:
    (schema,) = [s for s in schemas().values() if s["$id"].endswith("/" + name)]
    assert schema["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://agentvm.dev/schema/{name}"
    assert name == f"{schema['properties']['kind']['const'].lower()}-v1.json"
    assert schema["properties"]["apiVersion"] == {"const": "agentvm/v1"}
    assert {"apiVersion", "kind"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    assert schema["title"] and schema["description"]


def test_a_document_of_the_wrong_kind_or_casing_is_rejected() -> None:
    check = validator("Version")
    check.validate({"apiVersion": "agentvm/v1", "kind": "Version", "version": "0.1.0"})
    for wrong in (
        {"apiVersion": "agentvm/v1", "kind": "Plan", "version": "0.1.0"},
        {"apiVersion": "agentvm/v2", "kind": "Version", "version": "0.1.0"},
        {"kind": "Version", "version": "0.1.0"},
        {"apiVersion": "agentvm/v1", "kind": "Version", "version": "0.1.0", "build_info": "x"},
    ):
        assert not check.is_valid(wrong), wrong


def test_apply_result_checks_the_plan_it_embeds() -> None:
    plan = {"apiVersion": "agentvm/v1", "kind": "Plan", "changes": [], "addresses": {}, "warnings": []}
    result = {
        "apiVersion": "agentvm/v1",
        "kind": "ApplyResult",
        "plan": {**plan, "noChanges": True},
        "actions": [],
        "green": True,
        "problems": [],
        "seconds": 0.5,
        "polls": 1,
        "calls": {"vim25": 3, "eam": 1},
    }
    check = validator("ApplyResult")
    check.validate(result)
    assert not check.is_valid({**result, "plan": plan})  # noChanges missing in the embedded plan
