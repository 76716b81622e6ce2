"""The ``vcenter`` section: where vCenter is, how to trust its certificate, how to log in.

The password is read here when it comes from the environment or a file, so that a missing one is reported
with the other spec problems; a prompt is left to the CLI (``PasswordSource.PROMPT``). The password never
appears in a problem, a warning or a repr.
"""

from __future__ import annotations

import re

from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.desired import PasswordSource, SolutionSpec, VCenterSpec
from agentvm.spec.reader import Reader
from agentvm.spec.urls import url_problem
from agentvm.spec.yamlnodes import Node, xml_invalid

ALLOWED = (
    "url",
    "username",
    "password",
    "passwordEnv",
    "passwordFile",
    "passwordPrompt",
    "login",
    "thumbprint",
    "caFile",
    "insecure",
)
VCENTER_EXAMPLE = "https://vcenter.example.com/sdk"
VCENTER_CREDENTIALS = "use vcenter.username and passwordEnv/passwordFile"
DEFAULT_PASSWORD_ENV = "AGENTVM_PASSWORD"  # noqa: S105 -- a variable name, not a password
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PASSWORD_FILE = 65_536
_WHOLE_REFERENCE = re.compile(r"\s*\$\{([A-Za-z_][A-Za-z0-9_]*)\}\s*")
_THUMBPRINT = re.compile(r"(?:[0-9A-Fa-f]{2}:?){19}[0-9A-Fa-f]{2}|(?:[0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}")


def read_vcenter(r: Reader, node: Node, solution: SolutionSpec | None) -> VCenterSpec | None:
    """Validate ``vcenter``. ``solution`` supplies the key and certificate for ``login: certificate``."""
    fields = r.mapping(node, ALLOWED, required={"url": "${AGENTVM_URL}"})
    if fields is None:
        return None
    url = read_url(r, fields["url"]) if "url" in fields else None
    tls = read_tls(r, fields)
    login = "password"
    if "login" in fields:
        login = (r.text(fields["login"], "password") or "password").lower()
        if login not in ("password", "certificate"):
            r.problem(
                fields["login"].line,
                fields["login"].path,
                f'"{login}" is not a login method; write "password" or "certificate"',
            )
            return None
    if login == "certificate":
        credentials = _certificate_login(r, node, fields, solution)
    else:
        credentials = read_password_login(r, node, fields)
    if url is None or tls is None or credentials is None:
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
        extension_key=connection.extension_key,
        cert_file=connection.cert_file,
        key_file=connection.key_file,
    )
    return VCenterSpec(connection=full, password_source=source, password_origin=origin)


def read_url(
    r: Reader, node: Node, example: str = VCENTER_EXAMPLE, credentials: str = VCENTER_CREDENTIALS
) -> str | None:
    """An SDK URL (``vcenter.url``, an ``esxi`` entry's ``url``); None after a problem."""
    if node.kind == "scalar" and node.scalar is not None and not isinstance(node.scalar, str):
        # url: 42 is a number, and a socket would take it for host 0.0.0.42
        r.problem(node.line, node.path, f"must be a URL, e.g. {example}, not {node.type_name()}")
        return None
    text = r.text(node, example)
    if text is None:
        return None
    problem = url_problem(text, example, credentials=credentials)
    if problem is not None:
        r.problem(node.line, node.path, problem)
        return None
    return text


def read_tls(r: Reader, fields: dict[str, Node]) -> tuple[str | None, str | None, bool] | None:
    """``thumbprint``/``caFile``/``insecure`` (vcenter, an esxi entry); None after a problem."""
    thumbprint = ca_file = None
    insecure = False
    ok = True
    if "thumbprint" in fields:
        thumbprint = r.text(fields["thumbprint"], "AB:CD:...")
        if thumbprint is not None and not _THUMBPRINT.fullmatch(thumbprint):
            r.problem(
                fields["thumbprint"].line,
                fields["thumbprint"].path,
                f'"{thumbprint}" is not a certificate thumbprint; give the SHA-1 (40 hex digits) or SHA-256 '
                "(64 hex digits) of the vCenter certificate, colons optional",
            )
            thumbprint = None
        ok = ok and thumbprint is not None
    if "caFile" in fields:
        ca_file = r.file_path(fields["caFile"], "CA bundle (PEM)")
        ok = ok and ca_file is not None
    if "insecure" in fields:
        flag = r.boolean(fields["insecure"])
        ok = ok and flag is not None
        insecure = bool(flag)
        if insecure and ("thumbprint" in fields or "caFile" in fields):
            r.problem(
                fields["insecure"].line,
                fields["insecure"].path,
                "insecure: true turns certificate checks off, so thumbprint/caFile would be ignored; "
                "remove insecure (or them)",
            )
            ok = False
        elif insecure:
            r.warn(
                fields["insecure"].line,
                fields["insecure"].path,
                "TLS certificate checks are off; pin a thumbprint instead",
            )
    return (thumbprint, ca_file, insecure) if ok else None


_PasswordLogin = tuple[VCenterConnection, PasswordSource, str | None]


def read_password_login(
    r: Reader, node: Node, fields: dict[str, Node], default_env: str = DEFAULT_PASSWORD_ENV
) -> _PasswordLogin | None:
    """``username`` and the password one way (``password``, ``passwordEnv``, ``passwordFile``,
    ``passwordPrompt``; else ``default_env``); None after a problem. The password is never shown."""
    username = None
    if "username" not in fields:
        r.problem(
            node.line, f"{node.path}.username", "is missing; add it, e.g. username: ${AGENTVM_USERNAME}"
        )
    else:
        username = r.text(fields["username"], "${AGENTVM_USERNAME}")
    given = [k for k in ("password", "passwordEnv", "passwordFile", "passwordPrompt") if k in fields]
    if len(given) > 1:
        second = fields[given[1]]
        r.problem(second.line, second.path, f"conflicts with {given[0]}; give the password one way only")
        return None
    source = _password(r, node, fields, given[0] if given else None, default_env)
    if username is None or source is None:
        return None
    password, kind, origin = source
    return VCenterConnection(url="", username=username, password=password), kind, origin


def _password(
    r: Reader, vcenter: Node, fields: dict[str, Node], how: str | None, default_env: str
) -> tuple[Secret | None, PasswordSource, str | None] | None:
    if how == "password":
        node = fields["password"]
        if node.broken:
            return None
        # not r.text(): be explicit that the value is never echoed, whatever r.text() may print one day
        if node.kind != "scalar" or node.scalar is None or not str(node.scalar):
            r.problem(
                node.line, node.path, "must be text; better, remove it and use passwordEnv or passwordFile"
            )
            return None
        reference = _WHOLE_REFERENCE.fullmatch(node.original)
        if reference is not None:  # password: ${VAR} -- it comes from the environment after all
            return Secret(str(node.scalar)), PasswordSource.ENVIRONMENT, reference.group(1)
        r.warn(
            node.line,
            node.path,
            "the password is written in the spec file; use passwordEnv (default "
            f"{default_env}) or passwordFile instead",
        )
        return Secret(str(node.scalar)), PasswordSource.LITERAL, None
    if how == "passwordFile":
        node = fields["passwordFile"]
        path = r.file_path(node, "password file")
        if path is None:
            return None
        secret = _read_password_file(r, node, path)
        if secret is None:
            return None
        if not secret:
            r.problem(node.line, node.path, f'"{path}" is empty; put the password in it')
            return None
        if not _password_ok(r, node, secret, f'the password in "{path}"', "write the right password in it"):
            return None
        return Secret(secret), PasswordSource.FILE, path
    if how == "passwordPrompt":
        flag = r.boolean(fields["passwordPrompt"])
        if flag is None:
            return None
        if flag:
            return None, PasswordSource.PROMPT, None
    name = default_env
    if how == "passwordEnv":
        node = fields["passwordEnv"]
        name = r.text(node, default_env) or ""
        if not _ENV_NAME.fullmatch(name):
            r.problem(
                node.line,
                node.path,
                f'"{name}" is not an environment variable name; e.g. {default_env}',
            )
            return None
    value = r.env.get(name)
    if value:
        where = fields.get("passwordEnv") or vcenter
        if not _password_ok(r, where, value, f"the password in {name}", f"set {name} to the right password"):
            return None
        return Secret(value), PasswordSource.ENVIRONMENT, name
    return None, PasswordSource.PROMPT, name  # the CLI asks, or says "set <name>"


def _read_password_file(r: Reader, node: Node, path: str) -> str | None:
    """The file's text without its line end; None after a problem (unreadable, not UTF-8, huge)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        r.problem(node.line, node.path, f'"{path}" cannot be read ({exc.strerror}); check its permissions')
        return None
    if len(data) > _MAX_PASSWORD_FILE:
        r.problem(
            node.line,
            node.path,
            f'"{path}" is larger than {_MAX_PASSWORD_FILE:,} bytes; it holds only the password',
        )
        return None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        r.problem(node.line, node.path, f'"{path}" is not UTF-8 text; write the password in it as UTF-8')
        return None


def _password_ok(r: Reader, node: Node, secret: str, what: str, fix: str) -> bool:
    """A password vCenter can receive: no character XML cannot carry. Never quotes the password."""
    bad = xml_invalid(secret)
    if bad is None:
        return True
    r.problem(
        node.line,
        node.path,
        f"{what} has a control character ({bad}), which cannot be sent to vCenter; {fix}",
    )
    return False


def _certificate_login(
    r: Reader, node: Node, fields: dict[str, Node], solution: SolutionSpec | None
) -> _PasswordLogin | None:
    ok = True
    for key in ("username", "password", "passwordEnv", "passwordFile", "passwordPrompt"):
        if key in fields:
            r.problem(fields[key].line, fields[key].path, "is not used with login: certificate; remove it")
            ok = False
    if solution is not None and (solution.cert_file is None or solution.key_file is None):
        r.problem(
            fields["login"].line,
            fields["login"].path,
            "certificate login needs solution.certFile and solution.keyFile; add them or use login: password",
        )
        ok = False
    if not ok or solution is None:
        return None
    connection = VCenterConnection(
        url="", extension_key=solution.key, cert_file=solution.cert_file, key_file=solution.key_file
    )
    return connection, PasswordSource.NONE, None
