"""The whole lab in one object: vcsim, the lab's EAM (engine + SOAP emulator), the package server, and
optionally etcd (``etcd=True``: ``agentvm lab up --etcd``, where replicas of ``agentvm run`` elect leaders)
and standalone ESXi hosts (``esxi=N``: ``agentvm lab up --esxi N``; ``vcenter=False``: those alone, no
vCenter, no EAM, no SDN emulators).

Used in-process by the pytest fixtures and by the detached lab runner behind ``agentvm lab up``.
Everything listens on 127.0.0.1 only. Every start is a new world (vcsim keeps nothing): it gets its own
vCenter instanceUuid, and the lab's EAM and SDN state start empty with it (``agentvm.lab.world_state``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agentvm.engine.manager import DEPLOY_PER_CLUSTER, DEPLOY_TOTAL
from agentvm.lab import sdn_emulator, vrouter_emulator, world_state
from agentvm.lab.eam_service import LabEam, check_bounds
from agentvm.lab.esxi import EsxiFleet
from agentvm.lab.etcd import Etcd
from agentvm.lab.packages import PackageServer
from agentvm.lab.vcsim import LabError, Shape, Vcsim, VcsimInfo


@dataclass(frozen=True)
class LabInfo:
    """Where each part of a running lab is."""

    vcsim: VcsimInfo | None  # None: no vCenter (``vcenter=False``)
    ovf_url: str  # base URL of the package server: $AGENTVM_LAB_OVF_URL
    shape: Shape
    eam_backend: str = ""  # where vcsim forwards /eam/sdk (clients use vcsim.eam_url)
    # netsync: the SDN config-API emulator and the host moid -> vRouter-agent emulator URL file
    sdn_url: str = ""
    vrouter_map: str = ""
    coordination: str = ""  # etcd://127.0.0.1:PORT when the lab runs etcd: $AGENTVM_COORDINATION
    esxi: tuple[VcsimInfo, ...] = ()  # the standalone ESXi hosts, esx-01 first

    def env(self) -> dict[str, str]:
        """The environment a user (or a spec file) needs to reach this lab, as in ``agentvm lab env``.

        With standalone hosts: ``AGENTVM_ESXI_URLS`` and ``AGENTVM_ESXI_THUMBPRINTS`` (comma-separated, in
        the same order), ``AGENTVM_ESXI_USERNAME``, ``AGENTVM_ESXI_PASSWORD`` (every host's), and per host
        ``AGENTVM_ESXI_<i>_URL``, ``_THUMBPRINT`` and ``_NAME`` (i from 1)."""
        vcenter = (
            {
                "AGENTVM_URL": self.vcsim.url,
                "AGENTVM_USERNAME": self.vcsim.username,
                "AGENTVM_PASSWORD": self.vcsim.password,
                "AGENTVM_THUMBPRINT": self.vcsim.thumbprint,
            }
            if self.vcsim is not None
            else {}
        )
        return {
            **vcenter,
            **self.esxi_env(),
            "AGENTVM_LAB_OVF_URL": self.ovf_url,
            **({"AGENTVM_SDN_URL": self.sdn_url} if self.sdn_url else {}),
            **({"AGENTVM_VROUTER_MAP": self.vrouter_map} if self.vrouter_map else {}),
            **({"AGENTVM_COORDINATION": self.coordination} if self.coordination else {}),
        }

    def esxi_env(self) -> dict[str, str]:
        if not self.esxi:
            return {}
        env = {
            "AGENTVM_ESXI_URLS": ",".join(h.url for h in self.esxi),
            "AGENTVM_ESXI_THUMBPRINTS": ",".join(h.thumbprint for h in self.esxi),
            "AGENTVM_ESXI_USERNAME": self.esxi[0].username,
            "AGENTVM_ESXI_PASSWORD": self.esxi[0].password,
        }
        for i, host in enumerate(self.esxi, 1):
            env[f"AGENTVM_ESXI_{i}_URL"] = host.url
            env[f"AGENTVM_ESXI_{i}_THUMBPRINT"] = host.thumbprint
            env[f"AGENTVM_ESXI_{i}_NAME"] = host.host_name
        return env


class Lab:
    """Start with ``Lab(shape).start()`` or ``with Lab(shape) as info:``; ``stop()`` always cleans up.

    ``deploy_per_cluster`` / ``deploy_total``: the lab's EAM's bounds on deploys run at once, per cluster
    and in all (LabError, exit 2, below 1). ``etcd``: also run etcd, its data in ``<state_dir>/etcd/``
    (LabError naming the package when /usr/bin/etcd is missing).
    """

    def __init__(
        self,
        shape: Shape = Shape(),
        *,
        port: int = 0,
        plain_http: bool = False,
        password: str | None = None,
        log_dir: Path | None = None,
        state_dir: Path | None = None,
        netsync: bool = True,
        deploy_per_cluster: int = DEPLOY_PER_CLUSTER,
        deploy_total: int = DEPLOY_TOTAL,
        etcd: bool = False,
        host_pnics: Mapping[str, Sequence[str]] | None = None,
        esxi: int = 0,
        vcenter: bool = True,
    ) -> None:
        shape.validate()
        if esxi < 0:
            raise LabError(f"--esxi must be 0 or more (got {esxi})", 2)
        if not vcenter and esxi == 0:
            raise LabError("a lab without a vCenter needs standalone hosts: add --esxi N (1 or more)", 2)
        self._esxi_count = esxi
        self._want_vcenter = vcenter
        self.esxi: EsxiFleet | None = None
        # hosts (by name: DC0_C0_H0 the vCenter's, esx-02 a standalone one) with NICs of their own (Vcsim)
        self._host_pnics = dict(host_pnics or {})
        check_bounds(deploy_per_cluster, deploy_total)
        self.shape = shape
        self.deploy_per_cluster = deploy_per_cluster
        self.deploy_total = deploy_total
        self._port = port
        self._plain_http = plain_http
        self._password = password
        self._log_dir = log_dir
        # False: no SDN emulator and no vRouter-agent emulators (benchmarks of the controller alone: one
        # emulator per host is one more thread per host in this process, polling twice a second)
        self._netsync = netsync
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="agentvm-lab-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.world_dir: Path | None = None  # <state_dir>/world once started: this world's EAM and SDN state
        self._packages: PackageServer | None = None
        self._vcsim: Vcsim | None = None
        self.eam: LabEam | None = None
        self.info: LabInfo | None = None
        self.sdn: sdn_emulator.RunningConfigApi | None = None  # netsync's SDN controller
        self.vrouters: dict[str, vrouter_emulator.RunningAgent] = {}
        self._want_etcd = etcd
        self.etcd: Etcd | None = None
        self._vrouter_map: Path | None = None

    def start(self) -> LabInfo:
        try:
            self._packages = PackageServer().start()
            if self._esxi_count:
                self.esxi = EsxiFleet(
                    self._esxi_count,
                    self.state_dir / "esxi",
                    password=self._password,
                    pnics=self.shape.pnics,
                    host_pnics={n: p for n, p in self._host_pnics.items() if n.startswith("esx-")},
                    log_dir=self._log_dir / "esxi" if self._log_dir else None,
                )
                self.esxi.start()
            if not self._want_vcenter:
                if self._want_etcd:
                    self._start_etcd()
                return self._started()
            # vcsim must know where EAM is before EAM can log in to vcsim: bind EAM's socket first, so that
            # no other process (a parallel test's client, say) can take the port in between
            eam_socket = socket.create_server(("127.0.0.1", 0))
            eam_port = int(eam_socket.getsockname()[1])
            self._vcsim = Vcsim(
                self.shape,
                port=self._port,
                plain_http=self._plain_http,
                password=self._password,
                eam_backend=f"http://127.0.0.1:{eam_port}",
                log_file=self._log_dir / "vcsim.log" if self._log_dir else None,
                instance_uuid=str(uuid.uuid4()),
                host_pnics={n: p for n, p in self._host_pnics.items() if not n.startswith("esx-")},
            )
            self.world_dir = world_state.claim(self.state_dir, self._vcsim.info.instance_uuid)
            self.eam = LabEam(
                self._vcsim.info,
                self._eam_state_file,
                eam_port,
                eam_socket,
                deploy_per_cluster=self.deploy_per_cluster,
                deploy_total=self.deploy_total,
            ).start()
            self._vrouter_map = self._start_sdn() if self._netsync else None
            if self._want_etcd:
                self._start_etcd()
        except BaseException:
            self.stop()
            raise
        return self._started()

    def _start_etcd(self) -> None:
        log_file = self._log_dir / "etcd.log" if self._log_dir else None
        self.etcd = Etcd(self.state_dir / "etcd", log_file=log_file)
        self.etcd.remove()  # what a killed supervisor left: its leaderships named another world
        self.etcd.start()

    def _started(self) -> LabInfo:
        assert self._packages is not None
        vrouter_map = self._vrouter_map
        self.info = LabInfo(
            vcsim=self._vcsim.info if self._vcsim is not None else None,
            ovf_url=self._packages.url,
            shape=self.shape,
            eam_backend=self.eam.url if self.eam is not None else "",
            sdn_url=self.sdn.url if self.sdn is not None else "",
            vrouter_map=str(vrouter_map) if vrouter_map is not None else "",
            coordination=self.etcd.url if self.etcd is not None else "",
            esxi=tuple(self.esxi.hosts) if self.esxi is not None else (),
        )
        return self.info

    def stop_esxi(self, name: str) -> None:
        """Stop standalone host ``name`` (a host down); ``start_esxi`` brings it back."""
        if self.esxi is None:
            raise LabError("this lab has no standalone hosts (Lab(esxi=N))", 2)
        self.esxi.stop_host(name)

    def start_esxi(self, name: str) -> VcsimInfo:
        """Start standalone host ``name`` again on its port with its certificate (a fresh inventory)."""
        if self.esxi is None:
            raise LabError("this lab has no standalone hosts (Lab(esxi=N))", 2)
        return self.esxi.start_host(name)

    # -- netsync: the SDN controller and one vRouter agent per host ------------------------------------------

    def _start_sdn(self) -> Path:
        """Start the config-API emulator (objects in the world dir's SQLite) and a vRouter-agent emulator per
        host of vcsim; write the host moid -> agent URL map that ``agentvm netsync`` reads."""
        assert self._vcsim is not None and self.world_dir is not None
        self.sdn = sdn_emulator.start(self.world_dir / world_state.SDN_DATABASE)
        self.vrouters = vrouter_emulator.start_many(_host_moids(self._vcsim.info))
        path = self.world_dir / world_state.VROUTER_MAP
        path.write_text(json.dumps({h: a.url for h, a in self.vrouters.items()}, indent=2) + "\n")
        return path

    def _stop_sdn(self) -> None:
        vrouter_emulator.stop_many(list(self.vrouters.values()))
        self.vrouters = {}
        if self.sdn is not None:
            self.sdn.stop()
            self.sdn = None

    def restart_eam(self) -> None:
        """Stop the lab's EAM and start it again on the same port from its state file (for tests)."""
        assert self.eam is not None and self._vcsim is not None, "the lab is not running"
        port = self.eam.port
        self.eam.stop()
        self.eam = LabEam(
            self._vcsim.info,
            self._eam_state_file,
            port,
            deploy_per_cluster=self.deploy_per_cluster,
            deploy_total=self.deploy_total,
        ).start()

    @property
    def _eam_state_file(self) -> Path:
        assert self.world_dir is not None, "the lab is not running"
        return self.world_dir / world_state.EAM_STATE

    @property
    def pids(self) -> dict[str, int]:
        """The child processes this lab started (the package server runs in-process)."""
        pids = {"vcsim": self._vcsim.process.pid} if self._vcsim else {}
        if self.esxi is not None:
            pids.update(self.esxi.pids)
        if self.etcd is not None and self.etcd.pid is not None:
            pids["etcd"] = self.etcd.pid
        return pids

    def stop(self) -> None:
        if self.etcd is not None:  # its leaderships name this world's vCenter: they end with it
            self.etcd.remove()
            self.etcd = None
        self._stop_sdn()
        if self.eam is not None:
            self.eam.stop()
            self.eam = None
        if self._vcsim is not None:
            self._vcsim.stop()
            self._vcsim = None
        if self.esxi is not None:
            self.esxi.stop()
            self.esxi = None
        if self.world_dir is not None:  # the world ended with its vcsim: nothing can use its state again
            with contextlib.suppress(OSError):
                world_state.release(self.world_dir)
            self.world_dir = None
        if self._packages is not None:
            with contextlib.suppress(OSError):
                self._packages.stop()
            self._packages = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LabInfo:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _host_moids(info: VcsimInfo) -> list[str]:
    """The moids of vcsim's hosts (one bulk read), for one vRouter-agent emulator each."""
    from pyVmomi import vim

    from agentvm.model.connection import Secret, VCenterConnection
    from agentvm.vsphere.collector import property_spec, retrieve
    from agentvm.vsphere.session import Session

    conn = VCenterConnection(
        url=info.url,
        username=info.username,
        password=Secret(info.password),
        thumbprint=info.thumbprint or None,
    )
    with Session(conn) as session:
        hosts = retrieve(session, [vim.HostSystem], [property_spec(vim.HostSystem, ["name"])])
    return sorted(str(h.obj._moId) for h in hosts)
