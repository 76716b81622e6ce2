"""The ``agencies`` section: what agent to run where, and each host's own values.

Called by ``agentvm.spec.loader``. Checks everything that can be checked without vCenter: names and their
lengths (EAM: agentName at most 70 characters, 43 with useUuidVmName), the OVF URL and sha256, the shape of
scope entries (path, name, glob or moid), placements, OVF properties, the IP plan and the per-host templates.
Whether a cluster exists is the engine's question.
"""

from __future__ import annotations

import re
import string
from dataclasses import replace

from agentvm.model.agency import MoRef, OvfProperty
from agentvm.model.desired import (
    NEEDS_ADDRESS,
    NEEDS_CIDR,
    NEEDS_GATEWAY,
    TEMPLATE_FIELDS,
    AgencySpec,
    IpPlanSpec,
    OvfSource,
    Placement,
    ScopeEntry,
)
from agentvm.spec.addresses import read_ip_plan
from agentvm.spec.hostnet import read_host_network
from agentvm.spec.reader import Reader, suggest
from agentvm.spec.urls import url_problem
from agentvm.spec.yamlnodes import Node, xml_invalid

ALLOWED = (
    "name",
    "agentName",
    "useUuidVmName",
    "ovf",
    "scope",
    "datastore",
    "network",
    "folder",
    "resourcePool",
    "ovfProperties",
    "hooks",
    "ipPlan",
    "perHost",
    "hostNetwork",
)
MAX_AGENT_NAME = 70  # EAM: VM names "<agentName> (N)"
MAX_UUID_AGENT_NAME = 43  # EAM: VM names "<agentName>-<uuid>"
MAX_AGENCY_NAME = 80
MAX_PROPERTY_KEY = 255
MAX_PROPERTY_VALUE = 65_535
MAX_EXTRA_CONFIG_KEY = 255  # guestinfo.<key> in a VM's extraConfig
GUESTINFO = "guestinfo."
RESERVED_GUESTINFO = "agentvm."  # guestinfo.agentvm.*: each agent's address and agency (controller.observe)
USE_HOST_SETTINGS = "host"
OVF_EXAMPLE = "https://files.example.com/agent/agent.ovf"

_VM_NAME_ESCAPES = {"/": "%2f", "\\": "%5c", "%": "%25"}  # vCenter keeps these escaped in names
_MOID = re.compile(r"(domain-[cs]\d+|host-\d+)")
_MOID_TYPES = {"domain-c": "ClusterComputeResource", "domain-s": "ComputeResource", "host-": "HostSystem"}
_SCOPE_TYPES = ("ClusterComputeResource", "ComputeResource", "HostSystem")
_INVENTORY_PATH = re.compile(r"/[^/]+(/[^/]+)*/host/[^/].*")
_HTTP = re.compile(r"https?://", re.IGNORECASE)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_PROPERTY_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


def read_agencies(
    r: Reader, node: Node, esxi: tuple[str, ...] | None = (), vcenter: bool = True
) -> tuple[AgencySpec, ...] | None:
    """Validate the list; two agencies with one name are a problem (on the second, naming the first).

    ``esxi``: the names of the spec's standalone hosts, which scopes may name (``scope: all`` is all of
    them); ``vcenter=False``: there is no vCenter, so every scope entry must be one of them. ``esxi=None``:
    the ``esxi`` section has problems already, so scopes are not checked against it.
    """
    items = r.sequence(node, "{name: contrail, ...}")
    if items is None:
        return None
    if not items:
        r.problem(
            node.line, node.path, "is empty; describe at least one agency (see examples/hello-agent.yaml)"
        )
        return None
    result: list[AgencySpec] = []
    first_line: dict[str, int] = {}
    ok = True
    for item in items:
        agency = _agency(r, item, esxi, vcenter)
        if agency is None:
            ok = False
            continue
        if agency.name in first_line:
            name_node = item.entries["name"]
            r.problem(
                name_node.line,
                name_node.path,
                f'agency "{agency.name}" is already described on line {first_line[agency.name]}; '
                "give each agency its own name",
            )
            ok = False
            continue
        first_line[agency.name] = item.entries["name"].line
        result.append(agency)
    return tuple(result) if ok else None


def _agency(r: Reader, node: Node, esxi: tuple[str, ...] | None, vcenter: bool) -> AgencySpec | None:
    fields = r.mapping(
        node,
        ALLOWED,
        required={"name": "contrail", "ovf": "{url: https://.../agent.ovf}", "scope": "[/DC0/host/DC0_C0]"},
    )
    if fields is None:
        return None
    name = (
        r.checked_text(fields["name"], "contrail", limit=MAX_AGENCY_NAME, keeps_blanks="EAM would keep")
        if "name" in fields
        else None
    )
    use_uuid = r.boolean(fields["useUuidVmName"]) if "useUuidVmName" in fields else False
    agent_name = _agent_name(r, node, fields, name, bool(use_uuid))
    ovf = _ovf(r, fields["ovf"]) if "ovf" in fields else None
    scope, standalone = _split_scope(r, fields["scope"], esxi, vcenter) if "scope" in fields else (None, ())
    if scope is not None and not scope and not check_standalone_agency(r, fields):
        return None
    placements = {
        key: _placement(r, fields[key], allow_host=key in ("datastore", "network"))
        if key in fields
        else Placement()
        for key in ("datastore", "network", "folder", "resourcePool")
    }
    properties = _ovf_properties(r, fields["ovfProperties"]) if "ovfProperties" in fields else ()
    hook = _hooks(r, fields["hooks"]) if "hooks" in fields else True
    ip_plan = read_ip_plan(r, fields["ipPlan"]) if "ipPlan" in fields else None
    per_host = _per_host(r, fields, ip_plan, properties or (), hook) if "perHost" in fields else ()
    host_network = read_host_network(r, fields["hostNetwork"]) if "hostNetwork" in fields else None
    values = (name, use_uuid, agent_name, ovf, scope, properties, hook, per_host, *placements.values())
    if any(v is None for v in values) or ("ipPlan" in fields and ip_plan is None):
        return None
    if "hostNetwork" in fields and host_network is None:
        return None
    if (
        host_network is not None
        and not hook
        and (host_network.agent_nics.fabric or host_network.agent_nics.trunk)
    ):
        nics = fields["hostNetwork"].entries["agentNics"]
        r.problem(
            nics.line,
            nics.path,
            "wires the agent VM's NICs through the provisioned hook, which hooks.provisioned: false turns "
            "off; turn the hook on, or remove agentNics",
        )
        return None
    assert name is not None and agent_name is not None and ovf is not None and scope is not None
    assert properties is not None and hook is not None and per_host is not None
    return AgencySpec(
        name=name,
        agent_name=agent_name,
        ovf=ovf,
        scope=scope,
        use_uuid_vm_name=bool(use_uuid),
        datastore=placements["datastore"] or Placement(),
        network=placements["network"] or Placement(),
        folder=placements["folder"] or Placement(),
        resource_pool=placements["resourcePool"] or Placement(),
        ovf_properties=properties,
        provisioned_hook=hook,
        ip_plan=ip_plan,
        per_host=per_host,
        host_network=host_network,
        standalone=standalone,
    )


def _split_scope(
    r: Reader, node: Node, esxi: tuple[str, ...] | None, vcenter: bool
) -> tuple[tuple[ScopeEntry, ...] | None, tuple[str, ...]]:
    """(the vCenter scope entries, the standalone hosts named), or (None, ()) after a problem.

    ``scope: all`` is every standalone host; a list names standalone hosts by their ``esxi`` name
    (case-blind), and with a vCenter anything else is a vCenter scope entry."""
    if esxi is None:  # the esxi section has problems: its names are not known
        return None, ()
    if node.kind == "scalar" and isinstance(node.scalar, str) and node.scalar.strip().lower() == "all":
        if not esxi:
            r.problem(
                node.line,
                node.path,
                "all means every standalone host of esxi:, and this spec lists none; list the clusters "
                "(e.g. [/DC0/host/DC0_C0]) or add an esxi: section",
            )
            return None, ()
        return (), esxi
    if not esxi:
        return _scope(r, node), ()
    items = r.sequence(node, "esx-01")
    if items is None:
        return None, ()
    by_name = {name.lower(): name for name in esxi}
    named: list[str] = []
    rest: list[Node] = []
    ok = True
    for item in items:
        text = item.scalar.strip() if item.kind == "scalar" and isinstance(item.scalar, str) else None
        if text is not None and text.lower() in by_name:
            host = by_name[text.lower()]
            if host in named:
                r.problem(item.line, item.path, f'"{text}" is already listed; list it once')
                ok = False
            named.append(host)
        elif not vcenter:
            guess = suggest(text or "", esxi)
            hint = f"did you mean {guess}?" if guess else "name one of them, or write scope: all"
            r.problem(
                item.line,
                item.path,
                f'"{text if text is not None else item.type_name()}" is not a host of esxi: '
                f"({', '.join(esxi)}), and this spec has no vcenter; {hint}",
            )
            ok = False
        else:
            rest.append(item)
    if not ok:
        return None, ()
    entries: tuple[ScopeEntry, ...] = ()
    if rest:
        vcenter_scope = _scope(r, replace(node, items=rest))
        if vcenter_scope is None:
            return None, ()
        entries = vcenter_scope
    order = {name: i for i, name in enumerate(esxi)}
    return entries, tuple(sorted(named, key=order.__getitem__))


def check_standalone_agency(r: Reader, fields: dict[str, Node]) -> bool:
    """Refuse, for an agency whose scope is standalone hosts only, the options that only vCenter, EAM,
    DRS or HA carry out, each naming the fix; True when there is none."""
    ok = True
    if "hooks" in fields:
        node = fields["hooks"]
        r.problem(
            node.line,
            node.path,
            "hooks are EAM's, and standalone hosts have no EAM: agentvm writes the per-host values before "
            "the agent VM's first power-on; remove hooks",
        )
        ok = False
    for key in ("datastore", "network"):
        given = fields.get(key)
        if given is not None and given.kind == "scalar" and given.scalar == USE_HOST_SETTINGS:
            r.problem(
                given.line,
                given.path,
                f"{key}: host means each host's AgentVM settings, which only vCenter keeps; name the "
                f"{key} (e.g. {'datastore1' if key == 'datastore' else 'VM Network'})",
            )
            ok = False
    network = fields.get("hostNetwork")
    if network is not None and network.kind == "map" and "trunk" in network.entries:
        node = network.entries["trunk"]
        r.problem(
            node.line,
            node.path,
            "is a port group of a distributed switch, which only vCenter has; standalone hosts take "
            "hostNetwork.fabric (a standard vSwitch) alone: remove trunk",
        )
        ok = False
    return ok


def _agent_name(
    r: Reader, node: Node, fields: dict[str, Node], name: str | None, use_uuid: bool
) -> str | None:
    limit = MAX_UUID_AGENT_NAME if use_uuid else MAX_AGENT_NAME
    if "agentName" not in fields:
        if use_uuid:
            r.problem(
                node.line,
                f"{node.path}.agentName",
                "is required with useUuidVmName: true; add e.g. agentName: contrail-vm",
            )
            return None
        if name is not None and len(name) > limit:
            r.problem(
                fields["name"].line,
                fields["name"].path,
                f"is {len(name)} characters, too long to name agent VMs; add an agentName of at most {limit}",
            )
            return None
        if name is not None and not _vm_name_ok(r, fields["name"], name, ", or add an agentName"):
            return None
        return name
    node = fields["agentName"]
    agent_name = r.checked_text(node, "contrail-vm", keeps_blanks="vCenter would keep in the VM names")
    if agent_name is not None and len(agent_name) > limit:
        why = " with useUuidVmName: true" if use_uuid else ""
        r.problem(
            node.line, node.path, f"is {len(agent_name)} characters; EAM allows {limit}{why}; shorten it"
        )
        return None
    if agent_name is not None and not _vm_name_ok(r, node, agent_name, ""):
        return None
    return agent_name


def _vm_name_ok(r: Reader, node: Node, name: str, alternative: str) -> bool:
    """No character vCenter escapes in VM names: EAM and agentvm find agent VMs by the name they gave."""
    for char, escaped in _VM_NAME_ESCAPES.items():
        if char in name:
            fixed = "".join("-" if c in _VM_NAME_ESCAPES else c for c in name)
            r.problem(
                node.line,
                node.path,
                f'"{name}" has "{char}", which vCenter stores as "{escaped}" in VM names, so agentvm and '
                f"EAM would not find the agent VMs by name; write e.g. {fixed}{alternative}",
            )
            return False
    return True


def _ovf(r: Reader, node: Node) -> OvfSource | None:
    if node.kind == "scalar":  # shorthand: ovf: https://.../agent.ovf
        url_node, sha_node = node, None
    else:
        fields = r.mapping(node, ("url", "sha256"), required={"url": "https://example.com/agent/agent.ovf"})
        if fields is None or "url" not in fields:
            return None
        url_node, sha_node = fields["url"], fields.get("sha256")
    url = r.text(url_node, "https://example.com/agent/agent.ovf")
    if url is not None:
        problem = url_problem(
            url,
            OVF_EXAMPLE,
            credentials="serve the OVF where EAM can download it without them",
            default_scheme=None,
        )
        if problem is not None and not _HTTP.match(url) and xml_invalid(url) is None and "@" not in url:
            problem = f'"{url}" is not an http(s) URL; EAM downloads the OVF, so give it like {OVF_EXAMPLE}'
        if problem is not None:
            r.problem(url_node.line, url_node.path, problem)
            url = None
    sha = None
    if sha_node is not None:
        sha = r.text(sha_node, "64 hex digits")
        if sha is not None and not _SHA256.fullmatch(sha):
            r.problem(
                sha_node.line,
                sha_node.path,
                f'"{sha}" is not a SHA-256; give the 64 hex digits that sha256sum prints for the OVF',
            )
            return None
    if url is None or (sha_node is not None and sha is None):
        return None
    return OvfSource(url=url, sha256=sha.lower() if sha else None)


def _scope(r: Reader, node: Node) -> tuple[ScopeEntry, ...] | None:
    items = r.sequence(node, "/DC0/host/DC0_C0")
    if items is None:
        return None
    if not items:
        r.problem(
            node.line, node.path, "is empty; list the clusters (or standalone hosts), e.g. [/DC0/host/DC0_C0]"
        )
        return None
    entries: list[ScopeEntry] = []
    seen: dict[str, int] = {}
    ok = True
    for item in items:
        entry = _scope_entry(r, item)
        if entry is None:
            ok = False
            continue
        if entry.text in seen:
            r.problem(
                item.line,
                item.path,
                f'"{entry.text}" is already listed on line {seen[entry.text]}; list it once',
            )
            ok = False
            continue
        seen[entry.text] = item.line
        entries.append(entry)
    return tuple(entries) if ok else None


def _scope_entry(r: Reader, node: Node) -> ScopeEntry | None:
    text = r.text(node, "/DC0/host/DC0_C0")
    if text is None:
        return None
    if text.startswith("/"):
        if not _INVENTORY_PATH.fullmatch(text.rstrip("/")):
            r.problem(
                node.line,
                node.path,
                f'"{text}" is not the inventory path of a cluster or host; write it '
                "like /DC0/host/DC0_C0 (datacenter, then host, then the cluster)",
            )
            return None
        return ScopeEntry(text=text.rstrip("/"), path=text.rstrip("/"))
    if ":" in text:
        kind, _, value = text.partition(":")
        if kind not in _SCOPE_TYPES or not value:
            guess = suggest(kind, _SCOPE_TYPES)
            hint = f"did you mean {guess}:{value}?" if guess else "e.g. ClusterComputeResource:domain-c7"
            r.problem(node.line, node.path, f'"{text}" is not a cluster or host reference; {hint}')
            return None
        return ScopeEntry(text=text, moref=MoRef(kind, value))
    if _MOID.fullmatch(text):
        kind = next(t for prefix, t in _MOID_TYPES.items() if text.startswith(prefix))
        return ScopeEntry(text=text, moref=MoRef(kind, text))
    # a path under the datacenter (host/DC0_C0), a bare name (DC0_C0) or a glob (DC0_C*): what it names
    # is known only against the inventory (model.names), where an unknown one gets its did-you-mean
    return ScopeEntry(text=text.rstrip("/") or text)


def _placement(r: Reader, node: Node, *, allow_host: bool) -> Placement | None:
    """``host`` (datastore/network only), one name/path for all, or a map cluster/host → name ('*' = rest)."""
    if node.kind == "scalar":
        text = r.text(node, "datastore1")
        if text is None:
            return None
        if text == USE_HOST_SETTINGS and allow_host:
            return Placement(use_host_settings=True)
        return Placement(default=text)
    if node.kind != "map":
        r.problem(
            node.line,
            node.path,
            f'must be a name, "host" or a map cluster/host → name, not {node.type_name()}',
        )
        return None
    default = None
    targets: list[tuple[str, str]] = []
    ok = True
    for target, value in node.entries.items():
        text = r.text(value, "datastore1")
        if text is None:
            ok = False
        elif target == "*":
            default = text
        else:
            targets.append((target, text))
    if not node.entries:
        r.problem(node.line, node.path, "is an empty map; name a cluster or host and its value, or remove it")
        ok = False
    return Placement(default=default, by_target=tuple(sorted(targets))) if ok else None


def _property_value(r: Reader, node: Node) -> str | None:
    """Scalars as text (booleans as true/false); lists joined by commas (control nodes, DNS servers)."""
    if node.kind == "seq":
        parts = [_property_value(r, item) for item in node.items]
        if any(p is None for p in parts):
            return None
        return ",".join(p for p in parts if p is not None)
    if node.kind == "scalar" and isinstance(node.scalar, bool):
        return "true" if node.scalar else "false"
    return r.checked_text(node, '"10.10.0.2"', lines=True, allow_empty=True)


def _value_fits(r: Reader, node: Node, text: str) -> bool:
    if len(text) <= MAX_PROPERTY_VALUE:
        return True
    r.problem(
        node.line,
        node.path,
        f"is {len(text):,} characters; an OVF property value is at most {MAX_PROPERTY_VALUE:,}",
    )
    return False


def _ovf_properties(r: Reader, node: Node) -> tuple[OvfProperty, ...] | None:
    if node.kind != "map":
        r.problem(
            node.line, node.path, f"must be a mapping of OVF property key to value, not {node.type_name()}"
        )
        return None
    result: list[OvfProperty] = []
    ok = True
    for key, value in node.entries.items():
        ok = _property_key(r, node, key) and ok
        text = _property_value(r, value)
        if text is None or not _value_fits(r, value, text):
            ok = False
        else:
            result.append(OvfProperty(key, text))
    return tuple(result) if ok else None


def _property_key(r: Reader, parent: Node, key: str) -> bool:
    if not _PROPERTY_KEY.fullmatch(key):
        r.problem(
            parent.key_lines[key],
            parent.entries[key].path,
            "is not an OVF property key; use letters, digits, '_', '.', ':' or '-', starting with a letter",
        )
        return False
    if len(key) > MAX_PROPERTY_KEY:
        r.problem(
            parent.key_lines[key],
            parent.entries[key].path,
            f"is {len(key)} characters; an OVF property key is at most {MAX_PROPERTY_KEY}",
        )
        return False
    return True


def _guestinfo_key(r: Reader, parent: Node, key: str) -> bool:
    """A perHost key is also written as guestinfo.<key>: short enough, and not in agentvm's namespace."""
    line, path = parent.key_lines[key], parent.entries[key].path
    if key.lower().startswith(RESERVED_GUESTINFO):  # extraConfig keys are case-insensitive
        r.problem(
            line,
            path,
            f"would be written as {GUESTINFO}{key}, and {GUESTINFO}{RESERVED_GUESTINFO}* is where agentvm "
            "keeps each agent's address and agency; choose another key",
        )
        return False
    room = MAX_EXTRA_CONFIG_KEY - len(GUESTINFO)
    if len(key) > room:
        r.problem(
            line,
            path,
            f"is {len(key)} characters; it is also written as {GUESTINFO}{key}, and a VM's extraConfig key "
            f"is at most {MAX_EXTRA_CONFIG_KEY} characters: keep it to {room}",
        )
        return False
    return True


def _hooks(r: Reader, node: Node) -> bool | None:
    fields = r.mapping(node, ("provisioned",))
    if fields is None:
        return None
    return r.boolean(fields["provisioned"]) if "provisioned" in fields else True


def _per_host(
    r: Reader,
    fields: dict[str, Node],
    ip_plan: IpPlanSpec | None,
    common: tuple[OvfProperty, ...],
    hook: bool | None,
) -> tuple[tuple[str, str], ...] | None:
    node = fields["perHost"]
    if node.kind != "map":
        r.problem(
            node.line, node.path, 'must be a mapping of OVF property key to template, e.g. fabricIp: "{ip}"'
        )
        return None
    if hook is False:
        r.problem(
            node.line,
            node.path,
            "per-host values are written when the provisioned hook fires; set "
            "hooks.provisioned: true or remove perHost",
        )
        return None
    common_keys = {p.key for p in common}
    result: list[tuple[str, str]] = []
    ok = True
    for key, value in node.entries.items():
        ok = _property_key(r, node, key) and _guestinfo_key(r, node, key) and ok
        if key in common_keys:
            r.problem(node.key_lines[key], value.path, "is also in ovfProperties; keep it in one place")
            ok = False
        template = _property_value(r, value)
        if template is None or not _template_ok(r, value, template, ip_plan, "ipPlan" in fields):
            ok = False
            continue
        result.append((key, template))
    return tuple(result) if ok else None


def _template_ok(r: Reader, node: Node, template: str, plan: IpPlanSpec | None, has_plan: bool) -> bool:
    """Only TEMPLATE_FIELDS, without format specs, and only those the IP plan can fill."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        r.problem(
            node.line,
            node.path,
            f'"{template}" is not a template ({exc}); write fields like {{ip}}, '
            "and {{ or }} for a literal brace",
        )
        return False
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            guess = suggest(name, TEMPLATE_FIELDS)
            hint = f"did you mean {{{guess}}}?" if guess else "known: " + ", ".join(sorted(TEMPLATE_FIELDS))
            r.problem(node.line, node.path, f'"{{{name}}}" is not a template field; {hint}')
            return False
        if spec or conversion:
            r.problem(
                node.line,
                node.path,
                f'"{template}": formatting after the field name is not supported; write {{{name}}}',
            )
            return False
        if not has_plan and name in NEEDS_ADDRESS | NEEDS_CIDR | NEEDS_GATEWAY:
            r.problem(node.line, node.path, f"{{{name}}} comes from the IP plan; add ipPlan to this agency")
            return False
        if plan is not None and name in NEEDS_CIDR and plan.network is None:
            r.problem(
                node.line, node.path, f"{{{name}}} needs ipPlan.cidr; add the subnet, e.g. cidr: 10.10.0.0/24"
            )
            return False
        if plan is not None and name in NEEDS_GATEWAY and plan.gateway is None:
            r.problem(node.line, node.path, "{gateway} needs ipPlan.gateway; add it, e.g. gateway: 10.10.0.1")
            return False
    return True
