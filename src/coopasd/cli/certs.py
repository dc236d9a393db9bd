"""``coopasd certs``: TLS certificates, or SuperNode keys, for a deployment of SuperLink and SuperNodes."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.report.console import console


def certs(
    out: Path = typer.Option(..., "--out", help="Folder for ca.crt, ca.key, server.pem, server.key (or the keys)."),
    host: list[str] = typer.Option(["127.0.0.1"], "--host", help="Address(es) SuperNodes dial (repeat)."),
    factory: list[str] = typer.Option([], "--factory", help="Make this factory's SuperNode key pair instead (repeat)."),
    days: int = typer.Option(365, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing CA / keys."),
) -> None:
    """Generate a private CA and a SuperLink certificate, or (--factory) SuperNode key pairs."""
    from coopasd.federation.auth import REGISTER_FILE, generate_supernode_keys
    from coopasd.federation.tls import generate_certificates

    if factory:
        for name, key in generate_supernode_keys(out, factory, force).items():
            console.print(f"{name:>12}: {key} (to that factory only: --auth-supernode-private-key) + .pub")
        console.print(f"operator, on the SuperLink host: sh {out / REGISTER_FILE} [SUPERLINK-CONNECTION]")
        return
    for name, path in generate_certificates(out, host, days, force).items():
        console.print(f"{name:>12}: {path}", markup=False)
    console.print("SuperLink, gateway: server.pem, server.key, ca.crt; SuperNodes, flwr: ca.crt (keep ca.key offline)")
