"""``coopasd certs``: TLS certificates for a test deployment of SuperLink and SuperNodes."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import console
from coopasd.federation.tls import generate_certificates
from coopasd.report import check_out_dir


def certs(
    out: Path = typer.Option(..., "--out", help="Folder for ca.crt, ca.key, server.pem/.key.", callback=check_out_dir),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="SuperLink address(es) (repeat)."),
    days: int = typer.Option(365, help="Validity in days."),
) -> None:
    """Generate a private CA and a SuperLink certificate for the given host names / IPs."""
    paths = generate_certificates(out, host, days)
    for name, path in paths.items():
        console.print(f"{name:>12}: {path}", markup=False)
    console.print("SuperLink: --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key")
    console.print("SuperNodes and flwr: root certificate ca.crt (keep ca.key offline)")
