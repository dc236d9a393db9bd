"""The factory-local HTTP scoring service (``coopasd serve``): one saved factory model behind FastAPI.

Routes:

- ``POST /score``: one clip, as the multipart form field ``file`` or as the raw request body
  (``Content-Type: audio/wav``, ``audio/x-wav``, ``audio/flac`` or ``application/octet-stream``);
  optional query parameters ``machine``, ``section`` (else read from a DCASE file name, else the
  model's only section) and ``name`` (the clip's name for a raw body). Answers
  ``{"factory", "clip", "score", "decision", "threshold", "machine_type", "section", "clip_seconds",
  "scored_seconds"}``, the same numbers as ``coopasd score`` on the same file (both go through
  :mod:`coopasd.inference.scoring`): the clip is cut or tiled to the model's clip length ``scored_seconds``.
- ``GET /health``: status, factory name, sections, sample rate, the model's clip length and the
  service's limits.
- ``GET /openapi.json``: the OpenAPI schema. There are no interactive ``/docs`` or ``/redoc`` pages:
  FastAPI's load their JavaScript and CSS from a public CDN, which a plant network may not reach.

Every client mistake gets a 4xx answer ``{"detail": "..."}`` that names the problem: 400 empty or
malformed request, 413 body over the size limit (checked from ``Content-Length`` and while the
body streams in, before it is all read), 415 unsupported content type, 422 audio that cannot be
used (not audio, corrupt, truncated, NaN samples, longer than the duration limit) or a machine
type / section the model does not know. 500 is left for bugs, and logged.

There is no authentication or TLS: bind to 127.0.0.1 (the default) or put it behind the plant's
reverse proxy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from coopasd.data.audio import decode_audio
from coopasd.errors import AudioError, CoopasdError
from coopasd.http_body import read_capped_body
from coopasd.inference.scoring import (
    MIN_CLIP_SHARE,
    FactoryModel,
    fit_to_model,
    resolve_section,
    score_wave,
    sections,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000  # 20 MB: a 10 s 16 kHz clip is 320 kB as 16-bit WAV
DEFAULT_MAX_SECONDS = 60.0  # longer audio is refused before it is decoded
RAW_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/x-flac", "application/octet-stream")
MULTIPART = "multipart/form-data"


class ScoreResponse(BaseModel):
    """One clip's result; ``decision`` is 1 when ``score`` exceeds the section's ``threshold``."""

    factory: str
    clip: str
    score: float
    decision: int
    threshold: float
    machine_type: str
    section: str
    clip_seconds: float  # the upload's own length
    scored_seconds: float  # the model's clip length: longer clips keep their first seconds, shorter ones are tiled


class HealthResponse(BaseModel):
    """What the service holds and accepts."""

    status: str
    factory: str
    sections: list[str]
    sample_rate: int
    seconds: float  # the model's clip length: every clip is cut or tiled to it before scoring
    min_seconds: float  # shorter clips are refused (422)
    features: str
    max_upload_bytes: int
    max_seconds: float


class ErrorResponse(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "empty or malformed request"),
        (413, "request body over the size limit"),
        (415, "unsupported content type"),
        (422, "unusable audio, or a machine type / section the model does not know"),
    )
}

_SCORE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One audio clip (any format libsndfile reads: WAV, FLAC, ...).",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in RAW_TYPES},
        },
    }
}


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` that hands out an already-read body once."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _clip_from_request(request: Request, limit: int, name: str | None) -> tuple[bytes, str]:
    """The clip's bytes and name, from a multipart field ``file`` or a raw audio body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != MULTIPART and content_type not in RAW_TYPES:
        raise HTTPException(
            415,
            f"unsupported content type '{content_type}'; send multipart field 'file' or one of {', '.join(RAW_TYPES)}",
        )
    body = await read_capped_body(request, limit)
    if not body:
        raise HTTPException(400, "empty request body: send the clip as multipart field 'file' or as the raw body")
    if content_type != MULTIPART:
        return body, name or "upload"
    try:
        form = await Request(request.scope, _replay(body)).form(max_files=1, max_fields=16)
    except (MultiPartException, FormParserError) as err:  # what the multipart parser finds wrong in the body
        raise HTTPException(400, f"malformed multipart body: {err}; send the clip in form field 'file'") from err
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            fields = ", ".join(sorted(form.keys())) or "none"
            raise HTTPException(400, f"multipart upload needs a file in form field 'file' (fields sent: {fields})")
        data = await upload.read()
        clip = name or upload.filename or "upload"
    finally:
        await form.close()
    if not data:
        raise HTTPException(400, f"{clip}: empty file (0 bytes)")
    return data, clip


def _score_bytes(
    model: FactoryModel, data: bytes, clip: str, machine: str | None, section: str | None, max_seconds: float
) -> ScoreResponse:
    """Resolve the section, decode and score (blocking; runs in a worker thread)."""
    m, s = resolve_section(model, clip, machine, section)
    rate = model.data_cfg.sample_rate
    wave = decode_audio(data, clip, rate, None, max_seconds=max_seconds)
    result = score_wave(model, fit_to_model(model, wave, clip), m, s, clip)
    if not math.isfinite(result.score):
        raise AudioError(clip, "the model gives this clip a non-finite score (degenerate audio)")
    lengths = {"clip_seconds": round(wave.shape[0] / rate, 4), "scored_seconds": model.clip_seconds}
    return ScoreResponse(factory=model.name, clip=clip, **result.to_dict(), **lengths)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(
    model: FactoryModel,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> FastAPI:
    """The scoring service for one loaded factory model (the app holds no other state).

    ``max_upload_bytes`` caps the request body (413 beyond it); ``max_seconds`` caps the clip's
    duration (422 beyond it), read from the audio header before decoding.
    """
    if max_upload_bytes <= 0 or not max_seconds > 0:
        raise ValueError(f"limits must be positive, got {max_upload_bytes} bytes and {max_seconds} s")
    app = FastAPI(
        title=f"coopasd scoring service: factory '{model.name}'",
        description="Anomaly scores of machine sound clips from this factory's own detector. "
        "The clip stays in the plant; nothing leaves this service.",
        version="1",
        docs_url=None,  # FastAPI's /docs and /redoc pages load their scripts from a CDN: none offline
        redoc_url=None,
    )

    @app.exception_handler(CoopasdError)
    async def _coopasd_error(_: Request, err: CoopasdError) -> JSONResponse:
        """Unusable audio (AudioError), unknown machine type / section (SectionError), ..."""
        return _error(422, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return _error(422, problems or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__}); see the service log")

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness and what the service holds: factory, sections, audio settings, limits."""
        return HealthResponse(
            status="ok",
            factory=model.name,
            sections=sections(model),
            sample_rate=model.data_cfg.sample_rate,
            seconds=model.clip_seconds,
            min_seconds=MIN_CLIP_SHARE * model.clip_seconds,
            features=model.detect_cfg.features,
            max_upload_bytes=max_upload_bytes,
            max_seconds=max_seconds,
        )

    @app.post("/score", response_model=ScoreResponse, responses=_ERRORS, openapi_extra=_SCORE_BODY)
    async def score(
        request: Request,
        machine: Annotated[str | None, Query(description="Machine type of the clip, e.g. fan.")] = None,
        section: Annotated[str | None, Query(description="Section of the clip, e.g. 00.")] = None,
        name: Annotated[str | None, Query(description="The clip's file name (for a raw body).")] = None,
    ) -> ScoreResponse:
        """Anomaly score and decision of one clip (multipart field ``file`` or the raw body)."""
        data, clip = await _clip_from_request(request, max_upload_bytes, name)
        result = await run_in_threadpool(_score_bytes, model, data, clip, machine, section, max_seconds)
        log.debug("%s: %s/%s score %.4f", clip, result.machine_type, result.section, result.score)
        return result

    return app


def run_service(model_path: Path, host: str, port: int, max_upload_mb: float, max_seconds: float) -> None:
    """Load a factory model and serve it with uvicorn until interrupted (``coopasd serve``)."""
    import uvicorn

    from coopasd.inference.scoring import load_model

    if max_upload_mb <= 0 or max_seconds <= 0:
        raise CoopasdError("--max-upload-mb and --max-seconds must be positive")
    factory = load_model(model_path)
    factory.clip_length()  # a model that does not record it cannot score anything: refuse it now
    app = create_app(factory, int(max_upload_mb * 1e6), max_seconds)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the service has no authentication or TLS; keep it inside the plant network", host)
    log.info(
        "factory '%s' (%s) on http://%s:%s: POST /score, GET /health, GET /openapi.json",
        factory.name,
        ", ".join(sections(factory)),
        host,
        port,
    )
    uvicorn.run(app, host=host, port=port, log_config=None, ws="none")
