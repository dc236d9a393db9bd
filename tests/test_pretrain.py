from __future__ import annotations

import json

import numpy as np
import torch

from coopasd.config.settings import TrainConfig
from coopasd.data.corpus import CORPUS_SEED_OFFSET, CorpusConfig, generate_corpus, render_corpus_clip
from coopasd.learn.pretrain import PretrainConfig, pretrain
from coopasd.model.checkpoint import DEFAULT_CHECKPOINT, file_sha256, load_beats
from coopasd.rundir.writer import write_pretrained
from tests.test_cli import run_cli


def test_corpus_is_deterministic_labelled_and_varied():
    cfg = CorpusConfig(kinds=3, conditions=2, clips_per_class=2, seconds=0.25)
    waves, labels = generate_corpus(cfg)
    again, _ = generate_corpus(cfg)
    assert waves.shape == (12, 4000) and np.array_equal(waves, again)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert not np.array_equal(render_corpus_clip(cfg, 0, 0, 0), render_corpus_clip(cfg, 1, 0, 0))
    assert CORPUS_SEED_OFFSET > 1_000_000  # far above any evaluation seed


def test_pretrain_writes_a_loadable_self_describing_checkpoint(tmp_path):
    cfg = PretrainConfig(
        corpus=CorpusConfig(kinds=2, conditions=2, clips_per_class=3, seconds=0.5),
        train=TrainConfig(epochs=1, batch_size=6, target_fraction=0.0, crop_seconds=0.0),
    )
    meta = write_pretrained(tmp_path / "enc.pt", *pretrain(cfg, command="coopasd pretrain --test"))
    assert meta["sha256"] == file_sha256(tmp_path / "enc.pt")
    assert meta["corpus"]["clips"] == 12 and meta["command"] == "coopasd pretrain --test"
    encoder = load_beats(tmp_path / "enc.pt")
    assert all(p.dtype == torch.float32 for p in encoder.parameters())  # stored float16, loaded float32
    payload = torch.load(tmp_path / "enc.pt", weights_only=True)
    assert payload["model"]["encoder.layers.0.fc1.weight"].dtype == torch.float16


def test_shipped_backbone_matches_its_record():
    record = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(DEFAULT_CHECKPOINT)
    assert record["command"].startswith("coopasd pretrain") and record["corpus"]["generator"] == "coopasd.data.corpus"
    assert load_beats(DEFAULT_CHECKPOINT).cfg.encoder_layers == 4


def test_pretrain_command_writes_the_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "small.pt"
    code, text = run_cli(
        monkeypatch, capsys, "pretrain", "--out", str(out), "--kinds", "2", "--clips", "2", "--epochs", "1"
    )
    assert code == 0, text
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(out) and "--kinds 2" in record["command"]


def test_certificates_name_the_hosts_and_protect_the_keys(tmp_path):
    from cryptography import x509

    from coopasd.federation.tls import generate_certificates

    paths = generate_certificates(tmp_path, ["10.1.2.3", "superlink.plant.local"])
    cert = x509.load_pem_x509_certificate(paths["server_cert"].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the SuperLink itself listens on loopback (behind coopasd gateway): its names are always there too
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3", "127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.plant.local", "localhost"]
    assert paths["server_key"].stat().st_mode & 0o077 == 0 and paths["ca_key"].stat().st_mode & 0o077 == 0
