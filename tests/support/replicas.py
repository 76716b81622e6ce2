"""``agentvm run`` replicas as processes on the lab, and what the lab's EAM saw them do.

``RunProcess``: one ``python -m agentvm.cli.main run`` child with JSON logs (its API address read from the
``listen`` line). ``EamCalls``: every SOAP call the lab's EAM answered, with its ``operationID`` (each
``agentvm run`` process's opIds carry its own random prefix, so the calls of two replicas are told apart)
and when it started and ended, recorded inside the lab (which runs in the test process). The opId travels
in the SOAP header.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import agentvm
from agentvm.lab.eam_emulator import server as eam_server
from agentvm.lab.world import LabInfo

WRITES = frozenset({"MarkAsAvailable", "Resolve", "ResolveAll", "CreateAgency", "Update", "DestroyAgency"})


def spec_for(info: LabInfo, path: Path, text: str, password_env: str) -> Path:
    """``text`` (examples/contrail.yaml's shape) with the lab's connection written in, its password read
    from ``password_env``: specs of two labs in one process cannot share the AGENTVM_* variables."""
    text = text.replace("${AGENTVM_URL}", info.vcsim.url)
    text = text.replace("${AGENTVM_USERNAME}", info.vcsim.username)
    text = text.replace("passwordEnv: AGENTVM_PASSWORD", f"passwordEnv: {password_env}")
    text = text.replace("${AGENTVM_THUMBPRINT}", info.vcsim.thumbprint)
    text = text.replace("${AGENTVM_LAB_OVF_URL}", info.ovf_url)
    path.write_text(text)
    return path


class RunProcess:
    """One ``agentvm run`` child; its JSON log lines collected by a reader thread."""

    @staticmethod
    def base_env() -> dict[str, str]:
        """What every agentvm child gets: the agentvm under test, the test's state dir (never ~)."""
        return {
            "AGENTVM_API_TOKEN": "test-token-123",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(agentvm.__file__).resolve().parents[1]),
            "AGENTVM_STATE_DIR": os.environ["AGENTVM_STATE_DIR"],
        }

    def __init__(self, env: Mapping[str, str], *args: str, wait_listen: bool = True) -> None:
        full = {**env, **self.base_env()}
        argv = ["run", *args, "--listen", "127.0.0.1:0", "--log-format", "json"]
        argv += ["--poll", "0.2", "--idle-poll", "0.5", "--resync", "2"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentvm.cli.main", *argv],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = ""
        if wait_listen:
            listening = self.wait_line(lambda r: r.get("action") == "listen", 90)
            self.url = str(listening["message"]).rsplit(" ", 1)[-1]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))

    def wait_line(self, match: Callable[[dict[str, object]], bool], timeout: float) -> dict[str, object]:
        for record in self.seen:
            if match(record):
                return record
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(record)
            if match(record):
                return record
        raise AssertionError(f"no such log line within {timeout} s; stderr:\n{''.join(self.raw[-40:])}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10)

    def status(self) -> dict[str, Any]:
        response = self.get("/api/v1/status")
        return dict(response.json()) if response.status_code == 200 else {}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None: no such sample)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


@dataclass(frozen=True)
class EamCall:
    """One SOAP call the lab's EAM answered: its method, operationID and when (perf_counter) it ran."""

    method: str
    op_id: str
    started: float
    ended: float

    @property
    def process(self) -> str:
        """The opId prefix naming the calling session (``agentvm-run-<hex>``, ``agentvm-solution-<hex>``)."""
        parts = self.op_id.split("-")
        return "-".join(parts[:3])


class EamCalls:
    """Every call the lab's EAM answers while installed (``record`` patches its HTTP handler)."""

    def __init__(self) -> None:
        self.calls: list[EamCall] = []
        self._lock = threading.Lock()

    def writes(self) -> list[EamCall]:
        with self._lock:
            return [c for c in self.calls if c.method in WRITES]

    def overlapping(self) -> list[tuple[EamCall, EamCall]]:
        """Pairs of writes from two different sessions' processes that ran at the same time."""
        writes = sorted(self.writes(), key=lambda c: c.started)
        pairs = []
        for i, a in enumerate(writes):
            for b in writes[i + 1 :]:
                if b.started > a.ended:
                    break
                if a.process != b.process:
                    pairs.append((a, b))
        return pairs


@contextlib.contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[EamCalls]:
    """Record every call of every lab EAM in this process (the handler class is shared)."""
    calls = EamCalls()
    answer = eam_server._Handler._answer

    def recorded(self: Any, body: bytes, version: str) -> tuple[int, bytes]:
        started = time.perf_counter()
        result: tuple[int, bytes] = answer(self, body, version)
        ended = time.perf_counter()
        method = _method(body)
        with calls._lock:
            calls.calls.append(EamCall(method, _op_id(body), started, ended))
        return result

    monkeypatch.setattr(eam_server._Handler, "_answer", recorded)
    yield calls


def _op_id(body: bytes) -> str:
    """The ``operationID`` pyVmomi puts in the SOAP header (its request context)."""
    text = body.decode("utf-8", "replace")
    tag = text.find("<operationID")
    if tag < 0:
        return ""
    start = text.find(">", tag) + 1
    return text[start : text.find("<", start)]


def _method(body: bytes) -> str:
    """The SOAP method of a request body: the first element inside soapenv:Body."""
    text = body.decode("utf-8", "replace")
    at = text.find("Body>")
    if at < 0:
        return "?"
    start = text.find("<", at + 5)
    end = min(i for i in (text.find(" ", start), text.find(">", start), len(text)) if i >= 0)
    name = text[start + 1 : end]
    return name.rsplit(":", 1)[-1]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy (network errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
