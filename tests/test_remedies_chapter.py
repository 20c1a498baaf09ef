"""The remedies chapter's science on small synthetic inputs (seconds), and the committed sweep when it is there."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posym.chapters import remedies as R

ROOT = Path(__file__).resolve().parents[1]


def test_used_frequencies():
    rows = []
    for layer, use in enumerate(([3.0, 2.0, 0.1, 0.0], [0.0, 0.2, 1.0, 0.6])):
        for f, v in enumerate(use):
            rows.append({"step": 10, "layer": layer, "head": 0, "freq": f, "maxlogit": v})
            rows.append({"step": 0, "layer": layer, "head": 0, "freq": f, "maxlogit": 1.0})  # ignored: not final
    assert R.used_frequencies(pd.DataFrame(rows)) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="threshold"):
        R.used_frequencies(pd.DataFrame(rows), threshold=0)


def test_remedy_scaling():
    assert R.remedy_scaling("none", 5000) is None
    assert R.remedy_scaling("pi", 170) == {"method": "pi", "factor": pytest.approx(10.0)}
    assert R.remedy_scaling("pi", 10)["factor"] == 1.0  # no extension up to the training length
    assert R.remedy_scaling("yarn", 34)["train_length"] == 17
    assert R.remedy_scaling("base", 34) == {"method": "base", "new_base": R.NEW_BASE}
    with pytest.raises(ValueError, match="unknown remedy 'rope'"):
        R.remedy_scaling("rope", 100)
    with pytest.raises(ValueError, match="needs the frequencies"):
        R.remedy_scaling("freq", 100)
    with pytest.raises(ValueError, match="length must be positive"):
        R.remedy_scaling("pi", 0)


def test_train_config_overrides():
    from posym.train import TrainConfig

    assert R.train_config("none", 1).hash() == TrainConfig.teaching("number", 1).hash()
    mc = R.train_config("nope", 0).model_config()
    assert mc.nope_layers == (4, 5, 6) and mc.attn_only
    assert R.train_config("partial", 0).model_config().rotary_dim == 16
    assert R.train_config("big_base", 0).model_config().rope_base == 5e5
    assert R.train_config("subsample", 0).model_config().position_sampling["kind"] == "subsample"
    assert R.train_config("nope", 0, scale="smoke").model_config().nope_layers == (1, 2, 3)
    with pytest.raises(ValueError, match="unknown training remedy"):
        R.train_config("offset", 0)


def _fake_results():
    acc, pred = [], []
    for task, brk in (("number", 100), ("letter", 1000)):
        for k, remedy in enumerate(R.INFERENCE_REMEDIES):
            for L in (17, 50, 100, 300, 1000, 3000):
                a = 1.0 if L < brk * (1 + k) else 0.1
                acc.append({"task": task, "remedy": remedy, "length": L, "hop": "all", "accuracy": a, "n": 16})
                pred.append({"task": task, "remedy": remedy, "length": L, "kept_static": a})
    scores = pd.DataFrame([{"task": t, "remedy": r, "length": 1000, "layer": l, "pos": 1.0, "sym": 0.0,
                            "entropy_norm": 0.2} for t in R.TASKS for r in R.INFERENCE_REMEDIES for l in range(3)])
    con = R.construction_margins([17, 100])
    tl = pd.DataFrame([{"remedy": r, "seed": s, "length": L, "hop": "all", "accuracy": 1.0 if L < 100 else 0.0}
                       for r in ("none", "big_base") for s in (0, 1) for L in (17, 50, 100, 200)])
    ts = pd.DataFrame([{"remedy": r, "seed": s, "layer": l, "pos": 1.0, "sym": 0.0}
                       for r in ("none", "big_base") for s in (0, 1) for l in range(3)])
    return {"accuracy": pd.DataFrame(acc), "predicted": pd.DataFrame(pred), "scores": scores,
            "constructions": con, "training_length": tl, "training_scores": ts}


def test_break_table_and_answers():
    res = _fake_results()
    bt = R.break_table(res)
    assert len(bt) == 2 * len(R.INFERENCE_REMEDIES)
    row = bt[(bt["task"] == "number") & (bt["remedy"] == R.LABELS["none"])].iloc[0]
    assert 50 < row["break 0.5"] <= 100 and row["predicted 0.5"] == row["break 0.5"]
    a = R.answers(res)
    assert a["pred_within2"].startswith(f"{len(bt)} of") or "of" in a["pred_within2"]
    assert "later" in a["number_list"]  # the fake remedies break later
    assert "positional" in a["classes_text"]
    t = R.training_summary(res)
    assert list(t["classes (per seed)"]) == ["PPP / PPP", "PPP / PPP"]


def test_training_text_says_when_a_remedy_is_not_learned():
    res = _fake_results()
    tl = res["training_length"]
    sub = tl[tl["remedy"] == "none"].assign(remedy="subsample", accuracy=0.1)  # never above chance
    big = tl[tl["remedy"] == "big_base"].assign(accuracy=lambda d: np.where(d["length"] < 200, 1.0, 0.0))
    res["training_length"] = pd.concat([tl[tl["remedy"] == "none"], sub, big], ignore_index=True)
    res["training_scores"] = pd.concat([res["training_scores"],
                                        res["training_scores"].assign(remedy="subsample")], ignore_index=True)
    text = R.answers(res)["training_text"]
    assert f"{R.LABELS['subsample']}: the task is not learned (accuracy 0.10 at 17 tokens" in text
    assert f"{R.LABELS['big_base']}: accuracy 1.00 at 17 tokens" in text and "(later than untreated)" in text
    res["training_length"] = pd.concat([tl[tl["remedy"] == "none"], tl[tl["remedy"] == "none"].assign(
        remedy="big_base")], ignore_index=True)
    assert "(about the same as untreated)" in R.answers(res)["training_text"]


def test_construction_margins_identity_at_train_length():
    c = R.construction_margins([17])
    for kind in ("index", "retrieval"):
        g = c[c["kind"] == kind].set_index("remedy")
        others = g.drop(index="base")
        assert np.allclose(others["margin"], others.loc["none", "margin"])  # every length-dependent remedy: s = 1


def test_figures_draw():
    import matplotlib
    matplotlib.use("Agg")
    res = _fake_results()
    for f in (R.plot_accuracy, R.plot_classes, R.plot_prediction, R.plot_training):
        fig = f(res)
        assert fig.axes


@pytest.mark.skipif(not (ROOT / "data" / "remedies" / "inference_accuracy.csv").exists(),
                    reason="the committed sweep is not there")
def test_committed_sweep_is_complete():
    acc = pd.read_csv(ROOT / "data" / "remedies" / "inference_accuracy.csv")
    assert set(acc["remedy"]) == set(R.INFERENCE_REMEDIES) and set(acc["task"]) == set(R.TASKS)
    # the untreated curve is recomputed on the same prompts: at 17 tokens every remedy but "base" is the identity
    a17 = acc[(acc["length"] == 17) & (acc["hop"].astype(str) == "all")].set_index(["task", "remedy"])["accuracy"]
    for t in R.TASKS:
        for r in ("pi", "ntk", "yarn", "freq"):
            assert a17[(t, r)] == a17[(t, "none")]
