"""When does cooperation pay? Federated / centralized / local-only, and each factory's gain from
joining, in plant scenarios where factories differ.

Scenarios (a plant of ``--machines`` types; the multi-unit ones with ``--units`` units each):

- ``rich``: today's plant: one unit per machine type, 90 + 10 normal training clips, one factory
  per machine type (each factory holds a whole machine type with enough clips);
- ``one-unit``: every factory runs exactly one unit (``pump/01``), 45 + 5 normal clips;
- ``few-clip``: one unit per factory and only 18 + 2 normal clips;
- ``no-attributes``: as few-clip, and the clips name no attributes (DCASE 2024/25 first-shot);
  a factory's local auxiliary task then has a single class;
- ``late-join``: as one-unit, and the last factory joins after round 5 (it is absent from rounds
  1-5; centralized and local-only are as in one-unit).

Every choice is made on ``--family dev``; ``--family unseen`` is reported only.

    .venv/bin/python benchmarks/cooperation.py --out runs/coop --family dev [--scenarios rich,one-unit]
        [--config FILE] [--set section.key=value ...]

Plants are written once under ``OUT/<family>/<scenario>/data`` and reused. Prints, per scenario,
the official score of each mode and each factory's score and gain (points vs its local-only
model); ``OUT/<family>/<scenario>/comparison.json`` keeps the whole comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import RunConfig, load_config, with_overrides
from coopasd.data.families import generate_plant, plant_config
from coopasd.experiment.pipeline import run_comparison

MACHINES = {"dev": ("pump", "valve"), "unseen": ("motor", "press")}
JOIN_ROUND = 6  # the late factory's first round


@dataclass(frozen=True)
class Scenario:
    """A plant (its generator settings) and how it is split into factories."""

    units: int  # units per machine type
    train_source: int  # normal source-domain training clips per unit
    train_target: int  # normal target-domain training clips per unit
    attributes: bool = True
    by_unit: bool = True  # one factory per unit (else one per machine type)
    late: bool = False  # the last factory joins at JOIN_ROUND
    overrides: dict = field(default_factory=dict)


def scenarios(units: int) -> dict[str, Scenario]:
    return {
        "rich": Scenario(1, 90, 10, by_unit=False),
        "one-unit": Scenario(units, 45, 5),
        "few-clip": Scenario(units, 18, 2),
        "no-attributes": Scenario(units, 18, 2, attributes=False),
        "late-join": Scenario(units, 45, 5, late=True),
    }


def factory_spec(machines: tuple[str, ...], units: int) -> tuple[str, list[str]]:
    """One factory per unit: ``f1=pump/00;f2=valve/00;...`` (units interleaved across machine types)."""
    names = [f"{m}/{u:02d}" for u in range(units) for m in machines]
    factories = [f"f{i + 1}" for i in range(len(names))]
    return ";".join(f"{f}={n}" for f, n in zip(factories, names, strict=True)), factories


def scenario_config(base: RunConfig, scenario: Scenario, machines: tuple[str, ...], sets: dict) -> RunConfig:
    """``base`` with the scenario's partition (and late join), then the ``--set`` values."""
    cfg = base
    if scenario.by_unit:
        spec, factories = factory_spec(machines, scenario.units)
        cfg = with_overrides(cfg, "partition", factories=spec)
        if scenario.late:
            absent = "+".join(str(r) for r in range(1, JOIN_ROUND))
            cfg = with_overrides(cfg, "federation", drop_out=f"{factories[-1]}:{absent}")
    for section, values in sets.items():
        cfg = with_overrides(cfg, section, **values)
    return cfg


def ensure_plant(path: Path, family: str, machines: tuple[str, ...], scenario: Scenario, args) -> Path:
    if not (path / "synth.json").exists() and not (path / "unseen_plant.json").exists():
        cfg = plant_config(
            family,  # type: ignore[arg-type]
            machines,
            units=scenario.units,
            train_source=scenario.train_source,
            train_target=scenario.train_target,
            test_per_domain=args.test_per_domain,
            seconds=args.seconds,
            attributes=scenario.attributes,
            seed=args.seed,
        )
        generate_plant(cfg, path)
    return path


def parse_sets(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        try:  # numbers, true/false, lists and quoted strings as JSON; any other text as itself ("fedavg")
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (plants and comparisons)")
    parser.add_argument("--family", choices=("dev", "unseen"), default="dev")
    parser.add_argument("--scenarios", default="rich,one-unit,few-clip,no-attributes,late-join")
    parser.add_argument("--units", type=int, default=3, help="units per machine type (multi-unit scenarios)")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--test-per-domain", type=int, default=40, help="test clips per unit and domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None, help="TOML run config (default: built-in)")
    parser.add_argument("--set", action="append", default=[], help="section.key=value on top of the config")
    parser.add_argument("--tag", default="", help="name of this setting (results go to OUT/<family>/<scenario><tag>)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file keeps the wide table whole
    machines = MACHINES[args.family]
    base = load_config(args.config)
    table = Table(title=f"cooperation on the {args.family} family: official score (%) and gain from joining")
    for col in ("scenario", "federated", "centralized", "local-only", "fed - local (pt)", "fed - cen (pt)"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    table.add_column("each factory: gain from joining (pt vs its local-only model)")
    table.add_column("s", justify="right")
    all_scenarios = scenarios(args.units)
    for name in args.scenarios.split(","):
        scenario = all_scenarios[name]
        data_name = "one-unit" if scenario.late else name
        data = ensure_plant(args.out / args.family / data_name / "data", args.family, machines, scenario, args)
        cfg = scenario_config(base, scenario, machines, parse_sets(args.set))
        work = args.out / args.family / f"{name}{args.tag}"
        start = time.time()
        summary = run_comparison(data, work, cfg).summary()
        seconds = time.time() - start
        (work / "comparison.json").write_text(json.dumps(summary, indent=2, default=str))
        scores = [100 * summary["modes"][m]["official_score"] for m in ("federated", "centralized", "local")]
        gains = summary.get("factories", {})
        each = " ".join(f"{f}({','.join(g['units'])}):{g['gain_points']:+.1f}" for f, g in gains.items())
        row = [f"{s:.2f}" for s in scores] + [f"{scores[0] - scores[2]:+.2f}", f"{scores[0] - scores[1]:+.2f}"]
        table.add_row(name + args.tag, *row, each, f"{seconds:.0f}")
        console.print(
            f"{args.family} | {name}{args.tag} | fed/cen/local " + " / ".join(row) + f" | {each} | {seconds:.0f}s"
        )
    console.print(table)


if __name__ == "__main__":
    main()
