"""agentvm.vsphere.ovf / nfc against vcsim: descriptor download and parsing, import with the lease upload,
the OVF environment, and no VM left behind when an import fails."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentvm.lab.packages import PackageServer, examples_dir
from agentvm.lab.vcsim import Shape, Vcsim
from agentvm.model.agency import PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import InventorySnapshot, ManagedBy
from agentvm.vsphere import ovf
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

pytestmark = pytest.mark.lab

HELLO = "hello-agent/hello-agent.ovf"


@dataclass(frozen=True)
class World:
    session: Session
    packages: str  # base URL of examples/
    bad_packages: str  # base URL of a tmp dir with broken packages
    vcsim_log: Path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """vcsim (1 cluster x 2 hosts) logging to a file we read, the examples server, a broken-package one."""
    bad = tmp_path / "bad"
    (bad / "nodisk").mkdir(parents=True)
    (bad / "garbage.ovf").write_text("this is not XML at all")
    (bad / "not-ovf.ovf").write_text("<?xml version='1.0'?><html><body>a web page</body></html>")
    shutil.copy(examples_dir() / HELLO, bad / "nodisk" / "hello-agent.ovf")  # its disk is missing
    good, broken = PackageServer().start(), PackageServer(bad).start()
    sim = Vcsim(Shape(clusters=1, hosts=2), log_file=tmp_path / "vcsim.log")
    info = sim.info
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    try:
        with Session(conn) as session:
            yield World(session, good.url, broken.url, sim.log_path)
    finally:
        sim.stop()
        good.stop()
        broken.stop()


def placement(inv: InventorySnapshot, host_index: int = 0) -> ovf.ImportTarget:
    host = inv.hosts[host_index]
    cluster = inv.clusters[0]
    assert cluster.resource_pool is not None
    network = next(n.moref for n in inv.networks if n.name == "VM Network")
    folder = next(f.moref for f in inv.folders if f.path == "/DC0/vm")
    return ovf.ImportTarget(
        host=host.moref,
        pool=cluster.resource_pool,
        folder=folder,
        datastore=host.datastores[0],
        network=network,
        disk_provisioning="thin",
    )


def vm_names(session: Session) -> set[str]:
    return {vm.name for vm in read_inventory(session, kinds={"vms"}).vms}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ descriptor


def test_fetch_descriptor_reads_networks_and_properties(world: World) -> None:
    d = ovf.fetch_descriptor(f"{world.packages}/{HELLO}")
    assert d.networks == ("VM Network",)
    by_id = {p.id: p for p in d.properties}
    assert set(by_id) == {"agent.ip", "agent.gateway", "agent.hostname", "agent.message"}
    assert by_id["agent.message"].default == "hello"
    assert by_id["agent.ip"].user_configurable is True
    assert by_id["agent.ip"].label == "Agent address"


def test_fetch_descriptor_from_a_port_with_nothing_listening_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/{HELLO}"
    with pytest.raises(ovf.OvfDownloadError) as err:
        ovf.fetch_descriptor(url, timeout=5)
    assert err.value.connection_refused is True
    assert err.value.url == url
    assert "connection refused" in str(err.value)


def test_fetch_descriptor_missing_file_reports_the_http_status(world: World) -> None:
    with pytest.raises(ovf.OvfDownloadError) as err:
        ovf.fetch_descriptor(f"{world.packages}/hello-agent/nope.ovf")
    assert err.value.response_code == 404


@pytest.mark.parametrize(
    ("name", "words"), [("garbage.ovf", "line 1"), ("not-ovf.ovf", "not an OVF Envelope")]
)
def test_fetch_descriptor_that_is_not_ovf_is_a_descriptor_error(world: World, name: str, words: str) -> None:
    with pytest.raises(ovf.OvfDescriptorError) as err:
        ovf.fetch_descriptor(f"{world.bad_packages}/{name}")
    assert words in "; ".join(err.value.errors)


# ------------------------------------------------------------------------------------------ import


def test_import_creates_the_vm_on_the_host_and_uploads_its_disk(world: World) -> None:
    session = world.session
    inv = read_inventory(session)
    where = placement(inv, host_index=1)
    d = ovf.fetch_descriptor(f"{world.packages}/{HELLO}")

    result = ovf.import_ovf(
        session, d, name="hello (1)", placement=where, properties={"agent.ip": "10.0.0.5/24"}
    )

    assert result.uploaded == {"hello-agent-disk1.vmdk": 65536}
    # vcsim discards what it receives, but logs it: the bytes did arrive through the lease URL
    assert "hello (1)/disk-0.vmdk: transferred 65536 bytes" in world.vcsim_log.read_text()
    vm = read_inventory(session, kinds={"vms"}).find_vm(result.vm.value)
    assert vm.name == "hello (1)"
    assert vm.host == where.host
    assert vm.resource_pool == where.pool
    assert vm.path == "/DC0/vm/hello (1)"
    assert vm.power_state is PowerState.POWERED_OFF


def test_configure_vm_sets_extra_config_and_managed_by(world: World) -> None:
    session = world.session
    d = ovf.fetch_descriptor(f"{world.packages}/{HELLO}")
    result = ovf.import_ovf(
        session, d, name="hello (2)", placement=placement(read_inventory(session)), properties={}
    )

    ovf.configure_vm(
        session,
        result.vm,
        ovf_properties=d.properties,
        values={"agent.ip": "10.0.0.6/24"},
        extra_config={"guestinfo.agent.ip": "10.0.0.6/24", "agentvm.owner": "com.example"},
        managed_by=ManagedBy("com.example", "agent"),
    )

    props = read_one(session, session.mo(result.vm), ["config.extraConfig", "config.managedBy"])
    extra = {o.key: o.value for o in props.get("config.extraConfig")}
    assert extra["guestinfo.agent.ip"] == "10.0.0.6/24"
    assert extra["agentvm.owner"] == "com.example"
    managed = props.get("config.managedBy")
    assert (managed.extensionKey, managed.type) == ("com.example", "agent")


def test_import_whose_disk_cannot_be_downloaded_leaves_no_vm(world: World) -> None:
    session = world.session
    d = ovf.fetch_descriptor(f"{world.bad_packages}/nodisk/hello-agent.ovf")
    before = vm_names(session)

    with pytest.raises(ovf.OvfDownloadError) as err:
        ovf.import_ovf(
            session, d, name="hello (3)", placement=placement(read_inventory(session)), properties={}
        )

    assert err.value.url.endswith("/nodisk/hello-agent-disk1.vmdk")
    assert err.value.response_code == 404
    assert vm_names(session) == before  # the lease was aborted and the half-made VM deleted


def test_descriptor_vcenter_rejects_is_a_descriptor_error_and_creates_nothing(world: World) -> None:
    session = world.session
    before = vm_names(session)
    # bypass our own parser: this is what vCenter says about a descriptor it cannot read
    d = ovf.OvfDescriptor(url="http://127.0.0.1:9/x.ovf", text="<Envelope", networks=("VM Network",))

    with pytest.raises(ovf.OvfDescriptorError) as err:
        ovf.import_ovf(
            session, d, name="hello (4)", placement=placement(read_inventory(session)), properties={}
        )

    assert "XML syntax error" in "; ".join(err.value.errors)
    assert vm_names(session) == before
