"""The web app's HTTPS certificate: made by the node, checked by the monitor once.

When ``[web] listen`` is not a loopback address, phones on the node's Wi-Fi connect over
HTTPS. No certificate authority can vouch for a Pi in a field office, so the node makes a
self-signed certificate (ECDSA P-256, ``web.crt`` and ``web.key`` in the node home, the key
0600) and ``fieldsync status`` / ``fieldsync web-qr`` show its SHA-256 fingerprint for the
monitor to compare with what the browser shows. The certificate is kept across restarts
(the fingerprint stays the one compared) and made again only if the address changes.

The daemon never imports ``cryptography`` (about 7 MiB resident once loaded, for a few
milliseconds of work at start): ``ensure_certificate_apart`` makes or checks the certificate
in a short-lived child process (``python -m fieldsync.web.tls HOME HOST``), and the
fingerprint is a SHA-256 of the certificate's DER bytes, read with the standard library.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fieldsync import keystore
from fieldsync.errors import FieldsyncError

if TYPE_CHECKING:
    from cryptography import x509

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
    from cryptography import x509

    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names


def _covers(cert: x509.Certificate, host: str) -> bool:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(name in san for name in _names(host))


def ensure_certificate(home: Path, host: str) -> tuple[Path, Path]:
    """The certificate and key for serving on ``host``, made if missing (blocking)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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


def ensure_certificate_apart(home: Path, host: str, timeout: float = 60.0) -> tuple[Path, Path]:
    """``ensure_certificate`` in a child process, so that ``cryptography`` is never loaded
    into the daemon (blocking)."""
    try:
        subprocess.run(  # noqa: S603 - our own module, by the running interpreter
            [sys.executable, "-m", "fieldsync.web.tls", str(home), host],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        raise FieldsyncError(
            f"web app: cannot make its HTTPS certificate in {home}: {detail[0]};"
            f" check that {home} is writable, or remove {CERT_FILE} and {KEY_FILE} there"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FieldsyncError(f"web app: cannot make its HTTPS certificate: {exc}") from exc
    return home / CERT_FILE, home / KEY_FILE


def fingerprint_of_der(der: bytes) -> str:
    """SHA-256 of a DER certificate as browsers show it: ``AB:CD:...``."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def fingerprint(home: Path) -> str | None:
    """The fingerprint of the node's web certificate, or None if it has none (blocking)."""
    path = home / CERT_FILE
    if not path.exists():
        return None
    return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(path.read_text(encoding="ascii")))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


if __name__ == "__main__":  # ensure_certificate_apart's child: HOME HOST
    ensure_certificate(Path(sys.argv[1]), sys.argv[2])
