"""``agentvm status``: per agency, per cluster, per host — agent VM, power, hook, address, issues — as data.

Called by the CLI (``status`` table and ``status --json``) and by the controller's HTTP API, which serves
the same document (``controller.run``): ``status_document`` follows the versioned schema in
``agentvm/api/schema/status-v1.json`` (``"apiVersion": "agentvm/v1", "kind": "Status"``), loaded with
``status_schema()``. Every issue carries the sentence a person reads (``core.progress.issue_sentence``).

The rows are ``core.progress.host_rows``'; each host also carries ``state`` (green / yellow / red /
maintenance / flapping / misplaced, ``core.progress.status_row``), the dashboard's colour: ``maintenance``
when the host is in maintenance mode or standby (``StatusReport.conditions``, from the inventory read or the
controller's watch) or an agent issue says so; ``flapping`` when the controller gave up on its agent
because it kept coming back after each heal (``StatusReport.flapping``, the controller's memory: a one-shot
``agentvm status`` has none); ``misplaced`` when its agent VM runs on another host (vCenter's
``runtime.host`` against EAM's agent host; ``runsOn`` names it); else the agent's EAM status; left out
while a host has no agent and is not in maintenance mode. agentvm's own findings (misplaced, flapping) are
listed as ``problems`` with their sentence. See docs/architecture.md, "Observation".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from ipaddress import IPv4Address
from typing import Any

from agentvm.backends.base import AgencyStatus, Backend
from agentvm.controller.hostnet import HostNetworkShown, plan_host_networks
from agentvm.controller.observe import read_addresses, read_snapshot, vm_addresses
from agentvm.core.heal import (
    HostConditions,
    Misplaced,
    count_states,
    find_misplaced,
)
from agentvm.core.progress import (
    HostProgress,
    HostRows,
    host_rows,
    issue_sentence,
    status_row,
    summarize,
    update_host_rows,
)
from agentvm.core.scope import scope_host, scoped_hosts
from agentvm.model.agency import Issue, MoRef
from agentvm.model.desired import DesiredState, ScopeHost
from agentvm.model.inventory import Host, InventorySnapshot
from agentvm.vsphere.session import Session

API_VERSION = "agentvm/v1"
KIND = "Status"
SCHEMA_RESOURCE = "schema/status-v1.json"


@dataclass(frozen=True)
class AgencyReport:
    """One agency and one row per host."""

    status: AgencyStatus
    hosts: tuple[HostProgress, ...]

    @property
    def name(self) -> str:
        return self.status.name


@dataclass(frozen=True)
class StatusReport:
    """What ``status`` shows; ``missing`` names spec agencies that do not exist (yet); ``conditions`` are
    the hosts in maintenance mode / standby / unreachable as last observed (for each host's ``state``);
    ``flapping``: (agency name, host moid) -> why the controller gave up on that agent (it kept coming
    back)."""

    vcenter: str
    agencies: tuple[AgencyReport, ...]
    missing: tuple[str, ...] = ()
    conditions: HostConditions = field(default_factory=HostConditions)
    flapping: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # hostNetwork: host moid -> its networking as the last plan found it (none without hostNetwork)
    host_network: Mapping[str, HostNetworkShown] = field(default_factory=dict)

    @property
    def misplaced(self) -> tuple[Misplaced, ...]:
        """Every agent VM found on another host than its agent's (``agentvm resolve --all`` moves them)."""
        return tuple(r.misplaced for a in self.agencies for r in a.hosts if r.misplaced is not None)


def collect_status(session: Session, backend: Backend, desired: DesiredState | None = None) -> StatusReport:
    """Observe the spec's agencies (or every visible agency without a spec) with their hosts and addresses.

    Costs one bulk inventory read plus the backend's observe per agency. Raises the adapters' errors.
    """
    snapshot = read_snapshot(session)
    report = report_status(session.url, snapshot, backend, desired)
    if desired is None or not any(a.host_network is not None for a in desired.agencies):
        return report
    scoped = [(spec, scoped_hosts(spec, snapshot)) for spec in desired.agencies]
    return replace(report, host_network=plan_host_networks(session, scoped).hosts)


def report_status(
    vcenter: str, snapshot: InventorySnapshot, backend: Backend, desired: DesiredState | None = None
) -> StatusReport:
    """``collect_status`` on an inventory read already: ``snapshot`` (a follower's, kept from its watch by
    ``controller.observe.InventoryKeeper``). Costs the backend's observe per agency (which reads only the
    agents its last ``note`` says to, for a watching caller). Raises the adapters' errors."""
    found: list[AgencyStatus] = []
    missing: list[str] = []
    scopes: dict[str, tuple[ScopeHost, ...]] = {}
    if desired is None:
        found = backend.observe_all()
    else:
        for spec in desired.agencies:
            status = backend.observe(spec.name)
            if status is None:
                missing.append(spec.name)
                continue
            found.append(status)
            scopes[spec.name] = scoped_hosts(spec, snapshot)  # none: the scope changed under the spec
    reports = []
    moved = find_misplaced(found, vm_hosts(snapshot), host_names(snapshot))
    conditions = HostConditions.of(snapshot.hosts)
    for status in found:
        hosts = scopes.get(status.name) or _agent_hosts(snapshot, status)
        addresses = read_addresses(snapshot, status)
        rows = host_rows(
            status.name, status, hosts, addresses, snapshot, misplaced=moved, conditions=conditions
        )
        reports.append(AgencyReport(status, rows))
    return StatusReport(vcenter, tuple(reports), tuple(missing), conditions)


class LiveStatus:
    """The agencies' rows and agent counts of the controller's ``StatusReport``, kept from poll to poll:
    each poll makes again only the rows of the hosts whose inputs changed (``core.progress.update_host_rows``)
    and counts again only an agency whose agents or host conditions changed, so that a poll that saw no
    change costs a lookup per host. Called by ``controller.reconcile.Reconciler`` on its loop thread only.
    """

    def __init__(self) -> None:
        self._rows: dict[str, HostRows] = {}  # agency name -> its rows as last made
        self._counts: dict[str, tuple[tuple[object, ...], dict[str, int]]] = {}  # name -> (inputs, counts)
        self._snapshot: InventorySnapshot | None = None
        self._carried: dict[str, IPv4Address] = {}  # VM moid -> address, of ``_snapshot``

    def counts(
        self,
        status: AgencyStatus,
        conditions: HostConditions,
        flapping: frozenset[str],
        misplaced: frozenset[str],
    ) -> dict[str, int]:
        """``core.heal.count_states`` of the agency's agents (``flapping``/``misplaced``: agent ids)."""
        key: tuple[object, ...] = (status.agents, conditions, flapping, misplaced)
        known = self._counts.get(status.name)
        if known is None or known[0] != key:
            known = (key, count_states(status.agents, conditions, flapping=flapping, misplaced=misplaced))
            self._counts[status.name] = known
        return dict(known[1])

    def report(
        self,
        name: str,
        status: AgencyStatus,
        hosts: Iterable[ScopeHost],
        planned: Mapping[str, IPv4Address],
        snapshot: InventorySnapshot | None,
        misplaced: Sequence[Misplaced] = (),
    ) -> AgencyReport:
        """The rows of the spec's agency ``name``: the addresses its agent VMs carried at the last full read
        (``snapshot``), else, for a VM configured since, the ``planned`` one (host moid -> address)."""
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._carried = vm_addresses(snapshot) if snapshot is not None else {}
        addresses: dict[str, IPv4Address] = (
            read_addresses(snapshot, status, carried=self._carried) if snapshot is not None else {}
        )
        for agent in status.agents:
            address = planned.get(agent.host.value)
            if address is not None and agent.vm is not None and agent.hook is None:
                addresses.setdefault(agent.host.value, address)
        rows = update_host_rows(
            self._rows.get(name), name, status, hosts, addresses, snapshot, misplaced=misplaced
        )
        self._rows[name] = rows
        return AgencyReport(status, rows.rows)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what is kept for agencies not in ``keep`` (names), so that memory follows the spec."""
        names = set(keep)
        for table in (self._rows, self._counts):
            for name in [n for n in table if n not in names]:
                del table[name]


def vm_hosts(snapshot: InventorySnapshot) -> dict[MoRef, MoRef]:
    """VM -> the host it runs on (``runtime.host``), from one inventory read."""
    return {vm.moref: vm.host for vm in snapshot.vms if vm.host is not None}


def host_names(snapshot: InventorySnapshot) -> dict[MoRef, str]:
    """Host -> its name, for the sentences about misplaced agent VMs."""
    return {host.moref: host.name for host in snapshot.hosts}


def _agent_hosts(snapshot: InventorySnapshot, status: AgencyStatus) -> tuple[ScopeHost, ...]:
    hosts = []
    for agent in status.agents:
        host = snapshot.get(agent.host)
        if isinstance(host, Host):
            hosts.append(scope_host(snapshot, host))
        elif host is not None:
            hosts.append(scope_host(snapshot, snapshot.find_host(host.moref.value)))
    return tuple(hosts)


# ------------------------------------------------------------------------------------------- document


def issue_json(issue: Issue) -> dict[str, Any]:
    return {
        "key": issue.key,
        "kind": issue.kind.value,
        "message": issue_sentence(issue),
        "remedy": issue.remedy.value,
        "host": issue.host.value if issue.host else None,
        "vm": issue.vm.value if issue.vm else None,
    }


def host_json(
    row: HostProgress,
    conditions: HostConditions | None = None,
    flapping: Mapping[tuple[str, str], str] | None = None,
    network: Mapping[str, HostNetworkShown] | None = None,
) -> dict[str, Any]:
    """One host of the document (``core.progress.status_row``); ``state`` only when the host has one,
    ``runsOn`` only when the agent VM runs on another host."""
    shown = status_row(row, conditions, flapping)
    out: dict[str, Any] = {
        "name": row.label.rsplit("/", 1)[-1],
        "moid": row.host,
        "path": row.label,
        "phase": row.phase.value,
        "status": row.status.value if row.status else None,
        "vm": {"moid": row.vm, "name": row.vm_name} if row.vm else None,
        "powerState": row.power.value if row.power else None,
        "hookPending": row.hook.value if row.hook else None,
        "address": row.address,
        "issues": [issue_json(i) for i in row.issues],
        "problems": [{"kind": p.kind, "message": p.message} for p in shown.problems],
    }
    if row.misplaced is not None:
        out["runsOn"] = {"moid": row.misplaced.runs_on.value, "name": row.misplaced.runs_on_name}
    if shown.state is not None:
        out["state"] = shown.state.value
    net = (network or {}).get(row.host)
    if net is not None:
        out["network"] = {"state": net.state, "message": net.message or None}
    return out


def agency_json(
    report: AgencyReport,
    conditions: HostConditions | None = None,
    flapping: Mapping[tuple[str, str], str] | None = None,
    network: Mapping[str, HostNetworkShown] | None = None,
) -> dict[str, Any]:
    status = report.status
    clusters: dict[str, dict[str, Any]] = {}
    for row in report.hosts:
        path = row.label.rsplit("/", 1)[0] if "/" in row.label else ""
        entry = clusters.setdefault(
            path,
            {"name": row.cluster or None, "path": path or None, "standalone": not row.cluster, "hosts": []},
        )
        entry["hosts"].append(host_json(row, conditions, flapping, network))
    counted = summarize(report.hosts)
    return {
        "name": status.name,
        "id": status.agency,
        "status": status.status.value,
        "goalState": status.goal_state.value,
        "issues": [issue_json(i) for i in status.issues if i.agent is None],
        "summary": {
            "hosts": counted.hosts,
            "ready": counted.ready,
            "issues": counted.issues,
            "hooksPending": counted.hooks_pending,
            "addresses": counted.addresses,
        },
        "clusters": list(clusters.values()),
    }


def status_document(report: StatusReport, now: datetime) -> dict[str, Any]:
    """The ``status --json`` document (schema: ``status_schema()``)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "vcenter": report.vcenter,
        "generatedAt": now.isoformat(),
        "agencies": [
            agency_json(a, report.conditions, report.flapping, report.host_network) for a in report.agencies
        ],
        "missing": list(report.missing),
    }


def status_schema() -> dict[str, Any]:
    """The JSON schema of ``status_document`` (draft 2020-12), shipped in the package."""
    text = resources.files("agentvm.api").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
