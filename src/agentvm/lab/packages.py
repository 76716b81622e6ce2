"""The lab's package server: serves the agent packages under ``examples/`` over HTTP on loopback.

EAM (and agentvm's engine) download agent OVFs from a URL, so the lab needs a web server for them;
``AGENTVM_LAB_OVF_URL`` is its base URL. Read-only, quiet, 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def examples_dir() -> Path:
    """The agent packages: inside the installed package, else the source checkout's ``examples/``."""
    packaged = Path(__file__).parent / "examples"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "examples"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:  # read-only
        self.send_error(405)

    do_POST = do_DELETE = do_PUT


class PackageServer:
    """``PackageServer(root).start()`` serves ``root`` at ``.url`` until ``stop()``."""

    def __init__(self, root: Path | None = None, port: int = 0) -> None:
        self.root = root or examples_dir()
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lab-packages", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PackageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
