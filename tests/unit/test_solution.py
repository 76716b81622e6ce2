"""The solution's pure parts: resolving a spec against an inventory, comparing agency configs, the
progress phases, the issue sentences and the status document (validated against its published schema)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.backends.base import AgencyStatus
from agentvm.controller.observe import extension_state, read_addresses
from agentvm.controller.status import AgencyReport, StatusReport, status_document, status_schema
from agentvm.controller.targets import (
    observed_agency,
)
from agentvm.core.agency_diff import config_changes
from agentvm.core.plan import ChangeKind, make_plan
from agentvm.core.plan_text import describe
from agentvm.core.progress import ISSUE_SENTENCES, Phase, host_rows, issue_sentence, phase_of
from agentvm.core.scope import resolve_agency
from agentvm.model.agency import (
    AgencyRuntime,
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
from agentvm.model.desired import DesiredState, ObservedState, SolutionSpec
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.inventory import (
    VirtualMachine,
)
from agentvm.spec import load_spec_text
from agentvm.vsphere.extensions import RegisteredExtension
from tests.support.inventory_fakes import DS, NET, agent, snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {
    "AGENTVM_URL": "https://127.0.0.1:8989/sdk",
    "AGENTVM_USERNAME": "user",
    "AGENTVM_PASSWORD": "pass",
    "AGENTVM_THUMBPRINT": "AB:" * 19 + "AB",
    "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:8000",
}


def contrail(text: str | None = None) -> DesiredState:
    return load_spec_text(text or (EXAMPLES / "contrail.yaml").read_text(), "contrail.yaml", env=ENV)


# ------------------------------------------------------------------------------------------ targets


def test_resolving_the_contrail_example_gives_an_eam_config_with_the_hook_and_the_scope() -> None:
    resolved = resolve_agency(contrail().agencies[0], snapshot())
    config = resolved.config
    assert config.scope == (
        MoRef("ClusterComputeResource", "domain-c0"),
        MoRef("ClusterComputeResource", "domain-c1"),
    )
    assert config.agent_vm_datastores == (DS,) and config.agent_vm_networks == (NET,)
    assert config.manually_mark_available_after_provisioning
    assert config.agent_name == "contrail-vm"
    (agent,) = config.agent_configs
    assert agent.ovf_package_url == "http://127.0.0.1:8000/contrail-vm/contrail-vm.ovf"
    assert {p.key: p.value for p in agent.ovf_environment} == {
        "controlNodes": "10.10.0.2,10.10.0.3,10.10.0.4",
        "dns": "10.10.0.2",
        "mtu": "9000",
    }
    assert [h.path for h in resolved.hosts][:2] == [
        "/DC0/host/DC0_C0/DC0_C0_H0",
        "/DC0/host/DC0_C0/DC0_C0_H1",
    ]
    assert resolved.hosts[0].cluster_name == "DC0_C0"


def test_an_unknown_cluster_is_named_with_the_closest_match_and_the_agency() -> None:
    spec = contrail((EXAMPLES / "contrail.yaml").read_text().replace("DC0_C1\n", "DC0_C7\n"))
    with pytest.raises(NotFoundError) as caught:
        resolve_agency(spec.agencies[0], snapshot())
    message = str(caught.value)
    assert 'agency "contrail": scope entry /DC0/host/DC0_C7' in message
    assert "did you mean" in message


def test_an_unknown_datastore_and_a_host_that_cannot_see_it_are_errors() -> None:
    spec = contrail((EXAMPLES / "contrail.yaml").read_text().replace("LocalDS_0", "SharedDS"))
    with pytest.raises(NotFoundError, match=r"no datastore 'SharedDS'.*known: LocalDS_0"):
        resolve_agency(spec.agencies[0], snapshot())
    with pytest.raises(ConfigurationError, match=r"DC0_C1_H2\) cannot see datastore 'LocalDS_0'"):
        resolve_agency(contrail().agencies[0], snapshot(hidden_datastore_on="DC0_C1_H2"))


def test_an_applied_config_reads_back_as_no_change_whatever_the_list_order() -> None:
    desired = contrail()
    inventory = snapshot()
    resolved = resolve_agency(desired.agencies[0], inventory)
    shuffled = dataclasses.replace(resolved.config, scope=tuple(reversed(resolved.config.scope)))
    assert config_changes(shuffled, resolved.config) == ()
    observed = ObservedState(
        extension=extension_state(_registered(desired.solution), desired.solution),
        agencies={"contrail": observed_agency(shuffled, resolved, inventory)},
        hosts={"contrail": resolved.hosts},
        host_settings={},
    )
    kinds = {c.kind for c in make_plan(desired, observed).changes}
    assert ChangeKind.CREATE_AGENCY not in kinds and ChangeKind.UPDATE_AGENCY not in kinds
    assert ChangeKind.UPGRADE_AGENCY not in kinds and ChangeKind.REGISTER_EXTENSION not in kinds


def test_a_new_ovf_url_is_an_upgrade_and_a_dropped_hook_an_update() -> None:
    desired = contrail()
    inventory = snapshot()
    resolved = resolve_agency(desired.agencies[0], inventory)
    old = dataclasses.replace(
        resolved.config,
        agent_configs=(dataclasses.replace(resolved.config.agent_configs[0], ovf_package_url="http://old"),),
    )
    assert config_changes(old, resolved.config) == ("agent_configs",)
    seen = observed_agency(old, resolved, inventory)
    plan = make_plan(desired, ObservedState(agencies={"contrail": seen}, hosts={"contrail": resolved.hosts}))
    assert any(c.kind is ChangeKind.UPGRADE_AGENCY and "http://old →" in describe(c) for c in plan.changes)
    no_hook = dataclasses.replace(resolved.config, manually_mark_available_after_provisioning=False)
    assert config_changes(no_hook, resolved.config) == ("manually_mark_available_after_provisioning",)


def _registered(solution: SolutionSpec) -> RegisteredExtension:
    return RegisteredExtension(
        key=solution.key,
        version=solution.version,
        label=solution.label,
        summary=solution.summary or solution.label,
        company=solution.company,
        managed_entity_types=("agent",),
    )


def test_an_empty_summary_registered_as_the_label_reads_back_as_empty() -> None:
    solution = SolutionSpec(key="k", label="Label", summary="", company="c", version="1")
    state = extension_state(_registered(solution), solution)
    assert state is not None and state.summary == ""
    changed = dataclasses.replace(_registered(solution), summary="something else")
    state = extension_state(changed, solution)
    assert state is not None and state.summary == "something else"
    assert extension_state(None, solution) is None


# ----------------------------------------------------------------------------------- progress and status


def issue(kind: IssueKind, host: str = "host-00", key: int = 7) -> Issue:
    return Issue(
        key=key,
        kind=kind,
        time=datetime(2025, 1, 1, tzinfo=UTC),
        agency="agency-1",
        agency_name="contrail",
        agent=f"agent-{host}",
        host=MoRef("HostSystem", host),
        host_name="DC0_C0_H0",
        vm=MoRef("VirtualMachine", "vm-1"),
        vm_name="contrail-vm (1)",
    )


def test_every_issue_kind_has_a_sentence_with_its_fix() -> None:
    assert set(ISSUE_SENTENCES) == set(IssueKind)
    for kind in IssueKind:
        sentence = issue_sentence(issue(kind))
        assert "{" not in sentence and ";" in sentence, sentence
    assert issue_sentence(issue(IssueKind.VM_POWERED_OFF)) == (
        "the agent VM contrail-vm (1) on DC0_C0_H0 was powered off; run agentvm resolve to power it on"
    )


@pytest.mark.parametrize(
    ("runtime", "goal", "phase"),
    [
        (None, GoalState.ENABLED, Phase.WAITING),
        (None, GoalState.UNINSTALLED, Phase.REMOVED),
        (agent("h"), GoalState.ENABLED, Phase.READY),
        (agent("h", status=Status.YELLOW, vm=None), GoalState.ENABLED, Phase.DEPLOYING),
        (
            agent(
                "h", status=Status.YELLOW, hook=VmHook(MoRef("VirtualMachine", "vm-9"), HookState.PROVISIONED)
            ),
            GoalState.ENABLED,
            Phase.CONFIGURING,
        ),
        (agent("h", status=Status.YELLOW, power_state=PowerState.POWERED_OFF), None, Phase.POWERING_ON),
        (agent("h", status=Status.RED, issues=(issue(IssueKind.VM_POWERED_OFF),)), None, Phase.ISSUE),
        (agent("h", status=Status.YELLOW), GoalState.UNINSTALLED, Phase.REMOVING),
        (agent("h", vm=None), GoalState.UNINSTALLED, Phase.REMOVED),
    ],
)
def test_phase_of_an_agent(runtime: AgentRuntime | None, goal: GoalState | None, phase: Phase) -> None:
    assert phase_of(runtime, goal) is phase


def test_addresses_are_read_back_from_the_agent_vms_and_a_hook_vm_counts_during_an_upgrade() -> None:
    inventory = snapshot()
    vms = (
        VirtualMachine(
            MoRef("VirtualMachine", "vm-host-00"),
            "contrail-vm (1)",
            "/DC0/vm/contrail-vm (1)",
            extra_config=MappingProxyType({"guestinfo.agentvm.address": "10.10.0.10"}),
        ),
        VirtualMachine(
            MoRef("VirtualMachine", "vm-new"),
            "contrail-vm (9)",
            "/DC0/vm/contrail-vm (9)",
            extra_config=MappingProxyType({"guestinfo.agentvm.address": "10.10.0.11"}),
        ),
        VirtualMachine(
            MoRef("VirtualMachine", "vm-host-02"),
            "x",
            "/DC0/vm/x",
            extra_config=MappingProxyType({"guestinfo.agentvm.address": "not an address"}),
        ),
    )
    inventory = dataclasses.replace(inventory, vms=vms)
    status = AgencyStatus(
        "agency-1",
        "contrail",
        AgencyRuntime("agency-1", GoalState.ENABLED, Status.YELLOW),
        (
            agent("host-00"),
            agent("host-01", vm=None, hook=VmHook(MoRef("VirtualMachine", "vm-new"), HookState.PROVISIONED)),
            agent("host-02"),
        ),
    )
    assert read_addresses(inventory, status) == {
        "host-00": IPv4Address("10.10.0.10"),
        "host-01": IPv4Address("10.10.0.11"),
    }
    assert read_addresses(inventory, None) == {}


@settings(deadline=None)  # one example validates a whole document: slow on a loaded machine
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Status)),
            st.sampled_from(list(PowerState)),
            st.booleans(),
            st.lists(st.sampled_from(list(IssueKind)), max_size=2),
            st.booleans(),
        ),
        min_size=0,
        max_size=6,
    )
)
def test_the_status_document_always_follows_its_schema(
    agents: list[tuple[Status, PowerState, bool, list[IssueKind], bool]],
) -> None:
    inventory = snapshot()
    hosts = [h for h in inventory.hosts][: len(agents)]
    runtimes = tuple(
        agent(
            host.moref.value,
            status=status,
            power_state=power,
            vm=MoRef("VirtualMachine", f"vm-{i}") if has_vm else None,
            issues=tuple(issue(k, host.moref.value, key=i * 10 + n) for n, k in enumerate(kinds)),
            hook=VmHook(MoRef("VirtualMachine", "vm-x"), HookState.PROVISIONED) if hook else None,
        )
        for i, (host, (status, power, has_vm, kinds, hook)) in enumerate(zip(hosts, agents, strict=True))
    )
    agency_issue = dataclasses.replace(issue(IssueKind.VM_POWERED_OFF), agent=None, key=999)
    status = AgencyStatus(
        "agency-1",
        "contrail",
        AgencyRuntime("agency-1", GoalState.ENABLED, Status.RED, (agency_issue,)),
        runtimes,
    )
    resolved = resolve_agency(contrail().agencies[0], inventory)
    addresses = {h.moid: IPv4Address("10.10.0.10") + n for n, h in enumerate(resolved.hosts)}
    rows = host_rows("contrail", status, resolved.hosts, addresses, inventory)
    report = StatusReport("https://vc/sdk", (AgencyReport(status, rows),), ("other",))
    document = status_document(report, datetime(2025, 1, 1, tzinfo=UTC))
    jsonschema.validate(document, status_schema())
    (agency,) = document["agencies"]
    assert agency["summary"]["hosts"] == 6
    assert sum(len(c["hosts"]) for c in agency["clusters"]) == 6
    assert [i["key"] for i in agency["issues"]] == [999]


def test_a_document_missing_a_field_does_not_validate() -> None:
    report = StatusReport("https://vc/sdk", ())
    document = status_document(report, datetime(2025, 1, 1, tzinfo=UTC))
    jsonschema.validate(document, status_schema())
    del document["kind"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, status_schema())
