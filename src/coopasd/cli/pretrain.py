"""``coopasd pretrain``: pre-train the tiny backbone on the procedural corpus (optionally plus plant families)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from coopasd.report.console import console, progress_bar


def pretrain_command(
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (a .json with its record goes beside)."),
    preset: str = typer.Option("tiny", help="BEATs preset."),
    kinds: int = typer.Option(48, help="Procedural machine kinds in the corpus."),
    clips: int = typer.Option(20, help="Clips per (kind, condition) class."),
    epochs: int = typer.Option(12, help="Training epochs."),
    seed: int = typer.Option(0, help="Corpus and training seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    family: list[str] = typer.Option(["procedural"], help="Corpus source (repeatable): procedural, dev, unseen."),
) -> None:
    """Generate the corpus, pre-train, and write the checkpoint plus its record (command, corpus, hash)."""
    from coopasd.errors import OutputError
    from coopasd.learn.pretrain import PretrainConfig, pretrain, pretrain_steps
    from coopasd.rundir.writer import write_pretrained

    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name")
    cfg = PretrainConfig.of(preset, kinds, clips, epochs, seed, device, tuple(family))
    command = "coopasd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with progress_bar("generating corpus", cfg.corpus.n_clips) as corpus_advance:
        with progress_bar("pre-training", pretrain_steps(cfg)) as train_advance:
            checkpoint, meta = pretrain(cfg, command, corpus_advance, train_advance)
    record = write_pretrained(out, checkpoint, meta)
    console.print(f"final training accuracy {record['final_accuracy']:.3f} in {record['seconds']:.0f} s")
    console.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) and {out.with_suffix('.json')}")
