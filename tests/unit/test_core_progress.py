"""``core.progress``: the per-host rows apply/destroy report, ``status`` draws and the API document carries.

One projection (an observed agency, its scope's hosts and the host conditions → one row per host), then
what ``status`` adds on top (the state word, agentvm's own findings) and the counts of the title lines. The
worlds are generated; the expected rows follow from how they were built.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.heal import HostConditions, Misplaced
from agentvm.core.progress import (
    HostProgress,
    Phase,
    host_rows,
    host_state,
    phase_of,
    state_word,
    status_row,
    summarize,
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
from agentvm.model.desired import ScopeHost
from agentvm.model.inventory import Host, HostPowerState, InventorySnapshot, VirtualMachine
from tests.support.status_fakes import Observed


def _host(i: int) -> MoRef:
    return MoRef("HostSystem", f"host-{i}")


def _agent(i: int, status: Status = Status.GREEN, **kw: object) -> AgentRuntime:
    defaults: dict[str, object] = {
        "vm": MoRef("VirtualMachine", f"vm-{i}"),
        "power_state": PowerState.POWERED_ON,
        "goal_state": GoalState.ENABLED,
    }
    defaults.update(kw)
    return AgentRuntime(
        agent=f"agent-{i}",
        agency="agency-1",
        host=_host(i),
        host_name=f"H{i}",
        status=status,
        vm_name=f"eam-name ({i})",
        **defaults,  # type: ignore[arg-type]
    )


def _issue(i: int, kind: IssueKind) -> Issue:
    return Issue(
        key=100 + i,
        kind=kind,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        agency="agency-1",
        agency_name="contrail",
        agent=f"agent-{i}",
        host=_host(i),
        host_name=f"H{i}",
    )


def _scope_host(i: int) -> ScopeHost:
    return ScopeHost(f"host-{i}", f"H{i}", f"/DC0/host/C0/H{i}", "domain-c7", "/DC0/host/C0", "C0")


def _misplaced(i: int, runs_on: int) -> Misplaced:
    return Misplaced(
        agency="agency-1",
        agency_name="contrail",
        agent=f"agent-{i}",
        host=_host(i),
        host_name=f"H{i}",
        vm=MoRef("VirtualMachine", f"vm-{i}"),
        vm_name=f"contrail-vm ({i})",
        runs_on=_host(runs_on),
        runs_on_name=f"H{runs_on}",
    )


# ------------------------------------------------------------------------------------------- phases


@pytest.mark.parametrize(
    ("agent", "goal", "phase"),
    [
        (None, None, "waiting"),
        (None, GoalState.ENABLED, "waiting"),
        (None, GoalState.UNINSTALLED, "removed"),
        (_agent(1, Status.YELLOW, vm=None), GoalState.ENABLED, "deploying"),
        (_agent(1, vm=None), GoalState.ENABLED, "ready"),
        (_agent(1, Status.YELLOW, power_state=PowerState.POWERED_OFF), GoalState.ENABLED, "powering on"),
        (_agent(1, Status.YELLOW), GoalState.ENABLED, "deploying"),
        (
            _agent(1, Status.YELLOW, hook=VmHook(MoRef("VirtualMachine", "vm-1"), HookState.PROVISIONED)),
            GoalState.ENABLED,
            "configuring",
        ),
        (_agent(1, Status.RED), GoalState.ENABLED, "issue"),
        (_agent(1, Status.YELLOW, issues=(_issue(1, IssueKind.VM_POWERED_OFF),)), GoalState.ENABLED, "issue"),
        (_agent(1), GoalState.ENABLED, "ready"),
        (_agent(1), GoalState.UNINSTALLED, "removing"),
        (_agent(1, vm=None), GoalState.UNINSTALLED, "removed"),
        (_agent(1, Status.YELLOW, vm=None, goal_state=GoalState.UNINSTALLED), GoalState.ENABLED, "removing"),
    ],
)
def test_the_phase_of_an_agent(agent: AgentRuntime | None, goal: GoalState | None, phase: str) -> None:
    assert phase_of(agent, goal).value == phase


# ------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Case:
    scope: tuple[int, ...]  # host numbers in scope
    agents: tuple[int, ...]  # host numbers with an agent (some may have left the scope)
    maintenance: frozenset[int]
    standby: frozenset[int]


cases = st.builds(
    Case,
    st.lists(st.integers(0, 30), max_size=6, unique=True).map(tuple),
    st.lists(st.integers(0, 30), max_size=6, unique=True).map(tuple),
    st.frozensets(st.integers(0, 30), max_size=4),
    st.frozensets(st.integers(0, 30), max_size=4),
)


def _snapshot(case: Case) -> InventorySnapshot:
    numbers = sorted({*case.scope, *case.agents, *case.maintenance, *case.standby})
    return InventorySnapshot(
        hosts=tuple(
            Host(
                _host(i),
                f"H{i}",
                f"/DC0/host/C0/H{i}",
                in_maintenance_mode=i in case.maintenance,
                power_state=HostPowerState.STANDBY if i in case.standby else HostPowerState.POWERED_ON,
            )
            for i in numbers
        ),
        vms=tuple(
            VirtualMachine(MoRef("VirtualMachine", f"vm-{i}"), f"contrail-vm ({i})", "") for i in numbers
        ),
    )


@settings(max_examples=80)
@given(cases, st.booleans())
def test_one_row_per_host_of_the_scope_or_with_an_agent_in_natural_order(case: Case, uninstall: bool) -> None:
    observed = Observed("agency-1", GoalState.ENABLED, tuple(_agent(i) for i in case.agents))
    addresses = {f"host-{i}": IPv4Address(f"10.0.0.{i + 1}") for i in case.scope}
    rows = host_rows(
        "contrail",
        observed,
        [_scope_host(i) for i in case.scope],
        addresses,
        _snapshot(case),
        uninstall=uninstall,
    )
    # by label, numbers as numbers (H2 before H10): the scope's paths, then the hosts named only by EAM
    numbers = sorted({*case.scope, *case.agents}, key=lambda i: (i not in case.scope, i))
    assert [r.host for r in rows] == [f"host-{i}" for i in numbers]
    for row, i in zip(rows, numbers, strict=True):
        assert row.agency == "contrail"
        # a host that left the scope is named as EAM names it, without its cluster
        assert (row.label, row.cluster) == (
            (f"/DC0/host/C0/H{i}", "C0") if i in case.scope else (f"H{i}", "")
        )
        has_agent = i in case.agents
        assert row.vm_name == (f"contrail-vm ({i})" if has_agent else None)  # vCenter's name wins
        assert row.power == (PowerState.POWERED_ON if has_agent else None)
        assert row.status == (Status.GREEN if has_agent else None)
        expected = (Phase.REMOVING if has_agent else Phase.REMOVED) if uninstall else None
        expected = expected or (Phase.READY if has_agent else Phase.WAITING)
        assert row.phase is expected
        assert row.address == (f"10.0.0.{i + 1}" if i in case.scope and not uninstall else None)
        assert row.maintenance == (i in case.maintenance or i in case.standby)


@settings(max_examples=60)
@given(cases, st.frozensets(st.integers(0, 30), max_size=4), st.frozensets(st.integers(0, 30), max_size=4))
def test_given_host_conditions_decide_which_rows_are_in_maintenance(
    case: Case, maintenance: frozenset[int], standby: frozenset[int]
) -> None:
    observed = Observed("agency-1", GoalState.ENABLED, tuple(_agent(i) for i in case.agents))
    conditions = HostConditions(
        maintenance=frozenset(_host(i) for i in maintenance),
        standby=frozenset(_host(i) for i in standby),
        unreachable=frozenset(_host(i) for i in case.maintenance),  # unreachable is not maintenance
    )
    rows = host_rows(
        "contrail", observed, [_scope_host(i) for i in case.scope], {}, _snapshot(case), conditions=conditions
    )
    assert {r.host for r in rows if r.maintenance} == {
        f"host-{i}" for i in {*case.scope, *case.agents} & (maintenance | standby)
    }


def test_without_a_snapshot_no_row_is_in_maintenance_and_the_agent_names_its_vm() -> None:
    observed = Observed("agency-1", GoalState.ENABLED, (_agent(1),))
    (row,) = host_rows("contrail", observed, [], {}, None)
    assert (row.label, row.vm, row.vm_name, row.maintenance) == ("H1", "vm-1", "eam-name (1)", False)


def test_a_misplaced_agent_vm_puts_its_host_in_phase_misplaced_unless_it_is_being_removed() -> None:
    observed = Observed("agency-1", GoalState.ENABLED, (_agent(1), _agent(2)))
    other = replace(_misplaced(2, 1), agency="agency-9")  # another agency's: not this one's business
    rows = host_rows("contrail", observed, [], {}, None, misplaced=[_misplaced(1, 2), other])
    assert [(r.host, r.phase.value) for r in rows] == [("host-1", "misplaced"), ("host-2", "ready")]
    assert rows[0].misplaced == _misplaced(1, 2)
    removing = host_rows("contrail", observed, [], {}, None, misplaced=[_misplaced(1, 2)], uninstall=True)
    assert removing[0].phase.value == "removing"


# ------------------------------------------------------------------------------------------- status


def _row(i: int, phase: Phase = Phase.READY, **kw: object) -> HostProgress:
    kw.setdefault("status", Status.GREEN)
    return HostProgress(
        agency="contrail",
        host=f"host-{i}",
        label=f"/DC0/host/C0/H{i}",
        cluster="C0",
        phase=phase,
        **kw,  # type: ignore[arg-type]
    )


STATUS = st.sampled_from([None, Status.GREEN, Status.YELLOW, Status.RED])
PHASES = st.sampled_from(list(Phase))


@settings(max_examples=100)
@given(
    PHASES,
    STATUS,
    st.sampled_from(["none", "maintenance", "standby", "unreachable"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_the_state_of_a_host_maintenance_first_then_flapping_then_misplaced_then_its_status(
    phase: Phase, status: Status | None, condition: str, mm_issue: bool, flaps: bool, moved: bool
) -> None:
    issues = (_issue(1, IssueKind.HOST_IN_MAINTENANCE_MODE),) if mm_issue else ()
    row = _row(1, phase, status=status, issues=issues, misplaced=_misplaced(1, 2) if moved else None)
    conditions = HostConditions(
        **({condition: frozenset({_host(1)})} if condition != "none" else {})  # type: ignore[arg-type]
    )
    flapping = {("contrail", "host-1"): "it came back 3 times"} if flaps else {}
    state = host_state(row, conditions, flapping)
    if condition in ("maintenance", "standby") or mm_issue:
        assert state is not None and state.value == "maintenance"
    elif flaps:
        assert state is not None and state.value == "flapping"
    elif moved:
        assert state is not None and state.value == "misplaced"
    else:
        assert (state.value if state is not None else None) == (status.value if status else None)
    shown = status_row(row, conditions, flapping)
    assert shown.state == state and shown.row == row
    expected_problems = [("VmOnWrongHost", _misplaced(1, 2).sentence())] if moved else []
    expected_problems += [("Flapping", "it came back 3 times")] if flaps else []
    assert [(p.kind, p.message) for p in shown.problems] == expected_problems


def test_a_status_row_without_conditions_or_flapping_has_the_agents_state() -> None:
    shown = status_row(_row(1, status=Status.YELLOW))
    assert shown.state is not None and shown.state.value == "yellow" and shown.problems == ()
    assert status_row(_row(2, Phase.WAITING, status=None)).state is None


@settings(max_examples=100)
@given(PHASES, st.booleans(), st.sampled_from(["none", "given", "given-mm", "given-issue"]))
def test_the_state_word_of_the_hosts_table(phase: Phase, resting: bool, conditions_case: str) -> None:
    issues = (_issue(1, IssueKind.HOST_IN_STANDBY_MODE),) if conditions_case == "given-issue" else ()
    row = _row(1, phase, maintenance=resting, issues=issues)
    conditions = {
        "none": None,
        "given": HostConditions(),
        "given-mm": HostConditions(maintenance=frozenset({_host(1)})),
        "given-issue": HostConditions(),
    }[conditions_case]
    resting_shows = resting and phase.value not in ("ready", "removed")
    says_maintenance = conditions_case in ("given-mm", "given-issue")
    expected = "maintenance" if resting_shows or says_maintenance else phase.value
    assert state_word(row, conditions) == expected
    assert row.shown_phase == ("maintenance" if resting_shows else phase.value)


@settings(max_examples=60)
@given(st.lists(st.tuples(PHASES, st.booleans(), st.booleans()), max_size=12))
def test_summarize_counts_rows_by_phase_hook_and_address(rows_spec: list[tuple[Phase, bool, bool]]) -> None:
    rows = [
        _row(
            i,
            phase,
            hook=HookState.PROVISIONED if hook else None,
            address=f"10.0.0.{i + 1}" if address else None,
        )
        for i, (phase, hook, address) in enumerate(rows_spec)
    ]
    counted = summarize(rows)
    phases = [p.value for p, _, _ in rows_spec]
    assert counted.hosts == len(rows_spec)
    assert counted.ready == phases.count("ready")
    assert counted.done == phases.count("ready") + phases.count("removed")
    assert counted.issues == phases.count("issue") + phases.count("misplaced")
    assert counted.hooks_pending == sum(1 for _, hook, _ in rows_spec if hook)
    assert counted.addresses == sum(1 for _, _, address in rows_spec if address)
