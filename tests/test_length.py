"""Tests for the length-generalisation helpers of posym.longprompts: summaries, break lengths, the fast
last-query scores, and the margin / discrepancy analyses of the key heads (measured and predicted)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from posym import longprompts as LG
from posym.chapters import length as LC
from posym.paper import PAPER_FIG5B, paper_points
from posym import theory
from posym.model import GPTJ, ModelConfig
from posym.tasks import get_task, to_tensors


def small_model(task: str = "number", seed: int = 0, n_layer: int = 2) -> GPTJ:
    torch.manual_seed(seed)
    cfg = ModelConfig.smoke(len(get_task(task).vocab), n_layer=n_layer, attn_pdrop=0.0, resid_pdrop=0.0)
    m = GPTJ(cfg).eval()
    with torch.no_grad():  # sharper attention than at initialisation
        for blk in m.blocks:
            blk.attn.q_proj.weight.mul_(20)
            blk.attn.k_proj.weight.mul_(20)
    return m


# -----------------------------------------------------------------------------------------------
# summaries and break lengths

def test_paper_points():
    p = paper_points()
    assert set(p.task) == {"number", "letter"} and len(p) == 10
    assert PAPER_FIG5B["letter"][850] == 0.90 and PAPER_FIG5B["number"][5000] == 0.03
    assert len(paper_points("number")) == 5


def test_break_length(ledger):
    L = [17, 50, 100, 200]
    assert LG.break_length(L, [1.0, 1.0, 0.8, 0.4], 0.9) == pytest.approx(math.exp((math.log(50) + math.log(100)) / 2))
    assert LG.break_length(L, [1.0, 1.0, 0.8, 0.4], 0.9, interpolate=False) == 100
    assert LG.break_length(L, [1.0, 1.0, 0.95, 0.91], 0.9) is None
    assert LG.break_length(L, [0.1, 0.1, 0.1, 0.1], 0.5) == 17
    assert LG.break_length([200, 17, 100], [0.4, 1.0, 0.8], 0.9, interpolate=False) == 100  # order does not matter
    with ledger.raises(ValueError):
        LG.break_length([1, 2], [1.0], 0.5)


def test_length_summary_and_break_table():
    rows = []
    for seed, acc in ((0, [1.0, 0.6]), (1, [1.0, 0.4]), (2, [1.0, 0.5])):
        for L, a in zip((17, 100), acc):
            rows += [{"task": "number", "seed": seed, "length": L, "hop": "all", "accuracy": a},
                     {"task": "number", "seed": seed, "length": L, "hop": "1", "accuracy": 1.0}]
    t = pd.DataFrame(rows)
    s = LG.length_summary(t)
    r = s[(s.hop == "all") & (s.length == 100)].iloc[0]
    assert r["mean"] == pytest.approx(0.5) and r.ci == pytest.approx(4.302652730 * 0.1 / math.sqrt(3), rel=1e-8)
    assert r.seeds == 3 and r.lo == pytest.approx(0.5 - r.ci)
    assert s[(s.hop == "1")]["ci"].eq(0).all() and (s.hi <= 1).all()
    b = LG.break_table(t, thresholds=(0.9, 0.5))
    assert len(b) == 6
    assert 17 < b[(b.seed == 1) & (b.threshold == 0.5)].break_length.iloc[0] < 100
    assert b[(b.seed == 2) & (b.threshold == 0.5)].break_length.isna().all()     # 0.5 is not below 0.5
    assert b[(b.seed == 0) & (b.threshold == 0.5)].break_length.isna().all()


# -----------------------------------------------------------------------------------------------
# fast last-query scores

@pytest.mark.parametrize("task", ["number", "letter"])
def test_last_query_scores_match_the_hooked_model(task, ledger):
    m = small_model(task, n_layer=3)
    samples = LG.extended_prompts(task, 0, 60, 8)
    x, _, _ = to_tensors(samples, get_task(task).vocab)
    logits, sc = LG.last_query_scores(m, x, [0, 2])
    ref_logits, cache = m.run_with_cache(x, names=[f"blocks.{l}.attn.hook_attn_scores" for l in (0, 2)],
                                         last_only=True)
    ledger.rerun()
    assert torch.allclose(logits, ref_logits[:, -1], atol=1e-5)
    for l in (0, 2):
        assert sc[l].shape == (8, 1, 60)
        assert torch.allclose(sc[l], cache[f"blocks.{l}.attn.hook_attn_scores"][:, :, -1], atol=1e-4)
    # the same discrepancy as posym.theory.head_discrepancy (which runs the hooked path)
    d = LG._margins(sc[2][:, 0].double().numpy(), LG.target_mask(samples, "chain"))[1]
    ledger.rerun()
    assert np.allclose(d, theory.head_discrepancy(m, 2, x), atol=1e-4)
    with ledger.raises(ValueError):
        LG.last_query_scores(m, x, [3])


def test_last_query_scores_on_the_index_construction():
    head = theory.index_head(0.8, beta=1.0)
    seqs = theory.random_task_inputs("number", 5, 40, np.random.default_rng(1))
    x = torch.tensor([get_task("number").vocab.encode(s) for s in seqs])
    _, sc = LG.last_query_scores(head, x, [0])
    for i, s in enumerate(seqs):
        q = int(s[-1])
        expect = [math.cos((39 - j - q) * 0.8) for j in range(40)]
        assert np.allclose(sc[0][i, 0].numpy(), expect, atol=1e-9)


def test_target_mask(ledger):
    task = get_task("number")
    samples = LG.extended_prompts("number", 0, 30, 8)
    for kind in ("answer", "first", "chain"):
        m = LG.target_mask(samples, kind)
        assert m.shape == (8, 30)
    ans, first, chain = (LG.target_mask(samples, k) for k in ("answer", "first", "chain"))
    for i, s in enumerate(samples):
        assert task.solve(s.tokens)[0] == s.tokens[np.flatnonzero(ans[i])[0]]
        assert chain[i].sum() == s.hops and first[i, s.chain[1]] and (chain[i] >= first[i]).all()
        assert int(s.tokens[-1]) == 29 - np.flatnonzero(first[i])[0]   # the query number points at it
    with ledger.raises(ValueError):
        LG.target_mask(samples, "query")


# -----------------------------------------------------------------------------------------------
# margins measured on long prompts

@pytest.fixture(scope="module")
def analysis():
    m = small_model("number", n_layer=2)
    return m, LG.margin_analysis(m, "number", 0, [17, 40, 80], n=16)


def test_margin_analysis_columns_and_consistency(analysis, ledger):
    m, a = analysis
    assert len(a) == 3 * 16 * 2
    assert set(a.columns) >= {"length", "prompt", "hop", "correct", "layer", "margin", "discrepancy", "weight",
                              "hit", "target_logit", "other_logit"}
    assert ((a.margin > 0) == a.hit).all()
    assert np.allclose(a.margin, a.target_logit - a.other_logit)
    assert ((a.weight >= 0) & (a.weight <= 1)).all() and (a.discrepancy >= 0).all()
    # the model's answers agree with longprompts.accuracy_at_length on the same prompts
    for L in (17, 80):
        acc = LG.accuracy_at_length(m, "number", 0, L, n=16)
        ledger.rerun()
        assert acc[acc.hop == "all"].accuracy.iloc[0] == pytest.approx(a[(a.length == L) & (a.layer == 0)].correct.mean())


def test_key_layers_and_summaries(analysis):
    _, a = analysis
    kl = LG.key_layers(a, min_rate=1.01)             # nobody reaches it: the single best layer
    assert len(kl) == 1
    rate = a[a.length == 17].groupby("layer").hit.mean()
    assert kl[0] == rate.idxmax()
    assert LG.key_layers(a, min_rate=0.0) == [0, 1]
    s = LG.margin_summary(a, [0, 1])
    assert list(s.length) == [17, 40, 80] and (s.n == 16).all()
    # a prompt is judged on the key layers whose arg-max was on a target at the base length (17); prompts with
    # no such layer are left out of the predictions, not of the accuracy
    base = a[a.length == 17].set_index(["prompt", "layer"]).margin > 0
    judged = [p for p in range(16) if base[(p, 0)] or base[(p, 1)]]
    assert (s.judged == len(judged)).all() and s.kept.iloc[0] == 1.0
    for i, L in enumerate((17, 40, 80)):
        m = a[a.length == L].set_index(["prompt", "layer"]).margin
        kept, guar = [], []
        for p in judged:
            layers = [l for l in (0, 1) if base[(p, l)]]
            kept.append(all(m[(p, l)] > 0 for l in layers))
            guar.append(all(m[(p, l)] >= math.log(L - 1) for l in layers))
        assert s.kept.iloc[i] == pytest.approx(np.mean(kept))
        assert s.guaranteed.iloc[i] == pytest.approx(np.mean(guar))
        assert s.acc.iloc[i] == pytest.approx(a[(a.length == L) & (a.layer == 0)].correct.mean())
    assert (s.guaranteed <= s.kept).all()
    lt = LG.logit_terms(a, [0])
    assert len(lt) == 3
    ag = LG.prompt_agreement(a, [0, 1])
    assert len(ag) == 3 and ((ag.flagged >= 0) & (ag.flagged <= 1)).all()


def test_predicted_breaks():
    s = pd.DataFrame({"length": [17, 50, 100, 200], "acc": [1.0, 0.95, 0.6, 0.3], "kept": [1.0, 1.0, 0.7, 0.2],
                      "guaranteed": [0.5, 0.2, 0.0, 0.0], "median_discrepancy": [5.0, 5.0, 1.0, 0.5]})
    st = pd.DataFrame({"length": [17, 100, 1000], "kept_static": [1.0, 0.95, 0.2]})
    b = LG.predicted_breaks(s, st).set_index("threshold")
    assert b.loc[0.5, "measured"] == pytest.approx(math.exp(math.log(100) + (0.1 / 0.3) * math.log(2)))
    assert b.loc[0.9, "lemma_f1"] == 17 and b.loc[0.5, "median_discrepancy"] == 100   # 1.0 < log(99)
    assert 100 < b.loc[0.9, "static"] < 1000 and b.loc[0.9, "at_length"] < 100
    measured = pd.DataFrame({"length": [17, 500], "accuracy": [1.0, 0.0]})
    assert 17 < LG.predicted_breaks(s, measured=measured).measured.iloc[0] < 500


# -----------------------------------------------------------------------------------------------
# margins predicted from 17-token prompts

def test_static_margins_agree_with_measured_margins_at_17(analysis, ledger):
    m, a = analysis
    st = LG.static_margins(m, "number", 0, [0, 1], [17, 40, 80], n=16)
    assert len(st) == 3 * 16 * 2
    ledger.rerun()
    for l in (0, 1):
        meas = a[(a.length == 17) & (a.layer == l)].sort_values("prompt").margin.to_numpy()
        pred = st[(st.length == 17) & (st.layer == l)].sort_values("prompt").margin.to_numpy()
        assert np.allclose(meas, pred, atol=1e-4)
    # adding keys can only lower the predicted margin
    w = st.pivot_table(index=["prompt", "layer"], columns="length", values="margin")
    assert (w[40] <= w[17] + 1e-12).all() and (w[80] <= w[40] + 1e-12).all()
    ss = LG.static_summary(st, [0, 1])
    assert list(ss.length) == [17, 40, 80] and (np.diff(ss.kept_static) <= 0).all()
    with ledger.raises(ValueError):
        LG.static_margins(m, "number", 0, [0], [10], n=4)


def test_static_margins_of_the_index_construction_are_exact():
    """For the Index head the logit at distance d is cos((d - s) theta) whatever the key holds, so the
    predicted margin at length n is 1 - max over the other distances, computed here by hand."""
    theta = 0.8
    head = theory.index_head(theta)
    st = LG.static_margins(head, "number", 0, [0], [17, 30, 100], n=12, targets="first")
    samples = LG.extended_prompts("number", 0, 17, 12)
    for i, s in enumerate(samples):
        q = int(s.tokens[-1])
        for n in (17, 30, 100):
            expect = 1 - max(math.cos((d - q) * theta) for d in range(n) if d != q)
            got = st[(st.prompt == i) & (st.length == n)].margin.iloc[0]
            assert got == pytest.approx(expect, abs=1e-9)


# -----------------------------------------------------------------------------------------------
# the page's tables and figures

def _curves():
    rows = []
    for task in ("number", "letter"):
        for seed, drop in ((0, 0.0), (1, 0.1)):
            for L, a in zip((17, 100, 500, 1000), (1.0, 0.8, 0.5, 0.2)):
                for hop in ("all", "1", "4"):
                    rows.append({"task": task, "seed": seed, "length": L, "hop": hop, "accuracy": max(0, a - drop),
                                 "n": 8})
    return pd.DataFrame(rows)


def test_page_tables_and_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from posym.display import Table

    curves = _curves()
    summary = LG.length_summary(curves)
    assert LC.small_scale_warning("paper") is None and "teaching" in LC.small_scale_warning("teaching").data
    acc = LC.accuracy_table(summary)
    assert isinstance(acc, Table)
    assert list(acc.frame.columns) == ["length", "number (ours)", "number (paper)", "letter (ours)", "letter (paper)"]
    assert list(acc.frame["length"]) == [100, 500, 1000]
    assert acc.frame.set_index("length").loc[500, "letter (paper)"] == pytest.approx(PAPER_FIG5B["letter"][500])
    assert "nan" not in repr(acc).lower()
    brk = LC.break_summary(curves)
    assert isinstance(brk, Table) and set(brk.frame["task"]) == {"number", "letter"}
    for fig in (LC.plot_length_curves(summary), LC.plot_length_by_hop(summary)):
        assert fig.get_size_inches()[0] <= 7.5
        plt.close(fig)
    data = LC.LengthData("smoke", curves, {}, 0)
    assert "2 prompts" not in data.describe() and "8 prompts per length" in data.describe()
    m = data.measured()
    assert list(m) == ["number", "letter"] and list(m["number"]["length"]) == [17, 100, 500, 1000]
