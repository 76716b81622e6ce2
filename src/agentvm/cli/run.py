"""``agentvm run -f SPEC``: the controller, with its HTTP server (status, events, metrics, dashboard).

Wires ``controller.run.Controller`` to ``api.server.ApiServer`` and the process: logs (``--log-format``),
the listen address (loopback unless ``--allow-remote``), the API token (``$AGENTVM_API_TOKEN`` or
``--token-file``, never a flag value: it would show in ``ps``), the backend (``eam``, or ``direct`` for
agentvm's own engine), and SIGTERM/SIGINT, which stop everything and exit 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agentvm.api.auth import BearerToken
from agentvm.api.server import Api, ApiServer
from agentvm.backends.base import Backend
from agentvm.backends.direct import DirectBackend
from agentvm.cli.connect import CaFile, Insecure, PasswordFile, Thumbprint, Url, Username
from agentvm.cli.solution import ConnectionFlags, SpecFile, guard, load, login, spec_connection
from agentvm.controller.logs import action_log, configure
from agentvm.controller.run import Controller, Settings, api_callables
from agentvm.engine.manager import Engine
from agentvm.engine.vsphere_infra import VSphereInfrastructure
from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

TOKEN_ENV = "AGENTVM_API_TOKEN"  # noqa: S105 (the variable's name, not a token)


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


@guard
def run(
    file: SpecFile,
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
        float, typer.Option("--poll", min=0.05, help="Agent poll interval while busy (s).")
    ] = 0.5,
    idle_poll: Annotated[
        float, typer.Option("--idle-poll", min=0.1, help="Poll interval when green (s).")
    ] = 5.0,
    resync: Annotated[
        float, typer.Option("--resync", min=1.0, help="Full resync at least this often (s).")
    ] = 60.0,
    call_timeout: Annotated[
        float, typer.Option("--call-timeout", min=1.0, help="Seconds before a vCenter call is given up.")
    ] = 30.0,
    url: Url = None,
    username: Username = None,
    password_file: PasswordFile = None,
    thumbprint: Thumbprint = None,
    ca_file: CaFile = None,
    insecure: Insecure = False,
) -> None:
    """Keep every agent healthy: watch, heal, answer hooks; serve status, events, metrics and a dashboard."""
    configure(log_format.value)
    host, port = parse_listen(listen, allow_remote=allow_remote)
    token = read_token(token_file)
    desired = load(file)
    conn = spec_connection(
        desired, ConnectionFlags(url, username, password_file, thumbprint, ca_file, insecure)
    )
    login(conn).logout()  # a wrong password or certificate ends here, with its message, before any thread
    session = Session.connect(conn, timeout=call_timeout, correlation_prefix="agentvm-run")
    engine_session: Session | None = None
    infra: VSphereInfrastructure | None = None
    chosen: Backend | None = None
    if backend is BackendKind.DIRECT:
        engine_session = Session.connect(conn, timeout=call_timeout, correlation_prefix="agentvm-engine")
        infra = VSphereInfrastructure(engine_session)
        state = Path(tempfile.gettempdir()) / f"agentvm-engine-{os.getpid()}.json"
        # the engine's state is rebuilt from vSphere (its VMs carry the solution key) and the spec; the
        # file only lives as long as this process
        chosen = DirectBackend(
            Engine(infra, state, namespace=desired.solution.key), solution_id=desired.solution.key
        )
    settings = Settings(fast_poll=poll, slow_poll=idle_poll, full_resync=resync)
    controller = Controller(desired, session, backend=chosen, settings=settings)
    server = ApiServer(Api(**api_callables(controller), token=token), host=host, port=port)
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ = frame
        stop_requested.set()
        controller.stop(timeout=0)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        action_log(f"API listening on {server.url}", action="listen")
        controller.start()
        # the main thread only waits here, so the signal handler never meets a lock it holds
        while not stop_requested.is_set() and controller.join(0.2):
            pass
        controller.stop(timeout=10.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop(timeout=2.0)
        controller.events.close()
        if infra is not None:
            infra.stop()
        for s in (session, engine_session):
            if s is not None:
                s.logout()
        if backend is BackendKind.DIRECT:
            (Path(tempfile.gettempdir()) / f"agentvm-engine-{os.getpid()}.json").unlink(missing_ok=True)
    action_log("agentvm run stopped", action="exit")
