"""Score clips with an exported factory model using only numpy and safetensors.

The no-training-stack path for a plant: ``coopasd export --format safetensors`` writes one file
(the encoder, the frozen aiSFX member's network and front-end, every section's memory banks,
standardization, scales and threshold, and a JSON header); this module reads it and scores without
torch or any other part of coopasd. It imports nothing but numpy, safetensors and the standard
library, so it can be copied next to the model. A reference implementation written for clarity, in
float64 (the model's float32 path agrees to about 1e-6): a 10 s clip through the ``base`` encoder
takes seconds; for speed use the ONNX export. Clips must have the model's length (``audio.samples``
in the metadata): crop or tile them first, as ``coopasd score`` does.

    scorer = PlantScorer.load("plant.safetensors")
    scores, decisions = scorer.score(waves, "fan/00")  # waves: (n, samples), mono, 16 kHz, in [-1, 1]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``0.5 x (1 + erf(x / sqrt 2))``."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class PlantScorer:
    """An exported factory model: :meth:`score` gives anomaly scores and 0/1 decisions per section."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        if meta.get("format") != "coopasd-factory-model" or meta.get("format_version") != 1:
            raise ValueError("not a coopasd factory model export (format_version 1)")
        self.t = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in tensors.items()}
        self.meta = meta
        self.enc = meta["encoder_cfg"]

    @classmethod
    def load(cls, path: str | Path) -> PlantScorer:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("coopasd", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls(tensors, meta)

    @property
    def sections(self) -> list[str]:
        """The ``machine/section`` keys this model scores."""
        return list(self.meta["sections"])

    # ---- features
    def fbank(self, waves: np.ndarray) -> np.ndarray:
        """Kaldi log-mel fbank ``(n, frames, bins)`` of ``(n, samples)`` waves (already scaled)."""
        fb = self.meta["fbank"]
        frames = sliding_window_view(waves, fb["window_size"], axis=1)[:, :: fb["window_shift"]]
        frames = frames - frames.mean(axis=2, keepdims=True)
        previous = np.concatenate([frames[..., :1], frames[..., :-1]], axis=2)
        frames = (frames - fb["preemphasis"] * previous) * self.t["fbank.window"]
        power = np.abs(np.fft.rfft(frames, n=fb["padded_window_size"])) ** 2
        return np.log(np.maximum(power @ self.t["fbank.mel_banks"].T, fb["epsilon"]))

    def logmel(self, waves: np.ndarray) -> np.ndarray:
        """Per-band mean and (unbiased) standard deviation over time, ``(n, 2 bins)``."""
        fb = self.fbank(waves * self.meta["fbank"]["wave_scale"])
        return np.concatenate([fb.mean(axis=1), fb.std(axis=1, ddof=1)], axis=1)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        out = x @ self.t[f"{name}.weight"].T
        if f"{name}.bias" in self.t:
            out = out + self.t[f"{name}.bias"]
        if f"{name}.lora_a" in self.t:  # LoRA adapters as saved models reload them: scale alpha / rank = 1
            out = out + x @ self.t[f"{name}.lora_a"].T @ self.t[f"{name}.lora_b"].T
        return out

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        return layer_norm(x, self.t[f"{name}.weight"], self.t[f"{name}.bias"])

    def _patches(self, wave: np.ndarray) -> np.ndarray:
        """Patch embeddings ``(patches, dim)`` of one clip (time-major patch order)."""
        fb = self.meta["fbank"]
        feats = (self.fbank(wave[None] * fb["wave_scale"])[0] - fb["beats_mean"]) / (2 * fb["beats_std"])
        p = self.enc["input_patch_size"]
        frames, bins = feats.shape
        tp, fp = frames // p, bins // p
        patches = feats[: tp * p].reshape(tp, p, fp, p).transpose(0, 2, 1, 3).reshape(tp * fp, p * p)
        weight = self.t["encoder.patch_embedding.weight"]
        x = patches @ weight.reshape(weight.shape[0], -1).T
        if "encoder.patch_embedding.bias" in self.t:
            x = x + self.t["encoder.patch_embedding.bias"]
        x = self._ln(x, "encoder.layer_norm")
        if "encoder.post_extract_proj.weight" in self.t:
            x = self._linear(x, "encoder.post_extract_proj")
        return x

    def _positional(self, x: np.ndarray) -> np.ndarray:
        """Grouped, weight-normalized convolution over time, then GELU: ``(patches, dim)``."""
        name = "encoder.encoder.pos_conv.0"
        v, g = self.t[f"{name}.weight_v"], self.t[f"{name}.weight_g"]
        weight = v * (g / np.sqrt((v**2).sum(axis=(0, 1), keepdims=True)))
        channels, per_group, kernel = weight.shape
        padded = np.pad(x.T, ((0, 0), (kernel // 2, kernel // 2)))
        out = np.empty((channels, padded.shape[1] - kernel + 1))
        for g0 in range(0, channels, per_group):
            windows = sliding_window_view(padded[g0 : g0 + per_group], kernel, axis=1)  # (in, time, kernel)
            out[g0 : g0 + per_group] = np.tensordot(weight[g0 : g0 + per_group], windows, axes=([1, 2], [0, 2]))
        out = out + self.t[f"{name}.bias"][:, None]
        return gelu(out[:, : x.shape[0]].T)

    def _attention(self, x: np.ndarray, i: int, bias: np.ndarray | None) -> np.ndarray:
        name = f"encoder.encoder.layers.{i}.self_attn"
        heads = self.enc["encoder_attention_heads"]
        length, dim = x.shape
        hd = dim // heads
        q, k, v = (self._linear(x, f"{name}.{p}_proj").reshape(length, heads, hd).transpose(1, 0, 2) for p in "qkv")
        logits = q @ k.transpose(0, 2, 1) * hd**-0.5
        if bias is not None:
            if self.enc["gru_rel_pos"]:
                gates = 1 / (1 + np.exp(-self._linear(q, f"{name}.grep_linear").reshape(heads, length, 2, 4).sum(-1)))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                bias = (gate_a * (gate_b * self.t[f"{name}.grep_a"][0] - 1.0) + 2.0) * bias
            logits = logits + bias
        out = (softmax(logits) @ v).transpose(1, 0, 2).reshape(length, dim)
        return self._linear(out, f"{name}.out_proj")

    def _relative_bias(self, length: int) -> np.ndarray | None:
        """``(heads, length, length)`` from the table and the exported per-offset buckets."""
        name = "encoder.encoder.layers.0.self_attn.relative_attention_bias.weight"
        if name not in self.t:
            return None
        buckets = self.t["encoder.relative_position_buckets"]
        if len(buckets) != 2 * length - 1:
            raise ValueError(f"clips must be {self.meta['audio']['seconds']} s long (as exported)")
        per_offset = self.t[name][buckets].T  # (heads, 2 length - 1)
        index = np.arange(length)
        return per_offset[:, index[None, :] - index[:, None] + length - 1]

    def encoder_layer(self, wave: np.ndarray, layer: int) -> np.ndarray:
        """Output ``(patches, dim)`` of encoder layer ``layer`` (-1: the encoder's output) for one clip."""
        cfg = self.enc
        n, post_ln = cfg["encoder_layers"], not cfg["layer_norm_first"]
        alpha = (2 * n) ** 0.25 if cfg["deep_norm"] else 1.0
        x = self._patches(wave)
        x = x + self._positional(x)
        if post_ln:
            x = self._ln(x, "encoder.encoder.layer_norm")
        bias = self._relative_bias(x.shape[0])
        for i in range(layer % n + 1):
            name = f"encoder.encoder.layers.{i}"
            if post_ln:
                x = self._ln(x * alpha + self._attention(x, i, bias), f"{name}.self_attn_layer_norm")
                h = self._linear(gelu(self._linear(x, f"{name}.fc1")), f"{name}.fc2")
                x = self._ln(x * alpha + h, f"{name}.final_layer_norm")
            else:
                x = x + self._attention(self._ln(x, f"{name}.self_attn_layer_norm"), i, bias)
                h = gelu(self._linear(self._ln(x, f"{name}.final_layer_norm"), f"{name}.fc1"))
                x = x + self._linear(h, f"{name}.fc2")
        if layer == -1 and not post_ln:
            x = self._ln(x, "encoder.encoder.layer_norm")
        return x

    def learned(self, waves: np.ndarray) -> np.ndarray:
        """Pooled encoder embeddings ``(n, d)`` as the model's ``[model]`` settings say."""
        model_cfg = self.meta["model_cfg"]
        freq = 128 // self.enc["input_patch_size"]
        out = []
        for wave in waves:
            x = self.encoder_layer(wave, model_cfg["layer"])
            if model_cfg["pooling"] == "mean_freq":
                out.append(x.reshape(-1, freq, x.shape[1]).mean(axis=0).reshape(-1))
            else:
                out.append(x.mean(axis=0))
        return np.stack(out)

    # ---- the frame autoencoder member ``ae`` (coopasd.model.frame_autoencoder)
    def autoencoder_errors(self, waves: np.ndarray) -> np.ndarray:
        """``(n, 1)``: log of each clip's mean squared reconstruction error over its windows of
        ``context`` consecutive BEATs-normalized log-mel frames (z-scored with the autoencoder's scaling)."""
        fb, ae = self.meta["fbank"], self.meta["frame_autoencoder"]
        feats = (self.fbank(waves * fb["wave_scale"]) - fb["beats_mean"]) / (2 * fb["beats_std"])
        count = feats.shape[1] - ae["context"] + 1
        windows = np.concatenate([feats[:, i : i + count] for i in range(ae["context"])], axis=2)
        z = (windows - self.t["ae.mean"]) / self.t["ae.std"]
        x = z
        for kind, name in ae["layers"]:
            if kind == "linear":
                x = self._linear(x, name)
            elif kind == "layer_norm":
                x = self._ln(x, name)
            else:
                x = np.maximum(x, 0.0)
        errors = ((x - z) ** 2).mean(axis=2).mean(axis=1)
        return np.log(np.maximum(errors, 1e-12))[:, None]

    # ---- frozen aiSFX member (float64 numpy of coopasd.model.aisfx.AisfxCNN, BatchNorm folded)
    def _resample(self, wave: np.ndarray, name: str) -> np.ndarray:
        """Polyphase Kaiser-sinc resampling of one clip to the member's model rate (zeros outside the clip)."""
        cfg = self.meta["frozen"][name]
        up, down, pad = cfg["resample_up"], cfg["resample_down"], cfg["resample_pad"]
        if up == down:
            return wave
        kernel = self.t[f"frozen.{name}.resample_kernel"]  # (up, taps)
        n_out = -(-wave.shape[0] * up // down)
        frames = -(-n_out // up)
        right = max(0, (frames - 1) * down + kernel.shape[1] - pad - wave.shape[0])
        windows = sliding_window_view(np.pad(wave, (pad, right)), kernel.shape[1])[::down][:frames]
        return (windows @ kernel.T).reshape(-1)[:n_out]

    def _aisfx_logmel(self, wave: np.ndarray, name: str) -> np.ndarray:
        """Compressed log-mel ``(frames, n_mels)`` at the model rate: centred frames, symmetric Hann window."""
        cfg = self.meta["frozen"][name]
        n_fft, hop = cfg["n_fft"], cfg["hop_length"]
        frames = -(-wave.shape[0] // hop) + 1
        tail = (frames - 1) * hop - wave.shape[0]
        padded = np.pad(np.pad(wave, (0, tail)), (n_fft // 2, n_fft // 2))
        windows = sliding_window_view(padded, n_fft)[::hop][:frames] * self.t[f"frozen.{name}.window"]
        power = np.abs(np.fft.rfft(windows, n=n_fft, axis=1)) ** 2
        mel = power @ self.t[f"frozen.{name}.mel_banks"].T
        return np.log10(1.0 + cfg["log_gain"] * mel) / cfg["log_max"]

    def _conv3x3(self, x: np.ndarray, name: str) -> np.ndarray:
        """``(in, time, freq)`` -> ``(out, time, freq)``: 3x3 convolution, zero padding 1, then ReLU."""
        windows = sliding_window_view(np.pad(x, ((0, 0), (1, 1), (1, 1))), (3, 3), axis=(1, 2))
        out = np.tensordot(self.t[f"{name}.weight"], windows, axes=([1, 2, 3], [0, 3, 4]))
        return np.maximum(out + self.t[f"{name}.bias"][:, None, None], 0.0)

    def frozen_embedding(self, waves: np.ndarray, name: str) -> np.ndarray:
        """The frozen member's embedding ``(n, channels)``: last block, mean over frequency, max over time."""
        cfg, out = self.meta["frozen"][name], []
        for wave in waves:
            x = self._aisfx_logmel(self._resample(wave, name), name)[None]  # (1, time, freq)
            for i, pool in enumerate(cfg["pools"]):
                x = self._conv3x3(
                    self._conv3x3(x, f"frozen.{name}.blocks.{i}.conv1"), f"frozen.{name}.blocks.{i}.conv2"
                )
                if pool > 1:
                    c, t, f = x.shape
                    x = x[:, : t // pool * pool, : f // pool * pool]
                    x = x.reshape(c, t // pool, pool, f // pool, pool).max(axis=(2, 4))
            out.append(x.mean(axis=2).max(axis=1))
        return np.stack(out)

    # ---- detector
    def _member_score(self, x: np.ndarray, prefix: str, member: dict) -> np.ndarray:
        # features rounded to float32 as the model's banks were: bands with a tiny spread across the
        # training clips turn float32 rounding into visible score differences after z-scoring
        x = x.astype(np.float32).astype(np.float64)
        if member["standardized"]:
            x = (x - self.t[f"{prefix}.mean"]) / self.t[f"{prefix}.std"]
        cosine = member["config"]["metric"] == "cosine"
        if cosine:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        per_bank = []
        for bank_name in member["banks"]:
            bank = self.t[f"{prefix}.bank_{bank_name}"]
            squared = ((x[:, None, :] - bank[None, :, :]) ** 2).sum(-1)
            dist = 0.5 * squared if cosine else np.sqrt(squared)  # cosine: 1 - q.b of unit rows
            density = self.t.get(f"{prefix}.density_{bank_name}")
            if density is not None:  # normalize = "density": each member's distances over its local density
                dist = dist / density
            k = min(member["config"]["k"], bank.shape[0])
            per_bank.append(np.sort(dist, axis=1)[:, :k].mean(axis=1) / member["scales"][bank_name])
        return np.min(per_bank, axis=0)

    def score(self, waves: np.ndarray, section: str) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores ``(n,)`` and decisions ``(n,)`` (1 = anomalous) of ``(n, samples)`` waves of
        ``section`` (``machine/section``), each clip ``audio.seconds`` long at ``audio.sample_rate``."""
        if section not in self.meta["sections"]:
            raise KeyError(f"no section {section}; the model has {', '.join(self.sections)}")
        waves = np.atleast_2d(np.asarray(waves, dtype=np.float64))
        audio = self.meta["audio"]
        if "samples" in audio and waves.shape[1] != audio["samples"]:
            raise ValueError(
                f"clips of {waves.shape[1]} samples: this model scores clips of {audio['samples']} samples "
                f"({audio['seconds']:g} s at {audio['sample_rate']} Hz); crop or tile them first"
            )
        sec = self.meta["sections"][section]
        features = {"learned": self.learned, "logmel": self.logmel, "ae": self.autoencoder_errors}
        per_member = [
            self._member_score(
                features[name](waves) if name in features else self.frozen_embedding(waves, name),
                f"sections.{section}.{name}",
                member,
            )
            for name, member in sec["members"].items()
        ]
        weights = sec.get("weights")  # each member's share; exports made before member weights: the plain mean
        if weights is None:
            scores = np.mean(per_member, axis=0)
        else:
            scores = np.tensordot([weights[name] for name in sec["members"]], np.stack(per_member), axes=1)
        return scores, (scores > sec["threshold"]).astype(np.int64)
