"""The sandbox's local certificate authority and the server certificate it signs.

MSAL refuses plain-HTTP authorities, so the sandbox serves HTTPS with a certificate from a CA
generated on first use and kept in the sandbox data folder. The CA is reused on later starts so
that a person who chose to trust it once keeps trusting it; the server certificate is renewed
whenever it is close to expiry or was signed by another CA.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

CA_FILE = "sandbox-ca.pem"
CA_KEY_FILE = "sandbox-ca.key"
SERVER_FILE = "sandbox-server.pem"
SERVER_KEY_FILE = "sandbox-server.key"
_LOCK_FILE = ".ca.lock"

_CA_LIFETIME = dt.timedelta(days=3650)
_SERVER_LIFETIME = dt.timedelta(days=365)
# Renew well before expiry so a long-running sandbox never serves an expired certificate.
_RENEW_MARGIN = dt.timedelta(days=30)
_SERVER_NAMES = ("localhost",)
_SERVER_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertificatePaths:
    """Where the sandbox's certificates live.

    Attributes:
        ca_certificate: PEM of the CA certificate (what clients trust).
        server_certificate: PEM of the server certificate followed by the CA certificate.
        server_key: PEM of the server's private key.
    """

    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def ensure_certificates(folder: Path) -> CertificatePaths:
    """Create (or reuse) the CA and a server certificate for loopback in ``folder``.

    Args:
        folder: Where the files live; created if missing.

    Returns:
        The paths of the CA certificate, server certificate chain and server key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder / _LOCK_FILE):
        ca_cert, ca_key = _ensure_ca(folder)
        _ensure_server(folder, ca_cert, ca_key)
    return CertificatePaths(
        ca_certificate=folder / CA_FILE,
        server_certificate=folder / SERVER_FILE,
        server_key=folder / SERVER_KEY_FILE,
    )


def server_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A TLS server context serving the sandbox's server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(paths.server_certificate), str(paths.server_key))
    return context


def client_context(ca_certificate: Path) -> ssl.SSLContext:
    """A TLS client context that trusts only the sandbox CA."""
    context = ssl.create_default_context(cafile=str(ca_certificate))
    return context


@contextlib.contextmanager
def _folder_lock(path: Path, timeout_s: float = 30.0) -> Iterator[None]:
    # Two sandboxes sharing a data folder must not both write a CA: the loser's server
    # certificate would then chain to a CA that is no longer on disk.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > timeout_s:
                    # A crashed process left its lock behind.
                    path.unlink()
                    continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not lock {path}") from None
            time.sleep(0.05)
            continue
        break
    try:
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _still_valid(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - _RENEW_MARGIN > now


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    return public.public_numbers() == key.public_key().public_numbers()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / CA_KEY_FILE).read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _still_valid(cert):
        return None
    if not _same_key(cert, key):
        return None
    return cert, key


def _ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    loaded = _load_ca(folder)
    if loaded is not None:
        return loaded

    logger.info("Creating a new sandbox certificate authority in %s", folder)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Qargo Desktop Sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Qargo Desktop Sandbox local CA"),
        ]
    )
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        folder / CA_KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_public(folder / CA_FILE, cert.public_bytes(serialization.Encoding.PEM))
    # A new CA makes any old server certificate useless.
    with contextlib.suppress(FileNotFoundError):
        (folder / SERVER_FILE).unlink()
    return cert, key


def _server_is_current(folder: Path, ca_cert: x509.Certificate) -> bool:
    try:
        chain = x509.load_pem_x509_certificates((folder / SERVER_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / SERVER_KEY_FILE).read_bytes(), None)
    except (OSError, ValueError):
        return False
    leaf = chain[0]
    if leaf.issuer != ca_cert.subject or not _still_valid(leaf):
        return False
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature has no common base
        return False
    return isinstance(key, ec.EllipticCurvePrivateKey) and _same_key(leaf, key)


def _ensure_server(
    folder: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    if _server_is_current(folder, ca_cert):
        return

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    public = key.public_key()
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in _SERVER_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(addr)) for addr in _SERVER_ADDRESSES]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Qargo Desktop Sandbox"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _SERVER_LIFETIME)
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(
        folder / SERVER_KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_public(
        folder / SERVER_FILE,
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM),
    )
