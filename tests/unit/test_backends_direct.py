"""backends.direct.DirectBackend: the Backend protocol carried out by the Engine on an in-memory vSphere.

The same flows as the EamBackend's integration tests (tests/integration/test_backends.py), with the
controller's side of the loop: ``tick`` until quiet, ``wait_for_work`` for vSphere changes.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from agentvm.backends.base import AgencyStatus, ApplyAction
from agentvm.backends.direct import DirectBackend
from agentvm.core.agent_state import EngineObservation
from agentvm.core.heal import Backoff
from agentvm.engine.api import Caller
from agentvm.engine.infra import InfraError
from agentvm.engine.manager import Engine
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    GoalState,
    HookState,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    Status,
)
from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from tests.support.fake_infra import FakeInfra

OVF = "http://127.0.0.1:8000/hello-agent/hello-agent.ovf"
OVF2 = "http://127.0.0.1:8000/hello-agent/v2/hello-agent.ovf"
SOLUTION = "com.example.hello"
MAX_TICKS = 200


class BreakableInfra(FakeInfra):
    """FakeInfra whose observe fails while ``broken`` (vCenter unreachable)."""

    broken = False

    def observe(self, scope: Collection[MoRef]) -> EngineObservation:
        if self.broken:
            raise InfraError("vCenter does not answer")
        return super().observe(scope)


def config(*scope: MoRef, name: str = "hello", url: str = OVF, **changes: object) -> AgencyConfig:
    base = AgencyConfig(
        agency_name=name,
        agent_configs=(AgentConfig(ovf_package_url=url, ovf_environment=(OvfProperty("greeting", "hi"),)),),
        scope=scope,
        agent_name=f"{name}-agent",
    )
    return base.with_(**changes) if changes else base


@pytest.fixture
def infra() -> BreakableInfra:
    return BreakableInfra()


@pytest.fixture
def backend(infra: BreakableInfra) -> DirectBackend:
    return DirectBackend(Engine(infra, namespace=SOLUTION), solution_id=SOLUTION)


def settle(backend: DirectBackend) -> int:
    """Tick as the controller would until a tick does nothing; returns the ticks taken."""
    for n in range(1, MAX_TICKS + 1):
        idle = backend.engine.in_flight == 0  # read first: a unit finishing during the tick leaves work
        if backend.tick():
            continue
        if idle:
            return n
        backend.wait_for_work(0.05)  # a unit still runs on a worker (a loaded machine): until it ends
    raise AssertionError(f"the engine did not settle in {MAX_TICKS} ticks")


def observed(backend: DirectBackend, name: str = "hello") -> AgencyStatus:
    status = backend.observe(name)
    assert status is not None, f"no agency {name!r}"
    return status


def test_apply_creates_six_green_agents_then_says_unchanged(infra: FakeInfra, backend: DirectBackend) -> None:
    c1, c2 = infra.add_cluster(3), infra.add_cluster(3)
    first = backend.apply(config(c1, c2))
    assert first.action is ApplyAction.CREATED
    settle(backend)

    status = observed(backend)
    assert [a.host for a in status.agents] == sorted(infra.hosts, key=lambda h: h.value)
    assert status.green and all(a.power_state is PowerState.POWERED_ON for a in status.agents)
    assert len(infra.vms) == 6
    again = backend.apply(config(c1, c2))
    assert (again.action, again.agency) == (ApplyAction.UNCHANGED, first.agency)
    assert backend.tick() is False  # nothing to do after an unchanged apply


def test_apply_with_a_new_ovf_url_upgrades(infra: FakeInfra, backend: DirectBackend) -> None:
    cluster = infra.add_cluster(2)
    backend.apply(config(cluster))
    settle(backend)
    result = backend.apply(config(cluster, url=OVF2))
    assert (result.action, result.upgrade, result.changed) == (ApplyAction.UPDATED, True, ("agent_configs",))
    settle(backend)
    assert {vm.ovf_url for vm in infra.vms.values()} == {OVF2}
    assert observed(backend).green


def test_apply_enables_a_disabled_agency_and_refuses_an_uninstalled_one(
    infra: FakeInfra, backend: DirectBackend
) -> None:
    cluster = infra.add_cluster(1)
    agency = backend.apply(config(cluster)).agency
    backend.engine.set_goal_state(backend.caller, agency, GoalState.DISABLED)
    assert backend.apply(config(cluster)).action is ApplyAction.ENABLED
    assert backend.uninstall("hello")
    with pytest.raises(ConfigurationError, match="is uninstalled"):
        backend.apply(config(cluster))


def test_hooks_are_answered_by_mark_available(infra: FakeInfra, backend: DirectBackend) -> None:
    cluster = infra.add_cluster(2)
    backend.apply(config(cluster, manually_mark_available_after_provisioning=True))
    settle(backend)
    status = observed(backend)
    assert len(status.pending_hooks) == 2
    assert all(a.hook and a.hook.state is HookState.PROVISIONED for a in status.pending_hooks)
    assert all(a.power_state is PowerState.POWERED_OFF for a in status.agents)

    for agent in status.pending_hooks:
        backend.mark_available(agent.agent)
    settle(backend)

    after = observed(backend)
    assert after.pending_hooks == () and after.green
    assert all(a.power_state is PowerState.POWERED_ON for a in after.agents)


def test_powered_off_vm_is_an_issue_resolved_on_its_agent(infra: FakeInfra, backend: DirectBackend) -> None:
    cluster = infra.add_cluster(2)
    backend.apply(config(cluster))
    settle(backend)
    victim = observed(backend).agents[0]
    assert victim.vm is not None
    infra.user_power_off(victim.vm)
    assert backend.wait_for_work(1.0)  # the vSphere change wakes the loop
    settle(backend)

    status = observed(backend)
    assert status.status is Status.RED
    assert [(i.kind, i.agent) for i in status.issues] == [(IssueKind.VM_POWERED_OFF, victim.agent)]
    assert backend.resolve(status.issues) == ()
    settle(backend)

    healed = observed(backend)
    assert healed.green and infra.vms[victim.vm].power is PowerState.POWERED_ON
    assert backend.resolve(status.issues) == (status.issues[0].key,)  # resolved already: left over


def test_resolve_all_by_agency_name(infra: FakeInfra, backend: DirectBackend) -> None:
    assert not backend.resolve_all("hello")
    cluster = infra.add_cluster(1)
    backend.apply(config(cluster))
    settle(backend)
    (agent,) = observed(backend).agents
    assert agent.vm is not None
    infra.user_suspend(agent.vm)
    settle(backend)
    assert [i.kind for i in observed(backend).issues] == [IssueKind.VM_SUSPENDED]
    assert backend.resolve_all("hello")
    settle(backend)
    assert observed(backend).green


def test_uninstall_then_destroy_leaves_no_vm_and_no_agency(infra: FakeInfra, backend: DirectBackend) -> None:
    assert not backend.uninstall("hello") and not backend.destroy("hello")
    cluster = infra.add_cluster(2)
    agency = backend.apply(config(cluster)).agency
    settle(backend)
    assert backend.uninstall("hello")
    settle(backend)
    status = observed(backend)
    assert (status.goal_state, status.agents, status.status) == (GoalState.UNINSTALLED, (), Status.GREEN)
    assert infra.vms == {}

    assert backend.destroy("hello")
    settle(backend)
    assert backend.observe("hello") is None and backend.observe_all() == []
    with pytest.raises(NotFoundError, match=rf"agency {agency} does not exist"):
        backend.port.agency_runtime(agency)


def test_the_vms_of_an_agency_whose_state_was_lost_are_purged_and_counted_until_gone(
    infra: FakeInfra, tmp_path: Path
) -> None:
    cluster = infra.add_cluster(2)
    first = DirectBackend(Engine(infra, tmp_path / "engine.json", namespace=SOLUTION), solution_id=SOLUTION)
    first.apply(config(cluster))
    settle(first)
    assert first.purge_orphans("hello") is None and first.orphans("hello") == 0, "its agency holds them"
    (tmp_path / "engine.json").unlink()
    lost = DirectBackend(Engine(infra, tmp_path / "engine.json", namespace=SOLUTION), solution_id=SOLUTION)
    assert lost.orphans("hello") == 0 and lost.purge_orphans("hello") is None, "before it looked"
    lost.tick()
    assert lost.find("hello") is None and lost.orphans("hello") == 2 and len(infra.vms) == 2

    assert lost.purge_orphans("hello") == "removing the agent VMs of agency hello"
    assert lost.purge_orphans("other") is None, "no VM of that name"
    settle(lost)

    assert infra.vms == {} and lost.orphans("hello") == 0
    assert lost.purge_orphans("hello") is None, "nothing left to purge"


def test_a_purge_asked_for_counts_until_the_engine_has_looked(infra: FakeInfra, tmp_path: Path) -> None:
    cluster = infra.add_cluster(1)
    first = DirectBackend(Engine(infra, tmp_path / "engine.json", namespace=SOLUTION), solution_id=SOLUTION)
    first.apply(config(cluster))
    settle(first)
    (tmp_path / "engine.json").unlink()
    lost = DirectBackend(Engine(infra, tmp_path / "engine.json", namespace=SOLUTION), solution_id=SOLUTION)
    lost.engine.purge_unclaimed(lost.caller, "hello")  # asked for before any look at vSphere
    assert lost.orphans("hello") == 1
    settle(lost)
    assert lost.orphans("hello") == 0 and infra.vms == {}


def test_invalid_url_and_unknown_scope_name_the_agency_and_the_fix(
    infra: FakeInfra, backend: DirectBackend
) -> None:
    cluster = infra.add_cluster(1)
    infra.unreachable.add(OVF2)
    with pytest.raises(ConfigurationError, match=rf"URL {OVF2} of agency 'hello'.*connection refused"):
        backend.apply(config(cluster, url=OVF2))
    ghost = MoRef("ClusterComputeResource", "domain-c99")
    with pytest.raises(NotFoundError, match=r"agency 'hello'.*does not know: domain-c99; fix"):
        backend.apply(config(ghost))
    assert backend.observe_all() == []


def test_only_the_solutions_own_agencies_are_seen(infra: FakeInfra, backend: DirectBackend) -> None:
    cluster = infra.add_cluster(1)
    backend.engine.create_agency(Caller("someone.else", extension=True), config(cluster), GoalState.ENABLED)
    assert backend.observe("hello") is None
    assert backend.apply(config(cluster)).action is ApplyAction.CREATED  # its own, beside the other's


def test_two_agencies_with_one_name_is_a_configuration_error(
    infra: FakeInfra, backend: DirectBackend
) -> None:
    cluster = infra.add_cluster(1)
    backend.apply(config(cluster))
    backend.engine.create_agency(backend.caller, config(cluster), GoalState.ENABLED)
    with pytest.raises(ConfigurationError, match="2 agencies are named 'hello'"):
        backend.apply(config(cluster))


def test_tick_is_transient_when_vsphere_cannot_be_observed(
    infra: BreakableInfra, backend: DirectBackend
) -> None:
    cluster = infra.add_cluster(1)
    backend.apply(config(cluster))
    backend.engine.retry = Backoff(base=0.01, cap=0.05, max_attempts=3)
    infra.broken = True
    with pytest.raises(TransientError, match="vCenter does not answer"):
        backend.tick()
    infra.broken = False
    assert backend.wait_for_work(5.0), "woken when the backoff is over"
    settle(backend)  # the next tick retries what failed
    assert observed(backend).green


def test_direct_backend_is_driven_by_its_caller(backend: DirectBackend) -> None:
    assert backend.kind == "direct" and not backend.self_driving


def test_agents_are_reused_while_the_agency_is_green_and_read_again_when_it_is_not(
    infra: FakeInfra,
) -> None:
    now = [0.0]
    backend = DirectBackend(Engine(infra, namespace=SOLUTION), solution_id=SOLUTION)
    backend._clock = lambda: now[0]
    cluster = infra.add_cluster(3)
    backend.apply(config(cluster))
    settle(backend)
    reads: list[str] = []
    real = backend.port.agent_runtime

    def counting(agent: str, agency: str | None = None) -> object:
        reads.append(agent)
        return real(agent, agency)

    backend.port.agent_runtime = counting  # type: ignore[method-assign]
    first = observed(backend)
    assert first.green and len(reads) == 3
    again = observed(backend)
    assert again.agents == first.agents and len(reads) == 3  # all green: nothing new to read
    now[0] += 6.0  # older than green_max_age: read again
    observed(backend)
    assert len(reads) == 6
    vm = first.agents[0].vm
    assert vm is not None
    infra.user_power_off(vm)
    settle(backend)
    red = observed(backend)  # the agency has an issue: every agent is read, not reused
    assert len(reads) == 9 and not red.green
    assert next(a for a in red.agents if a.vm == vm).power_state is PowerState.POWERED_OFF
    observed(backend)
    assert len(reads) == 12  # not green: never reused
    backend.forget()
