"""Many HTTP clients on raw sockets, driven by one selector: no thread per client.

Used by the API's load tests, which count the server's threads with ``threading.active_count()`` in the
same process: a client thread would be counted too. Every wait is bounded.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Reply:
    """What one client read: the status code and headers of the response (None: the server sent none)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # what came after the head, up to the moment it was parsed
    closed: bool = False  # the server closed the connection (EOF or reset) before or after replying


def request_bytes(path: str, headers: dict[str, str] | None = None, method: str = "GET") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Clients:
    """``n`` connections to 127.0.0.1:``port``, each sending ``request`` as soon as it is connected (as a
    real client does) unless it is None; ``send`` sends on each, ``replies`` reads their heads."""

    def __init__(self, port: int, n: int, request: bytes | None = None, *, timeout: float = 30.0) -> None:
        self.socks: list[socket.socket] = []
        deadline = time.monotonic() + timeout
        try:
            for _ in range(n):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"connected {len(self.socks)} of {n} clients in {timeout} s")
                self.socks.append(socket.create_connection(("127.0.0.1", port), timeout=remaining))
                if request is not None:
                    self.socks[-1].sendall(request)
        except BaseException:
            self.close()
            raise

    def send(self, data: bytes) -> None:
        for sock in self.socks:
            sock.sendall(data)

    def replies(self, *, timeout: float = 30.0) -> list[Reply]:
        """Read each connection until its response head is complete or the server closes it."""
        replies = [Reply() for _ in self.socks]
        buffers = [bytearray() for _ in self.socks]
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(self.socks):
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, index)
            deadline = time.monotonic() + timeout
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(selector.get_map())} clients got no reply in {timeout} s")
                for key, _ in selector.select(remaining):
                    index = key.data
                    try:
                        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        buffers[index] += chunk
                        if b"\r\n\r\n" not in buffers[index]:
                            continue
                    else:
                        replies[index].closed = True
                    _parse(bytes(buffers[index]), replies[index])
                    selector.unregister(key.fileobj)
        for sock in self.socks:
            sock.setblocking(True)
        return replies

    def closed_by_server(self, *, timeout: float, until: int | None = None) -> int:
        """How many connections the server closed (EOF or reset), reading any data: waits until all of
        them (or ``until``) are closed, at most ``timeout`` s."""
        closed = 0
        wanted = len(self.socks) if until is None else until
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while closed < wanted and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    try:
                        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        closed += 1
                        selector.unregister(key.fileobj)
        return closed

    def read_until(self, marker: bytes, which: list[int], *, timeout: float) -> int:
        """Read the connections numbered ``which`` until each has sent ``marker``, at most ``timeout`` s;
        how many did."""
        seen = {index: bytearray() for index in which}
        done = 0
        with selectors.DefaultSelector() as selector:
            for index in which:
                self.socks[index].setblocking(False)
                selector.register(self.socks[index], selectors.EVENT_READ, index)
            deadline = time.monotonic() + timeout
            while selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    try:
                        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    seen[key.data] += chunk
                    if marker in seen[key.data]:
                        done += 1
                    if not chunk or marker in seen[key.data]:
                        selector.unregister(key.fileobj)
        return done

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(raw: bytes, reply: Reply) -> None:
    head, _, reply.body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        reply.status = int(parts[1])
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            reply.headers[name.strip().lower()] = value.strip()
