"""``coopasd serve``: the factory-local HTTP scoring service (see :mod:`coopasd.serve`)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from coopasd.cli.console import console

log = logging.getLogger(__name__)


def serve(
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (no auth, no TLS: keep it local)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, help="Largest request body, in MB (larger: 413)."),
    max_seconds: float = typer.Option(60.0, help="Longest clip accepted, in seconds (longer: 422)."),
) -> None:
    """Serve POST /score and GET /health for one factory model over HTTP."""
    import uvicorn  # imported here: FastAPI and uvicorn cost every other command a third of a second

    from coopasd.scoring import load_model, sections
    from coopasd.serve import create_app

    if max_upload_mb <= 0 or max_seconds <= 0:
        raise typer.BadParameter("--max-upload-mb and --max-seconds must be positive")
    factory = load_model(model)
    app = create_app(factory, int(max_upload_mb * 1e6), max_seconds)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the service has no authentication or TLS; keep it inside the plant network", host)
    console.print(
        f"factory '{factory.name}' ({', '.join(sections(factory))}) on http://{host}:{port}: "
        "POST /score, GET /health, GET /openapi.json"
    )
    uvicorn.run(app, host=host, port=port, log_config=None, ws="none")
