"""The controller's heals that EAM does not do, with the direct backend (agentvm's own engine, no EAM).

An agent VM moved to another host by hand is moved back by ``agentvm run --backend direct`` as it is through
EAM (``test_controller.py``): the engine, like EAM, does not undo an administrator's move; the controller
finds it from vCenter's ``runtime.host`` and relocates the VM back.
"""

from __future__ import annotations

import time

import jsonschema
import pytest

from agentvm.controller.status import status_schema
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.inventory import VirtualMachine
from tests.integration.test_controller import _host_doc, _relocate, wait_for
from tests.integration.test_controller_direct import Direct, direct, green

pytestmark = pytest.mark.lab

__all__ = ["direct"]  # the fixture, used by name


def test_the_direct_backend_moves_a_relocated_agent_vm_back(direct: Direct, vcsim: VcsimInfo) -> None:
    controller = direct.start()
    vms = wait_for(lambda: green(direct, controller), "six agents green with the direct backend", 120)
    victim, other = vms[0], vms[1]
    assert victim.host is not None and other.host is not None and victim.host != other.host
    first = controller.events.last_id
    started = time.monotonic()
    _relocate(direct.session, victim, other.host)

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
        lambda: _host_doc(dict(controller.status()), victim.host.value).get("state") == "green",  # type: ignore[union-attr]
        "the host green again",
        30,
    )
