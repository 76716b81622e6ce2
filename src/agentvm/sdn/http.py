"""One place that turns HTTP answers of the SDN controller and the vRouter agents into agentvm's errors.

Used by ``agentvm.sdn.config_api`` and ``agentvm.sdn.vrouter``. 401/403 -> AuthenticationError, 404 ->
NotFoundError, 409 -> ApiConflict, other 4xx -> ConfigurationError with the server's own message; 5xx,
timeouts and connection failures -> TransientError naming the URL. Tokens never appear in messages.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)


class ApiConflict(ConfigurationError):
    """HTTP 409: the object already exists, or is still referred to (delete)."""


def server_message(response: httpx.Response) -> str:
    """The server's own words: ``{"error": ...}`` bodies (vRouter agent) or the plain text (config API)."""
    text = response.text.strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return text[:500] or response.reason_phrase


def error_for(response: httpx.Response, what: str) -> AgentvmError:
    """The agentvm error for a failed ``response`` to the request described by ``what`` (method and URL)."""
    status = response.status_code
    message = f"{what} answered {status}: {server_message(response)}"
    if status in (401, 403):
        return AuthenticationError(f"{message}; check the SDN controller token (AGENTVM_SDN_TOKEN)")
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ApiConflict(message)
    if 400 <= status < 500:
        return ConfigurationError(message)
    return TransientError(f"{message}; will retry")


def send(
    client: httpx.Client, method: str, url: str, body: Any = None, params: dict[str, str] | None = None
) -> Any:
    """Send one request and return its decoded JSON body ({} when empty). Raises as ``error_for``."""
    what = f"{method} {client.base_url.join(url)}"
    try:
        response = client.request(method, url, json=body, params=params)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what} timed out; will retry") from exc
    except httpx.TransportError as exc:
        raise TransientError(
            f"{what} failed: {type(exc).__name__}: {exc}; is the server up? will retry"
        ) from exc
    if response.status_code >= 400:
        raise error_for(response, what)
    if not response.content.strip():
        return {}
    try:
        return response.json()
    except ValueError as exc:
        raise TransientError(f"{what} answered {response.status_code} with a body that is not JSON") from exc
