"""Carry out a typed plan (``core.plan``) with the backend it is given: the one executor of apply, destroy
and the controller.

``Executor(desired, session, backend, identity)`` holds the vim25 ``Session`` it was given (never logged
out here), the backend (EAM, or agentvm's own engine) and the solution's identity (its certificate and
records, ``controller.identity``). ``carry_out(change)`` does one change and returns the sentence that says
what was done; ``answer_hook`` answers one hook; ``carry_out_all(changes)`` carries out independent changes
(hosts' settings, hook answers) concurrently, up to ``workers`` at once, each its own ``Outcome``. The
executor decides nothing: every value it needs is in the change. Where the backends differ it asks the
backend (``login_owns_agencies``, ``eam_client``).

**Who owns the agencies.** EAM gives an agency to the session that creates it, and a solution's QueryAgency
lists only its own (docs/eam.md). So with such a backend every EAM call goes through the extension's own
session (``LoginExtensionByCertificate``): with ``solution.certFile``/``keyFile`` from the spec, else with a
certificate the first apply generates under the state dir. ``prepare_login`` logs in as the extension when
it can and ``adopt`` makes agencies of the spec's names that someone else owns visible: with a user login
they are found (a user sees every agency), kept managed through that login and recorded; a certificate-only
login reads the recorded ones by id. See docs/architecture.md, "Plans and the executor".

Callers: ``controller.solution.Solution`` (the CLI's one-shot apply/destroy with its waiter) and
``controller.reconcile.Reconciler`` (the controller's passes); ``controller.planner`` reads the login state.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import assert_never

from agentvm.backends.base import AgencyStatus, ApplyResult, Backend
from agentvm.backends.eam import EamBackend
from agentvm.controller.hostnet import HostNetworkWriter, nic_positions
from agentvm.controller.identity import (
    Adopted,
    SolutionIdentity,
    certificate_record,
    default_state_dir,
    solution_dir,
    thumbprints,
)
from agentvm.controller.observe import read_snapshot
from agentvm.controller.ovfcheck import check_ovf
from agentvm.core.heal import HostConditions, Misplaced
from agentvm.core.hooks import answer_for
from agentvm.core.ipplan import assign_addresses
from agentvm.core.plan import (
    AnswerHook,
    AssignAddress,
    Change,
    CreateAgency,
    DestroyAgency,
    JoinSwitch,
    PrepareHostNetwork,
    PrepareSwitch,
    PurgeOrphans,
    RecordCertificate,
    RegisterExtension,
    Removal,
    ResolveIssue,
    SetCertificate,
    SetHostSettings,
    UninstallAgency,
    UnregisterExtension,
    UpdateAgency,
    UpdateExtension,
    UpgradeAgency,
    host_label,
)
from agentvm.core.plan_text import describe as describe_change
from agentvm.core.plan_text import host_settings_text
from agentvm.core.scope import ResolvedAgency, resolve_agency
from agentvm.eam.client import EamClient
from agentvm.model.agency import AgentRuntime, HookState, Issue, MoRef, Status
from agentvm.model.connection import VCenterConnection
from agentvm.model.desired import AgencySpec, DesiredState, ScopeHost, SolutionSpec
from agentvm.model.errors import AuthenticationError, ConfigurationError, NotFoundError
from agentvm.model.hostnet import AgentNicTarget
from agentvm.model.inventory import InventorySnapshot, describe
from agentvm.vsphere.extensions import (
    ExtensionSpec,
    ManagedEntityType,
    record_extension_certificate,
    register_extension,
    set_extension_certificate,
    unregister_extension,
    update_extension,
)
from agentvm.vsphere.hosts import (
    AgentVmSettings,
    clear_agent_vm_settings,
    ensure_agent_vm_settings,
    set_agent_vm_settings,
)
from agentvm.vsphere.ovf import OvfDescriptor, configure_vm
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import ensure_on_host

log = logging.getLogger(__name__)

MANAGED_ENTITY_TYPE = "agent"  # config.managedBy.type of agent VMs (docs/eam.md)

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

CallListener = Callable[[str, float, str | None], None]
WaitListener = Callable[[float], None]

DEFAULT_WORKERS = 8  # changes of one batch carried out at once (``Executor.carry_out_all``); 1: in turn


@dataclass(frozen=True)
class Outcome:
    """What one change of a batch (``Executor.carry_out_all``) came to: the sentence ``carry_out`` returned,
    or the error it raised; ``operation`` is the correlation id its calls carried (None: the caller's)."""

    change: Change
    operation: str | None = None
    text: str | None = None
    error: Exception | None = None


@dataclass
class AgencyWait:
    """One agency that apply/destroy waits on, or that the controller polls: what was resolved and planned
    for it, and what was last seen (mutable bookkeeping of one wait loop or controller process only)."""

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


class Executor:
    """Carries out typed changes on one vCenter for one solution, through ``backend``."""

    def __init__(
        self,
        desired: DesiredState,
        session: Session,
        backend: Backend,
        identity: SolutionIdentity,
        *,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        """``workers``: how many changes of one batch ``carry_out_all`` carries out at once (1: in turn)."""
        if workers < 1:
            raise ConfigurationError(f"workers must be 1 or more (got {workers})")
        self.workers = workers
        self.desired = desired
        self.solution = desired.solution
        self.session = session
        self.backend = backend
        self.identity = identity
        self.eam_session = session  # the session EAM calls go through (the extension's once logged in)
        self.host_network = HostNetworkWriter(session)  # hostNetwork's changes (controller.hostnet)
        self._nic_positions: dict[tuple[str, str], dict[str, int]] = {}  # (agency, OVF URL) -> role -> NIC
        self._own: list[Session] = []
        self._call_listeners: list[CallListener] = []
        self._wait_listeners: list[WaitListener] = []
        # guards what the pool's threads share: the waits' scope (``scope_host``) and the host-settings
        # record of the batch running (host moid -> what was set; None outside a batch)
        self._lock = threading.Lock()
        self._batch_records: dict[str, dict[str, str] | None] | None = None
        self.certificate_accepted: bool | None = True if session.conn.by_certificate else None
        # a user login sees every agency (docs/eam.md): it finds the ones the solution does not own
        client = backend.eam_client
        self.user_client: EamClient | None = None if session.conn.by_certificate else client
        self.ownership_notes: list[str] = []

    @classmethod
    def open(
        cls,
        desired: DesiredState,
        session: Session,
        *,
        backend: Backend | None = None,
        state_dir: Path | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> Executor:
        """The executor of ``desired`` on ``session``'s vCenter: through ``backend`` (default: EAM on
        ``session``), with the solution's identity under ``state_dir`` (default ``$AGENTVM_STATE_DIR`` or
        ``~/.local/state/agentvm``), carrying out up to ``workers`` changes of a batch at once."""
        base = state_dir if state_dir is not None else default_state_dir()
        identity = SolutionIdentity(solution_dir(base, session.url, desired.solution.key))
        backend = backend if backend is not None else EamBackend(session)
        return cls(desired, session, backend, identity, workers=workers)

    def close(self) -> None:
        """Log out the sessions the executor opened itself (the extension's), never the one it was given."""
        for session in self._own:
            session.logout()
        self._own.clear()

    # -- sessions and calls ---------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        """Every session of this executor, each once: the given one, the extension's it opened."""
        return list({id(s): s for s in (self.session, self.eam_session, *self._own)}.values())

    def call_counts(self) -> tuple[int, int]:
        """(vim25 calls, EAM calls) made so far by every session of this executor."""
        counts: Counter[str] = Counter()
        for session in self.sessions():
            counts.update(session.stats.snapshot())
        eam = sum(n for method, n in counts.items() if method in EAM_METHODS)
        return sum(counts.values()) - eam, eam

    def calls(self) -> int:
        return sum(s.stats.total for s in self.sessions())

    def add_call_listener(self, listener: CallListener) -> None:
        """Call ``listener(method, seconds, fault)`` after every call of every session of this executor,
        also of the extension's session it opens later (the controller's metrics and timings)."""
        self._call_listeners.append(listener)
        for session in self.sessions():
            session.call_listeners.append(listener)

    def add_wait_listener(self, listener: WaitListener) -> None:
        """Call ``listener(seconds)`` after each batch ``carry_out_all`` ran on its pool, with the seconds
        the caller waited for it. Those calls ran on the pool's threads, so a call listener that keeps
        one thread's time spent in calls (the controller's own-time samples) adds this instead."""
        self._wait_listeners.append(listener)

    # -- the extension's own session ------------------------------------------------------------------

    def wants_certificate(self) -> bool:
        """True when EAM calls go through the extension's own session, so that the solution owns the
        agencies it creates: when the backend's agencies belong to their creator's login, except over
        plain HTTP, where vCenter has no certificate login."""
        return self.backend.login_owns_agencies and self.session.conn.scheme == "https"

    def spec_certificate(self) -> bool:
        return bool(self.solution.cert_file and self.solution.key_file)

    def certificate_files(self) -> tuple[str, str]:
        """The certificate and key the extension logs in with: the spec's, else the generated ones."""
        if self.solution.cert_file and self.solution.key_file:
            return self.solution.cert_file, self.solution.key_file
        return str(self.identity.cert_file), str(self.identity.key_file)

    def our_thumbprint(self) -> str | None:
        """SHA-256 of the certificate the extension logs in with (``certificate_files``); None when there
        is none yet (generated by the first apply) or it cannot be read (apply then says why)."""
        try:
            return thumbprints(Path(self.certificate_files()[0]).read_bytes())[0]
        except (OSError, ValueError):
            return None

    def _extension_connection(self) -> VCenterConnection:
        conn = self.session.conn
        cert_file, key_file = self.certificate_files()
        return VCenterConnection(
            url=conn.url,
            thumbprint=conn.thumbprint,
            ca_file=conn.ca_file,
            insecure=conn.insecure,
            extension_key=self.solution.key,
            cert_file=cert_file,
            key_file=key_file,
        )

    def try_extension_login(self) -> bool:
        """Log in as the extension and use that session for EAM; False when refused (or there is no
        certificate yet). The caller then calls ``adopt``."""
        if self.eam_session is not self.session:
            return True
        if not self.spec_certificate() and not self.identity.has_certificate():
            return False  # generated by the first apply (``SetCertificate``)
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
        self.eam_session = ext
        self.backend = self.backend.with_login(ext)
        return True

    def prepare_login(self, *, adopt: bool = True) -> None:
        """Before reading: log in as the extension when the backend wants it, then ``adopt`` (unless told
        not to: the controller's re-plan for a topology change keeps what the last adoption found, and the
        periodic full pass adopts again)."""
        if self.wants_certificate() and not self.session.conn.by_certificate:
            self.certificate_accepted = self.try_extension_login()
        if adopt:
            self.adopt()

    def adopt(self) -> None:
        """Make the agencies of the spec's names that the solution does not own visible to its session.

        With a user login: every agency of such a name the user sees and the solution does not is adopted:
        listed with the solution's own, changed through the user's session, and recorded (id and owner) in
        the state dir. With a certificate login alone: the recorded ones are read by id. Two agencies of
        one name then stay two, and ``find`` stops apply with its fix, as for any duplicate.
        """
        client = self.backend.eam_client
        if client is None or not self.eam_session.conn.by_certificate:
            return  # EAM calls go through a user session: it sees every agency already
        self.ownership_notes = []
        record = self.identity.adopted()
        names = client.agency_names()
        adopted = client.adopted()
        for name in (a.name for a in self.desired.agencies):
            visible = {i for i, n in names.items() if n == name}
            if self.user_client is None:
                found = record.get(name)
                if found is not None and found.agency not in visible:
                    client.also_see(found.agency)
                    self.ownership_notes.append(
                        f'agency "{name}" ({found.agency}) belongs to {found.owner}, not to the solution '
                        f"{self.solution.key}: found through {self.identity.directory}; changing it needs "
                        "the owner's login (vcenter.login: password)"
                    )
                continue
            foreign = [i for i in self.user_client.find_agencies(name) if i not in visible - set(adopted)]
            owned_by_others = []
            for agency in foreign:
                owner = self.user_client.agency_solution_id(agency)
                if owner != self.solution.key:
                    owned_by_others.append((agency, owner))
            for agency, owner in owned_by_others:
                client.also_see(agency, via=self.user_client)
                self.identity.record_adopted(name, Adopted(agency, owner))
                self.ownership_notes.append(self.adopted_note(name, agency, owner))
            if not owned_by_others and visible - set(adopted):
                self.identity.record_adopted(name, None)  # the solution owns its agency of that name
        if client.adopted() == adopted:  # nothing newly adopted: the list just read is this pass's
            self.backend.listed(names)

    def adopted_note(self, name: str, agency: str, owner: str) -> str:
        return (
            f'agency "{name}" ({agency}) belongs to {owner}, not to the solution {self.solution.key} '
            "(created with a user login): agentvm keeps managing it with this login and records it in "
            f"{self.identity.directory} for certificate logins; to give it to the solution, destroy it "
            "and apply again (every agent VM is redeployed)"
        )

    # -- carrying out changes -------------------------------------------------------------------------

    def carry_out(self, change: Change) -> str:
        """Make ``change`` in vCenter; returns one sentence saying what was done. Raises adapters' errors."""
        match change:
            case RegisterExtension():
                spec = extension_spec(change.solution)
                register_extension(self.session, spec)
                return f"registered extension {spec.key} version {spec.version}"
            case UpdateExtension():
                spec = extension_spec(change.solution)
                update_extension(self.session, spec)
                return f"updated extension {spec.key} to version {spec.version}"
            case SetCertificate():
                return self._set_certificate()
            case RecordCertificate():
                return self._record_certificate()
            case SetHostSettings():
                return self._set_host_settings(change)
            case PrepareSwitch() | JoinSwitch() | PrepareHostNetwork():
                return self.host_network.carry_out(change)
            case CreateAgency() | UpdateAgency() | UpgradeAgency():
                return self.apply_agency(change).describe()
            case AnswerHook():
                self.answer_hook(change)
                return f"{change.agency_name}: answered the {change.state.value} hook of {change.vm.value}"
            case ResolveIssue():
                left = self.backend.resolve([change.issue])
                kept = " (EAM could not start it now)" if left else ""
                return f"{change.agency_name}: resolved {change.issue.kind.value} #{change.issue.key}{kept}"
            case AssignAddress():
                # an address reaches vCenter with its host's values, when the host's hook is answered
                raise ValueError(f"{change.agency_name}: an address is written by answering its host's hook")
            case PurgeOrphans() | UninstallAgency() | DestroyAgency() | UnregisterExtension():
                return self.remove(change) or f"nothing to do: {describe_change(change)}"
        assert_never(change)

    def carry_out_all(
        self, changes: Sequence[Change], *, operations: Sequence[str | None] | None = None
    ) -> list[Outcome]:
        """Carry out independent changes — the host settings of different hosts, the hook answers of
        different agents — up to ``workers`` at once; each one's ``Outcome``, in the order given.

        Change ``i`` runs under the correlation id ``operations[i]`` (``Session.operation``; None, or no
        ``operations``: the caller's), set in the thread that runs it. One change's error never stops
        the others: it is that change's outcome, for the caller to report (and raise, or not). With one
        worker, or one change, they run in turn on the caller's thread, as ``carry_out`` does. The
        host-settings record (``destroy --host-settings``) is written once, after the batch. Interrupted
        (KeyboardInterrupt), the changes not started yet are dropped and the running ones finish first.
        Called by apply (``controller.solution``) and the controller (``controller.reconcile``).
        """
        ops = list(operations) if operations is not None else [None] * len(changes)
        if len(ops) != len(changes):
            raise ValueError(f"{len(changes)} change(s) but {len(ops)} correlation id(s)")
        return self._run_all(changes, ops, self._outcome)

    def write_all(self, changes: Sequence[AnswerHook]) -> list[Outcome]:
        """Write each change's values into its VM (``write_values``: no MarkAsAvailable), up to ``workers``
        at once as ``carry_out_all`` does; each one's ``Outcome``, in the order given. Called by apply for
        the running agent VMs whose planned address changed."""
        return self._run_all(changes, [None] * len(changes), self._written)

    def _written(self, change: Change, operation: str | None) -> Outcome:
        assert isinstance(change, AnswerHook)
        try:
            self.write_values(change)
        except Exception as exc:  # the caller reports it: one write's failure never stops the others
            return Outcome(change, operation, error=exc)
        return Outcome(change, operation, text=f"wrote the values of {change.vm.value}")

    def _run_all(
        self,
        changes: Sequence[Change],
        ops: Sequence[str | None],
        run: Callable[[Change, str | None], Outcome],
    ) -> list[Outcome]:
        """``run`` each change under its correlation id, up to ``workers`` at once (see ``carry_out_all``)."""
        with self._lock:
            self._batch_records = {}
        try:
            if self.workers == 1 or len(changes) <= 1:
                return [run(change, op) for change, op in zip(changes, ops, strict=True)]
            started = time.perf_counter()
            pool = ThreadPoolExecutor(
                max_workers=min(self.workers, len(changes)), thread_name_prefix="agentvm-executor"
            )
            try:
                # each change in a copy of the caller's context: a worker's correlation id is its own
                futures = [
                    pool.submit(contextvars.copy_context().run, run, change, op)
                    for change, op in zip(changes, ops, strict=True)
                ]
                outcomes = [future.result() for future in futures]
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            waited = time.perf_counter() - started
            for listener in self._wait_listeners:
                listener(waited)
            return outcomes
        finally:
            with self._lock:
                records, self._batch_records = self._batch_records, None
            if records:
                self.identity.record_many_host_settings(records)

    def _outcome(self, change: Change, operation: str | None) -> Outcome:
        """``carry_out(change)`` under ``operation``, its error caught: one change of a batch."""
        try:
            if operation is None:
                text = self.carry_out(change)
            else:
                with self.session.operation(operation):
                    text = self.carry_out(change)
        except Exception as exc:  # the caller reports it: one change's failure never stops the others
            return Outcome(change, operation, error=exc)
        return Outcome(change, operation, text=text)

    def remove(self, change: Removal) -> str | None:
        """Carry out one of destroy's changes; the sentence saying what was done, None when there was
        nothing to remove (a second destroy changes nothing and says so)."""
        match change:
            case PurgeOrphans(name=name):
                return self.backend.purge_orphans(name)
            case UninstallAgency(name=name):
                self.backend.uninstall(name)
                return f"uninstalled agency {name}"
            case DestroyAgency(name=name):
                if not self.backend.destroy(name):
                    return None
                self.identity.record_adopted(name, None)
                return f"destroyed agency {name}"
            case UnregisterExtension(key=key):
                if self.session.host_agent:  # a standalone host has no extensions: nothing registered
                    return None
                return (
                    f"unregistered extension {key}"
                    if unregister_extension(self.session, key, missing_ok=True)
                    else None
                )
        assert_never(change)

    def apply_agency(self, change: CreateAgency | UpdateAgency | UpgradeAgency) -> ApplyResult:
        """Create or update the agency to the change's config (and enable it when disabled)."""
        if change.config is None:
            raise ConfigurationError(
                f"agency {change.agency}: the plan holds no config (made without an inventory); plan again"
            )
        return self.backend.apply(change.config)

    def _set_certificate(self) -> str:
        """Set the extension's login certificate (the spec's, else a generated one), log in with it and
        make EAM calls through that session from now on. Returns what was done, naming the files."""
        generated = False
        if self.spec_certificate():
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
            record = certificate_record(pem.encode("ascii"), cert_file, generated=not self.spec_certificate())
        except ValueError:
            raise ConfigurationError(f"{where} {cert_file} holds no PEM certificate; fix the file") from None
        # the record first: should the set fail, the extension still holds the old certificate (whose
        # machine still logs in) and a retry sets ours; the other order could leave ours unrecorded
        record_extension_certificate(self.session, self.solution.key, record)
        set_extension_certificate(self.session, self.solution.key, pem)
        if not self.try_extension_login():
            raise AuthenticationError(
                f"vCenter refused the login of extension {self.solution.key} with {cert_file} right after "
                "its certificate was set; check that the key file belongs to the certificate"
            )
        self.adopt()
        if self.spec_certificate():
            key = self.solution.key
            return f"set the login certificate of extension {key}; agencies are now the solution's"
        made = "generated" if generated else "kept"
        return (
            f"set the login certificate of extension {self.solution.key} ({made} {cert_file}, key "
            f"{self.identity.key_file}, mode 0600); agencies are now the solution's. For login: certificate, "
            "name these two files as solution.certFile and solution.keyFile"
        )

    def _record_certificate(self) -> str:
        """Record in the extension the certificate our login works with."""
        cert_file = self.certificate_files()[0]
        record = certificate_record(
            Path(cert_file).read_bytes(), cert_file, generated=not self.spec_certificate()
        )
        record_extension_certificate(self.session, self.solution.key, record)
        return (
            f"recorded the login certificate of extension {self.solution.key} (SHA-1 {record.sha1}, "
            f"{record.file}) in the extension"
        )

    def _set_host_settings(self, change: SetHostSettings) -> str:
        host = change.scope_host
        ref = MoRef("HostSystem", host.moid)
        # never overwrite what an admin set: a setting the host has is sent back as it is
        settings = AgentVmSettings(
            datastore=change.kept_datastore or (change.datastore.ref if change.datastore else None),
            network=change.kept_network or (change.network.ref if change.network else None),
        )
        label = describe(ref, host.path or None)
        if change.manager is not None:
            # the plan read the manager and the current settings: one write, what is kept sent back as is
            set_agent_vm_settings(self.session, change.manager, settings, label=label)
        else:
            ensure_agent_vm_settings(self.session, ref, settings, label=label)
        # only what was unset before is agentvm's: destroy --host-settings clears those and no others
        ours = {
            name: str(value)
            for name, before, value in (
                ("datastore", change.kept_datastore, settings.datastore),
                ("network", change.kept_network, settings.network),
            )
            if before is None and value is not None
        }
        with self._lock:
            batch = self._batch_records
            if batch is not None:  # a batch writes the record once, at its end
                batch[host.moid] = {**(batch.get(host.moid) or {}), **ours}
        if batch is None:
            self.identity.record_host_settings(host.moid, ours)
        return f"set the AgentVM settings on {host_label(host)}: {host_settings_text(change)}"

    def clear_host_settings(self, snapshot: InventorySnapshot) -> list[str]:
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

    # -- hooks ----------------------------------------------------------------------------------------

    def hook_answer(self, wait: AgencyWait, agent: AgentRuntime) -> AnswerHook:
        """What answering ``agent``'s pending hook writes (``core.hooks.answer_for``): the host's values,
        nothing after a power-on hook."""
        hook = agent.hook
        if hook is None:
            raise ValueError(f"agent {agent.agent} has no pending hook")
        moid = agent.host.value
        if hook.state is HookState.POWERED_ON:
            host = wait.resolved.host(moid)
            address = wait.addresses.get(moid)
            return AnswerHook(wait.name, agent.agent, hook.vm, hook.state, moid, host, address=address)
        return self.host_values(wait, hook.vm, moid, agent=agent.agent, state=hook.state)

    def host_values(
        self,
        wait: AgencyWait,
        vm: MoRef,
        moid: str,
        *,
        agent: str = "",
        state: HookState = HookState.PROVISIONED,
    ) -> AnswerHook:
        """Host ``moid``'s values for ``vm`` (``core.hooks.answer_for``). A host that joined the scope
        meanwhile is resolved now and gets the next address of the plan (``scope_host``)."""
        host, address = self.scope_host(wait, moid)
        answer = answer_for(wait.resolved.spec, vm, host, address, agent=agent, state=state)
        if state is HookState.PROVISIONED:
            # before the VM's first power-on: its NICs go on the host's networks (hostNetwork.agentNics)
            answer = replace(answer, nics=self.agent_nics(wait.resolved.spec))
        return answer

    def nic_positions(self, spec: AgencySpec, descriptor: OvfDescriptor | None = None) -> dict[str, int]:
        """``agentNics`` role -> the position of its NIC in ``spec``'s OVF (``controller.hostnet``), from
        ``descriptor`` when the caller downloaded it, else downloaded: once per agency and URL.
        ConfigurationError when the OVF has no such NIC."""
        key = (spec.name, spec.ovf.url)
        with self._lock:
            positions = self._nic_positions.get(key)
        if positions is None:
            positions = nic_positions(spec, descriptor if descriptor is not None else check_ovf(spec)[0])
            with self._lock:
                self._nic_positions[key] = positions
        return positions

    def agent_nics(self, spec: AgencySpec) -> tuple[AgentNicTarget, ...]:
        """Where ``spec``'s agent VM's NICs go (``hostNetwork.agentNics``): the fabric NIC on the fabric port
        group (its name is the same on every host), the trunk NIC on the trunk DV port group. The NICs'
        positions come from the OVF (downloaded once per agency and URL); () without agentNics."""
        network = spec.host_network
        if network is None or not (network.agent_nics.fabric or network.agent_nics.trunk):
            return ()
        positions = self.nic_positions(spec)
        out = []
        nics = network.agent_nics
        if network.fabric is not None and nics.fabric is not None and "fabric" in positions:
            out.append(AgentNicTarget(positions["fabric"], nics.fabric, network.fabric.port_group))
        if network.trunk is not None and nics.trunk is not None and "trunk" in positions:
            uuid, group = self.host_network.trunk_group(network.trunk.dvs, network.trunk.port_group)
            out.append(AgentNicTarget(positions["trunk"], nics.trunk, network.trunk.port_group, uuid, group))
        return tuple(sorted(out, key=lambda n: n.position))

    def write_values(self, change: AnswerHook) -> None:
        """Write the change's values into its VM: vApp properties and guestinfo.* extraConfig."""
        if not change.properties and not change.extra_config and not change.nics:
            return
        path = change.scope_host.path if change.scope_host is not None else change.host_moid
        configure_vm(
            self.session,
            change.vm,
            values=dict(change.properties),
            extra_config=dict(change.extra_config),
            nics=change.nics,
            label=f"{change.vm.value} on {path}",
        )

    # -- heals (what ``core.heal`` decided: apply's wait and the controller carry them out here) ---------

    def resolve(self, issues: Sequence[Issue]) -> tuple[int, ...]:
        """Resolve ``issues`` in one call per agency or agent; the keys that could not be resolved now."""
        return tuple(self.backend.resolve(issues))

    def move_back(self, found: Misplaced) -> bool:
        """Move a misplaced agent VM back to its agent's host (RelocateVM); False when it was there already.
        NotFoundError when the VM or host is gone."""
        return ensure_on_host(
            self.session, found.vm, found.host, pool=found.resource_pool, label=found.vm_name
        )

    def answer_hook(self, change: AnswerHook) -> None:
        """Write the hook's values into its VM, then MarkAsAvailable. NotFoundError when the agent is gone."""
        self.write_values(change)
        self.backend.mark_available(change.agent)

    def scope_host(self, wait: AgencyWait, moid: str) -> tuple[ScopeHost, IPv4Address | None]:
        """The host and its planned address; a host that joined the scope meanwhile gets the next one.
        Locked: the wait's scope and addresses are shared by the threads of a batch."""
        with self._lock:
            return self._scope_host(wait, moid)

    def _scope_host(self, wait: AgencyWait, moid: str) -> tuple[ScopeHost, IPv4Address | None]:
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
