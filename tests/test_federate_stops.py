"""`coopasd federate` ends clearly (issue #16, items 8 and 11): exit 2 with the reason when no round was
aggregated, exit 130 within seconds on Ctrl-C with the command that resumes the run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopasd.config.settings import RunConfig, to_toml, with_overrides
from tests.helpers import cli, make_tree


@pytest.fixture(scope="module")
def two_factories(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("stops") / "data", train_source=4, train_target=1, test_per_domain=2)


def _config(tmp_path: Path, **federation) -> Path:
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "detect", features="logmel")
    cfg = with_overrides(cfg, "federation", **({"evaluate_every": 0, "personalize_epochs": 0} | federation))
    path = tmp_path / "run.toml"
    path.write_text(to_toml(cfg))
    return path


def test_a_federation_in_which_no_round_was_aggregated_exits_2_with_the_reason(
    tmp_path, two_factories, monkeypatch, capsys
):
    config = _config(tmp_path, rounds=1, hostile="fan:nan;valve:nan")
    out = tmp_path / "run"
    code, stdout, stderr = cli(
        monkeypatch, capsys, "federate", "--data", str(two_factories), "--out", str(out), "--config", str(config)
    )
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert (
        "no round was aggregated" in errors[0] and "only 0 of 2 factories sent a valid update (minimum 2)" in errors[0]
    )
    assert "non-finite values" in errors[0]
    assert not (out / "metrics.json").exists()  # no score for a model nobody trained together
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_ctrl_c_stops_federate_within_seconds_with_exit_130_and_the_resume_command(tmp_path, two_factories):
    config = _config(tmp_path, rounds=20)
    out = tmp_path / "run"
    command = ["coopasd", "federate", "--data", str(two_factories), "--out", str(out), "--config", str(config)]
    exe = Path(sys.executable).with_name("coopasd")
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(
        [str(exe), *command[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env
    )
    try:
        deadline = time.time() + 300
        while not (out / "checkpoints" / "latest.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint after 5 minutes"
            time.sleep(0.2)
        time.sleep(1.0)  # well inside round 2: the factories are training
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        sent = time.time()
        stdout, stderr = (s.decode() for s in proc.communicate(timeout=60))
        stopped = time.time() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and stopped < 30, (proc.returncode, stopped)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted" in errors[0], stderr
    resume = errors[0].split("resume with: ", 1)[1]
    assert shlex.split(resume) == [*command, "--resume"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and "resume with" not in record["error"]
    assert not (out / "federation.json").exists()
