from __future__ import annotations

import pytest
import torch

from coopasd.model.beats import BEATs, pool
from coopasd.model.beats_config import BEATsConfig, preset
from coopasd.model.checkpoint import CheckpointError, checkpoint_bytes, load_beats

MICRO = BEATsConfig(  # an official-shaped config, small enough for fast tests
    embed_dim=32,
    encoder_layers=2,
    encoder_embed_dim=48,
    encoder_ffn_embed_dim=96,
    encoder_attention_heads=4,
    deep_norm=True,
    relative_position_embedding=True,
    gru_rel_pos=True,
    conv_pos=16,
    conv_pos_groups=4,
    num_buckets=32,
    max_distance=100,
    dropout=0.0,
    attention_dropout=0.0,
)


def _official_file(tmp_path, cfg: BEATsConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = BEATs(cfg).eval()
    path = tmp_path / "BEATs_random.pt"
    torch.save({"cfg": cfg.to_dict(), "model": model.state_dict()}, path)  # the official file layout
    return model, path


def _reference_state_names(ref_model) -> set[str]:
    """The reference model's state-dict names in the official files' (old weight_norm) spelling."""
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    names = set()
    for key in ref_model.state_dict():
        for new, old in rename.items():
            key = key.replace(new, old)
        names.add(key)
    return names


@pytest.mark.parametrize("name", ["micro", "tiny", "base"])
def test_same_outputs_and_keys_as_the_reference_implementation(tmp_path, name):
    from tests.helpers.oracles import reference_beats

    cfg = MICRO if name == "micro" else preset(name)
    ours, path = _official_file(tmp_path, cfg)
    ref = reference_beats().BEATs(str(path), freeze=True)  # loads our file with strict=True
    ref.eval()
    assert _reference_state_names(ref) == set(ours.state_dict())
    x = torch.randn(2, 24_000, generator=torch.Generator().manual_seed(1)) * 0.1
    lengths = torch.tensor([1.0, 0.55])
    padding = torch.arange(24_000)[None, :] >= (lengths * 24_000)[:, None]
    with torch.no_grad():
        plain = ours.extract_features(x)[0]
        masked, mask = ours.extract_features(x, padding)
        ref_plain = ref.extract_features(x, torch.ones(2))[0]
        ref_masked = ref.extract_features(x, lengths)[0]
    assert plain.shape == (2, (148 // 16) * 8, cfg.encoder_embed_dim)
    assert (plain - ref_plain).abs().max() < 1e-4
    assert (masked - ref_masked).abs().max() < 1e-4
    assert mask is not None and not mask[0].any() and mask[1].sum() > 0


def test_official_format_round_trip_is_exact(tmp_path):
    model, path = _official_file(tmp_path, MICRO)
    loaded = load_beats(path)
    assert not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(3, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded.extract_features(x)[0], model.extract_features(x)[0])


def test_official_cfg_with_unknown_keys_loads(tmp_path):
    model, path = _official_file(tmp_path, MICRO)
    payload = torch.load(path, weights_only=True)
    payload["cfg"]["some_future_option"] = 3
    torch.save(payload, path)
    assert load_beats(path).cfg == MICRO


def test_padding_mask_marks_padded_patches():
    model = BEATs(MICRO).eval()
    x = torch.randn(2, 16_000) * 0.1
    padding = torch.zeros(2, 16_000, dtype=torch.bool)
    padding[1, 8_000:] = True
    with torch.no_grad():
        features, mask = model.extract_features(x, padding)
    assert mask.shape == features.shape[:2]
    assert not mask[0].any()
    assert 0.3 < mask[1].float().mean() < 0.55  # about the second half of the clip's patches
    # masked mean pooling ignores the padded patches
    pooled = pool(features, model.freq_patches, "mean", mask)
    manual = features[1][~mask[1]].mean(0)
    assert torch.allclose(pooled[1], manual, atol=1e-6)


def test_deterministic_in_eval_and_seeded_init():
    torch.manual_seed(5)
    a = BEATs(MICRO).eval()
    torch.manual_seed(5)
    b = BEATs(MICRO).eval()
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(a.extract_features(x)[0], a.extract_features(x)[0])
        assert torch.equal(a.extract_features(x)[0], b.extract_features(x)[0])


def test_pooling_keeps_frequency_position():
    features = torch.arange(2 * 16 * 3, dtype=torch.float32).view(2, 16, 3)  # 2 time x 8 freq patches
    out = pool(features, 8, "mean_freq")
    assert out.shape == (2, 24)
    assert torch.equal(out[0, :3], (features[0, 0] + features[0, 8]) / 2)


def test_finetuned_checkpoint_predicts_probabilities(tmp_path):
    cfg = BEATsConfig(**{**MICRO.to_dict(), "finetuned_model": True, "predictor_class": 7})
    _, path = _official_file(tmp_path, cfg)
    probs = load_beats(path).predict(torch.randn(2, 8000) * 0.1)
    assert probs.shape == (2, 7) and ((probs > 0) & (probs < 1)).all()


def test_lora_adapters_start_as_identity_and_train_alone():
    model = BEATs(MICRO).eval()
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        before = model.extract_features(x)[0]
    names = model.add_lora(rank=4)
    assert len(names) == 2 * 4 * MICRO.encoder_layers  # q, k, v, out projections x (A, B)
    with torch.no_grad():
        assert torch.allclose(model.extract_features(x)[0], before)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_beats(tmp_path / "missing.pt")
    _, path = _official_file(tmp_path, MICRO)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_beats(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_beats(empty)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {}}, wrong)
    with pytest.raises(CheckpointError, match="'cfg' and 'model'"):
        load_beats(wrong)
    payload = torch.load(path, weights_only=True)
    payload["model"].pop("encoder.layers.0.fc1.bias")
    payload["model"]["encoder.extra.weight"] = torch.zeros(1)
    torch.save(payload, wrong)
    with pytest.raises(CheckpointError, match="1 missing key.*fc1.bias.*1 unexpected key"):
        load_beats(wrong)
    payload = torch.load(path, weights_only=True)
    payload["cfg"]["encoder_embed_dim"] = 64
    torch.save(payload, wrong)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_beats(wrong)


def test_our_checkpoint_writer_is_atomic_and_loadable(tmp_path):
    model = BEATs(MICRO)
    path = tmp_path / "enc.pt"
    path.write_bytes(checkpoint_bytes(MICRO.to_dict(), model.state_dict(), {"note": "x"}))
    assert load_beats(path).cfg == MICRO
    assert not list(tmp_path.glob(".*tmp"))
