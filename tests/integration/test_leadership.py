"""Replicas elect one leader per seat on a real etcd (the ``etcd`` fixture): ``controller.leadership``.

Several Coordinators in one process, each with its own etcd lease, as separate replicas would be. A replica
partitioned from etcd goes through a loopback proxy the test cuts (``tests.support.tcp_proxy``).
"""

from __future__ import annotations

from collections import Counter

from agentvm.controller.leadership import Coordinator, Seat, SeatKey, parse_coordination
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
            assert left_when_fenced[0] > 0
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
    """At any moment, etcd's own count of the lease's remaining seconds ends after the fence deadline."""
    import time

    check = etcd_client(etcd)
    with coordinators(etcd.url, 1, ttl=3.0) as [c]:
        seat = c.seat(SEAT)
        until(seat.valid, "it to lead")
        for _ in range(10):
            lease = c.lease_id
            assert lease is not None
            deadline = c.fence_deadline
            asked = time.monotonic()
            left, granted = check.time_to_live(lease)
            # etcd rounds the remaining TTL down to whole seconds: the lease lives at least `left` more
            assert granted == 3
            assert deadline <= asked + left + 1.0 - 0.25 * granted
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
    """Idle (leadership settled), a replica sends one keepalive and one read per keepalive period."""
    with coordinators(etcd.url, 2) as cs:
        mine = seats(cs, SEAT)
        until(lambda: valid(mine) and all(s.leader() for s in mine), "a settled leadership")
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
            assert per_period <= 2.0, spent
            assert spent["txn"] == 0 and spent["put"] == 0 and spent["grant"] == 0, spent
            print(  # the figure for the docs: calls per minute at the default TTL of 15 s
                f"{c.replica}: {dict(spent)} over {spent['keepalive']} periods = "
                f"{per_period * 60 / keepalive_every(15):.0f} calls/min at TTL 15 s"
            )
