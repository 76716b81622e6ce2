"""A standalone host's VM autostart (``HostAutoStartManager``): the agent VM starts first and stops last.

Used by the engine on a host agent (``engine.vsphere_infra``), where there is no HA to restart an agent
VM after a host reboot: the host itself starts it, before any other VM, and stops it after every other.
ESXi stops VMs in the reverse of their start order, so start order 1 is also "stop last".

``ReconfigureAutostart`` on ``host.configManager.autoStartManager`` merges its spec into the host's
config (ESXi's semantics, reproduced by the lab's ``lab/vcsim/autostart.go``): a field set in
``defaults`` replaces that default, each ``powerInfo`` entry replaces its VM's entry, and an entry with
start and stop action both ``none`` takes the VM out of the sequence. So these functions send only the
agent VM's own entry (and ``enabled`` when it is off): the other VMs' entries are kept as the host's
administrator set them. Each reads the manager's config first and writes only when something differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.session import Session

AUTO = vim.host.AutoStartManager
START_ACTION = "powerOn"
STOP_ACTIONS = ("guestShutdown", "powerOff")
_OUT = "none"  # start and stop action "none": not in the sequence


@dataclass(frozen=True)
class AutostartEntry:
    """One VM's place in a host's start sequence (``AutoStartPowerInfo``)."""

    vm: MoRef
    start_order: int
    start_action: str
    stop_action: str


@dataclass(frozen=True)
class AutostartConfig:
    """A host's autostart settings as read back: enabled, and the entries in start order."""

    manager: MoRef
    enabled: bool
    entries: tuple[AutostartEntry, ...]

    def entry(self, vm: MoRef) -> AutostartEntry | None:
        return next((e for e in self.entries if e.vm == vm), None)


def manager_of(session: Session, host: MoRef) -> MoRef:
    """The host's ``configManager.autoStartManager`` (one call). ConfigurationError when it has none."""
    value = read_one(session, session.mo(host), ["configManager.autoStartManager"]).get(
        "configManager.autoStartManager"
    )
    if value is None:
        raise ConfigurationError(f"{host} has no autostart manager (configManager.autoStartManager)")
    return MoRef(str(value._wsdlName), str(value._moId))


def read_config(session: Session, manager: MoRef) -> AutostartConfig:
    """The manager's ``config`` (one call)."""
    config = read_one(session, session.mo(manager), ["config"]).get("config")
    defaults = getattr(config, "defaults", None)
    entries = tuple(
        AutostartEntry(
            vm=MoRef("VirtualMachine", str(p.key._moId)),
            start_order=int(p.startOrder),
            start_action=str(p.startAction),
            stop_action=str(p.stopAction),
        )
        for p in getattr(config, "powerInfo", None) or ()
    )
    return AutostartConfig(manager, bool(getattr(defaults, "enabled", False)), entries)


def _power_info(vm: Any, order: int, start: str, stop: str) -> Any:
    return AUTO.AutoPowerInfo(
        key=vm,
        startOrder=order,
        startDelay=-1,  # -1: the host's default delay
        stopDelay=-1,
        waitForHeartbeat="systemDefault",
        startAction=start,
        stopAction=stop,
    )


def ensure_first(session: Session, manager: MoRef, vm: MoRef, *, stop_action: str = "guestShutdown") -> bool:
    """Autostart enabled and ``vm`` first in the start sequence (start action powerOn, ``stop_action``),
    the other entries kept; True when it wrote (ReconfigureAutostart), False when it already was so."""
    if stop_action not in STOP_ACTIONS:
        raise ConfigurationError(f"stop action {stop_action!r} is not one of {', '.join(STOP_ACTIONS)}")
    current = read_config(session, manager)
    first = current.entries[0] if current.entries else None
    wanted = AutostartEntry(vm, 1, START_ACTION, stop_action)
    if current.enabled and first == wanted:
        return False
    spec = AUTO.Config(powerInfo=[_power_info(session.mo(vm), 1, START_ACTION, stop_action)])
    if not current.enabled:
        spec.defaults = AUTO.SystemDefaults(enabled=True)
    session.mo(manager).ReconfigureAutostart(spec)
    return True


def ensure_removed(session: Session, manager: MoRef, vm: MoRef) -> bool:
    """``vm`` out of the start sequence (the others kept); True when it wrote. Call it while the VM still
    exists: the host refuses an entry for a VM it does not have (InvalidArgument), and does not remove a
    deleted VM's entry by itself. A VM already gone (NotFoundError) is left as it is: False."""
    current = read_config(session, manager)
    if current.entry(vm) is None:
        return False
    spec = AUTO.Config(powerInfo=[_power_info(session.mo(vm), -1, _OUT, _OUT)])
    try:
        session.mo(manager).ReconfigureAutostart(spec)
    except NotFoundError:
        return False
    return True
