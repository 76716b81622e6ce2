"""core.hooks: a pending hook is answered once, and again only once it stayed pending REANSWER_AFTER s."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.hooks import REANSWER_AFTER, answer_due, hook_key, hooks_due
from agentvm.model.agency import AgentRuntime, GoalState, HookState, MoRef, PowerState, Status, VmHook

TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def agent(n: int, vm: int | None) -> AgentRuntime:
    hook = VmHook(MoRef("VirtualMachine", f"vm-{vm}"), HookState.PROVISIONED) if vm is not None else None
    return AgentRuntime(
        agent=f"agent-{n}",
        agency="agency-1",
        host=MoRef("HostSystem", f"host-{n}"),
        host_name=f"esx-{n}",
        goal_state=GoalState.ENABLED,
        status=Status.YELLOW,
        power_state=PowerState.POWERED_ON,
        vm_name=f"hello ({n})",
        hook=hook,
    )


@given(TIMES)
def test_a_hook_never_answered_is_due(now: float) -> None:
    assert answer_due(None, now)


@given(TIMES, st.floats(min_value=0, max_value=100, allow_nan=False))
def test_an_answered_hook_is_due_again_only_after_the_pause(answered: float, later: float) -> None:
    assert answer_due(answered, answered + later) == (answered + later - answered >= REANSWER_AFTER)


def test_a_duplicate_is_skipped_and_a_new_vm_of_the_same_agent_is_a_new_hook() -> None:
    first, upgraded, idle = agent(1, 11), agent(1, 12), agent(2, None)
    answered = {hook_key(first): 100.0}
    assert hooks_due([first, idle], answered, 105.0) == []
    assert hooks_due([upgraded, idle], answered, 105.0) == [upgraded]
    assert hooks_due([first], answered, 100.0 + REANSWER_AFTER) == [first]
    assert hook_key(upgraded) == ("agent-1", "vm-12")


@given(
    st.sets(st.integers(min_value=0, max_value=20)), st.floats(min_value=0, max_value=100, allow_nan=False)
)
def test_an_answered_hook_is_answered_again_only_when_a_read_since_shows_it_still_pending(
    fresh: set[int], later: float
) -> None:
    # every agent's hook answered at 100; ``fresh``: the agents this look read again (the others are as
    # last read, before the answer: their hook showing pending says nothing about the answer)
    agents = [agent(n, 100 + n) for n in range(21)]
    answered = {hook_key(a): 100.0 for a in agents}
    now = 100.0 + later
    due = hooks_due(agents, answered, now, fresh=frozenset(f"agent-{n}" for n in fresh))
    expected = [a for n, a in enumerate(agents) if n in fresh] if now - 100.0 >= REANSWER_AFTER else []
    assert due == expected
    never = agent(99, 7)  # a hook never answered is due whether or not it was just read
    assert hooks_due([never], answered, now, fresh=frozenset()) == [never]
