"""A vCenter URL that turns out to be an ESXi host (about.apiType HostAgent): ``plan``, ``apply`` and
``run --backend direct`` stop with one line naming the URL and saying to list the host under ``esxi:``
(with an example), exit 2, before logging in, and nothing changes on the host. It once gave a traceback
(``AttributeError ... 'FindExtension'``) and ``run`` looped on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvm.lab.esxi import EsxiFleet
from agentvm.lab.packages import PackageServer, examples_dir
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.session import Session
from tests.support.esxi_lab import collect_host_state, connected
from tests.support.lab_cli import agentvm

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def esx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VcsimInfo, str]]:
    """One standalone host simulator and the package server."""
    fleet = EsxiFleet(1, tmp_path_factory.mktemp("esxi"))
    packages = PackageServer().start()
    try:
        yield fleet.start()[0], packages.url
    finally:
        fleet.stop()
        packages.stop()


@pytest.mark.parametrize(
    "command",
    [["plan"], ["apply", "--timeout", "60"], ["run", "--backend", "direct", "--listen", "127.0.0.1:0"]],
    ids=["plan", "apply", "run-direct"],
)
def test_a_host_given_as_the_vcenter_is_named_with_the_fix(
    esx: tuple[VcsimInfo, str], command: list[str], tmp_path: Path
) -> None:
    host, ovf_url = esx
    spec = tmp_path / "contrail.yaml"
    spec.write_text((examples_dir() / "contrail.yaml").read_text())
    env = dict(
        os.environ,
        AGENTVM_URL=host.url,
        AGENTVM_USERNAME=host.username,
        AGENTVM_PASSWORD=host.password,
        AGENTVM_THUMBPRINT=host.thumbprint,
        AGENTVM_LAB_OVF_URL=ovf_url,
        AGENTVM_STATE_DIR=str(tmp_path / "state"),
        COLUMNS="250",
    )
    with connected(host) as si:
        before = collect_host_state(si)
    result = agentvm(*command, "-f", str(spec), env=env, timeout=90)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("agentvm:")]
    assert len(lines) == 1, result.stderr
    assert host.url in lines[0] and "HostAgent" in lines[0] and "esxi:" in lines[0]
    assert f"url: {host.url}" in lines[0]  # the entry to write instead, with this host's URL
    assert host.password not in result.stderr + result.stdout
    with connected(host) as si:
        assert collect_host_state(si) == before  # no VM, no vSwitch, no autostart entry


def test_a_host_session_refuses_a_vcenter_and_a_vcenter_session_a_host(
    vcsim: VcsimInfo, esx: tuple[VcsimInfo, str]
) -> None:
    def conn(info: VcsimInfo) -> VCenterConnection:
        return VCenterConnection(
            url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
        )

    with pytest.raises(ConfigurationError, match=r"is a vCenter \(about.apiType VirtualCenter\)"):
        Session(conn(vcsim), host_agent=True).login()
    host, _ = esx
    with pytest.raises(ConfigurationError, match=r"is an ESXi host \(about.apiType HostAgent\)"):
        Session(conn(host)).login()
    with Session(conn(host), host_agent=True) as session:
        assert session.content.about.apiType == "HostAgent" and session.logged_in
