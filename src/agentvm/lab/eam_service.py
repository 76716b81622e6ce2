"""The lab's ESX Agent Manager: agentvm's own engine on vim25, behind the EAM SOAP emulator.

vcsim forwards ``/eam/sdk`` to this service, so a client reaches EAM exactly as on a real vCenter (same
endpoint, same session cookie). The engine logs in to vcsim with the lab's administrator account (a real
EAM acts as its own extension, ``com.vmware.vim.eam``), keeps its agencies in a state file so that a
restart loses nothing, and runs its reconcile loop in one thread; each step's actions run at once, as a
real EAM deploys, at most ``deploy_per_cluster`` per cluster and ``deploy_total`` in all (``Engine``).
Started by ``agentvm.lab.world.Lab``.
The state file lives in a world directory (``agentvm.lab.world_state``): it is loaded only if that
directory records the very vCenter world this EAM's session is connected to.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

from agentvm.engine.infra import InfraError
from agentvm.engine.manager import DEPLOY_PER_CLUSTER, DEPLOY_TOTAL, Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.lab import world_state
from agentvm.lab.eam_emulator import EmulatorServer, VcenterSessionChecker, start
from agentvm.lab.vcsim import LabError, VcsimInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import AgentvmError
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

# what a real EAM's agent VMs carry in config.managedBy.extensionKey
EAM_NAMESPACE = "com.vmware.vim.eam"


def check_bounds(deploy_per_cluster: int, deploy_total: int) -> None:
    """Raise LabError (exit 2) naming the first bound below 1 (the flag of ``agentvm lab up``)."""
    for flag, value in (("--deploy-per-cluster", deploy_per_cluster), ("--deploy-total", deploy_total)):
        if value < 1:
            raise LabError(f"{flag} must be 1 or more (got {value})", 2)


class LabEam:
    """``LabEam(vcsim, state_file, port).start()``; ``stop()`` ends the loop and the server.

    ``deploy_per_cluster`` / ``deploy_total``: how many deploys (and power operations, deletes) the
    engine runs at once per cluster and in all (``Lab`` and ``agentvm lab up`` refuse a bound below 1
    before anything starts, ``check_bounds``; the engine itself raises ValueError). ``start`` raises
    LabError when the state file's directory records another vCenter world.
    """

    def __init__(
        self,
        vcsim: VcsimInfo,
        state_file: Path,
        port: int = 0,
        sock: socket.socket | None = None,
        *,
        deploy_per_cluster: int = DEPLOY_PER_CLUSTER,
        deploy_total: int = DEPLOY_TOTAL,
    ) -> None:
        self.deploy_per_cluster = deploy_per_cluster
        self.deploy_total = deploy_total
        self.vcsim = vcsim
        self.state_file = state_file
        self.port = port
        self._sock = sock  # bound before vcsim started (see Lab.start); used by the first start only
        self._stop = threading.Event()
        self._session: Session | None = None
        self._infra: VSphereInfrastructure | None = None
        self.engine: Engine | None = None
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def vim_calls(self) -> int:
        """vim25 calls the lab's EAM has made so far (for benchmarks)."""
        return self._session.stats.total if self._session is not None else 0

    def eam_calls(self) -> dict[str, int]:
        """EAM requests answered so far by method, from every client (for benchmarks)."""
        return self._server.service.calls() if self._server is not None else {}

    @property
    def infra(self) -> VSphereInfrastructure | None:
        """The engine's vSphere side while running (for benchmarks that time its reads)."""
        return self._infra

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return self._server.url

    def start(self) -> LabEam:
        try:
            conn = VCenterConnection(
                url=self.vcsim.url,
                username=self.vcsim.username,
                password=Secret(self.vcsim.password),
                thumbprint=self.vcsim.thumbprint or None,
            )
            self._session = Session.connect(conn, correlation_prefix="eam")
            # the world this session is in, as vCenter says (no round trip: read at login)
            world_state.require(self.state_file.parent, str(self._session.content.about.instanceUuid))
            # a periodic full re-check on top of the watcher, as a safety net (cheap at lab sizes)
            self._infra = VSphereInfrastructure(self._session, resync_seconds=5.0)
            self._infra.start()
            self.engine = Engine(
                self._infra,
                self.state_file,
                namespace=EAM_NAMESPACE,
                deploy_per_cluster=self.deploy_per_cluster,
                deploy_total=self.deploy_total,
            )
            checker = VcenterSessionChecker(self.vcsim.url, self.vcsim.thumbprint or None)
            sock, self._sock = self._sock, None
            self._server = start(self.engine, checker, port=self.port, sock=sock)
            self.port = self._server.port
            self._thread = threading.Thread(target=self._loop, name="lab-eam-engine", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _loop(self) -> None:
        """Reconcile until stopped: step while there is work, otherwise sleep until something changes."""
        engine = self.engine
        assert engine is not None
        while not self._stop.is_set():
            try:
                busy = engine.step()
            except (InfraError, AgentvmError) as exc:
                log.warning("EAM engine step failed, retrying: %s", exc)
                self._stop.wait(0.5)
                continue
            except Exception:  # keep the lab's EAM alive, as a real one would; the log has the cause
                log.exception("EAM engine step failed unexpectedly")
                self._stop.wait(1.0)
                continue
            pace = engine.pace()
            if pace:  # actions run on the engine's workers: look again once several have finished
                self._stop.wait(pace)
            elif not busy:
                engine.wait_for_work(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.engine is not None:
            self.engine.drain(timeout=10.0)  # its queued actions dropped, the running ones finished
        if self._infra is not None:
            with contextlib.suppress(Exception):
                self._infra.stop()
            self._infra = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.logout()
            self._session = None
