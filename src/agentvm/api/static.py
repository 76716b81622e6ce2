"""The dashboard's files, shipped in the package (``agentvm/api/static``) and served by ``api.server``.

Read once when the server starts, by name: only files that are there are served, so no request path can
reach anything else (no ``..``, no sub-directories).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


class StaticFiles:
    """Files by name, with their content type. Built by ``from_package`` (or from a mapping in tests)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = {
            name: (content, _content_type(name)) for name, content in files.items() if _content_type(name)
        }

    @classmethod
    def from_package(cls) -> StaticFiles:
        """The files of ``agentvm/api/static``. FileNotFoundError when the package ships none."""
        folder = resources.files("agentvm.api").joinpath("static")
        return cls({entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()})

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The content and content type of ``name``, or None."""
        return self._files.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._files))


def _content_type(name: str) -> str:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:].lower(), "") if dot > 0 else ""
