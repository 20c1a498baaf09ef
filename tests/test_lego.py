"""Tests for the LEGO tasks (posym/tasks/lego*.py; every prompt checked by an independent solver) and the chapter
module posym/chapters/lego.py.

The reference solver below does not follow the chain: it computes the value of every variable by repeated
substitution until nothing changes, then reads the queried one, and finds the depth by counting how many
substitutions the queried variable needed.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from posym.tasks import TaskDataset, get_task, task_names

LEGO = ("lego", "lego_ordered")


def ref_lego(tokens):
    """(answer, depth, lhs positions read from the query back) by fixpoint substitution."""
    toks = list(tokens)
    assert toks[-2] == "?" and (len(toks) - 2) % 4 == 0
    clauses = [toks[p:p + 4] for p in range(0, len(toks) - 2, 4)]
    assert all(c[1] == "=" and c[2] in "+-" for c in clauses)
    value, depth = {}, {}
    changed = True
    while changed:
        changed = False
        for lhs, _, sign, rhs in clauses:
            if lhs in value:
                continue
            if rhs == "1":
                value[lhs], depth[lhs] = (1 if sign == "+" else -1), 1
                changed = True
            elif rhs in value:
                value[lhs], depth[lhs] = value[rhs] * (1 if sign == "+" else -1), depth[rhs] + 1
                changed = True
    q = toks[-1]
    where = {c[0]: 4 * i for i, c in enumerate(clauses)}
    assert len(where) == len(clauses), "a variable is defined twice"
    parent = {c[0]: c[3] for c in clauses}
    lhs_chain, v = [], q
    for _ in range(depth[q]):
        lhs_chain.append(where[v])
        v = parent[v]
    return ("+" if value[q] > 0 else "-"), depth[q], (len(toks) - 1, *lhs_chain)


def test_registered():
    names = task_names()
    assert "lego" in names and "lego_ordered" in names
    t, o = get_task("lego"), get_task("lego_ordered")
    assert (t.task_id, o.task_id) == (2, 4) and t.seq_len == 26 and t.max_hops == 2
    assert len(t.vocab) == 32 and t.answer_tokens == ("+", "-")
    assert t.colour != o.colour and t.label and o.label


@pytest.mark.parametrize("name", LEGO)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_samples_solved_by_reference(name, split):
    task = get_task(name)
    ds = TaskDataset(name, split, seed=1, size=600)
    for s in ds:
        assert len(s.tokens) == task.seq_len
        ref = ref_lego(s.tokens)
        assert ref == (s.answer, s.hops, s.chain) == task.solve(s.tokens)
        names = s.tokens[0:-2:4]
        assert len(set(names)) == 6
        if name == "lego_ordered":
            assert s.tokens[3] == "1" and all(s.tokens[4 * k + 3] == s.tokens[4 * (k - 1)] for k in range(1, 6))


@pytest.mark.parametrize("name", LEGO)
def test_arrays_equal_samples_and_are_deterministic(name):
    ds = TaskDataset(name, "val", seed=3)
    a = ds.arrays()
    task = get_task(name)
    for i in range(0, 2400, 113):
        s = ds[i]
        assert task.vocab.decode(a["x"][i]) == list(s.tokens)
        assert a["hops"][i] == s.hops and task.vocab.tokens[a["y"][i]] == s.answer
        assert tuple(int(p) for p in a["chain"][i] if p >= 0) == s.chain
    again = TaskDataset(name, "val", seed=3).arrays()["x"]
    assert hashlib.sha256(again.tobytes()).hexdigest() == hashlib.sha256(a["x"].tobytes()).hexdigest()
    other = TaskDataset(name, "val", seed=4).arrays()["x"]
    assert not np.array_equal(other, a["x"])


@pytest.mark.parametrize("name", LEGO)
def test_balance(name):
    task = get_task(name)
    a = TaskDataset(name, "val", seed=0).arrays()
    combos = Counter(zip(a["answer_pos"].tolist(), a["y"].tolist(), a["hops"].tolist()))
    assert len(combos) == task.n_combos
    assert max(combos.values()) - min(combos.values()) <= max(3, 0.6 * np.mean(list(combos.values())))
    tr = TaskDataset(name, "train", seed=0, size=36_000).arrays()
    assert abs((tr["y"] == task.vocab.stoi["+"]).mean() - 0.5) < 0.02
    assert set(np.unique(tr["hops"])) == {1, 2}
    # the slot of the first clause (shuffled) and of the queried clause are spread over all slots
    first = np.array([ref_lego(task.vocab.decode(r))[2][-1] for r in tr["x"][:600]])
    if name == "lego":
        assert set(first // 4) == set(range(6))
    else:
        assert set(first) == {0}


@pytest.mark.parametrize("name", LEGO)
def test_length_generalisation_prompts(name, ledger):
    task = get_task(name)
    deep = task.chain_prompts(20, [4, 5, 6], seed=2)
    assert Counter(s.hops for s in deep) == {4: 20, 5: 20, 6: 20}
    long = task.chain_prompts(5, range(1, 13), n_vars=12, seed=2)
    for s in deep + long:
        assert ref_lego(s.tokens) == (s.answer, s.hops, s.chain) == task.solve(s.tokens)
    assert all(len(s.tokens) == 50 for s in long)
    assert Counter(s.answer for s in long) == {"+": 30, "-": 30}
    assert [s.tokens for s in deep] == [s.tokens for s in task.chain_prompts(20, [4, 5, 6], seed=2)]
    with ledger.raises(ValueError, match="depths"):
        task.chain_prompts(3, [7])
    with ledger.raises(ValueError, match="n must"):
        task.chain_prompts(0, [1])


def test_solver_rejects_bad_prompts(ledger):
    t = get_task("lego")
    with ledger.raises(ValueError, match="not a lego prompt"):
        t.solve("a = + 1 ? a x".split())
    with ledger.raises(ValueError, match="defined twice"):
        t.solve("a = + 1 a = - a ? a".split())
    with ledger.raises(ValueError, match="not defined"):
        t.solve("a = + 1 b = - c ? b".split())
    with ledger.raises(ValueError, match="loops"):
        t.solve("a = + b b = - a ? b".split())
    with ledger.raises(ValueError, match="clause"):
        t.solve("a + = 1 ? a".split())
    assert t.solve("a = + 1 b = - a ? b".split()) == ("-", 2, (9, 4, 0))
    with ledger.raises(ValueError, match="'\\?'"):
        t.check_ids(np.zeros((1, 26), dtype=np.int64) + 1)


# -----------------------------------------------------------------------------
# the chapter's science (posym.chapters.lego) on hand-made inputs

def test_teaching_recipe_is_the_tasks():
    from posym.train import TrainConfig

    cfg = TrainConfig.teaching("lego", seed=1)
    assert (cfg.steps, cfg.batch_size, cfg.train_size) == (1000, 64, 64_000)
    assert cfg.model_config().n_layer == 4 and cfg.model_config().n_head == 2
    assert TrainConfig.teaching("lego", seed=1, steps=7).steps == 7  # explicit overrides still win


def _fused_prompt():
    """One hand-written lego_fused prompt: chains a = +1, b = -a, d = +b and c = -1, e = +c, f = -e, the query d
    (depth 3). Positions: 0 ``1``, 1 ``a+``, 2 ``a``, 3 ``b-``, 4 ``1``, 5 ``c-``, 6 ``b``, 7 ``d+``, 8 ``c``,
    9 ``e+``, 10 ``e``, 11 ``f-``, 12 ``?``, 13 ``d``."""
    return "1 a+ a b- 1 c- b d+ c e+ e f- ? d".split()


def test_fused_prompt_layout_is_what_the_masses_assume():
    t = get_task("lego_fused")
    toks = _fused_prompt()
    assert len(toks) == t.seq_len and t.solve(toks) == ("-", 3, (13, 7, 3, 1))


def _patterns(T, pairs, n_head=2):
    """Attention patterns (1 layer) on one prompt: head 0 puts all its mass on ``pairs[q]`` from each query row
    ``q`` in ``pairs`` and on itself elsewhere; head 1 is uniform over the visible past."""
    import torch

    A = torch.zeros(1, n_head, T, T)
    for q in range(T):
        A[0, 0, q, pairs.get(q, q)] = 1.0
        A[0, 1, q, :q + 1] = 1.0 / (q + 1)
    return [A]


def test_head_type_masses_on_hand_built_patterns():
    import torch

    from posym.chapters import lego as ch

    t = get_task("lego_fused")
    toks = _fused_prompt()
    x = torch.tensor([t.vocab.encode(toks)])
    T = len(toks)
    m = ch.type_masks(x, "lego_fused")
    # bare names with an earlier token of their name: operand a (a+ at 1), operand b (b- at 3), operand c (c- at
    # 5), operand e (e+ at 9), and the query d (d+ at 7); not the constants, the signed tokens or '?'
    assert m["assoc_src"][0].nonzero().flatten().tolist() == [2, 6, 8, 10, 13]
    # signed tokens of the clauses in slots 1..5; their operand is the token before
    assert m["local_src"].nonzero().flatten().tolist() == [3, 5, 7, 9, 11]
    assert m["local_tgt"][5].nonzero().flatten().tolist() == [4]
    # signed tokens whose parent's signed token is earlier: b- (a+), d+ (b-), e+ (c-), f- (e+)
    assert m["parent_src"][0].nonzero().flatten().tolist() == [3, 7, 9, 11]
    assert m["parent_tgt"][0, 7].nonzero().flatten().tolist() == [3]
    # the query d matches d+ only (the bare d appears nowhere else)
    assert m["assoc_tgt"][0, 13].nonzero().flatten().tolist() == [7]

    # an association head: every bare name attends to its definition; elsewhere to itself
    assoc_head = {2: 1, 6: 3, 8: 5, 10: 9, 13: 7}
    df = ch.masses_from_patterns(_patterns(T, assoc_head), x, "lego_fused").set_index("head")
    assert df.loc[0, "assoc"] == pytest.approx(1.0) and df.loc[0, "assoc_q"] == pytest.approx(1.0)
    assert df.loc[0, "local"] == pytest.approx(0.0) and ch.head_type(df.loc[0, "assoc"], df.loc[0, "local"]) == "association"
    # uniform attention: assoc = mean over the sources of 1/(q+1); local = mean over the signed tokens of 1/(q+1)
    want_assoc = np.mean([1 / 3, 1 / 7, 1 / 9, 1 / 11, 1 / 14])
    want_local = np.mean([1 / 4, 1 / 6, 1 / 8, 1 / 10, 1 / 12])
    assert df.loc[1, "assoc"] == pytest.approx(want_assoc) and df.loc[1, "local"] == pytest.approx(want_local)
    assert df.loc[1, "assoc_q"] == pytest.approx(1 / 14)
    assert ch.head_type(df.loc[1, "assoc"], df.loc[1, "local"]) == "other"

    # a manipulation head: every signed token reads its operand; a parent head: every signed token reads its parent
    manip = {q: q - 1 for q in (3, 5, 7, 9, 11)}
    d2 = ch.masses_from_patterns(_patterns(T, manip), x, "lego_fused").set_index("head")
    assert d2.loc[0, "local"] == pytest.approx(1.0) and d2.loc[0, "assoc"] == pytest.approx(0.0)
    assert ch.head_type(d2.loc[0, "assoc"], d2.loc[0, "local"]) == "manipulation"
    parent = {3: 1, 7: 3, 9: 5, 11: 9}
    d3 = ch.masses_from_patterns(_patterns(T, parent), x, "lego_fused").set_index("head")
    assert d3.loc[0, "parent"] == pytest.approx(1.0) and d3.loc[0, "local"] == pytest.approx(0.0)


def test_head_types_and_masses_on_a_model():
    import torch

    from posym.chapters import lego as ch
    from posym.model import GPTJ, ModelConfig

    assert ch.head_type(0.6, 0.1) == "association" and ch.head_type(0.1, 0.7) == "manipulation"
    assert ch.head_type(0.3, 0.3) == "other"
    torch.manual_seed(0)
    model = GPTJ(ModelConfig(vocab_size=83, n_layer=2, n_head=2, d_model=16, d_mlp=32)).eval()
    for task in ch.TASKS:
        df = ch.head_type_masses(model, task, get_task(task).chain_prompts(4, [1, 2, 3]))
        assert len(df) == 4 and df[["assoc", "local", "assoc_q", "parent"]].stack().between(0, 1).all()
        # near-uniform attention at initialisation: neither pattern
        assert (df["assoc"] < 0.5).all() and (df["local"] < 0.5).all()


def test_length_table_shape():
    import torch

    from posym.chapters import lego as ch
    from posym.model import GPTJ, ModelConfig

    torch.manual_seed(0)
    model = GPTJ(ModelConfig(vocab_size=83, n_layer=1, n_head=2, d_model=16, d_mlp=32)).eval()
    L = ch.length_table(model, "lego_fused_ordered", n=4, chain_lens=(3, 4, 6))
    assert len(L) == 2 * (3 + 4 + 6) and (L["n"] == 4).all() and L["accuracy"].between(0, 1).all()
    assert set(L["prompts"]) == {"ordered", "shuffled"}
    assert L[L["own"]]["prompts"].eq("ordered").all()
    assert L[L["trained"]][["chain_len", "depth"]].values.tolist() == [[3, 1], [3, 2]]
    assert ch.other_order("lego_fused") == "lego_fused_ordered"


def _fake_results():
    import pandas as pd

    rows_sc, rows_ty, rows_ev, rows_len = [], [], [], []
    for task in ("lego_fused", "lego_fused_ordered"):
        for seed in (0, 1):
            for step in (0, 100, 200):
                late = step == 200
                rows_sc += [{"task": task, "seed": seed, "step": step, "layer": 0, "head": 0,
                             "pos": 0.95 if late else 1.0, "sym": 0.02 if late else 1.0},
                            {"task": task, "seed": seed, "step": step, "layer": 1, "head": 0,
                             "pos": 0.03 if late else 1.0, "sym": 0.97 if late else 1.0}]
                rows_ty += [{"task": task, "seed": seed, "step": step, "layer": 0, "head": 0, "assoc": 0.0,
                             "local": 0.8 if step >= 100 else 0.2, "assoc_q": 0.0, "parent": 0.0},
                            {"task": task, "seed": seed, "step": step, "layer": 1, "head": 0,
                             "assoc": 0.7 if late else 0.1, "local": 0.1, "assoc_q": 0.6, "parent": 0.0}]
                rows_ev.append({"task": task, "seed": seed, "step": step, "hop": "all", "accuracy": 0.95 if late else 0.5})
            for prompts in ("shuffled", "ordered"):
                own = prompts == ("shuffled" if task == "lego_fused" else "ordered")
                for cl in (3, 6):
                    for d in range(1, cl + 1):
                        acc = (1.0 if d <= 2 else (0.6 if task == "lego_fused" else 0.5)) if own else 0.55
                        rows_len.append({"task": task, "seed": seed, "prompts": prompts, "own": own, "chain_len": cl,
                                         "depth": d, "accuracy": acc, "n": 10, "trained": own and cl == 3 and d <= 2})
    return {"scores": pd.DataFrame(rows_sc), "types": pd.DataFrame(rows_ty), "eval": pd.DataFrame(rows_ev),
            "length": pd.DataFrame(rows_len)}


def test_claims_and_emergence_on_known_results():
    from posym.chapters import lego as ch

    res = _fake_results()
    heads = ch.final_heads(res, 0.1)
    assert set(heads["type"]) == {"association", "manipulation"}
    assert (heads.loc[heads["type"] == "association", "metric_class"] == "symbolic").all()
    em = ch.emergence(res, 0.1)
    assert (em["manipulation"] == 100).all() and (em["association"] == 200).all() and (em["accuracy"] == 200).all()
    c = ch.claims_table(res, 0.1).set_index("claim")["verdict"]
    assert c["association heads exist (attend to tokens of the same name)"] == "agree"
    assert c["association heads are symbolic (our expectation)"] == "agree"
    assert c["manipulation heads are positional (our expectation)"] == "agree"
    assert c["shuffled clauses: trained depths solved, deeper ones not"] == "agree"
    assert c["ordered clauses: trained depths solved, deeper ones not"] == "agree"
    assert c["ordered clauses: a shortcut that fails when the order changes"] == "agree"
    assert c["ordered clauses generalise worse in depth than shuffled ones"] == "agree"
    assert c["pure heads appear when accuracy rises (Paper 2)"] == "agree"
    notes = ch.length_note(res)
    assert notes["lego_len_ordered"] == "depths 1–2 1.00 with chains of 3, 1.00 with chains of 6; depths 3–6 0.50"
    assert notes["lego_cross_ordered"] == "depth 1 0.55, depth 2 0.55"
    # a shuffled model that does not solve depth 2: its length row cannot be judged, nor the comparison
    L = res["length"]
    L.loc[(L["task"] == "lego_fused") & L["own"] & (L["depth"] == 2), "accuracy"] = 0.6
    c = ch.claims_table(res, 0.1).set_index("claim")["verdict"]
    assert c["shuffled clauses: trained depths solved, deeper ones not"] == "n/a"
    assert c["ordered clauses generalise worse in depth than shuffled ones"] == "n/a"
    assert c["ordered clauses: trained depths solved, deeper ones not"] == "agree"
    # an ordered model that also solves shuffled prompts shows no order shortcut
    L.loc[(L["task"] == "lego_fused_ordered") & ~L["own"], "accuracy"] = 0.95
    assert ch.claims_table(res, 0.1).set_index("claim").loc[
        "ordered clauses: a shortcut that fails when the order changes", "verdict"] == "disagree"


def test_rank_correlation_and_failures_table():
    import numpy as np
    from posym.chapters import lego as ch
    from posym.stats import rank_correlation

    r, p = rank_correlation(range(6), [2, 4, 6, 8, 10, 12])
    assert r == 1.0 and abs(p - 2 / 720) < 0.002  # the exact two-sided p of a perfect order of 6
    r, p = rank_correlation(range(6), [12, 10, 8, 6, 4, 2])
    assert r == -1.0 and p < 0.01
    r, p = rank_correlation([0, 1, 2, 3, 4, 5, 6, 7], [3, 3, 1, 7, 0, 5, 2, 6])
    assert abs(r - np.corrcoef([0, 1, 2, 3, 4, 5, 6, 7], [3.5, 3.5, 1.0, 7.0, 0.0, 5.0, 2.0, 6.0])[0, 1]) < 1e-12
    assert 0.05 < p < 1
    assert np.isnan(rank_correlation(range(6), [1] * 6)[0]) and np.isnan(rank_correlation([1, 2, 3], [3, 2, 1])[0])
    res = _fake_results()
    fail = ch.failures_vs_heads(res, 0.1)
    assert len(fail) == 4 and (fail["positional"] == 1).all() and (fail["symbolic"] == 1).all()
    own = fail.set_index(["order", "seed"])
    assert own.loc[("shuffled", 0), "trained"] == 1.0 and own.loc[("shuffled", 0), "longest"] == 1.0
    assert (fail["drop"] == 0).all() and np.allclose(fail["other_order"], 0.55)
    note = ch.failures_note(fail)["lego_fail"]
    assert note.startswith("shuffled clauses (2 runs): 1.0 pure positional and 1.0 pure symbolic heads; the trained "
                           "depths lose 0.00 in the longest chains and reach 0.55 in the other order")
    assert "with the loss n/a" in note  # constant columns: no correlation


def test_manipulation_note_says_what_the_row_rests_on():
    from posym.chapters import lego as ch

    res = _fake_results()
    note = ch.types_note(ch.final_heads(res, 0.1))["lego_manip"]  # layer 0 is a manipulation head in all 4 runs
    assert note.startswith("4 heads of 8 pass the local threshold (local mass 0.80; 4 positional), in 4 of 4 runs")
    assert "these 4 heads, and 0 runs do not" in note
    ty = res["types"]
    ty.loc[(ty["layer"] == 0) & ~((ty["task"] == "lego_fused") & (ty["seed"] == 1)), "local"] = 0.2
    note = ch.types_note(ch.final_heads(res, 0.1))["lego_manip"]
    assert note.startswith("1 head of 8 passes the local threshold (local mass 0.80; 1 positional), in 1 of 4 runs")
    assert "rests on this one head, and 3 runs do not" in note
    ty["local"] = 0.2
    assert ch.types_note(ch.final_heads(res, 0.1))["lego_manip"].startswith("No head passes the local threshold")
    assert ch.claims_table(res, 0.1).set_index("claim").loc[
        "manipulation heads are positional (our expectation)", "verdict"] == "n/a"


def test_final_accuracy_per_depth_and_note():
    import pandas as pd

    from posym.chapters import lego as ch

    rows = []
    for task, d2 in (("lego_fused", (0.5, 0.48)), ("lego_fused_ordered", (0.75, 0.75))):
        for seed in (0, 1):
            for step in (0, 100):
                last = step == 100
                rows += [{"task": task, "seed": seed, "step": step, "hop": "all", "accuracy": 0.75 if last else 0.5},
                         {"task": task, "seed": seed, "step": step, "hop": "1", "accuracy": 1.0 if last else 0.5},
                         {"task": task, "seed": seed, "step": step, "hop": "2", "accuracy": d2[seed] if last else 0.5}]
    res = {"eval": pd.DataFrame(rows)}
    acc = ch.final_accuracy(res)
    assert list(acc.columns) == ["task", "seed", "step", "accuracy", "depth_1", "depth_2"]
    assert (acc["step"] == 100).all() and acc["depth_1"].eq(1.0).all()
    assert acc.set_index(["task", "seed"]).loc[("lego_fused", 1), "depth_2"] == 0.48
    note = ch.accuracy_note(res)
    assert note == ("LEGO, two chains (shuffled), 2 run(s): depth 1 1.00, depth 2 0.48–0.50; "
                    "LEGO, two chains (ordered), 2 run(s): depth 1 1.00, depth 2 0.75")
    # eval tables without per-depth rows: the overall accuracy only
    only_all = {"eval": res["eval"][res["eval"]["hop"] == "all"]}
    assert list(ch.final_accuracy(only_all).columns) == ["task", "seed", "step", "accuracy"]
    assert ch.accuracy_note(only_all).startswith("LEGO, two chains (shuffled), 2 run(s): overall 0.75")


# -----------------------------------------------------------------------------
# two chains with fused sign tokens (posym/tasks/lego_fused.py, lego_fused_ordered.py)

FUSED = ("lego_fused", "lego_fused_ordered")


def ref_fused(tokens):
    """(answer, depth, signed-token positions read from the query back) by fixpoint substitution over the
    (operand, signed name) pairs."""
    toks = list(tokens)
    assert toks[-2] == "?" and len(toks) % 2 == 0
    pairs = [(toks[p], toks[p + 1][:-1], toks[p + 1][-1], p + 1) for p in range(0, len(toks) - 2, 2)]
    assert len({name for _, name, _, _ in pairs}) == len(pairs), "a variable is defined twice"
    value, depth = {}, {}
    changed = True
    while changed:
        changed = False
        for op, name, sign, _ in pairs:
            if name not in value and (op == "1" or op in value):
                v, d = (1, 0) if op == "1" else (value[op], depth[op])
                value[name], depth[name] = v * (1 if sign == "+" else -1), d + 1
                changed = True
    where = {name: p for _, name, _, p in pairs}
    parent = {name: op for op, name, _, _ in pairs}
    q = toks[-1]
    read, v = [], q
    for _ in range(depth[q]):
        read.append(where[v])
        v = parent[v]
    return ("+" if value[q] > 0 else "-"), depth[q], (len(toks) - 1, *read)


def test_fused_registered():
    t, o = get_task("lego_fused"), get_task("lego_fused_ordered")
    assert (t.task_id, o.task_id) == (5, 6) and t.seq_len == o.seq_len == 14 and t.max_hops == 2
    assert len(t.vocab) == 83 and t.answer_tokens == ("+", "-")
    assert (t.n_combos, o.n_combos) == (24, 8)
    assert t.colour != o.colour and t.label != o.label


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fused_samples_solved_by_reference(name, split):
    task = get_task(name)
    for s in TaskDataset(name, split, seed=1, size=600):
        assert len(s.tokens) == task.seq_len
        assert ref_fused(s.tokens) == (s.answer, s.hops, s.chain) == task.solve(s.tokens)
        ops, signed = s.tokens[0:-2:2], s.tokens[1:-2:2]
        assert len({t[:-1] for t in signed}) == 6 and ops.count("1") == 2  # 6 names, two chains
        if name == "lego_fused_ordered":  # each block is a chain in chain order
            for b in (0, 6):
                assert s.tokens[b] == "1" and s.tokens[b + 2] == s.tokens[b + 1][:-1]
                assert s.tokens[b + 4] == s.tokens[b + 3][:-1]


@pytest.mark.parametrize("name", FUSED)
def test_fused_arrays_equal_samples_and_are_deterministic(name):
    ds = TaskDataset(name, "val", seed=3)
    a = ds.arrays()
    task = get_task(name)
    task.check_ids(a["x"].copy())
    for i in range(0, 2400, 113):
        s = ds[i]
        assert task.vocab.decode(a["x"][i]) == list(s.tokens)
        assert a["hops"][i] == s.hops and task.vocab.tokens[a["y"][i]] == s.answer
        assert tuple(int(p) for p in a["chain"][i] if p >= 0) == s.chain
    again = TaskDataset(name, "val", seed=3).arrays()["x"]
    assert hashlib.sha256(again.tobytes()).hexdigest() == hashlib.sha256(a["x"].tobytes()).hexdigest()
    assert not np.array_equal(TaskDataset(name, "val", seed=4).arrays()["x"], a["x"])


@pytest.mark.parametrize("name", FUSED)
def test_fused_balance(name):
    task = get_task(name)
    a = TaskDataset(name, "val", seed=0).arrays()
    combos = Counter(zip(a["answer_pos"].tolist(), a["y"].tolist(), a["hops"].tolist()))
    assert len(combos) == task.n_combos
    assert max(combos.values()) - min(combos.values()) <= max(3, 0.6 * np.mean(list(combos.values())))
    tr = TaskDataset(name, "train", seed=0, size=36_000).arrays()
    assert abs((tr["y"] == task.vocab.stoi["+"]).mean() - 0.5) < 0.02
    assert set(np.unique(tr["hops"])) == {1, 2}
    # the queried chain's first clause: every slot (shuffled) or the start of either block (ordered)
    first = np.array([ref_fused(task.vocab.decode(r))[2][-1] for r in tr["x"][:600]])
    assert set(first // 2) == (set(range(6)) if name == "lego_fused" else {0, 3})
    # the signs of the queried clause and of the other chain's first clause say nothing about the answer alone
    d2 = TaskDataset(name, "train", seed=0, size=4000)
    rows = [s for s in d2 if s.hops == 2][:1000]
    agree = np.mean([s.tokens[s.chain[1]][-1] == s.answer for s in rows])
    assert abs(agree - 0.5) < 0.06


@pytest.mark.parametrize("name", FUSED)
def test_fused_deeper_prompts(name, ledger):
    task = get_task(name)
    deep = task.chain_prompts(20, [1, 2, 3], seed=2)
    assert Counter(s.hops for s in deep) == {1: 20, 2: 20, 3: 20}
    long = task.chain_prompts(5, range(1, 7), chain_len=6, seed=2)
    for s in deep + long:
        assert ref_fused(s.tokens) == (s.answer, s.hops, s.chain) == task.solve(s.tokens)
    assert all(len(s.tokens) == 26 for s in long)
    assert Counter(s.answer for s in long) == {"+": 15, "-": 15}
    assert [s.tokens for s in deep] == [s.tokens for s in task.chain_prompts(20, [1, 2, 3], seed=2)]
    with ledger.raises(ValueError, match="depths"):
        task.chain_prompts(3, [4])
    with ledger.raises(ValueError, match="n must"):
        task.chain_prompts(0, [1])


def test_fused_solver_rejects_bad_prompts(ledger):
    t = get_task("lego_fused")
    assert t.solve("1 a+ a b- ? b".split()) == ("-", 2, (5, 3, 1))
    with ledger.raises(ValueError, match="not a lego_fused prompt"):
        t.solve("1 a+ ? a+".split())
    with ledger.raises(ValueError, match="defined twice"):
        t.solve("1 a+ 1 a- ? a".split())
    with ledger.raises(ValueError, match="not defined"):
        t.solve("1 a+ c b- ? b".split())
    with ledger.raises(ValueError, match="loops"):
        t.solve("b a+ a b- ? b".split())
    with ledger.raises(ValueError, match="clause"):
        t.solve("a+ 1 ? a".split())
    with ledger.raises(ValueError, match="'\\?' and a name"):
        t.check_ids(np.ones((1, 14), dtype=np.int64))


def test_fused_teaching_recipe():
    from posym.train import TrainConfig

    cfg = TrainConfig.teaching("lego_fused", seed=1)
    assert (cfg.steps, cfg.batch_size, cfg.train_size, cfg.lr) == (3000, 64, 192_000, 1e-3)
    mc = cfg.model_config()
    assert (mc.n_layer, mc.n_head, mc.d_model, mc.d_mlp, mc.attn_pdrop, mc.resid_pdrop) == (4, 4, 64, 256, 0.0, 0.0)
