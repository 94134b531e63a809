"""`monitor cert create`: a self-signed certificate and key for the app registration's credential.

A certificate credential beats a client secret (it never travels: MSAL signs an assertion with the
key, docs/graph.md 11.1), and Entra accepts a self-signed one. Two files are written:

- `<name>.pem`: the private key and the certificate, for `MONITOR_CLIENT_CERTIFICATE` (mode 0600);
- `<name>.crt`: the certificate alone, to upload in the Entra admin center (App registrations, the
  app, Certificates & secrets, Certificates, Upload certificate).

The thumbprints printed are what the portal shows after the upload (SHA-1, hex) and what the
assertion's `x5t#S256` header carries (SHA-256). Nothing of the key is ever printed or logged.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from monitor.errors import ConfigError

KEY_BITS = 3072  # RSA; Entra accepts 2048 and up


@dataclass(frozen=True, slots=True)
class CreatedCertificate:
    key_and_certificate: Path
    certificate: Path
    sha1: str
    sha256: str
    not_after: dt.datetime

    def instructions(self) -> str:
        return "\n".join(
            [
                f"certificate and key:  {self.key_and_certificate}   (MONITOR_CLIENT_CERTIFICATE; keep it secret)",
                f"certificate only:     {self.certificate}   (upload this one)",
                f"SHA-1 thumbprint:     {self.sha1}",
                f"SHA-256 thumbprint:   {self.sha256}",
                f"valid until:          {self.not_after.isoformat(timespec='seconds')}",
                "",
                "Upload the certificate: Entra admin center > App registrations > (the app) > Certificates & secrets >",
                "Certificates > Upload certificate, then check that the portal shows the SHA-1 thumbprint above.",
                "Set MONITOR_CLIENT_CERTIFICATE to the .pem file and unset MONITOR_CLIENT_SECRET.",
            ]
        )


def create_certificate(
    directory: Path, *, name: str = "monitor", common_name: str = "monitor", days: int = 730, overwrite: bool = False
) -> CreatedCertificate:
    """Write `<name>.pem` (key + certificate, 0600) and `<name>.crt` in `directory`."""
    if days < 1 or days > 3650:
        raise ConfigError("--days must be between 1 and 3650")
    pem_path, crt_path = directory / f"{name}.pem", directory / f"{name}.crt"
    existing = [str(p) for p in (pem_path, crt_path) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{', '.join(existing)} exists already (use --force to replace)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(pem_path, key_pem + certificate_pem)
    crt_path.write_bytes(certificate_pem)
    return CreatedCertificate(
        pem_path,
        crt_path,
        certificate.fingerprint(hashes.SHA1()).hex().upper(),  # the portal shows the SHA-1 thumbprint
        certificate.fingerprint(hashes.SHA256()).hex().upper(),
        certificate.not_valid_after_utc,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start: the key is never readable by others, not even for a moment."""
    if path.exists():
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
