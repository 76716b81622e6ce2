"""Run a command in a real terminal (tmux) of a given size and read what it drew.

Used by the tests that promise how output looks at 80x24: rich asks the terminal for its size, as it does
for a person, rather than being told a width.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DONE = "__TERMINAL_COMMAND_DONE__"


def tmux_screen(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    width: int = 80,
    height: int = 24,
    timeout: float = 60.0,
    ready: Path | None = None,
) -> str:
    """The screen (with up to 200 lines of scroll-back) once ``argv`` has ended, in a ``width`` x
    ``height`` tmux terminal. COLUMNS and LINES are removed from ``env``: the size comes from the tty.

    ``ready``: a file the command creates when the screen shows what to read (a live display, which is
    gone once the command ends): the screen is read then instead, without scroll-back."""
    clean = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    clean.setdefault("TERM", "xterm-256color")
    command = f"{shlex.join(argv)}; echo {DONE}; read _"
    with tempfile.TemporaryDirectory(prefix="agentvm-tmux-") as tmp:
        tmux = ["tmux", "-S", str(Path(tmp) / "sock")]
        subprocess.run(
            [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "sh", "-c", command],
            env=clean,
            check=True,
        )
        try:
            deadline = time.monotonic() + timeout
            screen = ""
            while time.monotonic() < deadline:
                if ready is not None and not ready.exists():
                    time.sleep(0.1)  # polling for the command to draw, not evidence of anything
                    continue
                back = [] if ready is not None else ["-S", "-200"]
                screen = subprocess.run(
                    [*tmux, "capture-pane", "-p", *back], capture_output=True, text=True, check=True
                ).stdout
                if ready is not None or DONE in screen:
                    return screen.split(DONE)[0]
                time.sleep(0.1)  # polling for the command to end, not evidence of anything
            raise AssertionError(f"{argv} did not end within {timeout} s in tmux:\n{screen}")
        finally:
            subprocess.run([*tmux, "kill-server"], check=False, env={**os.environ, "TMUX": ""})
