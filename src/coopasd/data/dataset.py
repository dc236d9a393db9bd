"""One factory's clips, loaded: its normal training clips and its test clips."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from coopasd.config.settings import DataConfig
from coopasd.data.audio import load_many
from coopasd.data.layout import Clip
from coopasd.data.partition import Factory

Progress = Callable[[int], None]


@dataclass
class FactoryData:
    """One factory's loaded clips: ``train_waves`` ``(n_train, samples)``, ``test_waves`` ``(n_test, samples)``."""

    factory: Factory
    train_clips: list[Clip]
    train_waves: np.ndarray
    test_clips: list[Clip]
    test_waves: np.ndarray
    skipped: list[str] = field(default_factory=list)  # bad clips left out (``[data] on_error = "skip"``)

    @property
    def is_target(self) -> np.ndarray:
        """``(n_train,)`` bool: target-domain training clips."""
        return np.array([c.domain == "target" for c in self.train_clips], dtype=bool)


def load_factory_data(
    clips: Sequence[Clip], factory: Factory, data: DataConfig, progress: Progress | None = None
) -> FactoryData:
    """Load one factory's normal training clips and its test clips (bad clips per ``data.on_error``)."""
    own = [c for c in clips if factory.holds(c.machine_type, c.section)]
    train = [c for c in own if c.split == "train" and c.label == "normal"]
    test = [c for c in own if c.split == "test"]
    loaded_train = load_many([c.path for c in train], data.sample_rate, data.seconds, data.on_error, progress)
    # test clips at the training clips' length (the model's, whatever [data] seconds is), as coopasd score does
    seconds = data.seconds or loaded_train.waves.shape[1] / data.sample_rate
    loaded_test = load_many([c.path for c in test], data.sample_rate, seconds, data.on_error, progress)
    keep_train, keep_test = set(loaded_train.paths), set(loaded_test.paths)
    skipped = [str(e) for e in loaded_train.skipped + loaded_test.skipped]
    return FactoryData(
        factory,
        [c for c in train if c.path in keep_train],
        loaded_train.waves,
        [c for c in test if c.path in keep_test],
        loaded_test.waves,
        skipped,
    )


def load_all(
    clips: Sequence[Clip], factories: Sequence[Factory], data: DataConfig, progress: Progress | None = None
) -> list[FactoryData]:
    """Every factory's clips, in the order of ``factories``."""
    return [load_factory_data(clips, f, data, progress) for f in factories]


def clips_to_load(clips: Sequence[Clip]) -> int:
    """How many files :func:`load_all` reads (for progress bars): normal training clips and test clips."""
    return sum(1 for c in clips if c.split == "test" or c.label == "normal")
