"""Observe what a spec is about: the extension, the hosts' AgentVM settings, each agency and its agents.

Called by ``controller.solution`` (plan, apply, destroy) and the CLI's ``status``. One observation costs a
constant number of vim25 calls whatever the inventory size (one bulk inventory read including the agent VMs'
``guestinfo.agentvm.*`` extraConfig, one FindExtension) plus, per agency, the backend's observe
(EAM: 3 + agents calls) and one QueryConfig.

Each host's address is read back from its agent VM (``guestinfo.agentvm.address``, written by whoever
answered the VM's ``provisioned`` hook), so the IP plan stays stable across restarts, redeploys and
upgrades without any state of agentvm's own. The VM also carries its agency's name
(``guestinfo.agentvm.agency``): a VM of the agency that EAM does not report (the agency belongs to
someone the session cannot see, or EAM lost the agent) still keeps its host's address in the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from agentvm.backends.base import AgencyStatus, Backend
from agentvm.controller.targets import observed_agency
from agentvm.core.inventory_patch import InventoryDelta, objects_of, patch_inventory
from agentvm.core.scope import ResolvedAgency, resolve_agency
from agentvm.model import names
from agentvm.model.agency import AgencyConfig, MoRef
from agentvm.model.desired import (
    DesiredState,
    ExtensionState,
    HostAgentSettings,
    ObservedState,
    SolutionSpec,
)
from agentvm.model.errors import NotFoundError
from agentvm.model.inventory import InventorySnapshot, VirtualMachine
from agentvm.model.network import ADDRESS_KEY as ADDRESS_KEY  # the host's address from the IP plan
from agentvm.model.network import AGENCY_KEY as AGENCY_KEY
from agentvm.vsphere.extensions import RegisteredExtension, find_extension
from agentvm.vsphere.inventory import read_inventory, read_objects
from agentvm.vsphere.session import Session

# extraConfig keys agentvm writes into each agent VM besides the guestinfo.<property> copies
AGENTVM_GUESTINFO = "guestinfo.agentvm."


@dataclass(frozen=True)
class AgencyObservation:
    """One agency of the spec: resolved against the inventory, and what EAM holds for it (None: nothing)."""

    resolved: ResolvedAgency
    status: AgencyStatus | None = None
    config: AgencyConfig | None = None
    addresses: Mapping[str, IPv4Address] = field(default_factory=dict)  # host moid -> address its VM carries

    @property
    def name(self) -> str:
        return self.resolved.spec.name


@dataclass(frozen=True)
class Observation:
    """Everything plan/apply decide from, read in one pass."""

    snapshot: InventorySnapshot
    extension: RegisteredExtension | None
    agencies: tuple[AgencyObservation, ...]
    certificate_accepted: bool | None = None  # the extension's login worked; None: not tried (no HTTPS)

    def agency(self, name: str) -> AgencyObservation | None:
        return next((a for a in self.agencies if a.name == name), None)

    def observed_state(self, solution: SolutionSpec) -> ObservedState:
        """The summary ``core.plan.make_plan`` compares the spec with."""
        settings = {}
        for host in self.snapshot.hosts:
            ds = self.snapshot.get(host.agent_vm_datastore) if host.agent_vm_datastore else None
            nw = self.snapshot.get(host.agent_vm_network) if host.agent_vm_network else None
            settings[host.moref.value] = HostAgentSettings(
                datastore=ds.name if ds else None,
                network=nw.name if nw else None,
                datastore_ref=host.agent_vm_datastore,
                network_ref=host.agent_vm_network,
                datastores=self._attached(host.datastores),
                networks=self._attached(host.networks),
            )
        agencies = {
            a.name: observed_agency(a.config, a.resolved, self.snapshot)
            for a in self.agencies
            if a.config is not None
        }
        return ObservedState(
            extension=extension_state(self.extension, solution),
            host_settings=settings,
            agencies=agencies,
            hosts={a.name: a.resolved.hosts for a in self.agencies},
            addresses={a.name: a.addresses for a in self.agencies},
            datacenters=self.snapshot.datacenter_paths,
            configs={a.name: a.config for a in self.agencies if a.config is not None},
            wanted={a.name: a.resolved.config for a in self.agencies},
        )

    def _attached(self, refs: Iterable[MoRef]) -> tuple[names.NamedRef, ...]:
        """The objects of ``refs`` the inventory read holds, in the host's order, as the planner matches
        the spec's names against them."""
        found = (self.snapshot.get(ref) for ref in refs)
        return tuple(names.NamedRef(o.moref, o.name, o.path) for o in found if o is not None)


def extension_state(found: RegisteredExtension | None, solution: SolutionSpec) -> ExtensionState | None:
    """The registered extension as the planner sees it.

    agentvm registers ``summary or label`` as the description's summary (vCenter wants one), so that value
    reads back as the spec's (possibly empty) summary: otherwise every plan would show a change.
    """
    if found is None:
        return None
    summary = solution.summary if found.summary == (solution.summary or solution.label) else found.summary
    return ExtensionState(version=found.version, label=found.label, summary=summary, company=found.company)


def read_addresses(
    snapshot: InventorySnapshot,
    status: AgencyStatus | None,
    agency: str | None = None,
    *,
    carried: Mapping[str, IPv4Address] | None = None,
) -> dict[str, IPv4Address]:
    """Host moid -> the address the agency's agent VM on that host carries (hook VM first: an upgrade).

    ``agency``: the agency's name; hosts the status does not cover (or no status at all) then take the
    address of a VM on them that carries that name (``marked_vms``), so a plan never hands a host with
    a running agent VM another address. ``carried``: ``vm_addresses(snapshot)``, when the caller keeps it
    between calls (the controller, on every poll), so that no VM's address is parsed again.
    """
    if carried is None:
        carried = vm_addresses(snapshot)
    found: dict[str, IPv4Address] = {}
    for agent in status.agents if status is not None else ():
        for vm_ref in (agent.vm, agent.hook.vm if agent.hook else None):
            address = carried.get(vm_ref.value) if vm_ref is not None else None
            if address is not None:
                found[agent.host.value] = address
                break
    covered = {a.host.value for a in status.agents} if status is not None else set()
    for vm in marked_vms(snapshot, agency) if agency is not None else ():
        host = vm.host.value if vm.host is not None else None
        address = _address(vm)
        if host is not None and host not in covered and address is not None:
            found.setdefault(host, address)
    return found


def vm_addresses(snapshot: InventorySnapshot) -> dict[str, IPv4Address]:
    """VM moid -> the address the VM carries (``guestinfo.agentvm.address``), for every VM of ``snapshot``
    that carries a valid one."""
    found: dict[str, IPv4Address] = {}
    for vm in snapshot.vms:
        address = _address(vm) if ADDRESS_KEY in vm.extra_config else None
        if address is not None and snapshot.get(vm.moref) is vm:
            found[vm.moref.value] = address
    return found


def _address(vm: VirtualMachine) -> IPv4Address | None:
    text = vm.extra_config.get(ADDRESS_KEY)
    if not text:
        return None
    try:
        return IPv4Address(text)
    except ValueError:
        return None  # not ours to interpret; the plan hands out an address again


def marked_vms(snapshot: InventorySnapshot, agency: str) -> list[VirtualMachine]:
    """The VMs that carry ``agency`` as their agency's name (agentvm wrote it when it configured them),
    by moid. Needs a snapshot read with ``read_snapshot`` (the ``guestinfo.agentvm.*`` keys)."""
    return sorted(
        (vm for vm in snapshot.vms if vm.extra_config.get(AGENCY_KEY) == agency), key=lambda v: v.moref.value
    )


def read_snapshot(session: Session) -> InventorySnapshot:
    """The inventory with each VM's ``guestinfo.agentvm.*`` keys (one bulk read per object type)."""
    return read_inventory(session, extra_config_prefix=AGENTVM_GUESTINFO)


class InventoryKeeper:
    """The controller's inventory snapshot, kept up to date from what its watch names.

    ``InventoryKeeper(session, delta)``; ``delta()`` hands over what the watch saw since it was last called
    (``controller.watch.InventoryWatch.inventory_delta``; None: no watch, every read is a full one).
    ``read(full=False)`` (a topology change) reads again only the objects named since the last full read,
    plus the hosts agentvm acted on (``acted_on``), in one ``RetrievePropertiesEx``
    (``vsphere.inventory.read_objects``), and patches the last snapshot (``core.inventory_patch``). It
    reads everything (``read_snapshot``) when asked (``full=True``: the periodic pass, a reconnect, a new
    watch, a resync request), when the watch cannot say exactly what changed, when there is no snapshot
    yet, and when the objects read do not fit the snapshot. Named objects stay named until the next full
    read, so a reconfiguration the watch does not report (an agent VM's address written after it was
    created) is read again at every patch until then. Called by the controller's loop thread only.
    """

    def __init__(self, session: Session, delta: Callable[[], InventoryDelta] | None = None) -> None:
        self._session = session
        self._delta = delta
        self._named = InventoryDelta()
        self.snapshot: InventorySnapshot | None = None
        self.full_reads = 0  # reads of the whole inventory, and patches, so far (tests and benchmarks)
        self.patches = 0
        self.last_read: tuple[MoRef, ...] = ()  # the objects the last patch read

    def acted_on(self, refs: Iterable[MoRef]) -> None:
        """Objects agentvm changed (hosts whose AgentVM settings it set): read again at the next patch."""
        self._named = self._named | InventoryDelta(changed=frozenset(refs))

    def read(self, *, full: bool = True) -> InventorySnapshot:
        """The inventory now: patched (``full=False``, when it can be) or read whole. Raises the session's
        agentvm errors (nothing is kept then: the next read is a full one)."""
        named = self._named | (self._delta() if self._delta is not None else InventoryDelta(exact=False))
        self._named = InventoryDelta(exact=False)  # until this read succeeds
        snapshot = None
        if not full and named.exact and self.snapshot is not None:
            snapshot = self._patch(self.snapshot, named)
        if snapshot is None:
            snapshot = read_snapshot(self._session)
            named = InventoryDelta()
            self.full_reads += 1
        else:
            self.patches += 1
        self.snapshot, self._named = snapshot, named
        return snapshot

    def _patch(self, snapshot: InventorySnapshot, named: InventoryDelta) -> InventorySnapshot | None:
        gone = {ref.value for ref in named.gone}
        changed = [ref for ref in named.changed if ref.value not in gone]
        try:
            read = read_objects(self._session, changed, known=snapshot, extra_config_prefix=AGENTVM_GUESTINFO)
        except NotFoundError:
            return None  # one of them went meanwhile: the whole inventory, then
        self.last_read = tuple(o.moref for o in objects_of(read))
        return patch_inventory(snapshot, read, named.gone)


@dataclass(frozen=True)
class Reused:
    """What a re-plan takes from the last observation instead of reading it again: the extension and the
    agencies' configs (by agency id). The controller hands it over only on a re-plan for a topology change
    (a host added or gone changes neither) and only for what its last pass did not change itself: an
    extension written, or an agency updated, is read again. What someone else changed meanwhile is seen by
    the next periodic full pass (``Settings.full_resync``): a change of theirs is acted on late, never lost.
    """

    extension: RegisteredExtension | None
    configs: Mapping[str, AgencyConfig] = field(default_factory=dict)


def observe(
    session: Session,
    backend: Backend,
    desired: DesiredState,
    *,
    snapshot: InventorySnapshot | None = None,
    config_of: Callable[[str], AgencyConfig] | None = None,
    certificate_accepted: bool | None = None,
    reuse: Reused | None = None,
) -> Observation:
    """Read the inventory, the extension and each agency of ``desired`` (on a standalone host's session,
    ``Session.host_agent``, no extension: a host has no ExtensionManager).

    ``config_of`` reads an agency's config by id (``EamClient.agency_config``); without it the agencies'
    configs are not read (enough for status and destroy). ``reuse``: the extension and the configs of
    agencies (by id) as an earlier observation read them, taken instead of reading them again (the
    controller's re-plan for a topology change, see ``Reused``).

    Raises NotFoundError / ConfigurationError for a spec that does not fit the inventory (unknown cluster,
    datastore a host cannot see, two agencies with one name) and the adapters' errors (TransientError when
    EAM is unreachable, AuthenticationError). Changes nothing.
    """
    snapshot = snapshot if snapshot is not None else read_snapshot(session)
    # a standalone host (host agent) has no ExtensionManager: nothing is registered there
    extension = (
        None
        if session.host_agent
        else reuse.extension
        if reuse is not None
        else find_extension(session, desired.solution.key)
    )
    resolved = [resolve_agency(a, snapshot) for a in desired.agencies]
    agencies = []
    for agency in resolved:
        status = backend.observe(agency.spec.name)
        config = None
        if status is not None and reuse is not None:
            config = reuse.configs.get(status.agency)
        if config is None and status is not None and config_of is not None:
            config = config_of(status.agency)
        addresses = read_addresses(snapshot, status, agency.spec.name)
        agencies.append(AgencyObservation(agency, status, config, addresses))
    return Observation(snapshot, extension, tuple(agencies), certificate_accepted)
