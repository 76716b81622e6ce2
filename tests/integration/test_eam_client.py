"""agentvm.eam.EamClient against the EAM SOAP emulator behind vcsim's /eam/sdk, on a real vCenter session.

The emulator fronts the in-memory AgentManager test double (instant convergence, injectable issues): enough
to check the client's plumbing end to end — SOAP both ways, the shared session cookie, re-login, fault
mapping, the name cache and what each operation costs in calls.
"""

from __future__ import annotations

from collections import Counter

import pytest

from agentvm.eam.client import EamClient, agency_ref, agent_ref
from agentvm.engine.api import Caller
from agentvm.model.agency import (
    GoalState,
    HookState,
    IssueKind,
    MoRef,
    PowerState,
    Status,
)
from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from agentvm.vsphere.session import Session
from tests.support.eam_world import C1, HOSTS, OVF, OVF2, EamWorld, config, eam_calls

pytestmark = pytest.mark.lab


@pytest.fixture
def world(eam_world: EamWorld) -> EamWorld:
    """vcsim in front of the EAM emulator (tests/integration/conftest.py)."""
    return eam_world


@pytest.fixture
def client(world: EamWorld) -> EamClient:
    return EamClient(world.session)


def test_create_then_query_config_runtime_agents_and_owner(world: EamWorld, client: EamClient) -> None:
    assert client.query_agencies() == []
    agency = client.create_agency(config())

    assert client.query_agencies() == [agency]
    assert client.agency_config(agency) == config()  # the config survives the SOAP round trip whole
    assert client.agency_solution_id(agency) == world.vcsim.username
    runtime = client.agency_runtime(agency)
    assert (runtime.agency, runtime.goal_state, runtime.status) == (agency, GoalState.ENABLED, Status.GREEN)
    agents = client.agency_agents(agency)
    runtimes = [client.agent_runtime(a) for a in agents]
    assert sorted(r.host for r in runtimes) == sorted(h for hs in HOSTS.values() for h, _ in hs)
    assert {r.agency for r in runtimes} == {agency}
    assert all(r.power_state is PowerState.POWERED_ON and r.vm is not None for r in runtimes)
    assert client.agent_config(agents[0]).ovf_package_url == OVF


def test_find_by_name_queries_each_config_once_per_client(world: EamWorld, client: EamClient) -> None:
    hello = client.create_agency(config("hello"))
    other = EamClient(world.session)  # a second client has an empty cache
    other.create_agency(config("other"))

    before = world.session.stats.snapshot()
    assert client.find_agencies("hello") == [hello]
    # one QueryAgency, and QueryConfig only for "other", which this client had not seen
    assert eam_calls(world.session, before) == Counter({"QueryAgency": 1, "QueryConfig": 1})
    before = world.session.stats.snapshot()
    assert client.find_agencies("nobody") == []
    assert eam_calls(world.session, before) == Counter({"QueryAgency": 1})


def test_update_replaces_the_config_and_renames_in_the_cache(world: EamWorld, client: EamClient) -> None:
    agency = client.create_agency(config())
    client.update_agency(agency, config("renamed", C1, url=OVF2))

    assert client.agency_config(agency) == config("renamed", C1, url=OVF2)
    assert len(client.agency_agents(agency)) == 3  # C2 left the scope
    before = world.session.stats.snapshot()
    assert client.find_agencies("renamed") == [agency] and client.find_agencies("hello") == []
    assert eam_calls(world.session, before) == Counter({"QueryAgency": 2})


def test_pending_provisioned_hook_holds_power_on_until_marked_available(client: EamClient) -> None:
    agency = client.create_agency(config(manually_mark_available_after_provisioning=True))
    agent = client.agency_agents(agency)[0]

    pending = client.agent_runtime(agent)
    assert pending.hook is not None and pending.hook.state is HookState.PROVISIONED
    assert pending.hook.vm == pending.vm
    assert (pending.power_state, pending.status) == (PowerState.POWERED_OFF, Status.YELLOW)
    assert client.agency_runtime(agency).status is Status.YELLOW

    client.mark_as_available(agent)
    released = client.agent_runtime(agent)
    assert (released.hook, released.power_state, released.status) == (
        None,
        PowerState.POWERED_ON,
        Status.GREEN,
    )


def test_issue_is_seen_on_agent_and_agency_then_resolved(world: EamWorld, client: EamClient) -> None:
    agency = client.create_agency(config())
    agent = client.agency_agents(agency)[0]
    raised = world.manager.raise_issue(agent, IssueKind.VM_POWERED_OFF)

    runtime = client.agent_runtime(agent)
    assert [(i.key, i.kind, i.agent, i.host) for i in runtime.issues] == [
        (raised.key, IssueKind.VM_POWERED_OFF, agent, raised.host)
    ]
    assert runtime.host_name == raised.host_name  # EAM has no host names; the issue's hostName fills in
    assert (runtime.status, runtime.power_state) == (Status.RED, PowerState.POWERED_OFF)
    assert [i.key for i in client.agency_runtime(agency).issues] == [raised.key]
    assert [i.key for i in client.query_issues(agency_ref(agency))] == [raised.key]
    assert client.query_issues(agent_ref(agent), [raised.key + 100]) == []

    assert client.resolve(agent_ref(agent), [raised.key, 9999]) == [9999]  # the unknown key comes back
    healed = client.agent_runtime(agent)
    assert (healed.issues, healed.power_state, healed.status) == ((), PowerState.POWERED_ON, Status.GREEN)


def test_resolve_all_on_the_agency_clears_its_agents_issues(world: EamWorld, client: EamClient) -> None:
    agency = client.create_agency(config())
    for agent in client.agency_agents(agency)[:2]:
        world.manager.raise_issue(agent, IssueKind.VM_SUSPENDED)
    assert len(client.agency_runtime(agency).issues) == 2
    client.resolve_all(agency_ref(agency))
    assert client.agency_runtime(agency).issues == ()


def test_uninstall_then_destroy_then_not_found(client: EamClient) -> None:
    agency = client.create_agency(config())
    client.set_goal_state(agency, GoalState.UNINSTALLED)
    assert client.agency_runtime(agency).goal_state is GoalState.UNINSTALLED
    assert client.agency_agents(agency) == []

    client.destroy_agency(agency)
    assert client.find_agencies("hello") == []
    with pytest.raises(NotFoundError, match=rf"agency {agency} does not exist"):
        client.agency_runtime(agency)


def test_agency_destroyed_elsewhere_is_not_found_by_name(client: EamClient, world: EamWorld) -> None:
    agency = client.create_agency(config())
    world.manager.destroy_agency(Caller(world.vcsim.username), agency)  # e.g. in the vSphere client
    with pytest.raises(NotFoundError, match=rf"agency 'hello' \({agency}\) does not exist"):
        client.agency_config(agency)
    # the name is forgotten with it
    with pytest.raises(NotFoundError, match=rf"^agency {agency} does not exist"):
        client.agency_runtime(agency)


def test_invalid_url_is_a_configuration_error_naming_the_url(client: EamClient) -> None:
    with pytest.raises(ConfigurationError, match=r"URL ftp://x/a\.ovf of agency 'hello'.*does not parse"):
        client.create_agency(config(url="ftp://x/a.ovf"))
    assert client.query_agencies() == []


def test_unknown_scope_is_not_found_listing_the_compute_resources(client: EamClient) -> None:
    with pytest.raises(NotFoundError, match=r"agency 'hello'.*does not know: domain-c99, domain-c98; fix"):
        client.create_agency(
            config(
                "hello",
                MoRef("ClusterComputeResource", "domain-c99"),
                MoRef("ClusterComputeResource", "domain-c98"),
            )
        )


def test_terminated_session_logs_in_again_transparently(world: EamWorld, client: EamClient) -> None:
    agency = client.create_agency(config())
    with Session(world.connection()) as admin:
        key = world.session.content.sessionManager.currentSession.key
        admin.content.sessionManager.TerminateSession(sessionId=[key])
    logins = world.session.stats.snapshot()["Login"]

    assert client.query_agencies() == [agency]  # EamInvalidLogin → Login → retried

    assert world.session.stats.snapshot()["Login"] == logins + 1


def test_stopped_emulator_is_transient_and_names_the_eam_url(world: EamWorld, client: EamClient) -> None:
    client.query_agencies()
    world.emulator.stop()
    eam_url = world.vcsim.url.rsplit("/", 1)[0] + "/eam/sdk"
    assert client.url == eam_url
    with pytest.raises(TransientError, match=rf"EAM is not reachable at {eam_url}: .*502"):
        client.query_agencies()
