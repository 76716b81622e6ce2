"""``agentvm run --workers N --sweep-per-minute N`` (and their environment variables): checked before
anything starts, and handed to the controller's ``Settings``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

import agentvm.cli.run as cli_run
from agentvm.cli.main import app
from agentvm.controller.run import Controller, Settings
from tests.support.controller_lab import World


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({}, ["--workers", "0"], "--workers"),
        ({"AGENTVM_WORKERS": "-3"}, [], "--workers"),
        ({}, ["--sweep-per-minute", "0.5"], "--sweep-per-minute"),
        ({"AGENTVM_SWEEP_PER_MINUTE": "0"}, [], "--sweep-per-minute"),
    ],
)
def test_a_pool_or_sweep_below_one_is_refused_naming_its_flag(
    tmp_path: Path, env: dict[str, str], args: list[str], named: str
) -> None:
    spec = tmp_path / "contrail.yaml"
    spec.write_text("apiVersion: agentvm/v1\n")  # not even a valid spec: the flags are refused first
    result = CliRunner().invoke(app, ["run", "-f", str(spec), *args], env=env)
    assert result.exit_code == 2 and named in result.output, result.output


@pytest.mark.lab
@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, ["--workers", "3", "--sweep-per-minute", "12"], (3, 12.0)),
        ({"AGENTVM_WORKERS": "2", "AGENTVM_SWEEP_PER_MINUTE": "30"}, [], (2, 30.0)),
        ({}, [], (8, 60.0)),  # the defaults
    ],
)
def test_the_pool_and_sweep_reach_the_controller(
    controller_world: World,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    expected: tuple[int, float],
) -> None:
    seen: list[Settings] = []

    def serve(controllers: Sequence[Controller], server: object) -> None:  # the controllers built, not run
        for controller in controllers:
            seen.append(controller.settings)
            assert controller.reconciler.executor.workers == controller.settings.workers

    monkeypatch.setattr(cli_run, "_serve", serve)
    world = controller_world
    command = ["run", "-f", str(world.spec), "--listen", "127.0.0.1:0", *args]
    result = CliRunner().invoke(app, command, env={**world.info.env(), **env})
    assert result.exit_code == 0, result.output
    assert [(s.workers, s.sweep_per_minute) for s in seen] == [expected]
