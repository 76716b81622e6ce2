"""A client for one vRouter agent's port API (``http://<agent VM fabric IP>:9091``).

Used by ``agentvm.sdn.sync``. ``POST /port`` with the JSON the agent requires (see ``wire.port_body``),
``PUT /enable-port/{id}``, ``PUT /disable-port/{id}``, ``DELETE /port/{id}``, ``GET /port/{id}``. The real
agent answers a malformed port with 500 and ``{"error": "Invalid or missing field for <x>"}``; that is
our request's fault, so it is a ConfigurationError here, not a transient one.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import httpx

from agentvm.model.errors import ConfigurationError, NotFoundError, TransientError
from agentvm.model.network import VrouterPort
from agentvm.sdn import wire
from agentvm.sdn.http import send

_AGENT_VALIDATION_WORDS = ("Invalid", "missing", "Incorrect Port type")


class VrouterAgentClient:
    """One vRouter agent. ``base_url`` like ``http://10.0.0.21:9091``."""

    def __init__(
        self, base_url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers={"User-Agent": "agentvm"}
        )

    def __repr__(self) -> str:
        return f"VrouterAgentClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VrouterAgentClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: wire.Json | None = None) -> wire.Json:
        try:
            answer = send(self._http, method, path, body)
        except TransientError as exc:
            if any(word in str(exc) for word in _AGENT_VALIDATION_WORDS):
                raise ConfigurationError(str(exc).removesuffix("; will retry")) from exc
            raise
        return answer if isinstance(answer, dict) else {}

    def add_port(self, port: VrouterPort) -> None:
        """``POST /port``: add (or replace) the port. The agent adds a remote port disabled."""
        self._call("POST", "/port", wire.port_body(port))

    def enable_port(self, port_id: str) -> None:
        """``PUT /enable-port/{id}``. NotFoundError / ConfigurationError when the agent has no such port."""
        self._call("PUT", f"/enable-port/{port_id}")

    def disable_port(self, port_id: str) -> None:
        self._call("PUT", f"/disable-port/{port_id}")

    def delete_port(self, port_id: str) -> None:
        """``DELETE /port/{id}``; deleting a port the agent does not have is not an error."""
        with contextlib.suppress(NotFoundError):
            self._call("DELETE", f"/port/{port_id}")

    def get_port(self, port_id: str) -> VrouterPort | None:
        """``GET /port/{id}``; None when the agent has no such port."""
        try:
            body = self._call("GET", f"/port/{port_id}")
        except NotFoundError:
            return None
        return wire.decode_port(body)
