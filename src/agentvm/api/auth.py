"""The bearer token that guards the API's state-changing endpoints (resync, resolve).

Made by whoever starts the server (``agentvm run`` reads it from a file or the environment) and checked by
``api.server`` on every POST. The token never appears in a repr, a log line or a response.
"""

from __future__ import annotations

import hmac
from enum import Enum


class Check(Enum):
    """The outcome of checking an ``Authorization`` header."""

    OK = "ok"
    MISSING = "missing"  # no header, or not a Bearer one: 401, the client should send one
    INVALID = "invalid"  # a Bearer token that is not ours: 401 with error="invalid_token"


class BearerToken:
    """A secret compared in constant time. ValueError for an empty or whitespace-containing token."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        if not secret or any(c.isspace() for c in secret) or not secret.isprintable():
            raise ValueError(
                "the API token must be a non-empty string of printable characters without spaces "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        self._secret = secret.encode()

    def check(self, authorization: str | None) -> Check:
        """Check an ``Authorization`` header value (``Bearer <token>``; the scheme is case-insensitive)."""
        if not authorization:
            return Check.MISSING
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Check.MISSING
        # compare_digest takes time independent of where the values differ: no timing oracle
        ok = hmac.compare_digest(presented.strip().encode(), self._secret)
        return Check.OK if ok else Check.INVALID

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    __str__ = __repr__
