"""The ``esxi`` section: standalone ESXi hosts agentvm reaches directly, beside or instead of ``vcenter``.

Each entry is read with the ``vcenter`` section's readers (URL, TLS pinning, user and password: env, file,
prompt), by a name agency scopes use (``name``, default the URL's host name). Names and URLs are unique.
What only a vCenter has is refused here, naming the fix: ``login`` (a vCenter extension's certificate
login). The agency options only vCenter, EAM, DRS or HA carry out are refused in ``agencies``
(``check_standalone_agency``) and the solution's extension certificate in ``loader``. Called by
``spec.loader``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from agentvm.model.connection import VCenterConnection
from agentvm.model.desired import StandaloneHostSpec
from agentvm.spec.reader import Reader
from agentvm.spec.vcenter import read_password_login, read_tls, read_url
from agentvm.spec.yamlnodes import Node

ALLOWED = (
    "url",
    "name",
    "username",
    "password",
    "passwordEnv",
    "passwordFile",
    "passwordPrompt",
    "thumbprint",
    "caFile",
    "insecure",
    "login",
)
ESXI_EXAMPLE = "https://esx-01.example.com/sdk"
ESXI_CREDENTIALS = "use username and passwordEnv/passwordFile in the esxi entry"
DEFAULT_PASSWORD_ENV = "AGENTVM_ESXI_PASSWORD"  # noqa: S105 -- a variable name, not a password
MAX_NAME = 80
# a host name (RFC 1123 labels), as ESXi names itself and agency scopes name it
_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def read_esxi(r: Reader, node: Node) -> tuple[StandaloneHostSpec, ...] | None:
    """Validate the list; a name or URL given twice is a problem on the second, naming the first's line."""
    items = r.sequence(node, "{url: https://esx-01.example.com/sdk, username: root, ...}")
    if items is None:
        return None
    if not items:
        r.problem(
            node.line, node.path, f"is empty; list the standalone hosts, e.g. [{{url: {ESXI_EXAMPLE}}}]"
        )
        return None
    hosts: list[StandaloneHostSpec] = []
    names: dict[str, int] = {}
    urls: dict[str, int] = {}
    ok = True
    for item in items:
        host = _host(r, item)
        if host is None:
            ok = False
            continue
        where = item.entries.get("name") or item.entries["url"]
        key = host.name.lower()  # host names are case-blind
        if key in names:
            r.problem(
                where.line,
                where.path,
                f'host "{host.name}" is already listed on line {names[key]}; give each host its own name',
            )
            ok = False
            continue
        url = _canonical(host.connection)
        if url in urls:
            node_url = item.entries["url"]
            r.problem(
                node_url.line,
                node_url.path,
                f"{host.connection.url} is already listed on line {urls[url]}; list each host once",
            )
            ok = False
            continue
        names[key] = where.line
        urls[url] = item.entries["url"].line
        hosts.append(host)
    return tuple(hosts) if ok else None


def _canonical(conn: VCenterConnection) -> str:
    return f"{conn.scheme}://{conn.host.lower()}:{conn.port}{conn.path}"


def _host(r: Reader, node: Node) -> StandaloneHostSpec | None:
    fields = r.mapping(node, ALLOWED, required={"url": "${AGENTVM_ESXI_1_URL}"})
    if fields is None:
        return None
    if "login" in fields:
        r.problem(
            fields["login"].line,
            fields["login"].path,
            "is vCenter's (certificate login is a vCenter extension's); an ESXi host takes username and a "
            "password: remove login",
        )
        return None
    url = read_url(r, fields["url"], ESXI_EXAMPLE, ESXI_CREDENTIALS) if "url" in fields else None
    name = _name(r, fields, url)
    tls = read_tls(r, fields)
    credentials = read_password_login(r, node, fields, DEFAULT_PASSWORD_ENV)
    if url is None or name is None or tls is None or credentials is None:
        return None
    connection, source, origin = credentials
    thumbprint, ca_file, insecure = tls
    full = VCenterConnection(
        url=url,
        username=connection.username,
        password=connection.password,
        thumbprint=thumbprint,
        ca_file=ca_file,
        insecure=insecure,
    )
    return StandaloneHostSpec(name=name, connection=full, password_source=source, password_origin=origin)


def _name(r: Reader, fields: dict[str, Node], url: str | None) -> str | None:
    if "name" not in fields:
        if url is None:
            return None
        host = urlsplit(url if "://" in url else f"https://{url}").hostname or ""
        return host
    node = fields["name"]
    name = r.checked_text(node, "esx-01", limit=MAX_NAME, keeps_blanks="a host name would keep")
    if name is None:
        return None
    if not _HOST_NAME.fullmatch(name):
        r.problem(
            node.line, node.path, f'"{name}" is not a host name; write it like esx-01 or esx-01.example.com'
        )
        return None
    return name
