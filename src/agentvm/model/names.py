"""Object names as govc takes them, matched against inventory objects. Pure: no I/O.

Called by ``InventorySnapshot.resolve`` / ``find_*`` (every spec field and argument that names an object:
agency scope, datastore, network, folder, resource pool) and by ``core.ipplan`` (``ipPlan.addresses`` keys).
A reference is one of, tried in this order:

- a typed moid, ``ClusterComputeResource:domain-c7`` (the type must be the object's);
- a glob (``*``, ``?``, ``[...]``, fnmatch per path element, so ``*`` never crosses a ``/``, as in govc):
  an absolute one (``/DC0/host/*``), one relative to the datacenter (``host/DC0_C*``) or one on the bare name
  (``DC0_C*``); it stands for every object it matches, and matching none is an error;
- an absolute inventory path, ``/DC0/host/DC0_C0``;
- a moid, ``domain-c7``;
- a path relative to the datacenter, ``host/DC0_C0`` (ambiguous when two datacenters have it);
- a bare name, ``DC0_C0``, when it is unique among the objects asked for.

``select`` raises ``NotFoundError`` naming the reference: for an ambiguous one the full paths it matched and
"use one of them"; for one that matches nothing the closest names (difflib) and the forms accepted.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol, TypeVar

from agentvm.model.agency import MoRef
from agentvm.model.errors import NotFoundError

_TYPED = re.compile(r"([A-Za-z][A-Za-z0-9]*):(\S.*)")
_GLOB = re.compile(r"[*?\[]")


class Named(Protocol):
    """What a reference is matched against: an inventory object (``model.inventory.InventoryObject``)."""

    @property
    def moref(self) -> MoRef: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...


_N = TypeVar("_N", bound=Named)


@dataclass(frozen=True)
class Reference:
    """A reference parsed once: which form it is and the parts matching needs."""

    text: str
    kind: str  # "typed" | "glob" | "path" (absolute) | "plain" (moid, relative path or name)
    type: str | None = None
    value: str = ""

    @property
    def is_glob(self) -> bool:
        return self.kind == "glob"


@dataclass(frozen=True)
class NamedRef:
    """Something to match that is not an inventory object (a planner's ``ScopeHost``, say)."""

    moref: MoRef
    name: str
    path: str


def specificity(ref: Reference, obj: Named) -> int:
    """How exactly ``ref`` names ``obj`` (lower wins): moid, absolute path, relative path, name, glob.

    Where several map keys name one object (``ipPlan.addresses``, a placement map), the most exact wins.
    """
    if ref.kind == "typed" or ref.value == obj.moref.value:
        return 0
    if ref.kind == "path":
        return 1
    if ref.kind == "glob":
        return 4
    return 2 if "/" in ref.value else 3


@functools.lru_cache(maxsize=4096)  # the same spec words are matched against every host of every pass
def parse(text: str) -> Reference:
    """Classify ``text`` (see the module docstring); a trailing ``/`` is dropped."""
    ref = text.rstrip("/") if text != "/" else text
    typed = _TYPED.fullmatch(ref)
    if typed:
        return Reference(text, "typed", typed.group(1), typed.group(2))
    if _GLOB.search(ref):
        return Reference(text, "glob", value=ref)
    if ref.startswith("/"):
        return Reference(text, "path", value=ref)
    return Reference(text, "plain", value=ref)


def datacenter_of(path: str, datacenters: Sequence[str] = ()) -> str | None:
    """The datacenter path ``path`` lies under: the longest of ``datacenters`` that is a prefix of it or,
    with none given, what comes before the first ``/host/``, ``/vm/``, ``/datastore/`` or ``/network/``."""
    best = max((d for d in datacenters if path.startswith(d + "/")), key=len, default=None)
    if best is not None or datacenters:
        return best
    cut = min(
        (i for sub in ("/host/", "/vm/", "/datastore/", "/network/") if (i := path.find(sub)) > 0), default=-1
    )
    return path[:cut] if cut > 0 else None


def relative_path(path: str, datacenters: Sequence[str] = ()) -> str | None:
    """``host/DC0_C0`` for ``/DC0/host/DC0_C0``: the path under its datacenter (None if outside one)."""
    dc = datacenter_of(path, datacenters)
    return path[len(dc) + 1 :] if dc else None


def _glob_path(pattern: str, path: str) -> bool:
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def _types_agree(wanted: str, actual: str) -> bool:
    # a property may name a base type where the object is a subtype (VmwareDistributedVirtualSwitch)
    return wanted == actual or actual == f"Vmware{wanted}" or wanted == f"Vmware{actual}"


def matches(ref: Reference, obj: Named, datacenters: Sequence[str] = ()) -> bool:
    """Whether ``ref`` names ``obj`` in any of its forms (uniqueness is ``select``'s business)."""
    if ref.kind == "typed":  # or a name with a colon in it
        typed = obj.moref.value == ref.value and _types_agree(ref.type or "", obj.moref.type)
        return typed or ref.text in (obj.name, obj.path)
    if ref.kind == "glob":
        pattern = ref.value
        if pattern.startswith("/"):
            return _glob_path(pattern, obj.path)
        if "/" in pattern:
            rel = relative_path(obj.path, datacenters)
            return rel is not None and _glob_path(pattern, rel)
        return fnmatchcase(obj.name, pattern)
    if ref.kind == "path":  # vcsim's datastore moids look like paths (/tmp/govcsim-…@folder-5)
        return ref.value in (obj.path, obj.moref.value) or ref.text == obj.moref.value
    return (
        obj.moref.value == ref.value
        or obj.name == ref.value
        or ("/" in ref.value and relative_path(obj.path, datacenters) == ref.value)
    )


def select(
    text: str,
    objects: Iterable[_N],
    *,
    what: str,
    datacenters: Sequence[str] = (),
) -> tuple[_N, ...]:
    """The objects ``text`` names among ``objects``: exactly one, or every match (at least one) of a glob.

    ``what`` names the kind in messages ("cluster or compute resource"); ``datacenters`` are the
    datacenter paths relative references are taken under. Raises NotFoundError (a ConfigurationError).
    """
    items = tuple(objects)
    ref = parse(text)
    if ref.kind == "glob":
        hits = [o for o in items if matches(ref, o, datacenters)]
        if hits:
            return tuple(sorted(hits, key=lambda o: natural_key(o.path)))
        raise NotFoundError(
            f"the pattern {text!r} matches no {what}{_known(items)}{_hint(ref, items, datacenters)}"
        )
    if ref.kind == "typed":
        hits = [o for o in items if matches(ref, o, datacenters)]
        if hits:
            return (min(hits, key=lambda o: specificity(ref, o)),)
        other = next((o for o in items if o.moref.value == ref.value), None)
        if other is not None:
            raise NotFoundError(
                f"{text!r}: {ref.value} is a {other.moref.type} ({other.path}), not a {ref.type}; "
                f"write {other.moref.type}:{ref.value} or just {ref.value}"
            )
        raise NotFoundError(f"no {what} {text!r}{_known(items)}{_hint(ref, items, datacenters)}")
    if ref.kind == "path":
        hits = [o for o in items if matches(ref, o, datacenters)]
        if hits:
            return (min(hits, key=lambda o: specificity(ref, o)),)
    else:
        by_moid = [o for o in items if o.moref.value == ref.value]
        if by_moid:
            return (by_moid[0],)
        if "/" in ref.value:
            hits = [o for o in items if relative_path(o.path, datacenters) == ref.value]
            if len(hits) == 1:
                return (hits[0],)
            if hits:
                raise _ambiguous(text, what, hits, "relative path", "name the datacenter")
        by_name = [o for o in items if o.name == ref.value]
        if len(by_name) == 1:
            return (by_name[0],)
        if by_name:
            raise _ambiguous(text, what, by_name, "name", "use its inventory path")
    raise NotFoundError(f"no {what} {text!r}{_known(items)}{_hint(ref, items, datacenters)}")


def _ambiguous(text: str, what: str, hits: Sequence[Named], form: str, fix: str) -> NotFoundError:
    paths = sorted((o.path for o in hits), key=natural_key)
    return NotFoundError(
        f"{what} {form} {text!r} is ambiguous: it matches {', '.join(paths)}; {fix}, e.g. {paths[0]}"
    )


def _known(items: Sequence[Named]) -> str:
    return f" ({len(items)} known)" if items else " (there are none)"


def _hint(ref: Reference, items: Sequence[Named], datacenters: Sequence[str]) -> str:
    candidates = [o.path for o in items] + [o.name for o in items]
    candidates += [r for o in items if (r := relative_path(o.path, datacenters))]
    close = difflib.get_close_matches(ref.value, list(dict.fromkeys(candidates)), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ";"
    example = next((o.path for o in items), "/DC0/host/DC0_C0")
    return (
        f"{hint} Give an inventory path like {example}, a path under the datacenter, a unique name, "
        "a glob or a moid"
    )


@functools.lru_cache(maxsize=16384)  # hosts are sorted on every pass and poll: each label split once
def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order for names people read (``DC0_C0_H2`` before ``DC0_C0_H10``): runs of digits compare
    as numbers, the rest as text. Used wherever hosts or objects are listed (the IP plan's canonical order,
    progress rows, status, inventory)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)
