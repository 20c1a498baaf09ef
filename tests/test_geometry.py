"""Tests for posym.chapters.geometry: Table 1 / Fig. 8 helpers, the theory tables of the geometry chapter, and plots."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from posym.chapters import geometry as G  # noqa: E402
from posym import runs, stats, theory  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "paper"


def fake_freq_scores(peaks: dict[tuple[str, int], int], seeds=(0, 1, 2), steps=(0, 100), F: int = 64, layers=2):
    """A freq_scores-like table: at the last step each (task, layer) has max logit 1 at one frequency only."""
    rows = []
    for task in ("number", "letter"):
        for seed in seeds:
            for step in steps:
                for layer in range(layers):
                    for f in range(F):
                        peak = peaks.get((task, layer), 0)
                        v = 1.0 if (f == peak and step == steps[-1]) else (0.0 if step == steps[-1] else 0.5)
                        rows.append({"task": task, "seed": seed, "step": step, "layer": layer, "head": 0, "freq": f,
                                     "pos": 1.0 if f < 4 else 0.2, "sym": 0.0 if f < 4 else 0.9, "maxlogit": v,
                                     "maxlogit_sd": 0.1})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# frequency ids and statistics

def test_paper_ids_map_to_our_zero_based_indices():
    assert G.check_paper_ids() < 5e-5                       # every (ID, frequency) pair of Table 1
    assert float(G.rope_frequency(1)) == pytest.approx(0.8660, abs=5e-5)   # ID 2 <-> index 1
    assert float(G.rope_frequency(41)) == pytest.approx(0.0027, abs=5e-5)  # ID 42 <-> index 41
    assert float(G.rope_frequency(0)) == 1.0
    assert np.allclose(G.rope_frequency(np.array([0.0, 0.5, 1.0]))[[0, 2]], [1.0, 10000 ** (-2 / 128)])


def test_mean_halfwidth(ledger):
    m, h = stats.mean_halfwidth([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302652730 * 1.0 / math.sqrt(3), rel=1e-8)
    m, h = stats.mean_halfwidth([5.0, float("inf")])
    assert m == 5.0 and math.isnan(h)
    with ledger.raises(ValueError):
        stats.t_quantile(0.975, 0)


def test_weighted_frequency_and_table1_comparison(ledger):
    # the Number layers peak where the paper's Table 1 says, the Letter layers far away
    fs = fake_freq_scores({("number", 0): 0, ("number", 1): 1, ("letter", 0): 5, ("letter", 1): 5})
    w = G.weighted_frequency_table(fs)
    assert len(w) == 2 * 3 * 2
    r = w[(w.task == "number") & (w.layer == 1)].iloc[0]
    assert r.wavg_index == 1.0 and r.wavg_id == 2.0 and r.peak_id == 2
    assert r.wavg_freq == pytest.approx(0.8660, abs=5e-5)
    t = G.table1_comparison(fs)
    assert list(t.task[:2]) == ["number", "number"]
    num = t[t.task == "number"].set_index("layer")
    assert (num.agree == "yes").all() and (num.our_id == num.paper_id).all()
    let = t[t.task == "letter"].set_index("layer")
    assert (let.agree == "no").all()            # ID 6 vs IDs 18 and 32: angles differ by far more than 2x
    assert let.loc[0, "freq_ratio"] > 2
    # an earlier step can be chosen explicitly (uniform 0.5 -> the middle index)
    early = G.weighted_frequency_table(fs, step=0)
    assert np.allclose(early.wavg_index, 31.5)
    with ledger.raises(ValueError):
        G.weighted_frequency_table(fs, step=7)


def test_close_agreement_by_frequency_ratio():
    fs = fake_freq_scores({("number", 1): 3})     # ID 4 vs the paper's ID 2: 0.75 vs 0.87 rad/token
    t = G.table1_comparison(fs).set_index(["task", "layer"])
    assert t.loc[("number", 1), "agree"] == "close"


def test_frequency_use_curves_and_roles():
    fs = fake_freq_scores({("number", 1): 2})
    c = G.frequency_use_curves(fs)
    assert len(c) == 2 * 2 * 64
    r = c[(c.task == "number") & (c.layer == 1) & (c.freq == 2)].iloc[0]
    assert r.value == 1.0 and r.band_lo == pytest.approx(0.9) and r.band_hi == pytest.approx(1.1) and r.runs == 3
    assert r.id == 3
    roles = G.frequency_roles(fs).set_index(["task", "layer"])
    assert roles.loc[("number", 1), "positional"] == "1-4"
    assert roles.loc[("number", 1), "symbolic"] == "5-64"
    assert roles.loc[("number", 1), "pos_share"] == 1.0
    assert G._ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10" and G._ranges([]) == "-"


def test_pos_sym_by_frequency(ledger):
    fs = fake_freq_scores({})
    d = G.pos_sym_by_frequency(fs, [0, 100])
    assert set(d.step) == {0, 100}
    assert np.allclose(d[d.freq < 4].pos_minus_sym, 1.0) and np.allclose(d[d.freq >= 4].pos_minus_sym, -0.7)
    with ledger.raises(ValueError):
        G.pos_sym_by_frequency(fs, [5])


def test_snapshot_steps():
    rows = []
    for seed, shift in ((0, 0), (1, 100)):
        for step in range(0, 1001, 50):
            acc = min(1.0, max(0.0, (step - 200 - shift) / 400))
            rows += [{"task": "number", "seed": seed, "step": step, "hop": "all", "accuracy": acc},
                     {"task": "number", "seed": seed, "step": step, "hop": "1", "accuracy": 1.0}]
    s = G.snapshot_steps(pd.DataFrame(rows))
    assert list(s) == ["early", "accuracy 0.5", "best accuracy", "final"]
    assert s["early"] == 100 and s["final"] == 1000
    assert s["accuracy 0.5"] == 450          # median of 400 and 500, a checkpoint both runs have
    assert s["best accuracy"] == 650
    never = pd.DataFrame(rows).assign(accuracy=0.1)
    s = G.snapshot_steps(never)
    assert "accuracy 0.5" not in s and s["final"] == 1000 and s["early"] == 100


# -----------------------------------------------------------------------------------------------
# theory tables (the theorem checks of the chapter)

def test_constructions_pass_on_random_inputs():
    t = G.construction_checks(40, lengths=(17, 40))
    assert len(t) == 4 and (t.passed == 1.0).all()
    assert (t.n_prompts == 80).all()


@pytest.fixture(scope="module")
def disc():
    return G.discrepancy_table(300, index_thetas=(0.8, 0.3, 0.05, 1.3), retrieval_thetas=(0.0027, 0.01, 0.0005))


def test_worst_case_never_exceeds_the_proved_bounds(disc):
    assert (disc.worst <= disc.proved_bound + 1e-12).all()
    idx = disc[disc.kind == "index"]
    assert (idx.worst <= idx.paper_bound + 1e-12).all()          # the printed Index bound holds (worst case)
    assert (idx.best <= idx.proved_bound_best + 1e-12).all()


def test_where_the_printed_bounds_fail(disc):
    rep = G.bound_report(disc).set_index(["kind", "theta"])
    # Def. 3.1 read literally (the most favourable input) breaks the printed Index bound, from n = 9 at 0.8
    assert rep.loc[("index", 0.8), "best_vs_paper"] > 0 and rep.loc[("index", 0.8), "best_vs_paper_first_n"] == 9
    r = disc[(disc.kind == "index") & (disc.theta == 0.8) & (disc.n == 9)].iloc[0]
    assert r.best == pytest.approx(1 - math.cos(0.8)) and r.paper_bound == pytest.approx(2 * math.pi ** 2 / 81)
    # the printed Retrieval bound (n theta) fails for short inputs, by less than theta sin(omega)
    for th, last in ((0.0027, 24), (0.01, 13), (0.0005, 54)):
        assert rep.loc[("retrieval", th), "worst_vs_paper_last_n"] == last
        assert 0 < rep.loc[("retrieval", th), "worst_vs_paper_max_excess"] < th * math.sin(math.pi / 4)
        assert rep.loc[("retrieval", th), "worst_vs_proved"] == 0
    ret = disc[disc.kind == "retrieval"]
    assert (ret[ret.in_range].best > 1.9).all()                   # no useful bound on the best input
    assert (ret[ret.in_range].worst > 0).all()                    # the construction works where the theorem says
    assert (ret[(ret.theta == 0.0027) & (ret.n == 300)].worst < 0).all()   # ... and not far beyond
    assert ret[(ret.theta == 0.0027) & ret.in_range].n.max() == 145   # n0 < omega / (2 theta) = 145.4


def test_rational_angles_give_ties():
    d = G.rational_angle_demo((4, 5, 8, 17, 100))
    assert d.loc["pi/2 (theta/2pi = 1/4)", "n=4"] == pytest.approx(1.0)
    assert d.loc["pi/2 (theta/2pi = 1/4)", "n=5"] == pytest.approx(0.0, abs=1e-12)
    assert d.loc["2pi/7 (theta/2pi = 1/7)", "n=8"] == pytest.approx(0.0, abs=1e-12)
    assert (d.loc["0.8 (theta/2pi irrational)"] > 0).all()


def test_fig4a_vectors_come_from_the_head(ledger):
    v = G.fig4a_vectors(0.8, numbers=(1, 2, 3))
    key = v[v.what == "key (every token)"][["x", "y"]].to_numpy()[0]
    assert np.allclose(key, [0.0, 1.0])
    q = v[v.what == "query (before RoPE)"].set_index("distance")[["x", "y"]]
    seen = v[v.what == "key seen from the query"].set_index("distance")[["x", "y"]]
    for s in (1, 2, 3):
        assert np.allclose(q.loc[s], seen.loc[s])                 # aligned exactly at distance s
        assert np.allclose(q.loc[s], [-math.sin(-s * 0.8), math.cos(-s * 0.8)])
    # the same vectors as the model's own query/key weights
    pv = theory.plane_vectors(theory.index_head(0.8))
    tok = list(pv["tokens"])
    ledger.rerun()
    assert np.allclose(pv["q"][tok.index("2")], q.loc[2])


# -----------------------------------------------------------------------------------------------
# plots

def test_plots_draw(disc):
    fs = fake_freq_scores({("number", 1): 1}, layers=3)
    t = G.table1_comparison(fs)
    fig = G.plot_frequency_use(G.frequency_use_curves(fs), t, "number", ncols=2)
    assert len([a for a in fig.axes if a.axison]) == 3
    plt.close(fig)
    fig = G.plot_pos_sym_heatmaps(G.pos_sym_by_frequency(fs, [0, 100]), {"early": 0, "final": 100})
    assert len(fig.axes) == 2 * 2 + 1  # panels + colour bar
    plt.close(fig)
    fig = G.plot_pos_sym_heatmaps(G.pos_sym_by_frequency(fs, [0, 100]),
                                  {"number": {"early": 0, "final": 100}, "letter": {"final": 100}})
    assert sum(a.get_visible() for a in fig.axes) == 3 + 1
    plt.close(fig)
    ax = G.plot_fig4a(G.fig4a_vectors(), 0.8)
    plt.close(ax.figure)
    ax = G.plot_discrepancy(disc, "index")
    assert ax.get_yscale() == "log"
    plt.close(ax.figure)
    ax = G.plot_discrepancy(disc, "retrieval")
    assert ax.get_yscale() == "symlog"
    plt.close(ax.figure)
    geo = pd.DataFrame({"prompt": np.repeat([0, 1], 34), "position": np.tile(np.arange(17), 4),
                        "kind": np.tile(np.repeat(["q", "k"], 17), 2), "rotated": False,
                        "x": np.random.default_rng(0).normal(size=68), "y": 0.0, "freq": 0})
    ax = G.plot_trained_geometry(geo)
    assert "ID 1" in ax.get_title()
    plt.close(ax.figure)


# -----------------------------------------------------------------------------------------------
# the committed paper-scale results

@pytest.mark.skipif(not (DATA / "number-s0" / "freq_scores.parquet").exists(), reason="no committed results")
def test_committed_results_table1():
    from posym.results import load_table

    fs = load_table(DATA, "freq_scores")
    t = G.table1_comparison(fs)
    assert len(t) == 24 and set(t.seeds) == {5}
    num = t[t.task == "number"].set_index("layer")
    # the positional layers of the Number model peak at the fastest frequency (ID 1) in every seed
    for l in (0, 1, 2):
        assert num.loc[l, "our_peak_id"] == "1"
    assert (num.loc[1:3, "our_id"] < num.loc[5:, "our_id"].min()).all()
    let = t[t.task == "letter"]
    assert (let.our_id > 30).all()                                # slow frequencies throughout


def test_table1_comparison_for_a_smaller_rope():
    """A model with 16 RoPE pairs (rotary_dim 32): angles are compared, so the paper's ID 2 (0.866 rad/token)
    corresponds to ID 1.25 here."""
    fs = fake_freq_scores({("number", 1): 0}, F=16)
    t = G.table1_comparison(fs, rotary_dim=32).set_index(["task", "layer"])
    r = t.loc[("number", 1)]
    assert r.paper_id_here == pytest.approx(1.25) and r.our_id == 1.0
    assert r.agree == "close"   # |1 - 1.25| > 0.5 * 32 / 128 (the paper rounding), angles within 2x
    assert r.freq_ratio == pytest.approx(1 / 0.8660, rel=1e-3)


def test_train_models_restores_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    trained = runs.train_models("smoke", 0, tmp_path, tasks=("number",), steps=4, checkpoint_every=2, eval_size=40)
    assert set(trained) == {"number"} and (trained["number"] / "config.json").exists()
    assert torch.get_num_threads() == before


# -----------------------------------------------------------------------------------------------
# the page's steps: tables, glued numbers and figures

def test_page_tables_and_figures(disc):
    from posym.display import Table
    assert G.small_scale_warning("paper") is None and "smoke" in G.small_scale_warning("smoke").data
    ids = G.paper_id_table()
    assert isinstance(ids, Table) and "nan" not in repr(ids).lower()
    rep = G.discrepancy_report(disc, int(disc["n"].max()))
    assert isinstance(rep, Table) and "agree" not in repr(rep)
    assert isinstance(G.rational_angle_table((4, 5)), Table)
    fig = G.plot_fig5a_paper(disc)
    assert len(fig.axes[0].lines) == 4 and fig.get_size_inches()[0] <= 7.5   # two bounds, two exact curves
    plt.close(fig)
    fig = G.plot_fig5a_detail(disc)
    assert fig.get_size_inches()[0] <= 7.5
    plt.close(fig)
    geo = pd.DataFrame({"prompt": np.repeat([0, 1], 34), "position": np.tile(np.arange(17), 4),
                        "kind": np.tile(np.repeat(["q", "k"], 17), 2), "rotated": False,
                        "x": np.random.default_rng(0).normal(size=68), "y": 1.0, "freq": 0})
    fig = G.plot_fig4b_arrows(geo)
    arrows = [t for ax in fig.axes for t in ax.texts if t.get_text()]
    assert len(arrows) == 2 * 17   # one position label per arrow, keys and queries of one prompt
    plt.close(fig)
    fs = fake_freq_scores({("number", 1): 1, ("letter", 1): 40}, layers=3)
    table1 = G.table1_comparison(fs)
    shown = G.table1_display(table1, {"number": 3, "letter": 3})
    assert "agree" in repr(shown) and "number:" in shown.caption
    fig = G.plot_fig8(table1, G.frequency_use_curves(fs), "number", 3)
    assert fig.get_size_inches()[0] <= 7.5
    plt.close(fig)


def test_rope_logit_depends_on_distance_only():
    import torch
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(128, generator=gen, dtype=torch.float64), torch.randn(128, generator=gen, dtype=torch.float64)
    logit = G.rope_logit(q, k)
    assert logit(5, 2) == pytest.approx(logit(4005, 4002), rel=1e-9)
    assert logit(0, 0) == pytest.approx(float(q @ k))
