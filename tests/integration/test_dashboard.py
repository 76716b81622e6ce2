"""The dashboard in headless Chromium (Debian's ``chromium``), against the API server fed by a fake status.

A host turns red and then green again while the page stays open: the change arrives through the event
stream (EventSource) and the page re-fetches the status. Screenshots and the DOM of each step are kept
under ``artifacts/dashboard/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentvm.api.server import Api, ApiServer
from agentvm.controller.events import EventLog
from agentvm.model.errors import TransientError
from tests.support.cdp import Browser, Page
from tests.support.schemas import valid

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"


def _host(n: int, state: str, issues: list[dict[str, object]] | None = None) -> dict[str, object]:
    """A host of cluster C0 as status-v1.json has it, its colour in ``state``."""
    power = "poweredOn" if state == "green" else "poweredOff"
    return {
        "name": f"/DC0/host/C0/H{n}",
        "moid": f"host-{21 + n}",
        "path": f"/DC0/host/C0/H{n}",
        "phase": "ready" if state == "green" else "issue",
        "status": state if state in ("green", "red") else None,
        "state": state,
        "vm": {"name": f"contrail-vrouter ({n + 1})", "moid": f"vm-{40 + n}"},
        "powerState": power,
        "hookPending": None,
        "address": f"10.10.0.{10 + n}",
        "issues": issues or [],
    }


def _status(h1_state: str) -> dict[str, object]:
    """The status of one agency over two clusters (C0: 4 hosts, H1 in ``h1_state``, H2 in maintenance
    mode; C1: 3 green hosts), validated against status-v1.json."""
    issues = (
        [
            {
                "key": 17,
                "kind": "VmPoweredOff",
                "message": "agent VM contrail-vrouter (2) is powered off",
                "remedy": "power-on",
                "host": "host-22",
                "vm": "vm-41",
            }
        ]
        if h1_state == "red"
        else []
    )
    hosts_c0 = [_host(0, "green"), _host(1, h1_state, issues), _host(2, "maintenance"), _host(3, "green")]
    hosts_c1 = [
        {
            **_host(n, "green"),
            "name": f"/DC0/host/C1/H{n}",
            "path": f"/DC0/host/C1/H{n}",
            "moid": f"host-{31 + n}",
        }
        for n in range(3)
    ]
    return valid(
        {
            "apiVersion": "agentvm/v1",
            "kind": "Status",
            "vcenter": "https://127.0.0.1:8989/sdk",
            "generatedAt": "2026-12-01T21:00:00Z",
            "missing": [],
            "agencies": [
                {
                    "name": "contrail-vrouter",
                    "id": "agency-1",
                    "status": "red" if h1_state == "red" else "green",
                    "goalState": "enabled",
                    "issues": [],
                    "summary": {"hosts": 7, "ready": 6 if h1_state == "red" else 7, "issues": len(issues)}
                    | {"hooksPending": 0, "addresses": 7},
                    "clusters": [
                        {"name": "C0", "path": "/DC0/host/C0", "standalone": False, "hosts": hosts_c0},
                        {"name": "C1", "path": "/DC0/host/C1", "standalone": False, "hosts": hosts_c1},
                    ],
                }
            ],
        }
    )


class World:
    """The fake controller behind the server: a status to change and an event log to publish to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, Any] = _status("green")
        self.events = EventLog()
        self.error: Exception | None = None

    def get_status(self) -> dict[str, Any]:
        with self.lock:
            if self.error is not None:
                raise self.error
            return copy.deepcopy(self.status)

    def set_status(self, status: dict[str, Any]) -> None:
        with self.lock:
            self.status = status


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def server(world: World) -> Iterator[ApiServer]:
    api = Api(status=world.get_status, ready=lambda: True, metrics=lambda: "", events=world.events)
    with ApiServer(api, port=0, keepalive=1.0) as running:
        yield running


@pytest.fixture
def page(server: ApiServer) -> Iterator[Page]:
    with Browser() as browser:
        tab = browser.page()
        try:
            tab.call("Runtime.enable")
            tab.call("Page.enable")
            yield tab
        finally:
            tab.close()


def _navigate(page: Page, url: str) -> None:
    """Load ``url`` and wait until the dashboard's document is complete (navigate returns before)."""
    page.call("Page.navigate", url=url)
    page.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")


def _open(page: Page, url: str) -> None:
    _navigate(page, url)
    page.wait_for("!!document.querySelector('.host')")
    page.wait_for("document.getElementById('live').classList.contains('on')")


def _class_of(page: Page, moid: str) -> str:
    value = page.evaluate(f"document.querySelector('[data-moid=\"{moid}\"]').className")
    assert isinstance(value, str)
    return value


def _keep(page: Page, name: str) -> str:
    """Save a screenshot and the DOM as artefacts; returns the DOM."""
    page.screenshot(ARTIFACTS / f"{name}.png")
    dom = page.evaluate("document.documentElement.outerHTML")
    assert isinstance(dom, str)
    (ARTIFACTS / f"{name}.html").write_text(dom)
    return dom


def test_a_host_turns_red_then_green_live(world: World, server: ApiServer, page: Page) -> None:
    _open(page, f"{server.url}/")
    assert page.evaluate("document.querySelectorAll('.cluster').length") == 2
    assert page.evaluate("document.querySelectorAll('.host').length") == 7
    assert "state-green" in _class_of(page, "host-22")
    assert "state-maintenance" in _class_of(page, "host-23")
    _keep(page, "1-all-green")

    # the agent VM on H1 is powered off: the controller's status turns red and it publishes the issue
    world.set_status(_status("red"))
    world.events.publish(
        "issue",
        "VmPoweredOff on host-22 (/DC0/host/C0/H1): agent VM contrail-vrouter (2) is powered off",
        level="warning",
        host="host-22",
        host_name="/DC0/host/C0/H1",
    )
    # well before the page's 10 s fallback poll: the stream brought it
    page.wait_for("document.querySelector('[data-moid=\"host-22\"]').classList.contains('state-red')", 8)
    assert "VmPoweredOff on host-22" in page.evaluate("document.getElementById('events').textContent")

    page.evaluate("document.querySelector('[data-moid=\"host-22\"]').click()")
    detail = page.wait_for(
        "!document.getElementById('detail').hidden && document.getElementById('detail').textContent"
    )
    for expected in (
        "contrail-vrouter (2)",
        "vm-41",
        "10.10.0.11",
        "poweredOff",
        "VmPoweredOff",
        "remedy: power-on",
    ):
        assert expected in detail
    assert "is powered off" in page.evaluate("document.getElementById('detail-events').textContent")
    dom = _keep(page, "2-host-red")
    assert 'data-moid="host-22"' in dom and "state-red" in dom

    # the controller powers it on again
    world.set_status(_status("green"))
    world.events.publish(
        "action", "powered on agent VM contrail-vrouter (2) on host-22 (/DC0/host/C0/H1)", host="host-22"
    )
    page.wait_for("document.querySelector('[data-moid=\"host-22\"]').classList.contains('state-green')", 8)
    detail = page.wait_for("document.getElementById('detail').textContent.includes('poweredOn')")
    assert "VmPoweredOff" not in page.evaluate("document.getElementById('detail-issues').textContent")
    _keep(page, "3-host-green-again")
    assert page.exceptions() == []


def test_the_page_tolerates_a_sparse_status(world: World, server: ApiServer, page: Page) -> None:
    # deliberately not a status-v1.json document: the page must survive fields missing or of a wrong type
    world.set_status(
        {
            "agencies": [
                {
                    "name": "a",
                    "clusters": [{"name": "C0", "hosts": [{"name": "H0"}, {"moid": "host-9"}, None]}],
                },
                {"name": "b"},
                {"clusters": [{"hosts": [{"name": "H5", "state": "purple", "vm": None, "issues": [{}]}]}]},
            ]
        }
    )
    _navigate(page, f"{server.url}/")
    page.wait_for("document.querySelectorAll('.host').length === 3")
    assert "state-unknown" in _class_of(page, "host-9")
    page.evaluate("document.querySelector('[data-moid=\"host-9\"]').click()")
    assert "none" in page.wait_for("document.getElementById('detail-facts').textContent")
    assert page.evaluate("document.querySelector('.error').hidden") is True
    assert page.exceptions() == []


def test_an_unavailable_status_is_shown_not_hidden(world: World, server: ApiServer, page: Page) -> None:
    world.error = TransientError("vCenter 127.0.0.1:8989 is not answering: retrying")
    _navigate(page, f"{server.url}/")
    message = page.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert "not answering" in message
    assert json.dumps(page.exceptions()) == "[]"


def test_the_page_reads_the_status_v1_schema_shape(world: World, server: ApiServer, page: Page) -> None:
    """status-v1.json: ``status`` (color or null), ``powerState`` and ``hookPending`` on the host."""

    def host(n: int, status: str | None, issues: list[dict[str, object]]) -> dict[str, object]:
        return {
            "name": f"DC0_C0_H{n}",
            "moid": f"host-{n}",
            "path": f"/DC0/host/DC0_C0/DC0_C0_H{n}",
            "phase": "ready" if status == "green" else "issue",
            "status": status,
            "vm": {"moid": f"vm-{n}", "name": f"hello ({n})"} if status else None,
            "powerState": "poweredOn" if status == "green" else None,
            "hookPending": "provisioned" if n == 3 else None,
            "address": f"10.0.0.{n}",
            "issues": issues,
        }

    in_mm = {"key": 5, "kind": "HostInMaintenanceMode", "message": "host in MM", "remedy": "exit-maintenance"}
    in_mm |= {"host": "host-2", "vm": "vm-2"}
    world.set_status(
        valid(
            {
                "apiVersion": "agentvm/v1",
                "kind": "Status",
                "vcenter": "https://127.0.0.1:8989/sdk",
                "generatedAt": "2026-12-01T21:00:00Z",
                "missing": [],
                "agencies": [
                    {
                        "name": "hello",
                        "id": "agency-1",
                        "status": "yellow",
                        "goalState": "enabled",
                        "issues": [],
                        "summary": {"hosts": 4, "ready": 1, "issues": 1, "hooksPending": 1, "addresses": 4},
                        "clusters": [
                            {
                                "name": "DC0_C0",
                                "path": "/DC0/host/DC0_C0",
                                "standalone": False,
                                "hosts": [
                                    host(1, "green", []),
                                    host(2, "red", [in_mm]),
                                    host(3, "yellow", []),
                                    host(4, None, []),
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    _navigate(page, f"{server.url}/")
    page.wait_for("document.querySelectorAll('.host').length === 4")
    states = page.evaluate("[...document.querySelectorAll('.host')].map(h => h.dataset.state)")
    assert states == ["green", "maintenance", "yellow", "unknown"]
    page.evaluate("document.querySelector('[data-moid=\"host-3\"]').click()")
    facts = page.wait_for(
        "!document.getElementById('detail').hidden && document.getElementById('detail').textContent"
    )
    assert "pending (provisioned)" in facts and "/DC0/host/DC0_C0/DC0_C0_H3" in facts
    page.evaluate("document.querySelector('[data-moid=\"host-2\"]').click()")
    assert "remedy: exit-maintenance" in page.wait_for("document.getElementById('detail-issues').textContent")
    assert page.exceptions() == []


def test_flapping_and_misplaced_hosts_are_shown_with_what_agentvm_found(
    world: World, server: ApiServer, page: Page
) -> None:
    """A host whose agent agentvm gave up on (flapping) and one whose agent VM runs elsewhere (misplaced)."""
    status = _status("green")
    hosts = status["agencies"][0]["clusters"][0]["hosts"]  # type: ignore[index]
    hosts[1]["state"] = "flapping"
    hosts[1]["problems"] = [
        {"kind": "Flapping", "message": "agentvm gave up healing VmPoweredOff: it came back 4 time(s)"}
    ]
    hosts[3]["state"] = "misplaced"
    hosts[3]["runsOn"] = {"moid": "host-21", "name": "H0"}
    hosts[3]["problems"] = [
        {"kind": "VmOnWrongHost", "message": "the agent VM contrail-vrouter (4) runs on H0"}
    ]
    world.set_status(valid(status))
    _open(page, f"{server.url}/")
    assert "state-flapping" in _class_of(page, "host-22")
    assert "state-misplaced" in _class_of(page, "host-24")
    summary = page.evaluate("document.getElementById('summary').textContent")
    assert "1 flapping" in summary and "1 misplaced" in summary, summary
    tile = page.evaluate("document.querySelector('[data-moid=\"host-24\"]').textContent")
    assert "VM on H0" in tile, tile
    page.evaluate("document.querySelector('[data-moid=\"host-22\"]').click()")
    issues = page.wait_for(
        "!document.getElementById('detail').hidden && document.getElementById('detail-issues').textContent"
    )
    assert "Flapping" in issues and "came back 4 time(s)" in issues, issues
    page.evaluate("document.querySelector('[data-moid=\"host-24\"]').click()")
    facts = page.wait_for(
        "document.getElementById('detail-facts').textContent.includes('runs on') && "
        "document.getElementById('detail-facts').textContent"
    )
    assert "runs onH0" in facts, facts
    assert "runs on H0" in page.evaluate("document.getElementById('detail-issues').textContent")
    _keep(page, "4-flapping-and-misplaced")
    assert page.exceptions() == []


def test_several_vcenters_each_show_who_leads_them_and_since_when(
    world: World, server: ApiServer, page: Page
) -> None:
    """A StatusList (``agentvm run -f A -f B``): one section per (vCenter, solution) naming its leader."""

    def doc(vcenter: str, role: str, moid: str) -> dict[str, Any]:
        one = copy.deepcopy(_status("green"))
        one["vcenter"] = vcenter
        one["solution"] = "org.tungsten.agentvm"
        leader = {"replica": "ctl-a-41", "host": "ctl-a", "pid": 41, "since": "2026-12-02T04:00:00Z"}
        one["leadership"] = {
            "replica": "ctl-a-41" if role == "leader" else "ctl-b-7",
            "role": role,
            "since": "2026-12-02T04:00:00Z",
            "why": None if role == "leader" else "led by replica ctl-a-41",
            "leader": leader,
        }
        for agency in one["agencies"]:
            for cluster in agency["clusters"]:
                for host in cluster["hosts"]:
                    host["moid"] = f"{moid}-{host['moid']}"
        return one

    world.set_status(
        valid(
            {
                "apiVersion": "agentvm/v1",
                "kind": "StatusList",
                "items": [doc("https://vc-a/sdk", "leader", "a"), doc("https://vc-b/sdk", "follower", "b")],
            }
        )
    )
    _navigate(page, f"{server.url}/")
    page.wait_for("document.querySelectorAll('.controller').length === 2")
    texts = page.evaluate("[...document.querySelectorAll('.controller')].map(e => e.textContent)")
    assert "https://vc-a/sdk" in texts[0] and "this replica leads" in texts[0]
    assert "https://vc-b/sdk" in texts[1] and "this replica: follower" in texts[1]
    for shown in texts:
        assert "led by replica ctl-a-41 (pid 41 on ctl-a) since 2026-12-02T04:00:00Z" in shown
    hosts = page.evaluate("document.querySelectorAll('.host').length")
    assert hosts == 2 * sum(len(c["hosts"]) for a in _status("green")["agencies"] for c in a["clusters"])
    assert page.exceptions() == []


def test_each_hosts_networking_is_shown_and_a_failed_check_marks_its_tile(
    world: World, server: ApiServer, page: Page
) -> None:
    """hostNetwork: status-v1's ``network`` per host; a failed check is on the tile, the check and its fix in
    the host's detail."""
    status = _status("green")
    hosts = status["agencies"][0]["clusters"][0]["hosts"]  # type: ignore[index]
    for host in hosts:
        host["network"] = {"state": "ready", "message": None}
    failed = "no physical NIC vmnic1 (the host has vmnic0); fix hostNetwork.fabric.pnic"
    hosts[2]["network"] = {"state": "error", "message": failed}
    world.set_status(valid(status))
    _open(page, f"{server.url}/")
    tiles = page.evaluate("[...document.querySelectorAll('.host')].map(h => h.textContent)")
    assert ["network" in t for t in tiles] == [False, False, True, False, False, False, False], tiles
    page.evaluate("document.querySelector('[data-moid=\"host-23\"]').click()")
    facts = page.wait_for(
        "document.getElementById('detail-facts').textContent.includes('network') && "
        "document.getElementById('detail-facts').textContent"
    )
    assert f"networkerror: {failed}" in facts, facts
    page.evaluate("document.querySelector('[data-moid=\"host-21\"]').click()")
    facts = page.wait_for(
        "document.getElementById('detail').dataset.moid === 'host-21' && "
        "document.getElementById('detail-facts').textContent"
    )
    assert "networkready" in facts, facts
    assert page.exceptions() == []


def test_standalone_hosts_are_grouped_as_standalone_and_an_unreachable_one_says_why(
    world: World, server: ApiServer, page: Page
) -> None:
    """``agentvm run`` of a spec with esxi: hosts: the Status document's ``standalone`` list."""
    agency = copy.deepcopy(_status("green")["agencies"][0])

    def reachable(name: str) -> dict[str, Any]:
        one = copy.deepcopy(agency)
        host = {**_host(0, "green"), "name": name, "moid": "ha-host", "path": f"/ha-datacenter/host/{name}"}
        one["clusters"] = [{"name": None, "path": None, "standalone": True, "hosts": [host]}]
        one["summary"] = {"hosts": 1, "ready": 1, "issues": 0, "hooksPending": 0, "addresses": 1}
        entry = {"name": name, "url": f"https://{name}/sdk", "reachable": True, "error": None}
        return entry | {"agencies": [one], "missing": []}

    why = "esx-02 (https://esx-02/sdk): cannot connect: connection refused; is the host up at that address?"
    down = {"name": "esx-02", "url": "https://esx-02/sdk", "reachable": False, "error": why}
    world.set_status(
        valid(
            {
                "apiVersion": "agentvm/v1",
                "kind": "Status",
                "vcenter": "",
                "generatedAt": "2026-12-04T20:00:00Z",
                "agencies": [],
                "missing": [],
                "solution": "org.tungsten.agentvm",
                "standalone": [
                    reachable("esx-01"),
                    down | {"agencies": [], "missing": []},
                    reachable("esx-03"),
                ],
            }
        )
    )
    _navigate(page, f"{server.url}/")
    page.wait_for("document.querySelectorAll('.standalone').length === 3")
    group = page.evaluate("document.querySelector('.standalone-group h2').textContent")
    assert group == "standalone 3 hosts, 1 unreachable"
    shown = page.evaluate("document.querySelector('.standalone.unreachable').textContent")
    assert shown.startswith("esx-02") and "connection refused" in shown
    assert page.evaluate("document.querySelectorAll('.standalone-group .host').length") == 2
    clusters = page.evaluate(
        "[...document.querySelectorAll('.standalone-group .cluster h3')].map(e => e.textContent)"
    )
    assert all(c.startswith("standalone") for c in clusters) and len(clusters) == 2
    assert "No agency yet" not in page.evaluate("document.body.textContent")
    assert page.exceptions() == []
