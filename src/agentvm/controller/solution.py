"""agentvm as a vCenter solution: plan, apply and destroy one spec over EAM.

Called by the CLI (``agentvm plan | apply | destroy``) and usable by the controller and the HTTP API.
``Solution(desired, session)`` holds one logged-in vim25 ``Session`` and an ``EamBackend`` on it (or on
the solution's own session once it can log in with its certificate, so that the agencies belong to the
extension). Data flows one way: ``observe`` → ``core.plan.make_plan`` → act.

- ``plan()`` validates everything (inventory names, OVF URL and sha256, IP plan size, per-host templates,
  duplicate agencies, EAM reachable) and changes nothing.
- ``apply()`` plans first — every validation error is raised before the first change — then registers or
  updates the extension (and sets its certificate), fills in missing AgentVM settings of the hosts in scope,
  creates / updates the agencies, answers each pending ``provisioned`` hook by writing that host's values
  into the hook's VM (vApp properties and ``guestinfo.*``) and calling MarkAsAvailable, and waits until
  every agency is green or the timeout passes, reporting a ``Progress`` after each poll. While it waits it
  heals with ``core.heal`` — the controller's policy: active issues (VmPoweredOff, VmNotDeployed, …) are
  resolved with backoff and a bounded number of tries; a passive issue (a person must act), or an active
  one given up on, stops the wait at once: the report's ``problems`` name the issue, the host and the fix.
- ``destroy()``: Uninstall → wait until green → DestroyAgency → unregister the extension.

**Who owns the agencies.** EAM gives an agency to the session that creates it, and a solution's QueryAgency
lists only its own (EAM.md sections 2 and 8). So every EAM call goes through the extension's own session
(``LoginExtensionByCertificate``): with ``solution.certFile``/``keyFile`` from the spec, else with a
certificate the first apply generates under the state dir (``controller.identity``). An agency of a spec
name that someone else owns (created through a user login, e.g. by an older agentvm) is adopted, never
duplicated: with a user login agentvm finds it (a user sees every agency), keeps managing it through that
login, records its id and says so; a certificate-only run reads it by that recorded id, and without a record
refuses (its agent VMs carry the agency's name) with the fix. Redeploying every agent to move an agency to
the solution is an operator's decision (destroy, then apply), never a side effect of a login change.

**One certificate per extension.** vCenter keeps one login certificate per extension, so setting another
locks out whoever logs in with the first (an ``agentvm run`` on another machine). Apply records in the
extension which certificate it set (SHA-256/SHA-1, host, file: ``vsphere.extensions.CertificateRecord``)
before it sets it. When our login is refused and the record names another certificate, a generated one is
never set over it: plan/apply stop before any change naming the holder and the fixes (copy its files, or
``--state-dir``, or a spec certificate); a certificate the spec names replaces it, and the plan line says
whose logins then fail. Nothing recorded (a fresh extension, or an older agentvm's) keeps the first-apply
path: generate, record, set; a working login without a record is recorded (plan line ``record-certificate``).

EAM has no push notifications for hooks (EAM.md section 5), so the wait polls: every 0.25 s while something
changes, backing off to 2 s while nothing does.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from agentvm.backends.base import AgencyStatus, ApplyResult
from agentvm.backends.eam import EamBackend
from agentvm.controller.identity import (
    Adopted,
    SolutionIdentity,
    certificate_record,
    default_state_dir,
    solution_dir,
    thumbprints,
)
from agentvm.controller.lease import holding
from agentvm.controller.observe import (
    ADDRESS_KEY,
    AGENCY_KEY,
    AgencyObservation,
    Observation,
    marked_vms,
    observe,
    read_addresses,
    read_snapshot,
)
from agentvm.controller.ovfcheck import check_ovf
from agentvm.controller.targets import config_differences
from agentvm.core.heal import (
    HealClass,
    HealDecision,
    HealPlan,
    HealPolicy,
    HealState,
    HostConditions,
    Verdict,
    fix_for,
    heal_class,
    observed_issues,
    plan_heal_agencies,
)
from agentvm.core.ipplan import assign_addresses, render_per_host
from agentvm.core.plan import Change, ChangeKind, Plan, make_plan
from agentvm.core.progress import HostProgress, Progress, host_rows
from agentvm.core.scope import ResolvedAgency, resolve_agency
from agentvm.eam.client import EamClient
from agentvm.model import names
from agentvm.model.agency import AgencyConfig, HookState, Issue, MoRef, Status
from agentvm.model.connection import VCenterConnection
from agentvm.model.desired import DesiredState, ScopeHost, SolutionSpec
from agentvm.model.errors import AuthenticationError, ConfigurationError, NotFoundError, TransientError
from agentvm.model.inventory import InventorySnapshot
from agentvm.vsphere.extensions import (
    CertificateRecord,
    ExtensionSpec,
    ManagedEntityType,
    record_extension_certificate,
    register_extension,
    set_extension_certificate,
    unregister_extension,
    update_extension,
)
from agentvm.vsphere.hosts import AgentVmSettings, clear_agent_vm_settings, ensure_agent_vm_settings
from agentvm.vsphere.ovf import configure_vm
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
POLL_FIRST = 0.25
POLL_MAX = 2.0
REANSWER_AFTER = 10.0  # a hook still pending this long after MarkAsAvailable is answered again
MANAGED_ENTITY_TYPE = "agent"  # config.managedBy.type of agent VMs (EAM.md section 8)

EAM_METHODS = frozenset(
    {
        "CreateAgency",
        "QueryAgency",
        "QueryConfig",
        "AgencyQueryRuntime",
        "QueryAgent",
        "QuerySolutionId",
        "Update",
        "Agency_Enable",
        "Agency_Disable",
        "Uninstall",
        "DestroyAgency",
        "AgentQueryConfig",
        "AgentQueryRuntime",
        "MarkAsAvailable",
        "QueryIssue",
        "Resolve",
        "ResolveAll",
    }
)

ProgressCallback = Callable[[Progress], None]
CallListener = Callable[[str, float, str | None], None]


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class PlanLine:
    """One line of ``agentvm plan``: a ``core.plan`` change, or one the solution adds (certificate, hooks)."""

    kind: str
    target: str
    description: str
    agency: str | None = None
    host: str | None = None

    @classmethod
    def of(cls, change: Change) -> PlanLine:
        return cls(change.kind.value, change.target, change.description, change.agency, change.host)


@dataclass(frozen=True)
class SolutionPlan:
    """What apply would do, and what it was decided from."""

    observation: Observation
    plan: Plan
    lines: tuple[PlanLine, ...]
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.lines

    def describe(self) -> list[str]:
        return [line.description for line in self.lines] or ["no changes"]

    def kinds(self, agency: str | None = None) -> set[str]:
        return {line.kind for line in self.lines if agency is None or line.agency == agency}

    def to_json(self) -> dict[str, object]:
        """The plan as ``plan --json`` prints it."""
        return {
            "apiVersion": "agentvm/v1",
            "kind": "Plan",
            "changes": [
                {
                    "kind": line.kind,
                    "target": line.target,
                    "description": line.description,
                    "agency": line.agency,
                    "host": line.host,
                }
                for line in self.lines
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
                for agency, assignment in self.plan.addresses.items()
            },
            "warnings": list(self.warnings),
            "noChanges": self.empty,
        }


# ----------------------------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyReport:
    """What apply did, each host's final state, and what it cost."""

    plan: SolutionPlan
    actions: tuple[str, ...]
    hosts: tuple[HostProgress, ...]
    green: bool
    seconds: float
    vim_calls: int
    eam_calls: int
    problems: tuple[str, ...] = ()  # why the wait stopped early: issue, host and fix, one line each
    polls: int = 0  # observations made while waiting

    @property
    def changed(self) -> bool:
        return bool(self.actions)


@dataclass
class _Wait:
    """One agency apply/destroy waits on (mutable bookkeeping of the wait loop only)."""

    resolved: ResolvedAgency
    uninstall: bool = False
    replaced_vms: set[str] = field(default_factory=set)  # VMs an upgrade must replace
    addresses: dict[str, IPv4Address] = field(default_factory=dict)  # host moid -> planned address
    answered: dict[tuple[str, str], float] = field(default_factory=dict)  # (agent, vm) -> when
    status: AgencyStatus | None = None
    snapshot: InventorySnapshot | None = None

    @property
    def name(self) -> str:
        return self.resolved.spec.name

    def done(self) -> bool:
        status = self.status
        if self.uninstall:
            return status is None or (
                status.runtime.status is Status.GREEN and all(a.vm is None for a in status.agents)
            )
        if status is None:
            return False
        away = self.away()
        if not away and (not status.green or status.pending_hooks):
            return False
        # a host in maintenance mode or standby, or unreachable, gets its agent when it is back (EAM, or
        # the controller): apply does not wait for it (the plan warned); every other host must be ready
        agents = {a.host.value: a for a in status.agents}
        for moid in {h.moid for h in self.resolved.hosts} - away:
            agent = agents.get(moid)
            if agent is None or agent.status is not Status.GREEN or agent.hook is not None:
                return False
        return not any(
            a.vm is not None and a.vm.value in self.replaced_vms and a.host.value not in away
            for a in status.agents
        )

    def away(self) -> frozenset[str]:
        """Moids of the hosts in scope that are in maintenance mode or standby, or unreachable, as last
        read (``snapshot``)."""
        if self.snapshot is None:
            return frozenset()
        conditions = HostConditions.of(self.snapshot.hosts)
        gone = conditions.maintenance | conditions.standby | conditions.unreachable
        return frozenset(h.moid for h in self.resolved.hosts) & {ref.value for ref in gone}


class Solution:
    """One spec's solution on one vCenter. ``with Solution(desired, session) as s: s.apply()``.

    ``strict_static_hosts``: an ``ipPlan.addresses`` entry naming no host in scope is an error (``plan``,
    ``apply``); the controller makes it a warning, so one host leaving a cluster never stops it.

    ``session`` is logged in (user, or the extension by certificate). Closing the Solution logs out the
    sessions it opened itself (the extension's), never ``session``.
    """

    def __init__(
        self,
        desired: DesiredState,
        session: Session,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        state_dir: Path | None = None,
        policy: HealPolicy | None = None,
    ) -> None:
        """``state_dir``: where the solution's generated certificate is kept (``controller.identity``;
        default ``$AGENTVM_STATE_DIR`` or ``~/.local/state/agentvm``). ``policy``: the heal policy of
        apply's wait (default: the controller's, with a random jitter seed)."""
        self.desired = desired
        self.session = session
        self._clock = clock
        self._sleep = sleep
        self._eam_session = session
        self.backend = EamBackend(session)
        self._own: list[Session] = []
        self._call_listeners: list[CallListener] = []
        self._certificate_accepted: bool | None = True if session.conn.by_certificate else None
        self.strict_static_hosts = True
        base = state_dir if state_dir is not None else default_state_dir()
        self.identity = SolutionIdentity(solution_dir(base, session.url, desired.solution.key))
        self.policy = policy if policy is not None else HealPolicy(seed=secrets.randbits(32))
        # a user login sees every agency (EAM.md section 2): it finds the ones the solution does not own
        self._user_client: EamClient | None = None if session.conn.by_certificate else self.backend.client
        self._ownership_notes: list[str] = []

    def __enter__(self) -> Solution:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for session in self._own:
            session.logout()
        self._own.clear()

    @property
    def solution(self) -> SolutionSpec:
        return self.desired.solution

    def call_counts(self) -> tuple[int, int]:
        """(vim25 calls, EAM calls) made so far by every session of this Solution."""
        counts: Counter[str] = Counter()
        for session in {id(s): s for s in (self.session, self._eam_session, *self._own)}.values():
            counts.update(session.stats.snapshot())
        eam = sum(n for method, n in counts.items() if method in EAM_METHODS)
        return sum(counts.values()) - eam, eam

    # -- the extension's own session ---------------------------------------------------------------

    def _wants_certificate(self) -> bool:
        """True when EAM calls go through the extension's own session, so that the solution owns the
        agencies it creates (always, except over plain HTTP, where vCenter has no certificate login)."""
        return self.session.conn.scheme == "https"

    def _spec_certificate(self) -> bool:
        return bool(self.solution.cert_file and self.solution.key_file)

    def _certificate_files(self) -> tuple[str, str]:
        """The certificate and key the extension logs in with: the spec's, else the generated ones."""
        if self.solution.cert_file and self.solution.key_file:
            return self.solution.cert_file, self.solution.key_file
        return str(self.identity.cert_file), str(self.identity.key_file)

    def _our_thumbprint(self) -> str | None:
        """SHA-256 of the certificate this Solution logs in with (``_certificate_files``); None when there
        is none yet (generated by the first apply) or it cannot be read (apply then says why)."""
        try:
            return thumbprints(Path(self._certificate_files()[0]).read_bytes())[0]
        except (OSError, ValueError):
            return None

    def _held_by_another(self, observation: Observation) -> CertificateRecord | None:
        """The extension's recorded certificate when it is not ours, else None (nothing recorded, or ours).

        Called by ``plan`` when the extension refused our login. vCenter keeps one certificate per extension:
        setting a generated one over another machine's would lock that machine out (its ``agentvm run``),
        so that is refused here with the fixes; a certificate the spec names may replace it (the operator
        chose it), and the plan line says whose logins then fail.
        """
        found = observation.extension.certificate if observation.extension is not None else None
        if found is None or found.sha256 == self._our_thumbprint():
            return None
        if self._spec_certificate():
            return found
        key = self.solution.key
        ours = self.identity.directory
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
            f"the one in {ours} (SHA-1 {thumbprints(self.identity.cert_file.read_bytes())[1]}) is another"
            if self.identity.has_certificate()
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
        return (
            self._wants_certificate()
            and not self.session.conn.by_certificate
            and observation.certificate_accepted is True
            and observation.extension is not None
            and (ours := self._our_thumbprint()) is not None
            and (
                observation.extension.certificate is None or observation.extension.certificate.sha256 != ours
            )
        )

    def _extension_connection(self) -> VCenterConnection:
        conn = self.session.conn
        cert_file, key_file = self._certificate_files()
        return VCenterConnection(
            url=conn.url,
            thumbprint=conn.thumbprint,
            ca_file=conn.ca_file,
            insecure=conn.insecure,
            extension_key=self.solution.key,
            cert_file=cert_file,
            key_file=key_file,
        )

    def _try_extension_login(self) -> bool:
        """Log in as the extension and use that session for EAM; False when refused (or there is no
        certificate yet). The caller then calls ``_adopt``."""
        if self._eam_session is not self.session:
            return True
        if not self._spec_certificate() and not self.identity.has_certificate():
            return False  # generated by the first apply (``_set_certificate``)
        try:
            ext = Session.connect(
                self._extension_connection(),
                timeout=self.session.timeout,  # the caller's bound on every exchange holds for EAM too
                correlation_prefix="agentvm-solution",
            )
        except AuthenticationError as exc:
            log.info("extension login of %s refused: %s", self.solution.key, exc)
            return False
        ext.call_listeners.extend(self._call_listeners)
        self._own.append(ext)
        self._eam_session = ext
        self.backend = EamBackend(ext)
        return True

    def add_call_listener(self, listener: CallListener) -> None:
        """Call ``listener(method, seconds, fault)`` after every call of every session of this Solution,
        also of the extension's session it opens later (the controller's metrics and timings)."""
        self._call_listeners.append(listener)
        for session in {id(s): s for s in (self.session, self._eam_session, *self._own)}.values():
            session.call_listeners.append(listener)

    def _adopt(self) -> None:
        """Make the agencies of the spec's names that the solution does not own visible to its session.

        With a user login: every agency of such a name the user sees and the solution does not is adopted:
        listed with the solution's own, changed through the user's session, and recorded (id and owner) in
        the state dir. With a certificate login alone: the recorded ones are read by id. Two agencies of
        one name then stay two, and ``find`` stops apply with its fix, as for any duplicate.
        """
        client = self.backend.client if isinstance(self.backend, EamBackend) else None
        if client is None or not self._eam_session.conn.by_certificate:
            return  # EAM calls go through a user session: it sees every agency already
        self._ownership_notes = []
        record = self.identity.adopted()
        names = client.agency_names()
        adopted = client.adopted()
        for spec in self.desired.agencies:
            name = spec.name
            visible = {i for i, n in names.items() if n == name}
            if self._user_client is None:
                found = record.get(name)
                if found is not None and found.agency not in visible:
                    client.also_see(found.agency)
                    self._ownership_notes.append(
                        f'agency "{name}" ({found.agency}) belongs to {found.owner}, not to the solution '
                        f"{self.solution.key}: found through {self.identity.directory}; changing it needs "
                        "the owner's login (vcenter.login: password)"
                    )
                continue
            foreign = [i for i in self._user_client.find_agencies(name) if i not in visible - set(adopted)]
            owned_by_others = []
            for agency in foreign:
                owner = self._user_client.agency_solution_id(agency)
                if owner != self.solution.key:
                    owned_by_others.append((agency, owner))
            for agency, owner in owned_by_others:
                client.also_see(agency, via=self._user_client)
                self.identity.record_adopted(name, Adopted(agency, owner))
                self._ownership_notes.append(self._adopted_note(name, agency, owner))
            if not owned_by_others and visible - set(adopted):
                self.identity.record_adopted(name, None)  # the solution owns its agency of that name

    # -- observe and plan ---------------------------------------------------------------------------

    def observe(self, snapshot: InventorySnapshot | None = None) -> Observation:
        """Read everything the plan needs (see ``controller.observe``). Changes nothing."""
        if self._wants_certificate() and not self.session.conn.by_certificate:
            self._certificate_accepted = self._try_extension_login()
        self._adopt()
        return observe(
            self.session,
            self.backend,
            self.desired,
            snapshot=snapshot,
            config_of=self.backend.client.agency_config,
            certificate_accepted=self._certificate_accepted if self._wants_certificate() else None,
        )

    def plan(self, *, check_packages: bool = True) -> SolutionPlan:
        """Observe and compare; validate what apply needs. Raises the validation errors; changes nothing.

        ``check_packages``: download each OVF that an agency change would hand to EAM (and check its sha256).
        """
        observation = self.observe()
        replaced = None
        if self._wants_certificate() and observation.certificate_accepted is False:
            replaced = self._held_by_another(observation)  # raises for a generated certificate
        self._refuse_unseen_agencies(observation)
        core = make_plan(
            self.desired, observation.observed_state(self.solution), strict_static=self.strict_static_hosts
        )
        warnings = [*self.desired.warnings, *core.warnings, *self._ownership_notes]
        warnings += self._owners_before_certificate(observation)
        if not self._wants_certificate() and not self.session.conn.by_certificate:
            warnings.append(
                f"vCenter {self.session.url} is not HTTPS, so extension {self.solution.key} cannot log in "
                f"with a certificate: the agencies apply creates belong to {self.session.user}, not to the "
                "solution"
            )
        warnings += _away_warnings(observation)
        lines = [PlanLine.of(c) for c in core.changes if c.agency is None and c.host is None]
        if self._wants_certificate() and observation.certificate_accepted is False:
            lines.append(PlanLine("set-certificate", self.solution.key, self._certificate_line(replaced)))
        elif self._needs_record(observation):
            lines.append(PlanLine("record-certificate", self.solution.key, self._record_line()))
        lines += [PlanLine.of(c) for c in core.changes if c.kind is ChangeKind.SET_HOST_SETTINGS]
        for agency in observation.agencies:
            lines += self._agency_lines(agency, core, warnings, check_packages)
        return SolutionPlan(observation, core, tuple(lines), tuple(dict.fromkeys(warnings)))

    def _owners_before_certificate(self, observation: Observation) -> list[str]:
        """While EAM calls still go through the user's session (the certificate is set by this apply), say
        which agencies of the spec someone else owns: apply adopts them once it logs in as the solution."""
        if self._eam_session.conn.by_certificate or not self._wants_certificate():
            return []
        notes = []
        for agency in observation.agencies:
            if agency.status is None:
                continue
            owner = self.backend.client.agency_solution_id(agency.status.agency)
            if owner != self.solution.key:
                notes.append(self._adopted_note(agency.name, agency.status.agency, owner))
        return notes

    def _adopted_note(self, name: str, agency: str, owner: str) -> str:
        return (
            f'agency "{name}" ({agency}) belongs to {owner}, not to the solution {self.solution.key} '
            "(created with a user login): agentvm keeps managing it with this login and records it in "
            f"{self.identity.directory} for certificate logins; to give it to the solution, destroy it "
            "and apply again (every agent VM is redeployed)"
        )

    def _record_line(self) -> str:
        cert_file = self._certificate_files()[0]
        sha1 = thumbprints(Path(cert_file).read_bytes())[1]
        return (
            f"record the login certificate of extension {self.solution.key} (SHA-1 {sha1}, {cert_file}) "
            "in the extension, so that an apply from another machine does not replace it"
        )

    def _certificate_line(self, replaced: CertificateRecord | None = None) -> str:
        key = self.solution.key
        if self._spec_certificate():
            line = f"set the login certificate of extension {key} to {self.solution.cert_file}"
            if replaced is None:
                return line
            where = "generated on" if replaced.generated else f"solution.certFile {replaced.file} on"
            return (
                f"{line}, replacing the one {where} {replaced.host} (SHA-1 {replaced.sha1}): logins with "
                "that one (e.g. an agentvm run there) fail from then on"
            )
        if self.identity.has_certificate():
            return f"set the login certificate of extension {key} to {self.identity.cert_file}"
        return (
            f"set the login certificate of extension {key} to a new one, generated into "
            f"{self.identity.directory} (the spec names none)"
        )

    def _refuse_unseen_agencies(self, observation: Observation) -> None:
        """A certificate login sees only the solution's own agencies: when an agency of the spec is not
        among them but agent VMs carry its name, it exists and belongs to someone else. Creating it would
        give every host a second agent VM (and the plan other addresses): refuse, with the fix."""
        if self._user_client is not None:
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
                f'agency "{agency.name}" exists, but the solution {self.solution.key} does not own it: its '
                f"agent VMs {shown}{more} carry its name, and EAM lists an agency to its owner only (it was "
                "created with a user login, e.g. by an older agentvm). Run plan/apply once with "
                "vcenter.login: password: agentvm finds it, keeps managing it and records it in "
                f"{self.identity.directory} for certificate logins"
            )

    def _agency_lines(
        self, agency: AgencyObservation, core: Plan, warnings: list[str], check_packages: bool
    ) -> list[PlanLine]:
        name = agency.name
        mine = [c for c in core.changes if c.agency == name and c.kind is not ChangeKind.SET_HOST_SETTINGS]
        lines = [PlanLine.of(c) for c in mine if c.kind is not ChangeKind.ASSIGN_ADDRESS]
        if not lines and agency.config is not None:
            # fields core.plan does not compare (e.g. preferHostConfiguration) still need an Update
            differs = config_differences(agency.config, agency.resolved.config)
            if differs:
                text = f"update agency {name}: {', '.join(differs)} changed"
                lines.append(PlanLine(ChangeKind.UPDATE_AGENCY.value, name, text, name))
        if lines and check_packages:
            _descriptor, found = check_ovf(agency.resolved.spec)
            warnings += found
        # render every host's values now: a template that cannot be filled is an error before any change
        assignment = core.addresses.get(name)
        for host in agency.resolved.hosts:
            held = assignment.get(host.moid) if assignment else None
            render_per_host(agency.resolved.spec, host, held.address if held else None)
        lines += [PlanLine.of(c) for c in mine if c.kind is ChangeKind.ASSIGN_ADDRESS]
        if agency.status is not None and agency.resolved.spec.provisioned_hook:
            pending = [
                a for a in agency.status.pending_hooks if not any(line.host == a.host.value for line in lines)
            ]
            for agent in pending:
                label = self._host_label(agency.resolved, agent.host.value)
                lines.append(
                    PlanLine(
                        "answer-hook",
                        agent.agent,
                        f"{name}: answer the pending {agent.hook.state.value if agent.hook else ''} hook of "
                        f"{label}",
                        name,
                        agent.host.value,
                    )
                )
        lines += self._issue_lines(agency, warnings)
        return lines

    def _issue_lines(self, agency: AgencyObservation, warnings: list[str]) -> list[PlanLine]:
        """What apply does about the agency's issues: resolve the active ones (a line each, as the wait
        does it); a passive one is a warning with its fix (apply stops on it)."""
        if agency.status is None:
            return []
        lines = []
        for issue in observed_issues([agency.status]):
            where = self._issue_label(agency.resolved, issue)
            cls = heal_class(issue.kind)
            if cls is HealClass.ACTIVE:
                text = f"{agency.name}: resolve {issue.kind.value} #{issue.key} on {where}: {fix_for(issue)}"
                lines.append(
                    PlanLine(
                        "resolve-issue",
                        str(issue.key),
                        text,
                        agency.name,
                        issue.host.value if issue.host else None,
                    )
                )
            elif cls is HealClass.PASSIVE:
                warnings.append(
                    f"{agency.name}: {issue.kind.value} #{issue.key} on {where} needs a person: "
                    f"{fix_for(issue)}"
                )
        return lines

    def _where(self, waits: list[_Wait], issue: Issue) -> str:
        wait = next((w for w in waits if w.status is not None and w.status.agency == issue.agency), None)
        return self._issue_label(wait.resolved, issue) if wait is not None else issue.agency_name

    def _issue_label(self, resolved: ResolvedAgency, issue: Issue) -> str:
        if issue.host is not None:
            return f"host {self._host_label(resolved, issue.host.value)}"
        return f"agent {issue.agent}" if issue.agent else f"agency {issue.agency_name or issue.agency}"

    @staticmethod
    def _host_label(resolved: ResolvedAgency, moid: str) -> str:
        host = resolved.host(moid)
        return f"{moid} ({host.path or host.name})" if host else moid

    # -- apply --------------------------------------------------------------------------------------

    def apply(
        self, *, timeout: float = DEFAULT_TIMEOUT, on_progress: ProgressCallback | None = None
    ) -> ApplyReport:
        """Carry out the plan and wait until green (see the module docstring).

        Holds the solution's lease throughout (``controller.lease``: waits up to ``timeout`` for another
        apply/destroy; LeaseHeldError naming the holder, as soon as it is seen renewing when it is an
        ``agentvm run``), so that concurrent applies act one after the other. Raises the plan's validation
        errors before changing anything, the lease included; afterwards the adapters' errors. The report's
        ``green`` is False when the timeout passed first, or when the wait stopped on an issue a person must
        fix (``problems`` then says which, where, and the fix).
        """
        started = self._clock()
        # validate before the lease: a spec error must leave vCenter as it was, not even a lease record
        plan = self.plan()
        if self._nothing_to_do(plan):
            return self._unchanged(plan, started)
        with holding(self.session, self.solution.key, "apply", wait=timeout) as lease:
            return self._apply(timeout=timeout, on_progress=lease.guard(on_progress))

    @staticmethod
    def _nothing_to_do(plan: SolutionPlan) -> bool:
        return plan.empty and all(a.status is None or a.status.green for a in plan.observation.agencies)

    def _unchanged(self, plan: SolutionPlan, started: float) -> ApplyReport:
        hosts = self._final_hosts(plan.observation)
        vim, eam = self.call_counts()
        return ApplyReport(plan, (), hosts, True, self._clock() - started, vim, eam)

    def _apply(self, *, timeout: float, on_progress: ProgressCallback | None) -> ApplyReport:
        started = self._clock()
        plan = self.plan()
        actions: list[str] = []
        if self._nothing_to_do(plan):  # another apply did it while this one waited for the lease
            return self._unchanged(plan, started)
        kinds = plan.kinds()
        if kinds & {ChangeKind.REGISTER_EXTENSION.value, ChangeKind.UPDATE_EXTENSION.value}:
            actions.append(self._ensure_extension(plan))
        if "set-certificate" in kinds:
            actions.append(self._set_certificate())
        if "record-certificate" in kinds:
            actions.append(self._record_certificate())
        for line in plan.lines:
            if line.kind == ChangeKind.SET_HOST_SETTINGS.value and line.host and line.agency:
                actions.append(self._set_host_settings(plan, line.agency, line.host, line.description))
        waits: list[_Wait] = []
        for agency in plan.observation.agencies:
            wait = self._apply_agency(plan, agency, actions)
            if wait is not None:
                waits.append(wait)
        outcome = self._wait(
            waits, timeout=timeout, started=started, on_progress=on_progress, heal=True, actions=actions
        )
        hosts = tuple(h for w in waits for h in self._progress_rows(w))
        vim, eam = self.call_counts()
        return ApplyReport(
            plan,
            tuple(actions),
            hosts,
            outcome.done,
            self._clock() - started,
            vim,
            eam,
            tuple(self._problem_line(waits, d) for d in outcome.stopped),
            outcome.polls,
        )

    def _problem_line(self, waits: list[_Wait], decision: HealDecision) -> str:
        """One line for an issue that stopped the wait: the agency, the issue, its host, why, the fix."""
        issue = decision.issues[-1]
        name, where = issue.agency_name, self._where(waits, issue)
        if decision.verdict in (Verdict.GAVE_UP, Verdict.FLAPPING):
            return f"{name}: {decision.reason}; fix: {decision.fix}"
        return f"{name}: {issue.kind.value} #{issue.key} on {where} needs a person; fix: {decision.fix}"

    def _ensure_extension(self, plan: SolutionPlan) -> str:
        spec = extension_spec(self.solution)
        if plan.observation.extension is None:
            register_extension(self.session, spec)
            return f"registered extension {spec.key} version {spec.version}"
        update_extension(self.session, spec)
        return f"updated extension {spec.key} to version {spec.version}"

    def _set_certificate(self) -> str:
        """Set the extension's login certificate (the spec's, else a generated one), log in with it and
        make EAM calls through that session from now on. Returns what was done, naming the files."""
        generated = False
        if self._spec_certificate():
            cert_file = self.solution.cert_file
            assert cert_file is not None
            where = "solution.certFile"
        else:
            generated = self.identity.ensure_certificate(self.solution.key)
            cert_file = str(self.identity.cert_file)
            where = "the generated certificate"
        try:
            pem = Path(cert_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"cannot read {where} {cert_file} ({exc}); fix the path or the file"
            ) from None
        try:
            record = certificate_record(
                pem.encode("ascii"), cert_file, generated=not self._spec_certificate()
            )
        except ValueError:
            raise ConfigurationError(f"{where} {cert_file} holds no PEM certificate; fix the file") from None
        # the record first: should the set fail, the extension still holds the old certificate (whose
        # machine still logs in) and a retry sets ours; the other order could leave ours unrecorded
        record_extension_certificate(self.session, self.solution.key, record)
        set_extension_certificate(self.session, self.solution.key, pem)
        if not self._try_extension_login():
            raise AuthenticationError(
                f"vCenter refused the login of extension {self.solution.key} with {cert_file} right after "
                "its certificate was set; check that the key file belongs to the certificate"
            )
        self._adopt()
        if self._spec_certificate():
            key = self.solution.key
            return f"set the login certificate of extension {key}; agencies are now the solution's"
        made = "generated" if generated else "kept"
        return (
            f"set the login certificate of extension {self.solution.key} ({made} {cert_file}, key "
            f"{self.identity.key_file}, mode 0600); agencies are now the solution's. For login: certificate, "
            "name these two files as solution.certFile and solution.keyFile"
        )

    def _record_certificate(self) -> str:
        """Record in the extension the certificate our login works with (``_needs_record``)."""
        cert_file = self._certificate_files()[0]
        record = certificate_record(
            Path(cert_file).read_bytes(), cert_file, generated=not self._spec_certificate()
        )
        record_extension_certificate(self.session, self.solution.key, record)
        return (
            f"recorded the login certificate of extension {self.solution.key} (SHA-1 {record.sha1}, "
            f"{record.file}) in the extension"
        )

    def _set_host_settings(self, plan: SolutionPlan, agency: str, moid: str, description: str) -> str:
        observation = plan.observation
        found = observation.agency(agency)
        assert found is not None
        host = observation.snapshot.find_host(moid)
        scope = found.resolved.host(moid)
        assert scope is not None
        spec = found.resolved.spec

        def pick(current: MoRef | None, word: str | None, attached: Iterable[MoRef]) -> MoRef | None:
            if current is not None or word is None:
                return current  # never overwrite what an admin set
            wanted = names.parse(word)  # every form the plan accepted (model.names), not just exact words
            dcs = observation.snapshot.datacenter_paths
            for ref in attached:
                obj = observation.snapshot.get(ref)
                if obj is not None and names.matches(wanted, obj, dcs):
                    return obj.moref
            return None

        settings = AgentVmSettings(
            datastore=pick(host.agent_vm_datastore, spec.datastore.for_host(scope), host.datastores),
            network=pick(host.agent_vm_network, spec.network.for_host(scope), host.networks),
        )
        ensure_agent_vm_settings(self.session, host.moref, settings, label=host.describe())
        # only what was unset before is agentvm's: destroy --host-settings clears those and no others
        ours = {
            name: str(value)
            for name, before, value in (
                ("datastore", host.agent_vm_datastore, settings.datastore),
                ("network", host.agent_vm_network, settings.network),
            )
            if before is None and value is not None
        }
        self.identity.record_host_settings(host.moref.value, ours)
        return description.replace("set AgentVM settings", "set the AgentVM settings", 1)

    def _apply_agency(
        self, plan: SolutionPlan, agency: AgencyObservation, actions: list[str]
    ) -> _Wait | None:
        name = agency.name
        kinds = plan.kinds(name)
        assignment = plan.plan.addresses.get(name)
        wait = _Wait(
            agency.resolved,
            addresses={h.host.moid: h.address for h in assignment.addresses} if assignment else {},
            snapshot=plan.observation.snapshot,
        )
        agency_kinds = {c.value for c in (ChangeKind.CREATE_AGENCY, ChangeKind.UPDATE_AGENCY)}
        upgrade = ChangeKind.UPGRADE_AGENCY.value in kinds
        if kinds & agency_kinds or upgrade:
            result: ApplyResult = self.backend.apply(agency.resolved.config)
            actions.append(result.describe())
            if upgrade and agency.status is not None:
                wait.replaced_vms = {a.vm.value for a in agency.status.agents if a.vm is not None}
        elif not kinds and (agency.status is None or agency.status.green):
            return None  # nothing to do and nothing to wait for
        # a host whose running VM carries another address than planned (a static entry changed, a range
        # shrank): write the new values into that VM now; the guest reads them at its next boot
        if agency.status is not None and not (kinds & agency_kinds or upgrade):
            for agent in agency.status.agents:
                planned = wait.addresses.get(agent.host.value)
                carried = agency.addresses.get(agent.host.value)
                if agent.vm is not None and agent.hook is None and carried and planned and carried != planned:
                    self._write_values(wait, agent.vm, agent.host.value)
                    actions.append(f"{name}: wrote {planned} into {agent.vm_name} ({agent.vm.value})")
        return wait

    # -- hooks --------------------------------------------------------------------------------------

    def _host_for(self, wait: _Wait, moid: str) -> tuple[ScopeHost, IPv4Address | None]:
        """The host and its planned address; a host that joined the scope meanwhile gets the next one."""
        host = wait.resolved.host(moid)
        spec = wait.resolved.spec
        if host is None or (spec.ip_plan is not None and moid not in wait.addresses):
            snapshot = read_snapshot(self.session)
            wait.resolved = resolve_agency(spec, snapshot)
            wait.snapshot = snapshot
            host = wait.resolved.host(moid)
            if host is None:
                raise NotFoundError(f'agency "{spec.name}": host {moid} is not in its scope any more')
            if spec.ip_plan is not None:
                assignment = assign_addresses(
                    spec.ip_plan, wait.resolved.hosts, wait.addresses, agency=spec.name
                )
                wait.addresses = {h.host.moid: h.address for h in assignment.addresses}
        return host, wait.addresses.get(moid)

    def _write_values(self, wait: _Wait, vm: MoRef, moid: str) -> None:
        """Write one host's per-host values into ``vm``: vApp properties and guestinfo.* extraConfig."""
        host, address = self._host_for(wait, moid)
        spec = wait.resolved.spec
        values = {p.key: p.value for p in render_per_host(spec, host, address)}
        extra = {f"guestinfo.{k}": v for k, v in values.items()}
        if address is not None:
            extra[ADDRESS_KEY] = str(address)
            extra[AGENCY_KEY] = spec.name
        if not values and not extra:
            return
        configure_vm(self.session, vm, values=values, extra_config=extra, label=f"{vm.value} on {host.path}")

    def _answer_hooks(self, wait: _Wait) -> bool:
        """Answer the agency's pending hooks; True when any was answered."""
        if wait.status is None or wait.uninstall:
            return False
        acted = False
        now = self._clock()
        for agent in wait.status.pending_hooks:
            hook = agent.hook
            assert hook is not None
            key = (agent.agent, hook.vm.value)
            if now - wait.answered.get(key, -REANSWER_AFTER) < REANSWER_AFTER:
                continue
            if hook.state is not HookState.POWERED_ON:
                self._write_values(wait, hook.vm, agent.host.value)
            try:
                self.backend.mark_available(agent.agent)
            except NotFoundError:
                continue  # the agent went away (host left the scope)
            wait.answered[key] = now
            acted = True
            log.info("%s: answered the %s hook of %s", wait.name, hook.state.value, agent.host.value)
        return acted

    # -- waiting ------------------------------------------------------------------------------------

    def _wait(
        self,
        waits: list[_Wait],
        *,
        timeout: float,
        started: float,
        on_progress: ProgressCallback | None,
        heal: bool = False,
        actions: list[str] | None = None,
    ) -> _Outcome:
        """Poll until every wait is done or ``timeout`` (from now) passes.

        ``heal``: after each observation, decide with ``core.heal.plan_heal_agencies`` (the controller's
        policy and backoff, ``self.policy``): resolve what it says to resolve now (one line in ``actions``
        per resolve), and stop at once on a failure — a passive issue, or an active one resolved
        ``max_attempts`` times in vain — since no amount of waiting fixes those.
        """
        deadline = self._clock() + timeout
        interval = POLL_FIRST
        previous: object = None
        healing = HealState()
        polls = 0
        while True:
            acted = False
            for wait in waits:
                wait.status = self.backend.observe(wait.name)
                if self._answer_hooks(wait):
                    acted = True
            polls += 1
            wake_at: float | None = None
            stopped: tuple[HealDecision, ...] = ()
            if heal:
                decided = self._heal_step(waits, healing, actions)
                healing, wake_at = decided.state, decided.wake_at
                stopped = tuple(d for d in decided.decisions if d.failure)
                acted = acted or bool(decided.resolves)
            done = all(w.done() for w in waits)
            rows = tuple(h for w in waits for h in self._progress_rows(w))
            if on_progress is not None:
                on_progress(Progress(rows, self._clock() - started, done))
            if done:
                return _Outcome(True, polls)
            if stopped:
                return _Outcome(False, polls, stopped)
            now = self._clock()
            if now >= deadline:
                return _Outcome(False, polls)
            state = tuple((r.host, r.phase, r.vm) for r in rows)
            interval = POLL_FIRST if acted or state != previous else min(POLL_MAX, interval * 1.5)
            previous = state
            pause = min(interval, max(0.0, deadline - now))
            if wake_at is not None:
                pause = min(pause, max(0.0, wake_at - now))
            self._sleep(pause)

    def _heal_step(self, waits: list[_Wait], state: HealState, actions: list[str] | None) -> HealPlan:
        """One heal decision over the waits' last observations; resolves what it says to resolve now."""
        statuses = [w.status for w in waits if w.status is not None and not w.uninstall]
        snapshot = next((w.snapshot for w in waits if w.snapshot is not None), None)
        conditions = HostConditions.of(snapshot.hosts) if snapshot is not None else HostConditions()
        decided = plan_heal_agencies(statuses, state, self._clock(), self.policy, conditions)
        if decided.resolves:
            left = set(self.backend.resolve(decided.resolves))
            for decision in decided.by_verdict(Verdict.RESOLVE):
                issue = decision.issues[-1]
                where = self._where(waits, issue)
                note = " (EAM could not start it now)" if left & {i.key for i in decision.issues} else ""
                text = (
                    f"{issue.agency_name}: resolved {issue.kind.value} #{issue.key} on {where}, attempt "
                    f"{decision.attempt} of {self.policy.backoff(issue.kind).max_attempts}{note}"
                )
                log.info("%s", text)
                if actions is not None:
                    actions.append(text)
        return decided

    def _progress_rows(self, wait: _Wait) -> tuple[HostProgress, ...]:
        return host_rows(
            wait.name,
            wait.status,
            wait.resolved.hosts,
            wait.addresses,
            wait.snapshot,
            uninstall=wait.uninstall,
        )

    def _final_hosts(self, observation: Observation) -> tuple[HostProgress, ...]:
        return tuple(
            row
            for agency in observation.agencies
            for row in host_rows(
                agency.resolved.spec.name,
                agency.status,
                agency.resolved.hosts,
                read_addresses(observation.snapshot, agency.status),
                observation.snapshot,
            )
        )

    # -- destroy ------------------------------------------------------------------------------------

    def destroy(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
        host_settings: bool = False,
    ) -> DestroyReport:
        """Uninstall every agency of the spec, wait until green, destroy them, unregister the extension.

        Agencies that do not exist are skipped, so a second destroy does nothing. Raises TransientError when
        the agents are not gone within ``timeout`` (the agencies and the extension are then left in place).
        Holds the solution's lease as ``apply`` does, and removes its records at the very end. The hosts'
        AgentVM settings stay unless ``host_settings``: then those apply recorded as set by agentvm and
        still equal to what it set are cleared (``DestroyReport.host_settings_left`` counts the others).
        """
        with holding(self.session, self.solution.key, "destroy", wait=timeout) as lease:
            report = self._destroy(
                timeout=timeout, on_progress=lease.guard(on_progress), host_settings=host_settings
            )
            lease.retire()
            return report

    def _destroy(
        self, *, timeout: float, on_progress: ProgressCallback | None, host_settings: bool
    ) -> DestroyReport:
        started = self._clock()
        if self._wants_certificate() and not self.session.conn.by_certificate:
            self._try_extension_login()
        self._adopt()
        snapshot = read_snapshot(self.session)
        actions: list[str] = []
        waits = []
        for spec in self.desired.agencies:
            if self.backend.find(spec.name) is None:
                continue
            try:
                resolved = resolve_agency(spec, snapshot)
            except NotFoundError:  # the scope is gone from the inventory: nothing to show per host
                resolved = ResolvedAgency(spec, _empty_config(spec.name), (), ())
            self.backend.uninstall(spec.name)
            actions.append(f"uninstalled agency {spec.name}")
            waits.append(_Wait(resolved, uninstall=True, snapshot=snapshot))
        if not self._wait(waits, timeout=timeout, started=started, on_progress=on_progress).done:
            left = sum(1 for w in waits for a in (w.status.agents if w.status else ()) if a.vm is not None)
            raise TransientError(
                f"{left} agent VM(s) still there after {timeout:.0f} s; see agentvm status, resolve the "
                "issues and run destroy again"
            )
        for wait in waits:
            if self.backend.destroy(wait.name):
                actions.append(f"destroyed agency {wait.name}")
                self.identity.record_adopted(wait.name, None)
        deadline = self._clock() + timeout
        for wait in waits:  # DestroyAgency is asynchronous: wait until EAM forgets the agency
            while self.backend.find(wait.name) is not None and self._clock() < deadline:
                self._sleep(POLL_FIRST)
        left = len(self.identity.host_settings())
        if host_settings:
            actions += self._clear_host_settings(snapshot)
            left = 0
        if unregister_extension(self.session, self.solution.key, missing_ok=True):
            actions.append(f"unregistered extension {self.solution.key}")
        vim, eam = self.call_counts()
        return DestroyReport(tuple(actions), self._clock() - started, vim, eam, host_settings_left=left)

    def _clear_host_settings(self, snapshot: InventorySnapshot) -> list[str]:
        """Clear the AgentVM settings apply recorded as its own, where they are still what it set."""
        actions = []
        for moid, fields in sorted(self.identity.host_settings().items()):
            try:
                host = snapshot.find_host(moid)
            except NotFoundError:  # the host left vCenter: its settings went with it
                self.identity.record_host_settings(moid, None)
                continue
            ours = AgentVmSettings(
                datastore=MoRef.parse(fields["datastore"]) if "datastore" in fields else None,
                network=MoRef.parse(fields["network"]) if "network" in fields else None,
            )
            cleared = clear_agent_vm_settings(self.session, host.moref, ours, label=host.describe())
            names = [n for n, ref in (("datastore", cleared.datastore), ("network", cleared.network)) if ref]
            changed = [n for n in ("datastore", "network") if n in fields and n not in names]
            if names:
                what = f"cleared the AgentVM {' and '.join(names)} of {host.describe()}"
                if changed:
                    what += f" (its {' and '.join(changed)} changed since apply: kept)"
                actions.append(what)
            elif changed:
                actions.append(f"kept the AgentVM settings of {host.describe()}: changed since apply")
            self.identity.record_host_settings(moid, None)
        return actions


@dataclass(frozen=True)
class _Outcome:
    """How a wait ended: all done, or not (timeout, or the heal decisions that stopped it)."""

    done: bool
    polls: int
    stopped: tuple[HealDecision, ...] = ()


@dataclass(frozen=True)
class DestroyReport:
    actions: tuple[str, ...]
    seconds: float
    vim_calls: int
    eam_calls: int
    host_settings_left: int = 0  # hosts whose AgentVM settings agentvm set and destroy left in place


def _away_warnings(observation: Observation) -> list[str]:
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


def _empty_config(name: str) -> AgencyConfig:
    return AgencyConfig(agency_name=name, agent_configs=())


def extension_spec(solution: SolutionSpec) -> ExtensionSpec:
    """The extension agentvm registers for ``solution``: shown in the solution manager, owning agent VMs."""
    return ExtensionSpec(
        key=solution.key,
        version=solution.version,
        label=solution.label,
        summary=solution.summary or solution.label,
        company=solution.company,
        managed_entity_types=(ManagedEntityType(MANAGED_ENTITY_TYPE, f"{solution.label} agent VM"),),
        shown_in_solution_manager=True,
    )


def counts_by_kind(counts: Mapping[str, int]) -> tuple[int, int]:
    """(vim25, EAM) call totals of a ``CallStats`` snapshot."""
    eam = sum(n for m, n in counts.items() if m in EAM_METHODS)
    return sum(counts.values()) - eam, eam
