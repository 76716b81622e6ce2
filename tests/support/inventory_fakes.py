"""A hand-made vCenter inventory and EAM agents, as the observation of the one-shot solution sees them."""

from __future__ import annotations

from agentvm.model.agency import AgentRuntime, GoalState, MoRef, PowerState, Status
from agentvm.model.inventory import Cluster, Datacenter, Datastore, Host, InventorySnapshot, Network

DC = MoRef("Datacenter", "datacenter-2")
DS = MoRef("Datastore", "datastore-1")
NET = MoRef("Network", "network-7")


def snapshot(hosts_per_cluster: int = 3, *, hidden_datastore_on: str | None = None) -> InventorySnapshot:
    """DC0 with two clusters of ``hosts_per_cluster`` hosts, one datastore and one network every host sees
    (except ``hidden_datastore_on``, which sees no datastore)."""
    clusters, hosts = [], []
    for c in range(2):
        cref = MoRef("ClusterComputeResource", f"domain-c{c}")
        members = []
        for h in range(hosts_per_cluster):
            href = MoRef("HostSystem", f"host-{c}{h}")
            members.append(href)
            name = f"DC0_C{c}_H{h}"
            hosts.append(
                Host(
                    href,
                    name,
                    f"/DC0/host/DC0_C{c}/{name}",
                    datacenter=DC,
                    parent=cref,
                    cluster=cref,
                    datastores=() if name == hidden_datastore_on else (DS,),
                    networks=(NET,),
                )
            )
        clusters.append(
            Cluster(cref, f"DC0_C{c}", f"/DC0/host/DC0_C{c}", datacenter=DC, hosts=tuple(members))
        )
    return InventorySnapshot(
        datacenters=(Datacenter(DC, "DC0", "/DC0"),),
        clusters=tuple(clusters),
        hosts=tuple(hosts),
        datastores=(Datastore(DS, "LocalDS_0", "/DC0/datastore/LocalDS_0", datacenter=DC),),
        networks=(Network(NET, "VM Network", "/DC0/network/VM Network", datacenter=DC),),
    )


def agent(host: str, **fields: object) -> AgentRuntime:
    """A green, powered-on agent of agency-1 on ``host``; ``fields`` override any of its values."""
    values: dict[str, object] = {
        "agent": f"agent-{host}",
        "agency": "agency-1",
        "host": MoRef("HostSystem", host),
        "host_name": host,
        "goal_state": GoalState.ENABLED,
        "status": Status.GREEN,
        "power_state": PowerState.POWERED_ON,
        "vm_name": f"contrail-vm ({host})",
        "vm": MoRef("VirtualMachine", f"vm-{host}"),
    }
    values.update(fields)
    return AgentRuntime(**values)  # type: ignore[arg-type]
