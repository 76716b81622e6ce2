"""Addresses for netsync: validate an IP pool as a subnet, and hand out addresses from its ranges.

Called by ``agentvm.core.netsync``. Pure: no I/O. Allocation is "keep what the interface had, else the lowest
free address of the ranges", so an address never moves while its interface exists and the same inventory
always gives the same addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

from agentvm.model.network import IpPool, IpRange, SdnSubnet


class PoolError(ValueError):
    """An IP pool that cannot be a subnet; ``str()`` names the pool, the problem and the fix."""


@dataclass(frozen=True)
class _Range:
    first: int
    last: int


def pool_subnet(pool: IpPool, subnet_uuid: str) -> SdnSubnet:
    """The controller subnet for ``pool``. Raises PoolError when the CIDR, gateway or a range is invalid
    or outside the subnet (the whole port group is then skipped, and named in the sync's errors)."""
    label = f"IP pool {pool.id} ({pool.name})"
    try:
        network = ipaddress.ip_network(pool.cidr, strict=False)
    except ValueError as exc:
        raise PoolError(
            f"{label}: {pool.cidr!r} is not a subnet like 10.0.0.0/24; fix the pool in vCenter"
        ) from exc
    if network.version != 4:
        raise PoolError(f"{label}: only IPv4 pools are mirrored, not {network}")
    # Like the controller: no gateway given means the subnet's first address (so re-reads compare equal).
    gateway = str(network.network_address + 1) if network.num_addresses > 2 else None
    if pool.gateway:
        try:
            gateway_ip = ipaddress.ip_address(pool.gateway)
        except ValueError as exc:
            raise PoolError(f"{label}: gateway {pool.gateway!r} is not an address") from exc
        if gateway_ip not in network:
            raise PoolError(f"{label}: gateway {gateway_ip} is outside the subnet {network}; fix the pool")
        gateway = str(gateway_ip)
    ranges = []
    for item in pool.ranges:
        first, last = _parse_range(label, item)
        if first not in network or last not in network:
            raise PoolError(
                f"{label}: range {item.start}-{item.end} is outside the subnet {network}; "
                "fix the pool's range in vCenter"
            )
        ranges.append(IpRange(str(first), str(last)))
    dns: list[str] = []
    for server in pool.dns_servers:
        try:
            address = ipaddress.IPv4Address(server)
        except ValueError as exc:
            raise PoolError(
                f"{label}: DNS server {server!r} is not an IPv4 address; fix the pool's DNS servers"
            ) from exc
        if str(address) not in dns:
            dns.append(str(address))
    return SdnSubnet(
        cidr=str(network),
        gateway=gateway,
        allocation_pools=tuple(ranges),
        dhcp=pool.dhcp,
        subnet_uuid=subnet_uuid,
        dns_servers=tuple(dns),
    )


def _parse_range(label: str, item: IpRange) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    try:
        first = ipaddress.IPv4Address(item.start)
        last = ipaddress.IPv4Address(item.end)
    except ValueError as exc:
        raise PoolError(f"{label}: range {item.start}-{item.end} is not two IPv4 addresses") from exc
    if first > last:
        raise PoolError(f"{label}: range {item.start}-{item.end} ends before it starts")
    return first, last


class SubnetAddresses:
    """The addresses of one subnet during one plan: ``keep`` existing ones, ``allocate`` new ones.

    Local to one call of ``netsync.plan``. Without allocation pools the whole subnet minus its network,
    broadcast and gateway addresses is used.
    """

    def __init__(self, subnet: SdnSubnet) -> None:
        self._network = ipaddress.IPv4Network(subnet.cidr)
        self._taken: set[int] = set()
        if subnet.gateway:
            self._taken.add(int(ipaddress.IPv4Address(subnet.gateway)))
        if subnet.allocation_pools:
            self._ranges = [
                _Range(int(ipaddress.IPv4Address(r.start)), int(ipaddress.IPv4Address(r.end)))
                for r in subnet.allocation_pools
            ]
        else:
            first, last = int(self._network.network_address), int(self._network.broadcast_address)
            self._ranges = [_Range(first + 1, last - 1)] if last - first >= 2 else [_Range(first, last)]
        self._ranges.sort(key=lambda r: r.first)
        self._cursor = [r.first for r in self._ranges]

    def contains(self, address: str) -> bool:
        try:
            return ipaddress.IPv4Address(address) in self._network
        except ValueError:
            return False

    def reserve(self, address: str) -> None:
        """Mark an address as used by someone else (another owner's instance IP)."""
        with contextlib.suppress(ValueError):  # a malformed foreign address blocks nothing
            self._taken.add(int(ipaddress.IPv4Address(address)))

    def keep(self, address: str) -> bool:
        """Take ``address`` if it is inside one of the ranges and free; False otherwise."""
        try:
            value = int(ipaddress.IPv4Address(address))
        except ValueError:
            return False
        if value in self._taken or not any(r.first <= value <= r.last for r in self._ranges):
            return False
        self._taken.add(value)
        return True

    def allocate(self) -> str | None:
        """The lowest free address of the ranges, now taken; None when the ranges are exhausted."""
        for index, rng in enumerate(self._ranges):
            value = self._cursor[index]
            while value <= rng.last and value in self._taken:
                value += 1
            self._cursor[index] = value + 1
            if value <= rng.last:
                self._taken.add(value)
                return str(ipaddress.IPv4Address(value))
        return None
