"""Verification of certificate client assertions, for real, with `cryptography`.

docs/graph.md 11.1 (S24): the assertion is a JWT whose header has `alg` PS256 with `x5t#S256` (the
base64url SHA-256 thumbprint of the certificate's DER), or in older clients RS256 with a SHA-1
`x5t`; `aud` is the token endpoint, `iss` and `sub` the client id, `exp` a few minutes ahead.
The signature is checked against the public key of the certificate registered on the app.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Clocks differ; Entra tolerates a few minutes of skew.
CLOCK_SKEW = 300.0


class AssertionRejected(Exception):
    """The assertion is not acceptable; `code` is the AADSTS number, `args[0]` the description."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprints(certificate: x509.Certificate) -> tuple[str, str]:
    """(x5t#S256, x5t): base64url SHA-256 and SHA-1 of the DER certificate."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return b64url(certificate.fingerprint(hashes.SHA256())), b64url(_sha1(der))


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(data)
    return digest.finalize()


def _parse(assertion: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    try:
        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header = json.loads(_unb64url(header_b64))
        claims = json.loads(_unb64url(payload_b64))
        signature = _unb64url(signature_b64)
    except (ValueError, binascii.Error) as exc:
        raise AssertionRejected(700027, "Client assertion is not a well-formed JWT.") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AssertionRejected(700027, "Client assertion is not a well-formed JWT.")
    return header, claims, signature, f"{header_b64}.{payload_b64}".encode()


def _find_certificate(header: dict[str, Any], certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    # MSAL sends the thumbprints base64url *with* padding; RFC 7515 says without. Entra takes both.
    wanted_s256 = str(header.get("x5t#S256") or "").rstrip("=")
    wanted_sha1 = str(header.get("x5t") or "").rstrip("=")
    for certificate in certificates:
        s256, sha1 = thumbprints(certificate)
        if (wanted_s256 and wanted_s256 == s256) or (not wanted_s256 and wanted_sha1 and wanted_sha1 == sha1):
            return certificate
    shown = wanted_s256 or wanted_sha1 or "none"
    raise AssertionRejected(
        700027,
        "The certificate with identifier used to sign the client assertion is not registered on application. "
        f"[Reason - The key was not found., Thumbprint of key used by client: '{shown}']",
    )


def _check_signature(alg: str, key: Any, signature: bytes, signed: bytes) -> None:
    if not isinstance(key, rsa.RSAPublicKey):
        raise AssertionRejected(700027, "Client assertion failed signature validation. Only RSA keys are supported.")
    if alg == "PS256":
        scheme: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        scheme = padding.PKCS1v15()
    try:
        key.verify(signature, signed, scheme, hashes.SHA256())
    except InvalidSignature as exc:
        raise AssertionRejected(700027, "Client assertion failed signature validation.") from exc


def _check_claims(claims: dict[str, Any], client_id: str, audiences: Iterable[str], now: float) -> None:
    if claims.get("aud") not in set(audiences):
        raise AssertionRejected(
            700027, f"Client assertion audience claim does not match. Audience: '{claims.get('aud')}'."
        )
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRejected(700027, "Client assertion issuer and subject must be the client id.")
    expires, not_before = claims.get("exp"), claims.get("nbf", claims.get("iat", now))
    if not isinstance(expires, int | float) or expires + CLOCK_SKEW < now:
        raise AssertionRejected(700024, "Client assertion is not within its valid time range.")
    if isinstance(not_before, int | float) and not_before - CLOCK_SKEW > now:
        raise AssertionRejected(700024, "Client assertion is not within its valid time range.")


def verify_assertion(
    assertion: str, certificates: Sequence[x509.Certificate], client_id: str, audiences: Iterable[str], now: float
) -> None:
    """Raise AssertionRejected unless the assertion is a valid PS256/RS256 JWT from one of `certificates`.

    `now` is the wall clock: clients (MSAL) sign with theirs, while the simulator clock may have
    been advanced by days.
    """
    header, claims, signature, signed = _parse(assertion)
    alg = header.get("alg")
    if alg not in ("PS256", "RS256"):
        raise AssertionRejected(700027, f"Client assertion uses an unsupported algorithm '{alg}'.")
    certificate = _find_certificate(header, certificates)
    _check_signature(str(alg), certificate.public_key(), signature, signed)
    _check_claims(claims, client_id, audiences, now)
