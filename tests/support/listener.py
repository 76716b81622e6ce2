"""A TCP listener standing in for a vCenter that must not be contacted: it counts the connections made.

Also the minimal spec the CLI tests vary (``BASE``) and the source directory a child process imports.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


BASE = """\
solution:
  key: org.example.t
  version: "1.0"
agencies:
  - name: contrail
    agentName: contrail-vm
    ovf: http://127.0.0.1:9/c.ovf
    scope: [/DC0/host/DC0_C0]
    ovfProperties: {dns: 10.0.0.2}
    ipPlan:
      cidr: 10.10.0.0/24
      gateway: 10.10.0.1
    perHost: {fabricIp: "{ip}"}
"""


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1, port 0, that counts the connections made to it and closes them."""

    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    accepted: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}/sdk"

    def serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, BlockingIOError):  # BlockingIOError: ``connections()`` is draining
                continue
            self.accepted += 1
            conn.close()

    def connections(self) -> int:
        """Every connection so far: those accepted, plus any still waiting in the backlog."""
        self.sock.setblocking(False)
        try:
            while True:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.05)
        return self.accepted
