"""``EamBackend``: the agents of vCenter's ESX Agent Manager, through ``eam.EamClient``.

Built by the CLI (apply, status, resolve, destroy) and by the controller with ``--backend eam`` (the
default). EAM drives the agents itself, so ``tick`` and ``wait_for_work`` do nothing: the controller polls
``observe`` on its own schedule.

Cost of ``observe(name)`` in EAM calls, for a caller without a watch: QueryAgency, AgencyQueryRuntime,
QueryAgent and one AgentQueryRuntime per agent (3 + agents), plus one QueryConfig per agency the client has
not seen before. For a caller that hands it the VM watch's changes (``note``): AgencyQueryRuntime plus one
AgentQueryRuntime per agent ``core.agent_reads`` names (docs/architecture.md, "Observation").
"""

from __future__ import annotations

from agentvm.backends.base import AgencyBackend
from agentvm.eam.client import EamClient
from agentvm.vsphere.session import Session

# agent runtimes read at once in one look: within the session's HTTP connections (16), beside the executor's
# pool (8 workers); vCenter's EAM answers them concurrently
READ_WORKERS = 8


class EamBackend(AgencyBackend):
    """``Backend`` over EAM. ``EamBackend(session)``, or ``EamBackend(client=EamClient(...))``."""

    kind = "eam"

    def __init__(self, session: Session | None = None, *, client: EamClient | None = None) -> None:
        if client is None:
            if session is None:
                raise ValueError("EamBackend needs a logged-in Session or an EamClient")
            client = EamClient(session)
        super().__init__(client, read_workers=READ_WORKERS)
        self.client = client

    def __repr__(self) -> str:
        return f"EamBackend({self.client.url})"

    @property
    def self_driving(self) -> bool:
        return True

    @property
    def login_owns_agencies(self) -> bool:
        return True  # EAM gives an agency to the session that creates it

    @property
    def eam_client(self) -> EamClient:
        return self.client

    def with_login(self, session: Session) -> EamBackend:
        return EamBackend(session)

    def purge_orphans(self, name: str) -> None:
        """Nothing to purge: EAM keeps every agency it deployed VMs for."""
        return None

    def orphans(self, name: str) -> int:
        """0: an EAM agent VM belongs to an agency until EAM removes it."""
        return 0

    def tick(self) -> bool:
        """Nothing to do: EAM runs its own agent lifecycle."""
        return False

    def wait_for_work(self, timeout: float) -> bool:
        """Returns False at once: there is no local work to wait for (poll ``observe`` instead)."""
        return False

    def pace(self) -> float:
        return 0.0  # no local actions
