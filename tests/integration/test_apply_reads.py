"""apply reads every agent once, then only what changes: the VM watch starts before its first plan.

On the lab (vcsim + the lab's EAM), counting the calls of the apply's own Solution through the executor's
call listener: an apply that finds one agent VM powered off behind its back reads each agent's runtime once
(its first plan), and beyond that a number of AgentQueryRuntime calls that is the same at 4 and at 24
hosts — the plan under the lease and the wait read only the agents the VM watch saw change, those not
settled and the spread sweep's; when another apply held the lease since the first plan, every agent is
read again under it. The due hooks of every agency are answered in one pool batch, and an answered agent
is read at the next look, not held until the fallback. Nothing is mocked.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from agentvm.controller.executor import AgencyWait
from agentvm.controller.lease import Lease
from agentvm.controller.planner import AGENCY_KINDS
from agentvm.controller.solution import Solution, _Answering
from agentvm.core.plan import JoinSwitch, PrepareHostNetwork, PrepareSwitch, SetHostSettings
from agentvm.core.progress import Progress
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab
from agentvm.model.agency import PowerState
from agentvm.model.desired import DesiredState
from agentvm.spec import load_spec, load_spec_text
from agentvm.vsphere.extensions import read_lease_records, remove_lease_record
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.controller_lab import ONE_CLUSTER, Calls, World, connect, lab_world, spec_text, wait_for

pytestmark = pytest.mark.lab

# AgentQueryRuntime calls an apply may make beyond one per agent, whatever the number of agents: the
# broken agent's reads while it comes back, and the sweep's few
EXTRA_READS = 12


@pytest.mark.parametrize("hosts", [4, 24])
def test_apply_reads_each_agent_once_and_beyond_that_the_same_at_any_size(tmp_path: Path, hosts: int) -> None:
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        with Solution(desired, connect(world.info)) as first:
            assert first.apply(timeout=240).green
        vms = world.one_agent_per_host(hosts)
        ensure_powered_off(world.session, vms[0].moref)
        _wait_for_the_issue(world, desired)  # EAM has raised it: apply has work to do

        with Solution(desired, connect(world.info)) as solution:
            calls = Calls()
            solution.executor.add_call_listener(calls)
            report = solution.apply(timeout=120)

        assert report.green, report.problems
        assert any("resolved" in a for a in report.actions), report.actions
        assert {v.moref: v.power_state for v in world.agent_vms()}[vms[0].moref] is PowerState.POWERED_ON
        # one WaitForUpdatesEx per look (both plans' and the wait's), so the watch ran from the first plan
        assert calls.counts["WaitForUpdatesEx"] == report.polls >= 3
        reads = calls.counts["AgentQueryRuntime"]
        assert hosts <= reads <= hosts + EXTRA_READS, calls.counts


def test_apply_reads_every_agent_again_under_the_lease_when_another_held_it_since_its_first_plan(
    tmp_path: Path,
) -> None:
    hosts = 4
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        with Solution(desired, connect(world.info)) as first:
            assert first.apply(timeout=240).green
        vms = world.one_agent_per_host(hosts)
        ensure_powered_off(world.session, vms[0].moref)
        # else, on a loaded machine, the apply could find nothing to do yet and take no lease at all
        _wait_for_the_issue(world, desired)
        other = Lease(connect(world.info), desired.solution.key, "apply")  # another apply, acting meanwhile
        other.acquire(wait=30)

        with Solution(desired, connect(world.info)) as solution:
            order: list[str] = []

            def listen(method: str, seconds: float, fault: str | None) -> None:
                order.append(method)
                if method == "AgentQueryRuntime" and other.held:
                    other.release()  # done while this apply's first plan reads the agents

            solution.executor.add_call_listener(listen)
            report = solution.apply(timeout=120)

        assert report.green, report.problems
        # under the lease (its RegisterExtension) up to the first Resolve: the plan and the wait's first
        # look; the other apply may have changed anything, so every agent was read again
        taken = order.index("RegisterExtension")
        resolved = order.index("Resolve", taken)
        assert order[taken:resolved].count("AgentQueryRuntime") >= hosts, order


def _wait_for_the_issue(world: World, desired: DesiredState) -> None:
    """Until the lab's EAM has raised the issue of the agent VM the test powered off."""
    name = desired.agencies[0].name
    with Solution(desired, world.session) as probe:

        def issue_raised() -> bool:
            status = probe.backend.observe(name)
            return status is not None and bool(status.runtime.issues)

        wait_for(issue_raised, "the lab's EAM to raise the powered-off agent's issue", 60)


def _remove_lease_records(world: World, key: str) -> None:
    """As on a vCenter where no apply ran yet, or after a destroy: no record of the solution's lease."""
    for record in read_lease_records(world.session, key):
        remove_lease_record(world.session, record)
    assert read_lease_records(world.session, key) == []


def test_an_apply_that_finds_no_lease_record_reads_each_agent_once_when_nobody_took_it_meanwhile(
    tmp_path: Path,
) -> None:
    hosts = 24  # one read per agent plus EXTRA_READS, where reading every agent again is two per agent
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        with Solution(desired, connect(world.info)) as first:
            assert first.apply(timeout=240).green
        _remove_lease_records(world, desired.solution.key)
        vms = world.one_agent_per_host(hosts)
        ensure_powered_off(world.session, vms[0].moref)
        _wait_for_the_issue(world, desired)  # EAM has raised it: apply has work to do

        with Solution(desired, connect(world.info)) as solution:
            calls = Calls()
            solution.executor.add_call_listener(calls)
            report = solution.apply(timeout=120)

        assert report.green, report.problems
        assert any("resolved" in a for a in report.actions), report.actions
        reads = calls.counts["AgentQueryRuntime"]
        assert hosts <= reads <= hosts + EXTRA_READS, calls.counts


def test_an_apply_that_finds_no_lease_record_reads_every_agent_again_when_another_took_it_meanwhile(
    tmp_path: Path,
) -> None:
    hosts = 4
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        with Solution(desired, connect(world.info)) as first:
            assert first.apply(timeout=240).green
        _remove_lease_records(world, desired.solution.key)
        vms = world.one_agent_per_host(hosts)
        ensure_powered_off(world.session, vms[0].moref)
        # else, on a loaded machine, the apply could find nothing to do yet and take no lease at all
        _wait_for_the_issue(world, desired)
        other = Lease(connect(world.info), desired.solution.key, "apply")  # another apply, acting meanwhile

        with Solution(desired, connect(world.info)) as solution:
            order: list[str] = []

            def listen(method: str, seconds: float, fault: str | None) -> None:
                order.append(method)
                if method == "AgentQueryRuntime" and other.last is None:
                    other.acquire(wait=30)  # taken and released while this apply's first plan reads
                    other.release()

            solution.executor.add_call_listener(listen)
            report = solution.apply(timeout=120)

        assert report.green, report.problems
        taken = order.index("RegisterExtension")
        resolved = order.index("Resolve", taken)
        assert order[taken:resolved].count("AgentQueryRuntime") >= hosts, order


def test_the_wait_looks_on_while_hooks_are_answered_and_reads_no_agent_whose_answer_runs(
    tmp_path: Path,
) -> None:
    hosts = 2
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        lock = threading.Lock()
        held = Counter[str]()
        release = threading.Event()  # the answers go on once the wait has looked 3 times meanwhile

        def listen(method: str, seconds: float, fault: str | None) -> None:
            if method == "ReconfigVM_Task" and not release.is_set():  # an answer's write, in the pool
                with lock:
                    held["waiting"] += 1
                release.wait(30)  # the fallback only: the wait's looks set it
                with lock:
                    held["waiting"] -= 1
            elif method == "AgentQueryRuntime":
                with lock:
                    if held["waiting"] == hosts:
                        held["reads"] += 1

        def progress(_: Progress) -> None:  # once per look of the wait
            with lock:
                if held["waiting"] == hosts and not release.is_set():
                    held["looks"] += 1
                    if held["looks"] >= 3:
                        release.set()

        with Solution(desired, connect(world.info)) as solution:
            solution.executor.add_call_listener(listen)
            report = solution.apply(timeout=240, on_progress=progress)

        assert report.green, report.problems
        # every hook's answer in flight at once, and the wait looked on meanwhile, reading none of them
        assert held["looks"] >= 3, held
        assert held["reads"] == 0, held


# ------------------------------------------------------------------------------ hooks across agencies

SECOND_AGENCY = """  - name: contrail-b
    agentName: contrail-b-vm
    ovf:
      url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf
    scope: [/DC0/host/DC0_C1]
    datastore: LocalDS_0
    network: VM Network
    hooks:
      provisioned: true
    ipPlan:
      cidr: 10.20.0.0/24
      gateway: 10.20.0.1
      range: 10.20.0.10-10.20.0.200
    perHost:
      fabricIp: "{ip}"
"""


def test_the_due_hooks_of_every_agency_are_answered_in_one_batch(tmp_path: Path) -> None:
    lab = Lab(Shape(clusters=2, hosts=2), netsync=False)
    info = lab.start()
    try:
        text = spec_text(**ONE_CLUSTER) + SECOND_AGENCY
        desired = load_spec_text(text, env=info.env())
        with Solution(desired, connect(info), state_dir=tmp_path, workers=4) as solution:
            plan = solution.plan()
            for change in plan.changes:  # what apply carries out before its wait; nobody answers the hooks
                if (
                    change.agency is None
                    or isinstance(change, SetHostSettings | PrepareSwitch | JoinSwitch | PrepareHostNetwork)
                    or change.kind in AGENCY_KINDS
                ):
                    solution.executor.carry_out(change)
            waits = []
            for agency in plan.observation.agencies:
                assignment = plan.spec_plan.addresses[agency.name]
                addresses = {h.host.moid: h.address for h in assignment.addresses}
                waits.append(
                    AgencyWait(agency.resolved, addresses=addresses, snapshot=plan.observation.snapshot)
                )

            def all_pending() -> bool:
                for wait in waits:
                    wait.status = solution.backend.observe(wait.name)
                return all(w.status is not None and len(w.status.pending_hooks) == 2 for w in waits)

            wait_for(all_pending, "two provisioned hooks pending in each agency", 120)
            marks = Calls()
            solution.executor.add_call_listener(marks)

            answering = _Answering(solution.executor)
            try:
                assert solution._answer_hooks(waits, answering)
                started = answering.agents()  # what the one call started, before any is taken in
                assert solution._answered(answering, everything=True)
            finally:
                answering.close()

        assert marks.counts["MarkAsAvailable"] == 4 and marks.counts["ReconfigVM_Task"] == 4, marks.counts
        # one pool for both agencies' hooks, started by one call, not one agency after the other
        assert len(started) == 4
        assert all(len(w.answered) == 2 for w in waits)
    finally:
        lab.stop()


# ------------------------------------------------------------------------------ answered hooks

# looks of the wait after the last hook's answer, before apply is done: the one that reads the answered
# agent once the watch shows EAM powering its VM on (or at once, for a hook no power-on follows), and a
# few while the lab's EAM clears the hook; an answered agent left unread until the fallback (a VM change
# spent while its answer was in flight, or a hook no VM change follows) is dozens of looks later
LOOKS_AFTER_THE_LAST_ANSWER = 3


def test_apply_reads_an_answered_agent_at_the_next_look_not_after_the_fallback(tmp_path: Path) -> None:
    hosts = 4
    with lab_world(tmp_path, hosts) as world:
        desired = load_spec(world.spec, env=world.info.env())
        assert desired.agencies[0].provisioned_hook
        lock = threading.Lock()
        order: list[str] = []

        def listen(method: str, seconds: float, fault: str | None) -> None:
            with lock:  # the answers run in the hook pool, the looks in apply's thread
                order.append(method)

        with Solution(desired, connect(world.info)) as solution:
            solution.executor.add_call_listener(listen)
            report = solution.apply(timeout=240)

        assert report.green, report.problems
        assert order.count("MarkAsAvailable") == hosts, Counter(order)
        last = len(order) - 1 - order[::-1].index("MarkAsAvailable")
        after = order[last + 1 :]
        # the last answered agent is read again once its answer is in (the others may be read before it:
        # the looks go on while the answers run), and apply is done a few looks later
        assert after.count("AgentQueryRuntime") >= 1, after
        assert after.count("WaitForUpdatesEx") <= LOOKS_AFTER_THE_LAST_ANSWER, Counter(after)
