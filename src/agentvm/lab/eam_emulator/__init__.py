"""The lab's EAM emulator: real EAM SOAP (urn:eam at /eam/sdk) in front of an ``AgentManager``.

Start it with ``start(agent_manager, session_checker)``; the session checker is usually a
``VcenterSessionChecker`` whose target (vcsim's /sdk URL) is set once vcsim runs, since vcsim must first be
given the emulator's URL for its /eam/sdk route.
"""

from agentvm.lab.eam_emulator.auth import (
    SessionChecker,
    VcenterSessionChecker,
    VcenterUnreachable,
    session_cookie,
)
from agentvm.lab.eam_emulator.server import EmulatorServer, start

__all__ = [
    "EmulatorServer",
    "SessionChecker",
    "VcenterSessionChecker",
    "VcenterUnreachable",
    "session_cookie",
    "start",
]
