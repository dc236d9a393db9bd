"""What one hostile factory costs the honest ones: the official score of the honest factories
(all but the hostile one) per attack kind and aggregation rule, against the clean run of the same
rule. Reduced budget by default (learned detector, 3 rounds, no per-round evaluation).

    coopasd synth --out /tmp/ht_data
    .venv/bin/python benchmarks/hostile.py --data /tmp/ht_data [--runs "clean:mean;signflip:median"]

Default plan: every rule clean and against every kind (signflip and noise pass the server's
screening, so the rule decides; nan, shape and scale100 are screened out before any rule), plus
``scale100`` with the plain mean and no norm bound or weight cap (what the screening buys).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import HOSTILE_KINDS, RunConfig, with_overrides
from coopasd.dcase.results import ModeResult
from coopasd.errors import ConfigError
from coopasd.federation.simulation import run_simulated

RULES = ("mean", "median", "trimmed_mean", "krum")
UNDEFENDED = "mean-unbounded"  # plain weighted mean, no norm bound, no weight cap


def default_plan() -> list[tuple[str, str]]:
    """Every rule clean and against every kind, then ``scale100`` with no defence at all."""
    plan = [("clean", rule) for rule in RULES] + [(kind, rule) for kind in HOSTILE_KINDS for rule in RULES]
    return plan + [("scale100", UNDEFENDED)]


def configure(base: RunConfig, kind: str, rule: str, hostile: str) -> RunConfig:
    values: dict = {"aggregation": rule, "hostile": "" if kind == "clean" else f"{hostile}:{kind}"}
    if rule == UNDEFENDED:
        values |= {"aggregation": "mean", "update_norm_bound": 0.0, "weight_cap": 1e12}
    return with_overrides(base, "federation", **values)


def run_one(cfg: RunConfig, data: Path, hostile: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server, factories = run_simulated(cfg, data, Path(tmp))
    honest = [f for f in factories if f.name != hostile]
    rejected = sum(hostile in r.get("rejected", {}) for r in server["rounds"])
    honest_rejected = sorted({name for r in server["rounds"] for name in r.get("rejected", {}) if name != hostile})
    norms = [r.get("update_norm", {}) for r in server["rounds"]]
    summary = ModeResult.of_factories("federated", honest, {}).summary()
    own = ModeResult.of_factories("federated", [f for f in factories if f.name == hostile], {}).summary()
    assert summary is not None and own is not None, "the benchmark needs labelled test clips"
    return {
        "honest": summary["official_score"],
        "own": own["official_score"],
        "rejected": rejected,
        "rounds": len(server["rounds"]),
        "honest_rejected": honest_rejected,
        "norms": [{k: round(v, 3) for k, v in n.items()} for n in norms],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--hostile", default="fan", help="the factory that attacks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--features", default="learned", help="detector features to score with")
    parser.add_argument("--runs", default="", help='"kind:rule;..." (kind clean or a hostile kind); default plan')
    args = parser.parse_args()
    base = with_overrides(RunConfig(), "detect", features=args.features)
    base = with_overrides(base, "federation", rounds=args.rounds, evaluate_every=0)
    plan = [tuple(p.strip().split(":")) for p in args.runs.split(";") if p.strip()] or default_plan()
    results: dict[tuple[str, str], dict] = {}
    for kind, rule in plan:
        started = time.time()
        try:
            results[(kind, rule)] = out = run_one(configure(base, kind, rule, args.hostile), args.data, args.hostile)
        except ConfigError as err:  # a rule that cannot hold for this federation (Krum with n <= 2f + 2)
            print(f"{kind} | {rule} | refused: {err}", flush=True)
            continue
        print(
            f"{kind} | {rule} | honest {100 * out['honest']:.2f} | {args.hostile} {100 * out['own']:.2f} "
            f"| rejected in {out['rejected']} of "
            f"{out['rounds']} rounds | honest rejected {out['honest_rejected']} | norms {out['norms']} "
            f"| {time.time() - started:.0f} s",
            flush=True,
        )
    title = (
        f"honest factories' official score (%) with '{args.hostile}' hostile, {args.data} "
        f"(reduced budget: {args.features} detector, {args.rounds} rounds, no per-round evaluation)"
    )
    table = Table(title=title)
    columns = ("attack", "rule", "honest score", "vs clean (same rule)", f"{args.hostile}'s own score")
    for col in (*columns, "hostile rejected (rounds)"):
        table.add_column(col, justify="left" if col in ("attack", "rule") else "right")
    for (kind, rule), out in results.items():
        clean = results.get(("clean", "mean" if rule == UNDEFENDED else rule))
        delta = f"{100 * (out['honest'] - clean['honest']):+.2f}" if clean and kind != "clean" else ""
        own, rejected = f"{100 * out['own']:.2f}", f"{out['rejected']}/{out['rounds']}"
        table.add_row(kind, rule, f"{100 * out['honest']:.2f}", delta, own, rejected)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
