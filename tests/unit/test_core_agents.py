"""Properties of the pure agent engine core (``core.agents``): reconcile against a world simulated here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core import agent_ops
from agentvm.core.agent_placement import match_agent_config
from agentvm.core.agent_state import (
    Action,
    AgentVm,
    Deployed,
    DeployVm,
    DestroyVm,
    Done,
    EngineObservation,
    EnginePlan,
    EngineState,
    PowerOff,
    PowerOn,
)
from agentvm.core.agents import reconcile
from agentvm.model.agency import AgencyConfig, AgentConfig, GoalState, MoRef, PowerState, Status
from agentvm.model.inventory import ConnectionState, Host, HostPowerState

NOW = datetime(2025, 1, 1, tzinfo=UTC)
DC = MoRef("Datacenter", "dc-1")
NET = MoRef("Network", "net-1")
NS = "test"


@dataclass
class World:
    """Clusters of hosts and the engine's VMs; applies an action's expected result."""

    clusters: dict[MoRef, list[MoRef]] = field(default_factory=dict)
    hosts: dict[MoRef, Host] = field(default_factory=dict)
    vms: dict[MoRef, AgentVm] = field(default_factory=dict)
    counter: int = 0

    def observe(self) -> EngineObservation:
        return EngineObservation(
            scope={c: tuple(h) for c, h in self.clusters.items()},
            hosts=dict(self.hosts),
            default_pools={c: MoRef("ResourcePool", f"rp-{c.value}") for c in self.clusters},
            default_folders={DC: MoRef("Folder", "vm")},
            vms=tuple(self.vms.values()),
        )

    def add_host(self, n: int, cluster: MoRef, flags: HostFlags) -> MoRef:
        """Host ``host-<n>`` in ``cluster``, with datastore ``ds-<n>`` and the network NET."""
        ref = MoRef("HostSystem", f"host-{n}")
        ds = MoRef("Datastore", f"ds-{n}")
        self.hosts[ref] = Host(
            moref=ref,
            name=f"esx{n}",
            path=f"/dc/host/{cluster.value}/esx{n}",
            datacenter=DC,
            parent=cluster,
            cluster=cluster,
            connection_state=ConnectionState.CONNECTED if flags.connected else ConnectionState.NOT_RESPONDING,
            in_maintenance_mode=flags.mm,
            power_state=HostPowerState.STANDBY if flags.standby else HostPowerState.POWERED_ON,
            datastores=(ds,),
            networks=(NET,),
            product_version=flags.version,
            product_line_id="esx",
            agent_vm_datastore=ds if flags.settings else None,
            agent_vm_network=NET if flags.settings else None,
        )
        self.clusters.setdefault(cluster, []).append(ref)
        return ref

    def apply(self, action: Action) -> Deployed | Done:
        if isinstance(action, DeployVm):
            self.counter += 1
            vm = MoRef("VirtualMachine", f"vm-{self.counter}")
            self.vms[vm] = AgentVm(
                vm, action.name, action.marker, action.host, PowerState.POWERED_OFF, action.ovf_url
            )
            return Deployed(vm)
        if isinstance(action, PowerOn):
            self.vms[action.vm] = replace(self.vms[action.vm], power_state=PowerState.POWERED_ON)
        elif isinstance(action, PowerOff):
            self.vms[action.vm] = replace(self.vms[action.vm], power_state=PowerState.POWERED_OFF)
        elif isinstance(action, DestroyVm):
            self.vms.pop(action.vm, None)
        return Done()


@dataclass(frozen=True)
class HostFlags:
    mm: bool
    standby: bool
    connected: bool
    settings: bool
    version: str


host_flags = st.builds(
    HostFlags, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["7.0.3", "8.0.2"])
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, AgencyConfig, GoalState]:
    world = World()
    n = 0
    for c in range(draw(st.integers(1, 3))):
        cluster = MoRef("ClusterComputeResource", f"c{c}")
        world.clusters[cluster] = []
        for flags in draw(st.lists(host_flags, max_size=4)):
            n += 1
            world.add_host(n, cluster, flags)
    scope = tuple(draw(st.lists(st.sampled_from(sorted(world.clusters)), unique=True, min_size=1)))
    config = AgencyConfig(
        agency_name="a",
        agent_configs=(
            AgentConfig(ovf_package_url="http://x/a.ovf", host_version=draw(st.sampled_from([None, "8.*"]))),
        ),
        scope=scope,
        manually_mark_available_after_provisioning=draw(st.booleans()),
        manually_mark_available_after_power_on=draw(st.booleans()),
    )
    return world, config, draw(st.sampled_from([GoalState.ENABLED, GoalState.DISABLED]))


def new_state(config: AgencyConfig, goal: GoalState) -> tuple[EngineState, str]:
    return agent_ops.add_agency(EngineState(namespace=NS), config, goal, "solution")


def release_hooks(state: EngineState) -> EngineState:
    for agency in state.agencies:
        for agent in agency.agents:
            state = agent_ops.release_hook(state, agent.id)
    return state


def converge(
    state: EngineState, world: World, rounds: int = 60
) -> tuple[EngineState, EnginePlan, list[Action]]:
    """Reconcile, apply the actions' expected results, release hooks; until nothing is left to do."""
    seen: list[Action] = []
    for i in range(rounds):
        now = NOW + timedelta(seconds=i)
        plan = reconcile(state, world.observe(), now)
        state = plan.state
        for action in plan.actions:
            seen.append(action)
            state = agent_ops.record(state, action, world.apply(action), now)
        state = release_hooks(state)
        if not plan.actions and plan.state == reconcile(state, world.observe(), now).state:
            return state, plan, seen
    raise AssertionError("reconcile did not settle")


def in_scope(world: World, config: AgencyConfig) -> set[MoRef]:
    return {h for c in config.scope for h in world.clusters[c]}


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_exactly_one_agent_per_host_in_scope(case: tuple[World, AgencyConfig, GoalState]) -> None:
    world, config, goal = case
    state, _ = new_state(config, goal)
    state, _, _ = converge(state, world)
    (agency,) = state.agencies
    hosts = [a.host for a in agency.agents]
    assert sorted(hosts) == sorted(in_scope(world, config))
    # and never more than one agent VM per host once settled
    assert all(sum(1 for v in world.vms.values() if v.host == h) <= 1 for h in hosts)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_nothing_but_power_off_or_removal_on_a_host_that_is_down(
    case: tuple[World, AgencyConfig, GoalState],
) -> None:
    world, config, goal = case
    state, _ = new_state(config, goal)
    _, _, actions = converge(state, world)
    down = {h for h, host in world.hosts.items() if host.in_maintenance_mode or host.standby}
    for action in actions:
        if isinstance(action, DeployVm):
            assert action.host not in down
        if isinstance(action, PowerOn):
            assert world.vms.get(action.vm) is None or world.vms[action.vm].host not in down


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_reconcile_is_idempotent_once_settled(case: tuple[World, AgencyConfig, GoalState]) -> None:
    world, config, goal = case
    state, agency_id = new_state(config, goal)
    state, _, _ = converge(state, world)
    again = reconcile(state, world.observe(), NOW + timedelta(hours=1))
    assert again.actions == ()
    assert again.state == state  # issue keys and times kept: nothing re-raised
    # a settled agent with no issue is green, and at the goal
    for agency in state.agencies:
        for agent in agency.agents:
            host = world.hosts[agent.host]
            if agent.issues:
                assert again.agent_status[agent.id] is Status.RED
                continue
            assert again.agent_status[agent.id] in (Status.GREEN, Status.YELLOW)
            if again.agent_status[agent.id] is Status.YELLOW:
                assert host.standby  # waiting for DPM to wake the host is the only wait left
                continue
            if match_agent_config(config.agent_configs, host) is None:
                continue
            vm = world.vms[agent.vm] if agent.vm else None
            assert vm is not None
            on = goal is GoalState.ENABLED and not host.in_maintenance_mode and not host.standby
            assert (vm.power_state is PowerState.POWERED_ON) == on
    assert agency_id in again.agency_status


events = st.lists(
    st.tuples(
        st.sampled_from(["power_off", "suspend", "delete", "mm", "unmm", "disconnect", "connect", "resolve"]),
        st.integers(0, 50),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(worlds(), events)
def test_an_issue_key_is_never_reused(
    case: tuple[World, AgencyConfig, GoalState], happenings: list[tuple[str, int]]
) -> None:
    world, config, goal = case
    state, agency_id = new_state(config, goal)
    state, _, _ = converge(state, world)
    identity: dict[int, tuple[str, str | None]] = {}
    for what, pick in happenings:
        vms = sorted(world.vms)
        hosts = sorted(world.hosts)
        if what in ("power_off", "suspend", "delete") and vms:
            vm = vms[pick % len(vms)]
            if what == "delete":
                del world.vms[vm]
            else:
                power = PowerState.POWERED_OFF if what == "power_off" else PowerState.SUSPENDED
                world.vms[vm] = replace(world.vms[vm], power_state=power)
        elif what in ("mm", "unmm", "disconnect", "connect") and hosts:
            h = hosts[pick % len(hosts)]
            if what in ("mm", "unmm"):
                world.hosts[h] = replace(world.hosts[h], in_maintenance_mode=what == "mm")
            else:
                conn = ConnectionState.NOT_RESPONDING if what == "disconnect" else ConnectionState.CONNECTED
                world.hosts[h] = replace(world.hosts[h], connection_state=conn)
        elif what == "resolve":
            keys = [i.key for i in agent_ops.issues_of(state, agency_id)]
            if keys:
                state, _ = agent_ops.resolve(state, agency_id, keys)
        state, _, _ = converge(state, world)
        for issue in agent_ops.issues_of(state, agency_id):
            ident = (issue.kind.value, issue.agent)
            assert identity.setdefault(issue.key, ident) == ident, f"key {issue.key} reused"
        assert state.next_issue_key > max(identity, default=0)


def test_resolve_returns_unknown_keys_and_leaves_the_state_alone() -> None:
    state, agency_id = new_state(AgencyConfig("a", (AgentConfig("http://x/a.ovf"),)), GoalState.ENABLED)
    same, not_found = agent_ops.resolve(state, agency_id, [41, 42])
    assert not_found == [41, 42] and same == state


def test_no_matching_agent_config_deploys_nothing() -> None:
    world = World()
    cluster = MoRef("ClusterComputeResource", "c")
    host = MoRef("HostSystem", "h")
    world.clusters[cluster] = [host]
    world.hosts[host] = Host(
        host,
        "h",
        "/h",
        datacenter=DC,
        parent=cluster,
        product_version="6.7.0",
        product_line_id="esx",
        agent_vm_datastore=MoRef("Datastore", "d"),
        datastores=(MoRef("Datastore", "d"),),
        agent_vm_network=NET,
        networks=(NET,),
    )
    config = AgencyConfig(
        "a",
        (
            AgentConfig("http://x/a.ovf", host_version="7.*"),
            AgentConfig("http://x/b.ovf", product_line_id="embeddedEsx"),
        ),
        scope=(cluster,),
    )
    state, _ = new_state(config, GoalState.ENABLED)
    plan = reconcile(state, world.observe(), NOW)
    assert plan.actions == ()
    (agent,) = plan.state.agencies[0].agents
    assert [i.kind.value for i in agent.issues] == ["IncompatibleHostVersion"]
    # the second config matches once the host is an embedded ESX of any version
    world.hosts[host] = replace(world.hosts[host], product_line_id="embeddedEsx")
    plan = reconcile(plan.state, world.observe(), NOW)
    (deploy,) = plan.actions
    assert isinstance(deploy, DeployVm) and deploy.ovf_url == "http://x/b.ovf"
    assert plan.state.agencies[0].agents[0].issues == ()
