"""``core.progress.update_host_rows``: the controller's rows, made again poll by poll only where the inputs
changed, must be the rows ``host_rows`` makes from scratch, whatever changed between two polls."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.heal import HostConditions, Misplaced
from agentvm.core.progress import HostRows, host_rows, update_host_rows
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
from agentvm.model.inventory import Host, InventorySnapshot, VirtualMachine
from tests.support.status_fakes import Observed

HOSTS = 6


def _ref(i: int) -> MoRef:
    return MoRef("HostSystem", f"host-{i}")


@st.composite
def agents(draw: st.DrawFn, i: int) -> AgentRuntime:
    vm = draw(st.sampled_from([MoRef("VirtualMachine", f"vm-{i}"), MoRef("VirtualMachine", "vm-x"), None]))
    issue = Issue(
        key=i,
        kind=draw(st.sampled_from([IssueKind.VM_POWERED_OFF, IssueKind.HOST_IN_MAINTENANCE_MODE])),
        time=datetime(2026, 1, 1, tzinfo=UTC),
        agency="agency-1",
        agency_name="a",
        agent=f"agent-{i}",
        host=_ref(i),
    )
    return AgentRuntime(
        agent=f"agent-{i}",
        agency="agency-1",
        host=_ref(i),
        host_name=draw(st.sampled_from(["", f"H{i}", "H1"])),
        goal_state=draw(st.sampled_from(list(GoalState))),
        status=draw(st.sampled_from(list(Status))),
        power_state=draw(st.sampled_from(list(PowerState))),
        vm_name=draw(st.sampled_from(["", f"agent ({i})"])),
        vm=vm,
        hook=draw(st.sampled_from([None, VmHook(MoRef("VirtualMachine", f"vm-{i}"), HookState.PROVISIONED)])),
        issues=draw(st.sampled_from([(), (issue,)])),
    )


@st.composite
def polls(draw: st.DrawFn) -> dict[str, object]:
    """The arguments of one poll: any of them may differ from the last poll's."""
    scope = draw(st.sets(st.integers(0, HOSTS - 1)))
    hosts = tuple(
        ScopeHost(
            moid=f"host-{i}",
            name=draw(st.sampled_from([f"H{i}", "H1", f"H{10 + i}"])),
            path=draw(st.sampled_from(["", f"/DC0/host/C0/H{i}", f"/DC0/host/C1/H{i}"])),
            cluster_name=draw(st.sampled_from([None, "C0"])),
        )
        for i in sorted(scope)
    )
    with_agents = draw(st.sets(st.integers(0, HOSTS - 1), min_size=HOSTS // 2))
    observed = Observed(
        "agency-1",
        draw(st.sampled_from(list(GoalState))),
        tuple(draw(agents(i)) for i in sorted(with_agents)),
    )
    addresses = {
        f"host-{i}": IPv4Address("10.0.0.10") + draw(st.integers(0, 2))
        for i in draw(st.sets(st.integers(0, HOSTS - 1)))
    }
    resting = draw(st.sets(st.integers(0, HOSTS - 1)))
    snapshot = draw(
        st.sampled_from(
            [
                None,
                InventorySnapshot(
                    hosts=tuple(
                        Host(_ref(i), f"H{i}", "", in_maintenance_mode=i in resting) for i in range(HOSTS)
                    ),
                    vms=tuple(
                        VirtualMachine(MoRef("VirtualMachine", f"vm-{i}"), f"renamed-{i}", "")
                        for i in range(2)
                    ),
                ),
            ]
        )
    )
    moved = [
        Misplaced(
            draw(st.sampled_from(["agency-1", "agency-1", "agency-2"])),
            "a",
            f"agent-{i}",
            _ref(i),
            f"H{i}",
            MoRef("VirtualMachine", f"vm-{i}"),
            f"agent ({i})",
            _ref((i + 1) % HOSTS),
        )
        for i in draw(st.sets(st.integers(0, HOSTS - 1), max_size=3))
    ]
    conditions = draw(
        st.sampled_from([None, HostConditions(maintenance=frozenset(_ref(i) for i in resting))])
    )
    return {
        "status": draw(st.sampled_from([observed, observed, None])),
        "hosts": hosts,
        "addresses": addresses,
        "snapshot": snapshot,
        "uninstall": draw(st.booleans()),
        "misplaced": moved,
        "conditions": conditions,
    }


def _rows(previous: HostRows | None, poll: dict[str, object]) -> HostRows:
    return update_host_rows(previous, "a", **poll)  # type: ignore[arg-type]


@given(st.lists(polls(), min_size=1, max_size=6))
def test_rows_kept_from_the_last_poll_are_the_rows_made_afresh(sequence: list[dict[str, object]]) -> None:
    previous: HostRows | None = None
    for poll in sequence:
        previous = _rows(previous, poll)
        assert previous.rows == host_rows("a", **poll)  # type: ignore[arg-type]


@given(polls(), polls())
def test_a_poll_after_any_other_gives_the_rows_of_its_own_inputs(
    first: dict[str, object], then: dict[str, object]
) -> None:
    assert _rows(_rows(None, first), then).rows == host_rows("a", **then)  # type: ignore[arg-type]


@given(
    polls(),
    polls(),
    st.sampled_from(["status", "hosts", "addresses", "snapshot", "uninstall", "misplaced", "conditions"]),
)
def test_a_poll_that_differs_in_one_argument_gives_the_rows_of_its_own_inputs(
    first: dict[str, object], other: dict[str, object], argument: str
) -> None:
    then = {**first, argument: other[argument]}
    assert _rows(_rows(None, first), then).rows == host_rows("a", **then)  # type: ignore[arg-type]


def test_an_unchanged_poll_reuses_every_row_and_a_changed_agent_only_its_own() -> None:
    hosts = tuple(ScopeHost(moid=f"host-{i}", name=f"H{i}", path=f"/DC0/host/C0/H{i}") for i in range(3))
    green = tuple(
        AgentRuntime(f"agent-{i}", "agency-1", _ref(i), f"H{i}", GoalState.ENABLED, Status.GREEN,
                     PowerState.POWERED_ON, f"agent ({i})", MoRef("VirtualMachine", f"vm-{i}"))
        for i in range(3)
    )  # fmt: skip
    first = update_host_rows(None, "a", Observed("agency-1", GoalState.ENABLED, green), hosts, {}, None)
    again = update_host_rows(first, "a", Observed("agency-1", GoalState.ENABLED, green), hosts, {}, None)
    assert all(a is b for a, b in zip(again.rows, first.rows, strict=True))
    off = (green[0], AgentRuntime(**{**green[1].__dict__, "status": Status.RED}), green[2])
    changed = update_host_rows(again, "a", Observed("agency-1", GoalState.ENABLED, off), hosts, {}, None)
    assert [a is b for a, b in zip(changed.rows, first.rows, strict=True)] == [True, False, True]
    assert changed.rows[1].status is Status.RED
