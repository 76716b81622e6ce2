"""What one re-plan of the controller (a full pass that is not a sweep: a topology change, the periodic
pass) costs on the lab, counted through the executor's call listener: one inventory read in three round
trips, the agency list read once per session, the agency's runtime once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from agentvm.controller.events import EventLog
from agentvm.controller.metrics import ControllerMetrics
from agentvm.controller.reconcile import Reconciler
from agentvm.controller.watch import VmWatch
from agentvm.core.agent_reads import Changes, ReadPolicy
from agentvm.lab.vcsim import Shape
from agentvm.lab.world import Lab
from agentvm.model.agency import PowerState
from agentvm.spec import load_spec
from tests.support.controller_lab import ONE_CLUSTER, Calls, World, connect, spec_text

pytestmark = pytest.mark.lab


def test_a_replan_reads_the_inventory_in_three_round_trips_and_lists_agencies_once_a_session(
    tmp_path: Path,
) -> None:
    lab = Lab(Shape(clusters=2, hosts=2), netsync=False)
    info = lab.start()
    world_session = connect(info)
    spec = tmp_path / "contrail.yaml"
    spec.write_text(spec_text(**ONE_CLUSTER))
    world = World(lab, info, world_session, spec)
    desired = load_spec(spec, env=info.env())
    session = connect(info)
    watch = VmWatch(world_session)

    def changes() -> Changes:
        seen = watch.take()
        return Changes() if seen is None else seen

    reconciler = Reconciler(
        desired,
        session,
        events=EventLog(),
        metrics=ControllerMetrics(agencies=[a.name for a in desired.agencies]),
        changes=changes,
        reads=ReadPolicy(sweep_per_minute=6.0, sweep_period=60.0),
    )
    calls = Calls()
    reconciler.add_call_listener(calls)
    try:
        deadline = time.monotonic() + 180
        reconciler.full_pass()
        while not (
            reconciler.report.agencies
            and all(a.status.green for a in reconciler.report.agencies)
            and len(agents := world.agent_vms()) == 2
            and all(v.power_state is PowerState.POWERED_ON for v in agents)
        ):
            assert time.monotonic() < deadline, "timed out waiting for the reconciler to turn green"
            reconciler.poll()
            time.sleep(0.2)
        reconciler.full_pass()  # logged in as the extension by now

        before = Counter(calls.counts)
        reconciler.full_pass(sweep=False)
        replanned = calls.since(before)
        # the inventory: one view, one read of every kind together, the view destroyed
        assert replanned["CreateContainerView"] == 1 and replanned["DestroyView"] == 1, replanned
        # ...and the hosts' networking (hostNetwork): the hosts in scope in one read, the switches in another
        assert replanned["RetrievePropertiesEx"] == 1 + 2, replanned
        # the agency list: once by the extension's session (adoption reads it, the plan reuses it) and once
        # by the user's (agencies of the spec's names that the solution does not own)
        assert replanned["QueryAgency"] == 2, replanned
        assert replanned["QueryAgent"] == 1, replanned  # the agency's agent list: a re-plan reads it
        # the agency's runtime once: the plan's read serves the pass's poll when the plan changed nothing
        assert replanned["AgencyQueryRuntime"] == 1, replanned
    finally:
        watch.close()
        reconciler.close()
        session.logout()
        try:
            world.stop()
        finally:
            world_session.logout()
            lab.stop()
