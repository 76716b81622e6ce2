"""The controller's heals that EAM does not do, with the direct backend (agentvm's own engine, no EAM).

An agent VM moved to another host by hand is moved back by ``agentvm run --backend direct`` as it is through
EAM (``test_controller.py``): the engine, like EAM, does not undo an administrator's move; the controller
finds it from vCenter's ``runtime.host`` and relocates the VM back.
"""

from __future__ import annotations

import time

import jsonschema
import pytest
from pyVmomi import vim

from agentvm.controller.status import status_schema
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.inventory import VirtualMachine
from agentvm.vsphere.tasks import wait_for_task
from tests.support.controller_lab import World, deployed, host_doc, relocate, wait_for
from tests.support.direct_lab import Direct, green

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


def test_the_direct_backend_moves_a_relocated_agent_vm_back(direct: Direct, vcsim: VcsimInfo) -> None:
    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "six agents green with the direct backend", 120)
    victim, other = vms[0], vms[1]
    assert victim.host is not None and other.host is not None and victim.host != other.host
    first = controller.events.last_id
    started = time.monotonic()
    relocate(direct.session, victim, other.host)

    def host_of(vm: VirtualMachine) -> object:
        return next(v.host for v in direct.agent_vms() if v.moref == vm.moref)

    wait_for(lambda: host_of(victim) == victim.host, "the agent VM moved back to its host", 60)
    print(f"relocation -> moved back (direct): {time.monotonic() - started:.2f} s")
    new = [e.as_json() for e in controller.events.recent(after=first)]
    assert [e for e in new if (e.get("data") or {}).get("action") == "migrate"], new  # type: ignore[union-attr]
    assert len(direct.agent_vms()) == 6, "moved back, not redeployed"
    document = dict(controller.status())
    jsonschema.validate(document, status_schema())
    wait_for(
        lambda: host_doc(dict(controller.status()), victim.host.value).get("state") == "green",  # type: ignore[union-attr]
        "the host green again",
        30,
    )


def test_an_agent_vm_moved_out_of_its_cluster_is_moved_back_into_its_clusters_pool(world: World) -> None:
    vms = deployed(world)
    controller = world.controller
    assert controller is not None
    victim = vms[0]
    assert victim.host is not None and victim.resource_pool is not None
    snapshot = world.snapshot()
    away = snapshot.find_host("/DC0/host/DC0_C1/DC0_C1_H0").moref  # out of the agency's scope
    away_pool = snapshot.find_cluster("/DC0/host/DC0_C1").resource_pool
    assert away_pool is not None
    spec = vim.vm.RelocateSpec(host=world.session.mo(away), pool=world.session.mo(away_pool))
    task = world.session.mo(victim.moref).RelocateVM_Task(spec=spec)
    wait_for_task(world.session, task, what="move the agent VM to another cluster")

    def back() -> VirtualMachine | None:
        vm = world.snapshot().get(victim.moref)
        if (
            isinstance(vm, VirtualMachine)
            and vm.host == victim.host
            and vm.resource_pool == victim.resource_pool
        ):
            return vm
        return None

    wait_for(back, "the agent VM back on its host, in its own cluster's pool", 60)
    wait_for(lambda: world.one_agent_per_host(3), "one agent per host, none redeployed")
