"""How to reach vCenter: the connection settings shared by the spec, the CLI and the vSphere adapter."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class VCenterConnection:
    """Where vCenter is and how to log in.

    TLS is verified by default: against ``ca_file`` if given, else the system trust store; ``thumbprint``
    (SHA-1 or SHA-256, with or without colons) pins the server certificate instead; ``insecure`` turns
    checking off and must be chosen explicitly. Login is by user and password, or — when ``extension_key``
    and ``cert_file``/``key_file`` are set — as that extension with its certificate.
    """

    url: str  # https://vcenter.example.com/sdk or just the host name
    username: str | None = None
    password: Secret | None = None
    thumbprint: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    extension_key: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self._full_url()).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self._full_url())
        return parts.port or (80 if parts.scheme == "http" else 443)

    @property
    def scheme(self) -> str:
        return urlsplit(self._full_url()).scheme

    @property
    def path(self) -> str:
        return urlsplit(self._full_url()).path or "/sdk"

    @property
    def has_port(self) -> bool:
        """Whether the URL names its port (else 443, or 80 for http://)."""
        try:
            return urlsplit(self._full_url()).port is not None
        except ValueError:
            return False

    @property
    def by_certificate(self) -> bool:
        return bool(self.extension_key and self.cert_file)

    def _full_url(self) -> str:
        # as govc: a URL without a scheme is https://, and /sdk is added only when it has no path
        if "://" in self.url:
            return self.url
        full = f"https://{self.url}"
        return full if urlsplit(full).path else f"{full}/sdk"
