"""Cluster VM overrides for agent VMs: pin to the host (DRS) and restart first (HA), as EAM does.

Used by the engine after it deploys an agent VM. Both read ``configurationEx`` once and reconfigure only
when the override is missing or different (``ReconfigureComputeResource_Task`` with ``modify=True``).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task

DRS_BEHAVIORS = ("manual", "partiallyAutomated", "fullyAutomated")
HA_RESTART_PRIORITIES = ("disabled", "lowest", "low", "medium", "high", "highest")


def _cluster(session: Session, cluster: MoRef) -> Any:
    if cluster.type != "ClusterComputeResource":
        raise ConfigurationError(f"{cluster} is not a cluster (ClusterComputeResource)")
    return session.mo(cluster)


def _config(session: Session, cluster: MoRef) -> Any:
    return read_one(session, _cluster(session, cluster), ["configurationEx"]).get("configurationEx")


def _find(entries: Any, vm: MoRef) -> Any:
    for entry in entries or ():
        if getattr(entry.key, "_moId", None) == vm.value:
            return entry
    return None


def ensure_drs_vm_override(
    session: Session,
    cluster: MoRef,
    vm: MoRef,
    *,
    enabled: bool = False,
    behavior: str = "manual",
    label: str | None = None,
    timeout: float = 300.0,
) -> bool:
    """A DRS override for ``vm`` (default: DRS disabled for it, so it stays on its host). True if changed."""
    if behavior not in DRS_BEHAVIORS:
        raise ConfigurationError(f"DRS behavior {behavior!r} is not one of {', '.join(DRS_BEHAVIORS)}")
    current = _find(getattr(_config(session, cluster), "drsVmConfig", None), vm)
    if current is not None and bool(current.enabled) == enabled and str(current.behavior) == behavior:
        return False
    info = vim.cluster.DrsVmConfigInfo(key=session.mo(vm), enabled=enabled, behavior=behavior)
    operation = "edit" if current is not None else "add"
    spec = vim.cluster.ConfigSpecEx(
        drsVmConfigSpec=[vim.cluster.DrsVmConfigSpec(operation=operation, info=info)]
    )
    task = _cluster(session, cluster).ReconfigureComputeResource_Task(spec=spec, modify=True)
    wait_for_task(session, task, what=f"DRS override for {label or vm.value}", timeout=timeout)
    return True


def ensure_ha_vm_override(
    session: Session,
    cluster: MoRef,
    vm: MoRef,
    *,
    restart_priority: str = "highest",
    label: str | None = None,
    timeout: float = 300.0,
) -> bool:
    """An HA override giving ``vm`` the restart priority (default highest, as EAM does). True if changed."""
    if restart_priority not in HA_RESTART_PRIORITIES:
        raise ConfigurationError(
            f"HA restart priority {restart_priority!r} is not one of {', '.join(HA_RESTART_PRIORITIES)}"
        )
    current = _find(getattr(_config(session, cluster), "dasVmConfig", None), vm)
    current_priority = getattr(getattr(current, "dasSettings", None), "restartPriority", None)
    if current is not None and current_priority == restart_priority:
        return False
    info = vim.cluster.DasVmConfigInfo(
        key=session.mo(vm), dasSettings=vim.cluster.DasVmSettings(restartPriority=restart_priority)
    )
    operation = "edit" if current is not None else "add"
    spec = vim.cluster.ConfigSpecEx(
        dasVmConfigSpec=[vim.cluster.DasVmConfigSpec(operation=operation, info=info)]
    )
    task = _cluster(session, cluster).ReconfigureComputeResource_Task(spec=spec, modify=True)
    wait_for_task(session, task, what=f"HA override for {label or vm.value}", timeout=timeout)
    return True
