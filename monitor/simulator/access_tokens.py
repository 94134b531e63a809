"""Access tokens shaped like Entra's: a JWT whose `roles` claim lists the consented app permissions.

Entra's app-only tokens for Graph are JWTs carrying `tid`, `appid` and `roles` (the application
permissions an administrator consented to). The simulator issues the same shape so that a client can
read which permissions it holds, as it can against Entra. The signature is random bytes: Graph (here,
`graph_auth.authorize`) looks the token up, it never trusts what a client could forge, and clients
must not validate tokens meant for Graph anyway.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable, Mapping

import orjson


def _part(value: Mapping[str, object] | bytes) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_shaped_token(
    *, tenant_id: str, client_id: str, audience: str, roles: Iterable[str], issued_at: float, expires_at: float
) -> str:
    """`header.payload.signature`, base64url, with the claims an app-only Graph token has."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "simulator"}
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": int(issued_at),
        "nbf": int(issued_at),
        "exp": int(expires_at),
        "appid": client_id,
        "idtyp": "app",
        "oid": str(uuid.uuid4()),
        "roles": sorted(roles),
        "sub": str(uuid.uuid4()),
        "tid": tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    return ".".join((_part(header), _part(claims), _part(secrets.token_bytes(64))))
