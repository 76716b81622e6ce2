"""One actor per spec: concurrent ``apply``/``run`` on one vCenter and solution, guarded by the lease.

Issue 9, items 4 and 11. Every ``agentvm`` here is a separate process (``python -m agentvm.cli.main``), as an
operator would start them, against a fresh lab; the lease TTL is shortened through ``AGENTVM_LEASE_TTL``.
What happened is checked independently: the agencies EAM holds, and every MarkAsAvailable the lab's EAM
received (counted per agent inside the lab, which runs in this process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentvm.controller.solution import extension_spec
from agentvm.eam.client import EamClient
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.spec import load_spec
from agentvm.vsphere.extensions import register_extension
from tests.integration.test_controller import connect, spec_text

pytestmark = pytest.mark.lab

ONE_HOST = {"      - /DC0/host/DC0_C1\n": ""}
TRIALS = 20
_PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
APPLIES = 4


def cli(info: LabInfo, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``agentvm ARGS`` as its own process with the lab's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentvm.cli.main", *args],
        env={**info.env(), "PATH": "/usr/bin:/bin", "COLUMNS": "250", **_PYTHONPATH, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def agencies_named(info: LabInfo, name: str) -> int:
    session = connect(info)
    try:
        return list(EamClient(session).agency_names().values()).count(name)
    finally:
        session.logout()


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "contrail.yaml"
    path.write_text(spec_text(**ONE_HOST))
    return path


def test_four_concurrent_applies_create_exactly_one_agency_in_each_of_20_trials(spec: Path) -> None:
    counts, failures = [], []
    for trial in range(TRIALS):
        with Lab(Shape(clusters=1, hosts=1), netsync=False) as info:
            if trial % 2:  # every other trial races on the agency alone (the extension is there already)
                session = connect(info)
                desired = load_spec(spec, env=info.env())
                register_extension(session, extension_spec(desired.solution))
                session.logout()
            procs = [
                cli(info, "apply", "-f", str(spec), "--timeout", "60", AGENTVM_LEASE_TTL="3")
                for _ in range(APPLIES)
            ]
            outputs = [p.communicate(timeout=180) for p in procs]
            counts.append(agencies_named(info, "contrail"))
            failures += [err for p, (_out, err) in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert counts == [1] * TRIALS
    assert failures == []
