"""What the agent engine needs from vSphere, and nothing more: the ``Infrastructure`` protocol.

Implemented on vim25 through ``agentvm.vsphere`` (bulk property-collector reads, a WaitForUpdatesEx
watcher, ImportVApp + lease upload), and in memory by ``tests/support/fake_infra.py`` for unit tests. The
engine calls it from ``Engine.step`` (observe, then act) and from ``create_agency``/``update_agency``
(``observe`` for the scope check, ``check_url``), possibly from two threads: an implementation must be
safe for that.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from agentvm.core.agent_state import AgentVm, EngineObservation, VmMarker
from agentvm.model.agency import IssueKind, MoRef, OvfProperty


class InfraError(Exception):
    """A vSphere operation failed for a reason that is not the agent's (busy, transient): retried later."""


class DeployError(InfraError):
    """Deploying an agent VM failed in a way that becomes an issue on the agent (``issue_kind``)."""

    # [I] vCenter refused the import itself (CreateImportSpec/ImportVApp answered with a configuration
    # fault): EAM reports a package it cannot deploy as OvfInvalidFormat(error[]). Not InvalidConfig: that is
    # a VM issue, and there is no VM; OvfInvalidFormat also holds redeploys until Resolve or a new OVF URL.
    issue_kind = IssueKind.OVF_INVALID_FORMAT


class InsufficientSpace(DeployError):
    """The chosen datastore has no room for the agent VM → InsufficientSpace."""

    issue_kind = IssueKind.INSUFFICIENT_SPACE


class OvfUnreachable(DeployError):
    """The OVF (or a file it references) cannot be downloaded → CannotAccessAgentOVF(downloadUrl)."""

    issue_kind = IssueKind.CANNOT_ACCESS_AGENT_OVF

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot download the agent OVF {url}: {reason}")
        self.url = url


class OvfInvalid(DeployError):
    """The OVF descriptor does not parse or vCenter rejects it → OvfInvalidFormat(error[])."""

    issue_kind = IssueKind.OVF_INVALID_FORMAT

    def __init__(self, url: str, errors: Sequence[str]) -> None:
        super().__init__(f"the agent OVF {url} is not valid: {'; '.join(errors)}")
        self.url = url
        self.errors = tuple(errors)


class Infrastructure(Protocol):
    """vSphere as the engine sees it. Every method may raise InfraError (the engine retries next step)."""

    def observe(self, scope: Collection[MoRef]) -> EngineObservation:
        """The scoped compute resources (unknown ones absent), their hosts, default folders/pools and the
        names of datastores/networks; ``vms`` left empty (the engine adds ``find_owned_vms``).

        Must reflect every action this object completed before the call (read-your-writes), here and in
        ``find_owned_vms``: the engine would take a VM seen powered off after its own power-on for a VM
        someone else powered off.
        """
        ...

    def find_owned_vms(self, namespace: str) -> list[AgentVm]:
        """Every VM that carries a marker of ``namespace`` (config.managedBy + extraConfig on a vCenter;
        the extraConfig marker alone on a standalone host), anywhere."""
        ...

    def check_url(self, url: str) -> None:
        """Download-check an OVF URL (CreateAgency / Update). Raises ``engine.api.InvalidUrl``."""
        ...

    def deploy_agent_vm(
        self,
        *,
        host: MoRef,
        ovf_url: str,
        ovf_properties: Sequence[OvfProperty],
        name: str,
        datastore: MoRef,
        network: MoRef,
        folder: MoRef | None,
        pool: MoRef | None,
        marker: VmMarker,
        disk_provisioning: str | None = None,
    ) -> MoRef:
        """Import the OVF onto ``host`` (powered off), with the OVF environment and ``marker`` set.

        Raises OvfUnreachable, OvfInvalid (or another DeployError); leaves no half-deployed VM behind.
        """
        ...

    def pin_to_host(self, vm: MoRef, host: MoRef) -> None:
        """Keep the VM on its host: a DRS VM override (manual / disabled) in its cluster; no-op standalone."""
        ...

    def ha_top_priority(self, vm: MoRef) -> None:
        """Give the VM the highest HA restart priority in its cluster; no-op standalone."""
        ...

    def start_with_host(self, vm: MoRef, host: MoRef) -> None:
        """Have a standalone host start the VM first and stop it last (its autostart sequence), since
        no HA restarts it; idempotent; no-op on a host of a vCenter. ``destroy_vm`` removes the entry."""
        ...

    def power_on(self, vm: MoRef) -> None: ...

    def power_off(self, vm: MoRef) -> None: ...

    def destroy_vm(self, vm: MoRef) -> None:
        """Power off if needed, then delete (and its autostart entry first, on a standalone host). A VM
        that is already gone is not an error."""
        ...

    def generation(self) -> int:
        """A number that grows whenever the watched inventory changes (the WaitForUpdatesEx watcher)."""
        ...

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until ``generation() != since`` or ``timeout`` seconds passed; return the generation."""
        ...
