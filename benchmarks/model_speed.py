"""Speed and memory of the encoder on this machine: embedding clips/s, training steps/s,
peak memory, and achieved FLOP/s as a share of a dense float32 matmul's FLOP/s (the practical
ceiling), for the ``tiny`` and ``base`` presets; plus kNN search with faiss vs a torch matmul.

Each measurement runs in a fresh process so that peak memory is its own. Compare ratios
within one run: these machines are noisy.

    .venv/bin/python benchmarks/model_speed.py [--seconds 2.0] [--batch 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def _peak_mib(device: str = "cpu") -> float:
    """Peak memory of this process: resident set on CPU, allocated GPU memory on CUDA."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _measure(preset_name: str, task: str, seconds: float, batch: int, device: str, queue) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from coopasd.config.settings import ModelConfig, TrainConfig
    from coopasd.learn.train import TrainingSet, make_head, train_local
    from coopasd.model.beats import BEATs
    from coopasd.model.beats_config import preset
    from coopasd.model.embed import clip_embeddings

    torch.manual_seed(0)
    encoder = BEATs(preset(preset_name))
    waves = torch.randn(batch, int(seconds * 16_000)) * 0.1
    if task == "embed":
        encoder.eval().to(device)
        waves = waves.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else lambda: None
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                clip_embeddings(encoder, waves)
            flops = counter.get_total_flops()
            reps = 3 if preset_name == "tiny" or device == "cuda" else 1
            sync()
            start = time.perf_counter()
            for _ in range(reps):
                clip_embeddings(encoder, waves)
            sync()
            elapsed = (time.perf_counter() - start) / reps
        queue.put({"rate": batch / elapsed, "unit": "clips/s", "flops": flops / elapsed, "peak": _peak_mib(device)})
        return
    cfg = TrainConfig(
        epochs=1, batch_size=batch, crop_seconds=0.0, pseudo_anomalies=False, target_fraction=0.0, device=device
    )
    head = make_head(encoder, 10, cfg, "mean")
    mean = ModelConfig(pooling="mean", layer=-1)
    steps = 3 if preset_name == "tiny" else 1
    data = np.random.default_rng(0).normal(scale=0.1, size=(batch * steps, waves.shape[1])).astype(np.float32)
    labels = np.arange(len(data)) % 10
    with FlopCounterMode(display=False) as counter:
        train_local(encoder, head, TrainingSet(data[:batch], labels[:batch], np.zeros(batch, bool)), mean, cfg)
    flops_per_step = counter.get_total_flops()
    start = time.perf_counter()
    train_local(encoder, head, TrainingSet(data, labels, np.zeros(len(data), bool)), mean, cfg)
    elapsed = (time.perf_counter() - start) / steps
    queue.put({"rate": 1 / elapsed, "unit": "steps/s", "flops": flops_per_step / elapsed, "peak": _peak_mib(device)})


def measure(preset_name: str, task: str, seconds: float, batch: int, device: str = "cpu") -> dict:
    """``task`` (embed | train) of ``preset_name`` in a fresh process, so that its peak memory is its own:
    ``{"rate", "unit", "flops" (achieved FLOP/s), "peak" (MiB)}``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(preset_name, task, seconds, batch, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


FAISS_MISSING = "faiss is not installed (an optional extra): pip install -e '.[bench]' (or faiss-cpu==1.15.1)"


def knn_speed(n_bank: int = 1000, n_query: int = 200, dim: int = 1536) -> dict[str, float]:
    """Queries/s of exact 1-NN (inner product on normalized vectors): torch matmul, and faiss IndexFlatIP
    where the ``bench`` extra is installed (:data:`FAISS_MISSING` says how)."""
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(n_bank, dim)).astype(np.float32)
    query = rng.normal(size=(n_query, dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    tb, tq = torch.from_numpy(bank), torch.from_numpy(query)
    start = time.perf_counter()
    for _ in range(5):
        (tq @ tb.T).max(dim=1)
    rates = {"torch": n_query / ((time.perf_counter() - start) / 5)}
    try:
        import faiss
    except ImportError:
        return rates
    index = faiss.IndexFlatIP(dim)
    index.add(bank)
    start = time.perf_counter()
    for _ in range(5):
        index.search(query, 1)
    return {"faiss": n_query / ((time.perf_counter() - start) / 5)} | rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    args = parser.parse_args()
    ceiling = matmul_flops()
    table = Table(
        title=f"encoder on this machine ({torch.get_num_threads()} threads, {args.seconds:g} s clips, "
        f"batch {args.batch}); dense fp32 matmul: {ceiling / 1e9:.1f} GFLOP/s"
    )
    for col in ("preset", "task", "rate", "GFLOP/s", "share of matmul", "peak MiB"):
        table.add_column(col, justify="left" if col in ("preset", "task") else "right")
    for name in ("tiny", "base"):
        for task in ("embed", "train"):
            r = measure(name, task, args.seconds, args.batch)
            table.add_row(
                name,
                task,
                f"{r['rate']:.2f} {r['unit']}",
                f"{r['flops'] / 1e9:.1f}",
                f"{r['flops'] / ceiling:.0%}",
                f"{r['peak']:.0f}",
            )
    Console().print(table)
    knn = knn_speed()
    knn_table = Table(title="exact 1-NN search, bank 1000 x 1536, 200 queries")
    knn_table.add_column("backend")
    knn_table.add_column("queries/s", justify="right")
    for k, v in knn.items():
        knn_table.add_row(k, f"{v:,.0f}")
    Console().print(knn_table)
    if "faiss" not in knn:
        Console().print(FAISS_MISSING, markup=False)


if __name__ == "__main__":
    main()
