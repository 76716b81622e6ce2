"""Host network preparation as frozen values: what an agency's ``hostNetwork`` asks for, and what a host has.

Two groups, read top to bottom:

* the **desired** side (what ``agentvm.spec`` reads from an agency's ``hostNetwork`` section): the fabric port
  group on a standard vSwitch bound to a physical NIC, the trunk DV port group on a distributed switch, and
  which of the agent VM's OVF networks goes on which;
* the **observed** side (what ``agentvm.vsphere`` reads in bulk, one property-collector read for all hosts in
  scope and one for the distributed switches): each host's physical NICs, standard vSwitches, standard port
  groups and distributed-switch memberships, the switches' DV port groups, and what agentvm recorded as
  its own.

``agentvm.core`` compares the two (the checks of Nova's VLAN workflow: the NIC exists, the vSwitch is bound to
it, the port group is on that vSwitch with that VLAN) and decides what to create, what is already right and
what is a conflict. Field names follow the vSphere API in snake_case.

**Ownership.** agentvm changes only what it created. For standard objects the record is a custom attribute on
the host (``OWNER_FIELD``), holding ``HostNetworkOwned``; for DV port groups it is their description, which
starts with ``OWNER_MARK``. A host joined to a distributed switch by agentvm is recorded in the host's
attribute too.
"""

from __future__ import annotations

from dataclasses import dataclass

OWNER_FIELD = "org.tungsten.agentvm.hostNetwork"
"""The custom attribute (``CustomFieldsManager``, on ``HostSystem``) where agentvm records what it created on
a host: its value is ``HostNetworkOwned.encode()``."""

OWNER_MARK = "Managed by agentvm"
"""How a DV port group's ``config.description`` starts when agentvm created it."""

VLAN_MAX = 4094
"""The highest VLAN id a port group may carry; 4095 (a standard port group's "all VLANs") is never used for
a trunk range."""

# ---------------------------------------------------------------------------------------------------------
# desired (from the spec)


@dataclass(frozen=True)
class SecurityPolicy:
    """A port group's security policy; None leaves that setting as vSphere's default (inherited)."""

    promiscuous: bool | None = None
    forged_transmits: bool | None = None
    mac_changes: bool | None = None


@dataclass(frozen=True)
class FabricSpec:
    """``hostNetwork.fabric``: a standard port group on every host in scope.

    ``vswitch`` must be bound to ``pnic``; when it is missing it is created bound to ``pnic`` if
    ``create_vswitch`` (the spec's ``create: true``), else that host fails its check. ``vlan`` 0 means
    untagged.
    """

    pnic: str
    vswitch: str
    port_group: str
    vlan: int = 0
    create_vswitch: bool = False
    security: SecurityPolicy = SecurityPolicy()


@dataclass(frozen=True)
class TrunkSpec:
    """``hostNetwork.trunk``: a DV port group carrying VLAN ranges on a distributed switch.

    Every host in scope must be a member of ``dvs``; with ``join`` a host that is not is added to it with
    ``uplink`` (a physical NIC) as its uplink. ``vlans`` are inclusive ranges within 1-``VLAN_MAX``.
    """

    dvs: str  # the distributed switch's name
    port_group: str
    vlans: tuple[tuple[int, int], ...] = ((1, VLAN_MAX),)
    join: bool = False
    uplink: str | None = None  # the physical NIC a joining host gives the switch
    security: SecurityPolicy = SecurityPolicy()


@dataclass(frozen=True)
class AgentNics:
    """``hostNetwork.agentNics``: the agent VM's OVF network names, connected per host by the provisioned hook
    (``fabric`` to the host's fabric port group, ``trunk`` to a DV port of the trunk port group)."""

    fabric: str | None = None
    trunk: str | None = None


@dataclass(frozen=True)
class AgentNicTarget:
    """Where the agent VM's NIC ``position`` (its OVF network ``network``, in the OVF's order) goes: the
    standard port group ``port_group`` of its host, or, with ``dvs_uuid`` and ``dv_port_group`` (moid), the
    DV port group of that name on that switch."""

    position: int
    network: str
    port_group: str
    dvs_uuid: str | None = None
    dv_port_group: str | None = None


@dataclass(frozen=True)
class HostNetworkSpec:
    """An agency's ``hostNetwork`` section; either part may be absent."""

    fabric: FabricSpec | None = None
    trunk: TrunkSpec | None = None
    agent_nics: AgentNics = AgentNics()


# ---------------------------------------------------------------------------------------------------------
# observed (from vCenter)


@dataclass(frozen=True)
class PhysicalNic:
    """``config.network.pnic[]``: ``device`` is ``vmnic1``."""

    device: str
    mac: str | None = None


@dataclass(frozen=True)
class VSwitch:
    """``config.network.vswitch[]``: ``pnics`` are the devices of its bond bridge (``spec.bridge.nicDevice``),
    ``port_groups`` the names of the port groups on it."""

    name: str
    pnics: tuple[str, ...] = ()
    port_groups: tuple[str, ...] = ()
    mtu: int | None = None


@dataclass(frozen=True)
class StandardPortGroup:
    """``config.network.portgroup[]``: its ``spec`` (name, vSwitch, VLAN id, security policy)."""

    name: str
    vswitch: str
    vlan: int
    security: SecurityPolicy = SecurityPolicy()


@dataclass(frozen=True)
class ProxySwitch:
    """``config.network.proxySwitch[]``: the host's membership of a distributed switch, by its uuid."""

    dvs_uuid: str
    dvs_name: str
    pnics: tuple[str, ...] = ()  # the host's physical NICs backing the switch's uplinks


@dataclass(frozen=True)
class HostNetworkOwned:
    """What agentvm recorded as created by it on one host (the ``OWNER_FIELD`` attribute).

    ``dvs_joined`` holds the keys (moids) of distributed switches agentvm added the host to.
    """

    vswitches: frozenset[str] = frozenset()
    port_groups: frozenset[str] = frozenset()
    dvs_joined: frozenset[str] = frozenset()

    def encode(self) -> str:
        """The attribute's text: ``vswitch=vSwitch1;portgroup=contrail-fabric;dvs=dvs-21``, sorted, stable."""
        parts = [f"vswitch={name}" for name in sorted(self.vswitches)]
        parts += [f"portgroup={name}" for name in sorted(self.port_groups)]
        parts += [f"dvs={key}" for key in sorted(self.dvs_joined)]
        return ";".join(parts)

    @classmethod
    def decode(cls, text: str | None) -> HostNetworkOwned:
        """Read ``encode()``'s text back; unknown or malformed parts are ignored (they own nothing)."""
        vswitches: set[str] = set()
        port_groups: set[str] = set()
        dvs: set[str] = set()
        for part in (text or "").split(";"):
            kind, sep, name = part.partition("=")
            if not sep or not name:
                continue
            {"vswitch": vswitches, "portgroup": port_groups, "dvs": dvs}.get(kind, set()).add(name)
        return cls(frozenset(vswitches), frozenset(port_groups), frozenset(dvs))

    def __bool__(self) -> bool:
        return bool(self.vswitches or self.port_groups or self.dvs_joined)

    def __or__(self, other: HostNetworkOwned) -> HostNetworkOwned:
        """Everything either record holds."""
        return HostNetworkOwned(
            self.vswitches | other.vswitches,
            self.port_groups | other.port_groups,
            self.dvs_joined | other.dvs_joined,
        )


@dataclass(frozen=True)
class HostNetworkState:
    """One host's networking as read: ``moid`` and ``path`` name it in every message
    (``host-21 (/DC0/host/DC0_C0/DC0_C0_H0)``)."""

    moid: str
    name: str
    path: str
    pnics: tuple[PhysicalNic, ...] = ()
    vswitches: tuple[VSwitch, ...] = ()
    port_groups: tuple[StandardPortGroup, ...] = ()
    proxy_switches: tuple[ProxySwitch, ...] = ()
    owned: HostNetworkOwned = HostNetworkOwned()

    def label(self) -> str:
        return f"{self.moid} ({self.path})" if self.path else self.moid


@dataclass(frozen=True)
class DvPortGroupState:
    """A DV port group as read: ``vlans`` are its inclusive trunk ranges (a single VLAN id ``n`` is
    ``((n, n),)``, none is ``()``); ``owned`` is true when its description carries ``OWNER_MARK``."""

    key: str  # moid, "dvportgroup-31"
    name: str
    dvs_key: str
    vlans: tuple[tuple[int, int], ...] = ()
    security: SecurityPolicy = SecurityPolicy()
    description: str = ""
    owned: bool = False


@dataclass(frozen=True)
class DvsState:
    """A distributed switch: ``hosts`` are its member hosts' moids, ``uplinks`` its uplink port names."""

    key: str  # moid, "dvs-21"
    name: str
    uuid: str
    path: str = ""
    hosts: frozenset[str] = frozenset()
    uplinks: tuple[str, ...] = ()
    port_groups: tuple[DvPortGroupState, ...] = ()

    def label(self) -> str:
        return f"{self.key} ({self.path or self.name})"


@dataclass(frozen=True)
class HostNetworkSnapshot:
    """What one read of the hosts in scope and the distributed switches gives; hosts by moid."""

    hosts: tuple[HostNetworkState, ...] = ()
    dvses: tuple[DvsState, ...] = ()

    def host(self, moid: str) -> HostNetworkState | None:
        return next((h for h in self.hosts if h.moid == moid), None)

    def dvs_named(self, name: str) -> DvsState | None:
        return next((d for d in self.dvses if d.name == name), None)
