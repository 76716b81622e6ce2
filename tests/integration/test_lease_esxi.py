"""The solution's lease on a standalone ESXi host (``controller.lease`` with ``vsphere.datastore_files``):
records as directories on the host's first datastore, the same protocol as on a vCenter.

Every contender has a session of its own (as separate processes would); one test runs the holder as a
separate process and kills it with SIGKILL. What the lease wrote is checked independently, with bare
pyVmomi and plain HTTP against the host simulator: a HostDatastoreBrowser search of ``.agentvm`` and a GET
of the record file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from agentvm.controller.lease import Keeper, Lease, LeaseHeldError, current_holder, holding, lease_store
from agentvm.core.lease import LeaseVerdict
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere.datastore_files import UNWRITTEN_COMMAND, DatastoreLeaseStore
from agentvm.vsphere.session import Session
from tests.support.esxi_lab import connected, restart_host, the_host

pytestmark = pytest.mark.lab

TTL = 3.0
_PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    with Lab(esxi=1, vcenter=False) as info:
        yield info


@pytest.fixture
def key() -> str:
    """A solution key of the test's own, so tests on the shared host do not see each other's records."""
    return f"org.example.lease{uuid.uuid4().hex[:8]}"


def host_session(info: VcsimInfo) -> Session:
    conn = VCenterConnection(
        url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
    )
    return Session.connect(conn, host_agent=True)


@contextlib.contextmanager
def sessions(info: VcsimInfo, count: int) -> Iterator[list[Session]]:
    opened = [host_session(info) for _ in range(count)]
    try:
        yield opened
    finally:
        for session in opened:
            session.logout()


def first_datastore(si: Any) -> Any:
    """The host's datastore that sorts first by name."""
    _, _, host = the_host(si)
    return sorted(host.datastore, key=lambda d: d.name)[0]


def lease_dirs(info: VcsimInfo, key: str) -> list[str]:
    """The names under ``[<first datastore>] .agentvm`` that start with the key's lease prefix, by a
    datastore browser search of bare pyVmomi ([] when there is no ``.agentvm``)."""
    with connected(info) as si:
        datastore = first_datastore(si)
        spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=[f"{key}.lease.*"])
        task = datastore.browser.SearchDatastore_Task(f"[{datastore.name}] .agentvm", spec)
        try:
            WaitForTask(task)
        except vim.fault.FileNotFound:
            return []
        return sorted(f.path for f in task.info.result.file or ())


def record_file(info: VcsimInfo, key: str, generation: int) -> dict[str, Any] | None:
    """The JSON of a record's file, by a plain HTTP GET of the host's /folder (None: 404)."""
    with connected(info) as si:
        datastore = first_datastore(si).name
        cookie = si._stub.cookie
    url = (
        f"https://{info.host}:{info.port}/folder/.agentvm/{key}.lease.{generation}/record.json"
        f"?dcPath=ha-datacenter&dsName={datastore}"
    )
    context = ssl._create_unverified_context()  # noqa: S323 (connected() checked the thumbprint)
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def test_a_host_agents_lease_is_kept_in_directories_on_its_first_datastore(lab: LabInfo, key: str) -> None:
    info = lab.esxi[0]
    with sessions(info, 1) as (session,):
        store = lease_store(session)
        assert isinstance(store, DatastoreLeaseStore)
        with connected(info) as si:
            _, _, host = the_host(si)
            names = sorted(d.name for d in host.datastore)
        assert store.datastore == names[0]
        with holding(session, key, "apply", wait=10, ttl=TTL) as lease:
            generation = lease.generation
            assert generation is not None
            assert lease_dirs(info, key) == [f"{key}.lease.{generation}"]
            written = record_file(info, key, generation)
            assert written is not None
            assert written["token"] == lease.me.token and written["pid"] == os.getpid()
            assert written["command"] == "apply" and written["released"] is False
            assert written["ttl"] == TTL and written["solution"] == key
            assert current_holder(session, key) == lease.me
        released = record_file(info, key, generation)
        assert released is not None and released["released"] is True
        assert current_holder(session, key) is None


def test_a_renewal_is_one_put_one_rename_one_search_and_one_get(lab: LabInfo, key: str) -> None:
    """What keeping the lease costs on a host, per renewal (every TTL/4), counted by the session: the lab's
    file tasks have ended when their call returns, so each task wait is one read of its info."""
    info = lab.esxi[0]
    with sessions(info, 1) as (session,):
        lease = Lease(session, key, "apply", ttl=TTL)
        lease.acquire(wait=10)
        before = session.stats.snapshot()
        assert lease.renew()
        assert session.stats.snapshot() - before == Counter(
            {
                "PUT /folder": 1,  # the record beside its directory
                "MoveDatastoreFile_Task": 1,  # renamed onto record.json
                "SearchDatastore_Task": 1,  # the directories of the solution's records
                "RetrievePropertiesEx": 2,  # the two tasks' info
                "GET /folder": 1,  # the one record
            }
        )
        before = session.stats.snapshot()
        assert current_holder(session, key) == lease.me  # the datastore was chosen once per session
        assert "RetrievePropertiesEx" in before and session.stats.snapshot() - before == Counter(
            {"SearchDatastore_Task": 1, "RetrievePropertiesEx": 1, "GET /folder": 1}
        )
        lease.release()


def test_of_contenders_registering_one_generation_together_exactly_one_gets_it(
    lab: LabInfo, key: str
) -> None:
    """The atomic primitive: MakeDirectory of one record's directory from four sessions at once."""
    info = lab.esxi[0]
    with sessions(info, 4) as opened:
        for generation in (5, 6, 7):
            records = [
                LeaseRecord("", generation, LeaseHolder("h", i, "apply", "", f"token{i}"), ttl=TTL)
                for i in range(len(opened))
            ]
            start = threading.Barrier(len(opened))
            won: dict[int, bool] = {}
            threads = [
                threading.Thread(target=register, args=(start, DatastoreLeaseStore(s), key, r, won))
                for s, r in zip(opened, records, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(won) == [0, 1, 2, 3]
            winners = [pid for pid, ok in won.items() if ok]
            assert len(winners) == 1, won
            on_host = record_file(info, key, generation)
            assert on_host is not None and on_host["pid"] == winners[0]


def register(
    start: threading.Barrier, store: DatastoreLeaseStore, key: str, record: LeaseRecord, won: dict[int, bool]
) -> None:
    start.wait()
    assert record.holder is not None
    won[record.holder.pid] = store.register(key, record)


def test_of_contenders_starting_together_exactly_one_holds_while_it_renews(lab: LabInfo, key: str) -> None:
    info = lab.esxi[0]
    with sessions(info, 4) as opened:
        for trial in range(2):
            leases = [Lease(s, f"{key}.{trial}", "apply", ttl=TTL) for s in opened]
            start = threading.Barrier(len(leases))
            outcome: dict[int, LeaseHeldError | Keeper] = {}
            threads = [
                threading.Thread(target=contend, args=(start, x, outcome, i)) for i, x in enumerate(leases)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            keepers = [k for k in outcome.values() if isinstance(k, Keeper)]
            try:
                assert sorted(outcome) == [0, 1, 2, 3]
                assert len(keepers) == 1, outcome
                winner = keepers[0].lease
                assert [x for x in leases if x.held] == [winner]
                refusals = [e for e in outcome.values() if isinstance(e, LeaseHeldError)]
                assert len(refusals) == 3 and all(e.holder == winner.me for e in refusals)
                assert current_holder(opened[0], f"{key}.{trial}") == winner.me
            finally:
                for keeper in keepers:
                    keeper.stop()
                    keeper.lease.release()


def contend(
    start: threading.Barrier, lease: Lease, outcome: dict[int, LeaseHeldError | Keeper], index: int
) -> None:
    """Acquire within 2 TTL; the one that gets it keeps renewing it (so the others never may)."""
    start.wait()
    try:
        lease.acquire(wait=2 * TTL)
    except LeaseHeldError as exc:
        outcome[index] = exc
        return
    outcome[index] = Keeper(lease).start()


def test_a_renewing_holder_keeps_it_and_its_release_lets_the_next_in_at_once(lab: LabInfo, key: str) -> None:
    info = lab.esxi[0]
    with sessions(info, 2) as (first, second):
        holder = Lease(first, key, "apply", ttl=TTL)
        holder.acquire(wait=10)
        keeper = Keeper(holder).start()
        try:
            contender = Lease(second, key, "apply", ttl=TTL)
            with pytest.raises(LeaseHeldError) as held:
                contender.acquire(wait=2.5 * TTL)  # the holder renews meanwhile: never free
            assert held.value.holder == holder.me
            with pytest.raises(LeaseHeldError):  # and it is seen renewing well within a TTL
                contender.acquire(wait=TTL, give_up=lambda judgement: judgement.alive)
            assert contender.last is not None and contender.last.alive
            generation = holder.generation
            assert generation is not None
            written = record_file(info, key, generation)
            assert written is not None and written["renewals"] >= 2  # about 10 by now, every TTL/4
            assert holder.valid()
        finally:
            keeper.stop()
        holder.release()
        fresh = Lease(second, key, "apply", ttl=30.0)
        fresh.acquire(wait=30.0)
        assert fresh.acquired_after is not None and fresh.acquired_after < 5.0  # a TTL of 30: at once
        assert fresh.generation == generation + 1
        assert lease_dirs(info, key) == [f"{key}.lease.{generation + 1}"]  # the old record removed
        fresh.release()


def test_a_holder_that_stops_renewing_is_taken_over_after_one_ttl_and_knows_it(
    lab: LabInfo, key: str
) -> None:
    info = lab.esxi[0]
    with sessions(info, 2) as (first, second):
        stalled = Lease(first, key, "apply", ttl=TTL)
        stalled.acquire(wait=10)
        started = time.monotonic()
        taker = Lease(second, key, "apply", ttl=TTL)
        taker.acquire(wait=4 * TTL)
        took = time.monotonic() - started
        assert TTL <= took < 3 * TTL
        assert not stalled.valid()  # its right to act ran out on its own clock (3/4 TTL)
        assert stalled.renew() is False
        # the taker removed the lower records (its own is above): either way the stalled one has lost it
        assert stalled.lost in ("its record was removed", f"taken over by {taker.me.describe()}")
        assert current_holder(second, key) == taker.me
        taker.release()


HOLDER_SCRIPT = """
import os, sys
from agentvm.controller.lease import holding
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere.session import Session

conn = VCenterConnection(
    url=os.environ["HOST_URL"], username=os.environ["HOST_USER"],
    password=Secret(os.environ["HOST_PASSWORD"]), thumbprint=os.environ["HOST_THUMBPRINT"],
)
session = Session.connect(conn, host_agent=True)
with holding(session, sys.argv[1], "apply", wait=30, ttl=float(sys.argv[2])) as lease:
    print("held", lease.generation, flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills this process
print("released", flush=True)
"""


def holder_process(info: VcsimInfo, key: str) -> subprocess.Popen[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        **_PYTHONPATH,
        "HOST_URL": info.url,
        "HOST_USER": info.username,
        "HOST_PASSWORD": info.password,
        "HOST_THUMBPRINT": info.thumbprint or "",
    }
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, key, str(TTL)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_cannot_take_it_while_the_first_holds_it_and_takes_over_after_kill_9(
    lab: LabInfo, key: str
) -> None:
    info = lab.esxi[0]
    child = holder_process(info, key)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("held "), child.stderr.read() if child.stderr else line
        with sessions(info, 1) as (session,):
            contender = Lease(session, key, "apply", ttl=TTL)
            with pytest.raises(LeaseHeldError) as held:
                contender.acquire(wait=2 * TTL)
            assert held.value.holder is not None and held.value.holder.pid == child.pid
            assert f"pid {child.pid}" in str(held.value)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            killed = time.monotonic()
            contender.acquire(wait=4 * TTL)
            took = time.monotonic() - killed
            # its last renewal was at most TTL/4 before the kill; seen unchanged for a full TTL since
            assert 0.75 * TTL <= took < 3 * TTL
            assert current_holder(session, key) == contender.me
            contender.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_a_process_that_finishes_releases_it_for_the_next_at_once(lab: LabInfo, key: str) -> None:
    info = lab.esxi[0]
    child = holder_process(info, key)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().startswith("held ")
        child.stdin.close()
        assert child.stdout.readline() == "released\n"
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    with sessions(info, 1) as (session,):
        lease = Lease(session, key, "apply", ttl=30.0)
        lease.acquire(wait=30.0)
        assert lease.acquired_after is not None and lease.acquired_after < 5.0
        lease.release()


def make_lease_dir(info: VcsimInfo, key: str, generation: int, record: bytes | None = None) -> None:
    """What a contender that died between its MakeDirectory and its first write leaves (``record`` None),
    or a directory whose record.json someone else wrote: by bare pyVmomi and a plain HTTP PUT."""
    with connected(info) as si:
        datastore = first_datastore(si).name
        manager = si.content.fileManager
        manager.MakeDirectory(f"[{datastore}] .agentvm", createParentDirectories=True)
        manager.MakeDirectory(f"[{datastore}] .agentvm/{key}.lease.{generation}")  # no parents
        cookie = si._stub.cookie
    if record is not None:
        url = (
            f"https://{info.host}:{info.port}/folder/.agentvm/{key}.lease.{generation}/record.json"
            f"?dcPath=ha-datacenter&dsName={datastore}"
        )
        request = urllib.request.Request(url, data=record, method="PUT", headers={"Cookie": cookie})
        context = ssl._create_unverified_context()  # noqa: S323 (connected() checked the thumbprint)
        with urllib.request.urlopen(request, context=context, timeout=10):
            pass


def test_a_directory_left_without_its_record_holds_it_for_the_minimum_ttl_then_is_removed(
    lab: LabInfo, key: str
) -> None:
    info = lab.esxi[0]
    make_lease_dir(info, key, 41)
    with sessions(info, 1) as (session,):
        lease = Lease(session, key, "apply", ttl=TTL)
        first = lease.step()
        assert first.verdict is LeaseVerdict.HELD and first.holder is not None
        assert first.holder.command == UNWRITTEN_COMMAND and f"{key}.lease.41" in first.holder.token
        started = time.monotonic()
        lease.acquire(wait=10)
        assert time.monotonic() - started < TTL  # judged with the minimum TTL (1 s), not the holder's
        assert lease.generation == 42
        assert lease_dirs(info, key) == [f"{key}.lease.42"]  # the empty one removed as stale
        lease.release()


class SlowWriter(DatastoreLeaseStore):
    """A contender that stalls between its MakeDirectory and its first write, for as long as another
    contender takes the lease and removes the stalled one's empty directory as stale."""

    def __init__(self, session: Session, while_stalled: Any) -> None:
        super().__init__(session)
        self.while_stalled = while_stalled

    def update(self, solution_key: str, record: LeaseRecord) -> None:
        if record.renewals == 0 and not record.released and self.while_stalled is not None:
            stalled, self.while_stalled = self.while_stalled, None
            stalled()
        super().update(solution_key, record)


def test_a_contender_whose_empty_directory_was_taken_over_loses_that_generation_and_waits(
    lab: LabInfo, key: str
) -> None:
    info = lab.esxi[0]
    with sessions(info, 2) as (first, second):
        taker = Lease(second, key, "apply", ttl=TTL)
        slow = Lease(first, key, "apply", ttl=TTL)
        slow._store = SlowWriter(first, lambda: taker.acquire(wait=10))
        verdict = slow.step()
        assert verdict.verdict is LeaseVerdict.HELD and not slow.held
        assert taker.held and lease_dirs(info, key) == [f"{key}.lease.{taker.generation}"]
        assert slow.step().holder == taker.me  # and then it sees the taker holding it
        taker.release()


def test_a_record_agentvm_did_not_write_only_takes_its_number_and_is_left_alone(
    lab: LabInfo, key: str
) -> None:
    info = lab.esxi[0]
    make_lease_dir(info, key, 7, b"edited by hand")
    with sessions(info, 1) as (session,):
        lease = Lease(session, key, "apply", ttl=30.0)
        lease.acquire(wait=10)
        assert lease.acquired_after is not None and lease.acquired_after < 5.0  # at once
        # above it: with no record of ours a new series starts (at a random number above the foreign one)
        assert lease.generation is not None and lease.generation > 7
        lease.retire()
        assert lease_dirs(info, key) == [f"{key}.lease.7"]
        assert lease_store(session).read(key) == [LeaseRecord(f"{key}.lease.7", 7, None)]


def test_retire_removes_every_record_of_the_solution_and_no_other(lab: LabInfo, key: str) -> None:
    info = lab.esxi[0]
    with sessions(info, 1) as (session,):
        other = Lease(session, f"{key}x", "apply", ttl=TTL)  # a solution whose key extends this one's
        other.acquire(wait=10)
        for _ in range(3):  # a few generations, released
            lease = Lease(session, key, "apply", ttl=TTL)
            lease.acquire(wait=10)
            lease.release()
        last = Lease(session, key, "destroy", ttl=TTL)
        last.acquire(wait=10)
        assert len(lease_dirs(info, key)) >= 1
        last.retire()
        assert lease_dirs(info, key) == []
        assert lease_store(session).read(key) == []
        assert lease_dirs(info, f"{key}x") == [f"{key}x.lease.{other.generation}"]
        assert other.renew()
        other.release()
        # a new series starts afresh
        again = Lease(session, key, "apply", ttl=TTL)
        again.acquire(wait=10)
        assert again.generation != last.generation
        again.release()


def test_a_host_restart_in_the_lab_loses_the_records_and_the_holder_stops_at_its_next_renewal() -> None:
    """The lab's restarted host simulator comes back with a new, empty datastore (docs/lab.md), unlike a
    real host, whose datastore keeps the records (and whose holder keeps the lease): the records are gone,
    the holder's next renewal finds its record removed and it stops acting; the next contender gets in."""
    key = "org.example.restart"
    lab = Lab(esxi=1, vcenter=False)
    try:
        info = lab.start().esxi[0]
        with sessions(info, 1) as (session,):
            holder = Lease(session, key, "apply", ttl=TTL)
            holder.acquire(wait=10)
            assert holder.renew()
            info = restart_host(lab, info.host_name)
            assert lease_dirs(info, key) == []
            # the first call after the restart may meet the old connection (a transient error, retried at
            # the next renewal, as the Keeper does every TTL/4)
            attempts = 0
            while holder.lost is None and attempts < 5:
                attempts += 1
                assert holder.renew() is False
            assert holder.lost == "its record was removed" and not holder.valid()
            with sessions(info, 1) as (other,):
                fresh = Lease(other, key, "apply", ttl=30.0)
                fresh.acquire(wait=30.0)
                assert fresh.acquired_after is not None and fresh.acquired_after < 5.0
                fresh.release()
    finally:
        lab.stop()
