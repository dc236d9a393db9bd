"""Our BEATs encoder against the reference code (SpeechBrain's port of the official BEATs, fetched
from PyPI by the test oracle) on the same input, weights and threads: seconds per forward of each,
alternating in one process, and the median ratio over the repeats; plus the largest feature
difference. Ours runs each compute path: ``fast`` (the default; in CPU inference: oneDNN's fused
linear+GELU kernels, q/k/v in one matmul, attention clip by clip in a reused buffer, the positional
convolution through the FFT with the weight's spectrum kept, the patch embedding as one matmul),
``sdpa`` (scaled_dot_product_attention only) and ``plain`` (the hand-written softmax the reference
also uses).

    .venv/bin/python benchmarks/reference_speed.py [--preset base] [--clips 2] [--seconds 10]
        [--threads 2] [--repeats 5] [--mask]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
OURS = ("plain", "sdpa", "fast")  # our encoder's compute paths (BEATs.set_path)


def reference_model(path: Path):
    """The reference BEATs (tests/helpers/oracles.py fetches it from PyPI) loading ``path`` strictly."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.helpers.oracles import reference_beats

    return reference_beats().BEATs(str(path), freeze=True).eval()


def timed(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(
    preset_name: str, clips: int, seconds: float, threads: int, repeats: int, mask: bool = False, seed: int = 0
) -> dict:
    """Median seconds per forward of each implementation, median ratios to the reference (wall and
    CPU time) and the largest feature difference. ``mask``: give ours the reference's all-False
    padding mask too (the reference always builds one)."""
    from coopasd.model.beats import BEATs
    from coopasd.model.beats_config import preset

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ours = BEATs(preset(preset_name)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BEATs_random.pt"
        torch.save({"cfg": ours.cfg.to_dict(), "model": ours.state_dict()}, path)  # the official layout
        ref = reference_model(path)
    waves = torch.randn(clips, int(seconds * 16_000), generator=torch.Generator().manual_seed(seed)) * 0.1
    lengths = torch.ones(clips)  # relative lengths: nothing is padding
    padding = torch.zeros_like(waves, dtype=torch.bool) if mask else None

    def ours_on(path_name: str):
        def run() -> torch.Tensor:
            ours.set_path(path_name)
            return ours.extract_features(waves, padding)[0]

        return run

    runs = {name: ours_on(name) for name in OURS} | {"reference": lambda: ref(waves, lengths)[0]}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the features compared
        for _ in range(repeats):
            for name, fn in runs.items():
                w, c = timed(fn)
                wall[name].append(w)
                cpu[name].append(c)

    def ratios(times: dict[str, list[float]]) -> dict[str, float]:
        ref_times = times["reference"]
        return {n: statistics.median(r / o for r, o in zip(ref_times, times[n], strict=True)) for n in OURS}

    ref_out = outputs["reference"]
    scale = ref_out.abs().max()
    return {
        "seconds": {name: statistics.median(t) for name, t in wall.items()},
        "ratio": ratios(wall),
        "cpu_ratio": ratios(cpu),
        "max_rel_diff": {name: float((outputs[name] - ref_out).abs().max() / scale) for name in OURS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mask", action="store_true", help="give ours the reference's all-False padding mask too")
    args = parser.parse_args()
    r = compare(args.preset, args.clips, args.seconds, args.threads, args.repeats, args.mask)
    table = Table(
        title=f"BEATs '{args.preset}' forward, {args.clips} x {args.seconds:g} s clips, {args.threads} threads, "
        f"median of {args.repeats} alternating repeats (torch {torch.__version__}; "
        f"ours {'with' if args.mask else 'without'} a padding mask)"
    )
    columns = ("implementation", "s / forward", "speed-up (wall)", "speed-up (CPU time)", "max rel. diff")
    for col in columns:
        table.add_column(col, justify="left" if col == "implementation" else "right")
    table.add_row("reference (SpeechBrain port)", f"{r['seconds']['reference']:.3f}", "1.00", "1.00", "-")
    for name in OURS:
        table.add_row(
            f"coopasd ({name} path)",
            f"{r['seconds'][name]:.3f}",
            f"{r['ratio'][name]:.2f}",
            f"{r['cpu_ratio'][name]:.2f}",
            f"{r['max_rel_diff'][name]:.1e}",
        )
    Console(width=max(Console().width, 120)).print(table)


if __name__ == "__main__":
    main()
