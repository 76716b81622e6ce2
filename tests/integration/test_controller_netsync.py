"""``agentvm run --netsync`` on the lab: the controller keeps the agents and, alongside, the SDN in step.

``agentvm run`` runs as a process (JSON logs on stderr) with the lab's environment, which names the SDN
config-API emulator (``AGENTVM_SDN_URL``) and the vRouter-agent emulators (``AGENTVM_VROUTER_MAP``). A DV
port group with an IP pool and a VM with NICs on it are made through SOAP on vcsim; the test then looks
at the config-API emulator, the host's vRouter-agent emulator, and the controller's own API.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from typing import Any

import httpx
import pytest

from agentvm.lab.world import Lab
from agentvm.model.agency import PowerState
from agentvm.model.network import SdnVirtualNetwork, SdnVmi
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.controller_lab import Process, World, wait_for
from tests.support.netsync_lab import VCenter

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


def ports_of(lab: Lab, host: str, vm: str) -> dict[str, dict[str, Any]]:
    """The ports of ``vm`` on ``host``'s vRouter-agent emulator, by id."""
    return {k: p for k, p in lab.vrouters[host].ports().items() if p["display-name"] == vm}


def agents_green(process: Process) -> bool:
    response = httpx.get(f"{process.url}/api/v1/status")
    if response.status_code != 200:
        return False
    agencies = response.json()["agencies"]
    return bool(agencies) and all(a["status"] == "green" for a in agencies)


def test_run_with_netsync_mirrors_a_vm_and_its_power_while_the_agents_stay_healed(world: World) -> None:
    vc = VCenter(world.info.vcsim)
    api = ConfigApiClient(world.info.sdn_url)
    process = Process(world, "--netsync")
    try:
        wait_for(lambda: agents_green(process), "the agents green", 120)
        host = vc.host_ids()[0]
        pg = vc.port_group("pg-run", 300, ("10.30.0.0", "10.30.0.1", "10.30.0.10#20"))
        vm = vc.vm("run-1", pg, host=0)
        vc.run(vm.PowerOnVM_Task(), "power on")

        # the network, the interfaces and the ports on that host's vRouter agent, enabled
        wait_for(
            lambda: (
                len(ports_of(world.lab, host, "run-1")) == 2
                and {p["link-state"] for p in ports_of(world.lab, host, "run-1").values()} == {1}
            ),
            "run-1's two ports enabled on its host's vRouter agent",
            30,
        )
        (vn,) = [v for v in api.list(SdnVirtualNetwork) if v.fq_name[-1] == "pg-run"]
        vmis = [v for v in api.list(SdnVmi) if v.display_name.startswith("run-1 ")]
        assert len(vmis) == 2 and {v.vn_uuid for v in vmis} == {vn.uuid}
        assert set(ports_of(world.lab, host, "run-1")) == {v.uuid for v in vmis}
        assert all(agent.ports() == {} for h, agent in world.lab.vrouters.items() if h != host)

        # powered off: its ports disabled, not removed
        vc.run(vm.PowerOffVM_Task(), "power off")
        wait_for(
            lambda: {p["link-state"] for p in ports_of(world.lab, host, "run-1").values()} == {0},
            "run-1's ports disabled",
            30,
        )
        assert len(ports_of(world.lab, host, "run-1")) == 2

        # meanwhile the agent flow goes on: an agent VM powered off is powered on again
        victim = world.agent_vms()[0]
        ensure_powered_off(world.session, victim.moref)
        wait_for(
            lambda: (
                next(v for v in world.agent_vms() if v.moref == victim.moref).power_state
                is PowerState.POWERED_ON
            ),
            "the controller to power the agent VM on again",
            90,
        )
        wait_for(lambda: agents_green(process), "the agents green again", 60)

        # the sync shows in the metrics; the switch's uplink port group is no network and no problem
        def synced_metrics() -> str | None:
            text = httpx.get(f"{process.url}/metrics").text
            return text if 'agentvm_netsync_syncs_total{kind="incremental"}' in text else None

        metrics = wait_for(synced_metrics, "the netsync metrics", 30)
        assert 'agentvm_netsync_syncs_total{kind="full"} 1' in metrics
        assert "agentvm_netsync_batch_seconds_count" in metrics
        events = httpx.get(f"{process.url}/api/v1/events").json()
        netsync = [e for e in events["events"] if e["type"] == "netsync"]
        assert not [e for e in netsync if "DVUplinks" in e["message"]], netsync
        assert not [v for v in api.list(SdnVirtualNetwork) if "DVUplinks" in v.fq_name[-1]]
        assert not [e for e in netsync if e["level"] == "error"], netsync

        # a vRouter agent down: that VM's ports fail (a warning, retried), the rest of its sync goes on
        other = vc.host_ids()[1]
        world.lab.vrouters[other].stop()
        vc.run(vc.vm("run-2", pg, host=1).PowerOnVM_Task(), "power on")

        def run2_interfaces() -> list[str] | None:
            # a VM's interfaces are written one at a time, each followed by its port on the host's agent
            # (down here): wait for both, not for the first
            uuids = [v.uuid for v in api.list(SdnVmi) if v.display_name.startswith("run-2 ")]
            return uuids if len(uuids) >= 2 else None

        run2 = wait_for(run2_interfaces, "both run-2 interfaces in the SDN controller, agent down", 30)
        assert len(run2) == 2

        def port_failures() -> list[dict[str, Any]]:
            events = httpx.get(f"{process.url}/api/v1/events").json()["events"]
            return [
                e
                for e in events
                if e["type"] == "netsync" and (e.get("data") or {}).get("key") in {f"port:{u}" for u in run2}
            ]

        wait_for(lambda: len(port_failures()) >= 2, "an event for each of run-2's ports not added", 30)
        failed = port_failures()
        assert all(other in e["message"] for e in failed), failed
        assert {e["level"] for e in failed} == {"warning"}, failed
        assert agents_green(process)

        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(15) == 0
        process.wait_line(lambda r: r.get("action") == "exit", 5)
    finally:
        process.kill()
        api.close()
        vc.session.logout()


class SseCapture:
    """Everything the controller's event stream sends, from event 1 on (``Last-Event-ID: 0``), read on a
    thread until ``close()``."""

    def __init__(self, url: str) -> None:
        self.text: list[str] = []
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._stream = self._client.stream(
            "GET", f"{url}/api/v1/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "0"}
        )
        response = self._stream.__enter__()
        assert response.status_code == 200
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: httpx.Response) -> None:
        with contextlib.suppress(httpx.HTTPError):
            for line in response.iter_lines():
                self.text.append(line)

    def close(self) -> str:
        with contextlib.suppress(httpx.HTTPError):
            self._stream.__exit__(None, None, None)
        self._client.close()
        self._thread.join(5)
        return "\n".join(self.text)


def session_keys(vc: VCenter) -> set[str]:
    """The keys of every session vCenter holds now (``SessionManager.sessionList``)."""
    return {str(s.key) for s in vc.session.content.sessionManager.sessionList or ()}


def test_a_session_expiry_shows_no_session_key_password_or_token_and_the_sync_goes_on(world: World) -> None:
    vc = VCenter(world.info.vcsim)
    before = session_keys(vc)  # the test's own and the lab's: left alone
    process = Process(world, "--netsync")
    sse = SseCapture(process.url)
    theirs: set[str] = set()
    try:
        wait_for(lambda: agents_green(process), "the agents green", 120)
        host = vc.host_ids()[0]
        pg = vc.port_group("pg-exp", 310, ("10.31.0.0", "10.31.0.1", "10.31.0.10#20"))
        vc.run(vc.vm("exp-1", pg, host=0).PowerOnVM_Task(), "power on")
        wait_for(lambda: len(ports_of(world.lab, host, "exp-1")) == 2, "exp-1's ports", 30)

        # every session the controller opened expires at once, as after vCenter's idle timeout
        theirs = session_keys(vc) - before
        assert len(theirs) >= 2, theirs  # the controller's and its network sync's
        vc.session.content.sessionManager.TerminateSession(sessionId=sorted(theirs))

        # it logs in again and goes on: a VM made after the expiry is mirrored, the agents stay green
        vc.run(vc.vm("exp-2", pg, host=0).PowerOnVM_Task(), "power on")
        wait_for(
            lambda: (
                len(ports_of(world.lab, host, "exp-2")) == 2
                and {p["link-state"] for p in ports_of(world.lab, host, "exp-2").values()} == {1}
            ),
            "exp-2's ports enabled after the session expiry",
            60,
        )
        wait_for(lambda: agents_green(process), "the agents green after the expiry", 60)
        assert session_keys(vc) - before - theirs, "the controller logged in again"
        recorded = httpx.get(f"{process.url}/api/v1/events").json()["events"]
    finally:
        streamed = sse.close()
        process.kill()
        vc.session.logout()
    texts = {
        "/api/v1/events": json.dumps(recorded),
        "the SSE stream": streamed,
        "the logs": "".join(process.raw),
    }
    secrets = {"the password": world.info.vcsim.password, "the API token": "test-token-123"}
    secrets.update({f"session key {k[:8]}...": k for k in theirs})
    for where, text in texts.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} appears in {where}"
    streamed_ids = {int(line[4:]) for line in streamed.splitlines() if line.startswith("id: ")}
    assert recorded and {e["id"] for e in recorded} <= streamed_ids  # both scans saw every event
    # an expiry is a routine re-login, not an error naming an internal fault
    assert not [e for e in recorded if e["level"] == "error" or "Found" in e["message"]], recorded


def full_syncs(process: Process) -> int:
    """``agentvm_netsync_syncs_total{kind="full"}`` as the controller's metrics say now (0: none yet)."""
    for line in httpx.get(f"{process.url}/metrics").text.splitlines():
        if line.startswith('agentvm_netsync_syncs_total{kind="full"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_post_resync_makes_the_network_sync_resync_too(world: World) -> None:
    process = Process(world, "--netsync")  # the network resync an hour away, as by default
    try:
        wait_for(lambda: agents_green(process) and full_syncs(process) == 1, "the first network sync", 120)
        headers = {"Authorization": "Bearer test-token-123"}
        assert httpx.post(f"{process.url}/api/v1/resync", headers=headers).status_code == 202
        wait_for(lambda: full_syncs(process) == 2, "a second full network sync after POST /resync", 30)
        events = httpx.get(f"{process.url}/api/v1/events").json()["events"]
        assert [e["message"] for e in events if e["type"] == "resync"] == [
            "full resync requested through the API (agents and network sync)"
        ]
    finally:
        process.kill()


def test_the_full_network_resync_interval_is_configurable(world: World) -> None:
    process = Process(world, "--netsync", "--netsync-resync", "1")
    try:
        wait_for(lambda: full_syncs(process) >= 3, "a full network sync every second", 60)
    finally:
        process.kill()
