"""A request body read with a size cap: refused as soon as it is known to be too large, never buffered whole."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before any byte is read (a malformed one is a 400);
    a body without one (chunked) or one that lies is counted as it streams in and cut at ``limit + 1``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        size = declared.strip()
        if not (size.isascii() and size.isdigit()):  # "²" is a digit to str.isdigit() but not to int()
            raise HTTPException(400, f"invalid Content-Length header {declared!r}")
        if int(size) > limit:
            raise HTTPException(413, f"request body of {int(size)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
