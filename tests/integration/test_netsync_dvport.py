"""The DV port first, then the vRouter: netsync on the lab when a NIC's DV port must change its VLAN.

A VM's two NICs on one port group and one host both sit on the port group's VLAN; netsync keeps it for one
and gives the other a VLAN of its own, which it sets on that NIC's DV port (ReconfigureDVPort) before the
host's vRouter agent hears of it. vcsim refuses the change while the port group does not allow VLAN
override, which is the fault injected here; allowing it is the fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agentvm.controller.netsync import NetsyncWatch, sync_once
from agentvm.core.heal import Backoff
from agentvm.core.retry import Retries
from agentvm.lab.vcsim import VcsimInfo
from agentvm.vsphere.networks import read_dv_port_vlans
from agentvm.vsphere.session import Session
from tests.support.netsync_lab import Sdn, VCenter, eventually, login

pytestmark = pytest.mark.lab


@pytest.fixture
def world(netsync_world: tuple[VCenter, Sdn]) -> tuple[VCenter, Sdn]:
    """vcsim and the SDN emulators (tests/integration/conftest.py)."""
    return netsync_world


def test_the_dv_port_is_set_and_read_back_before_the_vrouter_is_told(world: tuple[VCenter, Sdn]) -> None:
    vc, sdn = world
    pg = vc.port_group("pg-o", 120, ("10.12.0.0", "10.12.0.1", "10.12.0.10#20"))
    vc.run(vc.vm("o-1", pg, host=0).PowerOnVM_Task(), "power on")
    host = vc.host_ids()[0]
    calls: list[tuple[float, str]] = []  # (when the answer came, SOAP method)
    vc.session.call_listeners.append(lambda method, _s, _f: calls.append((time.perf_counter(), method)))

    report = sync_once(vc.session, sdn.api, sdn.clients())
    assert report.ok, report.failures
    (change,) = report.plan.dv_port_vlans  # one NIC keeps the port group's VLAN, the other gets its own
    reconfigured = [t for t, m in calls if m == "ReconfigureDVPort_Task"]
    read_back = [t for t, m in calls if m == "FetchDVPorts" and reconfigured and t > reconfigured[0]]
    told = [t for t, method, path in sdn.agents[host].journal() if (method, path) == ("POST", "/port")]
    enabled = [
        t for t, method, path in sdn.agents[host].journal() if path == f"/enable-port/{change.vmi_uuid}"
    ]
    assert reconfigured and read_back and told and enabled
    # every port call of that host came after its DV port was changed and read back
    assert min(told) > read_back[0] > reconfigured[0]
    assert sdn.ports()[host][change.vmi_uuid]["rx-vlan-id"] == change.vlan
    assert read_dv_port_vlans(vc.session, vc.session.moref(vc.dvs), [change.port_key]) == {
        change.port_key: change.vlan
    }


@pytest.fixture
def watching(world: tuple[VCenter, Sdn], vcsim: VcsimInfo) -> Iterator[tuple[VCenter, Sdn, NetsyncWatch]]:
    vc, sdn = world
    session: Session = login(vcsim)
    clients = sdn.clients()
    # the full resync an hour away, as by default: only the items' own retries can mend anything here
    watch = NetsyncWatch(
        session,
        sdn.api,
        lambda: clients,
        networks_interval=3600.0,
        resync_interval=3600.0,
        backoff=Retries(Backoff(base=0.5, cap=2.0)),
    )
    yield vc, sdn, watch
    watch.stop()
    for client in clients.values():
        client.close()
    session.logout()


def test_a_refused_dv_port_change_is_not_told_to_the_vrouter_and_is_retried_once_fixed(
    watching: tuple[VCenter, Sdn, NetsyncWatch],
) -> None:
    vc, sdn, watch = watching
    pg = vc.port_group("pg-lock", 130, ("10.13.0.0", "10.13.0.1", "10.13.0.10#20"), override=False)
    vc.run(vc.vm("lock-1", pg, host=0).PowerOnVM_Task(), "power on")
    host = vc.host_ids()[0]
    watch.start()

    def refused() -> bool:
        report = watch.last_report
        return report is not None and bool(report.dv_port_failures)

    eventually(refused, 20)
    report = watch.last_report
    assert report is not None
    (change,) = report.plan.dv_port_vlans
    (failure,) = report.dv_port_failures
    assert change.port_key in failure.item
    # the interface whose DV port still carries the port group's VLAN is not on the vRouter; the other is
    ports = sdn.ports()[host]
    assert change.vmi_uuid not in ports and len(ports) == 1
    assert {p["rx-vlan-id"] for p in ports.values()} == {130}
    full_before = watch.full_syncs

    vc.allow_vlan_override(pg, "pg-lock", 130)
    fixed = time.monotonic()

    def converged() -> bool:
        ports = sdn.ports()[host]
        on_port = read_dv_port_vlans(vc.session, vc.session.moref(vc.dvs), [change.port_key])
        return (
            change.vmi_uuid in ports
            and ports[change.vmi_uuid]["link-state"] == 1
            and on_port.get(change.port_key) == ports[change.vmi_uuid]["rx-vlan-id"] != 130
        )

    eventually(converged, 30)
    print(f"\nDV port fixed -> converged in {time.monotonic() - fixed:.1f} s")
    assert watch.full_syncs > full_before  # the retry of the failed item, not the hourly resync
    assert watch.wait_idle(15)
    assert watch.backoff.due == {} or set(watch.backoff.due) <= {"agents"}
