"""``agentvm events [-f] [--json] [--since]``: the controller's events, read from its HTTP API.

Like ``govc events``: the recent events, oldest first, one line each (time, level, type, agency, host by
inventory path, message); ``-f`` then follows new ones as they come until interrupted (Ctrl-C: exit 0).
The controller is ``agentvm run``'s API at ``--server`` / ``$AGENTVM_SERVER`` (default
http://127.0.0.1:8080). ``--json`` prints one ``agentvm/v1`` ``Events`` document, or with ``-f`` one JSON
object per event per line (for ``jq`` and log shippers). ``--since`` takes a duration (``90s``, ``10m``,
``1h30m``, ``2d``) or an RFC 3339 time (``2026-12-01T21:00:00Z``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from agentvm.api.client import DEFAULT_SERVER, SERVER_ENV, ApiClient
from agentvm.cli.output import print_document
from agentvm.cli.solution import Json, guard
from agentvm.model.errors import ConfigurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# the event fields the API names in snake_case, as the CLI's documents name them (camelCase)
_CAMEL = {"host_name": "hostName", "correlation_id": "correlationId"}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration before ``now`` (Go's syntax: ``10m``, ``1h30m``, plus ``d``) or an RFC 3339
    time with its zone, as unix seconds. ConfigurationError naming the forms otherwise. Pure."""
    value = text.strip()
    if value and _DURATION.sub("", value) == "" and _DURATION.match(value):
        return now - sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
    upper = value.upper()  # RFC 3339 allows t and z too; fromisoformat only their capitals
    try:
        when = datetime.fromisoformat(upper)
    except ValueError:
        when = None
    if when is None or ("T" not in upper and " " not in upper):
        raise ConfigurationError(
            f"--since {text!r} is neither a duration (10m, 1h30m, 2d) nor an RFC 3339 time "
            "(2026-12-01T21:00:00Z)"
        )
    if when.tzinfo is None:
        raise ConfigurationError(
            f"--since {text!r} has no time zone: add Z (UTC) or an offset such as +01:00"
        )
    return when.timestamp()


def event_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the CLI's JSON shows it: the API's fields, with camelCase keys."""
    return {_CAMEL.get(k, k): v for k, v in event.items()}


def event_line(event: Mapping[str, Any]) -> str:
    """One event on one line: ``TIME LEVEL TYPE AGENCY HOST MESSAGE`` (``-`` for an absent field); control
    characters in values are shown escaped, never sent to the terminal."""
    when = datetime.fromtimestamp(float(event.get("time") or 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    host = event.get("host_name") or event.get("host") or "-"
    fields = [
        when,
        f"{event.get('level', 'info'):<7}",
        f"{event.get('type', '-'):<10}",
        str(event.get("agency") or "-"),
        str(host),
        str(event.get("message", "")),
    ]
    return " ".join(_printable(f) for f in fields)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@guard
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then follow new events until interrupted.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events since a duration ago (10m) or an RFC 3339 time."),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, max=1000, help="At most this many past events.")
    ] = 100,
    server: Annotated[
        str,
        typer.Option("--server", envvar=SERVER_ENV, help="The API of agentvm run (its --listen address)."),
    ] = DEFAULT_SERVER,
    json_: Json = False,
) -> None:
    """Show the controller's events (agentvm run's API); -f follows them like govc events -f."""
    as_json = json_
    start = parse_since(since, time.time()) if since is not None else None
    with ApiClient(server) as client:
        recent, last_id = client.recent_events(count)
        shown = [e for e in recent if start is None or float(e.get("time") or 0) >= start]
        if as_json and not follow:
            print_document(
                "Events",
                {"server": client.url, "lastEventId": last_id, "events": [event_document(e) for e in shown]},
            )
            return
        for event in shown:
            _emit(event, as_json)
        if not follow:
            return
        try:
            for event in client.follow(last_id):
                _emit(event, as_json)
        except KeyboardInterrupt:
            return  # the way to stop following


def _emit(event: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        line = json.dumps(event_document(event), sort_keys=True, separators=(",", ":"))
    else:
        line = event_line(event)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a pipe (| grep) sees each event as it comes
