"""What replicas coordinate on through etcd: the seats they lead and who leads them.

A *seat* is one (vCenter instanceUuid, solution key): exactly one replica leads it and acts on it. Shared by
``core.spread`` (who should lead what), ``controller.leadership`` (the Coordinator) and its callers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Endpoint:
    """One etcd client endpoint (plain HTTP on its JSON gateway)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, order=True)
class SeatKey:
    """One leadership: a solution on a vCenter (its instanceUuid, never its URL: URLs have aliases)."""

    vcenter: str
    solution: str

    def __str__(self) -> str:
        return f"{self.solution} on vCenter {self.vcenter}"


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads a seat, as its leader wrote it: the replica's id, host, pid and when it won (ISO UTC)."""

    replica: str
    host: str
    pid: int
    since: str

    def describe(self) -> str:
        return f"replica {self.replica} (pid {self.pid} on {self.host}) since {self.since}"
