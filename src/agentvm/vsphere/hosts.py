"""Host operations: AgentVM settings (EsxAgentHostManager), maintenance mode, adding a host to a cluster.

Used by the engine (per-host agent VM datastore/network, maintenance mode around agent VMs), ``agentvm
apply`` (preparing hosts) and tests (adding hosts). Every operation is idempotent: it reads first and does
nothing when the host is already as asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.inventory import ConnectionState, Host, HostPowerState
from agentvm.vsphere.collector import read_one
from agentvm.vsphere.faults import fault_name
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task


@dataclass(frozen=True)
class AgentVmSettings:
    """A host's ``EsxAgentHostManager.configInfo``: where EAM puts agent VMs on it."""

    datastore: MoRef | None = None
    network: MoRef | None = None


def _host(session: Session, host: MoRef) -> Any:
    if host.type != "HostSystem":
        raise ConfigurationError(f"{host} is not a host (HostSystem)")
    return session.mo(host)


def _manager(session: Session, host: MoRef, label: str) -> Any:
    props = read_one(session, _host(session, host), ["configManager.esxAgentHostManager"])
    manager = props.get("configManager.esxAgentHostManager")
    if manager is None:
        raise ConfigurationError(
            f"{label} has no EsxAgentHostManager (configManager.esxAgentHostManager is unset): "
            "it needs ESXi 5.0 or later, managed by vCenter"
        )
    return manager


def get_agent_vm_settings(session: Session, host: MoRef, *, label: str | None = None) -> AgentVmSettings:
    """The host's agent VM datastore and network (two calls). ``label`` names the host in messages."""
    label = label or host.value
    manager = _manager(session, host, label)
    info = read_one(session, manager, ["configInfo"]).get("configInfo")
    return AgentVmSettings(
        datastore=_ref(getattr(info, "agentVmDatastore", None)),
        network=_ref(getattr(info, "agentVmNetwork", None)),
    )


def ensure_agent_vm_settings(
    session: Session, host: MoRef, settings: AgentVmSettings, *, label: str | None = None
) -> bool:
    """Set the host's agent VM datastore/network if they differ; True if changed.

    Raises ConfigurationError naming the host when it cannot see the datastore or network.
    """
    label = label or host.value
    manager = _manager(session, host, label)
    info = read_one(session, manager, ["configInfo"]).get("configInfo")
    current = AgentVmSettings(
        datastore=_ref(getattr(info, "agentVmDatastore", None)),
        network=_ref(getattr(info, "agentVmNetwork", None)),
    )
    if _values(current) == _values(settings):
        return False
    _update_config(session, manager, settings, label)
    return True


def set_agent_vm_settings(session: Session, manager: MoRef, settings: AgentVmSettings, *, label: str) -> None:
    """Set the agent VM datastore/network through the host's EsxAgentHostManager ``manager``, as they are
    (an unset one is cleared): one call, no read. For a caller that read the host's manager and current
    settings already (the controller's plan, from its inventory read) and sends back what it keeps.

    Raises ConfigurationError naming the host (``label``) when it cannot see the datastore or network.
    """
    _update_config(session, session.mo(manager), settings, label)


def _update_config(session: Session, manager: Any, settings: AgentVmSettings, label: str) -> None:
    config = vim.host.EsxAgentHostManager.ConfigInfo(
        agentVmDatastore=session.mo(settings.datastore) if settings.datastore else None,
        agentVmNetwork=session.mo(settings.network) if settings.network else None,
    )
    try:
        manager.EsxAgentHostManagerUpdateConfig(configInfo=config)
    except ConfigurationError as exc:
        if fault_name(exc) == "InvalidArgument":
            raise ConfigurationError(
                f"cannot set the agent VM settings of {label} to datastore "
                f"{settings.datastore.value if settings.datastore else '-'} / network "
                f"{settings.network.value if settings.network else '-'}: the host cannot see them "
                f"({exc}); choose a datastore and network mounted on this host"
            ) from exc
        raise


def clear_agent_vm_settings(
    session: Session, host: MoRef, ours: AgentVmSettings, *, label: str | None = None
) -> AgentVmSettings:
    """Unset the host's agent VM datastore/network where each still is the one in ``ours``; the others
    (changed since, or never ours) are kept. Returns what was cleared. Called by ``destroy --host-settings``.
    """
    label = label or host.value
    manager = _manager(session, host, label)
    info = read_one(session, manager, ["configInfo"]).get("configInfo")
    current = AgentVmSettings(
        datastore=_ref(getattr(info, "agentVmDatastore", None)),
        network=_ref(getattr(info, "agentVmNetwork", None)),
    )
    (ds, nw), (our_ds, our_nw) = _values(current), _values(ours)
    cleared = AgentVmSettings(
        datastore=current.datastore if ds is not None and ds == our_ds else None,
        network=current.network if nw is not None and nw == our_nw else None,
    )
    if cleared == AgentVmSettings():
        return cleared
    kept = AgentVmSettings(
        datastore=None if cleared.datastore else current.datastore,
        network=None if cleared.network else current.network,
    )
    config = vim.host.EsxAgentHostManager.ConfigInfo(
        agentVmDatastore=session.mo(kept.datastore) if kept.datastore else None,
        agentVmNetwork=session.mo(kept.network) if kept.network else None,
    )
    manager.EsxAgentHostManagerUpdateConfig(configInfo=config)
    return cleared


HOST_RUNTIME = ("runtime.inMaintenanceMode", "runtime.connectionState", "runtime.powerState")


def read_host_runtime(session: Session, host: MoRef) -> Host:
    """Host ``host`` as a model ``Host`` carrying only its runtime state (maintenance mode, connection and
    power state), read now in one call; name and path are left empty. NotFoundError when it is gone.

    For the controller, which reads the hosts it is about to act on again (vcsim reports no update for
    maintenance mode) and classifies them with ``core.heal.HostConditions.of``.
    """
    props = read_one(session, _host(session, host), HOST_RUNTIME)
    connection = str(props.get("runtime.connectionState", "connected"))
    power = str(props.get("runtime.powerState", "poweredOn"))  # absent: a host that runs
    return Host(
        host,
        "",
        "",
        # a state this code does not know is taken as unreachable: never acted on as if it were well
        connection_state=(
            ConnectionState(connection)
            if connection in ConnectionState.__members__.values()
            else ConnectionState.NOT_RESPONDING
        ),
        in_maintenance_mode=bool(props.get("runtime.inMaintenanceMode", False)),
        power_state=(
            HostPowerState(power) if power in HostPowerState.__members__.values() else HostPowerState.UNKNOWN
        ),
    )


def in_maintenance_mode(session: Session, host: MoRef) -> bool:
    props = read_one(session, _host(session, host), ["runtime.inMaintenanceMode"])
    return bool(props.get("runtime.inMaintenanceMode", False))


def ensure_maintenance_mode(
    session: Session, host: MoRef, enabled: bool, *, label: str | None = None, timeout: float = 600.0
) -> bool:
    """Enter (``enabled``) or exit maintenance mode unless already there; True if changed."""
    label = label or host.value
    if in_maintenance_mode(session, host) == enabled:
        return False
    obj = _host(session, host)
    if enabled:
        task = obj.EnterMaintenanceMode_Task(timeout=int(timeout), evacuatePoweredOffVms=False)
        wait_for_task(session, task, what=f"enter maintenance mode on {label}", timeout=timeout)
    else:
        task = obj.ExitMaintenanceMode_Task(timeout=int(timeout))
        wait_for_task(session, task, what=f"exit maintenance mode on {label}", timeout=timeout)
    return True


def add_host(
    session: Session,
    cluster: MoRef,
    host_name: str,
    *,
    username: str,
    password: str,
    ssl_thumbprint: str | None = None,
    label: str | None = None,
    timeout: float = 600.0,
) -> MoRef:
    """Add an ESXi host to a cluster (``AddHost_Task``), connected and out of maintenance mode.

    Returns the new host's reference. Raises ConfigurationError (bad name, credentials, duplicate) or
    TransientError (the host cannot be reached now).
    """
    label = label or cluster.value
    spec = vim.host.ConnectSpec(
        hostName=host_name, userName=username, password=password, sslThumbprint=ssl_thumbprint, force=True
    )
    task = session.mo(cluster).AddHost_Task(spec=spec, asConnected=True)
    result = wait_for_task(session, task, what=f"add host {host_name} to {label}", timeout=timeout)
    if result is None:
        raise NotFoundError(f"adding host {host_name} to {label} returned no host")
    return MoRef(str(result._wsdlName), str(result._moId))


def _values(settings: AgentVmSettings) -> tuple[str | None, str | None]:
    # by moid: a reference read back may name a base type (Network) for a subtype (DV port group)
    ds, nw = settings.datastore, settings.network
    return (ds.value if ds else None, nw.value if nw else None)


def _ref(obj: Any) -> MoRef | None:
    return MoRef(str(obj._wsdlName), str(obj._moId)) if obj is not None else None
