"""A spec's agency resolved against the inventory: scope → compute resources and hosts, names → MoRefs.

Called by ``controller.solution`` (plan, apply, destroy), ``controller.observe`` and ``controller.status``.
Pure over an ``InventorySnapshot`` (no I/O here), so every naming mistake — an unknown cluster path, a
datastore a host cannot see, an ambiguous network name — is found before anything changes, as a
NotFoundError / ConfigurationError that names the object and the fix.

The EAM agency config built here is what ``apply`` hands to the backend (docs/architecture.md, "Plans and
the executor"); ``controller.targets.observed_agency`` turns the config EAM holds back into the planner's
summary.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentvm.model import names
from agentvm.model.agency import (
    AgencyConfig,
    AgentConfig,
    FolderMapping,
    MoRef,
    ResourcePoolMapping,
)
from agentvm.model.desired import AgencySpec, Placement, ScopeEntry, ScopeHost
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.inventory import (
    Cluster,
    ComputeResource,
    Host,
    InventoryObject,
    InventorySnapshot,
)


@dataclass(frozen=True)
class ResolvedAgency:
    """One agency of the spec, resolved: its EAM config, its compute resources and its hosts."""

    spec: AgencySpec
    config: AgencyConfig
    compute_resources: tuple[Cluster | ComputeResource, ...]
    hosts: tuple[ScopeHost, ...]
    # moid -> the spec's word for it (scope entries, datastore/network/folder/pool names), for messages
    words: Mapping[str, str] = field(default_factory=dict)

    def host(self, moid: str) -> ScopeHost | None:
        return self._by_moid.get(moid)

    @functools.cached_property
    def _by_moid(self) -> Mapping[str, ScopeHost]:
        # the first host of a moid, as a scan would find it; built once (frozen: it never changes)
        index: dict[str, ScopeHost] = {}
        for host in self.hosts:
            index.setdefault(host.moid, host)
        return index


def scope_host(snapshot: InventorySnapshot, host: Host) -> ScopeHost:
    """The planner's view of an inventory host (path, cluster path and name)."""
    cluster = snapshot.get(host.cluster) if host.cluster is not None else None
    return ScopeHost(
        moid=host.moref.value,
        name=host.name,
        path=host.path,
        cluster_moid=cluster.moref.value if cluster else None,
        cluster_path=cluster.path if cluster else None,
        cluster_name=cluster.name if cluster else None,
    )


def resolve_scope(
    snapshot: InventorySnapshot, entries: Iterable[ScopeEntry], agency: str
) -> tuple[Cluster | ComputeResource, ...]:
    """The clusters / standalone compute resources an agency's scope names, in spec order, no duplicates.

    Entries take every form ``model.names`` knows (path, path under the datacenter, unique name, glob,
    moid, typed moid); a glob stands for every cluster / compute resource it matches. A host entry stands
    for its standalone compute resource. Raises NotFoundError naming the entry, the agency, the closest
    names and the fix.
    """
    return tuple(resource for resource, _ in _scope_words(snapshot, entries, agency))


def _scope_words(
    snapshot: InventorySnapshot, entries: Iterable[ScopeEntry], agency: str
) -> list[tuple[Cluster | ComputeResource, str]]:
    """Each resource of the scope with the entry that named it first."""
    found: dict[str, tuple[Cluster | ComputeResource, str]] = {}
    pool: tuple[Cluster | ComputeResource, ...] = (*snapshot.clusters, *snapshot.compute_resources)
    dcs = snapshot.datacenter_paths
    for entry in entries:
        ref = names.parse(entry.text)
        try:
            names_a_host = (
                not ref.is_glob
                and not any(names.matches(ref, r, dcs) for r in pool)
                and any(names.matches(ref, h, dcs) for h in snapshot.hosts)
            )
            if names_a_host:
                resources: tuple[Cluster | ComputeResource, ...] = (_host_resource(snapshot, entry, agency),)
            else:
                resources = snapshot.resolve(entry.text, pool, "cluster or compute resource")
        except NotFoundError as exc:
            raise NotFoundError(f'agency "{agency}": scope entry {entry.text}: {exc}') from None
        for resource in resources:
            found.setdefault(resource.moref.value, (resource, entry.text))
    return list(found.values())


def _host_resource(snapshot: InventorySnapshot, entry: ScopeEntry, agency: str) -> ComputeResource:
    """The standalone compute resource of the host ``entry`` names (a clustered host is an error)."""
    host = snapshot.find_host(entry.text)
    parent = snapshot.get(host.parent) if host.parent else None
    if isinstance(parent, Cluster):
        raise ConfigurationError(
            f'agency "{agency}": scope entry {entry.text} is host {host.describe()} of cluster '
            f"{parent.path}; EAM scopes whole clusters: name the cluster {parent.path} instead"
        )
    if not isinstance(parent, ComputeResource):
        raise NotFoundError(f"host {host.describe()} has no compute resource")
    return parent


def scoped_hosts(spec: AgencySpec, snapshot: InventorySnapshot) -> tuple[ScopeHost, ...]:
    """The hosts of ``spec``'s scope as ``snapshot`` shows them; none when its scope is gone from the
    inventory (callers that only show or clean up, not those that plan)."""
    try:
        return resolve_agency(spec, snapshot).hosts
    except NotFoundError:
        return ()


def resolve_agency(spec: AgencySpec, snapshot: InventorySnapshot) -> ResolvedAgency:
    """Resolve ``spec`` against ``snapshot`` and build its EAM config.

    Raises NotFoundError / ConfigurationError for an unknown or ambiguous cluster, datastore, network,
    folder or resource pool, or a datastore / network some host in scope cannot see.
    """
    scope = _scope_words(snapshot, spec.scope, spec.name)
    resources = tuple(resource for resource, _ in scope)
    in_scope = {resource.moref.value for resource in resources}
    by_parent: dict[str, list[Host]] = {}  # what snapshot.hosts_of gives, for every resource in one pass
    for host in snapshot.hosts:
        if host.parent is not None and host.parent.value in in_scope:
            by_parent.setdefault(host.parent.value, []).append(host)
    hosts: list[Host] = []
    for resource in resources:
        hosts.extend(by_parent.get(resource.moref.value, ()))
    scope_hosts = tuple(scope_host(snapshot, h) for h in hosts)
    datacenters = {r.datacenter.value for r in resources if r.datacenter is not None}
    words: dict[str, str] = {}
    for resource, text in scope:
        words[resource.moref.value] = text

    datastores = _candidates(snapshot, snapshot.datastores, spec.datastore, datacenters, "datastore", spec)
    networks = _candidates(snapshot, snapshot.networks, spec.network, datacenters, "network", spec)
    for ref, word in (*datastores, *networks):
        words[ref.value] = word
    for host, sh in zip(hosts, scope_hosts, strict=True):
        _check_visible(host, sh, spec.datastore, host.datastores, snapshot, "datastore", spec.name)
        _check_visible(host, sh, spec.network, host.networks, snapshot, "network", spec.name)

    folders = _folders(snapshot, resources, spec, words)
    pools = _resource_pools(snapshot, resources, spec, words)
    agent_config = AgentConfig(ovf_package_url=spec.ovf.url, ovf_environment=tuple(spec.ovf_properties))
    config = AgencyConfig(
        agency_name=spec.name,
        agent_configs=(agent_config,),
        scope=tuple(r.moref for r in resources),
        agent_name=spec.agent_name,
        use_uuid_vm_name=spec.use_uuid_vm_name,
        agent_vm_datastores=tuple(ref for ref, _ in datastores),
        agent_vm_networks=tuple(ref for ref, _ in networks),
        prefer_host_configuration=spec.datastore.use_host_settings or spec.network.use_host_settings,
        folders=folders,
        resource_pools=pools,
        manually_mark_available_after_provisioning=spec.provisioned_hook,
    )
    return ResolvedAgency(spec, config, resources, scope_hosts, words)


def _datacenter(obj: InventoryObject) -> str | None:
    ref = getattr(obj, "datacenter", None)
    return ref.value if isinstance(ref, MoRef) else None


def _matches(obj: InventoryObject, word: str, datacenters: tuple[str, ...]) -> bool:
    """Whether the spec's ``word`` names ``obj`` in any form govc takes (``model.names``)."""
    return names.matches(names.parse(word), obj, datacenters)


def _candidates(
    snapshot: InventorySnapshot,
    objects: Iterable[InventoryObject],
    placement: Placement,
    datacenters: set[str],
    what: str,
    spec: AgencySpec,
) -> list[tuple[MoRef, str]]:
    """Every object a placement names (in the scope's datacenters), sorted by the spec's word then moid."""
    if placement.use_host_settings:
        return []
    words = sorted(
        {v for _, v in placement.by_target} | ({placement.default} if placement.default else set())
    )
    pool = [o for o in objects if _datacenter(o) is None or _datacenter(o) in datacenters]
    result: list[tuple[MoRef, str]] = []
    for word in words:
        hits = [o for o in pool if _matches(o, word, snapshot.datacenter_paths)]
        if not hits:
            known = sorted({o.name for o in pool})
            close = difflib.get_close_matches(word, known + [o.path for o in pool], n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise NotFoundError(
                f'agency "{spec.name}": no {what} {word!r} in the datacenters of its scope '
                f"(known: {', '.join(known[:8]) or 'none'}); {hint}fix {what} in the spec"
            )
        result += [(o.moref, word) for o in sorted(hits, key=lambda o: o.moref.value)]
    return result


def _check_visible(
    host: Host,
    sh: ScopeHost,
    placement: Placement,
    attached: tuple[MoRef, ...],
    snapshot: InventorySnapshot,
    what: str,
    agency: str,
) -> None:
    """The value a host gets (host entry, cluster entry, default) must be attached to that host."""
    word = placement.for_host(sh)
    if word is None:
        return
    for ref in attached:
        obj = snapshot.get(ref)
        if obj is not None and _matches(obj, word, snapshot.datacenter_paths):
            return
    raise ConfigurationError(
        f'agency "{agency}": host {host.describe()} cannot see {what} {word!r}; choose a {what} '
        f"mounted on every host of the scope, or give this host its own {what} in the spec"
    )


def _for_resource(
    placement: Placement, resource: Cluster | ComputeResource, datacenters: tuple[str, ...]
) -> str | None:
    """The value of the first entry of the map whose key names ``resource`` (any form), else the default."""
    for key, value in placement.by_target:
        if names.matches(names.parse(key), resource, datacenters):
            return value
    return placement.default


def _folders(
    snapshot: InventorySnapshot,
    resources: tuple[Cluster | ComputeResource, ...],
    spec: AgencySpec,
    words: dict[str, str],
) -> tuple[FolderMapping, ...]:
    """One VM folder per datacenter of the scope (the first scope entry of a datacenter decides)."""
    if not spec.folder.given:
        return ()
    mappings: dict[str, FolderMapping] = {}
    for resource in resources:
        word = _for_resource(spec.folder, resource, snapshot.datacenter_paths)
        dc = resource.datacenter
        if word is None or dc is None or dc.value in mappings:
            continue
        dc_obj = snapshot.get(dc)
        prefix = f"{dc_obj.path}/" if dc_obj else "/"
        hits = [
            f
            for f in snapshot.folders
            if f.path.startswith(prefix) and _matches(f, word, snapshot.datacenter_paths)
        ]
        if len(hits) != 1:
            problem = "no" if not hits else "more than one"
            raise NotFoundError(
                f'agency "{spec.name}": {problem} folder {word!r} in datacenter {prefix.rstrip("/")}; '
                "give the folder's inventory path, e.g. /DC0/vm/agents"
            )
        words[hits[0].moref.value] = word
        mappings[dc.value] = FolderMapping(hits[0].moref, dc)
    return tuple(mappings.values())


def _resource_pools(
    snapshot: InventorySnapshot,
    resources: tuple[Cluster | ComputeResource, ...],
    spec: AgencySpec,
    words: dict[str, str],
) -> tuple[ResourcePoolMapping, ...]:
    """One resource pool per compute resource of the scope, when the spec names one."""
    if not spec.resource_pool.given:
        return ()
    mappings = []
    for resource in resources:
        word = _for_resource(spec.resource_pool, resource, snapshot.datacenter_paths)
        if word is None:
            continue
        hits = [
            p
            for p in snapshot.resource_pools
            if p.owner is not None
            and p.owner.value == resource.moref.value
            and _matches(p, word, snapshot.datacenter_paths)
        ]
        if len(hits) != 1:
            problem = "no" if not hits else "more than one"
            raise NotFoundError(
                f'agency "{spec.name}": {problem} resource pool {word!r} in {resource.describe()}; '
                f"give the pool's inventory path, e.g. {resource.path}/Resources/agents"
            )
        words[hits[0].moref.value] = word
        mappings.append(ResourcePoolMapping(hits[0].moref, resource.moref))
    return tuple(mappings)
