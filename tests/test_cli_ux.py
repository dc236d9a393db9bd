"""What a newcomer meets first: help, version, config, output directories, score output, tables, README."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from rich.console import Console
from rich.text import Text

from coopasd.cli.app import app
from coopasd.config.describe import commented_toml, describe
from coopasd.config.settings import RunConfig, build
from coopasd.dcase.evaluation import read_score_file
from coopasd.errors import RunDirError
from coopasd.federation.checkpoint import GlobalCheckpoint
from coopasd.report.tables import comparison_table, metrics_table
from coopasd.rundir.writer import claim_run_dir
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, click.Command]:
    """Every command by its full name ("" = the application, "config show", ...), from click introspection."""
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, name: str) -> None:
        found[name] = command
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _options(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")} - {"--help"}


def _readme_commands() -> dict[str, set[str]]:
    """``{command name: long options}`` of docs/cli.md's command block (continuation lines are indented)."""
    text = (ROOT / "docs" / "cli.md").read_text()
    block = text.split("# Command line", 1)[1].split("```", 2)[1]
    entries: dict[str, set[str]] = {}
    name = None
    for line in block.splitlines():
        code = line.split("#", 1)[0]
        if line.startswith("coopasd"):
            words = []
            for word in code.split()[1:]:
                if not re.fullmatch(r"[a-z]+", word):
                    break
                words.append(word)
            name = " ".join(words)
            entries[name] = set()
        if name is not None and code.strip():
            entries[name] |= set(re.findall(r"--[a-z][a-z-]*", code))
    return entries


def test_readme_command_block_lists_every_command_and_option():
    # Prepare
    commands = {n: _options(c) for n, c in _commands().items() if not isinstance(c, click.Group) or n == ""}
    # Execute
    readme = _readme_commands()
    # Assert
    assert sorted(readme) == sorted(commands)
    for name, options in commands.items():
        assert readme[name] == options, (
            f"docs/cli.md 'coopasd {name}': missing {options - readme[name]}, extra {readme[name] - options}"
        )


def test_the_readme_fits_a_screen_and_every_page_it_names_exists():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 60
    linked = re.findall(r"\]\((docs/[^)]+)\)", text)
    assert len(linked) >= 8 and all((ROOT / name).is_file() for name in linked), linked
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md")) == sorted({Path(n).name for n in linked})
    for line in text.splitlines():  # its example commands use real options
        if line.startswith("coopasd "):
            name = line.split()[1]
            assert set(re.findall(r"--[a-z][a-z-]*", line.split("#")[0])) <= _options(_commands()[name]), line


def test_help_texts_keep_their_brackets():
    for name, command in _commands().items():
        texts = [command.help or ""] + [p.help or "" for p in command.params if isinstance(p, click.Option)]
        for text in texts:  # typer reads help as rich markup: "[data]" must be written "\\[data]"
            assert Text.from_markup(text).plain == text.replace("\\[", "["), (name, text)


def test_baseline_help_and_config_errors_show_the_section(tmp_path, monkeypatch, capsys, tiny_tree):
    code, out = run_cli(monkeypatch, capsys, "baseline", "--help")
    assert code == 0 and "TOML config ([data], [baseline])" in out
    bad_key, bad_value = tmp_path / "key.toml", tmp_path / "value.toml"
    bad_key.write_text("[train]\nepoch = 3\n")
    bad_value.write_text('[federation]\nstrategy = "fedsgd"\n')
    code, out = run_cli(
        monkeypatch, capsys, "train", "--data", str(tiny_tree), "--out", str(tmp_path / "r"), "--config", str(bad_key)
    )
    assert code == 2 and "unknown key(s) in [train]: epoch" in out
    code, out = run_cli(
        monkeypatch,
        capsys,
        "federate",
        "--data",
        str(tiny_tree),
        "--out",
        str(tmp_path / "r"),
        "--config",
        str(bad_value),
    )
    assert code == 2 and "[federation] strategy = 'fedsgd'" in out
    assert not (tmp_path / "r").exists()  # config errors come before anything is written


def test_version_names_coopasd_torch_and_flower(monkeypatch, capsys):
    import flwr

    import coopasd

    code, out = run_cli(monkeypatch, capsys, "--version")
    assert code == 0
    assert f"coopasd {coopasd.__version__}" in out and f"torch {torch.__version__}" in out
    assert f"flwr {flwr.__version__}" in out


def test_importing_the_cli_loads_neither_torch_nor_flower():
    heavy = ("torch", "flwr", "scipy", "sklearn", "matplotlib", "numpy", "fastapi", "cryptography")
    code = f"import sys, coopasd.cli.app; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_every_config_key_has_a_meaning_and_units_come_from_the_comments():
    entries = describe(RunConfig())
    assert len(entries) == sum(len(vars(getattr(RunConfig(), s))) for s in vars(RunConfig()))
    assert all(e.meaning for e in entries), [f"[{e.section}] {e.key}" for e in entries if not e.meaning]
    units = {(e.section, e.key): e.unit for e in entries}
    assert units[("data", "sample_rate")] == "Hz" and units[("data", "seconds")] == "s"
    assert units[("train", "epochs")] == "epochs" and units[("federation", "round_timeout")] == "s"
    assert units[("data", "on_error")] == ""


def test_config_show_marks_what_the_file_changes(tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nepochs = 3\n[data]\nseconds = 10\n")
    code, out = run_cli(monkeypatch, capsys, "config", "show", "--config", str(config))
    assert code == 0
    assert "*epochs" in out and "*seconds" in out and " sample_rate" in out and "*sample_rate" not in out
    for section in ("[data]", "[train]", "[federation]"):
        assert section in out
    code, out = run_cli(monkeypatch, capsys, "config", "show", "--config", str(config), "--format", "toml")
    assert code == 0 and "epochs = 3 # [epochs]" in out and "(default 10)" in out  # whitespace collapsed


def test_demo_config_is_config_show_of_the_defaults(monkeypatch, capsys):
    demo = (ROOT / "configs" / "demo.toml").read_text()
    assert build(RunConfig, tomllib.loads(demo)) == RunConfig()
    expected = commented_toml(RunConfig(), "coopasd run config: built-in defaults\n[unit] and meaning after each key")
    assert demo == expected, "regenerate: coopasd config show --format toml > configs/demo.toml"
    keys = [line for line in demo.splitlines() if "=" in line and not line.startswith("#")]
    assert len(keys) == len(describe(RunConfig())) and all("  # " in line for line in keys)


def _baseline(monkeypatch, capsys, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(out), *extra)


def test_out_must_be_new_or_the_same_kind_and_force_replaces_it(tmp_path, monkeypatch, capsys, tiny_tree):
    out = tmp_path / "run"
    code, text = _baseline(monkeypatch, capsys, tiny_tree, out)
    assert code == 0, text
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "baseline" and record["status"] == "finished"
    assert record["command"].startswith("coopasd baseline --data") and record["seconds"] >= 0
    assert record["started_utc"] <= record["ended_utc"] and record["started_utc"].endswith("+00:00")
    assert set(record["versions"]) >= {"coopasd", "torch", "flwr", "python"} and record["host"]["cpus"] >= 1
    stale = out / "submission" / "anomaly_score_pump_section_00_test.csv"
    stale.write_text("old,1.0\n")
    (out / "notes.txt").write_text("mine")
    # a finished run of the same kind needs --force; another kind or a foreign folder never passes
    code, text = _baseline(monkeypatch, capsys, tiny_tree, out)
    assert code == 2 and "--force" in text and stale.exists()
    code, text = run_cli(monkeypatch, capsys, "train", "--data", str(tiny_tree), "--out", str(out), "--force")
    assert code == 2 and "holds a 'baseline' run" in text
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.wav").write_bytes(b"x")
    code, text = _baseline(monkeypatch, capsys, tiny_tree, foreign, "--force")
    assert code == 2 and "no run.json" in text and (foreign / "data.wav").exists()
    # --force deletes what the earlier run wrote, and nothing else
    code, text = _baseline(monkeypatch, capsys, tiny_tree, out, "--force")
    assert code == 0, text
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert (out / "submission" / "anomaly_score_fan_section_00_test.csv").exists()


def test_unfinished_runs_are_replaced_and_resume_keeps_everything(tmp_path):
    out = tmp_path / "fed"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.pt").write_bytes(b"ckpt")
    (out / "run.json").write_text(json.dumps({"kind": "federate", "status": "running"}))
    claim_run_dir(out, "federate", resume=True)
    assert (out / "checkpoints" / "latest.pt").exists()
    with pytest.raises(RunDirError, match="nothing to resume"):
        claim_run_dir(tmp_path / "other", "federate", resume=True)
    claim_run_dir(out, "federate")  # an interrupted run: replaced without --force
    assert not (out / "checkpoints").exists() and not (out / "run.json").exists()


def test_federate_resume_without_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, tiny_tree):
    code, text = run_cli(
        monkeypatch, capsys, "federate", "--data", str(tiny_tree), "--out", str(tmp_path / "none"), "--resume"
    )
    assert code == 2 and "nothing to resume" in text


def test_certs_refuse_to_overwrite_without_force(tmp_path, monkeypatch, capsys):
    out = tmp_path / "certs"
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(out))
    assert code == 0, text
    first = (out / "ca.key").read_bytes()
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(out))
    assert code == 2 and "--force" in text and (out / "ca.key").read_bytes() == first
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(out), "--force")
    assert code == 0 and (out / "ca.key").read_bytes() != first


def test_score_formats_and_the_length_note(tmp_path, monkeypatch, capsys, tiny_tree):
    run, config = tmp_path / "run", tmp_path / "crop.toml"
    config.write_text("[data]\nseconds = 2.0\n")  # an explicit crop/tile length (the default keeps clips whole)
    code, text = run_cli(
        monkeypatch, capsys, "train", "--data", str(tiny_tree), "--out", str(run), "--mode", "local",
        "--checkpoint", "none", "--features", "logmel", "--config", str(config),
    )  # fmt: skip
    assert code == 0, text
    clip = sorted((tiny_tree / "fan" / "test").iterdir())[0]
    wave, rate = sf.read(clip, dtype="float32")
    long_clip = tmp_path / "fan" / "test" / clip.name  # same name; 3 s whose first 2 s are what the run scored
    long_clip.parent.mkdir(parents=True)
    noise = 0.1 * np.random.default_rng(0).standard_normal(rate).astype(np.float32)
    sf.write(long_clip, np.concatenate([np.tile(wave, 4), noise]), rate)  # the run tiled its 0.5 s clips to 2 s
    model = str(run / "models" / "fan.pt")
    code, text = run_cli(monkeypatch, capsys, "score", "--model", model, str(long_clip), "--format", "json")
    assert code == 0, text
    (record,) = json.loads(text)
    expected = read_score_file(run / "submission" / "anomaly_score_fan_section_00_test.csv")[clip.name]
    assert record["clip"] == str(long_clip) and record["machine_type"] == "fan" and record["section"] == "00"
    assert record["score"] == pytest.approx(expected, rel=1e-5)
    assert record["clip_seconds"] == pytest.approx(3.0) and record["scored_seconds"] == 2.0
    assert set(record) == {"clip", "score", "decision", "threshold", "machine_type", "section"} | {
        "clip_seconds",
        "scored_seconds",
    }
    code, text = run_cli(monkeypatch, capsys, "score", "--model", model, str(long_clip), str(clip), "--format", "csv")
    assert code == 0 and text.startswith("clip,score,decision,threshold,machine_type,section,clip_seconds")
    assert str(long_clip) in text and str(clip) in text
    code, text = run_cli(monkeypatch, capsys, "score", "--model", model, str(long_clip), str(clip))
    assert code == 0 and "the model scores 2 s per clip" in text and f"{expected:.4f}" in text
    assert "1 clip(s) longer, of which only the first 2 s were scored; 1 shorter, tiled to 2 s" in text


def test_keep_checkpoints_keeps_the_last_rounds_and_latest(tmp_path):
    params = {"w": torch.zeros(3)}
    for keep, folder in ((2, tmp_path / "two"), (0, tmp_path / "none"), (-1, tmp_path / "all")):
        for r in range(1, 5):
            GlobalCheckpoint(r, params, {}, "", []).save(folder, keep)
        kept = sorted(p.name for p in folder.iterdir())
        rounds = {2: ["round_003.pt", "round_004.pt"], 0: [], -1: [f"round_00{i}.pt" for i in range(1, 5)]}[keep]
        assert kept == ["latest.pt", *rounds]
        assert GlobalCheckpoint.load(folder / "latest.pt").round == 4
    assert RunConfig().federation.keep_checkpoints == 2


def test_tables_do_not_cut_headers_and_label_the_units():
    values = {"auc_source": 0.8, "auc_target": 0.7, "pauc": 0.6, "official_score": 0.7}
    mode = {"machines": dict.fromkeys(("bearing", "fan", "gearbox", "slider", "valve"), values), "official_score": 0.7}
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(comparison_table({"federated": mode, "centralized": mode, "local": mode}))
    text = buffer.getvalue()
    assert "…" not in text and "centralized" in text and "central (%)" in text and "local (pt)" in text
    assert "in % of centralized" in " ".join(text.split()) and "percentage points" in text
    summary = {
        "machines": {"fan": values},
        "arithmetic_mean": values | {"all": 0.7},
        "harmonic_mean": values,
        "official_score": 0.7,
    }
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(metrics_table(summary, "local on /data/[plant]"))
    assert "/data/[plant]" in buffer.getvalue() and "…" not in buffer.getvalue()


def test_synth_defaults_match_the_generator():
    from coopasd.data.synth import SynthConfig

    synth = _commands()["synth"]
    option = next(p for p in synth.params if p.name == "machines")
    assert option.default == ""  # the family's own default machines
    assert ",".join(SynthConfig.machines) in option.help


def test_faiss_is_an_optional_extra_the_benchmark_names(monkeypatch):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")]
    assert project["optional-dependencies"]["bench"] == ["faiss-cpu==1.15.1"]
    spec = importlib.util.spec_from_file_location("model_speed", ROOT / "benchmarks" / "model_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert set(module.knn_speed(n_bank=8, n_query=2, dim=4)) == {"torch"}
    assert "pip install -e '.[bench]'" in module.FAISS_MISSING
