"""The sentences a person reads for a plan's changes, rendered from the typed values of ``core.plan``. Pure.

Called at the surfaces: ``agentvm plan`` (one line per change), ``plan --json`` (each change's
``description``), and the actions apply and the controller report. Nothing in a change stores its text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from agentvm.core.heal import fix_for
from agentvm.core.hostnet import (
    CreateDvPortGroup,
    CreatePortGroup,
    CreateVSwitch,
    RepairDvPortGroup,
    RepairPortGroup,
    security_items,
    vlan_text,
)
from agentvm.core.ipplan import AddressSource
from agentvm.core.plan import (
    AnswerHook,
    AssignAddress,
    Change,
    CreateAgency,
    DestroyAgency,
    HostNetworkChange,
    JoinSwitch,
    PrepareHostNetwork,
    PrepareSwitch,
    PurgeOrphans,
    RecordCertificate,
    RegisterExtension,
    ResolveIssue,
    SetCertificate,
    SetHostSettings,
    UninstallAgency,
    UnregisterExtension,
    UpdateAgency,
    UpdateExtension,
    UpgradeAgency,
    host_label,
)
from agentvm.model.agency import Issue
from agentvm.model.desired import ScopeHost
from agentvm.model.hostnet import SecurityPolicy


def describe(change: Change) -> str:
    """The line ``agentvm plan`` prints for ``change``."""
    match change:
        case RegisterExtension(solution=solution):
            return f"register extension {solution.key} version {solution.version}"
        case UpdateExtension(solution=solution, differences=differences):
            text = ", ".join(
                f"version {d.old} → {d.new}" if d.name == "version" else f"{d.name} {d.old!r} → {d.new!r}"
                for d in differences
            )
            return f"update extension {solution.key}: {text}"
        case SetCertificate():
            return _set_certificate(change)
        case RecordCertificate(key=key, sha1=sha1, file=file):
            return (
                f"record the login certificate of extension {key} (SHA-1 {sha1}, {file}) "
                "in the extension, so that an apply from another machine does not replace it"
            )
        case SetHostSettings():
            return f"set AgentVM settings on {host_label(change.scope_host)}: {host_settings_text(change)}"
        case PrepareSwitch() | JoinSwitch() | PrepareHostNetwork():
            return f"{change.agency_name}: {host_network_text(change)}"
        case CreateAgency(spec=spec, host_count=count):
            scope = ", ".join(s.text for s in spec.scope)
            return (
                f"create agency {spec.name}: {spec.agent_name} on {count} "
                f"host{'s' if count != 1 else ''} of {scope} from {spec.ovf.url}"
            )
        case UpdateAgency(name=name, changed=changed):
            return f"update agency {name}: {', '.join(changed)} changed"
        case UpgradeAgency(name=name, old_url=old, new_url=new, also=also):
            more = f" (also {', '.join(also)})" if also else ""
            return f"upgrade agency {name}: {old} → {new}{more}"
        case AssignAddress():
            return _assign_address(change)
        case AnswerHook():
            label = host_label(change.scope_host) if change.scope_host is not None else change.host_moid
            return f"{change.agency_name}: answer the pending {change.state.value} hook of {label}"
        case ResolveIssue(agency_name=name, issue=issue):
            where = issue_label(issue, change.scope_host)
            return f"{name}: resolve {issue.kind.value} #{issue.key} on {where}: {fix_for(issue)}"
        case PurgeOrphans(name=name):
            return f"remove the agent VMs of agency {name}, whose engine state was lost"
        case UninstallAgency(name=name):
            return f"uninstall agency {name}: remove every agent VM"
        case DestroyAgency(name=name):
            return f"destroy agency {name}"
        case UnregisterExtension(key=key):
            return f"unregister extension {key}"
    assert_never(change)


def host_network_text(change: HostNetworkChange) -> str:
    """What one host network change does, as the plan line says it (after the agency's name)."""
    match change:
        case PrepareSwitch(step=step, switch=switch):
            where = f"DV port group {step.name} on distributed switch {switch}: {_trunk_text(step)}"
            if isinstance(step, RepairDvPortGroup):
                return f"repair {where} (was {step.was})"
            return f"create {where}"
        case JoinSwitch(members=members, switch=switch):
            shown = ", ".join(f"{label} with {uplink}" for _, label, uplink in members)
            hosts = f"{len(members)} host{'s' if len(members) != 1 else ''}"
            return f"add {hosts} to distributed switch {switch}: {shown}"
        case PrepareHostNetwork(where=where, steps=steps):
            return f"on {where}: " + "; ".join(_step_text(step) for step in steps)
    assert_never(change)


def _step_text(step: CreateVSwitch | CreatePortGroup | RepairPortGroup) -> str:
    match step:
        case CreateVSwitch(name=name, pnic=pnic):
            return f"create vSwitch {name} on {pnic}"
        case CreatePortGroup(name=name, vswitch=vswitch, vlan=vlan, security=security):
            return f"create port group {name} on vSwitch {vswitch}, VLAN {vlan}{_security_text(security)}"
        case RepairPortGroup(name=name, vswitch=vswitch, vlan=vlan, security=security, was=was):
            wanted = f"VLAN {vlan}{_security_text(security)}"
            return f"repair port group {name} on vSwitch {vswitch}: {wanted} (was {was})"
    assert_never(step)


def _trunk_text(step: CreateDvPortGroup | RepairDvPortGroup) -> str:
    return f"VLANs {vlan_text(step.vlans)}{_security_text(step.security)}"


def _security_text(security: SecurityPolicy) -> str:
    parts = [f"{name} {str(value).lower()}" for name, value in security_items(security) if value is not None]
    return "".join(f", {p}" for p in parts)


def describe_all(changes: Iterable[Change]) -> list[str]:
    """One line per change, or ``["no changes"]``."""
    return [describe(c) for c in changes] or ["no changes"]


def host_settings_text(change: SetHostSettings) -> str:
    """``datastore LocalDS_0, network VM Network``: what a ``SetHostSettings`` fills in."""
    parts = [(what, s) for what, s in (("datastore", change.datastore), ("network", change.network)) if s]
    return ", ".join(f"{what} {s.name}" for what, s in parts)


def issue_label(issue: Issue, host: ScopeHost | None) -> str:
    """Where an issue is, as plan lines and apply's reports say it: ``host host-21 (/DC0/host/C0/H0)``,
    ``agent agent-3`` or ``agency hello``; ``host`` is the scope host the issue is on (None: unknown)."""
    if issue.host is not None:
        return f"host {host_label(host) if host is not None else issue.host.value}"
    return f"agent {issue.agent}" if issue.agent else f"agency {issue.agency_name or issue.agency}"


def _set_certificate(change: SetCertificate) -> str:
    key = change.key
    if change.certificate is not None:
        line = f"set the login certificate of extension {key} to {change.certificate}"
        replaced = change.replaces
        if replaced is None:
            return line
        where = "generated on" if replaced.generated else f"solution.certFile {replaced.file} on"
        return (
            f"{line}, replacing the one {where} {replaced.host} (SHA-1 {replaced.sha1}): logins with "
            "that one (e.g. an agentvm run there) fail from then on"
        )
    if change.generated is not None:
        return f"set the login certificate of extension {key} to {change.generated}"
    return (
        f"set the login certificate of extension {key} to a new one, generated into "
        f"{change.state_dir} (the spec names none)"
    )


def _assign_address(change: AssignAddress) -> str:
    why = " (ipPlan.addresses)" if change.source is AddressSource.STATIC else ""
    where = f"{change.agency_name}: {host_label(change.scope_host)}"
    if change.previous is None:
        return f"{where} gets address {change.address}{why}"
    reason = why or " (the old one is no longer in the plan)"
    return f"{where} address {change.previous} → {change.address}{reason}"
