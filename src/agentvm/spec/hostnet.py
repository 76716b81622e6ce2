"""An agency's ``hostNetwork`` section: the fabric port group, the trunk DV port group, the agent VM's NICs.

Called by ``agentvm.spec.agencies``. Checks what can be checked without vCenter: the keys, the names (no
control characters, at most 80 characters, vCenter's limit), the fabric's VLAN (0-4094: 0 is untagged; 4095,
"all VLANs", is refused because the fabric is an access network), the trunk's VLAN ranges (within 1-4094,
never 4095; ``1-4094``, ``100,200-300`` or a list of such items; overlapping ranges are merged), that
``join: true`` names its ``uplink``, that the trunk's uplink is not the fabric's NIC, and that each of
``agentNics`` has the part it wires to. Whether the NICs, vSwitches, switches and port groups exist is
``agentvm.core.hostnet``'s question, on what vCenter shows.
"""

from __future__ import annotations

import re

from agentvm.model.hostnet import VLAN_MAX, AgentNics, FabricSpec, HostNetworkSpec, SecurityPolicy, TrunkSpec
from agentvm.spec.reader import Reader
from agentvm.spec.yamlnodes import Node

ALLOWED = ("fabric", "trunk", "agentNics")
SECURITY = ("promiscuous", "forgedTransmits", "macChanges")
FABRIC_KEYS = ("pnic", "vswitch", "portGroup", "vlan", "create", *SECURITY)
TRUNK_KEYS = ("dvs", "portGroup", "vlans", "join", "uplink", *SECURITY)
NIC_KEYS = ("fabric", "trunk")
MAX_NAME = 80  # vCenter's limit for names (switches, port groups)
EXAMPLE = "{fabric: {pnic: vmnic1, vswitch: vSwitch1, portGroup: contrail-fabric}}"

_PNIC = re.compile(r"vmnic\d+")
_RANGE = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")


def read_host_network(r: Reader, node: Node) -> HostNetworkSpec | None:
    """The section as a ``HostNetworkSpec``; None after reporting every problem found."""
    fields = r.mapping(node, ALLOWED)
    if fields is None:
        return None
    if not fields:
        r.problem(node.line, node.path, f"is empty; describe the fabric or the trunk, e.g. {EXAMPLE}")
        return None
    fabric = _fabric(r, fields["fabric"]) if "fabric" in fields else None
    trunk = _trunk(r, fields["trunk"]) if "trunk" in fields else None
    nics = _agent_nics(r, fields["agentNics"], fields) if "agentNics" in fields else AgentNics()
    if ("fabric" in fields and fabric is None) or ("trunk" in fields and trunk is None) or nics is None:
        return None
    if fabric is not None and trunk is not None and trunk.uplink == fabric.pnic:
        uplink = fields["trunk"].entries["uplink"]
        r.problem(
            uplink.line,
            uplink.path,
            f"is {trunk.uplink}, the fabric's physical NIC too (hostNetwork.fabric.pnic); a NIC rides on one "
            "switch: give the distributed switch another NIC",
        )
        return None
    return HostNetworkSpec(fabric=fabric, trunk=trunk, agent_nics=nics)


def _name(r: Reader, node: Node, example: str) -> str | None:
    return r.checked_text(node, example, limit=MAX_NAME, keeps_blanks="vCenter would keep")


def _pnic(r: Reader, node: Node) -> str | None:
    text = _name(r, node, "vmnic1")
    if text is not None and not _PNIC.fullmatch(text):
        r.problem(node.line, node.path, f'is "{text}"; name a physical NIC as ESXi does, e.g. vmnic1')
        return None
    return text


def _security(r: Reader, fields: dict[str, Node]) -> SecurityPolicy | None:
    values = {key: r.boolean(fields[key]) if key in fields else None for key in SECURITY}
    if any(key in fields and values[key] is None for key in SECURITY):
        return None
    return SecurityPolicy(values["promiscuous"], values["forgedTransmits"], values["macChanges"])


def _fabric(r: Reader, node: Node) -> FabricSpec | None:
    fields = r.mapping(
        node, FABRIC_KEYS, required={"pnic": "vmnic1", "vswitch": "vSwitch1", "portGroup": "contrail-fabric"}
    )
    if fields is None:
        return None
    pnic = _pnic(r, fields["pnic"]) if "pnic" in fields else None
    vswitch = _name(r, fields["vswitch"], "vSwitch1") if "vswitch" in fields else None
    group = _name(r, fields["portGroup"], "contrail-fabric") if "portGroup" in fields else None
    vlan = _vlan(r, fields["vlan"]) if "vlan" in fields else 0
    create = r.boolean(fields["create"]) if "create" in fields else False
    security = _security(r, fields)
    if pnic is None or vswitch is None or group is None or vlan is None or create is None or security is None:
        return None
    return FabricSpec(pnic, vswitch, group, vlan, create, security)


def _vlan(r: Reader, node: Node) -> int | None:
    """A standard port group's VLAN id: 0 (untagged) to 4094."""
    if node.broken:
        return None
    value = node.scalar
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        r.problem(
            node.line, node.path, f"must be a VLAN id from 0 (untagged) to {VLAN_MAX}, not {node.raw!r}"
        )
        return None
    if value == 4095:
        r.problem(
            node.line,
            node.path,
            "is 4095 (all VLANs, guest tagging); the fabric is an access network: give its VLAN id, "
            "or 0 for untagged",
        )
        return None
    if not 0 <= value <= VLAN_MAX:
        r.problem(node.line, node.path, f"is {value}; a VLAN id is 0 (untagged) to {VLAN_MAX}")
        return None
    return value


def _trunk(r: Reader, node: Node) -> TrunkSpec | None:
    fields = r.mapping(node, TRUNK_KEYS, required={"dvs": "DSwitch0", "portGroup": "contrail-trunk"})
    if fields is None:
        return None
    dvs = _name(r, fields["dvs"], "DSwitch0") if "dvs" in fields else None
    group = _name(r, fields["portGroup"], "contrail-trunk") if "portGroup" in fields else None
    vlans = _vlan_ranges(r, fields["vlans"]) if "vlans" in fields else ((1, VLAN_MAX),)
    join = r.boolean(fields["join"]) if "join" in fields else False
    uplink = _pnic(r, fields["uplink"]) if "uplink" in fields else None
    security = _security(r, fields)
    if join and "uplink" not in fields:
        r.problem(
            node.line,
            f"{node.path}.uplink",
            "is missing; join: true adds each host that is not a member with this physical NIC as its "
            "uplink: add it, e.g. uplink: vmnic2",
        )
        return None
    if dvs is None or group is None or vlans is None or join is None or security is None:
        return None
    if "uplink" in fields and uplink is None:
        return None
    return TrunkSpec(dvs, group, vlans, join, uplink, security)


def _vlan_ranges(r: Reader, node: Node) -> tuple[tuple[int, int], ...] | None:
    """``1-4094``, ``100``, ``10,20-30`` or a list of those; sorted and merged."""
    if node.broken:
        return None
    items = node.items if node.kind == "seq" else [node]
    if not items:
        r.problem(node.line, node.path, f"is empty; give the VLANs the trunk carries, e.g. 1-{VLAN_MAX}")
        return None
    ranges: list[tuple[int, int]] = []
    for item in items:
        if item.kind != "scalar" or item.scalar is None or isinstance(item.scalar, bool | float):
            r.problem(
                item.line, item.path, f"must be VLANs like 1-{VLAN_MAX} or 10,20-30, not {item.type_name()}"
            )
            return None
        for part in str(item.scalar).split(","):
            match = _RANGE.fullmatch(part.strip())
            if match is None:
                r.problem(
                    item.line, item.path, f'has "{part.strip()}"; write VLANs like 1-{VLAN_MAX} or 10,20-30'
                )
                return None
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) is not None else start
            if start > end:
                r.problem(
                    item.line, item.path, f"has {start}-{end}; write a range low to high: {end}-{start}"
                )
                return None
            if start < 1 or end > VLAN_MAX:
                shown = f"{start}" if start == end else f"{start}-{end}"
                why = " (4095 is never a trunk VLAN)" if end >= 4095 else ""
                r.problem(item.line, item.path, f"has {shown}; trunk VLANs are 1-{VLAN_MAX}{why}")
                return None
            ranges.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _agent_nics(r: Reader, node: Node, section: dict[str, Node]) -> AgentNics | None:
    fields = r.mapping(node, NIC_KEYS)
    if fields is None:
        return None
    names: dict[str, str | None] = {}
    ok = True
    for key in NIC_KEYS:
        if key not in fields:
            names[key] = None
            continue
        names[key] = r.checked_text(fields[key], f"{key}-net", limit=MAX_NAME)
        if names[key] is None:
            ok = False
        elif key not in section:
            r.problem(
                fields[key].line,
                fields[key].path,
                f"names the OVF network to wire to the {key}, but there is no hostNetwork.{key}; add it, "
                f"or remove agentNics.{key}",
            )
            ok = False
    if ok and names["fabric"] is not None and names["fabric"] == names["trunk"]:
        r.problem(
            fields["trunk"].line,
            fields["trunk"].path,
            f'is "{names["trunk"]}", the fabric\'s OVF network too; each goes on its own network',
        )
        ok = False
    return AgentNics(names["fabric"], names["trunk"]) if ok else None
