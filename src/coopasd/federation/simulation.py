"""Flower Simulation Engine: every factory as a virtual SuperNode on this machine."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message

from coopasd.config.settings import RunConfig, parse_drill
from coopasd.data.layout import check_trainable, discover_clips
from coopasd.data.partition import factories_of
from coopasd.dcase.results import FactoryResult
from coopasd.errors import CoopasdError, Interrupted
from coopasd.federation.checkpoint import GlobalCheckpoint, completed_rounds, verify_local_states
from coopasd.federation.client_app import make_client_app, simulation_settings
from coopasd.federation.privacy import check_privacy_config
from coopasd.federation.server_app import ServerSettings, make_server_app
from coopasd.federation.stopping import interruptible
from coopasd.federation.strategy import check_rule
from coopasd.rundir.writer import FEDERATION_FILE, read_factory_result, read_json


class RunSimulationNotice(logging.Filter):
    """Drops flwr 1.42's "DEPRECATED FEATURE: `run_simulation`" warning, printed with raw ANSI codes on
    every run. We call ``run_simulation`` on purpose: its replacement, ``flwr run``, starts a SuperLink
    daemon and builds a per-run environment, which an offline one-machine run cannot use."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


RUN_SIMULATION_NOTICE = RunSimulationNotice()


class FactoryTracebacks(logging.Filter):
    """Drops the simulated fleet's three ERROR records per failed factory task (a notice, the Ray-wrapped
    exception and its traceback, about 80 lines): the failure reaches the server as an error reply, and
    the server logs it as one line naming the factory and the exception's own text
    (:func:`coopasd.federation.records.failure_reason`). Kept when the run logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        vce = f"{os.sep}fleet{os.sep}vce{os.sep}"  # flwr.server.superlink.fleet.vce: the Simulation Engine's fleet
        return not (record.levelno >= logging.ERROR and vce in record.pathname)


FACTORY_TRACEBACKS = FactoryTracebacks()


def _quiet_flower() -> None:
    """Importing flwr sets its logger to DEBUG; keep its per-round INFO chatter out unless we log debug,
    the ``run_simulation`` deprecation notice out always, and a failed factory's tracebacks out unless
    we log debug (the server says in one line which factory failed and why)."""
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.DEBUG if debug else logging.WARNING)
    flower.addFilter(RUN_SIMULATION_NOTICE)  # a no-op when it is already there
    if debug:
        flower.removeFilter(FACTORY_TRACEBACKS)
    else:
        flower.addFilter(FACTORY_TRACEBACKS)


def confine_ray() -> dict[str, str]:
    """Make the Ray cluster this process starts listen on 127.0.0.1 only and demand a token; returns the settings.

    Without this, Ray 2.55 starts its GCS, raylet and worker servers on every interface (``ss -ltnp``
    shows ``*:port``), reachable from the plant network. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is
    Ray's single-machine mode: the node address becomes 127.0.0.1 and every Ray server binds it.
    ``RAY_AUTH_MODE=token`` makes each Ray call carry a random per-process token (``RAY_AUTH_TOKEN``),
    which keeps other local users out too. Must run before ``ray`` is imported.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise CoopasdError(
            "ray was imported before coopasd could confine it to 127.0.0.1; "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment, or run coopasd in its own process"
        )
    return {k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}


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
    confine_ray()
    from flwr.simulation import run_simulation

    _quiet_flower()
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    clips = discover_clips(data_dir)
    check_trainable(clips)
    factories = factories_of(cfg.partition.factories, ((c.machine_type, c.section) for c in clips))
    if len(factories) < cfg.federation.min_participants:
        raise CoopasdError(
            f"{len(factories)} factories but [federation] min_participants = {cfg.federation.min_participants}"
        )
    check_rule(cfg.federation, len(factories))
    check_privacy_config(cfg, len(factories))
    drilled = set(parse_drill(cfg.federation.hostile, "hostile", str)) - {f.name for f in factories}
    if drilled:
        raise CoopasdError(f"[federation] hostile names unknown factories {sorted(drilled)}")
    result_file = run_dir / FEDERATION_FILE
    result_file.unlink(missing_ok=True)
    if not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "factories", ignore_errors=True)
    else:  # a bad saved state is an error now, not a factory silently left out of the resumed rounds
        latest = run_dir / "checkpoints" / "latest.pt"
        if not latest.exists():
            raise CoopasdError(f"{latest}: nothing to resume from (no global checkpoint in {run_dir})")
        GlobalCheckpoint.load(latest)
        verify_local_states(run_dir / "factories" / f.name for f in factories)

    def client_settings(context: Context):
        return simulation_settings(context, cfg, data_dir, factories, run_dir)

    stop = threading.Event()  # Ctrl-C: the ServerApp thread stops waiting (stopping.py)

    def server_settings(context: Context) -> ServerSettings:
        return ServerSettings(cfg, run_dir, len(factories), resume, on_round, on_reply, stop)

    cpus = max(1, os.cpu_count() or 1)
    try:
        with interruptible(stop):
            run_simulation(
                server_app=make_server_app(server_settings),
                client_app=make_client_app(client_settings),
                num_supernodes=len(factories),
                backend_config={
                    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                    "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False},
                },
            )
    except KeyboardInterrupt:
        stop.set()  # the ServerApp thread stops waiting for replies
        import ray

        ray.shutdown()  # the factories' actors and Ray's servers (Flower's worker threads may still wait: errors.py)
        saved = completed_rounds(run_dir)
        raise Interrupted(
            f"interrupted: {saved} of {cfg.federation.rounds} rounds are saved in {run_dir / 'checkpoints'}"
        ) from None
    if not result_file.exists():
        raise CoopasdError(f"the federated run ended without a result ({result_file}); see the log above")
    result = read_json(result_file)
    if "error" in result:
        raise CoopasdError(f"{result['error']} (rounds in {result_file})")
    own = [read_factory_result(run_dir / "factories" / f.name, clips) for f in factories]
    return result, own
