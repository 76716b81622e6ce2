"""TLS for vCenter connections: the SSL context, thumbprint pinning, and the connection class that checks it.

Used by ``Session`` only. Verification is on by default (``ca_file`` or the system store). A pinned
thumbprint (SHA-1 or SHA-256) replaces chain verification: the server certificate's digest is compared on
*every* new TLS connection, right after the handshake and before any byte of a request (so before any
password) is sent. ``insecure`` turns all checks off and must be asked for.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from collections.abc import Callable
from typing import Any

from agentvm.model.connection import VCenterConnection
from agentvm.model.errors import ConfigurationError

_DIGESTS = {40: "sha1", 64: "sha256"}


def normalize_thumbprint(text: str) -> str:
    """``"aa:bb:..."`` / ``"AABB..."`` → ``"AA:BB:..."``. Raises ConfigurationError if it is not SHA-1/256."""
    hexdigits = text.replace(":", "").replace(" ", "").strip().upper()
    if len(hexdigits) not in _DIGESTS or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise ConfigurationError(
            f"thumbprint {text[:20]!r}... is not a SHA-1 (20 bytes) or SHA-256 (32 bytes) hex digest; "
            "give it as AA:BB:... (e.g. from `openssl x509 -fingerprint -sha256`)"
        )
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def thumbprint_of(der: bytes, like: str) -> str:
    """The thumbprint of a DER certificate, with the same digest as ``like`` (a normalized thumbprint)."""
    algo = _DIGESTS[len(like.replace(":", ""))]
    digest = hashlib.new(algo, der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class ThumbprintMismatch(ssl.SSLError):
    """The server presented a certificate whose digest is not the pinned one."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"certificate thumbprint {actual} is not the pinned {expected}")
        self.expected = expected
        self.actual = actual


def ssl_context(conn: VCenterConnection) -> ssl.SSLContext:
    """The client SSL context for ``conn``: verifying unless pinned or insecure; with the client certificate.

    Raises ConfigurationError when the CA file or the certificate/key cannot be loaded.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if conn.insecure or conn.thumbprint:
        # pinning replaces chain checks: PinnedHTTPSConnection compares the digest after the handshake
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif conn.ca_file:
        try:
            ctx.load_verify_locations(cafile=conn.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the CA file {conn.ca_file}: {exc}; "
                "give a PEM file with the CA that signed vCenter's certificate"
            ) from exc
    if conn.cert_file:
        try:
            ctx.load_cert_chain(conn.cert_file, conn.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the client certificate {conn.cert_file} / key {conn.key_file}: {exc}; "
                "give a PEM certificate and its unencrypted PEM key"
            ) from exc
    return ctx


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that refuses a server whose certificate is not the pinned one.

    ``pinned`` is a normalized thumbprint (or None: plain verification by the context). The check runs in
    ``connect()``, so a mismatch stops the request before its body, and any credential in it, is sent.
    """

    pinned: str | None = None

    def __init__(self, *args: Any, pinned: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned = pinned

    def connect(self) -> None:
        super().connect()
        if self.pinned:
            der = self.sock.getpeercert(binary_form=True) if isinstance(self.sock, ssl.SSLSocket) else None
            actual = thumbprint_of(der or b"", self.pinned) if der else "(no certificate)"
            if actual != self.pinned:
                self.close()
                raise ThumbprintMismatch(self.pinned, actual)


def connection_factory(pinned: str | None) -> Callable[..., PinnedHTTPSConnection]:
    """A drop-in for pyVmomi's ``stub.scheme``: builds PinnedHTTPSConnection with ``pinned`` bound."""

    def make(*args: Any, **kwargs: Any) -> PinnedHTTPSConnection:
        return PinnedHTTPSConnection(*args, pinned=pinned, **kwargs)

    return make
