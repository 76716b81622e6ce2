"""core.agent_reads: a look reads the agents that changed, are in transition or are due in the sweep — never
every agent because one changed, and every agent within the sweep's period however many there are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.agent_reads import (
    AgencyReads,
    Changes,
    Look,
    ReadPolicy,
    after_reads,
    must_list,
    plan_reads,
)
from agentvm.model.agency import (
    AgentRuntime,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    PowerState,
    Status,
    VmHook,
)

NONE = Changes()
POLICY = ReadPolicy(first_retry=0.5, max_retry=8.0, sweep_per_minute=60.0, sweep_period=60.0)
SIZES = st.integers(min_value=1, max_value=300)


def vm(n: int) -> MoRef:
    return MoRef("VirtualMachine", f"vm-{n}")


def host(n: int) -> MoRef:
    return MoRef("HostSystem", f"host-{n}")


def agent(
    n: int, status: Status = Status.GREEN, *, hook: bool = False, vm_n: int | None = None
) -> AgentRuntime:
    return AgentRuntime(
        agent=f"agent-{n}",
        agency="agency-1",
        host=host(n),
        host_name=f"esx-{n}",
        goal_state=GoalState.ENABLED,
        status=status,
        power_state=PowerState.POWERED_ON,
        vm_name=f"hello ({n})",
        vm=vm(n if vm_n is None else vm_n),
        hook=VmHook(vm(1000 + n), HookState.PROVISIONED) if hook else None,
    )


def issue(key: int, n: int) -> Issue:
    return Issue(
        key, IssueKind.VM_POWERED_OFF, datetime(2025, 1, 1, tzinfo=UTC), "agency-1", "hello", f"agent-{n}"
    )


class Agency:
    """One agency's agents as EAM would report them, looked at through the pure functions as the backend
    does; ``reads`` counts AgentQueryRuntime calls and ``lists`` QueryAgent calls."""

    def __init__(self, agents: int, policy: ReadPolicy = POLICY) -> None:
        self.world: dict[str, AgentRuntime] = {f"agent-{n}": agent(n) for n in range(agents)}
        self.issues: list[Issue] = []
        self.status = Status.GREEN  # the agency's, as AgencyQueryRuntime says
        self.state: AgencyReads | None = None
        self.policy = policy
        self.reads: list[tuple[float, str]] = []
        self.lists = 0
        self.why: Counter[str] = Counter()  # the reads by reason (``ReadPlan.reasons``)

    def look(
        self,
        now: float,
        changes: Changes = NONE,
        *,
        relist: bool = False,
        busy: frozenset[str] = frozenset(),
        parked: frozenset[MoRef] = frozenset(),
    ) -> tuple[str, ...]:
        look = Look(now, changes, self.policy, relist, busy=busy, parked_hosts=parked)
        if self.state is not None:
            self.state = self.state.noted(changes)
        listed = must_list(self.state, look)
        if listed:
            self.lists += 1
        ids = tuple(self.world) if listed or self.state is None else self.state.ids
        plan = plan_reads(self.state, ids, self.issues, look, status=self.status)
        assert sum(plan.reasons.values()) == len(plan.read)  # every read has its one reason
        self.why.update(plan.reasons)
        read: Mapping[str, AgentRuntime] = {a: self.world[a] for a in plan.read if a in self.world}
        self.reads += [(now, a) for a in plan.read]
        self.state = after_reads(
            self.state, ids, read, self.issues, look, plan, listed=listed, status=self.status
        )
        return plan.read

    def seen(self, name: str) -> AgentRuntime:
        assert self.state is not None
        return self.state.agents[name].runtime


@given(SIZES, st.integers(min_value=1, max_value=50))
def test_a_quiet_agency_is_read_once_then_costs_no_agent_read_while_time_stands(
    agents: int, looks: int
) -> None:
    agency = Agency(agents)
    assert len(agency.look(0.0)) == agents  # the first look reads every agent
    for _ in range(looks):
        assert agency.look(0.0) == ()
    assert agency.lists == 1


@given(SIZES, st.data())
def test_a_changed_vm_costs_the_read_of_its_own_agent_only(agents: int, data: st.DataObject) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    victim = data.draw(st.integers(min_value=0, max_value=agents - 1))
    others = data.draw(st.sets(st.integers(min_value=agents, max_value=agents + 50), max_size=5))
    # a VM powered off (the victim's) and workload VMs that are no agent's
    read = agency.look(0.0, Changes(frozenset({vm(victim), *(vm(o) for o in others)})))
    assert read == (f"agent-{victim}",)
    assert agency.lists == 1  # and no QueryAgent


@given(SIZES, st.data())
def test_a_hook_vm_change_reads_the_agent_waiting_on_it(agents: int, data: st.DataObject) -> None:
    agency = Agency(agents)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True)
    agency.look(0.0)
    assert agency.look(0.25, Changes(frozenset({vm(1000 + n)}))) == (f"agent-{n}",)


@given(SIZES, st.data())
def test_a_marked_vm_on_a_known_host_reads_that_hosts_agent_and_on_a_new_host_lists_the_agents(
    agents: int, data: st.DataObject
) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True, vm_n=5000)  # EAM redeployed it
    assert agency.look(0.0, Changes(marked_hosts=frozenset({host(n)}))) == (f"agent-{n}",)
    assert agency.seen(f"agent-{n}").hook is not None
    assert agency.lists == 1
    agency.world[f"agent-{agents}"] = agent(agents, Status.YELLOW, hook=True)  # a host added: a new agent
    read = agency.look(0.0, Changes(marked_hosts=frozenset({host(agents)})))
    assert agency.lists == 2
    assert f"agent-{agents}" in read and len(read) <= 2  # the new agent (and the one still in transition)


@given(SIZES, st.data())
def test_an_agent_is_read_when_an_issue_names_it_and_when_it_goes_not_while_it_stays(
    agents: int, data: st.DataObject
) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    agency.world[f"agent-{n}"] = agent(n, Status.RED)
    agency.issues = [issue(7, n)]
    assert agency.look(0.0) == (f"agent-{n}",)
    for _ in range(3):
        assert agency.look(0.0) == ()  # red with its issue: settled until the issue changes
    agency.issues = []
    agency.world[f"agent-{n}"] = agent(n)
    assert agency.look(0.0) == (f"agent-{n}",)


@given(st.integers(min_value=1, max_value=30))
def test_an_unsettled_agent_is_read_again_with_a_doubling_capped_backoff(looks: int) -> None:
    agency = Agency(3, ReadPolicy(first_retry=0.5, follow=2, max_retry=4.0, sweep_per_minute=0.0))
    agency.world["agent-1"] = agent(1, Status.YELLOW)  # EAM working on it: no hook, no issue yet
    agency.look(0.0)
    now, gaps, last = 0.0, [], 0.0
    for _ in range(looks * 8):
        now += 0.25
        if agency.look(now):
            gaps.append(now - last)
            last = now
    expected = [0.5, 0.5, 0.5, 1.0, 2.0, 4.0]  # followed ``follow`` more times, then doubling to the cap
    assert gaps[: len(expected)] == expected[: len(gaps)]
    assert all(g == 4.0 for g in gaps[len(expected) :])
    agency.world["agent-1"] = agent(1)
    while not agency.look(now := now + 0.25):
        pass
    assert all(agency.look(now + 0.25 * i) == () for i in range(1, 40))  # green: settled, not read again


@given(st.integers(min_value=2, max_value=12))
def test_an_unsettled_agent_that_moved_or_was_acted_on_is_followed_closely_again(looks: int) -> None:
    agency = Agency(2, ReadPolicy(first_retry=0.5, max_retry=8.0, sweep_per_minute=0.0))
    agency.world["agent-1"] = agent(1, Status.YELLOW)
    agency.look(0.0)
    now = 0.0
    for _ in range(looks * 4):  # backing off while it reads the same
        agency.look(now := now + 0.5)
    assert agency.state is not None
    assert agency.state.agents["agent-1"].delay > 0.5
    agency.world["agent-1"] = agent(1, Status.YELLOW, hook=True)  # it moved on: a hook is pending
    agency.state = agency.state.marked_stale(["agent-1"])
    now += 0.25
    assert agency.look(now) == ("agent-1",)
    assert agency.state.agents["agent-1"].delay == 0.5  # acted on / moved: back to the first retry
    assert agency.look(now + 0.25) == ()
    assert agency.look(now + 0.5) == ("agent-1",)


@given(SIZES, st.sets(st.integers(min_value=0, max_value=299), min_size=1, max_size=5))
def test_when_the_agency_status_changes_every_unsettled_agent_is_read_and_only_those(
    agents: int, moving: set[int]
) -> None:
    agency = Agency(agents, ReadPolicy(first_retry=0.5, follow=0, max_retry=60.0, sweep_per_minute=0.0))
    yellow = {n for n in moving if n < agents} or {0}
    for n in yellow:
        agency.world[f"agent-{n}"] = agent(n, Status.YELLOW)
    agency.status = Status.YELLOW
    agency.look(0.0)
    for now in (0.5, 1.5, 3.5):  # backing off to 4 s
        agency.look(now)
    for n in yellow:
        agency.world[f"agent-{n}"] = agent(n)
    agency.status = Status.GREEN  # the last of them went green: no VM changed, the agency says so
    assert set(agency.look(4.0)) == {f"agent-{n}" for n in yellow}
    assert agency.look(4.5) == ()


@given(st.integers(min_value=1, max_value=90), st.sampled_from([0.5, 1.0, 5.0]))
def test_the_sweep_reads_every_agent_within_its_period_at_a_bounded_rate(agents: int, every: float) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    rate = POLICY.sweep_per_minute / 60.0
    period = max(POLICY.sweep_period, agents / rate)
    now, end = 0.0, 3 * period
    while now < end:
        now += every
        agency.look(now)
    swept = [t for t, _ in agency.reads if t > 0]
    assert len(swept) <= rate * now + 1  # idle reads a minute bounded by the rate, whatever the agents
    last = dict.fromkeys(agency.world, 0.0)
    worst = 0.0
    for t, name in sorted(agency.reads):
        worst = max(worst, t - last[name])
        last[name] = t
    worst = max([worst, *(now - t for t in last.values())])
    assert worst <= period + 2 * every + 1.0 / rate


@given(SIZES)
def test_forgetting_reads_every_agent_and_the_list_again(agents: int) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    assert agency.state is not None
    agency.state = agency.state.forgotten()
    assert len(agency.look(0.0)) == agents and agency.lists == 2


@given(SIZES, st.data())
def test_an_agent_marked_stale_by_an_action_is_read_at_the_next_look_only(
    agents: int, data: st.DataObject
) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    assert agency.state is not None
    agency.state = agency.state.marked_stale([f"agent-{n}"])
    assert agency.look(0.0) == (f"agent-{n}",)
    assert agency.look(0.0) == ()


@given(SIZES)
def test_a_relist_reads_the_agent_list_and_only_the_new_agents(agents: int) -> None:
    agency = Agency(agents)
    agency.look(0.0)
    agency.world[f"agent-{agents}"] = agent(agents)
    del agency.world["agent-0"]
    assert agency.look(0.0, relist=True) == (f"agent-{agents}",)
    assert agency.lists == 2
    assert agency.state is not None and "agent-0" not in agency.state.ids


def test_unwatched_looks_reuse_a_green_agency_for_green_max_age_only() -> None:
    policy = ReadPolicy(green_max_age=5.0)
    world = {f"agent-{n}": agent(n) for n in range(3)}
    state: AgencyReads | None = None
    counts = []
    for now, quiet in ((0.0, True), (1.0, True), (6.0, True), (6.5, False), (7.0, False)):
        look = Look(now, policy=policy, watched=False)
        assert must_list(state, look)
        plan = plan_reads(state, tuple(world), (), look, quiet=quiet)
        counts.append(len(plan.read))
        state = after_reads(
            state, tuple(world), {a: world[a] for a in plan.read}, (), look, plan, listed=True
        )
    assert counts == [3, 0, 3, 3, 3]


def with_a_pending_hook(agents: int, data: st.DataObject, *, sweep_per_minute: float) -> tuple[Agency, int]:
    """An agency looked at once, one agent of it (drawn, its number returned) with a pending hook."""
    agency = Agency(agents, ReadPolicy(first_retry=0.5, max_retry=8.0, sweep_per_minute=sweep_per_minute))
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True)
    agency.look(0.0)
    return agency, n


def undeployed(n: int) -> AgentRuntime:
    """Agent ``n`` as EAM reports it before its VM exists: yellow, no VM, no hook."""
    return replace(agent(n, Status.YELLOW), vm=None, vm_name="", power_state=PowerState.POWERED_OFF)


@given(SIZES, st.data())
def test_with_follow_undeployed_off_an_agent_waiting_for_its_vm_is_read_when_one_appears_on_its_host(
    agents: int, data: st.DataObject
) -> None:
    agency = Agency(
        agents, ReadPolicy(first_retry=0.5, max_retry=8.0, sweep_per_minute=0.0, follow_undeployed=False)
    )
    agency.world = {f"agent-{n}": undeployed(n) for n in range(agents)}  # an agency just created
    assert len(agency.look(0.0)) == agents
    now = 0.0
    for _ in range(80):  # 20 s of looks while EAM deploys elsewhere: no agent read
        now += 0.25
        assert agency.look(now) == ()
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    # a marked VM on its host, EAM not caught up yet: read, then followed until EAM names the VM
    now += 0.25
    assert agency.look(now, Changes(marked_hosts=frozenset({host(n)}))) == (f"agent-{n}",)
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True)
    while not agency.look(now := now + 0.25):
        pass
    assert agency.seen(f"agent-{n}").hook is not None
    # the same agency with the controller's default (follow_undeployed on) reads them again by backoff
    default = Agency(agents, ReadPolicy(first_retry=0.5, max_retry=8.0, sweep_per_minute=0.0))
    default.world = {f"agent-{n}": undeployed(n) for n in range(agents)}
    default.look(0.0)
    assert len(default.look(0.5)) == agents


@given(SIZES, st.data())
def test_an_agent_the_caller_is_acting_on_is_not_read_until_its_action_marks_it(
    agents: int, data: st.DataObject
) -> None:
    agency, n = with_a_pending_hook(agents, data, sweep_per_minute=6000.0)
    busy = frozenset({f"agent-{n}"})
    now = 0.0
    for _ in range(40):  # its backoff falls due, the sweep has credit, its VM changes: still not read
        now += 0.25
        read = agency.look(now, Changes(frozenset({vm(1000 + n)})), busy=busy)
        assert f"agent-{n}" not in read
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW)  # answered: no hook now
    assert agency.state is not None
    agency.state = agency.state.marked_stale([f"agent-{n}"])
    assert f"agent-{n}" in agency.look(now + 0.25)


@given(SIZES, st.data())
def test_a_held_agent_whose_vm_changed_while_it_was_busy_is_read_at_the_look_after(
    agents: int, data: st.DataObject
) -> None:
    # the caller acts on the agent (busy while its answer runs), then holds it: a VM change the watch saw
    # while it was busy (its power-on) must not be spent unread, or it waits for the fallback
    agency, n = with_a_pending_hook(agents, data, sweep_per_minute=0.0)
    name = f"agent-{n}"
    busy_looks = data.draw(st.integers(min_value=1, max_value=5))
    now = 0.0
    for i in range(busy_looks):  # the power-on comes in one of the looks while the answer is in flight
        changes = Changes(frozenset({vm(n)})) if i == busy_looks - 1 else NONE
        assert name not in agency.look(now := now + 0.25, changes, busy=frozenset({name}))
    agency.world[name] = agent(n, Status.GREEN)
    assert agency.state is not None
    agency.state = agency.state.held_back([name])  # the answer is in: held, not stale
    assert agency.look(now + 0.25) == (name,)
    assert agency.seen(name).status is Status.GREEN


def powered_off(n: int) -> AgentRuntime:
    """The agent EAM powered off because its host entered maintenance mode: yellow, no hook, no issue."""
    return replace(agent(n, Status.YELLOW), power_state=PowerState.POWERED_OFF)


@given(SIZES, st.data(), st.integers(min_value=1, max_value=200))
def test_an_agent_on_a_host_in_maintenance_mode_is_not_followed_until_the_watch_names_its_vm(
    agents: int, data: st.DataObject, looks: int
) -> None:
    agency = Agency(agents, ReadPolicy(first_retry=0.25, max_retry=8.0, sweep_per_minute=0.0))
    agency.look(0.0)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    parked = frozenset({host(n)})
    agency.world[f"agent-{n}"] = powered_off(n)
    agency.status = Status.YELLOW
    assert agency.look(0.1, Changes(frozenset({vm(n)})), parked=parked) == (f"agent-{n}",)
    now = 0.1
    for _ in range(looks):  # its host stays in maintenance mode: no backoff read, no status-change read
        assert agency.look(now := now + 0.25, parked=parked) == ()
    agency.status = Status.GREEN
    assert agency.look(now := now + 0.25, parked=parked) == ()
    # the host left maintenance mode: its agent is read (whatever the order of the host's and the VM's
    # updates, it is followed from here), then again when EAM powered the VM on and the watch names it
    assert agency.look(now := now + 0.25) == (f"agent-{n}",)
    agency.world[f"agent-{n}"] = agent(n)
    assert agency.look(now + 0.1, Changes(frozenset({vm(n)}))) == (f"agent-{n}",)
    assert agency.why == Counter({"full": agents, "watch": 2, "host": 1})


def test_an_agent_read_powered_on_while_its_host_is_still_shown_in_maintenance_mode_is_followed() -> None:
    # the host's exit and EAM's power-on can reach the watch in either order: read powered on but not green
    # yet, the agent is in transition, whatever the host
    agency = Agency(2, ReadPolicy(first_retry=0.25, follow=3, max_retry=8.0, sweep_per_minute=0.0))
    agency.look(0.0)
    parked = frozenset({host(1)})
    agency.world["agent-1"] = agent(1, Status.YELLOW)  # on again, EAM has not said green yet
    agency.look(0.1, Changes(frozenset({vm(1)})), parked=parked)
    assert agency.look(0.35, parked=parked) == ("agent-1",)


def test_an_agent_on_a_host_out_of_maintenance_mode_is_followed_as_before() -> None:
    agency = Agency(2, ReadPolicy(first_retry=0.25, follow=3, max_retry=8.0, sweep_per_minute=0.0))
    agency.look(0.0)
    agency.world["agent-1"] = powered_off(1)  # no host parked: EAM has not caught up yet
    agency.look(0.1, Changes(frozenset({vm(1)})))
    assert [agency.look(0.1 + 0.25 * i) for i in range(1, 5)] == [("agent-1",)] * 4
    assert agency.why == Counter({"full": 2, "watch": 1, "retry": 4})


def test_each_read_has_its_reason() -> None:
    agency = Agency(6, ReadPolicy(first_retry=0.5, follow=3, max_retry=8.0, sweep_per_minute=60.0))
    agency.look(0.0)
    agency.world["agent-1"] = agent(1, Status.RED)
    agency.issues = [issue(7, 1)]  # an issue names agent-1
    agency.world["agent-2"] = agent(2, Status.YELLOW)
    agency.state = agency.state.marked_stale(["agent-3"]) if agency.state is not None else None
    agency.world["agent-6"] = agent(6)  # a new agent (a relist finds it)
    agency.look(0.5, Changes(frozenset({vm(2)})), relist=True)
    assert agency.why == Counter({"full": 6, "issue": 1, "watch": 1, "stale": 1, "new": 1})
    agency.look(1.0)  # agent-2 is yellow: its backoff is due
    assert agency.why["retry"] == 1
    agency.look(30.0)  # the sweep earned 7 agents / 60 s for 29 s, at most 1 + 10 s of it
    assert agency.why["sweep"] == 2
