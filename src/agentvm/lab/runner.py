"""``agentvm lab up | down | status | env``: a lab that outlives the command that started it.

``up`` starts a detached supervisor process (``python -m agentvm.lab.runner``) that runs a ``Lab`` and
records pids, ports and credentials in ``<state dir>/state.json`` (mode 0600; the state dir is
``$AGENTVM_LAB_DIR`` or ``./.lab``, git-ignored). ``down`` stops the supervisor and every process it
started, by pid, and removes the state. Each ``up`` is a new vcsim world: the lab's EAM and SDN state in
``<state dir>/world/`` start fresh with it (``agentvm.lab.world_state``); the supervisor removes them when
it stops, and a world left behind by a killed supervisor is discarded by the next ``up``, in
``runner.log``. Called by the CLI; ``main()`` is the supervisor itself.

Standalone ESXi hosts (``up(esxi=N)``, ``vcenter=False`` for those alone) are children of the supervisor
too, recorded in ``state.json`` under ``esxi`` (one simulator's ready info each) and ``pids`` (by host
name). ``esxi_stop``/``esxi_start`` stop one and start it again on its port with its certificate (a
host restart), for ``agentvm lab esxi stop|start NAME``: the simulator started again is this caller's
detached child, recorded in ``state.json`` so that ``down`` stops it like the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agentvm.engine.manager import DEPLOY_PER_CLUSTER, DEPLOY_TOTAL
from agentvm.lab.eam_service import check_bounds
from agentvm.lab.esxi import start_host
from agentvm.lab.etcd import etcd_binary
from agentvm.lab.vcsim import LabError, Shape, VcsimInfo, build
from agentvm.lab.world import Lab, LabInfo

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("AGENTVM_LAB_DIR") or ".lab").resolve()


@dataclass(frozen=True)
class LabState:
    """What ``state.json`` records about a running lab."""

    supervisor_pid: int
    pids: dict[str, int]
    vcsim: VcsimInfo | None  # None: no vCenter (``lab up --esxi N --no-vcenter``)
    ovf_url: str
    shape: Shape
    start_seconds: float
    started_at: float = field(default_factory=time.time)
    eam_backend: str = ""
    sdn_url: str = ""  # netsync: the SDN config-API emulator
    vrouter_map: str = ""
    # the lab's EAM: deploys run at once per cluster and in all
    deploy_per_cluster: int = DEPLOY_PER_CLUSTER
    deploy_total: int = DEPLOY_TOTAL
    coordination: str = ""  # the lab's etcd (``lab up --etcd``): etcd://127.0.0.1:PORT
    esxi: tuple[VcsimInfo, ...] = ()  # the standalone ESXi hosts (``lab up --esxi N``), esx-01 first

    @property
    def vcenter(self) -> bool:
        return self.vcsim is not None

    @property
    def address(self) -> str:
        """What names this lab in messages: its vCenter's URL, else its first host's."""
        if self.vcsim is not None:
            return self.vcsim.url
        return self.esxi[0].url if self.esxi else "no vCenter"

    @property
    def info(self) -> LabInfo:
        return LabInfo(
            vcsim=self.vcsim,
            ovf_url=self.ovf_url,
            shape=self.shape,
            eam_backend=self.eam_backend,
            sdn_url=self.sdn_url,
            vrouter_map=self.vrouter_map,
            coordination=self.coordination,
            esxi=self.esxi,
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> LabState:
        return cls(
            supervisor_pid=int(raw["supervisor_pid"]),  # type: ignore[call-overload]
            pids={str(k): int(v) for k, v in dict(raw["pids"]).items()},  # type: ignore[call-overload]
            vcsim=VcsimInfo(**raw["vcsim"]) if raw.get("vcsim") else None,  # type: ignore[arg-type]
            ovf_url=str(raw["ovf_url"]),
            shape=Shape(**raw["shape"]),  # type: ignore[arg-type]
            start_seconds=float(raw["start_seconds"]),  # type: ignore[arg-type]
            started_at=float(raw["started_at"]),  # type: ignore[arg-type]
            eam_backend=str(raw.get("eam_backend", "")),
            sdn_url=str(raw.get("sdn_url", "")),
            vrouter_map=str(raw.get("vrouter_map", "")),
            deploy_per_cluster=int(raw.get("deploy_per_cluster", DEPLOY_PER_CLUSTER)),  # type: ignore[call-overload]
            deploy_total=int(raw.get("deploy_total", DEPLOY_TOTAL)),  # type: ignore[call-overload]
            coordination=str(raw.get("coordination", "")),
            esxi=tuple(VcsimInfo(**h) for h in raw.get("esxi") or ()),  # type: ignore[attr-defined]
        )


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is one of ours (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"agentvm" not in cmdline:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is not running


def read_state(state_dir: Path) -> LabState | None:
    path = state_dir / STATE_FILE
    try:
        return LabState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path} is damaged ({exc}); remove it and run `agentvm lab up` again") from exc


def _write_state(state_dir: Path, state: LabState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state.to_json(), out, indent=2)
    os.replace(tmp, state_dir / STATE_FILE)


def up(
    state_dir: Path,
    shape: Shape,
    *,
    port: int = 0,
    plain_http: bool = False,
    timeout: float = 300.0,
    deploy_per_cluster: int = DEPLOY_PER_CLUSTER,
    deploy_total: int = DEPLOY_TOTAL,
    etcd: bool = False,
    esxi: int = 0,
    vcenter: bool = True,
) -> tuple[LabState, bool]:
    """Start a lab unless one runs; return (state, started_now). Raises LabError with the fix.

    ``deploy_per_cluster`` / ``deploy_total``: the lab's EAM's bounds on deploys run at once. ``etcd``:
    run etcd too (``lab up --etcd``); a running lab without it is not reused. ``esxi``: standalone ESXi
    hosts beside the vCenter, or instead of it with ``vcenter=False``; a running lab with another count
    is not reused.
    """
    shape.validate()
    if esxi < 0:
        raise LabError(f"--esxi must be 0 or more (got {esxi})", 2)
    if not vcenter and esxi == 0:
        raise LabError("--no-vcenter needs standalone hosts: add --esxi N (1 or more)", 2)
    check_bounds(deploy_per_cluster, deploy_total)
    existing = read_state(state_dir)
    if existing is not None:
        if pid_alive(existing.supervisor_pid):
            if (len(existing.esxi), existing.vcenter) != (esxi, vcenter):
                raise LabError(
                    f"a lab with {len(existing.esxi)} standalone hosts"
                    + ("" if existing.vcenter else " and no vCenter")
                    + f" is already running ({existing.address}): run `agentvm lab down` first",
                    1,
                )
            if existing.shape != shape:
                raise LabError(
                    f"a lab of another shape is already running ({existing.address}): "
                    "run `agentvm lab down` first",
                    1,
                )
            if (existing.deploy_per_cluster, existing.deploy_total) != (deploy_per_cluster, deploy_total):
                raise LabError(
                    f"a lab whose EAM deploys {existing.deploy_per_cluster} per cluster and "
                    f"{existing.deploy_total} in all is already running ({existing.address}): "
                    "run `agentvm lab down` first",
                    1,
                )
            if etcd and not existing.coordination:
                raise LabError(
                    f"a lab without etcd is already running ({existing.address}): "
                    "run `agentvm lab down` first, then `agentvm lab up --etcd`",
                    1,
                )
            return existing, False
        _cleanup_stale(state_dir, existing)
    if etcd:
        etcd_binary()  # in the foreground too: a missing etcd-server is named here
    build()  # in the foreground, so a missing toolchain is reported here, not in a log
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "runner.log"
    args = [
        sys.executable,
        "-m",
        "agentvm.lab.runner",
        f"--state-dir={state_dir}",
        f"--datacenters={shape.datacenters}",
        f"--clusters={shape.clusters}",
        f"--hosts={shape.hosts}",
        f"--standalone={shape.standalone}",
        f"--vms={shape.vms}",
        f"--pnics={shape.pnics}",
        f"--port={port}",
        f"--deploy-per-cluster={deploy_per_cluster}",
        f"--deploy-total={deploy_total}",
        f"--esxi={esxi}",
    ]
    if not vcenter:
        args.append("--no-vcenter")
    if not shape.dvs:
        args.append("--no-dvs")
    if plain_http:
        args.append("--plain-http")
    if etcd:
        args.append("--etcd")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state is not None and state.supervisor_pid == proc.pid:
            return state, True
        code = proc.poll()
        if code is not None:
            lines = log.read_text(errors="replace").strip().splitlines()
            raise LabError(lines[-1] if lines else f"the lab runner exited with code {code}", code or 1)
        time.sleep(0.05)
    _kill(proc.pid)
    raise LabError(f"the lab did not come up within {timeout:.0f} s; see {log}")


def _kill(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cleanup_stale(state_dir: Path, state: LabState) -> None:
    for pid in state.pids.values():
        if pid_alive(pid):
            _kill(pid)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()


def down(state_dir: Path) -> LabState | None:
    """Stop the supervisor and everything it started; None when no lab was running."""
    state = read_state(state_dir)
    if state is None:
        return None
    if pid_alive(state.supervisor_pid):
        _kill(state.supervisor_pid)
    _cleanup_stale(state_dir, state)
    return state


def status(state_dir: Path) -> tuple[LabState | None, dict[str, bool]]:
    """The recorded state and, per process, whether it is running."""
    state = read_state(state_dir)
    if state is None:
        return None, {}
    alive = {"supervisor": pid_alive(state.supervisor_pid)}
    alive.update({name: pid_alive(pid) for name, pid in state.pids.items()})
    return state, alive


def _running_state(state_dir: Path) -> LabState:
    state = read_state(state_dir)
    if state is None or not pid_alive(state.supervisor_pid):
        raise LabError("no lab is running: start one with `agentvm lab up --esxi N`", 2)
    return state


def _esxi_host(state: LabState, name: str) -> VcsimInfo:
    for host in state.esxi:
        if host.host_name == name:
            return host
    names = ", ".join(h.host_name for h in state.esxi) or "none: start the lab with `agentvm lab up --esxi N`"
    raise LabError(f"the lab has no standalone host {name!r} (its hosts: {names})", 2)


def esxi_stop(state_dir: Path, name: str) -> tuple[VcsimInfo, bool]:
    """Stop the simulator of standalone host ``name`` (its port and certificate are kept); return its info
    and whether it was running. LabError (exit 2) without a lab or such a host."""
    state = _running_state(state_dir)
    host = _esxi_host(state, name)
    pid = state.pids.get(name)
    running = pid is not None and pid_alive(pid)
    if pid is not None and running:
        _kill(pid)
    return host, running


def esxi_start(state_dir: Path, name: str) -> tuple[VcsimInfo, bool]:
    """Start standalone host ``name`` again on its port with its certificate, hardware UUID and password
    (a fresh inventory); return its info and whether it was started now (False: it was running).
    LabError (exit 2) without a lab or such a host; exit 3 when its port was taken meanwhile."""
    state = _running_state(state_dir)
    host = _esxi_host(state, name)
    pid = state.pids.get(name)
    if pid is not None and pid_alive(pid):
        return host, False
    sim = start_host(
        name,
        cert_dir=state_dir / "esxi",
        password=host.password,
        host_uuid=host.host_uuid,
        port=host.port,
        pnics=state.shape.pnics,
        log_dir=state_dir / "esxi",
        detach=True,
    )
    info = sim.info
    esxi = tuple(info if h.host_name == name else h for h in state.esxi)
    _write_state(state_dir, replace(state, pids={**state.pids, name: info.pid}, esxi=esxi))
    return info, True


def main(argv: list[str] | None = None) -> int:
    """The detached supervisor: run a Lab until SIGTERM/SIGINT, keeping state.json current."""
    parser = argparse.ArgumentParser(prog="agentvm.lab.runner")
    parser.add_argument("--state-dir", type=Path, required=True)
    for name, default in (
        ("datacenters", 1),
        ("clusters", 2),
        ("hosts", 3),
        ("standalone", 0),
        ("vms", 0),
        ("pnics", 3),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--no-dvs", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plain-http", action="store_true")
    parser.add_argument("--deploy-per-cluster", type=int, default=DEPLOY_PER_CLUSTER)
    parser.add_argument("--deploy-total", type=int, default=DEPLOY_TOTAL)
    parser.add_argument("--etcd", action="store_true")
    parser.add_argument("--esxi", type=int, default=0)
    parser.add_argument("--no-vcenter", action="store_true")
    args = parser.parse_args(argv)
    # runner.log: warnings of every part, and the lab's own notes (which world runs, what was discarded)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("agentvm.lab").setLevel(logging.INFO)
    shape = Shape(
        args.datacenters, args.clusters, args.hosts, args.standalone, args.vms, not args.no_dvs, args.pnics
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    try:
        lab = Lab(
            shape,
            port=args.port,
            plain_http=args.plain_http,
            log_dir=args.state_dir,
            state_dir=args.state_dir,
            deploy_per_cluster=args.deploy_per_cluster,
            deploy_total=args.deploy_total,
            etcd=args.etcd,
            esxi=args.esxi,
            vcenter=not args.no_vcenter,
        )
        info = lab.start()
    except LabError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    try:
        _write_state(
            args.state_dir,
            LabState(
                supervisor_pid=os.getpid(),
                pids=lab.pids,
                vcsim=info.vcsim,
                ovf_url=info.ovf_url,
                shape=shape,
                start_seconds=round(time.monotonic() - started, 3),
                eam_backend=info.eam_backend,
                sdn_url=info.sdn_url,
                vrouter_map=info.vrouter_map,
                deploy_per_cluster=args.deploy_per_cluster,
                deploy_total=args.deploy_total,
                coordination=info.coordination,
                esxi=info.esxi,
            ),
        )
        stop.wait()
    finally:
        lab.stop()
        with contextlib.suppress(FileNotFoundError):
            (args.state_dir / STATE_FILE).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
