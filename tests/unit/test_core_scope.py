"""``core.scope``: an agency's scope and placement resolved against an inventory snapshot, with no I/O.

The inventories are generated (clusters with hosts, standalone hosts with their compute resource); what each
scope entry stands for is known from how the world was built, not asked of the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.scope import resolve_agency, resolve_scope, scope_host
from agentvm.model.agency import MoRef
from agentvm.model.desired import AgencySpec, OvfSource, Placement, ScopeEntry
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.inventory import (
    Cluster,
    ComputeResource,
    Datacenter,
    Datastore,
    Host,
    InventorySnapshot,
    Network,
)

DC = MoRef("Datacenter", "datacenter-2")
DS = MoRef("Datastore", "datastore-1")
NET = MoRef("Network", "network-7")


@dataclass(frozen=True)
class World:
    """A generated inventory and, per compute resource moid, the words that name it and its host paths."""

    snapshot: InventorySnapshot
    words: dict[str, tuple[str, ...]]  # resource moid -> entries that name it (path, name, moid, host name)
    host_paths: dict[str, tuple[str, ...]]  # resource moid -> its hosts' paths, in inventory order
    clustered_hosts: tuple[str, ...]  # names of hosts in a cluster (a scope entry must not name them)


def world(cluster_sizes: list[int], standalone: int, hidden: frozenset[int] = frozenset()) -> World:
    """Clusters C0.. with ``cluster_sizes`` hosts, ``standalone`` hosts esx-s0.. each in compute resource
    S0..; the hosts numbered in ``hidden`` (in creation order) see no datastore."""
    clusters, resources, hosts = [], [], []
    words: dict[str, tuple[str, ...]] = {}
    host_paths: dict[str, tuple[str, ...]] = {}
    clustered: list[str] = []

    def add_host(name: str, path: str, parent: MoRef, cluster: MoRef | None) -> MoRef:
        ref = MoRef("HostSystem", f"host-{len(hosts) + 10}")
        visible = () if len(hosts) in hidden else (DS,)
        hosts.append(
            Host(
                ref,
                name,
                path,
                datacenter=DC,
                parent=parent,
                cluster=cluster,
                datastores=visible,
                networks=(NET,),
            )
        )
        return ref

    for c, size in enumerate(cluster_sizes):
        cref = MoRef("ClusterComputeResource", f"domain-c{c + 7}")
        path = f"/DC0/host/C{c}"
        members, paths = [], []
        for h in range(size):
            name = f"C{c}_H{h}"
            members.append(add_host(name, f"{path}/{name}", cref, cref))
            paths.append(f"{path}/{name}")
            clustered.append(name)
        clusters.append(Cluster(cref, f"C{c}", path, datacenter=DC, hosts=tuple(members)))
        words[cref.value] = (path, f"C{c}", cref.value, f"host/C{c}")
        host_paths[cref.value] = tuple(paths)
    for s in range(standalone):
        sref = MoRef("ComputeResource", f"domain-s{s + 20}")
        path = f"/DC0/host/S{s}"
        name = f"esx-s{s}"
        href = add_host(name, f"{path}/{name}", sref, None)
        resources.append(ComputeResource(sref, f"S{s}", path, datacenter=DC, hosts=(href,)))
        words[sref.value] = (path, f"S{s}", sref.value, name)  # a host's name stands for its resource
        host_paths[sref.value] = (f"{path}/{name}",)
    snapshot = InventorySnapshot(
        datacenters=(Datacenter(DC, "DC0", "/DC0"),),
        clusters=tuple(clusters),
        compute_resources=tuple(resources),
        hosts=tuple(hosts),
        datastores=(Datastore(DS, "LocalDS_0", "/DC0/datastore/LocalDS_0", datacenter=DC),),
        networks=(Network(NET, "VM Network", "/DC0/network/VM Network", datacenter=DC),),
    )
    return World(snapshot, words, host_paths, tuple(clustered))


def agency(entries: list[str]) -> AgencySpec:
    return AgencySpec(
        name="contrail",
        agent_name="contrail-vm",
        ovf=OvfSource("http://127.0.0.1:8000/contrail-vm.ovf"),
        scope=tuple(ScopeEntry(e) for e in entries),
        datastore=Placement(default="LocalDS_0"),
        network=Placement(default="VM Network"),
    )


worlds = st.builds(
    world, st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=3), st.integers(0, 2)
)


@st.composite
def scopes(draw: st.DrawFn) -> tuple[World, list[str], list[str]]:
    """A world, scope entries naming some of its resources in any form (repeats allowed), and the moids of
    the resources they name in first-named order."""
    w = draw(worlds)
    moids = draw(st.lists(st.sampled_from(sorted(w.words)), min_size=1, max_size=6))
    entries = [draw(st.sampled_from(w.words[m])) for m in moids]
    return w, entries, list(dict.fromkeys(moids))


@settings(max_examples=60)
@given(scopes())
def test_the_scope_is_the_named_resources_in_spec_order_without_repeats(
    case: tuple[World, list[str], list[str]],
) -> None:
    w, entries, expected = case
    resources = resolve_scope(w.snapshot, [ScopeEntry(e) for e in entries], "contrail")
    assert [r.moref.value for r in resources] == expected


@settings(max_examples=60)
@given(scopes())
def test_a_resolved_agency_has_every_host_of_its_scope_and_the_config_names_the_scope(
    case: tuple[World, list[str], list[str]],
) -> None:
    w, entries, expected = case
    resolved = resolve_agency(agency(entries), w.snapshot)
    assert [h.path for h in resolved.hosts] == [p for m in expected for p in w.host_paths[m]]
    assert [ref.value for ref in resolved.config.scope] == expected
    assert resolved.config.agent_vm_datastores == (DS,) and resolved.config.agent_vm_networks == (NET,)
    assert resolved.config.agency_name == "contrail" and resolved.config.agent_name == "contrail-vm"
    # every resource is remembered by the first entry that named it (for messages in the spec's words)
    first = {}
    for moid, entry in zip([_moid_of(w, e) for e in entries], entries, strict=True):
        first.setdefault(moid, entry)
    assert {m: resolved.words[m] for m in expected} == first
    assert resolved.words[DS.value] == "LocalDS_0" and resolved.words[NET.value] == "VM Network"
    for h in resolved.hosts:
        assert resolved.host(h.moid) == h
    assert resolved.host("host-0") is None


def _moid_of(w: World, entry: str) -> str:
    return next(m for m, words in w.words.items() if entry in words)


@settings(max_examples=40)
@given(worlds)
def test_a_glob_stands_for_every_cluster_and_compute_resource(w: World) -> None:
    resources = resolve_scope(w.snapshot, [ScopeEntry("/DC0/host/*")], "contrail")
    assert sorted(r.moref.value for r in resources) == sorted(w.words)


@settings(max_examples=40)
@given(worlds.filter(lambda w: bool(w.clustered_hosts)), st.data())
def test_a_clustered_host_in_the_scope_is_refused_naming_its_cluster(w: World, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(w.clustered_hosts))
    cluster = name.split("_")[0]
    with pytest.raises(ConfigurationError) as caught:
        resolve_scope(w.snapshot, [ScopeEntry(name)], "contrail")
    message = str(caught.value)
    assert message.startswith(f'agency "contrail": scope entry {name} is host')
    assert f"name the cluster /DC0/host/{cluster} instead" in message


@settings(max_examples=40)
@given(worlds, st.sampled_from(["/DC0/host/C9", "nothere", "domain-c999"]))
def test_an_entry_naming_nothing_is_refused_naming_the_agency_and_the_entry(w: World, entry: str) -> None:
    with pytest.raises(NotFoundError, match=f'^agency "contrail": scope entry {entry}: '):
        resolve_scope(w.snapshot, [ScopeEntry(entry)], "contrail")


def test_a_host_that_cannot_see_the_datastore_is_named_with_the_fix() -> None:
    w = world([2, 2], 0, hidden=frozenset({3}))
    with pytest.raises(ConfigurationError) as caught:
        resolve_agency(agency(["C0", "C1"]), w.snapshot)
    message = str(caught.value)
    assert "C1_H1" in message and "cannot see datastore 'LocalDS_0'" in message
    assert "give this host its own datastore in the spec" in message
    # the same scope without that cluster resolves
    assert [h.name for h in resolve_agency(agency(["C0"]), w.snapshot).hosts] == ["C0_H0", "C0_H1"]


def test_an_unknown_datastore_lists_the_known_ones_and_the_closest() -> None:
    w = world([1], 0)
    spec = AgencySpec(
        name="contrail",
        agent_name="contrail-vm",
        ovf=OvfSource("http://127.0.0.1:8000/contrail-vm.ovf"),
        scope=(ScopeEntry("C0"),),
        datastore=Placement(default="LocalDS_1"),
    )
    with pytest.raises(NotFoundError) as caught:
        resolve_agency(spec, w.snapshot)
    message = str(caught.value)
    assert "no datastore 'LocalDS_1'" in message and "known: LocalDS_0" in message
    assert "did you mean LocalDS_0" in message


def test_host_settings_name_no_datastore_and_no_network_and_ask_eam_to_prefer_them() -> None:
    w = world([2], 0, hidden=frozenset({0}))  # a host without datastores is the host settings' business
    spec = AgencySpec(
        name="contrail",
        agent_name="contrail-vm",
        ovf=OvfSource("http://127.0.0.1:8000/contrail-vm.ovf"),
        scope=(ScopeEntry("C0"),),
        datastore=Placement(use_host_settings=True),
        network=Placement(use_host_settings=True),
    )
    config = resolve_agency(spec, w.snapshot).config
    assert config.agent_vm_datastores == () and config.agent_vm_networks == ()
    assert config.prefer_host_configuration


def test_scope_host_names_the_cluster_of_a_clustered_host_and_none_for_a_standalone_one() -> None:
    w = world([1], 1)
    clustered, standalone = w.snapshot.hosts
    one = scope_host(w.snapshot, clustered)
    assert (one.moid, one.name, one.path) == ("host-10", "C0_H0", "/DC0/host/C0/C0_H0")
    assert (one.cluster_moid, one.cluster_path, one.cluster_name) == ("domain-c7", "/DC0/host/C0", "C0")
    other = scope_host(w.snapshot, standalone)
    assert (other.moid, other.path) == ("host-11", "/DC0/host/S0/esx-s0")
    assert (other.cluster_moid, other.cluster_path, other.cluster_name) == (None, None, None)
