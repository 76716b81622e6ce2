"""A thin typed client for the Tungsten Fabric config API subset agentvm uses.

Used by ``agentvm.sdn.sync`` (observe the controller, apply a netsync plan) and by the CLI. Create, read,
update, delete and list of virtual-network, virtual-machine, virtual-machine-interface and instance-ip;
``POST /fqname-to-id``; ``POST /ref-update``. Token auth with ``X-Auth-Token``. Every object it creates is
marked with ``id_perms.creator`` (agentvm's mark), whatever the caller passed. Errors: see
``agentvm.sdn.http``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from agentvm.model.connection import Secret
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.model.network import (
    NetsyncConfig,
    SdnInstanceIp,
    SdnObject,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
)
from agentvm.sdn import wire
from agentvm.sdn.http import send

T = TypeVar("T", SdnVirtualNetwork, SdnVirtualMachine, SdnVmi, SdnInstanceIp)

_DECODERS: Mapping[type, Callable[[wire.Json], Any]] = {
    SdnVirtualNetwork: wire.decode_virtual_network,
    SdnVirtualMachine: wire.decode_virtual_machine,
    SdnVmi: wire.decode_vmi,
    SdnInstanceIp: wire.decode_instance_ip,
}

_REF_FIELDS = {
    "virtual-network": "network_ipam_refs",
    "virtual-machine-interface": "virtual_network_refs,virtual_machine_refs",
    "instance-ip": "virtual_network_refs,virtual_machine_interface_refs",
}


class ConfigApiClient:
    """One connection to the config API (``base_url`` like ``http://controller:8082``)."""

    def __init__(
        self,
        base_url: str,
        token: Secret | None = None,
        config: NetsyncConfig | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Content-Type": "application/json; charset=UTF-8", "User-Agent": "agentvm"}
        if token:
            headers["X-Auth-Token"] = token.reveal()
        self.config = config or NetsyncConfig()
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:  # never show the token
        return f"ConfigApiClient({str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConfigApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- raw resources -----------------------------------------------------------------------------------

    def create_raw(self, obj_type: str, body: wire.Json) -> wire.Json:
        """``POST /<type>s``; returns the server's short form (uuid, fq_name, href). 409 -> ApiConflict."""
        body = dict(body)
        body["id_perms"] = {**(body.get("id_perms") or {}), **wire.id_perms(self.config.creator)}
        answer = send(self._http, "POST", f"/{obj_type}s", {obj_type: body})
        return dict(answer.get(obj_type, {}))

    def read_raw(self, obj_type: str, uuid: str) -> wire.Json | None:
        """``GET /<type>/<uuid>``; None when there is no such object."""
        try:
            answer = send(self._http, "GET", f"/{obj_type}/{uuid}")
        except NotFoundError:
            return None
        return dict(answer.get(obj_type, {}))

    def update_raw(self, obj_type: str, uuid: str, body: wire.Json) -> None:
        """``PUT /<type>/<uuid>`` with the fields to change (id_perms is never sent: the mark stays)."""
        fields = {k: v for k, v in body.items() if k not in ("id_perms", "uuid", "fq_name", "parent_type")}
        send(self._http, "PUT", f"/{obj_type}/{uuid}", {obj_type: fields})

    def delete_raw(self, obj_type: str, uuid: str) -> bool:
        """``DELETE /<type>/<uuid>``; False when it was already gone. Still referred to -> ApiConflict."""
        try:
            send(self._http, "DELETE", f"/{obj_type}/{uuid}")
        except NotFoundError:
            return False
        return True

    def list_raw(self, obj_type: str) -> list[wire.Json]:
        """``GET /<type>s?detail=True``: every object of the type with its properties and refs."""
        params = {"detail": "True"}
        if obj_type in _REF_FIELDS:
            params["fields"] = _REF_FIELDS[obj_type]
        answer = send(self._http, "GET", f"/{obj_type}s", params=params)
        items = answer.get(f"{obj_type}s", [])
        return [dict(item.get(obj_type, item)) for item in items]

    def fqname_to_id(self, obj_type: str, fq_name: Sequence[str]) -> str | None:
        """``POST /fqname-to-id``; None when no object of that type has that name."""
        try:
            answer = send(self._http, "POST", "/fqname-to-id", {"type": obj_type, "fq_name": list(fq_name)})
        except NotFoundError:
            return None
        return str(answer["uuid"])

    def ref_update(
        self,
        obj_type: str,
        uuid: str,
        ref_type: str,
        ref_uuid: str,
        operation: Literal["ADD", "DELETE"],
        ref_fq_name: Sequence[str] | None = None,
        attr: wire.Json | None = None,
    ) -> None:
        """``POST /ref-update``: add or remove one ref without rewriting the object."""
        body = {
            "type": obj_type,
            "uuid": uuid,
            "ref-type": ref_type,
            "ref-uuid": ref_uuid,
            "ref-fq-name": list(ref_fq_name) if ref_fq_name else None,
            "operation": operation,
            "attr": attr,
        }
        send(self._http, "POST", "/ref-update", body)

    # -- typed -------------------------------------------------------------------------------------------

    def create(self, obj: SdnObject, fq_names: Mapping[str, tuple[str, ...]] | None = None) -> str:
        """Create ``obj`` (marked as agentvm's) and return its uuid."""
        answer = self.create_raw(wire.type_name(obj), wire.encode(obj, self.config, fq_names))
        return str(answer.get("uuid", obj.uuid))

    def update(self, obj: SdnObject, fq_names: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.update_raw(wire.type_name(obj), obj.uuid, wire.encode(obj, self.config, fq_names))

    def delete(self, obj: SdnObject) -> bool:
        return self.delete_raw(wire.type_name(obj), obj.uuid)

    def read(self, kind: type[T], uuid: str) -> T | None:
        body = self.read_raw(wire.TYPE_NAMES[kind], uuid)
        return None if body is None else _DECODERS[kind](body)

    def list(self, kind: type[T]) -> tuple[T, ...]:
        decode = _DECODERS[kind]
        return tuple(decode(body) for body in self.list_raw(wire.TYPE_NAMES[kind]))

    def project_uuid(self) -> str:
        """The uuid of the configured project. Raises ConfigurationError naming it when it does not exist."""
        fq_name = (self.config.domain, self.config.project)
        found = self.fqname_to_id("project", fq_name)
        if found is None:
            raise ConfigurationError(
                f"project {':'.join(fq_name)} does not exist in the SDN controller; create it or "
                "configure another domain/project for netsync"
            )
        return found
