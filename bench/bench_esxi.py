"""agentvm on standalone ESXi hosts: apply's time and vim25 calls per host, against a bare pyVmomi floor.

Per size (lab ESXi simulators, ``Lab(esxi=N, vcenter=False)``): ``agentvm apply --json`` of
examples/contrail-esxi.yaml (without its hostNetwork section; ``--host-network`` keeps it) in a process of
its own, as a user runs it, hosts ``--hosts-at-once`` (8) at a time: the whole command's seconds, and per host
(from the ApplyResult's ``standalone`` entries) its seconds and vim25 calls, which include the login, the
plan, the lease on the host's datastore and the engine's deploy; then a second apply (no changes) and a
destroy. The floor, same run, same hosts afterwards, 8 threads: a bare pyVmomi client per host that logs in,
finds the host's pool, folder, datastore and network, imports the same OVF (CreateImportSpec, ImportVApp,
the disk's POST, HttpNfcLeaseComplete), writes the host's values (one ReconfigVM_Task) and powers it on:
its calls are counted at its SOAP stub, property reads included.

Run: .venv/bin/python bench/bench_esxi.py 3 16 64 [--hosts-at-once 8] [--host-network]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from agentvm.lab.packages import examples_dir
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import Lab, LabInfo

PACKAGE = "contrail-vm/contrail-vm.ovf"


def spec_for(info: LabInfo, tmp: Path, host_network: bool) -> Path:
    doc = yaml.safe_load((examples_dir() / "contrail-esxi.yaml").read_text())
    if not host_network:
        del doc["agencies"][0]["hostNetwork"]
    doc["esxi"] = [
        {
            "url": h.url,
            "name": f"esx-{i + 1:02d}",
            "username": h.username,
            "passwordEnv": "AGENTVM_ESXI_PASSWORD",
            "thumbprint": h.thumbprint,
        }
        for i, h in enumerate(info.esxi)
    ]
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def agentvm(env: dict[str, str], *args: str) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", *args, "--json"], env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"agentvm {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds


def per_host(document: dict[str, Any], key: str) -> list[float]:
    return [float(h[key]) for h in document["standalone"].values()]


# -- the floor ---------------------------------------------------------------------------------------------


def counted(si: Any) -> Callable[[], int]:
    """Count every SOAP call of ``si``'s stub (property reads too); returns the reader."""
    stub = si._stub
    calls = [0]
    lock = threading.Lock()
    invoke = stub.InvokeMethod

    def counting(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls[0] += 1
        return invoke(*args, **kwargs)

    stub.InvokeMethod = counting
    return lambda: calls[0]


def floor_one(host: VcsimInfo, password: str, ovf_url: str, address: str) -> tuple[float, int]:
    """One host, bare pyVmomi: login → agent VM imported, its values written, powered on."""
    began = time.monotonic()
    si = SmartConnect(
        host=host.host, port=host.port, user=host.username, pwd=password, disableSslCertValidation=True
    )
    calls = counted(si)
    try:
        content = si.RetrieveContent()
        dc = content.rootFolder.childEntity[0]
        cr = dc.hostFolder.childEntity[0]
        esx = cr.host[0]
        datastore = next(d for d in esx.datastore if d.name == "LocalDS_0")
        network = next(n for n in esx.network if n.name == "VM Network")
        with urllib.request.urlopen(ovf_url, timeout=30) as response:  # noqa: S310 (the lab's 127.0.0.1)
            descriptor = response.read().decode()
        params = vim.OvfManager.CreateImportSpecParams(
            entityName="contrail-vm",
            networkMapping=[
                vim.OvfManager.NetworkMapping(name=name, network=network)
                for name in ("fabric-net", "trunk-net")
            ],
        )
        result = content.ovfManager.CreateImportSpec(descriptor, cr.resourcePool, datastore, params)
        lease = cr.resourcePool.ImportVApp(result.importSpec, dc.vmFolder, esx)
        while lease.state == vim.HttpNfcLease.State.initializing:
            time.sleep(0.05)
        context = ssl._create_unverified_context()  # noqa: S323 (the lab's own certificate, 127.0.0.1)
        base = ovf_url.rsplit("/", 1)[0]
        for device in lease.info.deviceUrl:
            item = next(f for f in result.fileItem if f.deviceId == device.importKey)
            with urllib.request.urlopen(f"{base}/{item.path}", timeout=30) as response:  # noqa: S310
                body = response.read()
            parts = urllib.parse.urlsplit(device.url)
            if parts.netloc == "*" or parts.netloc.startswith("*:"):  # the host the client talks to
                parts = parts._replace(netloc=f"{host.host}:{host.port}")
            url = parts.geturl()
            request = urllib.request.Request(  # noqa: S310
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/x-vnd.vmware-streamVmdk", "Cookie": si._stub.cookie},
            )
            with urllib.request.urlopen(request, context=context, timeout=60):  # noqa: S310
                pass
        vm = lease.info.entity  # before Complete: the lease is gone after it
        lease.HttpNfcLeaseComplete()
        spec = vim.vm.ConfigSpec(
            extraConfig=[vim.option.OptionValue(key="guestinfo.fabricIp", value=address)]
        )
        WaitForTask(vm.ReconfigVM_Task(spec))
        WaitForTask(vm.PowerOnVM_Task())
        return time.monotonic() - began, calls() + 1  # + the login
    finally:
        Disconnect(si)


def floor(info: LabInfo, workers: int) -> tuple[float, list[float], list[int]]:
    ovf_url = f"{info.ovf_url}/{PACKAGE}"
    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        done = list(
            pool.map(
                lambda at: floor_one(
                    at[1], at[1].password, ovf_url, f"10.20.{at[0] // 200}.{at[0] % 200 + 10}"
                ),
                enumerate(info.esxi),
            )
        )
    return time.monotonic() - began, [s for s, _ in done], [c for _, c in done]


def clear(info: LabInfo) -> None:
    """Every VM off and gone on every host (agentvm's destroy ran before: this removes the floor's)."""
    for host in info.esxi:
        si = SmartConnect(
            host=host.host,
            port=host.port,
            user=host.username,
            pwd=host.password,
            disableSslCertValidation=True,
        )
        try:
            for vm in si.RetrieveContent().rootFolder.childEntity[0].vmFolder.childEntity:
                if vm.runtime.powerState == "poweredOn":
                    WaitForTask(vm.PowerOffVM_Task())
                WaitForTask(vm.Destroy_Task())
        finally:
            Disconnect(si)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", nargs="*", type=int, default=[3, 16, 64])
    parser.add_argument("--hosts-at-once", type=int, default=8)
    parser.add_argument("--host-network", action="store_true", help="keep the example's hostNetwork section")
    args = parser.parse_args()
    rows = []
    for n in args.hosts:
        with Lab(esxi=n, vcenter=False) as info, tempfile.TemporaryDirectory() as tmp:
            spec = spec_for(info, Path(tmp), args.host_network)
            env = {**os.environ, **info.env(), "AGENTVM_STATE_DIR": f"{tmp}/state"}
            common = ("-f", str(spec), "--hosts-at-once", str(args.hosts_at_once))
            first, first_s = agentvm(env, "apply", *common, "--timeout", "600")
            second, second_s = agentvm(env, "apply", *common)
            agentvm(env, "destroy", *common, "--yes")
            clear(info)
            floor_s, floor_host_s, floor_calls = floor(info, args.hosts_at_once)
            rows.append(
                (
                    n,
                    first_s,
                    statistics.median(per_host(first, "seconds")),
                    statistics.median(per_host(first, "calls")),
                    second_s,
                    statistics.median(per_host(second, "calls")),
                    floor_s,
                    statistics.median(floor_host_s),
                    statistics.median(floor_calls),
                )
            )
            print(f"{n} hosts done: apply {first_s:.1f} s, floor {floor_s:.1f} s", flush=True)
    print(f"\nstandalone ESXi hosts, {args.hosts_at_once} at a time (medians per host; floor: bare pyVmomi)")
    print(
        " hosts  apply s  host s  calls/host  again s  again calls/host  floor s  floor host s"
        "  floor calls/host  x floor"
    )
    for n, a, ah, ac, s, sc, f, fh, fc in rows:
        print(
            f"{n:6d} {a:8.2f} {ah:7.2f} {ac:11.0f} {s:8.2f} {sc:17.0f} {f:8.2f} {fh:13.2f}"
            f" {fc:17.0f} {a / f:8.2f}"
        )


if __name__ == "__main__":
    main()
