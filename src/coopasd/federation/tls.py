"""TLS material for a Deployment Engine test or pilot: a private CA and a SuperLink certificate.

For production, use certificates from the plant's own PKI; these are for a test deployment.
The certificate always names 127.0.0.1 and localhost too: the SuperLink itself listens on the
loopback address (see :mod:`coopasd.federation.gateway`), and the gateway, ``flwr run`` and
``flwr supernode register`` reach it there.
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
from coopasd.errors import ConfigError, OverwriteError

LOOPBACK = ("127.0.0.1", "localhost")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coopasd"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    """Raise :class:`OverwriteError` for the first of ``paths`` that exists, unless ``force``."""
    for path in paths:
        if path.exists() and not force:
            raise OverwriteError(path)


def generate_certificates(
    out: Path, hosts: Sequence[str] = LOOPBACK, days: int = 365, force: bool = False
) -> dict[str, Path]:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into ``out``.

    ``hosts`` (plus 127.0.0.1 and localhost) become the server certificate's subject alternative
    names (IPs or DNS names): list every address the SuperNodes use to reach the SuperLink's gateway.
    Existing files are kept (:class:`OverwriteError`) unless ``force``.
    """
    if days < 1:
        raise ConfigError(f"--days {days}: a certificate must be valid for at least 1 day")
    if not hosts:
        raise ConfigError("--host: at least one host name or IP address is needed for the SuperLink certificate")
    out = Path(out)
    files = {"ca_cert": "ca.crt", "ca_key": "ca.key", "server_cert": "server.pem", "server_key": "server.key"}
    refuse_overwrite([out / name for name in files.values()], force)
    hosts = list(dict.fromkeys([*hosts, *LOOPBACK]))
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
    return {
        "ca_cert": write_atomic(out / files["ca_cert"], ca_cert.public_bytes(serialization.Encoding.PEM)),
        "ca_key": write_atomic(out / files["ca_key"], _pem_key(ca_key), mode=0o600),
        "server_cert": write_atomic(out / files["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM)),
        "server_key": write_atomic(out / files["server_key"], _pem_key(server_key), mode=0o600),
    }
