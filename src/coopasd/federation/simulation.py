"""Flower Simulation Engine: every factory as a virtual SuperNode on this machine."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message

from coopasd.config import RunConfig, parse_drill
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.errors import CoopasdError
from coopasd.federation.client_app import make_client_app, simulation_settings
from coopasd.federation.server_app import ServerSettings, make_server_app
from coopasd.report import FEDERATION_FILE, read_factory_result, read_json
from coopasd.results import FactoryResult


def _quiet_flower() -> None:
    """Importing flwr sets its logger to DEBUG; keep its per-round INFO chatter out unless we log debug."""
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logging.getLogger("flwr").setLevel(logging.DEBUG if debug else logging.WARNING)


def run_simulated(
    cfg: RunConfig,
    data_dir: Path,
    run_dir: Path,
    resume: bool = False,
    on_round: Callable[[dict], None] | None = None,
    on_reply: Callable[[Message], None] | None = None,
) -> tuple[dict, list[FactoryResult]]:
    """Run the federation with Flower's Simulation Engine.

    Returns the server's result (metric values, rounds) and each factory's own result, read from
    the factory's folder ``run_dir/factories/<name>`` (on this disk, since every factory is simulated here).
    ``on_reply`` sees every reply the server receives, before it is screened (an audit of the wire).
    """
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    _quiet_flower()
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    clips = discover_clips(data_dir)
    factories = parse_factories(cfg.partition.factories, sorted({c.machine_type for c in clips}))
    if len(factories) < cfg.federation.min_participants:
        raise CoopasdError(
            f"{len(factories)} factories but [federation] min_participants = {cfg.federation.min_participants}"
        )
    drilled = set(parse_drill(cfg.federation.hostile, "hostile", str)) - {f.name for f in factories}
    if drilled:
        raise CoopasdError(f"[federation] hostile names unknown factories {sorted(drilled)}")
    result_file = run_dir / FEDERATION_FILE
    result_file.unlink(missing_ok=True)
    if not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "factories", ignore_errors=True)

    def client_settings(context: Context):
        return simulation_settings(context, cfg, data_dir, factories, run_dir)

    def server_settings(context: Context) -> ServerSettings:
        return ServerSettings(cfg, run_dir, len(factories), resume, on_round, on_reply)

    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=make_server_app(server_settings),
        client_app=make_client_app(client_settings),
        num_supernodes=len(factories),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False},
        },
    )
    if not result_file.exists():
        raise CoopasdError(f"the federated run ended without a result ({result_file}); see the log above")
    own = [read_factory_result(run_dir / "factories" / f.name, clips) for f in factories]
    return read_json(result_file), own
