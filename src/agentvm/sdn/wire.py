"""Tungsten Fabric config-API JSON <-> agentvm's SDN values, and the vRouter agent's port JSON.

Used by ``agentvm.sdn.config_api``, ``agentvm.sdn.vrouter`` and the lab emulators' tests. Shapes follow the
real API (contrail-controller's vnc_api): objects are sent as ``{"virtual-network": {...}}``; refs are
``{"to": fq_name, "uuid": uuid, "attr": ...}``; subnets live in the ``network_ipam_refs`` attr
``ipam_subnets``; who created an object is ``id_perms.creator``; agentvm's own bookkeeping on an interface
(host, VLAN) is in its ``annotations.key_value_pair``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from agentvm.model.network import (
    IpRange,
    NetsyncConfig,
    SdnInstanceIp,
    SdnObject,
    SdnSubnet,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    VrouterPort,
)

Json = dict[str, Any]

TYPE_NAMES: Mapping[type, str] = {
    SdnVirtualNetwork: "virtual-network",
    SdnVirtualMachine: "virtual-machine",
    SdnVmi: "virtual-machine-interface",
    SdnInstanceIp: "instance-ip",
}

ANNOTATION_HOST = "agentvm.host"
ANNOTATION_VLAN = "agentvm.vlan"


def type_name(obj: SdnObject) -> str:
    return TYPE_NAMES[type(obj)]


def id_perms(creator: str) -> Json:
    return {"enable": True, "user_visible": True, "creator": creator}


def _ref(uuid: str, fq_name: tuple[str, ...] | None) -> Json:
    ref: Json = {"uuid": uuid}
    if fq_name is not None:
        ref["to"] = list(fq_name)
    return ref


def encode(
    obj: SdnObject, config: NetsyncConfig, fq_names: Mapping[str, tuple[str, ...]] | None = None
) -> Json:
    """The body (without the type wrapper) that creates or updates ``obj``. ``fq_names`` (uuid -> fq name)
    fills the ``to`` of refs; a ref without it carries the uuid alone, which the API server also takes."""
    known = fq_names or {}
    body: Json = {"uuid": obj.uuid, "fq_name": list(obj.fq_name), "name": obj.fq_name[-1]}
    if isinstance(obj, SdnVirtualNetwork):
        body["parent_type"] = "project"
        body["display_name"] = obj.display_name
        body["network_ipam_refs"] = (
            [{"to": list(config.ipam_fq_name), "attr": {"ipam_subnets": [_subnet(s) for s in obj.subnets]}}]
            if obj.subnets
            else []
        )
    elif isinstance(obj, SdnVirtualMachine):
        body["display_name"] = obj.display_name
    elif isinstance(obj, SdnVmi):
        body["parent_type"] = "project"
        body["display_name"] = obj.display_name
        body["virtual_machine_interface_mac_addresses"] = {"mac_address": [obj.mac]}
        body["virtual_network_refs"] = [_ref(obj.vn_uuid, known.get(obj.vn_uuid))]
        body["virtual_machine_refs"] = [_ref(obj.vm_uuid, (obj.vm_uuid,))] if obj.vm_uuid else []
        pairs = []
        if obj.host is not None:
            pairs.append({"key": ANNOTATION_HOST, "value": obj.host})
        if obj.vlan is not None:
            pairs.append({"key": ANNOTATION_VLAN, "value": str(obj.vlan)})
        body["annotations"] = {"key_value_pair": pairs}
    else:
        body["instance_ip_address"] = obj.address
        body["instance_ip_family"] = "v4"
        body["virtual_network_refs"] = [_ref(obj.vn_uuid, known.get(obj.vn_uuid))]
        body["virtual_machine_interface_refs"] = (
            [_ref(obj.vmi_uuid, (config.domain, config.project, obj.vmi_uuid))] if obj.vmi_uuid else []
        )
    return body


DHCP_OPTION_DNS = "6"  # DHCP option 6: domain name servers


def _subnet(subnet: SdnSubnet) -> Json:
    """One ``IpamSubnetType``. DNS servers go where Tungsten Fabric's own Neutron plugin puts a subnet's:
    DHCP option 6 (space-separated), which the vRouter's DHCP server hands to the VMs; also in
    ``dns_nameservers``, the schema's list of them."""
    network = ipaddress.ip_network(subnet.cidr)
    body: Json = {
        "subnet": {"ip_prefix": str(network.network_address), "ip_prefix_len": network.prefixlen},
        "default_gateway": subnet.gateway,
        "enable_dhcp": subnet.dhcp,
        "allocation_pools": [{"start": r.start, "end": r.end} for r in subnet.allocation_pools],
        "subnet_uuid": subnet.subnet_uuid,
        "dns_nameservers": list(subnet.dns_servers),
        "dhcp_option_list": None,
    }
    if subnet.dns_servers:
        option = {"dhcp_option_name": DHCP_OPTION_DNS, "dhcp_option_value": " ".join(subnet.dns_servers)}
        body["dhcp_option_list"] = {"dhcp_option": [option]}
    return body


def _dns_servers(item: Json) -> tuple[str, ...]:
    """A subnet's DNS servers: DHCP option 6 when it has one, else ``dns_nameservers``."""
    for option in ((item.get("dhcp_option_list") or {}).get("dhcp_option")) or []:
        if isinstance(option, dict) and str(option.get("dhcp_option_name")) == DHCP_OPTION_DNS:
            return tuple(str(option.get("dhcp_option_value") or "").replace(",", " ").split())
    return tuple(str(d) for d in item.get("dns_nameservers") or [])


def _first_ref_uuid(body: Json, field: str) -> str | None:
    refs = body.get(field) or []
    if refs and isinstance(refs[0], dict) and isinstance(refs[0].get("uuid"), str):
        return str(refs[0]["uuid"])
    return None


def decode_creator(body: Json) -> str | None:
    """``id_perms.creator`` of any object body; None when absent."""
    perms = body.get("id_perms") or {}
    creator = perms.get("creator") if isinstance(perms, dict) else None
    return creator if isinstance(creator, str) else None


def decode_virtual_network(body: Json) -> SdnVirtualNetwork:
    subnets = []
    for ref in body.get("network_ipam_refs") or []:
        for item in ((ref.get("attr") or {}).get("ipam_subnets")) or []:
            prefix = item.get("subnet") or {}
            subnets.append(
                SdnSubnet(
                    cidr=f"{prefix.get('ip_prefix')}/{prefix.get('ip_prefix_len')}",
                    gateway=item.get("default_gateway"),
                    allocation_pools=tuple(
                        IpRange(p["start"], p["end"]) for p in item.get("allocation_pools") or []
                    ),
                    dhcp=bool(item.get("enable_dhcp", False)),
                    subnet_uuid=item.get("subnet_uuid"),
                    dns_servers=_dns_servers(item),
                )
            )
    return SdnVirtualNetwork(
        uuid=body["uuid"],
        fq_name=tuple(body["fq_name"]),
        display_name=body.get("display_name") or "",
        subnets=tuple(subnets),
        creator=decode_creator(body),
    )


def decode_virtual_machine(body: Json) -> SdnVirtualMachine:
    return SdnVirtualMachine(
        uuid=body["uuid"],
        fq_name=tuple(body["fq_name"]),
        display_name=body.get("display_name") or "",
        creator=decode_creator(body),
    )


def decode_vmi(body: Json) -> SdnVmi:
    macs = (body.get("virtual_machine_interface_mac_addresses") or {}).get("mac_address") or [""]
    pairs = {
        p.get("key"): p.get("value") for p in (body.get("annotations") or {}).get("key_value_pair") or []
    }
    vlan_text = pairs.get(ANNOTATION_VLAN)
    return SdnVmi(
        uuid=body["uuid"],
        fq_name=tuple(body["fq_name"]),
        mac=str(macs[0]).lower(),
        vn_uuid=_first_ref_uuid(body, "virtual_network_refs") or "",
        vm_uuid=_first_ref_uuid(body, "virtual_machine_refs"),
        display_name=body.get("display_name") or "",
        host=pairs.get(ANNOTATION_HOST),
        vlan=int(vlan_text) if isinstance(vlan_text, str) and vlan_text.isdigit() else None,
        creator=decode_creator(body),
    )


def decode_instance_ip(body: Json) -> SdnInstanceIp:
    return SdnInstanceIp(
        uuid=body["uuid"],
        fq_name=tuple(body["fq_name"]),
        address=body.get("instance_ip_address") or "",
        vn_uuid=_first_ref_uuid(body, "virtual_network_refs") or "",
        vmi_uuid=_first_ref_uuid(body, "virtual_machine_interface_refs"),
        creator=decode_creator(body),
    )


# -- vRouter agent port API --------------------------------------------------------------------------


def port_body(port: VrouterPort) -> Json:
    """The JSON ``POST /port`` takes: every field the agent requires, ints where it wants ints."""
    return {
        "id": port.id,
        "instance-id": port.instance_id,
        "vn-id": port.vn_id,
        "vm-project-id": port.vm_project_id,
        "display-name": port.display_name,
        "ip-address": port.ip_address,
        "ip6-address": port.ip6_address,
        "mac-address": port.mac_address,
        "system-name": port.system_name,
        "type": port.type,
        "rx-vlan-id": port.rx_vlan_id,
        "tx-vlan-id": port.tx_vlan_id,
        "vhostuser-mode": port.vhostuser_mode,
    }


def decode_port(body: Json) -> VrouterPort:
    """A port as ``GET /port/{id}`` returns it; ``link-state`` 1 means enabled."""
    return VrouterPort(
        id=body["id"],
        instance_id=body["instance-id"],
        vn_id=body["vn-id"],
        vm_project_id=body["vm-project-id"],
        display_name=body["display-name"],
        ip_address=body["ip-address"],
        ip6_address=body["ip6-address"],
        mac_address=body["mac-address"],
        system_name=body["system-name"],
        type=int(body["type"]),
        rx_vlan_id=int(body["rx-vlan-id"]),
        tx_vlan_id=int(body["tx-vlan-id"]),
        vhostuser_mode=int(body.get("vhostuser-mode", 0)),
        enabled=int(body.get("link-state", 0)) == 1,
    )
