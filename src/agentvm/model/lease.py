"""The solution's lease as vCenter holds it: who holds it, and the records it is made of.

Written and read by ``vsphere.extensions`` (one hidden vCenter extension per record) or, on a standalone
ESXi host, ``vsphere.datastore_files`` (one directory on the host's datastore per record), judged by
``core.lease`` (pure), kept by ``controller.lease``. See ``controller.lease`` for the protocol and why it
gives one actor per vCenter and solution.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeaseHolder:
    """Who wrote a lease record. ``token`` is random per acquisition and is what identity is compared on
    (host and pid repeat across containers and restarts); the rest is for the people reading messages.
    ``started`` is the holder's wall-clock time (ISO 8601, UTC) for messages only: never compared."""

    host: str
    pid: int
    command: str  # "apply", "destroy" or "run"
    started: str
    token: str

    def describe(self) -> str:
        """``agentvm run (host ctl-1, pid 4242, since 2026-12-01T20:31:07Z)``"""
        return f"agentvm {self.command} (host {self.host}, pid {self.pid}, since {self.started})"


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of the lease: the extension ``<solution key>.lease.<generation>``.

    ``holder`` None: a record under the lease's keys that agentvm did not write (or cannot read); it counts
    for the numbering only, is never judged held, and is never updated or removed. ``renewals`` grows by
    one on every renewal; ``ttl`` is the holder's promise: it renews well within ``ttl`` seconds or stops
    acting. ``released``: the holder has stopped acting and the lease is free at once.
    """

    key: str
    generation: int
    holder: LeaseHolder | None
    renewals: int = 0
    ttl: float = 0.0
    released: bool = False

    @property
    def ours(self) -> bool:
        return self.holder is not None

    def written(self) -> dict[str, object]:
        """What a record store writes of a record agentvm holds: its holder, renewals, TTL and release."""
        holder = self.holder
        assert holder is not None, "agentvm writes only records it holds"
        return {
            "host": holder.host,
            "pid": holder.pid,
            "command": holder.command,
            "started": holder.started,
            "token": holder.token,
            "renewals": self.renewals,
            "ttl": self.ttl,
            "released": self.released,
        }

    def same_state(self, other: LeaseRecord | None) -> bool:
        """True when ``other`` is this generation, by the same holder, with the same renewals and release."""
        return (
            other is not None
            and other.generation == self.generation
            and other.holder == self.holder
            and other.renewals == self.renewals
            and other.released == self.released
        )
