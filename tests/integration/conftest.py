"""Fixtures shared by several integration test modules: each world is built by a function of tests/support.

A module names the world it uses (``controller_world``, ...) or gives it a shorter local name with a
one-line fixture of its own (``world``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvm.lab.vcsim import VcsimInfo
from tests.support import controller_lab, direct_lab


@pytest.fixture
def controller_world(tmp_path: Path) -> Iterator[controller_lab.World]:
    """A fresh lab (vcsim, the lab's EAM, the package server), a session to check it, a one-cluster spec."""
    yield from controller_lab.controller_world(tmp_path)


@pytest.fixture
def direct(vcsim: VcsimInfo, tmp_path: Path) -> Iterator[direct_lab.Direct]:
    """A fresh vcsim without EAM and the package server, for controllers with the direct backend."""
    yield from direct_lab.direct_world(vcsim, tmp_path)
