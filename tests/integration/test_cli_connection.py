"""Where the CLI connects, as govc does it: flag > ``AGENTVM_*`` variable > the spec's ``vcenter`` section.

What used to go wrong: ``plan -f examples/contrail.yaml --url https://127.0.0.1:1/sdk`` used the spec's
vCenter; ``host:port/sdk`` became ``.../sdk/sdk`` (404); ``http://`` to an HTTPS vCenter, ``https://`` to a
plain one and a URL without its port ended in "; will retry" and exit 3. Which vCenter a command contacts is
counted by three TCP listeners on 127.0.0.1 (one for the flag, the variable and the spec); the settings
other than the URL are checked on the lab, whose vCenter refuses a wrong password or thumbprint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agentvm.cli.main import app
from agentvm.lab.vcsim import VcsimInfo
from agentvm.lab.world import LabInfo
from tests.support.cli_lab import contrail_text
from tests.support.listener import BASE, SRC, Listener

pytestmark = pytest.mark.lab


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    servers = {name: Listener() for name in ("flag", "env", "spec")}
    threads = [threading.Thread(target=s.serve, daemon=True) for s in servers.values()]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for server in servers.values():
            server.sock.close()


def plan_child(spec: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVM_")}
    return subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "plan", "-f", str(spec), *args],
        capture_output=True,
        text=True,
        env={**clean, "PYTHONPATH": str(SRC), "AGENTVM_PASSWORD": "p", "COLUMNS": "250", **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("given", "contacted"), [(("flag", "env", "spec"), "flag"), (("env", "spec"), "env"), (("spec",), "spec")]
)
def test_the_url_of_the_flag_beats_the_environment_beats_the_spec(
    tmp_path: Path, listeners: dict[str, Listener], given: tuple[str, ...], contacted: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"vcenter:\n  url: {listeners['spec'].url}\n  username: u\n" + BASE)
    args = ("--url", listeners["flag"].url) if "flag" in given else ()
    env = {"AGENTVM_URL": listeners["env"].url} if "env" in given else {}

    done = plan_child(spec, *args, **env)

    assert done.returncode == 3, done.stderr  # the listener hangs up: unreachable, not a login refused
    assert "Traceback" not in done.stderr
    counts = {name: server.connections() for name, server in listeners.items()}
    assert counts[contacted] >= 1, counts
    assert [n for n, c in counts.items() if c] == [contacted], counts


@pytest.fixture
def lab_spec(lab: LabInfo, tmp_path: Path) -> Callable[..., Result]:
    """``run(*args, spec_password=..., spec_thumbprint=..., **env)``: plan the contrail example on the lab."""

    def run(*args: str, spec_password: str, spec_thumbprint: str, **env: str) -> Result:
        spec = tmp_path / "contrail.yaml"
        spec.write_text(
            contrail_text(
                **{
                    "url: ${AGENTVM_URL}": f"url: {lab.vcsim.url}",
                    "username: ${AGENTVM_USERNAME}": f"username: {lab.vcsim.username}",
                    "passwordEnv: AGENTVM_PASSWORD": "passwordEnv: SPEC_PASSWORD",
                    "thumbprint: ${AGENTVM_THUMBPRINT}": f'thumbprint: "{spec_thumbprint}"',
                }
            )
        )
        base = {"AGENTVM_LAB_OVF_URL": lab.ovf_url, "SPEC_PASSWORD": spec_password, "COLUMNS": "250"}
        unset = dict.fromkeys(("AGENTVM_URL", "AGENTVM_USERNAME", "AGENTVM_PASSWORD", "AGENTVM_THUMBPRINT"))
        return CliRunner().invoke(app, ["plan", "-f", str(spec), *args], env={**unset, **base, **env})  # type: ignore[dict-item]

    return run


def test_password_and_thumbprint_of_the_flag_beat_the_environment_beat_the_spec(
    lab: LabInfo, lab_spec: Callable[..., Result], tmp_path: Path
) -> None:
    good, bad_thumbprint = lab.vcsim.thumbprint, "AB:" * 19 + "AB"
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("wrong\n")
    good_file = tmp_path / "good"
    good_file.write_text(lab.vcsim.password + "\n")

    # the spec alone: its password and thumbprint are used
    assert lab_spec(spec_password=lab.vcsim.password, spec_thumbprint=good).exit_code == 0
    # the environment beats a wrong spec password; a flag file beats the environment, both ways
    wrong_spec = {"spec_password": "wrong", "spec_thumbprint": good}
    refused = lab_spec(**wrong_spec)
    assert refused.exit_code == 4 and "wrong user name or password" in refused.stderr, refused.stderr
    assert lab_spec(**wrong_spec, AGENTVM_PASSWORD=lab.vcsim.password).exit_code == 0
    by_flag = lab_spec("--password-file", str(wrong_file), **wrong_spec, AGENTVM_PASSWORD=lab.vcsim.password)
    assert by_flag.exit_code == 4, by_flag.stderr
    assert lab_spec("--password-file", str(good_file), **wrong_spec, AGENTVM_PASSWORD="wrong").exit_code == 0
    # the thumbprint: environment beats spec, flag beats environment
    wrong_pin = {"spec_password": lab.vcsim.password, "spec_thumbprint": bad_thumbprint}
    pinned = lab_spec(**wrong_pin)
    assert pinned.exit_code == 4 and "thumbprint" in pinned.stderr, pinned.stderr
    assert lab_spec(**wrong_pin, AGENTVM_THUMBPRINT=good).exit_code == 0
    assert lab_spec("--thumbprint", bad_thumbprint, **wrong_pin, AGENTVM_THUMBPRINT=good).exit_code == 4
    assert lab_spec("--thumbprint", good, **wrong_pin, AGENTVM_THUMBPRINT=bad_thumbprint).exit_code == 0
    # and the user: a flag's unknown user is refused although the spec's is right
    other_user = lab_spec("--username", "nobody", spec_password=lab.vcsim.password, spec_thumbprint=good)
    assert other_user.exit_code == 4 and "nobody" in other_user.stderr, other_user.stderr


def inventory(vcsim: VcsimInfo, url: str) -> subprocess.CompletedProcess[str]:
    """``agentvm inventory`` in a child process, as a user runs it (exit codes from the entry point)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVM_")}
    env = {
        **clean,
        "PYTHONPATH": str(SRC),
        "COLUMNS": "250",
        "AGENTVM_URL": url,
        "AGENTVM_USERNAME": vcsim.username,
        "AGENTVM_PASSWORD": vcsim.password,
        "AGENTVM_THUMBPRINT": vcsim.thumbprint,
    }
    return subprocess.run(
        [sys.executable, "-m", "agentvm.cli.main", "inventory"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_a_url_without_scheme_is_https_with_the_path_it_has(shared_vcsim: VcsimInfo) -> None:
    # as govc: https:// in front, /sdk only when there is no path (host:port/sdk used to go to /sdk/sdk)
    hostport = shared_vcsim.url.split("://", 1)[1].split("/", 1)[0]
    for url in (f"{hostport}/sdk", hostport):
        result = inventory(shared_vcsim, url)
        assert result.returncode == 0, (url, result.stderr)
        assert "DC0_C0_H0" in result.stdout


def test_http_to_an_https_vcenter_says_to_write_https(shared_vcsim: VcsimInfo) -> None:
    url = shared_vcsim.url.replace("https://", "http://")
    result = inventory(shared_vcsim, url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"agentvm: {url} answers HTTPS, not plain HTTP: write {shared_vcsim.url}"
    ]


def test_https_to_a_plain_http_vcenter_says_to_write_http(vcsim_factory: Callable[..., VcsimInfo]) -> None:
    plain = vcsim_factory(plain_http=True)
    url = plain.url.replace("http://", "https://")
    result = inventory(plain, url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"agentvm: {url} answers plain HTTP, not HTTPS: write {plain.url}"]


def test_a_url_without_its_port_says_to_add_it(shared_vcsim: VcsimInfo) -> None:
    # nothing listens on 443 on a test machine (vcsim listens on its own port)
    result = inventory(shared_vcsim, "https://127.0.0.1/sdk")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "agentvm: cannot connect to https://127.0.0.1/sdk: nothing listens on 127.0.0.1:443, the port "
        "a URL without one means; write vCenter's port in the URL, e.g. https://127.0.0.1:8989/sdk"
    ]


def test_a_refused_url_with_its_port_is_unreachable(shared_vcsim: VcsimInfo) -> None:
    result = inventory(shared_vcsim, "https://127.0.0.1:1/sdk")
    assert result.returncode == 3, result.stderr
    assert "connection refused" in result.stderr
