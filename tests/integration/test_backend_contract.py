"""The ``Backend`` protocol's contract, asserted the same way on both backends on a simulated vCenter.

``eam``: ``EamBackend`` over SOAP to the lab's EAM behind vcsim's /eam/sdk (the lab's EAM drives the agents
itself). ``direct``: ``DirectBackend`` on agentvm's own engine on vim25, driven by its caller (``tick``).
Each test gets a fresh vcsim (2 clusters x 2 hosts) and the package server with examples/hello-agent; what
a backend reports is checked against vCenter through the test's own session where it matters.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from agentvm.backends.base import AgencyStatus, ApplyAction, Backend
from agentvm.backends.direct import DirectBackend
from agentvm.backends.eam import EamBackend
from agentvm.engine.manager import Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.lab.packages import PackageServer
from agentvm.lab.vcsim import Shape, Vcsim
from agentvm.lab.world import Lab
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
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import ConfigurationError
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import ensure_powered_off, power_state

pytestmark = pytest.mark.lab

SHAPE = Shape(clusters=2, hosts=2)
SOLUTION = "com.example.contract"
TIMEOUT = 90.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = TypeVar("T")


@dataclass
class Contract:
    """One backend on one simulated vCenter, and what a test needs around it."""

    kind: str
    backend: Backend
    session: Session  # the test's own: to look at vCenter and to break things
    inventory: InventorySnapshot
    ovf_url: str  # the package server
    drive: Callable[[], None]  # one round of agent work, as the controller's loop does (EAM: nothing)

    @property
    def clusters(self) -> tuple[MoRef, ...]:
        return tuple(c.moref for c in self.inventory.clusters)

    def hosts(self, *clusters: MoRef) -> list[MoRef]:
        """The hosts of ``clusters`` (default: all), ordered by moid as ``AgencyStatus.agents`` are."""
        return sorted(
            (h.moref for c in clusters or self.clusters for h in self.inventory.hosts_of(c)), key=str
        )

    def config(
        self, name: str = "hello", *scope: MoRef, version: str = "", **changes: object
    ) -> AgencyConfig:
        """An agency of hello-agent (``version="v2/"``: its second version) over ``scope`` (default: all)."""
        datastore = self.inventory.datastores[0].moref
        network = next(n.moref for n in self.inventory.networks if n.moref.type == "Network")
        base = AgencyConfig(
            agency_name=name,
            agent_configs=(
                AgentConfig(
                    ovf_package_url=f"{self.ovf_url}/hello-agent/{version}hello-agent.ovf",
                    ovf_environment=(OvfProperty("agent.message", "hi"),),
                ),
            ),
            scope=scope or self.clusters,
            agent_name=f"{name}-agent",
            agent_vm_datastores=(datastore,),
            agent_vm_networks=(network,),
        )
        return base.with_(**changes) if changes else base

    def until(self, what: str, check: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
        """Drive the backend until ``check`` returns something truthy; fail naming ``what`` in time."""
        deadline = time.monotonic() + timeout
        while True:
            self.drive()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def observed(self, name: str = "hello") -> AgencyStatus:
        status = self.backend.observe(name)
        assert status is not None, f"{self.kind}: no agency {name!r}"
        return status

    def green(self, name: str = "hello", hosts: int | None = None) -> AgencyStatus | None:
        """The agency's status once it and every agent are green with their VMs on (and ``hosts`` agents)."""
        self.backend.forget()
        status = self.backend.observe(name)
        if status is None or not status.green:
            return None
        if hosts is not None and len(status.agents) != hosts:
            return None
        if any(a.power_state is not PowerState.POWERED_ON for a in status.agents):
            return None
        return status


def connection(url: str, username: str, password: str, thumbprint: str) -> VCenterConnection:
    return VCenterConnection(url=url, username=username, password=Secret(password), thumbprint=thumbprint)


def eam_contract(packages: str) -> Iterator[Contract]:
    """The lab (vcsim, the lab's EAM behind /eam/sdk); EamBackend on a user session."""
    lab = Lab(SHAPE, netsync=False)
    info = lab.start()
    try:
        v = info.vcsim
        session = Session.connect(connection(v.url, v.username, v.password, v.thumbprint))
        try:
            backend = EamBackend(session)
            yield Contract("eam", backend, session, read_inventory(session), packages, lambda: None)
        finally:
            session.logout()
    finally:
        lab.stop()


def direct_contract(packages: str) -> Iterator[Contract]:
    """vcsim without EAM, and DirectBackend on an engine with a session of its own."""
    sim = Vcsim(SHAPE)
    try:
        v = sim.info
        conn = connection(v.url, v.username, v.password, v.thumbprint)
        session, engine_session = Session.connect(conn), Session.connect(conn)
        infra = VSphereInfrastructure(engine_session)
        infra.start()
        try:
            backend = DirectBackend(Engine(infra, namespace=SOLUTION), solution_id=SOLUTION)

            def drive() -> None:
                if not backend.tick():
                    backend.wait_for_work(0.2)

            yield Contract("direct", backend, session, read_inventory(session), packages, drive)
        finally:
            infra.stop()
            engine_session.logout()
            session.logout()
    finally:
        sim.stop()


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[str]:
    """A package server with examples/hello-agent at hello-agent/ and a second version at hello-agent/v2/."""
    root = tmp_path / "packages"
    shutil.copytree(EXAMPLES / "hello-agent", root / "hello-agent")
    shutil.copytree(EXAMPLES / "hello-agent", root / "hello-agent" / "v2")
    server = PackageServer(root).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["eam", "direct"])
def contract(request: pytest.FixtureRequest, packages: str) -> Iterator[Contract]:
    yield from (eam_contract(packages) if request.param == "eam" else direct_contract(packages))


# --------------------------------------------------------------------------------------------- apply


def test_apply_creates_once_then_says_unchanged(contract: Contract) -> None:
    backend = contract.backend
    assert backend.find("hello") is None and backend.observe("hello") is None

    first = backend.apply(contract.config())
    assert (first.action, first.name, first.changed, first.upgrade) == (
        ApplyAction.CREATED,
        "hello",
        (),
        False,
    )
    assert backend.find("hello") == first.agency

    again = backend.apply(contract.config())
    assert (again.action, again.agency, again.changed, again.enabled) == (
        ApplyAction.UNCHANGED,
        first.agency,
        (),
        False,
    )
    assert again.unchanged
    assert again.describe() == f"agency 'hello' ({first.agency}): unchanged"


def test_observe_shows_one_green_agent_per_host_and_observe_all_every_agency_by_name(
    contract: Contract,
) -> None:
    backend = contract.backend
    _, c1 = contract.clusters
    backend.apply(contract.config("hello"))
    backend.apply(contract.config("another", c1))
    status = contract.until("4 green agents", lambda: contract.green("hello", 4))

    assert [a.host for a in status.agents] == contract.hosts()
    assert status.agent_on(contract.hosts()[0]) is status.agents[0]
    assert status.pending_hooks == () and status.issues == ()
    assert (status.status, status.goal_state) == (Status.GREEN, GoalState.ENABLED)
    for agent in status.agents:  # what the backend says is what vCenter has
        assert agent.vm is not None
        assert power_state(contract.session, agent.vm) is PowerState.POWERED_ON

    contract.until("2 green agents of 'another'", lambda: contract.green("another", 2))
    everything = backend.observe_all()
    assert [(s.name, len(s.agents)) for s in everything] == [("another", 2), ("hello", 4)]
    assert [a.host for a in everything[0].agents] == contract.hosts(c1)


def test_apply_with_a_new_ovf_url_and_scope_is_an_upgrade_update(contract: Contract) -> None:
    backend = contract.backend
    c0, _ = contract.clusters
    agency = backend.apply(contract.config()).agency
    contract.until("4 green agents", lambda: contract.green("hello", 4))

    result = backend.apply(contract.config("hello", c0, version="v2/"))
    assert (result.action, result.agency, result.upgrade) == (ApplyAction.UPDATED, agency, True)
    assert result.changed == ("agent_configs", "scope")
    assert result.describe() == f"agency 'hello' ({agency}): updated (agent_configs, scope, upgrade)"

    status = contract.until("2 green agents on the first cluster", lambda: contract.green("hello", 2))
    assert [a.host for a in status.agents] == contract.hosts(c0)
    assert backend.apply(contract.config("hello", c0, version="v2/")).action is ApplyAction.UNCHANGED


def test_apply_enables_a_disabled_agency(contract: Contract) -> None:
    backend = contract.backend
    agency = backend.apply(contract.config()).agency
    port = backend.client if isinstance(backend, EamBackend) else backend.port  # type: ignore[attr-defined]
    port.set_goal_state(agency, GoalState.DISABLED)  # disabled elsewhere (e.g. in the vSphere client)
    assert contract.observed().goal_state is GoalState.DISABLED

    result = backend.apply(contract.config())
    assert (result.action, result.agency, result.changed, result.enabled) == (
        ApplyAction.ENABLED,
        agency,
        (),
        True,
    )
    assert contract.observed().goal_state is GoalState.ENABLED


def test_two_agencies_with_one_name_is_a_configuration_error_naming_both(contract: Contract) -> None:
    backend = contract.backend
    first = backend.apply(contract.config()).agency
    port = backend.client if isinstance(backend, EamBackend) else backend.port  # type: ignore[attr-defined]
    second = port.create_agency(contract.config(), GoalState.ENABLED)  # made elsewhere, same name
    for call in (lambda: backend.find("hello"), lambda: backend.observe("hello")):
        with pytest.raises(ConfigurationError, match=r"2 agencies are named 'hello'") as caught:
            call()
        assert first in str(caught.value) and second in str(caught.value)
        assert "destroy the extra ones" in str(caught.value)


# --------------------------------------------------------------------------------------------- hooks


def test_a_provisioned_hook_waits_until_mark_available_answers_it(contract: Contract) -> None:
    backend = contract.backend
    backend.apply(contract.config(manually_mark_available_after_provisioning=True))

    def all_pending() -> AgencyStatus | None:
        backend.forget()
        status = backend.observe("hello")
        return status if status is not None and len(status.pending_hooks) == 4 else None

    status = contract.until("4 provisioned hooks", all_pending)
    assert not status.green
    assert {a.hook.state for a in status.pending_hooks if a.hook} == {HookState.PROVISIONED}
    assert all(a.power_state is PowerState.POWERED_OFF for a in status.pending_hooks)

    for agent in status.pending_hooks:
        backend.mark_available(agent.agent)
    after = contract.until("4 green agents", lambda: contract.green("hello", 4))
    assert after.pending_hooks == ()


# -------------------------------------------------------------------------------------------- issues


def _powered_off_issue(contract: Contract) -> AgencyStatus:
    """Power one agent VM off behind the backend's back; the agency's status once it shows the issue."""
    backend = contract.backend
    backend.apply(contract.config())
    status = contract.until("4 green agents", lambda: contract.green("hello", 4))
    victim = status.agents[0]
    assert victim.vm is not None
    ensure_powered_off(contract.session, victim.vm)

    def issue() -> AgencyStatus | None:
        backend.forget()
        now = backend.observe("hello")
        kinds = [i.kind for i in now.issues] if now is not None else []
        return now if kinds == [IssueKind.VM_POWERED_OFF] else None

    seen = contract.until("the VmPoweredOff issue", issue)
    assert seen.status is Status.RED
    (held,) = seen.issues
    assert (held.agent, held.host) == (victim.agent, victim.host)
    return seen


def test_resolve_sends_each_issue_to_its_agent_and_returns_the_keys_left_over(contract: Contract) -> None:
    seen = _powered_off_issue(contract)
    (issue,) = seen.issues
    assert contract.backend.resolve(seen.issues) == ()

    healed = contract.until("green again", lambda: contract.green("hello", 4))
    assert healed.issues == ()
    vm = healed.agent_on(issue.host).vm if issue.host else None  # type: ignore[union-attr]
    assert vm is not None and power_state(contract.session, vm) is PowerState.POWERED_ON
    assert contract.backend.resolve(seen.issues) == (issue.key,)  # resolved already: left over


def test_resolve_all_by_agency_name(contract: Contract) -> None:
    assert contract.backend.resolve_all("hello") is False
    _powered_off_issue(contract)
    assert contract.backend.resolve_all("hello") is True
    assert contract.until("green again", lambda: contract.green("hello", 4)).issues == ()


# ---------------------------------------------------------------------------------------- removal


def test_uninstall_removes_every_agent_then_destroy_forgets_the_agency(contract: Contract) -> None:
    backend = contract.backend
    assert backend.uninstall("hello") is False and backend.destroy("hello") is False
    backend.apply(contract.config())
    vms = [a.vm for a in contract.until("4 green agents", lambda: contract.green("hello", 4)).agents]
    assert backend.purge_orphans("hello") is None and backend.orphans("hello") == 0, "its agency holds them"

    assert backend.uninstall("hello") is True

    def removed() -> AgencyStatus | None:
        backend.forget()
        status = backend.observe("hello")
        return status if status is not None and status.agents == () else None

    status = contract.until("every agent removed", removed)
    assert status.goal_state is GoalState.UNINSTALLED
    left = {vm.moref for vm in read_inventory(contract.session).vms}
    assert not left & set(vms), "the agent VMs are gone from vCenter"
    with pytest.raises(ConfigurationError, match=r"'hello' .* is uninstalled.*agentvm destroy"):
        backend.apply(contract.config())

    assert backend.destroy("hello") is True
    assert backend.find("hello") is None and backend.observe("hello") is None
    assert backend.observe_all() == []
    # nothing of it left for destroy to purge or to wait for
    assert backend.purge_orphans("hello") is None and backend.orphans("hello") == 0


def test_a_self_driving_backend_ignores_the_loop_and_a_driven_one_acts_on_tick(contract: Contract) -> None:
    backend = contract.backend
    assert backend.kind == contract.kind
    assert backend.self_driving is (contract.kind == "eam")
    backend.apply(contract.config())
    if backend.self_driving:  # EAM drives its agents itself
        assert backend.tick() is False and backend.wait_for_work(5.0) is False
    else:  # the controller's loop drives the engine: the apply left work for a tick
        assert backend.wait_for_work(5.0) is True and backend.tick() is True
