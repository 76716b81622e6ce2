"""The solution's own identity on one vCenter: its login certificate and what it knows of its agencies.

Called by ``controller.solution`` (plan, apply, destroy; the controller through ``Reconciler``) and the CLI
(``--state-dir``). EAM makes an agency belong to the session that creates it (docs/eam.md, "Ownership"): an
agency created through a user login belongs to that user, and the solution's own session never sees it in
QueryAgency. So agentvm makes every EAM call as the extension (``LoginExtensionByCertificate``); when the
spec names no certificate, the first apply generates one and keeps it here:

    <state dir>/<vcenter host_port>/<solution key>/solution.crt, solution.key   (0600, the dir 0700)

``<state dir>`` is ``--state-dir`` / ``$AGENTVM_STATE_DIR``, else ``~/.local/state/agentvm`` (the same
default as ``agentvm run --state-dir``). ``agencies.json`` next to them records the agencies agentvm adopted
(found with a user login, owned by someone else), so that a later ``login: certificate`` run can still read
them by id: EAM lists them to their owner only. ``host-settings.json`` records the hosts' AgentVM settings
(datastore, network) that apply set where none was set, so that ``destroy --host-settings`` clears those
and only those.

vCenter keeps ONE certificate per extension, so the machine (state dir) that set it is the only one whose
login works; apply records in the extension which certificate it set (``certificate_record``, kept by
``vsphere.extensions``), and another machine's apply never sets its generated certificate over a recorded
one (``controller.solution``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.extensions import CertificateRecord

STATE_DIR_ENV = "AGENTVM_STATE_DIR"
CERT_NAME = "solution.crt"
KEY_NAME = "solution.key"
ADOPTED_NAME = "agencies.json"
HOST_SETTINGS_NAME = "host-settings.json"
CERT_DAYS = 3650  # vCenter checks the certificate it was given, not its dates; renew by deleting the files


def default_state_dir() -> Path:
    """``$AGENTVM_STATE_DIR``, else ``~/.local/state/agentvm`` (XDG's state home for this user)."""
    env = os.environ.get(STATE_DIR_ENV, "").strip()
    return Path(env) if env else Path.home() / ".local" / "state" / "agentvm"


def solution_dir(state_dir: Path, vcenter_url: str, solution_key: str) -> Path:
    """``<state_dir>/<vcenter host_port>/<solution key>``: one directory per vCenter and solution. Pure."""
    where = re.sub(r"^[a-z]+://", "", vcenter_url.strip().lower()).split("/", 1)[0]
    return state_dir / _safe(where) / _safe(solution_key)


def thumbprints(pem: bytes) -> tuple[str, str]:
    """(SHA-256, SHA-1) of the first certificate in ``pem``, colon-separated upper-case hex (as vSphere
    shows thumbprints). Raises ValueError when ``pem`` holds no certificate. Pure."""
    cert = x509.load_pem_x509_certificate(pem)
    return _hex(cert.fingerprint(hashes.SHA256())), _hex(cert.fingerprint(hashes.SHA1()))  # noqa: S303


def _hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def certificate_record(pem: bytes, cert_file: str, *, generated: bool) -> CertificateRecord:
    """What apply records in the extension when it sets ``pem`` (read from ``cert_file``) on it: its
    thumbprints, this machine's host name, the file's absolute path and the time."""
    sha256, sha1 = thumbprints(pem)
    return CertificateRecord(
        sha256=sha256,
        sha1=sha1,
        host=socket.gethostname() or "localhost",
        file=os.path.abspath(cert_file),
        source="generated" if generated else "spec",
        set_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _safe(text: str) -> str:
    """One path element: other characters as ``_``; ``.`` and ``..`` (or nothing) are not elements."""
    safe = re.sub(r"[^a-zA-Z0-9._-]+", "_", text)
    return "_" * max(1, len(safe)) if set(safe) <= {"."} else safe


@dataclass(frozen=True)
class Adopted:
    """An agency of the spec's name that belongs to someone else (a user), and agentvm manages."""

    agency: str  # EAM's id
    owner: str  # QuerySolutionId: the user who created it


def self_signed_certificate(common_name: str, *, days: int) -> tuple[bytes, bytes]:
    """A fresh self-signed certificate for ``common_name`` (EC P-256, SHA-256, valid from an hour ago for
    ``days`` days) and its unencrypted PKCS#8 key, both PEM: (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass(frozen=True)
class SolutionIdentity:
    """Where the solution's generated certificate lives (or will), and the adopted-agency record."""

    directory: Path

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_NAME

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_NAME

    def has_certificate(self) -> bool:
        return self.cert_file.is_file() and self.key_file.is_file()

    def certificate_pem(self) -> str:
        return self.cert_file.read_text(encoding="ascii")

    def ensure_certificate(self, solution_key: str) -> bool:
        """Generate the certificate and key unless both exist; True when they were generated now.

        The key is written 0600 (created with that mode, never readable by others in between), the
        directory 0700. Raises ConfigurationError naming the directory when it cannot be written.
        """
        if self.has_certificate():
            return False
        cert_pem, key_pem = self_signed_certificate(solution_key, days=CERT_DAYS)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.key_file, key_pem)
            _write_private(self.cert_file, cert_pem)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the solution's certificate into {self.directory}: {exc.strerror}; choose a "
                f"writable directory with --state-dir or ${STATE_DIR_ENV}"
            ) from None
        return True

    # -- adopted agencies ---------------------------------------------------------------------------

    def adopted(self) -> dict[str, Adopted]:
        """Agency name -> the adopted agency; {} when nothing was recorded (or the record is unreadable)."""
        try:
            data = json.loads((self.directory / ADOPTED_NAME).read_text(encoding="utf-8"))
            return {
                str(name): Adopted(str(entry["agency"]), str(entry["owner"])) for name, entry in data.items()
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def record_adopted(self, name: str, found: Adopted | None) -> None:
        """Remember (or with None forget) the adopted agency of ``name``. Best effort: a record that cannot
        be written only means a later certificate-only run refuses instead of finding it."""
        record = self.adopted()
        if found is None:
            if record.pop(name, None) is None:
                return
        elif record.get(name) == found:
            return
        else:
            record[name] = found
        data = {n: {"agency": a.agency, "owner": a.owner} for n, a in sorted(record.items())}
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.directory / ADOPTED_NAME, (json.dumps(data, indent=2) + "\n").encode())
        except OSError:
            return

    # -- host settings agentvm set ------------------------------------------------------------------

    def host_settings(self) -> dict[str, dict[str, str]]:
        """Host moid -> {"datastore"|"network": "Type:moid"} that apply set; {} when none (or unreadable)."""
        try:
            data = json.loads((self.directory / HOST_SETTINGS_NAME).read_text(encoding="utf-8"))
            return {
                str(host): {str(k): str(v) for k, v in fields.items() if k in ("datastore", "network")}
                for host, fields in data.items()
            }
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def record_host_settings(self, host: str, fields: dict[str, str] | None) -> None:
        """Add what apply set on ``host`` to the record (None: forget the host). Best effort, as
        ``record_adopted``: without the record, ``destroy --host-settings`` clears nothing on that host."""
        self.record_many_host_settings({host: fields})

    def record_many_host_settings(self, hosts: Mapping[str, dict[str, str] | None]) -> None:
        """``record_host_settings`` for many hosts in one read and one write of the record (the
        executor's concurrent batches: one write per host would cost O(hosts²) at thousands of hosts)."""
        record = self.host_settings()
        changed = False
        for host, fields in hosts.items():
            if fields is None:
                changed = record.pop(host, None) is not None or changed
            elif fields:
                record[host] = {**record.get(host, {}), **fields}
                changed = True
        if not changed:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            text = json.dumps(dict(sorted(record.items())), indent=2) + "\n"
            _write_private(self.directory / HOST_SETTINGS_NAME, text.encode())
        except OSError:
            return


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600 from its creation on."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older tmp file may have had another mode
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
