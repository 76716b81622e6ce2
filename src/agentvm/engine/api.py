"""The engine's public face: EAM's API (docs/eam.md, "Methods") as a Python protocol over model values.

Two callers: the lab's EAM emulator (a SOAP face that translates pyVmomi ``eam.*`` objects to and from
these values) and ``backends.direct`` (agentvm's controller without EAM). One implementation:
``agentvm.engine`` itself. Ids are the values of EAM managed-object references: ``Agency:<agency id>``,
``Agent:<agent id>``.

Every method raises one of the ``EngineFault`` subclasses below, which the emulator maps one-to-one to
EAM's SOAP faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    GoalState,
    Issue,
    MoRef,
)


@dataclass(frozen=True)
class Caller:
    """Who makes a call: the vCenter session's user name, and whether it is an extension session.

    For an extension session ``user`` is the extension key, which becomes the solution id of the agencies
    it creates; QueryAgency then shows it only those.
    """

    user: str
    extension: bool = False


class EngineFault(Exception):
    """Base of every fault the engine raises; ``str()`` says what is wrong and what to do."""


class ManagedObjectNotFound(EngineFault):
    """The agency or agent does not exist (any more): vmodl.fault.ManagedObjectNotFound."""

    def __init__(self, obj: MoRef) -> None:
        super().__init__(f"{obj} does not exist (destroyed, or never created)")
        self.obj = obj


class InvalidArgument(EngineFault):
    """vmodl.fault.InvalidArgument: a required argument is missing or malformed."""

    def __init__(self, message: str, invalid_property: str | None = None) -> None:
        super().__init__(message)
        self.invalid_property = invalid_property


class InvalidAgentConfiguration(EngineFault):
    """eam.fault.InvalidAgentConfiguration: agentConfig is empty or one entry is invalid."""

    def __init__(self, message: str, invalid_field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.invalid_field = invalid_field
        self.index = index


class InvalidAgencyScope(EngineFault):
    """eam.fault.InvalidAgencyScope: compute resources in the scope that do not exist."""

    def __init__(self, unknown: Sequence[MoRef]) -> None:
        names = ", ".join(str(m) for m in unknown)
        super().__init__(f"scope names compute resources that do not exist: {names}")
        self.unknown = tuple(unknown)


class InvalidUrl(EngineFault):
    """eam.fault.InvalidUrl: the OVF/VIB URL does not parse or cannot be downloaded."""

    def __init__(
        self,
        url: str,
        message: str,
        *,
        malformed: bool = False,
        unknown_host: bool = False,
        connection_refused: bool = False,
        response_code: int | None = None,
    ) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.malformed = malformed
        self.unknown_host = unknown_host
        self.connection_refused = connection_refused
        self.response_code = response_code


class InvalidState(EngineFault):
    """eam.fault.EamInvalidState: the call is not allowed now (e.g. Enable after Uninstall)."""


class NotAuthorized(EngineFault):
    """eam.fault.NotAuthorized: the caller may not change this agency (another solution owns it)."""


class AgentManager(Protocol):
    """EAM's EsxAgentManager, Agency, Agent and EamObject methods, over model values."""

    # --- EsxAgentManager
    def create_agency(self, caller: Caller, config: AgencyConfig, goal: GoalState) -> str:
        """Validate synchronously (creating nothing on a fault), then converge asynchronously.

        Returns the new agency's id. Raises InvalidArgument, InvalidAgentConfiguration,
        InvalidAgencyScope, InvalidUrl.
        """
        ...

    def query_agencies(self, caller: Caller) -> list[str]:
        """Agency ids; an extension caller sees only its own."""
        ...

    # --- Agency
    def agency_config(self, agency: str) -> AgencyConfig: ...

    def agency_runtime(self, agency: str) -> AgencyRuntime: ...

    def agency_agents(self, agency: str) -> list[str]: ...

    def agency_solution_id(self, agency: str) -> str: ...

    def update_agency(self, caller: Caller, agency: str, config: AgencyConfig) -> None:
        """Replace the config whole, then converge (a new OVF URL is a rolling upgrade)."""
        ...

    def set_goal_state(self, caller: Caller, agency: str, goal: GoalState) -> None:
        """Enable / Disable / Uninstall. Enabling an uninstalled agency raises InvalidState."""
        ...

    def destroy_agency(self, caller: Caller, agency: str) -> None:
        """Asynchronous: agents are removed, then the agency is gone (ManagedObjectNotFound)."""
        ...

    def add_issue(self, agency: str, issue: Issue) -> Issue:
        """Deprecated AddIssue: the engine sets key and time and returns the stored issue."""
        ...

    # --- Agent
    def agent_config(self, agent: str) -> AgentConfig: ...

    def agent_runtime(self, agent: str) -> AgentRuntime: ...

    def mark_as_available(self, agent: str) -> None:
        """Release the agent's pending VM hook; a no-op when none is pending."""
        ...

    # --- EamObject (obj: an agency id, an agent id, or None for the EsxAgentManager)
    def query_issues(self, obj: str | None, keys: Sequence[int] = ()) -> list[Issue]:
        """The object's issues (an agency's include its agents'); unknown keys are skipped."""
        ...

    def resolve(self, obj: str | None, keys: Sequence[int]) -> list[int]:
        """Start remediating; returns the requested keys that were not found or cannot be resolved now."""
        ...

    def resolve_all(self, obj: str | None) -> None: ...
