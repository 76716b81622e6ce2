"""The lab's EAM as a plain pyVmomi EAM client sees it (no agentvm code on the client side).

A lab: vcsim (1 datacenter x 2 clusters x 3 hosts), the lab's EAM behind vcsim's /eam/sdk with the vCenter
session cookie, and the package server with examples/hello-agent. The fixture is ``lab_eam_world`` in
tests/integration/conftest.py.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyVim.connect import Connect, Disconnect
from pyVmomi import SoapStubAdapter, eam, vim, vmodl

from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab, LabInfo

TIMEOUT = 60.0


@dataclass
class World:
    lab: Lab
    info: LabInfo
    si: Any
    eam: Any  # eam.EsxAgentManager

    @property
    def ovf(self) -> str:
        return f"{self.info.ovf_url}/hello-agent/hello-agent.ovf"

    def names(self, kind: type) -> list[str]:
        """The names of every object of ``kind``, in one property-collector read (no race with deletes)."""
        content = self.si.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[
                pc.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        pc.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)
                    ],
                )
            ],
            propSet=[pc.PropertySpec(type=kind, pathSet=["name"])],
        )
        try:
            result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
            return sorted(o.propSet[0].val for o in (result.objects if result else []) if o.propSet)
        finally:
            view.Destroy()

    def agent_vm_names(self) -> list[str]:
        return [n for n in self.names(vim.VirtualMachine) if n.startswith("hello-agent")]

    def objects(self, kind: type) -> list[Any]:
        view = self.si.content.viewManager.CreateContainerView(self.si.content.rootFolder, [kind], True)
        try:
            return sorted(view.view, key=lambda o: o.name)
        finally:
            view.Destroy()


def vcenter(info: LabInfo) -> Any:
    ctx = ssl.create_default_context()
    return Connect(
        host=info.vcsim.host,
        port=info.vcsim.port,
        user=info.vcsim.username,
        pwd=info.vcsim.password,
        thumbprint=info.vcsim.thumbprint.replace(":", "").lower(),
        sslContext=ctx,
        version="vim.version.version11",
    )


def eam_manager(info: LabInfo, si: Any) -> Any:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the vCenter connection above pinned this very certificate
    stub = SoapStubAdapter(
        host=info.vcsim.host,
        port=info.vcsim.port,
        path="/eam/sdk",
        version="eam.version.version7_5",
        sslContext=ctx,
    )
    stub.cookie = si._stub.cookie
    return eam.EsxAgentManager("EsxAgentManager", stub)


def lab_eam_world(shape: Shape = Shape(), **options: Any) -> Iterator[World]:
    """A fresh lab, a pyVmomi vCenter connection and the lab's EAM behind vcsim's /eam/sdk.

    ``options``: more arguments of ``Lab`` (the lab's EAM's bounds, say).
    """
    lab = Lab(shape, **options)
    info = lab.start()
    si = vcenter(info)
    try:
        yield World(lab, info, si, eam_manager(info, si))
    finally:
        Disconnect(si)
        lab.stop()


def config(
    world: World,
    *,
    ovf: str | None = None,
    lists: bool = True,
    hook: bool = False,
    clusters: list[Any] | None = None,
) -> Any:
    clusters = clusters if clusters is not None else world.objects(vim.ClusterComputeResource)
    host = world.objects(vim.HostSystem)[0]
    cfg = eam.Agency.ConfigInfo(
        agencyName="hello",
        agentName="hello-agent",
        scope=eam.Agency.ComputeResourceScope(computeResource=clusters),
        agentConfig=[
            eam.Agent.ConfigInfo(
                ovfPackageUrl=ovf or world.ovf,
                ovfEnvironment=eam.Agent.OvfEnvironmentInfo(
                    ovfProperty=[eam.Agent.OvfEnvironmentInfo.OvfProperty(key="agent.message", value="hi")]
                ),
            )
        ],
        manuallyMarkAgentVmAvailableAfterProvisioning=hook,
    )
    if lists:
        cfg.agentVmDatastore = [host.datastore[0]]
        cfg.agentVmNetwork = [
            n
            for n in host.network
            if isinstance(n, vim.Network) and not isinstance(n, vim.dvs.DistributedVirtualPortgroup)
        ][:1]
    return cfg


def wait_until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def runtimes(agency: Any) -> list[Any]:
    return [a.AgentQueryRuntime() for a in agency.QueryAgent()]


def green(agency: Any, count: int | None = None) -> bool:
    rts = runtimes(agency)
    return (
        agency.AgencyQueryRuntime().status == "green"
        and (count is None or len(rts) == count)
        and all(r.status == "green" and r.vmPowerState == "poweredOn" for r in rts)
    )


def after_two_passes(world: World, agency: Any) -> None:
    """Return once the lab's EAM has observed and reconciled at least once after this call began.

    A pass that was under way when this is called may have looked at the world before; the second pass
    counted began after the first ended. Each pass is asked for by re-enabling the (enabled) ``agency``,
    an API call that changes nothing but makes the engine look again.
    """
    lab_eam = world.lab.eam
    assert lab_eam is not None and lab_eam.engine is not None, "the lab's EAM is not running"
    engine = lab_eam.engine

    def one_more_pass() -> None:
        target = engine.passes + 1
        agency.Agency_Enable()
        wait_until("the lab's EAM to look again", lambda: engine.passes >= target)

    one_more_pass()
    one_more_pass()
