"""posym.chapters.roles: idealised rewriting arcs and drawings, reading trained heads (flow, targets, match rates with a
chance baseline, selective Index, Reflexive split) and the classification of heads over seeds."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from posym import analyze, functions as F, tasks
from posym.chapters import roles as R  # noqa: E402
from posym.model import GPTJ, ModelConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "data" / "paper"
FIG1_NUMBER = "C B A 1 4 1 3 2 1".split()
FIG1_LETTER = "C2 B1 A3 FA EC DE HF GD IG".split()


def sample_of(task: str, toks) -> tasks.Sample:
    return tasks.Sample(tuple(toks), *tasks.get_task(task).solve(toks))


def ideal_argmax(samples, task: str, n_layers: int) -> np.ndarray:
    """A perfect idealised model: at each layer the last query reads where the plan's function reads (nearest)."""
    out = np.zeros((len(samples), n_layers), dtype=int)
    for i, s in enumerate(samples):
        fns, seqs = F.layer_plan(s.tokens, task, n_layers)
        for l, fn in enumerate(fns):
            out[i, l] = F.ideal_attention(seqs[l], fn, -1)
    return out


@pytest.fixture(scope="module")
def number_samples():
    return tasks.balanced_eval_set("number", 40, seed=0, split="test")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPTJ(ModelConfig.smoke(len(tasks.get_task("number").vocab), n_layer=3)).eval()


# -----------------------------------------------------------------------------------------------
# idealised rewriting

def test_rewriting_arcs_on_the_papers_figure_1_prompt():
    fns, seqs = F.layer_plan(FIG1_NUMBER, "number", 5)
    arcs = R.rewriting_arcs(seqs, fns)
    assert len(arcs) == 5 * len(FIG1_NUMBER)
    first = arcs[arcs["layer"] == 0].set_index("pos")
    assert first.loc[4, "read"] == 0 and first.loc[4, "changed"]  # "4" at 4 reads C at 0
    assert first.loc[8, "read"] == 7 and not first.loc[8, "changed"]  # the query reads a number: unchanged
    assert first.loc[0, "read"] == 0 and not first.loc[0, "changed"]  # a letter reads itself
    changed = arcs.groupby("layer")["changed"].sum().tolist()
    assert changed[:4] == [2, 2, 1, 1] and changed[4] == 0  # Reflexive changes nothing


def test_draw_rewriting_and_grid():
    fig, ax = plt.subplots()
    arcs = R.draw_rewriting(ax, FIG1_LETTER, "letter")
    assert arcs["layer"].max() == 4  # 4 hops + one Reflexive layer
    focus = [p for p in ax.patches if isinstance(p, matplotlib.patches.FancyArrowPatch)]
    assert len(focus) >= 5  # at least one arc per layer for the last position
    texts = {t.get_text() for t in ax.texts}
    assert {"IG", "GD", "C2"} <= texts
    # the grid skips undefined reads and counts the arcs of the focus position
    fig, ax = plt.subplots()
    grid = pd.DataFrame({"layer": [0, 0, 1], "pos": [2, 1, 2], "read": [0.0, np.nan, 1.0], "weight": [0.5, 1, 1]})
    assert R.draw_layer_grid(ax, [["a", "b", "c"], ["", "", ""], ["", "", ""]], grid, color="red") == 2
    plt.close("all")


# -----------------------------------------------------------------------------------------------
# trained heads

def test_last_query_argmax_and_flow_agree_with_analyze(tiny_model, number_samples, ledger):
    vocab = tasks.get_task("number").vocab
    a, w = R.last_query_argmax(tiny_model, number_samples, vocab, batch_size=16)
    x, _, _ = tasks.to_tensors(number_samples, vocab)
    rows = analyze.attention_rows(tiny_model, x)[:, :, 0]  # (L, N, T)
    ledger.rerun()
    assert np.array_equal(a, rows.argmax(-1).T.numpy())
    assert np.allclose(w, rows.max(-1).values.T.numpy())
    s = number_samples[0]
    flow = R.flow_table(tiny_model, s, vocab)
    ref = analyze.flow_traces(tiny_model, [s], vocab)
    ledger.rerun()
    assert np.array_equal(flow["read"].to_numpy().astype(int), ref["argmax_pos"].to_numpy())
    trace = R.chain_trace(flow, s)
    assert list(trace.index) == [f"{p} {s.tokens[p]}" for p in s.chain]
    assert list(trace.columns) == ["L0", "L1", "L2"]
    assert trace.iloc[0, 0] == flow[(flow["layer"] == 0) & (flow["pos"] == 16)]["read"].iloc[0]
    fig, ax = plt.subplots()
    assert R.draw_flow(ax, s, flow, "number", 3) == 3  # one last-query arc per layer
    plt.close("all")


def test_target_roles_classifies_each_role():
    s = sample_of("number", FIG1_NUMBER)  # chain (8, 7, 5, 4, 0)
    one = sample_of("number", "C B A 1 4 1 3 2 7".split())  # 1 hop: chain (8, 1)
    assert one.hops == 1
    a = np.array([[8, 7, 5, 0, 2], [8, 1, 1, 1, 3]])
    roles = R.target_roles(a, [s, one])
    assert list(roles.columns) == list(R.ROLES)
    assert roles.loc[0, "query (self)"] == 1.0
    assert roles.loc[1, "first hop"] == 0.5 and roles.loc[1, "answer"] == 0.5  # a 1-hop first hop is the answer
    assert roles.loc[2, "other chain token"] == 0.5
    assert roles.loc[3, "answer"] == 1.0
    assert roles.loc[4, "off the chain"] == 1.0
    assert np.allclose(roles.sum(axis=1), 1.0)


def test_chance_rate_and_match_summary_of_a_perfect_head(number_samples):
    L = 6
    plans = [F.layer_plan(s.tokens, "number", L)[1] for s in number_samples]
    raw = [[s.tokens] * L for s in number_samples]
    assert np.allclose(R.chance_rate(raw, "index", L), 1 / 17)  # one read among 17 keys
    refl = R.chance_rate(plans, "reflexive", L)
    assert (refl >= 1 / 17 - 1e-12).all() and refl[-1] > refl[0]  # copies of the answer appear
    perfect = ideal_argmax(number_samples, "number", L)
    m = R.match_summary(perfect, number_samples, "number")
    assert list(m.index) == list(range(L))
    assert np.allclose(m["index (plan)"].iloc[:1], 1.0)
    assert (m["skill"] > 0.99).all()
    # a head that always attends to position 0 is near chance
    zero = R.match_summary(np.zeros_like(perfect), number_samples, "number")
    assert (zero["index (first hop)"] < 0.2).all()


def test_selective_index_reads_letters_only():
    assert R.selective_index_read(FIG1_NUMBER) == 8  # 8 - 1 = 7 holds a number: stay
    assert R.selective_index_read(FIG1_NUMBER, 4) == 0  # "4" at 4 points at the letter C
    assert R.selective_index_read(["a", "b", "5"]) == 2  # points before the start: stay
    assert R.selective_index_read(["a", "b", "c"]) == 2  # a letter stays
    s1, s2 = sample_of("number", "C B A 1 4 1 3 2 7".split()), sample_of("number", FIG1_NUMBER)
    a = np.array([[1, 8], [8, 8]])
    assert R.selective_index_match(a, [s1, s2]).tolist() == [1.0, 0.5]  # s1 reads 1, s2 stays at 8
    assert R.index_target_kind([s1, s2]) == ["points at a letter", "points at a number"]


def test_reflexive_split_counts_self_and_copies():
    s = sample_of("number", "C B A 1 4 1 3 2 7".split())  # 1 hop; answer B at 1; layers >= 1 in Reflexive
    fns, seqs = F.layer_plan(s.tokens, "number", 4)
    copies = [q for q in range(8) if seqs[1][q] == seqs[1][8]]
    assert 1 in copies
    a = np.array([[1, 8, 1, 3]])
    out = R.reflexive_split(a, [s], "number")
    assert np.isnan(out.loc[0, "itself"]) and out.loc[0, "prompts"] == 0
    assert out.loc[1, "itself"] == 1.0 and out.loc[2, "another copy"] == 1.0
    assert out.loc[3, "elsewhere"] == (0.0 if 3 in copies else 1.0)


def test_scores_by_group_averages_layer_scores(tiny_model, number_samples, ledger):
    from posym.metrics import layer_scores, residual_inputs

    vocab = tasks.get_task("number").vocab
    groups = R.index_target_kind(number_samples)
    out = R.scores_by_group(tiny_model, number_samples, vocab, 1, groups).set_index("group")
    assert out["prompts"].sum() == len(number_samples)
    x, _, _ = tasks.to_tensors(number_samples, vocab)
    sc = layer_scores(tiny_model, 1, residual_inputs(tiny_model, x)[1])
    mask = np.array(groups) == "points at a letter"
    ledger.rerun()
    assert out.loc["points at a letter", "pos"] == pytest.approx(sc.pos[mask, 0].mean().item(), rel=1e-5)


def test_head_classes_and_summary():
    final = pd.DataFrame({"task": ["number"] * 6 + ["letter"] * 2, "seed": [0, 1, 2, 0, 1, 2, 0, 1],
                          "layer": [0, 0, 0, 1, 1, 1, 0, 0],
                          "pos": [0.99, 0.98, 0.5, 0.01, 0.0, 0.02, 0.0, 0.3],
                          "sym": [0.01, 0.02, 0.6, 0.99, 1.0, 0.97, 1.0, 0.9]})
    c = R.head_classes(final, 0.1)
    assert c["kind"].tolist() == ["positional", "positional", "mixed", "symbolic", "symbolic", "symbolic",
                                  "symbolic", "mixed"]
    summ = R.class_summary(c)
    assert summ["task"].tolist() == ["number", "number", "letter"]
    first = summ.iloc[0]
    assert (first["class"], first["seeds"], first["per seed"]) == ("positional", "2/3", "P P m")
    assert summ.iloc[2]["pos"] == pytest.approx(0.15)


@pytest.mark.skipif(not (PAPER / "number-s0" / "final.pt").exists(), reason="data/paper not present")
def test_the_committed_number_model_on_the_papers_figure_3a_prompt():
    """Regression test of what the chapter reports: the paper's Fig. 3A flow, and Index in layers 1-3."""
    from posym.train import load_checkpoint

    model, _ = load_checkpoint(PAPER / "number-s0" / "final.pt")
    vocab = tasks.get_task("number").vocab
    s = sample_of("number", R.PAPER_ROLES["fig3a_prompt"])
    trace = R.chain_trace(R.flow_table(model, s, vocab), s)
    assert trace.loc["8 6", "L0"] == 2 and trace.loc["10 2", "L1"] == 8
    assert (trace.loc["16 2", ["L1", "L2", "L3"]] == 14).all()
    probe = tasks.balanced_eval_set("number", 40, seed=0, split="test")
    a, _ = R.last_query_argmax(model, probe, vocab)
    m = R.match_summary(a, probe, "number")
    assert (m["index (first hop)"].iloc[1:4] > 0.75).all()
    assert (m["reflexive (plan)"].iloc[5:] > 0.9).all()


# -----------------------------------------------------------------------------------------------
# the page's helpers

def test_listing1_renders_the_basic_functions():
    md = R.listing1().data
    assert md.startswith("```python\n") and md.rstrip().endswith("```")
    for name in ("def _index_read", "def index", "def retrieval", "def reflexive"):
        assert name in md


def test_figure_1_rewriting_and_layer_plans():
    rw = R.fig1_rewriting()
    assert {name: (fn, h) for name, (fn, h, _) in rw.items()} == {"number": ("index", 4), "letter": ("retrieval", 4)}
    steps = rw["number"][2]
    assert list(steps.index) == ["input"] + [f"after {d} step(s)" for d in range(1, 5)]
    assert steps.iloc[-1, -1] == "C"
    assert len(R.fig1_rewriting_tables()) == 2
    plans = R.layer_plans(6)
    assert plans.shape == (8, 6) and plans.loc[("number", 3)].tolist() == ["ind"] * 3 + ["ref"] * 3
    assert plans.loc[("letter", 1)].tolist()[:2] == ["ret", "ref"]


def test_pick_chosen_prompts_and_report():
    s = R.pick("number", 3, 1)
    assert s.hops == 3 and s == R.pick(tasks.get_task("number"), 3, 1)
    chosen = R.chosen_prompts(2, 0)
    assert [c.hops for c in chosen.values()] == [2, 2]
    assert R.prompts_text(chosen).splitlines()[0].startswith("number ")
    h = F.resolution_depth(s.tokens, "index")
    steps = F.rewrite(s.tokens, "index", h)
    report = R.rewrite_report(s, steps).splitlines()
    assert len(report) == h + 1 and report[-1] == f"{h} steps for a 3-hop prompt; answer {s.answer} (solver: {s.answer})"
    assert R.rewrite_table(steps).shape == (h + 1, 17)


def test_glued_sentences_and_tables_on_an_idealised_model(monkeypatch):
    from posym import glue

    glued = {}
    monkeypatch.setattr(glue, "glue_md", glued.update)
    probe = R.probe_prompts(40)
    L = {"number": 6, "letter": 6}
    argmax = {t: ideal_argmax(probe[t], t, L[t]) for t in ("number", "letter")}
    where = {t: R.target_roles(argmax[t], probe[t]) for t in argmax}
    match = R.match_tables(argmax, probe, where, L)
    assert {"num_first_hop", "num_l0_sel", "let_l0_retr", "num_l4_self"} <= set(glued)
    assert glued["let_l0_retr"] == "100%"  # the idealised Letter model reads where Retrieval does
    assert len(R.match_display(match)) == 2 and len(R.where_tables(where)) == 2
    R.reflexive_table(argmax, probe, L)
    assert {"refl_copy_late", "refl_self_late"} <= set(glued)
    classes = pd.DataFrame([{"task": t, "layer": l, "class": "symbolic", "seeds": "1/1"} for t in L for l in range(6)])
    summary = R.layer_summary(match, classes, L)
    assert len(summary) == 12 and summary["closest function"].notna().all()


def test_flow_figures_and_tables(tiny_model):
    s = R.pick("number", 2, 0)
    vocab = tasks.get_task("number").vocab
    flow = R.flow_table(tiny_model, s, vocab)
    flows, chosen, n = {"number": flow, "letter": flow}, {"number": s, "letter": s}, {"number": 3, "letter": 3}
    fig = R.plot_flows({"number": s}, flows, n)
    assert fig.get_size_inches()[0] <= 7.5
    assert len(R.chain_tables(flows, chosen)) == 2
    read, weight = R.fig3a_tables(s, flow, "x")
    assert "the model answers 'x'" in read.caption and weight.frame.shape[0] == len(s.chain)
    s3a = sample_of("number", R.PAPER_ROLES["fig3a_prompt"])
    glue = R.fig3a_glue(R.flow_table(tiny_model, s3a, vocab), s3a, 3)
    assert set(glue) == {"f3a_pos8_L0", "f3a_pos10_L1", "f3a_last"} and glue["f3a_last"].startswith("L0: ")
    plt.close("all")


def test_scale_warning_only_below_the_paper_scale(monkeypatch):
    from types import SimpleNamespace

    from posym import glue

    monkeypatch.setattr(glue, "glue_md", lambda values: None)
    assert R.scale_warning(SimpleNamespace(scale="paper", n_prompts=300)) is None
    assert "smoke" in R.scale_warning(SimpleNamespace(scale="smoke", n_prompts=100)).data


@pytest.mark.skipif(not (PAPER / "number-s0" / "final.pt").exists(), reason="needs the committed paper runs")
def test_committed_models_reproduce_the_committed_flow_traces(monkeypatch):
    from posym import glue

    monkeypatch.setattr(glue, "glue_md", lambda values: None)
    trained = R.TrainedModels("paper", 1, 300, data_dir=REPO / "data")
    assert trained.n_layers == {"number": 12, "letter": 12} and trained.workdir is None
    pool = pd.read_parquet(PAPER / "number-s0" / "flow.parquet")["text"].unique()
    chosen = {t: next(s for s in tasks.balanced_eval_set(t, 40, seed=0, split="test")
                      if any(s.text() == x for x in pd.read_parquet(PAPER / f"{t}-s0" / "flow.parquet")["text"]))
              for t in ("number", "letter")} if len(pool) else R.chosen_prompts(3, 0)
    flows = trained.flows(chosen)  # asserts agreement with the committed traces
    assert set(flows) == {"number", "letter"}
    s3a, _, pred = trained.fig3a()
    assert s3a.answer == "n" and pred == "n"
