"""Plain pyVmomi on the lab's vCenter simulator: an extension to register, a solution's certificate login."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

from pyVmomi import Security, SoapStubAdapter, vim

from agentvm.lab.vcsim import VcsimInfo


def plain_thumbprint(info: VcsimInfo) -> str:
    """pyVmomi wants the thumbprint lower case without colons (vSphere shows it AA:BB:...)."""
    return info.thumbprint.replace(":", "").lower()


def extension(key: str, version: str = "1.0.0") -> Any:
    return vim.Extension(
        key=key,
        version=version,
        company="agentvm",
        description=vim.Description(label="agentvm test", summary="test extension"),
        lastHeartbeatTime=datetime.datetime.now(datetime.UTC),
        shownInSolutionManager=True,
    )


def login_by_certificate(info: VcsimInfo, key: str, cert_file: Path, key_file: Path) -> Any:
    """Log in as a solution: TLS client certificate + LoginExtensionByCertificate, server pinned."""
    peer = ssl.get_server_certificate((info.host, info.port))
    Security.VerifyCertThumbprint(ssl.PEM_cert_to_DER_cert(peer), plain_thumbprint(info))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned by thumbprint just above
    ctx.load_cert_chain(str(cert_file), str(key_file))
    stub = SoapStubAdapter(host=info.host, port=info.port, sslContext=ctx, version="vim.version.version11")
    conn = vim.ServiceInstance("ServiceInstance", stub)
    conn.content.sessionManager.LoginExtensionByCertificate(key)
    return conn
