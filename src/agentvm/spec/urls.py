"""URL checks shared by ``vcenter.url``, ``agencies[].ovf.url`` and the CLI's ``--url`` / ``AGENTVM_URL``.

``urlsplit`` accepts nearly anything and the socket layer accepts more: ``42`` is host 0.0.0.42,
``1.2.3`` is 1.2.0.3, a tab is silently dropped. ``url_problem`` says what is wrong with a URL in words
that never repeat a password written into it, or None when agentvm may connect to it.
"""

from __future__ import annotations

import re
import unicodedata
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import SplitResult, urlsplit

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


def url_problem(
    text: str, example: str, *, credentials: str, default_scheme: str | None = "https"
) -> str | None:
    """What is wrong with ``text`` as an http(s) URL, with the fix; None when it is fine.

    The message reads after a field name (``vcenter.url: has a blank in it; ...``). ``example`` is a good
    URL for the fix; ``credentials`` says where a user name and password go instead of the URL.
    ``default_scheme`` is put in front of a bare host name (``vc.example.com``), as the vCenter connection
    does; None means the scheme is required. The message never contains the URL's user info, nor a
    control character (it would reach the terminal).
    """
    clause = _problem(text, default_scheme)
    if clause is None:
        return None
    if clause.startswith("has a user name"):
        return f"{clause}; remove {'them' if 'password' in clause else 'it'} from the URL and {credentials}"
    if clause.startswith("has "):
        return f"{clause}; remove it"
    return f'"{text}" is not a URL agentvm can use: {clause}; write it like {example}'


def _problem(text: str, default_scheme: str | None) -> str | None:
    for char in text:
        if char == " ":
            return "has a blank in it (write %20 in a path)"
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") or char.isspace():
            return f"has the control character U+{ord(char):04X} in it"
    full = text if "://" in text or default_scheme is None else f"{default_scheme}://{text}"
    try:
        parts = urlsplit(full)
    except ValueError:  # urlsplit's only complaint: an unbalanced IPv6 bracket
        return 'its IPv6 address has no closing "]"'
    if "@" in parts.netloc:
        has_password = ":" in parts.netloc.rpartition("@")[0]
        return "has a user name and password in it" if has_password else "has a user name in it"
    if parts.scheme not in ("http", "https"):
        return "it does not start with https:// (or http://)"
    return _host_problem(parts) or _port_problem(parts)


def _host_problem(parts: SplitResult) -> str | None:
    host = parts.hostname or ""
    if not host:
        return "it has no host name"
    if parts.netloc.startswith("["):
        try:
            IPv6Address(host.partition("%")[0])
        except ValueError:
            return f'its host "{host}" is not an IPv6 address'
        return None
    labels = host.rstrip(".").split(".")
    # as browsers and inet_aton do, a name whose last label is a number is an IPv4 address: 42 is 0.0.0.42
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            IPv4Address(host.rstrip("."))
        except ValueError:
            return f'its host "{host}" is not a host name or IPv4 address'
        return None
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return f'its host "{host}" is not a host name or IPv4 address'
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        return f'its host "{host}" is not a host name or IPv4 address'
    return None


def _port_problem(parts: SplitResult) -> str | None:
    try:
        port = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if port == 0:
        return "its port is 0"
    return None
