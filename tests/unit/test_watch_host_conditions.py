"""The inventory watch's host updates become model ``Host`` values, classified by ``HostConditions.of``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.heal import HostConditions
from agentvm.model.agency import MoRef
from agentvm.model.inventory import Host
from agentvm.vsphere.watch import host_runtime

HOST = MoRef("HostSystem", "host-1")
connections = st.sampled_from(["connected", "disconnected", "notResponding", "bogus", None])
powers = st.sampled_from(["poweredOn", "poweredOff", "standBy", "unknown", "bogus", None])
runtime = st.fixed_dictionaries(
    {},
    optional={
        "runtime.inMaintenanceMode": st.booleans(),
        "runtime.connectionState": connections,
        "runtime.powerState": powers,
    },
)


def classify(maintenance: bool, connection: Any, power: Any) -> tuple[bool, bool, bool]:
    """What the wire values mean, from vSphere's definitions: (maintenance, standby, unreachable)."""
    standby = power == "standBy"
    return maintenance, standby, not standby and (connection != "connected" or power != "poweredOn")


@settings(max_examples=100)
@given(st.lists(runtime, min_size=1, max_size=4))
def test_a_host_s_updates_classify_as_the_wire_values_say(updates: list[dict[str, Any]]) -> None:
    host = Host(HOST, "", "")
    state: dict[str, Any] = {
        "runtime.inMaintenanceMode": False,
        "runtime.connectionState": "connected",
        "runtime.powerState": "poweredOn",
    }
    for update in updates:
        state.update(update)
        updated = host_runtime(host, update)
        assert (updated is None) == (not update)
        host = updated or host
    conditions = HostConditions.of([host])
    seen = (HOST in conditions.maintenance, HOST in conditions.standby, HOST in conditions.unreachable)
    assert seen == classify(
        bool(state["runtime.inMaintenanceMode"]),
        state["runtime.connectionState"],
        state["runtime.powerState"],
    )


def test_an_update_without_runtime_properties_changes_nothing() -> None:
    assert host_runtime(Host(HOST, "esx-1", "/DC0/host/esx-1"), {"parent": MoRef("Folder", "f")}) is None


def test_an_update_keeps_what_it_does_not_carry() -> None:
    host = Host(HOST, "esx-1", "/DC0/host/esx-1", in_maintenance_mode=True)
    updated = host_runtime(host, {"runtime.powerState": "standBy"})
    assert updated is not None
    assert (updated.name, updated.in_maintenance_mode, updated.standby) == ("esx-1", True, True)
