"""Bulk inventory reads against vcsim: content, paths, and the number of round trips."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import NotFoundError
from agentvm.model.inventory import NetworkKind
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

pytestmark = pytest.mark.lab


def login(info: VcsimInfo) -> Session:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    return Session.connect(conn)


def test_two_clusters_of_three_hosts_in_one_read_of_every_kind(vcsim: VcsimInfo) -> None:
    with login(vcsim) as session:
        before = session.stats.snapshot()
        inventory = read_inventory(session)
        calls = session.stats.snapshot() - before
    # one RetrievePropertiesEx for every kind together: folders, datacenters, compute resources, hosts, VMs,
    # networks, distributed switches, datastores, resource pools
    assert calls == {"CreateContainerView": 1, "RetrievePropertiesEx": 1, "DestroyView": 1}
    assert "Fetch" not in calls  # no attribute read, ever
    assert [c.path for c in inventory.clusters] == ["/DC0/host/DC0_C0", "/DC0/host/DC0_C1"]
    assert len(inventory.hosts) == 6
    host = inventory.find_host("/DC0/host/DC0_C0/DC0_C0_H0")
    cluster = inventory.find_cluster("DC0_C0")
    assert host.cluster == cluster.moref and host.parent == cluster.moref
    assert host.datacenter == inventory.datacenters[0].moref
    assert host.usable and not host.standby
    assert host.product_line_id and host.product_version
    assert host.esx_agent_host_manager is not None
    assert host.datastores and all(inventory.get(d) for d in host.datastores)
    assert host.describe() == f"{host.moref.value} (/DC0/host/DC0_C0/DC0_C0_H0)"
    assert inventory.hosts_of(cluster.moref) == tuple(
        h for h in inventory.hosts if h.cluster == cluster.moref
    )
    distributed = [n for n in inventory.networks if n.kind is NetworkKind.DISTRIBUTED]
    assert distributed and all(n.dvs_uuid == inventory.dvswitches[0].uuid for n in distributed)
    assert {rp.path for rp in inventory.resource_pools} == {
        "/DC0/host/DC0_C0/Resources",
        "/DC0/host/DC0_C1/Resources",
    }
    assert [d.path for d in inventory.datastores] == ["/DC0/datastore/LocalDS_0"]


def test_round_trips_do_not_grow_with_the_inventory(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(clusters=3, hosts=8, standalone=2, vms=2)
    with login(info) as session:
        before = session.stats.snapshot()
        inventory = read_inventory(session, extra_config_prefix="govcsim")
        calls = session.stats.snapshot() - before
    assert calls.total() == 1 + 2
    assert len(inventory.hosts) == 26 and len(inventory.vms) == 52
    assert len(inventory.compute_resources) == 2 and len(inventory.clusters) == 3
    standalone = inventory.compute_resources[0]
    assert inventory.hosts_of(standalone.moref)[0].cluster is None
    vm = inventory.vms[0]
    assert vm.host is not None and vm.path.startswith("/DC0/vm/")
    assert vm.power_state is PowerState.POWERED_ON
    assert dict(vm.extra_config) == {"govcsim": "TRUE"}
    assert len(inventory.vms_on(vm.host)) == 2


def test_extra_config_is_read_only_when_asked(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(clusters=1, hosts=1, vms=1)
    with login(info) as session:
        assert dict(read_inventory(session).vms[0].extra_config) == {}


def test_partial_read_keeps_paths(vcsim: VcsimInfo) -> None:
    with login(vcsim) as session:
        before = session.stats.snapshot()
        inventory = read_inventory(session, kinds={"hosts"})
        calls = session.stats.snapshot() - before
    assert calls["RetrievePropertiesEx"] == 1  # folders, datacenters, compute resources, hosts together
    assert inventory.vms == () and inventory.hosts[0].path.startswith("/DC0/host/DC0_C")


def test_lookup_of_a_misspelt_cluster_names_the_close_ones(vcsim: VcsimInfo) -> None:
    with login(vcsim) as session:
        inventory = read_inventory(session, kinds=())
    with pytest.raises(NotFoundError, match=r"/DC0/host/DC0_C0"):
        inventory.find_cluster("/DC0/host/DC0_CO")


def test_paged_reads_follow_tokens_on_the_lab(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(clusters=1, hosts=3, vms=4)  # 12 VMs
    with login(info) as session:
        whole = read_inventory(session, kinds={"vms"})
        before = session.stats.snapshot()
        paged = read_inventory(session, kinds={"vms"}, page_size=5)
        calls = session.stats.snapshot() - before
    assert len(whole.vms) == len(paged.vms) == 12
    assert {v.moref for v in paged.vms} == {v.moref for v in whole.vms}
    # 12 VMs and the folders, datacenter and cluster their paths need, in pages of 5 of any kind: the first
    # page, then one ContinueRetrievePropertiesEx per further page
    objects = len(paged.folders) + len(paged.datacenters) + len(paged.clusters) + len(paged.vms)
    assert len(paged.compute_resources) == 0 and objects > 15
    assert calls["RetrievePropertiesEx"] == 1
    assert calls["ContinueRetrievePropertiesEx"] == (objects - 1) // 5
    assert "CancelRetrievePropertiesEx" not in calls  # read to the end: nothing left to cancel
