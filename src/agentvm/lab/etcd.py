"""The lab's etcd: Debian's ``/usr/bin/etcd`` (package etcd-server) on 127.0.0.1, for leader election.

Started by ``agentvm lab up --etcd`` (the lab runner keeps it with the other servers and stops it on
``lab down``) and by the ``etcd`` test fixture. One member, client and peer ports free on loopback, its
data under the given directory (the lab's ``.lab/etcd/``). Tests also ``pause()``/``resume()`` it (SIGSTOP
and SIGCONT: etcd alive but silent, as behind a partition), ``kill()`` it and ``restart()`` it on the same
ports and data (leases survive a restart: etcd keeps them on disk and counts their TTL afresh).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from agentvm.lab.vcsim import LabError

ETCD_ENV = "AGENTVM_ETCD"  # another etcd binary (tests of the missing-binary message)
DEFAULT_BINARY = "/usr/bin/etcd"


def etcd_binary() -> Path:
    """The etcd binary, or LabError naming the package and how to install it."""
    path = Path(os.environ.get(ETCD_ENV) or DEFAULT_BINARY)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LabError(
            f"etcd is not installed ({path} not found): install Debian's package etcd-server "
            "(`sudo apt-get install etcd-server`, which scripts/setup does)",
            2,
        )
    return path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Etcd:
    """One etcd member on 127.0.0.1: ``Etcd(data_dir).start()``; ``url`` is ``etcd://127.0.0.1:PORT``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        log_file: Path | None = None,
        detach: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.binary = etcd_binary()
        free = iter(_free_ports(2))
        self.client_port = client_port or next(free)
        self.peer_port = peer_port or next(free)
        self.log_file = log_file or data_dir.parent / f"{data_dir.name}.log"
        self._detach = detach
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The coordination setting to reach it: ``$AGENTVM_COORDINATION``."""
        return f"etcd://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 30.0) -> Etcd:
        """Start it and wait until it answers; LabError (with the last line of its log) if it does not."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            str(self.binary),
            "--name=agentvm-lab",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=agentvm-lab={peer}",
            "--initial-cluster-state=new",
            "--listen-metrics-urls=",
            "--log-level=warn",
            "--logger=zap",
        ]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=self._detach,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                lines = self.log_file.read_text(errors="replace").strip().splitlines()
                last = lines[-1] if lines else f"exit code {code}"
                raise LabError(f"etcd did not start: {last} (log: {self.log_file})")
            if self.answers():
                return
            time.sleep(0.05)
        self.kill()
        raise LabError(f"etcd did not answer within {timeout:.0f} s (log: {self.log_file})")

    def answers(self) -> bool:
        """True when etcd serves its /health as healthy."""
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            answer = conn.getresponse()
            return answer.status == 200 and b'"true"' in answer.read()
        except OSError:
            return False
        finally:
            conn.close()

    def pause(self) -> None:
        """SIGSTOP: etcd keeps its sockets but answers nothing (a partition, as its clients see it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (its data stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``); idempotent. Its data stays: ``remove()`` deletes it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused etcd cannot handle SIGTERM
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same ports and data (leases and keys survive)."""
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.data_dir)

    def __enter__(self) -> Etcd:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
