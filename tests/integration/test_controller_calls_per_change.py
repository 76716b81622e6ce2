"""What a change costs the controller in vCenter + EAM calls, counted on the lab, and how a mass deploy's
hooks are answered: a bounded number per poll, the others held back from re-reads, so that the status
moves between batches.

A deleted agent VM: EAM raises VmNotDeployed, agentvm resolves it, EAM deploys a new VM whose provisioned
hook agentvm answers (its host's values written into the VM, then MarkAsAvailable), EAM powers it on. The
count runs from the delete until the controller shows the agency green again with the new VM on.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from agentvm.backends.eam import EamBackend
from agentvm.controller.events import EventLog
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.reconcile import Reconciler
from agentvm.controller.run import Settings
from agentvm.controller.watch import VmWatch
from agentvm.core.agent_reads import Changes, ReadPolicy
from agentvm.model.agency import PowerState, Status
from agentvm.model.inventory import VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.hosts import add_host
from agentvm.vsphere.vms import destroy
from tests.support.controller_lab import Calls, connect, lab_world, wait_for

pytestmark = pytest.mark.lab

# full passes and the sweep far apart, so that what a change costs is what is counted
QUIET = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=60.0, retry_max=1.0, sweep_per_minute=6.0)


def test_a_deleted_agent_vm_costs_few_calls(tmp_path: Path) -> None:
    with lab_world(tmp_path, 4) as world:
        controller = world.start(settings=QUIET)
        calls = Calls()
        controller.reconciler.add_call_listener(calls)
        wait_for(world.all_green, "4 agents green", 240)
        vms = wait_for(lambda: world.one_agent_per_host(4), "4 agent VMs")
        victim = vms[1]
        before = Counter(calls.counts)
        destroy(world.session, victim.moref)

        def redeployed() -> list[VirtualMachine]:
            if not world.all_green():
                return []
            return [
                v
                for v in world.one_agent_per_host(4)
                if v.host == victim.host
                and v.moref != victim.moref
                and v.extra_config.get("guestinfo.fabricIp")
            ]

        wait_for(redeployed, "the deleted agent VM redeployed, its hook answered and on", 90)
        deleted = calls.since(before)
        assert deleted["MarkAsAvailable"] == 1 and deleted["Resolve"] >= 1, deleted
        # the hook's write waited for its task (ended by then, in the lab) with one read: no collector or
        # filter made and destroyed for it
        assert deleted["ReconfigVM_Task"] == 1 and deleted["ModifyListView"] == 0, deleted
        made = (
            "CreatePropertyCollector",
            "CreateFilter",
            "DestroyPropertyCollector",
            "DestroyPropertyFilter",
        )
        assert not any(deleted[m] for m in made), deleted
        # the resolved agent is read when its issue leaves the list (or its new VM shows), not also because
        # it was resolved; the answered one when its VM powers on, not also on its backoff
        assert deleted["AgentQueryRuntime"] <= 6, deleted


def test_a_mass_deploy_answers_a_few_hooks_a_poll_and_its_status_moves_between(tmp_path: Path) -> None:
    hosts, per_poll = 6, 2
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        session = connect(world.info)
        watch = VmWatch(world.session)

        def changes() -> Changes:
            seen = watch.take()
            return Changes() if seen is None else seen

        reconciler = Reconciler(
            desired,
            session,
            events=EventLog(),
            metrics=ControllerMetrics(agencies=[a.name for a in desired.agencies]),
            changes=changes,
            reads=ReadPolicy(sweep_per_minute=1.0),
            workers=per_poll,
            hooks_per_poll=per_poll,
        )
        calls = Calls()
        reconciler.add_call_listener(calls)
        try:
            reconciler.full_pass()  # creates the agency; EAM deploys every agent VM, each stops at its hook
            oob = EamBackend(reconciler.executor.eam_session)

            def all_hooked() -> bool:
                oob.forget()
                status = oob.observe("contrail")
                return status is not None and sum(a.hook is not None for a in status.agents) == hosts

            wait_for(all_hooked, f"{hosts} hooks pending at once", 120)
            answered: list[int] = []
            seen_midway = False
            deadline = time.monotonic() + 120
            while True:
                before = Counter(calls.counts)
                reconciler.poll()
                answered.append(calls.since(before)["MarkAsAvailable"])
                status = reconciler.report.agencies[0].status
                ready = sum(a.status is Status.GREEN and a.hook is None for a in status.agents)
                pending = len(status.pending_hooks)
                seen_midway = seen_midway or (ready > 0 and pending > 0)
                if status.green and ready == hosts:
                    break
                assert time.monotonic() < deadline, f"not green: {answered}"
                time.sleep(0.2)
            assert sum(answered) == hosts and max(answered) == per_poll, answered
            assert seen_midway, "the status never showed agents ready while others' hooks were pending"
        finally:
            watch.close()
            reconciler.close()
            session.logout()


def test_the_polls_after_a_change_back_off_instead_of_running_at_the_fast_rate(tmp_path: Path) -> None:
    # polls while EAM works on a change and for fast_after_change after it: each costs AgencyQueryRuntime
    settings = Settings(
        fast_poll=0.2,
        slow_poll=5.0,
        full_resync=60.0,
        retry_max=1.0,
        sweep_per_minute=6.0,
        fast_after_change=6.0,
    )
    with lab_world(tmp_path, 2) as world:
        controller = world.start(settings=settings)
        calls = Calls()
        controller.reconciler.add_call_listener(calls)
        wait_for(world.all_green, "2 agents green", 240)
        vms = wait_for(lambda: world.one_agent_per_host(2), "2 agent VMs")
        victim = vms[0]
        before = Counter(calls.counts)
        destroy(world.session, victim.moref)

        def redeployed() -> bool:
            return world.all_green() and any(
                v.host == victim.host and v.moref != victim.moref for v in world.one_agent_per_host(2)
            )

        wait_for(redeployed, "the deleted agent VM redeployed and on", 90)

        def quiet() -> bool:  # fast_after_change over since the last vCenter update the controller saw
            return time.perf_counter() - controller._last_update > settings.fast_after_change + 0.5

        wait_for(quiet, "the change's fast-poll window over", 30)
        counted = calls.since(before)
        assert counted["MarkAsAvailable"] == 1 and counted["Resolve"] >= 1, counted
        # at the fast rate (every 0.2 s) the window holds some 35 polls; backing off from each change or
        # action (4 polls at the fast rate, then doubling up to 2 s), about half as many
        assert counted["AgencyQueryRuntime"] <= 18, counted


def test_a_host_added_re_plans_without_reading_the_extension_the_configs_or_the_agency_list(
    tmp_path: Path,
) -> None:
    settings = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=120.0, retry_max=1.0, sweep_per_minute=6.0)
    with lab_world(tmp_path, 3) as world:
        controller = world.start(settings=settings)
        calls = Calls()
        controller.reconciler.add_call_listener(calls)
        wait_for(world.all_green, "3 agents green", 240)
        wait_for(lambda: world.one_agent_per_host(3), "3 agent VMs")
        cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
        before = Counter(calls.counts)
        new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")

        def agent_on_new_host() -> bool:
            return world.all_green() and any(
                v.host == new_host
                and v.power_state is PowerState.POWERED_ON
                and v.extra_config.get("guestinfo.fabricIp")
                for v in world.agent_vms()
            )

        wait_for(agent_on_new_host, "the new host's agent VM answered and on", 120)
        added = calls.since(before)
        # its settings written and its hook answered...
        assert added["EsxAgentHostManagerUpdateConfig"] == 1 and added["MarkAsAvailable"] == 1, added
        # ...by a re-plan that took the extension, the agency's config, id and owners from the last pass
        assert added["FindExtension"] == 0 and added["QueryConfig"] == 0, added
        assert added["QueryAgency"] == 0, added
        # the resync (as the periodic full pass) reads them all again: a change by someone else is seen
        before = Counter(calls.counts)
        passes = controller.passes
        controller.resync({})
        wait_for(lambda: controller.passes > passes + 1, "the resync's full pass", 30)
        resynced = calls.since(before)
        assert resynced["FindExtension"] >= 1 and resynced["QueryConfig"] >= 1, resynced
        assert resynced["QueryAgency"] >= 1, resynced
