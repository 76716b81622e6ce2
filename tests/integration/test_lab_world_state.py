"""A lab's state always describes the world it runs with: each vcsim world has its own instanceUuid, and
the lab's EAM and SDN state in ``<lab dir>/world/`` are discarded or refused when they belong to another.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import pytest
from pyVim.connect import Disconnect

from agentvm.lab import world_state
from agentvm.lab.vcsim import LabError, Shape, Vcsim
from agentvm.lab.world import Lab
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.session import Session
from tests.support.lab_eam import World, config, eam_manager, green, vcenter, wait_until

SMALL = Shape(clusters=1, hosts=2)


def reported_instance_uuid(sim: Vcsim) -> str:
    info = sim.info
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn) as session:
        return str(session.content.about.instanceUuid)


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the world's identity: vCenter's about.instanceUuid ------------------------------------------------


@pytest.mark.lab
def test_a_simulator_reports_the_instance_uuid_it_was_given() -> None:
    given = str(uuid.uuid4())
    with Vcsim(SMALL, instance_uuid=given) as sim:
        assert sim.info.instance_uuid == given
        assert reported_instance_uuid(sim) == given


@pytest.mark.lab
def test_an_instance_uuid_that_is_no_uuid_is_refused_with_the_form_expected() -> None:
    with pytest.raises(LabError, match="--instance-uuid must be a UUID like") as err:
        Vcsim(SMALL, instance_uuid="not-a-uuid")
    assert err.value.exit_code == 2


@pytest.mark.lab
def test_every_lab_start_is_a_new_world_with_its_own_instance_uuid(tmp_path: Path) -> None:
    seen = []
    for _ in range(2):
        lab = Lab(SMALL, state_dir=tmp_path, netsync=False)
        info = lab.start()
        try:
            assert lab.world_dir == tmp_path / "world"
            assert world_state.recorded_world(lab.world_dir) == info.vcsim.instance_uuid
            seen.append(info.vcsim.instance_uuid)
        finally:
            lab.stop()
        assert not (tmp_path / "world").exists()  # the world's state ended with its vcsim
    assert len(set(seen)) == 2 and all(uuid.UUID(u) for u in seen)


# --- a state dir reused by hand ----------------------------------------------------------------------------


@pytest.mark.lab
def test_a_world_dir_copied_from_an_earlier_world_is_discarded_and_the_new_world_goes_green(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = tmp_path / "kept"
    lab = Lab(SMALL, state_dir=tmp_path / "lab", netsync=False)
    info = lab.start()
    si = vcenter(info)
    try:
        world = World(lab, info, si, eam_manager(info, si))
        agency = world.eam.CreateAgency(config(world), "enabled")
        wait_until("2 green agents", lambda: green(agency, 2))
        assert lab.world_dir is not None
        shutil.copytree(lab.world_dir, kept)  # what an operator keeps "to carry on tomorrow"
        old_world = info.vcsim.instance_uuid
    finally:
        Disconnect(si)
        lab.stop()
    shutil.copytree(kept, tmp_path / "lab" / "world")

    caplog.set_level(logging.INFO, logger="agentvm.lab")
    lab = Lab(SMALL, state_dir=tmp_path / "lab", netsync=False)
    info = lab.start()
    si = vcenter(info)
    try:
        discarded = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(discarded) == 1 and "eam-state.json" in discarded[0]
        assert old_world in discarded[0] and info.vcsim.instance_uuid in discarded[0]
        world = World(lab, info, si, eam_manager(info, si))
        assert world.eam.QueryAgency() == []
        agency = world.eam.CreateAgency(config(world), "enabled")
        wait_until("2 green agents in the new world", lambda: green(agency, 2))
        assert len(world.agent_vm_names()) == 2
    finally:
        Disconnect(si)
        lab.stop()


@pytest.mark.lab
def test_the_lab_eam_refuses_state_recorded_for_another_world(tmp_path: Path) -> None:
    lab = Lab(SMALL, state_dir=tmp_path, netsync=False)
    info = lab.start()
    try:
        other = str(uuid.uuid4())
        write(tmp_path / "world" / "world.json", json.dumps({"instanceUuid": other}))
        with pytest.raises(LabError) as err:
            lab.restart_eam()
        message = str(err.value)
        assert other in message and info.vcsim.instance_uuid in message
        assert "agentvm lab down; agentvm lab up" in message
    finally:
        lab.stop()


# --- world_state on its own (files only) -------------------------------------------------------------------


def test_claim_keeps_the_state_of_its_own_world(tmp_path: Path) -> None:
    world = str(uuid.uuid4())
    world_dir = world_state.claim(tmp_path, world)
    state = write(world_dir / "eam-state.json", "{}")
    assert world_state.claim(tmp_path, world.upper()) == world_dir
    assert state.read_text() == "{}"


def test_claim_discards_another_worlds_state_and_leaves_other_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    world_dir = world_state.claim(tmp_path, old)
    names = ["eam-state.json", "sdn-config-api.sqlite", "sdn-config-api.sqlite-wal", "vrouter-map.json"]
    for name in names:
        write(world_dir / name)
    notes = write(world_dir / "my-notes.txt")
    caplog.set_level(logging.WARNING, logger="agentvm.lab")
    assert world_state.claim(tmp_path, new) == world_dir
    assert sorted(p.name for p in world_dir.iterdir()) == ["my-notes.txt", "world.json"]
    assert notes.exists() and world_state.recorded_world(world_dir) == new
    (line,) = [r.getMessage() for r in caplog.records]
    assert old in line and new in line and all(name in line for name in names)


@pytest.mark.parametrize("marker", [None, "{not json", json.dumps({"other": 1})])
def test_claim_discards_state_that_names_no_world(tmp_path: Path, marker: str | None) -> None:
    if marker is not None:
        write(tmp_path / "world" / "world.json", marker)
    state = write(tmp_path / "world" / "eam-state.json")
    world_state.claim(tmp_path, str(uuid.uuid4()))
    assert not state.exists()


def test_claim_discards_state_an_older_lab_kept_in_the_lab_dir_itself(tmp_path: Path) -> None:
    old = [write(tmp_path / n) for n in ("eam-state.json", "sdn-config-api.sqlite", "vrouter-map.json")]
    keep = [write(tmp_path / n) for n in ("state.json", "runner.log", "vcsim.log")]
    world_state.claim(tmp_path, str(uuid.uuid4()))
    assert not any(p.exists() for p in old) and all(p.exists() for p in keep)


def test_require_refuses_another_world_and_a_dir_with_none(tmp_path: Path) -> None:
    world, other = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(LabError, match="none recorded"):
        world_state.require(tmp_path / "world", world)
    world_dir = world_state.claim(tmp_path, other)
    with pytest.raises(LabError, match=f"world {other}, but this vCenter is world {world}"):
        world_state.require(world_dir, world)
    world_state.require(world_dir, other.upper())  # the same world: no error


def test_an_empty_instance_uuid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="reported no instanceUuid"):
        world_state.claim(tmp_path, "")


def test_release_removes_the_worlds_state_and_nothing_else(tmp_path: Path) -> None:
    world_dir = world_state.claim(tmp_path, str(uuid.uuid4()))
    write(world_dir / "eam-state.json")
    world_state.release(world_dir)
    assert not world_dir.exists()
    world_dir = world_state.claim(tmp_path, str(uuid.uuid4()))
    notes = write(world_dir / "my-notes.txt")
    world_state.release(world_dir)
    assert [p.name for p in world_dir.iterdir()] == [notes.name]
    world_state.release(tmp_path / "never-was")  # idempotent
