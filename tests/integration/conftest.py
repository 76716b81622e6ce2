"""Fixtures shared by several integration test modules: each world is built by a function of tests/support.

A module names the world it uses (``controller_world``, ...) or gives it a shorter local name with a
one-line fixture of its own (``world``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentvm.lab.vcsim import VcsimInfo
from tests.support import cli_lab, controller_lab, direct_lab, lab_cli, lab_eam, netsync_lab
from tests.support.eam_world import EamWorld, running_eam_world


@pytest.fixture
def controller_world(tmp_path: Path) -> Iterator[controller_lab.World]:
    """A fresh lab (vcsim, the lab's EAM, the package server), a session to check it, a one-cluster spec."""
    yield from controller_lab.controller_world(tmp_path)


@pytest.fixture
def direct(vcsim: VcsimInfo, tmp_path: Path) -> Iterator[direct_lab.Direct]:
    """A fresh vcsim without EAM and the package server, for controllers with the direct backend."""
    yield from direct_lab.direct_world(vcsim, tmp_path)


@pytest.fixture
def cli_world(tmp_path: Path) -> Iterator[cli_lab.World]:
    """A fresh lab for the CLI (run in-process), a session to check it, this test's folder for specs."""
    yield from cli_lab.cli_world(tmp_path)


@pytest.fixture(scope="module")
def cli_world_per_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cli_lab.World]:
    """One lab for a whole module, for tests that leave it as they found it (each re-checks that)."""
    yield from cli_lab.cli_world(tmp_path_factory.mktemp("validation"))


@pytest.fixture
def netsync_world(vcsim: VcsimInfo, tmp_path: Path) -> Iterator[tuple[netsync_lab.VCenter, netsync_lab.Sdn]]:
    """A fresh vcsim as an admin sees it, the config-API emulator and one vRouter agent emulator per host."""
    yield from netsync_lab.netsync_world(vcsim, tmp_path)


@pytest.fixture
def lab_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment for ``agentvm lab ...`` child processes, with this test's own lab dir."""
    yield from lab_cli.lab_env(tmp_path)


@pytest.fixture
def eam_world(vcsim_factory: Callable[..., VcsimInfo]) -> Iterator[EamWorld]:
    """A fresh vcsim whose /eam/sdk is the EAM emulator over an in-memory AgentManager; a session on it."""
    with running_eam_world(vcsim_factory) as world:
        yield world


@pytest.fixture
def lab_eam_world() -> Iterator[lab_eam.World]:
    """A fresh lab, seen through pyVmomi's own vCenter and EAM clients."""
    yield from lab_eam.lab_eam_world()
