"""The EAM client's world: vcsim whose /eam/sdk goes to the EAM SOAP emulator over a MemoryAgentManager.

The emulator fronts the in-memory AgentManager test double (instant convergence, injectable issues).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agentvm.lab.eam_emulator import EmulatorServer, VcenterSessionChecker, start
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import AgencyConfig, AgentConfig, MoRef, OvfProperty
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.session import Session
from tests.support.memory_agent_manager import MemoryAgentManager

C1 = MoRef("ClusterComputeResource", "domain-c1")


C2 = MoRef("ClusterComputeResource", "domain-c2")


HOSTS = {
    cluster: [(MoRef("HostSystem", f"host-{c}{h}"), f"esx-{c}{h}.lab") for h in range(3)]
    for c, cluster in enumerate((C1, C2), start=1)
}


OVF = "http://127.0.0.1:9/hello-agent/hello-agent.ovf"


OVF2 = "http://127.0.0.1:9/hello-agent/v2/hello-agent.ovf"


# the EAM methods a session counts on its sibling stubs (everything else is vim25); a Fetch would be an EAM
# call too (it must never happen)
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
        "Fetch",
    }
)


def config(name: str = "hello", *scope: MoRef, url: str = OVF, **changes: object) -> AgencyConfig:
    base = AgencyConfig(
        agency_name=name,
        agent_configs=(AgentConfig(ovf_package_url=url, ovf_environment=(OvfProperty("greeting", "hi"),)),),
        scope=scope or (C1, C2),
        agent_name=f"{name}-agent",
    )
    return base.with_(**changes) if changes else base


def eam_calls(session: Session, before: Counter[str]) -> Counter[str]:
    """The EAM calls the session made since ``before`` (a stats snapshot)."""
    now = session.stats.snapshot()
    return Counter({m: now[m] - before[m] for m in EAM_METHODS if now[m] - before[m]})


@dataclass
class EamWorld:
    vcsim: VcsimInfo
    manager: MemoryAgentManager
    emulator: EmulatorServer
    session: Session

    def connection(self) -> VCenterConnection:
        return VCenterConnection(
            url=self.vcsim.url,
            username=self.vcsim.username,
            password=Secret(self.vcsim.password),
            thumbprint=self.vcsim.thumbprint,
        )


@contextlib.contextmanager
def running_eam_world(vcsim_factory: Callable[..., VcsimInfo]) -> Iterator[EamWorld]:
    """vcsim whose /eam/sdk goes to the emulator over a MemoryAgentManager; a logged-in Session.

    The fixture is ``eam_world`` in tests/integration/conftest.py. Everything is stopped on the way out.
    """
    checker = VcenterSessionChecker(cache_seconds=0)  # a terminated session is refused at once
    manager = MemoryAgentManager(HOSTS)
    emulator = start(manager, checker)
    try:
        info = vcsim_factory(eam_backend=emulator.url)
        checker.set_target(info.url, info.thumbprint)
        conn = VCenterConnection(
            url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
        )
        session = Session.connect(conn)
        try:
            yield EamWorld(info, manager, emulator, session)
        finally:
            session.logout()
    finally:
        emulator.stop()
