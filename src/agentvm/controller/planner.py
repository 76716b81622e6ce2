"""Plan one spec on one vCenter: observe, compare (``core.plan``), validate; changes nothing.

``Planner(desired, executor).plan()`` reads everything through the executor's sessions and backend
(``controller.observe``), lets ``core.plan.make_plan`` compare, then adds the changes that depend on the
login and on what EAM reports now: the extension's certificate (``SetCertificate``/``RecordCertificate``),
pending hooks (``AnswerHook``) and active issues (``ResolveIssue``). The result, a ``SolutionPlan``, holds
typed changes only; ``core.plan_text.describe`` renders each for ``agentvm plan`` and ``plan --json``.

Validation happens here, before anything changes: inventory names, OVF URL and sha256, IP plan size,
per-host templates, agencies someone else owns, and **one certificate per extension**: vCenter keeps one
login certificate per extension, so setting another locks out whoever logs in with the first (an
``agentvm run`` on another machine). Apply records in the extension which certificate it set
(``vsphere.extensions.CertificateRecord``) before it sets it. When our login is refused and the record names
another certificate, a generated one is never set over it: the plan stops naming the holder and the fixes
(copy its files, or ``--state-dir``, or a spec certificate); a certificate the spec names replaces it, and
the plan line says whose logins then fail. Nothing recorded keeps the first-apply path (generate, record,
set); a working login without a record is recorded (``record-certificate``).

Callers: ``controller.solution.Solution`` (``agentvm plan | apply``) and ``controller.reconcile.Reconciler``
(each full pass). See docs/architecture.md, "Plans and the executor".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentvm.controller.executor import Executor
from agentvm.controller.hostnet import HostNetworkPlan, changed_hosts, plan_host_networks
from agentvm.controller.identity import thumbprints
from agentvm.controller.observe import AgencyObservation, Observation, Reused, marked_vms, observe
from agentvm.controller.ovfcheck import check_ovf
from agentvm.core.heal import HealClass, HostConditions, fix_for, heal_class, observed_issues
from agentvm.core.ipplan import render_per_host
from agentvm.core.plan import (
    AnswerHook,
    Change,
    ChangeKind,
    HeldCertificate,
    PrepareSwitch,
    RecordCertificate,
    ResolveIssue,
    SetCertificate,
    SetHostSettings,
    SpecPlan,
    make_plan,
)
from agentvm.core.plan_text import describe, issue_label
from agentvm.model.desired import DesiredState
from agentvm.model.errors import ConfigurationError
from agentvm.model.hostnet import HostNetworkSnapshot
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere.extensions import CertificateRecord

AGENCY_KINDS = frozenset({ChangeKind.CREATE_AGENCY, ChangeKind.UPDATE_AGENCY, ChangeKind.UPGRADE_AGENCY})


@dataclass(frozen=True)
class SolutionPlan:
    """What apply would do (typed changes, in the order apply does them), and what it was decided from."""

    observation: Observation
    spec_plan: SpecPlan
    changes: tuple[Change, ...]
    warnings: tuple[str, ...] = ()
    host_network: HostNetworkPlan = field(default_factory=HostNetworkPlan)  # hostNetwork: what is right

    @property
    def empty(self) -> bool:
        return not self.changes

    def describe(self) -> list[str]:
        return [describe(c) for c in self.changes] or ["no changes"]

    def kinds(self, agency: str | None = None) -> set[ChangeKind]:
        return {c.kind for c in self.changes if agency is None or c.agency == agency}

    def to_json(self) -> dict[str, object]:
        """The plan as ``plan --json`` prints it."""
        return {
            "apiVersion": "agentvm/v1",
            "kind": "Plan",
            "changes": [
                {
                    "kind": change.kind.value,
                    "target": change.target,
                    "description": describe(change),
                    "agency": change.agency,
                    "host": change.host,
                }
                for change in self.changes
            ],
            "addresses": {
                agency: {
                    held.host.moid: {
                        "host": held.host.path or held.host.name,
                        "address": str(held.address),
                        "source": held.source.value,
                    }
                    for held in assignment.addresses
                }
                for agency, assignment in self.spec_plan.addresses.items()
            },
            "warnings": list(self.warnings),
            "hostNetwork": {"right": list(self.host_network.right), "errors": list(self.host_network.errors)},
            "noChanges": self.empty,
        }


class HostNetworkError(ConfigurationError):
    """A ``hostNetwork`` check failed on some host: nothing was changed on any host."""

    def __init__(self, errors: tuple[str, ...]) -> None:
        self.errors = errors
        count = len(errors)
        lines = "\n".join(f"  {e}" for e in errors)
        checks = f"{count} check{'s' if count != 1 else ''}"
        super().__init__(f"hostNetwork: {checks} failed; nothing was changed on any host:\n{lines}")


class Planner:
    """Plans ``desired`` with what ``executor`` reads. ``strict_static_hosts``: an ``ipPlan.addresses``
    entry naming no host in scope is an error (``plan``, ``apply``); the controller makes it a warning,
    so one host leaving a cluster never stops it."""

    def __init__(
        self, desired: DesiredState, executor: Executor, *, strict_static_hosts: bool = True
    ) -> None:
        self.desired = desired
        self.executor = executor
        self.strict_static_hosts = strict_static_hosts
        self._network_read: HostNetworkSnapshot | None = None  # the last read, less the hosts it changed
        self.network_reads_hosts = 0  # hosts whose networking the last plan read (hostNetwork)

    def observe(
        self, snapshot: InventorySnapshot | None = None, *, reuse: Reused | None = None
    ) -> Observation:
        """Read everything the plan needs (see ``controller.observe``), logging in as the extension first
        when the backend wants it. Changes nothing in vCenter. ``reuse``: the extension and agency configs
        of the last observation, and no adoption (the agency list and its owners, as the last pass left
        them): a re-plan for a topology change, see ``controller.observe.Reused``."""
        ex = self.executor
        ex.prepare_login(adopt=reuse is None)
        return observe(
            ex.session,
            ex.backend,
            self.desired,
            snapshot=snapshot,
            config_of=ex.backend.agency_config,
            certificate_accepted=ex.certificate_accepted if ex.wants_certificate() else None,
            reuse=reuse,
        )

    def plan(
        self,
        *,
        check_packages: bool = True,
        snapshot: InventorySnapshot | None = None,
        reuse: Reused | None = None,
        network_known: bool = False,
    ) -> SolutionPlan:
        """Observe and compare; validate what apply needs. Raises the validation errors; changes nothing.

        ``network_known``: the hosts' networking as the last plans read it still stands but for what the
        caller's watch named (``forget_network``): a re-plan reads only the hosts new or named since (the
        controller's periodic pass while its watch on the hosts' networking is live).

        ``check_packages``: download each OVF that an agency change would hand to EAM (and check its sha256).
        ``snapshot``: the inventory as the caller holds it now (the controller's ``InventoryKeeper``);
        None: read it. ``reuse``: see ``observe``.
        """
        ex = self.executor
        solution = self.desired.solution
        observation = self.observe(snapshot, reuse=reuse)
        replaced = None
        if ex.wants_certificate() and observation.certificate_accepted is False:
            replaced = self._held_by_another(observation)  # raises for a generated certificate
        self._refuse_unseen_agencies(observation)
        core = make_plan(
            self.desired,
            observation.observed_state(solution),
            strict_static=self.strict_static_hosts,
            standalone=ex.session.host_agent,
        )
        warnings = [*self.desired.warnings, *core.warnings, *ex.ownership_notes]
        warnings += self._owners_before_certificate(observation)
        if not ex.wants_certificate() and not ex.session.conn.by_certificate and not ex.session.host_agent:
            warnings.append(
                f"vCenter {ex.session.url} is not HTTPS, so extension {solution.key} cannot log in "
                f"with a certificate: the agencies apply creates belong to {ex.session.user}, not to the "
                "solution"
            )
        warnings += away_warnings(observation)
        changes: list[Change] = [c for c in core.changes if c.agency is None and c.host is None]
        if ex.wants_certificate() and observation.certificate_accepted is False:
            changes.append(self._certificate_change(replaced))
        elif self._needs_record(observation):
            changes.append(self._record_change())
        managers = {h.moref.value: h.esx_agent_host_manager for h in observation.snapshot.hosts}
        changes += [
            replace(c, manager=managers.get(c.target))  # carried out in one call: see SetHostSettings
            for c in core.changes
            if isinstance(c, SetHostSettings)
        ]
        network = self._host_network(observation, warnings, replan=reuse is not None or network_known)
        changes += network.changes
        for agency in observation.agencies:
            changes += self._agency_changes(agency, core, warnings, check_packages)
        return SolutionPlan(observation, core, tuple(changes), tuple(dict.fromkeys(warnings)), network)

    def forget_network(self, hosts: Iterable[str] | None) -> None:
        """These hosts' networking changed (the controller's watch): the next re-plan reads it again; None:
        a switch or DV port group changed, every host's and the switches are read again."""
        known = self._network_read
        if hosts is None:
            self._network_read = None
        elif known is not None:
            gone = set(hosts)
            self._network_read = replace(known, hosts=tuple(h for h in known.hosts if h.moid not in gone))

    def _host_network(
        self, observation: Observation, warnings: list[str], *, replan: bool
    ) -> HostNetworkPlan:
        """The agencies' ``hostNetwork`` checks and changes (``controller.hostnet``). A failed check on any
        host means no host network change on any host: ``plan`` and ``apply`` stop with every failed check
        (HostNetworkError); the controller (not strict) warns with them and changes no host's networking.

        ``replan`` (the controller's re-plans, see ``plan``): the last read stands for the hosts it holds
        (less those that plan changed and those ``forget_network`` named since, which are read again with
        any new host; nothing is read when there are none). A drift the watch did not name is found by the
        next plan that reads every host."""
        network = plan_host_networks(
            self.executor.session,
            [(a.resolved.spec, a.resolved.hosts) for a in observation.agencies],
            known=self._network_read if replan else None,
        )
        self._network_read = _kept(network)
        self.network_reads_hosts = network.read_hosts
        self.executor.host_network.learn_key(network.owner_field_key)
        self.executor.host_network.learn(network.snapshot)
        if not network.errors:
            return network
        if self.strict_static_hosts:
            raise HostNetworkError(network.errors)
        warnings += [
            f"hostNetwork: {e} (no host's networking is changed until this is fixed)" for e in network.errors
        ]
        return replace(network, changes=())

    # -- the certificate ------------------------------------------------------------------------------

    def _held_by_another(self, observation: Observation) -> CertificateRecord | None:
        """The extension's recorded certificate when it is not ours, else None (nothing recorded, or ours).

        Called by ``plan`` when the extension refused our login. vCenter keeps one certificate per extension:
        setting a generated one over another machine's would lock that machine out (its ``agentvm run``),
        so that is refused here with the fixes; a certificate the spec names may replace it (the operator
        chose it), and the plan line says whose logins then fail.
        """
        ex = self.executor
        found = observation.extension.certificate if observation.extension is not None else None
        if found is None or found.sha256 == ex.our_thumbprint():
            return None
        if ex.spec_certificate():
            return found
        key = self.desired.solution.key
        ours = ex.identity.directory
        if found.generated:
            held = f"generated on {found.host} in {Path(found.file).parent}"
            copy = (
                f"copy solution.crt and solution.key from {found.host}:{Path(found.file).parent} into {ours}"
            )
        else:
            held = f"solution.certFile {found.file} on {found.host}"
            copy = (
                f"copy {found.file} and its key from {found.host} into {ours} as solution.crt and "
                "solution.key"
            )
        mine = (
            f"the one in {ours} (SHA-1 {thumbprints_sha1(ex.identity.cert_file)}) is another"
            if ex.identity.has_certificate()
            else f"there is none in {ours}"
        )
        set_at = f", set {found.set_at}" if found.set_at else ""
        # <state dir>/<vcenter>/<solution key>/solution.crt: the holder's --state-dir
        parents = Path(found.file).parents
        theirs = f" (on {found.host}: {parents[2]})" if found.generated and len(parents) > 3 else ""
        raise ConfigurationError(
            f"extension {key} logs in with a certificate this machine does not have (SHA-1 {found.sha1}, "
            f"{held}{set_at}) and {mine}; vCenter keeps one certificate per extension, so setting this "
            f"machine's would lock that one out (e.g. the agentvm run there). Fix: {copy}; or pass "
            f"--state-dir with a state dir that holds them{theirs}; or name a certificate in "
            "solution.certFile and solution.keyFile (it replaces that one, whose logins then fail)"
        )

    def _needs_record(self, observation: Observation) -> bool:
        """True when our login works but the extension does not record our certificate (registered by an
        older agentvm, which recorded nothing): apply records it, so other machines' applies see it."""
        ex = self.executor
        return (
            ex.wants_certificate()
            and not ex.session.conn.by_certificate
            and observation.certificate_accepted is True
            and observation.extension is not None
            and (ours := ex.our_thumbprint()) is not None
            and (
                observation.extension.certificate is None or observation.extension.certificate.sha256 != ours
            )
        )

    def _record_change(self) -> RecordCertificate:
        cert_file = self.executor.certificate_files()[0]
        return RecordCertificate(self.desired.solution.key, thumbprints_sha1(Path(cert_file)), cert_file)

    def _certificate_change(self, replaced: CertificateRecord | None = None) -> SetCertificate:
        ex = self.executor
        solution = self.desired.solution
        held = (
            HeldCertificate(replaced.host, replaced.sha1, replaced.file, replaced.generated)
            if replaced is not None
            else None
        )
        return SetCertificate(
            solution.key,
            solution.cert_file if ex.spec_certificate() else None,
            str(ex.identity.directory),
            str(ex.identity.cert_file) if ex.identity.has_certificate() else None,
            held,
        )

    # -- ownership ------------------------------------------------------------------------------------

    def _owners_before_certificate(self, observation: Observation) -> list[str]:
        """While EAM calls still go through the user's session (the certificate is set by this apply), say
        which agencies of the spec someone else owns: apply adopts them once it logs in as the solution."""
        ex = self.executor
        client = ex.backend.eam_client
        if ex.eam_session.conn.by_certificate or not ex.wants_certificate() or client is None:
            return []
        notes = []
        for agency in observation.agencies:
            if agency.status is None:
                continue
            owner = client.agency_solution_id(agency.status.agency)
            if owner != self.desired.solution.key:
                notes.append(ex.adopted_note(agency.name, agency.status.agency, owner))
        return notes

    def _refuse_unseen_agencies(self, observation: Observation) -> None:
        """A certificate login sees only the solution's own agencies: when an agency of the spec is not
        among them but agent VMs carry its name, it exists and belongs to someone else. Creating it would
        give every host a second agent VM (and the plan other addresses): refuse, with the fix."""
        ex = self.executor
        if not ex.session.conn.by_certificate:
            return  # a user login sees every agency: what it does not see does not exist
        for agency in observation.agencies:
            if agency.status is not None:
                continue
            vms = marked_vms(observation.snapshot, agency.name)
            if not vms:
                continue
            shown = ", ".join(f"{vm.name} ({vm.moref.value})" for vm in vms[:3])
            more = f" and {len(vms) - 3} more" if len(vms) > 3 else ""
            raise ConfigurationError(
                f'agency "{agency.name}" exists, but the solution {self.desired.solution.key} does not own '
                f"it: its agent VMs {shown}{more} carry its name, and EAM lists an agency to its owner only "
                "(it was created with a user login, e.g. by an older agentvm). Run plan/apply once with "
                "vcenter.login: password: agentvm finds it, keeps managing it and records it in "
                f"{ex.identity.directory} for certificate logins"
            )

    # -- per agency -----------------------------------------------------------------------------------

    def _agency_changes(
        self, agency: AgencyObservation, core: SpecPlan, warnings: list[str], check_packages: bool
    ) -> list[Change]:
        name = agency.name
        mine = [c for c in core.changes if c.agency == name and c.kind is not ChangeKind.SET_HOST_SETTINGS]
        changes: list[Change] = [c for c in mine if c.kind is not ChangeKind.ASSIGN_ADDRESS]
        descriptor = None
        if changes and check_packages:
            descriptor, found = check_ovf(agency.resolved.spec)
            warnings += found
        network = agency.resolved.spec.host_network
        if check_packages and network is not None and (network.agent_nics.fabric or network.agent_nics.trunk):
            # the OVF has the NICs agentNics names (from the descriptor just checked: one download)
            self.executor.nic_positions(agency.resolved.spec, descriptor)
        # render every host's values now: a template that cannot be filled is an error before any change
        assignment = core.addresses.get(name)
        for host in agency.resolved.hosts:
            held = assignment.get(host.moid) if assignment else None
            render_per_host(agency.resolved.spec, host, held.address if held else None)
        changes += [c for c in mine if c.kind is ChangeKind.ASSIGN_ADDRESS]
        if agency.status is not None and agency.resolved.spec.provisioned_hook:
            planned = {c.host for c in changes}
            pending = [a for a in agency.status.pending_hooks if a.host.value not in planned]
            for agent in pending:
                assert agent.hook is not None
                moid = agent.host.value
                changes.append(
                    AnswerHook(
                        name, agent.agent, agent.hook.vm, agent.hook.state, moid, agency.resolved.host(moid)
                    )
                )
        changes += self._issue_changes(agency, warnings)
        return changes

    def _issue_changes(self, agency: AgencyObservation, warnings: list[str]) -> list[Change]:
        """What apply does about the agency's issues: resolve the active ones (a change each, as the wait
        does it); a passive one is a warning with its fix (apply stops on it)."""
        if agency.status is None:
            return []
        changes: list[Change] = []
        for issue in observed_issues([agency.status]):
            host = agency.resolved.host(issue.host.value) if issue.host is not None else None
            cls = heal_class(issue.kind)
            if cls is HealClass.ACTIVE:
                changes.append(ResolveIssue(agency.name, issue, host))
            elif cls is HealClass.PASSIVE:
                warnings.append(
                    f"{agency.name}: {issue.kind.value} #{issue.key} on {issue_label(issue, host)} needs a "
                    f"person: {fix_for(issue)}"
                )
        return changes


def thumbprints_sha1(cert_file: Path) -> str:
    """The SHA-1 thumbprint of the certificate in ``cert_file``, as vCenter shows it."""
    return thumbprints(cert_file.read_bytes())[1]


def away_warnings(observation: Observation) -> list[str]:
    """One warning per host in an agency's scope that is in maintenance mode or standby, or unreachable:
    its agent is deployed or powered on when the host is back, and apply does not wait for it."""
    conditions = HostConditions.of(observation.snapshot.hosts)
    why = {
        **{ref.value: "is unreachable" for ref in conditions.unreachable},
        **{ref.value: "is in standby" for ref in conditions.standby},
        **{ref.value: "is in maintenance mode" for ref in conditions.maintenance},
    }
    return [
        f"{agency.name}: host {host.moid} ({host.path or host.name}) {why[host.moid]}: its agent is deployed "
        "or powered on when the host is back; apply does not wait for it"
        for agency in observation.agencies
        for host in agency.resolved.hosts
        if host.moid in why
    ]


def _kept(network: HostNetworkPlan) -> HostNetworkSnapshot | None:
    """What a re-plan may take from this plan's host network read once its changes are made: the hosts it
    does not change (the ones it changes are read again); nothing when it changes a switch."""
    if network.snapshot is None or any(isinstance(c, PrepareSwitch) for c in network.changes):
        return None
    changed = changed_hosts(network.changes)
    hosts = tuple(h for h in network.snapshot.hosts if h.moid not in changed)
    return replace(network.snapshot, hosts=hosts)
