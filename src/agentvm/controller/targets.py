"""The agency config EAM holds compared with the one a spec resolves to (``core.scope.resolve_agency``).

Called by ``controller.solution`` and ``controller.observe``: ``config_differences`` names the fields that
differ, ``observed_agency`` turns the config EAM holds back into the planner's summary
(``model.desired.ObservedAgency``), in the spec's own words where the two agree, so that ``core.plan``
compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentvm.core.agency_diff import canonical
from agentvm.core.plan import agency_view
from agentvm.core.scope import ResolvedAgency
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    MoRef,
)
from agentvm.model.desired import ObservedAgency
from agentvm.model.inventory import (
    InventorySnapshot,
)


def observed_agency(
    current: AgencyConfig, resolved: ResolvedAgency, snapshot: InventorySnapshot
) -> ObservedAgency:
    """The agency EAM holds, summarised like ``core.plan.agency_view`` summarises the spec.

    Where a part of the config equals what the spec asks for, the spec's words are used; where it differs,
    the inventory path of what EAM holds (so the plan line shows both sides in a person's words).
    """
    want = agency_view(resolved.spec)
    desired = resolved.config

    def same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
        return canonical(a) == canonical(b)  # as sets: the spec's words stand for the whole list

    def paths(refs: Iterable[MoRef]) -> tuple[str, ...]:
        return tuple(sorted(_path(snapshot, r) for r in refs))

    first = current.agent_configs[0] if current.agent_configs else AgentConfig()
    folders = [f.folder for f in current.folders]
    pools = [p.resource_pool for p in current.resource_pools]
    return ObservedAgency(
        name=current.agency_name,
        ovf_url=first.ovf_package_url or "",
        agent_name=current.agent_name or current.agency_name,
        scope=want.scope if same(current.scope, desired.scope) else paths(current.scope),
        ovf_properties=tuple(first.ovf_environment),
        datastores=(
            want.datastores
            if same(current.agent_vm_datastores, desired.agent_vm_datastores)
            else paths(current.agent_vm_datastores)
        ),
        networks=(
            want.networks
            if same(current.agent_vm_networks, desired.agent_vm_networks)
            else paths(current.agent_vm_networks)
        ),
        folder=want.folder if same(current.folders, desired.folders) else _first_path(snapshot, folders),
        resource_pool=(
            want.resource_pool
            if same(current.resource_pools, desired.resource_pools)
            else _first_path(snapshot, pools)
        ),
        provisioned_hook=current.manually_mark_available_after_provisioning,
        use_uuid_vm_name=current.use_uuid_vm_name,
    )


def _path(snapshot: InventorySnapshot, ref: MoRef) -> str:
    obj = snapshot.get(ref)
    return obj.path if obj is not None else ref.value


def _first_path(snapshot: InventorySnapshot, refs: list[MoRef]) -> str | None:
    return _path(snapshot, refs[0]) if refs else None
