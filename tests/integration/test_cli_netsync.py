"""``agentvm netsync plan | apply`` as a user runs them: a subprocess with the lab's environment
(``lab.env()``: vcsim, AGENTVM_SDN_URL, AGENTVM_VROUTER_MAP), ``--json`` output read back."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from agentvm.controller.netsync import agent_urls_from_agent_vms
from agentvm.lab.world import LabInfo
from agentvm.sdn.vrouter import VrouterAgentClient
from tests.support.netsync_lab import AGENTVM, VCenter, netsync

pytestmark = pytest.mark.lab


@pytest.fixture
def vc(lab: LabInfo) -> Iterator[VCenter]:
    center = VCenter(lab.vcsim)
    yield center
    center.session.logout()


def actions(out: dict[str, Any]) -> int:
    return sum(len(out[k]) for k in ("create", "update", "delete", "ports", "dvPortVlans"))


def ours(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Errors other than vcsim's uplink port group (a trunk: no single VLAN, rightly reported)."""
    return [e for e in out["errors"] if "DVUplinks" not in e["item"]]


def test_apply_converges_and_a_second_run_changes_nothing(lab: LabInfo, vc: VCenter) -> None:
    pg = vc.port_group("pg-cli", 800, ("10.80.0.0", "10.80.0.1", "10.80.0.10#20"))
    vc.run(vc.vm("cli-1", pg, host=0).PowerOnVM_Task(), "power on")

    code, planned = netsync(lab, "plan")
    assert code == 0 and ours(planned) == []
    assert {c["type"] for c in planned["create"]} >= {"SdnVirtualNetwork", "SdnVmi", "SdnInstanceIp"}
    code, applied = netsync(lab, "apply")
    assert code == 0, applied["applied"]["failures"]
    assert applied["applied"]["done"] == actions(applied) and applied["applied"]["failures"] == []

    code, again = netsync(lab, "plan")
    assert code == 0 and actions(again) == 0
    code, again = netsync(lab, "apply")
    assert code == 0 and actions(again) == 0 and again["applied"]["done"] == 0

    # the ports are on the emulated agent of host 0, enabled
    urls = json.loads(Path(lab.vrouter_map).read_text())
    with VrouterAgentClient(urls[vc.host_ids()[0]]) as agent:
        ports = [agent.get_port(c["port"]) for c in applied["ports"] if c["action"] == "add"]
    assert len(ports) == 2 and all(p is not None and p.enabled for p in ports)


def test_the_fifth_interface_on_a_host_is_a_vlan_exhaustion_error_and_the_rest_syncs(
    lab: LabInfo, vc: VCenter
) -> None:
    pg = vc.port_group("pg-full", 810, ("10.81.0.0", "10.81.0.1", "10.81.0.10#20"))
    for name, nics in (("full-1", 3), ("full-2", 2)):
        vc.run(vc.vm(name, pg, host=0, nics=nics).PowerOnVM_Task(), "power on")
    reserve = ("--reserve-vlans", "1-4090")  # 4091-4094 left: four interfaces per host

    code, out = netsync(lab, "apply", *reserve)
    assert code == 0, out["applied"]["failures"]
    (error,) = ours(out)
    assert error["kind"] == "vlan-exhausted"
    assert f"host {vc.host_ids()[0]} has no free VLAN left" in error["message"]
    assert "4 usable VLANs" in error["message"] and "move the VM to another host" in error["message"]
    adds = [c for c in out["ports"] if c["action"] == "add"]
    assert len(adds) == 4 and {d["vlan"] for d in out["dvPortVlans"]} == {4091, 4092, 4093, 4094}
    assert len([c for c in out["create"] if c["type"] == "SdnVmi"]) == 5  # its interface exists, portless

    code, again = netsync(lab, "apply", *reserve)
    assert code == 0 and actions(again) == 0 and [e["kind"] for e in ours(again)] == ["vlan-exhausted"]

    bad = subprocess.run(
        [AGENTVM, "netsync", "plan", "--reserve-vlans", "5-x"],
        env={**os.environ, **lab.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--reserve-vlans: '5-x' is not a VLAN or a range" in bad.stderr


def set_extra_config(vc: VCenter, vm: Any, values: dict[str, str]) -> None:
    options = [vim.option.OptionValue(key=k, value=v) for k, v in values.items()]
    vc.run(vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=options)), "set extraConfig")


def test_agents_are_found_from_their_agent_vms_fabric_ip(lab: LabInfo, vc: VCenter) -> None:
    pg = vc.port_group("pg-agents", 820, None)
    hosts = vc.host_ids()
    upgrade_old = vc.vm("contrail-old", pg, host=0, nics=0)
    set_extra_config(vc, upgrade_old, {"guestinfo.fabricIp": "10.10.0.99"})  # powered off: loses
    current = vc.vm("contrail-0", pg, host=0, nics=0)
    set_extra_config(vc, current, {"guestinfo.fabricIp": "10.10.0.11", "guestinfo.agentvm.address": "x"})
    vc.run(current.PowerOnVM_Task(), "power on")
    set_extra_config(vc, vc.vm("contrail-1", pg, host=1, nics=0), {"guestinfo.agentvm.address": "10.10.0.12"})
    set_extra_config(vc, vc.vm("contrail-2", pg, host=2, nics=0), {"guestinfo.fabricIp": "not-an-ip"})

    # only the resolver's answer is checked: nothing is sent to these (non-loopback) addresses
    assert agent_urls_from_agent_vms(vc.session) == {
        hosts[0]: "http://10.10.0.11:9091",
        hosts[1]: "http://10.10.0.12:9091",
    }
    assert agent_urls_from_agent_vms(vc.session, port=8085)[hosts[1]] == "http://10.10.0.12:8085"


def test_without_a_map_the_cli_asks_the_agent_vms(lab: LabInfo, vc: VCenter) -> None:
    """An agent VM whose fabric IP is 127.0.0.1 and a --vrouter-port that is host 0's emulated agent."""
    urls = json.loads(Path(lab.vrouter_map).read_text())
    host0 = vc.host_ids()[0]
    port = urls[host0].rsplit(":", 1)[1]
    assert urls[host0] == f"http://127.0.0.1:{port}"
    pg = vc.port_group("pg-nomap", 830, ("10.83.0.0", "10.83.0.1", "10.83.0.10#20"))
    set_extra_config(vc, vc.vm("contrail-0", pg, host=0, nics=0), {"guestinfo.fabricIp": "127.0.0.1"})
    vc.run(vc.vm("nomap-1", pg, host=0, nics=1).PowerOnVM_Task(), "power on")

    code, out = netsync(lab, "apply", "--vrouter-port", port, env={"AGENTVM_VROUTER_MAP": ""})
    assert code == 0, out["applied"]["failures"]
    (add,) = [c for c in out["ports"] if c["action"] == "add"]
    assert add["host"] == host0
    with VrouterAgentClient(urls[host0]) as agent:
        assert agent.get_port(add["port"]) is not None
