"""``agentvm run --listen``: the API's address is bound before any login.

A busy port, or an address the machine does not have, is one line and exit 2 before ``run`` contacts vCenter:
the tests point the spec at a vCenter nobody listens on, so a ``run`` that logged in first would fail on that
(exit 3, "cannot reach") instead. ``--listen [::1]:0`` serves over IPv6 loopback on the lab.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import agentvm
from tests.support.controller_lab import ONE_CLUSTER, Process, World, spec_text, wait_for

NOBODY = "https://127.0.0.1:1/sdk"  # port 1: nothing listens there


def run_offline(tmp_path: Path, listen: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``agentvm run --listen LISTEN`` on a spec whose vCenter nobody serves."""
    spec = tmp_path / "contrail.yaml"
    spec.write_text(spec_text(**ONE_CLUSTER))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(agentvm.__file__).resolve().parents[1]),
        "AGENTVM_STATE_DIR": os.environ["AGENTVM_STATE_DIR"],
        "AGENTVM_URL": NOBODY,
        "AGENTVM_USERNAME": "administrator@vsphere.local",
        "AGENTVM_PASSWORD": "not-a-real-password",
        "AGENTVM_THUMBPRINT": ":".join(["AB"] * 20),
        "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:1",
    }
    args = ["run", "-f", str(spec), "--listen", listen, "--call-timeout", "2", "--lease-ttl", "2", *extra]
    return subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_busy_port_is_one_line_and_exit_2_before_any_login(tmp_path: Path, host: str) -> None:
    if host == "::1" and not has_ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback: run this test where ::1 exists")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as taken:
        port = taken.getsockname()[1]
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        result = run_offline(tmp_path, listen)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"--listen {listen}" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in result.stderr and "127.0.0.1:1" not in result.stderr  # vCenter never tried


def test_with_a_free_port_the_same_run_goes_on_to_vcenter(tmp_path: Path) -> None:
    """The control of the test above: the spec's vCenter is what fails once the port is free."""
    result = run_offline(tmp_path, "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    assert "--listen" not in result.stderr


def has_ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


def test_an_ipv6_address_this_machine_lacks_is_one_line(tmp_path: Path) -> None:
    # 2001:db8::/32 is the documentation prefix: never an address of this machine
    result = run_offline(tmp_path, "[2001:db8::1]:0", "--allow-remote")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "--listen [2001:db8::1]:0" in line and "no such IPv6 address" in line
    assert "Traceback" not in result.stderr


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


@pytest.mark.lab
def test_run_serves_on_ipv6_loopback(world: World) -> None:
    if not has_ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback: run this test where ::1 exists")
    process = Process(world, "--listen", "[::1]:0")
    try:
        assert process.url.startswith("http://[::1]:")
        wait_for(lambda: httpx.get(f"{process.url}/readyz").status_code == 200, "readyz over IPv6", 90)
        get = httpx.get(f"{process.url}/api/v1/status")
        head = httpx.head(f"{process.url}/api/v1/status")
        assert get.status_code == head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    finally:
        process.kill()
