"""The state that describes one lab world, kept with the identity of that world.

A lab world is one run of vcsim. govmomi 0.24.2 keeps its inventory in memory only, so every start is a new
world whose moids repeat those of the world before (``vm-42`` again, but another VM). State of an earlier
world read against a new one is wrong in the worst way: the lab's EAM takes the new world's VMs for its old
agents or reports them deleted (VmNotDeployed), and the SDN emulator keeps networks, VMs and addresses of
VMs that no longer exist. So the lab starts every world fresh: its state lives in ``<lab dir>/world/``
(the lab's EAM state, the SDN emulator's database, the vRouter map) next to ``world.json``, which names the
world by the ``about.instanceUuid`` its vcsim reports (``Lab`` gives each vcsim a new one).

``claim`` (called by ``Lab.start``) discards what another world left there, with a log line saying so;
``require`` (called by ``LabEam.start`` with the instanceUuid its own vCenter session reports) refuses to
load EAM state recorded for another world, so the two can never mix, even in a directory reused by hand.
``release`` (called by ``Lab.stop``) removes a world's state once its vcsim is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from agentvm.lab.vcsim import LabError

log = logging.getLogger(__name__)

WORLD_DIR = "world"
WORLD_FILE = "world.json"
EAM_STATE = "eam-state.json"
SDN_DATABASE = "sdn-config-api.sqlite"
VROUTER_MAP = "vrouter-map.json"
# what a world leaves in its directory (SQLite's journal files included); nothing else is ever removed
_STATE_FILES = (EAM_STATE, SDN_DATABASE, f"{SDN_DATABASE}-wal", f"{SDN_DATABASE}-shm", VROUTER_MAP)
_STATE_GLOBS = (f"{EAM_STATE}*.tmp", f"{WORLD_FILE}.tmp")  # a save cut off half-way


def recorded_world(world_dir: Path) -> str | None:
    """The instanceUuid ``world.json`` in ``world_dir`` names; None when it is missing or unreadable."""
    try:
        raw = json.loads((world_dir / WORLD_FILE).read_text(encoding="utf-8"))
        return str(raw["instanceUuid"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim(state_dir: Path, instance_uuid: str) -> Path:
    """Make ``<state_dir>/world`` hold the state of world ``instance_uuid`` only, and return it.

    State of another world (or of no recorded world) is removed, with a warning naming both worlds; files
    there that are not a world's state are left alone. State files an older lab kept in ``state_dir``
    itself are removed too. Raises LabError for an empty ``instance_uuid``, OSError when the directory
    cannot be written.
    """
    world = instance_uuid.lower()
    if not world:
        raise LabError("the simulator reported no instanceUuid: rebuild it with `agentvm lab build --force`")
    _discard(state_dir, "it predates per-world lab state")
    world_dir = state_dir / WORLD_DIR
    recorded = recorded_world(world_dir)
    if recorded != world:
        reason = f"it belongs to vCenter world {recorded}" if recorded else "it names no vCenter world"
        _discard(world_dir, f"{reason}, and this lab runs world {world}")
        world_dir.mkdir(parents=True, exist_ok=True)
        tmp = world_dir / f"{WORLD_FILE}.tmp"
        tmp.write_text(
            json.dumps({"instanceUuid": world, "createdAt": datetime.now(UTC).isoformat()}, indent=1) + "\n",
            encoding="utf-8",
        )
        os.replace(tmp, world_dir / WORLD_FILE)
    log.info("lab world %s: its state is in %s", world, world_dir)
    return world_dir


def require(world_dir: Path, instance_uuid: str) -> None:
    """Raise LabError unless ``world_dir`` records world ``instance_uuid`` (see ``claim``)."""
    recorded = recorded_world(world_dir)
    if recorded != instance_uuid.lower():
        raise LabError(
            f"{world_dir} holds the state of vCenter world {recorded or '(none recorded)'}, but this vCenter "
            f"is world {instance_uuid.lower()}: refusing to mix them; stop the lab and start it again "
            "(`agentvm lab down; agentvm lab up`), which starts that state fresh"
        )


def release(world_dir: Path) -> None:
    """Remove a world's state (its vcsim is gone, so nothing can use it again); idempotent."""
    _remove_state(world_dir)
    with contextlib.suppress(FileNotFoundError):
        (world_dir / WORLD_FILE).unlink()
    with contextlib.suppress(OSError):  # not empty: someone else's files, left alone
        world_dir.rmdir()


def _discard(directory: Path, reason: str) -> None:
    found = _state_files(directory)
    if found:
        log.warning(
            "discarding the lab state in %s (%s): %s", directory, reason, ", ".join(p.name for p in found)
        )
        _remove_state(directory)


def _state_files(directory: Path) -> list[Path]:
    found = [directory / name for name in _STATE_FILES if (directory / name).exists()]
    for pattern in _STATE_GLOBS:
        found.extend(sorted(directory.glob(pattern)))
    return found


def _remove_state(directory: Path) -> None:
    for path in _state_files(directory):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
