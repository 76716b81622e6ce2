"""Small pure pieces of the lab and the model: validation, state round trips, secrets kept secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvm.lab.runner import LabState
from agentvm.lab.vcsim import LabError, Shape, VcsimInfo
from agentvm.model.agency import MoRef
from agentvm.model.connection import Secret, VCenterConnection

INFO = VcsimInfo(
    url="https://127.0.0.1:8989/sdk",
    username="administrator@vsphere.local",
    password="s3cret-pass",
    eam_url="https://127.0.0.1:8989/eam/sdk",
    pid=42,
    thumbprint="AA:BB",
)


@pytest.mark.parametrize("field", ["clusters", "hosts", "standalone", "vms"])
def test_negative_counts_name_the_flag(field: str) -> None:
    with pytest.raises(LabError, match=f"--{field} must be 0 or more") as err:
        Shape(**{field: -1}).validate()
    assert err.value.exit_code == 2


def test_a_lab_needs_a_datacenter() -> None:
    with pytest.raises(LabError, match="--datacenters must be 1 or more"):
        Shape(datacenters=0).validate()


@given(st.integers(1, 4), st.integers(0, 8), st.integers(0, 64), st.integers(0, 8))
def test_host_count(dcs: int, clusters: int, hosts: int, standalone: int) -> None:
    shape = Shape(dcs, clusters, hosts, standalone)
    shape.validate()
    assert shape.host_count == dcs * clusters * hosts + dcs * standalone


@pytest.mark.parametrize(("hosts", "clusters", "per"), [(64, 1, 64), (500, 5, 100), (2500, 25, 100)])
def test_clustered_shapes_of_the_scale_benchmark(hosts: int, clusters: int, per: int) -> None:
    shape = Shape.clustered(hosts, vms=2)
    assert (shape.datacenters, shape.clusters, shape.hosts, shape.standalone, shape.vms) == (
        1,
        clusters,
        per,
        0,
        2,
    )


@given(st.integers(1, 3000), st.integers(1, 150))
def test_a_clustered_shape_holds_every_host_in_clusters_no_bigger_than_asked(hosts: int, per: int) -> None:
    shape = Shape.clustered(hosts, per_cluster=per)
    assert shape.host_count == hosts and shape.standalone == 0
    assert shape.hosts <= per
    # the fewest such clusters: no smaller count of clusters splits the hosts evenly within the bound
    assert all(hosts % c or hosts // c > per for c in range(1, shape.clusters))


def test_a_clustered_shape_needs_a_host() -> None:
    with pytest.raises(LabError, match="1 or more hosts") as err:
        Shape.clustered(0)
    assert err.value.exit_code == 2


def test_vcsim_info_never_shows_the_password() -> None:
    assert "s3cret" not in repr(INFO)
    assert INFO.port == 8989 and INFO.host == "127.0.0.1" and not INFO.plain_http


def test_lab_state_round_trips_through_json() -> None:
    state = LabState(
        supervisor_pid=1,
        pids={"vcsim": 2},
        vcsim=INFO,
        ovf_url="http://127.0.0.1:1",
        shape=Shape(hosts=5),
        start_seconds=0.5,
    )
    assert LabState.from_json(state.to_json()) == state
    assert state.info.env()["AGENTVM_THUMBPRINT"] == "AA:BB"


def test_secret_hides_itself() -> None:
    secret = Secret("hunter2")
    conn = VCenterConnection(url="vc.example.com", username="u", password=secret)
    for text in (repr(secret), str(secret), repr(conn), f"{conn}"):
        assert "hunter2" not in text
    assert secret.reveal() == "hunter2"
    assert conn.host == "vc.example.com" and conn.port == 443 and conn.path == "/sdk"


def test_connection_url_forms() -> None:
    conn = VCenterConnection(url="http://127.0.0.1:8080/sdk")
    assert (conn.scheme, conn.host, conn.port, conn.path) == ("http", "127.0.0.1", 8080, "/sdk")


def test_moref_parse() -> None:
    assert MoRef.parse("HostSystem:host-21") == MoRef("HostSystem", "host-21")
    assert str(MoRef("Agency", "agency-1")) == "Agency:agency-1"
    with pytest.raises(ValueError, match="not a managed-object reference"):
        MoRef.parse("host-21")
