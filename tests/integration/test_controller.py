"""``agentvm run``'s controller on the lab: it heals, answers hooks, prepares new hosts, and survives.

The controller runs in-process on a thread (``Controller.start()``) with short intervals, against a fresh
lab per test (vcsim + the lab's EAM + the package server). What it did is checked independently, through a
separate vCenter session: agent VMs, power states, guestinfo, EAM's agencies. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jsonschema
import pytest

from agentvm.controller.status import status_schema
from agentvm.core.heal import Backoff, HealPolicy
from agentvm.lab.world import LabInfo
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.inventory import VirtualMachine
from agentvm.vsphere.hosts import add_host, ensure_maintenance_mode
from agentvm.vsphere.vms import destroy, ensure_powered_off, power_state
from tests.support.controller_lab import (
    FAST,
    ONE_CLUSTER,
    World,
    connect,
    deployed,
    host_doc,
    relocate,
    spec_text,
    wait_for,
)
from tests.support.exposition import parse, sample

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


# ------------------------------------------------------------------------------------------------ healing


def test_controller_deploys_and_powers_a_powered_off_agent_on_again(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    # every hook was answered with the host's planned address
    assert sorted(v.extra_config["guestinfo.fabricIp"] for v in vms) == [
        "10.10.0.10",
        "10.10.0.11",
        "10.10.0.12",
    ]
    assert world.events(action="answer-hook")

    victim = vms[0]
    ensure_powered_off(world.session, victim.moref)
    wait_for(
        lambda: (
            next(v for v in world.agent_vms() if v.moref == victim.moref).power_state is PowerState.POWERED_ON
        ),
        "the controller to power the agent VM on again",
    )
    assert world.events(action="resolve"), "the power-on went through a Resolve"
    # EAM's calls go through the extension's own session, opened after the controller started: counted too
    families = parse(controller.metrics.registry.render())
    assert sample(families, "agentvm_vcenter_call_duration_seconds_count", method="Resolve") >= 1
    assert sample(families, "agentvm_vcenter_call_duration_seconds_count", method="AgencyQueryRuntime") >= 1
    # agentvm's own time: of every pass, and of the pass that resolved up to its Resolve
    assert sample(families, "agentvm_pass_own_seconds_count", **{"pass": "full"}) >= 1
    assert sample(families, "agentvm_resolve_own_seconds_count") >= 1
    # the agents it read, by why: every agent at the first pass, the powered-off one when the watch named it
    # (as "full", or as "new" when the first pass found the agents before any read of them: a race)
    first = sum(sample(families, "agentvm_agent_reads_total", reason=r) for r in ("full", "new"))
    assert first >= 3
    assert sample(families, "agentvm_agent_reads_total", reason="watch") >= 1
    assert controller.metrics.resolves_attempted.value(kind="VmPoweredOff") >= 1
    wait_for(lambda: controller.metrics.resolves_succeeded.value(kind="VmPoweredOff") >= 1, "a healed count")
    assert not world.events(level="error")
    # the action lines carry a correlation id, and the status document follows the schema
    (resolve,) = world.events(action="resolve")[:1]
    assert str(resolve["correlation_id"]).startswith("agentvm-run-")
    jsonschema.validate(controller.status(), status_schema())


def test_a_deleted_agent_vm_is_redeployed_with_its_address(world: World) -> None:
    vms = deployed(world)
    victim = vms[1]
    assert victim.host is not None
    address = victim.extra_config["guestinfo.fabricIp"]
    destroy(world.session, victim.moref)

    def redeployed() -> VirtualMachine | None:
        for vm in world.agent_vms():
            if (
                vm.host == victim.host
                and vm.moref != victim.moref
                and vm.power_state is PowerState.POWERED_ON
                and vm.extra_config.get("guestinfo.fabricIp") == address
            ):
                return vm
        return None

    wait_for(redeployed, "a new agent VM on the host, on, with the same address", 120)
    wait_for(lambda: world.one_agent_per_host(3), "exactly one agent per host")
    assert not world.events(level="error")


def test_a_host_added_to_the_cluster_gets_its_agent_with_its_planned_address(world: World) -> None:
    deployed(world)
    cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
    new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")

    def agent_on_new_host() -> VirtualMachine | None:
        for vm in world.agent_vms():
            if vm.host == new_host and vm.power_state is PowerState.POWERED_ON:
                return vm
        return None

    vm = wait_for(agent_on_new_host, "an agent VM on the new host", 120)
    assert vm.extra_config["guestinfo.fabricIp"] == "10.10.0.13"
    assert vm.extra_config["guestinfo.agentvm.address"] == "10.10.0.13"
    host = world.snapshot().find_host(new_host.value)
    assert host.agent_vm_datastore is not None and host.agent_vm_network is not None, "AgentVM settings set"
    assert world.events(action="host-settings", host=new_host.value)
    wait_for(lambda: world.one_agent_per_host(4), "exactly one agent per host")


def test_maintenance_mode_in_and_out_raises_no_alert(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    victim = vms[2]
    assert victim.host is not None
    first_event = controller.events.last_id
    ensure_maintenance_mode(world.session, victim.host, True)
    wait_for(
        lambda: (
            next(v for v in world.agent_vms() if v.host == victim.host).power_state is PowerState.POWERED_OFF
        ),
        "EAM to power the agent off for maintenance mode",
    )
    # several full passes and polls while the host is in maintenance mode: counted, not waited out
    polls = controller.passes
    full_passes = {controller.metrics.last_full_resync.value()}  # the last one before, and 3 after

    def three_more_full_passes() -> bool:
        full_passes.add(controller.metrics.last_full_resync.value())
        return len(full_passes) > 3

    wait_for(three_more_full_passes, "three full passes while the host is in maintenance mode", 60)
    assert controller.passes > polls + 3
    assert controller.metrics.resolves_attempted.value(kind="VmPoweredOff") == 0
    ensure_maintenance_mode(world.session, victim.host, False)
    wait_for(world.all_green, "the agent back on after maintenance mode", 90)
    new = controller.events.recent(after=first_event)
    assert not [e for e in new if e.level == "error"], [e.message for e in new]
    assert not [e for e in new if e.data.get("action") == "resolve"], [e.message for e in new]


# --------------------------------------------------------------------------------------------- recovery


def test_the_controller_recovers_after_an_eam_restart(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    world.lab.restart_eam()
    ensure_powered_off(world.session, vms[0].moref)
    wait_for(world.all_green, "the agent powered on again after EAM's restart", 90)
    assert controller.ready()


def test_an_expired_session_logs_in_again_and_surfaces_no_error(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None and world.controller_session is not None
    key = world.controller_session.content.sessionManager.currentSession.key
    world.session.content.sessionManager.TerminateSession([key])
    ensure_powered_off(world.session, vms[0].moref)
    wait_for(world.all_green, "the agent powered on again with a new session", 90)
    assert world.controller_session.content.sessionManager.currentSession.key != key
    assert not world.events(level="error"), world.events(level="error")


def test_vcenter_unreachable_for_a_while_is_reported_and_survived(world: World) -> None:
    """vcsim keeps no state, so a vcsim *restart* is a brand-new inventory; vCenter loss is tested as vcsim
    unreachable (stopped with SIGSTOP, then continued)."""
    world.start(settings=FAST, timeout=2.0)
    wait_for(world.all_green, "green", 120)
    controller = world.controller
    assert controller is not None

    def connected() -> float:
        return sample(parse(controller.metrics_text()), "agentvm_vcenter_connected")

    assert connected() == 1
    pid = world.lab.pids["vcsim"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not controller.ready(), "readyz to turn false while vCenter is unreachable", 30)
        wait_for(lambda: world.events(type="connection", level="error"), "an error event", 30)
        assert connected() == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(controller.ready, "the controller ready again after vCenter came back", 60)
    assert world.events(type="connection", message="reconnected; full resync done")
    assert connected() == 1
    assert controller.join(0), "the controller thread is still running"


# ------------------------------------------------------------------------------------------ host state


def _host_states(document: dict[str, object]) -> dict[str, object]:
    """Host moid -> its ``state`` (None when absent) in a status document."""
    return {
        h["moid"]: h.get("state")
        for a in document["agencies"]  # type: ignore[attr-defined]
        for c in a["clusters"]
        for h in c["hosts"]
    }


def test_a_host_in_maintenance_mode_has_state_maintenance_in_the_api_and_status_json(world: World) -> None:
    import httpx
    from typer.testing import CliRunner

    from agentvm.api.server import Api, ApiServer
    from agentvm.cli.main import app
    from agentvm.controller.run import api_callables

    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    victim = vms[0].host
    assert victim is not None
    states = _host_states(dict(controller.status()))
    assert set(states.values()) == {"green"}, states
    ensure_maintenance_mode(world.session, victim, True)
    with ApiServer(Api(**api_callables(controller)), port=0) as server:

        def in_maintenance() -> dict[str, object] | None:
            document: dict[str, object] = httpx.get(f"{server.url}/api/v1/status").json()
            return document if _host_states(document)[victim.value] == "maintenance" else None

        document = wait_for(in_maintenance, "the API to show the host in maintenance mode", 60)
        jsonschema.validate(document, status_schema())
        others = {m: s for m, s in _host_states(document).items() if m != victim.value}
        assert set(others.values()) == {"green"}, others

    result = CliRunner().invoke(app, ["status", "-f", str(world.spec), "--json"], env=world.info.env())
    assert result.exit_code == 0, result.output
    cli_document = json.loads(result.stdout)
    jsonschema.validate(cli_document, status_schema())
    assert _host_states(cli_document)[victim.value] == "maintenance"

    ensure_maintenance_mode(world.session, victim, False)
    wait_for(
        lambda: _host_states(dict(controller.status()))[victim.value] == "green",
        "the host green again after maintenance mode",
        90,
    )


# ---------------------------------------------------------------------------------- where an agent runs


def _vm_host(world: World, vm: MoRef) -> MoRef | None:
    found = world.snapshot().get(vm)
    return found.host if isinstance(found, VirtualMachine) else None


def test_a_relocated_agent_vm_is_shown_on_its_host_and_resolve_moves_it_back(world: World) -> None:
    from typer.testing import CliRunner

    from agentvm.cli.main import app

    vms = deployed(world)
    world.stop()  # `agentvm status` and `resolve` alone, no controller to heal behind them
    victim, other = vms[0], vms[1]
    assert victim.host is not None and other.host is not None
    relocate(world.session, victim, other.host)
    assert _vm_host(world, victim.moref) == other.host

    runner = CliRunner()
    result = runner.invoke(app, ["status", "-f", str(world.spec), "--json"], env=world.info.env())
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    jsonschema.validate(document, status_schema())
    home = host_doc(document, victim.host.value)
    assert home["state"] == "misplaced" and home["phase"] == "misplaced", home
    assert home["runsOn"] == {"moid": other.host.value, "name": "DC0_C0_H1"}, home
    assert host_doc(document, other.host.value)["state"] == "green"
    table = runner.invoke(app, ["status", "-f", str(world.spec)], env=world.info.env())
    assert table.exit_code == 0, table.output
    assert "misplaced" in table.stdout and "resolve --all" in table.stdout, table.stdout

    moved = runner.invoke(app, ["resolve", "--all", "-f", str(world.spec)], env=world.info.env())
    assert moved.exit_code == 0, moved.output
    assert "back to" in moved.stdout, moved.stdout
    assert _vm_host(world, victim.moref) == victim.host
    again = json.loads(
        runner.invoke(app, ["status", "-f", str(world.spec), "--json"], env=world.info.env()).stdout
    )
    assert host_doc(again, victim.host.value)["state"] == "green"


def test_the_controller_moves_a_relocated_agent_vm_back_to_its_host(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    victim, other = vms[2], vms[0]
    assert victim.host is not None and other.host is not None
    first = controller.events.last_id
    started = time.monotonic()
    relocate(world.session, victim, other.host)
    wait_for(lambda: _vm_host(world, victim.moref) == victim.host, "the agent VM moved back to its host", 60)
    print(f"relocation -> moved back: {time.monotonic() - started:.2f} s")
    new = [e.as_json() for e in controller.events.recent(after=first)]
    raised = [e for e in new if e["type"] == "issue" and (e.get("data") or {}).get("kind") == "VmOnWrongHost"]  # type: ignore[union-attr]
    assert raised and raised[0]["host"] == victim.host.value, new
    assert [e for e in new if (e.get("data") or {}).get("action") == "migrate"], new  # type: ignore[union-attr]
    assert controller.metrics.resolves_attempted.value(kind="VmOnWrongHost") == 1
    wait_for(world.all_green, "all green again", 60)
    wait_for(
        lambda: host_doc(dict(controller.status()), victim.host.value).get("state") == "green",  # type: ignore[union-attr]
        "the host green again in the status",
        30,
    )
    assert not [e for e in controller.events.recent(after=first) if e.level == "error"]


# ------------------------------------------------------------------------------------------- flapping


class _Adversary:
    """Powers ``vm`` off each time it is seen on again (its own session); counts the power-ons it saw."""

    def __init__(self, info: LabInfo, vm: MoRef) -> None:
        self.session = connect(info)
        self.vm = vm
        self.power_ons = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Adversary:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.session.logout()

    def _run(self) -> None:
        ensure_powered_off(self.session, self.vm)
        while not self._stop.is_set():
            if power_state(self.session, self.vm) is PowerState.POWERED_ON:
                self.power_ons += 1
                ensure_powered_off(self.session, self.vm)
            self._stop.wait(0.05)


def test_a_flapping_agent_is_powered_on_a_bounded_number_of_times_then_flagged(world: World) -> None:
    import httpx

    from agentvm.api.server import Api, ApiServer
    from agentvm.controller.run import api_callables

    bound = 4
    policy = HealPolicy(
        default=Backoff(base=0.3, factor=1.5, cap=2.0, jitter=0.0, max_attempts=bound), seed=1
    )
    vms = deployed(world, policy=policy)
    controller = world.controller
    assert controller is not None
    victim = vms[1]
    assert victim.host is not None
    first = controller.events.last_id

    def flapping_events() -> list[dict[str, object]]:
        found = [e.as_json() for e in controller.events.recent(after=first)]
        return [
            e for e in found if e["type"] == "heal" and (e.get("data") or {}).get("verdict") == "flapping"
        ]  # type: ignore[union-attr]

    with _Adversary(world.info, victim.moref) as adversary:
        wait_for(
            lambda: flapping_events() or adversary.power_ons > bound,
            "the controller to give up on the flapping agent",
            60,
        )
        assert adversary.power_ons <= bound, f"powered on {adversary.power_ons} times"
        at_give_up, passes = adversary.power_ons, controller.passes
        # many more polls and a full pass while it is still powered off: no further power-on
        wait_for(lambda: controller.passes >= passes + 15, "15 more passes", 60)
        print(f"power-ons of the flapping agent: {adversary.power_ons} (bound {bound})")
        assert adversary.power_ons == at_give_up
    assert 1 <= at_give_up <= bound
    assert controller.metrics.resolves_attempted.value(kind="VmPoweredOff") <= bound
    (give_up,) = flapping_events()
    assert give_up["host"] == victim.host.value and give_up["level"] == "error"
    assert not [
        e
        for e in (x.as_json() for x in controller.events.recent(after=first))
        if e["type"] == "heal" and (e.get("data") or {}).get("verdict") == "gave-up"  # type: ignore[union-attr]
    ]
    document = dict(controller.status())
    jsonschema.validate(document, status_schema())
    assert host_doc(document, victim.host.value)["state"] == "flapping"
    with ApiServer(Api(**api_callables(controller)), port=0) as server:
        metrics = httpx.get(f"{server.url}/metrics").text
    assert f'agentvm_agent_flapping{{agency="contrail",host="{victim.host.value}"}} 1' in metrics, metrics
    assert 'agentvm_agents{agency="contrail",state="flapping"} 1' in metrics, metrics


def test_an_ip_plan_entry_for_a_host_not_in_scope_is_a_warning_and_the_others_are_managed(
    world: World,
) -> None:
    """apply refuses such a spec; a running controller whose host left the scope must keep the rest."""
    span = "range: 10.10.0.10-10.10.0.200"
    world.spec.write_text(
        spec_text(
            **ONE_CLUSTER,
            **{span: span + "\n      addresses: {GONE_H9: 10.10.0.5}"},
        )
    )
    deployed(world)
    warnings = [e for e in world.events(level="warning") if "GONE_H9" in str(e.get("message"))]
    assert len(warnings) == 1, warnings
    assert "is not a host in the scope" in str(warnings[0]["message"])
