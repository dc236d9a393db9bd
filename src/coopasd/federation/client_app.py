"""The Flower ClientApp of one factory: train locally, keep local state on its own disk.

A factory receives the global shared parameters, trains its encoder on its own normal clips
with its own margin head, and replies with the shared parameters only (plus example count and
training metrics). Its head, any non-shared parameters and, after the last round, its memory
banks, thresholds and submission files stay in its own folder. An evaluate message makes it
score its own test clips and reply with metric values only (as many as ``[privacy]
report_metrics`` allows).

Fault drill ``[federation] hostile``: a named factory trains honestly but sends a corrupted
update every round (:func:`hostile_update`), so the server's screening and robust rules can be
measured against it (``benchmarks/hostile.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from coopasd.config.settings import RunConfig, failing_rounds, from_toml_text, hostile_kind
from coopasd.data.dataset import FactoryData, load_factory_data
from coopasd.data.layout import SPLITS, discover_clips, list_machine_types
from coopasd.data.partition import Factory, parse_factories
from coopasd.federation.checkpoint import LocalState, params_hash
from coopasd.federation.privacy import clipped_params, secure_train
from coopasd.federation.records import (
    apply_shared,
    evaluate_request,
    from_record,
    metrics_reply,
    shared_keys,
    train_reply,
    train_request,
)
from coopasd.learn.participant import TrainedHead, evaluate_round, train_round
from coopasd.model.encoders import Encoder, initial_encoder, wants_autoencoder
from coopasd.rundir.writer import write_factory_result

# The run config keys of coopasd's Flower app (deploy/pyproject.toml [tool.flwr.app.config]).
RUN_CONFIG_KEYS = frozenset({"run-config", "run-dir", "factories", "resume"})


@dataclass(frozen=True)
class ClientSettings:
    """Who this factory is, where its data and its own disk are, and the run's settings."""

    config: RunConfig
    data_dir: Path
    factory: Factory
    work_dir: Path


def _encoder_for_round(
    settings: ClientSettings, shared: dict[str, torch.Tensor], server_round: int
) -> tuple[Encoder, TrainedHead]:
    """Initial encoder + this factory's own parameters and head (last round it trained) + the global shared ones."""
    cfg = settings.config
    encoder, _ = initial_encoder(cfg.model, cfg.train.seed, autoencoder=wants_autoencoder(cfg.detect))
    local = LocalState.latest(settings.work_dir, server_round)
    if local is not None:
        encoder.load_state_dict(local.local_params, strict=False)
    apply_shared(encoder, shared)
    return encoder, TrainedHead(local.head, local.classes) if local else TrainedHead()


def _load(settings: ClientSettings, splits: tuple[str, ...] = SPLITS) -> FactoryData:
    clips = discover_clips(settings.data_dir, settings.factory.machine_types, splits=splits)
    return load_factory_data(clips, settings.factory, settings.config.data)


def hostile_update(
    sent: dict[str, torch.Tensor], received: dict[str, torch.Tensor], kind: str, seed: int
) -> dict[str, torch.Tensor]:
    """What a hostile factory sends instead of its trained parameters ``sent`` (global: ``received``).

    nan: every value NaN; scale100: the update (sent - received) times 100; signflip: the update
    reversed; noise: per tensor, Gaussian noise with the update's norm in place of the update;
    shape: the first tensor with one extra row.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sent.items():
        delta = value - received[key]
        if kind == "nan":
            value = torch.full_like(value, float("nan"))
        elif kind == "scale100":
            value = received[key] + 100.0 * delta
        elif kind == "signflip":
            value = received[key] - delta
        elif kind == "noise":
            noise = torch.randn(value.shape, generator=gen, dtype=value.dtype)
            value = received[key] + noise * (delta.norm() / noise.norm().clamp_min(1e-12))
        elif kind != "shape":
            raise ValueError(f"unknown hostile kind '{kind}'")
        out[key] = value
    if kind == "shape":
        key = next(k for k, v in out.items() if v.ndim >= 1)
        out[key] = torch.cat([out[key], out[key][:1]])
    return out


def handle_train(msg: Message, settings: ClientSettings) -> Message:
    """One round of local training; replies with the shared parameters and metrics."""
    cfg, name = settings.config, settings.factory.name
    shared, server_round, lr_scale, proximal_mu = train_request(msg)
    if server_round in failing_rounds(cfg.federation.drop_out, name):
        raise RuntimeError(f"factory {name}: fault drill, dropping out of round {server_round}")
    encoder, head = _encoder_for_round(settings, shared, server_round)
    data = _load(settings, ("train",))
    trained = train_round(encoder, data, cfg, server_round, lr_scale, proximal_mu, head.state, shared)
    keys = shared_keys(encoder, cfg.federation.share)
    local_params = {k: v for k, v in encoder.state_dict().items() if k not in set(keys)}
    LocalState(trained.state, trained.classes, local_params).save(settings.work_dir, server_round)
    if cfg.privacy.dp_clip > 0:  # [privacy]: the factory bounds its own update (privacy.py)
        apply_shared(encoder, clipped_params(encoder.state_dict(), shared, cfg.privacy.dp_clip))
    reply = train_reply(encoder, keys, name, len(data.train_clips), trained.history, params_hash(shared)[:16])
    kind = hostile_kind(cfg.federation.hostile, name)
    if kind is not None:
        seed = cfg.train.seed + server_round * 7 + zlib.crc32(name.encode())
        reply["arrays"] = ArrayRecord(hostile_update(from_record(reply["arrays"]), shared, kind, seed))
    return Message(reply, reply_to=msg)


def handle_evaluate(msg: Message, settings: ClientSettings) -> Message:
    """Score own test clips with the global model (after the last round: personalize, keep the
    detector and the scores on this factory's disk); reply with metric values only."""
    shared, server_round, final = evaluate_request(msg)
    encoder, head = _encoder_for_round(settings, shared, server_round + 1)
    data = _load(settings)
    result = evaluate_round(encoder, data, settings.config, head, server_round, final)
    if final:
        write_factory_result(settings.work_dir, result)
    report = settings.config.privacy.report_metrics
    return Message(metrics_reply(settings.factory.name, len(data.test_clips), result.sections, report), reply_to=msg)


def settings_from_context(context: Context) -> ClientSettings:
    """Deployment: the SuperNode's ``--node-config`` names the factory, its data and its folder.

    node config keys: ``data-dir`` (required), ``factory`` (name; default: the data's only or
    all machine types), ``machines`` (``a+b``), ``work-dir`` (default ``<data-dir>/../coopasd-work``).
    Run config key ``run-config``: the run's TOML text (default settings when absent).
    A run whose config keys are not exactly coopasd's (another app reusing this ClientApp) is refused.
    """
    if set(context.run_config) != RUN_CONFIG_KEYS:
        raise ValueError(
            f"refusing run {context.run_id}: its run config keys {sorted(context.run_config)} are not those of "
            f"coopasd's Flower app {sorted(RUN_CONFIG_KEYS)}"
        )
    node = context.node_config
    if "data-dir" not in node:
        raise ValueError("this SuperNode has no 'data-dir' in its --node-config")
    data_dir = Path(str(node["data-dir"]))
    text = str(context.run_config.get("run-config", ""))
    config = from_toml_text(text) if text else RunConfig()
    machines = str(node.get("machines", "")) or "+".join(list_machine_types(data_dir))
    name = str(node.get("factory", "")) or machines.replace("+", "-")
    members = machines.split("+")
    factory = parse_factories(
        f"{name}={machines}", [m.split("/")[0] for m in members], [m for m in members if "/" in m]
    )[0]
    work_dir = Path(str(node.get("work-dir", data_dir.parent / "coopasd-work" / name)))
    return ClientSettings(config, data_dir, factory, work_dir)


def simulation_settings(
    context: Context, config: RunConfig, data_dir: Path, factories: list[Factory], run_dir: Path
) -> ClientSettings:
    """Simulation: virtual SuperNode ``partition-id`` i plays factory i (one thread each: the
    factories share this machine's cores, and one thread keeps their training reproducible)."""
    torch.set_num_threads(1)
    factory = factories[int(context.node_config["partition-id"])]
    return ClientSettings(config, data_dir, factory, run_dir / "factories" / factory.name)


def make_client_app(settings_of: Callable[[Context], ClientSettings]) -> ClientApp:
    """A ClientApp whose settings come from ``settings_of(context)``."""
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        settings = settings_of(context)
        if settings.config.privacy.secure_aggregation:  # [privacy]: SecAgg+ protocol around training (privacy.py)
            return secure_train(msg, context, lambda m: handle_train(m, settings), settings.config.privacy)
        return handle_train(msg, settings)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, settings_of(context))

    return client


app = make_client_app(settings_from_context)
