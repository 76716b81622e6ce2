"""The solution's identity on a vCenter (its generated certificate, its state dir) and the addresses a plan
keeps from agent VMs of an agency the session cannot see."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentvm.backends.base import AgencyStatus
from agentvm.controller.identity import (
    Adopted,
    SolutionIdentity,
    certificate_record,
    solution_dir,
    thumbprints,
)
from agentvm.controller.observe import marked_vms, read_addresses
from agentvm.model.agency import AgencyRuntime, GoalState, MoRef, Status
from agentvm.model.inventory import VirtualMachine
from tests.support.certs import make_certificate
from tests.support.inventory_fakes import agent, snapshot

KEY = "org.tungsten.agentvm"
# the guestinfo keys agentvm marks its agent VMs with
ADDRESS, AGENCY = "guestinfo.agentvm.address", "guestinfo.agentvm.agency"


def test_the_generated_certificate_is_private_named_for_the_solution_and_made_once(tmp_path: Path) -> None:
    identity = SolutionIdentity(solution_dir(tmp_path, "https://vc.example.com:8443/sdk", KEY))
    assert identity.directory == tmp_path / "vc.example.com_8443" / KEY
    assert not identity.has_certificate()
    old = os.umask(0o000)  # even a permissive umask gives no one else a look at the key
    try:
        assert identity.ensure_certificate(KEY) is True
    finally:
        os.umask(old)
    for path in (identity.cert_file, identity.key_file):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert identity.directory.stat().st_mode & 0o777 == 0o700
    cert = x509.load_pem_x509_certificate(identity.cert_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == KEY
    key = serialization.load_pem_private_key(identity.key_file.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]

    pem = identity.certificate_pem()
    assert identity.ensure_certificate(KEY) is False  # the second apply keeps the first one's
    assert identity.certificate_pem() == pem
    assert sorted(p.name for p in identity.directory.iterdir()) == ["solution.crt", "solution.key"]


@settings(max_examples=60)
@given(
    url=st.text(min_size=1, max_size=40),
    key=st.text(min_size=1, max_size=40),
)
@example(url="0", key=".")
@example(url="https://../sdk", key="..")
def test_the_solution_dir_stays_under_the_state_dir_whatever_the_url_and_key(url: str, key: str) -> None:
    base = Path("/state")
    directory = solution_dir(base, url, key)
    assert directory.parent.parent == base
    assert all(part not in ("", ".", "..") and "/" not in part for part in directory.parts[2:])


def test_vcenters_and_solutions_get_directories_of_their_own() -> None:
    base = Path("/state")
    dirs = {
        solution_dir(base, "https://127.0.0.1:8989/sdk", KEY),
        solution_dir(base, "https://127.0.0.1:8990/sdk", KEY),
        solution_dir(base, "https://127.0.0.1:8989/sdk", "com.example.other"),
    }
    assert len(dirs) == 3


def test_adopted_agencies_are_recorded_and_forgotten(tmp_path: Path) -> None:
    identity = SolutionIdentity(tmp_path / "vc" / KEY)
    assert identity.adopted() == {}
    identity.record_adopted("contrail", Adopted("agency-4", "administrator@vsphere.local"))
    assert identity.adopted() == {"contrail": Adopted("agency-4", "administrator@vsphere.local")}
    assert (identity.directory / "agencies.json").stat().st_mode & 0o777 == 0o600
    identity.record_adopted("contrail", None)
    assert identity.adopted() == {}
    (identity.directory / "agencies.json").write_text("{not json")
    assert identity.adopted() == {}  # an unreadable record is no record (a certificate run then refuses)


def vm(moid: str, host: str, **extra: str) -> VirtualMachine:
    return VirtualMachine(
        MoRef("VirtualMachine", moid),
        f"contrail-vm ({moid})",
        f"/DC0/vm/{moid}",
        host=MoRef("HostSystem", host),
        extra_config=MappingProxyType(extra),
    )


def test_agent_vms_an_agency_status_does_not_show_keep_their_hosts_addresses() -> None:
    inventory = dataclasses.replace(
        snapshot(),
        vms=(
            vm("vm-a", "host-00", **{ADDRESS: "10.10.0.16", AGENCY: "contrail"}),
            vm("vm-b", "host-01", **{ADDRESS: "10.10.0.13", AGENCY: "contrail"}),
            vm("vm-c", "host-02", **{ADDRESS: "10.10.0.20", AGENCY: "other"}),
            vm("vm-d", "host-10", **{ADDRESS: "10.10.0.21"}),
        ),
    )
    # no status (an agency the session cannot see): the marked VMs of that agency keep their addresses
    assert read_addresses(inventory, None, "contrail") == {
        "host-00": IPv4Address("10.10.0.16"),
        "host-01": IPv4Address("10.10.0.13"),
    }
    assert [v.moref.value for v in marked_vms(inventory, "contrail")] == ["vm-a", "vm-b"]
    assert read_addresses(inventory, None) == {}
    # a host the status covers takes the address of its agent's VM only, not of another VM there
    status = AgencyStatus(
        "agency-1",
        "contrail",
        AgencyRuntime("agency-1", GoalState.ENABLED, Status.YELLOW),
        (agent("host-00", vm=MoRef("VirtualMachine", "vm-new")), agent("host-01", vm=vm("vm-b", "").moref)),
    )
    assert read_addresses(inventory, status, "contrail") == {"host-01": IPv4Address("10.10.0.13")}


def test_thumbprints_are_the_certificates_digests_as_vsphere_shows_them(tmp_path: Path) -> None:
    cert_file, _key, pem = make_certificate(tmp_path, "solution")
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    sha256, sha1 = thumbprints(pem.encode())
    assert sha256 == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert sha1 == ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())  # noqa: S324
    record = certificate_record(pem.encode(), str(cert_file), generated=True)
    assert (record.sha256, record.sha1, record.source) == (sha256, sha1, "generated")
    assert record.host == socket.gethostname() and record.file == str(cert_file)
    with pytest.raises(ValueError):
        thumbprints(b"not a certificate")


_FIELDS = st.dictionaries(
    st.sampled_from(["datastore", "network"]), st.sampled_from(["Datastore:datastore-1", "Network:network-2"])
)
_RECORDS = st.dictionaries(st.sampled_from([f"host-{i}" for i in range(6)]), st.none() | _FIELDS, max_size=6)


@settings(max_examples=30)
@given(before=_RECORDS, batch=_RECORDS)
def test_recording_many_hosts_settings_at_once_is_recording_them_one_by_one(
    tmp_path_factory: pytest.TempPathFactory,
    before: dict[str, dict[str, str] | None],
    batch: dict[str, dict[str, str] | None],
) -> None:
    one_by_one = SolutionIdentity(tmp_path_factory.mktemp("one"))
    at_once = SolutionIdentity(tmp_path_factory.mktemp("many"))
    for identity in (one_by_one, at_once):
        for host, fields in before.items():
            identity.record_host_settings(host, fields)
    for host, fields in batch.items():
        one_by_one.record_host_settings(host, fields)
    at_once.record_many_host_settings(batch)
    assert at_once.host_settings() == one_by_one.host_settings()
    expected = {h: dict(f) for h, f in before.items() if f}
    for host, fields in batch.items():
        if fields is None:
            expected.pop(host, None)
        elif fields:
            expected[host] = {**expected.get(host, {}), **fields}
    assert at_once.host_settings() == expected
