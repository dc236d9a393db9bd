"""Every setting as a frozen dataclass; TOML files and CLI flags land in the same objects.

Unknown keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from coopasd.config.factories import factory_parts
from coopasd.errors import ConfigError

SAMPLE_RATE = 16_000  # Hz: the rate every encoder and feature of coopasd works at (BEATs' fbank)
MAX_SECONDS = 600.0  # longest clip length [data] seconds may ask for (a typo of 1e6 s would fill the memory)
MAX_K = 1000  # most neighbours per bank a config may ask for (more is the mean over the whole bank)


def _check(ok: bool, section: str, name: str, value: Any, rule: str) -> None:
    """Raise a ConfigError naming section, key and value unless ``ok``."""
    if not ok:
        raise ConfigError(f"[{section}] {name} = {value!r}: {rule}")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _at_least(obj: Any, section: str, name: str, low: float, rule: str = "") -> None:
    value = getattr(obj, name)
    _check(_finite(value) and value >= low, section, name, value, rule or f"must be at least {low:g}")


def _positive(obj: Any, section: str, name: str) -> None:
    value = getattr(obj, name)
    _check(_finite(value) and value > 0, section, name, value, "must be a positive number")


def _fraction(obj: Any, section: str, name: str, low_open: bool, high_open: bool) -> None:
    value = getattr(obj, name)
    low_ok = _finite(value) and (value > 0 if low_open else value >= 0)
    high_ok = _finite(value) and (value < 1 if high_open else value <= 1)
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    _check(low_ok and high_ok, section, name, value, f"must lie in {interval}")


def _k(obj: Any, section: str, name: str = "k") -> None:
    value = getattr(obj, name)
    _check(
        1 <= value <= MAX_K,
        section,
        name,
        value,
        f"must be between 1 and {MAX_K} (a k larger than a memory bank averages the whole bank)",
    )


@dataclass(frozen=True)
class DataConfig:
    """How clips are read."""

    sample_rate: int = SAMPLE_RATE  # [Hz] rate clips are brought to; other rates are resampled
    seconds: float = 0.0  # [s] 0 = each clip's own length (no crop); > 0 = crop longer clips, tile shorter ones
    on_error: Literal["raise", "skip"] = "raise"  # bad clips: fail listing all, or skip and count

    def __post_init__(self) -> None:
        _check(
            self.sample_rate == SAMPLE_RATE,
            "data",
            "sample_rate",
            self.sample_rate,
            f"must be {SAMPLE_RATE}: every encoder and feature of coopasd works at 16 kHz "
            "(clips at other rates are resampled to it on load)",
        )
        _check(
            _finite(self.seconds) and 0 <= self.seconds <= MAX_SECONDS,
            "data",
            "seconds",
            self.seconds,
            f"must be 0 (each clip's own length) or a clip length in seconds up to {MAX_SECONDS:g}",
        )


@dataclass(frozen=True)
class BaselineConfig:
    """The non-learned log-mel kNN floor."""

    k: int = 1  # [neighbours] per memory bank
    normalize: Literal["loo", "none"] = "loo"  # per-bank leave-one-out distance normalization

    def __post_init__(self) -> None:
        _k(self, "baseline")


@dataclass(frozen=True)
class TrainConfig:
    """Local training settings."""

    epochs: int = 10  # [epochs] passes over the participant's clips (centralized, local-only)
    batch_size: int = 16  # [clips] per training step
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_fraction: float = 0.1  # [fraction] of steps with linear warm-up, then cosine decay
    grad_clip: float = 1.0  # largest gradient norm (clipped above)
    margin: float = 0.2  # [rad] ArcFace angular margin
    scale: float = 30.0  # ArcFace logit scale
    target_fraction: float = 0.2  # [fraction] of an epoch: target-domain clips are oversampled to it
    crop_seconds: float = 1.0  # [s] random crop per training clip (0 = whole clip)
    spec_augment: bool = True  # one time and one frequency mask per clip
    mixup: float = 0.0  # Beta(a, a) mixup of waveforms and labels; 0 = off
    pseudo_anomalies: bool = True  # add perturbed-clip classes to the auxiliary task
    class_table: Literal["local", "shared"] = "local"  # shared: classes = all [partition] units, fixed centres
    freeze_backbone: bool = False  # train only LoRA adapters (and the head)
    proximal_mu: float = 0.0  # FedProx: mu/2 * ||w - w_global||^2 (federated rounds)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to train
    seed: int = 0  # sampling, crops, augmentation

    def __post_init__(self) -> None:
        _at_least(self, "train", "epochs", 0, "must be 0 (no fine-tuning: the encoder is used as it starts) or more")
        _at_least(self, "train", "batch_size", 1)
        for name in ("lr", "grad_clip", "scale"):
            _positive(self, "train", name)
        for name in ("weight_decay", "crop_seconds", "mixup", "proximal_mu", "seed"):
            _at_least(self, "train", name, 0)
        _fraction(self, "train", "warmup_fraction", low_open=False, high_open=True)
        _fraction(self, "train", "target_fraction", low_open=False, high_open=True)
        _check(
            _finite(self.margin) and 0 <= self.margin < math.pi / 2,
            "train",
            "margin",
            self.margin,
            "must lie in [0, pi/2) radians",
        )


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and how a clip embedding is made from it."""

    backbone: Literal["beats", "aisfx"] = "beats"  # learned encoder: BEATs, or the shipped aiSFX CNN fine-tuned
    aisfx_train_blocks: int = 1  # [blocks] backbone = "aisfx": top conv blocks that train (1-4); the rest stay frozen
    preset: Literal["tiny", "base"] = "tiny"  # BEATs shape (used when no checkpoint gives one)
    checkpoint: str = "pretrained"  # "pretrained" (shipped tiny), "none" (random init) or a path
    pooling: Literal["mean", "mean_freq"] = "mean_freq"  # mean over patches, or over time per frequency
    layer: int = 1  # transformer layer whose output is pooled (-1 = last)
    lora_rank: int = 0  # [rank] > 0: LoRA adapters of this rank on the attention projections
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"  # encoder arithmetic; auto: bf16 on CUDA, fp32 on CPU

    def __post_init__(self) -> None:
        _at_least(self, "model", "layer", -1, "must be -1 (the last layer) or a layer index from 0")
        _at_least(self, "model", "lora_rank", 0, "must be 0 (no LoRA) or a positive rank")
        _check(
            1 <= self.aisfx_train_blocks <= 4,
            "model",
            "aisfx_train_blocks",
            self.aisfx_train_blocks,
            "must be 1..4 (the aiSFX CNN has 4 conv blocks)",
        )
        _check(
            self.backbone == "beats" or self.lora_rank == 0,
            "model",
            "lora_rank",
            self.lora_rank,
            "LoRA adapts BEATs' attention: with backbone = 'aisfx' set lora_rank = 0 (aisfx_train_blocks trains)",
        )


# what a detector member's memory banks can hold; "ae": the frame autoencoder's reconstruction error
DETECTOR_MEMBERS = ("learned", "logmel", "aisfx", "ae")
FEATURE_ALIASES = {"fusion": ("learned", "logmel")}


def detector_members(features: str) -> tuple[str, ...]:
    """``[detect] features`` as member names: "learned+aisfx+logmel" -> ("learned", "aisfx", "logmel")."""
    members = FEATURE_ALIASES.get(features) or tuple(m.strip() for m in features.split("+") if m.strip())
    unknown = [m for m in members if m not in DETECTOR_MEMBERS]
    if not members or unknown or len(set(members)) != len(members):
        raise ConfigError(
            f"[detect] features = {features!r}: expected members of {', '.join(DETECTOR_MEMBERS)} joined by '+' "
            f"(each once), or one of {', '.join(FEATURE_ALIASES)}"
        )
    return members


@dataclass(frozen=True)
class DetectConfig:
    """The kNN detector that scores clips (one source and one target memory bank per section)."""

    features: str = "learned+aisfx+logmel"  # members joined by "+" (aisfx frozen); "fusion" = learned+logmel
    metric: Literal["euclidean", "cosine"] = "euclidean"  # distance between learned embeddings
    standardize: bool = True  # z-score learned embeddings with the training clips' statistics first
    k: int = 1  # [neighbours] per memory bank
    normalize: Literal["loo", "density", "none"] = "loo"  # loo: / the bank's leave-one-out median; density: / member's
    density_k: int = 16  # [neighbours] normalize = "density": a member's density = mean distance to its K nearest
    source_bank: Literal["all", "kmeans"] = "all"  # source memory bank: every clip, or k-means centroids
    kmeans_clusters: int = 16  # [centroids] per section, when source_bank = "kmeans"
    target_mix: int = 0  # [mixes per clip] target bank += 0.5 * (t + s) for each target clip and its N nearest sources
    threshold_quantile: float = 0.9  # [quantile] of the gamma fit to training scores: the decision threshold
    member_weights: Literal["equal", "validated"] = "equal"  # mean, or weights: held-back normals vs pseudo-anomalies
    validation_share: float = 0.25  # [fraction] "validated": each domain's normal training clips held back

    def __post_init__(self) -> None:
        detector_members(self.features)
        _fraction(self, "detect", "validation_share", low_open=True, high_open=True)
        _k(self, "detect")
        _k(self, "detect", "density_k")
        _at_least(self, "detect", "kmeans_clusters", 1)
        _at_least(self, "detect", "target_mix", 0)
        _fraction(self, "detect", "threshold_quantile", low_open=True, high_open=True)


@dataclass(frozen=True)
class PartitionConfig:
    """Which factory holds which machine types."""

    factories: str = ""  # "name=a+b;name2=c"; empty = one factory per machine type

    def __post_init__(self) -> None:
        factory_parts(self.factories)  # syntax and unique names now; the machine types once the data is read


@dataclass(frozen=True)
class FederationConfig:
    """Federated training with Flower."""

    rounds: int = 10  # [rounds] of aggregation
    local_epochs: int = 1  # [epochs] each factory trains per round (rounds x local_epochs = [train] epochs)
    strategy: Literal["fedavg", "fedavgm", "fedadam", "fedprox"] = "fedavgm"  # server aggregation (see docs)
    share: Literal["encoder", "no_norm", "lora"] = "encoder"  # what crosses the wire (heads never do)
    proximal_mu: float = 0.01  # FedProx term (strategy "fedprox")
    server_lr: float = 1.0  # FedAvgM server learning rate / FedAdam eta
    server_momentum: float = 0.9  # FedAvgM momentum
    lr_decay: float = 0.8  # client learning rate x lr_decay ** (round - 1)
    min_participants: int = 2  # [factories] a round is aggregated only when at least this many factories answer
    round_timeout: float = 900.0  # [s] to wait for the factories' replies in a round
    evaluate_every: int = 1  # [rounds] between federated metrics (per-round curves); 0 = at the end only
    personalize_epochs: int = 1  # [epochs] after the last round, each factory fine-tunes the global model locally
    drop_out: str = ""  # fault drill: "factory:round+round;..." makes those factories fail those rounds
    keep_checkpoints: int = 2  # [files] round_NNN.pt global checkpoints kept beside latest.pt; -1 = all
    aggregation: Literal["mean", "median", "trimmed_mean", "krum"] = "trimmed_mean"  # robust rule
    max_hostile: int = 1  # [factories] hostile ones tolerated per round (trimmed_mean cuts f per side)
    update_norm_bound: float = 3.0  # [x median norm] reject larger updates; 0 = no bound
    weight_cap: float = 2.0  # [x median claim] cap on an update's num-examples weight
    hostile: str = ""  # fault drill: "factory:kind;..." (nan|scale100|signflip|noise|shape) corrupts its every update

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs", "min_participants"):
            _at_least(self, "federation", name, 1)
        for name in ("server_lr", "lr_decay", "round_timeout"):
            _positive(self, "federation", name)
        for name in ("proximal_mu", "evaluate_every", "personalize_epochs"):
            _at_least(self, "federation", name, 0)
        _fraction(self, "federation", "server_momentum", low_open=False, high_open=True)
        parse_drop_out(self.drop_out)
        parse_drill(self.hostile, "hostile", _hostile_kind)
        _at_least(self, "federation", "max_hostile", 0)
        _at_least(self, "federation", "update_norm_bound", 0)
        _at_least(self, "federation", "weight_cap", 1)


@dataclass(frozen=True)
class PrivacyConfig:
    """What the server may learn about one factory (coopasd.federation.privacy); audio and scores never leave it.

    ``report_metrics``: what an evaluate reply carries. ``per_factory``: AUC(source), AUC(target),
    pAUC, clip and anomaly counts per machine type and section. ``aggregate``: three numbers, the
    harmonic means of the factory's own AUC(source), AUC(target) and pAUC values over its sections,
    no counts, no machine names; the server's score is the harmonic mean of all factories' triples
    (equal to the official score when every factory holds the same number of sections).
    ``none``: no metric values at all (no per-round curve; the run directory's metrics still come
    from the factories' own folders).
    """

    secure_aggregation: bool = False  # Flower SecAgg+: the server only learns the sum of the factories' updates
    secagg_range: float = 0.1  # SecAgg+ without DP: bound on |local - global| per parameter per round
    dp_noise_multiplier: float = 0.0  # Gaussian noise std / dp_clip on the sum of updates; 0 = no DP
    dp_clip: float = 0.0  # L2 bound on each factory's update (local - global) per round; 0 = no clipping
    dp_delta: float = 1e-5  # the delta of the reported (epsilon, delta) factory-level guarantee
    report_metrics: Literal["per_factory", "aggregate", "none"] = "per_factory"  # evaluate replies (see above)


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
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        if self.train.class_table == "shared" and "=" not in self.partition.factories:
            raise ConfigError(
                '[train] class_table = "shared" classifies among the units [partition] factories names: set factories'
            )
        if self.federation.share == "lora" and self.model.lora_rank == 0:
            raise ConfigError("[federation] share = 'lora' needs LoRA adapters: set [model] lora_rank > 0 (e.g. 8)")
        if "ae" in detector_members(self.detect.features) and self.train.epochs == 0:
            raise ConfigError(
                "[detect] features holds 'ae', the frame autoencoder, which learns from the normal clips: "
                "[train] epochs = 0 would leave it untrained (set epochs >= 1 or drop the member)"
            )
        rule, private = self.federation.aggregation, self.privacy.secure_aggregation or self.privacy.dp_clip > 0
        if private and rule != "mean":
            raise ConfigError(
                f"[federation] aggregation = '{rule}' needs each factory's own update, but with [privacy] "
                "secure_aggregation or dp_clip the server aggregates their (clipped) sum: set aggregation = 'mean'"
            )


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
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"[{section}] {name} = {value!r}: expected a finite number (nan and inf are not settings)")
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


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few kB; more (or /dev/zero) is refused before it is all read


def _read_config_file(path: Path) -> bytes:
    """The file's bytes: a regular file of at most :data:`MAX_CONFIG_BYTES` (a FIFO or device is refused
    without waiting for a writer: opened non-blocking, then checked)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file (a pipe, device or socket); give a TOML file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a config file is a few kB of TOML")
    return data


def load_run_config(path: Path | None) -> RunConfig:
    """Read a TOML run config (sections as in :class:`RunConfig`); None gives the defaults."""
    if path is None:
        return RunConfig()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        values = tomllib.loads(_read_config_file(path).decode("utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file does not exist") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); expected TOML") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    except RecursionError as err:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from err
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
    merged = dataclasses.asdict(config)
    for section, values in sections.items():
        if section not in merged:
            raise ConfigError(f"unknown config section [{section}]")
        merged[section].update({k: v for k, v in values.items() if v is not None})
    return build(RunConfig, merged)  # every section and the cross-section rules checked once, flags included


_DROP_OUT_PART = re.compile(r"^\s*([^:;]+?)\s*:\s*(\d+(?:\s*\+\s*\d+)*)\s*$")


def parse_drop_out(spec: str) -> dict[str, set[int]]:
    """``[federation] drop_out`` ("name:1+2;name2:3") -> {factory: rounds}; a malformed spec is a ConfigError."""
    out: dict[str, set[int]] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        match = _DROP_OUT_PART.match(part)
        if not match or any(int(r) < 1 for r in match[2].split("+")):
            raise ConfigError(
                f"[federation] drop_out = {spec!r}: part {part.strip()!r} is not 'factory:round+round' "
                "(rounds are whole numbers from 1)"
            )
        out.setdefault(match[1], set()).update(int(r) for r in match[2].split("+"))
    return out


def from_flags(
    path: Path | None,
    checkpoint: str | None = None,
    factories: str | None = None,
    skip_bad_clips: bool = False,
    **sections: dict[str, Any],
) -> RunConfig:
    """:func:`load_config` with the flags that train, federate and compare share (None: not given)."""
    shared = {"model": {"checkpoint": checkpoint}, "partition": {"factories": factories}}
    shared["data"] = {"on_error": "skip" if skip_bad_clips else None}
    return load_config(path, **{k: shared.get(k, {}) | sections.get(k, {}) for k in shared | sections})


HOSTILE_KINDS = ("nan", "scale100", "signflip", "noise", "shape")  # what a hostile factory sends (fault drill)


def _rounds(text: str) -> set[int]:
    rounds = {int(r) for r in text.split("+") if r.strip()}  # ValueError for a non-number
    if not rounds or min(rounds) < 1:
        raise ValueError("expected round numbers >= 1 joined by '+'")
    return rounds


def _hostile_kind(text: str) -> str:
    if text.strip() not in HOSTILE_KINDS:
        raise ValueError(f"expected one of {', '.join(HOSTILE_KINDS)}")
    return text.strip()


def parse_drill(spec: str, key: str, parse: Callable[[str], Any]) -> dict[str, Any]:
    """A fault-drill spec ``"factory:value;factory:value"`` as {factory: parsed value}.

    Repeated factories merge (sets are joined; other values must agree). Malformed specs raise a
    ConfigError naming ``[federation] <key>`` and the bad part.
    """
    out: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        name, sep, value = (x.strip() for x in part.partition(":"))
        try:
            if not sep or not name:
                raise ValueError("expected 'factory:value'")
            parsed = parse(value)
        except ValueError as err:
            raise ConfigError(f"[federation] {key} = {spec!r}: bad part {part!r} ({err})") from err
        if isinstance(parsed, set):
            out[name] = out.get(name, set()) | parsed
        elif out.setdefault(name, parsed) != parsed:
            raise ConfigError(f"[federation] {key} = {spec!r}: factory {name!r} is given twice")
    return out


def failing_rounds(spec: str, factory: str) -> set[int]:
    """Rounds in which ``factory`` fails on purpose, from ``[federation] drop_out`` ("name:1+2;...")."""
    return parse_drop_out(spec).get(factory, set())


def hostile_kind(spec: str, factory: str) -> str | None:
    """What ``factory`` sends instead of its honest update, from ``[federation] hostile``, or None."""
    return parse_drill(spec, "hostile", _hostile_kind).get(factory)


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
    except RecursionError as err:
        raise ConfigError("run config is not valid TOML (arrays or tables nested too deeply)") from err
