"""``coopasd federate``: factories train together with Flower (Simulation Engine)."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from coopasd.atomic import write_atomic
from coopasd.cli.console import console, progress_bar
from coopasd.cli.train import load_config
from coopasd.config import RunConfig, to_toml, with_overrides
from coopasd.data.layout import discover_clips
from coopasd.evaluation import read_submission
from coopasd.report import metrics_table, plot_rounds, write_html, write_metrics, write_report


def collect_federated_run(run_dir: Path, data: Path, result: dict, cfg: RunConfig) -> dict:
    """Gather what the simulated factories wrote on their own disks into the run-directory contract."""
    for name in result["factory_names"]:
        own = run_dir / "factories" / name
        for csv_file in sorted((own / "submission").glob("*.csv")):
            (run_dir / "submission").mkdir(parents=True, exist_ok=True)
            shutil.copy2(csv_file, run_dir / "submission" / csv_file.name)
        if (own / "model.pt").exists():
            (run_dir / "models").mkdir(parents=True, exist_ok=True)
            shutil.copy2(own / "model.pt", run_dir / "models" / f"{name}.pt")
    write_atomic(run_dir / "config.toml", to_toml(cfg))
    summary = {k: v for k, v in result.items() if k != "factory_names"}
    write_metrics(run_dir, summary)
    plot_rounds(run_dir, summary["rounds"])
    notes = [
        "mode: federated (Flower Simulation Engine)",
        f"data: {data}",
        f"encoder start: {summary['encoder_start']}",
        f"strategy: {cfg.federation.strategy}, shared: {cfg.federation.share}, rounds: {cfg.federation.rounds}, "
        f"local epochs: {cfg.federation.local_epochs}",
        "the server received parameters and metric values only",
    ]
    clips = discover_clips(data, splits=("test",))
    run = read_submission(run_dir / "submission", clips)
    if all(s.evaluable for s in run.sections):
        write_report(run_dir, run, summary, "coopasd federated", notes, ["rounds.png"])
    else:
        write_html(run_dir, summary, "coopasd federated", notes, ["rounds.png"])
    return summary


def run_federated(data: Path, out: Path, cfg: RunConfig, resume: bool = False) -> dict:
    from coopasd.federation.simulation import run_simulated

    with progress_bar("federated rounds", cfg.federation.rounds) as advance:

        def on_round(entry: dict) -> None:
            score = entry.get("official_score")
            console.print(
                f"round {entry['round']}: {entry['answered']}/{entry['asked']} factories, "
                f"{entry['seconds']:.0f} s" + (f", official score {100 * score:.2f}" if score else "")
            )
            advance(1)

        if resume:
            from coopasd.federation.checkpoint import GlobalCheckpoint

            latest = out / "checkpoints" / "latest.pt"
            if latest.exists():
                advance(GlobalCheckpoint.load(latest).round)
        result = run_simulated(cfg, data, out, resume, on_round)
    return collect_federated_run(out, data, result, cfg)


def federate(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree (one folder per machine type)."),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    rounds: int | None = typer.Option(None, help="Aggregation rounds."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    strategy: str | None = typer.Option(None, help="fedavg, fedprox, fedavgm or fedadam."),
    share: str | None = typer.Option(None, help="encoder, no_norm or lora."),
    checkpoint: str | None = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path."),
    factories: str | None = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last global checkpoint in --out."),
) -> None:
    """Train one detector across factories; each scores its own clips with the final model."""
    cfg = load_config(config, None, checkpoint, None, factories)
    cfg = with_overrides(cfg, "federation", rounds=rounds, strategy=strategy, share=share)
    summary = run_federated(data, out, cfg, resume)
    console.print(metrics_table(summary, f"federated on {data}"))
    console.print(f"wrote {out}")
