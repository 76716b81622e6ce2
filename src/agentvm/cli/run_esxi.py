"""``agentvm run -f SPEC`` of a spec with standalone ESXi hosts (``esxi:``): one controller per host.

Called by ``cli.run`` when the spec lists ``esxi:`` hosts (one ``-f`` only; not with ``--coordination`` or
``--netsync``; the backend is always the direct engine: a host has no EAM). Per host, as ``run --backend
direct`` on a vCenter: its own session, the solution's lease on the host (taken as ``apply`` takes it,
held for the run's life, renewed by a ``Keeper``), the direct engine (its own state file under
``--state-dir``) and a ``controller.run.Controller`` on the host's own spec; the hosts are served
concurrently by ``controller.standalone.HostRunner`` threads, and opened at most ``--hosts-at-once`` at a
time.

- **Start.** Every host is logged in to and observed first (``cli.esxi.Fleet``), so that the fleet's IP
  plan (``core.standalone.fleet_addresses``) keeps the addresses the agents carry; each host's address is
  pinned in its spec and written before its agent's first power-on. A wrong password, an unknown
  thumbprint, an unusable state file or a lease held by another live agentvm on any host stops ``run``
  with one line naming the host (exit 4, 2 or 3; nothing acted anywhere). A host that cannot be reached
  at start is reported and retried, the others served meanwhile.
- **Reconnect.** A host lost later (stopped, restarted: ``controller.standalone``) is closed, reported
  (status, one ``host`` event, ``agentvm_host_connected{host}`` 0) and opened again with backoff: a new
  session, the engine reloaded from its state file and the VMs' marks, its agent checked and healed.
- **API.** ``/api/v1/status`` is a Status document with the hosts under ``standalone`` (unreachable ones
  with the reason), ``/metrics`` labels every host's series with ``host``; SIGTERM/SIGINT stop every
  host (leases released, sessions logged out) and exit 0.
"""

from __future__ import annotations

import functools
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType

from agentvm.api.auth import BearerToken
from agentvm.api.server import Api, ApiServer, Limits
from agentvm.cli import exitcodes
from agentvm.cli.esxi import Fleet, HostError, Member, _named, _one_error, _password, where
from agentvm.controller.events import EventLog
from agentvm.controller.lease import Keeper, Lease, LeaseHeldError
from agentvm.controller.logs import action_log
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.run import Controller, Settings
from agentvm.controller.standalone import HostParts, HostRunner, Standalone
from agentvm.core.lease import Judgement
from agentvm.core.standalone import fleet_addresses, host_spec
from agentvm.model.desired import DesiredState, StandaloneHostSpec
from agentvm.model.errors import AgentvmError, TransientError
from agentvm.model.lease import LeaseHolder


@dataclass(frozen=True)
class RunOptions:
    """What ``agentvm run``'s flags say for the standalone hosts."""

    settings: Settings
    ttl: float
    state_dir: Path
    call_timeout: float
    at_once: int


Seen = tuple[str, str, dict[str, IPv4Address]]  # moid, compute resource path, agency -> address


class _Hosts:
    """Opens the standalone hosts of one run: the first round together, later ones one by one."""

    def __init__(self, desired: DesiredState, options: RunOptions, events: EventLog) -> None:
        self.desired = desired
        self.options = options
        self.events = events
        self.fleet = Fleet(desired, options.state_dir, options.at_once)
        self.addresses: dict[str, dict[str, IPv4Address]] = {}  # esxi name -> agency -> its address

    def connect(self, host: StandaloneHostSpec) -> tuple[Member, Seen]:
        member = self.fleet._connect(host, self.options.call_timeout)
        try:
            return member, self.fleet.observe_member(member)
        except BaseException:
            member.close()
            raise

    def plan_addresses(self, seen: dict[str, Seen]) -> None:
        """The fleet's IP plan from what the reachable hosts' agents carry (unreachable ones: planned too)."""
        previous: dict[str, dict[str, IPv4Address]] = {}
        for name, (_, _, found) in seen.items():
            for agency_name, address in found.items():
                previous.setdefault(agency_name, {})[name] = address
        for agency in self.desired.agencies:
            for name, held in fleet_addresses(agency, previous.get(agency.name)).items():
                self.addresses.setdefault(name, {})[agency.name] = held.address

    def finish(
        self, member: Member, seen: Seen, metrics: ControllerMetrics, stop: threading.Event
    ) -> HostParts:
        """``member`` with its lease (refused when another live agentvm holds it) and its controller."""
        host = member.host
        lease = Lease(member.session, self.desired.solution.key, "run", ttl=self.options.ttl)

        def alive(verdict: Judgement) -> bool:
            return verdict.alive

        def waiting(verdict: Judgement) -> None:
            holder = getattr(verdict, "holder", None)
            if isinstance(holder, LeaseHolder):
                action_log(
                    f"{where(host)}: {lease.where} is held by {holder.describe()}; "
                    "checking whether it is alive",
                    action="lease-wait",
                )

        try:
            lease.acquire(wait=None, give_up=alive, stop=stop, on_wait=waiting)
            keeper = Keeper(lease).start()
        except LeaseHeldError as exc:  # another agentvm acts on this host: not an unreachable host
            member.close()
            raise HostError(str(exc), exitcodes.UNREACHABLE) from None
        except BaseException:
            member.close()
            raise
        action_log(
            f"{where(host)}: holding {lease.where} (generation {lease.generation}, TTL {lease.ttl:g} s)"
            + (f" after waiting {lease.acquired_after:.1f} s" if lease.acquired_after else ""),
            action="lease",
        )
        moid, scope, _ = seen
        spec = host_spec(
            self.desired, host.name, addresses=self.addresses.get(host.name), host_moid=moid, scope=scope
        )
        controller = Controller(
            spec,
            member.session,
            backend=member.engine.backend,
            settings=self.options.settings,
            events=self.events,
            metrics=metrics,
            lease=lease,
            state_dir=self.options.state_dir,
        )
        keeper.on_lost = controller.lease_trouble
        action_log(f"{where(host)}: engine state in {member.engine.state_file}", action="state")
        return HostParts(member.session, lease, keeper, _Engine(member), controller)

    def opener(self, host: StandaloneHostSpec) -> Callable[[ControllerMetrics, threading.Event], HostParts]:
        def open_host(metrics: ControllerMetrics, stop: threading.Event) -> HostParts:
            try:
                member, seen = self.connect(host)
                return self.finish(member, seen, metrics, stop)
            except Exception as exc:
                raise _named(host, exc) from None

        return open_host


@dataclass
class _Engine:
    """A member's engine as ``HostParts`` closes it (its session is closed by the parts)."""

    member: Member

    def close(self) -> None:
        self.member.engine.close()


def run_standalone(
    desired: DesiredState,
    options: RunOptions,
    *,
    listener: socket.socket,
    host: str,
    port: int,
    token: BearerToken | None,
    limits: Limits,
) -> None:
    """``agentvm run`` of ``desired`` (with ``esxi:``) until SIGTERM/SIGINT (see the module docstring)."""
    events = EventLog()
    hosts = [_password(h) for h in desired.esxi]
    for h in hosts:
        if h.connection.password is not None:
            events.add_secret(h.connection.password.reveal())
    opening = _Hosts(desired, options, events)
    first = opening.fleet.each_host(hosts, opening.connect)
    refused = [d.error for d in first if d.error is not None and not _retried(d.error)]
    connected = {d.host.name: d.value for d in first if d.value is not None}
    try:
        if refused:
            raise _one_error(refused)
        opening.plan_addresses({name: seen for name, (_, seen) in connected.items()})
        metrics = {h.name: ControllerMetrics(agencies=[a.name for a in desired.agencies]) for h in hosts}
        stop = threading.Event()
        parts = opening.fleet.each_host(
            [h for h in hosts if h.name in connected],
            lambda h: opening.finish(*connected[h.name], metrics[h.name], stop),
        )
    except BaseException:
        for member, _ in connected.values():
            member.close()
        raise
    opened = {d.host.name: d.value for d in parts if d.value is not None}
    failed = [d for d in parts if d.error is not None]
    held = [d.error for d in failed if d.error is not None and not _retried(d.error)]
    if held:
        for p in opened.values():
            p.close()
        raise _one_error(held)
    reasons = {d.host.name: str(d.error) for d in first if d.error is not None}
    reasons |= {d.host.name: str(d.error) for d in failed if d.error is not None}
    runners = [
        HostRunner(
            h.name,
            h.connection.url,
            opening.opener(h),
            events=events,
            metrics=metrics[h.name],
            retry_max=options.settings.retry_max,
            parts=opened.get(h.name),
            reason=reasons.get(h.name),
            explain=functools.partial(_named, h),
        )
        for h in hosts
    ]
    for name, reason in reasons.items():
        action_log(f"{reason}; retrying", action="host-down")
        events.publish("host", f"{reason}; retrying", level="error", host=name)
    fleet = Standalone(runners, events, desired.solution.key)
    api = Api(**fleet.api_callables(), token=token)
    server = ApiServer(api, host=host, port=port, limits=limits, listener=listener)
    _serve(fleet, server)
    events.close()
    action_log("agentvm run stopped", action="exit")


def _retried(error: AgentvmError) -> bool:
    """An error a host is retried for (it cannot be reached now), rather than one that stops ``run``."""
    return isinstance(error, TransientError)


def _serve(fleet: Standalone, server: ApiServer) -> None:
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ = (signum, frame)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        action_log(f"API listening on {server.url}", action="listen")
        fleet.start()
        while not stop_requested.wait(0.2):
            pass
        fleet.stop(timeout=60.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop(timeout=2.0)
