"""TLS trust for outgoing calls: the system's CAs plus the optional `MONITOR_CA_BUNDLE`.

The extra bundle is *added* to the usual trust (a TLS-inspecting proxy, a private cloud, the
simulator); it never replaces it.
"""

from __future__ import annotations

import ssl
import tempfile
from functools import cache
from pathlib import Path

import certifi


def client_context(extra_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


@cache
def combined_bundle(extra_ca: Path) -> str:
    """A CA file with certifi's roots and `extra_ca`, for libraries that take one file (MSAL/requests)."""
    with tempfile.NamedTemporaryFile("wb", prefix="monitor-ca-", suffix=".pem", delete=False) as handle:
        handle.write(Path(certifi.where()).read_bytes())
        handle.write(b"\n")
        handle.write(extra_ca.read_bytes())
    return handle.name
