"""``AgencyBackend`` reads the agent runtimes of one look ``read_workers`` at a time.

At 2,500 agents a look that read a thousand agents one after the other took about a minute against the lab's
EAM (bench/bench_apply_pool.py, 11 polls in 675 s). The port here is agentvm's own ``AgencyPort``
protocol, not pyVmomi: each agent's read waits at a barrier until as many reads are in flight as the
backend's workers, so sequential reads break the barrier and fail the test.
"""

from __future__ import annotations

import threading

import pytest

from agentvm.backends.base import AgencyBackend
from agentvm.model.agency import AgencyRuntime, AgentRuntime, GoalState, MoRef, PowerState, Status
from agentvm.model.errors import NotFoundError, TransientError


class BarrierPort:
    """One agency with ``agents`` agents; ``agent_runtime`` waits for ``barrier`` (when set)."""

    def __init__(self, agents: int, barrier: threading.Barrier | None = None) -> None:
        self.ids = [f"agent-{i}" for i in range(agents)]
        self.barrier = barrier
        self.gone: set[str] = set()
        self.broken: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.reads: list[str] = []

    def find_agencies(self, name: str) -> list[str]:
        return ["agency-1"] if name == "contrail" else []

    def agency_names(self) -> dict[str, str]:
        return {"agency-1": "contrail"}

    def agency_runtime(self, agency: str) -> AgencyRuntime:
        return AgencyRuntime(agency, GoalState.ENABLED, Status.YELLOW)

    def agency_agents(self, agency: str) -> list[str]:
        return list(self.ids)

    def agent_runtime(self, agent: str, agency: str | None = None) -> AgentRuntime:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=20)
            with self.lock:
                self.reads.append(agent)
            if agent in self.gone:
                raise NotFoundError(f"{agent} is gone")
            if agent in self.broken:
                raise TransientError(f"EAM did not answer for {agent}")
            number = agent.rsplit("-", 1)[1]
            return AgentRuntime(
                agent=agent,
                agency=agency or "agency-1",
                host=MoRef("HostSystem", f"host-{number}"),
                host_name=f"esx-{number}",
                goal_state=GoalState.ENABLED,
                status=Status.GREEN,
                power_state=PowerState.POWERED_ON,
                vm_name=f"contrail-vm ({number})",
                vm=MoRef("VirtualMachine", f"vm-{number}"),
            )
        finally:
            with self.lock:
                self.in_flight -= 1


def test_one_looks_agent_reads_run_read_workers_at_a_time() -> None:
    port = BarrierPort(24, threading.Barrier(8))
    backend = AgencyBackend(port, read_workers=8)  # type: ignore[arg-type]

    status = backend.observe("contrail")

    assert status is not None
    assert sorted(port.reads) == sorted(port.ids)  # every agent read exactly once
    assert port.most_in_flight == 8
    assert {a.agent for a in status.agents} == set(port.ids)


def test_one_worker_reads_one_agent_after_the_other() -> None:
    port = BarrierPort(5)
    backend = AgencyBackend(port)  # type: ignore[arg-type]

    status = backend.observe("contrail")

    assert status is not None
    assert port.reads == port.ids  # in the plan's order
    assert port.most_in_flight == 1


def test_an_agent_removed_meanwhile_is_left_out_and_the_others_are_kept() -> None:
    port = BarrierPort(6)
    port.gone = {"agent-2", "agent-4"}
    backend = AgencyBackend(port, read_workers=3)  # type: ignore[arg-type]

    status = backend.observe("contrail")

    assert status is not None
    assert sorted(port.reads) == sorted(port.ids)
    assert {a.agent for a in status.agents} == {"agent-0", "agent-1", "agent-3", "agent-5"}


def test_a_failed_read_fails_the_look_after_every_read_started_has_ended() -> None:
    port = BarrierPort(12)
    port.broken = {"agent-3"}
    backend = AgencyBackend(port, read_workers=4)  # type: ignore[arg-type]

    with pytest.raises(TransientError, match="agent-3"):
        backend.observe("contrail")

    assert port.in_flight == 0
    assert sorted(port.reads) == sorted(port.ids)
