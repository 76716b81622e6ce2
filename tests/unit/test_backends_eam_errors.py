"""eam.errors.map_error: the EAM faults a user meets, as the Session reports them, in an agency's words.

The faults the lab's emulator cannot be made to send (EamServiceNotInitialized, InvalidUrl for an
unreachable host or an HTTP error, a connection refused) are built here as pyVmomi faults and passed
through the Session's own fault table first, exactly as a call would.
"""

from __future__ import annotations

import http.client

import pytest
from pyVmomi import eam, vim, vmodl

from agentvm.eam.errors import map_error
from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from agentvm.vsphere.faults import fault_name, to_agentvm_error

VC = "https://127.0.0.1:8989/sdk"
EAM = "https://127.0.0.1:8989/eam/sdk"
WHAT = "agency 'hello' (agency-1)"


def through_session(exc: BaseException) -> AgentvmError:
    """What Session._send raises for ``exc`` (the fault kept as ``__cause__``)."""
    error = to_agentvm_error(exc, url=VC, what="CreateAgency on EsxAgentManager:EsxAgentManager")
    error.__cause__ = exc
    return error


def mapped(exc: BaseException) -> AgentvmError:
    return map_error(through_session(exc), what=WHAT, eam_url=EAM)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (eam.fault.InvalidUrl(url="http://x/a.ovf", malformedUrl=True), "does not parse"),
        (eam.fault.InvalidUrl(url="http://x/a.ovf", unknownHost=True), "cannot resolve its host name"),
        (eam.fault.InvalidUrl(url="http://x/a.ovf", connectionRefused=True), "connection was refused"),
        (eam.fault.InvalidUrl(url="http://x/a.ovf", responseCode=404), "answered HTTP 404"),
    ],
)
def test_invalid_url_names_the_url_the_agency_and_why(fault: object, reason: str) -> None:
    error = mapped(fault)  # type: ignore[arg-type]
    assert type(error) is ConfigurationError
    assert str(error).startswith(f"EAM cannot use the URL http://x/a.ovf of {WHAT}: ")
    assert reason in str(error) and "fix the agency's OVF URL" in str(error)
    assert fault_name(error) == "InvalidUrl"


def test_invalid_scope_lists_the_unknown_compute_resources() -> None:
    fault = eam.fault.InvalidAgencyScope(
        unknownComputeResource=[vim.ClusterComputeResource("domain-c9"), vim.ComputeResource("domain-s3")]
    )
    error = mapped(fault)
    assert isinstance(error, NotFoundError)
    assert f"scope of {WHAT} names compute resources that vCenter does not know: domain-c9, domain-s3" in str(
        error
    )


def test_service_not_initialized_is_transient() -> None:
    error = mapped(eam.fault.EamServiceNotInitialized())
    assert isinstance(error, TransientError)
    assert str(error) == f"EAM at {EAM} is still starting (EamServiceNotInitialized): retry in a minute"


@pytest.mark.parametrize(
    "exc",
    [
        http.client.HTTPException("503 Service Unavailable"),
        http.client.HTTPException("502 Bad Gateway"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
)
def test_no_answer_from_eam_is_transient_and_names_the_eam_url(exc: BaseException) -> None:
    error = mapped(exc)
    assert isinstance(error, TransientError)
    assert str(error).startswith(f"EAM is not reachable at {EAM}: {type(exc).__name__}")


def test_managed_object_not_found_names_the_agency() -> None:
    error = mapped(vmodl.fault.ManagedObjectNotFound(obj=eam.Agency("agency-1")))
    assert isinstance(error, NotFoundError)
    assert str(error).startswith(f"{WHAT} does not exist (any more)")


def test_other_faults_keep_the_sessions_message() -> None:
    original = through_session(eam.fault.InvalidLogin())
    assert map_error(original, what=WHAT, eam_url=EAM) is original
    assert isinstance(original, AuthenticationError)
