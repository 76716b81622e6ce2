"""Every command's ``--json`` on one lab, each document validated against the schema of its kind.

The lab is ``agentvm lab up`` (vcsim, EAM, SDN controller, vRouter agents), the commands run as a user runs
them: subprocesses with ``eval "$(agentvm lab env)"``'s environment. The sequence is a whole day: version,
lab status/env, inventory, plan, apply, status, resolve --all, netsync plan/apply, destroy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab_cli import agentvm
from tests.support.schemas import valid

pytestmark = pytest.mark.lab


@pytest.fixture
def env(lab_env: dict[str, str]) -> dict[str, str]:
    """The environment of ``agentvm lab`` commands (tests/integration/conftest.py)."""
    return lab_env


SPEC = str(Path(__file__).resolve().parents[2] / "examples" / "contrail.yaml")


def document(environment: dict[str, str], *args: str, kind: str, code: int = 0) -> dict[str, Any]:
    """Run ``agentvm ARGS --json``: its exit code is ``code``, its stdout one document of ``kind`` that its
    schema accepts, in camelCase."""
    done = agentvm(*args, "--json", env=environment, timeout=180)
    assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    parsed: dict[str, Any] = json.loads(done.stdout)
    assert (parsed["apiVersion"], parsed["kind"]) == ("agentvm/v1", kind)
    valid(parsed)
    assert [key for key in _keys(parsed) if "_" in key] == []  # camelCase
    return parsed


# maps keyed by data (agency names, host moids, process and variable names), not by field names
DATA_MAPS = {"addresses", "unreachableAgents", "processes", "variables"}


def _keys(value: object) -> list[str]:
    """Every field name in a document, at any depth (the shapes inside DATA_MAPS are the schemas' job)."""
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in [key, *([] if key in DATA_MAPS else _keys(v))]]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_every_command_prints_a_document_its_schema_accepts(env: dict[str, str]) -> None:
    version = document(env, "version", kind="Version")
    assert version["version"]
    stopped = document(
        env, "lab", "status", kind="LabStatus", code=2
    )  # no lab running: bad input (cli.exitcodes)
    assert stopped["running"] is False

    up = agentvm("lab", "up", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    lab = document(env, "lab", "status", kind="LabStatus")
    assert lab["running"] is True and lab["shape"]["hosts"] > 0
    variables = document(env, "lab", "env", kind="LabEnv")["variables"]
    assert variables["AGENTVM_URL"] == lab["vcenter"]
    day = {**env, **variables}

    inventory = document(day, "inventory", kind="Inventory")
    assert len(inventory["hosts"]) == lab["shape"]["hosts"] * lab["shape"]["clusters"]

    plan = document(day, "plan", "-f", SPEC, kind="Plan")
    assert plan["noChanges"] is False and any(c["kind"] == "create-agency" for c in plan["changes"])

    applied = document(day, "apply", "-f", SPEC, "--timeout", "60", kind="ApplyResult")
    assert applied["green"] and applied["plan"]["changes"] == plan["changes"]
    assert document(day, "plan", "-f", SPEC, kind="Plan")["noChanges"] is True

    status = document(day, "status", "-f", SPEC, kind="Status")
    assert [a["status"] for a in status["agencies"]] == ["green"]

    resolved = document(day, "resolve", "--all", "-f", SPEC, kind="ResolveResult")
    assert resolved["issues"] == [] and resolved["moved"] == []  # all green: nothing to resolve

    planned = document(day, "netsync", "plan", kind="NetsyncPlan")
    synced = document(day, "netsync", "apply", kind="NetsyncResult")
    assert synced["applied"]["failures"] == []
    assert len(synced["create"]) == len(planned["create"])

    destroyed = document(day, "destroy", "-f", SPEC, "--yes", kind="DestroyResult")
    assert any("unregistered extension" in a for a in destroyed["actions"]), destroyed["actions"]
    again = document(day, "destroy", "-f", SPEC, "--yes", kind="DestroyResult")
    assert again["actions"] == []
