"""``agentvm inventory`` against the lab, as a user runs it (connection from AGENTVM_* variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from agentvm.lab.vcsim import VcsimInfo

pytestmark = pytest.mark.lab


def run(info: VcsimInfo, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        AGENTVM_URL=info.url,
        AGENTVM_USERNAME=info.username,
        AGENTVM_PASSWORD=info.password,
        AGENTVM_THUMBPRINT=info.thumbprint,
        COLUMNS="200",
    )
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "inventory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_inventory_json_lists_clusters_and_hosts(shared_vcsim: VcsimInfo) -> None:
    result = run(shared_vcsim, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["clusters"] == ["/DC0/host/DC0_C0", "/DC0/host/DC0_C1"]
    assert len(data["hosts"]) == 6
    assert data["hosts"][0]["path"] == "/DC0/host/DC0_C0/DC0_C0_H0"
    assert shared_vcsim.password not in result.stdout + result.stderr


def test_inventory_table(shared_vcsim: VcsimInfo) -> None:
    result = run(shared_vcsim)
    assert result.returncode == 0, result.stderr
    assert "DC0_C1_H2" in result.stdout and "6 host(s)" in result.stdout


def test_wrong_password_is_one_line_and_non_zero(shared_vcsim: VcsimInfo) -> None:
    result = run(shared_vcsim, AGENTVM_PASSWORD="Xq9-not-it")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("agentvm: ")
    assert "Xq9-not-it" not in result.stderr


def test_wrong_thumbprint_is_refused(shared_vcsim: VcsimInfo) -> None:
    result = run(shared_vcsim, AGENTVM_THUMBPRINT="AB:" * 19 + "AB")
    assert result.returncode != 0
    assert "thumbprint" in result.stderr.lower()
    assert shared_vcsim.password not in result.stderr


def test_missing_password_without_a_terminal_names_the_fix(shared_vcsim: VcsimInfo) -> None:
    result = run(shared_vcsim, AGENTVM_PASSWORD="")
    assert result.returncode == 2
    assert "AGENTVM_PASSWORD" in result.stderr


def test_inventory_lists_hosts_in_natural_order(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    """H2 before H10, as a person counts (vSphere's own lists do the same)."""
    info = vcsim_factory(clusters=1, hosts=11)
    result = run(info, "--json")
    assert result.returncode == 0, result.stderr
    names = [h["path"].rsplit("/", 1)[-1] for h in json.loads(result.stdout)["hosts"]]
    assert names == [f"DC0_C0_H{i}" for i in range(11)]
