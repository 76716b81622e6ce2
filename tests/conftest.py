"""Shared fixtures: the lab (vcsim + package server) started per test on port 0 and always stopped.

A fresh simulator starts in well under a second, so tests that change the inventory get their own.
Only tests marked ``lab`` build the simulator (which needs Go): the unit tests run on a machine without Go.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from agentvm.lab.etcd import Etcd
from agentvm.lab.vcsim import Shape, Vcsim, VcsimInfo, build
from agentvm.lab.world import Lab, LabInfo

# Hypothesis on a loaded 2-core CI machine: no per-example deadline (a slow example under load is not a
# failure of the property) and no "too slow" health check; a modest default example count (a test may ask
# for more). A failure prints the falsifying example and the ``@reproduce_failure`` blob that replays it;
# runs stay random (``derandomize`` off), and ``--hypothesis-seed=N`` replays a whole run.
# ``HYPOTHESIS_PROFILE=dev`` gives Hypothesis's defaults back.
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=50,
    print_blob=True,
    derandomize=False,
)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test keeps agentvm's state (the solution's generated certificate, the direct engine's
    state) in a directory of its own, never in the user's ~/.local/state/agentvm."""
    monkeypatch.setenv("AGENTVM_STATE_DIR", str(tmp_path_factory.mktemp("agentvm-state")))


@pytest.fixture(scope="session")
def _vcsim_built() -> None:
    """Build the simulator once per session (workers serialise on a lock); raises LabError without Go."""
    build()


@pytest.fixture(autouse=True)
def _vcsim_built_for_lab_tests(request: pytest.FixtureRequest) -> None:
    """A test marked ``lab`` gets the simulator built before it starts (so that no test's own timeout
    includes a first build); any other test never builds it, and so never needs Go."""
    if request.node.get_closest_marker("lab") is not None:
        request.getfixturevalue("_vcsim_built")


def _needs_the_lab_marker(request: pytest.FixtureRequest) -> None:
    """A test that starts the simulator must say so: unmarked tests run where Go is missing."""
    if request.node.get_closest_marker("lab") is None:
        pytest.fail(f"{request.node.nodeid} starts the simulator: mark it @pytest.mark.lab", pytrace=False)


@pytest.fixture
def vcsim_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., VcsimInfo]]:
    """``vcsim_factory(hosts=4, vms=2, pnics=3, eam_backend="http://127.0.0.1:N")`` → a running simulator;
    ``host_pnics={"DC0_C0_H0": ["vmnic0"]}`` gives those hosts only the NICs listed."""
    _needs_the_lab_marker(request)
    started: list[Vcsim] = []

    def start(
        *,
        plain_http: bool = False,
        eam_backend: str | None = None,
        port: int = 0,
        host_pnics: dict[str, list[str]] | None = None,
        **shape: int | bool,
    ) -> VcsimInfo:
        sim = Vcsim(
            Shape(**shape),  # type: ignore[arg-type]
            plain_http=plain_http,
            eam_backend=eam_backend,
            port=port,
            host_pnics=host_pnics,
        )
        started.append(sim)
        return sim.info

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def shared_vcsim() -> Iterator[VcsimInfo]:
    """One simulator for the whole test session (per xdist worker), for tests that only read.

    Tests that change the inventory take ``vcsim`` (a fresh one each: it starts in about 0.05 s).
    """
    sim = Vcsim(Shape())
    try:
        yield sim.info
    finally:
        sim.stop()


@pytest.fixture
def vcsim(vcsim_factory: Callable[..., VcsimInfo]) -> VcsimInfo:
    """A fresh simulator: 1 datacenter × 2 clusters × 3 hosts, a DVS, HTTPS with its own certificate."""
    return vcsim_factory()


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[LabInfo]:
    """The whole lab in-process: vcsim (default shape) and the package server."""
    _needs_the_lab_marker(request)
    with Lab() as info:
        yield info


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """A running etcd (Debian's /usr/bin/etcd) on free loopback ports, data under the test's tmp_path;
    stopped and removed after the test (tests may pause, kill or restart it meanwhile)."""
    server = Etcd(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.remove()
