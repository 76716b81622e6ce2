"""Where an agent VM goes and what it is called (docs/eam.md, "Methods", "Host settings"). Pure.

Called by ``core.agents`` whenever an agent VM must be deployed (install, redeploy, upgrade).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from agentvm.model.agency import (
    DETAIL_CUSTOM_DATASTORE,
    DETAIL_CUSTOM_NETWORK,
    AgencyConfig,
    AgentConfig,
    IssueKind,
    MoRef,
)
from agentvm.model.inventory import Host

Detail = Mapping[str, str | tuple[str, ...]]


def match_agent_config(configs: Sequence[AgentConfig], host: Host) -> AgentConfig | None:
    """The first agent config whose productLineId and hostVersion match the host, or None.

    A missing productLineId / hostVersion matches any host; hostVersion may use wildcards ("7.*").
    """
    for config in configs:
        if config.product_line_id and config.product_line_id != host.product_line_id:
            continue
        if config.host_version and not fnmatchcase(host.product_version, config.host_version):
            continue
        return config
    return None


@dataclass(frozen=True)
class AgentPlacement:
    datastore: MoRef
    network: MoRef
    folder: MoRef | None
    pool: MoRef | None


def _choose(
    candidates: Sequence[MoRef],
    host_setting: MoRef | None,
    prefer_host: bool,
    visible: Sequence[MoRef],
    names: Mapping[MoRef, str],
    missing: IssueKind,
    missing_custom: IssueKind,
    field_name: str,
) -> MoRef | tuple[IssueKind, Detail]:
    """EAM's per-host choice of one resource, datastore or network (docs/eam.md, "Host settings").

    With no agency list, or preferHostConfiguration, the host's EsxAgentHostManager setting wins; when the
    host has none we fall back to the agency list [I: the reference only says the host setting is used].
    Otherwise the first listed candidate that the host can see.
    """
    if (not candidates or prefer_host) and host_setting is not None:
        return host_setting
    if not candidates:
        return missing, {}
    for candidate in candidates:
        if candidate in visible:
            return candidate
    detail: Detail = {
        field_name: tuple(str(c) for c in candidates),
        f"{field_name}_name": tuple(names.get(c, c.value) for c in candidates),
    }
    return missing_custom, detail


def choose_placement(
    config: AgencyConfig,
    host: Host,
    *,
    default_pool: MoRef | None,
    default_folder: MoRef | None,
    names: Mapping[MoRef, str],
) -> AgentPlacement | list[tuple[IssueKind, Detail]]:
    """The datastore, network, folder and pool for an agent VM on ``host``, or the issues that block it.

    Folder and pool come from the agency's per-datacenter / per-compute-resource mappings, else from the
    defaults the infrastructure reports (EAM creates its own "ESX Agents" folder and pool there [I]).
    """
    datastore = _choose(
        config.agent_vm_datastores,
        host.agent_vm_datastore,
        config.prefer_host_configuration,
        host.datastores,
        names,
        IssueKind.NO_AGENT_VM_DATASTORE,
        IssueKind.NO_CUSTOM_AGENT_VM_DATASTORE,
        DETAIL_CUSTOM_DATASTORE,
    )
    network = _choose(
        config.agent_vm_networks,
        host.agent_vm_network,
        config.prefer_host_configuration,
        host.networks,
        names,
        IssueKind.NO_AGENT_VM_NETWORK,
        IssueKind.NO_CUSTOM_AGENT_VM_NETWORK,
        DETAIL_CUSTOM_NETWORK,
    )
    problems = [r for r in (datastore, network) if isinstance(r, tuple)]
    if problems or not isinstance(datastore, MoRef) or not isinstance(network, MoRef):
        return problems
    folder = next((f.folder for f in config.folders if f.datacenter == host.datacenter), default_folder)
    pool = next(
        (p.resource_pool for p in config.resource_pools if p.compute_resource == host.parent), default_pool
    )
    return AgentPlacement(datastore, network, folder, pool)


MAX_AGENT_NAME = 70
MAX_UUID_AGENT_NAME = 43


def vm_name(config: AgencyConfig, namespace: str, agent_id: str, number: int) -> str:
    """``<agentName> (N)``, or ``<agentName>-<uuid>`` with useUuidVmName (docs/eam.md, "Methods").

    The uuid is derived from the agent and N, so the same VM always gets the same name (no randomness in
    the core). The name is escaped as vCenter stores it (``escape_entity_name``).
    """
    base = escape_entity_name(config.agent_name or config.agency_name)
    if config.use_uuid_vm_name:
        return f"{base}-{uuid.uuid5(uuid.NAMESPACE_URL, f'{namespace}/{agent_id}/{number}')}"
    return f"{base} ({number})"


_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})|/|\\")


def escape_entity_name(name: str) -> str:
    """``name`` as vCenter stores an entity name: ``/`` → ``%2f``, ``\\`` → ``%5c``, and a ``%`` that starts
    no escape sequence → ``%25`` (the vSphere API's ManagedEntity.name). A real vCenter escapes a name it
    is given in the same way; giving it the escaped name keeps the engine's name for a VM the name vCenter
    shows, and spares vcsim 0.24.2, which instead creates a VM it can neither finish nor delete (its VM
    directory cannot be made), a VM with no name, config or host that every later call on it panics on.
    """
    return _ESCAPE.sub(lambda m: {"%": "%25", "/": "%2f", "\\": "%5c"}[m.group(0)], name)
