"""Exit codes a script can use, on the lab: ``plan --detailed-exitcode`` as terraform's.

The other codes each come from a real situation in their own tests: bad spec → 2
(test_cli_bad_specs, test_cli_validation_lab), vCenter unreachable → 3 and bad URL forms → 2
(test_cli_connection), wrong password or thumbprint → 4 and EAM unreachable → 3
(test_cli_solution::test_every_bad_input_...), a passive issue in apply → 1
(test_cli_solution::test_a_passive_issue_...), no lab running → 2 (test_lab_cli); netsync items
failed → 1 (below).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvm.lab.world import LabInfo
from tests.support.cli_lab import EXAMPLES, World
from tests.support.netsync_lab import VCenter, netsync

pytestmark = pytest.mark.lab


@pytest.fixture
def world(cli_world: World) -> World:
    """The CLI's lab world (tests/integration/conftest.py)."""
    return cli_world


def test_plan_detailed_exitcode_is_2_with_changes_0_without_and_1_on_an_error(world: World) -> None:
    spec = world.spec("hello-agent.yaml", (EXAMPLES / "hello-agent.yaml").read_text())

    plain = world.run("plan", "-f", str(spec))
    assert plain.exit_code == 0, plain.stderr  # without the flag, changes are no error
    assert plain.stderr == ""  # the example runs without warnings (it used to warn of an OVF property)
    changes = world.run("plan", "-f", str(spec), "--detailed-exitcode")
    assert changes.exit_code == 2, changes.stderr
    assert "change(s)" in changes.stdout

    applied = world.run("apply", "-f", str(spec), "--timeout", "120")
    assert applied.exit_code == 0, applied.stderr

    none = world.run("plan", "-f", str(spec), "--detailed-exitcode")
    assert none.exit_code == 0, none.stderr
    assert "no changes" in none.stdout
    vms = [vm for vm in world.snapshot().vms if vm.name.startswith("hello-agent")]
    assert len(vms) == 3
    for vm in vms:  # the greeting reaches each agent VM as its OVF property, naming its host
        assert vm.extra_config.get("guestinfo.agent.message", "").startswith("hello from "), vm.extra_config

    # an error is 1, never 2: bad input must not read as "changes present"
    wrong = world.run("plan", "-f", str(spec), "--detailed-exitcode", AGENTVM_PASSWORD="wrong")
    assert wrong.exit_code == 1, wrong.stderr
    assert "wrong user name or password" in wrong.stderr
    bad = world.spec("bad.yaml", "apiVersion: [agentvm/v1\n")
    assert world.run("plan", "-f", str(bad), "--detailed-exitcode").exit_code == 1
    assert world.run("plan", "-f", str(bad)).exit_code == 2


@pytest.fixture
def vc(lab: LabInfo) -> Iterator[VCenter]:
    center = VCenter(lab.vcsim)
    yield center
    center.session.logout()


def test_netsync_apply_with_an_item_failed_exits_1_not_3(lab: LabInfo, vc: VCenter, tmp_path: Path) -> None:
    # host 0's vRouter agent is a closed port: its VM's port cannot be added (3 used to mean this too)
    urls = json.loads(Path(lab.vrouter_map).read_text())
    host0 = vc.host_ids()[0]
    dead = tmp_path / "vrouters.json"
    dead.write_text(json.dumps({**urls, host0: "http://127.0.0.1:1"}))
    pg = vc.port_group("pg-exit", 840, ("10.84.0.0", "10.84.0.1", "10.84.0.10#20"))
    vc.run(vc.vm("exit-1", pg, host=0).PowerOnVM_Task(), "power on")

    code, out = netsync(lab, "apply", env={"AGENTVM_VROUTER_MAP": str(dead)})

    assert code == 1, out
    assert {f["item"].split(" on ")[-1] for f in out["applied"]["failures"]} == {host0}, out
