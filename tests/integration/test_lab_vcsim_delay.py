"""The lab vcsim's latency injection (``--delay``, ``--method-delay``; ``Vcsim(delay=, method_delay=)``).

Only that it is accepted and that a delayed simulator still serves agentvm; how much slower its calls are
is measured in bench/bench_inventory.py (``--delay``, ``--method-delay``), not asserted here.
"""

from __future__ import annotations

import subprocess

import pytest

from agentvm.lab.vcsim import LabError, Shape, Vcsim, build
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.vsphere.inventory import read_inventory
from agentvm.vsphere.session import Session

pytestmark = pytest.mark.lab


def test_a_simulator_with_latency_serves_the_inventory() -> None:
    with Vcsim(Shape(clusters=1, hosts=2), delay=1, method_delay={"RetrievePropertiesEx": 5}) as sim:
        info = sim.info
        conn = VCenterConnection(
            url=info.url, username=info.username, password=Secret(info.password), thumbprint=info.thumbprint
        )
        with Session(conn) as session:
            inventory = read_inventory(session)
    assert len(inventory.hosts) == 2
    assert len(inventory.clusters) == 1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"delay": -1}, r"delay must be 0 or more milliseconds \(got -1\)"),
        ({"method_delay": {"RetrievePropertiesEx": -5}}, "RetrievePropertiesEx must be 0 or more"),
        ({"method_delay": {"Retrieve:Ex": 5}}, "'Retrieve:Ex' is not a SOAP method name"),
    ],
)
def test_a_bad_latency_is_refused_before_anything_starts(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(LabError, match=named) as refused:
        Vcsim(Shape(clusters=1, hosts=1), **kwargs)  # type: ignore[arg-type]
    assert refused.value.exit_code == 2


def test_the_simulator_refuses_a_malformed_method_delay_flag() -> None:
    binary, _ = build()
    proc = subprocess.run(
        [str(binary), "--method-delay=RetrievePropertiesEx=50"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "--method-delay takes METHOD:MS pairs separated by commas" in proc.stderr
    assert "RetrievePropertiesEx=50" in proc.stderr
