"""engine.vsphere_infra.VSphereInfrastructure against vcsim: deploy, pin, HA, power, destroy, find after a
restart, failed deploys leave nothing, observe costs the same for any number of hosts, the watcher, and the
Engine end to end."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentvm.core.agent_state import AgentVm, VmMarker
from agentvm.core.heal import Backoff
from agentvm.engine.api import Caller, InvalidUrl
from agentvm.engine.infra import OvfInvalid, OvfUnreachable
from agentvm.engine.manager import Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.lab.packages import PackageServer, examples_dir
from agentvm.lab.vcsim import Shape, Vcsim, VcsimInfo
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    GoalState,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    Status,
)
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere import hosts, vms
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from tests.support.coordination import until
from tests.support.packages import cut_off_server

pytestmark = pytest.mark.lab

NAMESPACE = "com.example.agentvm"
MARKER = VmMarker(NAMESPACE, "agency-1", "agent-2")
HELLO = "hello-agent/hello-agent.ovf"


def connect(info: VcsimInfo) -> Session:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    return Session.connect(conn)


@dataclass(frozen=True)
class World:
    info: VcsimInfo
    session: Session
    infra: VSphereInfrastructure
    packages: str
    bad_packages: str
    vcsim_log: Path


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The examples server, and one serving a malformed OVF (``garbage.ovf``)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.ovf").write_text("<Envelope> not closed")
    good, broken = PackageServer().start(), PackageServer(bad).start()
    yield good.url, broken.url
    good.stop()
    broken.stop()


@pytest.fixture
def world(tmp_path: Path, packages: tuple[str, str]) -> Iterator[World]:
    """vcsim (1 DC x 2 clusters x 3 hosts) with a readable log, a session and a started infrastructure."""
    sim = Vcsim(Shape(), log_file=tmp_path / "vcsim.log")
    try:
        session = connect(sim.info)
        infra = VSphereInfrastructure(session, watch_max_wait=2)
        infra.start()
        try:
            yield World(sim.info, session, infra, packages[0], packages[1], sim.log_path)
        finally:
            infra.stop()
            session.logout()
    finally:
        sim.stop()


@dataclass(frozen=True)
class Target:
    host: MoRef
    cluster: MoRef
    datastore: MoRef
    network: MoRef
    folder: MoRef
    pool: MoRef


def target(inv: InventorySnapshot, cluster_index: int = 0, host_index: int = 0) -> Target:
    cluster = inv.clusters[cluster_index]
    host = inv.hosts_of(cluster.moref)[host_index]
    assert cluster.resource_pool is not None
    return Target(
        host=host.moref,
        cluster=cluster.moref,
        datastore=host.datastores[0],
        network=next(n.moref for n in inv.networks if n.name == "VM Network"),
        folder=next(f.moref for f in inv.folders if f.path == "/DC0/vm"),
        pool=cluster.resource_pool,
    )


def deploy(world: World, t: Target, *, url: str | None = None, name: str = "hello (1)") -> MoRef:
    return world.infra.deploy_agent_vm(
        host=t.host,
        ovf_url=url or f"{world.packages}/{HELLO}",
        ovf_properties=(OvfProperty("agent.ip", "10.0.0.7/24"), OvfProperty("agent.message", "hi")),
        name=name,
        datastore=t.datastore,
        network=t.network,
        folder=t.folder,
        pool=t.pool,
        marker=MARKER,
        disk_provisioning="thin",
    )


def vm_names(session: Session) -> set[str]:
    return {vm.name for vm in read_inventory(session, kinds={"vms"}).vms}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ deploy


def test_deploy_puts_a_powered_off_marked_vm_with_its_ovf_environment_on_the_host(world: World) -> None:
    session = world.session
    t = target(read_inventory(session), cluster_index=1, host_index=2)

    vm = deploy(world, t)

    found = read_inventory(session, kinds={"vms"}, extra_config_prefix="").find_vm(vm.value)
    assert found.name == "hello (1)"
    assert found.host == t.host
    assert found.resource_pool == t.pool
    assert found.path == "/DC0/vm/hello (1)"
    assert found.power_state is PowerState.POWERED_OFF
    assert found.managed_by is not None
    assert (found.managed_by.extension_key, found.managed_by.type) == (NAMESPACE, "agent")
    extra = found.extra_config
    assert extra["guestinfo.agent.ip"] == "10.0.0.7/24"
    assert extra["guestinfo.agent.message"] == "hi"
    assert extra["agentvm.owner"] == NAMESPACE
    assert (extra["agentvm.agency"], extra["agentvm.agent"]) == ("agency-1", "agent-2")
    assert extra["agentvm.ovfUrl"] == f"{world.packages}/{HELLO}"
    assert "hello (1)/disk-0.vmdk: transferred 65536 bytes" in world.vcsim_log.read_text()


def test_a_deployed_vm_carries_its_marks_from_the_import_on_and_is_complete(world: World) -> None:
    vm = deploy(world, target(read_inventory(world.session)))

    # what a failed import that named no VM is found by (the same marks went into the import spec)
    assert vms.find_marked(world.session, NAMESPACE, {"agentvm.agency": "agency-1"}) == [vm]
    assert vms.find_marked(world.session, NAMESPACE, {"agentvm.agency": "agency-9"}) == []
    assert vms.find_marked(world.session, "com.example.other", {"agentvm.agency": "agency-1"}) == []
    (found,) = world.infra.find_owned_vms(NAMESPACE)
    assert found.vm == vm and found.complete, "the import token is cleared once configured"


def test_pin_and_ha_priority_are_cluster_vm_overrides(world: World) -> None:
    session = world.session
    t = target(read_inventory(session))
    vm = deploy(world, t)

    world.infra.pin_to_host(vm, t.host)
    world.infra.ha_top_priority(vm)
    world.infra.pin_to_host(vm, t.host)  # idempotent

    config = read_one(session, session.mo(t.cluster), ["configurationEx"]).get("configurationEx")
    drs = [c for c in config.drsVmConfig if c.key._moId == vm.value]
    ha = [c for c in config.dasVmConfig if c.key._moId == vm.value]
    assert [(c.enabled, c.behavior) for c in drs] == [(False, "manual")]
    assert [c.dasSettings.restartPriority for c in ha] == ["highest"]


def test_pin_and_ha_are_no_ops_on_a_standalone_host(
    vcsim_factory: Callable[..., VcsimInfo], packages: tuple[str, str]
) -> None:
    info = vcsim_factory(clusters=1, hosts=1, standalone=1)
    with connect(info) as session, VSphereInfrastructure(session) as infra:
        inv = read_inventory(session)
        standalone = inv.compute_resources[0]
        obs = infra.observe([standalone.moref])
        (host,) = obs.scope[standalone.moref]
        vm = infra.deploy_agent_vm(
            host=host,
            ovf_url=f"{packages[0]}/{HELLO}",
            ovf_properties=(),
            name="hello (1)",
            datastore=obs.hosts[host].datastores[0],
            network=next(n for n in obs.hosts[host].networks if obs.names[n] == "VM Network"),
            folder=None,  # the defaults: the datacenter's VM folder, the compute resource's root pool
            pool=None,
            marker=MARKER,
        )
        before = session.stats.snapshot()

        infra.pin_to_host(vm, host)
        infra.ha_top_priority(vm)
        infra.start_with_host(vm, host)  # autostart is for host agents: on a vCenter, no call at all

        calls = session.stats.snapshot() - before
        assert "ReconfigureComputeResource_Task" not in calls and "ReconfigureAutostart" not in calls
        found = read_inventory(session, kinds={"vms"}).find_vm(vm.value)
        assert found.host == host
        assert found.resource_pool == standalone.resource_pool


def test_power_on_off_and_destroy_twice(world: World) -> None:
    session = world.session
    infra = world.infra
    vm = deploy(world, target(read_inventory(session)))

    infra.power_on(vm)
    assert vms.power_state(session, vm) is PowerState.POWERED_ON
    infra.power_on(vm)  # already on: nothing to do
    infra.power_off(vm)
    assert vms.power_state(session, vm) is PowerState.POWERED_OFF
    infra.power_on(vm)
    infra.destroy_vm(vm)  # powered on: off first, then deleted
    assert "hello (1)" not in vm_names(session)
    infra.destroy_vm(vm)  # already gone: fine


def test_find_owned_vms_after_a_restart(world: World) -> None:
    t = target(read_inventory(world.session))
    vm = deploy(world, t)
    world.infra.power_on(vm)
    other = world.infra.deploy_agent_vm(
        host=t.host,
        ovf_url=f"{world.packages}/{HELLO}",
        ovf_properties=(),
        name="someone else's",
        datastore=t.datastore,
        network=t.network,
        folder=t.folder,
        pool=t.pool,
        marker=VmMarker("com.example.other", "agency-9", "agent-9"),
    )

    # a new process: new session, new infrastructure, nothing remembered
    with connect(world.info) as session:
        infra = VSphereInfrastructure(session)
        before = session.stats.snapshot()
        found = infra.find_owned_vms(NAMESPACE)
        calls = session.stats.snapshot() - before

    assert [(a.vm, a.name, a.marker, a.host, a.power_state) for a in found] == [
        (vm, "hello (1)", MARKER, t.host, PowerState.POWERED_ON)
    ]
    assert found[0].ovf_url == f"{world.packages}/{HELLO}"
    assert other not in [a.vm for a in found]
    assert calls["RetrievePropertiesEx"] == 2  # managedBy of all VMs, then extraConfig of ours


# ------------------------------------------------------------------------------------------ failures


def test_unreachable_ovf_url_is_ovf_unreachable_and_leaves_no_vm(world: World) -> None:
    before = vm_names(world.session)
    url = f"http://127.0.0.1:{free_port()}/{HELLO}"

    with pytest.raises(OvfUnreachable) as err:
        deploy(world, target(read_inventory(world.session)), url=url)

    assert err.value.url == url
    assert "connection refused" in str(err.value)
    assert vm_names(world.session) == before


def test_malformed_ovf_is_ovf_invalid_and_leaves_no_vm(world: World) -> None:
    before = vm_names(world.session)
    url = f"{world.bad_packages}/garbage.ovf"

    with pytest.raises(OvfInvalid) as err:
        deploy(world, target(read_inventory(world.session)), url=url)

    assert err.value.url == url
    assert err.value.errors and "line 1" in err.value.errors[0]
    assert vm_names(world.session) == before


def test_check_url_raises_invalid_url_with_the_reason(world: World) -> None:
    world.infra.check_url(f"{world.packages}/{HELLO}")
    world.infra.check_url(f"{world.bad_packages}/garbage.ovf")  # downloadable: its agents get the issue

    with pytest.raises(InvalidUrl) as refused:
        world.infra.check_url(f"http://127.0.0.1:{free_port()}/{HELLO}")
    assert refused.value.connection_refused is True
    with pytest.raises(InvalidUrl) as missing:
        world.infra.check_url(f"{world.packages}/hello-agent/missing.ovf")
    assert missing.value.response_code == 404


# ------------------------------------------------------------------------------------------ observe


def test_observe_reports_scope_hosts_defaults_and_names(world: World) -> None:
    inv = read_inventory(world.session)
    c0, c1 = inv.clusters
    unknown = MoRef("ClusterComputeResource", "domain-c999")

    obs = world.infra.observe([c0.moref, c1.moref, unknown])

    assert obs.scope == {c0.moref: c0.hosts, c1.moref: c1.hosts}
    assert set(obs.hosts) == set(c0.hosts) | set(c1.hosts)
    host = obs.hosts[c0.hosts[0]]
    assert host.path == f"{c0.path}/{host.name}"
    assert host.cluster == c0.moref
    assert obs.default_pools[c0.moref] == c0.resource_pool
    (dc,) = inv.datacenters
    assert obs.default_folders == {dc.moref: next(f.moref for f in inv.folders if f.path == "/DC0/vm")}
    assert "VM Network" in obs.names.values()
    assert obs.vms == ()


def observe_calls(info: VcsimInfo) -> tuple[int, int]:
    with connect(info) as session:
        infra = VSphereInfrastructure(session)
        scope = [c.moref for c in read_inventory(session, kinds=()).clusters]
        before = session.stats.snapshot()
        obs = infra.observe(scope)
        infra.find_owned_vms(NAMESPACE)
        return sum((session.stats.snapshot() - before).values()), len(obs.hosts)


def test_observe_costs_the_same_calls_for_6_and_24_hosts(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    small_calls, small_hosts = observe_calls(vcsim_factory(clusters=2, hosts=3, vms=1))
    big_calls, big_hosts = observe_calls(vcsim_factory(clusters=4, hosts=6, vms=2))

    assert (small_hosts, big_hosts) == (6, 24)
    assert small_calls == big_calls
    assert big_calls <= 6  # a view, a read and the view's end; a view and a read for the VMs


# ------------------------------------------------------------------------------------------ watcher


def quiet_generation(infra: VSphereInfrastructure) -> int:
    """The generation once the watcher has taken in every earlier change (1 s without a bump)."""
    seen = infra.generation()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        bumped = infra.wait_for_change(seen, 1.0)
        if bumped == seen:
            return seen
        seen = bumped
    raise AssertionError("the watcher never went quiet")


def test_a_vm_powered_off_by_someone_else_bumps_the_generation(world: World) -> None:
    vm = deploy(world, target(read_inventory(world.session)))
    world.infra.power_on(vm)
    seen = quiet_generation(world.infra)

    with connect(world.info) as someone_else:
        vms.ensure_powered_off(someone_else, vm)
    after = world.infra.wait_for_change(seen, 5.0)

    assert after > seen


def test_a_vm_deleted_by_someone_else_bumps_the_generation(world: World) -> None:
    vm = deploy(world, target(read_inventory(world.session)))
    seen = quiet_generation(world.infra)

    with connect(world.info) as someone_else:
        vms.destroy(someone_else, vm)
    after = world.infra.wait_for_change(seen, 5.0)

    assert after > seen


def test_resync_bumps_the_generation_when_nothing_is_reported(vcsim: VcsimInfo) -> None:
    # vcsim 0.24.2 publishes no update for maintenance mode: only the resync makes the engine look again
    with connect(vcsim) as session:
        host = read_inventory(session, kinds={"hosts"}).hosts[0]
        assert host.cluster is not None
        with VSphereInfrastructure(session, watch_max_wait=1, resync_seconds=1.0) as infra:
            seen = infra.wait_for_change(infra.generation(), 5.0)  # the watcher's first batch
            hosts.ensure_maintenance_mode(session, host.moref, True)
            after = infra.wait_for_change(seen, 5.0)
            observed = infra.observe([host.cluster]).hosts[host.moref]

    assert after > seen
    assert observed.in_maintenance_mode is True


def test_stop_ends_the_watcher_promptly(world: World) -> None:
    world.infra.generation()  # started by the fixture; this is a no-op
    thread = world.infra._thread
    assert thread is not None and thread.is_alive()

    started = time.monotonic()
    world.infra.stop()

    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0  # the wait is cancelled, not waited out


# ------------------------------------------------------------------------------------------ end to end


def test_engine_deploys_one_agent_per_host_over_two_clusters(world: World) -> None:
    session = world.session
    inv = read_inventory(session)
    t = target(inv)
    config = AgencyConfig(
        agency_name="hello",
        agent_configs=(
            AgentConfig(
                ovf_package_url=f"{world.packages}/{HELLO}",
                ovf_environment=(OvfProperty("agent.message", "hi"),),
            ),
        ),
        scope=tuple(c.moref for c in inv.clusters),
        agent_vm_datastores=(t.datastore,),
        agent_vm_networks=(t.network,),
    )
    engine = Engine(world.infra, namespace=NAMESPACE)
    agency = engine.create_agency(Caller("administrator@vsphere.local"), config, GoalState.ENABLED)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        acted = engine.step()
        if not acted and engine.agency_runtime(agency).status is Status.GREEN:
            break
        if not acted:
            engine.wait_for_work(1.0)

    assert engine.agency_runtime(agency).status is Status.GREEN
    agents = [engine.agent_runtime(a) for a in engine.agency_agents(agency)]
    assert sorted(a.host for a in agents) == sorted(h.moref for h in inv.hosts)
    assert all(a.power_state is PowerState.POWERED_ON and a.vm is not None for a in agents)
    assert all(a.status is Status.GREEN and not a.issues for a in agents)
    deployed = {v.moref: v for v in read_inventory(session, kinds={"vms"}).vms}
    for a in agents:
        assert a.vm is not None
        assert deployed[a.vm].host == a.host
        assert deployed[a.vm].power_state is PowerState.POWERED_ON
    for cluster in inv.clusters:
        config_ex = read_one(session, session.mo(cluster.moref), ["configurationEx"]).get("configurationEx")
        ours = {a.vm.value for a in agents if a.vm is not None and a.host in cluster.hosts}
        assert {c.key._moId for c in config_ex.drsVmConfig if not c.enabled} == ours
        assert {
            c.key._moId for c in config_ex.dasVmConfig if c.dasSettings.restartPriority == "highest"
        } == ours


# ------------------------------------------------------------------------------------------ failed deploys


@pytest.fixture
def cut_off_packages() -> Iterator[str]:
    """A package server that drops every disk download half-way (the import fails after ImportVApp)."""
    with cut_off_server() as url:
        yield url


FAST_RETRY = Backoff(base=0.05, factor=2.0, cap=0.2, jitter=0.25, max_attempts=3)


def agency_for(inv: InventorySnapshot, url: str, **changes: object) -> AgencyConfig:
    t = target(inv)
    return AgencyConfig(
        agency_name="hello",
        agent_configs=(AgentConfig(ovf_package_url=url),),
        scope=(inv.clusters[0].moref,),
        agent_vm_datastores=(t.datastore,),
        agent_vm_networks=(t.network,),
    ).with_(**changes)


def step_until(engine: Engine, done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Drive the engine as its callers do (step, else wait for work) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if not engine.step():
            engine.wait_for_work(0.2)


def all_vms(session: Session) -> list[tuple[str, MoRef]]:
    return sorted((vm.name, vm.moref) for vm in read_inventory(session, kinds={"vms"}).vms)


def test_an_agent_name_with_a_slash_gives_one_escaped_vm_per_host_and_nothing_else(
    vcsim_factory: Callable[..., VcsimInfo], packages: tuple[str, str]
) -> None:
    # vcsim 0.24.2 cannot make the VM directory of "bad/name" and leaves a VM with no name, config or host
    # that no call can delete: the engine must give vCenter the name it would store ("bad%2fname")
    info = vcsim_factory(clusters=1, hosts=2)
    with connect(info) as session, VSphereInfrastructure(session, watch_max_wait=1) as infra:
        inv = read_inventory(session)
        before = all_vms(session)
        engine = Engine(infra, namespace=NAMESPACE, retry=FAST_RETRY)
        agency = engine.create_agency(
            Caller("administrator@vsphere.local"),
            agency_for(inv, f"{packages[0]}/{HELLO}", agent_name="bad/name"),
            GoalState.ENABLED,
        )
        start = session.stats.snapshot()

        step_until(engine, lambda: engine.agency_runtime(agency).status is Status.GREEN, "green")

        imports = (session.stats.snapshot() - start)["ImportVApp"]
        after = all_vms(session)
    assert imports == 2, "one import per host, none retried"
    new = [name for name, _ in after if (name, _) not in before]
    assert sorted(new) == ["bad%2fname (1)", "bad%2fname (2)"]
    assert len(after) == len(before) + 2, "nothing else left in vCenter"


def test_an_import_cut_off_half_way_backs_off_gives_up_and_leaves_no_vm(
    vcsim_factory: Callable[..., VcsimInfo], cut_off_packages: str
) -> None:
    info = vcsim_factory(clusters=1, hosts=1)
    with connect(info) as session, VSphereInfrastructure(session, watch_max_wait=1) as infra:
        inv = read_inventory(session)
        before = all_vms(session)
        engine = Engine(infra, namespace=NAMESPACE, retry=FAST_RETRY)
        agency = engine.create_agency(
            Caller("administrator@vsphere.local"),
            agency_for(inv, f"{cut_off_packages}/{HELLO}"),
            GoalState.ENABLED,
        )
        start = session.stats.snapshot()

        def gave_up() -> bool:
            return any(i.kind is IssueKind.OVF_INVALID_FORMAT for i in engine.query_issues(agency))

        step_until(engine, gave_up, "the engine to give up with OvfInvalidFormat")
        calls = session.stats.snapshot() - start
        assert calls["ImportVApp"] == FAST_RETRY.max_attempts, "retried with backoff, then given up"
        assert calls["HttpNfcLeaseAbort"] == FAST_RETRY.max_attempts, "every lease aborted"
        (issue,) = engine.query_issues(agency)
        assert f"gave up after {FAST_RETRY.max_attempts} failed attempts" in issue.detail["error"][0]
        assert all_vms(session) == before, "every half-imported VM deleted"
        # given up: no more attempts, however long it is left (a step with nothing to do costs nothing)
        for _ in range(20):
            engine.step()
        assert (session.stats.snapshot() - start)["ImportVApp"] == FAST_RETRY.max_attempts

        # Resolve arms it again: the same number of attempts, the issue again, still no VM
        engine.resolve(agency, [issue.key])
        step_until(
            engine,
            lambda: (
                gave_up() and (session.stats.snapshot() - start)["ImportVApp"] >= 2 * FAST_RETRY.max_attempts
            ),
            "a second round after Resolve",
        )
        assert (session.stats.snapshot() - start)["ImportVApp"] == 2 * FAST_RETRY.max_attempts
        assert all_vms(session) == before


def test_a_disk_that_404s_is_cannot_access_agent_ovf_and_leaves_no_vm(
    vcsim_factory: Callable[..., VcsimInfo], tmp_path: Path
) -> None:
    (tmp_path / "hello-agent").mkdir()
    shutil.copy(examples_dir() / HELLO, tmp_path / HELLO)  # the descriptor, not its disk
    server = PackageServer(tmp_path).start()
    info = vcsim_factory(clusters=1, hosts=1)
    try:
        with connect(info) as session, VSphereInfrastructure(session, watch_max_wait=1) as infra:
            inv = read_inventory(session)
            before = all_vms(session)
            engine = Engine(infra, namespace=NAMESPACE, retry=FAST_RETRY)
            agency = engine.create_agency(
                Caller("administrator@vsphere.local"),
                agency_for(inv, f"{server.url}/{HELLO}"),
                GoalState.ENABLED,
            )
            start = session.stats.snapshot()
            step_until(engine, lambda: bool(engine.query_issues(agency)), "an issue")
            for _ in range(20):
                engine.step()
            (issue,) = engine.query_issues(agency)
            assert issue.kind is IssueKind.CANNOT_ACCESS_AGENT_OVF
            assert "HTTP 404" in str(issue.detail["error"])
            assert (session.stats.snapshot() - start)["ImportVApp"] == 1, "latched until Resolve"
            assert all_vms(session) == before
    finally:
        server.stop()


# ------------------------------------------------------------------------------ reads that cost what changed


def full_read(info: VcsimInfo) -> list[tuple[MoRef, str, VmMarker, MoRef | None, PowerState, bool]]:
    """What a fresh infrastructure (no watcher: every read a full one) finds."""
    with connect(info) as session:
        found = VSphereInfrastructure(session).find_owned_vms(NAMESPACE)
    return sorted((a.vm, a.name, a.marker, a.host, a.power_state, a.complete) for a in found)


def reads(calls: Counter[str]) -> dict[str, int]:
    """The calls of a read, without the watcher's own waits (it shares the session)."""
    return {method: n for method, n in calls.items() if method != "WaitForUpdatesEx" and n}


def until_found(infra: VSphereInfrastructure, check: Callable[[list[AgentVm]], bool]) -> list[AgentVm]:
    """``find_owned_vms`` once the watcher has taken in what ``check`` waits for (each change wakes it)."""
    deadline = time.monotonic() + 15
    while not check(found := infra.find_owned_vms(NAMESPACE)):
        assert time.monotonic() < deadline, f"the watcher never showed it: {found}"
        infra.wait_for_change(infra.generation(), 1.0)
    return found


def test_a_watched_find_owned_vms_reads_only_what_it_has_not_seen_and_sees_its_own_writes(
    world: World,
) -> None:
    session, infra = world.session, world.infra
    t = target(read_inventory(session))
    vm = deploy(world, t)
    infra.power_on(vm)

    before = session.stats.snapshot()
    found = infra.find_owned_vms(NAMESPACE)
    again = infra.find_owned_vms(NAMESPACE)
    calls = session.stats.snapshot() - before

    assert (
        [(a.vm, a.power_state) for a in found]
        == [(vm, PowerState.POWERED_ON)]
        == [(a.vm, a.power_state) for a in again]
    )
    assert sorted((a.vm, a.name, a.marker, a.host, a.power_state, a.complete) for a in again) == full_read(
        world.info
    )
    assert reads(calls) == {}, "the watcher's VMs and the marks the deploy wrote: no read"

    infra.power_off(vm)  # read-your-writes: the next read sees it, still without a call
    before = session.stats.snapshot()
    assert [a.power_state for a in infra.find_owned_vms(NAMESPACE)] == [PowerState.POWERED_OFF]
    assert reads(session.stats.snapshot() - before) == {}

    # someone else powers it on and deploys one more VM of ours (another process of this engine, say)
    with connect(world.info) as someone_else:
        vms.ensure_powered_on(someone_else, vm)
        other = VSphereInfrastructure(someone_else).deploy_agent_vm(
            host=t.host,
            ovf_url=f"{world.packages}/{HELLO}",
            ovf_properties=(),
            name="hello (2)",
            datastore=t.datastore,
            network=t.network,
            folder=t.folder,
            pool=t.pool,
            marker=VmMarker(NAMESPACE, "agency-1", "agent-3"),
        )
    expected = {vm: PowerState.POWERED_ON, other: PowerState.POWERED_OFF}
    before = session.stats.snapshot()
    watched = until_found(infra, lambda found: {a.vm: a.power_state for a in found} == expected)
    calls = session.stats.snapshot() - before
    assert sorted((a.vm, a.name, a.marker, a.host, a.power_state, a.complete) for a in watched) == full_read(
        world.info
    )
    assert reads(calls) == {"RetrievePropertiesEx": 1}, "the marks of the one VM it had not seen, once"

    with connect(world.info) as someone_else:
        vms.destroy(someone_else, other)
    until_found(infra, lambda found: [a.vm for a in found] == [vm])  # a deleted VM is gone from the watch
    before = session.stats.snapshot()
    assert [a.vm for a in infra.find_owned_vms(NAMESPACE)] == [vm]
    assert reads(session.stats.snapshot() - before) == {}


def test_a_watched_find_owned_vms_builds_again_only_the_vm_that_changed(world: World) -> None:
    infra = world.infra
    t = target(read_inventory(world.session))
    changed, kept = deploy(world, t), deploy(world, t, name="hello (2)")

    def someone_else_powers(state: PowerState) -> dict[MoRef, AgentVm]:
        with connect(world.info) as someone_else:
            if state is PowerState.POWERED_ON:
                vms.ensure_powered_on(someone_else, changed)
            else:
                vms.ensure_powered_off(someone_else, changed)
        found = until_found(infra, lambda found: {a.vm: a.power_state for a in found}.get(changed) is state)
        return {a.vm: a for a in found}

    # the watcher has long taken in both deploys (the own writes' stand-ins are gone) after two changes
    someone_else_powers(PowerState.POWERED_ON)
    first = someone_else_powers(PowerState.POWERED_OFF)
    later = someone_else_powers(PowerState.POWERED_ON)

    assert later[kept] is first[kept], "a VM the watcher reported no change of is not built again"
    assert first[changed].power_state is PowerState.POWERED_OFF
    assert later[changed].power_state is PowerState.POWERED_ON
    assert sorted((a.vm, a.name, a.marker, a.host, a.power_state, a.complete) for a in later.values()) == (
        full_read(world.info)
    )


def test_a_watched_observe_reads_nothing_while_nothing_changes_and_sees_maintenance_mode(
    vcsim: VcsimInfo,
) -> None:
    with connect(vcsim) as session:
        host = read_inventory(session, kinds={"hosts"}).hosts[0]
        assert host.cluster is not None
        with VSphereInfrastructure(session, watch_max_wait=1, resync_seconds=1.0) as infra:
            seen = infra.wait_for_change(infra.generation(), 5.0)  # the watcher's first batch
            first = infra.observe([host.cluster])
            before = session.stats.snapshot()
            assert infra.observe([host.cluster]) == first
            assert reads(session.stats.snapshot() - before) == {}, "nothing changed: no call"

            seen = quiet_generation(infra)  # resyncs that found nothing new bump nothing
            hosts.ensure_maintenance_mode(session, host.moref, True)  # vcsim publishes no update for it
            after = infra.wait_for_change(seen, 5.0)
            observed = infra.observe([host.cluster]).hosts[host.moref]

    assert after > seen
    assert observed.in_maintenance_mode is True


def test_a_resync_that_finds_nothing_new_reads_only_the_hosts_state_not_the_whole_scope(
    vcsim: VcsimInfo,
) -> None:
    with connect(vcsim) as session:
        host = read_inventory(session, kinds={"hosts"}).hosts[0]
        assert host.cluster is not None
        with VSphereInfrastructure(session, watch_max_wait=1, resync_seconds=1.0) as infra:
            infra.wait_for_change(infra.generation(), 5.0)  # the watcher's first batch
            first = infra.observe([host.cluster])
            before = session.stats.snapshot()
            deadline = time.monotonic() + 30
            while (session.stats.snapshot() - before)["RetrievePropertiesEx"] < 3:  # three resyncs
                assert time.monotonic() < deadline, "no resync within 30 s"
                infra.wait_for_change(infra.generation(), 0.5)
            calls = reads(session.stats.snapshot() - before)
            assert infra.observe([host.cluster]) == first

    # one compact read each: no container view (the whole scope's read opens one), nothing paged on
    assert "CreateContainerView" not in calls, calls
    assert set(calls) == {"RetrievePropertiesEx"}, calls


def test_a_change_someone_makes_right_after_an_own_write_wakes_the_engine_and_is_seen(world: World) -> None:
    infra = world.infra
    vm = deploy(world, target(read_inventory(world.session)))
    infra.power_on(vm)
    with connect(world.info) as someone_else:  # at once: the watcher may report both as no change at all
        vms.ensure_powered_off(someone_else, vm)

    deadline = time.monotonic() + 20
    seen = infra.generation()
    while [a.power_state for a in infra.find_owned_vms(NAMESPACE)] != [PowerState.POWERED_OFF]:
        woke = infra.wait_for_change(seen, max(0.0, deadline - time.monotonic()))
        assert woke != seen, "the engine was never woken to see the power-off"
        seen = woke


def test_a_read_of_a_half_deployed_vm_that_ends_after_its_deploy_does_not_undo_the_deploys_marks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's workers deploy while a step reads: a find_owned_vms that read the extraConfig of a VM
    still importing, and stored it after the deploy had written the VM's final marks, made the VM look
    half-deployed until the next full read (the engine then took its agent's VM for deleted)."""
    infra = world.infra
    t = target(read_inventory(world.session))
    read_done, deployed = threading.Event(), threading.Event()
    seen: list[list[AgentVm]] = []
    real_configure, real_extra_config = infra._configure, infra._extra_config

    def extra_config_then_wait(objs: Any) -> Any:
        read = real_extra_config(objs)
        read_done.set()
        assert deployed.wait(30), "the deploy never finished"
        return read

    def reader() -> None:
        seen.append(infra.find_owned_vms(NAMESPACE))

    def watched(vm: MoRef) -> bool:
        with infra._cache:
            return vm in infra._watched_vms()

    def configure_after_a_read_began(vm: MoRef, *args: Any) -> None:
        # the VM is imported, not configured yet: a step's read sees it half-deployed
        deadline = time.monotonic() + 15
        while not watched(vm):
            assert time.monotonic() < deadline, "the watcher never showed the imported VM"
            infra.wait_for_change(infra.generation(), 1.0)
        monkeypatch.setattr(infra, "_extra_config", extra_config_then_wait)
        threading.Thread(target=reader, daemon=True).start()
        assert read_done.wait(30), "the read never happened"
        monkeypatch.setattr(infra, "_extra_config", real_extra_config)
        real_configure(vm, *args)

    monkeypatch.setattr(infra, "_configure", configure_after_a_read_began)
    vm = deploy(world, t)
    deployed.set()
    until(lambda: seen, "the read to end")

    assert [a.complete for a in seen[0] if a.vm == vm] == [False]  # it did see the VM half-deployed
    assert [a.complete for a in infra.find_owned_vms(NAMESPACE) if a.vm == vm] == [True]
