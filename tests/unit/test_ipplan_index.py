"""``core.ipplan.HostIndex`` finds the hosts an ``ipPlan.addresses`` key names by lookup: it must name exactly
the hosts that matching the key against every host names, in the same order, for every form of key."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from agentvm.core.ipplan import HostIndex, _names, _static_for, assign_addresses
from agentvm.model import names
from agentvm.model.agency import MoRef
from agentvm.model.desired import IpPlanSpec, ScopeHost

# few distinct words, so that names, paths and moids collide between hosts and with each other
WORDS = st.sampled_from(["H0", "H1", "H10", "host-1", "C0", "x:y", "a b"])


@st.composite
def scope_hosts(draw: st.DrawFn) -> list[ScopeHost]:
    hosts = []
    for i in range(draw(st.integers(0, 8))):
        dc = draw(st.sampled_from(["DC0", "DC1", "DC0/sub"]))
        cluster = draw(st.sampled_from(["C0", "C1", "host-1"]))
        name = draw(WORDS)
        path = draw(st.sampled_from([f"/{dc}/host/{cluster}/{name}", "", f"/{dc}/{name}"]))
        moid = draw(st.sampled_from([f"host-{i}", "host-1", name]))
        hosts.append(ScopeHost(moid=moid, name=name, path=path, cluster_name=cluster))
    return hosts


@st.composite
def keys(draw: st.DrawFn, hosts: list[ScopeHost]) -> str:
    words = [w for h in hosts for w in (h.moid, h.name, h.path, names.relative_path(h.path)) if w]
    base = draw(st.sampled_from(words) if words else WORDS)
    form = draw(st.sampled_from(["as is", "typed", "typed other", "trailing slash", "glob", "text"]))
    if form == "typed":
        return f"HostSystem:{base}"
    if form == "typed other":
        return f"ClusterComputeResource:{base}"
    if form == "trailing slash":
        return f"{base}/"
    if form == "glob":
        return base[:-1] + "*" if base else "*"
    if form == "text":
        return draw(st.text(alphabet="/:*?H01-host ", max_size=12))
    return base


@given(st.data())
def test_the_index_names_what_matching_every_host_names(data: st.DataObject) -> None:
    hosts = data.draw(scope_hosts())
    key = data.draw(keys(hosts))
    assert HostIndex(hosts).named(key) == [h for h in hosts if _names(key, h)]


@given(st.data())
def test_static_entries_are_those_a_scan_of_every_entry_finds(data: st.DataObject) -> None:
    hosts = data.draw(scope_hosts())
    entries = data.draw(st.lists(keys(hosts), max_size=6))
    plan = IpPlanSpec(
        network=IPv4Network("10.0.0.0/24"),
        static=tuple((key, IPv4Address("10.0.0.100") + i) for i, key in enumerate(entries)),
    )
    scan = {}  # the rule, written out: per host the most exact entry naming it, then the first of those
    for host in hosts:
        named = [
            (names.specificity(names.parse(key), names.NamedRef(_ref(host), host.name, host.path)), i)
            for i, (key, _) in enumerate(plan.static)
            if _names(key, host)
        ]
        if named:
            scan[host.moid] = plan.static[min(named)[1]][1]
    assert _static_for(plan, hosts) == scan


def test_an_entry_per_host_gives_each_host_its_own_address() -> None:
    hosts = [
        ScopeHost(
            moid=f"host-{i}", name=f"H{i}", path=f"/DC0/host/C{i // 10}/H{i}", cluster_name=f"C{i // 10}"
        )
        for i in range(300)
    ]
    plan = IpPlanSpec(
        network=IPv4Network("10.0.0.0/20"),
        static=tuple((f"H{i}", IPv4Address("10.0.1.0") + i) for i in range(300)),
    )
    got = {a.host.moid: a.address for a in assign_addresses(plan, hosts).addresses}
    assert got == {f"host-{i}": IPv4Address(f"10.0.{1 + i // 256}.{i % 256}") for i in range(300)}


def _ref(host: ScopeHost) -> MoRef:
    return MoRef("HostSystem", host.moid)
