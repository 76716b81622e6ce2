"""The CLI's error lines print the message as it is."""

from __future__ import annotations

import pytest

from agentvm.cli.output import fail


def test_a_thumbprint_in_an_error_line_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    thumbprint = "4C:33:9B:5F:9B:CD:A6:3F:2A:CD:5D:B1:91:D8:EA:AE:A5:D4:49:8C"  # ":CD:" is an emoji code
    with pytest.raises(SystemExit) as exited:
        fail(f"extension x logs in with SHA-1 {thumbprint} [bold]not markup[/bold]", 2)
    assert exited.value.code == 2
    assert (
        capsys.readouterr().err
        == f"agentvm: extension x logs in with SHA-1 {thumbprint} [bold]not markup[/bold]\n"
    )
