"""``agentvm run --backend direct`` on a vCenter without EAM: agentvm's own engine runs the agents.

A fresh vcsim (nothing behind ``/eam/sdk``: nothing here can reach the lab's EAM) and the lab's package
server for the ContrailVM OVF. The controller runs in-process with the direct backend built exactly as the
CLI builds it (``cli.run.open_direct_engine`` on a ``--state-dir``); what it did is checked through a
separate vCenter session. Restarting it on the same state dir must neither redeploy nor orphan agents.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import jsonschema
import pytest
from typer.testing import CliRunner, Result

from agentvm.cli.main import app
from agentvm.cli.run import engine_state_file, open_direct_engine
from agentvm.controller.lease import Keeper, Lease
from agentvm.controller.run import Controller
from agentvm.controller.status import status_schema
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.errors import ConfigurationError
from agentvm.model.inventory import VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.extensions import find_extension
from agentvm.vsphere.hosts import AgentVmSettings, get_agent_vm_settings
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.controller_lab import EXAMPLES, Process, wait_for
from tests.support.direct_lab import Direct, connection, green

pytestmark = pytest.mark.lab

PLANNED = [f"10.10.0.{n}" for n in range(10, 16)]  # examples/contrail.yaml's IP plan, six hosts


def status_addresses(controller: Controller) -> dict[str, str]:
    """Host moid -> address, from the controller's status document (validated against its schema)."""
    document = dict(controller.status())
    jsonschema.validate(document, status_schema())
    return {
        h["moid"]: h["address"]
        for a in document["agencies"]
        for c in a["clusters"]
        for h in c["hosts"]
        if h["vm"] is not None and h["address"]
    }


def test_the_direct_backend_deploys_heals_and_survives_a_restart_on_its_state_dir(direct: Direct) -> None:
    # no EAM anywhere: vcsim has nothing behind /eam/sdk (503: no EAM backend configured)
    # (only the status code matters: vcsim's self-signed certificate is pinned elsewhere by thumbprint)
    eam = httpx.get(direct.vcsim.url.replace("/sdk", "/eam/sdk"), verify=False)  # noqa: S501
    assert eam.status_code in (404, 503), eam.status_code

    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "six agents green through the engine", 180)
    assert sorted(v.extra_config["guestinfo.fabricIp"] for v in vms) == PLANNED
    by_host = {v.host.value: v.extra_config["guestinfo.fabricIp"] for v in vms if v.host is not None}
    assert len(by_host) == 6, "one agent per host"
    assert status_addresses(controller) == by_host, "each host's agent carries its planned address"

    # powered off behind the controller's back: the engine raises VmPoweredOff, the controller resolves it
    victim = vms[0]
    ensure_powered_off(direct.session, victim.moref)
    wait_for(
        lambda: (
            next(v for v in direct.agent_vms() if v.moref == victim.moref).power_state
            is PowerState.POWERED_ON
        ),
        "the controller to power the agent VM on again",
    )
    assert controller.metrics.resolves_attempted.value(kind="VmPoweredOff") >= 1
    before = {v.moref for v in direct.agent_vms()}

    # a restart: the engine's state survives in --state-dir
    state_file = engine_state_file(direct.state_dir, "org.tungsten.agentvm", direct.vcsim.url)
    direct.stop()
    assert state_file.is_file()
    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "green again after the restart", 120)
    assert {v.moref for v in vms} == before, "the same agent VMs: nothing redeployed"
    hosts = [v.host for v in vms]
    assert len(set(hosts)) == len(hosts) == 6, "exactly one agent per host"
    assert status_addresses(controller) == by_host
    # no orphans: every contrail VM in vCenter is one of the engine's agents
    agents = {
        a.vm.value for s in controller.reconciler.report.agencies for a in s.status.agents if a.vm is not None
    }
    assert {v.moref.value for v in direct.agent_vms()} == agents


def test_a_second_controller_on_the_same_state_dir_is_refused(direct: Direct) -> None:
    desired = load_spec(EXAMPLES / "contrail.yaml", env=direct.env)
    first = open_direct_engine(connection(direct.vcsim), desired, direct.state_dir)
    try:
        with pytest.raises(ConfigurationError, match="another agentvm run --backend direct"):
            open_direct_engine(connection(direct.vcsim), desired, direct.state_dir)
    finally:
        first.close()
    open_direct_engine(connection(direct.vcsim), desired, direct.state_dir).close()  # free again


def test_agentvm_run_backend_direct_keeps_its_state_in_state_dir_across_processes(
    direct: Direct, tmp_path: Path
) -> None:
    import signal
    from types import SimpleNamespace

    spec = tmp_path / "contrail.yaml"
    spec.write_text((EXAMPLES / "contrail.yaml").read_text())
    env = {**direct.env, "AGENTVM_STATE_DIR": str(direct.state_dir)}  # as the environment variable
    world = SimpleNamespace(info=SimpleNamespace(env=lambda: env), spec=spec)
    state_file = engine_state_file(direct.state_dir, "org.tungsten.agentvm", direct.vcsim.url)
    seen: list[set[str]] = []
    for _ in range(2):  # the second process starts from the first one's state file
        process = Process(world, "--backend", "direct")  # type: ignore[arg-type]
        try:

            def all_green(process: Process = process) -> bool:
                response = httpx.get(f"{process.url}/api/v1/status")
                agencies = response.json()["agencies"] if response.status_code == 200 else []
                return bool(agencies) and all(a["status"] == "green" for a in agencies)

            wait_for(all_green, "green through the direct backend", 180)

            def six_on() -> list[VirtualMachine] | None:
                vms = direct.agent_vms()
                on = all(v.power_state is PowerState.POWERED_ON for v in vms)
                return vms if len(vms) == 6 and on else None

            vms = wait_for(six_on, "six agent VMs, on", 60)
            seen.append({v.moref.value for v in vms})
            assert state_file.is_file()
            process.proc.send_signal(signal.SIGTERM)
            assert process.proc.wait(15) == 0
        finally:
            process.kill()
    assert seen[0] == seen[1], "the second process adopted the first one's agents: none redeployed"


def destroy_cli(direct: Direct, *args: str) -> Result:
    """``agentvm destroy --backend direct`` in-process, with the test's vCenter and package server."""
    env = {**direct.env, "AGENTVM_STATE_DIR": str(direct.state_dir), "COLUMNS": "250"}
    spec = str(EXAMPLES / "contrail.yaml")
    return CliRunner().invoke(app, ["destroy", "-f", spec, "--yes", "--backend", "direct", *args], env=env)


def test_a_lost_state_dir_adopts_every_agent_redeploys_none_and_destroy_removes_them(direct: Direct) -> None:
    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "six agents green through the engine", 180)
    before = {v.moref: v.host for v in vms}
    addresses = status_addresses(controller)
    assert len(addresses) == 6
    direct.stop()

    shutil.rmtree(direct.state_dir)  # the engine's memory is gone; vCenter still has the agent VMs
    controller = direct.start()
    engine = direct.running[-1][1]
    vms = wait_for(lambda: green(direct, controller), "green again with a fresh state dir", 120)

    assert {v.moref: v.host for v in vms} == before, "the same VM on each host: adopted"
    assert engine.session.stats.snapshot()["ImportVApp"] == 0, "nothing redeployed"
    assert engine.session.stats.snapshot()["Destroy_Task"] == 0, "nothing deleted"
    assert status_addresses(controller) == addresses, "each host keeps its address"
    assert len(direct.agent_vms()) == 6
    direct.stop()

    result = destroy_cli(direct)
    assert result.exit_code == 0, result.output
    assert "uninstalled agency contrail" in result.output
    assert direct.agent_vms() == [], "destroy --backend direct removes every agent VM"
    assert find_extension(direct.session, "org.tungsten.agentvm") is None


def test_destroy_with_the_direct_backend_and_a_lost_state_dir_removes_every_agent_vm(direct: Direct) -> None:
    controller = direct.start()
    wait_for(lambda: green(direct, controller), "six agents green through the engine", 180)
    direct.stop()
    shutil.rmtree(direct.state_dir)

    result = destroy_cli(direct)

    assert result.exit_code == 0, result.output
    assert "removing the agent VMs of agency contrail" in result.output
    assert direct.agent_vms() == [], "found by their owner marker and deleted"
    again = destroy_cli(direct)
    assert again.exit_code == 0, again.output


def deployed_with_host_settings(direct: Direct, monkeypatch: pytest.MonkeyPatch) -> list[MoRef]:
    """Six agents green through a direct controller, which set each host's AgentVM datastore and network
    and recorded them in the state dir destroy reads; the controller is stopped. Returns the hosts."""
    monkeypatch.setenv("AGENTVM_STATE_DIR", str(direct.state_dir))  # the controller's records, too
    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "six agents green through the engine", 180)
    hosts = sorted({v.host for v in vms if v.host is not None}, key=lambda h: h.value)
    assert len(hosts) == 6
    for host in hosts:  # the lab's hosts had none: the controller set the spec's datastore and network
        settings = get_agent_vm_settings(direct.session, host)
        assert settings.datastore is not None and settings.network is not None, host
    direct.stop()
    return hosts


def test_destroy_with_the_direct_backend_waits_for_the_lease_another_apply_holds(
    direct: Direct, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed_with_host_settings(direct, monkeypatch)
    lease = Lease(direct.session, "org.tungsten.agentvm", "apply", ttl=15.0)
    lease.acquire(wait=30.0)
    keeper = Keeper(lease).start()
    try:
        refused = destroy_cli(direct, "--timeout", "2")
    finally:
        keeper.stop()
        lease.release()
    assert refused.exit_code == 3, refused.output
    assert "holds the lease of solution org.tungsten.agentvm" in refused.output
    assert "waited 2 s: let it finish and try again" in refused.output
    assert len(direct.agent_vms()) == 6, "nothing removed while another holds the lease"
    assert find_extension(direct.session, "org.tungsten.agentvm") is not None

    released = destroy_cli(direct)
    assert released.exit_code == 0, released.output
    assert direct.agent_vms() == []


def test_destroy_with_the_direct_backend_clears_the_host_settings_the_controller_set(
    direct: Direct, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = deployed_with_host_settings(direct, monkeypatch)

    result = destroy_cli(direct, "--host-settings")

    assert result.exit_code == 0, result.output
    assert direct.agent_vms() == []
    assert result.output.count("cleared the AgentVM datastore and network of") == 6, result.output
    assert [get_agent_vm_settings(direct.session, h) for h in hosts] == [AgentVmSettings()] * 6
