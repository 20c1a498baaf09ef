"""posym.chapters.audit: the chapter's selections and the subset version of posym.audit.shortcut_use."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from posym import audit as A
from posym.chapters import audit as R
from posym import io as pio
from posym.tasks import get_task


class RulePredictor(torch.nn.Module):
    """Stand-in model: all mass on a numpy rule's prediction."""

    def __init__(self, rule, vocab_size):
        super().__init__()
        self.rule, self.vocab_size = rule, vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, last_only=True):
        pred = torch.from_numpy(self.rule(x.numpy()))
        logits = torch.full((len(x), 1, self.vocab_size), -20.0)
        logits[torch.arange(len(x)), 0, pred] = 20.0
        return logits


@pytest.fixture(scope="module")
def number_data():
    return {"train": A.split_arrays("number", "train", 0, 2000), "val": A.split_arrays("number", "val", 0)}


def test_shortcut_use_arrays_equals_audit_shortcut_use(number_data, ledger):
    model = RulePredictor(A.number_pointer_votes, len(get_task("number").vocab))
    per, _ = A.shortcut_use({0: model}, "number", splits=("val",), solvers=["pointer_votes", "query_only"],
                            n_train=2000)
    fitted = A.fit_solvers("number", number_data["train"])
    mine = R.shortcut_use_arrays(model, "number", number_data["val"], fitted, seed=0,
                                 solvers=["pointer_votes", "query_only"], label="val")
    ledger.rerun()
    pd.testing.assert_frame_equal(per.reset_index(drop=True), mine.reset_index(drop=True), check_dtype=False)


def test_use_gap_of_a_copycat_is_one(number_data):
    model = RulePredictor(A.number_pointer_votes, len(get_task("number").vocab))
    fitted = A.fit_solvers("number", number_data["train"])
    a = {k: v[:500] for k, v in number_data["val"].items()}
    gap = R.use_gap(R.shortcut_use_arrays(model, "number", a, fitted, solvers=["pointer_votes"]))
    g = gap.set_index("hop")
    assert (g["acc right"] == 1).all() and (g["acc wrong"] == 0).all() and (g["gap"] == 1).all()
    assert (g["follows shortcut"] == 1).all()
    assert g.loc["all", "n right"] + g.loc["all", "n wrong"] == 500


def test_solver_floor_leaves_query_readers_out_of_one_hop(number_data):
    data = dict(number_data, test=A.split_arrays("number", "test", 0, 2000))
    acc = A.shortcut_accuracy("number", data=data)
    floor = R.solver_floor(acc).set_index("hop")
    assert floor.loc["1", "solver"] not in A.HOP1_CHAIN_READERS["number"]
    raw = R.solver_floor(acc, exclude_hop1=False).set_index("hop")
    assert raw.loc["1", "accuracy"] == pytest.approx(1.0)      # the query points straight at the answer
    m = R.solver_matrix(acc, "number")
    assert list(m.columns) == list(A.HOP_LABELS) and m["all"].is_monotonic_decreasing


def test_statistics_and_headline_rows():
    data = {"train": A.split_arrays("letter", "train", 0, 1000), "val": A.split_arrays("letter", "val", 0, 500),
            "test": A.split_arrays("letter", "test", 0, 800)}
    stats = R.compute_statistics("letter", data)
    assert {"letter_frequency", "letter_instructions", "letter_distractors", "answer_multiplicity",
            "information"} <= set(stats)
    head = R.headline_regularities(stats)
    assert len(head) == len(R.HEADLINE["letter"])
    assert (head["n"] > 0).all()
    assert ((head["ci_lo"] <= head["rate"] + 1e-12) & (head["rate"] <= head["ci_hi"] + 1e-12)).all()
    unique = head.set_index("statistic").loc["answer_letter_unique"]
    assert unique["rate"] == 1.0     # validity: the last hop must match exactly one token
    nstats = R.compute_statistics("number", {k: A.split_arrays("number", k, 0, 500) for k in ("train", "val", "test")})
    into = R.number_offchain_into_target(nstats["number_instructions"])
    assert list(into.index) == list(range(8, 16))
    assert np.allclose(into["uniform 8/t"], 8 / into.index.to_numpy())


def test_slice_duplicates_and_merge():
    x = A.split_arrays("number", "val", 0, 50)
    dup = dict(x, x=np.concatenate([x["x"][:10], x["x"][:40]]))
    d = R.slice_duplicates("number", {"a": x, "b": dup})
    w = d[(d.kind == "within") & (d.a == "b")].iloc[0]
    assert w.extra_copies == 10
    m = R.merge({"t": pd.DataFrame({"a": [1]})}, {"t": pd.DataFrame({"a": [2]}), "u": pd.DataFrame({"b": [3]})})
    assert m["t"]["a"].tolist() == [1, 2] and set(m) == {"t", "u"}


def test_load_committed_reads_manifest_tables(tmp_path):
    assert R.load_committed(tmp_path / "nope") == ({}, {})
    pio.atomic_write_table(tmp_path / "shortcut_use.csv", pd.DataFrame({"hop": ["all", "1"], "accuracy": [0.5, 1]}))
    pio.write_manifest(tmp_path, {"what": "test"}, ["shortcut_use.csv"])
    tables, info = R.load_committed(tmp_path)
    assert info["what"] == "test" and list(tables) == ["shortcut_use"]
    assert tables["shortcut_use"]["hop"].tolist() == ["all", "1"]
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]


AUDIT_DIR = Path(__file__).resolve().parents[1] / "data" / "audit"


@pytest.mark.skipif(not (AUDIT_DIR / "manifest.json").exists(), reason="data/audit is not committed")
def test_page_helpers_on_the_committed_tables():
    """book/audit.md shows R.tables, quotes R.text_values and draws R.plot_*; on the committed tables every glue
    name of the page is produced and every table and figure is built (the variants tables scroll: display tables)."""
    import re

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from posym.display import Table

    committed, manifest = R.load_committed(AUDIT_DIR)
    first = committed["curves_first_above_floor"].assign(hop=lambda d: d["hop"].astype(str))
    au = R.Audit(100_000, committed, manifest, {}, {k: committed[k] for k in R._STAT_TABLES},
                 committed["shortcut_accuracy"], committed["duplicates"], committed["shortcut_use"],
                 {"per_model": committed["variant_accuracy"], "regularity": committed["variant_regularity"],
                  "conditions": committed.get("variant_conditions")}, first)
    values = R.text_values(au, 100_000, True)
    page = (AUDIT_DIR.parents[1] / "book" / "audit.md").read_text()
    used = set(re.findall(r"\{glue:md\}`([^`]+)`", page))
    assert used <= set(values), used - set(values)
    assert "seeds 0, 1" in values["audited_seeds"]
    shown = R.tables(au)
    assert {"headline", "floor", "gap", "variants", "variant_accuracy", "conditions", "curves"} <= set(shown)
    assert all(isinstance(t, Table) for t in shown.values())
    assert "model s1" in shown["variant_accuracy"].frame.columns
    assert "seeds:" in R.use_text(au)
    for f in (R.plot_solvers(au.acc), R.plot_shortcut_use(au.use), R.plot_variants(au)):
        assert isinstance(f, plt.Figure) and f.get_size_inches()[0] <= 7.5
        plt.close(f)
    lf = R.least_frequent_rates(au.va)
    assert set(lf["hop"].astype(str)) >= {"1", "4"}
