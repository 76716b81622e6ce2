"""``agentvm run`` takes its log handler away when it returns: a later command in the same process (a test
run, an embedding program) must not log into the stream of a finished one."""

from __future__ import annotations

import logging

from typer.testing import CliRunner

from agentvm.cli.main import app


def agentvm_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_agentvm", False)]


def test_a_run_that_stops_on_bad_input_leaves_no_handler_on_its_closed_stream(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: agentvm/v1\n")
    before = agentvm_handlers()
    result = CliRunner().invoke(app, ["run", "-f", str(spec), "--listen", "192.0.2.1:0"])
    assert result.exit_code == 2, result.output
    assert agentvm_handlers() == before
    logging.getLogger("agentvm.test").warning("after the run")  # would print "--- Logging error ---"
