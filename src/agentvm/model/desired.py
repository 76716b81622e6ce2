"""The desired state read from a spec file, and the small observed-state summary the planner compares it with.

``agentvm.spec`` builds a ``DesiredState`` from a YAML file (it alone validates; these classes trust their
input). ``agentvm.core.ipplan`` assigns per-host addresses from an ``IpPlanSpec``; ``agentvm.core.plan``
compares a ``DesiredState`` with an ``ObservedState`` and lists the changes. The backends and the CLI read
these values; nobody edits them in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

from agentvm.model import names
from agentvm.model.agency import AgencyConfig, MoRef, OvfProperty
from agentvm.model.connection import VCenterConnection
from agentvm.model.hostnet import HostNetworkSpec

# --------------------------------------------------------------------------------------------- vcenter


class PasswordSource(StrEnum):
    """Where the vCenter password comes from; the CLI prompts when it is ``PROMPT``."""

    ENVIRONMENT = "environment"  # read at load time from the variable named in ``password_origin``
    FILE = "file"  # read at load time from the file named in ``password_origin``
    PROMPT = "prompt"  # the CLI asks (and fails when there is no terminal)
    LITERAL = "literal"  # written in the spec: allowed, with a warning
    NONE = "none"  # certificate login: no password at all


@dataclass(frozen=True)
class VCenterSpec:
    """The ``vcenter`` section: a ready connection (password already read when it could be) and its origin."""

    connection: VCenterConnection
    password_source: PasswordSource
    password_origin: str | None = None  # the variable or file name, for messages; never the password

    @property
    def needs_password_prompt(self) -> bool:
        return self.password_source is PasswordSource.PROMPT


@dataclass(frozen=True)
class StandaloneHostSpec:
    """One entry of ``esxi``: a standalone ESXi host agentvm reaches directly (no vCenter), by the name
    agency scopes use for it (``esx-01``; default: the URL's host name)."""

    name: str
    connection: VCenterConnection  # the host's own SDK URL, user (root) and TLS pinning
    password_source: PasswordSource
    password_origin: str | None = None  # the variable or file name, for messages; never the password

    @property
    def needs_password_prompt(self) -> bool:
        return self.password_source is PasswordSource.PROMPT


# -------------------------------------------------------------------------------------------- solution


@dataclass(frozen=True)
class SolutionSpec:
    """The ``solution`` section: the vCenter extension agentvm registers and (optionally) logs in as."""

    key: str  # e.g. "org.tungsten.agentvm"; becomes EAM's solution id
    label: str
    summary: str
    company: str
    version: str
    cert_file: str | None = None  # PEM certificate, absolute path
    key_file: str | None = None  # PEM private key, absolute path


# -------------------------------------------------------------------------------------------- agencies


@dataclass(frozen=True)
class ScopeEntry:
    """One cluster or standalone host of an agency's scope, as the user named it.

    At most one of ``path`` (``/DC0/host/DC0_C0``, maybe a glob) and ``moref`` is set; with neither,
    ``text`` is a path under the datacenter, a bare name or a glob (``model.names``). A bare moid
    (``domain-c7``) becomes a MoRef whose type is guessed from the id prefix (``domain-c`` →
    ClusterComputeResource, ``domain-s`` → ComputeResource, ``host-`` → HostSystem); resolving it against the
    inventory is the engine's job.
    """

    text: str
    path: str | None = None
    moref: MoRef | None = None


@dataclass(frozen=True)
class Placement:
    """Where something goes (datastore, network, folder, resource pool), per cluster or host.

    ``use_host_settings`` means "use each host's AgentVM settings" (EsxAgentHostManager). Otherwise
    ``by_target`` maps a cluster or host (inventory path, moid or host name) to a name or path, and
    ``default`` applies to everything else. An empty Placement means "not given".
    """

    use_host_settings: bool = False
    default: str | None = None
    by_target: tuple[tuple[str, str], ...] = ()

    @property
    def given(self) -> bool:
        return self.use_host_settings or self.default is not None or bool(self.by_target)

    def for_host(self, host: ScopeHost) -> str | None:
        """The value for ``host``: a host entry wins over its cluster's entry, which wins over ``default``.

        Returns None when ``use_host_settings`` is set or nothing applies.
        """
        if self.use_host_settings:
            return None
        # keys take every form model.names knows; of several naming the host, the most exact wins
        me = names.NamedRef(MoRef("HostSystem", host.moid), host.name, host.path)
        mine = [(names.specificity(ref, me), v) for ref, v in self._refs() if names.matches(ref, me)]
        if mine:
            return min(mine, key=lambda kv: kv[0])[1]
        if host.cluster_moid and host.cluster_path:
            cluster = names.NamedRef(
                MoRef("ClusterComputeResource", host.cluster_moid), host.cluster_name or "", host.cluster_path
            )
            theirs = [
                (names.specificity(ref, cluster), v) for ref, v in self._refs() if names.matches(ref, cluster)
            ]
            if theirs:
                return min(theirs, key=lambda kv: kv[0])[1]
        return self.default

    def _refs(self) -> list[tuple[names.Reference, str]]:
        return [(names.parse(key), value) for key, value in self.by_target]


@dataclass(frozen=True)
class OvfSource:
    url: str
    sha256: str | None = None  # lower-case hex; agentvm checks it before handing the URL to EAM


@dataclass(frozen=True)
class IpPlanSpec:
    """Per-host addresses: a subnet with a gateway and a range, and/or explicit host → address entries.

    With ``network`` set, ``first``..``last`` (inclusive) is the pool; the network, broadcast and gateway
    addresses are never handed out. ``static`` keys are host moids, inventory paths or names; a static
    entry always wins and its address is never given to another host.
    """

    network: IPv4Network | None = None
    gateway: IPv4Address | None = None
    first: IPv4Address | None = None
    last: IPv4Address | None = None
    static: tuple[tuple[str, IPv4Address], ...] = ()


# The names a per-host template may use, with what each means (docs/spec.md repeats this table).
TEMPLATE_FIELDS: Mapping[str, str] = {
    "ip": "the host's address from the IP plan, e.g. 10.10.0.11",
    "prefix": "the prefix length of the plan's CIDR, e.g. 24",
    "netmask": "the dotted netmask of the plan's CIDR, e.g. 255.255.255.0",
    "cidr": "address and prefix, e.g. 10.10.0.11/24",
    "network": "the plan's network address, e.g. 10.10.0.0",
    "gateway": "the plan's gateway, e.g. 10.10.0.1",
    "index": "the address's host number inside the CIDR (10.10.0.11/24 -> 11); as stable as the address",
    "host": "the host's name in vCenter, e.g. esx-01.lab.local",
    "host_short": "the host name up to its first dot, e.g. esx-01",
    "host_moid": "the host's managed-object id, e.g. host-21",
    "cluster": "the host's cluster name ('' for a standalone host)",
}

# Template fields that only exist when the agency has an IP plan with a CIDR / with addresses.
NEEDS_ADDRESS = frozenset({"ip", "cidr", "index"})
NEEDS_CIDR = frozenset({"prefix", "netmask", "network", "cidr", "index"})
NEEDS_GATEWAY = frozenset({"gateway"})


@dataclass(frozen=True)
class AgencySpec:
    """One entry of ``agencies``: what to run on every host of the scope, and each host's own values."""

    name: str
    agent_name: str
    ovf: OvfSource
    scope: tuple[ScopeEntry, ...]
    use_uuid_vm_name: bool = False
    datastore: Placement = field(default_factory=Placement)
    network: Placement = field(default_factory=Placement)
    folder: Placement = field(default_factory=Placement)
    resource_pool: Placement = field(default_factory=Placement)
    ovf_properties: tuple[OvfProperty, ...] = ()  # the same on every host
    provisioned_hook: bool = True  # agentvm writes per-host values, then marks the agent VM available
    ip_plan: IpPlanSpec | None = None
    per_host: tuple[tuple[str, str], ...] = ()  # property key -> template over TEMPLATE_FIELDS
    host_network: HostNetworkSpec | None = None  # the spec's hostNetwork section (model.hostnet)
    # the standalone hosts (``esxi`` names) in scope, in the order of ``esxi``; ``scope`` keeps the rest
    standalone: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """A whole spec file, validated. ``warnings`` are one-line messages the CLI prints before acting."""

    source: str  # the spec file, as the user named it
    solution: SolutionSpec
    agencies: tuple[AgencySpec, ...]
    vcenter: VCenterSpec | None = None  # None: the CLI takes the connection from flags / AGENTVM_* variables
    warnings: tuple[str, ...] = ()
    esxi: tuple[StandaloneHostSpec, ...] = ()  # the ``esxi`` section: standalone hosts, beside or instead

    def agency(self, name: str) -> AgencySpec | None:
        return next((a for a in self.agencies if a.name == name), None)


# ------------------------------------------------------------------------------------ observed summary


@dataclass(frozen=True, order=True)
class ScopeHost:
    """A host in an agency's scope as the inventory shows it: the stable id is ``moid``.

    Used by the IP plan (which host gets which address), the templates (host, host_short, cluster) and
    Placement lookups. ``path`` is the inventory path (``/DC0/host/DC0_C0/DC0_C0_H0``).
    """

    moid: str
    name: str
    path: str = ""
    cluster_moid: str | None = None
    cluster_path: str | None = None
    cluster_name: str | None = None


@dataclass(frozen=True)
class ExtensionState:
    """What ExtensionManager holds for the solution's key."""

    version: str
    label: str = ""
    summary: str = ""
    company: str = ""


@dataclass(frozen=True)
class HostAgentSettings:
    """One host's AgentVM settings (EsxAgentHostManager.configInfo) by name; None when unset.

    ``datastore_ref``/``network_ref`` are the settings as read (also when the object is not in the
    inventory read, so has no name); ``datastores``/``networks`` what the host is attached to, which the
    planner picks the spec's datastore and network from.
    """

    datastore: str | None = None
    network: str | None = None
    datastore_ref: MoRef | None = None
    network_ref: MoRef | None = None
    datastores: tuple[names.NamedRef, ...] = ()
    networks: tuple[names.NamedRef, ...] = ()


@dataclass(frozen=True)
class ObservedAgency:
    """An agency as found: the parts of its configuration the planner compares."""

    name: str
    ovf_url: str
    agent_name: str
    scope: tuple[str, ...]  # the scope entries as the spec named them (ScopeEntry.text), sorted
    ovf_properties: tuple[OvfProperty, ...] = ()
    datastores: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    folder: str | None = None
    resource_pool: str | None = None
    provisioned_hook: bool = True
    use_uuid_vm_name: bool = False


@dataclass(frozen=True)
class ObservedState:
    """Everything ``core.plan`` needs to know about vCenter, already read by an adapter.

    ``hosts`` maps an agency name to the hosts of its scope; ``addresses`` maps an agency name to the
    addresses its agent VMs carry (host moid → address, e.g. read back from guestinfo).
    """

    extension: ExtensionState | None = None
    host_settings: Mapping[str, HostAgentSettings] = field(default_factory=dict)  # host moid -> settings
    agencies: Mapping[str, ObservedAgency] = field(default_factory=dict)
    hosts: Mapping[str, tuple[ScopeHost, ...]] = field(default_factory=dict)
    addresses: Mapping[str, Mapping[str, IPv4Address]] = field(default_factory=dict)
    datacenters: tuple[str, ...] = ()  # inventory paths of the datacenters (relative names start there)
    configs: Mapping[str, AgencyConfig] = field(default_factory=dict)  # agency name -> the config EAM holds
    # agency name -> the spec's agency resolved against the inventory: the config apply hands to EAM
    wanted: Mapping[str, AgencyConfig] = field(default_factory=dict)
