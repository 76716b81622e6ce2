"""``core.standalone``: the fleet's IP plan over standalone hosts (by esxi name, never by moid: every host
agent's host is ``ha-host``), each host's own spec with its address pinned and its name in the templates,
and what the commands refuse on standalone hosts yet."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest

from agentvm.core.ipplan import AddressSource, render_per_host
from agentvm.core.standalone import check_spec, fleet_addresses, host_spec, pin_fields
from agentvm.model.connection import VCenterConnection
from agentvm.model.desired import (
    AgencySpec,
    DesiredState,
    IpPlanSpec,
    OvfSource,
    PasswordSource,
    ScopeEntry,
    ScopeHost,
    SolutionSpec,
    StandaloneHostSpec,
)
from agentvm.model.errors import ConfigurationError
from agentvm.model.hostnet import HostNetworkSpec

PLAN = IpPlanSpec(
    network=IPv4Network("10.10.0.0/24"),
    gateway=IPv4Address("10.10.0.1"),
    first=IPv4Address("10.10.0.10"),
    last=IPv4Address("10.10.0.200"),
)


def agency(*hosts: str, name: str = "contrail", **changes: object) -> AgencySpec:
    spec = AgencySpec(
        name=name,
        agent_name="contrail-vm",
        ovf=OvfSource("http://example/contrail-vm.ovf"),
        scope=(),
        ip_plan=PLAN,
        per_host=(("fabricIp", "{ip}"), ("hostname", "contrail-{host_short}"), ("id", "{host_moid}")),
        standalone=hosts,
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def desired(*agencies: AgencySpec, hosts: tuple[str, ...] = ("esx-01", "esx-02", "esx-03")) -> DesiredState:
    return DesiredState(
        source="spec.yaml",
        solution=SolutionSpec("org.example.agentvm", "Agent", "", "", "1.0"),
        agencies=agencies,
        esxi=tuple(
            StandaloneHostSpec(
                name,
                VCenterConnection(url=f"https://{name}.example/sdk", username="root"),
                PasswordSource.ENVIRONMENT,
                "ESX_PASSWORD",
            )
            for name in hosts
        ),
    )


def addresses(spec: AgencySpec, previous: dict[str, str] | None = None) -> dict[str, str]:
    prior = {k: IPv4Address(v) for k, v in (previous or {}).items()}
    return {name: str(held.address) for name, held in fleet_addresses(spec, prior).items()}


def test_every_host_gets_its_own_address_in_natural_name_order_whatever_the_list_order() -> None:
    spec = agency("esx-10", "esx-2", "esx-1")
    assert addresses(spec) == {"esx-1": "10.10.0.10", "esx-2": "10.10.0.11", "esx-10": "10.10.0.12"}


def test_a_host_added_in_between_moves_no_other_host() -> None:
    first = addresses(agency("esx-01", "esx-03"))
    assert first == {"esx-01": "10.10.0.10", "esx-03": "10.10.0.11"}
    grown = addresses(agency("esx-01", "esx-02", "esx-03"), previous=first)
    assert grown == {"esx-01": "10.10.0.10", "esx-02": "10.10.0.12", "esx-03": "10.10.0.11"}


def test_a_redeployed_host_without_its_address_gets_the_same_one_back() -> None:
    spec = agency("esx-01", "esx-02", "esx-03")
    carried = addresses(spec)
    gone = {k: v for k, v in carried.items() if k != "esx-02"}  # its agent VM was deleted
    assert addresses(spec, previous=gone) == carried


def test_a_static_entry_names_the_host_by_its_esxi_name() -> None:
    spec = agency(
        "esx-01", "esx-02", ip_plan=dataclasses.replace(PLAN, static=(("esx-02", IPv4Address("10.10.0.99")),))
    )
    held = fleet_addresses(spec)
    assert str(held["esx-02"].address) == "10.10.0.99" and held["esx-02"].source is AddressSource.STATIC
    assert str(held["esx-01"].address) == "10.10.0.10" and held["esx-01"].source is AddressSource.NEW
    typo = agency("esx-01", ip_plan=dataclasses.replace(PLAN, static=(("esx-9", IPv4Address("10.10.0.99")),)))
    with pytest.raises(ConfigurationError, match="esx-9"):
        fleet_addresses(typo)


def test_the_host_spec_pins_the_fleets_address_and_fills_the_host_fields_with_the_esxi_name() -> None:
    spec = desired(agency("esx-01", "esx-02"), agency("esx-03", name="other"))
    mine = host_spec(
        spec,
        "esx-02",
        addresses={"contrail": IPv4Address("10.10.0.11")},
        host_moid="ha-host",
        scope="/ha-datacenter/host/h2",
    )
    assert mine.esxi == () and mine.vcenter is None
    (only,) = mine.agencies
    assert only.name == "contrail" and only.standalone == ()
    assert only.scope == (ScopeEntry(text="/ha-datacenter/host/h2"),)
    assert only.ip_plan is not None and only.ip_plan.static == (("ha-host", IPv4Address("10.10.0.11")),)
    # the host agent's own name for its host (localhost.localdomain on a real ESXi) is not used
    host = ScopeHost(moid="ha-host", name="localhost.localdomain", path="/ha-datacenter/host/h2/localhost")
    values = dict((p.key, p.value) for p in render_per_host(only, host, IPv4Address("10.10.0.11")))
    assert values == {"fabricIp": "10.10.0.11", "hostname": "contrail-esx-02", "id": "esx-02"}


def test_every_agency_is_on_every_host_for_destroy_and_status() -> None:
    spec = desired(agency("esx-01"), agency("esx-03", name="other"))
    assert [a.name for a in host_spec(spec, "esx-02").agencies] == []
    assert [a.name for a in host_spec(spec, "esx-02", every_agency=True).agencies] == ["contrail", "other"]


def test_pin_fields_fills_only_the_named_fields() -> None:
    values = {"host": "esx-01.lab", "host_short": "esx-01"}
    assert pin_fields("{host_short}-{ip}/{prefix}", values) == "esx-01-{ip}/{prefix}"
    assert pin_fields("{{literal}} {host:>12}", values) == "{{literal}}   esx-01.lab"
    assert pin_fields("{ip!s:>3}", values) == "{ip!s:>3}"
    assert pin_fields("{host}", {"host": "a{b}"}).format() == "a{b}"


def test_a_mixed_spec_is_refused_before_any_host_and_host_network_is_not() -> None:
    check_spec(desired(agency("esx-01", host_network=HostNetworkSpec())))  # carried out per host
    with pytest.raises(ConfigurationError, match="both a vcenter and esxi: hosts"):
        check_spec(desired(agency("esx-01", scope=(ScopeEntry(text="/DC0/host/C0"),))))
    check_spec(desired(agency("esx-01", "esx-02")))  # fine
