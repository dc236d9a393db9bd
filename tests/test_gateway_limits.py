"""Issue 16 item 5: the Fleet gateway caps each request body and each client's request rate
before anything is read whole or forwarded; legitimate Flower traffic still passes."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest

from coopasd.errors import ConfigError
from coopasd.federation.gateway import create_gateway
from coopasd.federation.limits import GatewayLimits
from tests.helpers.asgi import call_asgi

PUSH = "/v1/fleet/push-object"
LARGEST_FLEET_CALL = 5_242_995  # bytes: one 5 MiB array chunk of a BEATs base update, as flwr 1.42 frames it
MiB = 1 << 20


class Clock:
    """A hand-driven clock for the rate limiter."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SuperLink:
    """Records what reaches it; answers 200 with the body's length."""

    def __init__(self) -> None:
        self.bodies: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(len(request.content))
        return httpx.Response(200, content=str(len(request.content)).encode())


async def _send(app, requests, client=("10.0.0.1", 4000)) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="https://factory-net") as http:
            return [await http.post(path, **kwargs) for path, kwargs in requests]


def _gateway(superlink: SuperLink, clock: Clock | None = None, **limits) -> object:
    return create_gateway(
        "127.0.0.1:9093",
        None,
        transport=httpx.MockTransport(superlink),
        limits=GatewayLimits(**limits),
        clock=clock or Clock(),
    )


class Stream:
    """A request body of ``total`` bytes produced 1 MiB at a time (the same buffer each time); counts reads."""

    def __init__(self, total: int) -> None:
        self.total, self.pulled = total, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"\0" * MiB
        for _ in range(self.total // MiB):
            self.pulled += 1
            yield chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_200_mb_body_is_refused_without_being_buffered_or_forwarded(declared, caplog):
    superlink, body = SuperLink(), Stream(200 * MiB)
    headers = {"content-length": str(body.total)} if declared else {}
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="coopasd.federation.gateway"):
            (reply,) = asyncio.run(_send(_gateway(superlink), [(PUSH, {"content": body, "headers": headers})]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.status_code == 413 and "exceeds the limit of 8000000 bytes" in reply.text
    assert superlink.bodies == []  # nothing reached the SuperLink
    assert body.pulled <= 8 + 1  # read no further than the cap (a declared size: not at all)
    assert peak < 32 * MiB, f"peak {peak / MiB:.0f} MiB of Python memory for a refused 200 MB body"
    assert any("refused POST '/v1/fleet/push-object' from 10.0.0.1" in r.getMessage() for r in caplog.records)


def test_legitimate_traffic_passes_a_model_exchange_and_the_largest_flower_call():
    superlink = SuperLink()
    exchange = [(PUSH, {"content": b"\x0a" * 2000}) for _ in range(222)]  # one BEATs base update's objects
    replies = asyncio.run(_send(_gateway(superlink), [*exchange, (PUSH, {"content": b"\1" * LARGEST_FLEET_CALL})]))
    assert [r.status_code for r in replies] == [200] * 223
    assert superlink.bodies == [2000] * 222 + [LARGEST_FLEET_CALL]  # forwarded whole


def test_a_client_over_the_rate_is_refused_others_are_not_and_it_recovers(caplog):
    superlink, clock = SuperLink(), Clock()
    app = _gateway(superlink, clock, rate=2.0, burst=3)
    calls = [(PUSH, {"content": b"x"})] * 5
    with caplog.at_level(logging.WARNING, logger="coopasd.federation.gateway"):
        flood = asyncio.run(_send(app, calls))
        other = asyncio.run(_send(app, calls[:1], client=("10.0.0.2", 4000)))
        clock.now += 1.0  # two tokens come back
        later = asyncio.run(_send(app, calls[:3]))
    assert [r.status_code for r in flood] == [200, 200, 200, 429, 429]
    assert flood[3].headers["retry-after"] == "1"
    assert [r.status_code for r in other] == [200]
    assert [r.status_code for r in later] == [200, 200, 429]
    assert len(superlink.bodies) == 3 + 1 + 2  # refused calls never reached the SuperLink
    lines = [r.getMessage() for r in caplog.records if "requests/s" in r.getMessage()]
    assert lines and "from 10.0.0.1: over 2 requests/s (burst 3; 1 refused)" in lines[0]


@pytest.mark.parametrize(
    "flags", [{"max_body_mb": 0}, {"rate": float("nan")}, {"rate": -1.0}, {"burst": 0}, {"max_body_mb": float("inf")}]
)
def test_nonsense_limits_are_a_config_error(flags):
    with pytest.raises(ConfigError, match="expected a positive finite number"):
        GatewayLimits(**flags)


@pytest.mark.parametrize("declared", [b"\xb2", b"1\xb3", b"-1", b"abc", b"", b"1e3", b"0x10"])
def test_a_malformed_content_length_is_a_400_never_a_500(declared):
    superlink = SuperLink()
    app = _gateway(superlink)

    async def one() -> tuple[int, bytes]:
        async with app.router.lifespan_context(app):
            return await call_asgi(app, "POST", PUSH.encode(), [(b"content-length", declared)], [b"x"])

    status, body = asyncio.run(one())
    assert status == 400 and b"invalid Content-Length" in body and superlink.bodies == []


def test_a_header_value_that_is_not_ascii_is_passed_on_untouched_not_a_500():
    seen: list[httpx.Request] = []

    def superlink(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    app = create_gateway("127.0.0.1:9093", None, transport=httpx.MockTransport(superlink))

    async def one() -> tuple[int, bytes]:
        async with app.router.lifespan_context(app):
            return await call_asgi(app, "POST", PUSH.encode(), [(b"flwr-signature", b"\x80\xffsig")], [b"x"])

    status, _ = asyncio.run(one())
    assert status == 200 and (b"flwr-signature", b"\x80\xffsig") in seen[0].headers.raw
