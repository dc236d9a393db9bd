"""``coopasd gateway``: expose only the SuperLink's Fleet API to the factories (:mod:`coopasd.federation.gateway`)."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.federation.limits import GatewayLimits as Limits


def gateway(
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.crt, server.pem, server.key (coopasd certs)."),
    superlink: str = typer.Option("127.0.0.1:9093", help="The SuperLink (flower-superlink --host 127.0.0.1)."),
    host: str = typer.Option("0.0.0.0", help="Address the factories reach."),
    port: int = typer.Option(9092, help="TCP port."),
    max_body_mb: float = typer.Option(Limits.max_body_mb, help="Largest request body, MB (413; Flower sends 5 MiB)."),
    rate: float = typer.Option(Limits.rate, help="Requests per second per client address (429 beyond)."),
    burst: int = typer.Option(Limits.burst, help="Requests a client address may send at once."),
) -> None:
    """Forward SuperNodes' Fleet API calls, over TLS, to a SuperLink bound to 127.0.0.1; refuse all else."""
    from coopasd.federation.gateway import serve_gateway  # uvicorn and httpx cost every other command time

    serve_gateway(certs, superlink, host, port, Limits(max_body_mb, rate, burst))
