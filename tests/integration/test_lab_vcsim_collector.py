"""The lab vcsim's own WaitForUpdatesEx (``batchingCollector`` in ``lab/vcsim/batching.go``): it reports the
difference from what it reported before (enter, modify with only the changed properties, leave), and task
churn on other objects reports nothing to an inventory watch. (A host added to a cluster is still not
reported: 0.24.2's container views never take it in; see ``VSphereInfrastructure``.)"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pyVmomi import vim

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere import vms
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task
from agentvm.vsphere.watch import WatchChange, WatchChangeKind, Watcher, WatchSpec

pytestmark = pytest.mark.lab

SPECS = (
    WatchSpec(vim.HostSystem, ("runtime.inMaintenanceMode",)),
    WatchSpec(vim.VirtualMachine, ("runtime.powerState", "name")),
)


@pytest.fixture
def session(vcsim_factory: Callable[..., VcsimInfo]) -> Iterator[Session]:
    info = vcsim_factory(clusters=1, hosts=2, vms=1)
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn) as s:
        yield s


def changes_until(
    watch: Watcher, wanted: Callable[[list[WatchChange]], bool], timeout: float = 15
) -> list[WatchChange]:
    """Poll until the changes seen so far satisfy ``wanted``; all of them (AssertionError on timeout)."""
    seen: list[WatchChange] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(watch.poll())
        if wanted(seen):
            return seen
    raise AssertionError(f"not seen within {timeout} s; got {seen}")


def test_watch_reports_enter_modify_and_leave(session: Session) -> None:
    inventory: InventorySnapshot = read_inventory(session)
    first, second = inventory.vms[0], inventory.vms[1]
    with Watcher(session, SPECS, max_wait_seconds=1) as watch:
        initial = watch.poll()
        assert {c.moref for c in initial} == {v.moref for v in (*inventory.vms, *inventory.hosts)}
        assert all(c.kind is WatchChangeKind.ENTER for c in initial)

        vms.ensure_powered_off(session, first.moref)
        seen = changes_until(watch, lambda cs: any(c.moref == first.moref for c in cs))
        (change,) = [c for c in seen if c.moref == first.moref]
        assert change.kind is WatchChangeKind.MODIFY
        assert dict(change.properties) == {"runtime.powerState": "poweredOff"}  # only what changed
        assert second.moref not in {c.moref for c in seen}  # untouched objects are not reported

        vms.destroy(session, second.moref)
        seen = changes_until(watch, lambda cs: any(c.moref == second.moref for c in cs))
        assert [c.kind for c in seen if c.moref == second.moref][-1] is WatchChangeKind.LEAVE

        source = session.mo(first.moref)
        task = source.CloneVM_Task(
            folder=source.parent, name="clone", spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())
        )
        clone = wait_for_task(session, task, what="clone")
        seen = changes_until(watch, lambda cs: any(c.moref.value == clone._moId for c in cs))
        (entered,) = [c for c in seen if c.moref.value == clone._moId]
        assert entered.kind is WatchChangeKind.ENTER
        assert entered.properties["name"] == "clone"


def test_task_churn_elsewhere_reports_nothing(session: Session) -> None:
    vm = read_inventory(session).vms[0].moref
    with Watcher(
        session, [WatchSpec(vim.HostSystem, ("runtime.inMaintenanceMode",))], max_wait_seconds=1
    ) as watch:
        watch.poll()  # the initial state
        for _ in range(3):  # tasks, the task manager and VMs change; no host does
            vms.ensure_powered_off(session, vm)
            vms.ensure_powered_on(session, vm)
        assert watch.poll() == []
        assert watch.poll() == []
