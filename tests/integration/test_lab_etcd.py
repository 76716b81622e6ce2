"""The lab's etcd: ``agentvm.lab.etcd`` and ``agentvm lab up --etcd`` (real /usr/bin/etcd, real ports)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from agentvm.controller.leadership import Coordinator, SeatKey, parse_coordination
from agentvm.etcd.client import EtcdClient, EtcdError
from agentvm.lab.etcd import Etcd
from agentvm.lab.runner import pid_alive
from agentvm.lab.vcsim import LabError
from tests.support.coordination import until
from tests.support.lab_cli import agentvm


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_without_etcd_installed_the_message_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTVM_ETCD", str(tmp_path / "no-etcd-here"))
    with pytest.raises(LabError) as caught:
        Etcd(tmp_path / "etcd")
    assert "etcd-server" in str(caught.value) and "scripts/setup" in str(caught.value)
    assert caught.value.exit_code == 2
    assert not (tmp_path / "etcd").exists()


def test_lab_up_etcd_without_etcd_installed_fails_before_starting_anything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AGENTVM_LAB_DIR": str(tmp_path / "lab"),
        "AGENTVM_ETCD": str(tmp_path / "no-etcd-here"),
    }
    up = agentvm("lab", "up", "--etcd", env=env)
    assert up.returncode == 2, up.stdout + up.stderr
    assert "etcd-server" in up.stderr + up.stdout
    assert not (tmp_path / "lab" / "state.json").exists()


def test_pause_resume_and_restart_keep_the_data_and_the_ports(etcd: Etcd) -> None:
    client = EtcdClient(parse_coordination(etcd.url), timeout=1.0)
    grant = client.grant(60)
    client.put("/t/key", b"value", grant.lease)
    etcd.pause()
    try:
        with pytest.raises(EtcdError) as caught:
            client.range_prefix("/t/")
        assert str(etcd.client_port) in str(caught.value)
    finally:
        etcd.resume()
    assert [e.value for e in client.range_prefix("/t/")[1]] == [b"value"]
    etcd.restart()
    # the lease and the key attached to it survive a restart
    assert [e.lease for e in client.range_prefix("/t/")[1]] == [grant.lease]
    assert client.keepalive(grant.lease) == 60
    etcd.kill()
    assert not listening(etcd.client_port)


@pytest.mark.lab
def test_lab_up_etcd_exports_the_coordination_and_down_stops_it(lab_env: dict[str, str]) -> None:
    up = agentvm("lab", "up", "--etcd", "--hosts=1", "--clusters=1", env=lab_env)
    assert up.returncode == 0, up.stderr
    assert "etcd etcd://127.0.0.1:" in up.stdout
    variables = json.loads(agentvm("lab", "env", "--json", env=lab_env).stdout)["variables"]
    url = variables["AGENTVM_COORDINATION"]
    port = parse_coordination(url)[0].port
    assert f"export AGENTVM_COORDINATION={url}" in agentvm("lab", "env", env=lab_env).stdout
    state = json.loads(agentvm("lab", "status", "--json", env=lab_env).stdout)
    assert state["processes"]["etcd"]["running"] is True
    pid = state["processes"]["etcd"]["pid"]
    assert (Path(lab_env["AGENTVM_LAB_DIR"]) / "etcd").is_dir()

    replica = Coordinator(parse_coordination(url), ttl=2).start()
    try:
        seat = replica.seat(SeatKey(state["world"], "contrail"))
        until(seat.valid, "a replica on the lab's etcd to lead")
    finally:
        replica.stop()

    without = agentvm("lab", "up", "--etcd", "--hosts=1", "--clusters=1", env=lab_env)
    assert without.returncode == 0 and "already running" in without.stdout

    down = agentvm("lab", "down", env=lab_env)
    assert down.returncode == 0, down.stderr
    assert not listening(port) and not pid_alive(pid)
    assert not (Path(lab_env["AGENTVM_LAB_DIR"]) / "etcd").exists()


@pytest.mark.lab
def test_lab_up_etcd_does_not_reuse_a_lab_without_it(lab_env: dict[str, str]) -> None:
    assert agentvm("lab", "up", "--hosts=1", "--clusters=1", env=lab_env).returncode == 0
    assert "AGENTVM_COORDINATION" not in agentvm("lab", "env", env=lab_env).stdout
    again = agentvm("lab", "up", "--etcd", "--hosts=1", "--clusters=1", env=lab_env)
    assert again.returncode == 1
    assert "without etcd" in again.stderr + again.stdout and "lab down" in again.stderr + again.stdout
