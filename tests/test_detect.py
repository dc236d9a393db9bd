from __future__ import annotations

import numpy as np
import pytest

from coopasd.config import DetectConfig
from coopasd.detect import KnnDetector


def test_euclidean_1nn_without_normalization_gives_plain_distances():
    source = np.array([[0.0, 0.0], [10.0, 0.0]])
    target = np.array([[0.0, 5.0]])
    det = KnnDetector(DetectConfig(metric="euclidean", normalize="none", standardize=False)).fit(source, target)
    # (1,0): 1 from source, sqrt(26) from target -> 1; (0,4): 4 from source, 1 from target -> 1
    assert det.score(np.array([[1.0, 0.0], [0.0, 4.0], [5.0, 0.0]])).tolist() == pytest.approx([1.0, 1.0, 5.0])


def test_k_averages_the_k_nearest():
    source = np.array([[0.0], [1.0], [3.0]])
    det = KnnDetector(DetectConfig(k=2, metric="euclidean", normalize="none", standardize=False)).fit(source)
    assert det.score(np.array([[0.0]]))[0] == pytest.approx(0.5)


def test_cosine_distance_ignores_scale():
    det = KnnDetector(DetectConfig(metric="cosine", normalize="none", standardize=False)).fit(np.array([[1.0, 0.0]]))
    assert det.score(np.array([[5.0, 0.0], [0.0, 2.0]])).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_loo_normalization_puts_banks_on_one_scale():
    # a tight target bank and a loose source bank: raw distance 1 means different things
    source = np.array([[0.0], [10.0], [20.0]])  # leave-one-out distances 10, 10, 10
    target = np.array([[100.0], [101.0]])  # leave-one-out distances 1, 1
    det = KnnDetector(DetectConfig(metric="euclidean", normalize="loo", standardize=False)).fit(source, target)
    assert det.scales == {"source": pytest.approx(10.0), "target": pytest.approx(1.0)}
    scores = det.bank_distances(np.array([[5.0], [103.0]]))
    assert scores["source"][0] == pytest.approx(0.5) and scores["target"][1] == pytest.approx(2.0)
    assert det.score(np.array([[5.0], [103.0]])).tolist() == pytest.approx([0.5, 2.0])


def test_scoring_one_clip_alone_equals_scoring_it_in_a_batch():
    rng = np.random.default_rng(0)
    det = KnnDetector(DetectConfig(metric="euclidean", standardize=True)).fit(
        rng.normal(size=(30, 8)), rng.normal(size=(5, 8))
    )
    batch = rng.normal(size=(7, 8))
    alone = np.array([det.score(batch[i : i + 1])[0] for i in range(7)])
    assert np.allclose(alone, det.score(batch))


def test_training_scores_are_leave_one_out_and_threshold_separates():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(200, 4))
    det = KnnDetector(DetectConfig(metric="euclidean", standardize=False)).fit(source, rng.normal(size=(10, 4)))
    train = det.training_scores()
    assert train.shape == (210,) and (train > 0).all()  # no clip matched itself
    assert 0.8 < np.mean(train <= det.threshold) < 0.97  # ~90% of normal training clips pass
    far = det.decide(det.score(rng.normal(size=(20, 4)) + 25.0))
    assert far.tolist() == [1] * 20


def test_empty_source_bank_is_an_error():
    with pytest.raises(ValueError, match="source bank"):
        KnnDetector().fit(np.zeros((0, 3)))
