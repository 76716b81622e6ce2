"""``agentvm`` as a child process, as a user runs ``agentvm lab up | down | status | env``.

The fixture is ``lab_env`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def agentvm(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lab_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of ``agentvm lab`` commands with a lab dir in ``tmp_path``; ``lab down`` at the end."""
    environment = dict(os.environ, AGENTVM_LAB_DIR=str(tmp_path / "lab"), COLUMNS="200")
    yield environment
    agentvm("lab", "down", env=environment)  # whatever a test left running
