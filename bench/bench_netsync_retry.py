"""Benchmark: a DV port change refused, then fixed — how long until the network sync converges.

    .venv/bin/python bench/bench_netsync_retry.py [--fail-for 300]

``NetsyncWatch`` with its default settings (backoff, 30 s network re-read, hourly full resync) runs against
a fresh vcsim and the SDN/vRouter emulators. A VM with two NICs on a port group that does not allow VLAN
override is powered on: one NIC keeps the port group's VLAN, the other needs a VLAN of its own on its DV
port, which vCenter refuses. After ``--fail-for`` seconds the override is allowed (the fix); the figure is
the time from the fix until the DV port carries the VLAN the host's vRouter agent has for that interface,
its port enabled. Also printed: whether the agent was told the interface while its DV port was refused
(then the NIC's traffic, still tagged with the port group's VLAN, is taken for the other interface's).
Runs on 127.0.0.1 only; about ``--fail-for`` + a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.integration: the vSphere admin helper

from tests.integration.test_netsync_vcenter import VCenter, login

from agentvm.controller.netsync import NetsyncWatch
from agentvm.lab import sdn_emulator, vrouter_emulator
from agentvm.lab.vcsim import Shape, Vcsim
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.vrouter import VrouterAgentClient
from agentvm.vsphere.networks import read_dv_port_vlans

PG_VLAN = 130


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-for", type=float, default=300.0, help="seconds the DV port change is refused")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting after this many s")
    args = parser.parse_args()
    sim = Vcsim(Shape())
    tmp = Path(tempfile.mkdtemp(prefix="agentvm-bench-retry-"))
    vc = VCenter(sim.info)
    config_api = sdn_emulator.start(tmp / "config-api.sqlite")
    agents = vrouter_emulator.start_many(vc.host_ids())
    api = ConfigApiClient(config_api.url)
    clients = {h: VrouterAgentClient(a.url) for h, a in agents.items()}
    session = login(sim.info)
    watch = NetsyncWatch(session, api, lambda: clients)  # the defaults of ``agentvm run --netsync``
    try:
        pg = vc.port_group("pg-lock", PG_VLAN, ("10.13.0.0", "10.13.0.1", "10.13.0.10#20"), override=False)
        vc.run(vc.vm("lock-1", pg, host=0).PowerOnVM_Task(), "power on")
        host = vc.host_ids()[0]
        keys = ["100", "101"]
        watch.start()
        told_wrong = False
        deadline = time.monotonic() + args.fail_for
        while time.monotonic() < deadline:
            ports = agents[host].ports()
            on_port = read_dv_port_vlans(vc.session, vc.session.moref(vc.dvs), keys)
            vlans = {p["rx-vlan-id"] for p in ports.values()}
            if len(ports) == 2 and set(on_port.values()) != vlans:
                told_wrong = True
            time.sleep(0.5)
        vc.allow_vlan_override(pg, "pg-lock", PG_VLAN)
        fixed = time.monotonic()
        converged = None
        while time.monotonic() - fixed < args.timeout:
            ports = agents[host].ports()
            on_port = read_dv_port_vlans(vc.session, vc.session.moref(vc.dvs), keys)
            by_vlan = sorted(p["rx-vlan-id"] for p in ports.values() if p["link-state"] == 1)
            if len(by_vlan) == 2 and by_vlan == sorted(v for v in on_port.values() if v is not None):
                converged = time.monotonic() - fixed
                break
            time.sleep(0.2)
        shown = f"{converged:.1f} s" if converged is not None else f"not within {args.timeout:.0f} s"
        print(f"refused for {args.fail_for:.0f} s, then fixed: converged in {shown}")
        print(f"full syncs {watch.full_syncs}, incremental {watch.incremental_syncs}")
        print(f"vRouter told a VLAN its DV port did not carry while refused: {'yes' if told_wrong else 'no'}")
    finally:
        watch.stop()
        session.logout()
        for client in clients.values():
            client.close()
        api.close()
        config_api.stop()
        vrouter_emulator.stop_many(list(agents.values()))
        vc.session.logout()
        sim.stop()


if __name__ == "__main__":
    main()
