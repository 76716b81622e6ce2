"""Structured log lines for ``agentvm run``: one line per action, text or JSON (``--log-format json``).

Called by the controller (``controller.reconcile``, ``controller.run``) through ``action_log``, and set up
once by the CLI with ``configure``. Every action line carries the host's inventory path (``host``) and the
correlation id of the vCenter calls it made (``correlation_id``: the prefix of their SOAP ``operationID``,
which vCenter writes into its own logs). Secrets never reach a record: the controller logs only names,
moids, paths, issue kinds and counts, and ``redact`` masks anything that looks like a bearer token or a
session cookie in messages that come from elsewhere.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

ACTION_LOGGER = "agentvm.controller.actions"
FIELDS = ("agency", "host", "host_moid", "correlation_id", "action")
_SECRETS = re.compile(r"(?i)(bearer\s+|vmware_soap_session=\"?|password[=:]\s*|token[=:]\s*)([^\s\";,]+)")


def redact(text: str) -> str:
    """``text`` with bearer tokens, session cookies, passwords and tokens after ``=``/``:`` masked."""
    return _SECRETS.sub(lambda m: f"{m.group(1)}<hidden>", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the action fields present, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [host=... correlation_id=...]`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        extras = [f"{n}={getattr(record, n)}" for n in FIELDS if getattr(record, n, None) is not None]
        return f"{line} [{' '.join(extras)}]" if extras else line


def configure(
    log_format: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send agentvm's logs to ``stream`` (stderr) as ``text`` or ``json`` lines; the handler, for
    ``unconfigure``. ValueError otherwise."""
    if log_format not in ("text", "json"):
        raise ValueError(f"--log-format must be text or json, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_agentvm", False):
            root.removeHandler(old)
    handler._agentvm = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # pyVmomi and the HTTP server are chatty at INFO; their problems surface through agentvm's errors
    for noisy in ("pyVmomi", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def unconfigure(handler: logging.Handler) -> None:
    """Take ``configure``'s handler away again (its stream may be closed once the command returns)."""
    logging.getLogger().removeHandler(handler)


def action_log(
    message: str,
    *,
    action: str,
    correlation_id: str | None = None,
    agency: str | None = None,
    host: str | None = None,
    host_moid: str | None = None,
    level: int = logging.INFO,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Log one action line with its structured fields (see the module docstring)."""
    fields: dict[str, object] = {
        "action": action,
        "correlation_id": correlation_id,
        "agency": agency,
        "host": host,
        "host_moid": host_moid,
        **(extra or {}),
    }
    logging.getLogger(ACTION_LOGGER).log(level, message, extra=fields)
