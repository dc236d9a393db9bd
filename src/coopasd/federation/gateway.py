"""The Fleet gateway: the only door to the SuperLink that the factories' network sees.

flwr 1.42 serves the SuperLink's Control API (run submission, SuperNode registration), its
Runtime API (the ServerApp's) and its Fleet API (the SuperNodes') on one HTTPS port, and the
open-source SuperLink has no Control API authentication. So the SuperLink listens on
127.0.0.1 only (``flower-superlink --host 127.0.0.1``) and this gateway listens on the plant
network: it terminates TLS with the SuperLink's certificate and forwards nothing but
``POST /v1/fleet/<call>`` to the SuperLink (TLS again, checked against the CA). Every other
request gets 404 and never reaches the SuperLink. SuperNode signatures (headers) pass through
untouched, so ``--enable-supernode-auth`` still decides which SuperNodes are admitted.

Before anything is read or forwarded, each client address is held to a request rate (429 beyond
it), and a body over the size cap is refused with 413 as soon as its size is known (from
``Content-Length``, else while it streams in): it never reaches the SuperLink and is never
buffered whole. Each refusal is logged.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coopasd.errors import CoopasdError
from coopasd.federation.limits import GatewayLimits, RateLimiter
from coopasd.http_body import read_capped_body

log = logging.getLogger(__name__)

FLEET_CALL = re.compile(r"/v1/fleet/[a-z][a-z-]*")  # the exact form of flwr 1.42's Fleet routes: no dots, no escapes
# hop-by-hop headers (RFC 9110) and those the gateway's own HTTP layers set
_DROP = {
    "host",
    "date",
    "server",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
}


def _headers(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in items if k.lower() not in _DROP]


def _raw_headers(items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`_headers` on header bytes as they came (a value need not be ASCII; it is passed on untouched)."""
    return [(k, v) for k, v in items if k.decode("latin-1").lower() not in _DROP]


def is_fleet_call(method: str, raw_path: bytes) -> bool:
    """True for a request the gateway forwards: ``POST /v1/fleet/<call>``, path bytes exactly so."""
    return method == "POST" and FLEET_CALL.fullmatch(raw_path.decode("latin-1")) is not None


def create_gateway(
    superlink: str,
    ca_cert: Path | None,
    timeout: float = 300.0,
    transport: httpx.AsyncBaseTransport | None = None,
    limits: GatewayLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """An ASGI app forwarding Fleet calls to ``https://<superlink>`` (``host:port``), verified with ``ca_cert``.

    ``limits`` caps each client address's request rate and body size (default :class:`GatewayLimits`);
    ``transport`` replaces the network and ``clock`` the rate limiter's time (tests).
    """
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else True
    limits = limits or GatewayLimits()
    limiter = RateLimiter(limits.rate, limits.burst, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            base_url=f"https://{superlink}", verify=verify, timeout=timeout, transport=transport
        ) as client:
            app.state.client = client
            yield

    def refuse(request: Request, status: int, why: str, peer: str) -> Response:
        log.warning("refused %s %r from %s: %s", request.method, request.url.path[:200], peer, why)
        return Response(f"{why}\n", status_code=status, media_type="text/plain")

    async def forward(request: Request) -> Response:
        peer = request.client.host if request.client else "?"
        if not limiter.admit(peer):
            refused = limiter.refused[peer]
            if refused == 1 or refused % 1000 == 0:  # a flood is logged, not echoed line by line
                refuse(request, 429, f"over {limits.rate:g} requests/s (burst {limits.burst}; {refused} refused)", peer)
            retry = Response("too many requests\n", status_code=429, media_type="text/plain")
            retry.headers["retry-after"] = str(max(1, math.ceil(1 / limits.rate)))
            return retry
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        if not is_fleet_call(request.method, raw_path) or request.url.query:
            log.warning("refused %s %r from %s: not a Fleet API call", request.method, raw_path[:200], peer)
            return Response("not found\n", status_code=404, media_type="text/plain")
        try:
            body = await read_capped_body(request, limits.max_body_bytes)
        except HTTPException as err:  # 413 (too large) or 400 (malformed Content-Length), before forwarding
            return refuse(request, err.status_code, err.detail, peer)
        client: httpx.AsyncClient = request.app.state.client
        try:
            upstream = await client.post(request.url.path, content=body, headers=_raw_headers(request.headers.raw))
        except httpx.HTTPError as err:
            log.error("the SuperLink at %s did not answer %s: %s", superlink, request.url.path, err)
            return Response("SuperLink unavailable\n", status_code=502, media_type="text/plain")
        headers = dict(_headers(upstream.headers.multi_items()))
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    routes = [Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])]
    return Starlette(routes=routes, lifespan=lifespan)


def serve_gateway(certs: Path, superlink: str, host: str, port: int, limits: GatewayLimits | None = None) -> None:
    """Run the gateway (blocking) with ``certs``' ``server.pem``/``server.key``; ``ca.crt`` checks the SuperLink."""
    import uvicorn

    limits = limits or GatewayLimits()

    certs = Path(certs)
    for name in ("ca.crt", "server.pem", "server.key"):
        if not (certs / name).is_file():
            raise CoopasdError(f"{certs / name}: missing (make it with `coopasd certs --out {certs}`)")
    app = create_gateway(superlink, certs / "ca.crt", limits=limits)
    log.info(
        "Fleet gateway https://%s:%d -> https://%s (Fleet API only; bodies up to %d bytes, %g requests/s per client)",
        *(host, port, superlink, limits.max_body_bytes, limits.rate),
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per forwarded call otherwise
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certs / "server.pem"),
        ssl_keyfile=str(certs / "server.key"),
        log_config=None,
        access_log=False,  # SuperNodes poll every few seconds; refusals are logged above
        ws="none",
        server_header=False,
    )
