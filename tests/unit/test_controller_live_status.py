"""``controller.status.LiveStatus``: the controller's rows and counts, kept from poll to poll, are what the
poll would make from scratch (the addresses its agent VMs carry, else the planned ones; ``host_rows``;
``count_states``), whatever changed between polls, the inventory read included."""

from __future__ import annotations

from ipaddress import IPv4Address
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from agentvm.backends.base import AgencyStatus
from agentvm.controller.observe import ADDRESS_KEY, read_addresses
from agentvm.controller.status import LiveStatus
from agentvm.core.heal import HostConditions, count_states
from agentvm.core.progress import host_rows
from agentvm.model.agency import (
    AgencyRuntime,
    AgentRuntime,
    GoalState,
    HookState,
    MoRef,
    PowerState,
    Status,
    VmHook,
)
from agentvm.model.desired import ScopeHost
from agentvm.model.inventory import Host, InventorySnapshot, VirtualMachine

HOSTS = 5
HOST_LIST = tuple(ScopeHost(moid=f"host-{i}", name=f"H{i}", path=f"/DC0/host/C0/H{i}") for i in range(HOSTS))


def _vm(i: int) -> MoRef:
    return MoRef("VirtualMachine", f"vm-{i}")


@st.composite
def snapshots(draw: st.DrawFn) -> InventorySnapshot:
    carried = st.sampled_from([None, "10.0.0.1", "10.0.0.2", "not an address"])
    vms = []
    for i in range(HOSTS + 1):
        text = draw(carried)
        extra = MappingProxyType({ADDRESS_KEY: text} if text is not None else {})
        vms.append(
            VirtualMachine(_vm(i), f"vm {i}", "", host=MoRef("HostSystem", f"host-{i}"), extra_config=extra)
        )
    hosts = tuple(
        Host(MoRef("HostSystem", f"host-{i}"), f"H{i}", "", in_maintenance_mode=draw(st.booleans()))
        for i in range(HOSTS)
    )
    return InventorySnapshot(hosts=hosts, vms=tuple(vms))


@st.composite
def statuses(draw: st.DrawFn) -> AgencyStatus:
    agents = []
    for i in sorted(draw(st.sets(st.integers(0, HOSTS - 1)))):
        hook = draw(st.sampled_from([None, VmHook(_vm(HOSTS), HookState.PROVISIONED)]))
        agents.append(
            AgentRuntime(
                f"agent-{i}",
                "agency-1",
                MoRef("HostSystem", f"host-{i}"),
                f"H{i}",
                GoalState.ENABLED,
                draw(st.sampled_from(list(Status))),
                draw(st.sampled_from(list(PowerState))),
                f"vm {i}",
                draw(st.sampled_from([None, _vm(i)])),
                hook=hook,
            )
        )
    return AgencyStatus(
        "agency-1", "a", AgencyRuntime("agency-1", GoalState.ENABLED, Status.GREEN), tuple(agents)
    )


POLLS = st.tuples(
    statuses(),
    st.sampled_from([None, *[HOST_LIST[:n] for n in range(HOSTS + 1)]]),
    st.dictionaries(st.sampled_from([h.moid for h in HOST_LIST]), st.sampled_from([IPv4Address("10.0.0.9")])),
    st.frozensets(st.sampled_from(["agent-0", "agent-1"])),
)


@given(st.lists(snapshots(), min_size=1, max_size=2), st.lists(POLLS, min_size=1, max_size=5), st.data())
def test_kept_rows_and_counts_are_what_the_poll_makes_from_scratch(
    reads: list[InventorySnapshot], polls: list[tuple[object, ...]], data: st.DataObject
) -> None:
    live = LiveStatus()
    for status, hosts, planned, flapping in polls:
        assert (
            isinstance(status, AgencyStatus) and isinstance(planned, dict) and isinstance(flapping, frozenset)
        )
        scope = hosts if isinstance(hosts, tuple) else ()
        snapshot = data.draw(st.sampled_from(reads))
        report = live.report("a", status, scope, planned, snapshot)
        addresses = read_addresses(snapshot, status)
        for agent in status.agents:
            if planned.get(agent.host.value) is not None and agent.vm is not None and agent.hook is None:
                addresses.setdefault(agent.host.value, planned[agent.host.value])
        assert report.hosts == host_rows("a", status, scope, addresses, snapshot)
        conditions = HostConditions.of(snapshot.hosts)
        counted = live.counts(status, conditions, flapping, frozenset())
        assert counted == count_states(status.agents, conditions, flapping=flapping)
