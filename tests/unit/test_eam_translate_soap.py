"""The emulator's small pure pieces: SOAPAction versions, request parsing, cookies, the checker's cache."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import SoapStubAdapter, eam, vim

from agentvm.engine.api import Caller
from agentvm.lab.eam_emulator import VcenterSessionChecker, VcenterUnreachable, session_cookie, soap
from agentvm.lab.eam_emulator.service import PARAM_TYPES


@pytest.mark.parametrize(
    ("action", "version"),
    [
        ('"urn:eam/7.5"', "eam.version.version7_5"),
        ("urn:eam/1.0", "eam.version.version1"),
        ('"urn:eam/2.5"', "eam.version.version2_5"),
        ('"urn:eam/9.0"', "eam.version.version9_0"),
        ('"urn:eam/8.0"', "eam.version.version7_6"),  # unknown: the newest known one that is not newer
        ('"urn:eam/0.5"', "eam.version.version1"),
        ('"urn:eam/99.1"', "eam.version.version9_0"),
        (None, "eam.version.version9_0"),
        ('"urn:vim25/8.0"', "eam.version.version9_0"),
    ],
)
def test_version_from_soap_action(action: str | None, version: str) -> None:
    assert soap.version_from_soap_action(action) == version


def _request(mo: Any, method: str, *args: Any, version: str = "eam.version.version7_5") -> bytes:
    stub = SoapStubAdapter("127.0.0.1", -1, path="/eam/sdk", version=version)
    info = next(
        m
        for m in [*type(mo)._methodInfo.values(), *eam.EamObject._methodInfo.values()]
        if m.wsdlName == method
    )
    return bytes(stub.SerializeRequest(mo, info, args))


def test_parse_request_reads_this_and_typed_parameters() -> None:
    config = eam.Agency.ConfigInfo(
        agencyName="a",
        scope=eam.Agency.ComputeResourceScope(computeResource=[vim.ClusterComputeResource("domain-c7")]),
        agentVmNetwork=[vim.dvs.DistributedVirtualPortgroup("dvpg-1")],
    )
    body = _request(eam.EsxAgentManager("EsxAgentManager"), "CreateAgency", config, "enabled")
    request = soap.parse_request(body, "eam.version.version7_5", PARAM_TYPES)
    assert request.method == "CreateAgency" and request.this._moId == "EsxAgentManager"
    parsed = request.params["agencyConfigInfo"]
    assert isinstance(parsed.scope, eam.Agency.ComputeResourceScope)
    assert isinstance(parsed.agentVmNetwork[0], vim.dvs.DistributedVirtualPortgroup)
    assert request.params["initialGoalState"] == "enabled"


def test_parse_request_collects_repeated_array_elements() -> None:
    request = soap.parse_request(
        _request(eam.Agency("agency-1"), "Resolve", [3, 1, 2]), "eam.version.version7_5", PARAM_TYPES
    )
    assert (request.method, type(request.this), request.params) == (
        "Resolve",
        eam.Agency,
        {"issueKey": [3, 1, 2]},
    )


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<x", "well-formed"),
        (b"<a/>", "SOAP 1.1 envelope"),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            "names no method",
        ),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
            b'<Resolve xmlns="urn:eam"><bogus>1</bogus></Resolve></e:Body></e:Envelope>',
            "no parameter 'bogus'",
        ),
    ],
)
def test_parse_request_refuses_what_is_not_an_eam_call(body: bytes, complaint: str) -> None:
    with pytest.raises(soap.RequestError, match=complaint):
        soap.parse_request(body, "eam.version.version7_5", PARAM_TYPES)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ('vmware_soap_session="52ab-cd"', "52ab-cd"),
        ("vmware_soap_session=52ab", "52ab"),
        ('other=1; vmware_soap_session="x y"; Path=/', "x y"),
        ('vmware_soap_session=""', None),
        ("other=1", None),
        (None, None),
    ],
)
def test_session_cookie(header: str | None, value: str | None) -> None:
    assert session_cookie(header) == value


class _CountingChecker(VcenterSessionChecker):
    """Answers from a table instead of vCenter, counting how often vCenter would be asked."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__("http://127.0.0.1:1/sdk", cache_seconds=1.5, clock=lambda: clock[0])
        self.asked = 0

    def _ask(self, target: Any, cookie: str) -> Caller | None:
        self.asked += 1
        return Caller("root") if cookie == "good" else None


def test_checker_caches_answers_for_at_most_its_cache_time() -> None:
    clock = [100.0]
    checker = _CountingChecker(clock)
    assert checker("good") == Caller("root") and checker("good") == Caller("root")
    assert checker("bad") is None and checker("bad") is None
    assert checker.asked == 2
    clock[0] += 1.6
    checker("good")
    assert checker.asked == 3
    checker.set_target("http://127.0.0.1:2/sdk")  # a new vCenter: nothing cached is trusted
    checker("good")
    assert checker.asked == 4


def test_checker_target_rules() -> None:
    with pytest.raises(VcenterUnreachable, match="set_target"):
        VcenterSessionChecker()("cookie")
    with pytest.raises(ValueError, match="thumbprint"):
        VcenterSessionChecker("https://127.0.0.1:8989/sdk")
    with pytest.raises(ValueError, match="loopback"):
        VcenterSessionChecker("http://192.0.2.1/sdk")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        VcenterSessionChecker(cache_seconds=5)


def test_checker_reports_an_unreachable_vcenter() -> None:
    checker = VcenterSessionChecker("http://127.0.0.1:9/sdk", timeout=2)  # port 9 (discard): nothing listens
    with pytest.raises(VcenterUnreachable, match=r"127\.0\.0\.1:9"):
        checker("cookie")
