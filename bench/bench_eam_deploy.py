"""CreateAgency to all green through the lab's EAM, at several lab sizes.

A plain pyVmomi EAM client (as a solution would use) creates an agency over every cluster with the
hello-agent OVF; the table shows the wall time to all green and the vim25 calls the EAM made per host
deployed, which must not grow with the inventory. Run: .venv/bin/python bench/bench_eam_deploy.py [CxH ...]
"""

from __future__ import annotations

import ssl
import sys
import time
from typing import Any

from pyVim.connect import Connect, Disconnect
from pyVmomi import SoapStubAdapter, eam, vim

from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab


def measure(clusters: int, hosts: int, vms: int) -> tuple[int, float, float, int]:
    lab = Lab(Shape(clusters=clusters, hosts=hosts, vms=vms))
    info = lab.start()
    try:
        si = Connect(
            host=info.vcsim.host,
            port=info.vcsim.port,
            user=info.vcsim.username,
            pwd=info.vcsim.password,
            sslContext=ssl._create_unverified_context(),  # noqa: S323
            version="vim.version.version11",
        )
        ctx = ssl._create_unverified_context()  # noqa: S323 - loopback lab
        stub = SoapStubAdapter(
            host=info.vcsim.host,
            port=info.vcsim.port,
            path="/eam/sdk",
            version="eam.version.version7_5",
            sslContext=ctx,
        )
        stub.cookie = si._stub.cookie
        manager = eam.EsxAgentManager("EsxAgentManager", stub)
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.ClusterComputeResource], True
        )
        scope = list(view.view)
        host = scope[0].host[0]
        config = eam.Agency.ConfigInfo(
            agencyName="bench",
            agentName="bench-agent",
            scope=eam.Agency.ComputeResourceScope(computeResource=scope),
            agentConfig=[eam.Agent.ConfigInfo(ovfPackageUrl=f"{info.ovf_url}/hello-agent/hello-agent.ovf")],
            agentVmDatastore=[host.datastore[0]],
            agentVmNetwork=[n for n in host.network if type(n) is vim.Network][:1],
        )
        assert lab.eam is not None
        before = lab.eam.vim_calls
        started = time.monotonic()
        agency: Any = manager.CreateAgency(config, "enabled")
        total = clusters * hosts
        while True:
            runtime = agency.AgencyQueryRuntime()
            agents = agency.QueryAgent()
            if runtime.status == "green" and len(agents) == total:
                break
            if time.monotonic() - started > 600:
                raise RuntimeError("not green within 600 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        calls = lab.eam.vim_calls - before
        Disconnect(si)
        return total, elapsed, calls / total, vms * total
    finally:
        lab.stop()


def main() -> None:
    sizes = [s.split("x") for s in sys.argv[1:]] or [["2", "3"], ["4", "16"], ["8", "32"]]
    print(f"{'hosts':>6} {'workload VMs':>13} {'to all green':>13} {'vim25 calls/host':>17}")
    for c, h in sizes:
        for vms in (0, 2):
            total, elapsed, per_host, workload = measure(int(c), int(h), vms)
            print(f"{total:>6} {workload:>13} {elapsed:>12.2f}s {per_host:>17.1f}", flush=True)


if __name__ == "__main__":
    main()
