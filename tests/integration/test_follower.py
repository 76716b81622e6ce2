"""A follower (a replica that may not act) keeps its status from the watch, as an idle leader's poll does.

On the lab (vcsim + the lab's EAM): once it has read everything, an idle follower reads no more of the
inventory, a change is read as the objects the watch names (a patch, no read of the whole inventory) and
its agents, a resync request reads everything again; and it never writes, whatever it sees.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agentvm.controller.events import EventLog
from agentvm.controller.replica import Leadership, Member, Replica
from agentvm.controller.run import Controller, Settings
from agentvm.model.coordination import LeaderInfo
from agentvm.model.errors import TransientError
from agentvm.spec import load_spec
from agentvm.vsphere.vms import ensure_powered_off
from tests.support.controller_lab import Calls, connect, lab_world, wait_for

pytestmark = pytest.mark.lab

# the periodic full read far apart, so that what idling and a change cost is what is counted
QUIET = Settings(fast_poll=0.2, slow_poll=0.5, full_resync=120.0, retry_max=1.0, sweep_per_minute=6.0)
# what a reader may call: property reads and the views and filters they use, EAM queries, logins
READ_PREFIXES = ("Retrieve", "ContinueRetrieve", "Query", "AgencyQuery", "AgentQuery", "Login", "WaitFor")
READ_NAMES = frozenset(
    {
        "CurrentTime",
        "CreateContainerView",
        "DestroyView",
        "CreatePropertyCollector",
        "DestroyPropertyCollector",
        "CreateFilter",
        "DestroyPropertyFilter",
        "CancelWaitForUpdates",
    }
)


class Follows:
    """An authority that never lets the controller act and asks it to follow (a replica's follower)."""

    follows = True
    lost: str | None = None

    def valid(self) -> bool:
        return False


class OtherLeads:
    """An etcd seat another replica leads (``controller.replica.SeatLike``)."""

    why: str | None = None
    transitions = 1

    def valid(self) -> bool:
        return False

    def leader(self) -> LeaderInfo:
        return LeaderInfo("r-other", "elsewhere", 4242, "2026-01-01T00:00:00Z")

    def add_listener(self, callback: object) -> None:
        pass


def no_lease() -> object:
    raise AssertionError("a follower of a seat another leads never takes the vCenter lease")


def writes(counts: Counter[str]) -> list[str]:
    """The methods counted that are not reads (a task, a hook answer, an agency change, a setting...)."""
    return sorted(m for m in counts if m not in READ_NAMES and not m.startswith(READ_PREFIXES))


def host_powers(controller: Controller) -> dict[str, object]:
    doc = controller.status()
    agencies = doc["agencies"]
    assert isinstance(agencies, list)
    return {str(h["moid"]): h["powerState"] for a in agencies for c in a["clusters"] for h in c["hosts"]}


def test_a_follower_reads_only_what_the_watch_names_and_never_writes(tmp_path: Path) -> None:
    hosts = 3
    with lab_world(tmp_path, hosts) as world:
        world.start(settings=QUIET)
        wait_for(world.all_green, f"{hosts} agents green", 240)
        vms = wait_for(lambda: world.one_agent_per_host(hosts), f"{hosts} agent VMs")
        world.stop()

        desired = load_spec(world.spec, env=world.info.env())
        follower = Controller(desired, connect(world.info), settings=QUIET, lease=Follows())
        calls = Calls()
        follower.reconciler.add_call_listener(calls)
        turns = Counter[str]()
        refresh = follower._follow

        def counted() -> None:  # the loop's follower turns: a busy loop would make thousands a refresh
            turns["turn"] += 1
            refresh()

        follower._follow = counted  # type: ignore[method-assign]
        follower.start()
        try:
            keeper = follower.reconciler.inventory
            wait_for(follower.following_ready, "the follower's first status read", 60)
            wait_for(lambda: follower.watch.connected, "the follower's watch", 30)
            reads = follower.follow_reads
            wait_for(
                lambda: follower.follow_reads >= reads + 2, "refreshes after the watch's first batch", 30
            )
            first = keeper.full_reads
            assert 1 <= first <= 2  # everything at first, and again after the watch's first batch
            assert set(host_powers(follower).values()) == {"poweredOn"}

            # idle: status refreshes, and no inventory read at all (nothing changed)
            reads, patches, before = follower.follow_reads, keeper.patches, Counter(calls.counts)
            turned = turns["turn"]
            wait_for(lambda: follower.follow_reads >= reads + 4, "four idle refreshes", 30)
            # a turn every 0.2 s wait at most, a refresh every 0.5 s: a few turns each, never a busy loop
            assert turns["turn"] - turned <= 10 * (follower.follow_reads - reads), turns
            assert keeper.full_reads == first
            assert keeper.patches == patches
            assert calls.since(before)["RetrievePropertiesEx"] == 0, calls.since(before)

            # a change: the follower sees it through the watch, reading only what it names, and heals nothing
            ensure_powered_off(world.session, vms[0].moref)
            host = vms[0].host.value if vms[0].host is not None else ""
            wait_for(lambda: host_powers(follower).get(host) == "poweredOff", "the follower to see it", 30)
            assert keeper.full_reads == first
            assert keeper.patches >= 1
            assert vms[0].moref.value in {r.value for r in keeper.last_read}

            # a resync: everything read again, still only reads
            follower.resync({})
            wait_for(lambda: keeper.full_reads == first + 1, "the resync's full read", 30)
            wait_for(lambda: follower.follow_reads >= reads + 8, "refreshes after the resync", 30)
            assert writes(calls.counts) == [], calls.counts

            # through the API of a replica that follows: it says so and names the leader, and queues nothing
            said: list[tuple[str, str]] = []
            leadership = Leadership(
                OtherLeads(),
                no_lease,
                ttl=5.0,
                replica="r-me",
                say=lambda *a: said.append(a),  # type: ignore[arg-type]
            )
            member = Member("uuid", world.info.vcsim.url, desired.solution.key, follower, leadership)
            replica = Replica([member], EventLog(), replica="r-me")
            full_reads, reads = keeper.full_reads, follower.follow_reads
            with pytest.raises(TransientError) as refused:
                replica.resync({})
            assert "this replica follows" in str(refused.value)
            assert "replica r-other (pid 4242 on elsewhere)" in str(refused.value)
            wait_for(lambda: follower.follow_reads >= reads + 3, "refreshes after the refused resync", 30)
            assert keeper.full_reads == full_reads
            assert world.snapshot().get(vms[0].moref).power_state.value == "poweredOff"  # type: ignore[union-attr]
        finally:
            follower.stop()
            assert not follower.join(0)
