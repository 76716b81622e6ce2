"""A topology change re-plans from the objects it names, not from a read of the whole inventory.

On the lab (vcsim + the lab's EAM): a host added to the cluster in scope is read with what it brings along
(its cluster, datastores and networks) in one ``RetrievePropertiesEx``, at 3 and at 12 hosts alike, and
gets its agent as before; the full read stays the safety net.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agentvm.controller.run import Settings
from agentvm.model.agency import PowerState
from agentvm.model.inventory import VirtualMachine
from agentvm.vsphere.hosts import add_host
from tests.support.controller_lab import Calls, lab_world, wait_for

pytestmark = pytest.mark.lab

# the periodic full read far apart, so that what the change costs is what is counted
QUIET = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=120.0, retry_max=1.0, sweep_per_minute=6.0)


@pytest.mark.parametrize("hosts", [3, 12])
def test_a_host_added_re_plans_reading_only_that_hosts_objects(tmp_path: Path, hosts: int) -> None:
    with lab_world(tmp_path, hosts) as world:
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
        # and networks): nothing else, whatever the size of the inventory
        along = {new_host, cluster.moref, *host.datastores, *host.networks}
        if cluster.resource_pool is not None:
            along.add(cluster.resource_pool)
        assert {r.value for r in along} >= {r.value for r in read} >= {new_host.value, cluster.moref.value}
        assert len(read) <= 8 < everything, (read, everything)
        # one per patch, and one more for the new agent VM's hook
        assert added["RetrievePropertiesEx"] <= 2 * (keeper.patches - patches) + 1, added
        assert "CreateContainerView" not in added, added
        assert keeper.snapshot is not None and keeper.snapshot.get(new_host) is not None
