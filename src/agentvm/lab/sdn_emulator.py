"""An emulator of the Tungsten Fabric config API subset agentvm uses, on loopback, objects kept in SQLite.

Used by the integration tests, the netsync benchmark and ``agentvm lab up``. ``start(db_path)`` returns a
running server (``.url``, ``.stop()``); starting it again on the same file finds every object again.

What it serves, in the real API's shapes: ``POST /<type>s``, ``GET|PUT|DELETE /<type>/<uuid>``,
``GET /<type>s?detail=True`` for virtual-network, virtual-machine, virtual-machine-interface, instance-ip
(and read-only project, network-ipam, domain); ``POST /fqname-to-id``; ``POST /ref-update``.

What it checks, like the real API server: the body is ``{"<type>": {...}}`` with an ``fq_name``; uuid and
(type, fq_name) are unique (409); the parent project exists; every ref points at an existing object of the
right type (404); a virtual-machine-interface and an instance-ip need a virtual-network ref and an
instance-ip a virtual-machine-interface ref (400); an instance-ip address lies in a subnet of its network
(400) and is not used by another one there (409); a subnet's DNS servers and DHCP options have the
schema's types (400); a VMI's network and an instance IP's address cannot be
changed (400); deleting an object still referred to -> 409. With ``token`` set, requests without
``X-Auth-Token: <token>`` get 401. Errors are plain text, as the real server's are.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sqlite3
import threading
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]

WRITABLE = ("virtual-network", "virtual-machine", "virtual-machine-interface", "instance-ip")
READABLE = (*WRITABLE, "project", "network-ipam", "domain")
PARENT_TYPES = {
    "virtual-network": "project",
    "virtual-machine-interface": "project",
    "network-ipam": "project",
}
REF_TYPES = {
    "network_ipam_refs": "network-ipam",
    "virtual_network_refs": "virtual-network",
    "virtual_machine_refs": "virtual-machine",
    "virtual_machine_interface_refs": "virtual-machine-interface",
}
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Store:
    """The objects, in SQLite: one table of objects (JSON bodies) and one of refs for back-ref checks."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS objects (
                uuid TEXT PRIMARY KEY, type TEXT NOT NULL, fq_name TEXT NOT NULL, body TEXT NOT NULL,
                UNIQUE (type, fq_name));
            CREATE TABLE IF NOT EXISTS refs (from_uuid TEXT NOT NULL, to_uuid TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS refs_to ON refs (to_uuid);
            CREATE INDEX IF NOT EXISTS refs_from ON refs (from_uuid);
            """
        )
        with self.transaction():
            for obj_type, fq_name in (
                ("domain", ["default-domain"]),
                ("project", ["default-domain", "default-project"]),
                ("network-ipam", ["default-domain", "default-project", "default-network-ipam"]),
            ):
                if self.find(obj_type, fq_name) is None:
                    self.insert(
                        obj_type, {"uuid": str(uuidlib.uuid4()), "fq_name": fq_name, "name": fq_name[-1]}
                    )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def find(self, obj_type: str, fq_name: list[str]) -> str | None:
        row = self._db.execute(
            "SELECT uuid FROM objects WHERE type = ? AND fq_name = ?", (obj_type, json.dumps(fq_name))
        ).fetchone()
        return None if row is None else str(row[0])

    def get(self, uuid: str) -> tuple[str, Json] | None:
        row = self._db.execute("SELECT type, body FROM objects WHERE uuid = ?", (uuid,)).fetchone()
        return None if row is None else (str(row[0]), json.loads(row[1]))

    def all(self, obj_type: str) -> list[Json]:
        rows = self._db.execute("SELECT body FROM objects WHERE type = ? ORDER BY rowid", (obj_type,))
        return [json.loads(body) for (body,) in rows]

    def referrers(self, uuid: str) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT from_uuid FROM refs WHERE to_uuid = ?", (uuid,))]

    def insert(self, obj_type: str, body: Json) -> None:
        self._db.execute(
            "INSERT INTO objects (uuid, type, fq_name, body) VALUES (?, ?, ?, ?)",
            (body["uuid"], obj_type, json.dumps(body["fq_name"]), json.dumps(body)),
        )
        self._write_refs(body)

    def replace(self, body: Json) -> None:
        self._db.execute("UPDATE objects SET body = ? WHERE uuid = ?", (json.dumps(body), body["uuid"]))
        self._db.execute("DELETE FROM refs WHERE from_uuid = ?", (body["uuid"],))
        self._write_refs(body)

    def remove(self, uuid: str) -> None:
        self._db.execute("DELETE FROM objects WHERE uuid = ?", (uuid,))
        self._db.execute("DELETE FROM refs WHERE from_uuid = ?", (uuid,))

    def _write_refs(self, body: Json) -> None:
        targets = [ref["uuid"] for field in REF_TYPES for ref in body.get(field) or []]
        if body.get("parent_uuid"):
            targets.append(body["parent_uuid"])  # a child keeps its parent from being deleted
        self._db.executemany("INSERT INTO refs VALUES (?, ?)", [(body["uuid"], t) for t in targets])


class ConfigApi:
    """The API's rules on top of a Store; every public method runs inside one transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- helpers -----------------------------------------------------------------------------------------

    def _resolve_refs(self, obj_type: str, body: Json) -> None:
        for field, ref_type in REF_TYPES.items():
            refs = body.get(field)
            if refs is None:
                continue
            if not isinstance(refs, list):
                raise ApiError(400, f"{field} must be a list of refs")
            for ref in refs:
                if not isinstance(ref, dict):
                    raise ApiError(400, f"{field}: a ref must be an object with 'to' or 'uuid'")
                target = ref.get("uuid")
                if target is None and isinstance(ref.get("to"), list):
                    target = self.store.find(ref_type, ref["to"])
                    if target is None:
                        raise ApiError(404, f"Name {':'.join(ref['to'])} of type {ref_type} not found")
                found = self.store.get(str(target)) if target else None
                if found is None or found[0] != ref_type:
                    raise ApiError(
                        404, f"{ref_type} {target or ref.get('to')} referred to by {obj_type} not found"
                    )
                ref["uuid"] = target
                ref["to"] = found[1]["fq_name"]

    def _check_subnets(self, body: Json) -> None:
        for ref in body.get("network_ipam_refs") or []:
            for item in (ref.get("attr") or {}).get("ipam_subnets") or []:
                prefix = item.get("subnet") or {}
                try:
                    network = ipaddress.ip_network(f"{prefix['ip_prefix']}/{prefix['ip_prefix_len']}")
                except (KeyError, ValueError) as exc:
                    raise ApiError(400, f"Invalid subnet {prefix}: {exc}") from exc
                if not item.get("default_gateway"):
                    item["default_gateway"] = str(network.network_address + 1)
                addresses = [item["default_gateway"]]
                for pool in item.get("allocation_pools") or []:
                    addresses += [pool.get("start"), pool.get("end")]
                for address in addresses:
                    try:
                        inside = ipaddress.ip_address(address) in network
                    except ValueError:
                        inside = False
                    if not inside:
                        raise ApiError(400, f"Address {address} is not in subnet {network}")
                self._check_dns(item)
                item.setdefault("subnet_uuid", None)
                item["subnet_uuid"] = item["subnet_uuid"] or str(uuidlib.uuid4())

    @staticmethod
    def _check_dns(item: Json) -> None:
        """``dns_nameservers`` is a list of strings; ``dhcp_option_list`` null or ``{"dhcp_option": [{
        "dhcp_option_name": str, "dhcp_option_value": str}, ...]}`` (the schema's DhcpOptionsListType); the
        value of option 6 (DNS servers) is addresses separated by spaces, as the vRouter's DHCP reads it."""
        servers = item.get("dns_nameservers")
        if servers is not None and (
            not isinstance(servers, list) or not all(isinstance(d, str) for d in servers)
        ):
            raise ApiError(400, f"dns_nameservers must be a list of strings, not {servers!r}")
        options = item.get("dhcp_option_list")
        if options is None:
            return
        entries = options.get("dhcp_option") if isinstance(options, dict) else None
        if not isinstance(entries, list):
            raise ApiError(400, f'dhcp_option_list must be {{"dhcp_option": [...]}}, not {options!r}')
        for entry in entries:
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("dhcp_option_name", "dhcp_option_value")
            ):
                raise ApiError(
                    400, f"a dhcp_option needs dhcp_option_name and dhcp_option_value strings: {entry!r}"
                )
            if entry["dhcp_option_name"] == "6":
                for address in entry["dhcp_option_value"].split():
                    try:
                        ipaddress.ip_address(address)
                    except ValueError as exc:
                        raise ApiError(400, f"DHCP option 6: {address!r} is not an address") from exc

    def _vn_subnets(self, vn_uuid: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        found = self.store.get(vn_uuid)
        nets = []
        for ref in (found[1] if found else {}).get("network_ipam_refs") or []:
            for item in (ref.get("attr") or {}).get("ipam_subnets") or []:
                prefix = item["subnet"]
                nets.append(ipaddress.ip_network(f"{prefix['ip_prefix']}/{prefix['ip_prefix_len']}"))
        return nets

    def _check_instance_ip(self, body: Json, old: Json | None) -> None:
        vn_refs = body.get("virtual_network_refs") or []
        if not vn_refs:
            raise ApiError(
                400, "instance-ip needs a virtual_network_refs entry (the network it is allocated from)"
            )
        if not body.get("virtual_machine_interface_refs"):
            raise ApiError(400, "instance-ip needs a virtual_machine_interface_refs entry")
        vn_uuid = vn_refs[0]["uuid"]
        subnets = self._vn_subnets(vn_uuid)
        address = body.get("instance_ip_address")
        if old is not None:
            if address and address != old.get("instance_ip_address"):
                raise ApiError(
                    400, "instance_ip_address cannot be changed; delete the instance-ip and create it"
                )
            return
        used = {
            other.get("instance_ip_address")
            for other_uuid in self.store.referrers(vn_uuid)
            if (found := self.store.get(other_uuid)) is not None and found[0] == "instance-ip"
            for other in (found[1],)
        }
        if not address:
            address = self._allocate(subnets, used)
            body["instance_ip_address"] = address
            return
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise ApiError(400, f"Invalid instance_ip_address {address!r}") from exc
        if not any(ip in net for net in subnets):
            raise ApiError(400, f"Requested IP address {address} is not in any subnet of network {vn_uuid}")
        if address in used:
            raise ApiError(409, f"Ip address {address} already in use in network {vn_uuid}")

    @staticmethod
    def _allocate(subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], used: set[Any]) -> str:
        for net in subnets:
            for host in net.hosts():
                if str(host) not in used and host != net.network_address + 1:
                    return str(host)
        raise ApiError(409, "Virtual-Network has no free IP addresses left")

    # -- operations --------------------------------------------------------------------------------------

    def create(self, obj_type: str, payload: Json) -> Json:
        body = payload.get(obj_type)
        if not isinstance(body, dict):
            raise ApiError(400, f'Body must be {{"{obj_type}": {{...}}}}')
        fq_name = body.get("fq_name")
        if not isinstance(fq_name, list) or not fq_name or not all(isinstance(p, str) and p for p in fq_name):
            raise ApiError(400, f"{obj_type}: fq_name is required (a list of names)")
        obj_uuid = body.get("uuid") or str(uuidlib.uuid4())
        try:
            uuidlib.UUID(obj_uuid)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ApiError(400, f"Invalid uuid {obj_uuid!r}") from exc
        body["uuid"] = obj_uuid
        body["name"] = fq_name[-1]
        if self.store.get(obj_uuid) is not None:
            raise ApiError(409, f"uuid {obj_uuid} already exists")
        existing = self.store.find(obj_type, fq_name)
        if existing is not None:
            raise ApiError(409, f"{obj_type} {':'.join(fq_name)} already exists with uuid: {existing}")
        parent_type = PARENT_TYPES.get(obj_type)
        if parent_type is not None:
            parent_uuid = self.store.find(parent_type, fq_name[:-1])
            if parent_uuid is None:
                raise ApiError(400, f"Parent {':'.join(fq_name[:-1])} type {parent_type} does not exist")
            body["parent_type"] = parent_type
            body["parent_uuid"] = parent_uuid
        self._resolve_refs(obj_type, body)
        if obj_type == "virtual-network":
            self._check_subnets(body)
        elif obj_type == "virtual-machine-interface":
            self._check_vmi(body, None)
        elif obj_type == "instance-ip":
            self._check_instance_ip(body, None)
        perms = body.get("id_perms") or {}
        perms.setdefault("enable", True)
        parts = uuidlib.UUID(obj_uuid).int
        perms["uuid"] = {"uuid_mslong": parts >> 64, "uuid_lslong": parts & ((1 << 64) - 1)}
        body["id_perms"] = perms
        self.store.insert(obj_type, body)
        return {obj_type: self._short(obj_type, body)}

    def _check_vmi(self, body: Json, old: Json | None) -> None:
        refs = body.get("virtual_network_refs")
        if old is None and not refs:
            raise ApiError(400, "virtual-machine-interface needs a virtual_network_refs entry")
        if old is not None and refs is not None:
            old_vns = [r["uuid"] for r in old.get("virtual_network_refs") or []]
            if [r["uuid"] for r in refs] != old_vns:
                raise ApiError(400, "Cannot change the virtual network of a virtual-machine-interface")
        macs = (body.get("virtual_machine_interface_mac_addresses") or {}).get("mac_address")
        if macs is None and old is None:
            body["virtual_machine_interface_mac_addresses"] = {"mac_address": [_random_mac()]}
        elif macs is not None and not all(isinstance(m, str) and _MAC.match(m) for m in macs):
            raise ApiError(400, f"Invalid MAC address {macs}; use xx:xx:xx:xx:xx:xx")

    @staticmethod
    def _short(obj_type: str, body: Json) -> Json:
        short: Json = {
            k: body[k] for k in ("uuid", "fq_name", "name", "parent_uuid", "parent_type") if k in body
        }
        short["href"] = f"/{obj_type}/{body['uuid']}"
        return short

    def read(self, obj_type: str, obj_uuid: str) -> Json:
        found = self.store.get(obj_uuid)
        if found is None or found[0] != obj_type:
            raise ApiError(404, f"{obj_type} {obj_uuid} not found")
        body = found[1]
        body["href"] = f"/{obj_type}/{obj_uuid}"
        return {obj_type: body}

    def update(self, obj_type: str, obj_uuid: str, payload: Json) -> Json:
        found = self.store.get(obj_uuid)
        if found is None or found[0] != obj_type:
            raise ApiError(404, f"{obj_type} {obj_uuid} not found")
        old = found[1]
        changes = payload.get(obj_type)
        if not isinstance(changes, dict):
            raise ApiError(400, f'Body must be {{"{obj_type}": {{...}}}}')
        if "fq_name" in changes and changes["fq_name"] != old["fq_name"]:
            raise ApiError(400, "fq_name cannot be changed")
        changes.pop("uuid", None)
        changes.pop("id_perms", None)  # who created an object stays as it was
        self._resolve_refs(obj_type, changes)
        if obj_type == "virtual-network":
            self._check_subnets(changes)
        elif obj_type == "virtual-machine-interface":
            self._check_vmi(changes, old)
        elif obj_type == "instance-ip":
            merged = {**old, **changes}
            self._check_instance_ip(merged, old)
        body = {**old, **changes}
        self.store.replace(body)
        return {obj_type: self._short(obj_type, body)}

    def delete(self, obj_type: str, obj_uuid: str) -> None:
        found = self.store.get(obj_uuid)
        if found is None or found[0] != obj_type:
            raise ApiError(404, f"{obj_type} {obj_uuid} not found")
        referrers = self.store.referrers(obj_uuid)
        if referrers:
            hrefs = ", ".join(
                f"/{found[0]}/{r}" for r in referrers[:5] if (found := self.store.get(r)) is not None
            )
            raise ApiError(409, f"Delete when resource still referred: [{hrefs}]")
        self.store.remove(obj_uuid)

    def list(self, obj_type: str, detail: bool) -> Json:
        bodies = self.store.all(obj_type)
        items: list[Json]
        if detail:
            items = [{obj_type: {**b, "href": f"/{obj_type}/{b['uuid']}"}} for b in bodies]
        else:
            items = [
                {"href": f"/{obj_type}/{b['uuid']}", "fq_name": b["fq_name"], "uuid": b["uuid"]}
                for b in bodies
            ]
        return {f"{obj_type}s": items}

    def fqname_to_id(self, payload: Json) -> Json:
        obj_type, fq_name = payload.get("type"), payload.get("fq_name")
        if not isinstance(obj_type, str) or not isinstance(fq_name, list):
            raise ApiError(400, 'Body must be {"type": ..., "fq_name": [...]}')
        found = self.store.find(obj_type.replace("_", "-"), fq_name)
        if found is None:
            raise ApiError(404, f"Name {':'.join(map(str, fq_name))} of type {obj_type} not found")
        return {"uuid": found}

    def ref_update(self, payload: Json) -> Json:
        obj_type = str(payload.get("type", "")).replace("_", "-")
        obj_uuid, ref_type = payload.get("uuid"), str(payload.get("ref-type", "")).replace("_", "-")
        operation = payload.get("operation")
        if operation not in ("ADD", "DELETE"):
            raise ApiError(400, f"operation must be ADD or DELETE, not {operation!r}")
        found = self.store.get(str(obj_uuid))
        if found is None or found[0] != obj_type:
            raise ApiError(404, f"{obj_type} {obj_uuid} not found")
        field = ref_type.replace("-", "_") + "_refs"
        if REF_TYPES.get(field) != ref_type:
            raise ApiError(400, f"{obj_type} has no refs to {ref_type} here")
        ref_uuid = payload.get("ref-uuid")
        if not ref_uuid and payload.get("ref-fq-name"):
            ref_uuid = self.store.find(ref_type, payload["ref-fq-name"])
        target = self.store.get(str(ref_uuid)) if ref_uuid else None
        if target is None or target[0] != ref_type:
            raise ApiError(404, f"{ref_type} {ref_uuid} not found")
        body = found[1]
        refs = [r for r in body.get(field) or [] if r.get("uuid") != ref_uuid]
        if operation == "ADD":
            refs.append({"to": target[1]["fq_name"], "uuid": ref_uuid, "attr": payload.get("attr")})
        body[field] = refs
        self.store.replace(body)
        return {"uuid": obj_uuid}


def _random_mac() -> str:
    value = uuidlib.uuid4().int
    return "02:" + ":".join(f"{(value >> (8 * i)) & 0xFF:02x}" for i in range(5))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the lab log elsewhere
        pass

    def _reply(self, status: int, body: Json | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Json:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"Body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "Body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        try:
            if self.server.token is not None and self.headers.get("X-Auth-Token") != self.server.token:
                raise ApiError(401, "Authentication required: send a valid X-Auth-Token")
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            api = self.server.api
            with api.store.transaction():
                result = self._route(api, method, parts, parse_qs(url.query))
            self._reply(200, result)
        except ApiError as exc:
            self._reply(exc.status, str(exc))
        except Exception as exc:  # a bug in the emulator: answer like a crashed API server would
            self._reply(500, f"Internal error: {type(exc).__name__}: {exc}")

    def _route(
        self, api: ConfigApi, method: str, parts: list[str], query: dict[str, list[str]]
    ) -> Json | str:
        if method == "POST" and parts == ["fqname-to-id"]:
            return api.fqname_to_id(self._body())
        if method == "POST" and parts == ["ref-update"]:
            return api.ref_update(self._body())
        if len(parts) == 1 and parts[0].endswith("s") and parts[0][:-1] in READABLE:
            obj_type = parts[0][:-1]
            if method == "GET":
                return api.list(obj_type, query.get("detail", ["false"])[0].lower() == "true")
            if method == "POST" and obj_type in WRITABLE:
                return api.create(obj_type, self._body())
        if len(parts) == 2 and parts[0] in READABLE:
            obj_type, obj_uuid = parts
            if method == "GET":
                return api.read(obj_type, obj_uuid)
            if method == "PUT" and obj_type in WRITABLE:
                return api.update(obj_type, obj_uuid, self._body())
            if method == "DELETE" and obj_type in WRITABLE:
                api.delete(obj_type, obj_uuid)
                return ""
        raise ApiError(404, f"No such resource: {method} /{'/'.join(parts)}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: ConfigApi, token: str | None) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.token = token


@dataclass
class RunningConfigApi:
    """A started emulator. ``stop()`` closes the server and the database (the file stays)."""

    url: str
    db_path: Path
    _server: _Server
    _thread: threading.Thread

    @property
    def store(self) -> Store:
        return self._server.api.store

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server.api.store.close()


def start(
    db_path: str | Path, token: str | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningConfigApi:
    """Serve the config API on ``host:port`` (port 0: any free one) with objects kept in ``db_path``."""
    store = Store(db_path)
    server = _Server((host, port), ConfigApi(store), token)
    thread = threading.Thread(target=server.serve_forever, name="sdn-config-api-emulator", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return RunningConfigApi(f"http://{bound_host!s}:{bound_port}", Path(db_path), server, thread)
