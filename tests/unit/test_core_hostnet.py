"""Properties of ``core.hostnet``: Nova's VLAN checks on every host, agentvm touching only what it created,
a plan that converges in one apply, and a teardown that removes exactly what agentvm made."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvm.core.hostnet import (
    CreateDvPortGroup,
    CreatePortGroup,
    CreateVSwitch,
    DestroyDvPortGroup,
    HostNetPlan,
    JoinDvs,
    LeaveDvs,
    NetChange,
    RemovePortGroup,
    RemoveVSwitch,
    RepairDvPortGroup,
    RepairPortGroup,
    plan_host_network,
    plan_teardown,
)
from agentvm.model.hostnet import (
    AgentNics,
    DvPortGroupState,
    DvsState,
    FabricSpec,
    HostNetworkOwned,
    HostNetworkSnapshot,
    HostNetworkSpec,
    HostNetworkState,
    PhysicalNic,
    ProxySwitch,
    SecurityPolicy,
    StandardPortGroup,
    TrunkSpec,
    VSwitch,
)

NICS = ["vmnic0", "vmnic1", "vmnic2"]
SWITCHES = ["vSwitch0", "vSwitch1"]
GROUPS = ["contrail-fabric", "VM Network"]
DVS_NAME, DVS_KEY, DVS_UUID = "DSwitch0", "dvs-21", "50 1a"
TRUNK = "contrail-trunk"
# (pnic, vSwitch) of a drawn fabric: mostly a pair the usual host can have, sometimes not
FABRIC_PAIRS = [("vmnic1", "vSwitch1")] * 4 + [
    ("vmnic0", "vSwitch0"),
    ("vmnic2", "vSwitch1"),
    ("vmnic0", "vSwitch1"),
]

# -- a vSphere of our own: what each change does -------------------------------------------------------


def _host(snapshot: HostNetworkSnapshot, moid: str) -> HostNetworkState:
    found = snapshot.host(moid)
    assert found is not None
    return found


def _with_host(snapshot: HostNetworkSnapshot, host: HostNetworkState) -> HostNetworkSnapshot:
    return replace(snapshot, hosts=tuple(host if h.moid == host.moid else h for h in snapshot.hosts))


def _with_dvs(snapshot: HostNetworkSnapshot, dvs: DvsState) -> HostNetworkSnapshot:
    return replace(snapshot, dvses=tuple(dvs if d.key == dvs.key else d for d in snapshot.dvses))


def _dvs(snapshot: HostNetworkSnapshot, key: str) -> DvsState:
    return next(d for d in snapshot.dvses if d.key == key)


def apply_change(snapshot: HostNetworkSnapshot, change: NetChange) -> HostNetworkSnapshot:
    if isinstance(change, CreateVSwitch):
        h = _host(snapshot, change.host)
        assert all(v.name != change.name for v in h.vswitches), "created over an existing vSwitch"
        assert all(change.pnic not in v.pnics for v in h.vswitches), "a NIC bound twice"
        return _with_host(
            snapshot, replace(h, vswitches=(*h.vswitches, VSwitch(change.name, (change.pnic,))))
        )
    if isinstance(change, CreatePortGroup | RepairPortGroup):
        h = _host(snapshot, change.host)
        exists = any(g.name == change.name for g in h.port_groups)
        assert exists == isinstance(change, RepairPortGroup), "created over an existing port group"
        group = StandardPortGroup(change.name, change.vswitch, change.vlan, change.security)
        groups = (*(g for g in h.port_groups if g.name != change.name), group)
        switches = tuple(
            replace(v, port_groups=tuple(dict.fromkeys((*v.port_groups, change.name))))
            if v.name == change.vswitch
            else v
            for v in h.vswitches
        )
        assert any(v.name == change.vswitch for v in h.vswitches), "a port group on no vSwitch"
        return _with_host(snapshot, replace(h, port_groups=groups, vswitches=switches))
    if isinstance(change, JoinDvs):
        h, d = _host(snapshot, change.host), _dvs(snapshot, change.dvs)
        assert h.moid not in d.hosts
        h = replace(h, proxy_switches=(*h.proxy_switches, ProxySwitch(d.uuid, d.name, (change.uplink,))))
        return _with_dvs(_with_host(snapshot, h), replace(d, hosts=d.hosts | {h.moid}))
    if isinstance(change, CreateDvPortGroup | RepairDvPortGroup):
        if isinstance(change, RepairDvPortGroup):
            key = change.key
            d = next(d for d in snapshot.dvses if any(g.key == key for g in d.port_groups))
        else:
            key, d = f"dvportgroup-{change.name}", _dvs(snapshot, change.dvs)
            assert all(g.name != change.name for g in d.port_groups), "created over an existing DV port group"
        group = DvPortGroupState(
            key, change.name, d.key, change.vlans, change.security, "Managed by agentvm", True
        )
        kept = tuple(g for g in d.port_groups if g.key != key)
        return _with_dvs(snapshot, replace(d, port_groups=(*kept, group)))
    if isinstance(change, RemovePortGroup):
        h = _host(snapshot, change.host)
        switches = tuple(
            replace(v, port_groups=tuple(g for g in v.port_groups if g != change.name)) for v in h.vswitches
        )
        groups = tuple(g for g in h.port_groups if g.name != change.name)
        return _with_host(snapshot, replace(h, port_groups=groups, vswitches=switches))
    if isinstance(change, RemoveVSwitch):
        h = _host(snapshot, change.host)
        assert not next(v for v in h.vswitches if v.name == change.name).port_groups, "removed a busy vSwitch"
        return _with_host(
            snapshot, replace(h, vswitches=tuple(v for v in h.vswitches if v.name != change.name))
        )
    if isinstance(change, LeaveDvs):
        h, d = _host(snapshot, change.host), _dvs(snapshot, change.dvs)
        h = replace(h, proxy_switches=tuple(p for p in h.proxy_switches if p.dvs_uuid != d.uuid))
        return _with_dvs(_with_host(snapshot, h), replace(d, hosts=d.hosts - {h.moid}))
    assert isinstance(change, DestroyDvPortGroup)
    return replace(
        snapshot,
        dvses=tuple(
            replace(d, port_groups=tuple(g for g in d.port_groups if g.key != change.key))
            for d in snapshot.dvses
        ),
    )


def carry_out(snapshot: HostNetworkSnapshot, plan: HostNetPlan) -> HostNetworkSnapshot:
    for change in plan.changes:
        snapshot = apply_change(snapshot, change)
    for moid, owned in plan.owned.items():
        snapshot = _with_host(snapshot, replace(_host(snapshot, moid), owned=owned))
    return snapshot


# -- worlds --------------------------------------------------------------------------------------------------

security = st.builds(
    SecurityPolicy, st.sampled_from([None, True, False]), st.sampled_from([None, True, False])
)


@st.composite
def hosts(draw: st.DrawFn, index: int) -> HostNetworkState:
    """A host like vCenter's usually are (vmnic0 and vmnic1, vSwitch0 on vmnic0), or anything at all."""
    usual = draw(st.sampled_from([True, True, True, False]))
    if usual:
        nics = ["vmnic0", "vmnic1", *(["vmnic2"] if draw(st.booleans()) else [])]
        names = ["vSwitch0", *(["vSwitch1"] if draw(st.booleans()) else [])]
    else:
        nics = draw(st.lists(st.sampled_from(NICS), unique=True, max_size=3))
        names = draw(st.lists(st.sampled_from(SWITCHES), unique=True, max_size=2))
    free = list(nics)
    switches: list[VSwitch] = []
    for name in names:
        wanted = {"vSwitch0": "vmnic0", "vSwitch1": "vmnic1"}[name] if usual else None
        bound = [wanted] if wanted in free else [n for n in free if draw(st.booleans())][:1]
        free = [n for n in free if n not in bound]
        switches.append(VSwitch(name, tuple(bound)))
    groups: list[StandardPortGroup] = []
    if switches:
        for name in draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=2)):
            on = draw(st.sampled_from(switches)).name
            groups.append(StandardPortGroup(name, on, draw(st.sampled_from([0, 5, 7])), draw(security)))
    switches = [
        replace(v, port_groups=tuple(g.name for g in groups if g.vswitch == v.name)) for v in switches
    ]
    proxies: tuple[ProxySwitch, ...] = ()
    if draw(st.sampled_from([True, False, False])):
        uplink = [n for n in free if draw(st.booleans())][:1]
        proxies = (ProxySwitch(DVS_UUID, DVS_NAME, tuple(uplink)),)
    owned = HostNetworkOwned(
        vswitches=frozenset(draw(st.lists(st.sampled_from(SWITCHES), unique=True))),
        port_groups=frozenset(draw(st.lists(st.sampled_from(GROUPS), unique=True))),
        dvs_joined=frozenset([DVS_KEY]) if proxies and draw(st.booleans()) else frozenset(),
    )
    return HostNetworkState(
        moid=f"host-{index}",
        name=f"esx{index}",
        path=f"/DC0/host/C0/esx{index}",
        pnics=tuple(PhysicalNic(n) for n in nics),
        vswitches=tuple(switches),
        port_groups=tuple(groups),
        proxy_switches=proxies,
        owned=owned,
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[HostNetworkSpec, HostNetworkSnapshot, list[str]]:
    first = draw(hosts(0))
    members = [
        replace(first, moid=f"host-{i}", path=f"/DC0/host/C0/esx{i}")
        if draw(st.booleans())
        else draw(hosts(i))
        for i in range(draw(st.integers(1, 4)))
    ]
    dvses: tuple[DvsState, ...] = ()
    if draw(st.sampled_from([True] * 5 + [False])):
        groups: tuple[DvPortGroupState, ...] = ()
        if draw(st.booleans()):
            vlans = draw(st.sampled_from([((1, 4094),), ((10, 20),)]))
            owned = draw(st.booleans())
            groups = (DvPortGroupState("dvportgroup-9", TRUNK, DVS_KEY, vlans, draw(security), "", owned),)
        in_dvs = frozenset(h.moid for h in members if h.proxy_switches)
        dvses = (
            DvsState(DVS_KEY, DVS_NAME, DVS_UUID, "/DC0/network/DSwitch0", in_dvs, ("uplink1",), groups),
        )
    fabric = None
    if draw(st.integers(0, 4)) > 0:
        fabric = FabricSpec(
            pnic=(pair := draw(st.sampled_from(FABRIC_PAIRS)))[0],
            vswitch=pair[1],
            port_group="contrail-fabric",
            vlan=draw(st.sampled_from([0, 5])),
            create_vswitch=draw(st.sampled_from([True, True, False])),
            security=draw(security),
        )
    trunk = None
    if fabric is None or draw(st.booleans()):
        trunk = TrunkSpec(
            dvs=draw(st.sampled_from([DVS_NAME] * 4 + ["DSwitchX"])),
            port_group=TRUNK,
            vlans=draw(st.sampled_from([((1, 4094),), ((10, 20),)])),
            join=draw(st.sampled_from([True, True, True, False])),
            uplink=draw(st.sampled_from(["vmnic2"] * 3 + [None, *NICS])),
            security=draw(security),
        )
    spec = HostNetworkSpec(fabric, trunk, AgentNics("fabric-net", "trunk-net"))
    return spec, HostNetworkSnapshot(tuple(members), dvses), [h.moid for h in members]


def objects(snapshot: HostNetworkSnapshot) -> set[tuple[str, ...]]:
    """Every object as (kind, where, name): what a teardown may remove or must leave."""
    found: set[tuple[str, ...]] = set()
    for h in snapshot.hosts:
        found |= {("vswitch", h.moid, v.name) for v in h.vswitches}
        found |= {("portgroup", h.moid, g.name) for g in h.port_groups}
        found |= {("member", h.moid, p.dvs_uuid) for p in h.proxy_switches}
    for d in snapshot.dvses:
        found |= {("dvportgroup", d.key, g.name) for g in d.port_groups}
    return found


def owned_objects(snapshot: HostNetworkSnapshot) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for h in snapshot.hosts:
        found |= {("vswitch", h.moid, n) for n in h.owned.vswitches}
        found |= {("portgroup", h.moid, n) for n in h.owned.port_groups}
        found |= {("member", h.moid, DVS_UUID) for k in h.owned.dvs_joined if k == DVS_KEY}
    for d in snapshot.dvses:
        found |= {("dvportgroup", d.key, g.name) for g in d.port_groups if g.owned}
    return found


# -- properties ----------------------------------------------------------------------------------------------


def applied(case: tuple[HostNetworkSpec, HostNetworkSnapshot, list[str]]) -> HostNetworkSnapshot | None:
    """The world after its plan was carried out; None when the plan is blocked."""
    spec, snapshot, scope = case
    plan = plan_host_network(spec, snapshot, scope)
    return None if plan.blocked else carry_out(snapshot, plan)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_an_unblocked_plan_makes_every_host_right_in_one_apply(
    case: tuple[HostNetworkSpec, HostNetworkSnapshot, list[str]],
) -> None:
    spec, _, scope = case
    after = applied(case)  # asserts nothing is created over what exists
    if after is None:
        return
    again = plan_host_network(spec, after, scope)
    assert again.errors == () and again.changes == (), "a second apply would change something"
    assert again.owned == {}


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_only_what_agentvm_created_is_ever_changed(
    case: tuple[HostNetworkSpec, HostNetworkSnapshot, list[str]],
) -> None:
    spec, snapshot, scope = case
    plan = plan_host_network(spec, snapshot, scope)
    for change in plan.changes:
        if isinstance(change, RepairPortGroup):
            assert change.name in _host(snapshot, change.host).owned.port_groups
        if isinstance(change, RepairDvPortGroup):
            assert any(g.key == change.key and g.owned for d in snapshot.dvses for g in d.port_groups)
        if isinstance(change, JoinDvs):
            assert change.host not in _dvs(snapshot, change.dvs).hosts
    # every failed check names where (a host or the switch) and what to fix
    for error in plan.errors:
        assert error.startswith(("host-", "no distributed switch", "distributed switch")), error
        assert "fix" in error or "run again" in error, error


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_a_teardown_removes_exactly_what_agentvm_created(
    case: tuple[HostNetworkSpec, HostNetworkSnapshot, list[str]],
) -> None:
    spec, snapshot, scope = case
    after = applied(case)
    if after is None:
        return
    made = objects(after) - objects(snapshot)
    torn = carry_out(after, plan_teardown(spec, after, scope))

    assert not made & objects(torn), "something agentvm created is still there"
    foreign = objects(snapshot) - owned_objects(snapshot)
    assert foreign <= objects(torn), "something agentvm did not create was removed"
    assert plan_teardown(spec, torn, scope).changes == ()


# -- the messages --------------------------------------------------------------------------------------------


def _one_host(**changes: object) -> HostNetworkState:
    base = HostNetworkState(
        moid="host-21",
        name="DC0_C0_H0",
        path="/DC0/host/DC0_C0/DC0_C0_H0",
        pnics=(PhysicalNic("vmnic0"), PhysicalNic("vmnic1")),
        vswitches=(VSwitch("vSwitch0", ("vmnic0",), ("VM Network",)), VSwitch("vSwitch1", ("vmnic1",))),
        port_groups=(StandardPortGroup("VM Network", "vSwitch0", 0),),
    )
    return replace(base, **changes)


FABRIC = FabricSpec(pnic="vmnic1", vswitch="vSwitch1", port_group="contrail-fabric", vlan=0)


def _errors(host: HostNetworkState, fabric: FabricSpec = FABRIC) -> tuple[str, ...]:
    plan = plan_host_network(HostNetworkSpec(fabric=fabric), HostNetworkSnapshot((host,)), [host.moid])
    assert plan.blocked == bool(plan.errors)
    # the host's first failed check, as status shows it: the first message without the host's label
    expected = {host.moid: plan.errors[0].removeprefix(f"{host.label()}: ")} if plan.errors else {}
    assert plan.failed == expected
    return plan.errors


def test_each_nova_check_fails_with_one_line_naming_the_host_the_object_and_the_fix() -> None:
    label = "host-21 (/DC0/host/DC0_C0/DC0_C0_H0)"
    assert _errors(_one_host(pnics=(PhysicalNic("vmnic0"),))) == (
        f"{label}: no physical NIC vmnic1 (the host has vmnic0); fix hostNetwork.fabric.pnic",
    )
    assert _errors(
        _one_host(vswitches=(VSwitch("vSwitch0", ("vmnic0",)), VSwitch("vSwitch1", ("vmnic0",))))
    ) == (
        f"{label}: vSwitch vSwitch1 is bound to vmnic0, not vmnic1; fix hostNetwork.fabric.pnic or "
        "hostNetwork.fabric.vswitch",
    )
    elsewhere = (StandardPortGroup("contrail-fabric", "vSwitch0", 0),)
    assert _errors(_one_host(port_groups=elsewhere)) == (
        f"{label}: port group contrail-fabric is on vSwitch vSwitch0, not vSwitch1 (not agentvm's); fix "
        "hostNetwork.fabric.vswitch or hostNetwork.fabric.portGroup",
    )
    tagged = (StandardPortGroup("contrail-fabric", "vSwitch1", 7),)
    assert _errors(_one_host(port_groups=tagged)) == (
        f"{label}: port group contrail-fabric has VLAN 7, not VLAN 0 as asked, and is not agentvm's (agentvm "
        "changes only what it created); fix hostNetwork.fabric.vlan, or the port group",
    )
    assert _errors(_one_host(vswitches=(VSwitch("vSwitch0", ("vmnic0",)),))) == (
        f"{label}: no vSwitch vSwitch1; fix: create it bound to vmnic1, or set hostNetwork.fabric.create: "
        "true",
    )


def test_a_drifted_port_group_of_agentvms_is_repaired_and_one_that_is_right_is_left_alone() -> None:
    tagged = (StandardPortGroup("contrail-fabric", "vSwitch1", 7),)
    ours = HostNetworkOwned(port_groups=frozenset({"contrail-fabric"}))
    host = _one_host(port_groups=tagged, owned=ours)
    plan = plan_host_network(HostNetworkSpec(fabric=FABRIC), HostNetworkSnapshot((host,)), [host.moid])
    assert plan.changes == (
        RepairPortGroup("host-21", "contrail-fabric", "vSwitch1", 0, SecurityPolicy(), "VLAN 7"),
    )
    right = _one_host(port_groups=(StandardPortGroup("contrail-fabric", "vSwitch1", 0),))
    plan = plan_host_network(HostNetworkSpec(fabric=FABRIC), HostNetworkSnapshot((right,)), [right.moid])
    assert plan.changes == () and plan.errors == ()
    assert plan.right == (
        "host-21 (/DC0/host/DC0_C0/DC0_C0_H0): vSwitch vSwitch1 on vmnic1",
        "host-21 (/DC0/host/DC0_C0/DC0_C0_H0): port group contrail-fabric on vSwitch1, VLAN 0",
    )


def test_a_trunk_on_a_missing_switch_blocks_every_host() -> None:
    spec = HostNetworkSpec(trunk=TrunkSpec(dvs="DSwitch9", port_group=TRUNK))
    plan = plan_host_network(spec, HostNetworkSnapshot((_one_host(),)), ["host-21"])
    assert plan.blocked
    assert plan.errors == ("no distributed switch DSwitch9 (vCenter has none); fix hostNetwork.trunk.dvs",)


def test_a_teardown_leaves_what_is_not_agentvms_and_says_so() -> None:
    theirs = _one_host(port_groups=(StandardPortGroup("contrail-fabric", "vSwitch1", 0),))
    ours = _one_host(
        moid="host-22",
        path="/DC0/host/DC0_C0/DC0_C0_H1",
        vswitches=(VSwitch("vSwitch0", ("vmnic0",)), VSwitch("vSwitch1", ("vmnic1",), ("contrail-fabric",))),
        port_groups=(StandardPortGroup("contrail-fabric", "vSwitch1", 0),),
        owned=HostNetworkOwned(vswitches=frozenset({"vSwitch1"}), port_groups=frozenset({"contrail-fabric"})),
    )
    snapshot = HostNetworkSnapshot((theirs, ours))
    plan = plan_teardown(HostNetworkSpec(fabric=FABRIC), snapshot, ["host-21", "host-22"])

    assert plan.changes == (
        RemovePortGroup("host-22", "contrail-fabric"),
        RemoveVSwitch("host-22", "vSwitch1"),
    )
    assert plan.left == (
        "host-21 (/DC0/host/DC0_C0/DC0_C0_H0): port group contrail-fabric (not agentvm's)",
        "host-21 (/DC0/host/DC0_C0/DC0_C0_H0): vSwitch vSwitch1 (not agentvm's)",
    )
    assert plan.owned == {"host-22": HostNetworkOwned()}
