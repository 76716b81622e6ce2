"""Build and run the lab's vCenter simulator (our Go main over Debian's govmomi 0.24.2 simulator).

Called by ``agentvm lab build|up``, the lab runner and the pytest fixtures. The binary is cached by the
hash of its Go sources (every non-test ``.go`` file in ``vcsim/``), so it is rebuilt only when one of them
changes; concurrent builders (pytest workers) serialise on a file lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

GO_PACKAGE = Path(__file__).parent / "vcsim"
# Debian's golang-github-vmware-govmomi-dev installs govmomi here; $AGENTVM_GOPATH overrides it.
GOPATH = Path(os.environ.get("AGENTVM_GOPATH") or "/usr/share/gocode")
GOVMOMI_SIMULATOR = GOPATH / "src/github.com/vmware/govmomi/simulator"


class LabError(Exception):
    """Something the lab needs is missing or failed; ``str()`` says what and how to fix it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Shape:
    """The simulated inventory: per datacenter, clusters × hosts, plus standalone hosts; VMs per host;
    physical NICs per host (vmnic0..vmnic{pnics-1}, vSwitch0 bound to vmnic0)."""

    datacenters: int = 1
    clusters: int = 2
    hosts: int = 3
    standalone: int = 0
    vms: int = 0
    dvs: bool = True
    pnics: int = 3

    def validate(self) -> None:
        """Raise LabError (exit 2) naming the first bad count and what is allowed."""
        if self.datacenters < 1:
            raise LabError(f"--datacenters must be 1 or more (got {self.datacenters})", 2)
        for name in ("clusters", "hosts", "standalone", "vms", "pnics"):
            value = getattr(self, name)
            if value < 0:
                raise LabError(f"--{name} must be 0 or more (got {value})", 2)

    @property
    def host_count(self) -> int:
        return self.datacenters * (self.clusters * self.hosts + self.standalone)

    @classmethod
    def clustered(cls, hosts: int, *, per_cluster: int = 100, vms: int = 0) -> Shape:
        """``hosts`` hosts in the fewest equal clusters of at most ``per_cluster`` hosts, one datacenter, no
        standalone host: 64 → 1 × 64, 500 → 5 × 100, 2,500 → 25 × 100 (vCenter's maximum of hosts). For
        benchmarks with one agency over every cluster (bench/bench_scale.py). A count with no such split
        into bigger clusters gets more, smaller ones (101 → 101 × 1). LabError (exit 2) below 1."""
        if hosts < 1 or per_cluster < 1:
            raise LabError(
                f"a clustered lab needs 1 or more hosts, per cluster too (got {hosts}, {per_cluster})", 2
            )
        clusters = next(c for c in range(-(-hosts // per_cluster), hosts + 1) if hosts % c == 0)
        return cls(clusters=clusters, hosts=hosts // clusters, vms=vms)


@dataclass(frozen=True)
class VcsimInfo:
    """What a running simulator reports: where it is and how to log in."""

    url: str
    username: str
    password: str
    eam_url: str
    pid: int
    thumbprint: str = ""
    thumbprint_sha256: str = ""
    certificate_pem: str = ""
    start_seconds: float = 0.0
    # about.instanceUuid: names this world (a lab's own, or vcsim's fixed one, the same in every simulator)
    instance_uuid: str = ""
    pnics: int = 3  # physical NICs per host (but the hosts given their own with ``host_pnics``)
    api_type: str = "VirtualCenter"  # about.apiType: "HostAgent" for a standalone ESXi (``esx=True``)
    host_name: str = ""  # ``esx=True``: the host's name (``esx_name``)
    host_uuid: str = ""  # ``esx=True``: its hardware.systemInfo.uuid

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    def __repr__(self) -> str:  # never show the password
        return f"VcsimInfo(url={self.url!r}, username={self.username!r}, pid={self.pid})"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def cache_dir() -> Path:
    """Where built binaries live: $AGENTVM_CACHE_DIR, else $XDG_CACHE_HOME/agentvm, else ~/.cache/agentvm."""
    if explicit := os.environ.get("AGENTVM_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentvm"


def go_sources() -> list[Path]:
    """The files the simulator is built from: every ``.go`` file of ``vcsim/`` but its ``_test.go`` ones."""
    return sorted(p for p in GO_PACKAGE.glob("*.go") if not p.name.endswith("_test.go"))


def binary_path() -> Path:
    """Where the binary built from the current sources is cached: named by a hash of their names and bytes."""
    digest = hashlib.sha256()
    for source in go_sources():
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return cache_dir() / f"agentvm-vcsim-{digest.hexdigest()[:16]}"


def go_env() -> dict[str, str]:
    """The environment every ``go`` command on the simulator runs in: GOPATH mode over Debian's govmomi."""
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), CGO_ENABLED="0", GOFLAGS="")
    env.setdefault("GOCACHE", str(cache_dir() / "go-build"))
    return env


def check_toolchain() -> str:
    """Return the path of ``go``; raise LabError with the fix when Go or govmomi is missing."""
    # $AGENTVM_GO names a toolchain explicitly; Debian's golang-go also lives in /usr/lib/go/bin.
    go = os.environ.get("AGENTVM_GO") or shutil.which("go") or "/usr/lib/go/bin/go"
    if not os.access(go, os.X_OK):
        raise LabError("the Go toolchain is missing: run scripts/setup, or `apt-get install golang-go`", 5)
    if not GOVMOMI_SIMULATOR.is_dir():
        raise LabError(
            f"govmomi's simulator sources are missing ({GOVMOMI_SIMULATOR}): run scripts/setup, "
            "or `apt-get install golang-github-vmware-govmomi-dev`",
            5,
        )
    return go


def build(force: bool = False) -> tuple[Path, float]:
    """Build the simulator if its cached binary is missing; return (path, seconds spent building)."""
    target = binary_path()
    if target.exists() and not force:
        return target, 0.0
    go = check_toolchain()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and not force:
            return target, 0.0
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="agentvm-vcsim-") as work:
            for source in go_sources():
                shutil.copy(source, Path(work) / source.name)
            out = Path(work) / "vcsim"
            proc = subprocess.run(
                [go, "build", "-o", str(out), "."], cwd=work, env=go_env(), capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise LabError(f"building the simulator failed:\n{proc.stderr.strip()}", 5)
            os.replace(out, target)
        return target, time.monotonic() - started


_METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_method_delay(text: str) -> dict[str, int]:
    """``"RetrievePropertiesEx:50,WaitForUpdatesEx:10"`` → ``method_delay`` for ``Vcsim``, for command lines
    (bench/); LabError (exit 2) saying what the option takes."""
    delays: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        method, _, ms = pair.partition(":")
        if not _METHOD_NAME.fullmatch(method.strip()) or not ms.strip().isdigit():
            raise LabError(
                "--method-delay takes METHOD:MS pairs like RetrievePropertiesEx:50,WaitForUpdatesEx:10 "
                f"(got {pair!r})",
                2,
            )
        delays[method.strip()] = int(ms)
    return delays


_PNIC = re.compile(r"vmnic[0-9]+")


def _host_pnics_args(host_pnics: Mapping[str, Sequence[str]]) -> list[str]:
    """``--host-pnics=HOST=vmnic0,vmnic1`` per host; LabError (exit 2) for a NIC not named like vmnic0."""
    args = []
    for host, nics in host_pnics.items():
        bad = [n for n in nics if not _PNIC.fullmatch(n)]
        if not host or "=" in host or "," in host or bad:
            raise LabError(f"host_pnics: {host!r}: {nics!r} must be NIC names like vmnic0 of a named host", 2)
        args.append(f"--host-pnics={host}=" + ",".join(nics))
    return args


def _delay_args(delay: int, method_delay: Mapping[str, int]) -> list[str]:
    """The simulator's ``--delay``/``--method-delay`` flags; LabError (exit 2) naming a bad value."""
    if delay < 0:
        raise LabError(f"delay must be 0 or more milliseconds (got {delay})", 2)
    for method, ms in method_delay.items():
        if not _METHOD_NAME.fullmatch(method):
            raise LabError(f"method_delay: {method!r} is not a SOAP method name like RetrievePropertiesEx", 2)
        if ms < 0:
            raise LabError(f"method_delay: {method} must be 0 or more milliseconds (got {ms})", 2)
    args = [f"--delay={delay}"] if delay else []
    if method_delay:
        args.append("--method-delay=" + ",".join(f"{m}:{ms}" for m, ms in method_delay.items()))
    return args


def check() -> int:
    """``gofmt -l``, ``go vet`` and ``go test`` on the simulator's Go package, in ``build()``'s GOPATH mode.

    Called by ``python -m agentvm.lab.vcsim --check`` (scripts/test). Prints each step and what it found;
    returns 0 when all are clean, else 1 (after running every step). Raises LabError without Go.
    """
    go = check_toolchain()
    gofmt = Path(os.path.realpath(go)).parent / "gofmt"  # gofmt ships next to go in every toolchain
    if not os.access(gofmt, os.X_OK):
        raise LabError(
            f"gofmt is missing next to {go}: reinstall the Go toolchain (`apt-get install golang-go`)", 5
        )
    env = go_env()
    failed = False
    steps: list[tuple[str, list[str]]] = [
        ("gofmt -l", [str(gofmt), "-l", "."]),
        ("go vet", [go, "vet", "."]),
        ("go test", [go, "test", "."]),
    ]
    for name, command in steps:
        proc = subprocess.run(command, cwd=GO_PACKAGE, env=env, capture_output=True, text=True)
        output = (proc.stdout + proc.stderr).strip()
        # gofmt -l exits 0 when it lists files: a file it lists is a finding
        bad = proc.returncode != 0 or (name == "gofmt -l" and bool(output))
        failed |= bad
        print(
            f"{name}: {'FAILED' if bad else 'ok'}"
            + (f"\n{output}" if output and (bad or name == "go test") else "")
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m agentvm.lab.vcsim --check`` (see ``check``), or ``--build`` the cached binary."""
    parser = argparse.ArgumentParser(prog="python -m agentvm.lab.vcsim", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="gofmt -l, go vet and go test on the Go sources")
    action.add_argument("--build", action="store_true", help="build the binary if missing; print its path")
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check()
        path, _ = build()
        print(path)
        return 0
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


class Vcsim:
    """A running simulator process. Use as a context manager, or call ``stop()``.

    ``detach=True`` starts it in its own session with output to ``log_file`` so it outlives the caller
    (``agentvm lab up``); otherwise it is tied to this process.
    """

    def __init__(
        self,
        shape: Shape = Shape(),
        *,
        port: int = 0,
        plain_http: bool = False,
        eam_backend: str | None = None,
        password: str | None = None,
        log_file: Path | None = None,
        detach: bool = False,
        timeout: float = 120.0,
        instance_uuid: str | None = None,
        delay: int = 0,
        method_delay: Mapping[str, int] | None = None,
        host_pnics: Mapping[str, Sequence[str]] | None = None,
        esx: bool = False,
        esx_name: str = "esx-01",
        host_uuid: str | None = None,
        certificate: Path | None = None,
        username: str | None = None,
        exit_with_parent: bool = True,
    ) -> None:
        """``esx=True`` makes it one standalone ESXi host agent named ``esx_name`` instead of a vCenter
        (``shape``, ``eam_backend`` and ``instance_uuid`` are then unused): about.apiType HostAgent, user
        ``root`` unless ``username`` says otherwise, hardware UUID ``host_uuid`` (default: a random one).
        ``certificate``: a PEM file with the TLS certificate and key, used when it exists and made there
        when it does not, so that a simulator started again with it keeps its thumbprint.
        ``exit_with_parent=False`` lets it outlive this process (``agentvm lab esxi start``).

        ``instance_uuid`` gives this simulator's world its own about.instanceUuid (``Lab`` does).

        ``host_pnics`` gives the hosts it names (by inventory name, e.g. ``DC0_C0_H0``) exactly the physical
        NICs listed (``{"DC0_C0_H0": ["vmnic0"]}``; an empty list: none) instead of ``shape.pnics``.

        ``delay`` (milliseconds added to every SOAP call) and ``method_delay`` (milliseconds added to the
        SOAP methods it names, e.g. ``{"RetrievePropertiesEx": 50}``) model a real vCenter's latency, for
        benchmarks; they apply once the inventory is built. Raises LabError (exit 2) for a bad value.
        """
        shape.validate()
        delay_args = _delay_args(delay, method_delay or {})
        binary, _ = build()
        self._tmp = tempfile.TemporaryDirectory(prefix="agentvm-vcsim-run-")
        info_file = Path(self._tmp.name) / "ready.json"
        args = [
            str(binary),
            f"--listen=127.0.0.1:{port}",
            f"--exit-with-parent={'true' if exit_with_parent else 'false'}",
            f"--datacenters={shape.datacenters}",
            f"--clusters={shape.clusters}",
            f"--hosts={shape.hosts}",
            f"--standalone={shape.standalone}",
            f"--vms={shape.vms}",
            f"--dvs={'true' if shape.dvs else 'false'}",
            f"--pnics={shape.pnics}",
            f"--plain-http={'true' if plain_http else 'false'}",
            f"--info-file={info_file}",
        ]
        if esx:
            args += ["--esx", f"--esx-name={esx_name}"]
            if host_uuid:
                args.append(f"--host-uuid={host_uuid}")
        if certificate is not None:
            args.append(f"--certificate={certificate}")
        if username:
            args.append(f"--username={username}")
        if eam_backend and not esx:
            args.append(f"--eam-backend={eam_backend}")
        if instance_uuid and not esx:
            args.append(f"--instance-uuid={instance_uuid}")
        args += delay_args
        args += _host_pnics_args(host_pnics or {})
        env = dict(os.environ)
        if password:
            env["AGENTVM_VCSIM_PASSWORD"] = password  # by environment, never on the command line
        log_path = log_file or Path(self._tmp.name) / "vcsim.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=detach,
            )
        self.log_path = log_path
        self.info = self._wait_ready(info_file, log_path, timeout)

    def _wait_ready(self, info_file: Path, log_path: Path, timeout: float) -> VcsimInfo:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if info_file.exists():
                raw = json.loads(info_file.read_text())
                fields = VcsimInfo.__dataclass_fields__
                return VcsimInfo(**{k: v for k, v in raw.items() if k in fields})
            code = self.process.poll()
            if code is not None:
                message = log_path.read_text(errors="replace").strip().splitlines()
                last = message[-1] if message else f"exit code {code}"
                raise LabError(f"the simulator did not start: {last.removeprefix('agentvm-vcsim: ')}", code)
            time.sleep(0.02)
        self.stop()
        raise LabError(f"the simulator did not report ready within {timeout:.0f} s (log: {log_path})")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        with contextlib.suppress(OSError):
            self._tmp.cleanup()

    def __enter__(self) -> Vcsim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running(shape: Shape = Shape(), **kwargs: object) -> Iterator[VcsimInfo]:
    """``with running(Shape(hosts=4)) as info:`` a simulator for the duration of the block."""
    sim = Vcsim(shape, **kwargs)  # type: ignore[arg-type]
    try:
        yield sim.info
    finally:
        sim.stop()


if __name__ == "__main__":
    sys.exit(main())
