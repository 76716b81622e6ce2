"""``agentvm lab up | down | status | env`` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from agentvm.lab.runner import pid_alive
from tests.support.lab_cli import agentvm
from tests.support.terminal import tmux_screen

pytestmark = pytest.mark.lab


@pytest.fixture
def env(lab_env: dict[str, str]) -> dict[str, str]:
    """The environment of ``agentvm lab`` commands (tests/integration/conftest.py)."""
    return lab_env


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_env_down_leaves_nothing_listening(env: dict[str, str]) -> None:
    up = agentvm("lab", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert "lab started" in up.stdout

    state = json.loads(agentvm("lab", "status", "--json", env=env).stdout)
    assert state["running"] is True
    variables = json.loads(agentvm("lab", "env", "--json", env=env).stdout)["variables"]
    assert set(variables) == {
        "AGENTVM_URL",
        "AGENTVM_USERNAME",
        "AGENTVM_PASSWORD",
        "AGENTVM_THUMBPRINT",
        "AGENTVM_LAB_OVF_URL",
        "AGENTVM_SDN_URL",  # netsync
        "AGENTVM_VROUTER_MAP",
    }
    assert variables["AGENTVM_URL"].startswith("https://127.0.0.1:")
    exports = agentvm("lab", "env", env=env).stdout.splitlines()
    assert sorted(line.split("=", 1)[0] for line in exports) == sorted(f"export {k}" for k in variables)

    vc_port = int(variables["AGENTVM_URL"].split(":")[2].split("/")[0])
    pkg_port = int(variables["AGENTVM_LAB_OVF_URL"].rsplit(":", 1)[1])
    assert listening(vc_port) and listening(pkg_port)
    pids = [p["pid"] for p in state["processes"].values()]

    again = agentvm("lab", "up", env=env)
    assert again.returncode == 0 and "already running" in again.stdout

    # at 80x24 in a real terminal every address is shown whole (folded, never cut with "…")
    screen = tmux_screen([sys.executable, "-m", "agentvm.cli.main", "lab", "status"], env)
    joined = "".join(line.strip(" │┃|") for line in screen.splitlines())
    assert "…" not in screen, screen
    for address in (variables["AGENTVM_URL"], variables["AGENTVM_LAB_OVF_URL"]):
        assert address in joined.replace(" ", ""), (address, screen)

    down = agentvm("lab", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not listening(vc_port) and not listening(pkg_port)
    assert not any(pid_alive(pid) for pid in pids)  # gone, or a zombie waiting for init to reap it
    assert not (Path(env["AGENTVM_LAB_DIR"]) / "state.json").exists()


def test_the_package_server_serves_the_examples(env: dict[str, str]) -> None:
    import urllib.request

    assert agentvm("lab", "up", env=env).returncode == 0
    base = json.loads(agentvm("lab", "env", "--json", env=env).stdout)["variables"]["AGENTVM_LAB_OVF_URL"]
    with urllib.request.urlopen(f"{base}/README.md", timeout=10) as resp:
        assert b"lab" in resp.read()


def test_down_with_nothing_running_is_harmless(env: dict[str, str]) -> None:
    down = agentvm("lab", "down", env=env)
    assert down.returncode == 0
    assert "nothing to stop" in down.stdout


def test_status_and_env_with_nothing_running(env: dict[str, str]) -> None:
    status = agentvm("lab", "status", env=env)
    assert status.returncode == 2 and "agentvm lab up" in status.stdout  # no lab: bad input
    envs = agentvm("lab", "env", env=env)
    assert envs.returncode == 2 and "agentvm lab up" in envs.stderr


def test_negative_counts_are_refused_with_the_fix(env: dict[str, str]) -> None:
    result = agentvm("lab", "up", "--hosts", "-1", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "agentvm: --hosts must be 0 or more (got -1)"
    assert not (Path(env["AGENTVM_LAB_DIR"]) / "state.json").exists()


@pytest.mark.parametrize("flag", ["--deploy-per-cluster", "--deploy-total"])
def test_eam_bounds_below_one_are_refused_with_the_fix(env: dict[str, str], flag: str) -> None:
    result = agentvm("lab", "up", flag, "0", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"agentvm: {flag} must be 1 or more (got 0)"
    assert not (Path(env["AGENTVM_LAB_DIR"]) / "state.json").exists()


def test_a_port_in_use_is_named(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = agentvm("lab", "up", "--port", str(port), env=env)
    assert result.returncode == 3
    assert f"127.0.0.1:{port}" in result.stderr
    assert "choose another port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_go_toolchain_says_how_to_install_it(env: dict[str, str], tmp_path: Path) -> None:
    bare = dict(
        env,
        PATH=str(tmp_path / "empty-bin"),
        AGENTVM_CACHE_DIR=str(tmp_path / "cache"),
        AGENTVM_GO="/nonexistent/go",
    )
    result = agentvm("lab", "up", env=bare)
    assert result.returncode == 5
    assert "golang-go" in result.stderr and "scripts/setup" in result.stderr


def test_missing_govmomi_sources_say_which_package_to_install(env: dict[str, str], tmp_path: Path) -> None:
    bare = dict(env, AGENTVM_CACHE_DIR=str(tmp_path / "cache"), AGENTVM_GOPATH=str(tmp_path / "gocode"))
    result = agentvm("lab", "up", env=bare)
    assert result.returncode == 5
    assert "golang-github-vmware-govmomi-dev" in result.stderr
