"""``core.agents.reconcile`` with actions still in flight: the engine plans again while earlier plans'
actions run (queued or running), and finishes them in any order. Whatever the order, a host never gets a
second deploy, an agency upgrades one host at a time, no VM number is used twice or wasted, and the end
state is the one the one-plan-at-a-time engine reaches."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core import agent_ops
from agentvm.core.agent_state import Action, DeployVm, EngineState, InFlight
from agentvm.core.agents import reconcile
from agentvm.model.agency import AgencyConfig, AgentConfig, GoalState, MoRef, PowerState
from tests.unit.test_core_agents import (
    NOW,
    HostFlags,
    World,
    converge,
    in_scope,
    new_state,
    release_hooks,
    worlds,
)

Unit = tuple[MoRef, list[Action]]


def unit_key(action: Action, world: World) -> MoRef:
    """The host an action acts on (as the engine groups them); a VM whose host is unknown stands alone."""
    if isinstance(action, DeployVm):
        return action.host
    vm = world.vms.get(action.vm)
    return vm.host if vm is not None and vm.host is not None else action.vm


def in_flight_of(units: list[Unit]) -> InFlight:
    return InFlight(
        hosts=frozenset(host for host, _ in units),
        upgrades=frozenset(
            a.agency for _, actions in units for a in actions if isinstance(a, DeployVm) and a.upgrade
        ),
    )


def upgrading_hosts(state: EngineState, units: list[Unit]) -> set[MoRef]:
    """Hosts of the agency that are in an upgrade: recorded as upgrading, or an upgrade deploy in flight."""
    hosts = {a.host for agency in state.agencies for a in agency.agents if a.upgrading}
    return hosts | {a.host for _, actions in units for a in actions if isinstance(a, DeployVm) and a.upgrade}


def run_interleaved(
    state: EngineState, world: World, data: st.DataObject, deployed: list[DeployVm], rounds: int = 300
) -> EngineState:
    """Reconcile with what is in flight; add the new actions (grouped by host) to it; finish a drawn subset
    of the units in flight, in a drawn order; until nothing is in flight and nothing is left to do."""
    units: list[Unit] = []
    for i in range(rounds):
        now = NOW + timedelta(seconds=i)
        in_flight = in_flight_of(units)
        plan = reconcile(state, world.observe(), now, in_flight)
        state = plan.state
        new: dict[MoRef, list[Action]] = {}
        for action in plan.actions:
            new.setdefault(unit_key(action, world), []).append(action)
        assert not set(new) & in_flight.hosts, "an action planned on a host whose actions still run"
        units.extend(new.items())
        assert len(upgrading_hosts(state, units)) <= 1, "two hosts of one agency upgrading at once"
        if units:
            picks = data.draw(st.lists(st.integers(0, len(units) - 1), unique=True), label="finish")
            for index in sorted(picks, reverse=True):
                _, actions = units.pop(index)
                for action in actions:
                    if isinstance(action, DeployVm):
                        deployed.append(action)
                    state = agent_ops.record(state, action, world.apply(action), now)
        state = release_hooks(state)
        if not units:
            settled = reconcile(state, world.observe(), now)
            if not settled.actions and settled.state == state:
                return state
    raise AssertionError("did not settle")


def agency_vms_by_host(world: World) -> dict[MoRef | None, int]:
    counts: dict[MoRef | None, int] = {}
    for v in world.vms.values():
        counts[v.host] = counts.get(v.host, 0) + 1
    return counts


@settings(max_examples=150, deadline=None)
@given(worlds(), st.data())
def test_plans_made_while_actions_run_deploy_each_host_once_and_waste_no_vm_number(
    case: tuple[World, AgencyConfig, GoalState], data: st.DataObject
) -> None:
    world, config, goal = deepcopy(case[0]), case[1], case[2]
    state, _ = new_state(config, goal)
    deployed: list[DeployVm] = []
    state = run_interleaved(state, world, data, deployed)

    (agency,) = state.agencies
    assert sorted(a.host for a in agency.agents) == sorted(in_scope(world, config))
    assert all(n <= 1 for n in agency_vms_by_host(world).values()), "two agent VMs on one host"
    assert len({d.host for d in deployed}) == len(deployed), "a host deployed twice"
    one_by_one = deepcopy(case[0])
    converge(new_state(config, goal)[0], one_by_one)
    assert by_host(world) == by_host(one_by_one)
    numbers = sorted(int(d.name.rsplit(" (", 1)[1].rstrip(")")) for d in deployed)
    assert numbers == list(range(1, len(deployed) + 1))


def by_host(world: World) -> dict[MoRef | None, list[tuple[str | None, PowerState]]]:
    """Each host's agent VMs as (OVF URL, power state): what both engines must end with."""
    found: dict[MoRef | None, list[tuple[str | None, PowerState]]] = {}
    for v in world.vms.values():
        found.setdefault(v.host, []).append((v.ovf_url, v.power_state))
    return {h: sorted(vms, key=str) for h, vms in found.items()}


@settings(max_examples=100, deadline=None)
@given(worlds(), st.data())
def test_an_upgrade_planned_while_actions_run_stays_one_host_at_a_time_and_ends_as_one_by_one(
    case: tuple[World, AgencyConfig, GoalState], data: st.DataObject
) -> None:
    world, config, goal = case
    state, agency_id = new_state(config, goal)
    state = run_interleaved(state, world, data, [])
    newer = config.with_(
        agent_configs=tuple(replace(c, ovf_package_url="http://x/b.ovf") for c in config.agent_configs)
    )
    state = agent_ops.update_config(state, agency_id, newer)
    one_by_one = deepcopy(world)
    converge(state, one_by_one)

    state = run_interleaved(state, world, data, [])  # asserts one host at a time, at every round

    assert by_host(world) == by_host(one_by_one)
    assert "http://x/b.ovf" in {v.ovf_url for v in world.vms.values()} or not any(
        v.ovf_url == "http://x/b.ovf" for v in one_by_one.vms.values()
    )


def test_an_agent_on_a_host_whose_deploy_runs_is_kept_as_it_is_and_yellow() -> None:
    world, config, goal = _two_hosts()
    state, _ = new_state(config, goal)
    first = reconcile(state, world.observe(), NOW)
    (one, other) = sorted((a for a in first.actions if isinstance(a, DeployVm)), key=lambda a: a.host.value)
    # the first host's deploy finished; the other's still runs when the engine plans again
    state = agent_ops.record(first.state, one, world.apply(one), NOW)
    again = reconcile(state, world.observe(), NOW, InFlight(hosts=frozenset({other.host})))

    assert [type(a).__name__ for a in again.actions] == ["PowerOn"]  # the first host's only
    kept = next(a for a in again.state.agencies[0].agents if a.host == other.host)
    assert kept == next(a for a in state.agencies[0].agents if a.host == other.host)
    assert again.agent_status[kept.id].value == "yellow"
    assert again.state.agencies[0].vm_counter == 2  # the running deploy's number is not planned again


def test_no_second_host_starts_an_upgrade_while_the_first_ones_deploy_runs() -> None:
    world, config, goal = _two_hosts()
    state, agency_id = new_state(config, goal)
    state, _, _ = converge(state, world)
    newer = config.with_(agent_configs=(AgentConfig(ovf_package_url="http://x/b.ovf"),))
    state = agent_ops.update_config(state, agency_id, newer)
    (first,) = reconcile(state, world.observe(), NOW).actions
    assert isinstance(first, DeployVm) and first.upgrade

    running = InFlight(hosts=frozenset({first.host}), upgrades=frozenset({agency_id}))
    assert reconcile(state, world.observe(), NOW, running).actions == ()
    # the same plan without the upgrade in flight would start the other host (what the bound prevents)
    other = reconcile(state, world.observe(), NOW, InFlight(hosts=frozenset({first.host})))
    assert [(type(a).__name__, a.host) for a in other.actions] == [
        ("DeployVm", next(h for h in world.hosts if h != first.host))
    ]


def _two_hosts() -> tuple[World, AgencyConfig, GoalState]:
    world = World()
    cluster = MoRef("ClusterComputeResource", "c0")
    for n in (1, 2):
        world.add_host(
            n, cluster, HostFlags(mm=False, standby=False, connected=True, settings=True, version="8.0.2")
        )
    config = AgencyConfig(
        agency_name="a", agent_configs=(AgentConfig(ovf_package_url="http://x/a.ovf"),), scope=(cluster,)
    )
    return world, config, GoalState.ENABLED
