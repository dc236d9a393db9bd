"""The Flower ClientApp of one factory: train locally, keep local state on its own disk.

A factory receives the global shared parameters, trains its encoder on its own normal clips
with its own margin head, and replies with the shared parameters only (plus example count and
training metrics). Its head, any non-shared parameters and, after the last round, its memory
banks, thresholds and submission files stay in its own folder. An evaluate message makes it
score its own test clips and reply with metric values only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from coopasd.config import RunConfig, from_toml_text
from coopasd.data.layout import discover_clips, list_machine_types
from coopasd.data.partition import Factory, parse_factories
from coopasd.experiment import (
    build_factory_model,
    initial_encoder,
    load_factory_data,
    score_factory,
    train_encoder,
)
from coopasd.federation.checkpoint import params_hash
from coopasd.federation.records import apply_shared, from_record, shared_keys, to_record
from coopasd.model.beats import BEATs
from coopasd.report import write_submission


@dataclass(frozen=True)
class ClientSettings:
    """Who this factory is, where its data and its own disk are, and the run's settings."""

    config: RunConfig
    data_dir: Path
    factory: Factory
    work_dir: Path


def _failing_rounds(spec: str, factory: str) -> set[int]:
    rounds: set[int] = set()
    for part in spec.split(";"):
        if ":" in part:
            name, numbers = part.split(":", 1)
            if name.strip() == factory:
                rounds.update(int(r) for r in numbers.split("+") if r.strip())
    return rounds


def _local_state_path(settings: ClientSettings, server_round: int) -> Path:
    return settings.work_dir / "local" / f"round_{server_round:03d}.pt"


def _latest_local_state(settings: ClientSettings, before_round: int) -> dict | None:
    """The factory's own state saved after its last round before ``before_round`` (if any)."""
    for r in range(before_round - 1, 0, -1):
        path = _local_state_path(settings, r)
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
    return None


def _encoder_for_round(
    settings: ClientSettings, arrays: ArrayRecord, server_round: int
) -> tuple[BEATs, dict, dict | None]:
    """Initial encoder + this factory's local parameters + the received global shared parameters."""
    cfg = settings.config
    encoder, _ = initial_encoder(cfg.model, cfg.train.seed)
    local = _latest_local_state(settings, server_round)
    if local is not None:
        encoder.load_state_dict(local["local_params"], strict=False)
    shared = from_record(arrays)
    apply_shared(encoder, shared)
    return encoder, shared, local


def handle_train(msg: Message, settings: ClientSettings) -> Message:
    """One round of local training; replies with the shared parameters and metrics."""
    cfg, fed = settings.config, settings.config.federation
    config = msg.content["config"]
    server_round = int(config["server-round"])
    if server_round in _failing_rounds(fed.drop_out, settings.factory.name):
        raise RuntimeError(f"factory {settings.factory.name}: fault drill, dropping out of round {server_round}")
    encoder, shared, local = _encoder_for_round(settings, msg.content["arrays"], server_round)
    clips = discover_clips(settings.data_dir, settings.factory.machine_types, splits=("train",))
    data = load_factory_data(clips, settings.factory, cfg.data)
    train_cfg = dataclasses.replace(
        cfg.train,
        epochs=fed.local_epochs,
        lr=cfg.train.lr * float(config.get("lr-scale", 1.0)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=cfg.train.seed + 1000 * server_round + sum(map(ord, settings.factory.name)),
    )
    round_cfg = dataclasses.replace(cfg, train=train_cfg)
    head_state, classes, history = train_encoder(
        encoder, [data], round_cfg, head_state=local["head"] if local else None, global_params=shared
    )
    keys = shared_keys(encoder, fed.share)
    local_params = {k: v for k, v in encoder.state_dict().items() if k not in set(keys)}
    path = _local_state_path(settings, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"head": head_state, "classes": classes, "local_params": local_params}, path)
    metrics = MetricRecord(
        {
            "num-examples": len(data.train_clips),
            "train-loss": history[-1].loss if history else 0.0,
            "train-accuracy": history[-1].accuracy if history else 0.0,
            "train-seconds": float(sum(h.seconds for h in history)),
        }
    )
    reply = RecordDict(
        {
            "arrays": to_record(encoder, keys),
            "metrics": metrics,
            "info": ConfigRecord({"factory": settings.factory.name, "received-hash": params_hash(shared)[:16]}),
        }
    )
    return Message(reply, reply_to=msg)


def handle_evaluate(msg: Message, settings: ClientSettings) -> Message:
    """Build memory banks with the global model, score own test clips, reply with metric values only."""
    cfg = settings.config
    config = msg.content["config"]
    server_round = int(config["server-round"])
    final = bool(config.get("final", False))
    encoder, _, local = _encoder_for_round(settings, msg.content["arrays"], server_round + 1)
    clips = discover_clips(settings.data_dir, settings.factory.machine_types)
    data = load_factory_data(clips, settings.factory, cfg.data)
    head = local["head"] if local else None
    classes = local["classes"] if local else []
    if final and cfg.federation.personalize_epochs > 0:
        # personalization: a few local epochs from the final global model, at the last round's learning rate
        scale = cfg.federation.lr_decay ** (cfg.federation.rounds - 1)
        tuned = dataclasses.replace(
            cfg.train,
            epochs=cfg.federation.personalize_epochs,
            lr=cfg.train.lr * scale,
            seed=cfg.train.seed + 7919 + sum(map(ord, settings.factory.name)),
        )
        head, classes, _ = train_encoder(encoder, [data], dataclasses.replace(cfg, train=tuned), head_state=head)
    model = build_factory_model(data, encoder, cfg, head, classes, {"mode": "federated", "round": server_round})
    sections = score_factory(model, data)
    values: dict[str, float | int] = {"num-examples": len(data.test_clips)}
    for sec in sections:
        if sec.evaluable:
            m = sec.metrics()
            prefix = f"{sec.machine_type}/{sec.section}"
            values |= {
                f"{prefix}/auc_source": m.auc_source,
                f"{prefix}/auc_target": m.auc_target,
                f"{prefix}/pauc": m.pauc,
                f"{prefix}/n_clips": m.n_clips,
                f"{prefix}/n_anomalies": m.n_anomalies,
            }
    if final:
        for sec in sections:
            write_submission(
                settings.work_dir, sec.machine_type, sec.section, [c.name for c in sec.clips], sec.scores, sec.decisions
            )
        model.save(settings.work_dir / "model.pt")
    info = ConfigRecord({"factory": settings.factory.name})
    return Message(RecordDict({"metrics": MetricRecord(values), "info": info}), reply_to=msg)


def settings_from_context(context: Context) -> ClientSettings:
    """Deployment: the SuperNode's ``--node-config`` names the factory, its data and its folder.

    node config keys: ``data-dir`` (required), ``factory`` (name; default: the data's only or
    all machine types), ``machines`` (``a+b``), ``work-dir`` (default ``<data-dir>/../coopasd-work``).
    Run config key ``run-config``: the run's TOML text (default settings when absent).
    """
    node = context.node_config
    if "data-dir" not in node:
        raise ValueError("this SuperNode has no 'data-dir' in its --node-config")
    data_dir = Path(str(node["data-dir"]))
    text = str(context.run_config.get("run-config", ""))
    config = from_toml_text(text) if text else RunConfig()
    machines = str(node.get("machines", "")) or "+".join(list_machine_types(data_dir))
    name = str(node.get("factory", "")) or machines.replace("+", "-")
    factory = parse_factories(f"{name}={machines}", machines.split("+"))[0]
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


def make_client_app(settings_of: callable) -> ClientApp:  # type: ignore[valid-type]
    """A ClientApp whose settings come from ``settings_of(context)``."""
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, settings_of(context))

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, settings_of(context))

    return client


app = make_client_app(settings_from_context)
