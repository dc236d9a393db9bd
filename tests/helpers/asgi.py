"""One raw ASGI request: exact header bytes and body chunks, nothing normalised by an HTTP client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


async def call_asgi(
    app: Any,
    method: str,
    raw_path: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (),
    query: bytes = b"",
    client: tuple[str, int] = ("10.0.0.1", 4000),
) -> tuple[int, bytes]:
    """Send one request to ``app`` (its lifespan already entered) and return (status, body)."""
    status, body, _ = await call_asgi_counting(app, method, raw_path, headers, chunks, query, client)
    return status, body


async def call_asgi_counting(
    app: Any,
    method: str,
    raw_path: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (),
    query: bytes = b"",
    client: tuple[str, int] = ("10.0.0.1", 4000),
) -> tuple[int, bytes, int]:
    """:func:`call_asgi`, plus how many body chunks the app asked for."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in headers],
        "client": client,
        "server": ("gateway", 443),
    }
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    messages = messages or [{"type": "http.request", "body": b"", "more_body": False}]
    pulled = 0
    status, body = 0, bytearray()

    async def receive() -> dict:
        nonlocal pulled
        if pulled < len(messages):
            pulled += 1
            return messages[pulled - 1]
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body), pulled
