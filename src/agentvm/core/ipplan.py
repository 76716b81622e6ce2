"""Per-host addresses from an agency's IP plan, and the per-host values rendered from them. Pure.

Called by ``core.plan`` (to show each host's address before anything changes) and by whoever answers a
``provisioned`` hook (to write that host's values into its VM). The plan is deterministic and stable:

- an explicit ``ipPlan.addresses`` entry always wins, and its address is never given to another host;
- an address a host already carries (``previous``, read back from its agent VM) is kept while it is still
  valid: inside the range, not the gateway / network / broadcast / someone's static address, and not
  claimed by a host earlier in canonical order;
- every other host gets the lowest free address of the range, hosts taken in canonical order (inventory
  path in natural order, then moid) — so a fresh apply gives the same answer whatever order vCenter lists
  hosts in, and adding a host never moves an existing one;
- if the range cannot serve every host, ``IpPlanExhausted`` is raised before anything is assigned;
- an ``ipPlan.addresses`` entry that names no host in scope is ``UnknownIpPlanHost`` (``check_static_hosts``,
  called by ``core.plan``): a typo must not quietly give the host it meant a dynamic address. Keys take the
  forms ``model.names`` knows (moid, typed moid, path, path under the datacenter, name); one that names
  several hosts (a shared name, a glob) is an error too.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from agentvm.model import names
from agentvm.model.agency import MoRef, OvfProperty
from agentvm.model.desired import AgencySpec, IpPlanSpec, ScopeHost
from agentvm.model.errors import ConfigurationError
from agentvm.model.names import natural_key


class AddressSource(StrEnum):
    STATIC = "static"  # from ipPlan.addresses
    KEPT = "kept"  # the host already carried it
    NEW = "new"  # handed out now


@dataclass(frozen=True)
class HostAddress:
    host: ScopeHost
    address: IPv4Address
    source: AddressSource


@dataclass(frozen=True)
class Assignment:
    """Every host's address, in canonical host order."""

    addresses: tuple[HostAddress, ...]

    def by_moid(self) -> dict[str, HostAddress]:
        return {a.host.moid: a for a in self.addresses}

    def get(self, moid: str) -> HostAddress | None:
        return self._index.get(moid)

    @functools.cached_property
    def _index(self) -> Mapping[str, HostAddress]:
        # the first address of a moid, as a scan would find it; built once (frozen: it never changes)
        index: dict[str, HostAddress] = {}
        for held in self.addresses:
            index.setdefault(held.host.moid, held)
        return index


class IpPlanExhausted(ConfigurationError):
    """The range cannot give every host in scope an address (or a host has none and there is no range)."""


class UnknownIpPlanHost(ConfigurationError):
    """An ``ipPlan.addresses`` key is neither the moid, the inventory path nor the name of a host in scope."""


def check_static_hosts(plan: IpPlanSpec, hosts: Iterable[ScopeHost], *, agency: str = "") -> None:
    """Raise UnknownIpPlanHost naming every entry of ``plan.static`` that matches no host of ``hosts``.

    The message suggests the closest host for the first unknown entry (difflib, of the same kind: a path
    for a path, a moid for a moid, else a name). Called by ``core.plan.make_plan`` before it assigns.
    """
    ordered = canonical_order(hosts)
    who = f'agency "{agency}": ' if agency else ""
    unknown = []
    index = HostIndex(ordered if plan.static else ())
    for key, _ in plan.static:
        named = index.named(key)
        if len(named) > 1:
            paths = ", ".join(h.path or h.name for h in named)
            raise UnknownIpPlanHost(
                f'{who}ipPlan.addresses: "{key}" names {len(named)} hosts in the scope ({paths}); an address '
                f"is for one host: use one of their inventory paths, e.g. {named[0].path or named[0].name}"
            )
        if not named:
            unknown.append(key)
    if not unknown:
        return
    names = " and ".join(f'"{key}"' for key in unknown[:3]) + (
        f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    )
    several = len(unknown) > 1
    what = f"{names} {'are not hosts' if several else 'is not a host'} in the scope"
    if not ordered:
        raise UnknownIpPlanHost(
            f"{who}ipPlan.addresses: {what}, which has no hosts; check agencies[].scope, or remove "
            f"{'them' if several else 'the entry'}"
        )
    guess = _closest(unknown[0], ordered)
    raise UnknownIpPlanHost(
        f'{who}ipPlan.addresses: {what}; did you mean "{guess}"? Correct the '
        f"{'entries or remove them' if several else 'entry or remove it'}"
    )


_HOST_MOID = re.compile(r"host-\d+")


def _closest(key: str, hosts: Sequence[ScopeHost]) -> str:
    """The moid, path or name (the kind ``key`` is written in) most like ``key``; ties in host order."""
    if key.startswith("/"):
        choices = [h.path for h in hosts if h.path]
    elif _HOST_MOID.fullmatch(key):
        choices = [h.moid for h in hosts]
    else:
        choices = []
    choices = choices or [h.name for h in hosts]
    lowered = key.lower()
    return max(choices, key=lambda c: difflib.SequenceMatcher(None, lowered, c.lower()).ratio())


def canonical_order(hosts: Iterable[ScopeHost]) -> list[ScopeHost]:
    """Hosts sorted by inventory path (or name) in natural order — H2 before H10 — then moid."""
    return sorted(hosts, key=lambda h: (natural_key(h.path or h.name), natural_key(h.moid)))


def assign_addresses(
    plan: IpPlanSpec,
    hosts: Iterable[ScopeHost],
    previous: Mapping[str, IPv4Address] | None = None,
    *,
    agency: str = "",
) -> Assignment:
    """Give every host in ``hosts`` an address (see the module docstring for the rules).

    ``previous`` maps host moid → the address its agent VM carries now. Raises IpPlanExhausted, naming how
    many hosts need an address, how many are free and the fix; ValueError if two hosts share a moid.
    """
    ordered = canonical_order(hosts)
    if len({h.moid for h in ordered}) != len(ordered):
        raise ValueError("hosts must have distinct moids")
    previous = previous or {}
    static = _static_for(plan, ordered)
    reserved = {address for _, address in plan.static}
    if plan.gateway is not None:
        reserved.add(plan.gateway)
    if plan.network is not None and plan.network.prefixlen < 31:
        reserved |= {plan.network.network_address, plan.network.broadcast_address}

    result: dict[str, HostAddress] = {}
    for host in ordered:
        if host.moid in static:
            result[host.moid] = HostAddress(host, static[host.moid], AddressSource.STATIC)
    taken = set(reserved)
    for host in ordered:
        old = previous.get(host.moid)
        if host.moid in result or old is None or old in taken or not _in_range(plan, old):
            continue
        result[host.moid] = HostAddress(host, old, AddressSource.KEPT)
        taken.add(old)

    needy = [h for h in ordered if h.moid not in result]
    if needy:
        fresh = _allocate(plan, taken, len(needy), agency)
        for host, address in zip(needy, fresh, strict=True):
            result[host.moid] = HostAddress(host, address, AddressSource.NEW)
    return Assignment(tuple(result[h.moid] for h in ordered))


def _static_for(plan: IpPlanSpec, hosts: list[ScopeHost]) -> dict[str, IPv4Address]:
    """Static entries by host moid; a moid entry beats a path entry beats a name entry."""
    best: dict[int, tuple[int, int]] = {}  # host's position -> (rank, entry index) of the entry that wins
    index = HostIndex(hosts if plan.static else ())
    for i, (key, _) in enumerate(plan.static):
        for at in index.positions(key):
            rank = (_rank(key, hosts[at]), i)
            if at not in best or rank < best[at]:
                best[at] = rank
    return {hosts[at].moid: plan.static[best[at][1]][1] for at in sorted(best)}


def _host_ref(host: ScopeHost) -> names.NamedRef:
    return names.NamedRef(MoRef("HostSystem", host.moid), host.name, host.path)


class HostIndex:
    """Hosts by moid, name, path and path under the datacenter, so that finding the hosts an
    ``ipPlan.addresses`` key names costs a few dict lookups rather than a scan of every host (a plan may
    hold an entry per host: thousands of keys against thousands of hosts)."""

    def __init__(self, hosts: Iterable[ScopeHost]) -> None:
        self.hosts = tuple(hosts)
        self._by: dict[str, set[int]] = {}  # moid, name, path or relative path -> positions in hosts
        for i, host in enumerate(self.hosts):
            for word in (host.moid, host.name, host.path, names.relative_path(host.path)):
                if word is not None:
                    self._by.setdefault(word, set()).add(i)

    def named(self, key: str) -> list[ScopeHost]:
        """The hosts ``key`` names (as ``_names`` decides), in the order the hosts were given."""
        return [self.hosts[i] for i in self.positions(key)]

    def positions(self, key: str) -> list[int]:
        """Where the hosts ``key`` names are in the hosts given, in order."""
        ref = names.parse(key)
        if ref.kind == "glob":
            candidates: Iterable[int] = range(len(self.hosts))
        else:
            # every form names a host by one of the words indexed, spelt as the key's value or its text
            candidates = sorted(self._by.get(ref.value, set()) | self._by.get(ref.text, set()))
        return [i for i in candidates if names.matches(ref, _host_ref(self.hosts[i]))]


def _names(key: str, host: ScopeHost) -> bool:
    """Whether the ``ipPlan.addresses`` key names ``host`` in any form govc takes (``model.names``)."""
    return names.matches(names.parse(key), _host_ref(host))


def _rank(key: str, host: ScopeHost) -> int:
    return names.specificity(names.parse(key), _host_ref(host))


def _in_range(plan: IpPlanSpec, address: IPv4Address) -> bool:
    return plan.first is not None and plan.last is not None and plan.first <= address <= plan.last


def _allocate(plan: IpPlanSpec, taken: set[IPv4Address], count: int, agency: str) -> list[IPv4Address]:
    """The ``count`` lowest free addresses of the range, or IpPlanExhausted before handing out any."""
    who = f'agency "{agency}": ' if agency else ""
    if plan.first is None or plan.last is None:
        raise IpPlanExhausted(
            f"{who}{_count(count)} in scope without an entry in ipPlan.addresses, and the plan has no cidr "
            "to take addresses from; add them to ipPlan.addresses or give ipPlan a cidr and range"
        )
    size = int(plan.last) - int(plan.first) + 1
    free = size - sum(1 for a in taken if plan.first <= a <= plan.last)
    if free < count:
        need = f"{_count(count)} need{'' if count != 1 else 's'} a new address"
        raise IpPlanExhausted(
            f"{who}the IP plan is too small: {need} but only {free} of the {size} addresses in "
            f"{plan.first}-{plan.last} {'are' if free != 1 else 'is'} free "
            f"({size - free} held by other hosts or reserved); "
            "widen ipPlan.range (or the cidr), or take hosts out of the scope"
        )
    chosen: list[IPv4Address] = []
    candidate = plan.first
    while len(chosen) < count:  # ends: free >= count addresses exist in [first, last]
        if candidate not in taken:
            chosen.append(candidate)
        candidate += 1
    return chosen


def _count(n: int) -> str:
    return f"{n} host{'s' if n != 1 else ''}"


# ------------------------------------------------------------------------------------- per-host values


def template_values(host: ScopeHost, plan: IpPlanSpec | None, address: IPv4Address | None) -> dict[str, str]:
    """The template fields (model.desired.TEMPLATE_FIELDS) for one host; fields without a value are absent."""
    values = {
        "host": host.name,
        "host_short": _short_name(host.name),
        "host_moid": host.moid,
        "cluster": host.cluster_name or "",
    }
    if plan is not None and plan.network is not None:
        values |= {
            "prefix": str(plan.network.prefixlen),
            "netmask": str(plan.network.netmask),
            "network": str(plan.network.network_address),
        }
    if plan is not None and plan.gateway is not None:
        values["gateway"] = str(plan.gateway)
    if address is not None:
        values["ip"] = str(address)
        if plan is not None and plan.network is not None:
            values["cidr"] = f"{address}/{plan.network.prefixlen}"
            values["index"] = str(int(address) - int(plan.network.network_address))
    return values


def _short_name(name: str) -> str:
    """``esx-01.lab.local`` → ``esx-01``; a host named by its IP keeps all of it, dots made dashes."""
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        return name.replace(".", "-")
    return name.split(".", 1)[0]


def render_per_host(
    agency: AgencySpec, host: ScopeHost, address: IPv4Address | None
) -> tuple[OvfProperty, ...]:
    """The agency's ``perHost`` templates filled in for ``host``.

    Raises ConfigurationError if a template needs an address and the host has none (the spec loader
    already rejects templates the plan cannot fill, so this means the caller passed no address).
    """
    values = template_values(host, agency.ip_plan, address)
    result = []
    for key, template in agency.per_host:
        try:
            result.append(OvfProperty(key, template.format_map(values)))
        except KeyError as missing:
            raise ConfigurationError(
                f'agency "{agency.name}": perHost.{key} needs {{{missing.args[0]}}} but host {host.moid} '
                f"({host.path or host.name}) has no address; give it one in ipPlan"
            ) from None
    return tuple(result)


def per_host_values(
    agency: AgencySpec,
    hosts: Iterable[ScopeHost],
    previous: Mapping[str, IPv4Address] | None = None,
) -> dict[str, tuple[OvfProperty, ...]]:
    """host moid → the host's rendered perHost properties; addresses are assigned first.

    Raises IpPlanExhausted (see assign_addresses) before rendering anything.
    """
    ordered = canonical_order(hosts)
    assignment = (
        assign_addresses(agency.ip_plan, ordered, previous, agency=agency.name).by_moid()
        if agency.ip_plan is not None
        else {}
    )
    result = {}
    for host in ordered:
        held = assignment.get(host.moid)
        result[host.moid] = render_per_host(agency, host, held.address if held else None)
    return result
