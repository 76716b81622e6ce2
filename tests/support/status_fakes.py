"""Hand-made status rows and reports for the CLI's renderers: sixteen hosts of one agency, one issue.

Shared by the renderer tests and the scripts they draw in a real terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from agentvm.backends.base import AgencyStatus
from agentvm.controller.status import AgencyReport, StatusReport
from agentvm.core.heal import HostConditions
from agentvm.core.progress import HostProgress, Phase
from agentvm.model.agency import (
    AgencyRuntime,
    AgentRuntime,
    GoalState,
    Issue,
    IssueKind,
    MoRef,
    PowerState,
    Status,
)

HOSTS = 16


@dataclass(frozen=True)
class Observed:
    """An observed agency as ``host_rows`` reads it (``backends.base.AgencyStatus`` has the same)."""

    agency: str
    goal_state: GoalState
    agents: tuple[AgentRuntime, ...]


def progress_row(
    i: int, *, name: str | None = None, phase: Phase = Phase.READY, **kw: object
) -> HostProgress:
    host = name or f"DC0_C0_H{i}"
    kw.setdefault("status", Status.GREEN)
    return HostProgress(
        agency="contrail-vrouter",
        host=f"host-{100 + i}",
        label=f"/DC0/host/DC0_C0/{host}",
        cluster="DC0_C0",
        phase=phase,
        vm=kw.pop("vm", f"vm-{200 + i}"),  # type: ignore[arg-type]
        vm_name=kw.pop("vm_name", f"contrail-vrouter ({i})"),  # type: ignore[arg-type]
        power=kw.pop("power", PowerState.POWERED_ON),  # type: ignore[arg-type]
        address=f"10.10.0.{10 + i}",
        **kw,  # type: ignore[arg-type]
    )


def issue(i: int) -> Issue:
    return Issue(
        key=7,
        kind=IssueKind.VM_POWERED_OFF,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        agency="agency-1",
        agency_name="contrail-vrouter",
        agent="agent-1",
        host=MoRef("HostSystem", f"host-{100 + i}"),
        host_name=f"DC0_C0_H{i}",
        vm=MoRef("VirtualMachine", f"vm-{200 + i}"),
        vm_name=f"contrail-vrouter ({i})",
    )


def status_report(rows: list[HostProgress], conditions: HostConditions | None = None) -> StatusReport:
    runtime = AgencyRuntime(
        "agency-1", GoalState.ENABLED, Status.YELLOW, tuple(i for r in rows for i in r.issues)
    )
    status = AgencyStatus(agency="agency-1", name="contrail-vrouter", runtime=runtime, agents=())
    return StatusReport(
        "https://127.0.0.1/sdk", (AgencyReport(status, tuple(rows)),), (), conditions or HostConditions()
    )


def sixteen_with_one_issue() -> list[HostProgress]:
    rows = [progress_row(i) for i in range(HOSTS)]
    rows[12] = progress_row(12, phase=Phase.ISSUE, power=PowerState.POWERED_OFF, issues=(issue(12),))
    return rows
