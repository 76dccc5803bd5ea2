"""The web app's HTTPS certificate: made by the node, checked by the monitor once.

When ``[web] listen`` is not a loopback address, phones on the node's Wi-Fi connect over
HTTPS. No certificate authority can vouch for a Pi in a field office, so the node makes a
self-signed certificate (ECDSA P-256, ``web.crt`` and ``web.key`` in the node home, the key
0600) and ``fieldsync status`` / ``fieldsync web-qr`` show its SHA-256 fingerprint for the
monitor to compare with what the browser shows. The certificate is kept across restarts
(the fingerprint stays the one compared) and made again only if the address changes.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fieldsync import keystore

CERT_FILE = "web.crt"
KEY_FILE = "web.key"
#: Ten years: a field node may not see a clock or an operator for a long time.
VALIDITY_DAYS = 3650


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names


def _covers(cert: x509.Certificate, host: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(name in san for name in _names(host))


def ensure_certificate(home: Path, host: str) -> tuple[Path, Path]:
    """The certificate and key for serving on ``host``, made if missing (blocking)."""
    cert_path, key_path = home / CERT_FILE, home / KEY_FILE
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if _covers(cert, host):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldsync node")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keystore.write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    keystore.write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def fingerprint_of_der(der: bytes) -> str:
    """SHA-256 of a DER certificate as browsers show it: ``AB:CD:...``."""
    cert = x509.load_der_x509_certificate(der)
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def fingerprint(home: Path) -> str | None:
    """The fingerprint of the node's web certificate, or None if it has none (blocking)."""
    path = home / CERT_FILE
    if not path.exists():
        return None
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
