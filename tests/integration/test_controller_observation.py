"""The controller's observation costs per change, not per agent, and a lost watch update is only delayed.

On the lab (vcsim + the lab's EAM), counting the calls through the executor's call listener: a power-off or
a deleted agent VM costs a bounded number of AgentQueryRuntime calls at 4 and at 24 hosts alike, and the
hook of the redeployed VM is answered without reading every agent; apply's wait reads as little. A watch
update dropped on purpose leaves the action undone for as many polls as one likes, until the spread sweep
reaches the agent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from agentvm.backends.base import AgencyStatus
from agentvm.backends.eam import EamBackend
from agentvm.controller.events import EventLog
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.reconcile import Reconciler
from agentvm.controller.run import Settings
from agentvm.controller.solution import Solution
from agentvm.controller.watch import VmWatch
from agentvm.core.agent_reads import Changes, ReadPolicy
from agentvm.model.agency import AgentRuntime, IssueKind, MoRef, PowerState
from agentvm.model.inventory import VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.hosts import ensure_maintenance_mode
from agentvm.vsphere.vms import destroy, ensure_powered_off
from tests.support.controller_lab import Calls, World, connect, lab_world, wait_for

pytestmark = pytest.mark.lab

# full passes and the sweep far apart, so that what a change costs is what is counted
QUIET = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=60.0, retry_max=1.0, sweep_per_minute=6.0)
AGENT_READS_PER_CHANGE = 12  # AgentQueryRuntime calls one change may cost, whatever the number of agents


# ------------------------------------------------------------------------------------ calls per change


@pytest.mark.parametrize("hosts", [4, 24])
def test_a_power_off_and_a_deleted_vm_cost_the_same_agent_reads_at_any_size(
    tmp_path: Path, hosts: int
) -> None:
    with lab_world(tmp_path, hosts) as world:
        controller = world.start(settings=QUIET)
        calls = Calls()
        controller.reconciler.add_call_listener(calls)
        wait_for(world.all_green, f"{hosts} agents green", 240)
        vms = wait_for(lambda: world.one_agent_per_host(hosts), f"{hosts} agent VMs")

        before = Counter(calls.counts)
        ensure_powered_off(world.session, vms[0].moref)
        wait_for(lambda: not world.all_green(), "the controller to see the power-off", 30)
        wait_for(world.all_green, "the agent powered on again", 60)
        power_off = calls.since(before)

        before = Counter(calls.counts)
        victim = vms[1]
        destroy(world.session, victim.moref)

        def redeployed() -> list[VirtualMachine]:
            if not world.all_green():
                return []
            vms = world.one_agent_per_host(hosts)
            # answered: the host's values are written into the new VM before EAM powers it on
            return [
                v
                for v in vms
                if v.host == victim.host
                and v.moref != victim.moref
                and v.extra_config.get("guestinfo.fabricIp")
            ]

        replaced = wait_for(redeployed, "the deleted agent VM redeployed, its hook answered and on", 90)
        deleted = calls.since(before)

        assert power_off["Resolve"] >= 1 and deleted["Resolve"] >= 1
        assert power_off["AgentQueryRuntime"] <= AGENT_READS_PER_CHANGE, power_off
        # the redeployed VM's hook was answered (its host's address written) reading a few agents only
        assert len(replaced) == 1 and deleted["MarkAsAvailable"] == 1
        assert deleted["AgentQueryRuntime"] <= AGENT_READS_PER_CHANGE, deleted
        assert deleted["QueryAgent"] <= 2, deleted  # the agent list only for a new agent VM's host

        # apply's wait, on a broken agent: the plan reads every agent (twice: before the lease and under
        # it), the wait once more at its first look, then only what changes; one WaitForUpdatesEx per look
        world.stop()
        ensure_powered_off(world.session, vms[2].moref)
        desired = load_spec(world.spec, env=world.info.env())
        with Solution(desired, connect(world.info)) as solution:
            counted = Calls()
            solution.executor.add_call_listener(counted)
            report = solution.apply(timeout=120)
        assert report.green, report.problems
        assert counted.counts["WaitForUpdatesEx"] == report.polls >= 2
        assert counted.counts["AgentQueryRuntime"] <= 3 * hosts + AGENT_READS_PER_CHANGE, counted.counts


# ------------------------------------------------------------------------- a lost update: only delayed


def test_a_dropped_watch_update_is_healed_by_the_next_sweep_not_by_polls(tmp_path: Path) -> None:
    with lab_world(tmp_path, 3) as world:
        desired = load_spec(world.spec, env=world.info.env())
        session = connect(world.info)
        now = [time.monotonic()]
        watch = VmWatch(world.session)
        dropping = [False]

        def changes() -> Changes:
            seen = watch.take()
            return Changes() if dropping[0] or seen is None else seen  # the filtered watch of this test

        policy = ReadPolicy(sweep_per_minute=60.0, sweep_period=60.0)
        reconciler = Reconciler(
            desired,
            session,
            events=EventLog(),
            metrics=ControllerMetrics(agencies=[a.name for a in desired.agencies]),
            changes=changes,
            reads=policy,
            clock=lambda: now[0],
        )
        calls = Calls()
        reconciler.add_call_listener(calls)
        try:
            _heal_until_green(world, reconciler, now)
            reconciler.full_pass()  # logged in as the extension by now: its session sees the agency
            oob = EamBackend(reconciler.executor.eam_session)  # another client of EAM, with its own reads
            victim = world.agent_vms()[0]

            # behind the controller's back: the VM deleted, VmNotDeployed resolved, the VM redeployed with
            # its provisioned hook pending; the watch drops every update meanwhile
            dropping[0] = True
            destroy(world.session, victim.moref)
            gone = wait_for(lambda: _issue(oob, IssueKind.VM_NOT_DEPLOYED), "VmNotDeployed", 60)
            assert oob.resolve(gone.issues) == ()
            hooked = wait_for(lambda: _hooked(oob, victim.host), "the redeployed VM's hook pending", 60)

            # the clock stands still: polls alone read no agent and never answer the hook
            before = Counter(calls.counts)
            for _ in range(15):
                reconciler.poll()
            polled = calls.since(before)
            assert polled["AgentQueryRuntime"] == 0 and polled["MarkAsAvailable"] == 0, polled
            assert polled["AgencyQueryRuntime"] == 15
            # nor does a re-plan (a topology change): it reads the agent list, not every agent
            before = Counter(calls.counts)
            reconciler.full_pass(sweep=False)
            replanned = calls.since(before)
            assert replanned["QueryAgent"] == 1 and replanned["AgentQueryRuntime"] == 0, replanned
            assert replanned["MarkAsAvailable"] == 0
            still = _hooked(oob, victim.host)  # still pending: the action only waits
            assert still is not None and still.hook == hooked.hook

            # the spread sweep: within one sweep period (3 agents, one every 20 s) it reaches the agent
            dropping[0] = False
            before = Counter(calls.counts)
            polls = 0
            while calls.since(before)["MarkAsAvailable"] == 0:
                assert polls < 4, f"the sweep did not answer the hook in {polls} polls: {calls.since(before)}"
                now[0] += policy.sweep_period / 3
                reconciler.poll()
                polls += 1
            assert calls.since(before)["AgentQueryRuntime"] <= polls + 1  # one agent a turn, no more
            _heal_until_green(world, reconciler, now)
        finally:
            watch.close()
            reconciler.close()
            session.logout()


def _heal_until_green(world: World, reconciler: Reconciler, now: list[float]) -> None:
    """Run the reconciler as the controller would, its clock following real time, until all is green."""
    deadline = time.monotonic() + 180
    reconciler.full_pass()
    while True:
        now[0] = max(now[0], time.monotonic())
        reconciler.poll()
        report = reconciler.report
        agents = world.agent_vms()
        if (
            report.agencies
            and all(a.status.green for a in report.agencies)
            and len(agents) == 3
            and all(v.power_state is PowerState.POWERED_ON for v in agents)
        ):
            return
        assert time.monotonic() < deadline, "timed out waiting for the reconciler to turn green"
        time.sleep(0.2)


def _issue(backend: EamBackend, kind: IssueKind) -> AgencyStatus | None:
    backend.forget()
    status = backend.observe("contrail")
    return status if status is not None and any(i.kind is kind for i in status.issues) else None


def _hooked(backend: EamBackend, host: MoRef | None) -> AgentRuntime | None:
    backend.forget()
    status = backend.observe("contrail")
    if status is None:
        return None
    agent = next((a for a in status.agents if a.host == host), None)
    return agent if agent is not None and agent.hook is not None else None


# ------------------------------------------------------------------------------------ host conditions


def _host_states(document: Mapping[str, object]) -> dict[str, object]:
    """Host moid -> its ``state`` in a status document."""
    return {
        h["moid"]: h.get("state")
        for a in document["agencies"]  # type: ignore[attr-defined]
        for c in a["clusters"]
        for h in c["hosts"]
    }


def test_a_host_that_left_maintenance_mode_after_a_full_pass_read_it_in_is_green_without_another(
    tmp_path: Path,
) -> None:
    # the full pass's read of the host said "in maintenance mode"; the watch saw it leave afterwards: the
    # watch's word stands, not the full pass's until the next one (600 s away here)
    settings = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=600.0, retry_max=1.0, sweep_per_minute=6.0)
    with lab_world(tmp_path, 3) as world:
        controller = world.start(settings=settings)
        wait_for(world.all_green, "3 agents green", 120)
        host = wait_for(lambda: world.one_agent_per_host(3), "3 agent VMs")[0].host
        assert host is not None
        ensure_maintenance_mode(world.session, host, True)
        wait_for(
            lambda: _host_states(controller.status())[host.value] == "maintenance",
            "the host shown in maintenance mode",
            60,
        )
        full = controller.metrics.last_full_resync.value()
        controller.resync({})
        wait_for(
            lambda: controller.metrics.last_full_resync.value() > full,
            "a full pass that reads the host in maintenance mode",
            60,
        )
        read_in = controller.metrics.last_full_resync.value()
        ensure_maintenance_mode(world.session, host, False)
        wait_for(
            lambda: set(_host_states(controller.status()).values()) == {"green"},
            "every host green again",
            60,
        )
        assert controller.metrics.last_full_resync.value() == read_in  # no full pass since
