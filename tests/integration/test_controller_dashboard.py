"""The dashboard in headless Chromium against a real controller on the lab (not a fake status).

An agent VM is powered off behind the controller's back; the page shows its host red, then green again
once the controller has healed it, with no reload. A MutationObserver in the page records every state a
host tile took, so the red phase is proven even when the heal is quicker than a screenshot. Screenshots
go under ``artifacts/controller-dashboard/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvm.api.server import Api, ApiServer
from agentvm.controller.run import api_callables
from agentvm.core.heal import Backoff, HealPolicy
from agentvm.model.agency import PowerState
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.cdp import Browser
from tests.support.controller_lab import World, deployed, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def world(controller_world: World) -> World:
    """The controller's lab world (tests/integration/conftest.py)."""
    return controller_world


ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "controller-dashboard"

RECORD_STATES = """
window.__states = {};
new MutationObserver(() => {
  for (const tile of document.querySelectorAll('.host[data-moid]')) {
    const seen = (window.__states[tile.dataset.moid] = window.__states[tile.dataset.moid] || []);
    const state = tile.dataset.state;
    if (seen[seen.length - 1] !== state) seen.push(state);
  }
}).observe(document.body, { subtree: true, childList: true, attributes: true });
true
"""


# The heal waits 3 s before its first resolve, so that the page sees the host red however fast the lab heals
# and however slow the machine renders (without it the red phase can fall between two status fetches).
VISIBLE_RED = HealPolicy(default=Backoff(base=1.0, cap=10.0, grace=3.0))


@pytest.fixture
def server(world: World) -> Iterator[ApiServer]:
    deployed(world, policy=VISIBLE_RED)
    assert world.controller is not None
    with ApiServer(Api(**api_callables(world.controller)), port=0, keepalive=1.0) as running:
        yield running


def test_the_dashboard_shows_a_host_red_then_green_as_the_controller_heals_it(
    world: World, server: ApiServer
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    victim = world.agent_vms()[0]
    assert victim.host is not None
    moid = victim.host.value
    tile = f"document.querySelector('[data-moid=\"{moid}\"]')"
    with Browser() as browser:
        page = browser.page()
        try:
            page.call("Runtime.enable")
            page.call("Page.enable")
            url = f"{server.url}/"
            page.call("Page.navigate", url=url)
            page.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
            page.wait_for(f"!!{tile} && {tile}.dataset.state === 'green'", 20)
            page.wait_for("document.getElementById('live').classList.contains('on')", 20)
            assert page.evaluate("document.querySelectorAll('.host').length") == 3
            page.evaluate(RECORD_STATES)
            page.screenshot(ARTIFACTS / "1-all-green.png")

            ensure_powered_off(world.session, victim.moref)
            page.wait_for(f"(window.__states[{json.dumps(moid)}] || []).includes('red')", 30)
            page.screenshot(ARTIFACTS / "2-after-red.png")  # red, or already healed: the observer saw red
            page.wait_for(f"{tile}.dataset.state === 'green'", 60)
            states = page.evaluate(f"window.__states[{json.dumps(moid)}]")
            assert states[-1] == "green" and "red" in states, states
            page.screenshot(ARTIFACTS / "3-green-again.png")
            events = page.evaluate("document.getElementById('events').textContent")
            assert "VmPoweredOff" in events and "resolved" in events
            assert page.exceptions() == []
        finally:
            page.close()
    wait_for(
        lambda: (
            next(v for v in world.agent_vms() if v.moref == victim.moref).power_state is PowerState.POWERED_ON
        ),
        "the agent VM on",
    )
