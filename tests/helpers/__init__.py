"""Tiny DCASE trees and audio files written on the fly for tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from coopasd.cli.app import main
from coopasd.data.synth import SynthConfig, generate

TINY = SynthConfig(machines=("fan", "valve"), seconds=0.5, train_source=6, train_target=2, test_per_domain=6, seed=3)


def make_tree(root: Path, **overrides) -> Path:
    """A small synthetic DCASE tree (2 machines, 0.5 s clips) under ``root``."""
    cfg = SynthConfig(**{**TINY.__dict__, **overrides})
    generate(cfg, root)
    return root


def write_wav(path: Path, wave: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype=subtype)
    return path


def sine(freq: float, seconds: float, rate: int = 16_000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``coopasd ARGS`` in-process: (exit code, stdout, stderr) as printed."""
    monkeypatch.setattr(sys, "argv", ["coopasd", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
