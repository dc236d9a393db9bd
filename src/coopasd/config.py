"""Every setting as a frozen dataclass; TOML files and CLI flags land in the same objects.

Unknown keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from coopasd.errors import ConfigError

SAMPLE_RATE = 16_000  # Hz: the rate every encoder and feature of coopasd works at (BEATs' fbank)


@dataclass(frozen=True)
class DataConfig:
    """How clips are read."""

    sample_rate: int = SAMPLE_RATE  # Hz; other rates are resampled
    seconds: float = 2.0  # clip length after crop/tile (see coopasd.data.audio)
    on_error: Literal["raise", "skip"] = "raise"  # bad clips: fail listing all, or skip and count


@dataclass(frozen=True)
class BaselineConfig:
    """The non-learned log-mel kNN floor."""

    k: int = 1  # neighbours per bank
    normalize: Literal["loo", "none"] = "loo"  # per-bank leave-one-out distance normalization


@dataclass(frozen=True)
class TrainConfig:
    """Local training settings."""

    epochs: int = 10  # passes over the participant's clips (centralized, local-only)
    batch_size: int = 16  # clips per step
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_fraction: float = 0.1  # share of steps with linear warm-up, then cosine decay
    grad_clip: float = 1.0  # max gradient norm
    margin: float = 0.2  # ArcFace angular margin (radians)
    scale: float = 30.0  # ArcFace logit scale
    target_fraction: float = 0.2  # oversample target-domain clips to this share of an epoch
    crop_seconds: float = 1.0  # random crop per training clip (0 = whole clip)
    spec_augment: bool = True  # one time and one frequency mask per clip
    mixup: float = 0.0  # Beta(a, a) mixup of waveforms and labels; 0 = off
    pseudo_anomalies: bool = True  # add perturbed-clip classes to the auxiliary task
    freeze_backbone: bool = False  # train only LoRA adapters (and the head)
    proximal_mu: float = 0.0  # FedProx: mu/2 * ||w - w_global||^2 (federated rounds)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to train
    seed: int = 0  # sampling, crops, augmentation


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and how a clip embedding is made from it."""

    preset: Literal["tiny", "base"] = "tiny"  # BEATs shape (used when no checkpoint gives one)
    checkpoint: str = "pretrained"  # "pretrained" (shipped tiny), "none" (random init) or a path
    pooling: Literal["mean", "mean_freq"] = "mean_freq"  # mean over patches, or over time per frequency
    layer: int = 1  # transformer layer whose output is pooled (-1 = last)
    lora_rank: int = 0  # > 0: LoRA adapters of this rank on the attention projections
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"  # encoder arithmetic; auto: bf16 on CUDA, fp32 on CPU


@dataclass(frozen=True)
class DetectConfig:
    """The kNN detector that scores clips (one source and one target memory bank per section)."""

    features: Literal["fusion", "learned", "logmel"] = "fusion"  # which embeddings the banks hold
    metric: Literal["euclidean", "cosine"] = "euclidean"  # distance between learned embeddings
    standardize: bool = True  # z-score learned embeddings with the training clips' statistics first
    k: int = 1  # neighbours per bank
    normalize: Literal["loo", "none"] = "loo"  # divide each bank's distances by its leave-one-out median
    threshold_quantile: float = 0.9  # of the training scores' gamma fit -> decision threshold


@dataclass(frozen=True)
class PartitionConfig:
    """Which factory holds which machine types."""

    factories: str = ""  # "name=a+b;name2=c"; empty = one factory per machine type


@dataclass(frozen=True)
class FederationConfig:
    """Federated training with Flower."""

    rounds: int = 10  # aggregation rounds
    local_epochs: int = 1  # epochs each factory trains per round (rounds x local_epochs = [train] epochs)
    strategy: Literal["fedavg", "fedavgm", "fedadam", "fedprox"] = "fedavgm"  # server aggregation (ablation: README)
    share: Literal["encoder", "no_norm", "lora"] = "encoder"  # what crosses the wire (heads never do)
    proximal_mu: float = 0.01  # FedProx term (strategy "fedprox")
    server_lr: float = 1.0  # FedAvgM server learning rate / FedAdam eta
    server_momentum: float = 0.9  # FedAvgM momentum
    lr_decay: float = 0.8  # client learning rate x lr_decay ** (round - 1)
    min_participants: int = 2  # a round is aggregated only when at least this many factories answer
    round_timeout: float = 900.0  # seconds to wait for the factories' replies in a round
    evaluate_every: int = 1  # federated metric every N rounds (per-round curves); 0 = at the end only
    personalize_epochs: int = 1  # after the last round, each factory fine-tunes the global model locally
    drop_out: str = ""  # fault drill: "factory:round+round;..." makes those factories fail those rounds


@dataclass(frozen=True)
class RunConfig:
    """The effective configuration of one run, written as RUN_DIR/config.toml."""

    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)


def _check_value(section: str, name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"[{section}] {name} = {value!r}: expected one of {typing.get_args(annotation)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"[{section}] {name} = {value!r}: expected {annotation.__name__}")
    if isinstance(annotation, type) and annotation is int and isinstance(value, bool):
        raise ConfigError(f"[{section}] {name} = {value!r}: expected int")
    return value


def build(cls: type, values: dict[str, Any], section: str = "") -> Any:
    """Make dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys fail."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{section or 'top level'}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] must be a table")
            kwargs[name] = build(hint, value, name)
        else:
            kwargs[name] = _check_value(section, name, value, hint)
    return cls(**kwargs)


def load_run_config(path: Path | None) -> RunConfig:
    """Read a TOML run config (sections as in :class:`RunConfig`); None gives the defaults."""
    if path is None:
        return RunConfig()
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    try:
        return build(RunConfig, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def load_config(path: Path | None = None, **sections: dict[str, Any]) -> RunConfig:
    """The effective run config: the TOML file (or the defaults) with flag values on top.

    ``sections`` maps a section name to the values given on the command line; ``None`` values
    (flags that were not given) are ignored, e.g. ``load_config(path, train={"epochs": None})``.
    """
    config = load_run_config(path)
    for section, values in sections.items():
        if section not in {f.name for f in dataclasses.fields(RunConfig)}:
            raise ConfigError(f"unknown config section [{section}]")
        config = with_overrides(config, section, **values)
    return config


def failing_rounds(spec: str, factory: str) -> set[int]:
    """Rounds in which ``factory`` fails on purpose, from ``[federation] drop_out`` ("name:1+2;...")."""
    rounds: set[int] = set()
    for part in spec.split(";"):
        if ":" in part:
            name, numbers = part.split(":", 1)
            if name.strip() == factory:
                rounds.update(int(r) for r in numbers.split("+") if r.strip())
    return rounds


def with_overrides(config: RunConfig, section: str, **values: Any) -> RunConfig:
    """A copy of ``config`` with the non-None ``values`` set in ``section``."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return config
    current = dataclasses.asdict(getattr(config, section))
    current.update(values)
    return dataclasses.replace(config, **{section: build(type(getattr(config, section)), current, section)})


def to_toml(config: RunConfig) -> str:
    return tomli_w.dumps(dataclasses.asdict(config))


def from_toml_text(text: str) -> RunConfig:
    """A RunConfig from TOML text (as carried in a Flower run config)."""
    try:
        return build(RunConfig, tomllib.loads(text))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"run config is not valid TOML ({err})") from err
