"""Validation before any change, on the lab: specs vCenter or EAM would refuse stop plan and apply at once.

Before: a control character in an OVF property passed ``plan``, and ``apply`` registered the extension
and set six hosts' AgentVM settings before EAM refused the agency; ``agentName: bad/name`` went as far as
deploying (and leaking) VMs; an ``ipPlan.addresses`` entry for a host that is not in scope was silently
ignored. Each now ends with one ``agentvm:`` line, exit 2, and vCenter and EAM exactly as they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_lab import World, contrail_text

pytestmark = pytest.mark.lab

CASES = [
    (
        "control character in an OVF property",
        {"dns: [10.10.0.2]": 'dns: ["10.10.0.2\\x01"]'},
        "contrail.yaml:33: agencies[0].ovfProperties.dns[0]: has the control character U+0001, which "
        "vCenter and EAM refuse; remove it",
    ),
    (
        "agent VM name vCenter escapes",
        {"agentName: contrail-vm": "agentName: bad/name"},
        'contrail.yaml:23: agencies[0].agentName: "bad/name" has "/", which vCenter stores as "%2f" in VM '
        "names, so agentvm and EAM would not find the agent VMs by name; write e.g. bad-name",
    ),
    (
        "ipPlan entry for a host not in scope",
        {
            "range: 10.10.0.10-10.10.0.200": (
                "range: 10.10.0.10-10.10.0.200\n      addresses: {DC0_C0_H9: 10.10.0.5}"
            )
        },
        'agency "contrail": ipPlan.addresses: "DC0_C0_H9" is not a host in the scope; did you mean '
        '"DC0_C0_H0"? Correct the entry or remove it',
    ),
]


@pytest.fixture(scope="module")
def world(cli_world_per_module: World) -> World:
    """One lab for the module: every case must leave it unchanged, which the next case re-checks."""
    return cli_world_per_module


@pytest.mark.parametrize(("name", "replace", "message"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_refused_before_any_change(
    world: World, command: str, name: str, replace: dict[str, str], message: str
) -> None:
    spec: Path = world.spec("contrail.yaml", contrail_text(**replace))
    timeout = ["--timeout", "30"] if command == "apply" else []
    result = world.run(command, "-f", str(spec), *timeout)
    assert result.exit_code == 2, (name, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("agentvm: ")
    assert " ".join(line.split()).endswith(message), line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    world.nothing_changed()
