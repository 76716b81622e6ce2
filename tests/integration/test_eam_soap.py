"""The EAM emulator's SOAP face, end to end: a plain pyVmomi EAM client against the emulator.

The emulator drives the in-memory test double (tests/support/memory_agent_manager.py), and sessions come
from a fixed table, so these tests pin down the SOAP layer itself: methods, Fetch, typed faults, versions,
authentication. No agentvm code runs on the client side.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pyVmomi import SoapStubAdapter, eam, vim, vmodl

from agentvm.engine.api import Caller
from agentvm.lab.eam_emulator import EmulatorServer, VcenterSessionChecker, start
from agentvm.model.agency import IssueKind, MoRef
from tests.support.memory_agent_manager import MemoryAgentManager

V75 = "eam.version.version7_5"
V1 = "eam.version.version1"
C1, C2 = MoRef("ClusterComputeResource", "domain-c1"), MoRef("ClusterComputeResource", "domain-c2")
HOSTS = {
    C1: [(MoRef("HostSystem", "host-11"), "esx-11"), (MoRef("HostSystem", "host-12"), "esx-12")],
    C2: [(MoRef("HostSystem", "host-21"), "esx-21")],
}
SESSIONS = {
    "user-cookie": Caller("administrator@vsphere.local"),
    "ext-a-cookie": Caller("io.agentvm.a", extension=True),
    "ext-b-cookie": Caller("io.agentvm.b", extension=True),
}
OVF = "http://127.0.0.1:9/hello-agent/hello-agent.ovf"


@pytest.fixture
def manager() -> MemoryAgentManager:
    return MemoryAgentManager(HOSTS)


@pytest.fixture
def server(manager: MemoryAgentManager) -> Iterator[EmulatorServer]:
    srv = start(manager, SESSIONS.get)
    yield srv
    srv.stop()


def client(server: EmulatorServer, cookie: str | None = "user-cookie", version: str = V75) -> Any:
    """A plain pyVmomi EAM stub (negative port: plain HTTP) and its EsxAgentManager."""
    stub = SoapStubAdapter(
        host="127.0.0.1", port=-server.port, path="/eam/sdk", version=version, sessionId=cookie
    )
    return eam.EsxAgentManager("EsxAgentManager", stub)


def agency_config(name: str = "hello", **fields: Any) -> Any:
    prop = eam.Agent.OvfEnvironmentInfo.OvfProperty
    fields.setdefault(
        "scope",
        eam.Agency.ComputeResourceScope(
            computeResource=[vim.ClusterComputeResource("domain-c1"), vim.ClusterComputeResource("domain-c2")]
        ),
    )
    fields.setdefault(
        "agentConfig",
        [
            eam.Agent.ConfigInfo(
                ovfPackageUrl=OVF,
                ovfEnvironment=eam.Agent.OvfEnvironmentInfo(ovfProperty=[prop(key="greeting", value="hi")]),
            )
        ],
    )
    return eam.Agency.ConfigInfo(agencyName=name, agentName="hello-agent", **fields)


def test_create_agency_then_query_config_runtime_agents_and_solution(server: EmulatorServer) -> None:
    mgr = client(server)
    agency = mgr.CreateAgency(agency_config(), "enabled")

    assert isinstance(agency, eam.Agency)
    assert [a._moId for a in mgr.QueryAgency()] == [agency._moId]
    config = agency.QueryConfig()
    assert config.agencyName == "hello" and config.agentName == "hello-agent"
    assert [c._moId for c in config.scope.computeResource] == ["domain-c1", "domain-c2"]
    assert isinstance(config.scope.computeResource[0], vim.ClusterComputeResource)
    assert config.agentConfig[0].ovfPackageUrl == OVF
    assert [(p.key, p.value) for p in config.agentConfig[0].ovfEnvironment.ovfProperty] == [
        ("greeting", "hi")
    ]
    runtime = agency.QueryRuntime()
    assert (runtime.status, runtime.goalState, runtime.entity._moId) == ("green", "enabled", agency._moId)
    assert runtime.issue == []
    assert agency.QuerySolutionId() == "administrator@vsphere.local"

    agents = agency.QueryAgent()
    assert len(agents) == 3
    hosts = set()
    for agent in agents:
        rt = agent.QueryRuntime()
        assert (rt.status, rt.goalState, rt.vmPowerState, rt.receivingHeartBeat) == (
            "green",
            "enabled",
            "poweredOn",
            True,
        )
        assert rt.vmName.startswith("hello-agent (") and rt.vmHook is None
        assert rt.agency._moId == agency._moId and rt.entity._moId == agent._moId
        assert isinstance(rt.vm, vim.VirtualMachine)
        hosts.add(rt.host._moId)
        assert agent.QueryConfig().ovfPackageUrl == OVF
    assert hosts == {"host-11", "host-12", "host-21"}


def test_provisioned_hook_holds_power_on_until_mark_as_available(server: EmulatorServer) -> None:
    agency = client(server).CreateAgency(
        agency_config(manuallyMarkAgentVmAvailableAfterProvisioning=True), "enabled"
    )
    agent = agency.QueryAgent()[0]

    held = agent.QueryRuntime()
    assert (held.status, held.vmPowerState, held.vmHook.vmState) == ("yellow", "poweredOff", "provisioned")
    assert held.vmHook.vm._moId == held.vm._moId
    agent.MarkAsAvailable()
    released = agent.QueryRuntime()
    assert (released.status, released.vmPowerState, released.vmHook) == ("green", "poweredOn", None)
    agent.MarkAsAvailable()  # nothing pending: a no-op, not a fault
    assert agent.QueryRuntime().status == "green"


def test_issue_is_typed_aggregated_queried_and_resolved(
    server: EmulatorServer, manager: MemoryAgentManager
) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    agent = agency.QueryAgent()[0]
    issue = manager.raise_issue(agent._moId, IssueKind.VM_POWERED_OFF)

    rt = agent.QueryRuntime()
    assert (rt.status, rt.vmPowerState) == ("red", "poweredOff")
    [wire] = rt.issue
    assert isinstance(wire, eam.issue.VmPoweredOff)
    assert wire.key == issue.key and wire.time == issue.time
    assert (wire.agent._moId, wire.agentName, wire.host._moId) == (agent._moId, rt.vmName, rt.host._moId)
    assert wire.hostName.startswith("esx-") and wire.vm._moId == rt.vm._moId
    assert (wire.agency._moId, wire.agencyName, wire.solutionId) == (
        agency._moId,
        "hello",
        "administrator@vsphere.local",
    )
    assert [i.key for i in agency.QueryRuntime().issue] == [issue.key]
    assert agency.QueryRuntime().status == "red"
    assert [i.key for i in agency.QueryIssue()] == [issue.key]
    assert [i.key for i in agency.QueryIssue([issue.key, 999])] == [issue.key]

    assert agency.Resolve([issue.key, 999]) == [999]  # resolved through the agency with an agent's key
    after = agent.QueryRuntime()
    assert (after.status, after.vmPowerState, after.issue) == ("green", "poweredOn", [])


def test_kind_specific_issue_fields_and_resolve_all(
    server: EmulatorServer, manager: MemoryAgentManager
) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    agent = agency.QueryAgent()[0]
    manager.raise_issue(agent._moId, IssueKind.CANNOT_ACCESS_AGENT_OVF, download_url=OVF)
    manager.raise_issue(agent._moId, IssueKind.MANAGED_HOST_NOT_REACHABLE)

    issues = agent.QueryIssue()
    by_type = {type(i): i for i in issues}
    assert by_type[eam.issue.CannotAccessAgentOVF].downloadUrl == OVF
    assert eam.issue.HostNotReachable in by_type  # wire name ManagedHostNotReachable
    agent.ResolveAll()
    assert agent.QueryIssue() == []


def test_update_replaces_the_config_and_converges(server: EmulatorServer) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    new_url = "http://127.0.0.1:9/hello-agent/v2.ovf"
    agency.Update(
        agency_config(
            scope=eam.Agency.ComputeResourceScope(computeResource=[vim.ClusterComputeResource("domain-c1")]),
            agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl=new_url)],
        )
    )
    config = agency.QueryConfig()
    assert [c._moId for c in config.scope.computeResource] == ["domain-c1"]
    assert config.agentConfig[0].ovfEnvironment is None  # replaced whole: the old OVF properties are gone
    agents = agency.QueryAgent()
    assert len(agents) == 2
    assert {a.QueryConfig().ovfPackageUrl for a in agents} == {new_url}


def test_uninstall_then_destroy_then_managed_object_not_found(server: EmulatorServer) -> None:
    mgr = client(server)
    agency = mgr.CreateAgency(agency_config(), "enabled")
    agency.Uninstall()
    runtime = agency.QueryRuntime()
    assert (runtime.goalState, runtime.status) == ("uninstalled", "green")
    assert agency.QueryAgent() == []
    with pytest.raises(eam.fault.InvalidState, match="uninstalled"):
        agency.Enable()

    agency.DestroyAgency()
    assert mgr.QueryAgency() == []
    for call in (agency.QueryConfig, agency.QueryRuntime, agency.DestroyAgency):
        with pytest.raises(vmodl.fault.ManagedObjectNotFound) as caught:
            call()
        assert caught.value.obj._moId == agency._moId


def test_disable_powers_agents_off_and_enable_on(server: EmulatorServer) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    agency.Disable()
    assert agency.QueryRuntime().goalState == "disabled"
    assert {a.QueryRuntime().vmPowerState for a in agency.QueryAgent()} == {"poweredOff"}
    agency.Enable()
    assert agency.QueryRuntime().goalState == "enabled"


def test_calls_without_a_session_are_invalid_login(server: EmulatorServer) -> None:
    for cookie in (None, "no-such-session"):
        with pytest.raises(eam.fault.InvalidLogin):
            client(server, cookie).QueryAgency()


def test_vcenter_that_cannot_be_asked_is_no_connection_to_vcenter(manager: MemoryAgentManager) -> None:
    srv = start(manager, VcenterSessionChecker())  # not yet told where vCenter is
    try:
        with pytest.raises(eam.fault.NoConnectionToVCenter, match="set_target"):
            client(srv).QueryAgency()
    finally:
        srv.stop()


def test_an_extension_sees_and_changes_only_its_own_agencies(server: EmulatorServer) -> None:
    a, b, user = client(server, "ext-a-cookie"), client(server, "ext-b-cookie"), client(server)
    agency_a = a.CreateAgency(agency_config("a"), "enabled")
    agency_b = b.CreateAgency(agency_config("b"), "enabled")

    assert [x._moId for x in a.QueryAgency()] == [agency_a._moId]
    assert [x._moId for x in b.QueryAgency()] == [agency_b._moId]
    assert {x._moId for x in user.QueryAgency()} == {agency_a._moId, agency_b._moId}
    assert agency_a.QuerySolutionId() == "io.agentvm.a"
    foreign = eam.Agency(agency_a._moId, b._stub)
    with pytest.raises(eam.fault.NotAuthorized, match=r"io\.agentvm\.a"):
        foreign.Uninstall()


def test_fetch_of_declared_properties_answers_like_the_query_methods(server: EmulatorServer) -> None:
    mgr = client(server)
    agency = mgr.CreateAgency(agency_config(), "enabled")

    assert agency.runtime.status == "green" and agency.runtime.entity._moId == agency._moId
    assert agency.config.agencyName == "hello"
    assert sorted(a._moId for a in agency.agent) == sorted(a._moId for a in agency.QueryAgent())
    assert agency.solutionId == "administrator@vsphere.local"
    assert agency.owner is None
    agent = agency.agent[0]
    assert agent.runtime.vmPowerState == "poweredOn" and agent.config.ovfPackageUrl == OVF
    assert [a._moId for a in mgr.agency] == [agency._moId]
    assert mgr.issue == []


def test_fetch_of_an_unknown_property_is_a_typed_fault(server: EmulatorServer) -> None:
    mgr = client(server)
    info = eam.Agency._propInfo["runtime"]
    fake = type(info)(**{**info.__dict__, "name": "noSuchProperty"})
    with pytest.raises(vmodl.fault.InvalidArgument) as caught:
        mgr._stub.InvokeAccessor(mgr, fake)
    assert caught.value.invalidProperty == "noSuchProperty"


def test_create_agency_validation_faults_are_typed(server: EmulatorServer) -> None:
    mgr = client(server)
    with pytest.raises(vmodl.fault.InvalidArgument) as missing_name:
        mgr.CreateAgency(
            eam.Agency.ConfigInfo(agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl=OVF)]), "enabled"
        )
    assert missing_name.value.invalidProperty == "agencyName"
    with pytest.raises(eam.fault.InvalidAgentConfiguration):
        mgr.CreateAgency(agency_config(agentConfig=[]), "enabled")
    bad = eam.Agent.ConfigInfo(ovfPackageUrl=OVF, ovfDiskProvisioning="sparkly")
    with pytest.raises(eam.fault.InvalidAgentConfiguration) as bad_field:
        mgr.CreateAgency(agency_config(agentConfig=[bad]), "enabled")
    assert bad_field.value.invalidField == "ovfDiskProvisioning"
    assert bad_field.value.invalidAgentConfiguration.ovfDiskProvisioning == "sparkly"
    unknown_scope = eam.Agency.ComputeResourceScope(
        computeResource=[vim.ClusterComputeResource("domain-c99")]
    )
    with pytest.raises(eam.fault.InvalidAgencyScope) as scope:
        mgr.CreateAgency(agency_config(scope=unknown_scope), "enabled")
    assert [c._moId for c in scope.value.unknownComputeResource] == ["domain-c99"]
    with pytest.raises(eam.fault.InvalidUrl) as url:
        mgr.CreateAgency(
            agency_config(agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl="ftp://x/y.ovf")]), "enabled"
        )
    assert (url.value.url, url.value.malformedUrl, url.value.connectionRefused) == (
        "ftp://x/y.ovf",
        True,
        False,
    )
    with pytest.raises(vmodl.fault.InvalidArgument, match="goal state"):
        mgr.CreateAgency(agency_config(), "sideways")
    assert mgr.QueryAgency() == []  # nothing was created by any of them


def test_unexpected_engine_error_is_a_short_system_fault(manager: MemoryAgentManager) -> None:
    class Broken(MemoryAgentManager):
        def query_agencies(self, caller: Caller) -> list[str]:
            raise RuntimeError("password=hunter2 leaked into an exception")

    srv = start(Broken(HOSTS), SESSIONS.get)
    try:
        with pytest.raises(eam.fault.EamSystemFault) as caught:
            client(srv).QueryAgency()
        assert "hunter2" not in str(caught.value.msg)
        assert "internal error" in caught.value.msg
    finally:
        srv.stop()


def test_a_method_of_another_type_is_method_not_found(server: EmulatorServer) -> None:
    mgr = client(server)
    agent = mgr.CreateAgency(agency_config(), "enabled").QueryAgent()[0]
    with pytest.raises(vmodl.fault.MethodNotFound) as caught:
        mgr._stub.InvokeMethod(agent, eam.Agency._methodInfo["QueryConfig"], ())
    assert caught.value.method == "QueryConfig"


def test_register_agent_vm_is_not_supported(server: EmulatorServer) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    with pytest.raises(vmodl.fault.NotSupported, match="manuallyProvisioned"):
        agency.RegisterAgentVm(vim.VirtualMachine("vm-1"))
    with pytest.raises(vmodl.fault.NotSupported):
        agency.UnregisterAgentVm(vim.VirtualMachine("vm-1"))


def test_add_issue_gets_a_server_key_and_unknown_types_are_rejected(server: EmulatorServer) -> None:
    agency = client(server).CreateAgency(agency_config(), "enabled")
    agent = agency.QueryAgent()[0]
    rt = agent.QueryRuntime()
    given = eam.issue.VmNotDeployed(
        key=0,
        description="x",
        time=datetime(2000, 1, 1, tzinfo=UTC),
        agency=agency,
        agencyName="ignored",
        solutionId="s",
        solutionName="s",
        agent=agent,
        agentName=rt.vmName,
        host=rt.host,
        hostName="esx",
    )
    stored = agency.AddIssue(given)
    assert isinstance(stored, eam.issue.VmNotDeployed)
    assert stored.key > 0 and stored.time.year > 2000 and stored.agencyName == "hello"
    assert [i.key for i in agent.QueryIssue()] == [stored.key]
    orphaned = eam.issue.OrphanedAgency(
        key=0,
        description="x",
        time=stored.time,
        agency=agency,
        agencyName="a",
        solutionId="s",
        solutionName="s",
    )
    with pytest.raises(vmodl.fault.InvalidArgument, match="OrphanedAgency"):
        agency.AddIssue(orphaned)


def test_maintenance_mode_policy_and_scan(server: EmulatorServer) -> None:
    mgr = client(server)
    assert mgr.GetMaintenanceModePolicy() == "singleHost"
    mgr.SetMaintenanceModePolicy("multipleHosts")
    assert mgr.GetMaintenanceModePolicy() == "multipleHosts"
    with pytest.raises(vmodl.fault.InvalidArgument):
        mgr.SetMaintenanceModePolicy("allAtOnce")
    mgr.ScanForUnknownAgentVm()


def _post(
    server: EmulatorServer, body: bytes, action: str, path: str = "/eam/sdk", method: str = "POST"
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {
            "SOAPAction": action,
            "Content-Type": "text/xml",
            "Cookie": 'vmware_soap_session="user-cookie"',
        }
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_version1_client_gets_no_newer_fields_and_cannot_send_them(server: EmulatorServer) -> None:
    old, new = client(server, version=V1), client(server)
    config = agency_config(
        manuallyMarkAgentVmAvailableAfterProvisioning=True,
        useUuidVmName=True,
        agentVmDatastore=[vim.Datastore("datastore-1")],
        folders=[
            eam.Agency.VMFolder(folderId=vim.Folder("group-v1"), datacenterId=vim.Datacenter("datacenter-1"))
        ],
    )
    agency = old.CreateAgency(config, "enabled")

    stored = eam.Agency(agency._moId, new._stub).QueryConfig()
    assert stored.agentVmDatastore == [] and stored.folders == [] and stored.useUuidVmName is False
    agent = agency.QueryAgent()[0]
    assert eam.Agent(agent._moId, new._stub).QueryRuntime().vmHook.vmState == "provisioned"
    assert agent.QueryRuntime().vmHook is None  # vmHook is 6.7: a 1.0 client is not sent it

    request = old._stub.SerializeRequest(agent, eam.Agent._methodInfo["QueryRuntime"], ())
    status, reply = _post(server, request, '"urn:eam/1.0"')
    assert status == 200 and b"vmHook" not in reply and b"<vmName>" in reply
    status, reply = _post(server, request, '"urn:eam/7.5"')
    assert status == 200 and b"<vmHook>" in reply


def test_a_method_newer_than_the_client_version_is_method_not_found(server: EmulatorServer) -> None:
    new = client(server)
    request = new._stub.SerializeRequest(new, eam.EsxAgentManager._methodInfo["GetMaintenanceModePolicy"], ())
    status, reply = _post(server, request, '"urn:eam/7.0"')
    assert status == 500 and b"MethodNotFoundFault" in reply
    status, reply = _post(server, request, '"urn:eam/7.4"')
    assert status == 200 and b"singleHost" in reply


def test_transport_level_mistakes_get_clear_answers(server: EmulatorServer) -> None:
    status, reply = _post(server, b"<not-soap", '"urn:eam/7.5"')
    assert status == 500 and b"InvalidRequestFault" in reply
    status, _ = _post(server, b"", '"urn:eam/7.5"', path="/elsewhere")
    assert status == 404
    status, _ = _post(server, b"", '"urn:eam/7.5"', method="GET")
    assert status == 405


def test_restart_on_the_same_port_serves_the_same_manager(manager: MemoryAgentManager) -> None:
    first = start(manager, SESSIONS.get)
    port = first.port
    stub_mgr = client(first)
    agency = stub_mgr.CreateAgency(agency_config(), "enabled")
    first.stop()
    second = start(manager, SESSIONS.get, port=port)
    try:
        assert second.port == port and second.url == f"http://127.0.0.1:{port}"
        assert [a._moId for a in stub_mgr.QueryAgency()] == [agency._moId]  # the old client stub carries on
    finally:
        second.stop()
