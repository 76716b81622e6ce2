"""The ``ipPlan`` of an agency: a CIDR with gateway and range, and/or an explicit host → address map.

Only the shape and the arithmetic are checked here (the range inside the CIDR, the gateway not a network
or broadcast address, no address twice); which host gets which address is ``agentvm.core.ipplan``'s job.
"""

from __future__ import annotations

from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError, ip_address, ip_network

from agentvm.model.desired import IpPlanSpec
from agentvm.spec.reader import Reader
from agentvm.spec.yamlnodes import Node

ALLOWED = ("cidr", "gateway", "range", "addresses")


def read_ip_plan(r: Reader, node: Node) -> IpPlanSpec | None:
    """Validate one ``ipPlan``; None (with problems recorded) when anything is wrong."""
    fields = r.mapping(node, ALLOWED)
    if fields is None:
        return None
    if "cidr" not in fields and "addresses" not in fields:
        r.problem(
            node.line,
            node.path,
            "needs a cidr (with gateway and range) or an addresses map; add e.g. cidr: 10.10.0.0/24",
        )
        return None
    ok = True
    network = _cidr(r, fields["cidr"]) if "cidr" in fields else None
    ok = ok and (network is not None or "cidr" not in fields)
    for key in ("gateway", "range"):
        if key in fields and "cidr" not in fields:
            r.problem(
                fields[key].line,
                fields[key].path,
                "needs ipPlan.cidr; add the subnet, e.g. cidr: 10.10.0.0/24",
            )
            ok = False
    gateway = None
    if "gateway" in fields and network is not None:
        gateway = _address(r, fields["gateway"], network, "the gateway")
        ok = ok and gateway is not None
    first = last = None
    if network is not None:
        if "range" in fields:
            bounds = _range(r, fields["range"], network)
            ok = ok and bounds is not None
            first, last = bounds or (None, None)
        elif network.prefixlen >= 31:  # point-to-point (RFC 3021) and single-host subnets: every address
            first, last = network.network_address, network.broadcast_address
        else:  # the whole subnet but its network and broadcast addresses
            first, last = network.network_address + 1, network.broadcast_address - 1
        if first is not None and last is not None and first > last:
            r.problem(node.line, node.path, f"{network} has no address to hand out; use a larger subnet")
            ok = False
    static = _static(r, fields["addresses"], network, gateway) if "addresses" in fields else ()
    if not ok or static is None:
        return None
    return IpPlanSpec(network=network, gateway=gateway, first=first, last=last, static=static)


def _cidr(r: Reader, node: Node) -> IPv4Network | None:
    text = r.text(node, "10.10.0.0/24")
    if text is None:
        return None
    try:
        network = ip_network(text, strict=False)
    except ValueError:
        r.problem(node.line, node.path, f'"{text}" is not a CIDR; write it like 10.10.0.0/24')
        return None
    if not isinstance(network, IPv4Network):
        r.problem(node.line, node.path, f'"{text}" is IPv6; IP plans are IPv4 only, e.g. 10.10.0.0/24')
        return None
    if "/" not in text:
        r.problem(node.line, node.path, f'"{text}" has no prefix length; write it like {text}/24')
        return None
    if str(network) != text:
        r.problem(node.line, node.path, f'"{text}" has host bits set; write the subnet: {network}')
        return None
    return network


def _nth(network: IPv4Network, n: int) -> IPv4Address:
    """The ``n``-th address of ``network`` for an example, kept inside it (a /32 has only one)."""
    return network.network_address + min(n, network.num_addresses - 1)


def _parse_v4(text: str) -> IPv4Address | None:
    try:
        address = ip_address(text)
    except (ValueError, AddressValueError, NetmaskValueError):
        return None
    return address if isinstance(address, IPv4Address) else None


def _address(r: Reader, node: Node, network: IPv4Network | None, what: str) -> IPv4Address | None:
    """An IPv4 address inside ``network`` (when given) that is not its network or broadcast address."""
    example = str(_nth(network, 1)) if network is not None else "10.10.0.1"
    text = r.text(node, example)
    if text is None:
        return None
    address = _parse_v4(text)
    if address is None:
        r.problem(node.line, node.path, f'"{text}" is not an IPv4 address; write it like {example}')
        return None
    if network is not None:
        if address not in network:
            r.problem(node.line, node.path, f"{address} is outside {network}; give {what} inside the cidr")
            return None
        if network.prefixlen < 31 and address in (network.network_address, network.broadcast_address):
            kind = "network" if address == network.network_address else "broadcast"
            r.problem(node.line, node.path, f"{address} is the {kind} address of {network}; give another one")
            return None
    return address


def _range(r: Reader, node: Node, network: IPv4Network) -> tuple[IPv4Address, IPv4Address] | None:
    example = f"{_nth(network, 10)}-{_nth(network, 200)}"
    text = r.text(node, example)
    if text is None:
        return None
    low_text, sep, high_text = text.partition("-")
    low, high = _parse_v4(low_text.strip()), _parse_v4(high_text.strip())
    if not sep or low is None or high is None:
        r.problem(node.line, node.path, f'"{text}" is not an address range; write it like {example}')
        return None
    outside = [str(a) for a in (low, high) if a not in network]
    if outside:
        r.problem(
            node.line, node.path, f"{' and '.join(outside)} outside {network}; keep the range inside the cidr"
        )
        return None
    if low > high:
        r.problem(node.line, node.path, f"starts after it ends; write it low-high: {high}-{low}")
        return None
    return low, high


def _static(
    r: Reader, node: Node, network: IPv4Network | None, gateway: IPv4Address | None
) -> tuple[tuple[str, IPv4Address], ...] | None:
    if node.kind != "map":
        r.problem(
            node.line,
            node.path,
            "must be a mapping of host to address, e.g. /DC0/host/DC0_C0/DC0_C0_H0: 10.10.0.11, "
            f"not {node.type_name()}",
        )
        return None
    fields = node.entries
    entries: list[tuple[str, IPv4Address]] = []
    seen: dict[IPv4Address, str] = {}
    ok = True
    for host, value in fields.items():
        address = _address(r, value, network, "the host's address")
        if address is None:
            ok = False
            continue
        if address == gateway:
            r.problem(value.line, value.path, f"{address} is the gateway; give the host another address")
            ok = False
        elif address in seen:
            r.problem(
                value.line,
                value.path,
                f"{address} is already given to {seen[address]}; give each host its own",
            )
            ok = False
        seen[address] = host
        entries.append((host, address))
    return tuple(sorted(entries)) if ok else None
