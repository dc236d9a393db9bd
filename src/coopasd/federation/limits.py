"""What one client address may send through the Fleet gateway: a body size cap and a request rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from coopasd.errors import ConfigError

MAX_ADDRESSES = 10_000  # buckets kept before those that have refilled are forgotten (a spray of sources)


@dataclass(frozen=True)
class GatewayLimits:
    """Per client address limits of ``coopasd gateway``.

    flwr 1.42 sends a model object by object, arrays cut in 5 MiB chunks (``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``):
    the largest Fleet call measured is 5,242,995 bytes (a BEATs ``base`` update; 590,065 for ``tiny``), and
    one model exchange is 175 (``tiny``) to 222 (``base``) push-object calls each way.
    """

    max_body_mb: float = 8.0  # [MB] per request body (larger: 413 before it is read)
    rate: float = 50.0  # [requests/s] per client address, refilled continuously (beyond: 429)
    burst: int = 1000  # [requests] a client address may send at once

    def __post_init__(self) -> None:
        for name in ("max_body_mb", "rate", "burst"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0) or (name == "max_body_mb" and value * 1e6 < 1):
                raise ConfigError(f"gateway {name.replace('_', '-')} = {value!r}: expected a positive finite number")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1e6)


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self.refused: dict[str, int] = {}  # address -> refusals since its last admitted request

    def admit(self, address: str) -> bool:
        """Take one token of ``address``; False (and the refusal counted) when its bucket is empty."""
        now = self.clock()
        if len(self.buckets) > MAX_ADDRESSES:
            refill = self.burst / self.rate
            self.buckets = {a: (t, w) for a, (t, w) in self.buckets.items() if now - w < refill}
            self.refused = {a: n for a, n in self.refused.items() if a in self.buckets}
        tokens, when = self.buckets.get(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        admitted = tokens >= 1.0
        self.buckets[address] = (tokens - 1.0 if admitted else tokens, now)
        if admitted:
            self.refused.pop(address, None)
        else:
            self.refused[address] = self.refused.get(address, 0) + 1
        return admitted
