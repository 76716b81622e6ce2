"""``agentvm run -f examples/contrail-esxi.yaml`` on three standalone ESXi hosts of the lab
(``Lab(esxi=3, vcenter=False)``), as a user runs it (a child process, JSON logs, the API on port 0), each
host read back with bare pyVmomi: every host gets its agent with its own fabric address; an agent powered
off is powered on; one deleted is redeployed with the same address; a host restarted (an empty inventory)
is reconnected and its agent redeployed, green; with one host stopped the other two still heal a power-off
and the status (API) names the stopped host and why; status validates against the schema; SIGTERM
releases the leases (the next run takes them at once), a kill -9'd run's are taken over after one TTL.

The heal tests drop the example's hostNetwork section (tests/integration/test_hostnet_esxi.py covers it
with the one-shot commands); the last test runs the example as shipped, its fabric prepared on every host.
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from pyVim.task import WaitForTask
from pyVmomi import vim

from agentvm.controller.status import status_schema
from agentvm.lab.packages import examples_dir
from agentvm.lab.world import Lab, LabInfo
from tests.support.controller_lab import RunChild
from tests.support.esxi_lab import connected, reachable, restart_host, the_host

pytestmark = pytest.mark.lab

ADDRESSES = ["10.10.0.10", "10.10.0.11", "10.10.0.12"]  # esx-01..03, as apply gives them


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    world = Lab(esxi=3, vcenter=False)
    with world:
        yield world


@pytest.fixture(scope="module")
def info(lab: Lab) -> LabInfo:
    assert lab.info is not None
    return lab.info


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    doc = yaml.safe_load((examples_dir() / "contrail-esxi.yaml").read_text())
    del doc["agencies"][0]["hostNetwork"]
    path = tmp_path / "contrail-esxi.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Run(RunChild):
    """One ``agentvm run`` child on the lab's standalone hosts."""

    def __init__(self, info: LabInfo, spec: Path, state: Path, *extra: str) -> None:
        env = {**info.env(), "AGENTVM_API_TOKEN": "test-token-123", "PATH": "/usr/bin:/bin"}
        env["AGENTVM_STATE_DIR"] = str(state)
        args = ["run", "-f", str(spec), "--listen", "127.0.0.1:0", "--log-format", "json"]
        args += ["--poll", "0.2", "--idle-poll", "0.5", "--resync", "5", "--lease-ttl", "4", *extra]
        super().__init__(env, args)

    def count(self, match: Callable[[dict[str, Any]], bool], n: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until ``n`` lines seen so far (before ``listen`` too) match; those lines."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.seen if match(r)]
            if len(found) >= n or time.monotonic() > deadline:
                assert len(found) >= n, (found, "".join(self.raw[-40:]))
                return found
            with contextlib.suppress(AssertionError):
                self.wait_line(match, min(1.0, max(0.1, deadline - time.monotonic())))

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/status", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in self.status()["standalone"]}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def green(host: dict[str, Any]) -> bool:
    """The host's entry says reachable, and its one agent is green and powered on."""
    if not host["reachable"] or len(host["agencies"]) != 1:
        return False
    agency = host["agencies"][0]
    rows = [h for c in agency["clusters"] for h in c["hosts"]]
    return agency["status"] == "green" and [r["powerState"] for r in rows] == ["poweredOn"]


def all_green(run: Run, names: tuple[str, ...] = ("esx-01", "esx-02", "esx-03")) -> bool:
    hosts = run.hosts()
    return all(green(hosts[n]) for n in names)


def agent_vm(info: LabInfo, index: int) -> dict[str, Any] | None:
    """Host ``index``'s one VM (its name, power state, fabric address), None when it has none."""
    with connected(info.esxi[index]) as si:
        dc, _, _ = the_host(si)
        vms = list(dc.vmFolder.childEntity)
        assert len(vms) <= 1, [vm.name for vm in vms]
        if not vms:
            return None
        vm = vms[0]
        extra = {o.key: o.value for o in vm.config.extraConfig}
        return {
            "name": vm.name,
            "power": str(vm.runtime.powerState),
            "fabricIp": extra.get("guestinfo.fabricIp"),
            "moid": vm._moId,
        }


def power_off(info: LabInfo, index: int) -> None:
    with connected(info.esxi[index]) as si:
        dc, _, _ = the_host(si)
        (vm,) = dc.vmFolder.childEntity
        WaitForTask(vm.PowerOffVM_Task())


def delete(info: LabInfo, index: int) -> str:
    with connected(info.esxi[index]) as si:
        dc, _, _ = the_host(si)
        (vm,) = dc.vmFolder.childEntity
        moid = str(vm._moId)
        WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())
        return moid


def powered_on_with(info: LabInfo, index: int, address: str, not_moid: str | None = None) -> bool:
    vm = agent_vm(info, index)
    return (
        vm is not None
        and vm["power"] == "poweredOn"
        and vm["fabricIp"] == address
        and (not_moid is None or vm["moid"] != not_moid)
    )


def waited(record: dict[str, Any]) -> float:
    """Seconds a ``lease`` log line says the run waited for the host's lease (0: none)."""
    found = re.search(r"after waiting ([0-9.]+) s", str(record["message"]))
    return float(found.group(1)) if found else 0.0


def resolved(run: Run, host: str) -> float:
    """The run's VmPoweredOff resolves that succeeded on ``host`` so far (``/metrics``)."""
    metrics = httpx.get(f"{run.url}/metrics", timeout=10).text
    line = f'agentvm_resolves_succeeded_total{{host="{host}",kind="VmPoweredOff"}} '
    (value,) = [row.removeprefix(line) for row in metrics.splitlines() if row.startswith(line)]
    return float(value)


def heals(run: Run, kind: str) -> int:
    """Actions of ``kind`` (PowerOn, DestroyVm, ...) the run's engines logged carrying out so far."""
    while True:
        try:
            run.seen.append(run.lines.get_nowait())
        except queue.Empty:
            break
    return sum(1 for r in run.seen if str(r.get("message", "")).startswith(f"carried out {kind} "))


def test_run_deploys_and_heals_a_power_off_and_a_deleted_agent_with_its_address(
    info: LabInfo, spec: Path, tmp_path: Path
) -> None:
    run = Run(info, spec, tmp_path / "state")
    try:
        wait_for(lambda: all_green(run), "every host green", 180)
        for index in range(3):
            assert powered_on_with(info, index, ADDRESSES[index]), agent_vm(info, index)
        document = run.status()
        jsonschema.validate(document, status_schema())
        assert [h["name"] for h in document["standalone"]] == ["esx-01", "esx-02", "esx-03"]
        assert all(h["error"] is None for h in document["standalone"])

        power_off(info, 0)  # esx-01's agent powered off → on
        wait_for(lambda: powered_on_with(info, 0, ADDRESSES[0]), "esx-01's agent powered on again", 60)

        gone = delete(info, 1)  # esx-02's agent deleted → redeployed, same fabric address
        wait_for(
            lambda: powered_on_with(info, 1, ADDRESSES[1], not_moid=gone), "esx-02's agent redeployed", 120
        )
        wait_for(lambda: all_green(run), "every host green again", 60)
        assert powered_on_with(info, 2, ADDRESSES[2])  # esx-03 left as it was

        metrics = httpx.get(f"{run.url}/metrics", timeout=10).text
        for name in ("esx-01", "esx-02", "esx-03"):
            assert f'agentvm_host_connected{{host="{name}"}} 1' in metrics
        assert run.stop() == 0
        run.wait_line(lambda r: r.get("action") == "exit", 10)
        assert info.esxi[0].password not in "".join(run.raw)
    finally:
        run.kill()
    # SIGTERM released every host's lease: the next run holds them at once, not after a TTL
    again = Run(info, spec, tmp_path / "state")
    try:
        took = again.count(lambda r: r.get("action") == "lease", 3, 30)
        assert all(waited(r) < 4.0 for r in took), took  # less than one TTL (--lease-ttl 4)
        wait_for(lambda: all_green(again), "every host green under the second run", 120)
    finally:
        again.kill()


def test_one_host_stopped_the_others_still_heal_and_status_says_which_and_why(
    lab: Lab, info: LabInfo, spec: Path, tmp_path: Path
) -> None:
    run = Run(info, spec, tmp_path / "state")
    try:
        wait_for(lambda: all_green(run), "every host green", 180)
        lab.stop_esxi("esx-02")
        down = wait_for(
            lambda: (h := run.hosts()["esx-02"]) and not h["reachable"] and h, "esx-02 shown unreachable", 60
        )
        assert down["error"].startswith(f"esx-02 ({info.esxi[1].url}): "), down
        document = run.status()
        jsonschema.validate(document, status_schema())
        power_ons = heals(run, "PowerOn")
        healed = {name: resolved(run, name) for name in ("esx-01", "esx-03")}
        power_off(info, 0)
        power_off(info, 2)
        wait_for(lambda: powered_on_with(info, 0, ADDRESSES[0]), "esx-01's agent on again", 60)
        wait_for(lambda: powered_on_with(info, 2, ADDRESSES[2]), "esx-03's agent on again", 60)
        wait_for(lambda: all_green(run, ("esx-01", "esx-03")), "esx-01 and esx-03 green", 60)
        assert heals(run, "PowerOn") >= power_ons + 2  # both heals were the run's, while esx-02 was down
        assert all(resolved(run, name) == healed[name] + 1 for name in healed)  # one each, per host
        hosts = run.hosts()
        assert not hosts["esx-02"]["reachable"] and "esx-02" in hosts["esx-02"]["error"]
        metrics = httpx.get(f"{run.url}/metrics", timeout=10).text
        assert 'agentvm_host_connected{host="esx-02"} 0' in metrics
        assert 'agentvm_host_connected{host="esx-01"} 1' in metrics

        restarted = lab.start_esxi("esx-02")  # back with an empty inventory: reconnected, redeployed
        assert restarted.url == info.esxi[1].url
        run.wait_line(lambda r: r.get("action") == "reconnected" and "esx-02" in r["message"], 120)
        wait_for(lambda: all_green(run), "every host green after esx-02 came back", 120)
        assert powered_on_with(info, 1, ADDRESSES[1])
    finally:
        run.kill()


def test_a_restarted_host_is_reconnected_and_its_agent_checked(
    lab: Lab, info: LabInfo, spec: Path, tmp_path: Path
) -> None:
    run = Run(info, spec, tmp_path / "state")
    try:
        wait_for(lambda: all_green(run), "every host green", 180)
        restart_host(lab, "esx-03")  # stopped and started: a new process, an empty inventory
        run.wait_line(lambda r: r.get("action") == "reconnected" and "esx-03" in r["message"], 120)
        wait_for(lambda: all_green(run), "every host green after the restart", 120)
        assert powered_on_with(info, 2, ADDRESSES[2])
        assert [powered_on_with(info, i, ADDRESSES[i]) for i in (0, 1)] == [True, True]
    finally:
        run.kill()


def test_a_killed_runs_leases_are_taken_over_after_one_ttl(info: LabInfo, spec: Path, tmp_path: Path) -> None:
    first = Run(info, spec, tmp_path / "state")
    try:
        first.count(lambda r: r.get("action") == "lease", 3, 60)
    finally:
        first.kill()  # SIGKILL: its lease records stay live on every host
    started = time.monotonic()
    second = Run(info, spec, tmp_path / "state")
    try:
        took = second.count(lambda r: r.get("action") == "lease", 3, 60)
        assert all(waited(r) >= 4.0 for r in took), took  # one TTL (--lease-ttl 4) after it saw them
        assert time.monotonic() - started >= 4.0
        wait_for(lambda: all_green(second), "every host green under the second run", 120)
    finally:
        second.kill()


def test_a_host_down_at_start_is_served_once_it_is_up(
    lab: Lab, info: LabInfo, spec: Path, tmp_path: Path
) -> None:
    """run starts with the other two (status names the missing one and why) and serves esx-02 once it
    starts: its address is the one the fleet's IP plan gave it at start."""
    lab.stop_esxi("esx-02")
    try:
        run = Run(info, spec, tmp_path / "state")
        try:
            wait_for(lambda: all_green(run, ("esx-01", "esx-03")), "esx-01 and esx-03 green", 120)
            hosts = run.hosts()
            assert not hosts["esx-02"]["reachable"]
            assert hosts["esx-02"]["error"].startswith(f"esx-02 ({info.esxi[1].url}): ")
            assert "connection refused" in hosts["esx-02"]["error"]
            jsonschema.validate(run.status(), status_schema())
            assert httpx.get(f"{run.url}/readyz", timeout=10).status_code == 503
            lab.start_esxi("esx-02")
            wait_for(lambda: all_green(run), "every host green once esx-02 is up", 120)
            assert powered_on_with(info, 1, ADDRESSES[1])
            assert httpx.get(f"{run.url}/readyz", timeout=10).status_code == 200
        finally:
            run.kill()
    finally:
        if not reachable(info.esxi[1]):
            lab.start_esxi("esx-02")


def test_run_of_the_example_as_shipped_prepares_each_hosts_fabric_before_its_agent(tmp_path: Path) -> None:
    """With its hostNetwork.fabric: every host gets vSwitch1 on vmnic1 and contrail-fabric, and its agent VM's
    fabric NIC is on that port group (read back on each host). Hosts of their own: the module's hosts carry
    the other tests' agents already, deployed without hostNetwork, which this run would adopt as they are."""
    with Lab(esxi=3, vcenter=False) as info:
        run_example(info, tmp_path)


def run_example(info: LabInfo, tmp_path: Path) -> None:
    run = Run(info, examples_dir() / "contrail-esxi.yaml", tmp_path / "state")
    try:
        wait_for(lambda: all_green(run), "every host green", 180)
        for index, host in enumerate(info.esxi):
            assert powered_on_with(info, index, ADDRESSES[index]), agent_vm(info, index)
            with connected(host) as si:
                dc, _, esx = the_host(si)
                net = esx.configManager.networkSystem.networkInfo
                (switch,) = [s for s in net.vswitch if s.name == "vSwitch1"]
                assert list(switch.spec.bridge.nicDevice) == ["vmnic1"]
                assert [p.spec.vswitchName for p in net.portgroup if p.spec.name == "contrail-fabric"] == [
                    "vSwitch1"
                ]
                (vm,) = dc.vmFolder.childEntity
                nics = [
                    d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
                ]
                assert nics[0].backing.deviceName == "contrail-fabric", [n.backing.deviceName for n in nics]
        assert run.stop() == 0
    finally:
        run.kill()
