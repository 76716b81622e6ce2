"""core.agent_reads: an agent held back by the caller (its hook answered, or due and queued for agentvm to
answer) is not read on its backoff nor on a status change, only when it changes, or after max_retry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.agent_reads import Changes, ReadPolicy
from agentvm.model.agency import Status
from tests.unit.test_core_agent_reads import SIZES, Agency, agent, issue, vm

POLICY = ReadPolicy(first_retry=0.5, follow=3, max_retry=8.0, sweep_per_minute=0.0)


@given(SIZES, st.data())
def test_a_held_agent_is_read_when_its_vm_changes_not_on_its_backoff(
    agents: int, data: st.DataObject
) -> None:
    agency = Agency(agents, POLICY)
    agency.look(0.0)
    held = data.draw(st.sets(st.integers(min_value=0, max_value=agents - 1), min_size=1, max_size=20))
    for n in held:
        agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True)
    agency.status = Status.YELLOW
    agency.look(0.1, Changes(frozenset(vm(n) for n in held)))  # the watch: each one's VM changed, read
    assert agency.state is not None
    agency.state = agency.state.held_back([f"agent-{n}" for n in held])  # due: agentvm will answer them
    now = 0.1
    for _ in range(30):  # 7.5 s of polls, the agency changing status halfway: none of them read
        now += 0.25
        if now > 4.0:
            agency.status = Status.RED
        assert agency.look(now) == ()
        agency.state = agency.state.held_back([f"agent-{n}" for n in held])  # still queued
    first = min(held)
    agency.world[f"agent-{first}"] = agent(first)  # answered and powered on: the watch shows its VM
    assert agency.look(now + 0.25, Changes(frozenset({vm(first)}))) == (f"agent-{first}",)


@given(st.integers(min_value=1, max_value=50))
def test_an_answered_agent_no_longer_held_is_read_after_max_retry_at_most(agents: int) -> None:
    agency = Agency(agents, POLICY)
    agency.world["agent-0"] = agent(0, Status.YELLOW, hook=True)
    agency.status = Status.YELLOW
    agency.look(0.0)
    assert agency.state is not None
    agency.state = agency.state.held_back(["agent-0"])  # answered: no watch update comes (a lost one)
    reads = [now for now in (0.25 * i for i in range(1, 40)) if agency.look(now)]
    assert reads and reads[0] <= 0.25 + POLICY.max_retry  # the fallback, not the 0.5 s backoff
    assert reads[0] > POLICY.max_retry


@given(SIZES, st.data())
def test_a_held_agent_named_by_a_new_issue_is_read_at_once(agents: int, data: st.DataObject) -> None:
    agency = Agency(agents, POLICY)
    n = data.draw(st.integers(min_value=0, max_value=agents - 1))
    agency.world[f"agent-{n}"] = agent(n, Status.YELLOW, hook=True)
    agency.look(0.0)
    assert agency.state is not None
    agency.state = agency.state.held_back([f"agent-{n}"])
    agency.issues = [issue(9, n)]  # EAM gave up on the hook: an issue names it
    assert agency.look(0.25) == (f"agent-{n}",)
