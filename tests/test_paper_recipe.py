"""configs/paper.toml, the recipe for real DCASE data and an official BEATs checkpoint, runs end to end.

What this covers (CPU, 28 s of CPU time): the file parses with no unknown key; its settings (``base`` from an
official-format checkpoint, LoRA rank 64 with the backbone frozen, ArcFace without pseudo-anomalies,
mean pooling of the last layer, cosine 1-NN on the learned embedding) train one step and score, through
``coopasd train --mode centralized``; the shipped placeholder path fails with one line naming it. Not
covered: 10 s clips (0.5 s here), real weights, a GPU, and the federated mode of the recipe (its
settings are the same ``[train]`` and ``[model]`` plus ``[federation] share = "lora"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from coopasd.config.settings import load_config, to_toml, with_overrides
from coopasd.model.beats import BEATs
from coopasd.model.beats_config import preset
from coopasd.model.checkpoint import checkpoint_bytes
from tests.helpers import make_tree
from tests.test_cli import run_cli

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "paper.toml"


def test_the_paper_recipe_trains_and_scores_with_an_official_base_checkpoint(tmp_path, monkeypatch, capsys):
    # Prepare: a random BEATs base in the official file layout, a one-factory tree of 0.5 s clips
    torch.manual_seed(0)
    official = BEATs(preset("base")).state_dict()
    checkpoint = tmp_path / "BEATs_iter3_plus_AS2M.pt"
    checkpoint.write_bytes(checkpoint_bytes(preset("base").to_dict(), official))
    data = make_tree(tmp_path / "data", machines=("fan",), train_source=2, train_target=1, test_per_domain=2)
    recipe = load_config(RECIPE)
    assert (recipe.model.preset, recipe.model.lora_rank, recipe.data.seconds) == ("base", 64, 10.0)
    cfg = with_overrides(recipe, "model", checkpoint=str(checkpoint))
    cfg = with_overrides(with_overrides(cfg, "data", seconds=0.5), "train", epochs=1, device="cpu")
    config = tmp_path / "recipe-small.toml"
    config.write_text(to_toml(cfg))
    # Execute
    args = ("train", "--data", str(data), "--mode", "centralized", "--config", str(config))
    code, out = run_cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "run"))
    # Assert: a run directory with metrics, and a factory model that is the recipe's
    assert code == 0, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 < metrics["official_score"] <= 1.0 and set(metrics["machines"]) == {"fan"}
    saved = torch.load(tmp_path / "run" / "models" / "fan.pt", mmap=True, weights_only=True)  # no 90 M init
    meta, state = saved["meta"], saved["model"]
    assert saved["cfg"]["encoder_layers"] == 12 and saved["cfg"]["encoder_embed_dim"] == 768
    assert (meta["model_cfg"]["pooling"], meta["model_cfg"]["layer"]) == ("mean", -1)
    assert (meta["detect_cfg"]["features"], meta["detect_cfg"]["metric"]) == ("learned", "cosine")
    lora = [k for k in state if ".lora_" in k]
    assert lora and all(64 in state[k].shape for k in lora)
    frozen = [k for k in official if k.endswith("q_proj.weight")]
    assert frozen and all(torch.equal(state[k], official[k]) for k in frozen)  # the backbone did not move
    # the shipped placeholder path fails with one line that names it
    code, out = run_cli(monkeypatch, capsys, *args[:-1], str(RECIPE), "--out", str(tmp_path / "placeholder"))
    assert code == 2 and "/path/to/BEATs_iter3_plus_AS2M.pt" in out and "does not exist" in out
