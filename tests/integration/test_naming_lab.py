"""Objects named as govc names them, on the lab: every form of a cluster's name plans the same hosts.

A scope entry may be the absolute inventory path, the path under the datacenter, the bare name, a glob or
the moid with or without its type; ``agentvm inventory`` shows the moid of every object so one can be
copied from it. The moids are read with pyVmomi, not with agentvm's own inventory reader.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from pyVmomi import vim

from agentvm.lab.world import Lab
from tests.support.cli_lab import TIMEOUT, World, connect, contrail_text, ok
from tests.support.terminal import tmux_screen

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def world(cli_world_per_module: World) -> World:
    """One lab for the module (tests/integration/conftest.py): these tests only plan and read."""
    return cli_world_per_module


BOTH = "      - /DC0/host/DC0_C0\n      - /DC0/host/DC0_C1\n"


def moids(world: World, kind: type) -> dict[str, str]:
    """name -> moid of every object of ``kind``, straight from vCenter."""
    content = world.session.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return {obj.name: obj._moId for obj in view.view}
    finally:
        view.DestroyView()


def planned_hosts(world: World, *entries: str) -> list[str]:
    """The hosts ``plan --json`` gives addresses to, for a spec whose scope is ``entries``."""
    scope = "".join(f"      - {json.dumps(e)}\n" for e in entries)
    spec = world.spec(f"scope{abs(hash(entries))}.yaml", contrail_text(**{BOTH: scope}))
    planned = json.loads(ok(world.run("plan", "-f", str(spec), "--json")))
    return sorted(planned["addresses"]["contrail"])


def test_every_form_of_a_cluster_plans_the_same_hosts(world: World) -> None:
    c0 = moids(world, vim.ClusterComputeResource)["DC0_C0"]
    reference = planned_hosts(world, "/DC0/host/DC0_C0")
    assert len(reference) == 3
    for form in ("host/DC0_C0", "DC0_C0", c0, f"ClusterComputeResource:{c0}", "/DC0/host/DC0_C0/"):
        assert planned_hosts(world, form) == reference, form


def test_a_glob_scope_plans_every_cluster_it_matches(world: World) -> None:
    both = planned_hosts(world, "/DC0/host/DC0_C0", "/DC0/host/DC0_C1")
    assert len(both) == 6
    assert planned_hosts(world, "/DC0/host/*") == both
    assert planned_hosts(world, "DC0_C*") == both


def test_a_glob_that_matches_nothing_stops_the_plan(world: World) -> None:
    spec = world.spec("none.yaml", contrail_text(**{BOTH: '      - "/DC0/host/EDGE*"\n'}))
    result = world.run("plan", "-f", str(spec))
    assert result.exit_code == 2
    assert "'/DC0/host/EDGE*' matches no cluster or compute resource" in result.stderr
    world.nothing_changed()


def test_inventory_shows_the_moid_of_every_object(world: World) -> None:
    out = ok(world.run("inventory"))
    for kind in (vim.ClusterComputeResource, vim.Datastore, vim.Network, vim.HostSystem, vim.Datacenter):
        found = moids(world, kind)
        assert found, kind
        for name, moid in found.items():
            line = next((row for row in out.splitlines() if f" {moid} " in f" {row} "), None)
            assert line is not None and name in line, (kind, name, moid)


def test_datastore_and_network_take_every_form_too(world: World) -> None:
    ds = moids(world, vim.Datastore)["LocalDS_0"]
    net = moids(world, vim.Network)["VM Network"]
    reference = planned_hosts(world, "/DC0/host/DC0_C0", "/DC0/host/DC0_C1")
    forms = [
        ("datastore/LocalDS_0", "network/VM Network"),
        ("/DC0/datastore/LocalDS_0", "/DC0/network/VM Network"),
        (ds, net),
        (f"Datastore:{ds}", f"Network:{net}"),
        ("LocalDS_*", "VM Net*"),
    ]
    for datastore, network in forms:
        text = contrail_text(
            **{
                "datastore: LocalDS_0": f"datastore: {json.dumps(datastore)}",
                "network: VM Network": f"network: {json.dumps(network)}",
            }
        )
        spec = world.spec("placement.yaml", text)
        planned = json.loads(ok(world.run("plan", "-f", str(spec), "--json")))
        assert sorted(planned["addresses"]["contrail"]) == reference, (datastore, network)


def test_an_unknown_datastore_says_which_one_it_may_be(world: World) -> None:
    spec = world.spec("typo.yaml", contrail_text(**{"datastore: LocalDS_0": "datastore: LocalDS_9"}))
    result = world.run("plan", "-f", str(spec))
    assert result.exit_code == 2
    assert "no datastore 'LocalDS_9'" in result.stderr and "did you mean LocalDS_0?" in result.stderr


def test_inventory_json_gives_every_object_its_moid(world: World) -> None:
    data = json.loads(ok(world.run("inventory", "--json")))
    got = {(o["kind"], o["path"].rsplit("/", 1)[1], o["moid"]) for o in data["objects"]}
    for kind, vim_kind in (("cluster", vim.ClusterComputeResource), ("datastore", vim.Datastore)):
        for name, moid in moids(world, vim_kind).items():
            assert (kind, name, moid) in got
    assert {h["moid"] for h in data["hosts"]} == set(moids(world, vim.HostSystem).values())


def test_inventory_at_80_columns_cuts_no_name_moid_or_state(world: World) -> None:
    """In a real 80x24 terminal (piped output is not wrapped at all: COLUMNS applies to a terminal)."""
    info = world.info.vcsim
    env = {
        **os.environ,
        "AGENTVM_URL": info.url,
        "AGENTVM_USERNAME": info.username,
        "AGENTVM_PASSWORD": info.password,
        "AGENTVM_THUMBPRINT": info.thumbprint,
    }
    screen = tmux_screen([sys.executable, "-m", "agentvm.cli.main", "inventory"], env, width=80, height=24)
    lines = screen.splitlines()
    assert max(map(len, lines)) <= 80
    for kind in (vim.ClusterComputeResource, vim.Datastore, vim.Network, vim.HostSystem):
        for name, moid in moids(world, kind).items():
            assert any(f" {moid} " in f" {row} " and f" {name} " in f" {row} " for row in lines), (name, moid)
    assert "connected" in screen and "…" not in screen


def test_apply_sets_host_settings_from_a_relative_datastore_and_network(tmp_path: Path) -> None:
    """The host AgentVM settings apply writes come from the same matching as the plan (not exact words)."""
    lab = Lab()
    info = lab.start()
    session = connect(info)
    try:
        world = World(lab, info, session, tmp_path)
        text = contrail_text(
            **{
                BOTH: "      - host/DC0_C0\n",
                "datastore: LocalDS_0": "datastore: datastore/LocalDS_0",
                "network: VM Network": 'network: {"*": "VM Net*"}',
            }
        )
        spec = world.spec(text=text)
        ok(world.run("apply", "-f", str(spec), "--timeout", TIMEOUT))
        ds = moids(world, vim.Datastore)["LocalDS_0"]
        net = moids(world, vim.Network)["VM Network"]
        content = session.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        try:
            settings = {
                h.name: h.configManager.esxAgentHostManager.configInfo
                for h in view.view
                if h.parent.name == "DC0_C0"
            }
        finally:
            view.DestroyView()
        assert len(settings) == 3
        for name, config in settings.items():
            assert config.agentVmDatastore is not None and config.agentVmDatastore._moId == ds, name
            assert config.agentVmNetwork is not None and config.agentVmNetwork._moId == net, name
    finally:
        session.logout()
        lab.stop()
