"""Does ``[model] precision`` keep the features? For each precision: the largest feature difference
relative to fp32, the pooled embeddings' lowest cosine to fp32, and embedding clips/s, on CUDA when
present (else CPU, where tf32 is fp32 and bf16 runs under CPU autocast). ``auto`` picks bf16 on CUDA
on the strength of this check: it should stay within 1e-2 relative (pooled cosine > 0.9999).

    .venv/bin/python benchmarks/precision_check.py [--preset base] [--clips 8] [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from coopasd.model.beats import BEATs, pool
from coopasd.model.beats_config import preset
from coopasd.model.embed import autocast, pick_device, precision_scope


def check(preset_name: str, clips: int, seconds: float, repeats: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    encoder = BEATs(preset(preset_name)).eval().to(device)
    waves = (torch.randn(clips, int(seconds * 16_000), generator=torch.Generator().manual_seed(1)) * 0.1).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    rows, reference = [], None
    with torch.inference_mode():
        for precision in ("fp32", "tf32", "bf16", "auto"):
            with precision_scope(precision, device) as mode:  # type: ignore[arg-type]
                with autocast(mode, device):
                    features = encoder.extract_features(waves)[0].float()  # warm-up and the compared output
                sync()
                start = time.perf_counter()
                for _ in range(repeats):
                    with autocast(mode, device):
                        encoder.extract_features(waves)
                sync()
                elapsed = (time.perf_counter() - start) / repeats
            if reference is None:
                reference = features
            pooled = [pool(f, encoder.freq_patches) for f in (features, reference)]
            rows.append(
                {
                    "precision": f"{precision} ({mode})",
                    "max_rel_diff": float((features - reference).abs().max() / reference.abs().max()),
                    "cosine": float(torch.nn.functional.cosine_similarity(*pooled, dim=-1).min()),
                    "clips_per_s": clips / elapsed,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = Table(title=f"BEATs '{args.preset}', {args.clips} x {args.seconds:g} s clips on {name}: precision vs fp32")
    for col in ("precision (resolved)", "max rel. diff", "pooled cosine (min)", "clips/s"):
        table.add_column(col, justify="left" if col.startswith("precision") else "right")
    for r in check(args.preset, args.clips, args.seconds, args.repeats, device):
        table.add_row(r["precision"], f"{r['max_rel_diff']:.1e}", f"{r['cosine']:.6f}", f"{r['clips_per_s']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
