"""backends.eam.EamBackend against the EAM SOAP emulator behind vcsim's /eam/sdk, on a real vCenter session.

The same flows as the DirectBackend's unit tests (tests/unit/test_backends_direct.py): apply is idempotent,
observe shows each host's agent, hooks are answered, issues resolved, uninstall and destroy. Plus what EAM
calls a status observation costs.
"""

from __future__ import annotations

from collections import Counter

import pytest

from agentvm.backends.base import AgencyStatus, ApplyAction, Backend
from agentvm.backends.eam import EamBackend
from agentvm.engine.api import Caller
from agentvm.model.agency import GoalState, HookState, IssueKind, PowerState, Status
from agentvm.model.errors import ConfigurationError, TransientError
from tests.support.eam_world import C1, HOSTS, OVF2, EamWorld, config, eam_calls

pytestmark = pytest.mark.lab

ALL_HOSTS = sorted(h for hs in HOSTS.values() for h, _ in hs)


@pytest.fixture
def world(eam_world: EamWorld) -> EamWorld:
    """vcsim in front of the EAM emulator (tests/integration/conftest.py)."""
    return eam_world


@pytest.fixture
def backend(world: EamWorld) -> EamBackend:
    return EamBackend(world.session)


def observed(backend: Backend, name: str = "hello") -> AgencyStatus:
    status = backend.observe(name)
    assert status is not None, f"no agency {name!r}"
    return status


def test_apply_creates_then_says_unchanged(backend: EamBackend) -> None:
    first = backend.apply(config())
    assert first.action is ApplyAction.CREATED

    again = backend.apply(config())
    assert (again.action, again.agency, again.changed) == (ApplyAction.UNCHANGED, first.agency, ())
    assert again.describe() == f"agency 'hello' ({first.agency}): unchanged"


def test_apply_with_a_new_ovf_url_is_an_upgrade_update(backend: EamBackend) -> None:
    agency = backend.apply(config()).agency
    result = backend.apply(config(url=OVF2, scope=(C1,)))
    assert (result.action, result.agency, result.upgrade) == (ApplyAction.UPDATED, agency, True)
    assert result.changed == ("agent_configs", "scope")
    assert "upgrade" in result.describe()
    assert len(observed(backend).agents) == 3


def test_apply_enables_a_disabled_agency(world: EamWorld, backend: EamBackend) -> None:
    agency = backend.apply(config()).agency
    backend.client.set_goal_state(agency, GoalState.DISABLED)
    result = backend.apply(config())
    assert (result.action, result.enabled) == (ApplyAction.ENABLED, True)
    assert observed(backend).goal_state is GoalState.ENABLED


def test_apply_refuses_an_uninstalled_agency(backend: EamBackend) -> None:
    backend.apply(config())
    assert backend.uninstall("hello")
    with pytest.raises(ConfigurationError, match=r"'hello' .* is uninstalled.*agentvm destroy"):
        backend.apply(config())


def test_two_agencies_with_one_name_is_a_configuration_error(world: EamWorld, backend: EamBackend) -> None:
    backend.apply(config())
    world.manager.create_agency(Caller(world.vcsim.username), config(), GoalState.ENABLED)  # made elsewhere
    with pytest.raises(ConfigurationError, match=r"2 agencies are named 'hello' \(agency-\d+, agency-\d+\)"):
        backend.observe("hello")


def test_observe_shows_one_agent_per_host_and_all_agencies(backend: EamBackend) -> None:
    assert backend.observe("hello") is None
    backend.apply(config())
    backend.apply(config("other", C1))

    status = observed(backend)
    assert [a.host for a in status.agents] == ALL_HOSTS
    assert status.green and status.pending_hooks == () and status.issues == ()
    assert all(a.power_state is PowerState.POWERED_ON for a in status.agents)
    assert status.agent_on(ALL_HOSTS[0]) is status.agents[0]
    assert [(s.name, len(s.agents)) for s in backend.observe_all()] == [("hello", 6), ("other", 3)]


def test_pending_hooks_are_answered_with_mark_available(backend: EamBackend) -> None:
    backend.apply(config(manually_mark_available_after_provisioning=True))
    status = observed(backend)
    assert len(status.pending_hooks) == 6 and not status.green
    assert {a.hook.state for a in status.pending_hooks if a.hook} == {HookState.PROVISIONED}

    for agent in status.pending_hooks:
        backend.mark_available(agent.agent)  # (the caller writes agent.hook.vm first)

    after = observed(backend)
    assert after.pending_hooks == () and after.green


def test_issues_are_resolved_on_the_agent_that_holds_them(world: EamWorld, backend: EamBackend) -> None:
    backend.apply(config())
    agents = observed(backend).agents
    for agent in agents[:2]:
        world.manager.raise_issue(agent.agent, IssueKind.VM_POWERED_OFF)
    status = observed(backend)
    assert status.status is Status.RED and len(status.issues) == 2

    left = backend.resolve(status.issues)

    assert left == ()
    healed = observed(backend)
    assert healed.green and all(a.power_state is PowerState.POWERED_ON for a in healed.agents)
    assert backend.resolve(status.issues) == tuple(i.key for i in status.issues)  # gone: left over


def test_resolve_all_by_agency_name(world: EamWorld, backend: EamBackend) -> None:
    assert not backend.resolve_all("hello")
    backend.apply(config())
    world.manager.raise_issue(observed(backend).agents[0].agent, IssueKind.VM_SUSPENDED)
    assert backend.resolve_all("hello")
    assert observed(backend).issues == ()


def test_uninstall_then_destroy(backend: EamBackend) -> None:
    assert not backend.uninstall("hello") and not backend.destroy("hello")
    backend.apply(config())
    assert backend.uninstall("hello")
    status = observed(backend)
    assert (status.goal_state, status.agents) == (GoalState.UNINSTALLED, ())
    assert backend.destroy("hello")
    assert backend.observe("hello") is None and backend.find("hello") is None


def test_eam_drives_itself(backend: EamBackend) -> None:
    assert backend.self_driving and backend.tick() is False and backend.wait_for_work(5.0) is False


def test_emulator_stopped_is_transient(world: EamWorld, backend: EamBackend) -> None:
    backend.apply(config())
    world.emulator.stop()
    with pytest.raises(TransientError, match="EAM is not reachable at"):
        backend.observe("hello")


def test_status_of_one_agency_with_six_agents_costs_three_calls_plus_one_per_agent(
    world: EamWorld, backend: EamBackend
) -> None:
    backend.apply(config())
    cold = EamBackend(world.session)  # a fresh backend, e.g. a new `agentvm status`

    before = world.session.stats.snapshot()
    first_status = observed(cold)
    assert len(first_status.agents) == 6
    first = eam_calls(world.session, before)
    cold.forget()  # as a full pass does: read every agent again
    before = world.session.stats.snapshot()
    observed(cold)
    warm = eam_calls(world.session, before)

    # the first observation also reads the agency's config once, to learn its name
    assert first == Counter(
        {"QueryAgency": 1, "QueryConfig": 1, "AgencyQueryRuntime": 1, "QueryAgent": 1, "AgentQueryRuntime": 6}
    )
    assert warm == Counter(
        {"QueryAgency": 1, "AgencyQueryRuntime": 1, "QueryAgent": 1, "AgentQueryRuntime": 6}
    )
    assert sum(warm.values()) == 3 + 6
    if first_status.green:
        # all green with no issue: the next poll within a few seconds reuses the agents, 3 calls in all
        before = world.session.stats.snapshot()
        again = observed(cold)
        assert again.agents == first_status.agents
        assert eam_calls(world.session, before) == Counter(
            {"QueryAgency": 1, "AgencyQueryRuntime": 1, "QueryAgent": 1}
        )
