"""Hostile and malformed specs: each ends in one SpecError naming file, line and field — never a crash.

The examples are the ones fuzzing found (each used to end in a Python traceback, run out of
memory, or load and then connect somewhere). ``test_spec_fuzz.py`` mutates specs at random; this file pins
every known case down with its message.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentvm.spec import SpecError, load_spec, load_spec_text
from tests.support.specs import GOOD

ENV = {"PW": "x"}
# the documented limits (docs/spec.md), written out: the tests do not take them from the code
MAX_BYTES = 1_048_576
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_VALUES = 50_000


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "c.yaml", env=ENV if env is None else env)
    return [str(p) for p in caught.value.problems]


def one_problem(text: str, env: dict[str, str] | None = None) -> str:
    found = problems(text, env)
    assert len(found) == 1, found
    return found[0]


def test_the_base_file_of_these_tests_is_valid() -> None:
    load_spec_text(GOOD, "c.yaml", env=ENV)


# ----------------------------------------------------------------------------------------- YAML scalars


def test_invalid_date_is_text_not_a_crash() -> None:
    # YAML 1.1 reads 2024-13-45 as a timestamp; the spec has no dates, so it stays the text as written
    state = load_spec_text(GOOD.replace('version: "1.0"', "version: 2024-13-45"), "c.yaml", env=ENV)
    assert state.solution.version == "2024-13-45"


def test_integer_over_4300_digits_is_text_not_a_crash() -> None:
    digits = "9" * 5000
    text = GOOD.replace("    perHost:", f"    ovfProperties:\n      big: {digits}\n    perHost:")
    state = load_spec_text(text, "c.yaml", env=ENV)
    assert [(p.key, p.value) for p in state.agencies[0].ovf_properties] == [("big", digits)]


def test_explicit_float_tag_on_text_names_the_field() -> None:
    assert one_problem(GOOD.replace('version: "1.0"', "version: !!float abc")) == (
        'c.yaml:7: solution.version: is tagged !!float, but "abc" is not a float; '
        "remove the tag or write a float"
    )


def test_explicit_bool_tag_on_text_names_the_field() -> None:
    assert one_problem(GOOD.replace('version: "1.0"', "version: !!bool maybe")) == (
        'c.yaml:7: solution.version: is tagged !!bool, but "maybe" is not a bool; '
        "remove the tag or write a bool"
    )


def test_explicit_int_tag_on_text_names_the_field() -> None:
    assert one_problem(GOOD.replace('version: "1.0"', "version: !!int 1.5")).startswith(
        'c.yaml:7: solution.version: is tagged !!int, but "1.5" is not an int'
    )


def test_merge_key_with_a_number_names_the_line() -> None:
    text = GOOD.replace('  version: "1.0"\n', '  version: "1.0"\n  <<: 5\n')
    assert one_problem(text) == (
        "c.yaml:8: solution: '<<' merges a mapping (or a list of them) into this one, not a number; "
        "write <<: *anchor"
    )


def test_merge_key_with_a_list_of_numbers_names_the_line() -> None:
    text = GOOD.replace('  version: "1.0"\n', '  version: "1.0"\n  <<: [5]\n')
    assert "'<<' merges a mapping" in one_problem(text)


def test_merge_keys_still_work_and_explicit_keys_win() -> None:
    text = textwrap.dedent("""\
        solution: {key: org.example.t, version: "1.0"}
        agencies:
          - &base
            name: a
            ovf: http://127.0.0.1/a.ovf
            scope: [/DC0/host/DC0_C0]
            ovfProperties: {mtu: 1500, dns: 10.0.0.2}
          - <<: *base
            name: b
            ovfProperties: {mtu: 9000}
        """)
    a, b = load_spec_text(text, "c.yaml", env={}).agencies
    assert (b.name, b.ovf.url, b.scope) == ("b", a.ovf.url, a.scope)
    assert [(p.key, p.value) for p in b.ovf_properties] == [("mtu", "9000")]


def test_recursive_merge_is_bounded() -> None:
    text = "solution: &s\n  <<: *s\n"
    assert "found undefined alias" in one_problem(text) or "nests" in one_problem(text)


# ----------------------------------------------------------------------------------------- limits


def test_nesting_of_a_thousand_levels_is_refused_at_its_line() -> None:
    text = "solution:\n  key: " + "[" * 1000 + "]" * 1000 + "\n"
    assert one_problem(text) == (
        f"c.yaml:2: nests deeper than {MAX_DEPTH} levels; a spec is never this deep, flatten it"
    )


def test_nesting_in_block_style_is_refused_too() -> None:
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5)) + f"{'  ' * (MAX_DEPTH + 5)}v: 1\n"
    assert f"nests deeper than {MAX_DEPTH} levels" in one_problem(text)


def bomb(levels: int, fanout: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    lines.append(f"solution: *a{levels}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_alias_bomb_is_refused_without_expanding_it(levels: int) -> None:
    assert one_problem(bomb(levels)) == (
        f"c.yaml:5: a4: expands to more than {MAX_VALUES:,} values through aliases; "
        "write the values out instead of nesting aliases"
    )


def test_a_nine_level_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A child process loads the 9-level bomb under a 1 GiB address-space limit; it allocates little.

    The old loader expanded the bomb (312 MB at 6 levels, out of memory at 7-9); the limit makes such a
    regression fail here with MemoryError instead of taking the machine's memory. tracemalloc counts what
    the load itself allocates (ru_maxrss would also count pages inherited from the forking test runner).
    """
    text = bomb(9)
    spec = tmp_path / "bomb.yaml"
    spec.write_text(text)
    script = (
        "import resource, sys, tracemalloc\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from agentvm.spec import SpecError, load_spec\n"
        "tracemalloc.start()\n"
        "try:\n"
        "    load_spec(sys.argv[1], env={})\n"
        "except SpecError as e:\n"
        "    print(e)\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(spec)], capture_output=True, text=True, timeout=60, check=True
    )
    message, peak = done.stdout.strip().splitlines()
    assert message.startswith(f"{spec}:5: a4: expands to more than")
    assert int(peak) < 64 * 2**20


def test_too_many_aliases_are_refused() -> None:
    lines = ["x: &x 1"] + [f"k{i}: *x" for i in range(MAX_ALIASES + 1)]
    assert f"uses more than {MAX_ALIASES:,} aliases" in one_problem("\n".join(lines) + "\n")


def test_a_file_larger_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(SpecError) as caught:
        load_spec(spec, env={})
    assert str(caught.value) == (
        f"{spec}: is larger than {MAX_BYTES:,} bytes; a spec is never this big: is it the right file?"
    )


def test_text_larger_than_the_limit_is_refused_too() -> None:
    assert "is larger than" in one_problem("# " + "x" * MAX_BYTES + "\n")


def test_control_character_in_the_stream_names_its_line() -> None:
    assert one_problem(GOOD.replace("admin", "ad\x07min")).startswith("c.yaml:3: is not valid YAML")


# ----------------------------------------------------------------------------------------- vcenter.url


def vcenter_url(value: str) -> str:
    return GOOD.replace("url: https://vc.example.com/sdk", f"url: {value}")


def test_url_with_an_unclosed_ipv6_bracket() -> None:
    assert one_problem(vcenter_url('"https://[::1"')) == (
        'c.yaml:2: vcenter.url: "https://[::1" is not a URL agentvm can use: its IPv6 address has no '
        'closing "]"; write it like https://vcenter.example.com/sdk'
    )


def test_url_with_an_ipv6_address_is_fine() -> None:
    state = load_spec_text(vcenter_url('"https://[::1]:8989/sdk"'), "c.yaml", env=ENV)
    assert state.vcenter is not None and state.vcenter.connection.host == "::1"


@pytest.mark.parametrize("char", ["\\x01", "\\t", "\\n", "\\x7f", "\\x85", " "])
def test_url_with_a_control_character_or_blank(char: str) -> None:
    message = one_problem(vcenter_url(f'"https://vc.exa{char}mple.com/sdk"'))
    assert message.startswith("c.yaml:2: vcenter.url: ")
    assert "control character" in message or "blank" in message


def test_url_with_credentials_never_shows_the_password() -> None:
    message = one_problem(vcenter_url("https://admin:hunter2@vc.example.com/sdk"))
    assert "hunter2" not in message
    assert message == (
        "c.yaml:2: vcenter.url: has a user name and password in it; remove them from the URL and use "
        "vcenter.username and passwordEnv/passwordFile"
    )


def test_url_that_is_a_number_is_refused() -> None:
    # the socket layer took url: 42 for host 0.0.0.42 and connected there
    assert one_problem(vcenter_url("42")) == (
        "c.yaml:2: vcenter.url: must be a URL, e.g. https://vcenter.example.com/sdk, not a number"
    )


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ('"42"', "42"),
        ("1.2.3", "1.2.3"),
        ("0x7f.1", "0x7f.1"),
        ("https://4294967296/sdk", "4294967296"),
        ("https://999.1.1.1/sdk", "999.1.1.1"),
        ("https://vc..example.com/sdk", "vc..example.com"),
        ("https://-vc.example.com/sdk", "-vc.example.com"),
    ],
)
def test_url_whose_host_is_not_an_address_or_name(value: str, host: str) -> None:
    assert one_problem(vcenter_url(value)) == (
        f'c.yaml:2: vcenter.url: "{value.strip(chr(34))}" is not a URL agentvm can use: its host "{host}" '
        "is not a host name or IPv4 address; write it like https://vcenter.example.com/sdk"
    )


@pytest.mark.parametrize("value", ["https://vc.example.com:0/sdk", "https://vc.example.com:99999/sdk"])
def test_url_with_a_bad_port(value: str) -> None:
    assert "port" in one_problem(vcenter_url(value))


@pytest.mark.parametrize(
    "value",
    ["vc.example.com", "https://vc.example.com/sdk", "https://10.0.0.5:8989/sdk", "http://127.0.0.1:80"],
)
def test_good_urls_still_load(value: str) -> None:
    state = load_spec_text(vcenter_url(value), "c.yaml", env=ENV)
    assert state.vcenter is not None and state.vcenter.connection.url == value


# ----------------------------------------------------------------------------------------- ipPlan


@pytest.mark.parametrize("cidr", ["255.255.255.255/32", "0.0.0.0/32", "10.1.1.1/32", "10.1.1.0/31"])
def test_tiny_cidrs_without_range_do_not_crash(cidr: str) -> None:
    text = GOOD.replace("10.10.0.0/24", cidr).replace("      gateway: 10.10.0.1\n", "")
    text = text.replace("      range: 10.10.0.10-10.10.0.200\n", "")
    plan = load_spec_text(text, "c.yaml", env=ENV).agencies[0].ip_plan
    assert plan is not None and plan.network is not None
    assert (plan.first, plan.last) == (plan.network.network_address, plan.network.broadcast_address)


def test_slash_zero_cidr_has_a_range() -> None:
    text = GOOD.replace("10.10.0.0/24", "0.0.0.0/0").replace("      gateway: 10.10.0.1\n", "")
    text = text.replace("      range: 10.10.0.10-10.10.0.200\n", "")
    plan = load_spec_text(text, "c.yaml", env=ENV).agencies[0].ip_plan
    assert plan is not None and str(plan.first) == "0.0.0.1"


# ----------------------------------------------------------------------------------------- passwordFile


def test_password_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "pw.bin").write_bytes(b"\xff\xfe\x00secret")
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD.replace("passwordEnv: PW", "passwordFile: pw.bin"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec, env={})
    assert str(caught.value) == (
        f'{spec}:4: vcenter.passwordFile: "{tmp_path / "pw.bin"}" is not UTF-8 text; '
        "write the password in it as UTF-8"
    )


def test_password_file_with_a_control_character_never_shows_it(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("sec\x01ret\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD.replace("passwordEnv: PW", "passwordFile: pw.txt"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec, env={})
    assert str(caught.value) == (
        f'{spec}:4: vcenter.passwordFile: the password in "{tmp_path / "pw.txt"}" has a control character '
        "(U+0001), which cannot be sent to vCenter; write the right password in it"
    )
    assert "ret" not in str(caught.value)


def test_password_from_the_environment_with_a_control_character_never_shows_it() -> None:
    message = one_problem(GOOD, env={"PW": "top\x00secret"})
    assert message == (
        "c.yaml:4: vcenter.passwordEnv: the password in PW has a control character (U+0000), which "
        "cannot be sent to vCenter; set PW to the right password"
    )


def test_password_file_name_too_long_for_the_file_system() -> None:
    name = "x" * 300
    message = one_problem(GOOD.replace("passwordEnv: PW", f"passwordFile: {name}"))
    assert message.startswith("c.yaml:4: vcenter.passwordFile: ")
    assert message.endswith(
        "cannot be used as a file name (File name too long); give the path of the password file"
    )


@pytest.mark.parametrize(
    ("cidr", "gateway", "range_"),
    [
        ("255.255.255.255/32", "10.10.0.1", None),
        ("255.255.255.248/29", None, "1-2"),
        ("0.0.0.0/32", "x", None),
    ],
)
def test_examples_in_messages_stay_inside_tiny_cidrs(
    cidr: str, gateway: str | None, range_: str | None
) -> None:
    # the "write it like ..." example was cidr + 1 (+ 200 for a range): past 255.255.255.255 it crashed
    text = GOOD.replace("10.10.0.0/24", cidr)
    text = text.replace("gateway: 10.10.0.1", f"gateway: {gateway}" if gateway else "gateway: 10.10.0.1")
    if range_:
        text = text.replace("range: 10.10.0.10-10.10.0.200", f"range: {range_}")
    found = problems(text)
    assert found and all(p.startswith("c.yaml:1") for p in found), found
