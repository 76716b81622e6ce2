"""The SDN clients against the lab's config-API and vRouter-agent emulators (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.model.connection import Secret
from agentvm.model.errors import AuthenticationError, ConfigurationError, TransientError
from agentvm.model.network import (
    IpRange,
    SdnInstanceIp,
    SdnSubnet,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    VrouterPort,
)
from agentvm.sdn import wire
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.http import ApiConflict
from agentvm.sdn.vrouter import VrouterAgentClient

VN = SdnVirtualNetwork(
    "0b8a3b9e-0000-4000-8000-000000000001",
    ("default-domain", "default-project", "pg-a"),
    "pg-a",
    (
        SdnSubnet(
            "10.1.0.0/24",
            "10.1.0.1",
            (IpRange("10.1.0.10", "10.1.0.20"),),
            True,
            "5d5d5d5d-0000-4000-8000-00000000000a",
        ),
    ),
)
VM = SdnVirtualMachine(
    "0b8a3b9e-0000-4000-8000-000000000002", ("0b8a3b9e-0000-4000-8000-000000000002",), "web-1"
)


def vmi(n: int) -> SdnVmi:
    uuid = f"0b8a3b9e-0000-4000-8000-00000000010{n}"
    return SdnVmi(
        uuid,
        ("default-domain", "default-project", uuid),
        f"00:50:56:00:00:0{n}",
        VN.uuid,
        VM.uuid,
        "nic",
        "host-1",
        10 + n,
    )


def iip(n: int, address: str) -> SdnInstanceIp:
    uuid = f"0b8a3b9e-0000-4000-8000-00000000020{n}"
    return SdnInstanceIp(uuid, (uuid,), address, VN.uuid, vmi(n).uuid)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "config-api.sqlite"


@pytest.fixture
def emulator(db: Path) -> Iterator[sdn_emulator.RunningConfigApi]:
    running = sdn_emulator.start(db, token="s3cret")
    yield running
    running.stop()


@pytest.fixture
def api(emulator: sdn_emulator.RunningConfigApi) -> Iterator[ConfigApiClient]:
    with ConfigApiClient(emulator.url, token=Secret("s3cret")) as client:
        yield client


def mine(obj: object) -> object:
    import dataclasses

    return dataclasses.replace(obj, creator="agentvm")  # type: ignore[type-var]


def test_network_subnet_vm_two_interfaces_and_addresses_are_created_and_read_back(
    api: ConfigApiClient,
) -> None:
    for obj in (VN, VM, vmi(1), vmi(2), iip(1, "10.1.0.10"), iip(2, "10.1.0.11")):
        assert api.create(obj) == obj.uuid
    assert api.read(SdnVirtualNetwork, VN.uuid) == mine(VN)
    assert api.read(SdnVirtualMachine, VM.uuid) == mine(VM)
    assert set(api.list(SdnVmi)) == {mine(vmi(1)), mine(vmi(2))}
    assert {i.address for i in api.list(SdnInstanceIp)} == {"10.1.0.10", "10.1.0.11"}
    assert api.fqname_to_id("virtual-network", VN.fq_name) == VN.uuid
    assert api.fqname_to_id("virtual-network", ("default-domain", "default-project", "nope")) is None


def test_every_created_object_is_marked_as_agentvms_even_if_the_caller_says_otherwise(
    api: ConfigApiClient,
) -> None:
    api.create_raw("virtual-machine", {"fq_name": ["x"], "id_perms": {"creator": "admin"}})
    (body,) = api.list_raw("virtual-machine")
    assert body["id_perms"]["creator"] == "agentvm"


def test_missing_token_is_an_authentication_error_that_never_shows_the_token(
    emulator: sdn_emulator.RunningConfigApi,
) -> None:
    client = ConfigApiClient(emulator.url, token=Secret("wrong"))
    with client, pytest.raises(AuthenticationError, match="401") as info:
        client.list(SdnVirtualNetwork)
    assert "wrong" not in str(info.value) and "wrong" not in repr(client)


def test_duplicate_fq_name_is_a_409_conflict(api: ConfigApiClient) -> None:
    api.create(VN)
    other = SdnVirtualNetwork("0b8a3b9e-0000-4000-8000-0000000000ff", VN.fq_name)
    with pytest.raises(ApiConflict, match="already exists"):
        api.create(other)


def test_the_controller_checks_required_refs_and_addresses(api: ConfigApiClient) -> None:
    api.create(VN)
    api.create(VM)
    with pytest.raises(ConfigurationError, match="virtual_network_refs"):
        api.create_raw("virtual-machine-interface", {"fq_name": ["default-domain", "default-project", "v"]})
    with pytest.raises(ConfigurationError, match=r"404.*not found"):
        api.create(iip(1, "10.1.0.10"))  # its interface does not exist yet
    api.create(vmi(1))
    with pytest.raises(ConfigurationError, match=r"400.*not in any subnet"):
        api.create(iip(1, "192.168.0.1"))
    api.create(iip(1, "10.1.0.10"))
    with pytest.raises(ApiConflict, match="already in use"):
        api.create(
            SdnInstanceIp("0b8a3b9e-0000-4000-8000-0000000002ff", ("z",), "10.1.0.10", VN.uuid, vmi(1).uuid)
        )


def test_deleting_a_network_still_referred_to_is_refused_then_allowed(api: ConfigApiClient) -> None:
    for obj in (VN, VM, vmi(1)):
        api.create(obj)
    with pytest.raises(ApiConflict, match="still referred"):
        api.delete(VN)
    assert api.delete(vmi(1)) is True
    assert api.delete(VN) is True
    assert api.delete(VN) is False  # already gone: not an error


def test_ref_update_adds_and_removes_a_ref(api: ConfigApiClient) -> None:
    for obj in (VN, VM):
        api.create(obj)
    no_vm = SdnVmi(vmi(1).uuid, vmi(1).fq_name, vmi(1).mac, VN.uuid, None)
    api.create(no_vm)
    api.ref_update("virtual-machine-interface", no_vm.uuid, "virtual-machine", VM.uuid, "ADD")
    assert api.read(SdnVmi, no_vm.uuid).vm_uuid == VM.uuid  # type: ignore[union-attr]
    api.ref_update("virtual-machine-interface", no_vm.uuid, "virtual-machine", VM.uuid, "DELETE")
    assert api.read(SdnVmi, no_vm.uuid).vm_uuid is None  # type: ignore[union-attr]


def test_update_changes_fields_and_keeps_the_mark(api: ConfigApiClient) -> None:
    api.create(VN)
    changed = SdnVirtualNetwork(
        VN.uuid,
        VN.fq_name,
        "renamed",
        (SdnSubnet("10.1.0.0/24", "10.1.0.1", (), False, VN.subnets[0].subnet_uuid),),
    )
    api.update(changed)
    assert api.read(SdnVirtualNetwork, VN.uuid) == mine(changed)


def test_objects_survive_an_emulator_restart(db: Path) -> None:
    first = sdn_emulator.start(db)
    try:
        with ConfigApiClient(first.url) as client:
            for obj in (VN, VM, vmi(1), iip(1, "10.1.0.10")):
                client.create(obj)
    finally:
        first.stop()
    second = sdn_emulator.start(db)
    try:
        with ConfigApiClient(second.url) as client:
            assert client.read(SdnVirtualNetwork, VN.uuid) == mine(VN)
            assert [i.address for i in client.list(SdnInstanceIp)] == ["10.1.0.10"]
            with pytest.raises(ApiConflict):
                client.create(VN)
    finally:
        second.stop()


def test_server_down_is_a_transient_error_naming_the_url(db: Path) -> None:
    running = sdn_emulator.start(db)
    url = running.url
    running.stop()
    with (
        ConfigApiClient(url, timeout=2) as client,
        pytest.raises(TransientError, match=f"GET {url}/virtual-networks"),
    ):
        client.list(SdnVirtualNetwork)


# -- vRouter agent -------------------------------------------------------------------------------------


@pytest.fixture
def agent() -> Iterator[vrouter_emulator.RunningAgent]:
    running = vrouter_emulator.start("host-1")
    yield running
    running.stop()


PORT = VrouterPort(
    id=vmi(1).uuid,
    instance_id=VM.uuid,
    vn_id=VN.uuid,
    vm_project_id="0b8a3b9e-0000-4000-8000-0000000000aa",
    display_name="web-1",
    ip_address="10.1.0.10",
    mac_address="00:50:56:00:00:01",
    system_name=vmi(1).uuid,
    rx_vlan_id=11,
    tx_vlan_id=11,
)


def test_port_is_added_disabled_then_enabled_disabled_and_deleted(
    agent: vrouter_emulator.RunningAgent,
) -> None:
    with VrouterAgentClient(agent.url) as client:
        client.add_port(PORT)
        assert client.get_port(PORT.id) == PORT  # a remote port starts disabled
        client.enable_port(PORT.id)
        assert agent.ports()[PORT.id]["link-state"] == 1
        assert client.get_port(PORT.id).enabled is True  # type: ignore[union-attr]
        client.disable_port(PORT.id)
        assert agent.ports()[PORT.id]["link-state"] == 0
        client.delete_port(PORT.id)
        client.delete_port(PORT.id)  # twice: not an error
        assert client.get_port(PORT.id) is None
        assert agent.ports() == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rx-vlan-id", "11"),
        ("type", 2.5),
        ("vhostuser-mode", None),
        ("mac-address", "00:50:56:00:00"),
        ("vn-id", 7),
    ],
)
def test_the_agent_rejects_a_port_with_a_missing_or_mistyped_field(
    agent: vrouter_emulator.RunningAgent, field: str, value: object
) -> None:
    body = {**wire.port_body(PORT), "system-name": "tap"}
    assert httpx.post(f"{agent.url}/port", json=body).status_code == 200
    if value is None:
        del body[field]
    else:
        body[field] = value
    answer = httpx.post(f"{agent.url}/port", json={**body, "id": "0b8a3b9e-0000-4000-8000-0000000003ff"})
    assert answer.status_code == 400
    assert field in answer.json()["error"] or "MAC" in answer.json()["error"]
    assert set(agent.ports()) == {PORT.id}


def test_enabling_an_unknown_port_is_an_error_with_the_agents_message(
    agent: vrouter_emulator.RunningAgent,
) -> None:
    with VrouterAgentClient(agent.url) as client, pytest.raises(ConfigurationError, match="Port Not found"):
        client.enable_port(PORT.id)


def test_agent_down_is_a_transient_error_naming_the_url(agent: vrouter_emulator.RunningAgent) -> None:
    url = agent.url
    agent.stop()
    with (
        VrouterAgentClient(url, timeout=2) as client,
        pytest.raises(TransientError, match=f"POST {url}/port"),
    ):
        client.add_port(PORT)


def test_a_subnet_keeps_its_dns_servers_and_malformed_dhcp_options_are_refused(api: ConfigApiClient) -> None:
    subnet = dataclasses.replace(VN.subnets[0], dns_servers=("10.1.0.2", "10.1.0.3"))
    api.create(dataclasses.replace(VN, subnets=(subnet,)))
    (read,) = api.list(SdnVirtualNetwork)
    assert read.subnets[0].dns_servers == ("10.1.0.2", "10.1.0.3")

    def network(name: str, item: dict[str, object]) -> dict[str, object]:
        other = dataclasses.replace(VN, uuid="0b8a3b9e-0000-4000-8000-0000000000ff", fq_name=("d", "p", name))
        body = wire.encode(dataclasses.replace(other, fq_name=(*VN.fq_name[:2], name)), api.config)
        body["network_ipam_refs"][0]["attr"]["ipam_subnets"][0].update(item)
        return body

    for bad in (
        {"dhcp_option_list": {"dhcp_option": [{"dhcp_option_name": "6", "dhcp_option_value": "a.b.c.d"}]}},
        {"dhcp_option_list": [{"dhcp_option_name": "6", "dhcp_option_value": "10.1.0.2"}]},
        {"dns_nameservers": "10.1.0.2"},
    ):
        with pytest.raises(ConfigurationError, match="400"):
            api.create_raw("virtual-network", network("bad", bad))
    assert [v.uuid for v in api.list(SdnVirtualNetwork)] == [VN.uuid]
