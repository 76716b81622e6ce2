"""``agentvm run`` of a spec with standalone ESXi hosts (``esxi:``): one controller per host, kept connected.

Built by ``cli.run_esxi``. Each standalone host is a small vCenter of one host (no extension, no AgentVM
settings, no EAM), so each gets what ``run --backend direct`` gives a vCenter: its own ``Session``
(``host_agent``), the solution's lease on the host (``controller.lease``: its records on the host's
datastore, renewed by a ``Keeper``), the direct engine on the host (its own state file) and a
``controller.run.Controller`` on the host's own spec (``core.standalone.host_spec``, its address pinned
from the fleet's IP plan), which drives the engine with ``tick``/``wait_for_work``.

A ``HostRunner`` keeps one host's parts (``HostParts``, opened by the CLI's ``open`` callable) for the
life of the run, on a thread of its own, so the hosts are served independently: a host that cannot be
reached, whose passes fail for want of it (``Controller.disconnected``) or whose lease went (a restarted
host comes back with an empty datastore: its lease record is gone) is closed (the controller stopped, the
lease released when it can be, the engine and session closed), reported (``state`` ``unreachable`` and
``reason``, one ``host`` event, ``agentvm_host_connected{host}`` 0) and opened again with jittered, capped
backoff (``core.retry.reconnect_backoff``). Once open again, a new session, the engine reloaded from its
state file and the VMs' marks, and a first full pass check the host's agent and heal it.

``Standalone`` is the API over the runners (``api_callables``): the Status document's ``standalone`` list
(each host with its agencies, or ``reachable`` false and the reason), ``/readyz`` (ready when every host
is), ``/metrics`` (each host's controller series with a ``host`` label, plus
``agentvm_host_connected{host}``), resync and resolve forwarded to every connected host.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agentvm.controller.events import EventLog
from agentvm.controller.lease import Keeper, Lease
from agentvm.controller.logs import action_log
from agentvm.controller.metrics import ControllerMetrics, Registry, merge_expositions
from agentvm.controller.run import Controller
from agentvm.core.retry import Retries, reconnect_backoff
from agentvm.model.errors import AgentvmError, TransientError
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

JsonObject = Mapping[str, object]


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class HostParts:
    """One standalone host, open: its session, lease (held, renewed by ``keeper``), engine and controller
    (built, not started)."""

    session: Session
    lease: Lease
    keeper: Keeper
    engine: Closeable
    controller: Controller

    def close(self) -> None:
        """Stop the controller, release the lease (when the host answers), close the engine and session.
        Never raises."""
        with contextlib.suppress(Exception):
            self.controller.stop(timeout=10.0)
        with contextlib.suppress(Exception):
            self.keeper.stop()
        with contextlib.suppress(Exception):
            self.lease.release()
        with contextlib.suppress(Exception):
            self.engine.close()
        with contextlib.suppress(Exception):
            self.session.logout()


Opener = Callable[[ControllerMetrics, threading.Event], HostParts]


class HostRunner:
    """One standalone host for the life of ``agentvm run``: ``start()``, ``stop()``; see the module
    docstring. ``open(metrics, stop)`` opens the host's parts (raising an agentvm error naming the host
    when it cannot); ``parts``: already opened by the CLI's first round, used first."""

    def __init__(
        self,
        name: str,
        url: str,
        open: Opener,
        *,
        events: EventLog,
        metrics: ControllerMetrics,
        retry_max: float = 10.0,
        parts: HostParts | None = None,
        reason: str | None = None,
        explain: Callable[[Exception], Exception] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._open = open
        self.events = events
        self.metrics = metrics
        self._retries: Retries[str] = Retries(reconnect_backoff(retry_max), secrets.randbits(32))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._parts = parts
        self._explain = explain
        self.state = "connecting" if reason is None else "unreachable"
        self.reason: str | None = reason
        self.connects = 0  # times the host was opened (the first included)
        self.outages = 0  # times it was found unreachable or lost
        self._thread: threading.Thread | None = None

    @property
    def controller(self) -> Controller | None:
        parts = self._parts
        return parts.controller if parts is not None else None

    def start(self) -> HostRunner:
        self._thread = threading.Thread(target=self._run, name=f"agentvm-host-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the runner to end (safe from a signal handler); with ``timeout``, wait for it."""
        self._stop.set()
        parts = self._parts
        if parts is not None:
            parts.controller.stop(timeout=0)
        thread = self._thread
        if timeout and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True while the runner still runs."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout)
        return thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                parts = self._parts
                if parts is None:
                    try:
                        parts = self._open(self.metrics, self._stop)
                    except Exception as exc:  # reported, retried: the other hosts go on meanwhile
                        self._down(exc)
                        continue
                    with self._lock:
                        self._parts = parts
                if self._stop.is_set():
                    break
                self.connects += 1
                self._retries.succeeded("open")
                parts.controller.start()
                why = self._serve(parts)
                with self._lock:
                    self._parts = None
                parts.close()
                if why is not None and not self._stop.is_set():
                    self._down(why)
        finally:
            parts = self._parts
            self._parts = None
            if parts is not None:
                parts.close()
            self.metrics.vcenter_connected.set(0)

    def _serve(self, parts: HostParts) -> str | Exception | None:
        """Until stopped (None), or the host lost: why."""
        controller = parts.controller
        was = self.state
        while not self._stop.is_set():
            if not controller.join(0.2):  # it stopped by itself: its lease went
                return f"lost its lease on the host: {controller.lease_lost or 'the controller stopped'}"
            if controller.disconnected:
                return TransientError(controller.outage or "the host cannot be reached")
            lease = parts.lease
            if lease.lost is None and not lease.valid():  # the passes stopped: no right to act without it
                why = lease.renew_error or "it could not be renewed in time"
                return TransientError(f"its lease could not be renewed: {why}")
            if controller.ready() and self.state != "connected":
                self.state, self.reason = "connected", None
                if was == "unreachable":
                    text = f"{self.name} ({self.url}): reconnected; its agents checked (full pass done)"
                    action_log(text, action="reconnected")
                    self.events.publish("host", text, host=self.name, host_name=self.url)
        return None

    def _down(self, why: str | Exception) -> None:
        """Report the host lost (once per reason), wait its backoff."""
        if isinstance(why, Exception) and self._explain is not None and not str(why).startswith(self.name):
            why = self._explain(why)
        text = str(why) if isinstance(why, AgentvmError | str) else f"unexpected {type(why).__name__}: {why}"
        if not text.startswith(self.name):
            text = f"{self.name} ({self.url}): {text}"
        self.outages += 1
        delay = self._retries.failed("open", time.monotonic())
        first = self.state != "unreachable" or self.reason != text
        self.state, self.reason = "unreachable", text
        self.metrics.vcenter_connected.set(0)
        if first:
            action_log(f"{text}; retrying", action="host-down", level=logging.ERROR)
            self.events.publish(
                "host", f"{text}; retrying", level="error", host=self.name, host_name=self.url
            )
        self._stop.wait(delay)

    # -- what the API shows -----------------------------------------------------------------------------

    def status_entry(self) -> dict[str, Any]:
        """The host's entry of the Status document's ``standalone`` list."""
        entry: dict[str, Any] = {"name": self.name, "url": self.url}
        controller = self.controller
        if self.state == "connected" and controller is not None:
            try:
                doc = controller.status()
            except AgentvmError as exc:
                return entry | {
                    "reachable": False,
                    "error": f"{self.name}: {exc}",
                    "agencies": [],
                    "missing": [],
                }
            return entry | {
                "reachable": True,
                "error": None,
                "agencies": doc["agencies"],
                "missing": doc["missing"],
            }
        why = self.reason or f"{self.name} ({self.url}): connecting; its first full pass is not done yet"
        return entry | {"reachable": False, "error": why, "agencies": [], "missing": []}

    def ready(self) -> tuple[bool, str | None]:
        controller = self.controller
        if self.state == "connected" and controller is not None and controller.ready():
            return True, None
        return False, self.reason or "connecting: its first full pass is not done yet"


class Standalone:
    """Every standalone host of one ``agentvm run`` and the API over them (``api_callables``)."""

    def __init__(self, runners: Sequence[HostRunner], events: EventLog, solution: str) -> None:
        self.runners = tuple(runners)
        self.events = events
        self.solution = solution
        self.registry = Registry()
        self.connected = self.registry.gauge(
            "agentvm_host_connected",
            "1 while agentvm run serves the standalone ESXi host (connected, its passes succeed), else 0.",
            ("host",),
        )

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def stop(self, timeout: float = 30.0) -> None:
        for runner in self.runners:
            runner.stop(timeout=0)
        deadline = time.monotonic() + timeout
        for runner in self.runners:
            runner.stop(timeout=max(0.1, deadline - time.monotonic()))

    def status(self) -> JsonObject:
        now = datetime.now(UTC)
        return {
            "apiVersion": "agentvm/v1",
            "kind": "Status",
            "vcenter": "",
            "generatedAt": now.isoformat(),
            "agencies": [],
            "missing": [],
            "solution": self.solution,
            "standalone": [r.status_entry() for r in self.runners],
        }

    def ready(self) -> bool:
        return all(r.ready()[0] for r in self.runners)

    def readiness(self) -> dict[str, object]:
        items = []
        for r in self.runners:
            ok, why = r.ready()
            items.append({"host": r.name, "url": r.url, "state": r.state, "ready": ok, "why": why})
        return {"ready": all(i["ready"] for i in items), "hosts": items}

    def metrics_text(self) -> str:
        for r in self.runners:
            self.connected.set(1 if r.ready()[0] else 0, host=r.name)
        parts = [({"host": r.name}, r.metrics.render()) for r in self.runners]
        return merge_expositions(parts) + self.registry.render()

    def _connected(self, body: JsonObject) -> list[Controller]:
        name = body.get("host")
        chosen = [r for r in self.runners if name is None or r.name == name]
        controllers = [c for r in chosen if r.state == "connected" and (c := r.controller) is not None]
        if not controllers:
            what = f"host {name}" if name is not None else "any standalone host"
            raise TransientError(f"agentvm run is not connected to {what} now; retry once it is (see status)")
        return controllers

    def resync(self, body: JsonObject) -> JsonObject | None:
        rest = {k: v for k, v in body.items() if k != "host"}
        for controller in self._connected(body):
            controller.resync(rest)
        return None

    def resolve(self, body: JsonObject) -> JsonObject:
        rest = {k: v for k, v in body.items() if k != "host"}
        results = []
        for r in self.runners:
            controller = r.controller
            if r.state == "connected" and controller is not None and body.get("host") in (None, r.name):
                results.append({"solution": self.solution, "vcenter": r.url, **controller.resolve(rest)})
        if not results:
            self._connected(body)  # raises, naming what is not connected
        return {"apiVersion": "agentvm/v1", "kind": "ResolveList", "results": results}

    def api_callables(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ready": self.ready,
            "readiness": self.readiness,
            "metrics": self.metrics_text,
            "events": self.events,
            "resync": self.resync,
            "resolve": self.resolve,
        }
