"""Package servers that fail the way real ones do, for tests of failed deploys.

``cut_off_server()`` serves the examples like the lab's package server, but every disk (``.vmdk``) stops after
half of the bytes it announces: the import then fails half-way, after ImportVApp created the VM.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentvm.lab.packages import examples_dir


class _CutOffHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.endswith(".vmdk"):
            super().do_GET()
            return
        data = (examples_dir() / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def cut_off_server() -> Iterator[str]:
    """The base URL of a package server whose disk downloads stop half-way (127.0.0.1, any free port)."""
    handler = functools.partial(_CutOffHandler, directory=str(examples_dir()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="cut-off-packages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
