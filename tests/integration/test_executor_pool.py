"""The executor's bounded pool (``Executor.carry_out_all``) on the lab: hosts' AgentVM settings and hook
answers carried out concurrently, never more at once than its bound, each change its own outcome.

How many run at once is counted by a call listener around the one call each change makes once
(``EsxAgentHostManagerUpdateConfig``, ``ReconfigVM_Task``): it counts the threads inside it, and a barrier
there holds them until as many as the bound have met — so "more than one at once" is an event waited for,
not a timing. Nothing is mocked.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentvm.controller.executor import AgencyWait, Executor
from agentvm.controller.identity import SolutionIdentity
from agentvm.controller.planner import AGENCY_KINDS, Planner
from agentvm.controller.run import Controller
from agentvm.controller.solution import Solution
from agentvm.core.plan import HostSetting, JoinSwitch, PrepareHostNetwork, PrepareSwitch, SetHostSettings
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import LabInfo
from agentvm.model.agency import HookState, MoRef
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.desired import DesiredState, ScopeHost
from agentvm.model.errors import ConfigurationError, TransientError
from agentvm.model.inventory import Host
from agentvm.spec import load_spec_text
from agentvm.vsphere.hosts import AgentVmSettings, get_agent_vm_settings
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from tests.support.controller_lab import FAST, World, connect, wait_for

pytestmark = pytest.mark.lab


class InFlight:
    """A call listener counting the threads that just made a call of ``method`` (most at once:
    ``most``); with ``meet``, the first ``meet`` of them wait there until all of them are in (a barrier)."""

    def __init__(self, method: str, meet: int = 0) -> None:
        self.method = method
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        self.calls = 0
        self.threads: set[str] = set()
        self._barrier = threading.Barrier(meet) if meet > 1 else None

    def __call__(self, method: str, seconds: float, fault: str | None) -> None:
        if method != self.method:
            return
        with self._lock:
            self._now += 1
            self.calls += 1
            self.most = max(self.most, self._now)
            self.threads.add(threading.current_thread().name)
            meets = self._barrier is not None and self.calls <= self._barrier.parties
        try:
            if meets:
                assert self._barrier is not None
                self._barrier.wait(timeout=60)  # broken (and the change failed) if they never meet
        finally:
            with self._lock:
                self._now -= 1


class FailOnce:
    """A call listener that makes the first call of ``method`` fail (after vCenter carried it out), as a
    fault on the way back would: the change that made it fails, and only that one."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._lock = threading.Lock()
        self.failed = False

    def __call__(self, method: str, seconds: float, fault: str | None) -> None:
        if method != self.method:
            return
        with self._lock:
            first, self.failed = not self.failed, True
        if first:
            raise TransientError(f"injected fault: the first {method} of the test")


# ------------------------------------------------------------------------------------------ host settings

SPEC = """\
vcenter:
  url: {url}
  username: {username}
  passwordEnv: PW
  thumbprint: {thumbprint}
solution:
  key: org.example.pool
  version: "1.0"
agencies:
  - name: pool
    ovf:
      url: http://127.0.0.1:9/pool.ovf
    scope: [/DC0/host/DC0_C0]
    datastore: LocalDS_0
    network: VM Network
"""


@pytest.fixture
def six_hosts(vcsim_factory: Callable[..., VcsimInfo]) -> Iterator[tuple[Session, DesiredState, list[Host]]]:
    """A fresh vcsim with one cluster of six hosts, a session, a spec over that cluster, its hosts."""
    info = vcsim_factory(clusters=1, hosts=6)
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    text = SPEC.format(url=info.url, username=info.username, thumbprint=info.thumbprint)
    desired = load_spec_text(text, env={"PW": info.password})
    with Session(conn) as session:
        hosts = sorted(read_inventory(session).hosts, key=lambda h: h.name)
        assert len(hosts) == 6
        yield session, desired, hosts


def executor(session: Session, desired: DesiredState, tmp: Path, workers: int) -> Executor:
    return Executor.open(desired, session, state_dir=tmp / "state", workers=workers)


def settings_of(host: Host, datastore: MoRef | None = None) -> SetHostSettings:
    """What apply would set on ``host``: its first datastore (or ``datastore``) and first network."""
    return SetHostSettings(
        ScopeHost(host.moref.value, host.name, host.path),
        "pool",
        datastore=HostSetting("LocalDS_0", datastore or host.datastores[0]),
        network=HostSetting("VM Network", host.networks[0]),
    )


def test_hosts_settings_are_set_concurrently_never_more_at_once_than_the_bound(
    six_hosts: tuple[Session, DesiredState, list[Host]], tmp_path: Path
) -> None:
    session, desired, hosts = six_hosts
    pool = executor(session, desired, tmp_path, workers=3)
    listener = InFlight("EsxAgentHostManagerUpdateConfig", meet=3)
    pool.add_call_listener(listener)
    waited: list[float] = []
    pool.add_wait_listener(waited.append)

    outcomes = pool.carry_out_all([settings_of(h) for h in hosts])

    assert [o.error for o in outcomes] == [None] * 6
    # each outcome in the order given, saying which host it set
    for host, outcome in zip(hosts, outcomes, strict=True):
        assert outcome.text is not None and host.path in outcome.text
    assert listener.calls == 6
    assert listener.most == 3  # three met at the barrier, and never a fourth
    assert len(listener.threads) == 3
    assert len(waited) == 1  # the caller waited once, for the whole batch on the pool's threads
    for host in hosts:
        assert get_agent_vm_settings(session, host.moref) == AgentVmSettings(
            datastore=host.datastores[0], network=host.networks[0]
        )
    # what was set is recorded for destroy --host-settings, in one write after the batch
    assert sorted(pool.identity.host_settings()) == sorted(h.moref.value for h in hosts)


def test_a_planned_host_setting_is_one_call_per_host(lab: LabInfo, tmp_path: Path) -> None:
    info = lab.vcsim
    text = SPEC.format(url=info.url, username=info.username, thumbprint=info.thumbprint)
    desired = load_spec_text(text, env={"PW": info.password})
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn) as session:
        hosts = [h for h in read_inventory(session).hosts if h.path.startswith("/DC0/host/DC0_C0/")]
        assert len(hosts) > 1
        pool = executor(session, desired, tmp_path, workers=1)
        plan = Planner(desired, pool).plan(check_packages=False)
        changes = [c for c in plan.changes if isinstance(c, SetHostSettings)]
        assert sorted(c.target for c in changes) == sorted(h.moref.value for h in hosts)
        before = session.stats.snapshot()

        outcomes = pool.carry_out_all(changes)

        calls = session.stats.snapshot() - before
        assert [o.error for o in outcomes] == [None] * len(hosts)
        # the plan's inventory read gave each host's manager and settings: one write each, no read
        assert calls == {"EsxAgentHostManagerUpdateConfig": len(hosts)}
        for host in hosts:
            assert get_agent_vm_settings(session, host.moref) == AgentVmSettings(
                datastore=host.datastores[0], network=host.networks[0]
            )
        assert sorted(pool.identity.host_settings()) == sorted(h.moref.value for h in hosts)


def test_one_worker_sets_the_hosts_one_after_the_other_on_the_callers_thread(
    six_hosts: tuple[Session, DesiredState, list[Host]], tmp_path: Path
) -> None:
    session, desired, hosts = six_hosts
    pool = executor(session, desired, tmp_path, workers=1)
    listener = InFlight("EsxAgentHostManagerUpdateConfig")
    pool.add_call_listener(listener)
    waited: list[float] = []
    pool.add_wait_listener(waited.append)

    outcomes = pool.carry_out_all([settings_of(h) for h in hosts])

    assert [o.error for o in outcomes] == [None] * 6
    assert listener.calls == 6
    assert listener.most == 1
    assert listener.threads == {threading.current_thread().name}
    assert waited == []  # its calls were the caller's own


def test_a_host_that_fails_does_not_stop_the_others_and_is_its_own_outcome(
    six_hosts: tuple[Session, DesiredState, list[Host]], tmp_path: Path
) -> None:
    session, desired, hosts = six_hosts
    pool = executor(session, desired, tmp_path, workers=3)
    broken = hosts[1]
    unmounted = MoRef("Datastore", "datastore-404")  # no host of the lab has it: vCenter refuses
    changes = [settings_of(h, unmounted if h is broken else None) for h in hosts]

    outcomes = pool.carry_out_all(changes, operations=[f"agentvm-test-{i}" for i in range(6)])

    assert [o.change for o in outcomes] == changes
    assert [o.operation for o in outcomes] == [f"agentvm-test-{i}" for i in range(6)]
    failed = outcomes[1]
    assert isinstance(failed.error, ConfigurationError) and failed.text is None
    assert broken.name in str(failed.error) and "datastore-404" in str(failed.error)
    assert [o.error for i, o in enumerate(outcomes) if i != 1] == [None] * 5
    for host in hosts:
        got = get_agent_vm_settings(session, host.moref)
        if host is broken:
            assert got == AgentVmSettings()
        else:
            assert got == AgentVmSettings(datastore=host.datastores[0], network=host.networks[0])
    recorded = SolutionIdentity(pool.identity.directory).host_settings()
    assert sorted(recorded) == sorted(h.moref.value for h in hosts if h is not broken)


def test_a_batch_with_a_correlation_id_per_change_needs_as_many_ids(
    six_hosts: tuple[Session, DesiredState, list[Host]], tmp_path: Path
) -> None:
    session, desired, hosts = six_hosts
    pool = executor(session, desired, tmp_path, workers=3)
    with pytest.raises(ValueError, match=r"2 change\(s\) but 1 correlation id\(s\)"):
        pool.carry_out_all([settings_of(h) for h in hosts[:2]], operations=["only-one"])
    assert all(get_agent_vm_settings(session, h.moref) == AgentVmSettings() for h in hosts)
    with pytest.raises(ConfigurationError, match=r"workers must be 1 or more \(got 0\)"):
        executor(session, desired, tmp_path, workers=0)


# ------------------------------------------------------------------------------------------------- hooks


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py): one cluster of three hosts."""
    return controller_world


def pending_hooks(world: World, workers: int) -> tuple[Solution, AgencyWait]:
    """Carry out apply's changes without its wait (nobody answers), until every agent's provisioned
    hook is pending at once: the solution and the agency's wait, observed."""
    desired = load_spec_text(world.spec.read_text(), env=world.info.env())
    solution = Solution(desired, world.session, workers=workers)
    plan = solution.plan()
    for change in plan.changes:  # what apply carries out before its wait
        if (
            change.agency is None
            or isinstance(change, SetHostSettings | PrepareSwitch | JoinSwitch | PrepareHostNetwork)
            or change.kind in AGENCY_KINDS
        ):
            solution.executor.carry_out(change)
    agency = plan.observation.agencies[0]
    assignment = plan.spec_plan.addresses[agency.name]
    wait = AgencyWait(
        agency.resolved,
        addresses={h.host.moid: h.address for h in assignment.addresses},
        snapshot=plan.observation.snapshot,
    )

    def all_pending() -> bool:
        wait.status = solution.backend.observe(agency.name)
        hooks = wait.status.pending_hooks if wait.status is not None else ()
        return len([a for a in hooks if a.hook and a.hook.state is HookState.PROVISIONED]) == 3

    wait_for(all_pending, "three provisioned hooks pending at once", 120)
    return solution, wait


def test_hooks_of_different_agents_are_answered_concurrently_within_the_bound(world: World) -> None:
    solution, wait = pending_hooks(world, workers=2)
    assert wait.status is not None
    listener = InFlight("ReconfigVM_Task", meet=2)
    marks = InFlight("MarkAsAvailable")
    solution.executor.add_call_listener(listener)
    solution.executor.add_call_listener(marks)
    answers = [solution.executor.hook_answer(wait, a) for a in wait.status.pending_hooks]

    outcomes = solution.executor.carry_out_all(answers)

    assert [o.error for o in outcomes] == [None] * 3
    assert listener.calls == 3 and marks.calls == 3  # each hook once: its values, then MarkAsAvailable
    assert listener.most == 2  # two met at the barrier, never a third
    addresses = {str(a.address) for a in answers}
    assert addresses == {"10.10.0.10", "10.10.0.11", "10.10.0.12"}
    by_vm = {v.moref: v for v in world.agent_vms()}
    for answer in answers:
        assert by_vm[answer.vm].extra_config["guestinfo.fabricIp"] == str(answer.address)
    solution.close()


def test_the_controller_answers_every_due_hook_at_once_each_under_its_own_correlation_id(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    solution, wait = pending_hooks(world, workers=3)
    solution.close()
    caplog.set_level(logging.DEBUG, logger="agentvm.vsphere.session")
    desired = load_spec_text(world.spec.read_text(), env=world.info.env())
    world.controller_session = connect(world.info)
    controller = Controller(desired, world.controller_session, settings=replace(FAST, workers=3))
    listener = InFlight("ReconfigVM_Task", meet=3)  # its first poll answers the three together
    controller.reconciler.add_call_listener(listener)
    world.controller = controller.start()

    wait_for(world.all_green, "the controller to answer the hooks and turn green", 120)

    answered = world.events(type="action", action="answer-hook")
    assert len(answered) == 3, answered
    assert listener.calls == 3 and listener.most == 3
    cids = [str(e["correlation_id"]) for e in answered]
    assert len(set(cids)) == 3
    assert {e["host"] for e in answered} == {h.moid for h in wait.resolved.hosts}
    # the calls of each answer carried its own correlation id, on whichever thread made them
    lines = [r.getMessage() for r in caplog.records if r.name == "agentvm.vsphere.session"]
    opids = [m.groups() for m in map(re.compile(r" (\w+) on \S+ \(opId (\S+)\)$").search, lines) if m]
    for cid in cids:
        methods = [m for m, opid in opids if opid.startswith(f"{cid}-")]
        assert methods.count("ReconfigVM_Task") == 1 and methods.count("MarkAsAvailable") == 1, (cid, methods)


def test_a_hook_answer_that_fails_is_reported_and_the_others_of_its_poll_are_answered(world: World) -> None:
    solution, wait = pending_hooks(world, workers=3)
    solution.close()
    desired = load_spec_text(world.spec.read_text(), env=world.info.env())
    world.controller_session = connect(world.info)
    controller = Controller(desired, world.controller_session, settings=replace(FAST, workers=3))
    controller.reconciler.add_call_listener(FailOnce("ReconfigVM_Task"))
    world.controller = controller.start()

    wait_for(world.all_green, "the controller to answer the hooks and turn green", 120)

    events = sorted(world.events(type="action", action="answer-hook"), key=lambda e: int(str(e["id"])))
    failed = [e for e in events if e["level"] == "error"]
    answered = [e for e in events if e["level"] == "info"]
    assert len(failed) == 1, events
    assert "injected fault" in str(failed[0]["message"]) and failed[0]["data"] == {
        "action": "answer-hook",
        "failed": True,
    }
    # the other two hooks of that poll were answered all the same, the failed one on a later poll (a
    # correlation id of its own), and each hook once
    assert len(answered) == 3, events
    assert {e["host"] for e in answered} == {h.moid for h in wait.resolved.hosts}
    retried = next(e for e in answered if e["host"] == failed[0]["host"])
    others = [e for e in answered if e is not retried]

    def number(event: dict[str, object]) -> int:  # correlation ids are <prefix>-<n>, n counting up
        return int(str(event["correlation_id"]).rsplit("-", 1)[1])

    first_poll = sorted(number(e) for e in [failed[0], *others])
    assert first_poll == list(range(first_poll[0], first_poll[0] + 3))  # one batch: three ids in a row
    assert number(retried) > first_poll[-1]
