"""Export a factory model so that a plant can score clips without coopasd's training stack.

Three formats of the same thing, the encoder AND the detector (memory banks, standardization,
leave-one-out scales, thresholds) of each machine type and section:

- ``safetensors``: every tensor in one file plus a JSON header (``__metadata__["coopasd"]``: configs,
  section keys, thresholds, scales, the fbank settings). :mod:`coopasd.inference.plant_scorer` scores with it
  using only numpy and safetensors (no torch).
- ``onnx``: the whole scoring graph of one section, ``waveform (batch, samples) -> score (batch,),
  decision (batch,)``: Kaldi fbank, BEATs encoder, pooling (and the frozen members' networks and the frame
  autoencoder, where the detector has them), kNN distances to both banks, fusion
  (the members' mean, or their weighted mean), threshold. One file per section.
- ``torchscript``: the same scoring module, traced (``torch.jit.load`` + call). One file per section.

The waveform is what ``coopasd score`` feeds its model: mono, ``data.sample_rate`` Hz, the model's
clip length long (the length of the clips its banks hold: crop or tile first); the metadata's
``audio`` entry says both (``sample_rate``, ``seconds``, ``samples``).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from coopasd.data.features import (
    FBANK_MEAN,
    FBANK_STD,
    WAVE_SCALE,
    FbankConfig,
    frames_for,
    logmel_moments,
    mel_filterbank,
    povey_window,
)
from coopasd.detect.detectors import FactoryModel, FusedDetector, KnnDetector
from coopasd.errors import CoopasdError
from coopasd.model.aisfx import AisfxCNN
from coopasd.model.backbone import offset_buckets
from coopasd.model.beats import BEATs, pool
from coopasd.model.frame_autoencoder import CONTEXT, FrameAutoencoder, carried_autoencoder, is_autoencoder_key

Format = Literal["safetensors", "onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("safetensors", "onnx", "torchscript")
FORMAT_VERSION = 1  # of the safetensors layout read by coopasd.inference.plant_scorer
ONNX_OPSET = 18


class ExportError(CoopasdError):
    """A model cannot be exported as asked (unknown format or section, a missing optional package)."""


class MemberScorer(nn.Module):
    """One kNN detector member: standardize, (normalize), mean k-NN distance per bank / its scale, min over banks."""

    def __init__(self, det: KnnDetector) -> None:
        super().__init__()
        dim = next(iter(det.banks.values())).shape[1]
        self.register_buffer("mean", det.mean.clone() if det.mean is not None else torch.zeros(dim))
        self.register_buffer("std", det.std.clone() if det.std is not None else torch.ones(dim))
        self.names = list(det.banks)
        for name in self.names:
            bank, densities = det.scoring_bank(name)
            self.register_buffer(f"bank_{name}", bank.clone())
            self.register_buffer(f"density_{name}", torch.ones(len(bank)) if densities is None else densities.clone())
        self.scales = [float(det.scales[name]) for name in self.names]
        self.ks = [min(det.config.k, getattr(self, f"bank_{name}").shape[0]) for name in self.names]
        self.cosine = det.config.metric == "cosine"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, d)`` features -> ``(batch,)`` member scores (as :meth:`KnnDetector.score`)."""
        q = (x - self.mean) / self.std
        if self.cosine:
            q = torch.nn.functional.normalize(q, dim=1)
        per_bank = []
        for name, scale, k in zip(self.names, self.scales, self.ks, strict=True):
            bank = getattr(self, f"bank_{name}")
            dist = _squared(q, bank)  # cosine: |q - b|^2 / 2 of normalized rows, as KnnDetector
            dist = (0.5 * dist if self.cosine else dist.sqrt()) / getattr(self, f"density_{name}")
            per_bank.append(dist.topk(k, dim=1, largest=False).values.mean(dim=1) / scale)
        return torch.stack(per_bank).min(dim=0).values


def _squared(q: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``torch.cdist(q, bank) ** 2`` written with elementary ops (exported by every ONNX opset we use)."""
    return (q.unsqueeze(1) - bank.unsqueeze(0)).pow(2).sum(-1)


class SectionScorer(nn.Module):
    """The scoring graph of one section: ``waveform (batch, samples)`` -> ``(score (batch,), decision (batch,))``.

    Same maths as :meth:`FactoryModel.score` (float32, the encoder's portable ``sdpa`` path).
    """

    def __init__(self, model: FactoryModel, key: str) -> None:
        super().__init__()
        if key not in model.detectors:
            raise ExportError(f"factory model '{model.name}' has no section {key}; it has {sorted(model.detectors)}")
        det = model.detectors[key]
        self.member_names = list(det.members)
        self.members = nn.ModuleDict({name: MemberScorer(m) for name, m in det.members.items()})
        self.encoder = None
        self.frozen = nn.ModuleDict(
            {n: copy.deepcopy(model.frozen[n]).eval() for n in det.members if n in model.frozen}
        )
        if "learned" in det.members:
            self.encoder = BEATs(model.encoder.cfg)
            if model.model_cfg.lora_rank:
                self.encoder.add_lora(model.model_cfg.lora_rank)
            state = {k: v for k, v in model.encoder.state_dict().items() if not is_autoencoder_key(k)}
            self.encoder.load_state_dict(state)
            self.encoder.eval().set_path("sdpa")  # portable kernels: traceable and exportable
        self.frame_ae = None
        if "ae" in det.members:
            self.frame_ae = copy.deepcopy(_autoencoder(model)).eval()
        self.pooling = model.model_cfg.pooling
        self.layer = model.model_cfg.layer
        self.threshold = float(det.threshold)
        self.weights = None if det.weights is None else [det.weights[name] for name in self.member_names]

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = []
        for name in self.member_names:
            if name == "learned":
                assert self.encoder is not None
                features, mask = self.encoder.layer_features(waves, self.layer)
                x = pool(features, self.encoder.freq_patches, self.pooling, mask)
            elif name == "ae":
                assert self.frame_ae is not None
                x = self.frame_ae.log_errors(waves)
            elif name in self.frozen:
                x = self.frozen[name](waves)
            else:
                x = logmel_moments(waves)
            scores.append(self.members[name](x))
        stacked = torch.stack(scores)
        if self.weights is None:  # the plain mean, as FusedDetector without member weights
            score = stacked.mean(dim=0)
        else:
            score = (stacked * torch.tensor(self.weights, dtype=stacked.dtype).unsqueeze(1)).sum(dim=0)
        return score, (score > self.threshold).to(torch.int64)


def _autoencoder(model: FactoryModel) -> FrameAutoencoder:
    ae = carried_autoencoder(model.encoder)
    if ae is None:
        raise ExportError(f"factory model '{model.name}': its detector has the 'ae' member but no frame autoencoder")
    return ae


def autoencoder_meta(model: FactoryModel) -> dict:
    """The frame autoencoder's layers in order for the numpy scorer (``linear`` / ``layer_norm`` / ``relu``,
    with the names of their tensors, which :func:`export_safetensors` writes under ``ae.``)."""
    layers: list[list[str]] = []
    for index, module in enumerate(_autoencoder(model).net):
        kind = {nn.Linear: "linear", nn.LayerNorm: "layer_norm", nn.ReLU: "relu"}.get(type(module))
        if kind is None:
            raise ExportError(f"the numpy scorer has no {type(module).__name__} layer (frame autoencoder)")
        layers.append([kind, f"ae.net.{index}"])
    return {"context": CONTEXT, "layers": layers}


def section_scorer(model: FactoryModel, key: str) -> SectionScorer:
    """The eval-mode :class:`SectionScorer` of section ``key`` (``machine/section``)."""
    return SectionScorer(model, key).eval().requires_grad_(False)


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The tracers and the ONNX exporter log and warn at length about internals; keep the CLI output readable."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _example(model: FactoryModel, batch: int = 2) -> torch.Tensor:
    samples = model.clip_length()
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(0)) * 0.1


def _section_meta(det: FusedDetector) -> dict:
    return {
        "threshold": float(det.threshold),
        "threshold_quantile": float(det.threshold_quantile),
        "weights": {name: det.member_weight(name) for name in det.members},  # each member's share of the score
        "members": {
            name: {
                "config": dataclasses.asdict(m.config),
                "banks": list(m.banks),
                "scales": {b: float(s) for b, s in m.scales.items()},
                "standardized": m.mean is not None,
            }
            for name, m in det.members.items()
        },
    }


def _has_autoencoder(model: FactoryModel) -> bool:
    return any("ae" in det.members for det in model.detectors.values())


def metadata(model: FactoryModel) -> dict:
    """What a scorer needs besides the tensors: configs, the audio a clip must be, every section's detector."""
    fbank = FbankConfig()
    return {
        "format": "coopasd-factory-model",
        "format_version": FORMAT_VERSION,
        "factory": model.name,
        "encoder_cfg": model.encoder.cfg.to_dict(),
        "model_cfg": dataclasses.asdict(model.model_cfg),
        "detect_cfg": dataclasses.asdict(model.detect_cfg),
        "data_cfg": dataclasses.asdict(model.data_cfg),
        "audio": {
            "sample_rate": model.data_cfg.sample_rate,
            "seconds": model.clip_length() / model.data_cfg.sample_rate,
            "samples": model.clip_length(),
            "channels": 1,
        },
        "fbank": dataclasses.asdict(fbank)
        | {
            "window_size": fbank.window_size,
            "window_shift": fbank.window_shift,
            "padded_window_size": fbank.padded_window_size,
            "wave_scale": WAVE_SCALE,
            "beats_mean": FBANK_MEAN,
            "beats_std": FBANK_STD,
            "epsilon": float(torch.finfo(torch.float32).eps),
        },
        "frozen": _frozen_meta(model),
        "frame_autoencoder": autoencoder_meta(model) if _has_autoencoder(model) else None,
        "sections": {key: _section_meta(det) for key, det in sorted(model.detectors.items())},
    }


def frozen_tensors(encoder: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """A frozen aiSFX member for the numpy scorer: its (BatchNorm-folded) convolutions and its front-end's
    resampling kernel, STFT window and mel filterbank, each under ``prefix``."""
    if not isinstance(encoder, AisfxCNN) or isinstance(encoder.blocks[0].bn1, nn.BatchNorm2d):
        raise ExportError(f"{prefix}: the numpy scorer takes aiSFX encoders prepared for inference (folded BatchNorm)")
    state = {f"{prefix}.{k}": v.detach().float().contiguous().numpy() for k, v in encoder.state_dict().items()}
    return state | {
        f"{prefix}.resample_kernel": encoder.resampler.kernel[:, 0].numpy(),  # (up, taps): one row per output phase
        f"{prefix}.window": encoder.logmel.window.numpy(),
        f"{prefix}.mel_banks": encoder.logmel.fbank.numpy(),
    }


def _frozen_meta(model: FactoryModel) -> dict:
    """Front-end settings of the frozen members (resampling ratio and padding, STFT, log compression, pools)."""
    out = {}
    for name, encoder in model.frozen.items():
        if isinstance(encoder, AisfxCNN):
            r = encoder.resampler
            out[name] = encoder.cfg.to_dict() | {"resample_up": r.up, "resample_down": r.down, "resample_pad": r.pad}
    return out


def export_safetensors(model: FactoryModel) -> bytes:
    """All sections in one safetensors file: ``encoder.<name>``, ``fbank.*``, ``frozen.<member>.*`` (aiSFX) and
    ``sections.<machine>/<section>.<member>.{mean,std,bank_<bank>}`` tensors + the :func:`metadata` JSON."""
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    buckets: np.ndarray | None = None
    if any("learned" in det.members for det in model.detectors.values()):
        state = model.encoder.state_dict().items()
        tensors |= {f"encoder.{k}": v.detach().float().numpy() for k, v in state if not is_autoencoder_key(k)}
        enc = model.encoder.cfg
        if enc.relative_position_embedding:  # bucket of each key - query offset at the model's clip length
            samples = model.clip_length()
            length = frames_for(samples) // enc.input_patch_size * model.encoder.freq_patches
            offsets = torch.arange(-(length - 1), length)
            buckets = offset_buckets(offsets, enc.num_buckets, enc.max_distance).numpy()
    cfg = FbankConfig()
    tensors["fbank.mel_banks"] = mel_filterbank(cfg).numpy()
    tensors["fbank.window"] = povey_window(cfg.window_size).numpy()
    for key, det in model.detectors.items():
        for name, member in det.members.items():
            prefix = f"sections.{key}.{name}"
            if member.mean is not None and member.std is not None:
                tensors[f"{prefix}.mean"] = member.mean.numpy()
                tensors[f"{prefix}.std"] = member.std.numpy()
            for bank in member.banks:
                values, densities = member.scoring_bank(bank)  # distinct members, their densities
                tensors[f"{prefix}.bank_{bank}"] = values.numpy()
                if densities is not None:
                    tensors[f"{prefix}.density_{bank}"] = densities.numpy()
    for name in sorted({n for det in model.detectors.values() for n in det.members if n in model.frozen}):
        tensors |= frozen_tensors(model.frozen[name], f"frozen.{name}")
    if _has_autoencoder(model):
        state = _autoencoder(model).state_dict().items()
        tensors |= {f"ae.{k}": v.detach().float().numpy() for k, v in state if k != "fitted"}
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    if buckets is not None:
        tensors["encoder.relative_position_buckets"] = buckets.astype(np.int64)
    return save(tensors, metadata={"coopasd": json.dumps(metadata(model))})


def export_torchscript(model: FactoryModel, key: str) -> bytes:
    """The traced :class:`SectionScorer` of ``key``, with the :func:`metadata` JSON as extra file ``coopasd.json``."""
    scorer = section_scorer(model, key)
    with torch.no_grad(), _quiet_exporters():
        traced = torch.jit.trace(scorer, _example(model), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"coopasd.json": json.dumps(metadata(model) | {"section": key})})
    return buffer.getvalue()


def export_onnx(model: FactoryModel, key: str) -> bytes:
    """The :class:`SectionScorer` of ``key`` as an ONNX graph (inputs ``waveform``; outputs ``score``,
    ``decision``; dynamic batch), with the :func:`metadata` JSON in the model's ``metadata_props``."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as err:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: pip install 'coopasd[onnx]'") from err
    scorer = section_scorer(model, key)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), _quiet_exporters():
        program = torch.onnx.export(
            scorer,
            (_example(model),),
            input_names=["waveform"],
            output_names=["score", "decision"],
            dynamic_shapes=({0: batch},),
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    entry = onnx.StringStringEntryProto(key="coopasd", value=json.dumps(metadata(model) | {"section": key}))
    proto.metadata_props.append(entry)
    return proto.SerializeToString()


def section_files(model: FactoryModel, out: Path, section: str | None) -> dict[str, Path]:
    """Section key -> file for per-section formats: ``out`` itself for one section, else
    ``<out stem>.<machine>_<section><suffix>`` beside it."""
    keys = sorted(model.detectors)
    if section is not None:
        keys = [k for k in keys if section in (k, *k.split("/"))]  # machine/section, a machine or a section
        if len(keys) != 1:
            known = ", ".join(sorted(model.detectors))
            raise ExportError(f"--section {section}: matches {len(keys)} of the model's sections ({known})")
    if len(keys) == 1:
        return {keys[0]: out}
    return {k: out.with_name(f"{out.stem}.{k.replace('/', '_')}{out.suffix}") for k in keys}


def export_model(model: FactoryModel, fmt: Format, out: Path, section: str | None = None) -> dict[Path, bytes]:
    """The files (path -> bytes) of ``model`` exported as ``fmt``; nothing is written here."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if model.model_cfg.backbone != "beats":
        raise ExportError(
            f"factory model '{model.name}': export covers the BEATs backbone; this model's learned encoder is "
            f"[model] backbone = '{model.model_cfg.backbone}' (score it with coopasd score or serve)"
        )
    out = Path(out)
    if fmt == "safetensors":
        if section is not None:
            raise ExportError("--section applies to onnx and torchscript; safetensors holds every section")
        return {out: export_safetensors(model)}
    export = export_onnx if fmt == "onnx" else export_torchscript
    return {path: export(model, key) for key, path in section_files(model, out, section).items()}


__all__ = [
    "FORMATS",
    "ExportError",
    "SectionScorer",
    "export_model",
    "export_onnx",
    "export_safetensors",
    "export_torchscript",
    "metadata",
    "section_scorer",
]
