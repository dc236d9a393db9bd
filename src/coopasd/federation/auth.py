"""SuperNode identities for an authenticated Deployment Engine: one EC key pair per factory.

With flwr 1.42 the SuperLink runs with ``--enable-supernode-auth`` and admits only SuperNodes
whose public key the operator registered (``flwr supernode register KEY.pub``, a Control API
call); a SuperNode signs every Fleet request with its private key
(``flower-supernode --auth-supernode-private-key KEY``). The keys are NIST P-384 ECDSA in
OpenSSH format, what ``ssh-keygen -t ecdsa -b 384 -N ""`` writes and what flwr 1.42 loads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coopasd.atomic import write_atomic
from coopasd.errors import CoopasdError
from coopasd.federation.tls import refuse_overwrite

REGISTER_FILE = "register.sh"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _key_pair(name: str) -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line with ``name`` as comment) of a fresh P-384 key."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + f" coopasd-{name}\n".encode()


def registration_script(out: Path) -> str:
    """The operator's registration file: one ``flwr supernode register`` per ``*.pub`` in ``out``."""
    lines = [
        "#!/bin/sh",
        "# Registers these factories' SuperNode public keys with a SuperLink started with",
        "# --enable-supernode-auth (flwr 1.42). Run it where the Control API is reachable (the",
        "# SuperLink host: it listens on 127.0.0.1): sh register.sh [SUPERLINK-CONNECTION]",
        "# A key registered before is reported (and the script exits 1); the others are still registered.",
        'cd "$(dirname "$0")" || exit 1',
        "status=0",
    ]
    for pub in sorted(Path(out).glob("*.pub")):
        lines.append(f'flwr supernode register {pub.name} ${{1:+"$1"}} --name {pub.stem} || status=1')
    return "\n".join([*lines, "exit $status"]) + "\n"


def generate_supernode_keys(out: Path, factories: Sequence[str], force: bool = False) -> dict[str, Path]:
    """Write ``<factory>.key`` (private, 0600: copy it to that factory only) and ``<factory>.pub``
    for each factory into ``out``, and rewrite ``register.sh`` for every ``*.pub`` there.

    Returns {factory: private key path}. Existing keys are kept (:class:`OverwriteError`) unless ``force``.
    """
    out = Path(out)
    for name in factories:
        if not _NAME.fullmatch(name):
            raise CoopasdError(f"factory name {name!r}: use letters, digits, '_', '-' or '.' (it names the key files)")
    if len(set(factories)) != len(factories):
        raise CoopasdError(f"factory names repeat: {', '.join(factories)}")
    refuse_overwrite([out / f"{n}{suffix}" for n in factories for suffix in (".key", ".pub")], force)
    keys = {}
    for name in factories:
        private, public = _key_pair(name)
        keys[name] = write_atomic(out / f"{name}.key", private, mode=0o600)
        write_atomic(out / f"{name}.pub", public)
    write_atomic(out / REGISTER_FILE, registration_script(out))
    return keys
