"""Tests for posym.audit.

Every vectorised audit statistic is compared with a plain-Python brute-force computation written here from
the task definitions (on Sample objects, token strings), the shortcut solvers are checked on hand-built
prompts, the shortcut-free variants are checked to remove their regularity and to stay valid, and the
duplicate counter must find planted duplicates.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from posym import audit as A
from posym.tasks import TaskDataset, get_task

N_SMALL = 400
LETTERS = "abcdefgh"


# -----------------------------------------------------------------------------
# helpers

def samples(task, split="val", n=N_SMALL, seed=0):
    ds = TaskDataset(task, split, seed=seed)
    return [ds[i] for i in range(n)]


def arrays(task, split="val", n=N_SMALL, seed=0):
    return A.split_arrays(task, split, seed, n)


def encode(task, tokens):
    return np.array([get_task(task).vocab.encode(tokens)], dtype=np.int64)


def decode(task, ids):
    return get_task(task).vocab.decode([int(ids)])[0]


def row(df, **kw):
    m = np.ones(len(df), bool)
    for k, v in kw.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, f"expected one row for {kw}, got {m.sum()}"
    return df[m].iloc[0]


def hop_groups(ss):
    """'all' and '1'..'4' -> list of samples."""
    out = {"all": list(ss)}
    for h in range(1, 5):
        out[str(h)] = [s for s in ss if s.hops == h]
    return out


def chain_letters(s):
    """Letters read along a Letter-task chain: right letters of the instructions on the chain."""
    return {s.tokens[p][1] for p in s.chain[:-1]}


# -----------------------------------------------------------------------------
# statistics helpers

def test_wilson_and_mean_ci():
    lo, hi = A.wilson(50, 100)
    assert lo < 0.5 < hi and abs((0.5 - lo) - (hi - 0.5)) < 1e-12
    lo, hi = A.wilson(0, 10)
    assert lo == 0 and 0 < hi < 0.35
    lo, hi = A.wilson(10, 10)
    assert hi == pytest.approx(1) and lo > 0.65
    m, lo, hi = A.mean_ci([0.9, 1.0, 0.95])
    sd = np.std([0.9, 1.0, 0.95], ddof=1)
    assert m == pytest.approx(0.95) and hi - m == pytest.approx(4.302652730 * sd / math.sqrt(3), rel=1e-8)
    assert np.isnan(A.mean_ci([0.5])[1])


def test_iid_null_matches_closed_forms_and_simulation():
    null = A.iid_letter_null()
    assert null["answer_letter_unique"] == pytest.approx((7 / 8) ** 7)
    assert null["least_frequent_solver"] == pytest.approx(1 / 8)  # exchangeable window: the rule is chance
    rng = np.random.default_rng(1)
    n = 20_000
    win = rng.integers(0, 8, size=(n, 8))
    pos = rng.integers(0, 8, size=n)
    hit = Counter()
    for w, p in zip(win, pos):
        c = Counter(w.tolist())
        lo, hi = min(c.values()), max(c.values())
        hit["uniq_lf"] += c[w[p]] == lo and sum(v == lo for v in c.values()) == 1
        hit["uniq_mf"] += c[w[p]] == hi and sum(v == hi for v in c.values()) == 1
        hit["lf_rule"] += min(range(8), key=lambda q: (c[w[q]], q)) == p
    for key, stat in (("uniq_lf", "answer_unique_least_frequent"), ("uniq_mf", "answer_unique_most_frequent"),
                      ("lf_rule", "least_frequent_solver")):
        q = null[stat]
        assert abs(hit[key] / n - q) < 4 * math.sqrt(q * (1 - q) / n) + 1e-3, (stat, hit[key] / n, q)


# -----------------------------------------------------------------------------
# Letter task statistics vs brute force

def test_letter_frequency_audit_matches_brute_force():
    ss = samples("letter")
    df = A.letter_frequency_audit(arrays("letter"), "val")
    for hop, group in hop_groups(ss).items():
        want = Counter()
        for s in group:
            c = Counter(t[0] for t in s.tokens[:8])
            a = c[s.answer[0]]
            lo, hi = min(c.values()), max(c.values())
            want["answer_letter_unique"] += a == 1
            want["answer_among_least_frequent"] += a == lo
            want["answer_unique_least_frequent"] += a == lo and sum(v == lo for v in c.values()) == 1
            want["answer_among_most_frequent"] += a == hi
            want["answer_unique_most_frequent"] += a == hi and sum(v == hi for v in c.values()) == 1
            n_unique_tokens = sum(c[t[0]] == 1 for t in s.tokens[:8])
            want[f"n_unique_letter_tokens={n_unique_tokens}"] += 1
        for stat in ("answer_letter_unique", "answer_among_least_frequent", "answer_unique_least_frequent",
                     "answer_among_most_frequent", "answer_unique_most_frequent"):
            r = row(df, statistic=stat, hop=hop)
            assert r.k == want[stat] and r.n == len(group), (stat, hop)
        for size in range(1, 9):
            assert row(df, statistic=f"n_unique_letter_tokens={size}", hop=hop).k == want[f"n_unique_letter_tokens={size}"]


def test_letter_instruction_audit_matches_brute_force():
    ss = samples("letter")
    df = A.letter_instruction_audit(arrays("letter"), "val")
    for hop, group in hop_groups(ss).items():
        want = Counter()
        for s in group:
            a = s.answer[0]
            instr = s.tokens[8:]
            want["left"] += any(t[0] == a for t in instr)
            want["right1"] += sum(t[1] == a for t in instr) == 1
            want["qleft"] += s.tokens[16][0] in chain_letters(s)
            tc = Counter(t[0] for t in s.tokens[:8])
            sig = [tc[t[0]] == 1 and any(u[1] == t[0] for u in instr) and not any(u[0] == t[0] for u in instr)
                   for t in s.tokens[:8]]
            want["sig_unique"] += sum(sig) == 1
            want[f"cand{sum(sig)}"] += 1
        assert row(df, statistic="answer_letter_left_in_instructions", hop=hop).k == want["left"]
        assert row(df, statistic="answer_letter_right_exactly_once", hop=hop).k == want["right1"]
        assert row(df, statistic="query_left_in_chain", hop=hop).k == want["qleft"]
        assert row(df, statistic="signature_unique", hop=hop).k == want["sig_unique"]
        for k in range(9):
            assert row(df, statistic=f"signature_candidates={k}", hop=hop).k == want[f"cand{k}"]


def test_distractor_letter_audit_matches_brute_force():
    ss = samples("letter")
    df = A.distractor_letter_audit(arrays("letter"), "val")
    for hop, group in hop_groups(ss).items():
        k, n = Counter(), Counter()
        for s in group:
            ch, a = chain_letters(s), s.answer[0]
            on = set(s.chain)
            slots = [("target_letter", s.tokens[p][0]) for p in range(8) if p not in on]
            slots += [("instruction_left", s.tokens[p][0]) for p in range(8, 16) if p not in on]
            slots += [("instruction_right", s.tokens[p][1]) for p in range(8, 16) if p not in on]
            slots += [("query_left", s.tokens[16][0])]
            for kind, letter in slots:
                n[kind] += 1
                k[kind, "is_chain_letter"] += letter in ch
                k[kind, "is_answer_letter"] += letter == a
        for kind in ("target_letter", "instruction_left", "instruction_right", "query_left"):
            for stat in ("is_chain_letter", "is_answer_letter"):
                r = row(df, slot=kind, statistic=stat, hop=hop)
                assert (r.k, r.n) == (k[kind, stat], n[kind]), (kind, stat, hop)


def test_answer_multiplicity_matches_brute_force():
    for task in ("letter", "number"):
        ss = samples(task)
        df = A.answer_multiplicity_audit(task, arrays(task), "val")
        for hop, group in hop_groups(ss).items():
            if task == "number":
                want = sum(s.tokens[:8].count(s.answer) > 1 for s in group)
                assert row(df, statistic="answer_letter_repeated", hop=hop).k == want
            else:
                tok = sum(s.tokens[:8].count(s.answer) > 1 for s in group)
                let = sum([t[0] for t in s.tokens[:8]].count(s.answer[0]) > 1 for s in group)
                assert row(df, statistic="answer_token_repeated", hop=hop).k == tok
                assert row(df, statistic="answer_letter_repeated", hop=hop).k == let


# -----------------------------------------------------------------------------
# Number task statistics vs brute force

def test_number_instruction_audit_matches_brute_force():
    ss = samples("number")
    df = A.number_instruction_audit(arrays("number"), "val")
    vals, into, onto, tot = Counter(), Counter(), Counter(), Counter()
    for s in ss:
        on = set(s.chain)
        for t in range(8, 16):
            role = "on_chain" if t in on else "off_chain"
            v = int(s.tokens[t])
            vals[t, role, v] += 1
            tot[t, role] += 1
            into[t, role] += t - v < 8
            onto[t, role] += (t - v) in on
    for t in range(8, 16):
        for role in ("on_chain", "off_chain"):
            s_row = row(df, position=t, role=role, value=0)
            assert s_row["count"] == tot[t, role]
            assert s_row.p_into_target == pytest.approx(into[t, role] / max(tot[t, role], 1))
            assert s_row.p_onto_chain == pytest.approx(onto[t, role] / max(tot[t, role], 1))
            for v in range(1, 17):
                assert row(df, position=t, role=role, value=v)["count"] == vals[t, role, v]


def test_information_table_matches_brute_force():
    data = {"train": arrays("number", "train", 3000), "val": arrays("number", "val", 600),
            "test": arrays("number", "test", 600)}
    df = A.information_table("number", data, eval_splits=("val",))
    tr = TaskDataset("number", "train")
    tr_s = [tr[i] for i in range(3000)]
    va_s = samples("number", "val", 600)
    for target, get in (("hops", lambda s: s.hops), ("answer_pos", lambda s: s.chain[-1])):
        joint = Counter((int(s.tokens[16]), get(s)) for s in tr_s)
        fx = Counter(int(s.tokens[16]) for s in tr_s)
        fy = Counter(get(s) for s in tr_s)
        n = len(tr_s)
        mi = sum(c / n * math.log2((c / n) / (fx[f] / n * fy[y] / n)) for (f, y), c in joint.items())
        r = row(df, feature="query_value", target=target, split="val")
        assert r.mi_bits == pytest.approx(mi, abs=1e-9)
        best = {f: max((c, -y) for (ff, y), c in joint.items() if ff == f) for f in fx}  # ties -> smallest y
        pred = [-best[int(s.tokens[16])][1] if int(s.tokens[16]) in best else None for s in va_s]
        acc = np.mean([p == get(s) for p, s in zip(pred, va_s)])
        assert r.accuracy == pytest.approx(acc)
    # the query value alone: one hop iff value >= 9 (so the hop predictor is perfect on one-hop prompts)
    ct = A.conditional_table("number", data["train"], "query_value", "hops")
    assert set(ct[(ct["count"] > 0) & (ct.hops == 1)].value) <= set(range(9, 17))
    assert set(ct[(ct["count"] > 0) & (ct.hops > 1)].value) <= set(range(1, 9))


def test_mutual_information_limits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 10_000)
    assert A.mutual_information(y, y) == pytest.approx(A.entropy_bits(y))
    assert A.mutual_information(rng.integers(0, 4, 10_000), y) < 0.01


# -----------------------------------------------------------------------------
# Shortcut solvers on hand-built prompts

# Letter: answer a1 at position 0 after one hop (query "fa"); target-window letter counts a1 b2 c1 d2 e2
LETTER_1HOP = "a1 d2 b3 c4 d5 e6 e7 b8 bb cc dd ee bc cd de eb fa".split()
# two hops: query "hg" reads g -> "gc" at 12 reads c -> "c4" at 3; c is the only unique target letter
LETTER_2HOP = "a1 a2 b3 c4 b5 d6 d7 a8 ab ba bd db gc ad da bb hg".split()
NUMBER_FIG3A = "n h n v h y r s 6 3 2 7 7 8 4 7 2".split()  # paper Fig. 3A, answer n at position 2


def predict(task, name, tokens, params=None):
    return decode(task, A.SOLVERS[task][name].predict(encode(task, tokens), params or {})[0])


def test_letter_solvers_on_hand_built_prompts():
    t = get_task("letter")
    assert t.solve(LETTER_1HOP)[:2] == ("a1", 1)
    assert t.solve(LETTER_2HOP)[:2] == ("c4", 2)
    # least frequent, ties -> leftmost: a, b, c occur once (b at 2 and 7: twice) -> a1 (position 0)
    assert predict("letter", "least_frequent", LETTER_1HOP) == "a1"
    assert predict("letter", "least_frequent", LETTER_2HOP) == "c4"      # only c is unique
    assert predict("letter", "most_frequent", LETTER_2HOP) == "a1"       # a occurs 3 times
    assert predict("letter", "query_only", LETTER_1HOP) == "a1"
    assert predict("letter", "query_only", LETTER_2HOP) == "a1"          # g is in no target token -> position 0
    # signature: unique in the window, a right letter of some instruction, a left letter of none
    m = A.letter_signature_mask(encode("letter", LETTER_2HOP))[0]
    assert m.tolist() == [False, False, False, True, False, False, False, False]
    assert predict("letter", "letter_signature", LETTER_2HOP) == "c4"
    # in LETTER_1HOP, c is unique and the right letter of "bc" but the left letter of "cc" and "cd"
    assert A.letter_signature_mask(encode("letter", LETTER_1HOP))[0].tolist() == [True] + [False] * 7
    # global count over all 26 letter slots: a occurs twice (a1, fa), c 1+3, ...
    assert predict("letter", "global_least_frequent", LETTER_1HOP) == "a1"


def test_number_solvers_on_hand_built_prompts():
    t = get_task("number")
    assert t.solve(NUMBER_FIG3A)[:2] == ("n", 4)
    # pointers of 8..16: 2, 6, 8, 4, 5, 5, 10, 8, 14 -> target votes: pos 5 twice (y), 2, 4, 6 once
    assert A.number_pointers(encode("number", NUMBER_FIG3A))[0].tolist() == [2, 6, 8, 4, 5, 5, 10, 8, 14]
    assert predict("number", "pointer_votes", NUMBER_FIG3A) == "y"
    assert predict("number", "query_then_votes", NUMBER_FIG3A) == "y"    # query points at 14, not the window
    assert predict("number", "position8_pointer", NUMBER_FIG3A) == "n"   # 8 - 6 = 2
    # n and h occur twice; leftmost most frequent is position 0 = n, which equals the answer letter
    assert predict("number", "most_frequent_letter", NUMBER_FIG3A) == "n"
    one_hop = "a b c d e f g h 3 1 2 1 1 1 1 1 12".split()                 # query 12 -> position 4 = e
    assert t.solve(one_hop)[:2] == ("e", 1)
    assert predict("number", "query_then_votes", one_hop) == "e"
    fit = A.number_query_only_fit(arrays("number", "train", 5000))
    assert predict("number", "query_only", one_hop, fit) == "e"
    assert all(fit["pos_for_value"][v] == 16 - v for v in range(9, 17))


def test_solvers_match_brute_force_on_random_prompts():
    for task in ("letter", "number"):
        ss = samples(task, n=300)
        x = np.array([get_task(task).vocab.encode(s.tokens) for s in ss])
        for s, xi in zip(ss, x):
            toks = s.tokens
            if task == "letter":
                c = Counter(t[0] for t in toks[:8])
                lf = min(range(8), key=lambda p: (c[toks[p][0]], p))
                g = Counter([t[0] for t in toks[:8]] + [t[0] for t in toks[8:]] + [t[1] for t in toks[8:]])
                glf = min(range(8), key=lambda p: (g[toks[p][0]], p))
                got = {n: decode(task, A.SOLVERS[task][n].predict(xi[None], {})[0])
                       for n in ("least_frequent", "global_least_frequent")}
                assert got == {"least_frequent": toks[lf], "global_least_frequent": toks[glf]}
            else:
                votes = Counter(t - int(toks[t]) for t in range(8, 17) if t - int(toks[t]) < 8)
                best = min(range(8), key=lambda p: (-votes[p], p))
                assert decode(task, A.number_pointer_votes(xi[None])[0]) == toks[best]
                assert decode(task, A.number_position8(xi[None])[0]) == toks[8 - int(toks[8])]


def test_candidate_tables_learn_and_generalise():
    """The learned bag-of-letters / bag-of-pointers tables beat chance clearly on held-out prompts; the
    Number one is exact on one-hop prompts (the query pointer is one of its features)."""
    for task, solver in (("letter", "table_bag_of_letters"), ("number", "table_bag_of_pointers")):
        tr, va = arrays(task, "train", 20_000), arrays(task, "val", 2400)
        params = A.SOLVERS[task][solver].fitted(tr)
        ok = A.SOLVERS[task][solver].predict(va["x"], params) == va["y"]
        assert ok.mean() > 0.4
        if task == "number":
            assert ok[va["hops"] == 1].all()


def test_shortcut_accuracy_table_and_random_position():
    data = {"train": arrays("number", "train", 5000), "val": arrays("number", "val", 2400)}
    df = A.shortcut_accuracy("number", data=data, splits=("val",))
    r = row(df, solver="random_position", hop="all")
    want = np.mean([(s.tokens[:8].count(s.answer)) / 8 for s in samples("number", n=2400)])
    assert r.accuracy == pytest.approx(want)
    assert row(df, solver="query_only", hop="1").accuracy == 1.0
    assert set(df.hop) == {"all", "1", "2", "3", "4"}


# -----------------------------------------------------------------------------
# duplicates

def test_duplicate_counter_finds_planted_duplicates():
    rng = np.random.default_rng(0)
    train = rng.integers(1, 129, size=(5000, 17))
    test = rng.integers(1, 129, size=(800, 17))
    train[10] = train[20]                 # one within-train duplicate pair
    train[30] = train[40] = train[50]     # and one triple
    test[:7] = train[100:107]             # seven test rows copied from train
    test[7] = test[8]                     # one within-test pair
    df = A.duplicate_counts({"train": train, "test": test})
    w = df[df.kind == "within"].set_index("a")
    assert w.loc["train", "rows_in_duplicate_groups"] == 5 and w.loc["train", "extra_copies"] == 3
    assert w.loc["test", "rows_in_duplicate_groups"] == 2 and w.loc["test", "extra_copies"] == 1
    b = df[df.kind == "between"].set_index(["a", "b"])
    assert b.loc[("test", "train"), "rows_of_a_also_in_b"] == 7
    assert b.loc[("train", "test"), "rows_of_a_also_in_b"] == 7


def test_real_splits_have_no_duplicate_prompts_and_it_is_fast():
    import time
    t0 = time.perf_counter()
    df = A.duplicates("letter")
    assert time.perf_counter() - t0 < 60
    p = df[df.level == "prompt"]
    assert (p[p.kind == "within"].extra_copies == 0).all()
    assert (p[p.kind == "between"].rows_of_a_also_in_b == 0).all()
    assert p[p.kind == "within"].rows.sum() == 480_000


# -----------------------------------------------------------------------------
# shortcut-free variants

@pytest.mark.parametrize("task,reg", [(t, r) for t in A.VARIANTS for r in A.VARIANTS[t]])
def test_variant_keeps_every_prompt_valid_and_the_chain_intact(task, reg, ledger):
    base = arrays(task, "val", 2400)
    v = A.shortcut_free_variant(task, reg, base=base)
    assert A.verify_variant(task, v) == 2400              # same answer, hops and chain by the task's solver
    on = A.on_chain_mask(base)
    on[:, 16] = False
    assert (v["x"][on] == base["x"][on]).all()            # only off-chain tokens changed ...
    if task == "letter":                                  # ... and the query's left letter, which is never read
        assert (A.letter_parts(v["x"])["ir"][:, -1] == A.letter_parts(base["x"])["ir"][:, -1]).all()
    else:
        assert (v["x"][:, 16] == base["x"][:, 16]).all()
    assert (v["x"] != base["x"]).any(1).mean() > 0.5
    for k in ("y", "hops", "answer_pos", "chain"):
        assert (v[k] == base[k]).all()
    again = A.shortcut_free_variant(task, reg, base=base)
    ledger.rerun()
    assert (again["x"] == v["x"]).all()                   # deterministic


def _reg(task, reg, stat, hop="all"):
    v = A.shortcut_free_variant(task, reg, split="val")
    df = A.variant_regularity(task, reg, v)
    return row(df, statistic=stat, hop=hop)


def test_least_frequent_variant_removes_the_regularity():
    # the answer is never the unique least-frequent letter (i.i.d. null: 1.3 %; generator: 9 %)
    assert _reg("letter", "least_frequent", "answer_unique_least_frequent").k == 0
    base = A.variant_regularity("letter", "least_frequent", A.split_arrays("letter", "val"))
    assert row(base, statistic="answer_unique_least_frequent", hop="all").rate > 0.05
    # the least-frequent rule falls to a uniform guess among the unique-letter tokens: 1/8 for one hop
    # (chance) and the validity floor 1/(8 - hops) otherwise
    for hop in ("1", "2", "3", "4", "all"):
        r = _reg("letter", "least_frequent", "least_frequent_solver_correct", hop)
        assert abs(r.rate - r.chance) < 3.5 * math.sqrt(r.chance * (1 - r.chance) / r.n), (hop, r.rate, r.chance)
    assert row(base, statistic="least_frequent_solver_correct", hop="all").rate > 0.35


@pytest.mark.parametrize("reg,stat", [("query_left", "query_left_is_chain_letter"),
                                      ("instruction_right", "instruction_right_is_chain_letter"),
                                      ("instruction_left", "instruction_left_is_chain_letter"),
                                      ("instruction_letters", "instruction_right_is_chain_letter")])
def test_instruction_variants_put_chain_letters_in_off_chain_slots_at_chance(reg, stat):
    for hop in ("all", "1", "4"):
        r = _reg("letter", reg, stat, hop)
        tol = max(0.005, 3.5 * math.sqrt(r.chance * (1 - r.chance) / r.n))
        assert abs(r.rate - r.chance) < tol, (reg, hop, r.rate, r.chance)
    assert _reg("letter", reg, stat, "all").chance > 0.05
    # ... where the generator itself never does
    orig = A.variant_regularity("letter", reg, A.split_arrays("letter", "val"))
    assert row(orig, statistic=stat, hop="all").k == 0


def test_pointer_vote_variant_is_at_chance():
    for hop in ("all", "1", "2", "3", "4"):
        r = _reg("number", "pointer_votes", "pointer_votes_solver_correct", hop)
        assert abs(r.rate - 1 / 8) < 3.5 * math.sqrt(1 / 8 * 7 / 8 / r.n), (hop, r.rate)
    v = A.shortcut_free_variant("number", "pointer_votes", split="val")
    assert v["feasible"].all()
    ok = A.number_pointer_votes(v["x"]) == v["y"]
    assert (ok == v["designated"]).all()
    orig = A.split_arrays("number", "val")
    assert (A.number_pointer_votes(orig["x"]) == orig["y"]).mean() > 0.3


def test_unknown_variant_is_refused(ledger):
    with ledger.raises(ValueError, match="unknown variant"):
        A.shortcut_free_variant("number", "least_frequent")


# -----------------------------------------------------------------------------
# models: shortcut use and variants with stand-in models

class RulePredictor(torch.nn.Module):
    """A stand-in 'model' whose last-token logits put all mass on a numpy rule's prediction."""

    def __init__(self, rule, vocab_size):
        super().__init__()
        self.rule, self.vocab_size = rule, vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, last_only=True):
        pred = torch.from_numpy(self.rule(x.numpy()))
        logits = torch.full((len(x), 1, self.vocab_size), -20.0)
        logits[torch.arange(len(x)), 0, pred] = 20.0
        return logits


def oracle(task):
    t = get_task(task)
    return lambda x: np.array([t.vocab.stoi[t.solve(t.vocab.decode(r))[0]] for r in x])


def test_shortcut_use_splits_by_shortcut_success():
    n_vocab = len(get_task("number").vocab)
    copycat = RulePredictor(A.number_pointer_votes, n_vocab)   # "uses" the vote shortcut entirely
    exact = RulePredictor(oracle("number"), n_vocab)
    per, summ = A.shortcut_use({0: copycat, 1: exact}, "number", splits=("val",), solvers=["pointer_votes"],
                               n_train=3000)
    c = per[per.seed == 0].set_index(["part", "hop"])
    assert (c.loc["shortcut_right"].accuracy == 1).all() and (c.loc["shortcut_wrong"].accuracy == 0).all()
    assert (c.loc["shortcut_wrong"].model_follows_shortcut == 1).all()
    e = per[per.seed == 1].set_index(["part", "hop"])
    assert (e.accuracy == 1).all()
    assert (e.loc["shortcut_wrong"].model_follows_shortcut == 0).all()
    # the two models see different data seeds, and the summary averages them with a t-interval
    assert c.loc[("shortcut_wrong", "all"), "n"] != e.loc[("shortcut_wrong", "all"), "n"]
    s = row(summ, part="shortcut_wrong", hop="all")
    assert s.n_models == 2 and s.accuracy == pytest.approx(0.5) and s.ci_kind == "t over seeds"


def test_variant_accuracy_with_oracle_and_shortcut_models():
    n_vocab = len(get_task("letter").vocab)
    out = A.variant_accuracy([(0, RulePredictor(oracle("letter"), n_vocab))], "letter",
                             regularities=["least_frequent"], split="val", n=800, n_train=3000, verify=100)
    s = out["summary"].set_index(["variant", "who", "hop"])
    assert (s.xs("model", level="who").accuracy == 1).all()    # a chain follower is unaffected
    lf_orig = s.loc[("original", "solver:least_frequent", "all"), "accuracy"]
    lf_var = s.loc[("least_frequent", "solver:least_frequent", "all"), "accuracy"]
    assert lf_orig > 0.3 and lf_var < 0.25
    cond = out["conditions"]
    assert set(cond.condition) == set(A.letter_conditions(A.split_arrays("letter", "val", 0, 10)))
    shortcut = RulePredictor(A.letter_least_frequent, n_vocab)
    out = A.variant_accuracy([(0, shortcut)], "letter", regularities=["least_frequent"], split="val", n=800,
                             n_train=3000)
    s = out["summary"].set_index(["variant", "who", "hop"])
    assert s.loc[("least_frequent", "model", "all"), "accuracy"] == pytest.approx(lf_var)


def test_curves_vs_floors_reads_committed_runs():
    long, first = A.curves_vs_floors("number", n_train=3000, solvers=["query_only", "pointer_votes"])
    if long.empty:
        pytest.skip("no committed runs")
    assert set(long.hop) == {"all", "1", "2", "3", "4"}
    assert (long.best_solver_accuracy > 0.1).all()
    assert (first.first_step_above_floor != 0).all()    # an untrained model is not above the floor
