"""What ``apply`` would change: desired state vs an observed-state summary → an ordered list of typed changes.
Pure.

Called by ``controller.planner`` (for ``agentvm plan``, ``apply`` and the controller's full pass). Each
change is a frozen value holding everything ``controller.executor`` needs to carry it out, in this order:
extension, host AgentVM settings, then per agency the agency itself and each host's address; the sentence
``agentvm plan`` prints is rendered from it by ``core.plan_text``. The observed summary
(``model.desired.ObservedState``) is read by ``controller.observe``; this module only compares (one config
comparison for all: ``core.agency_diff``). Running out of addresses raises ``IpPlanExhausted`` here, before
anything changes, and so does an ``ipPlan.addresses`` entry for a host that is not in scope
(``UnknownIpPlanHost``). See docs/architecture.md, "Plans and the executor".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from typing import ClassVar

from agentvm.core.agency_diff import config_changes, summary_changes
from agentvm.core.hostnet import (
    CreateDvPortGroup,
    CreatePortGroup,
    CreateVSwitch,
    RepairDvPortGroup,
    RepairPortGroup,
)
from agentvm.core.ipplan import (
    AddressSource,
    Assignment,
    UnknownIpPlanHost,
    assign_addresses,
    canonical_order,
    check_static_hosts,
)
from agentvm.model import names
from agentvm.model.agency import AgencyConfig, HookState, Issue, MoRef
from agentvm.model.desired import (
    AgencySpec,
    DesiredState,
    ExtensionState,
    HostAgentSettings,
    ObservedAgency,
    ObservedState,
    ScopeHost,
    SolutionSpec,
)
from agentvm.model.hostnet import AgentNicTarget, HostNetworkOwned


class ChangeKind(StrEnum):
    """Every kind of change a plan holds: the ``kind`` of ``agentvm plan --json``."""

    REGISTER_EXTENSION = "register-extension"
    UPDATE_EXTENSION = "update-extension"
    SET_CERTIFICATE = "set-certificate"  # the extension's login certificate (so it owns its agencies)
    RECORD_CERTIFICATE = "record-certificate"  # our working certificate, recorded in the extension
    SET_HOST_SETTINGS = "set-host-settings"
    # hostNetwork (core.hostnet), before the agency: the trunk's DV port group, the hosts joining its switch,
    # each host's fabric vSwitch and port group (and agentvm's record of what it created there)
    PREPARE_SWITCH = "prepare-switch"
    JOIN_SWITCH = "join-switch"
    PREPARE_HOST_NETWORK = "prepare-host-network"
    CREATE_AGENCY = "create-agency"
    UPDATE_AGENCY = "update-agency"
    UPGRADE_AGENCY = "upgrade-agency"  # the OVF URL changed: EAM replaces every agent VM
    ASSIGN_ADDRESS = "assign-address"  # a host gets an address it does not carry yet
    ANSWER_HOOK = "answer-hook"  # a pending provisioned / powered-on hook
    RESOLVE_ISSUE = "resolve-issue"  # an active EAM issue apply resolves
    # destroy's changes, in the order it makes them
    PURGE_ORPHANS = "purge-orphans"  # the agent VMs of an agency whose engine state was lost
    UNINSTALL_AGENCY = "uninstall-agency"
    DESTROY_AGENCY = "destroy-agency"
    UNREGISTER_EXTENSION = "unregister-extension"


# Every change is a frozen value holding what the executor (``controller.executor``) needs to carry it
# out; ``target``, ``agency`` and ``host`` are what ``agentvm plan --json`` lists, and the sentence a
# person reads is rendered from the value by ``core.plan_text.describe``.


class _OnHostOfAgency:
    """``target``, ``agency`` and ``host`` of a change about one scope host of one agency."""

    agency_name: str
    scope_host: ScopeHost

    @property
    def target(self) -> str:
        return self.scope_host.moid

    @property
    def agency(self) -> str:
        return self.agency_name

    @property
    def host(self) -> str:
        return self.scope_host.moid


class _OfAgency:
    """``target`` and ``agency`` of a change to the agency ``name`` as a whole."""

    name: str
    host: ClassVar[None] = None

    @property
    def target(self) -> str:
        return self.name

    @property
    def agency(self) -> str:
        return self.name


class _SolutionWide:
    """A change to the solution itself: about no agency and no host."""

    agency: ClassVar[None] = None
    host: ClassVar[None] = None


@dataclass(frozen=True)
class FieldChange:
    """One extension field whose registered value differs from the spec's."""

    name: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class RegisterExtension(_SolutionWide):
    solution: SolutionSpec
    kind: ClassVar[ChangeKind] = ChangeKind.REGISTER_EXTENSION

    @property
    def target(self) -> str:
        return self.solution.key


@dataclass(frozen=True)
class UpdateExtension(_SolutionWide):
    solution: SolutionSpec
    differences: tuple[FieldChange, ...]
    kind: ClassVar[ChangeKind] = ChangeKind.UPDATE_EXTENSION

    @property
    def target(self) -> str:
        return self.solution.key


@dataclass(frozen=True)
class HeldCertificate:
    """The login certificate an extension records as set (by another machine's agentvm, say)."""

    host: str
    sha1: str
    file: str
    generated: bool


@dataclass(frozen=True)
class SetCertificate(_SolutionWide):
    """Set the extension's login certificate: the spec's ``certificate`` file, else the generated one in
    ``state_dir`` (``generated``: its file when it exists already, None when apply generates it)."""

    key: str
    certificate: str | None
    state_dir: str
    generated: str | None = None
    replaces: HeldCertificate | None = None  # the one set before, whose logins then fail
    kind: ClassVar[ChangeKind] = ChangeKind.SET_CERTIFICATE

    @property
    def target(self) -> str:
        return self.key


@dataclass(frozen=True)
class RecordCertificate(_SolutionWide):
    """Record in the extension the certificate ``file`` (SHA-1 ``sha1``) our login works with."""

    key: str
    sha1: str
    file: str
    kind: ClassVar[ChangeKind] = ChangeKind.RECORD_CERTIFICATE

    @property
    def target(self) -> str:
        return self.key


@dataclass(frozen=True)
class HostSetting:
    """One AgentVM setting to fill in: the spec's ``name`` and the object of the host it picks (None: the
    host is attached to none of that name)."""

    name: str
    ref: MoRef | None


@dataclass(frozen=True)
class SetHostSettings(_OnHostOfAgency):
    """Fill in the AgentVM settings ``host`` lacks, for ``agency`` (the first one whose scope has it).

    ``datastore``/``network``: what to set (None: the host keeps its own, ``kept_*``). Only what is set
    here is agentvm's: ``destroy --host-settings`` clears those and no others. ``manager``: the host's
    EsxAgentHostManager as the plan's inventory read showed it (the planner fills it in), so carrying the
    change out is one call; None: it is looked up first.
    """

    scope_host: ScopeHost
    agency_name: str
    datastore: HostSetting | None = None
    network: HostSetting | None = None
    kept_datastore: MoRef | None = None
    kept_network: MoRef | None = None
    manager: MoRef | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.SET_HOST_SETTINGS


@dataclass(frozen=True)
class PrepareSwitch:
    """Create or repair (``step``) the trunk's DV port group for ``agency_name``; ``switch`` names the
    distributed switch in the plan line."""

    agency_name: str
    step: CreateDvPortGroup | RepairDvPortGroup
    switch: str
    kind: ClassVar[ChangeKind] = ChangeKind.PREPARE_SWITCH
    host: ClassVar[None] = None

    @property
    def target(self) -> str:
        return self.step.dvs if isinstance(self.step, CreateDvPortGroup) else self.step.key

    @property
    def agency(self) -> str:
        return self.agency_name


@dataclass(frozen=True)
class JoinSwitch:
    """Add ``members`` (host moid, host label, uplink NIC) to the distributed switch ``dvs`` (moid) in one
    reconfigure, after recording ``owned`` (host moid, record) on the hosts whose record this writes."""

    agency_name: str
    dvs: str
    switch: str
    members: tuple[tuple[str, str, str], ...]
    owned: tuple[tuple[str, HostNetworkOwned], ...] = ()
    kind: ClassVar[ChangeKind] = ChangeKind.JOIN_SWITCH
    host: ClassVar[None] = None

    @property
    def target(self) -> str:
        return self.dvs

    @property
    def agency(self) -> str:
        return self.agency_name


@dataclass(frozen=True)
class PrepareHostNetwork:
    """On one host, in order: create the fabric vSwitch, create or repair its port group (``steps``), then
    record ``owned`` (what agentvm created there) in the host's attribute; ``where`` is the host's label,
    ``network_system`` its HostNetworkSystem (None: looked up), ``owned`` None: the record stays."""

    agency_name: str
    host_moid: str
    where: str
    steps: tuple[CreateVSwitch | CreatePortGroup | RepairPortGroup, ...] = ()
    owned: HostNetworkOwned | None = None
    network_system: MoRef | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.PREPARE_HOST_NETWORK

    @property
    def target(self) -> str:
        return self.host_moid

    @property
    def agency(self) -> str:
        return self.agency_name

    @property
    def host(self) -> str:
        return self.host_moid


HostNetworkChange = PrepareSwitch | JoinSwitch | PrepareHostNetwork


@dataclass(frozen=True)
class CreateAgency:
    """Create ``spec``'s agency with ``config`` on ``host_count`` hosts.

    ``config`` is the spec resolved against the inventory; None only in a plan made without one (shown,
    never carried out).
    """

    spec: AgencySpec
    host_count: int
    config: AgencyConfig | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.CREATE_AGENCY
    host: ClassVar[None] = None

    @property
    def target(self) -> str:
        return self.spec.name

    @property
    def agency(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class UpdateAgency(_OfAgency):
    """Update the agency ``name`` to ``config``; ``changed`` names what differs (spec keys, or
    ``AgencyConfig`` fields where the spec's summary shows no difference)."""

    name: str
    changed: tuple[str, ...]
    config: AgencyConfig | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.UPDATE_AGENCY


@dataclass(frozen=True)
class UpgradeAgency(_OfAgency):
    """Update the agency ``name`` to ``config`` whose OVF URL changed from ``old_url``: every agent VM is
    replaced. ``also``: the other spec keys that changed."""

    name: str
    old_url: str
    new_url: str
    also: tuple[str, ...] = ()
    config: AgencyConfig | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.UPGRADE_AGENCY


AgencyChange = CreateAgency | UpdateAgency | UpgradeAgency


@dataclass(frozen=True)
class AssignAddress(_OnHostOfAgency):
    """``host`` gets ``address`` from ``agency``'s IP plan (``previous``: what its VM carries now)."""

    agency_name: str
    scope_host: ScopeHost
    address: IPv4Address
    source: AddressSource
    previous: object = None
    kind: ClassVar[ChangeKind] = ChangeKind.ASSIGN_ADDRESS


@dataclass(frozen=True)
class AnswerHook:
    """Answer ``agent``'s pending hook: write ``properties`` (vApp) and ``extra_config`` into ``vm``
    (nothing to write after a power-on hook), then MarkAsAvailable.

    ``host_moid`` is the agent's host; ``scope_host`` the scope host it is (None: not in the scope read).
    """

    agency_name: str
    agent: str
    vm: MoRef
    state: HookState
    host_moid: str
    scope_host: ScopeHost | None = None
    properties: tuple[tuple[str, str], ...] = ()
    extra_config: tuple[tuple[str, str], ...] = ()
    address: IPv4Address | None = None
    nics: tuple[AgentNicTarget, ...] = ()  # hostNetwork.agentNics: where the VM's NICs go on its host
    kind: ClassVar[ChangeKind] = ChangeKind.ANSWER_HOOK

    @property
    def target(self) -> str:
        return self.agent

    @property
    def agency(self) -> str:
        return self.agency_name

    @property
    def host(self) -> str:
        return self.host_moid


@dataclass(frozen=True)
class ResolveIssue:
    """Resolve ``issue`` of ``agency`` (active: EAM can fix it); ``scope_host`` is the scope host it is on."""

    agency_name: str
    issue: Issue
    scope_host: ScopeHost | None = None
    kind: ClassVar[ChangeKind] = ChangeKind.RESOLVE_ISSUE

    @property
    def target(self) -> str:
        return str(self.issue.key)

    @property
    def agency(self) -> str:
        return self.agency_name

    @property
    def host(self) -> str | None:
        return self.issue.host.value if self.issue.host is not None else None


@dataclass(frozen=True)
class PurgeOrphans(_OfAgency):
    """Delete the agent VMs of the agency ``name`` that the backend marks as its own but knows no agency
    for (the direct engine's state was lost); nothing where there are none."""

    name: str
    kind: ClassVar[ChangeKind] = ChangeKind.PURGE_ORPHANS


@dataclass(frozen=True)
class UninstallAgency(_OfAgency):
    """Set the agency ``name``'s goal to uninstalled: every agent VM is removed."""

    name: str
    kind: ClassVar[ChangeKind] = ChangeKind.UNINSTALL_AGENCY


@dataclass(frozen=True)
class DestroyAgency(_OfAgency):
    """Destroy the agency ``name`` (once its agent VMs are gone)."""

    name: str
    kind: ClassVar[ChangeKind] = ChangeKind.DESTROY_AGENCY


@dataclass(frozen=True)
class UnregisterExtension(_SolutionWide):
    """Unregister the solution's extension ``key``."""

    key: str
    kind: ClassVar[ChangeKind] = ChangeKind.UNREGISTER_EXTENSION

    @property
    def target(self) -> str:
        return self.key


Removal = PurgeOrphans | UninstallAgency | DestroyAgency | UnregisterExtension

Change = (
    RegisterExtension
    | UpdateExtension
    | SetCertificate
    | RecordCertificate
    | SetHostSettings
    | PrepareSwitch
    | JoinSwitch
    | PrepareHostNetwork
    | CreateAgency
    | UpdateAgency
    | UpgradeAgency
    | AssignAddress
    | AnswerHook
    | ResolveIssue
    | PurgeOrphans
    | UninstallAgency
    | DestroyAgency
    | UnregisterExtension
)


@dataclass(frozen=True)
class SpecPlan:
    """What the spec asks for that vCenter lacks: the ordered changes, each agency's address assignment,
    and warnings that apply cannot fix. ``controller.planner`` adds the certificate, hook and issue
    changes to make a ``SolutionPlan``."""

    changes: tuple[Change, ...]
    addresses: Mapping[str, Assignment] = field(default_factory=dict)  # agency name -> assignment
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


def host_label(host: ScopeHost) -> str:
    """``host-21 (/DC0/host/DC0_C0/H0)``: how every message names a host."""
    return f"{host.moid} ({host.path or host.name})"


def make_plan(
    desired: DesiredState, observed: ObservedState, *, strict_static: bool = True, standalone: bool = False
) -> SpecPlan:
    """Compare ``desired`` with ``observed``.

    Raises IpPlanExhausted when an agency's plan is too small, UnknownIpPlanHost when an
    ``ipPlan.addresses`` entry names no host in the agency's scope (both ConfigurationErrors). With
    ``strict_static`` False (the controller: a host that left the scope must not stop it managing the
    others) the unknown entry is a warning instead. ``standalone``: the plan of one standalone ESXi host
    (``esxi:``), which has no vCenter extension and no EAM AgentVM settings: neither is planned
    (``STANDALONE_SKIPPED`` says why).
    """
    changes: list[Change] = []
    warnings: list[str] = []
    if not standalone:
        extension = _extension_change(desired.solution, observed.extension)
        if extension is not None:
            changes.append(extension)
        changes += _host_settings_changes(desired, observed, warnings)
    assignments: dict[str, Assignment] = {}
    for agency in desired.agencies:
        hosts = canonical_order(observed.hosts.get(agency.name, ()))
        change = _agency_change(agency, observed, len(hosts))
        if change is not None:
            changes.append(change)
        if agency.ip_plan is not None:
            try:
                check_static_hosts(agency.ip_plan, hosts, agency=agency.name)
            except UnknownIpPlanHost as exc:
                if strict_static:
                    raise
                warnings.append(str(exc))
            previous = observed.addresses.get(agency.name, {})
            assignment = assign_addresses(agency.ip_plan, hosts, previous, agency=agency.name)
            assignments[agency.name] = assignment
            changes += _address_changes(agency, assignment, previous)
    return SpecPlan(tuple(changes), assignments, tuple(warnings))


# What a standalone host's plan leaves out, and why: ``agentvm plan`` prints it once per spec.
STANDALONE_SKIPPED = (
    "extension registration and the hosts' AgentVM settings are skipped on standalone hosts: they have no "
    "vCenter and no EAM, so agentvm's own engine runs the agent VMs and writes each host's values into its "
    "agent VM before the first power-on"
)


def _extension_change(
    solution: SolutionSpec, found: ExtensionState | None
) -> RegisterExtension | UpdateExtension | None:
    if found is None:
        return RegisterExtension(solution)
    differences = tuple(
        FieldChange(name, old, new)
        for name, old, new in (
            ("version", found.version, solution.version),
            ("label", found.label, solution.label),
            ("summary", found.summary, solution.summary),
            ("company", found.company, solution.company),
        )
        if old != new
    )
    return UpdateExtension(solution, differences) if differences else None


def _host_settings_changes(
    desired: DesiredState, observed: ObservedState, warnings: list[str]
) -> list[Change]:
    """Fill in AgentVM settings a host lacks; never overwrite what an admin set."""
    changes: list[Change] = []
    seen: set[str] = set()
    for agency in desired.agencies:
        for host in canonical_order(observed.hosts.get(agency.name, ())):
            if host.moid in seen:  # in the scope of two agencies: the first one's values apply
                continue
            seen.add(host.moid)
            current = observed.host_settings.get(host.moid, HostAgentSettings())
            wanted = {
                "datastore": (agency.datastore, current.datastore, current.datastores),
                "network": (agency.network, current.network, current.networks),
            }
            setting: dict[str, HostSetting] = {}
            for what, (placement, have, attached) in wanted.items():
                if have:
                    continue
                value = placement.for_host(host)
                if value is not None:
                    setting[what] = HostSetting(value, _pick(value, attached, observed.datacenters))
                elif placement.use_host_settings:
                    warnings.append(
                        f"{host_label(host)} has no AgentVM {what} and agency {agency.name} uses the host's "
                        "settings; set it in vCenter (host > Configure > Agent VM Settings) "
                        f"or name a {what} in the spec"
                    )
            if setting:
                changes.append(
                    SetHostSettings(
                        host,
                        agency.name,
                        datastore=setting.get("datastore"),
                        network=setting.get("network"),
                        kept_datastore=current.datastore_ref,
                        kept_network=current.network_ref,
                    )
                )
    return changes


def _pick(word: str, attached: Sequence[names.NamedRef], datacenters: Sequence[str]) -> MoRef | None:
    """The object the host is attached to that ``word`` names, in every form the spec accepts."""
    wanted = names.parse(word)
    return next((obj.moref for obj in attached if names.matches(wanted, obj, datacenters)), None)


def agency_view(agency: AgencySpec) -> ObservedAgency:
    """The desired agency in the form an observed one is summarised in, so the two compare field by field.

    Backends summarising an agency they read from EAM produce the same shape (names, not MoRefs).
    """
    return ObservedAgency(
        name=agency.name,
        ovf_url=agency.ovf.url,
        agent_name=agency.agent_name,
        scope=tuple(sorted(s.text for s in agency.scope)),
        ovf_properties=tuple(sorted(agency.ovf_properties, key=lambda p: p.key)),
        datastores=_candidates(agency.datastore.default, agency.datastore.by_target),
        networks=_candidates(agency.network.default, agency.network.by_target),
        folder=agency.folder.default,
        resource_pool=agency.resource_pool.default,
        provisioned_hook=agency.provisioned_hook,
        use_uuid_vm_name=agency.use_uuid_vm_name,
    )


def _candidates(default: str | None, by_target: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    return tuple(sorted({v for _, v in by_target} | ({default} if default else set())))


def _agency_change(agency: AgencySpec, observed: ObservedState, host_count: int) -> AgencyChange | None:
    found = observed.agencies.get(agency.name)
    config = observed.wanted.get(agency.name)
    if found is None:
        return CreateAgency(agency, host_count, config)
    changed = summary_changes(found, agency_view(agency))
    if found.ovf_url != agency.ovf.url:
        return UpgradeAgency(agency.name, found.ovf_url, agency.ovf.url, changed, config)
    if changed:
        return UpdateAgency(agency.name, changed, config)
    held = observed.configs.get(agency.name)
    if held is not None and config is not None:
        # fields the summary does not show (e.g. preferHostConfiguration) still need an Update
        differs = config_changes(held, config)
        if differs:
            return UpdateAgency(agency.name, differs, config)
    return None


def _address_changes(
    agency: AgencySpec, assignment: Assignment, previous: Mapping[str, object]
) -> list[Change]:
    changes: list[Change] = []
    for held in assignment.addresses:
        if held.source is AddressSource.KEPT:
            continue
        old = previous.get(held.host.moid)
        if old == held.address:
            continue
        changes.append(AssignAddress(agency.name, held.host, held.address, held.source, old))
    return changes
