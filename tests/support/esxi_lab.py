"""The lab's standalone ESXi hosts as tests use them: a pyVmomi connection to one host simulator (its
certificate checked against the thumbprint the lab reported), a host restart that waits until the host is
unreachable and back, and small vim25 helpers.

Used by tests/integration/test_lab_esxi.py; the fixtures there start ``Lab(esxi=N, vcenter=False)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import Lab


def served_thumbprint(info: VcsimInfo) -> str:
    """The SHA-1 thumbprint (AA:BB:...) of the certificate the host serves now."""
    pem = ssl.get_server_certificate((info.host, info.port))
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()  # noqa: S324 (vSphere's form)
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@contextlib.contextmanager
def connected(info: VcsimInfo) -> Iterator[Any]:
    """A pyVmomi ServiceInstance logged in to the host ``info``, after checking its certificate's
    thumbprint (pyVmomi itself does not check it on 127.0.0.1)."""
    assert served_thumbprint(info) == info.thumbprint, f"{info.url} serves another certificate"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    si = SmartConnect(
        host=info.host, port=info.port, user=info.username, pwd=info.password, sslContext=context
    )
    try:
        yield si
    finally:
        with contextlib.suppress(Exception):
            Disconnect(si)


def reachable(info: VcsimInfo) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((info.host, info.port)) == 0


def restart_host(lab: Lab, name: str, timeout: float = 30.0) -> VcsimInfo:
    """Stop standalone host ``name`` of ``lab``, check it refuses connections, start it again; return its
    new info (same port and thumbprint, a new pid and an empty inventory)."""
    assert lab.esxi is not None
    before = lab.esxi.infos[name]
    lab.stop_esxi(name)
    deadline = time.monotonic() + timeout
    while reachable(before):  # the port closes when the process is gone
        assert time.monotonic() < deadline, f"{name} still accepts connections after its stop"
        time.sleep(0.05)
    return lab.start_esxi(name)


def the_host(si: Any) -> tuple[Any, Any, Any]:
    """(datacenter, compute resource, host) of a host agent: ha-datacenter and its one host."""
    dc = si.content.rootFolder.childEntity[0]
    cr = dc.hostFolder.childEntity[0]
    return dc, cr, cr.host[0]


def new_vm(si: Any, name: str) -> Any:
    """A powered-off VM of 1 CPU on the host's pool and first datastore, by CreateVM_Task."""
    dc, cr, host = the_host(si)
    spec = vim.vm.ConfigSpec(
        name=name,
        numCPUs=1,
        memoryMB=64,
        guestId="otherGuest",
        files=vim.vm.FileInfo(vmPathName=f"[{host.datastore[0].name}]"),
    )
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=cr.resourcePool, host=host)
    WaitForTask(task)
    return task.info.result


def collect_host_state(si: Any) -> dict[str, object]:
    """What agentvm could change on a host: its VMs, vSwitches, port groups and autostart entries."""
    dc, _, host = the_host(si)
    network = host.config.network
    return {
        "vms": sorted(vm.name for vm in dc.vmFolder.childEntity),
        "vswitches": sorted(v.name for v in network.vswitch),
        "portgroups": sorted(p.spec.name for p in network.portgroup),
        "autostart": [p.key._moId for p in host.configManager.autoStartManager.config.powerInfo],
    }
