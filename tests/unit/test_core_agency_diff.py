"""core.agency_diff: one comparison of agency configs, blind to the order of lists EAM gives no meaning to."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.agency_diff import config_changes, is_upgrade, summary_changes
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    FolderMapping,
    MoRef,
    OvfProperty,
    ResourcePoolMapping,
)
from agentvm.model.desired import ObservedAgency

T = TypeVar("T")

REFS = st.sampled_from([MoRef("ClusterComputeResource", f"domain-c{i}") for i in range(4)])
DATASTORES = st.lists(st.sampled_from([MoRef("Datastore", f"datastore-{i}") for i in range(4)]), unique=True)
PROPERTIES = st.lists(st.builds(OvfProperty, st.sampled_from("abc"), st.sampled_from("xy")), max_size=3)
AGENT_CONFIGS = st.lists(
    st.builds(
        AgentConfig,
        ovf_package_url=st.sampled_from(["http://a/x.ovf", "http://a/y.ovf", None]),
        ovf_environment=PROPERTIES.map(tuple),
    ),
    min_size=1,
    max_size=3,
)
FOLDERS = st.lists(
    st.builds(
        FolderMapping,
        st.sampled_from([MoRef("Folder", f"group-v{i}") for i in range(3)]),
        st.sampled_from([MoRef("Datacenter", f"datacenter-{i}") for i in range(2)]),
    ),
    max_size=2,
)

configs = st.builds(
    AgencyConfig,
    agency_name=st.just("hello"),
    agent_configs=AGENT_CONFIGS.map(tuple),
    scope=st.lists(REFS, max_size=3).map(tuple),
    agent_vm_datastores=DATASTORES.map(tuple),
    folders=FOLDERS.map(tuple),
    prefer_host_configuration=st.booleans(),
)


def _shuffled(config: AgencyConfig, data: st.DataObject) -> AgencyConfig:
    """``config`` with every list EAM gives no order to permuted, also each agent config's properties."""

    def perm(items: tuple[T, ...]) -> tuple[T, ...]:
        return tuple(data.draw(st.permutations(items)))

    agents = tuple(
        dataclasses.replace(a, ovf_environment=perm(a.ovf_environment)) for a in config.agent_configs
    )
    return config.with_(
        agent_configs=perm(agents),
        scope=perm(config.scope),
        folders=perm(config.folders),
        resource_pools=perm(config.resource_pools),
    )


@settings(max_examples=60)
@given(configs, st.data())
def test_the_order_of_unordered_lists_is_no_change(config: AgencyConfig, data: st.DataObject) -> None:
    assert config_changes(config, _shuffled(config, data)) == ()
    assert config_changes(_shuffled(config, data), config) == ()


@settings(max_examples=60)
@given(configs, configs, st.data())
def test_a_difference_survives_any_reordering(a: AgencyConfig, b: AgencyConfig, data: st.DataObject) -> None:
    changed = config_changes(a, b)
    assert config_changes(_shuffled(a, data), _shuffled(b, data)) == changed
    assert config_changes(b, a) == changed
    # what it names is exactly what needs copying from b to make a the same config
    assert config_changes(a.with_(**{f: getattr(b, f) for f in changed}), b) == ()


@given(DATASTORES.filter(lambda refs: len(refs) > 1))
def test_the_datastore_order_is_a_change_eam_deploys_to_the_first_a_host_sees(refs: list[MoRef]) -> None:
    config = AgencyConfig("hello", (AgentConfig("http://a/x.ovf"),), agent_vm_datastores=tuple(refs))
    assert config_changes(config, config.with_(agent_vm_datastores=tuple(reversed(refs)))) == (
        "agent_vm_datastores",
    )


def test_fields_the_spec_summary_does_not_show_are_changes_too() -> None:
    config = AgencyConfig("hello", (AgentConfig("http://a/x.ovf"),))
    pools = (ResourcePoolMapping(MoRef("ResourcePool", "resgroup-1"), MoRef("ClusterComputeResource", "c")),)
    assert config_changes(config, config.with_(prefer_host_configuration=True)) == (
        "prefer_host_configuration",
    )
    assert config_changes(config, config.with_(resource_pools=pools, optimized_deployment_enabled=False)) == (
        "resource_pools",
        "optimized_deployment_enabled",
    )


def test_an_upgrade_is_a_new_ovf_url_in_any_order() -> None:
    two = AgencyConfig("hello", (AgentConfig("http://a/x.ovf"), AgentConfig("http://a/y.ovf")))
    assert not is_upgrade(two, two.with_(agent_configs=tuple(reversed(two.agent_configs))))
    assert is_upgrade(two, two.with_(agent_configs=(AgentConfig("http://a/z.ovf"),)))


def test_summary_labels_name_the_spec_keys_and_ignore_order() -> None:
    seen = ObservedAgency(
        "hello", "http://a/x.ovf", "hello", ("/DC0/host/C1", "/DC0/host/C0"), datastores=("b", "a")
    )
    want = dataclasses.replace(seen, scope=("/DC0/host/C0", "/DC0/host/C1"), datastores=("a", "b"))
    assert summary_changes(seen, want) == ()
    assert summary_changes(seen, dataclasses.replace(want, agent_name="agent", folder="/DC0/vm/x")) == (
        "agentName",
        "folder",
    )
    assert summary_changes(seen, dataclasses.replace(want, ovf_url="http://a/y.ovf")) == ()
