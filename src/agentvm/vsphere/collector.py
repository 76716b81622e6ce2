"""Bulk reads through the property collector: container views and paged ``RetrievePropertiesEx``.

Used by ``inventory`` (the full read), ``watch`` (the same specs, as filters) and by anyone who needs a few
properties of many objects. The rule this module exists for: never read managed-object attributes one by
one (``host.name`` in a loop is one round trip per host); ask the property collector once per object type.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.model.errors import AgentvmError
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ObjectProps:
    """One object and the properties read from it (unset properties are absent, as vCenter omits them)."""

    obj: Any  # the pyVmomi managed object, bound to the session
    props: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.props.get(name, default)


@contextlib.contextmanager
def container_view(session: Session, types: Sequence[type], root: Any = None) -> Iterator[Any]:
    """A recursive ContainerView of ``types`` under ``root`` (default: the root folder), always destroyed."""
    manager = session.content.viewManager
    view = manager.CreateContainerView(root or session.content.rootFolder, list(types), True)
    try:
        yield view
    finally:
        with contextlib.suppress(AgentvmError):
            view.DestroyView()


def view_filter_spec(view: Any, property_specs: Sequence[Any]) -> Any:
    """A FilterSpec selecting every object of ``view`` with the given ``PropertySpec``s."""
    traverse = PC.TraversalSpec(name="traverseView", path="view", skip=False, type=vim.view.ContainerView)
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=list(property_specs),
    )


def property_spec(kind: type, paths: Sequence[str]) -> Any:
    return PC.PropertySpec(type=kind, pathSet=list(paths), all=False)


@contextlib.contextmanager
def paged(
    session: Session, spec: Any, *, page_size: int = DEFAULT_PAGE_SIZE, collector: Any = None
) -> Iterator[Iterator[ObjectProps]]:
    """Iterate the result of one ``RetrievePropertiesEx``, page by page (``ContinueRetrievePropertiesEx``).

    The server-side cursor is cancelled (``CancelRetrievePropertiesEx``) when the block ends before the
    last page: on ``break``, on an exception, always. Raises agentvm errors (the session maps faults).
    """
    pc = collector or session.content.propertyCollector
    token: list[str | None] = [None]

    def pages() -> Iterator[ObjectProps]:
        result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=page_size))
        while result is not None:
            token[0] = result.token
            for content in result.objects or ():
                yield _to_props(content)
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(token=result.token)
        token[0] = None

    try:
        yield pages()
    finally:
        if token[0]:
            with contextlib.suppress(AgentvmError):
                pc.CancelRetrievePropertiesEx(token=token[0])


def retrieve(
    session: Session,
    types: Sequence[type],
    specs: Sequence[Any],
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    root: Any = None,
) -> list[ObjectProps]:
    """All objects of ``types`` (under ``root``) with the properties of ``specs``: one view, paged reads."""
    with (
        container_view(session, types, root) as view,
        paged(session, view_filter_spec(view, specs), page_size=page_size) as items,
    ):
        return list(items)


def _to_props(content: Any) -> ObjectProps:
    props = {p.name: p.val for p in content.propSet or ()}
    for missing in content.missingSet or ():
        # e.g. NoPermission on one property: the object is still reported, without it
        log.debug("%s: property %s not read: %s", content.obj, missing.path, type(missing.fault).__name__)
    return ObjectProps(content.obj, props)


def read_one(session: Session, obj: Any, paths: Sequence[str]) -> ObjectProps:
    """Some properties of one object in one ``RetrievePropertiesEx`` (not one ``Fetch`` per property).

    Raises NotFoundError when the object no longer exists.
    """
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
        propSet=[PC.PropertySpec(type=type(obj), pathSet=list(paths), all=False)],
    )
    result = session.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    objects = result.objects if result is not None else []
    return _to_props(objects[0]) if objects else ObjectProps(obj, {})


@contextlib.contextmanager
def dedicated_collector(session: Session) -> Iterator[Any]:
    """A property collector of our own (for a watch or a task wait), destroyed at exit whatever happens.

    Filters created on it die with it, so a cancelled wait leaves nothing behind on the server.
    """
    pc = session.content.propertyCollector.CreatePropertyCollector()
    try:
        yield pc
    finally:
        with contextlib.suppress(AgentvmError):
            pc.DestroyPropertyCollector()
