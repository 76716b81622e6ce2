"""Replicas elect one leader per seat on a real etcd (the ``etcd`` fixture): ``controller.leadership``.

Several Coordinators in one process, each with its own etcd lease, as separate replicas would be. A replica
partitioned from etcd goes through a loopback proxy the test cuts (``tests.support.tcp_proxy``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

from agentvm.controller.leadership import UNREACHABLE, Coordinator, Seat, SeatKey, parse_coordination
from agentvm.core.fence import keepalive_every
from agentvm.etcd.client import EtcdClient
from agentvm.lab.etcd import Etcd
from tests.support.coordination import Journal, coordinators, proxied, seats, until, valid
from tests.support.tcp_proxy import TcpProxy

SEAT = SeatKey("vc-uuid-1", "contrail")


def etcd_client(etcd: Etcd) -> EtcdClient:
    return EtcdClient(parse_coordination(etcd.url), timeout=5.0)


def test_three_replicas_one_seat_exactly_one_leads_and_the_others_name_it(etcd: Etcd) -> None:
    journal = Journal()
    with coordinators(etcd.url, 3, journal=journal) as cs:
        mine = seats(cs, SEAT, journal)
        until(lambda: valid(mine), "a leader")
        until(lambda: all(s.leader() is not None for s in mine), "every replica to see the leader")
        [leader] = valid(mine)
        info = mine[leader].leader()
        assert info is not None and info.replica == cs[leader].replica
        for i, seat in enumerate(mine):
            assert seat.leader() == info
            if i != leader:
                assert seat.why is not None and f"replica {info.replica}" in seat.why
        assert mine[leader].why is None
        # etcd holds one leader key, attached to the leader's lease
        _, entries = etcd_client(etcd).range_prefix("/agentvm/v1/leaders/")
        assert [e.lease for e in entries] == [cs[leader].lease_id]
        assert valid(mine) == [leader]


def test_stop_of_the_leader_hands_over_at_once_not_after_a_ttl(etcd: Etcd) -> None:
    journal = Journal()
    with coordinators(etcd.url, 3, journal=journal, ttl=8.0) as cs:
        mine = seats(cs, SEAT, journal)
        until(lambda: valid(mine) and all(s.leader() for s in mine), "a leader seen by all")
        [leader] = valid(mine)
        old_lease = cs[leader].lease_id
        assert old_lease is not None
        keepalives = {c.replica: c.calls["keepalive"] for c in cs}
        cs[leader].stop()
        assert not mine[leader].valid()
        until(lambda: valid(mine), "a new leader")
        [new] = valid(mine)
        assert new != leader
        # the old lease was revoked (its keys went with it), not left to expire ...
        assert etcd_client(etcd).time_to_live(old_lease)[0] == -1
        # ... and the new leader took over within one keepalive period: far fewer than the 4 periods of a TTL
        assert cs[new].calls["keepalive"] - keepalives[cs[new].replica] <= 1
        assert mine[new].transitions == 2
        assert journal.index(cs[leader].replica, SEAT, False) is not None


def test_a_replica_cut_from_etcd_fences_before_its_lease_can_expire_and_only_then_another_wins(
    etcd: Etcd,
) -> None:
    journal = Journal()
    with (
        TcpProxy("127.0.0.1", etcd.client_port) as proxy,
        coordinators(proxied(proxy.port), 1, journal=journal) as [cut],
    ):
        mine = cut.seat(SEAT)
        journal.listen(cut.replica, mine)
        until(mine.valid, "the first replica to lead")
        with coordinators(etcd.url, 1, journal=journal, first=1) as [other]:
            theirs = seats([other], SEAT, journal)[0]
            until(lambda: theirs.leader() is not None, "the second replica to see the leader")
            lease = cut.lease_id
            assert lease is not None
            check = etcd_client(etcd)
            left_when_fenced: list[int] = []

            def fenced(valid: bool) -> None:
                if not valid:
                    left_when_fenced.append(check.time_to_live(lease)[0])

            mine.add_listener(fenced)
            proxy.cut()
            until(lambda: left_when_fenced, "the cut replica to fence")
            # etcd still held its lease (and so its key) when it stopped acting
            assert left_when_fenced[0] >= 0  # -1: no such lease
            assert not mine.valid()
            assert mine.why is not None and mine.why.startswith("etcd unreachable")
            assert any("etcd unreachable" in t for t in journal.texts(cut.replica, "error"))
            until(theirs.valid, "the other replica to take over once the lease expired")
            assert check.time_to_live(lease)[0] == -1
            fence_at = journal.index(cut.replica, SEAT, False)
            won_at = journal.index(other.replica, SEAT, True)
            assert fence_at is not None and won_at is not None and fence_at < won_at
            # back in touch: the cut replica's lease is gone, it joins again and follows
            proxy.restore()
            until(lambda: cut.healthy(), "the cut replica to join again")
            until(lambda: mine.leader() is not None and mine.leader() == theirs.leader(), "it to follow")
            assert cut.lease_id != lease
            assert not mine.valid() and theirs.valid()


def test_fence_deadline_is_before_the_lease_expires_as_etcd_reports_it(etcd: Etcd) -> None:
    """At any moment, the lease lives longer, by etcd's own count, than the replica's right to act.

    etcd reports the seconds left rounded down, so ``asked + left`` is a lower bound of the expiry; with a
    TTL of 5 s the margin (1.25 s) covers the rounding (under 1 s) and the query's own latency, and the
    bound alone proves it.
    """
    check = etcd_client(etcd)
    with coordinators(etcd.url, 1, ttl=5.0) as [c]:
        seat = c.seat(SEAT)
        until(seat.valid, "it to lead")
        for _ in range(3):
            lease = c.lease_id
            assert lease is not None
            deadline = c.fence_deadline
            asked = time.monotonic()
            left, granted = check.time_to_live(lease)
            assert granted == 5
            assert deadline <= asked + left
            until(lambda d=deadline: c.fence_deadline > d, "the next keepalive")


def test_etcd_paused_the_leader_fences_and_says_why_and_one_leads_after_it_resumes(etcd: Etcd) -> None:
    journal = Journal()
    with coordinators(etcd.url, 2, journal=journal) as cs:
        mine = seats(cs, SEAT, journal)
        until(lambda: valid(mine), "a leader")
        [leader] = valid(mine)
        etcd.pause()
        try:
            until(lambda: not mine[leader].valid(), "the leader to fence")
            why = mine[leader].why
            assert why is not None and why.startswith("etcd unreachable")
            assert not cs[leader].healthy()
            assert valid(mine) == []
        finally:
            etcd.resume()
        until(lambda: valid(mine), "one leader again")
        until(lambda: all(c.healthy() for c in cs), "both to be healthy")
        assert len(valid(mine)) == 1


def test_etcd_restarted_the_leader_fences_and_one_leads_again(etcd: Etcd) -> None:
    journal = Journal()
    with coordinators(etcd.url, 2, journal=journal) as cs:
        mine = seats(cs, SEAT, journal)
        until(lambda: valid(mine), "a leader")
        [leader] = valid(mine)
        etcd.stop()
        until(lambda: not mine[leader].valid(), "the leader to fence")
        assert valid(mine) == []
        assert any("etcd unreachable" in t for t in journal.texts(cs[leader].replica, "error"))
        etcd.start()
        until(lambda: valid(mine), "one leader again")
        assert len(valid(mine)) == 1


def shares(cs: list[Coordinator], by: dict[str, list[Seat]]) -> list[int]:
    """How many seats each replica validly leads, sorted."""
    return sorted(sum(1 for s in by[c.replica] if s.valid()) for c in cs)


def test_four_seats_spread_over_two_then_three_replicas_and_move_when_one_stops(etcd: Etcd) -> None:
    keys = [SeatKey(f"vc-{i}", "contrail") for i in range(4)]
    with coordinators(etcd.url, 3, hold_down=0.2) as cs:
        by = {c.replica: [c.seat(k) for k in keys] for c in cs[:2]}
        until(lambda: shares(cs[:2], by) == [2, 2], "2 + 2 over two replicas")
        by[cs[2].replica] = [cs[2].seat(k) for k in keys]
        until(lambda: shares(cs, by) == [1, 1, 2], "1 + 1 + 2 over three replicas")
        for k, key in enumerate(keys):  # never two leaders of a seat
            assert sum(1 for c in cs if by[c.replica][k].valid()) == 1, key
        cs[0].stop()
        until(lambda: shares(cs[1:], by) == [2, 2], "2 + 2 once one stopped")


def test_idle_replica_calls_to_etcd_per_keepalive_period(etcd: Etcd) -> None:
    """Idle (leadership settled, the watch up), a replica sends one keepalive per period and nothing else."""
    with coordinators(etcd.url, 2) as cs:
        mine = seats(cs, SEAT)
        until(lambda: valid(mine) and all(s.leader() for s in mine), "a settled leadership")
        until(lambda: all(c.watching for c in cs), "both watches up")
        ready = [c.calls["keepalive"] for c in cs]
        until(lambda: all(c.calls["keepalive"] > k for c, k in zip(cs, ready, strict=True)), "one round more")
        before = [Counter(c.calls) for c in cs]
        periods = 8
        until(
            lambda: all(
                c.calls["keepalive"] - b["keepalive"] >= periods for c, b in zip(cs, before, strict=True)
            ),
            f"{periods} keepalives each",
        )
        for c, b in zip(cs, before, strict=True):
            spent = Counter(c.calls)
            spent.subtract(b)
            per_period = sum(spent.values()) / spent["keepalive"]
            assert +spent == Counter(keepalive=spent["keepalive"]), spent
            print(  # the figure for the docs: calls per minute at the default TTL of 15 s
                f"{c.replica}: {dict(spent)} over {spent['keepalive']} periods = "
                f"{per_period * 60 / keepalive_every(15):.0f} calls/min at TTL 15 s"
            )


def test_a_second_process_with_the_same_replica_id_acts_on_nothing_until_the_first_stops(etcd: Etcd) -> None:
    first = Coordinator(parse_coordination(etcd.url), ttl=2, replica="same").start()
    second = Coordinator(parse_coordination(etcd.url), ttl=2, replica="same")
    try:
        mine = first.seat(SEAT)
        until(mine.valid, "the first to lead")
        second.start()
        theirs = second.seat(SEAT)
        until(lambda: second.trouble and "in use by another process" in second.trouble, "the clash named")
        assert f"pid {first.pid}" in (theirs.why or "")
        assert not theirs.valid() and not second.healthy() and mine.valid()
        first.stop()
        until(theirs.valid, "the second to lead once the first stopped")
    finally:
        first.stop()
        second.stop()


def test_a_keepalive_that_hangs_past_the_deadline_fences_at_the_deadline_while_etcd_still_holds_the_lease(
    etcd: Etcd,
) -> None:
    """The request timeout (5 s) is longer than the margin: the fence thread, not the failed request, stops
    the replica, and etcd still counts the lease alive then."""
    check = etcd_client(etcd)
    with TcpProxy("127.0.0.1", etcd.client_port) as proxy:
        events: list[str] = []
        stalled = Coordinator(
            parse_coordination(proxied(proxy.port)),
            ttl=4,
            replica="stalled",
            timeout=5.0,
            on_event=lambda seat, level, text: events.append(text),
        )
        try:
            stalled.start()
            seat = stalled.seat(SEAT)
            until(seat.valid, "it to lead")
            lease = stalled.lease_id
            assert lease is not None
            seen: list[tuple[int, str | None]] = []

            def fenced(valid: bool) -> None:
                if not valid:
                    seen.append((check.time_to_live(lease)[0], seat.why))

            seat.add_listener(fenced)
            proxy.stall()
            until(lambda: seen, "the stalled replica to fence")
            left, why = seen[0]
            assert (
                left >= 0
            )  # etcd still held the lease (-1: no such lease): the replica stopped acting first
            assert why is not None and "could not be renewed in time" in why
            # no request had failed yet (each hangs for 5 s): the deadline alone fenced it
            assert not any(UNREACHABLE in text for text in events)
            assert not stalled.healthy()
        finally:
            proxy.restore()
            stalled.stop()


def test_with_several_endpoints_a_dead_one_is_passed_over_without_fencing(etcd: Etcd) -> None:
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[1]
        journal = Journal()
        url = f"etcd://127.0.0.1:{dead},127.0.0.1:{etcd.client_port}"
        with coordinators(url, 1, journal=journal) as [c]:
            seat = c.seat(SEAT)
            until(seat.valid, "it to lead through the live endpoint")
            assert c.calls["grant"] == 2  # the dead endpoint, then the live one, within one request
            assert journal.texts(c.replica, "error") == []


CHILD = """
import sys, threading
from agentvm.controller.leadership import Coordinator, SeatKey, parse_coordination
c = Coordinator(parse_coordination(sys.argv[1]), ttl=2, replica="child").start()
seats = [c.seat(SeatKey(v, "contrail")) for v in sys.argv[2:]]
led = threading.Event()
for seat in seats:
    seat.add_listener(lambda valid: valid and led.set())
led.wait(30)
print(c.lease_id, flush=True)
threading.Event().wait()
"""


def test_a_replica_killed_with_sigkill_is_replaced_once_its_lease_expired_and_for_every_seat(
    etcd: Etcd,
) -> None:
    keys = [SeatKey("vc-a", "contrail"), SeatKey("vc-b", "contrail")]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, etcd.url, *(k.vcenter for k in keys)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert child.stdout is not None
        lease = int(child.stdout.readline())  # it leads (both: it is alone)
        check = etcd_client(etcd)
        with coordinators(etcd.url, 1, hold_down=60.0) as [survivor]:  # no spreading to it meanwhile
            mine = [survivor.seat(k) for k in keys]
            until(lambda: all(s.leader() is not None for s in mine), "the survivor to see the child lead")
            assert {s.leader().replica for s in mine if s.leader()} == {"child"}
            gone_when_won: list[int] = []

            def won(valid: bool) -> None:
                if valid and not gone_when_won:
                    gone_when_won.append(check.time_to_live(lease)[0])

            for seat in mine:
                seat.add_listener(won)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            until(lambda: all(s.valid() for s in mine), "the survivor to lead both")
            # valid() turns true before the listeners are told (they run on a Coordinator thread after it)
            until(lambda: gone_when_won, "the survivor's listener to hear it won")
            assert gone_when_won == [-1]  # it won only once etcd had let the dead replica's lease go
            assert survivor.members() == (survivor.replica,)
    finally:
        child.kill()
        child.wait(10)


def test_a_listener_may_release_its_seat_from_its_own_callback(etcd: Etcd) -> None:
    with coordinators(etcd.url, 2) as [first, second]:
        mine = first.seat(SEAT)
        mine.add_listener(lambda valid: valid and mine.release())
        until(lambda: mine.released, "the first to lead, then release from its listener")
        theirs = second.seat(SEAT)
        until(theirs.valid, "the second to lead")
        assert not mine.valid() and mine.why == "released by this replica"
