"""The appendix "Reconciling with the paper": grids, purity rules, Table 1 weightings, long-prompt constructions,
the seed spread, the stand-in inputs and the figures (``posym.chapters.reconcile``)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from posym.chapters import reconcile as R

from conftest import REPO


def _scores(task, seed, layers):
    """A tiny trajectory: ``layers`` maps layer -> list of (pos, sym) at steps 0, 50, 100, ..."""
    rows = []
    for layer, vals in layers.items():
        for i, (p, s) in enumerate(vals):
            rows.append({"task": task, "seed": seed, "step": 50 * i, "layer": layer, "head": 0, "pos": p, "sym": s})
    return pd.DataFrame(rows)


def _eval(task, seed, accs, every=50):
    return pd.DataFrame([{"task": task, "seed": seed, "step": every * i, "hop": "all", "accuracy": a}
                         for i, a in enumerate(accs)])


# -- 3. grid ---------------------------------------------------------------------------------------

def test_on_grid_keeps_multiples_only():
    df = pd.DataFrame({"step": [0, 1, 5, 50, 250, 300, 500]})
    assert R.on_grid(df, 250)["step"].tolist() == [0, 250, 500]
    assert R.on_grid(df, 50)["step"].tolist() == [0, 50, 250, 300, 500]
    with pytest.raises(ValueError):
        R.on_grid(df, 0)


def test_grid_table_best_step_moves_to_the_next_grid_point():
    accs = [0.0] * 5 + [0.5, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]   # first 1.0 at step 350
    ev = _eval("letter", 0, accs)
    sc = _scores("letter", 0, {1: [(1, 1)] * 4 + [(0.0, 1.0)] * 8})
    t = R.grid_table(ev, sc)
    assert t.loc[t["grid"] == 50, "best_step"].item() == 350
    assert t.loc[t["grid"] == 250, "best_step"].item() == 500
    assert t.loc[t["grid"] == 50, "sym@0.1"].item() == 1
    s = R.grid_summary(t)
    assert list(s["grid"]) == [50, 250] and not s["best_agrees"].any()


def test_dip_table_missed_when_the_coarse_grid_skips_it():
    sym = [1.0] * 20
    sym[6] = 0.05                     # a one-checkpoint dip at step 300: a 250-step grid cannot see it
    sc = _scores("letter", 0, {10: [(0.0, v) for v in sym]})
    d = R.dip_table(sc, layers=(10,))
    assert d["missed"].item() and d["min_step"].item() == 300 and d["width"].item() == 1
    sym[5] = 0.06                     # now the dip covers step 250 too
    sc = _scores("letter", 0, {10: [(0.0, v) for v in sym]})
    assert not R.dip_table(sc, layers=(10,))["missed"].item()


# -- 4. purity rules -------------------------------------------------------------------------------

def test_fraction_classes_majority_and_share():
    pp = pd.DataFrame({"task": "number", "seed": 0, "step": 10, "layer": 0, "prompt": range(4),
                       "pos": [1.0, 1.0, 0.5, 0.99], "sym": [0.0, 0.0, 0.5, 0.01]})
    assert R.fraction_classes(pp, 0.1, 0.5)["kind"].item() == "positional"      # 3/4 > 1/2
    assert R.fraction_classes(pp, 0.1, 0.9)["kind"].item() == "mixed"           # 3/4 < 90 %
    two = pp.iloc[:2].assign(pos=[1.0, 0.5], sym=[0.0, 0.5])
    assert R.fraction_classes(two, 0.1, 0.5)["kind"].item() == "mixed"          # exactly half is not a majority


def test_purity_rules_count_every_rule():
    ev = _eval("number", 0, [0.0, 0.5, 1.0, 1.0])
    sc = _scores("number", 0, {0: [(1, 1), (0.93, 0.07), (0.5, 0.5), (0.5, 0.5)],   # pure once (γ 0.1), then mixed
                               1: [(1, 1), (0.5, 0.5), (0.97, 0.02), (0.97, 0.02)],   # pure from step 100, γ 0.05
                               2: [(1, 1), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]})
    rules = R.purity_rules(ev, sc)
    got = {r.rule: (r.positional, r.symbolic) for r in rules.itertuples()}
    assert got["prompt mean, γ = 0.1, cumulative"] == (2, 1)
    assert got["prompt mean, γ = 0.1, best step"] == (1, 1)     # best step 100
    assert got["prompt mean, γ = 0.1, final step"] == (1, 1)
    assert got["prompt mean, γ = 0.05, cumulative"] == (1, 1)
    s = R.rules_summary(rules)
    assert not s["reproduces"].any() and s["number"].iloc[0] == "2+1"


def test_purity_rules_with_per_prompt_scores():
    ev = _eval("number", 0, [0.0, 1.0])
    sc = _scores("number", 0, {0: [(1, 1), (0.9, 0.2)]})
    pp = pd.DataFrame({"task": "number", "seed": 0, "step": 50, "layer": 0, "prompt": range(3),
                       "pos": [1.0, 1.0, 0.7], "sym": [0.0, 0.0, 0.6]})
    rules = R.purity_rules(ev, sc, per_prompt=pp)
    r = rules[rules["rule"] == "prompts pure > 50%, γ = 0.1, final step"]
    assert (r["positional"].item(), r["symbolic"].item()) == (1, 0)
    r = rules[rules["rule"] == "prompts pure ≥ 90%, γ = 0.1, final step"]
    assert r["positional"].item() == 0


# -- 5. Table 1 weightings -------------------------------------------------------------------------

def test_weighted_id():
    u = np.zeros(64)
    u[0] = 5.0
    for w in R.WEIGHTINGS:
        assert R.weighted_id(u, w) == 1.0
    u = np.full(64, 1.0)
    assert R.weighted_id(u, "positive") == pytest.approx(32.5)
    v = np.zeros(64)
    v[[0, 9]] = [-4.0, 1.0]          # a negative value counts for |.| and the square, not for the positive part
    assert R.weighted_id(v, "positive") == 10.0
    assert R.weighted_id(v, "absolute") == pytest.approx(1 + 9 * 1 / 5)
    assert R.weighted_id(v, "square") == pytest.approx(1 + 9 * 1 / 17)
    assert R.weighted_id(v, "square", sd=np.where(np.arange(64) == 9, 4.0, 0.0)) == pytest.approx(1 + 9 * 17 / 33)
    assert R.weighted_id(v, "argmax") == 10.0
    assert math.isnan(R.weighted_id(-np.ones(64), "positive"))
    with pytest.raises(ValueError):
        R.weighted_id(u, "median")


def test_table1_weightings_rule():
    rows = []
    for seed, peak in ((0, 0), (1, 1)):
        for layer in range(12):
            u = np.zeros(64)
            u[peak if layer == 0 else 40] = 1.0
            rows.append(pd.DataFrame({"task": "number", "seed": seed, "step": 100, "layer": layer, "head": 0,
                                      "freq": np.arange(64), "maxlogit": u, "maxlogit_sd": 0.0}))
    t = R.weighting_table(pd.concat(rows))
    layers, summary = R.table1_weightings(t)
    assert layers.loc[0, "argmax"] == 1.5 and layers.loc[0, "argmax_ok"]      # paper's L0 ID 1 in [1-1, 2+1]
    assert layers.loc[0, "argmax_range"] == 1.0
    assert not layers.loc[1, "argmax_ok"]                                      # paper's L1 ID 2, ours 41
    assert set(summary["task"]) == {"number"} and not summary["reproduces"].any()


# -- 6. long prompts -------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["number", "letter"])
@pytest.mark.parametrize("construction", list(R.CONSTRUCTIONS))
def test_constructions_keep_the_reasoning_and_the_answer(task, construction):
    from posym.tasks import get_task

    if not R.applicable(task, construction):   # Number: nothing between its windows; no unchecked filler
        assert task == "number" and construction in ("between", "vocab-unchecked")
        if construction == "between":
            s = R.construction_prompts(task, 0, 17, 4, "book")[0][0]
            with pytest.raises(ValueError):
                R.long_prompt(task, s, 40, np.random.default_rng(0), "between")
        return
    t = get_task(task)
    where, filler, checked, hops = R.CONSTRUCTIONS[construction]
    prompts, ok = R.construction_prompts(task, 0, 60, 16, construction)
    base, _ = R.construction_prompts(task, 0, 17, 16, construction)
    assert len(prompts) == 16 and all(len(p.tokens) == 60 for p in prompts)
    if hops == "1":
        assert all(p.hops == 1 for p in prompts)
    for p, b in zip(prompts, base):
        assert p.answer == b.answer and p.hops == b.hops
        # the original tokens appear in order, and the chain visits the same tokens
        assert [p.tokens[i] for i in p.chain] == [b.tokens[i] for i in b.chain]
        it = iter(p.tokens)
        assert all(any(tok == x for x in it) for tok in b.tokens)
        assert p.tokens[-1] == b.tokens[-1]
        if checked:
            ans, h, chain = t.solve(p.tokens)
            assert (ans, h, tuple(chain)) == (b.answer, b.hops, p.chain)
        else:
            assert set(p.tokens) <= set(t.vocab.tokens)
    assert ok == 1.0 if checked else 0.0 <= ok <= 1.0
    if filler == "repeat":
        assert len({tok for p in prompts for tok in p.tokens[:60 - 17]}) <= 16 + 1


def test_long_prompt_places_the_filler():
    from posym.tasks import get_task

    t = get_task("letter")
    s = R.construction_prompts("letter", 0, 17, 4, "book")[0][0]
    rng = np.random.default_rng(1)
    before = R.long_prompt(t, s, 27, rng, "before")
    assert before.tokens[10:] == s.tokens
    between = R.long_prompt(t, s, 27, rng, "between")
    assert between.tokens[:8] == s.tokens[:8] and between.tokens[18:] == s.tokens[8:]
    spread = R.long_prompt(t, s, 200, rng, "spread")
    assert spread.tokens[-1] == s.tokens[-1] and len(spread.tokens) == 200
    n = get_task("number")
    sn = R.construction_prompts("number", 0, 17, 4, "book")[0][0]
    sp = R.long_prompt(n, sn, 100, rng, "spread")
    assert sp.tokens[sp.chain[-1]:] == sn.tokens[sn.chain[-1]:]        # the answer and what follows it: unmoved
    with pytest.raises(ValueError):
        R.long_prompt(n, sn, 40, rng, "between")
    with pytest.raises(ValueError):
        R.long_prompt(n, sn, 10, rng, "before")
    with pytest.raises(ValueError):
        R.long_prompt(n, sn, 40, rng, "after")


def test_length_protocol_and_verdicts_on_a_tiny_model():
    import torch
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import get_task

    torch.manual_seed(0)
    m = GPTJ(ModelConfig.smoke(vocab_size=len(get_task("letter").vocab)))
    d = R.length_protocol(m, "letter", 0, ["book", "repeat"], (17, 30), 8)
    assert set(d["construction"]) == {"book", "repeat"} and set(d["length"]) == {17, 30}
    assert d["accuracy"].between(0, 1).all()
    curves = pd.DataFrame({"task": "letter", "construction": "x", "length": [400, 1000, 5000], "hop": "all",
                           "accuracy": [0.95, 0.85, 0.5]})
    v = R.length_verdicts(curves)
    assert v["points"].item() == 5 and v["reproduces"].item()
    v = R.length_verdicts(curves.assign(accuracy=[0.95, 0.85, 0.2]))
    assert not v["reproduces"].item() and v["worst_length"].item() == 5000


# -- 2. seeds, inputs, page ------------------------------------------------------------------------

def test_seed_spread():
    ref = pd.DataFrame({"task": "number", "seed": [0, 1], "best_step": [4000, 4700], "positional": [2, 3],
                        "symbolic": [7, 8], "L0_pos": [0.3, 0.4], "L0_sym": [0.6, 0.7], "L4_pos": [0.1, 0.8],
                        "L4_sym": [0.3, 0.9]})
    new = ref.iloc[:1].assign(seed=42, best_step=4800, positional=3)
    s = R.seed_spread(ref, new).set_index("quantity")
    assert not s.loc["best_step", "inside"] and s.loc["positional", "inside"]
    assert s.loc["best_step", "ref_values"] == "4,000, 4,700"
    text = R.seed42_text({"spread": s.reset_index(), "partial": {"letter": {"last_step": 1200, "steps": 6750,
                                                                           "note": "resumable"}}})
    assert text.startswith("Number, run seed 42: best step 4,800, 3 pure positional and 7 pure symbolic heads; "
                           "6 of 7 inside the range of seeds 0–4; outside: best step 4,800 (seeds 0–4: 4,000, 4,700)")
    assert "Letter, run seed 42: stopped at step 1,200 of 6,750 (resumable)." in text
    assert R.seed42_text({"spread": None, "partial": None}).count("not run") == 2
    rules = pd.DataFrame({"task": "number", "matches": [True, False, False]})
    assert "; 1 of 3 purity rules give the paper's 4 + 8." in R.seed42_text({"spread": s.reset_index(), "rules": rules})
    summary = pd.concat([ref, new], ignore_index=True).assign(L0_kind="mixed")
    lesson = R.seed42_lesson({"summary": summary})
    assert "does not either" in lesson and "3 pure positional and 7 pure symbolic heads (paper: 4 and 8)" in lesson
    assert "does:" in R.seed42_lesson({"summary": summary.assign(positional=4, symbolic=8)})
    assert "untested" in R.seed42_lesson({"summary": None})
    t = R.seed42_table({"spread": s.reset_index()}).set_index("quantity")
    assert t.loc["best step", "seed 42"] == "4,800" and t.loc["best step", "inside their range"] == "no"
    assert t.loc["layer 0 s_pos", "seed 42"] == "0.30" and list(R.seed42_table({"spread": None})) == ["status"]


@pytest.fixture(scope="module")
def standin():
    return R.standin_inputs(4)


def test_standin_inputs_have_the_committed_columns(standin):
    assert {"task", "seed", "step", "layer", "head", "pos", "sym"} <= set(standin["scores"].columns)
    assert {"task", "seed", "step", "hop", "accuracy"} <= set(standin["eval"].columns)
    assert {"freq", "maxlogit", "maxlogit_sd"} <= set(standin["freq_scores"].columns)
    assert set(standin["length_protocol"]["construction"]) == set(R.CONSTRUCTIONS)
    assert standin["precision"]["fp16_autocast_runs_on_cpu"]


def test_page_tables_and_figures(standin):
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg")
    grid = R.grid_results(standin)
    purity = R.purity_results(standin)
    weights = R.weighting_results(standin)
    length = R.length_results(standin)
    seed42 = R.seed42_results(standin)
    fp16 = R.fp16_results(standin)
    summary = R.disagreements(standin, grid, purity, weights, length, seed42, fp16=fp16)
    assert len(summary) == 6 and set(summary["verdict"]) <= {"explained", "partly explained", "unexplained"}
    number = summary[summary["disagreement"].str.startswith("Number: pure")]
    assert number["tested"].str.contains("fp16 \\(seeds 0, 1, 2\\)").all() and number["what changed"].str.contains("fp16:").all()
    t = R.fp16_table(fp16)
    assert list(t.columns) == ["seed", "quantity", "fp16", "fp32 twin", "fp32, seeds 0–4", "inside"]
    assert len(t) == 3 * 7 and set(t["seed"]) == set(R.FP16_SEEDS)
    assert t["fp32, seeds 0–4"].str.fullmatch(r"[\d.,]+(–[\d.,]+)?").all()  # the fp32 range, lowest–highest
    assert R.fp16_text(fp16).startswith("Trained in fp16") and R.fp16_lesson(fp16).startswith("Training the Number")
    g = R.fp16_glue(standin, fp16)
    assert set(g) == {"fp16_ratio", "fp16_torch_ratio", "fp16_torch_loss", "fp16_status", "fp16_lesson"}
    assert float(g["fp16_ratio"]) > 0 and R.fp16_glue({}, fp16)["fp16_ratio"] == "nan"
    none = R.fp16_results({**standin, "fp16_eval": None})
    assert R.fp16_table(none).columns.tolist() == ["status"] and "untested" in R.fp16_lesson(none)
    assert set(grid["dip"]["layer"]) == {10, 11} and grid["dip"]["min_sym"].between(0, 1).all()
    assert set(seed42["spread"]["task"]) == {"number", "letter"}
    for fig in (R.plot_grid(grid, standin["scores"]), R.plot_weightings(weights), R.plot_length(length),
                R.plot_beside(standin, "seed42_scores", "{seeds}"), R.plot_beside(standin, "fp16_scores", "fp16, {seeds}")):
        assert isinstance(fig, Figure)


def test_spec_registered():
    from posym import spec

    s = spec.CHAPTERS["reconcile"]
    assert s.defaults("paper")["source"] == "committed" and s.defaults("smoke")["source"] == "standin"


def test_seed_spread_compares_scores_as_shown_and_puts_number_first():
    ref = pd.DataFrame({"task": ["letter", "letter", "number", "number"], "seed": [0, 1, 0, 1],
                        "best_step": [2400, 2600, 4000, 4700], "positional": [0, 1, 2, 3], "symbolic": [11, 10, 7, 8],
                        "L0_pos": [0.07, 0.09, 0.3, 0.4], "L0_sym": [0.99999, 1.0, 0.6, 0.7],
                        "L4_pos": [0.0, 0.001, 0.1, 0.8], "L4_sym": [1.0, 1.0, 0.3, 0.9]})
    new = ref.iloc[[0, 2]].assign(seed=42, L0_sym=[0.99997, 0.6], L4_pos=[0.0001, 0.1])
    s = R.seed_spread(ref, new)
    assert s["task"].iloc[0] == "number" and s["task"].iloc[-1] == "letter"
    letter = s[s["task"] == "letter"].set_index("quantity")
    assert letter.loc["L0_sym", "inside"] and letter.loc["L4_pos", "inside"]  # 1.00 among 1.00s, 0.00 among 0.00s


def _summary(positional, symbolic, l0, l4, seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame({"task": "number", "seed": list(seeds), "best_step": 4500, "positional": positional,
                         "symbolic": symbolic, "L0_kind": l0, "L4_kind": l4})


def test_fp16_verdicts_follow_the_rule_fixed_in_advance():
    """More than half of the seeds at the paper's count reproduces it; a mean at least 0.5 heads closer to the
    paper's than fp32's on the same seeds moves it part of the way; layers 0 and 4 counted per seed."""
    ref = _summary([3, 3, 3, 2], [6, 7, 7, 7], ["mixed"] * 4, ["mixed"] * 4, seeds=(0, 1, 2, 3))
    new = _summary([4, 4, 3], [7, 7, 8], ["positional", "mixed", "positional"], ["mixed", "symbolic", "mixed"])
    v = R.fp16_verdicts({"summary": new, "reference": ref})
    assert v["positional"]["reproduces"] and v["positional"]["layer_pure"] == 2
    assert v["positional"]["fp32"] == [3, 3, 3]  # the same seeds only
    assert not v["symbolic"]["reproduces"] and v["symbolic"]["part_way"] and v["symbolic"]["layer_pure"] == 1
    slight = R.fp16_verdicts({"summary": _summary([3, 3, 4], [7, 7, 7], ["mixed"] * 3, ["mixed"] * 3),
                              "reference": ref})
    assert not slight["positional"]["reproduces"] and not slight["positional"]["part_way"]  # 0.33 heads closer
    assert R.fp16_verdicts({"summary": None}) == {}


def test_fp16_verdicts_give_the_odds_of_the_result_at_fp32s_rate():
    """fp32 gives the paper's 4 in 1 of 4 seeds; fp16 gives it in 2 of 3: at rate 1/4, P(X >= 2 | n = 3) =
    3 (1/4)^2 (3/4) + (1/4)^3 = 10/64; the lesson says so, and that the seeds cannot tell it from chance."""
    ref = _summary([4, 3, 3, 2], [7, 7, 7, 7], ["mixed"] * 4, ["mixed"] * 4, seeds=(0, 1, 2, 3))
    new = _summary([4, 4, 3], [7, 7, 7], ["mixed"] * 3, ["mixed"] * 3)
    fp16 = {"summary": new, "reference": ref}
    d = R.fp16_verdicts(fp16)["positional"]
    assert d["reproduces"] and (d["hits"], d["fp32_hits"], d["fp32_seeds"]) == (2, 1, 4)
    assert abs(d["chance"] - 10 / 64) < 1e-12
    assert ("fp32 gives that count in 1 of its 4 seeds, and at that rate 2 or more of 3 seeds would give it with "
            "probability 0.16, so 3 seeds cannot tell this from chance") in R.fp16_lesson(fp16)
    assert R.fp16_verdicts(fp16)["symbolic"]["hits"] == 0 and "probability" not in R.fp16_lesson(fp16).split(";")[-1]


def test_committed_seed42_and_fp16_runs_are_read_from_their_own_folders():
    inp = R.committed_inputs(REPO / "data")
    if inp["seed42_eval"] is not None:
        assert set(inp["seed42_eval"]["seed"]) == {42} and set(inp["seed42_scores"]["seed"]) == {42}
    if inp["fp16_eval"] is not None:
        assert set(inp["fp16_scores"]["task"]) == {"number"} and set(inp["fp16_scores"]["seed"]) <= set(R.FP16_SEEDS)
        for d in (REPO / "data" / "reconcile").glob("number-fp16-s*"):
            assert json.loads((d / "config.json").read_text())["train"]["precision"] == "fp16"


def test_fp16_text_names_unfinished_runs_and_how_to_finish_them(standin):
    stop = {"last_step": 450, "steps": 6750, "note": "the session ended",
            "resume": "python scripts/reconcile_runs.py fp16 --seeds 1 --runs runs/reconcile"}
    inp = {**standin, "fp16_partial": {"1": stop, "2": {**stop, "resume": stop["resume"].replace("1", "2")}},
           "fp16_eval": standin["fp16_eval"].query("seed == 0"), "fp16_scores": standin["fp16_scores"].query("seed == 0")}
    fp16 = R.fp16_results(inp)
    text = R.fp16_text(fp16)
    assert "Run seeds 1, 2 stopped at step 450 of 6,750 (the session ended)" in text
    assert "`python scripts/reconcile_runs.py fp16 --seeds 1 2 --runs runs/reconcile`" in text
    assert "in the run of 3 planned that finished" in R.fp16_lesson(fp16)
    assert "Trained in fp16 (run seed 0)" in text and "By seed" not in text
    assert R.fp16_text(R.fp16_results({**inp, "fp16_eval": None})).startswith("No fp16 run is committed yet. Run seeds")
    fig = R.plot_beside(inp, "fp16_scores", "fp16, {seeds}")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "positional, fp16, seed 0" in labels and "symbolic, fp32, seeds 0–4" in labels
