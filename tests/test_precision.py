"""Mixed precision (``--precision fp32|bf16|fp16``): the default leaves every config, hash and number as it was."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from posym.train import PRECISIONS, TrainConfig, list_checkpoints, precision_context, train

from conftest import REPO, run_cli


def test_fp32_is_left_out_of_the_config_and_its_hash():
    cfg = TrainConfig.paper(task="number")
    assert "precision" not in cfg.to_dict() and cfg.precision == "fp32"
    assert TrainConfig.paper(task="number", precision="fp32").hash() == cfg.hash()
    assert TrainConfig.paper(task="number", precision="bf16").hash() != cfg.hash()
    assert TrainConfig.from_dict(TrainConfig.paper(precision="fp16").to_dict()).precision == "fp16"


def test_every_committed_run_keeps_its_config_and_hash():
    configs = [p for p in (REPO / "data").rglob("config.json") if "train" in json.loads(p.read_text())]
    assert configs
    for p in configs:
        d = json.loads(p.read_text())
        cfg = TrainConfig.from_dict(d["train"])
        assert cfg.hash() == d["config_hash"] and cfg.to_dict() == d["train"], p


def test_unknown_precision_is_refused(ledger):
    with ledger.raises(ValueError, match="precision"):
        TrainConfig.smoke(precision="fp8")
    with ledger.raises(ValueError, match="precision"):
        precision_context("half")
    p = run_cli("train", "--task", "number", "--precision", "fp64", "--out", "unused")
    ledger.bad_input()
    assert p.returncode == 2 and "--precision" in p.stderr


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32(precision, tmp_path):
    """A few smoke steps: the run records its precision, and its loss follows the fp32 run's closely."""
    kw = dict(task="number", seed=0, steps=20, train_size=640, eval_size=100, checkpoint_every=10)
    ref = train(TrainConfig.smoke(**kw), tmp_path / "fp32", progress=False)
    run = train(TrainConfig.smoke(precision=precision, **kw), tmp_path / precision, progress=False)
    assert json.loads((run.path / "config.json").read_text())["train"]["precision"] == precision
    a, b = (pd.read_csv(r.path / "train_log.csv")["loss"] for r in (ref, run))
    assert (a - b).abs().max() < 0.05, (a.tolist(), b.tolist())
    w = torch.load(list_checkpoints(run.path)[-1][1], weights_only=True)["state_dict"]
    assert all(t.dtype == torch.float32 for t in w.values())  # weights stay float32
    assert set(PRECISIONS) == {"fp32", "bf16", "fp16"}
