"""The fault table: every vSphere fault or transport error becomes the agentvm error that says what to do."""

from __future__ import annotations

import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyVmomi import eam, vim, vmodl

from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from agentvm.vsphere.faults import FAULTS, fault_name, redact, to_agentvm_error
from agentvm.vsphere.tls import ThumbprintMismatch, normalize_thumbprint

URL = "https://vc.example.test/sdk"


@pytest.mark.parametrize(
    ("fault", "expected", "name"),
    [
        (vim.fault.InvalidLogin(msg="Login failure"), AuthenticationError, "InvalidLogin"),
        (vim.fault.NotAuthenticated(), AuthenticationError, "NotAuthenticated"),
        (vim.fault.NoPermission(privilegeId="Extension.Register"), ConfigurationError, "NoPermission"),
        (
            vmodl.fault.ManagedObjectNotFound(obj=vim.HostSystem("host-9")),
            NotFoundError,
            "ManagedObjectNotFound",
        ),
        (vim.fault.NotFound(), NotFoundError, "NotFound"),
        (vmodl.fault.InvalidArgument(invalidProperty="extension.key"), ConfigurationError, "InvalidArgument"),
        (vim.fault.InvalidPowerState(), TransientError, "InvalidPowerState"),  # by its base: InvalidState
        (vim.fault.TaskInProgress(), TransientError, "TaskInProgress"),
        (vmodl.fault.HostCommunication(), TransientError, "HostCommunication"),
        (vim.fault.DuplicateName(name="agent (1)"), ConfigurationError, "DuplicateName"),
        (vmodl.fault.RequestCanceled(), TransientError, "RequestCanceled"),
        (eam.fault.InvalidLogin(), AuthenticationError, "EamInvalidLogin"),
        (eam.fault.EamServiceNotInitialized(), TransientError, "EamServiceNotInitialized"),
        (eam.fault.InvalidState(), TransientError, "EamInvalidState"),  # by its base: EamRuntimeFault
        (eam.fault.InvalidAgencyScope(), ConfigurationError, "InvalidAgencyScope"),
    ],
)
def test_fault_maps_to_the_error_that_says_what_to_do(
    fault: BaseException, expected: type[AgentvmError], name: str
) -> None:
    error = to_agentvm_error(fault, url=URL, what="Op on HostSystem:host-9")
    assert type(error) is expected
    assert fault_name(error) == name
    assert str(error).startswith(f"{name} from Op on HostSystem:host-9 at {URL}")


def test_invalid_argument_message_names_the_property() -> None:
    error = to_agentvm_error(vmodl.fault.InvalidArgument(invalidProperty="extension.key"), url=URL)
    assert "invalidProperty=extension.key" in str(error)


def test_managed_object_not_found_names_the_object() -> None:
    error = to_agentvm_error(vmodl.fault.ManagedObjectNotFound(obj=vim.HostSystem("host-9")), url=URL)
    assert "obj=host-9" in str(error)


def test_unknown_fault_is_a_configuration_error() -> None:
    error = to_agentvm_error(vim.fault.CustomizationFault(), url=URL)
    assert type(error) is ConfigurationError and fault_name(error) == "CustomizationFault"


def test_connection_refused_is_transient_and_names_the_url() -> None:
    error = to_agentvm_error(ConnectionRefusedError(111, "refused"), url=URL)
    assert isinstance(error, TransientError) and URL in str(error)


def test_timeout_is_transient() -> None:
    assert isinstance(to_agentvm_error(TimeoutError("timed out"), url=URL), TransientError)
    assert isinstance(to_agentvm_error(TimeoutError("timed out"), url=URL), TransientError)


def test_unresolvable_host_is_a_configuration_error() -> None:
    error = to_agentvm_error(socket.gaierror(-2, "Name or service not known"), url=URL)
    assert isinstance(error, ConfigurationError) and "fix the URL" in str(error)


def test_untrusted_certificate_says_how_to_fix() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    error = to_agentvm_error(exc, url=URL)
    assert isinstance(error, AuthenticationError)
    assert "--ca-file" in str(error) and "--thumbprint" in str(error) and "self-signed" in str(error)


def test_thumbprint_mismatch_names_both_thumbprints() -> None:
    """Both in full: a person compares them with what vCenter shows, character by character."""
    pinned = "4C:33:9B:5F:9B:CD:A6:3F:2A:CD:5D:B1:91:D8:EA:AE:A5:D4:49:8C"
    actual = "4C:33:9B:5F:9B:CD:A6:3F:2A:CD:5D:B1:91:D8:EA:AE:A5:D4:49:8D"  # differs in the last byte
    error = to_agentvm_error(ThumbprintMismatch(pinned, actual), url=URL)
    assert isinstance(error, AuthenticationError)
    assert f"thumbprint {actual}," in str(error) and f"pinned {pinned}:" in str(error)


def test_agentvm_errors_pass_through_unchanged() -> None:
    original = NotFoundError("no cluster C9")
    assert to_agentvm_error(original, url=URL) is original


def test_every_rule_has_advice() -> None:
    assert all(rule.advice for rule in FAULTS.values())


@given(
    st.binary(min_size=20, max_size=20) | st.binary(min_size=32, max_size=32), st.booleans(), st.booleans()
)
def test_thumbprint_normalization_accepts_any_spelling(digest: bytes, colons: bool, lower: bool) -> None:
    canonical = ":".join(f"{b:02X}" for b in digest)
    spelled = canonical if colons else canonical.replace(":", "")
    spelled = spelled.lower() if lower else spelled
    assert normalize_thumbprint(spelled) == canonical


@pytest.mark.parametrize("bad", ["", "AA:BB", "ZZ" * 20, "AA" * 21])
def test_thumbprint_that_is_not_a_digest_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="SHA-1"):
        normalize_thumbprint(bad)


SESSION_KEY = "52c5b6a1-7e0f-4d2a-9f1b-3c4d5e6f7a8b"


def test_a_fault_on_a_session_scoped_object_never_shows_the_session_key() -> None:
    collector = vmodl.query.PropertyCollector(f"session[{SESSION_KEY}]52aa-0001")
    fault = vmodl.fault.ManagedObjectNotFound(
        msg=f"managed object not found: PropertyCollector:session[{SESSION_KEY}]52aa-0001", obj=collector
    )
    what = f"WaitForUpdatesEx on PropertyCollector:session[{SESSION_KEY}]52aa-0001"
    error = to_agentvm_error(fault, url=URL, what=what)
    assert SESSION_KEY not in str(error)
    assert "session[...]52aa-0001" in str(error)  # the object is still named, without the key


@given(st.uuids().map(str), st.text(max_size=40))
def test_redact_removes_every_session_key_and_cookie(key: str, around: str) -> None:
    text = f'{around} session[{key}]x {around} vmware_soap_session="{key}"; Path=/ {around}'
    cleaned = redact(text)
    assert key not in cleaned and redact(cleaned) == cleaned
