"""Throughput and latency of ``coopasd serve``: clips/s, p50 and p95 per concurrency level.

Starts ``coopasd serve`` as its own process on 127.0.0.1 (a free port) for a factory model
(``--model``, or a small one built here: one synthetic fan factory, the shipped pre-trained
encoder, untrained, ``--features`` detector), sends a bounded number of raw-WAV ``POST /score``
requests per concurrency level (stopping at ``--time-cap`` seconds overall) and prints a table.

    .venv/bin/python benchmarks/serve_load.py [--model RUN_DIR/models/fan.pt] [--clip CLIP.wav]
        [--requests 200] [--concurrency 1,4] [--time-cap 60]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

from coopasd.config.settings import DetectConfig

console = Console()


def build_model(out: Path, features: str, seconds: float) -> Path:
    """A one-factory model (fan) on synthetic clips; no training, so it builds in seconds."""
    from coopasd.config.settings import RunConfig, with_overrides
    from coopasd.data.dataset import load_all
    from coopasd.data.layout import discover_clips
    from coopasd.data.partition import parse_factories
    from coopasd.data.synth import SynthConfig, generate
    from coopasd.learn.participant import TrainedHead, build_factory_model
    from coopasd.model.checkpoint import initial_encoder
    from coopasd.rundir.writer import save_model

    synth = SynthConfig(machines=("fan",), seconds=seconds, train_source=20, train_target=4, test_per_domain=2)
    generate(synth, out / "data")
    cfg = with_overrides(RunConfig(), "detect", features=features)
    cfg = with_overrides(cfg, "data", seconds=seconds)
    data = load_all(discover_clips(out / "data"), parse_factories("", ["fan"]), cfg.data)[0]
    encoder, _ = initial_encoder(cfg.model)
    model = build_factory_model(data, encoder, cfg, TrainedHead(), {"mode": "benchmark"})
    return save_model(out / "models" / "fan.pt", model)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(model: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from coopasd.cli.app import main; main()", "serve", "--model", str(model)]
    with open(log, "wb") as out:
        return subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=os.environ)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode}")
        try:
            return httpx.get(f"{url}/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the service did not answer /health within {timeout:.0f} s")


def noise_clip(seconds: float, rate: int) -> bytes:
    """A white-noise WAV: scoring cost does not depend on what the clip holds."""
    wave = np.random.default_rng(0).normal(0, 0.1, int(seconds * rate)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def run_level(url: str, body: bytes, params: dict, concurrency: int, requests: int, deadline: float) -> dict:
    """``requests`` POSTs from ``concurrency`` threads (one keep-alive client each), stopping at ``deadline``."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in counter:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                response = client.post("/score", params=params, content=body, headers={"content-type": "audio/wav"})
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "done": len(latencies),
        "errors": errors,
        "rate": len(latencies) / wall if wall else 0.0,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
    }


def measure_service(
    model: Path, workdir: Path, concurrency: list[int], requests: int, time_cap: float, clip: Path | None = None
) -> tuple[dict, int, list[dict]]:
    """Start ``coopasd serve`` for ``model``, warm it up, then :func:`run_level` per concurrency level.

    Returns the service's /health answer, the request body's size and one result per level.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(model, port, workdir / "service.log")
    try:
        health = wait_healthy(url, process)
        machine, section = health["sections"][0].split("/")
        body = clip.read_bytes() if clip else noise_clip(health["seconds"], health["sample_rate"])
        params = {"machine": machine, "section": section}
        for _ in range(3):  # warm-up
            httpx.post(f"{url}/score", params=params, content=body, timeout=60).raise_for_status()
        deadline = time.monotonic() + time_cap
        return health, len(body), [run_level(url, body, params, c, requests, deadline) for c in concurrency]
    except Exception:
        console.print((workdir / "service.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="factory model; default: build a small one")
    parser.add_argument("--clip", type=Path, help="clip to send; default: white noise of the model's length")
    parser.add_argument("--features", default=None, help="detector of the built model (default: the default one)")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length of the built model")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated concurrency levels")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds for all levels together")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        features = args.features or DetectConfig().features
        model = args.model or build_model(Path(tmp), features, args.seconds)
        health, size, results = measure_service(model, Path(tmp), levels, args.requests, args.time_cap, args.clip)
    table = Table(
        title=f"coopasd serve: factory '{health['factory']}', {health['features']} detector, "
        f"{health['seconds']:g} s clips ({size / 1000:.0f} kB WAV), {os.cpu_count()} CPUs"
    )
    for column in ("concurrency", "requests", "errors", "clips/s", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right")
    for level, r in zip(levels, results, strict=True):
        figures = (f"{r['rate']:.1f}", f"{r['p50']:.1f}", f"{r['p95']:.1f}")
        table.add_row(str(level), str(r["done"]), str(r["errors"]), *figures)
    console.print(table)


if __name__ == "__main__":
    main()
