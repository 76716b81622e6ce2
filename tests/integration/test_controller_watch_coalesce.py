"""The controller's watch hands VM updates that come close together over as one batch (one poll), and
any other batch (a host's condition, the topology) at once, with the VM updates it held."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import pytest

from agentvm.controller.watch import Batch, InventoryWatch
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere import hosts, vms
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

pytestmark = pytest.mark.lab


@pytest.fixture
def session(vcsim_factory: Callable[..., VcsimInfo]) -> Iterator[Session]:
    info = vcsim_factory(clusters=1, hosts=3, vms=1)
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    with Session(conn) as s:
        yield s


def _watch(session: Session, coalesce: float) -> tuple[InventoryWatch, queue.Queue[Batch]]:
    batches: queue.Queue[Batch] = queue.Queue()
    watch = InventoryWatch(session, batches.put, lambda exc: None, coalesce=coalesce).start()
    first = batches.get(timeout=30)
    assert first.first
    return watch, batches


def test_vm_updates_within_the_window_are_one_batch(session: Session) -> None:
    window = 3.0
    morefs = sorted((v.moref for v in read_inventory(session).vms), key=lambda m: m.value)[:3]
    watch, batches = _watch(session, window)
    try:
        started = time.monotonic()
        for vm in morefs:
            vms.ensure_powered_off(session, vm)
        assert time.monotonic() - started < window  # the precondition: all three within one window
        held = batches.get(timeout=30)
        assert set(morefs) <= set(held.vms) and not held.topology
        vms.ensure_powered_on(session, morefs[0])  # a later change: a batch of its own
        later = batches.get(timeout=30)
        assert later.vms == (morefs[0],)
    finally:
        watch.stop()


def test_a_topology_change_is_handed_over_at_once_with_the_vm_updates_held(session: Session) -> None:
    inventory = read_inventory(session)
    vm = inventory.vms[0].moref
    cluster = inventory.clusters[0].moref
    watch, batches = _watch(session, 600.0)  # a window no test waits out
    try:
        vms.ensure_powered_off(session, vm)
        hosts.add_host(session, cluster, "esx-new.example.test", username="root", password="pw")
        batch = batches.get(timeout=30)
        assert batch.topology and vm in batch.vms, batch
    finally:
        watch.stop()
