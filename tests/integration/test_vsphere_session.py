"""agentvm.vsphere.Session against the lab's vcsim: TLS checks, login, re-login, correlation ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pyVmomi import eam

from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import AuthenticationError, ConfigurationError, TransientError
from agentvm.vsphere.extensions import ExtensionSpec, register_extension, set_extension_certificate
from agentvm.vsphere.session import Session
from tests.support.certs import make_certificate

pytestmark = pytest.mark.lab


def connection(info: VcsimInfo, **overrides: object) -> VCenterConnection:
    settings: dict[str, object] = {
        "url": info.url,
        "username": info.username,
        "password": Secret(info.password),
        "thumbprint": info.thumbprint,
    }
    settings.update(overrides)
    return VCenterConnection(**settings)  # type: ignore[arg-type]


def test_login_with_pinned_sha1_thumbprint(vcsim: VcsimInfo) -> None:
    with Session(connection(vcsim)) as session:
        assert session.current_user_name() == vcsim.username
        assert session.api_version == "6.5"
        assert session.keepalive().year >= 2024


def test_login_with_pinned_sha256_thumbprint_in_lower_case(vcsim: VcsimInfo) -> None:
    conn = connection(vcsim, thumbprint=vcsim.thumbprint_sha256.lower().replace(":", ""))
    with Session(conn) as session:
        assert session.current_user_name() == vcsim.username


def test_login_verifying_against_ca_file(vcsim: VcsimInfo, tmp_path: Path) -> None:
    ca = tmp_path / "vcenter.pem"
    ca.write_text(vcsim.certificate_pem)
    with Session(connection(vcsim, thumbprint=None, ca_file=str(ca))) as session:
        assert session.current_user_name() == vcsim.username


def test_untrusted_certificate_is_refused_with_the_fix(vcsim: VcsimInfo) -> None:
    with pytest.raises(AuthenticationError) as caught:
        Session.connect(connection(vcsim, thumbprint=None))
    message = str(caught.value)
    assert "not trusted" in message and "--thumbprint" in message and "--ca-file" in message


def test_wrong_thumbprint_is_refused_before_any_soap_call(vcsim: VcsimInfo) -> None:
    wrong = "00:" + vcsim.thumbprint[3:]
    session = Session(connection(vcsim, thumbprint=wrong))
    with pytest.raises(AuthenticationError) as caught:
        session.login()
    message = str(caught.value)
    assert vcsim.thumbprint[:23] in message and wrong[:23] in message
    assert "AGENTVM_THUMBPRINT" in message
    # only the TLS probe happened: no SOAP request (and so no password) ever left
    assert set(session.stats.snapshot()) == {"GET vimServiceVersions.xml"}
    assert vcsim.password not in message


def test_wrong_password_is_an_authentication_error(vcsim: VcsimInfo) -> None:
    with pytest.raises(AuthenticationError) as caught:
        Session.connect(connection(vcsim, password=Secret("not-the-password")))
    message = str(caught.value)
    assert "wrong user name or password" in message and "AGENTVM_PASSWORD" in message
    assert "not-the-password" not in message


def test_missing_credentials_are_a_configuration_error(vcsim: VcsimInfo) -> None:
    with pytest.raises(ConfigurationError, match="AGENTVM_USERNAME"):
        Session(connection(vcsim, password=None))


def test_unreachable_vcenter_is_transient(vcsim: VcsimInfo) -> None:
    conn = connection(vcsim, url="https://127.0.0.1:9/sdk")
    with pytest.raises(TransientError, match=r"127\.0\.0\.1:9"):
        Session.connect(conn)


def test_invoke_with_terminated_session_logs_in_again(vcsim: VcsimInfo) -> None:
    with Session(connection(vcsim)) as session, Session(connection(vcsim)) as admin:
        old_key = session.content.sessionManager.currentSession.key
        admin.content.sessionManager.TerminateSession(sessionId=[old_key])
        before = session.stats.snapshot()["Login"]
        # the next call meets NotAuthenticated, logs in again and is retried, transparently
        assert session.current_user_name() == vcsim.username
        assert session.stats.snapshot()["Login"] == before + 1
        assert session.content.sessionManager.currentSession.key != old_key


def test_every_call_carries_a_correlation_id(vcsim: VcsimInfo) -> None:
    sent: list[bytes] = []
    with Session(connection(vcsim)) as session:
        raw = session._soap  # test-only peek at the wire

        def capture(request: bytes) -> bytes:
            sent.append(request)
            return request

        with raw.requestModifier(capture), session.operation("apply-42"):
            session.keepalive()
        with raw.requestModifier(capture):
            session.keepalive()
    assert re.search(rb"<operationID[^>]*>apply-42-\d+</operationID>", sent[0])
    assert re.search(rb"<operationID[^>]*>agentvm-[0-9a-f]{6}-\d+</operationID>", sent[1])


def test_logout_is_idempotent_and_repr_hides_the_session_id(vcsim: VcsimInfo) -> None:
    session = Session.connect(connection(vcsim))
    full_id = session._soap.GetSessionId()
    assert full_id not in repr(session) and full_id[:8] in repr(session)
    assert vcsim.password not in repr(session)
    session.logout()
    session.logout()
    assert not session.logged_in


def test_sibling_stub_shares_the_session_cookie(vcsim: VcsimInfo) -> None:
    with Session(connection(vcsim)) as session:
        stub = session.sibling_stub("/sdk", "vim.version.version11")
        assert stub.GetSessionId() == session._soap.GetSessionId()
        # the EAM route answers (503: no EAM backend in this lab): the error is mapped and names the URL
        manager = eam.EsxAgentManager("EsxAgentManager", session.sibling_stub())
        with pytest.raises(TransientError, match="QueryAgency"):
            manager.QueryAgency()


def test_login_as_extension_by_certificate(vcsim: VcsimInfo, tmp_path: Path) -> None:
    key = "com.example.agentvm.test"
    cert_file, key_file, pem = make_certificate(tmp_path, "solution")
    other_cert, other_key, _ = make_certificate(tmp_path, "intruder")
    with Session(connection(vcsim)) as admin:
        register_extension(admin, ExtensionSpec(key=key, version="1.0.0", label="agentvm test"))
        set_extension_certificate(admin, key, pem)
    as_extension = connection(
        vcsim,
        username=None,
        password=None,
        extension_key=key,
        cert_file=str(cert_file),
        key_file=str(key_file),
    )
    with Session(as_extension) as session:
        assert session.current_user_name() == key
    intruder = connection(
        vcsim,
        username=None,
        password=None,
        extension_key=key,
        cert_file=str(other_cert),
        key_file=str(other_key),
    )
    with pytest.raises(AuthenticationError, match="SetExtensionCertificate"):
        Session.connect(intruder)


def test_extension_login_needs_its_certificate(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(hosts=1, clusters=1, dvs=False)
    with pytest.raises(ConfigurationError, match="cert_file"):
        Session(connection(info, username=None, password=None, extension_key="com.example.x"))
