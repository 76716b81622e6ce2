"""The unit tests run on a machine without Go: only a test marked ``lab`` builds the simulator.

Runs pytest in a subprocess where Go cannot be found (``$AGENTVM_GO`` names a missing file, ``PATH`` holds
only the virtualenv) and the simulator's binary cache is empty: an unmarked test passes, a ``lab`` test is
stopped before it starts by the build's message saying how to install Go. The whole unit suite under the
same conditions: ``AGENTVM_GO=/nonexistent AGENTVM_CACHE_DIR=$(mktemp -d) pytest -m "not lab"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

UNIT = """
def test_pure() -> None:
    assert sorted([2, 1]) == [1, 2]
"""

LAB = """
import pytest

@pytest.mark.lab
def test_needs_the_simulator() -> None:
    pass
"""

UNMARKED = """
def test_starts_the_simulator_unmarked(vcsim) -> None:
    pass
"""


def test_unmarked_tests_never_build_the_simulator_and_lab_tests_say_go_is_missing(tmp_path: Path) -> None:
    # The two tests get the project's conftest (its fixtures, as every test does) and its pytest settings.
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (tmp_path / "test_unit.py").write_text(UNIT)
    (tmp_path / "test_lab.py").write_text(LAB)
    (tmp_path / "test_unmarked.py").write_text(UNMARKED)
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),
        "AGENTVM_GO": str(tmp_path / "no-go" / "go"),
        "AGENTVM_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    assert shutil.which("go", path=env["PATH"]) is None
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider"]
    command += ["-n", "0", "-q", "-rA"]

    def run(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, str(tmp_path / name)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=99,
        )

    unit, lab, unmarked = run("test_unit.py"), run("test_lab.py"), run("test_unmarked.py")
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "1 passed" in unit.stdout
    assert lab.returncode == 1, lab.stdout + lab.stderr
    assert "1 error" in lab.stdout
    assert "the Go toolchain is missing: run scripts/setup, or `apt-get install golang-go`" in lab.stdout
    assert unmarked.returncode == 1, unmarked.stdout + unmarked.stderr
    assert "starts the simulator: mark it @pytest.mark.lab" in unmarked.stdout
    assert not any(cache.glob("agentvm-vcsim-*"))  # nothing was built
