"""``coopasd certs``: TLS certificates for a test deployment of SuperLink and SuperNodes."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import console


def certs(
    out: Path = typer.Option(..., "--out", help="Folder for ca.crt, ca.key, server.pem, server.key."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="SuperLink address(es) (repeat)."),
    days: int = typer.Option(365, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing CA and keys in --out."),
) -> None:
    """Generate a private CA and a SuperLink certificate for the given host names / IPs."""
    from coopasd.federation.tls import generate_certificates

    existing = [n for n in ("ca.crt", "ca.key", "server.pem", "server.key") if (out / n).exists()]
    if existing and not force:
        raise typer.BadParameter(
            f"{out}: {', '.join(existing)} exist already; --force replaces the CA and keys", param_hint="--out"
        )
    paths = generate_certificates(out, host, days)
    for name, path in paths.items():
        console.print(f"{name:>12}: {path}", markup=False)
    console.print("SuperLink: --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key")
    console.print("SuperNodes and flwr: root certificate ca.crt (keep ca.key offline)")
