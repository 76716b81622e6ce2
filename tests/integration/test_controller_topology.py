"""A topology change re-plans from the objects it names, not from a read of the whole inventory.

On the lab (vcsim + the lab's EAM): a host added to the cluster in scope is read with what it brings along
(its cluster, datastores and networks) in one ``RetrievePropertiesEx``, at 3 and at 12 hosts alike, and
gets its agent as before. The full read stays the safety net: a topology update lost on the way is seen
by the next full read, never lost.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from agentvm.controller.events import EventLog
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.reconcile import Reconciler
from agentvm.controller.run import Settings
from agentvm.controller.watch import InventoryWatch
from agentvm.core.inventory_patch import InventoryDelta
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.inventory import VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.hosts import add_host
from tests.support.controller_lab import Calls, World, connect, lab_world, wait_for, without_host_network

pytestmark = pytest.mark.lab

# the periodic full read far apart, so that what the change costs is what is counted
QUIET = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=120.0, retry_max=1.0, sweep_per_minute=6.0)


@pytest.mark.parametrize("hosts", [3, 12])
def test_a_host_added_re_plans_reading_only_that_hosts_objects(tmp_path: Path, hosts: int) -> None:
    with lab_world(tmp_path, hosts) as world:
        world.spec.write_text(without_host_network(world.spec.read_text()))  # the inventory reads alone
        controller = world.start(settings=QUIET)
        calls = Calls()
        controller.reconciler.add_call_listener(calls)
        wait_for(world.all_green, f"{hosts} agents green", 240)
        wait_for(lambda: world.one_agent_per_host(hosts), f"{hosts} agent VMs")
        keeper = controller.reconciler.inventory
        # a resync reads the whole inventory: from then on, only what changes is named
        read_before = keeper.full_reads
        controller.resync({})
        wait_for(lambda: keeper.full_reads > read_before, "the resync's full read", 30)
        full_reads, patches = keeper.full_reads, keeper.patches
        snapshot = world.snapshot()
        cluster = snapshot.find_cluster("/DC0/host/DC0_C0")
        everything = len(snapshot.hosts) + len(snapshot.vms) + len(snapshot.datastores)

        before = Counter(calls.counts)
        new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")

        def agent_on_new_host() -> VirtualMachine | None:
            for vm in world.agent_vms():
                if vm.host == new_host and vm.power_state is PowerState.POWERED_ON:
                    return vm
            return None

        wait_for(agent_on_new_host, "an agent VM on the new host", 120)
        wait_for(lambda: world.one_agent_per_host(hosts + 1), "exactly one agent per host")
        added = calls.since(before)

        assert keeper.full_reads == full_reads, "no read of the whole inventory"
        assert keeper.patches > patches
        read = set(keeper.last_read)
        after = world.snapshot()
        host = after.find_host(new_host.value)
        # the new host and what it brings along (its cluster and that one's resource pool, its datastores
        # and networks) and, when a second batch came, its new agent VM: nothing else, whatever the size
        along = {new_host, cluster.moref, *host.datastores, *host.networks}
        along.update(vm.moref for vm in after.vms_on(new_host))
        if cluster.resource_pool is not None:
            along.add(cluster.resource_pool)
        assert {r.value for r in along} >= {r.value for r in read} >= {new_host.value, cluster.moref.value}
        assert len(read) <= 8 < everything, (read, everything)
        # one per patch, and one more for the new agent VM's hook
        assert added["RetrievePropertiesEx"] <= 2 * (keeper.patches - patches) + 1, added
        assert "CreateContainerView" not in added, added
        assert keeper.snapshot is not None and keeper.snapshot.get(new_host) is not None


def test_a_dropped_topology_update_is_healed_by_the_next_full_read(tmp_path: Path) -> None:
    with lab_world(tmp_path, 3) as world:
        desired = load_spec(world.spec, env=world.info.env())
        session = connect(world.info)
        now = [time.monotonic()]
        watch = InventoryWatch(world.session, lambda batch: None, lambda exc: None).start()
        dropping = [False]
        dropped: set[MoRef] = set()

        def named() -> InventoryDelta:  # the watch, with every update dropped while ``dropping``
            delta = watch.inventory_delta()
            if not dropping[0]:
                return delta
            dropped.update(delta.changed)
            return InventoryDelta()

        reconciler = Reconciler(
            desired,
            session,
            events=EventLog(),
            metrics=ControllerMetrics(agencies=[a.name for a in desired.agencies]),
            inventory=named,
            clock=lambda: now[0],
        )
        calls = Calls()
        reconciler.add_call_listener(calls)
        try:
            wait_for(lambda: watch.connected, "the watch's first batch", 30)
            _heal_until_green(world, reconciler, now, 3)
            reconciler.full_pass()  # a full read once every host's settings are set: nothing named since
            keeper = reconciler.inventory
            cluster = world.snapshot().find_cluster("/DC0/host/DC0_C0")
            dropping[0] = True
            new_host = add_host(world.session, cluster.moref, "esx-new.lab", username="root", password="x")
            wait_for(lambda: named().empty and new_host in dropped, "the watch to name the new host", 30)

            # a re-plan patches only what it is told: the host stays unseen, and nothing is done for it
            before, full_reads = Counter(calls.counts), keeper.full_reads
            reconciler.full_pass(sweep=False, read=False)
            replanned = calls.since(before)
            assert keeper.snapshot is not None and keeper.snapshot.get(new_host) is None
            assert replanned["EsxAgentHostManagerUpdateConfig"] == 0, replanned
            assert keeper.full_reads == full_reads

            # the periodic full read: the host is seen, its AgentVM settings set, and it gets its agent
            dropping[0] = False
            before = Counter(calls.counts)
            reconciler.full_pass(sweep=False, read=True)
            healed = calls.since(before)
            assert keeper.full_reads == full_reads + 1
            assert keeper.snapshot is not None and keeper.snapshot.get(new_host) is not None
            assert healed["EsxAgentHostManagerUpdateConfig"] == 1, healed
            _heal_until_green(world, reconciler, now, 4)
            assert any(vm.host == new_host for vm in world.agent_vms())
        finally:
            watch.stop()
            reconciler.close()
            session.logout()


def _heal_until_green(world: World, reconciler: Reconciler, now: list[float], agents: int) -> None:
    """Run the reconciler as the controller would, its clock following real time, until all is green."""
    deadline = time.monotonic() + 180
    reconciler.full_pass()
    while True:
        now[0] = max(now[0], time.monotonic())
        reconciler.poll()
        report = reconciler.report
        vms = world.agent_vms()
        if (
            report.agencies
            and all(a.status.green for a in report.agencies)
            and len(vms) == agents
            and all(v.power_state is PowerState.POWERED_ON for v in vms)
        ):
            return
        assert time.monotonic() < deadline, "timed out waiting for the reconciler to turn green"
        time.sleep(0.2)
