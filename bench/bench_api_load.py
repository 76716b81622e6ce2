"""The controller's HTTP API under load: /healthz latency and the server's threads.

The server runs in this process with its default limits (``ApiServer(api)``: what ``agentvm run`` uses
without --max-streams/--max-requests), fed by an event log and fakes; the clients are raw sockets driven
by one selector (``tests.support.http_load``), so ``threading.active_count()`` counts the server's threads
only (and this script's main thread).

Scenarios: no clients; N clients each opening an event stream (``GET /api/v1/events?stream=1``, as the
dashboard does) and staying; N idle connections that never send a request. In each, PROBES /healthz
requests are made one after the other, each on a new connection (as a liveness probe does), while an
event is published every 10th probe (the streams write). Then the clients close.

Columns: 200/503/none = the clients' answers (none: closed without one); open s = seconds to connect
every client (and, for streams, read every answer's head); healthz p50/p99/max = one probe's
time, connect to last byte, in ms; threads = during the probes, 3 s after the clients closed, and the
seconds until the count was back to the one before the clients came (at most 30 s are waited: ">30").

Run: .venv/bin/python bench/bench_api_load.py [CLIENTS] [PROBES]   (default 1000 200)
"""

from __future__ import annotations

import http.client
import logging
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' raw-socket clients

from tests.support.http_load import Clients, request_bytes

from agentvm.api.server import Api, ApiServer
from agentvm.controller.events import EventLog

BACK_WITHIN = 30.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def probe(port: int) -> float:
    """One /healthz on a new connection: seconds from connect to the whole answer."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or body != b"ok\n":
            raise SystemExit(f"/healthz answered {response.status} {body!r}")
    finally:
        conn.close()
    return time.perf_counter() - started


def probes(port: int, count: int, events: EventLog) -> list[float]:
    times = []
    for n in range(count):
        if n % 10 == 0:
            events.publish("action", f"powered on agent VM contrail-vm-{n}", host=f"host-{n}")
        times.append(probe(port))
    return times


def after_close(baseline: int) -> tuple[int, float | None]:
    """The thread count 3 s after the clients closed, and the seconds until it was back to ``baseline``
    (None: not within BACK_WITHIN s)."""
    closed = time.monotonic()
    at_3s: int | None = None
    back: float | None = None
    while True:
        elapsed, count = time.monotonic() - closed, threading.active_count()
        if back is None and count <= baseline:
            back = elapsed
        if at_3s is None and elapsed >= 3.0:
            at_3s = count
        if at_3s is not None and (back is not None or elapsed > BACK_WITHIN):
            return at_3s, back
        time.sleep(0.02)


def scenario(name: str, clients: int, request: bytes | None, count: int) -> list[str]:
    events = EventLog()
    api = Api(status=lambda: {"kind": "Status"}, ready=lambda: True, metrics=str, events=events)
    with ApiServer(api, port=0) as server:
        baseline = threading.active_count()
        answers: Counter[int | None] = Counter()
        if clients == 0:
            times = probes(server.port, count, events)
            during = threading.active_count()
            after = during
            back: float | None = 0.0
            opened = 0.0
        else:
            started = time.monotonic()
            with Clients(server.port, clients, request, timeout=180) as open_clients:
                if request is not None:
                    answers.update(reply.status for reply in open_clients.replies(timeout=60))
                opened = time.monotonic() - started
                if request is None:
                    time.sleep(1.0)  # let the server take them all
                times = probes(server.port, count, events)
                during = threading.active_count()
            after, back = after_close(baseline)
        ms = [t * 1000 for t in times]
        return [
            name,
            str(answers.get(200, 0)),
            str(answers.get(503, 0)),
            str(answers.get(None, 0)),
            f"{opened:.2f}",
            f"{statistics.median(ms):.2f}",
            f"{pct(ms, 99):.2f}",
            f"{max(ms):.2f}",
            str(during - baseline),
            str(after - baseline),
            f"{back:.2f}" if back is not None else f">{BACK_WITHIN:.0f}",
        ]


def main() -> None:
    logging.getLogger("agentvm").setLevel(logging.ERROR)  # the server's "at its limit" warning
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rows = [
        scenario("no clients", 0, None, count),
        scenario(f"{clients} event streams", clients, request_bytes("/api/v1/events?stream=1"), count),
        scenario(f"{clients} idle connections", clients, None, count),
    ]
    header = [
        "scenario",
        "200",
        "503",
        "none",
        "open s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "thr during",
        "thr +3 s",
    ]
    header.append("back (s)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"/healthz x{count}, extra server threads vs before the clients (Python {sys.version.split()[0]})")
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.rjust(width) if i else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
