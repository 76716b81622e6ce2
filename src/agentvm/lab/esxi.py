"""The lab's standalone ESXi hosts: N host-agent simulators (``Vcsim(esx=True)``), one process and one
127.0.0.1 port each, named esx-01..esx-N, each with its own TLS certificate and hardware UUID.

Used by ``Lab(esxi=N)`` (in-process, the pytest fixtures, and the detached lab runner behind
``agentvm lab up --esxi N``) and by ``agentvm lab esxi stop|start NAME`` through the runner. A host's
certificate is kept in ``<state dir>/esxi/<name>.pem`` so that a host started again (``restart``) on the
same port keeps its thumbprint, as a rebooted ESXi does. A restarted simulator starts with an empty
inventory (a real host keeps its VMs): see docs/lab.md.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentvm.lab.vcsim import LabError, Shape, Vcsim, VcsimInfo

USERNAME = "root"
# start at most this many simulators at once: each one's start is mostly the Go runtime and the model
START_WORKERS = 8


def host_name(index: int) -> str:
    """The lab's name of its ``index``-th standalone host (from 1): esx-01, ..., esx-64, esx-100."""
    return f"esx-{index:02d}"


def certificate_path(cert_dir: Path, name: str) -> Path:
    return cert_dir / f"{name}.pem"


def start_host(
    name: str,
    *,
    cert_dir: Path,
    password: str,
    host_uuid: str,
    port: int = 0,
    pnics: int = 3,
    own_pnics: Sequence[str] | None = None,
    log_dir: Path | None = None,
    detach: bool = False,
) -> Vcsim:
    """Start the simulator of host ``name`` (on ``port``, 0: any free one) with its kept certificate.

    ``own_pnics``: exactly these physical NICs (``["vmnic0", "vmnic2"]``) instead of ``pnics`` of them.
    ``detach=True``: in a session of its own, outliving the caller (``agentvm lab esxi start``). Raises
    LabError (a taken port: exit 3, naming it)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    return Vcsim(
        Shape(pnics=pnics),
        port=port,
        password=password,
        esx=True,
        esx_name=name,
        host_uuid=host_uuid,
        certificate=certificate_path(cert_dir, name),
        username=USERNAME,
        host_pnics={name: own_pnics} if own_pnics is not None else None,
        log_file=log_dir / f"{name}.log" if log_dir else None,
        detach=detach,
        exit_with_parent=not detach,
    )


class EsxiFleet:
    """``count`` standalone hosts, started concurrently by ``start()``; ``stop()`` stops them all.

    ``stop_host``/``start_host`` stop one and start it again on the same port with the same certificate,
    password and hardware UUID (a host restart; unreachable in between).
    """

    def __init__(
        self,
        count: int,
        cert_dir: Path,
        *,
        password: str | None = None,
        pnics: int = 3,
        host_pnics: Mapping[str, Sequence[str]] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        """``host_pnics``: the hosts it names (esx-02) get exactly the physical NICs listed."""
        if count < 0:
            raise LabError(f"--esxi must be 0 or more (got {count})", 2)
        self.count = count
        self.cert_dir = cert_dir
        self.password = password or secrets.token_hex(12)
        self.pnics = pnics
        self.host_pnics = dict(host_pnics or {})
        self.log_dir = log_dir
        self.names = [host_name(i) for i in range(1, count + 1)]
        self.uuids = {name: str(uuid.uuid4()) for name in self.names}
        self.sims: dict[str, Vcsim] = {}
        self.infos: dict[str, VcsimInfo] = {}  # the last start of each host (its port stays)

    def start(self) -> list[VcsimInfo]:
        """Start every host; on any failure stop those started and raise its LabError. Every start of
        the fleet is a new world: certificates another fleet left in ``cert_dir`` are replaced."""
        for name in self.names:
            certificate_path(self.cert_dir, name).unlink(missing_ok=True)
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(self.count, START_WORKERS))) as pool:
                for name, sim in zip(self.names, pool.map(self._start, self.names), strict=True):
                    self.sims[name] = sim
                    self.infos[name] = sim.info
        except BaseException:
            self.stop()
            raise
        return self.hosts

    def _start(self, name: str, port: int = 0) -> Vcsim:
        return start_host(
            name,
            cert_dir=self.cert_dir,
            password=self.password,
            host_uuid=self.uuids[name],
            port=port,
            pnics=self.pnics,
            own_pnics=self.host_pnics.get(name),
            log_dir=self.log_dir,
        )

    @property
    def hosts(self) -> list[VcsimInfo]:
        return [self.infos[n] for n in self.names if n in self.infos]

    @property
    def pids(self) -> dict[str, int]:
        """The running simulators' pids, by host name."""
        return {n: s.process.pid for n, s in self.sims.items() if s.process.poll() is None}

    def _known(self, name: str) -> None:
        if name not in self.names:
            raise LabError(f"no standalone host {name!r} in this lab (hosts: {', '.join(self.names)})", 2)

    def stop_host(self, name: str) -> None:
        """Stop host ``name``'s simulator (idempotent); its port and certificate are kept for a start."""
        self._known(name)
        sim = self.sims.pop(name, None)
        if sim is not None:
            sim.stop()

    def start_host(self, name: str) -> VcsimInfo:
        """Start host ``name`` again on its port, with its certificate; a running one is left as it is."""
        self._known(name)
        if name in self.sims and self.sims[name].process.poll() is None:
            return self.infos[name]
        before = self.infos.get(name)
        sim = self._start(name, before.port if before else 0)
        self.sims[name] = sim
        self.infos[name] = sim.info
        return sim.info

    def stop(self) -> None:
        for name in list(self.sims):
            self.stop_host(name)
