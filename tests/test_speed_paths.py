"""The encoder's fast paths give the plain path's features (and the reference code's), and the
``[model] precision`` key reaches the encoder. About 20 s on 2 cores (the ``base`` comparison
runs 1 clip of 1 s)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from coopasd.config.settings import DetectConfig, ModelConfig, TrainConfig
from coopasd.learn.train import TrainingSet, make_head, train_local
from coopasd.model.backbone import (
    FFT_MIN_BATCH,
    MultiheadAttention,
    fft_conv1d,
    fused_projection,
    onednn_usable,
    relative_position_bias,
    relative_position_buckets,
)
from coopasd.model.beats import BEATs, pool
from coopasd.model.beats_config import preset
from coopasd.model.embed import clip_features, embed, pick_device, resolve_precision
from tests.test_beats import MICRO

PRE_LN = dataclasses.replace(MICRO, layer_norm_first=True, deep_norm=False, conv_pos=15)  # odd kernel, pre-LN
NO_GATE = dataclasses.replace(MICRO, gru_rel_pos=False)
CONFIGS = {"micro": MICRO, "pre_ln": PRE_LN, "no_gate": NO_GATE, "tiny": preset("tiny")}


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max())


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def each_path(model: BEATs, fn) -> dict[str, object]:
    """``fn()`` computed on each path, ending on the default (``fast``)."""
    out = {}
    for path in ("plain", "sdpa", "fast"):
        model.set_path(path)
        out[path] = fn()
    return out


def waves(batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("name", CONFIGS)
def test_fast_path_gives_the_plain_path_features(name):
    # Prepare: a batch large enough for the FFT convolution of the fast path
    torch.manual_seed(0)
    model = BEATs(CONFIGS[name]).eval()
    x = waves(FFT_MIN_BATCH, 12_000)
    padding = torch.zeros_like(x, dtype=torch.bool)
    padding[1, 7_000:] = True
    default = {m.path for m in model.modules() if isinstance(m, MultiheadAttention)}
    # Execute
    with torch.no_grad():
        outs = each_path(model, lambda: model.extract_features(x, return_layers=True))
        padded = each_path(model, lambda: model.extract_features(x, padding)[0])
    # Assert
    assert default == {"fast"}
    plain = outs.pop("plain")
    for path, out in outs.items():
        assert rel_diff(out[0], plain[0]) <= 1e-5, path
        for layer, plain_layer in zip(out[2], plain[2], strict=True):
            assert rel_diff(layer, plain_layer) <= 1e-5, path
        assert rel_diff(padded[path], padded["plain"]) <= 1e-5, path
        pooled = [pool(f, model.freq_patches, "mean_freq") for f in (out[0], plain[0])]
        assert cosine(*pooled).min() > 0.99999, path


def test_fast_path_gradients_equal_the_plain_path():
    # Prepare: training mode without dropout, so both paths compute the same function
    cfg = dataclasses.replace(MICRO, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = BEATs(cfg).train()
    x = waves(2, 8_000)
    direction = torch.randn(model.extract_features(x)[0].shape, generator=torch.Generator().manual_seed(2))

    def grads() -> dict[str, torch.Tensor]:  # of a random projection (a squared norm is flat after LayerNorm)
        model.zero_grad()
        (model.extract_features(x)[0] * direction).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Execute (with gradients on, the fast path uses no oneDNN inference kernel: it is the sdpa path)
    grad = each_path(model, grads)
    plain, fast = grad["plain"], grad["fast"]
    # Assert: every parameter gets a gradient on both paths, the gate and bias table included
    assert plain.keys() == fast.keys()
    assert any("grep_linear" in n for n in fast) and any("relative_attention_bias" in n for n in fast)
    for name in plain:  # + 1e-6: k_proj.bias has an exactly zero gradient (softmax shift invariance), only round-off
        assert (fast[name] - plain[name]).abs().max() <= 1e-4 * plain[name].abs().max() + 1e-6, name


def test_fused_kernels_equal_their_plain_forms():
    # Prepare
    torch.manual_seed(0)
    attn = BEATs(MICRO).encoder.layers[0].self_attn
    x = torch.randn(2, 40, MICRO.encoder_embed_dim)
    signal = torch.randn(FFT_MIN_BATCH, 48, 75)
    # Execute
    fused = fused_projection(x, (attn.q_proj, attn.k_proj, attn.v_proj))  # the CUDA fast path, run on CPU
    bias = relative_position_bias(attn.relative_attention_bias.weight, 40, MICRO.num_buckets, MICRO.max_distance)
    buckets = relative_position_buckets(40, MICRO.num_buckets, MICRO.max_distance)
    # Assert
    for got, proj in zip(fused, (attn.q_proj, attn.k_proj, attn.v_proj), strict=True):
        assert torch.allclose(got, proj(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(bias, attn.relative_attention_bias(buckets).permute(2, 0, 1))
    for kernel in (16, 15):  # even (BEATs) and odd kernels
        weight, conv_bias = torch.randn(48, 12, kernel) / kernel, torch.randn(48)
        direct = torch.nn.functional.conv1d(signal, weight, conv_bias, padding=kernel // 2, groups=4)
        assert rel_diff(fft_conv1d(signal, weight, conv_bias, 4, kernel // 2), direct) <= 1e-5


def test_onednn_kernels_only_where_they_apply():
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert onednn_usable(x) == torch.backends.mkldnn.is_available()
        assert not onednn_usable(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not onednn_usable(x)
    assert not onednn_usable(x)  # gradients on: they have no autograd formula


@pytest.mark.parametrize("name", ["micro", "pre_ln"])
def test_layer_features_runs_only_the_layers_it_needs(name, monkeypatch):
    # Prepare
    torch.manual_seed(0)
    model = BEATs(CONFIGS[name]).eval()
    x = waves(2, 8_000)
    calls = []
    for i, layer in enumerate(model.encoder.layers):
        monkeypatch.setattr(layer, "forward", lambda *a, _f=layer.forward, _i=i: calls.append(_i) or _f(*a))
    # Execute
    with torch.no_grad():
        _, _, every = model.extract_features(x, return_layers=True)
        last = model.extract_features(x)[0]
        calls.clear()
        first, _ = model.layer_features(x, 0)
        first_calls = list(calls)
        final, _ = model.layer_features(x, -1)
    # Assert
    assert first_calls == [0]
    assert torch.equal(first, every[0])
    assert torch.equal(final, last)
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        model.layer_features(x, 5)


def test_base_preset_fast_and_plain_paths_match_the_reference_code(tmp_path):
    from tests.helpers.oracles import reference_beats

    # Prepare: random weights in the official file layout, 1 clip of 1 s
    torch.manual_seed(0)
    ours = BEATs(preset("base")).eval()
    path = tmp_path / "BEATs_random.pt"
    torch.save({"cfg": ours.cfg.to_dict(), "model": ours.state_dict()}, path)
    ref = reference_beats().BEATs(str(path), freeze=True).eval()
    x = waves(1, 16_000)
    # Execute
    with torch.no_grad():
        expected = ref.extract_features(x, torch.ones(1))[0]
        outs = each_path(ours, lambda: ours.extract_features(x)[0])
    # Assert
    for path, out in outs.items():
        assert rel_diff(out, expected) <= 1e-3, path
        assert rel_diff(out, outs["plain"]) <= 1e-5, path
        assert cosine(out.mean(1), outs["plain"].mean(1)).min() > 0.99999, path


def test_precision_resolves_per_device_and_fp32_equivalents_are_exact_on_cpu():
    # Prepare
    cpu = pick_device("cpu")
    torch.manual_seed(0)
    model = BEATs(MICRO).eval()
    x = waves(3, 8_000).numpy()
    # Execute
    outs = {p: embed(model, x, "mean", -1, device="cpu", precision=p) for p in ("fp32", "tf32", "auto")}
    # Assert: auto is fp32 on CPU and tf32 changes nothing there (TF32 exists only on CUDA)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("tf32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert np.array_equal(outs["tf32"], outs["fp32"]) and np.array_equal(outs["auto"], outs["fp32"])


def test_bf16_on_cpu_reaches_the_encoder_through_model_precision():
    """The plumbing check: ``[model] precision = "bf16"`` runs the encoder under bfloat16 autocast on
    CPU too (loose tolerance: bf16 keeps 8 bits of mantissa); CUDA figures are checked on a GPU."""
    # Prepare
    torch.manual_seed(0)
    model = BEATs(MICRO).eval()
    x = waves(4, 8_000).numpy()
    detect = DetectConfig(features="learned")
    # Execute
    fp32 = clip_features(model, x, ModelConfig(precision="fp32"), detect, device="cpu")["learned"]
    bf16 = clip_features(model, x, ModelConfig(precision="bf16"), detect, device="cpu")["learned"]
    # Assert
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # autocast did act
    assert np.abs(bf16 - fp32).max() / np.abs(fp32).max() < 0.1
    assert cosine(torch.from_numpy(bf16), torch.from_numpy(fp32)).min() > 0.99


def test_training_runs_under_bf16_autocast_on_cpu():
    # Prepare
    torch.manual_seed(0)
    model = BEATs(MICRO)
    cfg = TrainConfig(epochs=1, batch_size=4, crop_seconds=0.0, pseudo_anomalies=False, target_fraction=0.0)
    model_cfg = ModelConfig(precision="bf16", pooling="mean", layer=-1)
    head = make_head(model, 2, cfg, "mean")
    data = TrainingSet(waves(4, 8_000).numpy(), np.array([0, 1, 0, 1]), np.zeros(4, dtype=bool))
    before = model.encoder.layers[0].fc1.weight.detach().clone()
    # Execute
    history = train_local(model, head, data, model_cfg, cfg)
    # Assert
    assert np.isfinite(history[0].loss)
    assert model.encoder.layers[0].fc1.weight.dtype == torch.float32  # autocast leaves the weights fp32
    assert not torch.equal(model.encoder.layers[0].fc1.weight, before)


def test_the_kept_conv_spectrum_follows_every_weight_change():
    # Prepare: a first forward keeps the positional convolution's spectrum (float32 CPU inference)
    torch.manual_seed(0)
    model, other = BEATs(MICRO).eval(), BEATs(MICRO).eval()
    conv = model.encoder.pos_conv[0]
    x = waves(2, 8_000)

    def fast_and_plain() -> tuple[torch.Tensor, torch.Tensor]:
        out = each_path(model, lambda: model.extract_features(x)[0])
        return out["fast"], out["plain"]

    with torch.no_grad():
        model.extract_features(x)
        kept = conv._kept_response
        # Execute: weights replaced without a version bump (.data =), then loaded in place
        conv.weight_v.data = conv.weight_v.data * 1.5 + 0.01
        replaced = fast_and_plain()
        model.load_state_dict(other.state_dict())
        loaded = fast_and_plain()
    # Assert
    assert kept is not None and conv._kept_response is not kept
    assert rel_diff(*replaced) <= 1e-5
    assert rel_diff(*loaded) <= 1e-5
