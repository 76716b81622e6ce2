"""``model.names``: every form govc takes names the same object; ambiguity and no match name the reference.

The inventory is generated (datacenters, clusters, hosts with names that may repeat across datacenters), so
each property is checked on shapes nobody wrote by hand. Expected objects come from the generated shape
(the paths we built), never from the resolver.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.model.agency import MoRef
from agentvm.model.desired import Placement, ScopeHost
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.inventory import Cluster, Datacenter, Host, InventorySnapshot


@dataclass(frozen=True)
class Shape:
    snapshot: InventorySnapshot
    clusters: dict[str, Cluster]  # path -> cluster, as built


cluster_names = st.lists(
    st.sampled_from(["C0", "C1", "C2", "edge", "C10"]), min_size=1, max_size=3, unique=True
)


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    dcs = draw(st.lists(st.sampled_from(["DC0", "DC1", "lab"]), min_size=1, max_size=2, unique=True))
    datacenters, clusters, hosts = [], [], []
    n = 0
    for dc in dcs:
        dc_ref = MoRef("Datacenter", f"datacenter-{len(datacenters) + 1}")
        datacenters.append(Datacenter(dc_ref, dc, f"/{dc}"))
        for name in draw(cluster_names):
            n += 1
            ref = MoRef("ClusterComputeResource", f"domain-c{n}")
            members = []
            for i in range(draw(st.integers(1, 3))):
                n += 1
                h = Host(MoRef("HostSystem", f"host-{n}"), f"{name}_H{i}", f"/{dc}/host/{name}/{name}_H{i}")
                hosts.append(Host(h.moref, h.name, h.path, datacenter=dc_ref, parent=ref, cluster=ref))
                members.append(h.moref)
            clusters.append(Cluster(ref, name, f"/{dc}/host/{name}", datacenter=dc_ref, hosts=tuple(members)))
    snap = InventorySnapshot(datacenters=tuple(datacenters), clusters=tuple(clusters), hosts=tuple(hosts))
    return Shape(snap, {c.path: c for c in clusters})


@settings(max_examples=40)
@given(shapes(), st.data())
def test_every_form_of_a_name_finds_the_object(shape: Shape, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(shape.clusters)))
    cluster = shape.clusters[path]
    rel = path[1:].partition("/")[2]
    forms = [path, path + "/", cluster.moref.value, f"ClusterComputeResource:{cluster.moref.value}"]
    if len(shape.snapshot.datacenters) == 1 or sum(p.endswith("/" + rel) for p in shape.clusters) == 1:
        forms.append(rel)  # host/C0: unique under the datacenters
    if sum(c.name == cluster.name for c in shape.clusters.values()) == 1:
        forms.append(cluster.name)
    for form in forms:
        assert shape.snapshot.find_cluster(form) == cluster, form


@settings(max_examples=40)
@given(shapes())
def test_a_shared_bare_name_is_ambiguous_and_lists_every_path(shape: Shape) -> None:
    by_name: dict[str, list[str]] = {}
    for p, c in shape.clusters.items():
        by_name.setdefault(c.name, []).append(p)
    for name, paths in by_name.items():
        if len(paths) < 2:
            continue
        with pytest.raises(NotFoundError) as caught:
            shape.snapshot.find_cluster(name)
        message = str(caught.value)
        assert f"'{name}' is ambiguous" in message
        assert all(p in message for p in paths)
        # a relative path is just as ambiguous across datacenters; the absolute one is not
        with pytest.raises(NotFoundError, match="ambiguous"):
            shape.snapshot.find_cluster(f"host/{name}")
        assert shape.snapshot.find_cluster(paths[0]).path == paths[0]


@settings(max_examples=40)
@given(shapes())
def test_globs_match_path_elements_like_govc(shape: Shape) -> None:
    snap = shape.snapshot
    for dc in snap.datacenters:
        want = sorted(p for p in shape.clusters if p.startswith(dc.path + "/"))
        got = snap.resolve(f"{dc.path}/host/*", snap.clusters, "cluster")
        assert sorted(c.path for c in got) == want  # hosts (one element deeper) are not matched
        hosts = snap.resolve(f"{dc.path}/host/*/*", snap.hosts, "host")
        assert {h.path for h in hosts} == {h.path for h in snap.hosts if h.path.startswith(dc.path + "/")}
    by_name = {p for p, c in shape.clusters.items() if c.name.startswith("C")}
    if by_name:
        assert {c.path for c in snap.resolve("C*", snap.clusters, "cluster")} == by_name
    else:
        with pytest.raises(NotFoundError):
            snap.resolve("C*", snap.clusters, "cluster")


@settings(max_examples=30)
@given(shapes(), st.sampled_from(["/nowhere/host/*", "zz*", "host/zz?"]))
def test_a_glob_that_matches_nothing_is_an_error_naming_it(shape: Shape, pattern: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        shape.snapshot.resolve(pattern, shape.snapshot.clusters, "cluster")
    assert f"the pattern '{pattern}' matches no cluster" in str(caught.value)


@settings(max_examples=30)
@given(shapes(), st.data())
def test_a_typo_names_the_reference_and_suggests_the_real_one(shape: Shape, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(shape.clusters)))
    typo = path[:-1] + ("X" if path[-1] != "X" else "Y")
    with pytest.raises(NotFoundError) as caught:
        shape.snapshot.find_cluster(typo)
    message = str(caught.value)
    assert f"no cluster '{typo}'" in message
    assert "did you mean" in message and path in message.split("did you mean")[1]


def test_a_typed_moid_of_the_wrong_type_says_what_it_is() -> None:
    dc = MoRef("Datacenter", "datacenter-2")
    c = Cluster(MoRef("ClusterComputeResource", "domain-c7"), "C0", "/DC0/host/C0", datacenter=dc)
    snap = InventorySnapshot(datacenters=(Datacenter(dc, "DC0", "/DC0"),), clusters=(c,))
    with pytest.raises(NotFoundError) as caught:
        snap.resolve("ComputeResource:domain-c7", snap.clusters, "cluster")
    assert str(caught.value).startswith(
        "'ComputeResource:domain-c7': domain-c7 is a ClusterComputeResource (/DC0/host/C0), "
        "not a ComputeResource"
    )


def scope_host(i: int, cluster: str = "DC0_C0") -> ScopeHost:
    return ScopeHost(
        moid=f"host-{20 + i}",
        name=f"{cluster}_H{i}",
        path=f"/DC0/host/{cluster}/{cluster}_H{i}",
        cluster_moid="domain-c7",
        cluster_path=f"/DC0/host/{cluster}",
        cluster_name=cluster,
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("host/DC0_C0/DC0_C0_H1", ["other", "mine", "other"]),
        ("HostSystem:host-21", ["other", "mine", "other"]),
        ("DC0_C0", ["mine", "mine", "mine"]),
        ("host/DC0_C0", ["mine", "mine", "mine"]),
        ("/DC0/host/DC0_C*", ["mine", "mine", "mine"]),
        ("DC0_C0_H[02]", ["mine", "other", "mine"]),
    ],
)
def test_placement_keys_take_every_form(key: str, expected: list[str]) -> None:
    placement = Placement(default="other", by_target=((key, "mine"),))
    assert [placement.for_host(scope_host(i)) for i in range(3)] == expected


def test_the_most_exact_placement_key_wins() -> None:
    placement = Placement(
        by_target=(("DC0_C0_H*", "glob"), ("/DC0/host/DC0_C0/DC0_C0_H1", "path"), ("DC0_C0", "c"))
    )
    assert [placement.for_host(scope_host(i)) for i in range(3)] == ["glob", "path", "glob"]
