"""Fuzzed specs: whatever a spec file holds, loading it ends in a DesiredState or in one SpecError.

Fuzzing once found 107 of 1,719 specs ending in a Python traceback. Here a seeded generator mutates valid
specs (hostile scalars, tags, anchors and merges, deep nesting, control characters, truncation, line
edits, hostile environment values, odd password files) and every result must either load or raise
SpecError whose every line names the file (and the line, when it is known) — never another exception.
Seeded, so a failure names a case that can be replayed: ``case(seed)``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvm.model.desired import DesiredState
from agentvm.spec import SpecError, load_spec, load_spec_text

CASES = 1_200
FILE = "fuzz.yaml"
LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")

BASES = [
    """\
apiVersion: agentvm/v1
vcenter:
  url: ${AGENTVM_URL}
  username: ${AGENTVM_USERNAME}
  passwordEnv: AGENTVM_PASSWORD
  thumbprint: ${AGENTVM_THUMBPRINT}
solution:
  key: org.tungsten.agentvm
  label: Tungsten Fabric vRouter
  summary: One ContrailVM per host
  company: Tungsten Fabric
  version: "1.0.0"
agencies:
  - name: contrail
    agentName: contrail-vm
    ovf:
      url: ${AGENTVM_LAB_OVF_URL}/contrail-vm/contrail-vm.ovf
    scope:
      - /DC0/host/DC0_C0
      - /DC0/host/DC0_C1
    datastore: LocalDS_0
    network: VM Network
    ovfProperties:
      controlNodes: [10.10.0.2, 10.10.0.3, 10.10.0.4]
      dns: [10.10.0.2]
      mtu: 9000
    hooks:
      provisioned: true
    ipPlan:
      cidr: 10.10.0.0/24
      gateway: 10.10.0.1
      range: 10.10.0.10-10.10.0.200
    perHost:
      fabricIp: "{ip}"
      prefixLen: "{prefix}"
      gateway: "{gateway}"
      hostname: "contrail-{host_short}"
""",
    """\
vcenter: {url: vc.example.com, username: u, passwordFile: PWFILE, insecure: true}
solution: {key: org.example.t, version: "1.0", certFile: CERT, keyFile: CERT}
agencies:
  - &base
    name: a
    useUuidVmName: true
    agentName: short
    ovf: {url: http://127.0.0.1/a.ovf, sha256: SHA}
    scope: [domain-c7, 'ClusterComputeResource:domain-c9', host-42]
    network: {"*": VM Network, /DC0/host/DC0_C1: Fabric}
    folder: /DC0/vm/agents
    ipPlan:
      cidr: 10.1.0.0/24
      addresses: {host-21: 10.1.0.50, /DC0/host/DC0_C0/H1: 10.1.0.51}
    perHost: {ip: "{ip}", mask: "{netmask}", name: "{host_short}-{index}"}
  - <<: *base
    name: b
    useUuidVmName: false
    ipPlan: {addresses: {host-22: 10.2.0.5}}
    perHost: {ip: "{ip}"}
""",
    """\
solution:
  key: org.example.hello
  version: 1.10
agencies:
- name: hello
  ovf: http://127.0.0.1:18080/hello-agent/hello-agent.ovf
  scope: [/DC0/host/DC0_C0]
  ovfProperties: {greeting: 'costs $$5 ${GREETING:-hi}', flag: yes, n: 0x1F}
  hooks: {provisioned: false}
""",
]

SCALARS = [
    "2024-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "9" * 5000,
    "-" + "1" * 4301,
    "1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21:22:23:24:25:26:27:28:29",
    "0x" + "f" * 200,
    "0b2",
    "0o9",
    "1e99999",
    ".nan",
    "-.inf",
    "!!float abc",
    "!!float",
    "!!bool maybe",
    "!!int 1.5",
    "!!int",
    "!!null x",
    "!!timestamp yesterday",
    "!!binary '@@@'",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!python/object:os.system ls",
    "!!python/name:os.system",
    "!local thing",
    "!!str 42",
    "!!merge x",
    "<<",
    "42",
    "0",
    "-1",
    "~",
    "null",
    "''",
    '""',
    "[]",
    "{}",
    "[[[[]]]]",
    "true",
    "yes",
    "https://[::1",
    "https://[::1]:8989/sdk",
    "https://[fe80::1%25eth0]/sdk",
    "https://u:p@vc.example.com/sdk",
    "https://u@vc.example.com/sdk",
    '"https://vc\\x01.example.com/sdk"',
    '"https://vc.example.com/sd\\tk"',
    '"https://vc.example.com/\\u2028"',
    "https://vc.example.com:99999/sdk",
    "https://vc.example.com:-1/sdk",
    "https://vc.example.com:abc/sdk",
    "https://",
    "http:/x",
    "ftp://x/y.ovf",
    "1.2.3",
    "0x7f.1",
    "255.255.255.255/32",
    "0.0.0.0/0",
    "0.0.0.0/32",
    "10.0.0.1/31",
    "10.0.0.0/33",
    "::1/128",
    "10.0.0.300",
    "10.10.0.200-10.10.0.10",
    "10.10.0.10-",
    "-",
    "${NOPE}",
    "${",
    "${1X}",
    "${X:-}",
    "${CTRL}",
    "${BIG}",
    "$$",
    "'a/b'",
    "'a\\\\b'",
    "'50%'",
    '" leading"',
    '"trailing "',
    '"tab\\there"',
    '"nel\\x85here"',
    '"zero\\u200bwidth"',
    '"\\ud800"',
    '"\\uffff"',
    '"\\x00"',
    '"\\e[31mred"',
    "a" * 300,
    "{ip}",
    "{ip!r}",
    "{ip:>10}",
    "{0}",
    "{ip.real}",
    "{",
    "}",
    "{{}}",
    "host",
    "host-1",
    "domain-c",
    "Foo:bar",
    "ClusterComputeResorce:domain-c7",
    "/",
    "//host/",
    "/DC0/host/",
    "~nobody/x",
    "/dev/null",
    "/proc/self/mem",
    "/nonexistent",
    ".",
    "*anchor",
    "&anchor x",
    "*undefined",
    "&a [*a]",
    "|\n  block\n  text",
    ">-\n  folded",
    "? complex",
    "- item",
    "'unclosed",
    '"unclosed',
    "[unclosed",
    "{unclosed: 1",
    "a: b: c",
    "%YAML 1.1",
    "#comment",
    "@reserved",
    "`backtick",
]

# values for the IP plan's fields: arithmetic at the edges of the address space
NETWORK_SCALARS = [
    "255.255.255.255/32",
    "255.255.255.254/31",
    "255.255.255.248/29",
    "0.0.0.0/32",
    "0.0.0.0/0",
    "10.10.0.0/31",
    "10.10.0.1/32",
    "255.255.255.255",
    "0.0.0.0",  # noqa: S104 -- a value for a spec, not an address to bind
    "10.10.0.255",
    "1-2",
    "255.255.255.250-255.255.255.255",
    "0.0.0.0-0.0.0.1",
    "10.10.0.10-10.10.0.10",
    "10.10.0.0/24",
]
NETWORK_KEYS = ("cidr", "gateway", "range", "host-21", "host-22", "/DC0/host/DC0_C0/H1")

LINES = [
    "<<: 5",
    "<<: [5]",
    "<<: *undefined",
    "<<: {}",
    "<<: [{a: 1}, {b: 2}]",
    "? [a, b]\n: c",
    "? {a: 1}\n: c",
    "5: 6",
    "~: x",
    "x: &x {a: 1}",
    "y: *x",
    "solution: {}",
    "agencies: []",
    "agencies: 5",
    "vcenter: null",
    "key: org.example.t",
    "key: org.example.t",
    "---",
    "...",
    "--- !!set",
    "%TAG ! tag:example.com,2000:",
    "- a",
    "\t- tab",
    "  : empty key",
    "!!map",
    '"\\x01": 1',
    "dup: 1\ndup: 2",
]

INSERTS = [
    *"[]{}:,&*!|>'\"#%@`-? \t\n\\$",
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\ufffe",
    "\ud800",
    "é",
    "漢",
    "\U0001f600",
    "&a ",
    "*a ",
    "!!float ",
    "!!bool ",
    "!!int ",
    "<<: ",
]

ENVS = [
    {
        "AGENTVM_URL": "https://127.0.0.1:18989/sdk",
        "AGENTVM_USERNAME": "administrator@vsphere.local",
        "AGENTVM_PASSWORD": "s3cret-pass",
        "AGENTVM_THUMBPRINT": ":".join(["AB"] * 20),
        "AGENTVM_LAB_OVF_URL": "http://127.0.0.1:18080",
    },
    {"AGENTVM_URL": "42", "AGENTVM_PASSWORD": "pw\x00", "CTRL": "\x1b[2J", "BIG": "x" * 70_000},
    {
        "AGENTVM_URL": "https://[::1",
        "AGENTVM_USERNAME": "\x85",
        "AGENTVM_LAB_OVF_URL": "ftp://x",
        "CTRL": "\n",
    },
    {},
]


def _deep(rng: random.Random) -> str:
    depth = rng.choice([10, 63, 64, 65, 200, 990, 1_000, 2_000])
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return "{a: " * depth + "1" + "}" * depth


def _bomb(rng: random.Random) -> str:
    fanout, levels = rng.choice([(9, 9), (10, 6), (3, 20), (2, 30)])
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def mutate(text: str, rng: random.Random) -> str:
    """One to four random edits of ``text``."""
    for _ in range(rng.choice([1, 1, 1, 2, 3, 4])):
        lines = text.split("\n")
        choice = rng.random()
        at = rng.randrange(len(lines))
        if choice < 0.1:  # an IP plan field
            plan = [i for i, line in enumerate(lines) if line.strip().split(":")[0] in NETWORK_KEYS]
            if plan:
                i = rng.choice(plan)
                head = lines[i][: lines[i].index(":") + 1]
                lines[i] = f"{head} {rng.choice(NETWORK_SCALARS)}"
        elif choice < 0.35:  # replace a value
            line = lines[at]
            if ":" in line:
                head = line[: line.index(":") + 1]
                network = head.strip(" -:") in NETWORK_KEYS and rng.random() < 0.7
                lines[at] = f"{head} {rng.choice(NETWORK_SCALARS if network else SCALARS)}"
            elif line.lstrip().startswith("- "):
                lines[at] = line[: line.index("- ") + 2] + rng.choice(SCALARS)
        elif choice < 0.5:  # insert a hostile line at some indentation
            indent = " " * rng.choice([0, 1, 2, 4, 6, 8])
            lines.insert(at, indent + rng.choice(LINES).replace("\n", "\n" + indent))
        elif choice < 0.6:
            del lines[at]
        elif choice < 0.65:
            lines.insert(at, lines[at])
        elif choice < 0.85:  # a character somewhere
            flat = "\n".join(lines)
            pos = rng.randrange(len(flat) + 1)
            text = flat[:pos] + rng.choice(INSERTS) + flat[pos:]
            continue
        elif choice < 0.9:
            flat = "\n".join(lines)
            text = flat[: rng.randrange(len(flat) + 1)]
            continue
        elif choice < 0.93:
            line = lines[at]
            if ":" in line:
                lines[at] = line[: line.index(":") + 1] + " " + _deep(rng)
        elif choice < 0.935:
            lines.insert(0, _bomb(rng) + "x: *l" + str(rng.randint(1, 9)))
        else:
            lines[at] = lines[at].replace("  ", "\t", 1)
        text = "\n".join(lines)
    return text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the specs point at: a good password file, a binary one, an empty one, a directory, a cert."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "pw.txt").write_text("from-a-file\n")
    (root / "pw.bin").write_bytes(b"\xff\xfe\x00pw")
    (root / "empty").write_text("")
    (root / "cert.pem").write_text("not really a certificate")
    return {
        "CERT": str(root / "cert.pem"),
        "SHA": "ab" * 32,
        "root": str(root),
    }


def case(seed: int, files: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The spec text and environment of fuzz case ``seed``."""
    rng = random.Random(seed)
    base = rng.choice(BASES)
    base = base.replace("PWFILE", rng.choice(_password_files(files)))
    base = base.replace("CERT", files["CERT"]).replace("SHA", files["SHA"])
    return mutate(base, rng), rng.choice(ENVS)


def _password_files(files: dict[str, str]) -> list[str]:
    root = Path(files["root"])
    return [str(root / n) for n in ("pw.txt", "pw.bin", "empty")] + [str(root), "x" * 300, "pw.txt"]


def check(text: str, env: dict[str, str], base_dir: Path) -> str:
    """Load ``text``: 'loaded', or 'refused' after checking the error names the file on every line."""
    try:
        state = load_spec_text(text, FILE, env=env, base_dir=base_dir)
    except SpecError as error:
        lines = str(error).split("\n")
        assert error.problems, "a SpecError lists at least one problem"
        assert all(p.file == FILE for p in error.problems)
        known = len(LINE_BREAK.split(text)) + 1  # YAML counts \x85 and \u2028 as line breaks too
        assert all(0 <= p.line <= known for p in error.problems), [str(p) for p in error.problems]
        assert all(line.startswith(f"{FILE}:") or line.startswith("... and ") for line in lines)
        assert all(line.isprintable() for line in lines), lines
        return "refused"
    assert isinstance(state, DesiredState)
    return "loaded"


def cases(files: dict[str, str]) -> Iterator[tuple[int, str, dict[str, str]]]:
    for seed in range(CASES):
        text, env = case(seed, files)
        yield seed, text, env


def test_fuzzed_specs_load_or_raise_spec_error_only(files: dict[str, str]) -> None:
    outcomes: dict[str, int] = {"loaded": 0, "refused": 0}
    crashes: list[str] = []
    for seed, text, env in cases(files):
        try:
            outcomes[check(text, env, Path(files["root"]))] += 1
        except AssertionError as exc:
            crashes.append(f"case {seed}: {exc}")
        except Exception as exc:  # the point of the test: name the case instead of stopping at the first
            crashes.append(f"case {seed}: {type(exc).__name__}: {exc}"[:300])
    assert crashes == []
    assert sum(outcomes.values()) == CASES
    # the mutations must exercise both outcomes, or the generator has stopped testing anything
    assert outcomes["loaded"] > CASES // 40 and outcomes["refused"] > CASES // 2, outcomes


def test_fuzzed_bytes_through_load_spec(tmp_path: Path) -> None:
    """The file path: random bytes (not UTF-8, NUL, huge lines) are refused naming the file."""
    rng = random.Random(7)
    spec = tmp_path / "bytes.yaml"
    base = BASES[2].encode()
    for _ in range(200):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        spec.write_bytes(bytes(data))
        try:
            load_spec(spec, env={})
        except SpecError as error:
            assert all(p.file == str(spec) for p in error.problems)
            assert all(line.startswith(f"{spec}") for line in str(error).split("\n"))
