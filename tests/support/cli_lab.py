"""The CLI's lab world: a running lab, a vCenter session to check it with, and a folder for spec files.

The CLI runs in-process through typer's CliRunner with the lab's environment. The fixtures are
``cli_world`` and ``cli_world_per_module`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from typer.testing import CliRunner, Result

from agentvm.cli.main import app
from agentvm.eam.client import EamClient
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import InventorySnapshot, VirtualMachine
from agentvm.vsphere.extensions import find_extension
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


KEY = "org.tungsten.agentvm"


TIMEOUT = "120"


T = TypeVar("T")


@dataclass
class World:
    """A running lab, a vCenter session to check it with, and a folder for spec files."""

    lab: Lab
    info: LabInfo
    session: Session
    tmp: Path

    def run(self, *args: str, **env: str) -> Result:
        result = CliRunner().invoke(app, list(args), env={**self.run_env(), **env})
        return result

    def run_env(self) -> dict[str, str]:
        """The environment the commands run with: the lab's, and a state dir of this test's own."""
        return {**self.info.env(), "COLUMNS": "250", "AGENTVM_STATE_DIR": str(self.tmp / "state")}

    def spec(self, name: str = "contrail.yaml", text: str | None = None) -> Path:
        path = self.tmp / name
        path.write_text(text if text is not None else contrail_text())
        return path

    def snapshot(self) -> InventorySnapshot:
        return read_inventory(self.session, extra_config_prefix="guestinfo.")

    def agent_vms(self) -> list[VirtualMachine]:
        return sorted(
            (vm for vm in self.snapshot().vms if vm.name.startswith("contrail-vm")), key=lambda v: v.name
        )

    def fabric_ips(self) -> dict[str, str]:
        """Host moid -> the fabric IP its agent VM carries in guestinfo."""
        return {
            vm.host.value: vm.extra_config["guestinfo.fabricIp"]
            for vm in self.agent_vms()
            if vm.host is not None and "guestinfo.fabricIp" in vm.extra_config
        }

    def agencies(self) -> list[str]:
        return EamClient(self.session).query_agencies()

    def nothing_changed(self) -> None:
        """No extension, no AgentVM settings on any host, no agency, no agent VM."""
        assert find_extension(self.session, KEY) is None
        snapshot = self.snapshot()
        assert [h.agent_vm_datastore for h in snapshot.hosts] == [None] * len(snapshot.hosts)
        assert [h.agent_vm_network for h in snapshot.hosts] == [None] * len(snapshot.hosts)
        assert self.agencies() == []
        assert self.agent_vms() == []


def contrail_text(**replace: str) -> str:
    text = (EXAMPLES / "contrail.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def connect(info: LabInfo) -> Session:
    return Session.connect(
        VCenterConnection(
            url=info.vcsim.url,
            username=info.vcsim.username,
            password=Secret(info.vcsim.password),
            thumbprint=info.vcsim.thumbprint,
        )
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(check: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s")


def cli_world(tmp: Path) -> Iterator[World]:
    """A fresh lab and a session to check it; spec files and the commands' state dir go in ``tmp``."""
    lab = Lab()
    info = lab.start()
    session = connect(info)
    try:
        yield World(lab, info, session, tmp)
    finally:
        session.logout()
        lab.stop()


ONE_CLUSTER = {"      - /DC0/host/DC0_C1\n": ""}
