"""The netsync lab world: what a vSphere admin does on vcsim, and the SDN emulators netsync talks to.

The fixture is ``netsync_world`` in tests/integration/conftest.py; ``netsync()`` runs the CLI command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vim

from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.collector import property_spec, retrieve
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task


def login(info: VcsimInfo) -> Session:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    return Session.connect(conn)


class VCenter:
    """What a vSphere admin does in these tests, through SOAP (pyVmomi) on vcsim."""

    def __init__(self, info: VcsimInfo) -> None:
        self.session = login(info)
        s = self.session
        (dvs,) = retrieve(
            s, [vim.DistributedVirtualSwitch], [property_spec(vim.DistributedVirtualSwitch, ["uuid"])]
        )
        self.dvs, self.dvs_uuid = dvs.obj, str(dvs.props["uuid"])
        self.dc = retrieve(s, [vim.Datacenter], [property_spec(vim.Datacenter, ["vmFolder"])])[0]
        hosts = retrieve(s, [vim.HostSystem], [property_spec(vim.HostSystem, ["name", "parent"])])
        self.hosts = sorted(hosts, key=lambda h: str(h.props["name"]))
        self.next_port = 100

    def host_ids(self) -> list[str]:
        return [str(h.obj._moId) for h in self.hosts]

    @staticmethod
    def port_group_spec(name: str, vlan: int, override: bool = True) -> Any:
        v = vim.dvs.VmwareDistributedVirtualSwitch
        return vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
            name=name,
            type="earlyBinding",
            numPorts=16,
            defaultPortConfig=v.VmwarePortConfigPolicy(vlan=v.VlanIdSpec(vlanId=vlan, inherited=False)),
            policy=v.VMwarePortgroupPolicy(vlanOverrideAllowed=override),
        )

    def port_group(
        self,
        name: str,
        vlan: int,
        pool: tuple[str, str, str] | None = None,
        *,
        override: bool = True,
        dns: tuple[str, ...] = (),
    ) -> Any:
        """A DV port group (VLAN override allowed unless ``override`` is False); with ``pool`` (subnet,
        gateway, range) its IP pool, handing out ``dns`` as DNS servers."""
        spec = self.port_group_spec(name, vlan, override)
        wait_for_task(self.session, self.dvs.AddDVPortgroup_Task([spec]), what=f"add {name}")
        pgs = retrieve(
            self.session,
            [vim.dvs.DistributedVirtualPortgroup],
            [property_spec(vim.dvs.DistributedVirtualPortgroup, ["name"])],
        )
        pg = next(p.obj for p in pgs if p.props["name"] == name)
        if pool is not None:
            subnet, gateway, ranges = pool
            manager = self.session.content.ipPoolManager
            # vcsim keeps the pool as sent (a real vCenter sets the id it assigns): send that id
            next_id = 1 + max((int(p.id) for p in manager.QueryIpPools(self.dc.obj)), default=0)
            ip_pool = vim.vApp.IpPool(
                id=next_id,
                name=f"{name}-pool",
                ipv4Config=vim.vApp.IpPool.IpPoolConfigInfo(
                    subnetAddress=subnet,
                    netmask="255.255.255.0",
                    gateway=gateway,
                    range=ranges,
                    dhcpServerAvailable=True,
                    ipPoolEnabled=True,
                    dns=list(dns),
                ),
                networkAssociation=[vim.vApp.IpPool.Association(network=pg, networkName=name)],
            )
            assert manager.CreateIpPool(self.dc.obj, ip_pool) == next_id
        return pg

    def allow_vlan_override(self, pg: Any, name: str, vlan: int) -> None:
        """What the admin does once told: let the port group's ports carry a VLAN of their own."""
        spec = self.port_group_spec(name, vlan, override=True)
        self.run(pg.ReconfigureDVPortgroup_Task(spec), f"allow VLAN override on {name}")

    def vm(self, name: str, pg: Any, host: int, nics: int = 2) -> Any:
        """A VM with ``nics`` NICs on ``pg``, each on a DV port of its own, on host number ``host``."""
        changes = []
        for i in range(nics):
            port = vim.dvs.PortConnection(
                switchUuid=self.dvs_uuid, portgroupKey=pg._moId, portKey=str(self.next_port)
            )
            self.next_port += 1
            card = vim.vm.device.VirtualVmxnet3(
                key=-(i + 1),
                backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port),
            )
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=card))
        spec = vim.vm.ConfigSpec(
            name=name,
            guestId="otherGuest",
            files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
            deviceChange=changes,
        )
        compute = retrieve(
            self.session,
            [vim.ComputeResource],
            [property_spec(vim.ComputeResource, ["host", "resourcePool"])],
        )
        target = self.hosts[host].obj
        pool = next(c.props["resourcePool"] for c in compute if target in c.props["host"])
        return wait_for_task(
            self.session, self.dc.props["vmFolder"].CreateVM_Task(spec, pool, target), what=f"create {name}"
        )

    def run(self, task: Any, what: str) -> None:
        wait_for_task(self.session, task, what=what)


@dataclass
class Sdn:
    config_api: sdn_emulator.RunningConfigApi
    agents: dict[str, vrouter_emulator.RunningAgent]
    api: ConfigApiClient
    db: Path

    def clients(self) -> dict[str, VrouterAgentClient]:
        return {host: VrouterAgentClient(agent.url) for host, agent in self.agents.items()}

    def restart_config_api(self) -> None:
        self.api.close()
        self.config_api.stop()
        self.config_api = sdn_emulator.start(self.db)
        self.api = ConfigApiClient(self.config_api.url)

    def ports(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {host: agent.ports() for host, agent in self.agents.items()}


def netsync_world(vcsim: VcsimInfo, tmp_path: Path) -> Iterator[tuple[VCenter, Sdn]]:
    """An admin's session on ``vcsim``, a config-API emulator on ``tmp_path`` and a vRouter agent per host."""
    vc = VCenter(vcsim)
    db = tmp_path / "config-api.sqlite"
    api = sdn_emulator.start(db)
    sdn = Sdn(api, vrouter_emulator.start_many(vc.host_ids()), ConfigApiClient(api.url), db)
    yield vc, sdn
    sdn.api.close()
    sdn.config_api.stop()
    for agent in sdn.agents.values():
        agent.stop()
    vc.session.logout()


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {check.__doc__ or check}")


AGENTVM = str(Path(sys.executable).parent / "agentvm")


def netsync(lab: LabInfo, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``agentvm netsync <args> --json``; its exit code and parsed output."""
    full_env = {**os.environ, **lab.env(), **(env or {})}
    for key, value in list(full_env.items()):
        if value == "":
            del full_env[key]
    done = subprocess.run(
        [AGENTVM, "netsync", *args, "--json"], env=full_env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)
