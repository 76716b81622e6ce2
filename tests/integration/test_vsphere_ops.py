"""Small vSphere operations against vcsim: extensions, host settings, VMs, clusters, tasks, watches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pyVmomi import vim

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import MoRef, PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere import clusters, extensions, hosts, vms
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task
from agentvm.vsphere.watch import WatchChange, WatchChangeKind, Watcher, WatchSpec

pytestmark = pytest.mark.lab


@pytest.fixture
def small(vcsim_factory: Callable[..., VcsimInfo]) -> VcsimInfo:
    return vcsim_factory(clusters=1, hosts=2, vms=1)


@pytest.fixture
def session(small: VcsimInfo) -> Iterator[Session]:
    conn = VCenterConnection(
        url=small.url, username=small.username, password=Secret(small.password), thumbprint=small.thumbprint
    )
    with Session(conn) as s:
        yield s


@pytest.fixture
def inventory(session: Session) -> InventorySnapshot:
    return read_inventory(session)


SPEC = extensions.ExtensionSpec(
    key="com.example.agentvm",
    version="1.0.0",
    label="agentvm",
    summary="one agent VM per host",
    company="Example",
    managed_entity_types=(extensions.ManagedEntityType("agent", "agent VM"),),
)


def test_extension_register_find_update_unregister(session: Session) -> None:
    assert extensions.find_extension(session, SPEC.key) is None
    assert extensions.ensure_extension(session, SPEC) is True
    assert extensions.ensure_extension(session, SPEC) is False  # idempotent
    found = extensions.find_extension(session, SPEC.key)
    assert found is not None and found.version == "1.0.0" and found.managed_entity_types == ("agent",)
    with pytest.raises(ConfigurationError, match="already registered"):
        extensions.register_extension(session, SPEC)
    newer = extensions.ExtensionSpec(key=SPEC.key, version="1.1.0", label="agentvm")
    assert extensions.ensure_extension(session, newer) is True
    found = extensions.find_extension(session, SPEC.key)
    assert found is not None and found.version == "1.1.0"
    assert extensions.unregister_extension(session, SPEC.key) is True
    assert extensions.unregister_extension(session, SPEC.key, missing_ok=True) is False
    with pytest.raises(NotFoundError, match=r"com\.example\.agentvm"):
        extensions.unregister_extension(session, SPEC.key)
    with pytest.raises(NotFoundError):
        extensions.update_extension(session, SPEC)
    with pytest.raises(NotFoundError):
        extensions.set_extension_certificate(session, "com.example.unknown", "x")


def test_agent_vm_settings_set_and_read_back(session: Session, inventory: InventorySnapshot) -> None:
    host = inventory.hosts[0]
    network = next(n for n in inventory.networks if n.moref in host.networks and not n.uplink)
    wanted = hosts.AgentVmSettings(datastore=host.datastores[0], network=network.moref)
    assert hosts.get_agent_vm_settings(session, host.moref) == hosts.AgentVmSettings()
    assert hosts.ensure_agent_vm_settings(session, host.moref, wanted, label=host.describe()) is True
    assert hosts.ensure_agent_vm_settings(session, host.moref, wanted) is False
    got = hosts.get_agent_vm_settings(session, host.moref)
    assert got.datastore is not None and got.datastore.value == host.datastores[0].value
    assert got.network is not None and got.network.value == network.moref.value
    reread = read_inventory(session, kinds={"hosts"}).find_host(host.path)
    assert (
        reread.agent_vm_datastore is not None and reread.agent_vm_datastore.value == host.datastores[0].value
    )


def test_agent_vm_datastore_the_host_cannot_see(session: Session, inventory: InventorySnapshot) -> None:
    host = inventory.hosts[0]
    unseen = hosts.AgentVmSettings(datastore=MoRef("Datastore", "datastore-9999"))
    with pytest.raises(ConfigurationError, match=r"host cannot see") as caught:
        hosts.ensure_agent_vm_settings(session, host.moref, unseen, label=host.describe())
    assert host.path in str(caught.value)


def test_vm_power_extra_config_and_destroy(session: Session, inventory: InventorySnapshot) -> None:
    vm = inventory.vms[0]
    assert vms.ensure_powered_off(session, vm.moref, label=vm.describe()) is True
    assert vms.ensure_powered_off(session, vm.moref) is False
    assert vms.power_state(session, vm.moref) is PowerState.POWERED_OFF
    assert vms.ensure_powered_on(session, vm.moref) is True
    values = {"guestinfo.agentvm.ip": "10.0.0.5", "guestinfo.agentvm.gw": "10.0.0.1"}
    assert vms.ensure_extra_config(session, vm.moref, values) is True
    assert vms.ensure_extra_config(session, vm.moref, values) is False
    assert vms.read_extra_config(session, vm.moref, prefix="guestinfo.agentvm.") == values
    assert vms.destroy(session, vm.moref) is True
    assert vms.destroy(session, vm.moref) is False
    with pytest.raises(NotFoundError):
        vms.power_state(session, vm.moref)


def test_task_error_names_the_object(session: Session, inventory: InventorySnapshot) -> None:
    vm = inventory.vms[0]  # powered on already
    task = session.mo(vm.moref).PowerOnVM_Task()
    with pytest.raises(TransientError) as caught:  # InvalidPowerState is an InvalidState: retry later
        wait_for_task(session, task, what=f"power on {vm.describe()}", timeout=30)
    assert vm.path in str(caught.value) and "InvalidPowerState" in str(caught.value)


def test_cluster_drs_and_ha_overrides(session: Session, inventory: InventorySnapshot) -> None:
    cluster, vm = inventory.clusters[0], inventory.vms[0]
    assert clusters.ensure_drs_vm_override(session, cluster.moref, vm.moref) is True
    assert clusters.ensure_drs_vm_override(session, cluster.moref, vm.moref) is False
    assert clusters.ensure_ha_vm_override(session, cluster.moref, vm.moref) is True
    assert clusters.ensure_ha_vm_override(session, cluster.moref, vm.moref) is False
    config = read_one(session, session.mo(cluster.moref), ["configurationEx"]).get("configurationEx")
    drs = [c for c in config.drsVmConfig if c.key._moId == vm.moref.value]
    das = [c for c in config.dasVmConfig if c.key._moId == vm.moref.value]
    assert drs[0].enabled is False and drs[0].behavior == "manual"
    assert das[0].dasSettings.restartPriority == "highest"


def test_maintenance_mode_and_add_host(session: Session, inventory: InventorySnapshot) -> None:
    host = inventory.hosts[1]
    assert hosts.ensure_maintenance_mode(session, host.moref, True) is True
    assert hosts.ensure_maintenance_mode(session, host.moref, True) is False
    assert hosts.in_maintenance_mode(session, host.moref)
    assert hosts.ensure_maintenance_mode(session, host.moref, False) is True
    cluster = inventory.clusters[0]
    added = hosts.add_host(session, cluster.moref, "esx-new.example.test", username="root", password="pw")
    again = read_inventory(session, kinds={"hosts"})
    assert again.find_host(added.value).cluster == cluster.moref


def test_watch_reports_a_power_off(session: Session, inventory: InventorySnapshot) -> None:
    vm = inventory.vms[0]
    with Watcher(
        session, [WatchSpec(vim.VirtualMachine, ("runtime.powerState",))], max_wait_seconds=1
    ) as watch:
        initial = watch.poll()
        assert {c.moref for c in initial} == {v.moref for v in inventory.vms}
        assert all(c.kind is WatchChangeKind.ENTER for c in initial)
        vms.ensure_powered_off(session, vm.moref)
        deadline = time.monotonic() + 15
        seen: list[WatchChange] = []
        while time.monotonic() < deadline and not seen:
            seen = [c for c in watch.poll() if c.moref == vm.moref]
        assert seen and seen[0].kind is WatchChangeKind.MODIFY
        assert seen[0].properties["runtime.powerState"] == "poweredOff"


def test_watch_stop_from_another_thread_ends_a_wait(session: Session) -> None:
    watch = Watcher(session, [WatchSpec(vim.HostSystem, ("runtime.inMaintenanceMode",))], max_wait_seconds=30)
    batches: list[int] = []
    try:
        watch.start()
        watch.poll()  # the initial state

        def run() -> None:
            batches.extend(len(b) for b in watch)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        watch.stop()
        worker.join(timeout=10)
        assert not worker.is_alive()
        assert time.monotonic() - started < 5  # cancelled on the server, not waited out
    finally:
        watch.close()
    pcs_before = session.stats.snapshot()["DestroyPropertyCollector"]
    watch.close()  # idempotent: nothing more to destroy
    assert session.stats.snapshot()["DestroyPropertyCollector"] == pcs_before == 1
