"""The heal policy (agentvm.core.heal): which issues are resolved, when, and when agentvm gives up."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agentvm.backends.base import AgencyStatus
from agentvm.core.heal import (
    HEAL_CLASSES,
    AgentDisplayState,
    Backoff,
    Finding,
    HealKey,
    HealPlan,
    HealPolicy,
    HealState,
    HostConditions,
    Verdict,
    agent_state,
    count_kinds,
    count_states,
    find_misplaced,
    fix_for,
    plan_heal,
    plan_heal_agencies,
)
from agentvm.model.agency import (
    DETAIL_DOWNLOAD_URL,
    AgencyRuntime,
    AgentRuntime,
    GoalState,
    Issue,
    IssueKind,
    MoRef,
    PowerState,
    Status,
)
from agentvm.model.inventory import ConnectionState, Host, HostPowerState

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = HealPolicy(default=Backoff(base=10.0, factor=2.0, cap=60.0, jitter=0.25, max_attempts=4), seed=7)
# what ``resolve`` can fix (EAM redeploys, powers on, retries), and what needs an administrator first
ACTIVE = sorted(
    [
        IssueKind.CANNOT_ACCESS_AGENT_OVF,
        IssueKind.INCOMPATIBLE_HOST_VERSION,
        IssueKind.INSUFFICIENT_RESOURCES,
        IssueKind.INSUFFICIENT_SPACE,
        IssueKind.VM_CORRUPTED,
        IssueKind.VM_NOT_DEPLOYED,
        IssueKind.VM_ORPHANED,
        IssueKind.VM_POWERED_OFF,
        IssueKind.VM_POWERED_ON,
        IssueKind.VM_SUSPENDED,
    ]
)
PASSIVE = sorted(
    [
        IssueKind.INVALID_CONFIG,
        IssueKind.NO_AGENT_VM_DATASTORE,
        IssueKind.NO_AGENT_VM_NETWORK,
        IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE,
        IssueKind.NO_CUSTOM_AGENT_VM_NETWORK,
        IssueKind.OVF_INVALID_FORMAT,
        IssueKind.OVF_INVALID_PROPERTY,
    ]
)


def _issue(
    key: int = 1, kind: IssueKind = IssueKind.VM_POWERED_OFF, agent: str | None = "agent-1", host: int = 1
) -> Issue:
    return Issue(
        key,
        kind,
        T0,
        "agency-1",
        "hello",
        agent=agent,
        host=MoRef("HostSystem", f"host-{host}"),
        host_name=f"/DC0/host/C0/H{host}",
    )


def _run(times: list[float], policy: HealPolicy = POLICY) -> list[tuple[float, Verdict]]:
    """The verdicts for one persistent issue observed at ``times`` (its key regenerated each time)."""
    state = HealState()
    out = []
    for n, now in enumerate(times):
        plan = plan_heal([_issue(key=100 + n)], state, now, policy)
        out.append((now, plan.decisions[0].verdict))
        state = plan.state
    return out


# -------------------------------------------------------------------------------------- classes


def test_every_known_issue_kind_has_a_class_and_a_fix() -> None:
    for kind in IssueKind:
        assert kind in HEAL_CLASSES
        assert fix_for(_issue(kind=kind))


def test_the_fix_carries_the_issues_own_details() -> None:
    issue = Issue(
        1,
        IssueKind.CANNOT_ACCESS_AGENT_OVF,
        T0,
        "agency-1",
        "hello",
        detail={DETAIL_DOWNLOAD_URL: "http://127.0.0.1:1/agent.ovf"},
    )
    assert "URL: http://127.0.0.1:1/agent.ovf" in fix_for(issue)


def test_maintenance_and_standby_kinds_are_never_resolved() -> None:
    for kind in (
        IssueKind.HOST_IN_MAINTENANCE_MODE,
        IssueKind.VM_REQUIRES_HOST_OUT_OF_MAINTENANCE_MODE,
        IssueKind.HOST_IN_STANDBY_MODE,
    ):
        plan = plan_heal([_issue(kind=kind)], HealState(), 0.0, POLICY)
        assert plan.resolves == ()
        assert plan.decisions[0].verdict is Verdict.EXPECTED
        assert not plan.decisions[0].failure


def test_a_passive_issue_is_reported_with_its_fix_and_never_resolved() -> None:
    state = HealState()
    announced = []
    for now in range(0, 10_000, 97):
        plan = plan_heal([_issue(kind=IssueKind.NO_AGENT_VM_NETWORK)], state, float(now), POLICY)
        (decision,) = plan.decisions
        assert plan.resolves == ()
        assert decision.verdict is Verdict.REPORT and decision.failure
        assert "network" in decision.fix
        announced.append(decision.announce)
        state = plan.state
    assert announced[0] and not any(announced[1:])  # said once, not on every observation


def test_an_unreachable_host_is_waited_out_with_its_other_issues() -> None:
    issues = [
        _issue(1, IssueKind.MANAGED_HOST_NOT_REACHABLE, agent="agent-1"),
        _issue(2, IssueKind.VM_POWERED_OFF, agent="agent-1"),
    ]
    plan = plan_heal(issues, HealState(), 0.0, POLICY)
    assert plan.resolves == ()
    assert {d.verdict for d in plan.decisions} == {Verdict.WAIT}
    assert plan.state.attempts == {}  # waiting costs no attempt


def test_an_active_issue_on_a_host_in_maintenance_mode_is_expected() -> None:
    hosts = HostConditions.of(
        [
            Host(MoRef("HostSystem", "host-1"), "H1", "/DC0/host/C0/H1", in_maintenance_mode=True),
            Host(MoRef("HostSystem", "host-2"), "H2", "/DC0/host/C0/H2", power_state=HostPowerState.STANDBY),
            Host(
                MoRef("HostSystem", "host-3"),
                "H3",
                "/DC0/host/C0/H3",
                connection_state=ConnectionState.NOT_RESPONDING,
            ),
            Host(MoRef("HostSystem", "host-4"), "H4", "/DC0/host/C0/H4"),
        ]
    )
    issues = [_issue(n, agent=f"agent-{n}", host=n) for n in (1, 2, 3, 4)]
    plan = plan_heal(issues, HealState(), 0.0, POLICY, hosts)
    verdicts = {d.key.agent: d.verdict for d in plan.decisions}
    assert verdicts == {
        "agent-1": Verdict.EXPECTED,
        "agent-2": Verdict.EXPECTED,
        "agent-3": Verdict.WAIT,
        "agent-4": Verdict.RESOLVE,
    }
    assert [i.key for i in plan.resolves] == [4]


# -------------------------------------------------------------------------------------- backoff


def test_an_active_issue_is_resolved_at_once_then_backs_off() -> None:
    plan = plan_heal([_issue()], HealState(), 100.0, POLICY)
    (decision,) = plan.decisions
    assert decision.verdict is Verdict.RESOLVE and decision.attempt == 1
    assert plan.resolves == (_issue(),)
    assert decision.next_at is not None and 110.0 <= decision.next_at < 112.5
    assert plan.wake_at == decision.next_at

    later = plan_heal([_issue(key=2)], plan.state, 105.0, POLICY)  # EAM raised it again under a new key
    assert later.decisions[0].verdict is Verdict.BACKOFF
    assert later.resolves == ()
    assert later.wake_at == decision.next_at
    assert "next attempt in" in later.decisions[0].reason


def test_it_gives_up_after_max_attempts_and_says_so_once() -> None:
    verdicts = _run([float(t) for t in range(0, 2000, 5)])
    resolves = [t for t, v in verdicts if v is Verdict.RESOLVE]
    assert len(resolves) == 4
    gave_up = [v for _, v in verdicts if v is Verdict.GAVE_UP]
    assert gave_up and verdicts[-1][1] is Verdict.GAVE_UP

    state = HealState()
    announcements = []
    for n, now in enumerate(range(0, 2000, 5)):
        plan = plan_heal([_issue(key=n)], state, float(now), POLICY)
        state = plan.state
        if plan.decisions[0].verdict is Verdict.GAVE_UP:
            announcements.append(plan.decisions[0].announce)
            assert "gave up" in plan.decisions[0].reason and "after 4 resolve(s)" in plan.decisions[0].reason
            assert plan.wake_at is None
    assert announcements[0] and not any(announcements[1:])


def test_a_kind_has_its_own_attempt_budget() -> None:
    policy = HealPolicy(
        per_kind={IssueKind.INCOMPATIBLE_HOST_VERSION: Backoff(base=1.0, cap=1.0, jitter=0.0, max_attempts=2)}
    )
    state, resolves = HealState(), 0
    for now in range(100):
        plan = plan_heal([_issue(kind=IssueKind.INCOMPATIBLE_HOST_VERSION)], state, float(now), policy)
        resolves += len(plan.resolves)
        state = plan.state
    assert resolves == 2


def test_a_cleared_issue_counts_as_healed_once_and_starts_afresh_only_after_settling() -> None:
    key = HealKey("agency-1", "agent-1", IssueKind.VM_POWERED_OFF)
    first = plan_heal([_issue()], HealState(), 0.0, POLICY)
    cleared = plan_heal([], first.state, 1.0, POLICY)
    assert cleared.healed == (key,)
    assert plan_heal([], cleared.state, 2.0, POLICY).healed == ()  # said once, not on every observation
    # back before the settle period: the backoff of attempt 1 still holds, and the count goes on
    soon = plan_heal([_issue(key=9)], cleared.state, 2.0, POLICY)
    assert soon.decisions[0].verdict is Verdict.BACKOFF and soon.decisions[0].attempt == 1
    due = plan_heal([_issue(key=9)], soon.state, 20.0, POLICY)
    assert due.decisions[0].verdict is Verdict.RESOLVE and due.decisions[0].attempt == 2
    # away for the whole settle period: forgotten, the next one is attempt 1 again
    settled = plan_heal([], cleared.state, 1.0 + POLICY.settle, POLICY)
    assert settled.state.attempts == {} or settled.state.attempts[key].count == 0
    again = plan_heal([_issue(key=10)], settled.state, 2.0 + POLICY.settle, POLICY)
    assert again.decisions[0].verdict is Verdict.RESOLVE and again.decisions[0].attempt == 1


def test_keys_of_agencies_not_observed_are_kept() -> None:
    first = plan_heal([_issue()], HealState(), 0.0, POLICY)
    other = plan_heal([], first.state, 1.0, POLICY, scope={"agency-2"})
    assert other.state == first.state and other.healed == ()


def test_issues_are_keyed_by_agent_and_kind_not_by_issue_key() -> None:
    issues = [
        _issue(1, agent="agent-1"),
        _issue(2, agent="agent-1"),  # a duplicate of the same problem
        _issue(3, agent="agent-2", host=2),
        _issue(4, IssueKind.VM_NOT_DEPLOYED, agent="agent-1"),
    ]
    plan = plan_heal(issues, HealState(), 0.0, POLICY)
    assert len(plan.decisions) == 3
    assert sorted(i.key for i in plan.resolves) == [1, 2, 3, 4]
    assert len(plan.state.attempts) == 3


def test_forgetting_a_key_lets_a_given_up_issue_be_tried_again() -> None:
    state = HealState()
    for n, now in enumerate(range(0, 2000, 5)):
        state = plan_heal([_issue(key=n)], state, float(now), POLICY).state
    key = HealKey("agency-1", "agent-1", IssueKind.VM_POWERED_OFF)
    assert state.attempts[key].gave_up
    plan = plan_heal([_issue()], state.with_forgotten([key]), 2000.0, POLICY)
    assert plan.decisions[0].verdict is Verdict.RESOLVE
    assert plan_heal([_issue()], state.with_forgotten(), 2000.0, POLICY).resolves


def test_agency_observations_are_planned_with_each_issue_once() -> None:
    issue = _issue()
    agent = AgentRuntime(
        "agent-1",
        "agency-1",
        MoRef("HostSystem", "host-1"),
        "H1",
        GoalState.ENABLED,
        Status.RED,
        PowerState.POWERED_OFF,
        "hello (1)",
        issues=(issue,),
    )

    class Observed:
        agency = "agency-1"
        issues = (issue,)  # EAM aggregates agent issues into the agency's
        agents = (agent,)

    runtime = AgencyRuntime("agency-1", GoalState.ENABLED, Status.RED, (issue,))
    assert runtime.issues == Observed.issues
    plan = plan_heal_agencies([Observed()], HealState(), 0.0, POLICY)
    assert plan.resolves == (issue,)


def test_a_backoff_whose_jitter_could_make_delays_shrink_is_refused() -> None:
    with pytest.raises(ValueError, match="never decrease"):
        Backoff(factor=1.1, jitter=0.5)
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)


# -------------------------------------------------------------------------------------- properties

backoffs = st.builds(
    lambda base, jitter, slack, cap_factor, attempts: Backoff(
        base=base,
        factor=1 + jitter + slack,
        cap=base * cap_factor,
        jitter=jitter,
        max_attempts=attempts,
    ),
    st.floats(0.1, 100),
    st.floats(0, 0.9),
    st.floats(0, 3),
    st.floats(1, 1000),
    st.integers(1, 12),
)


@given(backoffs, st.integers(0, 2**32), st.sampled_from(ACTIVE), st.text(min_size=1, max_size=8))
def test_backoff_never_decreases_and_never_passes_the_cap(
    backoff: Backoff, seed: int, kind: IssueKind, agent: str
) -> None:
    policy = HealPolicy(default=backoff, per_kind={}, seed=seed)
    key = HealKey("agency-1", agent, kind)
    delays = [policy.delay(key, n) for n in range(1, 40)]
    # factor >= 1 + jitter makes it monotonic; floating point may round the equal case down by an ulp
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(delays))
    assert all(backoff.base <= d <= backoff.cap for d in delays)


@settings(max_examples=60)
@given(
    backoffs,
    st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=120),
    st.sampled_from(ACTIVE),
)
def test_never_more_resolves_than_max_attempts_and_gaps_grow(
    backoff: Backoff, gaps: list[float], kind: IssueKind
) -> None:
    policy = HealPolicy(default=backoff, per_kind={})
    state, now, resolved_at = HealState(), 0.0, []
    for n, gap in enumerate(gaps):
        now += gap
        plan = plan_heal([_issue(key=n, kind=kind)], state, now, policy)
        if plan.resolves:
            resolved_at.append(now)
        state = plan.state
    assert 1 <= len(resolved_at) <= backoff.max_attempts
    # each resolve waited at least the delay its predecessor set
    for n, (a, b) in enumerate(itertools.pairwise(resolved_at), start=1):
        assert b - a >= policy.delay(HealKey("agency-1", "agent-1", kind), n) - 1e-9


@given(
    st.lists(st.tuples(st.sampled_from(list(IssueKind)), st.integers(1, 4), st.booleans()), max_size=20),
    st.floats(0, 1e6),
    st.integers(0, 10),
)
def test_decisions_are_a_pure_function_of_their_inputs(
    issue_specs: list[tuple[IssueKind, int, bool]], now: float, seed: int
) -> None:
    issues = [
        _issue(n, kind, agent=f"agent-{h}" if on_agent else None, host=h)
        for n, (kind, h, on_agent) in enumerate(issue_specs)
    ]
    policy = HealPolicy(seed=seed)
    state = plan_heal(issues[: len(issues) // 2], HealState(), now - 100, policy).state
    before = dict(state.attempts)
    one = plan_heal(issues, state, now, policy)
    two = plan_heal(list(reversed(issues)), state, now, policy)
    assert one == two
    assert dict(state.attempts) == before  # the input state is left as it was
    resolved = {HealKey.of(i) for i in one.resolves}
    assert all(k.kind in ACTIVE for k in resolved)


@given(st.sampled_from(ACTIVE + PASSIVE), st.integers(1, 30))
def test_a_cleared_issue_resets_its_state_after_settling(kind: IssueKind, observations: int) -> None:
    state = HealState()
    for n in range(observations):
        state = plan_heal([_issue(key=n, kind=kind)], state, float(n * 1000), POLICY).state
    cleared = plan_heal([], state, 1e9, POLICY)
    settled = plan_heal([], cleared.state, 1e9 + POLICY.settle + POLICY.flap_window, POLICY)
    assert settled.state.attempts == {}
    back = plan_heal([_issue(kind=kind)], settled.state, 1e9 + POLICY.settle + POLICY.flap_window + 1, POLICY)
    expected = Verdict.RESOLVE if kind in ACTIVE else Verdict.REPORT
    assert back.decisions[0].verdict is expected
    assert back.decisions[0].announce or expected is Verdict.RESOLVE


# -------------------------------------------------------------------------------------- summaries


def _agent(n: int, status: Status, issues: tuple[Issue, ...] = ()) -> AgentRuntime:
    return AgentRuntime(
        f"agent-{n}",
        "agency-1",
        MoRef("HostSystem", f"host-{n}"),
        f"H{n}",
        GoalState.ENABLED,
        status,
        PowerState.POWERED_ON,
        f"hello ({n})",
        issues=issues,
    )


def test_an_agent_on_a_host_in_maintenance_counts_as_maintenance_not_red() -> None:
    hosts = HostConditions(maintenance=frozenset({MoRef("HostSystem", "host-2")}))
    agents = [
        _agent(1, Status.GREEN),
        _agent(2, Status.RED),  # powered off by EAM for maintenance mode
        _agent(3, Status.RED, (_issue(3, IssueKind.HOST_IN_STANDBY_MODE, agent="agent-3", host=3),)),
        _agent(4, Status.YELLOW),
        _agent(5, Status.RED),
    ]
    assert agent_state(agents[1], hosts) is AgentDisplayState.MAINTENANCE
    assert count_states(agents, hosts) == {
        "green": 1,
        "yellow": 1,
        "red": 1,
        "maintenance": 2,
        "flapping": 0,
        "misplaced": 0,
    }
    assert count_states(agents, hosts, flapping={"agent-5"}, misplaced={"agent-1", "agent-2"}) == {
        "green": 0,
        "yellow": 1,
        "red": 0,
        "maintenance": 2,  # maintenance mode wins: the agent is expected to be down
        "flapping": 1,
        "misplaced": 1,
    }
    issues = [_issue(1), _issue(2), _issue(3, IssueKind.VM_NOT_DEPLOYED)]
    assert count_kinds(issues) == {"VmPoweredOff": 2, "VmNotDeployed": 1}


def test_a_maintenance_issue_holds_the_other_issues_of_its_host() -> None:
    issues = [
        _issue(1, IssueKind.HOST_IN_MAINTENANCE_MODE),
        _issue(2, IssueKind.VM_POWERED_OFF),
        _issue(3, IssueKind.VM_POWERED_OFF, agent="agent-2", host=2),
    ]
    plan = plan_heal(issues, HealState(), 0.0, POLICY)
    assert [i.key for i in plan.resolves] == [3]
    assert {d.key.agent: d.verdict for d in plan.decisions if d.key.kind is IssueKind.VM_POWERED_OFF} == {
        "agent-1": Verdict.EXPECTED,
        "agent-2": Verdict.RESOLVE,
    }


def test_grace_delays_the_first_resolve_and_then_counts_from_one() -> None:
    policy = HealPolicy(default=Backoff(base=10.0, cap=60.0, jitter=0.0, max_attempts=3, grace=5.0))
    state = HealState()
    first = plan_heal([_issue()], state, 0.0, policy)
    assert first.resolves == () and first.decisions[0].verdict is Verdict.BACKOFF
    assert first.wake_at == 5.0
    early = plan_heal([_issue(key=2)], first.state, 4.9, policy)
    assert early.resolves == ()
    due = plan_heal([_issue(key=3)], early.state, 5.0, policy)
    assert [i.key for i in due.resolves] == [3] and due.decisions[0].attempt == 1
    assert _run([0.0, 5.0, 15.0, 35.0, 75.0], policy) == [
        (0.0, Verdict.BACKOFF),
        (5.0, Verdict.RESOLVE),
        (15.0, Verdict.RESOLVE),
        (35.0, Verdict.RESOLVE),
        (75.0, Verdict.GAVE_UP),
    ]


def test_an_issue_that_clears_within_its_grace_is_never_resolved() -> None:
    policy = HealPolicy(default=Backoff(grace=5.0))
    seen = plan_heal([_issue()], HealState(), 0.0, policy)
    cleared = plan_heal([], seen.state, 3.0, policy)
    assert cleared.resolves == () and cleared.healed == ()


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="grace"):
        Backoff(grace=-1.0)


# -------------------------------------------------------------------------------------- flapping

KEY = HealKey("agency-1", "agent-1", IssueKind.VM_POWERED_OFF)
observations = st.lists(st.tuples(st.floats(0, 40, allow_nan=False), st.booleans()), min_size=1, max_size=150)
policies = st.builds(
    lambda backoff, settle, limit, window: HealPolicy(
        default=backoff, per_kind={}, settle=settle, flap_limit=limit, flap_window=window
    ),
    backoffs,
    st.floats(0, 60),
    st.integers(1, 6),
    st.floats(1, 300),
)


def _flap(policy: HealPolicy, steps: list[tuple[float, bool]]) -> list[tuple[float, bool, HealPlan]]:
    """Observe the agent at increasing times, with its issue present (True) or gone (False) each time."""
    state, now, out = HealState(), 0.0, []
    for n, (gap, present) in enumerate(steps):
        now += gap
        plan = plan_heal([_issue(key=n)] if present else [], state, now, policy)
        out.append((now, present, plan))
        state = plan.state
    return out


@settings(max_examples=80, deadline=None)
@given(policies, observations)
def test_resolves_within_any_flap_window_are_bounded(
    policy: HealPolicy, steps: list[tuple[float, bool]]
) -> None:
    resolved_at = [now for now, _, plan in _flap(policy, steps) if plan.resolves]
    for n, start in enumerate(resolved_at):
        inside = [t for t in resolved_at[n:] if t <= start + policy.flap_window]
        assert len(inside) <= policy.flap_limit, (start, resolved_at)


@settings(max_examples=80, deadline=None)
@given(policies, observations)
def test_the_attempt_count_starts_again_only_after_staying_healthy_for_the_settle_period(
    policy: HealPolicy, steps: list[tuple[float, bool]]
) -> None:
    healthy_since: float | None = None  # first observation of the current run of absences
    longest_rest = 0.0  # the longest healthy run since the previous resolve (up to the next sighting)
    resolves = 0
    for now, present, plan in _flap(policy, steps):
        if not present:
            healthy_since = now if healthy_since is None else healthy_since
            continue
        if healthy_since is not None:
            longest_rest = max(longest_rest, now - healthy_since)
            healthy_since = None
        (decision,) = plan.decisions
        if decision.verdict is Verdict.RESOLVE:
            if resolves and decision.attempt == 1:
                assert longest_rest >= policy.settle, (now, longest_rest)
            resolves += 1
            longest_rest = 0.0


@settings(max_examples=60, deadline=None)
@given(policies, observations)
def test_giving_up_is_announced_once_while_the_agent_never_settles(
    policy: HealPolicy, steps: list[tuple[float, bool]]
) -> None:
    # gaps so short that even all of them together stay under the settle period: the agent never stays
    # healthy long enough to be forgiven (with no settle period at all, any recovery is long enough:
    # nothing to check). A run of healthy gaps that adds up to the settle period is a settled agent.
    assume(policy.settle > 0)
    short = [(min(gap, policy.settle / (len(steps) + 1)), present) for gap, present in steps]
    announced = [
        d
        for _, _, plan in _flap(policy, short)
        for d in plan.decisions
        if d.announce and d.verdict in (Verdict.FLAPPING, Verdict.GAVE_UP)
    ]
    assert len(announced) <= 1


def test_an_agent_broken_again_each_time_it_is_healed_is_given_up_on_as_flapping() -> None:
    policy = HealPolicy(
        default=Backoff(base=1.0, factor=2.0, cap=8.0, jitter=0.0, max_attempts=5), settle=30.0
    )
    # 26 power-offs in 120 s: healed, then powered off again a few seconds later, again and again
    steps = [(2.3, n % 2 == 0) for n in range(52)]
    plans = _flap(policy, steps)
    attempts = [d.attempt for _, _, p in plans for d in p.decisions if d.verdict is Verdict.RESOLVE]
    assert attempts == [1, 2, 3, 4, 5]  # never "attempt 1 of 5" again
    verdicts = [d.verdict for _, _, p in plans for d in p.decisions]
    assert verdicts.count(Verdict.FLAPPING) >= 1 and Verdict.GAVE_UP not in verdicts
    (announced,) = [d for _, _, p in plans for d in p.decisions if d.announce]
    assert announced.verdict is Verdict.FLAPPING and "came back" in announced.reason
    assert plans[-1][2].state.flapping == {KEY}
    # it stays given up through short recoveries, and is forgiven once it stays away the settle period
    last = plans[-1][0]
    rested = plan_heal([], plans[-1][2].state, last + 1, policy)
    back = plan_heal([_issue(key=99)], rested.state, last + 2, policy)
    assert back.decisions[0].verdict is Verdict.FLAPPING and not back.decisions[0].announce
    gone = plan_heal([], back.state, last + 3, policy)
    forgiven = plan_heal([], gone.state, last + 3 + policy.settle, policy)
    assert forgiven.state.flapping == frozenset()


def test_the_flap_limit_bounds_resolves_across_settle_periods() -> None:
    policy = HealPolicy(
        default=Backoff(base=1.0, cap=1.0, jitter=0.0, max_attempts=5),
        settle=2.0,
        flap_limit=3,
        flap_window=100.0,
    )
    # each time: one resolve that works, then 4 s healthy (more than the settle period), then back
    steps = [(1.0, True), (0.5, False), (3.0, False)] * 6
    plans = _flap(policy, steps)
    assert sum(len(p.resolves) for _, _, p in plans) == 3
    assert [d.attempt for _, _, p in plans for d in p.decisions if d.verdict is Verdict.RESOLVE] == [1, 1, 1]
    assert any(d.verdict is Verdict.FLAPPING for _, _, p in plans for d in p.decisions)


def test_a_bad_flapping_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="settle"):
        HealPolicy(settle=-1.0)
    with pytest.raises(ValueError, match="flap_limit"):
        HealPolicy(flap_limit=0)


# -------------------------------------------------------------------------------------- misplaced


def _status_of(agents: tuple[AgentRuntime, ...]) -> AgencyStatus:
    return AgencyStatus(
        "agency-1", "hello", AgencyRuntime("agency-1", GoalState.ENABLED, Status.GREEN), agents
    )


def _placed(n: int, vm: int) -> AgentRuntime:
    return dataclasses.replace(_agent(n, Status.GREEN), vm=MoRef("VirtualMachine", f"vm-{vm}"))


def test_an_agent_vm_on_another_host_is_found_and_moved_back_with_backoff() -> None:
    agents = (_placed(1, 41), _placed(2, 42), dataclasses.replace(_agent(3, Status.YELLOW), vm=None))
    vm_hosts = {MoRef("VirtualMachine", "vm-41"): MoRef("HostSystem", "host-2"), agents[1].vm: agents[1].host}
    names = {MoRef("HostSystem", "host-1"): "/DC0/host/C0/H1", MoRef("HostSystem", "host-2"): "H2"}
    (found,) = find_misplaced([_status_of(agents)], vm_hosts, names)  # type: ignore[dict-item]
    assert (found.agent, found.host.value, found.runs_on.value) == ("agent-1", "host-1", "host-2")
    assert "runs on H2" in found.sentence() and "resolve --all" in found.sentence()
    assert find_misplaced([_status_of(agents)], {}) == ()  # not read yet: nothing is claimed

    plan = plan_heal([], HealState(), 0.0, POLICY, misplaced=[found])
    assert plan.migrations == (found,) and plan.resolves == ()
    (decision,) = plan.decisions
    assert decision.key.kind is Finding.VM_ON_WRONG_HOST and decision.host == found.host
    later = plan_heal([], plan.state, 1.0, POLICY, misplaced=[found])
    assert later.migrations == () and later.decisions[0].verdict is Verdict.BACKOFF
    moved = plan_heal([], later.state, 2.0, POLICY)
    assert moved.healed == (HealKey.misplaced(found),)
    # on a host in maintenance mode it is left where it is
    quiet = HostConditions(maintenance=frozenset({found.host}))
    assert plan_heal([], HealState(), 0.0, POLICY, quiet, misplaced=[found]).migrations == ()


def test_an_issue_that_never_goes_away_is_given_up_on_not_called_flapping() -> None:
    policy = HealPolicy(default=Backoff(base=1.0, cap=1.0, jitter=0.0, max_attempts=5), flap_limit=3)
    plans = _flap(policy, [(1.0, True)] * 20)
    assert sum(len(p.resolves) for _, _, p in plans) == 3  # the window bound holds for it too
    verdicts = {d.verdict for _, _, p in plans for d in p.decisions}
    assert Verdict.GAVE_UP in verdicts and Verdict.FLAPPING not in verdicts
    assert plans[-1][2].state.flapping == frozenset()


@given(
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.data(),
)
def test_the_watchs_host_conditions_outweigh_the_last_full_reads_for_the_hosts_it_reported(
    read_in: list[bool], watched_in: list[bool], data: st.DataObject
) -> None:
    # the full pass read each host's maintenance mode (read_in); the watch reported some of them since
    # (watched_in), e.g. a host that left maintenance mode after that pass
    def host(n: int, maintenance: bool) -> Host:
        return Host(
            MoRef("HostSystem", f"host-{n}"), f"H{n}", f"/DC0/host/C0/H{n}", in_maintenance_mode=maintenance
        )

    read = [host(n, m) for n, m in enumerate(read_in)]
    reported = data.draw(st.sets(st.integers(min_value=0, max_value=len(read_in) - 1)))
    watched = HostConditions.of(host(n, watched_in[n % len(watched_in)]) for n in sorted(reported))
    combined = watched.over(read)
    expected = {
        f"host-{n}"
        for n in range(len(read_in))
        if (watched_in[n % len(watched_in)] if n in reported else read_in[n])
    }
    assert {h.value for h in combined.maintenance} == expected
    assert combined.known == frozenset(h.moref for h in read)
