"""``--insecure`` is an explicit choice, and the CLI says what it costs on stderr every time."""

from __future__ import annotations

import pytest

from agentvm.cli.connect import connection


def test_insecure_prints_a_warning_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTVM_PASSWORD", "pw")
    conn = connection("https://vc.example.com/sdk", "u", None, None, None, True)
    captured = capsys.readouterr()
    assert conn.insecure
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("agentvm: warning: --insecure:")
    assert "https://vc.example.com/sdk" in lines[0] and "--thumbprint" in lines[0]


def test_a_verified_connection_prints_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTVM_PASSWORD", "pw")
    connection("https://vc.example.com/sdk", "u", None, None, None, False)
    assert capsys.readouterr() == ("", "")
