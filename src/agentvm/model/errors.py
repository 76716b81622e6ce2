"""agentvm's small error vocabulary: what to do next, not where it came from.

Adapters turn wire faults into these; the controller turns them into backoff (transient), a stop until the
input changes (configuration) or a re-login (authentication); the CLI prints ``str(error)`` and exits
non-zero. Messages name the object the way a person would (``host-21 (/DC0/host/C0/H0)``) and the fix.
"""

from __future__ import annotations


class AgentvmError(Exception):
    """Base of every error agentvm raises on purpose. ``str()`` is a one-line message with the fix."""

    exit_code = 1


class ConfigurationError(AgentvmError):
    """Permanent until the input changes: a wrong spec, a missing cluster, a fault caused by our request."""

    exit_code = 2


class TransientError(AgentvmError):
    """Retry later: the server is busy, restarting or unreachable for now."""

    exit_code = 3


class AuthenticationError(AgentvmError):
    """Log in again, or fix the credentials / certificate / thumbprint."""

    exit_code = 4


class NotFoundError(ConfigurationError):
    """A named object (cluster, host, extension, agency) does not exist."""
