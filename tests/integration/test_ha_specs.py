"""``agentvm run -f A -f B``: one controller per spec, one API over them; two specs of one solution refused.

Each vCenter is a lab of its own (vcsim, the lab's EAM, in this process); ``agentvm run`` is a separate
process. What it did is checked on each lab's EAM side: every call it answered, with its operationID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo
from agentvm.vsphere.extensions import read_lease_records
from tests.support.controller_lab import connect, spec_text
from tests.support.replicas import EamCalls, RunProcess, metric, recording, spec_for, wait_for
from tests.support.schemas import valid

pytestmark = pytest.mark.lab

ONE_CLUSTER = {"      - /DC0/host/DC0_C1\n": ""}
KEY = "org.tungsten.agentvm"


@pytest.fixture
def eam_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[EamCalls]:
    with recording(monkeypatch) as calls:
        yield calls


@pytest.fixture
def two_labs() -> Iterator[tuple[LabInfo, LabInfo]]:
    labs = [Lab(Shape(clusters=1, hosts=2), netsync=False) for _ in range(2)]
    try:
        infos = [lab.start() for lab in labs]
        yield infos[0], infos[1]
    finally:
        for lab in labs:
            lab.stop()


def env_of(*infos: LabInfo) -> dict[str, str]:
    """The passwords only (each spec names its vCenter; AGENTVM_URL would override both)."""
    return {f"LAB_PASSWORD_{i}": info.vcsim.password for i, info in enumerate(infos)}


def test_one_run_with_two_specs_serves_both_vcenters_each_with_its_own_status(
    tmp_path: Path, two_labs: tuple[LabInfo, LabInfo], eam_calls: EamCalls
) -> None:
    a, b = two_labs
    text = spec_text(**ONE_CLUSTER)
    spec_a = spec_for(a, tmp_path / "a.yaml", text, "LAB_PASSWORD_0")
    spec_b = spec_for(b, tmp_path / "b.yaml", text, "LAB_PASSWORD_1")
    run = RunProcess(env_of(a, b), "-f", str(spec_a), "-f", str(spec_b), "--lease-ttl", "3")
    try:

        def both_green() -> list[dict[str, object]] | None:
            doc = run.status()
            items = doc.get("items", [])
            if doc.get("kind") != "StatusList" or len(items) != 2:
                return None
            green = all(
                it["agencies"] and all(ag["status"] == "green" for ag in it["agencies"]) for it in items
            )
            return items if green else None

        items = wait_for(both_green, "both vCenters green in one status list", 180)
        assert sorted(it["vcenter"] for it in items) == sorted([a.vcsim.url, b.vcsim.url])
        assert {it["solution"] for it in items} == {KEY}
        assert all(it["leadership"]["role"] == "leader" for it in items)
        hosts = {it["vcenter"]: sum(len(c["hosts"]) for c in it["agencies"][0]["clusters"]) for it in items}
        assert hosts == {a.vcsim.url: 2, b.vcsim.url: 2}
        ready = run.get("/readyz")
        assert ready.status_code == 200
        assert sorted(c["vcenter"] for c in ready.json()["controllers"]) == sorted([a.vcsim.url, b.vcsim.url])
        text_metrics = run.get("/metrics").text
        for info in (a, b):
            labels = {"vcenter": info.vcsim.url, "solution": KEY}
            assert metric(text_metrics, "agentvm_vcenter_connected", **labels) == 1
            assert metric(text_metrics, "agentvm_leader", **labels) == 1
            assert metric(text_metrics, "agentvm_agents", agency="contrail", state="green", **labels) == 2
        assert text_metrics.count("# TYPE agentvm_vcenter_connected ") == 1
        assert text_metrics.count("\nprocess_resident_memory_bytes ") == 1
        # every hook answered once on each vCenter: two agents each, one MarkAsAvailable per agent
        marks = [c for c in eam_calls.writes() if c.method == "MarkAsAvailable"]
        assert len(marks) == 4
        # resolve through the API of both: one result each, a document of its own kind
        auth = {"Authorization": "Bearer test-token-123"}
        resolved = httpx.post(f"{run.url}/api/v1/resolve", json={}, headers=auth, timeout=30)
        assert resolved.status_code == 200, resolved.text
        doc = valid(resolved.json())
        assert doc["kind"] == "ResolveList"
        assert sorted(r["vcenter"] for r in doc["results"]) == sorted([a.vcsim.url, b.vcsim.url])
        assert all(r["resolved"] == [] and r["moved"] == [] for r in doc["results"])  # all green
        assert run.stop() == 0
    finally:
        run.kill()


def test_two_specs_of_one_solution_on_one_vcenter_are_refused_by_name_before_any_login(
    tmp_path: Path,
) -> None:
    with Lab(Shape(clusters=1, hosts=1), netsync=False) as info:
        text = spec_text(**ONE_CLUSTER)
        first = spec_for(info, tmp_path / "first.yaml", text, "LAB_PASSWORD_0")
        second = spec_for(
            info,
            tmp_path / "second.yaml",
            text.replace("name: contrail\n", "name: other\n"),
            "LAB_PASSWORD_0",
        )
        proc = subprocess.run(
            [sys.executable, "-m", "agentvm.cli.main", "run", "-f", str(first), "-f", str(second)],
            env={**RunProcess.base_env(), **env_of(info), "AGENTVM_LEASE_TTL": "3"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"-f {first} and -f {second} both name solution {KEY}" in proc.stderr
        session = connect(info)
        try:
            assert read_lease_records(session, KEY) == []  # nothing taken, nothing registered
        finally:
            session.logout()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--coordination", "http://127.0.0.1:2379"), "coordination 'http://127.0.0.1:2379'"),
        (
            ("--coordination", "etcd://127.0.0.1:1", "--backend", "direct"),
            "--coordination needs --backend eam",
        ),
        (
            ("--coordination", "etcd://127.0.0.1:1", "--standby"),
            "--standby does not go with --coordination",
        ),
    ],
)
def test_a_bad_coordination_is_one_message_and_exit_2_before_the_spec_is_read(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "run", "-f", str(tmp_path / "missing.yaml"), *args],
        env=RunProcess.base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr
