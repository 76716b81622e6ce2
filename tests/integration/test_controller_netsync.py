"""``agentvm run --netsync`` on the lab: the controller keeps the agents and, alongside, the SDN in step.

``agentvm run`` runs as a process (JSON logs on stderr) with the lab's environment, which names the SDN
config-API emulator (``AGENTVM_SDN_URL``) and the vRouter-agent emulators (``AGENTVM_VROUTER_MAP``). A DV
port group with an IP pool and a VM with NICs on it are made through SOAP on vcsim; the test then looks
at the config-API emulator, the host's vRouter-agent emulator, and the controller's own API.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from agentvm.lab.world import Lab
from agentvm.model.inventory import VmPowerState
from agentvm.model.network import SdnVirtualNetwork, SdnVmi
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.vsphere.vms import ensure_powered_off
from tests.integration.test_controller import World, wait_for
from tests.integration.test_controller_process import Process
from tests.integration.test_controller_process import world as world  # the fixture
from tests.integration.test_netsync_vcenter import VCenter

pytestmark = pytest.mark.lab


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
                is VmPowerState.POWERED_ON
            ),
            "the controller to power the agent VM on again",
            90,
        )
        wait_for(lambda: agents_green(process), "the agents green again", 60)

        # the sync shows in the metrics, and a port group it cannot map is said once, as an event
        def synced_metrics() -> str | None:
            text = httpx.get(f"{process.url}/metrics").text
            return text if 'agentvm_netsync_syncs_total{kind="incremental"}' in text else None

        metrics = wait_for(synced_metrics, "the netsync metrics", 30)
        assert 'agentvm_netsync_syncs_total{kind="full"} 1' in metrics
        assert "agentvm_netsync_batch_seconds_count" in metrics
        events = httpx.get(f"{process.url}/api/v1/events").json()
        netsync = [e for e in events["events"] if e["type"] == "netsync"]
        uplinks = [e for e in netsync if "DVUplinks" in e["message"]]
        assert len(uplinks) == 1 and uplinks[0]["level"] == "warning", netsync
        assert not [e for e in netsync if e["level"] == "error"], netsync

        # a vRouter agent down: that VM's ports fail (a warning, retried), the rest of its sync goes on
        other = vc.host_ids()[1]
        world.lab.vrouters[other].stop()
        vc.run(vc.vm("run-2", pg, host=1).PowerOnVM_Task(), "power on")
        run2 = wait_for(
            lambda: [v.uuid for v in api.list(SdnVmi) if v.display_name.startswith("run-2 ")],
            "run-2's interfaces in the SDN controller despite its host's agent being down",
            30,
        )
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
