"""Throwaway self-signed certificates for extension (solution) logins in tests."""

from __future__ import annotations

from pathlib import Path

from agentvm.controller.identity import self_signed_certificate


def make_certificate(directory: Path, name: str) -> tuple[Path, Path, str]:
    """Write ``<name>.crt`` and ``<name>.key`` into ``directory``; return (cert file, key file, PEM)."""
    cert_pem, key_pem = self_signed_certificate(name, days=1)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    return cert_file, key_file, cert_pem.decode()
