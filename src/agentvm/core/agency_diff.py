"""What changed in an agency's configuration: the one comparison every layer uses. Pure.

Two views of one agency are compared, with one rule for lists: a list whose order EAM gives no meaning to
(the scope, the folder and resource pool mappings, the agent configs and their OVF properties) is compared
as a multiset; the candidate datastores and networks keep their order, because EAM deploys to the first
one a host can see (docs/eam.md).

- ``config_changes`` compares two ``AgencyConfig`` values (what EAM holds, what the spec resolves to): the
  backends decide with it whether ``apply`` sends an Update, and ``core.plan`` whether an agency needs one.
- ``summary_changes`` compares two ``ObservedAgency`` summaries (names, not MoRefs, as a person reads
  them): the labels of a plan line such as ``update agency hello: scope, ovfProperties changed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from agentvm.model.agency import AgencyConfig
from agentvm.model.desired import ObservedAgency

# AgencyConfig fields whose lists carry no order (and, inside agent configs, ovf_environment)
UNORDERED_CONFIG_FIELDS = frozenset({"scope", "folders", "resource_pools", "agent_configs"})

# ObservedAgency attribute -> the spec key a plan line names; every list in the summary is a set
SUMMARY_LABELS = {
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


def canonical(value: object) -> object:
    """``value`` with the order of every list inside it removed: equal exactly when equal as multisets.

    Frozen values are taken apart field by field, so a list nested in them (an agent config's OVF
    environment) loses its order too.
    """
    if isinstance(value, tuple | list):
        return tuple(sorted((canonical(v) for v in value), key=repr))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple((f.name, canonical(getattr(value, f.name))) for f in dataclasses.fields(value)),
        )
    return value


def _differing(
    current: object, desired: object, names: Iterable[str], unordered: Collection[str]
) -> list[str]:
    changed = []
    for name in names:
        old, new = getattr(current, name), getattr(desired, name)
        if name in unordered:
            old, new = canonical(old), canonical(new)
        if old != new:
            changed.append(name)
    return changed


def config_changes(current: AgencyConfig, desired: AgencyConfig) -> tuple[str, ...]:
    """The ``AgencyConfig`` field names whose values differ, in declaration order (empty: no Update)."""
    names = [f.name for f in dataclasses.fields(AgencyConfig)]
    return tuple(_differing(current, desired, names, UNORDERED_CONFIG_FIELDS))


def is_upgrade(current: AgencyConfig, desired: AgencyConfig) -> bool:
    """True when an OVF URL changed (EAM then provisions a new VM per host: an upgrade)."""
    return {a.ovf_package_url for a in current.agent_configs} != {
        a.ovf_package_url for a in desired.agent_configs
    }


def summary_changes(found: ObservedAgency, want: ObservedAgency) -> tuple[str, ...]:
    """The labels (``SUMMARY_LABELS``) of the summary's parts that differ; the OVF URL is not among them
    (a changed URL is an upgrade, see ``core.plan``)."""
    unordered = {"scope", "ovf_properties", "datastores", "networks"}
    return tuple(SUMMARY_LABELS[n] for n in _differing(found, want, SUMMARY_LABELS, unordered))
