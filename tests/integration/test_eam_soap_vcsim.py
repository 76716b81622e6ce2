"""The EAM emulator behind the lab's vcsim: EAM calls through vcsim's /eam/sdk with a vim25 session cookie.

The emulator starts first (port 0) so that vcsim can be given its URL; the session checker learns vcsim's
URL afterwards (``set_target``). Sessions are checked against vcsim itself, so Logout ends EAM access.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Connect, Disconnect
from pyVmomi import SoapStubAdapter, eam, vim

from agentvm.lab.eam_emulator import EmulatorServer, VcenterSessionChecker, start
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import MoRef
from tests.support.certs import make_certificate
from tests.support.memory_agent_manager import MemoryAgentManager
from tests.support.vcsim_soap import extension, login_by_certificate

pytestmark = pytest.mark.lab


@pytest.fixture
def checker() -> VcenterSessionChecker:
    return VcenterSessionChecker(cache_seconds=0.5)


@pytest.fixture
def emulator(checker: VcenterSessionChecker) -> Iterator[EmulatorServer]:
    manager = MemoryAgentManager(
        {MoRef("ClusterComputeResource", "domain-c1"): [(MoRef("HostSystem", "host-1"), "h1")]}
    )
    srv = start(manager, checker)
    yield srv
    srv.stop()


def _thumbprint(info: VcsimInfo) -> str:
    return info.thumbprint.replace(":", "").lower()


def _login(info: VcsimInfo) -> Any:
    # a verifying context: pyVmomi consults the pinned thumbprint only when verification fails
    return Connect(
        host=info.host,
        port=info.port,
        user=info.username,
        pwd=info.password,
        thumbprint=_thumbprint(info),
        sslContext=ssl.create_default_context(),
        version="vim.version.version11",
    )


def _eam(info: VcsimInfo, session_id: str | None) -> Any:
    stub = SoapStubAdapter(
        url=info.eam_url,
        version="eam.version.version7_5",
        sslContext=ssl.create_default_context(),
        thumbprint=_thumbprint(info),
        sessionId=session_id,
    )
    return eam.EsxAgentManager("EsxAgentManager", stub)


def test_eam_through_vcsim_uses_the_vim_session_until_logout(
    emulator: EmulatorServer, checker: VcenterSessionChecker, vcsim_factory: Callable[..., VcsimInfo]
) -> None:
    info = vcsim_factory(eam_backend=emulator.url)
    checker.set_target(info.url, info.thumbprint)
    si = _login(info)
    mgr = _eam(info, si._stub.GetSessionId())

    assert mgr.QueryAgency() == []
    config = eam.Agency.ConfigInfo(
        agencyName="hello",
        agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl="http://127.0.0.1:9/a.ovf")],
        scope=eam.Agency.ComputeResourceScope(computeResource=[vim.ClusterComputeResource("domain-c1")]),
    )
    agency = mgr.CreateAgency(config, "enabled")
    assert agency.QuerySolutionId() == info.username  # the vim session's user owns the agency
    assert len(agency.QueryAgent()) == 1

    with pytest.raises(eam.fault.InvalidLogin):
        _eam(info, None).QueryAgency()
    with pytest.raises(eam.fault.InvalidLogin):
        _eam(info, "52c0ffee-not-a-session").QueryAgency()

    Disconnect(si)  # Logout
    deadline = time.monotonic() + 5  # the checker caches an answer for 0.5 s
    while True:
        try:
            mgr.QueryAgency()
        except eam.fault.InvalidLogin:
            break
        assert time.monotonic() < deadline, "EAM still accepted the session 5 s after Logout"
        time.sleep(0.1)


def test_checker_with_a_wrong_thumbprint_cannot_reach_vcenter(
    emulator: EmulatorServer, checker: VcenterSessionChecker, vcsim_factory: Callable[..., VcsimInfo]
) -> None:
    info = vcsim_factory(eam_backend=emulator.url)
    checker.set_target(info.url, "AB:" * 19 + "AB")
    si = _login(info)
    try:
        with pytest.raises(eam.fault.NoConnectionToVCenter):
            _eam(info, si._stub.GetSessionId()).QueryAgency()
    finally:
        Disconnect(si)


def test_an_extension_session_is_recognised_and_filtered(
    emulator: EmulatorServer, checker: VcenterSessionChecker, vcsim_factory: Callable[..., VcsimInfo]
) -> None:
    info = vcsim_factory(eam_backend=emulator.url)
    checker.set_target(info.url, info.thumbprint)
    key = "io.agentvm.eam-test"
    si = _login(info)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file, pem = make_certificate(Path(tmp), "solution")
        em = si.content.extensionManager
        em.RegisterExtension(extension(key))
        em.SetExtensionCertificate(key, pem)
        solution = login_by_certificate(info, key, cert_file, key_file)
    user_eam, solution_eam = _eam(info, si._stub.GetSessionId()), _eam(info, solution._stub.GetSessionId())
    config = eam.Agency.ConfigInfo(
        agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl="http://127.0.0.1:9/a.ovf")],
        scope=eam.Agency.ComputeResourceScope(computeResource=[vim.ClusterComputeResource("domain-c1")]),
    )
    config.agencyName = "the user's"
    users = user_eam.CreateAgency(config, "enabled")
    config.agencyName = "the solution's"
    solutions = solution_eam.CreateAgency(config, "enabled")

    assert solutions.QuerySolutionId() == key
    assert [a._moId for a in solution_eam.QueryAgency()] == [solutions._moId]
    assert {a._moId for a in user_eam.QueryAgency()} == {users._moId, solutions._moId}
    Disconnect(si)
