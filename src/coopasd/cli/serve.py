"""``coopasd serve``: the factory-local HTTP scoring service (see :mod:`coopasd.inference.serve`)."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (no auth, no TLS: keep it local)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, help="Largest request body, in MB (larger: 413)."),
    max_seconds: float = typer.Option(60.0, help="Longest clip accepted, in seconds (longer: 422)."),
) -> None:
    """Serve POST /score and GET /health for one factory model over HTTP."""
    from coopasd.inference.serve import run_service  # FastAPI and uvicorn cost every other command a third of a second

    run_service(model, host, port, max_upload_mb, max_seconds)
