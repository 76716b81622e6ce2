"""A task wait costs one read when the task has ended already; waits for running tasks share one property
collector per session (one ModifyListView each and a share of its WaitForUpdatesEx), under concurrency,
after a re-login, and for a task that ends before it is added.

vcsim's tasks end before their call returns, so the shared collector is exercised with a ``TaskWaiter``
that does not read first (``read_first=False``)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import TransientError
from agentvm.vsphere import vms
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import TaskWaiter, wait_for_task

pytestmark = pytest.mark.lab

_TASK_METHODS = ("PowerOnVM_Task", "PowerOffVM_Task", "Destroy_Task")


@pytest.fixture
def small(vcsim_factory: Callable[..., VcsimInfo]) -> VcsimInfo:
    return vcsim_factory(clusters=1, hosts=4, vms=2)


def _connect(info: VcsimInfo) -> Session:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    return Session.connect(conn, timeout=30)


@pytest.fixture
def session(small: VcsimInfo) -> Iterator[Session]:
    s = _connect(small)
    try:
        yield s
    finally:
        s.logout()


def _vms(session: Session) -> list[MoRef]:
    return sorted((v.moref for v in read_inventory(session).vms), key=lambda m: m.value)


def _wait_calls(since: Counter[str], now: Counter[str]) -> Counter[str]:
    """The calls made between two snapshots, without the tasks' own methods (the wait's cost only)."""
    out = Counter({k: v - since.get(k, 0) for k, v in now.items() if v - since.get(k, 0) > 0})
    for method in _TASK_METHODS:
        out.pop(method, None)
    return out


def test_a_task_that_has_ended_costs_one_read(session: Session) -> None:
    vm = _vms(session)[0]
    before = session.stats.snapshot()
    waits = 6
    for i in range(waits):
        mo = session.mo(vm)
        task = mo.PowerOffVM_Task() if i % 2 == 0 else mo.PowerOnVM_Task()
        assert wait_for_task(session, task, what=f"power {vm.value}", timeout=30) is None
    calls = _wait_calls(before, session.stats.snapshot())
    assert calls == Counter({"RetrievePropertiesEx": waits}), calls
    assert vms.power_state(session, vm) is PowerState.POWERED_ON


def test_waits_in_turn_share_one_collector_and_cost_two_calls_each(session: Session) -> None:
    vm = _vms(session)[0]
    waiter = TaskWaiter(session, read_first=False)
    before = session.stats.snapshot()
    waits = 6
    for i in range(waits):
        mo = session.mo(vm)
        task = mo.PowerOffVM_Task() if i % 2 == 0 else mo.PowerOnVM_Task()
        waiter.wait(task, what=f"power {vm.value}", timeout=30)
    calls = _wait_calls(before, session.stats.snapshot())
    assert calls["CreatePropertyCollector"] == 1, calls
    assert calls["DestroyPropertyCollector"] == 0, calls
    # a collector, its view and its filter once; then one ModifyListView and one wake-up a wait
    assert sum(calls.values()) <= 3 + 2 * waits, calls
    assert calls["ModifyListView"] == waits - 1, calls  # the first wait's task is in the view it creates
    assert vms.power_state(session, vm) is PowerState.POWERED_ON


def test_concurrent_waits_each_get_their_own_task(session: Session) -> None:
    morefs = _vms(session)
    assert len(morefs) == 8
    waiter = TaskWaiter(session, read_first=False)
    before = session.stats.snapshot()
    start = threading.Barrier(len(morefs))
    errors: list[BaseException] = []

    def power_off(vm: MoRef) -> None:
        try:
            task = session.mo(vm).PowerOffVM_Task()
            start.wait(10)
            waiter.wait(task, what=f"power off {vm.value}", timeout=30)
            task = session.mo(vm).PowerOnVM_Task()
            waiter.wait(task, what=f"power on {vm.value}", timeout=30)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=power_off, args=(vm,)) for vm in morefs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(vms.power_state(session, vm) is PowerState.POWERED_ON for vm in morefs)
    calls = _wait_calls(before, session.stats.snapshot())
    assert calls["CreatePropertyCollector"] == 1, calls
    # 16 waits: at most one ModifyListView each (one more for a wait that raced the collector's creation)
    assert calls["ModifyListView"] <= 2 * len(morefs), calls


@pytest.mark.parametrize("read_first", [True, False])
def test_a_task_already_finished_and_a_failed_task(
    session: Session, small: VcsimInfo, read_first: bool
) -> None:
    vm = _vms(session)[0]
    waiter = TaskWaiter(session, read_first=read_first)
    task = session.mo(vm).PowerOffVM_Task()
    other = _connect(small)
    try:  # another session sees it end first: it has ended when this session starts waiting
        wait_for_task(other, other.mo(MoRef("Task", task._moId)), what="power off, seen elsewhere")
    finally:
        other.logout()
    assert waiter.wait(task, what=f"power off {vm.value}", timeout=30) is None
    task = session.mo(vm).PowerOffVM_Task()  # off already: the task fails
    with pytest.raises(TransientError) as caught:
        waiter.wait(task, what=f"power off {vm.value} again", timeout=30)
    assert "power off vm" in str(caught.value) and "InvalidPowerState" in str(caught.value)
    # the failed wait left the collector usable
    assert waiter.wait(session.mo(vm).PowerOnVM_Task(), what="power on", timeout=30) is None


def test_a_session_that_expired_gets_a_new_collector(session: Session, small: VcsimInfo) -> None:
    vm = _vms(session)[0]
    waiter = TaskWaiter(session, read_first=False)
    waiter.wait(session.mo(vm).PowerOffVM_Task(), what="power off", timeout=30)
    key = session.content.sessionManager.currentSession.key
    admin = _connect(small)
    try:
        admin.content.sessionManager.TerminateSession([key])
    finally:
        admin.logout()
    before = session.stats.snapshot()
    waiter.wait(session.mo(vm).PowerOnVM_Task(), what="power on", timeout=30)
    calls = _wait_calls(before, session.stats.snapshot())
    assert calls["Login"] == 1, calls
    assert calls["CreatePropertyCollector"] == 1, calls  # the old one died with the old session
    assert vms.power_state(session, vm) is PowerState.POWERED_ON
