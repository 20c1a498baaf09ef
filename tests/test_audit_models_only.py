"""``posym.audit.run_audit(models_only=True)``: recompute the trained models' tables for more seeds, keep the
generator statistics already computed, and refuse an audit folder that does not match."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from posym import audit as A
from posym import io as pio
from posym.model import GPTJ
from posym.train import TrainConfig, save_checkpoint

N_TRAIN = 2_000


def _model_root(tmp_path, seeds=(0, 3)):
    root = tmp_path / "models"
    for task in A.PAPER_TASKS:
        for seed in seeds:
            cfg = TrainConfig.smoke(task=task, seed=seed)
            torch.manual_seed(seed)
            run = root / f"{task}-s{seed}"
            save_checkpoint(run, 0, GPTJ(cfg.model_config()).eval(), cfg)
            (run / "checkpoints" / "step_0000000.pt").rename(run / "final.pt")
    return root


def _old_audit(tmp_path, seed=0, n_train=N_TRAIN):
    out = tmp_path / "audit"
    out.mkdir()
    stats = pd.DataFrame({"task": ["letter"], "rate": [0.25]})
    pio.atomic_write_table(out / "letter_frequency.csv", stats)
    pio.atomic_write_table(out / "shortcut_use.csv", pd.DataFrame({"stale": [1]}))  # a model table: replaced
    pio.write_manifest(out, {"data_seed": seed, "n_train_slice": n_train, "created": "then"},
                       ["letter_frequency.csv", "shortcut_use.csv"])
    return out, stats


@pytest.mark.slow
def test_models_only_keeps_statistics_and_recomputes_model_tables_for_every_seed(tmp_path):
    out, stats = _old_audit(tmp_path)
    root = _model_root(tmp_path)
    man = A.run_audit(out, n_train=N_TRAIN, model_root=root, variant_n=16, verify=16, shortcut_splits=("val",),
                      log=lambda *a: None, models_only=True)
    pio.verify_manifest(out)
    pd.testing.assert_frame_equal(pio.read_table(out / "letter_frequency.csv"), stats)
    use = pio.read_table(out / "shortcut_use.csv")
    assert "stale" not in use.columns
    assert sorted(use.groupby("task")["seed"].unique().map(sorted).to_dict().items()) == \
        [("letter", [0, 3]), ("number", [0, 3])]
    assert set(man["files"]) >= {"letter_frequency.csv", "shortcut_use.csv", "shortcut_use_summary.csv",
                                 "variant_accuracy.csv", "variant_accuracy_summary.csv"}
    assert man["statistics_from"]["created"] == "then"
    assert man["models"] == {"number": [0, 3], "letter": [0, 3]}
    summ = pio.read_table(out / "shortcut_use_summary.csv")
    assert (summ["n_models"] == 2).all()
    # a second models-only run still names the run that computed the statistics
    again = A.run_audit(out, n_train=N_TRAIN, model_root=root, variant_n=16, verify=16, shortcut_splits=("val",),
                        log=lambda *a: None, models_only=True)
    assert again["statistics_from"]["created"] == "then"


def test_models_only_refuses_a_missing_corrupt_or_other_audit(tmp_path, ledger):
    with ledger.raises(pio.ResultError, match="manifest.json is missing"):
        A.run_audit(tmp_path / "nothing", n_train=N_TRAIN, models_only=True, log=lambda *a: None)
    out, _ = _old_audit(tmp_path)
    with ledger.raises(pio.ResultError, match="n_train 2000, not 0 and 5"):
        A.run_audit(out, seed=0, n_train=5, models_only=True, log=lambda *a: None)
    (out / "letter_frequency.csv").write_text("task,rate\nletter,0.5\n")
    ledger.fault()
    with pytest.raises(pio.ResultError, match="letter_frequency.csv: checksum mismatch"):
        A.run_audit(out, n_train=N_TRAIN, models_only=True, log=lambda *a: None)


def test_seed_summary_interval_is_never_narrower_than_the_pooled_wilson():
    per = pd.DataFrame({"task": "letter", "seed": [0, 1], "n": [500, 400], "accuracy": [1.0, 1.0],
                        "ci_lo": 0.99, "ci_hi": 1.0})
    row = A.seed_summary(per, ["task"]).iloc[0]
    lo, hi = A.wilson(900, 900)
    assert row["accuracy"] == 1.0 and row["ci_hi"] == 1.0
    assert row["ci_lo"] == pytest.approx(float(lo)) and row["ci_lo"] < 1.0  # the t-interval alone has zero width
    assert "widened" in row["ci_kind"]
    per["accuracy"] = [0.6, 0.9]  # seeds disagree: the t-interval is the wider one
    row = A.seed_summary(per, ["task"]).iloc[0]
    m, tlo, thi = A.mean_ci([0.6, 0.9])
    assert (row["ci_lo"], row["ci_hi"], row["ci_kind"]) == (pytest.approx(tlo), pytest.approx(thi), "t over seeds")
    one = A.seed_summary(per.iloc[:1], ["task"]).iloc[0]
    assert one["ci_kind"] == "Wilson (one seed)" and one["ci_lo"] == 0.99
