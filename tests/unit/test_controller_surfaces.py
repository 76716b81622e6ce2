"""The controller's edges that need no lab: --listen, the API token, structured log lines, the watch's
classification of vCenter changes."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from types import MappingProxyType

import pytest

from agentvm.cli.run import parse_listen, read_token
from agentvm.controller.logs import JsonFormatter, action_log, configure, redact
from agentvm.controller.watch import InventoryWatch
from agentvm.model.agency import MoRef
from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.watch import WatchChange, WatchChangeKind


def test_listen_defaults_to_loopback_and_refuses_other_hosts_without_allow_remote() -> None:
    assert parse_listen("127.0.0.1:0", allow_remote=False) == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080", allow_remote=False) == ("::1", 8080)
    with pytest.raises(ConfigurationError, match="--allow-remote"):
        parse_listen("10.0.0.5:8080", allow_remote=False)
    assert parse_listen("10.0.0.5:8080", allow_remote=True) == ("10.0.0.5", 8080)
    for bad in ("8080", "127.0.0.1:http", "127.0.0.1:70000", "example.com:80"):
        with pytest.raises(ConfigurationError):
            parse_listen(bad, allow_remote=True)


def test_token_comes_from_a_file_or_the_environment_and_never_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTVM_API_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("AGENTVM_API_TOKEN", "from-env-123")
    token = read_token(None)
    assert token is not None and "from-env-123" not in repr(token)
    path = tmp_path / "token"
    path.write_text("from-file-456\n")
    token = read_token(path)
    assert token is not None and token.check("Bearer from-file-456").value == "ok"
    path.write_text("two words\n")
    with pytest.raises(ConfigurationError, match="--token-file") as raised:
        read_token(path)
    assert "two words" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_an_action_line_in_json_carries_host_path_and_correlation_id_and_no_secret() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure("json", stream=stream)
    try:
        action_log(
            "resolved 1 issue(s) with Authorization: Bearer s3cr3t-token",
            action="resolve",
            correlation_id="agentvm-run-abc123-7",
            agency="contrail",
            host="/DC0/host/DC0_C0/DC0_C0_H0",
            host_moid="host-23",
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["host"] == "/DC0/host/DC0_C0/DC0_C0_H0"
    assert record["correlation_id"] == "agentvm-run-abc123-7"
    assert record["action"] == "resolve" and record["level"] == "info"
    assert "s3cr3t-token" not in stream.getvalue()
    assert redact('vmware_soap_session="52a1b2c3d4"; password=hunter2') == (
        'vmware_soap_session="<hidden>"; password=<hidden>'
    )
    with pytest.raises(ValueError, match="text or json"):
        configure("xml")
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)


def _change(ref: MoRef, kind: WatchChangeKind, **props: object) -> WatchChange:
    return WatchChange(ref, kind, MappingProxyType(dict(props)))


def test_the_watch_tells_topology_from_host_conditions_from_vm_power() -> None:
    watch = InventoryWatch(session=None, on_batch=lambda b: None, on_error=lambda e: None)  # type: ignore[arg-type]
    host, vm, cluster = (
        MoRef("HostSystem", "host-1"),
        MoRef("VirtualMachine", "vm-1"),
        MoRef("ClusterComputeResource", "domain-c1"),
    )
    first = watch._classify([_change(host, WatchChangeKind.ENTER, parent=cluster)], 1.0, True)
    assert first.topology
    batch = watch._classify(
        [_change(vm, WatchChangeKind.MODIFY, **{"runtime.powerState": "poweredOff"})], 2.0, False
    )
    assert not batch.topology and not batch.hosts and batch.vms == (vm,)
    batch = watch._classify(
        [_change(host, WatchChangeKind.MODIFY, **{"runtime.inMaintenanceMode": True})], 3.0, False
    )
    assert batch.hosts and not batch.topology
    assert watch.conditions().maintenance == frozenset({host})
    batch = watch._classify(
        [_change(host, WatchChangeKind.MODIFY, **{"runtime.connectionState": "disconnected"})], 4, False
    )
    assert host in watch.conditions().unreachable
    assert watch._classify([_change(cluster, WatchChangeKind.MODIFY, host=(host,))], 5.0, False).topology
    assert watch._classify([_change(host, WatchChangeKind.LEAVE)], 6.0, False).topology
    assert watch.conditions().maintenance == frozenset()
