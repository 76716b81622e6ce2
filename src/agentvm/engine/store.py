"""The engine's state file: agencies, agents, hooks, issues and counters as JSON, written atomically.

Why a file and not vCenter itself: vCenter has no natural home for an agency's config (the closest are
custom attributes or an extension's extraConfig-like blobs, which are size-limited, string-typed, need
extra privileges and cost a round trip per write), and the engine must remember things vCenter cannot
tell it — which power-offs it did itself (so that a VM powered off by someone else is an issue, not a
job), pending hooks, latched issues and the issue-key counter. That is what EAM keeps in its own database.
vCenter remains the source of truth for what exists: on start the engine re-reads its marked VMs
(``Infrastructure.find_owned_vms``) and every reconcile checks the file's memory against them — a VM
deleted while the engine was down becomes VmNotDeployed, a VM deployed but not yet recorded is adopted, a
half-deployed VM (its import never finished) is deleted. Losing the file loses no VM: a VM of an agency
the file does not know is kept, and adopted (same host, same VM, same address) when an agency of its name
is created again; ``destroy --backend direct`` deletes such VMs by their marker. The file also keeps the
retries held back after transient failures, so a restart does not retry at once.

Written with write-to-temp + fsync + rename, so a crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from agentvm.core.agent_state import AgencyState, AgentState, EngineState, Retry
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    FolderMapping,
    GoalState,
    HookState,
    Issue,
    IssueKind,
    MoRef,
    OvfProperty,
    ResourcePoolMapping,
    VmHook,
)

FORMAT = 1


def _ref(m: MoRef | None) -> str | None:
    return str(m) if m is not None else None


def _moref(text: Any) -> MoRef | None:
    return MoRef.parse(text) if text else None


def _refs(items: Any) -> tuple[MoRef, ...]:
    return tuple(MoRef.parse(t) for t in items)


def _config_to(c: AgencyConfig) -> dict[str, Any]:
    return {
        "agencyName": c.agency_name,
        "agentConfigs": [
            {
                "ovfPackageUrl": a.ovf_package_url,
                "ovfEnvironment": [[p.key, p.value] for p in a.ovf_environment],
                "productLineId": a.product_line_id,
                "hostVersion": a.host_version,
                "ovfDiskProvisioning": a.ovf_disk_provisioning,
                "vibUrl": a.vib_url,
            }
            for a in c.agent_configs
        ],
        "scope": [str(m) for m in c.scope],
        "agentName": c.agent_name,
        "useUuidVmName": c.use_uuid_vm_name,
        "agentVmDatastores": [str(m) for m in c.agent_vm_datastores],
        "agentVmNetworks": [str(m) for m in c.agent_vm_networks],
        "preferHostConfiguration": c.prefer_host_configuration,
        "folders": [[str(f.folder), str(f.datacenter)] for f in c.folders],
        "resourcePools": [[str(p.resource_pool), str(p.compute_resource)] for p in c.resource_pools],
        "afterProvisioning": c.manually_mark_available_after_provisioning,
        "afterPowerOn": c.manually_mark_available_after_power_on,
        "optimizedDeploymentEnabled": c.optimized_deployment_enabled,
    }


def _config_from(d: dict[str, Any]) -> AgencyConfig:
    return AgencyConfig(
        agency_name=d["agencyName"],
        agent_configs=tuple(
            AgentConfig(
                ovf_package_url=a["ovfPackageUrl"],
                ovf_environment=tuple(OvfProperty(k, v) for k, v in a["ovfEnvironment"]),
                product_line_id=a["productLineId"],
                host_version=a["hostVersion"],
                ovf_disk_provisioning=a["ovfDiskProvisioning"],
                vib_url=a["vibUrl"],
            )
            for a in d["agentConfigs"]
        ),
        scope=_refs(d["scope"]),
        agent_name=d["agentName"],
        use_uuid_vm_name=d["useUuidVmName"],
        agent_vm_datastores=_refs(d["agentVmDatastores"]),
        agent_vm_networks=_refs(d["agentVmNetworks"]),
        prefer_host_configuration=d["preferHostConfiguration"],
        folders=tuple(FolderMapping(MoRef.parse(f), MoRef.parse(dc)) for f, dc in d["folders"]),
        resource_pools=tuple(
            ResourcePoolMapping(MoRef.parse(p), MoRef.parse(cr)) for p, cr in d["resourcePools"]
        ),
        manually_mark_available_after_provisioning=d["afterProvisioning"],
        manually_mark_available_after_power_on=d["afterPowerOn"],
        optimized_deployment_enabled=d["optimizedDeploymentEnabled"],
    )


def _issue_to(i: Issue) -> dict[str, Any]:
    return {
        "key": i.key,
        "kind": i.kind.value,
        "time": i.time.isoformat(),
        "agency": i.agency,
        "agencyName": i.agency_name,
        "agent": i.agent,
        "agentName": i.agent_name,
        "host": _ref(i.host),
        "hostName": i.host_name,
        "vm": _ref(i.vm),
        "vmName": i.vm_name,
        "detail": {k: (list(v) if isinstance(v, tuple) else v) for k, v in i.detail.items()},
    }


def _issue_from(d: dict[str, Any]) -> Issue:
    return Issue(
        key=d["key"],
        kind=IssueKind(d["kind"]),
        time=datetime.fromisoformat(d["time"]),
        agency=d["agency"],
        agency_name=d["agencyName"],
        agent=d["agent"],
        agent_name=d["agentName"],
        host=_moref(d["host"]),
        host_name=d["hostName"],
        vm=_moref(d["vm"]),
        vm_name=d["vmName"],
        detail={k: (tuple(v) if isinstance(v, list) else v) for k, v in d["detail"].items()},
    )


def _agent_to(a: AgentState) -> dict[str, Any]:
    return {
        "id": a.id,
        "host": str(a.host),
        "vm": _ref(a.vm),
        "vmName": a.vm_name,
        "vmOvfUrl": a.vm_ovf_url,
        "powered": a.powered,
        "hook": [str(a.hook.vm), a.hook.state.value] if a.hook else None,
        "upgradeVm": _ref(a.upgrade_vm),
        "upgradeVmName": a.upgrade_vm_name,
        "upgradeOvfUrl": a.upgrade_ovf_url,
        "upgrading": a.upgrading,
        "powerOffRequested": a.power_off_requested,
        "issues": [_issue_to(i) for i in a.issues],
    }


def _agent_from(d: dict[str, Any]) -> AgentState:
    hook = d["hook"]
    return AgentState(
        id=d["id"],
        host=MoRef.parse(d["host"]),
        vm=_moref(d["vm"]),
        vm_name=d["vmName"],
        vm_ovf_url=d["vmOvfUrl"],
        powered=d["powered"],
        hook=VmHook(MoRef.parse(hook[0]), HookState(hook[1])) if hook else None,
        upgrade_vm=_moref(d["upgradeVm"]),
        upgrade_vm_name=d["upgradeVmName"],
        upgrade_ovf_url=d["upgradeOvfUrl"],
        upgrading=d["upgrading"],
        power_off_requested=d["powerOffRequested"],
        issues=tuple(_issue_from(i) for i in d["issues"]),
    )


def to_json(state: EngineState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "namespace": state.namespace,
        "nextIssueKey": state.next_issue_key,
        "nextId": state.next_id,
        "agencies": [
            {
                "id": a.id,
                "config": _config_to(a.config),
                "goal": a.goal.value,
                "solutionId": a.solution_id,
                "destroying": a.destroying,
                "vmCounter": a.vm_counter,
                "issues": [_issue_to(i) for i in a.issues],
                "agents": [_agent_to(x) for x in a.agents],
            }
            for a in state.agencies
        ],
        "retries": [
            {
                "kind": r.kind,
                "target": r.target,
                "attempts": r.attempts,
                "notBefore": r.not_before.isoformat(),
                "error": r.error,
                "agency": r.agency,
                "agent": r.agent,
                "gaveUp": r.gave_up,
                "detail": r.detail,
            }
            for r in state.retries
        ],
        "purge": list(state.purge),
    }


def from_json(d: dict[str, Any]) -> EngineState:
    """Raises ValueError for a file of another format (the message names the fix)."""
    if d.get("format") != FORMAT:
        raise ValueError(f"engine state format {d.get('format')!r} is not {FORMAT}: move the file aside")
    return EngineState(
        namespace=d["namespace"],
        next_issue_key=d["nextIssueKey"],
        next_id=d["nextId"],
        agencies=tuple(
            AgencyState(
                id=a["id"],
                config=_config_from(a["config"]),
                goal=GoalState(a["goal"]),
                solution_id=a["solutionId"],
                destroying=a["destroying"],
                vm_counter=a["vmCounter"],
                issues=tuple(_issue_from(i) for i in a["issues"]),
                agents=tuple(_agent_from(x) for x in a["agents"]),
            )
            for a in d["agencies"]
        ),
        # absent from files written before retries were kept: none held back
        retries=tuple(
            Retry(
                kind=r["kind"],
                target=r["target"],
                attempts=r["attempts"],
                not_before=datetime.fromisoformat(r["notBefore"]),
                error=r["error"],
                agency=r["agency"],
                agent=r["agent"],
                gave_up=r["gaveUp"],
                detail=r["detail"],
            )
            for r in d.get("retries", ())
        ),
        purge=tuple(d.get("purge", ())),
    )


class StateFile:
    """One JSON file holding the engine state. ``load`` gives None when there is none yet."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> EngineState | None:
        """Raises ValueError naming the file when it is unreadable (a corrupt file is never ignored)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read the engine state file {self.path}: {e}") from e

    def save(self, state: EngineState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(to_json(state), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
