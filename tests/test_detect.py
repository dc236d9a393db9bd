from __future__ import annotations

import numpy as np
import pytest

from coopasd.config.settings import DetectConfig
from coopasd.detect.detectors import KnnDetector, detector_from_state, detector_state


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


def test_density_normalization_divides_by_each_members_neighbourhood():
    # a dense cluster near 0 and a sparse one near 100: the same raw distance is far in the dense
    # cluster and near in the sparse one
    source = np.array([[0.0], [1.0], [2.0], [100.0], [110.0], [120.0]])
    cfg = DetectConfig(metric="euclidean", standardize=False, normalize="density", density_k=2)
    det = KnnDetector(cfg).fit(source)
    # densities: 0 -> (1+2)/2 = 1.5, 1 -> 1, 2 -> 1.5, 100 -> 15, 110 -> 10, 120 -> 15
    assert det.member_scales["source"].tolist() == pytest.approx([1.5, 1.0, 1.5, 15.0, 10.0, 15.0])
    # 5 from the dense cluster: nearest normalized distance min(5/1.5, 4/1, 3/1.5, 95/15, ...) = 2
    # 125 from the sparse one: min(5/15, 15/10, ...) = 1/3
    assert det.score(np.array([[5.0], [125.0]])).tolist() == pytest.approx([2.0, 1 / 3])
    again = detector_from_state(detector_state(det))
    assert again.score(np.array([[5.0], [125.0]])).tolist() == pytest.approx([2.0, 1 / 3])


def test_kmeans_source_bank_and_target_mixing_change_only_the_banks():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(40, 3)), rng.normal(size=(3, 3)) + 4
    cfg = DetectConfig(metric="euclidean", standardize=False, source_bank="kmeans", kmeans_clusters=5, target_mix=2)
    det = KnnDetector(cfg).fit(source, target)
    assert det.banks["source"].shape == (5, 3) and det.banks["target"].shape == (3 + 3 * 2, 3)
    # a mix lies halfway between a target clip and one of its two nearest source clips
    nearest = np.argsort(((target[0] - source) ** 2).sum(1))[:2]
    assert np.allclose(det.banks["target"][3].numpy(), 0.5 * (target[0] + source[nearest[0]]), atol=1e-6)
    # a small bank is kept whole
    assert KnnDetector(cfg).fit(source[:4]).banks["source"].shape == (4, 3)
