# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam/vim/vmodl types at run time: their constructors are untyped)
"""EAM's methods (docs/eam.md, "Methods") and property Fetch, carried out on an ``AgentManager``.

Called by the HTTP handler (``server.py``) with an authenticated Caller and a parsed Request; returns the
reply value and its pyVmomi type, or raises SoapFault with the pyVmomi fault to send. The engine speaks
model values; ``translate.py`` converts both ways and ``faults.py`` maps the engine's faults.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyVmomi import eam, vmodl
from pyVmomi.Version import IsChildVersion

from agentvm.eam import translate
from agentvm.engine import api
from agentvm.engine.api import AgentManager, Caller
from agentvm.lab.eam_emulator import faults
from agentvm.lab.eam_emulator.soap import Request
from agentvm.model.agency import AgentConfig, GoalState, MoRef

MANAGER_ID = "EsxAgentManager"
MAINTENANCE_MODE_POLICIES = ("singleHost", "multipleHosts")
FETCH = "Fetch"


class SoapFault(Exception):
    """Carries the pyVmomi fault that the server must send instead of a reply."""

    def __init__(self, fault: Any) -> None:
        super().__init__(fault.msg)
        self.fault = fault


@dataclass(frozen=True)
class _Method:
    """One EAM method: the managed types that have it, its version, parameters and result type."""

    wsdl_name: str
    owners: frozenset[str]  # wsdl names of the managed types (EsxAgentManager, Agency, Agent)
    version: str
    params: Mapping[str, type]
    result: type | None


_MANAGED = {"EsxAgentManager": eam.EsxAgentManager, "Agency": eam.Agency, "Agent": eam.Agent}


def _method_table() -> dict[str, _Method]:
    table: dict[str, _Method] = {}
    for wsdl_type, mo_type in _MANAGED.items():
        infos = [*mo_type._methodInfo.values(), *eam.EamObject._methodInfo.values()]
        for info in infos:
            known = table.get(info.wsdlName)
            owners = (known.owners if known else frozenset()) | {wsdl_type}
            result = None if info.result is type(None) else info.result
            params = {p.name: p.type for p in info.params}
            table[info.wsdlName] = _Method(info.wsdlName, owners, info.version, params, result)
    # the property accessor every pyVmomi attribute read sends (StubAdapterAccessorImpl)
    table[FETCH] = _Method(FETCH, frozenset(_MANAGED), "eam.version.version1", {"prop": str}, None)
    return table


METHODS = _method_table()
PARAM_TYPES: Mapping[str, Mapping[str, type]] = {name: m.params for name, m in METHODS.items()}

_Handler = Callable[["EamService", Caller, str, dict[str, Any], str], Any]


class EamService:
    """The EsxAgentManager, Agency, Agent and EamObject methods over one AgentManager.

    Thread-safe as far as the AgentManager is: the only state here is the maintenance-mode policy, which
    is not an engine concern (it paces VIB installs, which agentvm does not do) and defaults to singleHost
    (EAM's default is not documented [I]).
    """

    def __init__(self, manager: AgentManager) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._maintenance_mode_policy = "singleHost"
        self._calls: Counter[str] = Counter()  # requests by method, answered or refused (benchmarks)
        self._counting = threading.Lock()

    def calls(self) -> dict[str, int]:
        """How many requests of each method (wsdl name) this service was asked so far, by every client:
        what a benchmark in another process counts (``LabEam.eam_calls``)."""
        with self._counting:
            return dict(self._calls)

    def call(self, caller: Caller, request: Request, version: str) -> tuple[Any, type | None]:
        """Run one request: (reply value, its pyVmomi type); raises SoapFault for every failure."""
        with self._counting:
            self._calls[request.method] += 1
        this = request.this
        if this is None:
            raise SoapFault(faults.invalid_request("the request has no _this"))
        wsdl_type = type(this)._wsdlName
        method = METHODS.get(request.method)
        if method is None or wsdl_type not in method.owners or not _supports(version, method.version):
            raise SoapFault(faults.method_not_found(this, request.method))
        if wsdl_type == "EsxAgentManager" and this._moId != MANAGER_ID:
            raise SoapFault(faults.to_soap_fault(api.ManagedObjectNotFound(MoRef(wsdl_type, this._moId))))
        try:
            if request.method == FETCH:
                return self._fetch(
                    caller, wsdl_type, this._moId, str(request.params.get("prop", "")), version
                )
            handler = _HANDLERS.get((wsdl_type, request.method)) or _HANDLERS[("*", request.method)]
            return handler(self, caller, this._moId, request.params, version), method.result
        except translate.InvalidArgument as exc:  # a request value the model cannot hold
            fault = api.InvalidArgument(str(exc), exc.invalid_property)
            raise SoapFault(faults.to_soap_fault(fault, _request_agent_configs(request))) from None
        except api.EngineFault as exc:
            raise SoapFault(faults.to_soap_fault(exc, _request_agent_configs(request))) from None

    # --- EsxAgentManager

    def create_agency(self, caller: Caller, _id: str, params: dict[str, Any], _version: str) -> Any:
        config = translate.agency_config_from_eam(params.get("agencyConfigInfo"))
        goal = translate.goal_state_from_eam(params.get("initialGoalState"))
        return translate.agency_mo(self.manager.create_agency(caller, config, goal))

    def query_agency(self, caller: Caller, *_: Any) -> Any:
        return [translate.agency_mo(a) for a in self.manager.query_agencies(caller)]

    def scan_for_unknown_agent_vm(self, *_: Any) -> None:
        """Deprecated in EAM: host issues no longer exist, so there is nothing to scan for."""
        return None

    def set_maintenance_mode_policy(self, _c: Caller, _id: str, params: dict[str, Any], _v: str) -> None:
        policy = params.get("policy")
        if policy not in MAINTENANCE_MODE_POLICIES:
            raise api.InvalidArgument(
                f"maintenance-mode policy {policy!r} is not one of {', '.join(MAINTENANCE_MODE_POLICIES)}",
                "policy",
            )
        with self._lock:
            self._maintenance_mode_policy = policy

    def get_maintenance_mode_policy(self, *_: Any) -> str:
        with self._lock:
            return self._maintenance_mode_policy

    # --- Agency

    def agency_config(self, _c: Caller, agency: str, *_: Any) -> Any:
        return translate.agency_config_to_eam(self.manager.agency_config(agency))

    def agency_runtime(self, _c: Caller, agency: str, *_: Any) -> Any:
        runtime = self.manager.agency_runtime(agency)
        return translate.agency_runtime_to_eam(runtime, self._solution_id(agency))

    def agency_agents(self, _c: Caller, agency: str, *_: Any) -> Any:
        return [translate.agent_mo(a) for a in self.manager.agency_agents(agency)]

    def agency_solution_id(self, _c: Caller, agency: str, *_: Any) -> str:
        return self.manager.agency_solution_id(agency)

    def update(self, caller: Caller, agency: str, params: dict[str, Any], _v: str) -> None:
        self.manager.update_agency(caller, agency, translate.agency_config_from_eam(params.get("config")))

    def enable(self, caller: Caller, agency: str, *_: Any) -> None:
        self.manager.set_goal_state(caller, agency, GoalState.ENABLED)

    def disable(self, caller: Caller, agency: str, *_: Any) -> None:
        self.manager.set_goal_state(caller, agency, GoalState.DISABLED)

    def uninstall(self, caller: Caller, agency: str, *_: Any) -> None:
        self.manager.set_goal_state(caller, agency, GoalState.UNINSTALLED)

    def destroy(self, caller: Caller, agency: str, *_: Any) -> None:
        self.manager.destroy_agency(caller, agency)

    def add_issue(self, _c: Caller, agency: str, params: dict[str, Any], _v: str) -> Any:
        given = params.get("issue")
        if given is None:
            raise api.InvalidArgument("AddIssue needs an issue", "issue")
        issue = translate.issue_from_eam(given)
        config = self.manager.agency_config(agency)  # ManagedObjectNotFound before anything else
        issue = dataclasses.replace(issue, agency=agency, agency_name=config.agency_name)
        stored = self.manager.add_issue(agency, issue)
        return translate.issue_to_eam(stored, self._solution_id(agency))

    def register_agent_vm(self, _c: Caller, agency: str, *_: Any) -> None:
        self.manager.agency_config(agency)  # ManagedObjectNotFound for an agency that does not exist
        # only manuallyProvisioned agencies (deprecated) accept registered VMs; agentvm provisions its own
        raise SoapFault(
            vmodl.fault.NotSupported(
                msg="RegisterAgentVm/UnregisterAgentVm work only for manuallyProvisioned agencies, "
                "which this EAM does not support: let the agency provision its agent VMs"
            )
        )

    # --- Agent

    def agent_config(self, _c: Caller, agent: str, *_: Any) -> Any:
        return translate.agent_config_to_eam(self.manager.agent_config(agent))

    def agent_runtime(self, _c: Caller, agent: str, *_: Any) -> Any:
        runtime = self.manager.agent_runtime(agent)
        return translate.agent_runtime_to_eam(runtime, self._solution_id(runtime.agency))

    def mark_as_available(self, _c: Caller, agent: str, *_: Any) -> None:
        self.manager.mark_as_available(agent)

    # --- EamObject (the EsxAgentManager itself is obj None)

    def query_issue(self, _c: Caller, obj: str, params: dict[str, Any], _v: str) -> Any:
        keys = [int(k) for k in params.get("issueKey") or ()]
        issues = self.manager.query_issues(_obj(obj), keys)
        return self._issues_to_eam(issues)

    def resolve(self, _c: Caller, obj: str, params: dict[str, Any], _v: str) -> Any:
        keys = [int(k) for k in params.get("issueKey") or ()]
        if not keys:
            raise api.InvalidArgument("Resolve needs at least one issue key", "issueKey")
        return self.manager.resolve(_obj(obj), keys)

    def resolve_all(self, _c: Caller, obj: str, *_: Any) -> None:
        self.manager.resolve_all(_obj(obj))

    # --- helpers

    def _solution_id(self, agency: str) -> str:
        return self.manager.agency_solution_id(agency)

    def _issues_to_eam(self, issues: list[Any]) -> list[Any]:
        solution_ids: dict[str, str] = {}
        out = []
        for issue in issues:
            if issue.agency not in solution_ids:
                solution_ids[issue.agency] = self._solution_id(issue.agency)
            out.append(translate.issue_to_eam(issue, solution_ids[issue.agency]))
        return out

    def _fetch(
        self, caller: Caller, wsdl_type: str, obj: str, prop: str, version: str
    ) -> tuple[Any, type | None]:
        """A property read, answered with the same values as the matching Query* method."""
        info = _MANAGED[wsdl_type]._propInfo.get(prop)
        if info is None or not _supports(version, info.version):
            raise SoapFault(
                vmodl.fault.InvalidArgument(
                    msg=f"{wsdl_type} has no property {prop!r}", invalidProperty=prop or "prop"
                )
            )
        getter = _PROPERTIES[(wsdl_type, prop)]
        return getter(self, caller, obj, {}, version), info.type


def _supports(version: str, since: str) -> bool:
    return bool(IsChildVersion(version, since))


def _obj(obj: str) -> str | None:
    return None if obj == MANAGER_ID else obj


def _request_agent_configs(request: Request) -> tuple[AgentConfig, ...]:
    """The agent configs of a CreateAgency/Update request, for InvalidAgentConfiguration's detail."""
    info = request.params.get("agencyConfigInfo") or request.params.get("config")
    if info is None:
        return ()
    try:
        return tuple(translate.agent_config_from_eam(a) for a in info.agentConfig or ())
    except (AttributeError, TypeError, ValueError):
        return ()


_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("EsxAgentManager", "CreateAgency"): EamService.create_agency,
    ("EsxAgentManager", "QueryAgency"): EamService.query_agency,
    ("EsxAgentManager", "ScanForUnknownAgentVm"): EamService.scan_for_unknown_agent_vm,
    ("EsxAgentManager", "SetMaintenanceModePolicy"): EamService.set_maintenance_mode_policy,
    ("EsxAgentManager", "GetMaintenanceModePolicy"): EamService.get_maintenance_mode_policy,
    ("Agency", "QueryConfig"): EamService.agency_config,
    ("Agency", "AgencyQueryRuntime"): EamService.agency_runtime,
    ("Agency", "QueryAgent"): EamService.agency_agents,
    ("Agency", "QuerySolutionId"): EamService.agency_solution_id,
    ("Agency", "Update"): EamService.update,
    ("Agency", "Agency_Enable"): EamService.enable,
    ("Agency", "Agency_Disable"): EamService.disable,
    ("Agency", "Uninstall"): EamService.uninstall,
    ("Agency", "DestroyAgency"): EamService.destroy,
    ("Agency", "AddIssue"): EamService.add_issue,
    ("Agency", "RegisterAgentVm"): EamService.register_agent_vm,
    ("Agency", "UnregisterAgentVm"): EamService.register_agent_vm,
    ("Agent", "AgentQueryConfig"): EamService.agent_config,
    ("Agent", "AgentQueryRuntime"): EamService.agent_runtime,
    ("Agent", "MarkAsAvailable"): EamService.mark_as_available,
    ("*", "QueryIssue"): EamService.query_issue,
    ("*", "Resolve"): EamService.resolve,
    ("*", "ResolveAll"): EamService.resolve_all,
}


def _no_issues(*_: Any) -> list[Any]:
    """EsxAgentManager.issue is always empty: no issues are attached to the manager any more."""
    return []


def _no_owner(*_: Any) -> None:
    """Agency.owner: the lab cannot tell a user-owned agency from an extension's, and owner is null for
    an extension's agency (docs/eam.md, "Ownership"); agentvm's agencies are extension-owned, so null [I]."""
    return None


_PROPERTIES: dict[tuple[str, str], _Handler] = {
    ("EsxAgentManager", "agency"): EamService.query_agency,
    ("EsxAgentManager", "issue"): _no_issues,
    ("Agency", "solutionId"): EamService.agency_solution_id,
    ("Agency", "owner"): _no_owner,
    ("Agency", "config"): EamService.agency_config,
    ("Agency", "runtime"): EamService.agency_runtime,
    ("Agency", "agent"): EamService.agency_agents,
    ("Agent", "runtime"): EamService.agent_runtime,
    ("Agent", "config"): EamService.agent_config,
}
