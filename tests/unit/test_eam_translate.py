"""Model values ⇄ pyVmomi eam objects, through the real SOAP serializer and deserializer.

Every round trip goes model → eam object → the emulator's reply envelope → pyVmomi's response
deserializer (what a client does) → model, so a field lost or mangled on the wire shows up here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyVmomi import SoapStubAdapter, eam, vim
from pyVmomi.SoapAdapter import SoapResponseDeserializer
from pyVmomi.VmomiSupport import GetVmodlType

from agentvm.eam import translate
from agentvm.engine import api
from agentvm.lab.eam_emulator import faults, soap
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    FolderMapping,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    OvfProperty,
    PowerState,
    ResourcePoolMapping,
    Status,
    VmHook,
)

V75 = "eam.version.version7_5"
_text = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), min_size=1, max_size=12)
_id = st.from_regex(r"[a-z]{1,6}-[0-9]{1,4}", fullmatch=True)


def _refs(kind: str, max_size: int = 3) -> st.SearchStrategy[tuple[MoRef, ...]]:
    return st.lists(_id.map(lambda v: MoRef(kind, v)), max_size=max_size).map(tuple)


def wire(value: Any, result_type: Any, version: str = V75) -> Any:
    """What a pyVmomi client of ``version`` reads back when the emulator replies with ``value``."""
    body = soap.reply("Probe", value, result_type, version)
    stub = SoapStubAdapter("127.0.0.1", -1, version=version)
    return SoapResponseDeserializer(stub).Deserialize(body, result_type)


agent_configs = st.builds(
    AgentConfig,
    ovf_package_url=st.none() | _text.map(lambda t: f"http://127.0.0.1/{t}.ovf"),
    ovf_environment=st.lists(st.builds(OvfProperty, _text, _text), max_size=3).map(tuple),
    product_line_id=st.sampled_from([None, "esx", "embeddedEsx"]),
    host_version=st.sampled_from([None, "7.0.3", "8.*"]),
    ovf_disk_provisioning=st.sampled_from([None, "none", "thin", "thick"]),
    vib_url=st.none() | st.just("http://127.0.0.1/bundle.zip"),
)

agency_configs = st.builds(
    AgencyConfig,
    agency_name=_text,
    agent_configs=st.lists(agent_configs, min_size=1, max_size=3).map(tuple),
    scope=st.lists(
        st.builds(MoRef, st.sampled_from(["ClusterComputeResource", "ComputeResource"]), _id), max_size=3
    ).map(tuple),
    agent_name=st.none() | _text,
    use_uuid_vm_name=st.booleans(),
    agent_vm_datastores=_refs("Datastore"),
    agent_vm_networks=st.lists(
        st.builds(MoRef, st.sampled_from(["Network", "DistributedVirtualPortgroup"]), _id), max_size=2
    ).map(tuple),
    prefer_host_configuration=st.booleans(),
    folders=st.lists(
        st.builds(
            FolderMapping, _id.map(lambda v: MoRef("Folder", v)), _id.map(lambda v: MoRef("Datacenter", v))
        ),
        max_size=2,
    ).map(tuple),
    resource_pools=st.lists(
        st.builds(
            ResourcePoolMapping,
            _id.map(lambda v: MoRef("ResourcePool", v)),
            _id.map(lambda v: MoRef("ClusterComputeResource", v)),
        ),
        max_size=2,
    ).map(tuple),
    manually_mark_available_after_provisioning=st.booleans(),
    manually_mark_available_after_power_on=st.booleans(),
    optimized_deployment_enabled=st.booleans(),
)


@given(agency_configs)
@settings(max_examples=60, deadline=None)
def test_agency_config_round_trips_through_the_wire(config: AgencyConfig) -> None:
    back = wire(translate.agency_config_to_eam(config), eam.Agency.ConfigInfo)
    assert translate.agency_config_from_eam(back) == config


def test_agency_config_without_a_name_is_invalid_argument() -> None:
    with pytest.raises(translate.InvalidArgument) as caught:
        translate.agency_config_from_eam(eam.Agency.ConfigInfo(agentConfig=[eam.Agent.ConfigInfo()]))
    assert caught.value.invalid_property == "agencyName"


def test_agency_config_defaults_when_the_client_leaves_flags_out() -> None:
    config = translate.agency_config_from_eam(eam.Agency.ConfigInfo(agencyName="a"))
    assert config == AgencyConfig(agency_name="a", agent_configs=())
    assert config.optimized_deployment_enabled is True


def test_fields_newer_than_the_client_version_are_left_out() -> None:
    config = AgencyConfig(
        agency_name="a",
        agent_configs=(AgentConfig(ovf_package_url="http://x/a.ovf", ovf_disk_provisioning="thin"),),
        use_uuid_vm_name=True,
        agent_vm_datastores=(MoRef("Datastore", "ds-1"),),
    )
    old = wire(translate.agency_config_to_eam(config), eam.Agency.ConfigInfo, "eam.version.version1")
    assert old.useUuidVmName is None and old.agentVmDatastore == []
    assert (
        old.agentConfig[0].ovfDiskProvisioning is None
        and old.agentConfig[0].ovfPackageUrl == "http://x/a.ovf"
    )


NOW = datetime(2025, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
HOST = MoRef("HostSystem", "host-21")
VM = MoRef("VirtualMachine", "vm-7")

_DETAIL: dict[IssueKind, dict[str, str | tuple[str, ...]]] = {
    IssueKind.CANNOT_ACCESS_AGENT_OVF: {translate.DOWNLOAD_URL: "http://127.0.0.1:1/a.ovf"},
    IssueKind.OVF_INVALID_FORMAT: {translate.ERROR: ("line 3: not an Envelope", "no disk")},
    IssueKind.OVF_INVALID_PROPERTY: {translate.ERROR: ("greeting is not set",)},
    IssueKind.INVALID_CONFIG: {translate.ERROR: "no NIC fits"},
    IssueKind.VM_CORRUPTED: {translate.MISSING_FILE: "[ds] a/a.vmx"},
    IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE: {
        translate.CUSTOM_DATASTORE: ("Datastore:ds-1", "Datastore:ds-2"),
        translate.CUSTOM_DATASTORE_NAME: ("ds1", "ds2"),
    },
    IssueKind.NO_CUSTOM_AGENT_VM_NETWORK: {
        translate.CUSTOM_NETWORK: ("DistributedVirtualPortgroup:dvpg-1",),
        translate.CUSTOM_NETWORK_NAME: ("pg1",),
    },
}


def _issue(kind: IssueKind, key: int = 7) -> Issue:
    vm_issue = issubclass(translate._issue_type(kind), eam.issue.VmIssue)
    return Issue(
        key=key,
        kind=kind,
        time=NOW,
        agency="agency-1",
        agency_name="hello",
        agent="agent-2",
        agent_name="hello (1)",
        host=HOST,
        host_name="esx-21",
        vm=VM if vm_issue else None,
        detail=_DETAIL.get(kind, {}),
    )


@pytest.mark.parametrize("kind", list(IssueKind))
def test_every_issue_kind_round_trips_as_its_eam_type(kind: IssueKind) -> None:
    issue = _issue(kind)
    back = wire(translate.issue_to_eam(issue, "io.agentvm"), eam.issue.Issue)
    assert type(back)._wsdlName == kind.value
    assert (back.solutionId, back.agencyName, back.agentName, back.hostName) == (
        "io.agentvm",
        "hello",
        "hello (1)",
        "esx-21",
    )
    assert translate.issue_from_eam(back) == issue


def test_cannot_access_agent_ovf_carries_its_download_url() -> None:
    back = wire(translate.issue_to_eam(_issue(IssueKind.CANNOT_ACCESS_AGENT_OVF), "s"), eam.issue.Issue)
    assert isinstance(back, eam.issue.CannotAccessAgentOVF)
    assert back.downloadUrl == "http://127.0.0.1:1/a.ovf"


def test_an_issue_newer_than_the_client_is_widened_to_a_type_it_knows() -> None:
    issue = _issue(IssueKind.MANAGED_HOST_NOT_REACHABLE)  # eam 6.8
    back = wire(translate.issue_to_eam(issue, "s"), eam.issue.Issue, "eam.version.version6")
    assert type(back) is eam.issue.AgentIssue and back.agent._moId == "agent-2"


def test_a_vm_issue_without_a_vm_is_refused() -> None:
    issue = _issue(IssueKind.VM_POWERED_OFF)
    with pytest.raises(ValueError, match="no VM"):
        translate.issue_to_eam(Issue(**{**issue.__dict__, "vm": None}), "s")


def test_add_issue_of_a_type_agentvm_does_not_model_is_invalid_argument() -> None:
    orphaned = eam.issue.OrphanedAgency(key=1, description="x", time=NOW, agency=eam.Agency("a"))
    with pytest.raises(translate.InvalidArgument, match="OrphanedAgency"):
        translate.issue_from_eam(orphaned)


agent_runtimes = st.builds(
    AgentRuntime,
    agent=_id,
    agency=_id,
    host=_id.map(lambda v: MoRef("HostSystem", v)),
    host_name=_text,
    goal_state=st.sampled_from([GoalState.ENABLED, GoalState.UNINSTALLED]),
    status=st.sampled_from(Status),
    power_state=st.sampled_from(PowerState),
    vm_name=_text,
    vm=st.none() | _id.map(lambda v: MoRef("VirtualMachine", v)),
    vm_ip=st.none() | st.just("192.0.2.7"),
    hook=st.none()
    | st.builds(VmHook, _id.map(lambda v: MoRef("VirtualMachine", v)), st.sampled_from(HookState)),
    issues=st.sampled_from(
        [(), (_issue(IssueKind.VM_POWERED_OFF),), (_issue(IssueKind.VM_NOT_DEPLOYED, 9),)]
    ),
    resource_pool=st.none() | _id.map(lambda v: MoRef("ResourcePool", v)),
    folder=st.none() | _id.map(lambda v: MoRef("Folder", v)),
)


@given(agent_runtimes)
@settings(max_examples=60, deadline=None)
def test_agent_runtime_round_trips_through_the_wire(runtime: AgentRuntime) -> None:
    back = wire(translate.agent_runtime_to_eam(runtime, "s"), eam.Agent.RuntimeInfo)
    assert back.receivingHeartBeat is (runtime.power_state is PowerState.POWERED_ON)
    assert translate.agent_runtime_from_eam(back, runtime.host_name) == runtime


def test_agent_runtime_leaves_optional_fields_out_and_mandatory_ones_valid() -> None:
    runtime = AgentRuntime(
        "agent-1", "agency-1", HOST, "esx", GoalState.ENABLED, Status.YELLOW, PowerState.POWERED_OFF, ""
    )
    body = soap.reply(
        "AgentQueryRuntime", translate.agent_runtime_to_eam(runtime, "s"), eam.Agent.RuntimeInfo, V75
    )
    for absent in (b"<vm ", b"<vmIp>", b"<vmHook>", b"<issue", b"<esxAgentFolder"):
        assert absent not in body
    for present in (
        b"<status>yellow</status>",
        b'<entity type="Agent">agent-1</entity>',
        b"<vmPowerState>poweredOff</vmPowerState>",
        b"<receivingHeartBeat>false</receivingHeartBeat>",
        b"<vmName></vmName>",
    ):
        assert present in body


def test_agency_runtime_round_trips() -> None:
    runtime = AgencyRuntime("agency-1", GoalState.DISABLED, Status.RED, (_issue(IssueKind.VM_SUSPENDED),))
    back = wire(translate.agency_runtime_to_eam(runtime, "s"), eam.EamObject.RuntimeInfo)
    assert isinstance(back.entity, eam.Agency)
    assert translate.agency_runtime_from_eam(back) == runtime


def test_goal_state_from_eam_rejects_unknown_values() -> None:
    assert translate.goal_state_from_eam("disabled") is GoalState.DISABLED
    with pytest.raises(translate.InvalidArgument):
        translate.goal_state_from_eam("paused")


def test_mo_refs_map_to_pyvmomi_types() -> None:
    assert isinstance(
        translate.to_mo(MoRef("DistributedVirtualPortgroup", "dvpg-1")), vim.dvs.DistributedVirtualPortgroup
    )
    assert isinstance(translate.to_mo(MoRef("Agent", "agent-1")), eam.Agent)
    assert translate.from_mo(vim.ClusterComputeResource("domain-c7")) == MoRef(
        "ClusterComputeResource", "domain-c7"
    )
    with pytest.raises(ValueError, match="NoSuchType"):
        translate.to_mo(MoRef("NoSuchType", "x-1"))


# --- faults


def _raised(fault: Any, version: str = V75) -> Any:
    body = soap.fault_reply(fault, version)
    return SoapResponseDeserializer(SoapStubAdapter("127.0.0.1", -1, version=version)).Deserialize(body, None)


@pytest.mark.parametrize(
    ("exc", "wire_type"),
    [
        (api.ManagedObjectNotFound(MoRef("Agency", "agency-9")), "vmodl.fault.ManagedObjectNotFound"),
        (api.InvalidArgument("agencyName is required", "agencyName"), "vmodl.fault.InvalidArgument"),
        (api.InvalidAgentConfiguration("bad", "ovfPackageUrl", 0), "eam.fault.InvalidAgentConfiguration"),
        (
            api.InvalidAgencyScope([MoRef("ClusterComputeResource", "domain-c9")]),
            "eam.fault.InvalidAgencyScope",
        ),
        (
            api.InvalidUrl("http://x/a.ovf", "refused", connection_refused=True, response_code=503),
            "eam.fault.InvalidUrl",
        ),
        (api.InvalidState("uninstalled"), "eam.fault.InvalidState"),
        (api.NotAuthorized("not yours"), "eam.fault.NotAuthorized"),
        (api.EngineFault("something new"), "eam.fault.EamSystemFault"),
    ],
)
def test_every_engine_fault_reaches_the_client_as_its_typed_fault(
    exc: api.EngineFault, wire_type: str
) -> None:
    configs = (AgentConfig(ovf_package_url="http://x/a.ovf"),)
    raised = _raised(faults.to_soap_fault(exc, configs))
    assert type(raised) is GetVmodlType(wire_type)
    assert isinstance(raised, Exception) and raised.msg == str(exc)


def test_fault_fields_survive_the_wire() -> None:
    url = _raised(faults.to_soap_fault(api.InvalidUrl("http://x/a.ovf", "503", response_code=503)))
    assert (url.url, url.malformedUrl, url.unknownHost, url.connectionRefused, url.responseCode) == (
        "http://x/a.ovf",
        False,
        False,
        False,
        503,
    )
    scope = _raised(
        faults.to_soap_fault(api.InvalidAgencyScope([MoRef("ClusterComputeResource", "domain-c9")]))
    )
    assert [c._moId for c in scope.unknownComputeResource] == ["domain-c9"]
    config = _raised(
        faults.to_soap_fault(
            api.InvalidAgentConfiguration("bad", "ovfPackageUrl", 0), (AgentConfig(ovf_package_url="u"),)
        )
    )
    assert config.invalidField == "ovfPackageUrl" and config.invalidAgentConfiguration.ovfPackageUrl == "u"
    missing = _raised(faults.to_soap_fault(api.ManagedObjectNotFound(MoRef("Agent", "agent-3"))))
    assert isinstance(missing.obj, eam.Agent) and missing.obj._moId == "agent-3"


def test_a_fault_newer_than_the_client_is_widened() -> None:
    raised = _raised(eam.fault.InvalidState(msg="no"), "eam.version.version6")
    assert type(raised) is eam.fault.EamAppFault and raised.msg == "no"
