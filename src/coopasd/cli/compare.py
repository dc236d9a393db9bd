"""``coopasd compare``: federated, centralized and local-only on the same data and seeds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from coopasd.cli.console import console
from coopasd.cli.federate import run_federated
from coopasd.cli.train import load_config, run_learned_mode
from coopasd.config import RunConfig, with_overrides
from coopasd.errors import CoopasdError
from coopasd.experiment import initial_encoder
from coopasd.federation.records import transfer_bytes
from coopasd.report import comparison_table, plot_rounds, write_comparison_html, write_json


def exchange_bytes(cfg: RunConfig) -> dict[str, int]:
    """Bytes of one model transfer (one way, one factory) when sharing the full encoder vs LoRA adapters."""
    encoder, _ = initial_encoder(dataclasses.replace(cfg.model, lora_rank=0), cfg.train.seed)
    return transfer_bytes(encoder, cfg.model.lora_rank or 8)


def run_comparison(data: Path, out: Path, cfg: RunConfig) -> dict:
    """All three modes into ``out/<mode>/``, then ``comparison.json`` and the combined report."""
    modes: dict[str, dict] = {}
    console.rule("federated")
    modes["federated"] = run_federated(data, out / "federated", cfg)
    for mode in ("centralized", "local"):
        console.rule(mode)
        summary = run_learned_mode(mode, data, out / mode, cfg)  # type: ignore[arg-type]
        if summary is None:
            raise CoopasdError(f"{data}: test labels are hidden; a comparison needs labels or ground truth")
        modes[mode] = summary
    fed, cen, loc = (modes[m]["official_score"] for m in ("federated", "centralized", "local"))
    comparison = {
        "modes": {m: {"official_score": s["official_score"], "machines": s["machines"]} for m, s in modes.items()},
        "federated_vs_centralized_percent": 100 * (fed - cen) / cen,
        "federated_vs_local_points": 100 * (fed - loc),
        "rounds": modes["federated"]["rounds"],
        "bytes_per_transfer": exchange_bytes(cfg),
    }
    write_json(out / "comparison.json", comparison)
    plot_rounds(out, modes["federated"]["rounds"], {"centralized": cen, "local-only": loc})
    notes = [
        f"data: {data}",
        f"encoder start: {modes['federated']['encoder_start']}",
        f"federated: {cfg.federation.strategy}, {cfg.federation.rounds} rounds x {cfg.federation.local_epochs} "
        f"local epochs, shared: {cfg.federation.share}; centralized and local-only: {cfg.train.epochs} epochs",
        f"federated vs centralized: {comparison['federated_vs_centralized_percent']:+.2f}% ; "
        f"federated vs local-only: {comparison['federated_vs_local_points']:+.2f} points",
        "bytes per model transfer: "
        + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in comparison["bytes_per_transfer"].items()),
    ]
    write_comparison_html(out, modes, notes, ["rounds.png"])
    return comparison | {"summaries": modes}


def compare(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory (one sub-directory per mode)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    rounds: int | None = typer.Option(None, help="Federated rounds."),
    checkpoint: str | None = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path."),
    factories: str | None = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine."),
) -> None:
    """Run federated, centralized and local-only, and print the comparison table."""
    cfg = load_config(config, None, checkpoint, None, factories)
    cfg = with_overrides(cfg, "federation", rounds=rounds)
    result = run_comparison(data, out, cfg)
    console.print(comparison_table(result["summaries"]))
    console.print(f"wrote {out / 'comparison.json'} and {out / 'report.html'}")
