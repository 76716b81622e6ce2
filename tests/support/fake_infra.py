"""An in-memory ``engine.infra.Infrastructure``: clusters, hosts, agent VMs and power states, no vSphere.

A test double for the engine's unit tests. Tests build a world (``add_cluster``), then act as a user or
as vCenter would (``user_power_off``, ``delete_vm``, ``enter_maintenance``, ``add_host``,
``make_unreachable``…) and look at what the engine did (``vms``, ``calls``). Every change bumps the
generation, as the WaitForUpdatesEx watcher of the real implementation does.

The engine runs a step's actions concurrently: every action counts itself in flight (``max_in_flight``,
``max_in_flight_by_cluster``, ``max_deploys_in_flight``) and, after ``hold()``, waits at its start until
``let_finish`` lets it go, so that a test sees a step with its actions in flight.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace

from agentvm.core.agent_state import AgentVm, EngineObservation, VmMarker
from agentvm.engine.api import InvalidUrl
from agentvm.engine.infra import DeployError, InfraError, OvfInvalid, OvfUnreachable
from agentvm.model.agency import MoRef, OvfProperty, PowerState
from agentvm.model.inventory import ConnectionState, Host, HostPowerState

DATACENTER = MoRef("Datacenter", "datacenter-1")
VM_FOLDER = MoRef("Folder", "group-v1")
NETWORK = MoRef("Network", "network-1")
SHARED_DS = MoRef("Datastore", "datastore-shared")


@dataclass
class FakeVm:
    vm: MoRef
    name: str
    host: MoRef
    power: PowerState
    marker: VmMarker
    ovf_url: str
    properties: tuple[OvfProperty, ...]
    datastore: MoRef
    network: MoRef
    folder: MoRef | None
    pool: MoRef | None
    pinned_to: MoRef | None = None
    ha_top: bool = False
    autostart_on: MoRef | None = None  # start_with_host: the host whose autostart starts it first
    complete: bool = True  # False: an import that never finished (what a crash mid-import leaves)


class FakeInfra:
    """The fake vSphere. Thread-safe enough for an engine stepping in one thread and API calls in another."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._next = 1
        self.clusters: dict[MoRef, list[MoRef]] = {}
        self.pools: dict[MoRef, MoRef] = {}
        self.hosts: dict[MoRef, Host] = {}
        self.vms: dict[MoRef, FakeVm] = {}
        self.names: dict[MoRef, str] = {NETWORK: "VM Network", SHARED_DS: "shared"}
        self.unreachable: set[str] = set()
        self.malformed: set[str] = set()
        self.refused: set[str] = set()  # OVF URLs whose import vCenter refuses (a plain DeployError)
        self.flaky: set[str] = set()  # OVF URLs whose import fails for a transient reason (InfraError)
        # called once in the middle of the next observe (after the scope is read): what another thread
        # does while a step looks at vSphere
        self.during_observe: Callable[[], None] | None = None
        self.power_fails: set[MoRef] = set()  # VMs whose power-on/off fails for a transient reason
        self.down = False  # vCenter unreachable: observe fails
        self.calls: Counter[str] = Counter()
        self.power_log: list[tuple[str, MoRef]] = []  # ("on"/"off"/"deploy"/"destroy", vm) in order
        # concurrency, as the engine's actions see it (guarded by _cond)
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_cluster: Counter[MoRef] = Counter()
        self.max_in_flight_by_cluster: Counter[MoRef] = Counter()
        self.deploys_in_flight = 0
        self.max_deploys_in_flight = 0
        self._held = False
        self._passes = 0  # held actions allowed to go on

    # ------------------------------------------------------------------------------- world building
    def _id(self, prefix: str) -> str:
        with self._cond:
            value = f"{prefix}-{self._next}"
            self._next += 1
            return value

    # ------------------------------------------------------------------------------- concurrency
    def hold(self) -> None:
        """From now on every action waits at its start (counted in flight) until ``let_finish``."""
        with self._cond:
            self._held = True

    def let_finish(self, count: int | None = None) -> None:
        """Let ``count`` held actions go on (None: all of them, and hold no more)."""
        with self._cond:
            if count is None:
                self._held = False
            else:
                self._passes += count
            self._cond.notify_all()

    def wait_in_flight(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` actions are in flight at once; False if that did not happen in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight == count, timeout=timeout)

    def reset_concurrency(self) -> None:
        with self._cond:
            self.max_in_flight = self.max_deploys_in_flight = 0
            self.max_in_flight_by_cluster.clear()

    def _cluster(self, host: MoRef | None) -> MoRef | None:
        h = self.hosts.get(host) if host is not None else None
        return h.parent if h is not None else host

    @contextlib.contextmanager
    def _action(self, host: MoRef | None, *, deploy: bool = False) -> Iterator[None]:
        cluster = self._cluster(host)
        with self._cond:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if cluster is not None:
                self.in_flight_by_cluster[cluster] += 1
                self.max_in_flight_by_cluster[cluster] = max(
                    self.max_in_flight_by_cluster[cluster], self.in_flight_by_cluster[cluster]
                )
            if deploy:
                self.deploys_in_flight += 1
                self.max_deploys_in_flight = max(self.max_deploys_in_flight, self.deploys_in_flight)
            self._cond.notify_all()
            while self._held and self._passes == 0:
                self._cond.wait()
            if self._held:
                self._passes -= 1
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= 1
                if cluster is not None:
                    self.in_flight_by_cluster[cluster] -= 1
                if deploy:
                    self.deploys_in_flight -= 1
                self._cond.notify_all()

    def _vm_host(self, vm: MoRef) -> MoRef | None:
        v = self.vms.get(vm)
        return v.host if v is not None else None

    def _changed(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def add_cluster(self, hosts: int, *, agent_settings: bool = True, version: str = "8.0.2") -> MoRef:
        cluster = MoRef("ClusterComputeResource", self._id("domain-c"))
        self.clusters[cluster] = []
        self.pools[cluster] = MoRef("ResourcePool", self._id("resgroup"))
        for _ in range(hosts):
            self.add_host(cluster, agent_settings=agent_settings, version=version)
        return cluster

    def add_host(
        self,
        cluster: MoRef,
        *,
        agent_settings: bool = True,
        version: str = "8.0.2",
        maintenance: bool = False,
    ) -> MoRef:
        host = MoRef("HostSystem", self._id("host"))
        local = MoRef("Datastore", f"datastore-{host.value}")
        self.names[local] = f"local-{host.value}"
        self.hosts[host] = Host(
            moref=host,
            name=f"esx-{host.value}.lab",
            path=f"/DC0/host/{cluster.value}/{host.value}",
            datacenter=DATACENTER,
            parent=cluster,
            cluster=cluster,
            in_maintenance_mode=maintenance,
            datastores=(local, SHARED_DS),
            networks=(NETWORK,),
            product_version=version,
            product_line_id="esx",
            agent_vm_datastore=local if agent_settings else None,
            agent_vm_network=NETWORK if agent_settings else None,
        )
        self.clusters[cluster].append(host)
        self._changed()
        return host

    def _set_host(self, host: MoRef, **changes: object) -> None:
        self.hosts[host] = replace(self.hosts[host], **changes)  # type: ignore[arg-type]
        self._changed()

    # ------------------------------------------------------------------------ what users and vCenter do
    def remove_host(self, host: MoRef) -> None:
        """The host leaves vCenter, and its VMs with it."""
        for cluster_hosts in self.clusters.values():
            if host in cluster_hosts:
                cluster_hosts.remove(host)
        del self.hosts[host]
        for vm in [v.vm for v in self.vms.values() if v.host == host]:
            del self.vms[vm]
        self._changed()

    def enter_maintenance(self, host: MoRef, *, power_off_agents: bool = False) -> None:
        """``power_off_agents``: vCenter powers the agent VMs off itself, as it does on a real MM entry."""
        if power_off_agents:
            for v in self.vms.values():
                if v.host == host:
                    v.power = PowerState.POWERED_OFF
        self._set_host(host, in_maintenance_mode=True)

    def exit_maintenance(self, host: MoRef) -> None:
        self._set_host(host, in_maintenance_mode=False)

    def set_standby(self, host: MoRef, standby: bool) -> None:
        self._set_host(host, power_state=HostPowerState.STANDBY if standby else HostPowerState.POWERED_ON)

    def disconnect(self, host: MoRef) -> None:
        self._set_host(host, connection_state=ConnectionState.NOT_RESPONDING)

    def reconnect(self, host: MoRef) -> None:
        self._set_host(host, connection_state=ConnectionState.CONNECTED)

    def clear_agent_settings(self, host: MoRef) -> None:
        self._set_host(host, agent_vm_datastore=None, agent_vm_network=None)

    def user_power_off(self, vm: MoRef) -> None:
        self.vms[vm].power = PowerState.POWERED_OFF
        self._changed()

    def user_power_on(self, vm: MoRef) -> None:
        self.vms[vm].power = PowerState.POWERED_ON
        self._changed()

    def user_suspend(self, vm: MoRef) -> None:
        self.vms[vm].power = PowerState.SUSPENDED
        self._changed()

    def delete_vm(self, vm: MoRef) -> None:
        del self.vms[vm]
        self._changed()

    def vms_on(self, host: MoRef) -> list[FakeVm]:
        return [v for v in list(self.vms.values()) if v.host == host]

    # ------------------------------------------------------------------------------- Infrastructure
    def observe(self, scope: Collection[MoRef]) -> EngineObservation:
        self.calls["observe"] += 1
        if self.down:
            raise InfraError("vCenter does not answer")
        wanted = {cr: tuple(self.clusters[cr]) for cr in scope if cr in self.clusters}
        hosts = {h: self.hosts[h] for hs in wanted.values() for h in hs}
        meanwhile, self.during_observe = self.during_observe, None
        if meanwhile is not None:
            meanwhile()
        return EngineObservation(
            scope=wanted,
            hosts=hosts,
            default_pools={cr: self.pools[cr] for cr in wanted},
            default_folders={DATACENTER: VM_FOLDER},
            names=dict(self.names),
        )

    def find_owned_vms(self, namespace: str) -> list[AgentVm]:
        self.calls["find_owned_vms"] += 1
        return [
            AgentVm(v.vm, v.name, v.marker, v.host, v.power, v.ovf_url, complete=v.complete)
            for v in list(self.vms.values())
            if v.marker.namespace == namespace
        ]

    def check_url(self, url: str) -> None:
        self.calls["check_url"] += 1
        if url in self.unreachable:
            raise InvalidUrl(url, "connection refused", connection_refused=True)

    def deploy_agent_vm(
        self,
        *,
        host: MoRef,
        ovf_url: str,
        ovf_properties: Sequence[OvfProperty],
        name: str,
        datastore: MoRef,
        network: MoRef,
        folder: MoRef | None,
        pool: MoRef | None,
        marker: VmMarker,
        disk_provisioning: str | None = None,
    ) -> MoRef:
        with self._action(host, deploy=True):
            return self._deploy(host, ovf_url, ovf_properties, name, datastore, network, folder, pool, marker)

    def _deploy(
        self,
        host: MoRef,
        ovf_url: str,
        ovf_properties: Sequence[OvfProperty],
        name: str,
        datastore: MoRef,
        network: MoRef,
        folder: MoRef | None,
        pool: MoRef | None,
        marker: VmMarker,
    ) -> MoRef:
        self.calls["deploy_agent_vm"] += 1
        h = self.hosts.get(host)
        if h is None or h.connection_state is not ConnectionState.CONNECTED:
            raise InfraError(f"{host} is not reachable")
        # the engine must never deploy onto a host in maintenance mode or standby
        assert not h.in_maintenance_mode and not h.standby, f"deploy onto {host} in MM/standby"
        assert datastore in h.datastores and network in h.networks, "placement the host cannot see"
        if ovf_url in self.unreachable:
            raise OvfUnreachable(ovf_url, "connection refused")
        if ovf_url in self.malformed:
            raise OvfInvalid(ovf_url, ["line 1: not an OVF envelope"])
        if ovf_url in self.refused:
            raise DeployError(f"deploying {name} on {host}: vCenter refused the import")
        if ovf_url in self.flaky:
            raise InfraError(f"deploying {name} on {host}: the upload was cut off; retry")
        # never two agent VMs of one agency on one host, unless one replaces the other (an upgrade); a
        # half-deployed VM is no agent (the engine deletes it)
        mine = [
            v
            for v in self.vms_on(host)
            if v.complete
            and (v.marker.namespace, v.marker.agency_name or v.marker.agency)
            == (marker.namespace, marker.agency_name or marker.agency)
        ]
        assert len(mine) < 2, f"a third VM of {marker.agency} on {host}"
        assert all(v.ovf_url != ovf_url for v in mine), f"a second VM of {marker.agency} on {host}"
        vm = MoRef("VirtualMachine", self._id("vm"))
        self.vms[vm] = FakeVm(
            vm, name, host, PowerState.POWERED_OFF, marker, ovf_url, tuple(ovf_properties),
            datastore, network, folder, pool,
        )  # fmt: skip
        self.power_log.append(("deploy", vm))
        self._changed()
        return vm

    def pin_to_host(self, vm: MoRef, host: MoRef) -> None:
        self.calls["pin_to_host"] += 1
        self.vms[vm].pinned_to = host

    def ha_top_priority(self, vm: MoRef) -> None:
        self.calls["ha_top_priority"] += 1
        self.vms[vm].ha_top = True

    def start_with_host(self, vm: MoRef, host: MoRef) -> None:
        self.calls["start_with_host"] += 1
        self.vms[vm].autostart_on = host

    def power_on(self, vm: MoRef) -> None:
        with self._action(self._vm_host(vm)):
            self._power_on(vm)

    def _power_on(self, vm: MoRef) -> None:
        self.calls["power_on"] += 1
        v = self.vms.get(vm)
        if v is None or vm in self.power_fails:
            raise InfraError(f"{vm} does not exist or cannot be powered on now")
        h = self.hosts[v.host]
        assert not h.in_maintenance_mode and not h.standby, f"power-on on {v.host} in MM/standby"
        v.power = PowerState.POWERED_ON
        self.power_log.append(("on", vm))
        self._changed()

    def power_off(self, vm: MoRef) -> None:
        with self._action(self._vm_host(vm)):
            self._power_off(vm)

    def _power_off(self, vm: MoRef) -> None:
        self.calls["power_off"] += 1
        v = self.vms.get(vm)
        if v is None or vm in self.power_fails:
            raise InfraError(f"{vm} does not exist or cannot be powered off now")
        v.power = PowerState.POWERED_OFF
        self.power_log.append(("off", vm))
        self._changed()

    def destroy_vm(self, vm: MoRef) -> None:
        with self._action(self._vm_host(vm)):
            self._destroy_vm(vm)

    def _destroy_vm(self, vm: MoRef) -> None:
        self.calls["destroy_vm"] += 1
        if self.vms.pop(vm, None) is not None:
            self.power_log.append(("destroy", vm))
            self._changed()

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def wait_for_change(self, since: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != since, timeout=timeout)
            return self._generation
