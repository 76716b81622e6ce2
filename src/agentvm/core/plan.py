"""What ``apply`` would change: desired state vs an observed-state summary → an ordered list of changes. Pure.

Called by the CLI's ``plan`` (which prints the descriptions and changes nothing) and by ``apply`` (which
carries the changes out in this order: extension, host AgentVM settings, then per agency the agency itself
and each host's address). The observed summary (``model.desired.ObservedState``) is read by the backends;
this module only compares. Running out of addresses raises ``IpPlanExhausted`` here, before anything changes,
and so does an ``ipPlan.addresses`` entry for a host that is not in scope (``UnknownIpPlanHost``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from agentvm.core.ipplan import (
    AddressSource,
    Assignment,
    UnknownIpPlanHost,
    assign_addresses,
    canonical_order,
    check_static_hosts,
)
from agentvm.model.desired import (
    AgencySpec,
    DesiredState,
    ExtensionState,
    HostAgentSettings,
    ObservedAgency,
    ObservedState,
    ScopeHost,
    SolutionSpec,
)


class ChangeKind(StrEnum):
    REGISTER_EXTENSION = "register-extension"
    UPDATE_EXTENSION = "update-extension"
    SET_HOST_SETTINGS = "set-host-settings"
    CREATE_AGENCY = "create-agency"
    UPDATE_AGENCY = "update-agency"
    UPGRADE_AGENCY = "upgrade-agency"  # the OVF URL changed: EAM replaces every agent VM
    ASSIGN_ADDRESS = "assign-address"  # a host gets an address it does not carry yet


@dataclass(frozen=True)
class Change:
    """One planned change; ``description`` is the line ``agentvm plan`` prints."""

    kind: ChangeKind
    target: str  # the extension key, agency name or host moid
    description: str
    agency: str | None = None
    host: str | None = None  # host moid


@dataclass(frozen=True)
class Plan:
    """The ordered changes, each agency's address assignment, and warnings that apply cannot fix."""

    changes: tuple[Change, ...]
    addresses: Mapping[str, Assignment] = field(default_factory=dict)  # agency name -> assignment
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes

    def describe(self) -> list[str]:
        """One line per change, or ``["no changes"]``."""
        return [c.description for c in self.changes] or ["no changes"]


def host_label(host: ScopeHost) -> str:
    """``host-21 (/DC0/host/DC0_C0/H0)``: how every message names a host."""
    return f"{host.moid} ({host.path or host.name})"


def make_plan(desired: DesiredState, observed: ObservedState, *, strict_static: bool = True) -> Plan:
    """Compare ``desired`` with ``observed``.

    Raises IpPlanExhausted when an agency's plan is too small, UnknownIpPlanHost when an
    ``ipPlan.addresses`` entry names no host in the agency's scope (both ConfigurationErrors). With
    ``strict_static`` False (the controller: a host that left the scope must not stop it managing the
    others) the unknown entry is a warning instead.
    """
    changes: list[Change] = []
    warnings: list[str] = []
    extension = _extension_change(desired.solution, observed.extension)
    if extension is not None:
        changes.append(extension)
    changes += _host_settings_changes(desired, observed, warnings)
    assignments: dict[str, Assignment] = {}
    for agency in desired.agencies:
        hosts = canonical_order(observed.hosts.get(agency.name, ()))
        change = _agency_change(agency, observed.agencies.get(agency.name), len(hosts))
        if change is not None:
            changes.append(change)
        if agency.ip_plan is not None:
            try:
                check_static_hosts(agency.ip_plan, hosts, agency=agency.name)
            except UnknownIpPlanHost as exc:
                if strict_static:
                    raise
                warnings.append(str(exc))
            previous = observed.addresses.get(agency.name, {})
            assignment = assign_addresses(agency.ip_plan, hosts, previous, agency=agency.name)
            assignments[agency.name] = assignment
            changes += _address_changes(agency, assignment, previous)
    return Plan(tuple(changes), assignments, tuple(warnings))


def _extension_change(solution: SolutionSpec, found: ExtensionState | None) -> Change | None:
    if found is None:
        return Change(
            ChangeKind.REGISTER_EXTENSION,
            solution.key,
            f"register extension {solution.key} version {solution.version}",
        )
    differences = [
        f"{name} {old!r} → {new!r}" if name != "version" else f"version {old} → {new}"
        for name, old, new in (
            ("version", found.version, solution.version),
            ("label", found.label, solution.label),
            ("summary", found.summary, solution.summary),
            ("company", found.company, solution.company),
        )
        if old != new
    ]
    if not differences:
        return None
    return Change(
        ChangeKind.UPDATE_EXTENSION,
        solution.key,
        f"update extension {solution.key}: {', '.join(differences)}",
    )


def _host_settings_changes(
    desired: DesiredState, observed: ObservedState, warnings: list[str]
) -> list[Change]:
    """Fill in AgentVM settings a host lacks; never overwrite what an admin set."""
    changes: list[Change] = []
    seen: set[str] = set()
    for agency in desired.agencies:
        for host in canonical_order(observed.hosts.get(agency.name, ())):
            if host.moid in seen:  # in the scope of two agencies: the first one's values apply
                continue
            seen.add(host.moid)
            current = observed.host_settings.get(host.moid, HostAgentSettings())
            wanted = {
                "datastore": (agency.datastore, current.datastore),
                "network": (agency.network, current.network),
            }
            setting: dict[str, str] = {}
            for what, (placement, have) in wanted.items():
                if have:
                    continue
                value = placement.for_host(host)
                if value is not None:
                    setting[what] = value
                elif placement.use_host_settings:
                    warnings.append(
                        f"{host_label(host)} has no AgentVM {what} and agency {agency.name} uses the host's "
                        "settings; set it in vCenter (host > Configure > Agent VM Settings) "
                        f"or name a {what} in the spec"
                    )
            if setting:
                text = ", ".join(f"{k} {v}" for k, v in setting.items())
                changes.append(
                    Change(
                        ChangeKind.SET_HOST_SETTINGS,
                        host.moid,
                        f"set AgentVM settings on {host_label(host)}: {text}",
                        agency=agency.name,
                        host=host.moid,
                    )
                )
    return changes


def agency_view(agency: AgencySpec) -> ObservedAgency:
    """The desired agency in the form an observed one is summarised in, so the two compare field by field.

    Backends summarising an agency they read from EAM produce the same shape (names, not MoRefs).
    """
    return ObservedAgency(
        name=agency.name,
        ovf_url=agency.ovf.url,
        agent_name=agency.agent_name,
        scope=tuple(sorted(s.text for s in agency.scope)),
        ovf_properties=tuple(sorted(agency.ovf_properties, key=lambda p: p.key)),
        datastores=_candidates(agency.datastore.default, agency.datastore.by_target),
        networks=_candidates(agency.network.default, agency.network.by_target),
        folder=agency.folder.default,
        resource_pool=agency.resource_pool.default,
        provisioned_hook=agency.provisioned_hook,
        use_uuid_vm_name=agency.use_uuid_vm_name,
    )


def _candidates(default: str | None, by_target: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    return tuple(sorted({v for _, v in by_target} | ({default} if default else set())))


_FIELD_NAMES = {
    "agent_name": "agentName",
    "scope": "scope",
    "ovf_properties": "ovfProperties",
    "datastores": "datastore",
    "networks": "network",
    "folder": "folder",
    "resource_pool": "resourcePool",
    "provisioned_hook": "hooks.provisioned",
    "use_uuid_vm_name": "useUuidVmName",
}


def _agency_change(agency: AgencySpec, found: ObservedAgency | None, host_count: int) -> Change | None:
    want = agency_view(agency)
    if found is None:
        scope = ", ".join(s.text for s in agency.scope)
        return Change(
            ChangeKind.CREATE_AGENCY,
            agency.name,
            f"create agency {agency.name}: {agency.agent_name} on {host_count} "
            f"host{'s' if host_count != 1 else ''} of {scope} from {agency.ovf.url}",
            agency=agency.name,
        )
    normalised = dataclasses.replace(  # order carries no meaning in these lists
        found,
        scope=tuple(sorted(found.scope)),
        ovf_properties=tuple(sorted(found.ovf_properties, key=lambda p: p.key)),
        datastores=tuple(sorted(found.datastores)),
        networks=tuple(sorted(found.networks)),
    )
    changed = [
        label for attr, label in _FIELD_NAMES.items() if getattr(normalised, attr) != getattr(want, attr)
    ]
    if normalised.ovf_url != want.ovf_url:
        also = f" (also {', '.join(changed)})" if changed else ""
        return Change(
            ChangeKind.UPGRADE_AGENCY,
            agency.name,
            f"upgrade agency {agency.name}: {found.ovf_url} → {agency.ovf.url}{also}",
            agency=agency.name,
        )
    if changed:
        return Change(
            ChangeKind.UPDATE_AGENCY,
            agency.name,
            f"update agency {agency.name}: {', '.join(changed)} changed",
            agency=agency.name,
        )
    return None


def _address_changes(
    agency: AgencySpec, assignment: Assignment, previous: Mapping[str, object]
) -> list[Change]:
    changes = []
    for held in assignment.addresses:
        if held.source is AddressSource.KEPT:
            continue
        old = previous.get(held.host.moid)
        if old == held.address:
            continue
        why = " (ipPlan.addresses)" if held.source is AddressSource.STATIC else ""
        if old is None:
            text = f"{agency.name}: {host_label(held.host)} gets address {held.address}{why}"
        else:
            reason = why or " (the old one is no longer in the plan)"
            text = f"{agency.name}: {host_label(held.host)} address {old} → {held.address}{reason}"
        changes.append(
            Change(ChangeKind.ASSIGN_ADDRESS, held.host.moid, text, agency=agency.name, host=held.host.moid)
        )
    return changes
