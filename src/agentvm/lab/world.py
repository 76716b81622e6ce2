"""The whole lab in one object: vcsim, the package server (and the emulators as they join).

Used in-process by the pytest fixtures and by the detached lab runner behind ``agentvm lab up``.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agentvm.lab.packages import PackageServer
from agentvm.lab.vcsim import Shape, Vcsim, VcsimInfo


@dataclass(frozen=True)
class LabInfo:
    """Where each part of a running lab is."""

    vcsim: VcsimInfo
    ovf_url: str  # base URL of the package server: $AGENTVM_LAB_OVF_URL
    shape: Shape

    def env(self) -> dict[str, str]:
        """The environment a user (or a spec file) needs to reach this lab, as in ``agentvm lab env``."""
        return {
            "AGENTVM_URL": self.vcsim.url,
            "AGENTVM_USERNAME": self.vcsim.username,
            "AGENTVM_PASSWORD": self.vcsim.password,
            "AGENTVM_THUMBPRINT": self.vcsim.thumbprint,
            "AGENTVM_LAB_OVF_URL": self.ovf_url,
        }


class Lab:
    """Start with ``Lab(shape).start()`` or ``with Lab(shape) as info:``; ``stop()`` always cleans up."""

    def __init__(
        self,
        shape: Shape = Shape(),
        *,
        port: int = 0,
        plain_http: bool = False,
        password: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        shape.validate()
        self.shape = shape
        self._port = port
        self._plain_http = plain_http
        self._password = password
        self._log_dir = log_dir
        self._packages: PackageServer | None = None
        self._vcsim: Vcsim | None = None
        self.info: LabInfo | None = None

    def start(self) -> LabInfo:
        try:
            self._packages = PackageServer().start()
            self._vcsim = Vcsim(
                self.shape,
                port=self._port,
                plain_http=self._plain_http,
                password=self._password,
                log_file=self._log_dir / "vcsim.log" if self._log_dir else None,
            )
        except BaseException:
            self.stop()
            raise
        self.info = LabInfo(vcsim=self._vcsim.info, ovf_url=self._packages.url, shape=self.shape)
        return self.info

    @property
    def pids(self) -> dict[str, int]:
        """The child processes this lab started (the package server runs in-process)."""
        return {"vcsim": self._vcsim.process.pid} if self._vcsim else {}

    def stop(self) -> None:
        if self._vcsim is not None:
            self._vcsim.stop()
            self._vcsim = None
        if self._packages is not None:
            with contextlib.suppress(OSError):
                self._packages.stop()
            self._packages = None

    def __enter__(self) -> LabInfo:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
