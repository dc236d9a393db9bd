"""TLS material for a Deployment Engine test or pilot: a private CA and a SuperLink certificate.

For production, use certificates from the plant's own PKI; these are for a test deployment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coopasd.atomic import write_atomic
from coopasd.errors import ConfigError


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coopasd"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_certificates(
    out: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 365
) -> dict[str, Path]:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into ``out``.

    ``hosts`` become the server certificate's subject alternative names (IPs or DNS names):
    list every address the SuperNodes and ``flwr`` use to reach the SuperLink.
    """
    if days < 1:
        raise ConfigError(f"--days {days}: a certificate must be valid for at least 1 day")
    if not hosts:
        raise ConfigError("--host: at least one host name or IP address is needed for the SuperLink certificate")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("coopasd test CA"))
        .issuer_name(_name("coopasd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = Path(out)
    paths = {
        "ca_cert": write_atomic(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        "ca_key": write_atomic(out / "ca.key", _pem_key(ca_key)),
        "server_cert": write_atomic(out / "server.pem", server_cert.public_bytes(serialization.Encoding.PEM)),
        "server_key": write_atomic(out / "server.key", _pem_key(server_key)),
    }
    for key in ("ca_key", "server_key"):
        paths[key].chmod(0o600)
    return paths
