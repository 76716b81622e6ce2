"""What the simulator's cached binary is keyed on, and how latency options are read (no Go needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvm.lab import vcsim
from agentvm.lab.vcsim import LabError, parse_method_delay


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in Go package directory for vcsim's sources, with a cache of its own."""
    source = tmp_path / "vcsim"
    source.mkdir()
    (source / "main.go").write_text("package main\n")
    (source / "paging.go").write_text("package main // paging\n")
    (source / "paging_test.go").write_text("package main // its test\n")
    monkeypatch.setattr(vcsim, "GO_PACKAGE", source)
    monkeypatch.setenv("AGENTVM_CACHE_DIR", str(tmp_path / "cache"))
    return source


def test_the_binary_is_built_from_every_go_file_but_the_tests(package: Path) -> None:
    assert [p.name for p in vcsim.go_sources()] == ["main.go", "paging.go"]


def test_a_change_to_any_source_file_names_another_binary(package: Path) -> None:
    before = vcsim.binary_path()
    assert before.parent == package.parent / "cache"
    (package / "paging.go").write_text("package main // paging, changed\n")
    changed = vcsim.binary_path()
    (package / "dvports.go").write_text("package main\n")
    added = vcsim.binary_path()
    assert len({before, changed, added}) == 3


def test_tests_and_other_files_do_not_change_the_binary(package: Path) -> None:
    before = vcsim.binary_path()
    (package / "paging_test.go").write_text("package main // another test\n")
    (package / "notes.txt").write_text("not Go\n")
    assert vcsim.binary_path() == before


def test_a_renamed_source_names_another_binary(package: Path) -> None:
    before = vcsim.binary_path()
    (package / "paging.go").rename(package / "pager.go")
    assert vcsim.binary_path() != before


def test_method_delay_pairs() -> None:
    assert parse_method_delay("") == {}
    assert parse_method_delay("RetrievePropertiesEx:50, WaitForUpdatesEx:10") == {
        "RetrievePropertiesEx": 50,
        "WaitForUpdatesEx": 10,
    }


BAD_METHOD_DELAYS = ["RetrievePropertiesEx", "RetrievePropertiesEx:", ":5", "A:-1", "A:x", "A B:1"]


@pytest.mark.parametrize("text", BAD_METHOD_DELAYS)
def test_a_bad_method_delay_says_what_it_takes(text: str) -> None:
    with pytest.raises(LabError, match="--method-delay takes METHOD:MS pairs") as refused:
        parse_method_delay(text)
    assert refused.value.exit_code == 2
