"""``destroy`` leaves the hosts' AgentVM settings, and ``destroy --host-settings`` clears the ones agentvm
set: apply sets a host's datastore/network only where none was set, and records which; destroy
clears only those, and only where they are still what apply set. Checked by reading each host's
EsxAgentHostManager.configInfo on the lab.
"""

from __future__ import annotations

import pytest

from agentvm.vsphere.hosts import AgentVmSettings, ensure_agent_vm_settings, get_agent_vm_settings
from tests.support.cli_lab import EXAMPLES, World

pytestmark = pytest.mark.lab


@pytest.fixture
def world(cli_world: World) -> World:
    """The CLI's lab world (tests/integration/conftest.py)."""
    return cli_world


def test_destroy_leaves_host_settings_and_host_settings_clears_only_what_agentvm_set(world: World) -> None:
    spec = world.spec("hello-agent.yaml", (EXAMPLES / "hello-agent.yaml").read_text())
    snapshot = world.snapshot()
    hosts = sorted((h for h in snapshot.hosts if "/DC0_C0/" in h.path), key=lambda h: h.name)
    others = [h for h in snapshot.hosts if h not in hosts]
    h0, h1, h2 = (h.moref for h in hosts[:3])
    admin_ds = hosts[0].datastores[0]
    # an admin's datastore on H0 before agentvm: apply sets only H0's network
    ensure_agent_vm_settings(world.session, h0, AgentVmSettings(datastore=admin_ds))

    applied = world.run("apply", "-f", str(spec), "--timeout", "120")
    assert applied.exit_code == 0, applied.stderr
    after_apply = {h: get_agent_vm_settings(world.session, h) for h in (h0, h1, h2)}
    assert all(s.datastore is not None and s.network is not None for s in after_apply.values())
    # an admin changes H1's network after apply: no longer agentvm's value
    assert after_apply[h1].datastore is not None
    ensure_agent_vm_settings(world.session, h1, AgentVmSettings(datastore=after_apply[h1].datastore))

    kept = world.run("destroy", "-f", str(spec), "--yes")
    assert kept.exit_code == 0, kept.stderr
    assert "AgentVM settings are left as they are (agentvm set them on 3 host(s))" in kept.stdout
    assert "destroy --host-settings" in kept.stdout
    assert get_agent_vm_settings(world.session, h2) == after_apply[h2]

    cleared = world.run("destroy", "-f", str(spec), "--yes", "--host-settings")
    assert cleared.exit_code == 0, cleared.stderr
    # H0: the admin's datastore stays, agentvm's network goes; H1: its datastore goes, the admin's
    # (unset) network stays unset; H2: both go; the other hosts were never touched
    assert get_agent_vm_settings(world.session, h0) == AgentVmSettings(datastore=admin_ds)
    assert get_agent_vm_settings(world.session, h1) == AgentVmSettings()
    assert get_agent_vm_settings(world.session, h2) == AgentVmSettings()
    assert "cleared the AgentVM network of" in cleared.stdout
    assert "network changed since apply: kept" in cleared.stdout
    for host in others:
        assert get_agent_vm_settings(world.session, host.moref) == AgentVmSettings()

    again = world.run("destroy", "-f", str(spec), "--yes", "--host-settings")
    assert again.exit_code == 0 and "cleared" not in again.stdout, again.stdout
