"""posym.chapters.dynamics: seed statistics, normalisation, hop-learning criteria, purity rules, the claims table, the
figures, and the runs the chapter trains."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from posym.chapters import dynamics as D  # noqa: E402
from posym import metrics, runs, stats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_DATA = REPO / "data" / "paper"
STEPS = list(range(0, 6751, 50))


# -----------------------------------------------------------------------------------------------
# synthetic runs

def make_traj(task: str, seed: int, heads: dict[int, tuple[str, int]], n_layer: int = 12,
              steps=STEPS, transient: dict[int, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Scores of a run: ``heads[layer] = (kind, step)`` makes the layer pure from ``step`` on (mixed 0.6/0.6
    before); layers not in ``heads`` stay mixed.  ``transient[layer] = (a, b)`` makes it pure positional on
    [a, b) before anything else."""
    rows = []
    for s in steps:
        for l in range(n_layer):
            pos, sym = 0.6, 0.6
            if l in heads and s >= heads[l][1]:
                pos, sym = (0.99, 0.01) if heads[l][0] == "positional" else (0.01, 0.99)
            elif transient and l in transient and transient[l][0] <= s < transient[l][1]:
                pos, sym = 0.99, 0.05
            rows.append({"task": task, "seed": seed, "step": s, "layer": l, "head": 0, "pos": pos, "sym": sym,
                         "entropy": 2.8 - 2.0 * s / steps[-1] - 0.01 * l})
    return pd.DataFrame(rows)


def make_eval(task: str, seed: int, hop_steps: dict[int, int], steps=STEPS) -> pd.DataFrame:
    """Accuracy 0 before ``hop_steps[h]`` and 1 from then on; ``all`` is the mean of the hop counts."""
    rows = []
    for s in steps:
        accs = {h: float(s >= t) for h, t in hop_steps.items()}
        for h, a in accs.items():
            rows.append({"task": task, "seed": seed, "step": s, "hop": str(h), "accuracy": a})
        rows.append({"task": task, "seed": seed, "step": s, "hop": "all", "accuracy": float(np.mean(list(accs.values())))})
    return pd.DataFrame(rows)


def paper_like(seeds=(0, 1, 2)):
    """Runs that reproduce every claim of the paper exactly."""
    trajs, evals = [], []
    for seed in seeds:
        num = {1: ("positional", 2300), 0: ("positional", 2500), 2: ("positional", 2800), 3: ("positional", 3200)}
        num.update({l: ("symbolic", 2000 + 100 * l) for l in range(4, 12)})
        trajs.append(make_traj("number", seed, num))
        evals.append(make_eval("number", seed, {1: 2600, 2: 3400, 3: 4200, 4: 4800}))
        let = {l: ("symbolic", 2000 + 50 * l) for l in range(1, 12)}
        trajs.append(make_traj("letter", seed, let))
        evals.append(make_eval("letter", seed, {1: 3400, 2: 3400, 3: 3400, 4: 3400}))
    return pd.concat(evals, ignore_index=True), pd.concat(trajs, ignore_index=True)


# -----------------------------------------------------------------------------------------------
# statistics

@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706204736), (0.975, 4, 2.776445105), (0.975, 30, 2.042272456), (0.95, 10, 1.812461123),
    (0.995, 2, 9.924843201), (0.5, 7, 0.0),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=1e-7)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-7)
    assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_t_quantile_approaches_the_normal():
    assert stats.t_quantile(0.975, 10_000) == pytest.approx(1.959964, abs=1e-3)


def test_betainc_edges_and_symmetry(ledger):
    assert stats.betainc(2.0, 3.0, 0.0) == 0.0 and stats.betainc(2.0, 3.0, 1.0) == 1.0
    assert stats.betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert stats.betainc(2.5, 1.5, 0.4) == pytest.approx(1 - stats.betainc(1.5, 2.5, 0.6))
    with ledger.raises(ValueError):
        stats.betainc(1.0, 1.0, 1.5)


def test_mean_ci_t_interval():
    x = [4000, 4300, 4700, 4000, 4350]
    m, lo, hi = stats.mean_ci(x)
    half = 2.776445105 * np.std(x, ddof=1) / math.sqrt(5)
    assert m == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx((m - half, m + half))
    m90, lo90, hi90 = stats.mean_ci(x, level=0.9)
    assert lo < lo90 < m90 < hi90 < hi


def test_mean_ci_bootstrap_is_seeded_and_inside_the_range(ledger):
    x = [1.0, 2.0, 3.0, 4.0, 10.0]
    a = stats.mean_ci(x, method="bootstrap", seed=3)
    ledger.rerun()
    assert a == stats.mean_ci(x, method="bootstrap", seed=3)
    assert min(x) <= a[1] <= a[0] <= a[2] <= max(x)


def test_mean_ci_degenerate_inputs(ledger):
    assert stats.mean_ci([3.0])[0] == 3.0 and all(math.isnan(v) for v in stats.mean_ci([3.0])[1:])
    assert all(math.isnan(v) for v in stats.mean_ci([]))
    assert stats.mean_ci([2, 2, 2]) == (2.0, 2.0, 2.0)
    assert stats.mean_ci([1.0, float("nan"), 3.0])[0] == 2.0
    with ledger.raises(ValueError, match="level"):
        stats.mean_ci([1, 2], level=95)
    with ledger.raises(ValueError, match="interval method"):
        stats.mean_ci([1, 2], method="wald")


def test_seed_band_per_group_and_point():
    df = pd.DataFrame({"task": ["a"] * 6, "seed": [0, 1, 2] * 2, "step": [0, 0, 0, 10, 10, 10],
                       "acc": [0.0, 0.0, 0.0, 0.5, 0.7, 0.9]})
    band = D.seed_band(df, "acc", by=["task"])
    assert list(band.columns) == ["task", "step", "mean", "lo", "hi", "n"]
    assert band["n"].tolist() == [3, 3]
    assert band.loc[0, ["mean", "lo", "hi"]].tolist() == [0.0, 0.0, 0.0]
    assert band.loc[1, "mean"] == pytest.approx(0.7) and band.loc[1, "lo"] < 0.7 < band.loc[1, "hi"]


# -----------------------------------------------------------------------------------------------
# normalisation and accuracy

def test_minmax_per_layer_normalises_each_run_and_layer():
    t = pd.concat([make_traj("number", 0, {}, n_layer=2), make_traj("number", 1, {}, n_layer=2)])
    t.loc[t["seed"] == 1, "entropy"] *= 0.5
    t.loc[(t["layer"] == 1) & (t["seed"] == 0), "entropy"] = 1.7  # constant layer
    out = D.minmax_per_layer(t)
    for (_, layer), g in out.groupby(["seed", "layer"]):
        v = g.sort_values("step")["entropy_minmax"].to_numpy()
        if v.max() > 0:
            assert v.min() == pytest.approx(0) and v.max() == pytest.approx(1) and v[0] == pytest.approx(1)
    const = out[(out["seed"] == 0) & (out["layer"] == 1)]["entropy_minmax"]
    assert (const == 0).all()
    assert "entropy_minmax" not in t.columns  # a copy


def test_best_steps_takes_the_first_maximum():
    ev = make_eval("number", 0, {1: 100, 2: 200, 3: 300, 4: 400}, steps=list(range(0, 1001, 100)))
    b = D.best_steps(ev)
    assert b.loc[0, "best_step"] == 400 and b.loc[0, "best_accuracy"] == 1.0 and b.loc[0, "final_accuracy"] == 1.0


def test_hop_learning_steps_and_criteria(ledger):
    ev = pd.concat([make_eval("number", 0, {1: 1900, 2: 2500, 3: 3000, 4: 3150}),
                    make_eval("letter", 0, {1: 1900, 2: 2000, 3: 2050, 4: 2100}),
                    make_eval("letter", 1, {1: 1900, 2: 1900, 3: 9000, 4: 1900})])
    hs = D.hop_learning_steps(ev, 0.9)
    num = hs[hs["task"] == "number"].set_index("hop")["step"]
    assert num["1"] == 1900 and num["4"] == 3150 and num["all"] == 3150
    crit = D.hop_criteria(hs, window=337.5).set_index(["task", "seed"])
    assert crit.loc[("number", 0), "sequential"] and not crit.loc[("number", 0), "together"]
    assert crit.loc[("number", 0), "spread"] == 1250
    assert crit.loc[("letter", 0), "together"] and crit.loc[("letter", 0), "spread"] == 200
    # 3-hop never reaches the threshold: neither sequential nor together
    assert math.isnan(crit.loc[("letter", 1), "t3"]) and not crit.loc[("letter", 1), "together"]
    with ledger.raises(ValueError):
        D.hop_learning_steps(ev, 0.0)


def test_hop_criteria_ties_are_not_sequential():
    ev = make_eval("number", 0, {1: 1000, 2: 1000, 3: 2000, 4: 2000})
    assert not D.hop_criteria(D.hop_learning_steps(ev), 500)["sequential"].iloc[0]


# -----------------------------------------------------------------------------------------------
# purity

def test_first_and_settled_rules_on_a_transient_head(ledger):
    t = make_traj("letter", 0, {0: ("symbolic", 2000), 1: ("symbolic", 3000)}, n_layer=3,
                  transient={1: (1000, 1500), 2: (500, 800)})
    first = D.purity_events(t, 0.1, rule="first").set_index("layer")
    settled = D.purity_events(t, 0.1, rule="settled").set_index("layer")
    assert first.loc[1, "kind"] == "positional" and first.loc[1, "step"] == 1000
    assert settled.loc[1, "kind"] == "symbolic" and settled.loc[1, "step"] == 3000
    assert first.loc[2, "kind"] == "positional" and 2 not in settled.index  # never pure at the end
    assert first.loc[0, "step"] == settled.loc[0, "step"] == 2000
    # the first rule is posym.metrics'
    ledger.rerun()
    pd.testing.assert_frame_equal(D.purity_events(t, 0.1), metrics.purity_events(t, 0.1, ("task", "seed")))
    with ledger.raises(ValueError, match="purity rule"):
        D.purity_events(t, 0.1, rule="last")


def test_settled_rule_requires_staying_pure_to_the_end():
    steps = [0, 50, 100, 150, 200]
    t = make_traj("number", 0, {0: ("positional", 50)}, n_layer=1, steps=steps)
    t.loc[t["step"] == 100, ["pos", "sym"]] = (0.8, 0.3)  # a dip
    assert D.purity_events(t, 0.1, rule="settled")["step"].tolist() == [150]
    assert D.purity_events(t, 0.1, rule="first")["step"].tolist() == [50]


def test_cumulative_counts_match_metrics_purity_counts(ledger):
    t = pd.concat([make_traj("number", s, {1: ("positional", 1000 + s * 50), 5: ("symbolic", 800)}, n_layer=6)
                   for s in range(2)])
    ev = D.purity_events(t, 0.1)
    ours = D.cumulative_counts(ev, t["step"].unique())
    ref = metrics.purity_counts(t, 0.1, ("task", "seed"))
    ledger.rerun()
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), ref[ours.columns].reset_index(drop=True),
                                  check_dtype=False)
    # a run without events is reported when asked for
    empty = D.cumulative_counts(ev.iloc[:0], [0, 10], groups=[("letter", 0)])
    assert empty["positional"].tolist() == [0, 0] and empty["task"].tolist() == ["letter", "letter"]


def test_purity_order_matrix_and_ties():
    t = make_traj("number", 0, {1: ("positional", 2300), 2: ("positional", 2300), 3: ("positional", 2600),
                                5: ("symbolic", 2000)}, n_layer=6)
    ev = D.purity_events(t, 0.1)
    order = D.purity_order(ev).iloc[0]
    assert order["positional"] == "L1 = L2, L3" and order["symbolic"] == "L5"
    assert (order["n_positional"], order["n_symbolic"]) == (3, 1)
    assert D.purity_order(ev, steps=True).iloc[0]["positional"] == "L1 = L2 (2300), L3 (2600)"
    runs = D.purity_order(ev, runs=[("number", 0), ("letter", 0)])
    assert runs.iloc[1]["positional"] == "none" and runs.iloc[1]["task"] == "letter"
    m = D.purity_matrix(ev, 6).iloc[0]
    assert m["L1"] == "P 2300" and m["L5"] == "S 2000" and m["L0"] == "·"


def test_order_consistent():
    ref = (1, 0, 2, 3)
    assert D.order_consistent({1: 2300, 2: 2400, 3: 2600}, ref)
    assert D.order_consistent({1: 2300, 2: 2300, 3: 2300}, ref)  # ties
    assert not D.order_consistent({2: 2000, 1: 2300}, ref)
    assert not D.order_consistent({5: 100}, ref)
    assert D.order_consistent({}, ref)


def test_compare_rules_and_final_classes():
    t = make_traj("letter", 0, {1: ("symbolic", 3000)}, n_layer=3, transient={1: (1000, 1500)})
    c = D.compare_rules(t, 0.1).set_index("layer")
    assert c.loc[1, "first"] == "positional" and c.loc[1, "settled"] == "symbolic" and c.loc[1, "final"] == "symbolic"
    assert c.loc[0, "first"] == "—" and math.isnan(c.loc[0, "first_step"]) and c.loc[0, "final"] == "mixed"
    f = D.final_classes(t, 0.1)
    assert f["step"].unique().tolist() == [6750] and f["kind"].tolist() == ["mixed", "symbolic", "mixed"]
    tab = D.final_score_table(pd.concat([f, f.assign(seed=1)]))
    assert tab.loc[1, ("letter", "sym")] == "0.990 ± 0.000"
    # models of different depth per task (the teaching scale): the missing layers are missing ("–" when shown)
    deeper = D.final_classes(make_traj("number", 0, {1: ("positional", 3000)}, n_layer=4), 0.1)
    tab = D.final_score_table(pd.concat([f, deeper]))
    assert list(tab.index) == [0, 1, 2, 3] and pd.isna(tab.loc[3, ("letter", "pos")])
    assert isinstance(tab.loc[3, ("number", "pos")], str)


def test_layer_ranges_and_representative_layers():
    assert D.layer_ranges([3, 0, 1, 2, 5]) == "L0–L3, L5"
    assert D.layer_ranges([4, 5]) == "L4, L5"
    assert D.layer_ranges([]) == "none"
    assert D.layer_ranges(range(1, 12)) == "L1–L11"
    assert D.representative_layers(12) == (1, 5, 11)
    assert D.representative_layers(4) == (1, 2, 3)
    assert D.representative_layers(1) == (0,)


# -----------------------------------------------------------------------------------------------
# claims

def test_claims_table_agrees_with_runs_shaped_like_the_paper():
    ev, traj = paper_like()
    claims = D.claims_table(ev, traj)
    assert list(claims.columns) == ["task", "claim", "paper", "ours", "agree", "value", "lo", "hi", "note"]
    bad = claims[~claims["agree"]]
    assert bad.empty, bad[["task", "claim", "ours"]].to_string()
    num = claims[claims["task"] == "number"].set_index("claim")
    assert num.loc["pure positional heads (γ = 0.1)", "value"] == 4
    assert num.loc["layers that become pure positional", "ours"].startswith("L0–L3")
    assert num.loc["step of best validation accuracy", "value"] == 4800


def test_claims_table_flags_the_differences_we_found():
    ev, traj = paper_like()
    # layer 0 of Number never pure, Letter layer 0 pure symbolic, Letter best step much earlier, a transient
    num0 = (traj["task"] == "number") & (traj["layer"] == 0)
    traj.loc[num0, ["pos", "sym"]] = (0.4, 0.63)
    let0 = (traj["task"] == "letter") & (traj["layer"] == 0) & (traj["step"] >= 2500)
    traj.loc[let0, ["pos", "sym"]] = (0.05, 1.0)
    let11 = (traj["task"] == "letter") & (traj["layer"] == 11) & traj["step"].between(1000, 1400)
    traj.loc[let11, ["pos", "sym"]] = (0.99, 0.05)
    ev = ev[ev["task"] == "number"]
    ev = pd.concat([ev] + [make_eval("letter", s, {h: 2400 for h in range(1, 5)}) for s in range(3)])
    claims = D.claims_table(ev, traj).set_index(["task", "claim"])
    agree = claims["agree"]
    assert not agree[("number", "pure positional heads (γ = 0.1)")]
    assert not agree[("number", "layer 0")]
    assert "pure in 0/3 seeds" in claims.loc[("number", "layer 0"), "ours"]
    assert not agree[("letter", "layer 0")]
    assert not agree[("letter", "step of best validation accuracy")]
    assert not agree[("letter", "pure positional heads (γ = 0.1, cumulative)")]
    assert agree[("letter", "pure positional heads at the last checkpoint")]
    # the layers that become pure keep the paper's relative order, but layer 0 never does: not the paper's claim
    assert not agree[("number", "order in which positional heads become pure")]
    order = claims.loc[("number", "order in which positional heads become pure"), "ours"]
    assert "in 0/3 seeds" in order and "relative order in 3/3" in order and "layer 0 never becomes pure" in order


def test_claims_table_on_runs_that_learned_nothing():
    """The smoke scale: tiny models, no hop learned, no pure head; the table is still filled."""
    steps = [0, 50, 100, 150, 200]
    traj = pd.concat([make_traj(t, s, {}, n_layer=4, steps=steps) for t in ("number", "letter") for s in (0, 1)])
    ev = pd.concat([make_eval(t, s, {h: 10**6 for h in range(1, 5)}, steps=steps)
                    for t in ("number", "letter") for s in (0, 1)])
    claims = D.claims_table(ev, traj)
    assert len(claims) == 20 and (claims["ours"].str.len() > 0).all()
    # only the Letter "absence" claims hold (no positional head, layer 0 never pure)
    assert sorted(claims.loc[claims["agree"], "claim"]) == [
        "layer 0", "pure positional heads (γ = 0.1, cumulative)", "pure positional heads at the last checkpoint"]
    assert set(claims.loc[claims["agree"], "task"]) == {"letter"}


@pytest.mark.skipif(not (PAPER_DATA / "number-s0" / "scores.parquet").exists(), reason="data/paper not present")
def test_claims_on_the_committed_paper_runs():
    """Regression test of the headline numbers the chapter reports."""
    from posym import results

    ev, traj = results.load_table(PAPER_DATA, "eval"), results.load_table(PAPER_DATA, "scores")
    claims = D.claims_table(ev, traj).set_index(["task", "claim"])
    assert claims.loc[("number", "pure positional heads (γ = 0.1)"), "note"] == "per seed: 3, 2, 2, 3, 3"
    assert claims.loc[("number", "step of best validation accuracy"), "value"] == pytest.approx(4270)
    assert claims.loc[("letter", "step of best validation accuracy"), "value"] == pytest.approx(2520)
    assert claims.loc[("number", "hops learned one after another (first step at 90% accuracy)"), "agree"]
    assert claims.loc[("letter", "hops learned together (first steps at 90% within 338 steps)"), "agree"]
    assert not claims.loc[("number", "layer 0"), "agree"]
    assert claims.loc[("number", "layers that become pure positional"), "ours"].startswith("L1–L3")


# -----------------------------------------------------------------------------------------------
# figures and runs

def test_figures_draw_what_they_say():
    ev, traj = paper_like(seeds=(0, 1))
    traj = D.minmax_per_layer(traj)
    fig, ax = plt.subplots()
    best = D.plot_hop_accuracy(ax, ev, "number")
    assert best == 4800
    assert len(ax.lines) == 5 * 2 + 5 + 1  # faint seeds, means, best-step line
    assert {"1-hop", "4-hop", "all"} <= {l.get_label() for l in ax.lines}
    fig, ax = plt.subplots()
    D.plot_layer_scores(ax, traj, "number", 1, legend=True)
    assert [l.get_label() for l in ax.lines] == ["$s_{POS}$", "$s_{SYM}$", "entropy (min–max)"]
    fig, ax = plt.subplots()
    ev01 = D.purity_events(traj, 0.1)
    counts = D.cumulative_counts(ev01, traj["step"].unique())
    D.plot_purity_counts(ax, counts, ev01, "number", 0, 0.1)
    labels = {t.get_text() for t in ax.texts}
    assert {"L1", "L0", "L2", "L3"} <= labels
    plt.close("all")


def test_train_runs_writes_loadable_runs(tmp_path):
    from posym import results

    dirs = runs.train_runs(tmp_path, "smoke", tasks=("number", "letter"), seeds=(0,), n_prompts=8, steps=4,
                        checkpoint_every=2, train_size=64, eval_size=8, batch_size=8)
    assert [d.name for d in dirs] == ["number-s0", "letter-s0"]
    sc = results.load_table(tmp_path, "scores")
    assert set(sc["task"]) == {"number", "letter"} and sorted(sc["step"].unique()) == [0, 1, 2, 4]
    assert len(results.load_table(tmp_path, "eval")) > 0
    kw = dict(tasks=("number",), seeds=(0,), steps=4, checkpoint_every=2, train_size=64, eval_size=8, batch_size=8)
    scores = tmp_path / "number-s0" / "scores.parquet"
    before = scores.stat().st_mtime_ns
    # a finished run is neither retrained nor re-analysed when its scores cover what is asked (shared folders)
    runs.train_runs(tmp_path, "smoke", n_prompts=8, final_only=True, **kw)
    assert scores.stat().st_mtime_ns == before
    # other prompts: re-analysed; final_only computes the metric at the last checkpoint only
    runs.train_runs(tmp_path, "smoke", n_prompts=12, final_only=True, **kw)
    assert sorted(results.load_table(tmp_path, "scores", task="number")["step"].unique()) == [4]
    # a full trajectory is asked again: recomputed at every checkpoint
    runs.train_runs(tmp_path, "smoke", n_prompts=12, **kw)
    assert sorted(results.load_table(tmp_path, "scores", task="number")["step"].unique()) == [0, 1, 2, 4]


def test_train_runs_in_parallel_processes_gives_the_same_runs(tmp_path, ledger):
    from posym import results

    kw = dict(tasks=("number", "letter"), seeds=(0,), n_prompts=8, steps=4, checkpoint_every=2, train_size=64,
              eval_size=8, batch_size=8)
    runs.train_runs(tmp_path / "serial", "smoke", **kw)
    dirs = runs.train_runs(tmp_path / "parallel", "smoke", jobs=2, **kw)
    assert [d.name for d in dirs] == ["number-s0", "letter-s0"]
    ledger.rerun()
    for table in ("scores", "eval"):
        a = results.load_table(tmp_path / "serial", table)
        b = results.load_table(tmp_path / "parallel", table)
        pd.testing.assert_frame_equal(a, b)


def test_run_cache_is_under_the_build_folder():
    path = runs.run_cache("teaching")
    assert path == REPO / "_build" / "runs" / "teaching"
    assert not path.exists() or path.is_dir()


# -----------------------------------------------------------------------------------------------
# the page's helpers

def test_cosine_and_sentences():
    assert D.cosine([1, 0], [0, 1]) == 0.0 and D.cosine([0.89, 0.02], [0.90, 0.01]) == pytest.approx(0.99993, abs=1e-5)
    assert D.selective_line(np.array([0.695, 0.1])).endswith("on 69.5% of the prompts")
    ev, traj = paper_like(seeds=(0, 1))
    line = D.criteria_line(ev, 0.9, 300)
    assert "number: sequential in 2/2" in line and "letter: sequential in 0/2, together in 2/2" in line


def test_scale_warning_and_claims_details(monkeypatch):
    from types import SimpleNamespace

    from posym import glue

    glued = {}
    monkeypatch.setattr(glue, "glue_md", glued.update)
    assert D.scale_warning(SimpleNamespace(scale="paper", n_seeds=5, seed=0)) is None
    assert "teaching" in D.scale_warning(SimpleNamespace(scale="teaching", n_seeds=1, seed=0)).data
    assert glued == {"scale_name": "teaching", "n_seeds": 1, "bold_seed": 0}
    ev, traj = paper_like(seeds=(0, 1))
    claims = D.claims_table(ev, traj)
    md = D.claims_details(claims).data
    assert md.startswith("**Details behind the rows**") and glued["n_agree"].endswith(f"of {len(claims)}")


@pytest.mark.skipif(not (REPO / "data" / "paper" / "number-s4" / "scores.parquet").exists(),
                    reason="needs the committed paper runs")
def test_runs_of_the_paper_scale_and_their_tables(monkeypatch):
    from types import SimpleNamespace

    from posym import glue

    glued = {}
    monkeypatch.setattr(glue, "glue_md", glued.update)
    cfg = SimpleNamespace(scale="paper", data_dir=REPO / "data", n_seeds=2, n_prompts=8, threshold=0.9, ci="t", seed=0)
    r = D.Runs(cfg)
    assert r.n_layer == 12 and r.window == pytest.approx(0.05 * r.total_steps) and len(r.runs) == 4
    s = r.summary()
    assert len(s) == 4 and list(s.columns[:2]) == ["task", "seed"]
    crit, summary = r.hop_tables()
    assert len(crit) == 4 and summary.shape == (10, 3)
    assert {"best_number", "t1_number", "spread_letter", "window", "threshold_pct", "paper_one_hop"} <= set(glued)
    counts = r.last_counts()
    assert list(counts.columns) == ["task", "seed"] + [f"γ = {g} {k}" for g in D.GAMMAS for k in ("positional", "symbolic")]
    assert (counts["γ = 0.05 symbolic"] <= counts["γ = 0.1 symbolic"]).all()  # smaller γ: fewer pure heads
    assert r.purity_matrix(0.1).shape == (4, 2 + 12) and len(r.purity_order(0.05)) == 4
    changed = r.changed_rules(0.1)
    assert "head" not in changed.columns and isinstance(glued["n_transient"], int)
    assert r.final_scores().shape == (12, 4)
    split, sel = r.layer0()
    assert set(split["group"]) == {"points at a letter", "points at a number"} and len(sel) == 12
    assert {"l0_sel", "l0_letter_pos", "l0_number_sym"} <= set(glued)
    figs = [r.plot_accuracy(), r.plot_scores(), r.plot_all_layers("letter"), r.plot_purity(), r.plot_transients(changed)]
    assert all(f is not None and f.get_size_inches()[0] <= 7.5 for f in figs)
    plt.close("all")
