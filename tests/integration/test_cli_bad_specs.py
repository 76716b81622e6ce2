"""``agentvm plan -f bad.yaml`` as a user runs it: one ``agentvm:`` line, exit 2, and nothing contacted.

Each bad spec runs ``python -m agentvm.cli.main plan`` in a child process whose vCenter
(``AGENTVM_URL``, and ``${AGENTVM_URL}`` in specs that have a vcenter section) is a TCP listener this test
owns on 127.0.0.1. After the child exits the listener is drained: a connection the child opened has
completed its handshake by then, so it is counted whether or not it was accepted in time. A good spec
through the same listener is the control: it is counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.listener import BASE, SRC, Listener

VCENTER = """\
vcenter:
  url: ${AGENTVM_URL}
  username: u
  passwordEnv: AGENTVM_PASSWORD
"""


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        server.sock.close()


def run_plan(spec: Path, listener: Listener) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVM_")}
    env |= {
        "PYTHONPATH": str(SRC),
        "AGENTVM_URL": listener.url,
        "AGENTVM_USERNAME": "u",
        "AGENTVM_PASSWORD": "p",
        "COLUMNS": "250",
    }
    done = subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "plan", "-f", str(spec)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    return done


def bomb() -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\nsolution: *a9\n"


def swap(old: str, new: str, *, vcenter: bool = False) -> str:
    text = (VCENTER if vcenter else "") + BASE
    assert old in text
    return text.replace(old, new)


# name -> (spec text or bytes, the line and field the message must name)
CASES: dict[str, tuple[str | bytes, str]] = {
    "invalid date": (swap("cidr: 10.10.0.0/24", "cidr: 2024-13-45"), ":11: agencies[0].ipPlan.cidr: "),
    "integer over 4,300 digits": (swap('version: "1.0"', "version: " + "9" * 4301), ":3: solution.version: "),
    "bad !!float tag": (swap('version: "1.0"', "version: !!float abc"), ":3: solution.version: "),
    "bad !!bool tag": (
        swap("    perHost:", "    useUuidVmName: !!bool maybe\n    perHost:"),
        ":13: agencies[0].useUuidVmName: ",
    ),
    "merge of a number": (swap('  version: "1.0"', '  version: "1.0"\n  <<: 5'), ":4: solution: "),
    "nesting of 1,000 levels": (swap('version: "1.0"', "version: " + "[" * 1000 + "]" * 1000), ":3: "),
    "alias bomb": (bomb(), ":5: a4: "),
    "unclosed IPv6 bracket": (swap("${AGENTVM_URL}", '"https://[::1"', vcenter=True), ":2: vcenter.url: "),
    "cidr 255.255.255.255/32": (
        swap("cidr: 10.10.0.0/24", "cidr: 255.255.255.255/32"),
        ":12: agencies[0].ipPlan.gateway: ",
    ),
    "non-UTF-8 password file": (
        swap("passwordEnv: AGENTVM_PASSWORD", "passwordFile: pw.bin", vcenter=True),
        ":4: vcenter.passwordFile: ",
    ),
    "URL with a control character": (
        swap("${AGENTVM_URL}", '"https://127.0.0.1\\x01/sdk"', vcenter=True),
        ":2: vcenter.url: ",
    ),
    "URL with user:pass@": (
        swap("${AGENTVM_URL}", "https://u:hunter2@127.0.0.1/sdk", vcenter=True),
        ":2: vcenter.url: ",
    ),
    "vcenter.url: 42": (swap("${AGENTVM_URL}", "42", vcenter=True), ":2: vcenter.url: "),
    "agentName: bad/name": (
        swap("agentName: contrail-vm", "agentName: bad/name"),
        ":6: agencies[0].agentName: ",
    ),
    "control character in an OVF property": (
        swap("dns: 10.0.0.2", 'dns: "10.0.0.2\\x01"'),
        ":9: agencies[0].ovfProperties.dns: ",
    ),
    "spec that is not UTF-8": (BASE.encode().replace(b"contrail-vm", b"contrail-\xff"), ":6: "),
    "spec over 1 MiB": ("#" * 1_100_000 + "\n" + BASE, ": is larger than"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_spec_is_one_line_exit_2_and_nothing_contacted(
    name: str, tmp_path: Path, listener: Listener
) -> None:
    text, where = CASES[name]
    spec = tmp_path / "bad.yaml"
    (tmp_path / "pw.bin").write_bytes(b"\xff\xfe\x00secret")
    if isinstance(text, bytes):
        spec.write_bytes(text)
    else:
        spec.write_text(text)

    done = run_plan(spec, listener)

    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"agentvm: {spec}{where}"), lines[0]
    assert "hunter2" not in done.stderr and "secret" not in done.stderr
    assert done.stdout == ""
    assert listener.connections() == 0


def test_bad_url_in_the_environment_is_refused_before_connecting(tmp_path: Path) -> None:
    # AGENTVM_URL=42 used to reach host 0.0.0.42
    spec = tmp_path / "good.yaml"
    spec.write_text(BASE)
    env = {**os.environ, "PYTHONPATH": str(SRC), "AGENTVM_USERNAME": "u", "AGENTVM_PASSWORD": "p"}
    done = subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "plan", "-f", str(spec)],
        capture_output=True,
        text=True,
        env={**env, "AGENTVM_URL": "42"},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        'agentvm: --url/AGENTVM_URL: "42" is not a URL agentvm can use: its host "42" is not a host name or '
        "IPv4 address; write it like https://vcenter.example.com/sdk"
    ]


def test_control_a_good_spec_does_contact_the_listener(tmp_path: Path, listener: Listener) -> None:
    """Without this, zero connections above could mean the listener cannot count."""
    spec = tmp_path / "good.yaml"
    spec.write_text(BASE)
    done = run_plan(spec, listener)
    assert done.returncode != 0  # the listener is no vCenter
    assert "Traceback" not in done.stderr
    assert listener.connections() >= 1
