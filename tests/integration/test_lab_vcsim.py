"""The lab's vCenter simulator, seen with plain pyVmomi: what agentvm relies on it to do."""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Connect, Disconnect
from pyVmomi import vim, vmodl

from agentvm.lab.vcsim import VcsimInfo
from tests.support.certs import make_certificate
from tests.support.vcsim_soap import extension, login_by_certificate, plain_thumbprint

pytestmark = pytest.mark.lab


def connect(info: VcsimInfo, user: str | None = None, pwd: str | None = None, **kw: Any) -> Any:
    # An explicit verifying context: with none, pyVmomi turns verification OFF for 127.0.0.1, and the
    # pinned thumbprint is only consulted when verification fails.
    # SmartConnect's version probe does not honour the thumbprint, so name the version and use Connect.
    # version11 is vSphere 6.5, what this vcsim announces (version8 is 5.1 and cannot read host.runtime).
    kw.setdefault("sslContext", ssl.create_default_context())
    kw.setdefault("version", "vim.version.version11")
    return Connect(
        host=info.host,
        port=info.port,
        user=user or info.username,
        pwd=pwd if pwd is not None else info.password,
        thumbprint=plain_thumbprint(info),
        **kw,
    )


@pytest.fixture
def si(vcsim: VcsimInfo) -> Iterator[Any]:
    conn = connect(vcsim)
    yield conn
    Disconnect(conn)


class CountingStub:
    """Counts SOAP round trips made through a pyVmomi stub (by method name)."""

    def __init__(self, stub: Any) -> None:
        self.calls: list[str] = []
        self._invoke = stub.InvokeMethod
        stub.InvokeMethod = self._count

    def _count(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        self.calls.append(info.wsdlName)
        return self._invoke(mo, info, args, outerStub)


def test_login_over_https_checks_the_thumbprint(vcsim: VcsimInfo) -> None:
    assert vcsim.url.startswith("https://127.0.0.1:")
    conn = connect(vcsim)
    try:
        assert conn.content.sessionManager.currentSession.userName == vcsim.username
    finally:
        Disconnect(conn)
    with pytest.raises(vim.fault.HostConnectFault, match="thumbprint mismatch"):
        Connect(
            host=vcsim.host,
            port=vcsim.port,
            user=vcsim.username,
            pwd=vcsim.password,
            thumbprint="ab" * 20,
            sslContext=ssl.create_default_context(),
            version="vim.version.version11",
        )


def test_the_certificate_is_the_one_reported(vcsim: VcsimInfo) -> None:
    pem = ssl.get_server_certificate((vcsim.host, vcsim.port))
    assert pem.strip() == vcsim.certificate_pem.strip()


def test_wrong_password_is_invalid_login(vcsim: VcsimInfo) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        connect(vcsim, pwd="not-the-password")


def test_inventory_of_two_clusters_by_three_hosts_in_one_round_trip(si: Any) -> None:
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    counter = CountingStub(si._stub)
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            vmodl.query.PropertyCollector.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    vmodl.query.PropertyCollector.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView
                    )
                ],
            )
        ],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.HostSystem, pathSet=["name", "parent", "configManager.esxAgentHostManager"]
            )
        ],
    )
    result = content.propertyCollector.RetrievePropertiesEx(
        [spec], vmodl.query.PropertyCollector.RetrieveOptions()
    )
    assert counter.calls == ["RetrievePropertiesEx"]
    assert result.token is None
    hosts = {o.obj._moId: {p.name: p.val for p in o.propSet} for o in result.objects}
    assert len(hosts) == 6
    clusters = {props["parent"]._moId for props in hosts.values()}
    assert len(clusters) == 2
    assert all(props["configManager.esxAgentHostManager"] is not None for props in hosts.values())
    view.Destroy()


def test_model_shape_comes_from_flags(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(datacenters=2, clusters=1, hosts=2, standalone=1, vms=2, dvs=False)
    conn = connect(info)
    try:
        content = conn.content

        def count(kind: type) -> int:
            view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
            try:
                return len(view.view)
            finally:
                view.Destroy()

        assert count(vim.Datacenter) == 2
        assert count(vim.ClusterComputeResource) == 2
        assert count(vim.HostSystem) == 2 * (2 + 1)
        assert count(vim.VirtualMachine) == 2 * 6
        assert count(vim.DistributedVirtualSwitch) == 0
    finally:
        Disconnect(conn)


def test_extension_register_find_update_unregister(si: Any) -> None:
    em = si.content.extensionManager
    key = "io.agentvm.test"
    assert em.FindExtension(key) is None
    em.RegisterExtension(extension(key))
    found = em.FindExtension(key)
    assert found.key == key and found.version == "1.0.0" and found.company == "agentvm"
    assert key in [e.key for e in em.extensionList]  # visible to the property collector
    with pytest.raises(vmodl.fault.InvalidArgument):
        em.RegisterExtension(extension(key))
    em.UpdateExtension(extension(key, "1.1.0"))
    assert em.FindExtension(key).version == "1.1.0"
    em.UnregisterExtension(key)
    assert em.FindExtension(key) is None
    with pytest.raises(vim.fault.NotFound):
        em.UnregisterExtension(key)
    with pytest.raises(vim.fault.NotFound):
        em.UpdateExtension(extension("io.agentvm.unknown"))


def first_host(si: Any) -> Any:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
    try:
        return sorted(view.view, key=lambda h: h.name)[0]
    finally:
        view.Destroy()


def test_host_agent_vm_settings_set_and_read_back(si: Any) -> None:
    host = first_host(si)
    manager = host.configManager.esxAgentHostManager
    assert manager is not None
    assert manager.configInfo.agentVmDatastore is None
    ds, net = host.datastore[0], host.network[0]
    manager.EsxAgentHostManagerUpdateConfig(
        vim.host.EsxAgentHostManager.ConfigInfo(agentVmDatastore=ds, agentVmNetwork=net)
    )
    assert manager.configInfo.agentVmDatastore == ds
    assert manager.configInfo.agentVmNetwork == net
    assert host.summary.config.agentVmDatastore == ds
    assert host.summary.config.agentVmNetwork == net


def test_host_agent_vm_settings_refuse_a_datastore_the_host_cannot_see(
    vcsim_factory: Callable[..., VcsimInfo],
) -> None:
    info = vcsim_factory(datacenters=2, clusters=1, hosts=1)
    conn = connect(info)
    try:
        view = conn.content.viewManager.CreateContainerView(conn.content.rootFolder, [vim.HostSystem], True)
        a, b = sorted(view.view, key=lambda h: h.name)
        view.Destroy()
        foreign = [ds for ds in b.datastore if ds not in a.datastore]
        assert foreign, "each datacenter has its own datastore"
        with pytest.raises(vmodl.fault.InvalidArgument):
            a.configManager.esxAgentHostManager.EsxAgentHostManagerUpdateConfig(
                vim.host.EsxAgentHostManager.ConfigInfo(agentVmDatastore=foreign[0])
            )
        assert a.summary.config.agentVmDatastore is None
    finally:
        Disconnect(conn)


def test_a_host_added_to_a_cluster_gets_an_agent_host_manager(si: Any) -> None:
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.ClusterComputeResource], True
    )
    cluster = sorted(view.view, key=lambda c: c.name)[0]
    view.Destroy()
    task = cluster.AddHost_Task(vim.host.ConnectSpec(hostName="new-host.lab", force=True), True)
    wait(task)
    host = task.info.result
    assert host.configManager.esxAgentHostManager is not None
    assert host.configManager.esxAgentHostManager.configInfo.agentVmDatastore is None


def wait(task: Any, timeout: float = 30.0) -> None:

    deadline = time.monotonic() + timeout
    while task.info.state not in ("success", "error"):
        assert time.monotonic() < deadline, "task did not finish"
        time.sleep(0.05)
    assert task.info.state == "success", task.info.error


def test_login_as_an_extension_by_certificate(si: Any, vcsim: VcsimInfo) -> None:
    key = "io.agentvm.solution"
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file, pem = make_certificate(Path(tmp), "solution")
        other_cert, other_key, _ = make_certificate(Path(tmp), "intruder")
        em = si.content.extensionManager
        em.RegisterExtension(extension(key))
        em.SetExtensionCertificate(key, pem)
        solution = login_by_certificate(vcsim, key, cert_file, key_file)
        assert solution.content.sessionManager.currentSession.userName == key
        with pytest.raises(vim.fault.InvalidLogin):
            login_by_certificate(vcsim, key, other_cert, other_key)
        with pytest.raises(vim.fault.InvalidLogin):  # a key with no certificate set
            login_by_certificate(vcsim, "io.agentvm.unregistered", cert_file, key_file)


class _Backend(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Backend.seen.append((self.path, self.headers.get("Cookie")))
        body = b"<ok/>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_eam_route_forwards_to_the_backend_with_the_session_cookie(
    vcsim_factory: Callable[..., VcsimInfo],
) -> None:
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        info = vcsim_factory(eam_backend=f"http://127.0.0.1:{backend.server_address[1]}")
        conn = connect(info)
        cookie = conn._stub.cookie
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(info.eam_url, data=b"<x/>", headers={"Cookie": cookie})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert resp.read() == b"<ok/>"
        assert _Backend.seen[-1][0] == "/eam/sdk"
        assert _Backend.seen[-1][1] == cookie
    finally:
        backend.shutdown()
        backend.server_close()


def test_eam_route_without_a_backend_says_so(vcsim: VcsimInfo) -> None:
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(vcsim.eam_url, data=b"<x/>"), context=ctx, timeout=10)
    assert err.value.code == 503
    assert b"EAM" in err.value.read()


def _vm_spec(si: Any) -> tuple[Any, Any]:
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
                ],
            )
        ],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])],
    )
    return view, spec


def test_property_collector_pages_by_max_objects(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    info = vcsim_factory(clusters=1, hosts=2, vms=5)  # 10 VMs
    conn = connect(info)
    try:
        view, spec = _vm_spec(conn)
        collector = conn.content.propertyCollector
        first = collector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=4)
        )
        names = [o.propSet[0].val for o in first.objects]
        assert len(names) == 4 and first.token
        second = collector.ContinueRetrievePropertiesEx(first.token)
        third = collector.ContinueRetrievePropertiesEx(second.token)
        names += [o.propSet[0].val for o in second.objects] + [o.propSet[0].val for o in third.objects]
        assert len(second.objects) == 4 and len(third.objects) == 2 and not third.token
        assert len(set(names)) == 10
        with pytest.raises(vmodl.fault.InvalidArgument):  # a finished cursor is gone
            collector.ContinueRetrievePropertiesEx(second.token)
        # a cursor cancelled half-way is gone too
        again = collector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=3)
        )
        collector.CancelRetrievePropertiesEx(again.token)
        with pytest.raises(vmodl.fault.InvalidArgument):
            collector.ContinueRetrievePropertiesEx(again.token)
        view.Destroy()
    finally:
        Disconnect(conn)


def test_a_simulator_whose_parent_dies_stops_too() -> None:
    import subprocess
    import sys

    from agentvm.lab.runner import pid_alive

    code = (
        "import os; from agentvm.lab.vcsim import Vcsim; print(Vcsim().process.pid, flush=True); os._exit(0)"
    )
    pid = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def _updates(si: Any, obj: Any, paths: list[str], change: Callable[[], None]) -> set[str]:
    """The property names WaitForUpdatesEx reports for ``obj`` after ``change()`` (5 s at most)."""
    pc = si.content.propertyCollector.CreatePropertyCollector()
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)],
    )
    pc.CreateFilter(spec, True)
    options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=5)
    version = pc.WaitForUpdatesEx("", options).version  # the initial state
    change()
    names: set[str] = set()
    deadline = time.monotonic() + 10
    while not names and time.monotonic() < deadline:
        result = pc.WaitForUpdatesEx(version, options)
        if result is None:
            continue
        version = result.version
        for fs in result.filterSet:
            for update in fs.objectSet:
                names |= {c.name for c in update.changeSet}
    pc.Destroy()
    return names


def test_maintenance_mode_is_pushed_to_watchers(si: Any) -> None:
    host = first_host(si)
    names = _updates(si, host, ["runtime.inMaintenanceMode"], lambda: host.EnterMaintenanceMode_Task(0))
    assert "runtime.inMaintenanceMode" in names


def test_agent_vm_settings_are_pushed_to_watchers(si: Any) -> None:
    host = first_host(si)
    manager = host.configManager.esxAgentHostManager
    config = vim.host.EsxAgentHostManager.ConfigInfo(agentVmDatastore=host.datastore[0])
    names = _updates(
        si, host, ["summary.config.agentVmDatastore"], lambda: manager.EsxAgentHostManagerUpdateConfig(config)
    )
    assert names == {"summary.config.agentVmDatastore"}
