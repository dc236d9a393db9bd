"""What the server may learn about one factory's update: secure aggregation, differential privacy, accounting.

``[privacy] secure_aggregation``: Flower's SecAgg+ (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod``
on each factory). The factories mask their updates with pairwise and private masks so that the server
can unmask only the sum: it learns the weighted mean update of the factories that completed the round,
never one factory's update. SecAgg+ sums integers, so each factory sends its update
(local - global, not its parameters: an update is small and bounded) scaled into SecAgg+'s range
(values beyond +-8 are clipped) and quantized with stochastic rounding; the weighting by training
clips is folded in by the protocol (weight x update and the weight sum are both summed under the masks).
:class:`SecAggEncoding` states the precision: 2 x bound / (2^32 / 2^bits(n)) per value and factory.

``[privacy] dp_noise_multiplier``, ``dp_clip``, ``dp_delta``: factory-level differential privacy
(DP-FedAvg, McMahan et al. 2018). Each factory clips its own round update to L2 norm ``dp_clip``;
Gaussian noise of std ``dp_noise_multiplier x dp_clip`` is added to the *sum* of the clipped updates,
which is divided by the number of factories. The unit of privacy is a factory's whole training
set: the released global models (and everything computed from them) bound what anyone learns about
whether one factory's clips were used (add/remove-one-factory adjacency; replacing a factory's
data is covered at twice the sensitivity, i.e. at the epsilon of half the noise multiplier).
- without SecAgg+, the noise is *central*: the server clips again, sums, adds the noise. The
  server is trusted: it sees each factory's clipped update. Everyone else sees DP models.
- with SecAgg+, the noise is *distributed*: each factory adds N(0, (sigma C)^2 / n) to its clipped
  update before masking, so the unmasked sum carries N(0, (sigma C)^2) and even the server only
  sees a DP sum (honest-but-curious server and factories that follow the protocol; a factory that
  drops out leaves less noise in, which the accountant charges).
Every factory takes part in every round (sampling rate 1), so a round is one Gaussian mechanism;
the RDP accountant of Google's dp-accounting composes the rounds each factory took part in.
Metric values the factories report (losses, AUCs, clip counts) are not covered.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from coopasd.config.settings import PrivacyConfig, RunConfig
from coopasd.errors import ConfigError

log = logging.getLogger(__name__)

SECAGG_CLIPPING_RANGE = 8.0  # Flower's SecAgg+ clips every value it sums to +-8 before quantizing
SECAGG_MODULUS = 2**32  # Flower's SecAgg+ modulus: masks are drawn in [0, 2^32), sums wrap around it
SECAGG_MAX_WEIGHT = 10_000  # without DP, a factory's SecAgg+ weight is min(its training clips, this)
SECAGG_NOISE_TAILS = 8.0  # with DP, the SecAgg+ range also holds this many std of a factory's noise share
SECAGG_THRESHOLD = 2 / 3  # share of a factory's key shares needed to unmask (tolerates 1/3 dropping out)
KEYS = "secagg-keys"  # train config: the arrays' names, newline-separated (legacy parameters carry none)
PARTICIPANTS = "secagg-participants"  # train config: n, the noise shares and the quantization range's count


# ---------------------------------------------------------------- updates: clipping and noise (no Flower)


def float_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating-point entries of a state dict, in order: the only ones clipped, noised or summed."""
    return [k for k, v in state.items() if v.is_floating_point()]


def update_of(local: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``local - global`` for the floating-point entries (float32 results)."""
    return {k: local[k].float() - global_[k].float() for k in float_keys(global_)}


def update_norm(update: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all entries together."""
    return math.sqrt(sum(float(v.double().pow(2).sum()) for v in update.values()))


def clip_update(update: Mapping[str, torch.Tensor], clip: float) -> dict[str, torch.Tensor]:
    """``update`` scaled down to L2 norm ``clip`` when it is longer (unchanged otherwise)."""
    factor = min(1.0, clip / max(update_norm(update), 1e-12))
    return {k: v * factor for k, v in update.items()}


def clipped_params(
    local: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor], clip: float
) -> dict[str, torch.Tensor]:
    """``global + clip(local - global)`` for the entries of ``global_`` (others as in ``local``)."""
    clipped = clip_update(update_of(local, global_), clip)
    return {k: (global_[k].float() + clipped[k]).to(local[k].dtype) if k in clipped else local[k] for k in global_}


def noise_generator(seed: int | None = None) -> torch.Generator:
    """The source of DP noise: fresh OS entropy by default (noise anyone can replay protects nothing);
    a fixed ``seed`` only for tests and benchmarks."""
    return torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)


def add_noise(update: Mapping[str, torch.Tensor], std: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``update`` + i.i.d. N(0, std^2) per value (floating-point entries only)."""
    if std <= 0:
        return dict(update)
    return {
        k: v + std * torch.randn(v.shape, generator=generator, dtype=torch.float32) if v.is_floating_point() else v
        for k, v in update.items()
    }


# ---------------------------------------------------------------- SecAgg+ fixed-point encoding (no Flower)


@dataclass(frozen=True)
class SecAggEncoding:
    """How an update is put into SecAgg+'s fixed-point range, and what precision that leaves.

    Each value v of an update with |v| <= ``bound`` is sent as v x 8 / bound (Flower then multiplies
    by the factory's weight ratio w = weight / max_weight <= 1, clips to +-8 and rounds stochastically
    to a grid of 16 / Q). The quantization range Q is the largest power of two with n x Q < 2^32 (no
    wrap-around of the sum of n factories): 2^30 for 2-3 factories, 2^29 for 4-7, 2^28 for 8-15.
    """

    bound: float  # largest |update value| that passes unclipped
    participants: int  # factories summed in the round

    @property
    def quantization_range(self) -> int:
        return min(2**30, SECAGG_MODULUS >> max(1, self.participants.bit_length()))

    @property
    def scale(self) -> float:
        return SECAGG_CLIPPING_RANGE / self.bound

    def encode(self, update: Mapping[str, torch.Tensor], keys: Sequence[str]) -> tuple[list[np.ndarray], float]:
        """The values to hand to SecAgg+ (float64, in ``keys`` order; non-finite values sent as 0) and the
        share of values beyond ``bound`` (they are clipped: one factory moves a value by at most bound)."""
        arrays, beyond, total = [], 0, 0
        for k in keys:
            v = np.nan_to_num(update[k].detach().cpu().double().numpy(), nan=0.0, posinf=0.0, neginf=0.0)
            beyond += int((np.abs(v) > self.bound).sum())
            total += v.size
            arrays.append(v * self.scale)
        return arrays, beyond / max(total, 1)

    def decode(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """SecAgg+'s weighted mean of the encoded values, back in update units."""
        return [np.asarray(a, dtype=np.float64) / self.scale for a in arrays]

    def error_bound(self, weights: Sequence[float]) -> float:
        """Largest difference per value between the decoded weighted mean and the exact one, for inputs
        within ``bound`` and weight ratios ``weights`` (weight / max_weight, each in (0, 1]): one grid step
        (2 x 8 / Q) per factory from the stochastic rounding, plus the rounding of the weights to 1 / Q."""
        q, m = self.quantization_range, len(weights)
        total = sum(weights) - m / (2 * q)
        return 3 * m * self.bound / (q * total)


def secagg_bound(cfg: PrivacyConfig, participants: int) -> float:
    """The SecAgg+ range in update units: ``secagg_range`` without DP; with DP, the clip plus
    :data:`SECAGG_NOISE_TAILS` std of a factory's noise share (a clipped update has no value above the clip)."""
    if cfg.dp_noise_multiplier > 0 or cfg.dp_clip > 0:
        share = cfg.dp_noise_multiplier * cfg.dp_clip / math.sqrt(max(participants, 1))
        return cfg.dp_clip + SECAGG_NOISE_TAILS * share
    return cfg.secagg_range


def uses_dp(cfg: PrivacyConfig) -> bool:
    """Clipping and (if the multiplier is > 0) noise: each factory counts once, not by its clips."""
    return cfg.dp_clip > 0


def check_privacy_config(config: RunConfig, n_factories: int | None = None) -> None:
    """Settings that cannot work together (or with ``n_factories``, when known) fail before any round."""
    cfg = config.privacy
    if cfg.secure_aggregation and n_factories is not None and n_factories < 2:
        raise ConfigError(
            f"[privacy] secure_aggregation = true needs at least 2 factories (SecAgg+ unmasks a sum of several "
            f"updates), this federation has {n_factories}: add factories or set secure_aggregation = false"
        )
    if cfg.dp_noise_multiplier < 0 or cfg.dp_clip < 0 or cfg.secagg_range <= 0:
        raise ConfigError("[privacy] dp_noise_multiplier and dp_clip must be >= 0 and secagg_range > 0")
    if cfg.dp_noise_multiplier > 0 and cfg.dp_clip <= 0:
        raise ConfigError("[privacy] dp_noise_multiplier > 0 needs dp_clip > 0 (the noise is calibrated to the clip)")
    if not 0 < cfg.dp_delta < 1:
        raise ConfigError(f"[privacy] dp_delta = {cfg.dp_delta}: expected 0 < delta < 1")


# ---------------------------------------------------------------- accounting (dp-accounting's RDP accountant)


def epsilon_for(noise_multipliers: Sequence[float], delta: float) -> float:
    """Epsilon at ``delta`` after one Gaussian mechanism (sensitivity 1, no subsampling) per multiplier;
    ``inf`` when any is 0, 0 for none."""
    if not noise_multipliers:
        return 0.0
    if min(noise_multipliers) <= 0:
        return math.inf
    from dp_accounting import dp_event, rdp

    accountant = rdp.RdpAccountant()
    for sigma in noise_multipliers:
        accountant.compose(dp_event.GaussianDpEvent(sigma))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(epsilon: float, delta: float, rounds: int) -> float:
    """The smallest noise multiplier whose ``rounds`` full-participation rounds stay within (epsilon, delta)."""
    if math.isinf(epsilon):
        return 0.0
    import dp_accounting
    from dp_accounting import dp_event, rdp

    return float(
        dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda sigma: dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), rounds),
            epsilon,
            delta,
        )
    )


def privacy_report(cfg: PrivacyConfig, history: Sequence[Mapping], n: int = 0) -> dict:
    """``privacy`` of the server's result: the guarantee each factory has after the run, from the rounds'
    records (``history[i]["privacy"]``: effective noise multiplier and the factories whose updates were used);
    ``n``: the factories of a round (the SecAgg+ range, default: those in the records)."""
    per_factory: dict[str, list[float]] = {}
    for entry in history:
        record = entry.get("privacy")
        if record and entry.get("aggregated"):
            for name in record["factories"]:
                per_factory.setdefault(name, []).append(float(record["noise_multiplier"]))
    dp = cfg.dp_noise_multiplier > 0
    epsilons = {name: epsilon_for(sigmas, cfg.dp_delta) if dp else math.inf for name, sigmas in per_factory.items()}
    finite = [e for e in epsilons.values() if math.isfinite(e)]
    report: dict = {
        "secure_aggregation": cfg.secure_aggregation,
        "dp": ("distributed" if cfg.secure_aggregation else "central") if dp else None,
        "epsilon": (max(finite) if finite else 0.0) if dp else None,  # None: no guarantee (epsilon = inf)
        "delta": cfg.dp_delta,
        "noise_multiplier": cfg.dp_noise_multiplier,
        "clip": cfg.dp_clip,
        "rounds": max((len(s) for s in per_factory.values()), default=0),
        "unit": "factory (all its training clips), add/remove adjacency",
        "accountant": "RDP, dp-accounting 0.6.0, sampling rate 1",
        "per_factory": {
            name: {"epsilon": e if math.isfinite(e) else None, "rounds": len(per_factory[name])}
            for name, e in sorted(epsilons.items())
        },
    }
    if cfg.secure_aggregation:
        report["secagg_bound"] = secagg_bound(cfg, n or len(per_factory) or 1)  # per value, in update units
    return report


# ---------------------------------------------------------------- the server's side


def _mean_metrics(replies: Sequence[Message]) -> MetricRecord:
    """The replies' training metric values averaged by their example counts (num-examples: the total)."""
    records = [m.content.metric_records["metrics"] for m in replies]
    weights = [float(r["num-examples"]) for r in records]
    total = sum(weights) or 1.0
    values: dict[str, float | int] = {"num-examples": int(sum(weights))}
    for key in records[0]:
        if key != "num-examples":
            values[key] = sum(w * float(r[key]) for w, r in zip(weights, records, strict=True)) / total
    return MetricRecord(values)


def _factory(msg: Message) -> str:
    return str(msg.content.config_records["info"]["factory"])


@dataclass
class PrivacyServer:
    """The server's part of ``[privacy]``: the SecAgg+ exchange and the DP aggregate.

    ``n_factories`` is the fixed denominator of the DP mean (the federation's size, public);
    ``generator`` the source of central noise (fresh OS entropy unless a test seeds it).
    """

    config: PrivacyConfig
    n_factories: int
    grid: Grid
    generator: torch.Generator
    shares: int = 0  # the last round's n: factories asked, at least n_factories (noise shares, DP denominator)
    halted: str | None = None  # why the last SecAgg+ exchange unmasked no sum (None: it did, or no SecAgg+)

    @classmethod
    def of(cls, config: RunConfig, n_factories: int, grid: Grid, seed: int | None = None) -> PrivacyServer | None:
        """None when ``[privacy]`` asks for nothing (the plain exchange and FedAvg-family aggregation)."""
        check_privacy_config(config, n_factories)
        cfg = config.privacy
        if not (cfg.secure_aggregation or uses_dp(cfg)):
            return None
        return cls(cfg, n_factories, grid, noise_generator(seed))

    def send_and_receive(self, messages: Sequence[Message], timeout: float | None = None) -> list[Message]:
        """The round's training exchange (as ``Grid.send_and_receive``): plain, or through SecAgg+."""
        self.shares, self.halted = max(len(messages), self.n_factories), None
        if not self.config.secure_aggregation:
            return list(self.grid.send_and_receive(messages, timeout=timeout))
        replies = secure_exchange(self.grid, messages, self.config, self.shares, timeout)
        if messages and not replies:
            upload = secagg_upload_mb(messages[0].content["arrays"])
            self.halted = (
                f"SecAgg+ halted: too few factories completed it (each uploads its masked "
                f"update as one {upload:.1f} MB message; a coopasd gateway needs --max-body-mb above that, "
                "and a factory's log names the refusal)"
            )
        return replies

    def report(self, history: Sequence[Mapping]) -> dict:
        """The run's ``privacy`` record (:func:`privacy_report`)."""
        return privacy_report(self.config, history, self.shares or self.n_factories)

    def aggregate_input(self, replies: list[Message], global_arrays: ArrayRecord) -> tuple[list[Message], dict]:
        """What the strategy aggregates this round, and the round's privacy record.

        SecAgg+: the replies as they came (each carries the same unmasked aggregate; with DP the noise is
        already in it). Central DP: one reply, global + (sum of the clipped updates + N(0, (sigma C)^2)) / n.
        """
        cfg, names = self.config, sorted(_factory(m) for m in replies)
        sigma = cfg.dp_noise_multiplier
        if cfg.secure_aggregation:
            effective = sigma * math.sqrt(len(replies) / self.shares)  # the noise shares that made it into the sum
            return replies, {"noise_multiplier": effective, "factories": names, "mechanism": "secagg+"}
        global_state = global_arrays.to_torch_state_dict()
        total: dict[str, torch.Tensor] = {k: torch.zeros_like(global_state[k]) for k in float_keys(global_state)}
        for msg in replies:
            local = msg.content.array_records["arrays"].to_torch_state_dict()
            for k, v in clip_update(update_of(local, global_state), cfg.dp_clip).items():
                total[k] += v
        noisy = add_noise(total, sigma * cfg.dp_clip, self.generator)
        mean = {
            k: (global_state[k] + noisy[k] / self.shares).to(v.dtype) if k in noisy else v
            for k, v in global_state.items()
        }
        info = ConfigRecord({"factory": "dp-aggregate", "received-hash": ""})
        content = RecordDict({"arrays": ArrayRecord(mean), "metrics": _mean_metrics(replies), "info": info})
        return [Message(content, reply_to=replies[0])], {"noise_multiplier": sigma, "factories": names}


# ---------------------------------------------------------------- SecAgg+ (Flower's workflow and mod)


def _legacy_collector(fitins: Mapping[int, object]):
    """The legacy strategy ``SecAggPlusWorkflow`` drives: it hands out this round's instructions and keeps the
    one aggregate the protocol unmasks (the workflow gives it nothing else)."""
    from flwr.common import parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    class Collector(LegacyFedAvg):
        def __init__(self) -> None:
            super().__init__()
            self.aggregate: list[np.ndarray] | None = None
            self.results: list = []

        def configure_fit(self, server_round, parameters, client_manager):
            clients = client_manager.all()
            return [(clients[str(node)], ins) for node, ins in fitins.items() if str(node) in clients]

        def aggregate_fit(self, server_round, results, failures):
            if not results:
                return None, {}
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
            self.results = [(proxy.node_id, res) for proxy, res in results]
            return results[0][1].parameters, {}

    return Collector()


def secagg_upload_mb(arrays: ArrayRecord) -> float:
    """Megabytes of one factory's SecAgg+ upload: its masked update, 8 bytes a value, sent as one object
    (flwr cuts arrays into chunks, not the masked vector), so a gateway's body cap must admit it."""
    state = arrays.to_torch_state_dict()
    return 8 * sum(state[k].numel() for k in float_keys(state)) / 1e6 + 0.1


def secure_exchange(
    grid: Grid, messages: Sequence[Message], cfg: PrivacyConfig, n: int, timeout: float | None
) -> list[Message]:
    """One round of training through Flower's SecAgg+ workflow.

    ``messages`` are the strategy's train messages (global arrays + config, one per factory); ``n`` (at least
    their number) sets the quantization range, each factory's DP noise share and the DP mean's denominator. Returns one
    reply per factory that completed the protocol, each carrying the *same* aggregate (global + weighted mean
    update), the factory's metric values and name: never the factory's own update. No reply when the
    protocol halted (too few factories).
    """
    from flwr.common import FitIns
    from flwr.compat.common.recorddict_compat import arrayrecord_to_parameters
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    if not messages:
        return []
    global_arrays: ArrayRecord = messages[0].content["arrays"]
    global_state = global_arrays.to_torch_state_dict()
    keys = float_keys(global_state)
    server_round = int(messages[0].content["config"]["server-round"])
    by_node = {m.metadata.dst_node_id: m for m in messages}
    fitins = {}
    for node, msg in by_node.items():
        config = dict(msg.content["config"]) | {KEYS: "\n".join(global_arrays.keys()), PARTICIPANTS: n}
        fitins[node] = FitIns(arrayrecord_to_parameters(msg.content["arrays"], keep_input=True), config)
    collector = _legacy_collector(fitins)
    manager = SimpleClientManager()
    for node in by_node:
        manager.register(GridClientProxy(node, grid, 0))
    context = LegacyContext(Context(0, 0, {}, RecordDict(), {}), strategy=collector, client_manager=manager)
    context.state.array_records[MAIN_PARAMS_RECORD] = global_arrays
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    encoding = SecAggEncoding(secagg_bound(cfg, n), n)
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=SECAGG_THRESHOLD,
        max_weight=1.0 if uses_dp(cfg) else float(SECAGG_MAX_WEIGHT),
        clipping_range=SECAGG_CLIPPING_RANGE,
        quantization_range=encoding.quantization_range,
        modulus_range=SECAGG_MODULUS,
        timeout=timeout,
    )
    workflow(grid, context)
    if collector.aggregate is None:
        log.warning("round %d: SecAgg+ halted (too few factories completed it); global model unchanged", server_round)
        return []
    mean = encoding.decode(collector.aggregate)
    if uses_dp(cfg):  # DP-FedAvg's fixed denominator: the sum over the factories that answered / all factories
        mean = [a * len(collector.results) / n for a in mean]
    state = dict(global_state)
    for k, delta in zip(keys, mean, strict=True):
        state[k] = (global_state[k].double() + torch.from_numpy(delta)).to(global_state[k].dtype)
    aggregate = ArrayRecord(state)
    replies = []
    for node, res in collector.results:
        metrics = dict(res.metrics)
        info = ConfigRecord(
            {"factory": str(metrics.pop("factory")), "received-hash": str(metrics.pop("received-hash"))}
        )
        clipped = float(metrics.pop("secagg-beyond", 0.0))
        if clipped > 0:
            log.warning(
                "round %d: %.2g%% of a factory's update values exceeded the SecAgg+ range", server_round, 100 * clipped
            )
        content = RecordDict({"arrays": aggregate, "metrics": MetricRecord(metrics), "info": info})
        replies.append(Message(content, reply_to=by_node[node]))
    return replies


def secure_train(
    msg: Message, context: Context, train: Callable[[Message], Message], cfg: PrivacyConfig, seed: int | None = None
) -> Message:
    """A factory's side of SecAgg+: Flower's ``secaggplus_mod`` runs the protocol's stages; at the masked-vector
    stage ``train`` (the plain train handler) runs on the round's instructions, and its update (local - global)
    is clipped and noised (DP), scaled into SecAgg+'s range and handed to the mod with the factory's weight."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

    def masked_stage(message: Message, ctxt: Context) -> Message:
        fitins = recorddict_to_fitins(message.content, keep_input=True)
        config = dict(fitins.config)
        names, participants = str(config.pop(KEYS)).split("\n"), int(config.pop(PARTICIPANTS))
        arrays = parameters_to_ndarrays(fitins.parameters)
        global_state = {k: torch.from_numpy(np.array(a)) for k, a in zip(names, arrays, strict=True)}
        request = RecordDict({"arrays": ArrayRecord(global_state), "config": ConfigRecord(config)})
        reply = train(Message(request, metadata=copy.deepcopy(message.metadata)))  # the plain train message
        local = reply.content.array_records["arrays"].to_torch_state_dict()
        update = update_of(local, global_state)
        metrics = dict(reply.content.metric_records["metrics"])
        if uses_dp(cfg):
            share = cfg.dp_noise_multiplier * cfg.dp_clip / math.sqrt(participants)
            update = add_noise(clip_update(update, cfg.dp_clip), share, noise_generator(seed))
            weight = 1
        else:
            weight = min(int(metrics["num-examples"]), SECAGG_MAX_WEIGHT)
        values, beyond = SecAggEncoding(secagg_bound(cfg, participants), participants).encode(
            update, float_keys(global_state)
        )
        info = reply.content.config_records["info"]
        metrics |= {
            "factory": str(info["factory"]),
            "received-hash": str(info["received-hash"]),
            "secagg-beyond": beyond,
        }
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(values), weight, metrics)
        return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=message)

    return secaggplus_mod(msg, context, masked_stage)
