"""``agentvm run -f SPEC``: the controller, with its HTTP server (status, events, metrics, dashboard).

Wires ``controller.run.Controller`` to ``api.server.ApiServer`` and the process: logs (``--log-format``),
the listen address (loopback unless ``--allow-remote``), the API token (``$AGENTVM_API_TOKEN`` or
``--token-file``, never a flag value: it would show in ``ps``), the backend (``eam``, or ``direct`` for
agentvm's own engine, whose state file lives in ``--state-dir``), ``--netsync`` (the watch-driven
network sync alongside, configured as ``agentvm netsync``: ``--sdn-url``/``$AGENTVM_SDN_URL``,
``$AGENTVM_SDN_TOKEN``, ``--vrouter-map``/``$AGENTVM_VROUTER_MAP`` or the agent VMs' fabric IPs,
``--reserve-vlans``), the API's limits (``--max-streams``/``$AGENTVM_MAX_STREAMS`` event streams and
``--max-requests``/``$AGENTVM_MAX_REQUESTS`` other requests at once, more are answered 503), the
controller's pool (``--workers``/``$AGENTVM_WORKERS``) and spread sweep (``--sweep-per-minute``/
``$AGENTVM_SWEEP_PER_MINUTE``), and SIGTERM/SIGINT, which stop everything and exit 0.

Before anything acts, it takes the solution's lease in vCenter (``controller.lease``; TTL ``--lease-ttl`` or
``$AGENTVM_LEASE_TTL``): while another agentvm holds it and is seen renewing it, ``run`` refuses, naming
the holder (host, pid, command, since), exit 3; with ``--standby`` it waits and takes over once the holder
releases it or stops renewing it for one TTL. It renews the lease for its life and exits 3 if it loses it.

``-f`` may be repeated: one controller per spec (each its own session, backend, watch and lease), one API
over them all (``controller.replica.Replica``); two specs of one solution on one vCenter are refused by
name, exit 2, before any login. With ``--coordination etcd://HOST:PORT[,…]`` (or ``$AGENTVM_COORDINATION``)
this process is one replica of several: it never refuses and never exits for a lost leadership; for each
spec it acts only while it leads the spec's etcd seat and holds the solution's lease in vCenter
(``controller.replica.Leadership``), and follows (read-only status) otherwise. ``--lease-ttl`` is the TTL
of both. ``--standby`` is refused with it (exit 2): every replica already stands by for what it does not
lead.

A spec with standalone ESXi hosts (``esxi:``) is run by ``cli.run_esxi``: one controller, lease and direct
engine per host, each host reconnected on its own (``--hosts-at-once`` bounds how many are opened at once);
not with ``--coordination``, ``--netsync`` or a second ``-f`` (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agentvm.api.auth import BearerToken
from agentvm.api.server import Api, ApiServer, Limits, bind
from agentvm.backends.base import Backend
from agentvm.backends.direct import DirectBackend
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.netsync import (
    NetsyncResync,
    Project,
    ReserveVlans,
    SdnUrl,
    VrouterMap,
    VrouterPort,
    agent_clients,
    load_vrouter_map,
    parse_vlan_ranges,
)
from agentvm.cli.solution import (
    ConnectionFlags,
    EngineStateDir,
    guard,
    load,
    login,
    spec_connection,
)
from agentvm.controller.events import EventLog
from agentvm.controller.leadership import Coordinator, SeatKey, parse_coordination
from agentvm.controller.lease import Keeper, Lease, LeaseHeldError, LeaseLostError, lease_ttl
from agentvm.controller.logs import action_log, configure, unconfigure
from agentvm.controller.netsync import (
    AGENT_PORT,
    FULL_RESYNC_SECONDS,
    NetsyncWatch,
    agent_urls_from_agent_vms,
)
from agentvm.controller.replica import Leadership, Member, Replica
from agentvm.controller.run import Controller, Settings
from agentvm.engine.manager import Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.coordination import Endpoint
from agentvm.model.desired import DesiredState
from agentvm.model.errors import ConfigurationError
from agentvm.model.lease import LeaseHolder
from agentvm.model.network import NetsyncConfig
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

Specs = Annotated[
    list[Path],
    typer.Option(
        "-f",
        "--file",
        help="The spec file (YAML), e.g. examples/contrail.yaml; repeat for several vCenters or solutions "
        "(one controller each, one API).",
    ),
]
COORDINATION_ENV = "AGENTVM_COORDINATION"
TOKEN_ENV = "AGENTVM_API_TOKEN"  # noqa: S105 (the variable's name, not a token)
STATE_DIR_ENV = "AGENTVM_STATE_DIR"
MAX_STREAMS_ENV = "AGENTVM_MAX_STREAMS"
MAX_REQUESTS_ENV = "AGENTVM_MAX_REQUESTS"
WORKERS_ENV = "AGENTVM_WORKERS"
SWEEP_ENV = "AGENTVM_SWEEP_PER_MINUTE"
SDN_TOKEN_ENV = "AGENTVM_SDN_TOKEN"  # noqa: S105 (the variable's name, not a token)


class BackendKind(StrEnum):
    EAM = "eam"
    DIRECT = "direct"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def parse_listen(listen: str, *, allow_remote: bool) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) → (host, port). ConfigurationError for a bad value or a
    non-loopback host without ``allow_remote``."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigurationError(f"--listen {listen!r} is not host:port (e.g. 127.0.0.1:8080, port 0: any)")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigurationError(
            f"--listen {listen!r}: the host must be an IP address or localhost"
        ) from None
    if not loopback and not allow_remote:
        raise ConfigurationError(
            f"--listen {listen!r} is not a loopback address: the API would be reachable from the network; "
            "add --allow-remote if that is what you want (reads are not authenticated)"
        )
    return host, int(port_text)


def bind_listen(listen: str, host: str, port: int) -> socket.socket:
    """The API's listening socket for ``--listen``, bound before ``run`` logs in to vCenter, so that a busy
    port or an address this machine does not have is one line (ConfigurationError), with nothing done."""
    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is in use (another agentvm run?); stop that process or choose another port"
        elif exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            family = "IPv6 " if ":" in host else ""
            why = f"this machine has no such {family}address; use 127.0.0.1:PORT or an address it has"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges); choose a port above 1023"
        else:
            why = f"{exc.strerror or exc}; choose another address"
        raise ConfigurationError(f"cannot listen on --listen {listen}: {why}") from None


def read_token(token_file: Path | None) -> BearerToken | None:
    """The API token from ``--token-file`` or ``$AGENTVM_API_TOKEN``; None: changes through the API off."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read --token-file {token_file}: {exc}") from None
        source = f"--token-file {token_file}"
    else:
        text = os.environ.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
        if not text:
            return None
    try:
        return BearerToken(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: {exc}") from None


def default_state_dir() -> Path:
    """``$AGENTVM_STATE_DIR``, else ``~/.local/state/agentvm`` (XDG's state home for this user)."""
    env = os.environ.get(STATE_DIR_ENV, "").strip()
    return Path(env) if env else Path.home() / ".local" / "state" / "agentvm"


def engine_state_file(state_dir: Path, solution_key: str, vcenter_url: str) -> Path:
    """Where the direct backend's engine keeps its state: one file per solution and vCenter, so that one
    state dir serves several vCenters without mixing their agencies. Pure (no I/O)."""
    where = re.sub(r"^[a-z]+://", "", vcenter_url.strip().lower()).split("/", 1)[0]
    safe = re.sub(r"[^a-zA-Z0-9._-]+", "_", f"{solution_key}@{where}")
    return state_dir / f"engine-{safe}.json"


@dataclass
class DirectEngine:
    """The direct backend of one ``agentvm run`` with what it holds: its own vCenter session, the engine's
    inventory watcher, and an exclusive lock on its state file. ``close()`` releases them all (the state
    file stays: the next run starts from it)."""

    backend: DirectBackend
    infra: VSphereInfrastructure
    session: Session
    state_file: Path
    lock_fd: int

    def close(self) -> None:
        try:
            # the engine's actions run on its workers: the queued ones are dropped (planned again by the
            # next run), the running ones get a while to end (one cut off is a half-deployed VM, which the
            # next run deletes)
            self.backend.engine.drain(timeout=30.0)
            self.infra.stop()
            self.session.logout()
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
                os.close(self.lock_fd)


def open_direct_engine(
    conn: VCenterConnection,
    desired: DesiredState,
    state_dir: Path,
    *,
    timeout: float = 30.0,
    host_agent: bool = False,
) -> DirectEngine:
    """Log in, lock ``state_dir``'s state file for this solution and vCenter, and build the engine on it.

    Called by ``run --backend direct`` and by tests (a restart: ``close()``, then open again on the same
    dir). The engine reloads its agencies, agents and issue keys from the file and checks them against the
    VMs it owns in vCenter, so a restart neither redeploys nor orphans agents. Raises ConfigurationError
    when the dir cannot be created, another controller holds the file, or the file is unreadable.
    ``host_agent``: ``conn`` is a standalone ESXi host (``esxi:``; ``cli.esxi``), whose state file is its own.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create --state-dir {state_dir}: {exc.strerror}; choose a writable directory "
            f"(--state-dir or ${STATE_DIR_ENV})"
        ) from None
    state_file = engine_state_file(state_dir, desired.solution.key, conn.url)
    lock_path = state_file.with_name(state_file.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigurationError(f"cannot open {lock_path}: {exc.strerror}; check --state-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(
            f"another agentvm run --backend direct is using {state_file}; stop it first "
            "(two engines on one vCenter would fight over the agent VMs)"
        ) from None
    session: Session | None = None
    infra: VSphereInfrastructure | None = None
    try:
        session = Session.connect(
            conn, timeout=timeout, correlation_prefix="agentvm-engine", host_agent=host_agent
        )
        infra = VSphereInfrastructure(session)
        try:
            engine = Engine(infra, state_file, namespace=desired.solution.key)
        except ValueError as exc:
            raise ConfigurationError(
                f"{exc} (state file of --state-dir {state_dir}; move it away to start afresh)"
            ) from None
        backend = DirectBackend(engine, solution_id=desired.solution.key)
        return DirectEngine(backend, infra, session, state_file, fd)
    except BaseException:
        if infra is not None:
            infra.stop()
        if session is not None:
            session.logout()
        os.close(fd)  # closing the descriptor releases the lock
        raise


# -- the lease ---------------------------------------------------------------------------------------------


def take_lease(session: Session, desired: DesiredState, *, ttl: float, standby: bool) -> Lease:
    """The solution's lease for this ``run``: taken at once when free; when another holds it, refused as
    soon as that one is seen alive (LeaseHeldError naming it), or with ``standby`` waited for until it is
    released or expires (SIGTERM/SIGINT end the wait: LeaseHeldError). Called before anything acts."""
    lease = Lease(session, desired.solution.key, "run", ttl=ttl)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ = (signum, frame)
        stop.set()

    def waiting(verdict: object) -> None:
        holder = getattr(verdict, "holder", None)
        if isinstance(holder, LeaseHolder):
            what = "standing by" if standby else "checking whether it is alive"
            action_log(f"{lease.where} is held by {holder.describe()}; {what}", action="lease-wait")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        lease.acquire(
            wait=None,
            give_up=None if standby else (lambda verdict: verdict.alive),
            stop=stop,
            on_wait=waiting,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    action_log(
        f"holding {lease.where} (generation {lease.generation}, TTL {lease.ttl:g} s)"
        + (f" after waiting {lease.acquired_after:.1f} s" if lease.acquired_after else ""),
        action="lease",
    )
    return lease


# -- --netsync -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetsyncOptions:
    """``--netsync``'s settings, checked before anything connects. ``agent_urls`` None: each host's agent
    is found from its agent VM's fabric IP on ``vrouter_port``. The token is a ``Secret`` (no repr)."""

    sdn_url: str
    token: Secret | None
    config: NetsyncConfig
    agent_urls: Mapping[str, str] | None
    vrouter_port: int = AGENT_PORT
    resync_interval: float = FULL_RESYNC_SECONDS


def netsync_options(
    sdn_url: str | None,
    vrouter_map: Path | None,
    project: str,
    reserve_vlans: str,
    vrouter_port: int = AGENT_PORT,
    resync_interval: float = FULL_RESYNC_SECONDS,
) -> NetsyncOptions:
    """Validate ``--netsync``'s flags (ConfigurationError naming the flag and the fix)."""
    if not sdn_url:
        raise ConfigurationError(
            "--netsync needs the SDN controller: pass --sdn-url or set AGENTVM_SDN_URL "
            "(for the lab: eval $(agentvm lab env))"
        )
    token = os.environ.get(SDN_TOKEN_ENV, "").strip()
    config = NetsyncConfig(project=project, reserved_vlans=parse_vlan_ranges(reserve_vlans))
    urls = load_vrouter_map(vrouter_map) if vrouter_map is not None else None
    secret = Secret(token) if token else None
    return NetsyncOptions(sdn_url, secret, config, urls, vrouter_port, resync_interval)


class VrouterAgents:
    """``NetsyncWatch``'s ``agents``: host moid -> client of that host's vRouter agent, looked up again every
    ``refresh`` seconds (hosts join, agent VMs are deployed and get their fabric IP after the controller
    starts). From ``urls`` (``--vrouter-map``: keys are host moids or names) or, without one, from the agent
    VMs (one bulk read). A client is kept while its URL stays the same. Called on the netsync thread only.
    """

    def __init__(
        self,
        session: Session,
        urls: Mapping[str, str] | None,
        *,
        port: int = AGENT_PORT,
        refresh: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._urls = urls
        self._port = port
        self._refresh = refresh
        self._clock = clock
        self._clients: dict[str, VrouterAgentClient] = {}
        self._at: float | None = None

    def __call__(self) -> Mapping[str, VrouterAgentClient]:
        now = self._clock()
        if self._at is None or now - self._at >= self._refresh:
            self._at = now
            self._update(self._lookup())
        return dict(self._clients)

    def _lookup(self) -> dict[str, str]:
        if self._urls is None:
            return agent_urls_from_agent_vms(self._session, port=self._port)
        found = agent_clients(self._session, self._urls)  # resolves host names to moids
        urls = {moid: client.base_url for moid, client in found.items()}
        for client in found.values():
            client.close()
        return urls

    def _update(self, urls: Mapping[str, str]) -> None:
        for moid, client in list(self._clients.items()):
            if urls.get(moid) != client.base_url:
                client.close()
                del self._clients[moid]
        for moid, url in urls.items():
            if moid not in self._clients:
                self._clients[moid] = VrouterAgentClient(url)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients = {}


def open_netsync(
    conn: VCenterConnection, options: NetsyncOptions, stack: contextlib.ExitStack, *, timeout: float = 30.0
) -> NetsyncWatch:
    """The network sync of ``agentvm run --netsync`` on a vCenter session of its own (its watch has its own
    property collector); everything it holds is closed by ``stack``. Not started: the controller starts it.
    """
    session = Session.connect(conn, timeout=timeout, correlation_prefix="agentvm-netsync")
    stack.callback(session.logout)
    api = ConfigApiClient(options.sdn_url, options.token, options.config)
    stack.callback(api.close)
    agents = VrouterAgents(session, options.agent_urls, port=options.vrouter_port)
    stack.callback(agents.close)
    return NetsyncWatch(session, api, agents, config=options.config, resync_interval=options.resync_interval)


@guard
def run(
    ctx: typer.Context,
    file: Specs,
    backend: Annotated[
        BackendKind, typer.Option("--backend", help="eam: vCenter's EAM; direct: agentvm's own engine.")
    ] = BackendKind.EAM,
    listen: Annotated[
        str, typer.Option("--listen", help="Address of the HTTP API and dashboard (port 0: any free port).")
    ] = "127.0.0.1:8080",
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow --listen on a non-loopback address.")
    ] = False,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help=f"File holding the API token (or set ${TOKEN_ENV})."),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text or json lines.")
    ] = LogFormat.TEXT,
    poll: Annotated[
        float,
        typer.Option(
            "--poll",
            min=0.05,
            help="Poll interval while busy (s): for 4 polls after a change, then doubling up to 2 s.",
        ),
    ] = 0.25,
    idle_poll: Annotated[
        float, typer.Option("--idle-poll", min=0.1, help="Poll interval when green (s).")
    ] = 5.0,
    resync: Annotated[
        float, typer.Option("--resync", min=1.0, help="Full resync at least this often (s).")
    ] = 60.0,
    call_timeout: Annotated[
        float, typer.Option("--call-timeout", min=1.0, help="Seconds before a vCenter call is given up.")
    ] = 30.0,
    max_streams: Annotated[
        int,
        typer.Option(
            "--max-streams",
            min=1,
            envvar=MAX_STREAMS_ENV,
            help="Event streams (dashboards) the API serves at once; more are answered 503.",
        ),
    ] = Limits.max_streams,
    max_requests: Annotated[
        int,
        typer.Option(
            "--max-requests",
            min=1,
            envvar=MAX_REQUESTS_ENV,
            help="Other API requests answered at once (/healthz is not counted); more are answered 503.",
        ),
    ] = Limits.max_requests,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            envvar=WORKERS_ENV,
            help="Hooks answered, and hosts' AgentVM settings set, at once (1: one after the other).",
        ),
    ] = Settings.workers,
    sweep_per_minute: Annotated[
        float,
        typer.Option(
            "--sweep-per-minute",
            min=1.0,
            envvar=SWEEP_ENV,
            help="Agents re-read a minute at most between full sweeps (the safety net for a lost update).",
        ),
    ] = Settings.sweep_per_minute,
    state_dir: EngineStateDir = None,
    netsync: Annotated[
        bool,
        typer.Option("--netsync", help="Also mirror vCenter networks into the SDN (as agentvm netsync)."),
    ] = False,
    sdn_url: SdnUrl = None,
    vrouter_map: VrouterMap = None,
    project: Project = "default-project",
    reserve_vlans: ReserveVlans = "",
    vrouter_port: VrouterPort = AGENT_PORT,
    netsync_resync: NetsyncResync = FULL_RESYNC_SECONDS,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            help="When another agentvm holds the solution's lease, wait and take over when it stops "
            "(default: refuse and exit 3). Not with --coordination, where every replica stands by.",
        ),
    ] = False,
    coordination: Annotated[
        str | None,
        typer.Option(
            "--coordination",
            envvar=COORDINATION_ENV,
            help="etcd://HOST:PORT[,HOST:PORT...]: run as one of several replicas; for each spec only the "
            "replica that leads it acts, the others follow (read-only status) and take over when it stops.",
        ),
    ] = None,
    hosts_at_once: Annotated[
        int,
        typer.Option(
            "--hosts-at-once",
            envvar="AGENTVM_HOSTS_AT_ONCE",  # cli.esxi's (which imports this module)
            min=1,
            help="With esxi: in the spec, how many standalone hosts are opened (logged in to, their lease "
            "taken) at once (default 8); every host is then served on its own.",
        ),
    ] = 8,
    lease_ttl_seconds: Annotated[
        float | None,
        typer.Option(
            "--lease-ttl",
            min=1.0,
            max=3600.0,
            help="Seconds without renewal after which the lease (and with --coordination the etcd "
            "leadership) is taken over (default $AGENTVM_LEASE_TTL or 15).",
        ),
    ] = None,
) -> None:
    """Keep every agent healthy: watch, heal, answer hooks; serve status, events, metrics and a dashboard.

    With several -f, one controller per spec behind one API. With --coordination, one of several replicas:
    for each spec only its leader acts. With --netsync, also keep the SDN controller and the vRouter agents
    in step with vCenter's networks."""
    handler = configure(log_format.value)
    # when the command returns, its handler goes: a later command in this process must not log into its stream
    ctx.call_on_close(functools.partial(unconfigure, handler))
    host, port = parse_listen(listen, allow_remote=allow_remote)
    token = read_token(token_file)
    endpoints = None
    if coordination is not None and coordination.strip():
        endpoints = parse_coordination(coordination.strip())
        if backend is BackendKind.DIRECT:
            raise ConfigurationError(
                "--coordination needs --backend eam: the direct engine keeps its state in a file on this "
                "machine, which another replica cannot take over"
            )
        if standby:
            raise ConfigurationError(
                "--standby does not go with --coordination: a replica already stands by for every spec "
                "it does not lead (it follows and takes over when the leader stops); drop --standby"
            )
    if not file:
        raise ConfigurationError("agentvm run needs a spec: pass -f SPEC (repeat -f for several)")
    specs = [(path, load(path)) for path in file]
    if any(desired.esxi for _, desired in specs):
        _run_esxi(
            specs,
            coordination=endpoints is not None,
            netsync=netsync,
            backend=backend,
            listen=(listen, host, port),
            token=token,
            settings=Settings(
                fast_poll=poll,
                slow_poll=idle_poll,
                full_resync=resync,
                workers=workers,
                sweep_per_minute=sweep_per_minute,
            ),
            ttl=lease_ttl_seconds if lease_ttl_seconds is not None else lease_ttl(),
            state_dir=state_dir or default_state_dir(),
            call_timeout=call_timeout,
            at_once=hosts_at_once,
            limits=Limits(max_streams=max_streams, max_requests=max_requests),
        )
        return
    flags = ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    conns = [spec_connection(desired, flags) for _, desired in specs]
    distinct(
        [
            (str(path), desired.solution.key, vcenter_where(conn.url))
            for (path, desired), conn in zip(specs, conns, strict=True)
        ],
        "vCenter",
    )
    options = (
        netsync_options(sdn_url, vrouter_map, project, reserve_vlans, vrouter_port, netsync_resync)
        if netsync
        else None
    )
    ttl = lease_ttl_seconds if lease_ttl_seconds is not None else lease_ttl()
    listener = bind_listen(listen, host, port)  # a busy port ends here, before any login
    controllers: list[Controller] = []
    leases: list[Lease] = []
    with (
        contextlib.ExitStack() as stack
    ):  # closed in reverse: server, events, netsync, engine, lease, session, listener
        stack.callback(listener.close)  # the server closes it too; closing twice is harmless
        events = EventLog()
        stack.callback(events.close)
        coordinator = None
        replica_id = f"{socket.gethostname()}-{os.getpid()}"
        if endpoints is not None:
            coordinator = start_coordinator(endpoints, ttl, events)
            stack.callback(coordinator.stop)  # resigns every seat: another replica takes over at once
            replica_id = coordinator.replica
        members: list[Member] = []
        seen: list[tuple[str, str, str]] = []
        for (path, desired), conn in zip(specs, conns, strict=True):
            login(conn).logout()  # a wrong password or certificate ends here, with its message
            session = Session.connect(conn, timeout=call_timeout, correlation_prefix="agentvm-run")
            stack.callback(session.logout)
            uuid = str(session.content.about.instanceUuid or session.url)
            seen.append((str(path), desired.solution.key, uuid))
            distinct(seen, "vCenter (instanceUuid)")
            leadership: Leadership | None = None
            keeper: Keeper | None = None
            lease: Lease | Leadership
            if coordinator is not None:
                leadership = open_leadership(coordinator, session, desired, uuid, ttl, events)
                stack.callback(leadership.stop)  # before the seat is resigned: the lease is released first
                lease = leadership
            else:
                try:
                    held = take_lease(session, desired, ttl=ttl, standby=standby)
                except LeaseHeldError:
                    if standby:  # told to stop while standing by
                        action_log("agentvm run stopped while standing by", action="exit")
                        return
                    raise
                stack.callback(held.release)
                leases.append(held)
                keeper = Keeper(held).start()  # renewing from now on: opening the engine may take a while
                stack.callback(keeper.stop)
                lease = held
            chosen: Backend | None = None
            if backend is BackendKind.DIRECT:
                direct = open_direct_engine(
                    conn, desired, state_dir or default_state_dir(), timeout=call_timeout
                )
                stack.callback(direct.close)
                action_log(f"engine state in {direct.state_file}", action="state")
                chosen = direct.backend
            watch = open_netsync(conn, options, stack, timeout=call_timeout) if options else None
            settings = Settings(
                fast_poll=poll,
                slow_poll=idle_poll,
                full_resync=resync,
                workers=workers,
                sweep_per_minute=sweep_per_minute,
            )
            controller = Controller(
                desired,
                session,
                backend=chosen,
                settings=settings,
                events=events,
                netsync=watch,
                lease=lease,
                state_dir=state_dir,
            )
            controllers.append(controller)
            member = Member(uuid, session.url, desired.solution.key, controller, leadership)
            if keeper is not None and isinstance(lease, Lease):
                keeper.on_lost = controller.lease_trouble
                member.since = lease.me.started
                controller.events.publish(
                    "lease", f"holding {lease.where} as {lease.me.describe()} (TTL {lease.ttl:g} s)"
                )
            if leadership is not None:
                leadership.start()
            members.append(member)
        replica = Replica(
            members,
            events,
            replica=replica_id,
            etcd_calls=(lambda: coordinator.calls) if coordinator is not None else None,
        )
        limits = Limits(max_streams=max_streams, max_requests=max_requests)
        api = Api(**replica.api_callables(), token=token)
        server = ApiServer(api, host=host, port=port, limits=limits, listener=listener)
        _serve(controllers, server)
    for controller, held in zip(controllers, leases, strict=False):
        if controller.lease_lost is not None:
            raise LeaseLostError(
                f"agentvm run stopped: it lost {held.where} ({controller.lease_lost}); never two controllers"
            )
    action_log("agentvm run stopped", action="exit")


def _run_esxi(
    specs: Sequence[tuple[Path, DesiredState]],
    *,
    coordination: bool,
    netsync: bool,
    backend: BackendKind,
    listen: tuple[str, str, int],
    token: BearerToken | None,
    settings: Settings,
    ttl: float,
    state_dir: Path,
    call_timeout: float,
    at_once: int,
    limits: Limits,
) -> None:
    """``agentvm run`` of a spec with ``esxi:`` hosts (``cli.run_esxi``), after refusing what it cannot
    do there (ConfigurationError, exit 2, before any connection)."""
    from agentvm.cli.run_esxi import RunOptions, run_standalone

    path, desired = specs[0]
    if len(specs) > 1:
        raise ConfigurationError(
            f"-f {path} lists esxi: hosts: agentvm run takes one spec then (put every host in its esxi:)"
        )
    if coordination:
        raise ConfigurationError(
            f"-f {path} lists esxi: hosts: --coordination is not supported with standalone hosts; drop it"
        )
    if netsync:
        raise ConfigurationError(
            f"-f {path} lists esxi: hosts: --netsync needs a vCenter's networks; drop --netsync"
        )
    if backend is not BackendKind.EAM and backend is not BackendKind.DIRECT:  # pragma: no cover
        raise ConfigurationError(f"unknown --backend {backend}")
    listen_text, host, port = listen
    listener = bind_listen(listen_text, host, port)  # a busy port ends here, before any login
    try:
        options = RunOptions(settings, ttl, state_dir, call_timeout, at_once)
        run_standalone(desired, options, listener=listener, host=host, port=port, token=token, limits=limits)
    finally:
        listener.close()


def vcenter_where(url: str) -> str:
    """A vCenter URL as host[:port], lowercase, for telling two specs' vCenters apart before login."""
    return re.sub(r"^[a-z]+://", "", url.strip().lower()).split("/", 1)[0]


def distinct(specs: list[tuple[str, str, str]], what: str) -> None:
    """ConfigurationError naming both files when two specs (file, solution key, vCenter) name one solution
    on one vCenter: one process would run two controllers of it."""
    first: dict[tuple[str, str], str] = {}
    for path, solution, vcenter in specs:
        other = first.setdefault((solution, vcenter), path)
        if other != path:
            raise ConfigurationError(
                f"-f {other} and -f {path} both name solution {solution} on {what} {vcenter}: one controller "
                "per vCenter and solution; drop one of them, or give it another solution key"
            )


def start_coordinator(endpoints: Sequence[Endpoint], ttl: float, events: EventLog) -> Coordinator:
    """This replica's Coordinator on etcd, started (its membership and keepalive); its events published."""

    def on_event(seat: SeatKey | None, level: str, text: str) -> None:
        where = f"{seat}: " if seat is not None else ""
        action_log(f"{where}{text}", action="coordination", level=_LEVELS.get(level, logging.INFO))
        events.publish("coordination", f"{where}{text}", level=level)

    coordinator = Coordinator(tuple(endpoints), ttl=ttl, on_event=on_event)
    coordinator.start()
    action_log(
        f"replica {coordinator.replica} coordinating through etcd (TTL {ttl:g} s)", action="coordination"
    )
    return coordinator


def open_leadership(
    coordinator: Coordinator, session: Session, desired: DesiredState, uuid: str, ttl: float, events: EventLog
) -> Leadership:
    """The spec's seat and vCenter lease for this replica (not started)."""
    key = desired.solution.key
    seat = coordinator.seat(SeatKey(uuid, key))
    data = {"vcenter": session.url, "solution": key}

    def say(level: str, text: str) -> None:
        message = f"{key} on {session.url}: {text}"
        action_log(message, action="leadership", level=_LEVELS.get(level, logging.INFO))
        events.publish("leadership", message, level=level, data=data)

    return Leadership(
        seat, lambda: Lease(session, key, "run", ttl=ttl), ttl=ttl, replica=coordinator.replica, say=say
    )


_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _serve(controllers: Sequence[Controller], server: ApiServer) -> None:
    """Run the server and the controllers until SIGTERM/SIGINT (or a controller ends); stop them all."""
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ = frame
        stop_requested.set()
        for controller in controllers:
            controller.stop(timeout=0)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        action_log(f"API listening on {server.url}", action="listen")
        for controller in controllers:
            controller.start()
        # the main thread only waits here, so the signal handler never meets a lock it holds
        each = 0.2 / max(1, len(controllers))
        while not stop_requested.is_set() and all(c.join(each) for c in controllers):
            pass
        for controller in controllers:
            controller.stop(timeout=0)
        for controller in controllers:
            controller.stop(timeout=10.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop(timeout=2.0)
