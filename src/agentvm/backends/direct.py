"""``DirectBackend``: agents run by agentvm's own ``engine.Engine`` on vim25, for vCenters without EAM.

Built by the controller with ``--backend direct`` (and by the CLI for apply/status/destroy in that mode).
The engine has no thread of its own: the controller (and ``controller.solution.Solution``'s wait, for
``destroy --backend direct``) drives it through ``tick`` (one ``Engine.step``) and ``wait_for_work``
(``Engine.wait_for_work``), in a loop:

    while not stopping:
        if not backend.tick():
            backend.wait_for_work(0.5)

Agencies belong to ``solution_id`` (the extension key), exactly as under EAM with an extension session:
the backend sees and changes only its own. Engine faults become the same agentvm errors, with the same
words, as EAM's faults do in ``eam.errors``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from agentvm.backends.base import AgencyBackend
from agentvm.engine import api
from agentvm.engine.api import Caller
from agentvm.engine.infra import InfraError
from agentvm.engine.manager import Engine
from agentvm.model.agency import AgencyConfig, AgencyRuntime, AgentRuntime, GoalState, MoRef
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError, TransientError
from agentvm.vsphere.session import Session

T = TypeVar("T")


def _map_fault(exc: api.EngineFault | InfraError, what: str) -> AgentvmError:
    """The agentvm error for an engine fault raised while acting on ``what``."""
    if isinstance(exc, api.ManagedObjectNotFound):
        return NotFoundError(f"{what} does not exist (any more): it was destroyed; look it up again")
    if isinstance(exc, api.InvalidUrl):
        return ConfigurationError(
            f"the engine cannot use the URL {exc.url} of {what}: {exc}; publish the OVF at an http(s) URL "
            "that vCenter can download and fix the agency's OVF URL"
        )
    if isinstance(exc, api.InvalidAgencyScope):
        unknown = ", ".join(str(m.value) for m in exc.unknown)
        return NotFoundError(
            f"the scope of {what} names compute resources that vCenter does not know: {unknown}; "
            "fix the agency's scope (cluster paths or moids)"
        )
    if isinstance(exc, api.InvalidAgentConfiguration):
        where = f" (field {exc.invalid_field})" if exc.invalid_field else ""
        return ConfigurationError(
            f"the agent configuration of {what} is not valid{where}: {exc}; fix the spec"
        )
    if isinstance(exc, api.InvalidArgument):
        return ConfigurationError(f"{what}: {exc}")
    if isinstance(exc, api.NotAuthorized):
        return ConfigurationError(
            f"{what} belongs to another solution: {exc}; log in as the solution that created it"
        )
    if isinstance(exc, api.InvalidState):
        return TransientError(f"{what}: {exc}; retry later")
    if isinstance(exc, InfraError):
        return TransientError(f"vSphere could not be observed or changed for {what}: {exc}; will retry")
    return ConfigurationError(f"{what}: {exc}")


class EnginePort:
    """``AgencyPort`` on an Engine, as the caller ``caller``; engine faults become agentvm errors."""

    def __init__(self, engine: Engine, caller: Caller) -> None:
        self.engine = engine
        self.caller = caller

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (api.EngineFault, InfraError) as exc:
            raise _map_fault(exc, what) from exc

    def _describe(self, agency: str) -> str:
        try:
            return f"agency {self.engine.agency_config(agency).agency_name!r} ({agency})"
        except api.EngineFault:
            return f"agency {agency}"

    def agency_names(self) -> dict[str, str]:
        ids = self.engine.query_agencies(self.caller)
        names = {}
        for agency in ids:
            try:
                names[agency] = self.engine.agency_config(agency).agency_name
            except api.ManagedObjectNotFound:
                continue
        return names

    def find_agencies(self, name: str) -> list[str]:
        return [i for i, n in self.agency_names().items() if n == name]

    def create_agency(self, config: AgencyConfig, goal: GoalState) -> str:
        what = f"agency {config.agency_name!r}"
        return self._call(what, lambda: self.engine.create_agency(self.caller, config, goal))

    def agency_config(self, agency: str) -> AgencyConfig:
        return self._call(f"agency {agency}", lambda: self.engine.agency_config(agency))

    def agency_runtime(self, agency: str) -> AgencyRuntime:
        return self._call(f"agency {agency}", lambda: self.engine.agency_runtime(agency))

    def agency_agents(self, agency: str) -> list[str]:
        return self._call(f"agency {agency}", lambda: self.engine.agency_agents(agency))

    def agent_runtime(self, agent: str, agency: str | None = None) -> AgentRuntime:
        return self._call(f"agent {agent}", lambda: self.engine.agent_runtime(agent))

    def update_agency(self, agency: str, config: AgencyConfig) -> None:
        what = self._describe(agency)
        self._call(what, lambda: self.engine.update_agency(self.caller, agency, config))

    def set_goal_state(self, agency: str, goal: GoalState) -> None:
        what = self._describe(agency)
        self._call(what, lambda: self.engine.set_goal_state(self.caller, agency, goal))

    def destroy_agency(self, agency: str) -> None:
        what = self._describe(agency)
        self._call(what, lambda: self.engine.destroy_agency(self.caller, agency))

    def mark_as_available(self, agent: str) -> None:
        self._call(f"agent {agent}", lambda: self.engine.mark_as_available(agent))

    def resolve(self, obj: MoRef | None, keys: Sequence[int]) -> list[int]:
        if not keys:
            return []
        target = obj.value if obj is not None else None
        return self._call(str(obj or "the engine"), lambda: self.engine.resolve(target, keys))

    def resolve_all(self, obj: MoRef | None) -> None:
        target = obj.value if obj is not None else None
        self._call(str(obj or "the engine"), lambda: self.engine.resolve_all(target))


class DirectBackend(AgencyBackend):
    """``Backend`` over an ``Engine``. ``solution_id``: the extension key that owns the agencies."""

    kind = "direct"

    def __init__(self, engine: Engine, *, solution_id: str = "agentvm") -> None:
        self.engine = engine
        self.caller = Caller(solution_id, extension=True)
        self.port = EnginePort(engine, self.caller)
        super().__init__(self.port)
        self._ticked_state: object = None  # the engine's state at the last tick (``tick``)

    def __repr__(self) -> str:
        return f"DirectBackend(solution_id={self.caller.user!r})"

    @property
    def self_driving(self) -> bool:
        return False

    @property
    def login_owns_agencies(self) -> bool:
        return False  # the agencies belong to ``solution_id`` whatever the vCenter login

    @property
    def eam_client(self) -> None:
        return None

    def with_login(self, session: Session) -> DirectBackend:
        return self  # the engine has no vCenter login of its own to hand over

    def tick(self) -> bool:
        """One ``Engine.step``: True when it acted (tick again soon). TransientError when vSphere fails.

        An engine that acted changed its agents in ways no VM watch shows (an adopted VM, a new issue): the
        next observe reads them all again, in-process calls that cost no round trip. So does an engine whose
        state changed since the last tick without this step acting: a unit its workers finished meanwhile
        (a deploy recorded, its hook raised after the VM's last change that a watch saw)."""
        try:
            acted = self.engine.step()
        except InfraError as exc:
            raise TransientError(f"the agent engine cannot observe vSphere: {exc}; will retry") from exc
        state = self.engine.state
        if acted or state is not self._ticked_state:
            self._agents_moved()
        self._ticked_state = state
        return acted

    def look(self) -> None:
        """One ``Engine.step(act=False)``: the engine observes vSphere and judges (``agentvm status``, which
        must change nothing), and the next observe reads every agent. TransientError when vSphere fails."""
        try:
            self.engine.step(act=False)
        except InfraError as exc:
            raise TransientError(f"the agent engine cannot observe vSphere: {exc}; will retry") from exc
        self._agents_moved()

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until the engine has work (an API call or a vSphere change)."""
        return self.engine.wait_for_work(timeout)

    def pace(self) -> float:
        """``Engine.pace``: while the engine's actions run, tick again once several have finished."""
        return self.engine.pace()

    # -- agent VMs whose agency the engine forgot (its state was lost) ------------------------------------

    def purge_orphans(self, name: str) -> str | None:
        """Have the engine delete the VMs carrying its owner marker for agency ``name`` when it knows no
        agency of that name (``Engine.purge_unclaimed``); None when it knows one, or saw no such VM at its
        last ``tick``."""
        if self.find(name) is not None or self.engine.owned_vms(name) == 0:
            return None
        self.engine.purge_unclaimed(self.caller, name)
        return f"removing the agent VMs of agency {name}"

    def orphans(self, name: str) -> int:
        """The VMs carrying the engine's marker for agency ``name`` at the last ``tick`` while no agency of
        that name is known; at least 1 while a purge of that name is pending."""
        if self.find(name) is not None:
            return 0
        owned = self.engine.owned_vms(name)
        return max(owned, 1) if name in self.engine.state.purge else owned
