# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam types at run time: their constructors are untyped)
"""``EamClient``: vSphere ESX Agent Manager over SOAP, in agentvm's model values.

Called by ``backends.eam.EamBackend`` (apply, status, resolve, destroy, the controller's observations).
It talks to ``/eam/sdk`` through ``Session.sibling_stub`` (same TLS settings and session cookie as vim25,
correlation ids, call counting, transparent re-login on ``EamInvalidLogin``), with a recent stub version
(``eam.version.version7_5`` by default: older ones silently drop newer fields, docs/eam.md "Endpoint").

Only the explicit methods are used — CreateAgency, QueryAgency, QueryConfig, AgencyQueryRuntime,
QueryAgent, QuerySolutionId, Update, Agency_Enable/Disable, Uninstall, DestroyAgency, AgentQueryConfig,
AgentQueryRuntime, MarkAsAvailable, QueryIssue, Resolve, ResolveAll — never a property read, which
pyVmomi sends as ``Fetch`` (some EAMs cannot answer it).

Every method raises agentvm errors only (``eam.errors.map_error``): ConfigurationError / NotFoundError
naming the agency and the fix, TransientError when EAM is not reachable or still starting,
AuthenticationError when even a fresh login is refused.

Finding an agency by name costs one QueryAgency plus one QueryConfig per agency this client has not seen
yet: names are cached by agency id (the cache follows this client's own Create/Update/Destroy, and ids
that QueryAgency no longer returns are dropped).

A solution's QueryAgency lists only its own agencies (docs/eam.md, "Ownership"). ``also_see`` adds an agency
that another session found (one a user owns, which agentvm adopted): it is listed with the others from then
on, read by id, and its changes (Update, Enable/Disable/Uninstall, DestroyAgency) go through the client
that may make them (the owner's), when one is given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pyVmomi import eam

from agentvm.eam import translate
from agentvm.eam.errors import map_error
from agentvm.model.agency import (
    AgencyConfig,
    AgencyRuntime,
    AgentConfig,
    AgentRuntime,
    GoalState,
    Issue,
    MoRef,
)
from agentvm.model.errors import AgentvmError, ConfigurationError, NotFoundError

log = logging.getLogger(__name__)

DEFAULT_VERSION = "eam.version.version7_5"
EAM_PATH = "/eam/sdk"
MANAGER_ID = "EsxAgentManager"

T = TypeVar("T")


class StubSource(Protocol):
    """What the client needs of ``agentvm.vsphere.Session`` (adapters do not import each other).

    ``sibling_stub`` returns a pyVmomi stub for another endpoint of the same server that shares the
    session's cookie and maps faults to agentvm errors; ``url`` is vim25's SDK URL.
    """

    url: str

    def sibling_stub(self, path: str = ..., version: str = ...) -> Any: ...


def agency_ref(agency: str) -> MoRef:
    """The MoRef of an agency id (for the EamObject methods: QueryIssue, Resolve, ResolveAll)."""
    return MoRef("Agency", agency)


def agent_ref(agent: str) -> MoRef:
    """The MoRef of an agent id."""
    return MoRef("Agent", agent)


class EamClient:
    """A typed EAM client on one ``Session`` (any ``StubSource``).

    Thread-safe: the name cache has a lock, and calls share nothing else.
    """

    def __init__(self, session: StubSource, *, version: str = DEFAULT_VERSION, path: str = EAM_PATH) -> None:
        self.session = session
        self.version = version
        parts = urlsplit(session.url)
        self.url = parts._replace(path=path, query="", fragment="").geturl()
        self._path = path
        self._lock = threading.Lock()
        self._stub: Any = None
        self._names: dict[str, str] = {}  # agency id -> agency name, for lookups and messages
        self._extra: dict[str, EamClient | None] = {}  # adopted agency id -> the client that changes it

    def __repr__(self) -> str:
        return f"EamClient({self.url}, {self.version})"

    # -- plumbing -----------------------------------------------------------------------------------

    def _get_stub(self) -> Any:
        # built on first use: the session may be logged in after this client is made
        with self._lock:
            if self._stub is None:
                self._stub = self.session.sibling_stub(path=self._path, version=self.version)
            return self._stub

    def _manager(self) -> Any:
        return eam.EsxAgentManager(MANAGER_ID, self._get_stub())

    def _agency(self, agency: str) -> Any:
        return eam.Agency(agency, self._get_stub())

    def _agent(self, agent: str) -> Any:
        return eam.Agent(agent, self._get_stub())

    def _object(self, obj: MoRef | None) -> Any:
        if obj is None:
            return self._manager()
        if obj.type == "Agency":
            return self._agency(obj.value)
        if obj.type == "Agent":
            return self._agent(obj.value)
        raise ValueError(f"{obj} is not an EAM object: use Agency:<id>, Agent:<id> or None for the manager")

    def describe_agency(self, agency: str) -> str:
        """``agency 'hello' (agency-1)``, or ``agency agency-1`` when its name is not known yet."""
        with self._lock:
            name = self._names.get(agency)
        return f"agency {name!r} ({agency})" if name else f"agency {agency}"

    def _describe(self, obj: MoRef | None) -> str:
        if obj is None:
            return "EAM's EsxAgentManager"
        if obj.type == "Agency":
            return self.describe_agency(obj.value)
        return f"agent {obj.value}"

    def _call(self, what: str, fn: Callable[[], T], *, forget: str | None = None) -> T:
        """Run one EAM call and map its error; ``forget``: an agency id to uncache when it is gone."""
        try:
            return fn()
        except AgentvmError as exc:
            mapped = map_error(exc, what=what, eam_url=self.url)
            if forget is not None and isinstance(mapped, NotFoundError):
                with self._lock:
                    self._names.pop(forget, None)
                    self._extra.pop(forget, None)
            if mapped is exc:
                raise
            raise mapped from exc

    def _read(self, obj: str, fn: Callable[[], T]) -> T:
        """Translate an answer; an answer agentvm cannot read is a ConfigurationError naming the object."""
        try:
            return fn()
        except ValueError as exc:
            raise ConfigurationError(
                f"EAM at {self.url} answered about {obj} with values agentvm cannot read ({exc}): "
                f"use an EAM that speaks {self.version} or later"
            ) from exc

    # -- EsxAgentManager ----------------------------------------------------------------------------

    def query_agencies(self) -> list[str]:
        """The ids of the agencies this session may see (a solution sees only its own), then the adopted
        ones (``also_see``). QueryAgency."""
        agencies = self._call("QueryAgency", lambda: self._manager().QueryAgency())
        ids = [str(a._moId) for a in agencies or ()]
        with self._lock:
            extra = [i for i in self._extra if i not in ids]
        return ids + extra

    def also_see(self, agency: str, via: EamClient | None = None) -> None:
        """List ``agency`` with this session's own from now on (until it is gone), though QueryAgency does
        not; ``via`` makes its changes (the owner's session), else this client tries them itself."""
        with self._lock:
            self._extra[agency] = via

    def adopted(self) -> dict[str, EamClient | None]:
        """The agencies added by ``also_see`` that are still there (id -> the client that changes them)."""
        with self._lock:
            return dict(self._extra)

    def _changer(self, agency: str) -> EamClient:
        with self._lock:
            via = self._extra.get(agency)
        return via if via is not None else self

    def create_agency(self, config: AgencyConfig, goal: GoalState = GoalState.ENABLED) -> str:
        """CreateAgency; returns the new agency's id. EAM validates synchronously and creates nothing on a
        fault: ConfigurationError (bad URL, agent configuration, argument), NotFoundError (unknown scope)."""
        info = translate.agency_config_to_eam(config)
        what = f"agency {config.agency_name!r}"
        agency = self._call(what, lambda: self._manager().CreateAgency(info, goal.value))
        agency_id = str(agency._moId)
        with self._lock:
            self._names[agency_id] = config.agency_name
        return agency_id

    # -- finding agencies by name -------------------------------------------------------------------

    def agency_names(self) -> dict[str, str]:
        """Agency id → name for every visible agency: one QueryAgency, plus QueryConfig for unseen ids."""
        ids = self.query_agencies()
        with self._lock:
            self._names = {i: n for i, n in self._names.items() if i in set(ids)}
            unseen = [i for i in ids if i not in self._names]
        for agency_id in unseen:
            try:
                self.agency_config(agency_id)  # caches the name
            except NotFoundError:
                continue  # destroyed between QueryAgency and QueryConfig
        with self._lock:
            return {i: self._names[i] for i in ids if i in self._names}

    def find_agencies(self, name: str) -> list[str]:
        """The ids of the visible agencies named ``name`` (usually zero or one)."""
        return [i for i, n in self.agency_names().items() if n == name]

    # -- Agency -------------------------------------------------------------------------------------

    def agency_config(self, agency: str) -> AgencyConfig:
        """QueryConfig (and remember the agency's name). NotFoundError when the agency is gone."""
        info = self._call(
            self.describe_agency(agency), lambda: self._agency(agency).QueryConfig(), forget=agency
        )
        config = self._read(agency, lambda: translate.agency_config_from_eam(info))
        with self._lock:
            self._names[agency] = config.agency_name
        return config

    def agency_runtime(self, agency: str) -> AgencyRuntime:
        """AgencyQueryRuntime: status, goal state and issues (the agents' included)."""
        info = self._call(
            self.describe_agency(agency), lambda: self._agency(agency).QueryRuntime(), forget=agency
        )
        return self._read(agency, lambda: translate.read_agency_runtime(info, agency))

    def agency_agents(self, agency: str) -> list[str]:
        """QueryAgent: the ids of the agency's agents (one per host in scope)."""
        agents = self._call(
            self.describe_agency(agency), lambda: self._agency(agency).QueryAgent(), forget=agency
        )
        return [str(a._moId) for a in agents or ()]

    def agency_solution_id(self, agency: str) -> str:
        """QuerySolutionId: the extension key (or user) that owns the agency."""
        return str(
            self._call(
                self.describe_agency(agency), lambda: self._agency(agency).QuerySolutionId(), forget=agency
            )
        )

    def update_agency(self, agency: str, config: AgencyConfig) -> None:
        """Update: the config is replaced whole, then EAM converges (a new OVF URL upgrades every agent)."""
        changer = self._changer(agency)
        if changer is not self:
            changer.update_agency(agency, config)
        else:
            info = translate.agency_config_to_eam(config)
            self._call(self.describe_agency(agency), lambda: self._agency(agency).Update(info), forget=agency)
        with self._lock:
            self._names[agency] = config.agency_name

    def set_goal_state(self, agency: str, goal: GoalState) -> None:
        """Agency_Enable / Agency_Disable / Uninstall."""
        changer = self._changer(agency)
        if changer is not self:
            changer.set_goal_state(agency, goal)
            return
        what = self.describe_agency(agency)
        mo = self._agency(agency)
        method = {
            GoalState.ENABLED: mo.Enable,
            GoalState.DISABLED: mo.Disable,
            GoalState.UNINSTALLED: mo.Uninstall,
        }[goal]
        self._call(what, method, forget=agency)

    def destroy_agency(self, agency: str) -> None:
        """DestroyAgency (asynchronous in EAM: afterwards every call on the agency is NotFoundError)."""
        changer = self._changer(agency)
        if changer is not self:
            changer.destroy_agency(agency)
        else:
            self._call(
                self.describe_agency(agency), lambda: self._agency(agency).DestroyAgency(), forget=agency
            )
        with self._lock:
            self._names.pop(agency, None)
            self._extra.pop(agency, None)  # QueryAgency no longer lists an agency being destroyed

    # -- Agent --------------------------------------------------------------------------------------

    def agent_config(self, agent: str) -> AgentConfig:
        """AgentQueryConfig: the agent config EAM chose for the agent's host."""
        info = self._call(f"agent {agent}", lambda: self._agent(agent).QueryConfig())
        return translate.agent_config_from_eam(info)

    def agent_runtime(self, agent: str, agency: str | None = None) -> AgentRuntime:
        """AgentQueryRuntime: host, VM, power, pending hook, issues, status.

        EAM does not report host names: ``host_name`` is the host's moid unless an issue names the host.
        ``agency``: the agent's agency id, used when EAM leaves ``runtime.agency`` out.
        """
        info = self._call(f"agent {agent}", lambda: self._agent(agent).QueryRuntime())
        return self._read(agent, lambda: translate.read_agent_runtime(info, agent, agency))

    def mark_as_available(self, agent: str) -> None:
        """MarkAsAvailable: release the agent's pending VM hook (call it after writing the hook's VM)."""
        self._call(f"agent {agent}", lambda: self._agent(agent).MarkAsAvailable())

    # -- EamObject ----------------------------------------------------------------------------------

    def query_issues(self, obj: MoRef | None, keys: Sequence[int] = ()) -> list[Issue]:
        """QueryIssue on an agency, an agent or (None) the manager; unknown keys are skipped."""
        mo = self._object(obj)
        values = self._call(self._describe(obj), lambda: mo.QueryIssue(list(keys) or None))
        return list(translate.read_issues(values or ()))

    def resolve(self, obj: MoRef | None, keys: Iterable[int]) -> list[int]:
        """Resolve: start remediating; returns the keys that were not found or cannot be resolved now."""
        wanted = list(keys)
        if not wanted:
            return []
        mo = self._object(obj)
        left = self._call(self._describe(obj), lambda: mo.Resolve(wanted))
        return [int(k) for k in left or ()]

    def resolve_all(self, obj: MoRef | None) -> None:
        """ResolveAll on an agency, an agent or the manager."""
        mo = self._object(obj)
        self._call(self._describe(obj), lambda: mo.ResolveAll())
