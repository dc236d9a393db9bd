"""``coopasd gateway``: expose only the SuperLink's Fleet API to the factories (:mod:`coopasd.federation.gateway`)."""

from __future__ import annotations

from pathlib import Path

import typer


def gateway(
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.crt, server.pem, server.key (coopasd certs)."),
    superlink: str = typer.Option("127.0.0.1:9093", help="The SuperLink (flower-superlink --host 127.0.0.1)."),
    host: str = typer.Option("0.0.0.0", help="Address the factories reach."),
    port: int = typer.Option(9092, help="TCP port."),
) -> None:
    """Forward SuperNodes' Fleet API calls, over TLS, to a SuperLink bound to 127.0.0.1; refuse all else."""
    from coopasd.federation.gateway import serve_gateway  # uvicorn and httpx cost every other command time

    serve_gateway(certs, superlink, host, port)
