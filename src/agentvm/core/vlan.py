"""Per-host VLAN bookkeeping for netsync: which VLANs a host's DV ports may carry and which are taken.

Called by ``agentvm.core.netsync`` once per host per sync. Pure: no I/O. A VLAN on a DV port isolates one VM
interface on its host's vRouter, so it must be unique per host and never 0, 4095, a PVLAN id or a reserved
one (docs/architecture.md, "Netsync").
"""

from __future__ import annotations

from collections.abc import Iterable

VLAN_MIN = 1
VLAN_MAX = 4094


def excluded_vlans(pvlan_ids: Iterable[int], reserved: Iterable[tuple[int, int]]) -> frozenset[int]:
    """The VLANs never handed out: the PVLAN ids plus every inclusive reserved range (clipped to 1-4094)."""
    excluded = {v for v in pvlan_ids if VLAN_MIN <= v <= VLAN_MAX}
    for start, end in reserved:
        excluded.update(range(max(start, VLAN_MIN), min(end, VLAN_MAX) + 1))
    return frozenset(excluded)


class HostVlans:
    """The VLANs of one host during one plan: ``keep`` what ports already carry, ``allocate`` the rest.

    A small mutable helper local to one call of ``netsync.plan``; it never escapes it. Allocation hands out
    the lowest free VLAN, so the result depends only on what is kept and the order of the calls.
    """

    def __init__(self, excluded: frozenset[int]) -> None:
        self._excluded = excluded
        self._taken: set[int] = set()
        self._next = VLAN_MIN  # every VLAN below it is excluded or taken

    def usable(self, vlan: int) -> bool:
        return VLAN_MIN <= vlan <= VLAN_MAX and vlan not in self._excluded

    def keep(self, vlan: int | None) -> bool:
        """Take ``vlan`` if it is usable and free on this host; False (nothing taken) otherwise."""
        if vlan is None or not self.usable(vlan) or vlan in self._taken:
            return False
        self._taken.add(vlan)
        return True

    def allocate(self) -> int | None:
        """The lowest free usable VLAN, now taken; None when the host has none left (exhaustion)."""
        while self._next <= VLAN_MAX:
            vlan = self._next
            self._next += 1
            if vlan not in self._excluded and vlan not in self._taken:
                self._taken.add(vlan)
                return vlan
        return None

    @property
    def capacity(self) -> int:
        """How many interfaces this host can carry at most."""
        return VLAN_MAX - VLAN_MIN + 1 - len(self._excluded)
