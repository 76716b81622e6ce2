"""The extension's one login certificate, with agentvm run from more than one machine (state dir).

vCenter keeps one certificate per extension. An apply from a second machine (another state dir) used to
generate a certificate of its own and set it over the first one, locking out the controller that logs in
with it. These tests play the two machines as two state dirs against one lab and check vCenter itself: the
extension as FindExtension returns it, and which certificate a LoginExtensionByCertificate accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

import agentvm
from agentvm.core.scope import resolve_agency
from agentvm.eam.client import EamClient
from agentvm.model.connection import VCenterConnection
from agentvm.model.errors import AuthenticationError
from agentvm.spec import load_spec
from agentvm.vsphere.session import Session
from tests.support.certs import make_certificate
from tests.support.cli_lab import KEY, ONE_CLUSTER, TIMEOUT, World, contrail_text, ok, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def world(cli_world: World) -> World:
    """The CLI's lab world (tests/integration/conftest.py)."""
    return cli_world


def solution_files(world: World, state: Path) -> tuple[Path, Path]:
    """Where a state dir keeps this lab's generated certificate and key: <state>/<host_port>/<key>/."""
    host_port = world.info.vcsim.url.split("://", 1)[1].split("/", 1)[0]
    directory = state / host_port.replace(":", "_") / KEY
    return directory / "solution.crt", directory / "solution.key"


def sha1(cert: Path) -> str:
    """The certificate's SHA-1 thumbprint as vSphere shows one (AA:BB:...)."""
    digest = x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA1())  # noqa: S303
    return ":".join(f"{b:02X}" for b in digest)


def logs_in(world: World, cert: Path, key: Path) -> bool:
    """True when vCenter accepts LoginExtensionByCertificate of the extension with this pair."""
    conn = VCenterConnection(
        url=world.info.vcsim.url,
        thumbprint=world.info.vcsim.thumbprint,
        extension_key=KEY,
        cert_file=str(cert),
        key_file=str(key),
    )
    try:
        Session.connect(conn).logout()
    except AuthenticationError:
        return False
    return True


def extension_as_stored(world: World) -> tuple[Any, ...]:
    """The extension as vCenter returns it: its heartbeat time (vCenter sets it on every Register/Update)
    and every resource entry, so that any UpdateExtension shows."""
    ext = world.session.content.extensionManager.FindExtension(extensionKey=KEY)
    assert ext is not None
    resources = tuple(
        (r.locale, r.module, tuple((kv.key, kv.value) for kv in r.data or ())) for r in ext.resourceList or ()
    )
    return ext.lastHeartbeatTime, ext.version, resources


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_apply_from_a_second_state_dir_never_takes_the_certificate_of_the_first(world: World) -> None:
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    a, b = world.tmp / "machine-a", world.tmp / "machine-b"
    cert_a, key_a = solution_files(world, a)
    cert_b, key_b = solution_files(world, b)

    # machine A: the first apply generates the certificate and sets it; A's files log in
    out = one_line(ok(world.run("apply", "-f", str(spec), "--state-dir", str(a), "--timeout", TIMEOUT)))
    assert f"generated {cert_a}" in out
    assert logs_in(world, cert_a, key_a)
    stored = extension_as_stored(world)
    assert sha1(cert_a) in json.dumps(stored[2])  # the extension records which certificate it was given

    # machine B: plan and apply stop before any change, naming the holder and the fixes
    for command in ("plan", "apply"):
        refused = world.run(command, "-f", str(spec), "--state-dir", str(b))
        assert refused.exit_code == 2, (command, refused.stdout, refused.stderr)
        assert refused.stdout == ""
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("agentvm: "), refused.stderr
        message = lines[0]
        assert f"extension {KEY}" in message
        assert sha1(cert_a) in message and socket.gethostname() in message
        assert str(cert_a.parent) in message  # where the holder keeps them (on its machine)
        assert str(cert_b.parent) in message  # where to copy them to
        assert (
            "solution.certFile" in message
            and f"--state-dir with a state dir that holds them (on {socket.gethostname()}: {a})" in message
        )
    assert extension_as_stored(world) == stored  # no UpdateExtension, no record changed
    assert not cert_b.parent.exists()  # nothing generated
    assert logs_in(world, cert_a, key_a)  # the certificate was not replaced: A's controller still logs in

    # the first fix: A's files copied into B's dir; B then logs in with them, nothing to set
    cert_b.parent.mkdir(parents=True, mode=0o700)
    shutil.copy(cert_a, cert_b)
    shutil.copy(key_a, key_b)
    out = ok(world.run("apply", "-f", str(spec), "--state-dir", str(b), "--timeout", TIMEOUT))
    assert out.strip().startswith("no changes"), out
    assert extension_as_stored(world) == stored
    assert logs_in(world, cert_a, key_a)

    # the second fix: a certificate the operator names replaces it, and the plan says what that breaks
    cert_c, key_c, _pem = make_certificate(world.tmp, "operator")
    named = world.spec(
        "named.yaml",
        spec.read_text().replace(
            "  # certFile: certs/agentvm.crt ", f"  certFile: {cert_c}\n  keyFile: {key_c}\n  #"
        ),
    )
    plan_out = one_line(ok(world.run("plan", "-f", str(named), "--state-dir", str(b))))
    assert f"set the login certificate of extension {KEY} to {cert_c}" in plan_out
    assert f"replacing the one generated on {socket.gethostname()} (SHA-1 {sha1(cert_a)})" in plan_out
    assert "fail" in plan_out
    assert logs_in(world, cert_a, key_a)  # plan changed nothing
    out = one_line(ok(world.run("apply", "-f", str(named), "--state-dir", str(b), "--timeout", TIMEOUT)))
    assert "set the login certificate" in out
    assert logs_in(world, cert_c, key_c)
    assert not logs_in(world, cert_a, key_a)
    assert sha1(cert_c) in json.dumps(extension_as_stored(world)[2])

    # and A's generated certificate is now the other one: A's next apply refuses instead of taking it back
    refused = world.run("apply", "-f", str(spec), "--state-dir", str(a), "--timeout", TIMEOUT)
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    message = one_line(refused.stderr)
    assert sha1(cert_c) in message and str(cert_c) in message
    assert logs_in(world, cert_c, key_c)


def test_an_extension_without_a_record_gets_one_from_the_machine_whose_login_works(world: World) -> None:
    """The upgrade path: an older agentvm set the certificate and recorded nothing. The apply whose login
    works records it (one plan line), so that an apply from another machine is refused from then on."""
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    a, b = world.tmp / "machine-a", world.tmp / "machine-b"
    cert_a, key_a = solution_files(world, a)
    ok(world.run("apply", "-f", str(spec), "--state-dir", str(a), "--timeout", TIMEOUT))
    manager = world.session.content.extensionManager
    ext = manager.FindExtension(extensionKey=KEY)
    ext.resourceList = []  # what an older agentvm registered: no record
    manager.UpdateExtension(extension=ext)
    assert logs_in(world, cert_a, key_a)

    out = one_line(ok(world.run("plan", "-f", str(spec), "--state-dir", str(a))))
    assert f"record the login certificate of extension {KEY} (SHA-1 {sha1(cert_a)}, {cert_a})" in out
    ok(world.run("apply", "-f", str(spec), "--state-dir", str(a), "--timeout", TIMEOUT))
    assert sha1(cert_a) in json.dumps(extension_as_stored(world)[2])
    assert "no changes" in ok(world.run("plan", "-f", str(spec), "--state-dir", str(a)))

    refused = world.run("apply", "-f", str(spec), "--state-dir", str(b), "--timeout", TIMEOUT)
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    assert logs_in(world, cert_a, key_a)


def test_an_update_of_the_extension_keeps_the_record(world: World) -> None:
    """UpdateExtension replaces the whole extension: a new solution version must not drop the record."""
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    a, b = world.tmp / "machine-a", world.tmp / "machine-b"
    cert_a, key_a = solution_files(world, a)
    ok(world.run("apply", "-f", str(spec), "--state-dir", str(a), "--timeout", TIMEOUT))
    newer = world.spec("newer.yaml", spec.read_text().replace('version: "1.0.0"', 'version: "1.0.1"'))
    out = ok(world.run("apply", "-f", str(newer), "--state-dir", str(a), "--timeout", TIMEOUT))
    assert "updated extension org.tungsten.agentvm to version 1.0.1" in out
    stored = extension_as_stored(world)
    assert stored[1] == "1.0.1" and sha1(cert_a) in json.dumps(stored[2])
    assert "no changes" in ok(world.run("plan", "-f", str(newer), "--state-dir", str(a)))
    refused = world.run("apply", "-f", str(newer), "--state-dir", str(b), "--timeout", TIMEOUT)
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    assert logs_in(world, cert_a, key_a)


def test_destroy_uses_its_state_dir_for_the_solutions_records(world: World) -> None:
    """``destroy --state-dir DIR`` (EAM) works on DIR's records: it logs in with DIR's certificate and
    forgets there the agency it adopted and destroyed, so that no later run looks for it by id."""
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    chosen = world.tmp / "chosen"
    desired = load_spec(spec, env={**os.environ, **world.info.env()})
    config = resolve_agency(desired.agencies[0], world.snapshot()).config
    agency = EamClient(world.session).create_agency(config)  # the user's: apply adopts it and records it
    ok(world.run("apply", "-f", str(spec), "--state-dir", str(chosen), "--timeout", TIMEOUT))
    record = solution_files(world, chosen)[0].parent / "agencies.json"
    assert json.loads(record.read_text())["contrail"]["agency"] == agency

    out = ok(world.run("destroy", "-f", str(spec), "--yes", "--state-dir", str(chosen), "--timeout", TIMEOUT))
    assert "destroyed agency contrail" in out
    assert world.agencies() == []
    assert "contrail" not in json.loads(record.read_text())


def test_run_keeps_the_certificate_in_its_state_dir(world: World) -> None:
    """``agentvm run --state-dir DIR`` keeps the solution's certificate in DIR, not $AGENTVM_STATE_DIR."""
    spec = world.spec(text=contrail_text(**ONE_CLUSTER))
    chosen, other = world.tmp / "chosen", world.tmp / "env-state"
    env = {**world.info.env(), "AGENTVM_STATE_DIR": str(other), "HOME": str(world.tmp / "home")}
    env["PYTHONPATH"] = str(Path(agentvm.__file__).resolve().parents[1])  # the agentvm under test
    env["PATH"] = "/usr/bin:/bin"
    args = ["run", "-f", str(spec), "--listen", "127.0.0.1:0", "--log-format", "json", "--poll", "0.2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvm.cli.main", *args, "--state-dir", str(chosen)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, object]] = []
    killer = threading.Timer(90, proc.kill)  # a run that never logs the certificate ends the test
    killer.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                seen.append(json.loads(line))
            except json.JSONDecodeError:
                continue
            if seen[-1].get("action") == "certificate":
                break
        actions = [r for r in seen if r.get("action") == "certificate"]
        assert actions, seen[-20:]
        cert, key = solution_files(world, chosen)
        assert str(cert) in one_line(str(actions[0]["message"]))
        assert cert.is_file() and key.is_file()
        assert not other.exists()
        wait_for(lambda: logs_in(world, cert, key))
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
