"""The direct backend's lab world: a vcsim without EAM, the package server, controllers on a state dir.

The fixture is ``direct`` in tests/integration/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentvm.cli.run import DirectEngine, open_direct_engine
from agentvm.controller.run import Controller
from agentvm.lab.packages import PackageServer
from agentvm.lab.vcsim import VcsimInfo
from agentvm.model.agency import PowerState
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.inventory import VirtualMachine
from agentvm.spec import load_spec
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session
from tests.support.controller_lab import EXAMPLES, FAST


def connection(info: VcsimInfo) -> VCenterConnection:
    return VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )


@dataclass
class Direct:
    vcsim: VcsimInfo
    env: dict[str, str]
    session: Session  # the test's own: to look and to break things
    state_dir: Path
    running: list[tuple[Controller, DirectEngine, Session]] = field(default_factory=list)

    def start(self) -> Controller:
        """A controller with the direct backend on ``state_dir``, as ``agentvm run --backend direct``."""
        desired = load_spec(EXAMPLES / "contrail.yaml", env=self.env)
        conn = connection(self.vcsim)
        engine = open_direct_engine(conn, desired, self.state_dir, timeout=30.0)
        session = Session.connect(conn, timeout=30.0)
        controller = Controller(desired, session, backend=engine.backend, settings=FAST).start()
        self.running.append((controller, engine, session))
        return controller

    def stop(self) -> None:
        while self.running:
            controller, engine, session = self.running.pop()
            try:
                controller.stop()
                assert not controller.join(0), "the controller did not stop"
            finally:
                engine.close()
                session.logout()

    def agent_vms(self) -> list[VirtualMachine]:
        vms = read_inventory(self.session, extra_config_prefix="guestinfo.").vms
        return sorted((v for v in vms if v.name.startswith("contrail-vm")), key=lambda v: v.name)


def green(direct: Direct, controller: Controller) -> list[VirtualMachine] | None:
    """The six agent VMs when the controller reports every agent green and each VM is on, else None."""
    if not controller.ready():
        return None
    report = controller.reconciler.report
    if not report.agencies or not all(a.status.green for a in report.agencies):
        return None
    vms = direct.agent_vms()
    if len(vms) != 6 or any(v.power_state is not PowerState.POWERED_ON for v in vms):
        return None
    return vms


def direct_world(vcsim: VcsimInfo, tmp_path: Path) -> Iterator[Direct]:
    """The lab's package server and a session on ``vcsim``; every controller started is stopped at the end."""
    packages = PackageServer().start()
    env = {
        "AGENTVM_URL": vcsim.url,
        "AGENTVM_USERNAME": vcsim.username,
        "AGENTVM_PASSWORD": vcsim.password,
        "AGENTVM_THUMBPRINT": vcsim.thumbprint,
        "AGENTVM_LAB_OVF_URL": packages.url,
    }
    session = Session.connect(connection(vcsim))
    world = Direct(vcsim, env, session, tmp_path / "state")
    try:
        yield world
    finally:
        try:
            world.stop()
        finally:
            session.logout()
            packages.stop()
