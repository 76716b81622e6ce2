# mypy: disable-error-code="no-untyped-call"
# (pyVmomi generates its eam/vim/vmodl types at run time: their constructors are untyped)
"""EAM's SOAP envelope, both directions, with pyVmomi's own (de)serializer.

Called by the emulator's HTTP handler (``server.py``): ``version_from_soap_action`` picks the pyVmomi EAM
version a client speaks, ``parse_request`` turns a request body into the method's wsdl name, its ``_this``
and its typed parameters, and ``reply`` / ``fault_reply`` write the response envelopes that a pyVmomi client
reads back as values or raises as typed exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from pyVmomi import SoapAdapter, VmomiSupport

EAM_NAMESPACE = "urn:eam"
NEWEST_VERSION = "eam.version.version9_0"
OLDEST_VERSION = "eam.version.version1"
F_OPTIONAL = VmomiSupport.F_OPTIONAL

_SOAPENV = SoapAdapter.XMLNS_SOAPENV
_SEP = SoapAdapter.NS_SEP


def _version_key(version_id: str) -> tuple[int, ...]:
    """``"7.5"`` → (7, 5); pyVmomi spells 2.5 as ``"2_5"`` and 9.0 as ``"9.0.0.0"``."""
    parts = tuple(int(p) for p in re.split(r"[._]", version_id))
    while len(parts) > 1 and parts[-1] == 0:
        parts = parts[:-1]
    return parts


# "7.5" -> (7, 5) -> "eam.version.version7_5", from pyVmomi's own version table
_KNOWN: dict[tuple[int, ...], str] = {
    _version_key(ns.split("/", 1)[1]): name
    for ns, name in VmomiSupport.versionMap.items()
    if ns.startswith("eam/")
}


def version_from_soap_action(soap_action: str | None) -> str:
    """The pyVmomi EAM version for a ``SOAPAction: "urn:eam/<v>"`` header.

    A version pyVmomi does not know maps to the newest known one that is not newer (what a real EAM does
    is an open question in docs/eam.md; answering in the newest dialect the client can read is the safe
    choice [I]). No header, or one that names no version, gets the newest version.
    """
    text = (soap_action or "").strip().strip('"')
    match = re.fullmatch(r"urn:eam/([0-9][0-9._]*)", text)
    if not match:
        return NEWEST_VERSION
    try:
        wanted = _version_key(match.group(1))
    except ValueError:
        return NEWEST_VERSION
    older = [key for key in _KNOWN if key <= wanted]
    return _KNOWN[max(older)] if older else OLDEST_VERSION


class RequestError(Exception):
    """The request is not a well-formed EAM SOAP call (answered with vmodl.fault.InvalidRequest)."""


@dataclass
class Request:
    """One parsed call: the method's wsdl name, the ``_this`` object and the parameters by name."""

    method: str
    this: Any = None  # a pyVmomi ManagedObject (no stub)
    params: dict[str, Any] = field(default_factory=dict)


class _RequestParser:
    """Walks the envelope with expat and hands each parameter element to pyVmomi's SoapDeserializer.

    The deserializer takes over the parser at a parameter's start tag and gives it back at its end tag,
    sharing the namespace map so prefixes declared on the envelope still resolve.
    """

    def __init__(self, version: str, param_types: Mapping[str, Mapping[str, type]]) -> None:
        self.version = version
        self.param_types = param_types
        self.ns_map: dict[str | None, list[str]] = {}
        self.depth = 0
        self.request: Request | None = None
        self.parser = expat.ParserCreate(namespace_separator=_SEP)
        self.parser.buffer_text = True
        self._in_body = False
        self._pending: tuple[str, Any, bool] | None = None
        self._install()

    def _install(self) -> None:
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = None
        self.parser.StartNamespaceDeclHandler = self.start_ns
        self.parser.EndNamespaceDeclHandler = self.end_ns

    def start_ns(self, prefix: str | None, uri: str) -> None:
        self.ns_map.setdefault(prefix, []).append(uri)

    def end_ns(self, prefix: str | None) -> None:
        self.ns_map[prefix].pop()

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._collect()
        self.depth += 1
        ns, _, name = tag.rpartition(_SEP)
        if self.depth == 1:
            if (ns, name) != (_SOAPENV, "Envelope"):
                raise RequestError("the body is not a SOAP 1.1 envelope")
        elif self.depth == 2:
            if ns != _SOAPENV:
                raise RequestError(f"unexpected element {name!r} in the SOAP envelope")
            self._in_body = name == "Body"
        elif self.depth == 3 and self._in_body:
            if self.request is not None:
                raise RequestError("the SOAP body holds more than one method element")
            self.request = Request(method=name)
        elif self.depth == 4 and self._in_body and self.request is not None:
            self._deserialize(name, tag, attrs)

    def end(self, tag: str) -> None:
        self._collect()
        if self.depth == 2:
            self._in_body = False
        self.depth -= 1

    def _deserialize(self, name: str, tag: str, attrs: dict[str, str]) -> None:
        assert self.request is not None
        if name == "_this":
            wanted: type = VmomiSupport.ManagedObject
            is_list = False
        else:
            types = self.param_types.get(self.request.method, {})
            if name not in types:
                raise RequestError(f"{self.request.method} has no parameter {name!r}")
            wanted = types[name]
            is_list = issubclass(wanted, list)
            if is_list:
                wanted = wanted.Item  # type: ignore[attr-defined]
        deser = SoapAdapter.SoapDeserializer(version=self.version)
        deser.Deserialize(self.parser, wanted, False, self.ns_map)
        # the deserializer owns the parser until this element ends; it starts with this very tag
        self.depth -= 1
        deser.StartElementHandler(tag, attrs)
        self._pending = (name, deser, is_list)

    def _collect(self) -> None:
        """Store the value of a parameter whose element the deserializer has just finished."""
        if self._pending is None:
            return
        name, deser, is_list = self._pending
        self._pending = None
        assert self.request is not None
        value = deser.GetResult()
        if name == "_this":
            self.request.this = value
        elif is_list:
            self.request.params.setdefault(name, []).append(value)
        else:
            self.request.params[name] = value

    def feed(self, body: bytes) -> Request:
        try:
            self.parser.Parse(body, True)
        except expat.ExpatError as exc:
            raise RequestError(f"the body is not well-formed XML: {exc}") from exc
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise RequestError(f"a parameter does not parse as its EAM type: {exc!r}") from exc
        self._collect()
        if self.request is None:
            raise RequestError("the SOAP body names no method")
        return self.request


def parse_request(body: bytes, version: str, param_types: Mapping[str, Mapping[str, type]]) -> Request:
    """Parse a SOAP request. ``param_types``: method wsdl name → parameter name → pyVmomi type.

    Raises RequestError for anything that is not a SOAP envelope with one method element, or a parameter
    that the method does not declare or that does not parse as its declared type.
    """
    return _RequestParser(version, param_types).feed(body)


_ENVELOPE_START = (
    SoapAdapter.XML_HEADER + "\n" + SoapAdapter.SOAP_ENVELOPE_START + SoapAdapter.SOAP_BODY_START + "\n"
)
_ENVELOPE_END = "\n" + SoapAdapter.SOAP_BODY_END + SoapAdapter.SOAP_ENVELOPE_END


def _ns_map() -> dict[str, str]:
    ns_map = dict(SoapAdapter.SOAP_NSMAP)
    ns_map[EAM_NAMESPACE] = ""
    return ns_map


def reply(method: str, value: Any, result_type: type | None, version: str) -> bytes:
    """``<{method}Response xmlns="urn:eam">`` with ``value`` as ``returnval`` in ``version``'s dialect.

    Fields and types newer than ``version`` are left out or widened by pyVmomi's serializer, so an old
    client never sees what it cannot parse. ``result_type`` None (a void method) gives an empty response.
    """
    body = ""
    if result_type is not None and value is not None:
        info = VmomiSupport.Object(name="returnval", type=result_type, version=version, flags=F_OPTIONAL)
        body = SoapAdapter.SerializeToStr(value, info, version, _ns_map())
    text = (
        f'{_ENVELOPE_START}<{method}Response xmlns="{EAM_NAMESPACE}">{body}</{method}Response>{_ENVELOPE_END}'
    )
    return text.encode("utf-8")


def fault_reply(fault: Any, version: str) -> bytes:
    """A SOAP 1.1 Fault whose ``detail`` holds ``fault`` (a pyVmomi MethodFault) as a pyVmomi client reads it.

    The fault is widened to the nearest type the caller's version knows (e.g. EamInvalidState, new in 7.1,
    reaches a 6.0 client as EamAppFault), and its ``msg`` becomes the faultstring.
    """
    fault_type = VmomiSupport.GetCompatibleType(type(fault), version)
    if fault_type is not type(fault):
        widened = fault_type()
        for prop in fault_type._GetPropertyList():
            setattr(widened, prop.name, getattr(fault, prop.name))
        fault = widened
    element = f"{fault_type._wsdlName}Fault"  # pyVmomi finds the fault type by this element name
    info = VmomiSupport.Object(name=element, type=fault_type, version=version, flags=0)
    ns_map = _ns_map()
    detail = SoapAdapter.SerializeFaultDetail(fault, info, version, ns_map)
    message = SoapAdapter.XmlEscape(fault.msg or fault_type._wsdlName)
    # the detail element is in urn:eam like the rest of the body; pyVmomi looks fault types up by wsdl name
    text = (
        f"{_ENVELOPE_START}<soapenv:Fault><faultcode>ServerFaultCode</faultcode>"
        f"<faultstring>{message}</faultstring>"
        f'<detail><{element} xmlns="{EAM_NAMESPACE}"{detail[len(element) + 1 :]}</detail>'
        f"</soapenv:Fault>{_ENVELOPE_END}"
    )
    return text.encode("utf-8")
