"""``cli.esxi.Fleet.each_host``: the standalone hosts are worked on concurrently, at most ``at_once`` at a
time (``--hosts-at-once``), each host's error named after it, one host's failure not stopping the others."""

from __future__ import annotations

import threading
from pathlib import Path

from agentvm.cli.esxi import Fleet
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.model.desired import DesiredState, PasswordSource, SolutionSpec, StandaloneHostSpec
from agentvm.model.errors import AuthenticationError

SECRET = "s3cret-Pa55"


def fleet(count: int, at_once: int) -> tuple[Fleet, tuple[StandaloneHostSpec, ...]]:
    hosts = tuple(
        StandaloneHostSpec(
            f"esx-{i:02d}",
            VCenterConnection(
                url=f"https://esx-{i:02d}.example/sdk", username="root", password=Secret(SECRET)
            ),
            PasswordSource.ENVIRONMENT,
            "ESX_PASSWORD",
        )
        for i in range(1, count + 1)
    )
    desired = DesiredState(
        source="spec.yaml",
        solution=SolutionSpec("org.example.agentvm", "A", "", "", "1"),
        agencies=(),
        esxi=hosts,
    )
    return Fleet(desired, Path("/nonexistent"), at_once), hosts


def test_hosts_are_worked_on_concurrently_and_at_most_at_once_at_a_time() -> None:
    group, hosts = fleet(6, at_once=2)
    lock = threading.Lock()
    active = 0
    most = 0
    barrier = threading.Barrier(2, timeout=10)  # passes only with two hosts at work at once

    def work(host: StandaloneHostSpec) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        barrier.wait()
        with lock:
            active -= 1
        return host.name

    done = group.each_host(hosts, work)
    assert [d.error for d in done] == [None] * 6
    assert [d.value for d in done] == [h.name for h in hosts]  # in esxi: order
    assert most == 2


def test_one_hosts_error_names_it_without_its_password_and_stops_no_other() -> None:
    group, hosts = fleet(3, at_once=8)

    def work(host: StandaloneHostSpec) -> str:
        if host.name == "esx-02":
            raise AuthenticationError(
                f"wrong user name or password ({SECRET}): check AGENTVM_USERNAME/AGENTVM_PASSWORD"
            )
        return host.name

    done = group.each_host(hosts, work)
    assert [d.value for d in done] == ["esx-01", None, "esx-03"]
    error = done[1].error
    assert isinstance(error, AuthenticationError)
    assert str(error).startswith("esx-02 (https://esx-02.example/sdk): wrong user name or password")
    assert "check the username and $ESX_PASSWORD of esxi: entry esx-02 of the spec" in str(error)
    assert SECRET not in str(error)
