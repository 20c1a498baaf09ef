"""Tests for posym.functions: Index / Retrieval / Reflexive and depth-wise rewriting (Paper 2, Listing 1, App. F.1)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from posym.functions import (
    FUNCTIONS, get_function, ideal_attention, index, is_letter_letter, is_letter_number, is_number,
    is_terminal, layer_plan, match_rate, match_table, reads, reflexive, resolution_depth, retrieval,
    rewrite, solve_by_rewriting, split_pair, task_function,
)
from posym.tasks import TaskDataset, get_task

NUMBER_FIG3 = "n h n v h y r s 6 3 2 7 7 8 4 7 2".split()   # -> n, 4 hops, chain 16 14 10 8 2
NUMBER_FIG1 = "C B A 1 4 1 3 2 1".split()                   # -> C
LETTER_FIG1 = "C2 B1 A3 FA EC DE HF GD IG".split()           # -> C2, chain IG GD DE EC C2


# -----------------------------------------------------------------------------
# reference implementations, written from the definitions, not from the module

def ref_index_at(seq, p):
    tok = seq[p]
    if tok.isdigit() and p - int(tok) >= 0 and not seq[p - int(tok)].isdigit():
        return seq[p - int(tok)]
    return tok


def ref_listing1_retrieval(seq):
    """Paper Listing 1 (first earlier match, strictly before the token)."""
    out = list(seq)
    for n in range(len(seq)):
        if seq[n][1:].isalpha():
            for i in range(n):
                if seq[i][0] == seq[n][1]:
                    out[n] = seq[i]
                    break
    return out


def proper_at(seq, p):
    """Def. F.2's condition at position p: the tokens k <= p starting with the wanted letter all agree."""
    if not seq[p][1:].isalpha():
        return True
    hits = {seq[k] for k in range(p + 1) if seq[k][0] == seq[p][1]}
    return len(hits) == 1


def letter_seq(rng, n, letters="abcd", numbers="123"):
    out = []
    for _ in range(n):
        a = letters[rng.integers(len(letters))]
        if rng.random() < 0.5:
            out.append(a + numbers[rng.integers(len(numbers))])
        else:
            out.append(a + letters[rng.integers(len(letters))])
    return out


def number_seq(rng, n, letters=("a", "b", "cq"), m=6):
    return [str(rng.integers(1, m + 1)) if rng.random() < 0.5 else letters[rng.integers(len(letters))]
            for _ in range(n)]


@pytest.fixture(scope="module")
def val_prompts():
    """The 2,400 validation prompts of each task (tokens, answer, hops, chain)."""
    out = {}
    for name in ("number", "letter"):
        task = get_task(name)
        a = TaskDataset(name, "val").arrays()
        toks = [task.vocab.decode(row) for row in a["x"]]
        ans = task.vocab.decode(a["y"])
        out[name] = list(zip(toks, ans, a["hops"].tolist(), [tuple(int(c) for c in ch if c >= 0) for ch in a["chain"]]))
    return out


# -----------------------------------------------------------------------------
# token types

def test_token_types(ledger):
    assert is_number("7") and is_number("16") and not is_number("a") and not is_number("a4")
    assert is_letter_number("a4") and is_letter_number("C2") and not is_letter_number("fc") and not is_letter_number("4")
    assert is_letter_letter("fc") and is_letter_letter("IG") and not is_letter_letter("a4") and not is_letter_letter("abc")
    assert split_pair("a4") == ("a", "4") and split_pair("fc") == ("f", "c")
    with ledger.raises(ValueError):
        split_pair("7")


def test_get_function(ledger):
    assert get_function("index") is index and get_function(retrieval) is retrieval
    assert set(FUNCTIONS) == {"index", "retrieval", "reflexive"}
    with ledger.raises(ValueError, match="unknown basic function"):
        get_function("copy")
    with ledger.raises(ValueError):
        get_function(lambda s: s)
    assert task_function("number") is index and task_function(get_task("letter")) is retrieval
    with ledger.raises(ValueError):
        task_function("words")


# -----------------------------------------------------------------------------
# one step of each function

def test_index_paper_example_first_step():
    out = index(NUMBER_FIG3)
    # 6 at 8 -> pos 2 'n'; 3 at 9 -> pos 6 'r'; 2 at 10 -> pos 8 is a number: unchanged; 7 at 11 -> pos 4 'h'
    assert out == "n h n v h y r s n r 2 h y y 4 7 2".split()
    assert NUMBER_FIG3 == "n h n v h y r s 6 3 2 7 7 8 4 7 2".split()  # input not mutated


def test_index_edge_cases():
    assert index(["a", "5"]) == ["a", "5"]            # points before the start: unchanged (no wrap-around)
    assert index(["a", "1", "1"]) == ["a", "a", "1"]  # the second 1 reads a number: unchanged this step
    assert index(["bq", "2", "x", "1"]) == ["bq", "2", "x", "x"]  # "2" would read position -1: unchanged
    assert index([]) == []


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_index_matches_definition(seed, n):
    seq = number_seq(np.random.default_rng(seed), n)
    assert index(seq) == [ref_index_at(seq, p) for p in range(n)]


def test_retrieval_paper_example_first_step():
    assert retrieval(LETTER_FIG1) == "C2 B1 A3 A3 C2 EC FA DE GD".split()


def test_retrieval_conventions(ledger):
    assert retrieval(["a1", "ab"]) == ["a1", "ab"]                 # no token starts with b: unchanged
    assert retrieval(["a1", "a2", "ba"]) == ["a1", "a2", "ba"]     # two different a-tokens: not proper, unchanged
    assert retrieval(["a1", "a1", "ba"]) == ["a1", "a1", "a1"]     # identical copies are fine
    assert retrieval(["cc"]) == ["cc"]                             # a token may match itself (Def. F.2: k <= j)
    assert retrieval(["b1", "ab", "ca"]) == ["b1", "b1", "ab"]     # all positions in parallel, from the input
    with ledger.raises(ValueError):
        retrieval(["a1", "7"])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 25))
def test_retrieval_agrees_with_listing1_on_proper_positions(seed, n):
    seq = letter_seq(np.random.default_rng(seed), n)
    ours, listing = retrieval(seq), ref_listing1_retrieval(seq)
    for p in range(n):
        if not proper_at(seq, p):
            assert ours[p] == seq[p]
            continue
        if seq[p][1:].isalpha() and seq[p][0] == seq[p][1] and not any(seq[k][0] == seq[p][1] for k in range(p)):
            assert ours[p] == seq[p]  # only itself matches: Listing 1 finds nothing, both leave it
        assert ours[p] == listing[p]


def test_reflexive_is_identity_copy():
    s = ["a", "1"]
    out = reflexive(s)
    assert out == s and out is not s


# -----------------------------------------------------------------------------
# reads / ideal attention

def test_reads_index(ledger):
    assert reads(NUMBER_FIG3, index) == (14,)
    assert reads(NUMBER_FIG3, "index", 8) == (2,)
    assert reads(NUMBER_FIG3, index, 3) == (3,)          # a letter reads itself
    assert reads(["a", "5"], index) == ()                # undefined
    assert ideal_attention(["a", "5"], index) is None
    with ledger.raises(IndexError):
        reads(["a"], index, 3)


def test_reads_retrieval_and_reflexive():
    seq = ["a1", "b2", "a1", "ca"]
    assert reads(seq, retrieval) == (0, 2) and ideal_attention(seq, retrieval) == 2  # nearest copy
    assert reads(seq, retrieval, 1) == (1,)               # letter-number: itself
    assert reads(["a1", "a2", "ba"], retrieval) == ()     # ambiguous
    assert reads(["a1", "bc"], retrieval) == ()           # no match
    assert reads(["x", "2", "x"], reflexive) == (0, 2) and ideal_attention(["x", "2", "x"], reflexive) == 2


# -----------------------------------------------------------------------------
# depth-wise rewriting

def test_rewrite_number_example():
    traj = rewrite(NUMBER_FIG3, index, 5)
    assert len(traj) == 6 and traj[0] == NUMBER_FIG3
    # the chain 16 -> 14 -> 10 -> 8 -> 2 resolves from the answer upwards, one node per depth
    assert [traj[d][8] for d in range(6)] == ["6", "n", "n", "n", "n", "n"]
    assert [traj[d][10] for d in range(6)] == ["2", "2", "n", "n", "n", "n"]
    assert [traj[d][14] for d in range(6)] == ["4", "4", "4", "n", "n", "n"]
    assert [traj[d][16] for d in range(6)] == ["2", "2", "2", "2", "n", "n"]
    assert resolution_depth(NUMBER_FIG3, index) == 4
    assert solve_by_rewriting(NUMBER_FIG3, "number") == "n"
    assert solve_by_rewriting(NUMBER_FIG1, "number") == "C"


def test_rewrite_letter_example():
    traj = rewrite(LETTER_FIG1, retrieval, 4)
    # the query moves down the chain one link per depth
    assert [t[-1] for t in traj] == ["IG", "GD", "DE", "EC", "C2"]
    assert resolution_depth(LETTER_FIG1, retrieval) == 4
    assert solve_by_rewriting(LETTER_FIG1, "letter") == "C2"


def test_rewrite_validation(ledger):
    with ledger.raises(ValueError):
        rewrite(["a"], index, -1)
    assert rewrite(["a"], index, 0) == [["a"]]


def test_layer_plan_structure():
    fns, seqs = layer_plan(NUMBER_FIG3, "number", 12)
    assert fns == [index] * 4 + [reflexive] * 8
    assert len(seqs) == 13 and seqs[0] == NUMBER_FIG3
    assert all(s[-1] == "n" for s in seqs[4:])
    # too few layers: the last token stays unresolved
    fns, seqs = layer_plan(NUMBER_FIG3, "number", 3)
    assert fns == [index] * 3 and seqs[-1][-1] == "2"
    assert solve_by_rewriting(NUMBER_FIG3, "number", n_layers=3) == "2"
    assert resolution_depth(NUMBER_FIG3, index, max_depth=3) is None


@pytest.mark.parametrize("name", ["number", "letter"])
def test_rewriting_solves_every_validation_prompt(val_prompts, name):
    """2,400 prompts per task: h steps of the task's function give the answer, and h is the hop count."""
    fn = task_function(name)
    for toks, ans, hops, chain in val_prompts[name]:
        assert solve_by_rewriting(toks, name) == ans
        assert resolution_depth(toks, fn) == hops
        # exactly h non-trivial steps: before step h the last token is unresolved, from step h on it is the answer
        traj = rewrite(toks, fn, hops + 2)
        assert [is_terminal(t[-1], fn) for t in traj] == [False] * hops + [True] * 3
        assert traj[hops][-1] == traj[hops + 2][-1] == ans


@pytest.mark.parametrize("name", ["number", "letter"])
def test_ideal_read_of_the_query_along_the_plan(val_prompts, name):
    """The query reads the next chain node at every layer before resolution, itself afterwards.

    For Index this is the fixed offset of the query; for Retrieval it holds because parallel
    rewriting rolls every chain node forward, so the node after the query always holds the token
    the query needs next.
    """
    fn = task_function(name)
    for toks, ans, hops, chain in val_prompts[name][:600]:
        fns, seqs = layer_plan(toks, name, 6)
        for l in range(6):
            want = chain[1] if l < hops else len(toks) - 1
            assert ideal_attention(seqs[l], fns[l]) == want
            assert ideal_attention(seqs[l], fn) == want  # the task's own function agrees (self-read once resolved)


@pytest.mark.parametrize("name,length", [("number", 60), ("letter", 60), ("number", 300), ("letter", 300)])
def test_rewriting_on_longer_prompts(name, length):
    task = get_task(name)
    rng = np.random.default_rng(length)
    ds = TaskDataset(name, "test", size=150)
    for i in range(len(ds)):
        s = task.extend_target_window(ds[i], length - 17, rng)
        assert solve_by_rewriting(s.tokens, name) == s.answer
        assert resolution_depth(s.tokens, task_function(name)) == s.hops


# -----------------------------------------------------------------------------
# match rates

def test_match_rate_perfect_random_and_undefined(val_prompts, ledger):
    prompts = val_prompts["number"][:200]
    L = 6
    plans = [layer_plan(t, "number", L) for t, *_ in prompts]
    ideal = np.array([[ideal_attention(seqs[l], fns[l]) for l in range(L)] for fns, seqs in plans])
    layer_seqs = [seqs for _, seqs in plans]
    # the ideal arg-max matches Index wherever the plan uses Index, and Index reads itself afterwards
    assert np.all(match_rate(ideal, layer_seqs, index) == 1.0)
    # Reflexive matches only after resolution (or by accident, when the pointed-to token equals the query)
    refl = match_rate(ideal, layer_seqs, reflexive)
    hops = np.array([h for _, _, h, _ in prompts])
    resolved = np.array([np.mean(hops <= l) for l in range(L)])
    assert np.all(refl >= resolved) and np.all(refl <= resolved + 0.15)
    assert np.all(refl[4:] == 1.0) and refl[0] < 0.15
    # a "head" that always attends to position 0 almost never matches Index
    assert match_rate(np.zeros_like(ideal), layer_seqs, index).max() < 0.1
    # Retrieval does not apply to Number-task tokens at all
    with ledger.raises(ValueError, match="letter-task tokens"):
        match_rate(ideal, layer_seqs, retrieval)
    tab = match_table(ideal, [t for t, *_ in prompts], "number")
    assert set(tab) == {"index", "reflexive"} and np.all(tab["index"] == 1.0)
    with ledger.raises(ValueError):
        match_rate(ideal[:, :2], layer_seqs[:3], index)
    with ledger.raises(ValueError):
        match_rate(ideal, layer_seqs, [index, reflexive])


def test_match_rate_letter(val_prompts):
    prompts = val_prompts["letter"][:200]
    toks = [t for t, *_ in prompts]
    L = 5
    plans = [layer_plan(t, "letter", L) for t in toks]
    ideal = np.array([[ideal_attention(seqs[l], fns[l]) for l in range(L)] for fns, seqs in plans])
    tab = match_table(ideal, toks, "letter")
    assert np.all(tab["retrieval"] == 1.0)
    # shifted by one position the head reads a wrong token almost always
    assert np.nanmax(match_rate(ideal - 1, [s for _, s in plans], retrieval)) < 0.15
    # Retrieval is undefined where the match is ambiguous: such prompts leave the fraction (NaN if none)
    amb = [["a1", "a2", "ba"]] * 3
    assert np.isnan(match_rate(np.zeros((3, 1)), [[s] for s in amb], retrieval)[0])
