"""A spec's standalone ESXi hosts (``esxi:``) as one fleet: its IP plan, and each host's own spec. Pure.

Called by ``cli.esxi`` (``agentvm plan | apply | status | destroy`` of a spec with ``esxi:``), which runs
one ``controller.solution.Solution`` per host, each on that host's own session and engine, with the spec
``host_spec`` derives for it. Each host is a small vCenter of one host (``ha-host`` in ``ha-datacenter``,
the same moids on every host), so nothing here is keyed by moid across hosts: hosts are named by their
``esxi`` name.

- **The IP plan is the fleet's**, not each host's: ``fleet_addresses`` gives every host in an agency's
  scope its own address with ``core.ipplan.assign_addresses`` (its rules: an ``ipPlan.addresses`` entry
  naming the host by its ``esxi`` name wins; an address the host's agent VM already carries is kept while
  valid; the others get the lowest free addresses), hosts taken in the natural order of their ``esxi``
  names (``esx-2`` before ``esx-10``), so that the answer does not depend on the order of the list and
  adding a host never moves another one.
- ``host_spec`` pins each host's address in its own spec (an ``ipPlan.addresses`` entry of that host's
  moid) and fills ``{host}``, ``{host_short}`` and ``{host_moid}`` of ``perHost`` with the ``esxi`` name,
  so that the host's Solution writes the fleet's values into its agent VM before the first power-on.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

from agentvm.core.ipplan import (
    AddressSource,
    Assignment,
    HostAddress,
    _short_name,
    assign_addresses,
    check_static_hosts,
)
from agentvm.core.plan import AssignAddress, SpecPlan
from agentvm.model.desired import AgencySpec, DesiredState, ScopeEntry, ScopeHost
from agentvm.model.errors import ConfigurationError

# what every host's own spec scopes: the one compute resource of a host agent
ALL_OF_THE_HOST = ScopeEntry(text="*")


def fleet_host(name: str) -> ScopeHost:
    """A standalone host as the fleet's IP plan sees it: its ``esxi`` name is its id, name and path."""
    return ScopeHost(moid=name, name=name)


def fleet_addresses(
    agency: AgencySpec, previous: Mapping[str, IPv4Address] | None = None
) -> dict[str, HostAddress]:
    """``esxi`` name → its address (and where it came from: static, kept, new), for every standalone host
    in ``agency``'s scope (``core.ipplan`` rules, hosts in natural name order). ``previous``: the address
    each host's agent VM carries now, by ``esxi`` name. Empty without an IP plan. Raises IpPlanExhausted /
    UnknownIpPlanHost (ConfigurationErrors) naming the agency."""
    if agency.ip_plan is None or not agency.standalone:
        return {}
    hosts = [fleet_host(name) for name in agency.standalone]
    check_static_hosts(agency.ip_plan, hosts, agency=agency.name)
    assignment = assign_addresses(agency.ip_plan, hosts, previous, agency=agency.name)
    return {held.host.moid: held for held in assignment.addresses}


def with_fleet_sources(plan: SpecPlan, name: str, fleet: Mapping[str, Mapping[str, HostAddress]]) -> SpecPlan:
    """``plan`` (host ``name``'s own) with each address's source as the fleet's plan decided it: the
    host's own plan sees every address pinned (static); the fleet's says new, kept or static."""

    def source(agency: str, current: AddressSource) -> AddressSource:
        held = fleet.get(agency, {}).get(name)
        return held.source if held is not None else current

    changes = tuple(
        dataclasses.replace(c, source=source(c.agency_name, c.source)) if isinstance(c, AssignAddress) else c
        for c in plan.changes
    )
    addresses = {
        agency: Assignment(
            tuple(dataclasses.replace(h, source=source(agency, h.source)) for h in assignment.addresses)
        )
        for agency, assignment in plan.addresses.items()
    }
    return dataclasses.replace(plan, changes=changes, addresses=addresses)


def host_spec(
    desired: DesiredState,
    name: str,
    *,
    addresses: Mapping[str, IPv4Address] | None = None,
    host_moid: str | None = None,
    scope: str | None = None,
    every_agency: bool = False,
) -> DesiredState:
    """The spec of standalone host ``name`` alone: its agencies (those whose scope names it; with
    ``every_agency`` all of them, for destroy and status), each scoped to the host's one compute resource,
    without ``esxi:``.

    ``addresses``: agency name → the host's address from ``fleet_addresses``, pinned as an
    ``ipPlan.addresses`` entry of ``host_moid`` (the host's moid on its own host agent, ``ha-host``) and
    the fleet's only one; without them the agency keeps its plan (an observation only). ``perHost``'s
    ``{host}``, ``{host_short}`` and ``{host_moid}`` become the ``esxi`` name. ``scope``: the inventory
    path of the host's compute resource (what plan lines name), else every compute resource (``*``)."""
    pinned = {"host": name, "host_short": _short_name(name), "host_moid": name}
    agencies = []
    for agency in desired.agencies:
        if not every_agency and name not in agency.standalone:
            continue
        ip_plan = agency.ip_plan
        held = (addresses or {}).get(agency.name)
        if ip_plan is not None and held is not None and host_moid is not None:
            ip_plan = dataclasses.replace(ip_plan, static=((host_moid, held),))
        agencies.append(
            dataclasses.replace(
                agency,
                scope=(ScopeEntry(text=scope),) if scope else (ALL_OF_THE_HOST,),
                standalone=(),
                ip_plan=ip_plan,
                per_host=tuple((key, pin_fields(text, pinned)) for key, text in agency.per_host),
            )
        )
    return dataclasses.replace(desired, agencies=tuple(agencies), esxi=(), vcenter=None)


def pin_fields(template: str, values: Mapping[str, str]) -> str:
    """``template`` with the fields named in ``values`` filled in and every other field left as it was
    (``"contrail-{host_short}/{ip}"`` → ``"contrail-esx-01/{ip}"``); literal braces stay escaped."""
    out: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        out.append(_escape(literal))
        if field is None:
            continue
        if field in values:
            out.append(_escape(format(values[field], spec or "")))
            continue
        conv = f"!{conversion}" if conversion else ""
        out.append("{" + field + conv + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def in_scope(desired: DesiredState) -> Iterable[str]:
    """The ``esxi`` names some agency scopes, in the order of ``esxi:``."""
    named = {name for agency in desired.agencies for name in agency.standalone}
    return [host.name for host in desired.esxi if host.name in named]


def check_spec(desired: DesiredState) -> None:
    """Refuse what standalone hosts cannot do yet, before any connection (ConfigurationError, exit 2):
    an agency scoping both a vCenter's clusters and standalone hosts in one spec. (``hostNetwork.trunk``,
    a distributed switch's, is refused by the spec's loader: ``spec.agencies.check_standalone_agency``.)"""
    for agency in desired.agencies:
        if agency.scope and desired.esxi:
            raise ConfigurationError(
                f'{desired.source}: agency "{agency.name}" scopes vCenter clusters or hosts, and the spec '
                "has esxi: hosts; a spec with both a vcenter and esxi: hosts is not supported by plan, "
                "apply, status or destroy yet: put the standalone hosts' agencies in a spec of their own"
            )
