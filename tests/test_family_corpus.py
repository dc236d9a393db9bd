"""Plant families in the pre-training corpus (leave-one-family-out pre-training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import coopasd.data.families as families
from coopasd.data.corpus import CorpusConfig, generate_corpus, render_corpus_clip
from coopasd.data.family_corpus import FAMILY_SEED_OFFSET, family_classes, generate_family_clips
from coopasd.data.synth import MACHINES, SynthConfig, render_clip
from coopasd.data.unseen_plant import UNSEEN_MACHINES
from coopasd.errors import ConfigError
from coopasd.learn.pretrain import PretrainConfig
from tests.test_cli import run_cli


def _spy(monkeypatch, name: str) -> list[tuple]:
    """Record (seed, machine, split, domain, label, index, attrs, wave) of every clip the family corpus renders
    (through :func:`coopasd.data.families.render_plant_clip`, which calls the family's ``name``)."""
    real, calls = getattr(families, name), []

    def spy(cfg, machine, split, domain, label, index):
        wave, attrs, kind = real(cfg, machine, split, domain, label, index)
        calls.append((cfg.seed, machine, split, domain, label, index, attrs, wave))
        return wave, attrs, kind

    monkeypatch.setattr(families, name, spy)
    return calls


@pytest.mark.parametrize(
    ("family", "renderer", "specs"),
    [("dev", "render_clip", MACHINES), ("unseen", "render_unseen_clip", UNSEEN_MACHINES)],
)
def test_a_family_adds_its_attribute_classes_from_normal_training_clips_of_another_plant(
    monkeypatch, family, renderer, specs
):
    calls = _spy(monkeypatch, renderer)
    cfg = CorpusConfig(kinds=2, conditions=2, clips_per_class=2, seconds=0.25, seed=5, families=("procedural", family))

    waves, labels = generate_corpus(cfg)

    classes = family_classes(family)
    machines = {m for m, _d, _c in classes}
    assert machines == set(specs) - ({"pump"} if family == "dev" else set())  # each family's default machine types
    assert len(classes) == len(machines) * 6  # 2 x 2 source + 1 x 2 target attribute combinations per machine
    assert cfg.n_classes == 4 + len(classes) and waves.shape == (cfg.n_clips, 4000) == (2 * (4 + len(classes)), 4000)
    assert labels.tolist() == np.repeat(np.arange(cfg.n_classes), 2).tolist()
    assert {(c[2], c[4]) for c in calls} == {("train", "normal")}  # never a test clip, never an anomaly
    assert {c[0] for c in calls} == {FAMILY_SEED_OFFSET + 5}  # not the evaluation plants' seed 0
    kept = {(c[1], tuple(c[6].items())): [] for c in calls}
    for c in calls:
        kept[(c[1], tuple(c[6].items()))].append(c[7])
    for label, (machine, _domain, combo) in enumerate(classes, start=4):  # every clip is its class's first renders
        family_waves = waves[labels == label]
        assert np.array_equal(family_waves, np.stack(kept[(machine, combo)][:2]))


def test_family_clips_differ_from_the_evaluation_plant_and_are_reproducible():
    corpus_waves, _ = generate_family_clips("dev", 1, corpus_seed=0, seconds=0.25, sample_rate=16000)
    again, _ = generate_family_clips("dev", 1, corpus_seed=0, seconds=0.25, sample_rate=16000)
    evaluation = SynthConfig(seed=0, seconds=0.25)

    first_fan = render_clip(SynthConfig(seed=FAMILY_SEED_OFFSET, seconds=0.25), "fan", "train", "source", "normal", 0)
    same_in_evaluation_plant = render_clip(evaluation, "fan", "train", "source", "normal", 0)

    assert np.array_equal(corpus_waves, again)
    assert not np.array_equal(first_fan[0], same_in_evaluation_plant[0])
    evaluation_train = [render_clip(evaluation, "fan", "train", "source", "normal", i)[0] for i in range(8)]
    assert not any(np.array_equal(w, e) for w in corpus_waves[:4] for e in evaluation_train)


def test_default_corpus_is_the_procedural_corpus_as_before():
    cfg = CorpusConfig(kinds=2, conditions=2, clips_per_class=2, seconds=0.25)

    waves, labels = generate_corpus(cfg)
    mixed, mixed_labels = generate_corpus(
        CorpusConfig(kinds=2, conditions=2, clips_per_class=2, seconds=0.25, families=("procedural", "dev"))
    )

    before = [render_corpus_clip(cfg, k, c, i) for k in range(2) for c in range(2) for i in range(2)]
    assert cfg.families == ("procedural",) and PretrainConfig().corpus == CorpusConfig()
    assert PretrainConfig.of("tiny", 48, 20, 12, 0, "auto").corpus.families == ("procedural",)
    assert (CorpusConfig().n_classes, CorpusConfig().n_clips) == (192, 3840)  # the shipped record's corpus
    assert np.array_equal(waves, np.stack(before)) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.array_equal(mixed[:8], waves) and mixed_labels[:8].tolist() == labels.tolist()
    only_dev, only_dev_labels = generate_corpus(CorpusConfig(clips_per_class=1, seconds=0.25, families=("dev",)))
    assert only_dev.shape == (30, 4000) and only_dev_labels.tolist() == list(range(30))


@pytest.mark.parametrize("families", [(), ("procedural", "procedural"), ("procedural", "plant")])
def test_bad_corpus_families_are_config_errors(families):
    with pytest.raises(ConfigError, match="corpus families"):
        CorpusConfig(families=families)


def test_pretrain_family_flag_reaches_the_corpus_and_the_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "fam.pt"

    code, text = run_cli(
        monkeypatch,
        capsys,
        "pretrain",
        "--out",
        str(out),
        "--kinds",
        "1",
        "--clips",
        "1",
        "--epochs",
        "1",
        "--family",
        "procedural",
        "--family",
        "dev",
    )

    assert code == 0, text
    corpus = json.loads(out.with_suffix(".json").read_text())["corpus"]
    assert corpus["families"] == ["procedural", "dev"] and corpus["clips"] == 4 + 30
    assert corpus["plants"]["dev"] == {
        "generator": "coopasd.data.synth",
        "plant_seed": FAMILY_SEED_OFFSET,
        "clips": "normal training clips only",
        "classes": 30,
        "n_clips": 30,
    }
    code, text = run_cli(monkeypatch, capsys, "pretrain", "--out", str(tmp_path / "x.pt"), "--family", "plant")
    assert code == 2 and "corpus families" in text and "Traceback" not in text
