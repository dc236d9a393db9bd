"""coopasd's speed on this machine in ONE table: embedding clips/s and training steps/s (tiny, base;
CPU, and GPU where a CUDA device exists), seconds per federated round with Flower's share and bytes
per round (full encoder vs LoRA), scaling with the number of factories, serving clips/s and p95
latency, and the demo's wall time. The header says when, on which CPU and with which versions.

Each part can be run alone (the whole table takes minutes; the demo and 16 factories much longer):

    .venv/bin/python benchmarks/run.py [--parts embed,train,federation,serve,demo] [--quick]
        [--demo-log FILE | --with-demo] [--seconds 2] [--batch 8]

``--quick``: 2 and 4 factories (else 2, 4, 8, 16). ``--demo-log FILE``: the demo's wall time from a
file holding the output of ``/usr/bin/time -p coopasd demo`` (its ``real`` line), of GNU ``time -v``,
or just a number of seconds. ``--with-demo``: run ``coopasd demo`` here and time it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from coopasd.config.settings import DetectConfig
from coopasd.rundir.environment import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

import federation_speed  # noqa: E402
import model_speed  # noqa: E402
import serve_load  # noqa: E402

PARTS = ("embed", "train", "federation", "serve", "demo")
NO_GPU = "not measured (no GPU lent)"
Row = tuple[str, str, str, str, str]  # part, what, result, peak memory, notes


def header() -> str:
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "flwr"))
    return (
        f"coopasd speed, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, {versions}"
    )


def model_rows(task: str, seconds: float, batch: int) -> list[Row]:
    """Embedding clips/s or training steps/s of both presets, CPU and (if present) CUDA."""
    rows: list[Row] = []
    what = f"{'embedding' if task == 'embed' else 'training'} (all layers, {seconds:g} s clips, batch {batch})"
    for device in ("cpu", "cuda"):
        for name in ("tiny", "base"):
            label = f"{what}, {name}, {device.upper() if device == 'cuda' else 'CPU'}"
            if device == "cuda" and not torch.cuda.is_available():
                rows.append((task, label, NO_GPU, "-", ""))
                continue
            r = model_speed.measure(name, task, seconds, batch, device)
            note = "[model] precision auto: bf16 autocast" if device == "cuda" else "fp32, fast path"
            memory = f"{r['peak']:.0f} MiB" + (" GPU" if device == "cuda" else " RSS")
            rows.append((task, label, f"{r['rate']:.2f} {r['unit']}", memory, note))
    return rows


def federation_rows(quick: bool) -> list[Row]:
    """Seconds per round, Flower's share, bytes per round (full vs LoRA), for 2..16 factories."""
    cfg = federation_speed.round_config(rounds=2)
    sizes = federation_speed.transfer_sizes(cfg)
    full, lora = sizes["full_encoder"], next(v for k, v in sizes.items() if k.startswith("lora"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (2, 4) if quick else (2, 4, 8, 16):
            r = federation_speed.measure_rounds(cfg, n, Path(tmp))
            rows.append(
                (
                    "federation",
                    f"round, {n} factories (tiny, 20 x 1 s clips each)",
                    f"{r['s_per_round']:.1f} s/round",
                    "-",
                    f"Flower, I/O and the rest {1 - min(1.0, r['training_share']):.0%} "
                    f"({r['other_s']:.1f} s); bytes/round full {2 * n * full / 1e6:.1f} MB, "
                    f"LoRA {2 * n * lora / 1e6:.2f} MB",
                )
            )
    return rows


def serve_rows() -> list[Row]:
    """``coopasd serve`` throughput and p95 latency, 1 and 4 concurrent clients."""
    levels = [1, 4]
    with tempfile.TemporaryDirectory() as tmp:
        model = serve_load.build_model(Path(tmp), DetectConfig().features, 2.0)  # the default detector
        health, _, results = serve_load.measure_service(model, Path(tmp), levels, requests=100, time_cap=40.0)
    return [
        (
            "serve",
            f"POST /score, {level} concurrent client(s), {health['seconds']:g} s clips",
            f"{r['rate']:.1f} clips/s",
            "-",
            f"p95 {r['p95']:.0f} ms, p50 {r['p50']:.0f} ms, {r['done']} requests, {r['errors']} errors",
        )
        for level, r in zip(levels, results, strict=True)
    ]


def demo_seconds(log: Path) -> float:
    """Wall seconds from ``time -p`` ('real 123.4'), GNU ``time -v`` ('Elapsed ...: 2:03.45') or a bare number."""
    text = log.read_text()
    if match := re.search(r"^real\s+([\d.]+)", text, re.M):
        return float(match.group(1))
    if match := re.search(r"Elapsed \(wall clock\) time.*?:\s*(?:(\d+):)?(\d+):([\d.]+)\s*$", text, re.M):
        hours, minutes, secs = match.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    if match := re.fullmatch(r"\s*([\d.]+)\s*s?\s*", text):
        return float(match.group(1))
    raise ValueError(f"{log}: no wall time found (expected `time -p` or `time -v` output, or a number)")


def demo_rows(log: Path | None, run: bool) -> list[Row]:
    if log is not None:
        return [("demo", "coopasd demo, wall time", f"{demo_seconds(log):.0f} s", "-", f"from {log}")]
    if not run:
        return [("demo", "coopasd demo, wall time", "not measured", "-", "give --demo-log FILE or --with-demo")]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        command = [sys.executable, "-c", "from coopasd.cli.app import main; main()", "demo", "--out", tmp]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return [("demo", "coopasd demo, wall time", f"{time.perf_counter() - start:.0f} s", "-", "measured here")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="federation scaling with 2 and 4 factories only")
    parser.add_argument("--demo-log", type=Path, help="file with the demo's wall time (see above)")
    parser.add_argument("--with-demo", action="store_true", help="run and time coopasd demo here")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length for embedding and training")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch for embedding and training")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    measure: dict[str, Callable[[], list[Row]]] = {
        "embed": lambda: model_rows("embed", args.seconds, args.batch),
        "train": lambda: model_rows("train", args.seconds, args.batch),
        "federation": lambda: federation_rows(args.quick),
        "serve": serve_rows,
        "demo": lambda: demo_rows(args.demo_log, args.with_demo),
    }
    console = Console(width=max(Console().width, 160))
    rows: list[Row] = []
    for part in parts:
        start = time.perf_counter()
        try:
            rows += measure[part]()
        except Exception as err:  # one broken part must not hide the others' figures
            rows.append((part, "(failed)", "-", "-", f"{type(err).__name__}: {err}"[:200]))
        console.print(f"{part}: {time.perf_counter() - start:.0f} s", style="dim")
    table = Table(title=header())
    for col in ("part", "what", "result", "peak memory", "notes"):
        table.add_column(col, justify="right" if col in ("result", "peak memory") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
