"""Tests for posym.theory: Theorem 3.1 constructions as real RoPE heads, and Theorem 3.2 discrepancy bounds."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from posym.functions import index, reads, retrieval
from posym.model import GPTJ, ModelConfig
from posym.tasks import get_task
from posym.theory import (
    INDEX_THETA, RETRIEVAL_THETA, attention_logits, check_construction, discrepancy, discrepancy_bounds,
    discrepancy_break_length, head_discrepancy, index_head, margin, measured_discrepancy, plane_vectors,
    random_task_inputs, retrieval_head, sampled_margins, sufficient_beta,
)

NUMBER = get_task("number")
LETTER = get_task("letter")
PHI = {c: k + 1 for k, c in enumerate("abcdefgh")}
OMEGA = 2 * math.pi / 8


def encode(task, seqs):
    return torch.tensor([task.vocab.encode(s) for s in seqs], dtype=torch.long)


def cos_index(seq, theta):
    """Closed-form Index logits of the last query, written from App. F.2.1."""
    n = len(seq)
    s = int(seq[-1]) if seq[-1].isdigit() else 0
    return np.array([math.cos((n - 1 - j - s) * theta) for j in range(n)])


def cos_retrieval(seq, theta, omega=OMEGA):
    """Closed-form Retrieval logits of the last query, written from App. F.2.2."""
    n = len(seq)
    q = seq[-1]
    ql = q[1] if q[1:].isalpha() else q[0]
    return np.array([math.cos((PHI[seq[j][0]] - PHI[ql]) * omega + (n - 1 - j) * theta) for j in range(n)])


# -----------------------------------------------------------------------------
# Def. 3.1 helpers

def test_discrepancy_definition(ledger):
    assert discrepancy([1.0, 0.5, 0.2]) == pytest.approx(0.5)
    assert discrepancy([1.0, 1.0, 0.3]) == pytest.approx(0.7)       # ties form the arg-max set J
    assert discrepancy([0.4, 0.4, 0.4]) == 0.0                       # all tied: zero discrepancy
    assert discrepancy([2.0]) == 0.0
    assert discrepancy([1.0, -math.inf, 0.9]) == pytest.approx(0.1)  # masked keys are ignored
    assert discrepancy([1.0, float(np.finfo(np.float32).min), 0.9]) == pytest.approx(0.1)
    assert discrepancy([1.0, 1.0 - 1e-14, 0.5], tol=1e-12) == pytest.approx(0.5)
    out = discrepancy(np.array([[3.0, 1.0], [0.0, 0.0]]))
    assert out.shape == (2,) and np.allclose(out, [2.0, 0.0])
    with ledger.raises(ValueError):
        discrepancy(np.zeros((2, 0)))


def test_margin(ledger):
    assert margin([1.0, 0.5, 0.2], [True, False, False]) == pytest.approx(0.5)
    assert margin([1.0, 0.5, 0.2], [False, True, False]) == pytest.approx(-0.5)  # wrong arg-max: negative
    assert margin([0.9, 1.0, 0.2], [True, True, False]) == pytest.approx(0.8)    # copies of the winner
    assert math.isnan(margin([1.0, 0.5], [True, True]))
    with ledger.raises(ValueError):
        margin([1.0, 0.5], [False, False])
    with ledger.raises(ValueError):
        margin([1.0, 0.5], [True])


def test_sufficient_beta(ledger):
    assert sufficient_beta(1, 0.1) == 0.0 and sufficient_beta(2, 0.1) == 0.0
    assert sufficient_beta(101, 0.5) == pytest.approx(math.log(100) / 0.5)
    assert sufficient_beta(101, 0.5, 0.75) == pytest.approx(math.log(300) / 0.5)
    with ledger.raises(ValueError):
        sufficient_beta(10, 0.0)
    with ledger.raises(ValueError):
        sufficient_beta(10, 0.1, 1.0)


# -----------------------------------------------------------------------------
# the constructed heads

@pytest.mark.parametrize("theta", [0.8, 0.0027, 2.5])
def test_head_uses_exactly_one_rope_angle(theta):
    m = index_head(theta)
    ang = m.blocks[0].attn.angles
    assert ang.shape == (2,) and ang[1].item() == pytest.approx(theta, rel=1e-14)
    # the unused frequency carries nothing
    W = m.blocks[0].attn.q_proj.weight
    assert torch.all(W[:2] == 0) and torch.all(W[4:] == 0)
    assert m.cfg.n_layer == 1 and m.cfg.n_head == 1 and m.cfg.attn_only


def test_layernorm_is_identity_on_embeddings():
    for m in (index_head(0.8), retrieval_head(0.0027)):
        E = m.wte.weight
        assert torch.allclose(m.blocks[0].ln_1(E), E, atol=1e-12)


def test_plane_vectors_follow_the_construction():
    pv = plane_vectors(index_head(0.8))
    toks = list(pv["tokens"])
    v = np.array([0.0, 1.0])
    assert np.allclose(pv["k"][1:], v)                       # every key is v
    assert np.allclose(pv["q"][toks.index("a")], v)          # a letter query is v
    s = 5
    assert np.allclose(pv["q"][toks.index("5")], [math.sin(s * 0.8), math.cos(s * 0.8)])  # rho(-5 theta) v
    pv = plane_vectors(retrieval_head(0.0027))
    toks = list(pv["tokens"])
    c = PHI["c"] * OMEGA
    assert np.allclose(pv["k"][toks.index("c7")], [math.sin(c), math.cos(c)])  # rho(-3 omega) v
    assert np.allclose(pv["q"][toks.index("fc")], [math.sin(c), math.cos(c)])  # queries use the right letter
    assert np.allclose(pv["q"][toks.index("c7")], [math.sin(c), math.cos(c)])  # letter-number: left letter


@pytest.mark.parametrize("length", [17, 45])
def test_model_logits_equal_closed_form(length):
    rng = np.random.default_rng(length)
    for task, head, ref, theta in ((NUMBER, index_head, cos_index, 0.8), (LETTER, retrieval_head, cos_retrieval, 0.0027)):
        seqs = random_task_inputs(task, 64, length, rng)
        x = encode(task, seqs)
        for beta in (1.0, 3.5):
            lg = attention_logits(head(theta, beta=beta), x).numpy()
            want = np.stack([ref(s, theta) for s in seqs])
            assert np.allclose(lg, beta * want, atol=1e-11)


def test_index_logits_ignore_key_content():
    """Positional: shuffling the keys (not the query) leaves the logit row unchanged."""
    rng = np.random.default_rng(1)
    seqs = random_task_inputs(NUMBER, 32, 30, rng)
    shuffled = [list(rng.permutation(s[:-1])) + [s[-1]] for s in seqs]
    m = index_head(0.8)
    assert torch.allclose(attention_logits(m, encode(NUMBER, seqs)), attention_logits(m, encode(NUMBER, shuffled)), atol=1e-13)


def test_retrieval_logits_follow_key_content():
    """Symbolic, up to the small RoPE term: permuting the keys permutes the logits (to ~theta * n)."""
    rng = np.random.default_rng(2)
    seqs = random_task_inputs(LETTER, 32, 30, rng)
    m = retrieval_head(0.0027)
    x = encode(LETTER, seqs)
    perm = np.r_[rng.permutation(29), 29]
    a = attention_logits(m, x).numpy()
    b = attention_logits(m, x[:, perm]).numpy()
    assert np.abs(b - a[:, perm]).max() < 30 * 0.0027
    assert not np.allclose(b, a, atol=1e-3)


def test_constructions_exact_on_thousands_of_valid_inputs():
    """Theorem 3.1: the attention arg-max of the last query is where Index / Retrieval read, strictly."""
    rng = np.random.default_rng(0)
    assert check_construction("index", 1000, (17, 64), rng=rng, theta=0.8) == 1.0
    assert check_construction("index", 200, (300,), rng=rng, theta=0.8) == 1.0
    # Retrieval with theta = 0.0027 is guaranteed up to n0 < omega / (2 theta) = 145
    assert check_construction("retrieval", 1000, (17, 64), rng=rng, theta=0.0027) == 1.0
    assert check_construction("retrieval", 200, (140,), rng=rng, theta=0.0027) == 1.0
    assert check_construction("retrieval", 100, (17, 400), rng=rng, theta=0.0) == 1.0   # NoPE: any length


def test_constructions_exact_at_all_positions_and_outputs():
    """Every position in parallel, and the model's output equals the function (softmax with Lemma F.1's beta)."""
    rng = np.random.default_rng(3)
    for kind in ("index", "retrieval"):
        assert check_construction(kind, 150, (17, 40), rng=rng, positions="all", output=True) == 1.0


def test_outputs_need_a_large_enough_beta():
    """With beta = 1 the softmax is far too flat: where Index must copy a letter, the output stays wrong."""
    rng = np.random.default_rng(4)
    seqs = [s for s in random_task_inputs(NUMBER, 400, 64, rng) if index(s)[-1] != s[-1]]  # query reads a letter
    assert len(seqs) > 50
    want = [index(s)[-1] for s in seqs]
    pred = index_head(0.8, beta=1.0)(encode(NUMBER, seqs), last_only=True)[:, -1].argmax(-1)
    assert np.mean([g == w for g, w in zip(NUMBER.vocab.decode(pred), want)]) < 0.05
    # Lemma F.1's beta for this length fixes it
    lam = measured_discrepancy("index", 64, 0.8)
    m = index_head(0.8, beta=1.01 * sufficient_beta(64, lam))
    pred = m(encode(NUMBER, seqs), last_only=True)[:, -1].argmax(-1)
    assert NUMBER.vocab.decode(pred) == want


def test_retrieval_margin_is_positional_at_letter_number_queries():
    """A letter-number token reads itself, but an earlier token with the same left letter is only
    (t theta)^2 / 2 behind: outside the hop positions the symbolic head has a positional-size margin."""
    seq = ["a2", "b1", "a5"]
    lg = attention_logits(retrieval_head(0.0027), encode(LETTER, [seq])).numpy()[0]
    assert reads(seq, retrieval) == (2,)
    assert margin(lg, [False, False, True]) == pytest.approx(1 - math.cos(2 * 0.0027), rel=1e-6)
    assert margin(lg, [False, False, True]) < 1e-4 < discrepancy_bounds("retrieval", 3, 0.0027)


def test_checks_can_fail():
    rng = np.random.default_rng(5)
    # theta / 2pi rational: theta = pi/2 is irrational, but cos(4 theta) = 1 ties the target with other keys
    assert check_construction("index", 200, (17,), rng=rng, theta=math.pi / 2) < 0.2
    # NoPE cannot index: every logit is equal
    assert check_construction("index", 200, (17,), rng=rng, theta=0.0) < 0.2
    # Retrieval beyond its guaranteed length: a far key with the neighbouring letter overtakes the match
    frac = check_construction("retrieval", 150, (400,), rng=rng, theta=0.0027)
    assert 0.1 < frac < 0.9
    assert measured_discrepancy("retrieval", 400, 0.0027) < 0 < measured_discrepancy("retrieval", 140, 0.0027)
    # theta too large for the length
    assert check_construction("retrieval", 200, (64,), rng=rng, theta=0.05) < 1.0


def test_head_discrepancy(ledger):
    rng = np.random.default_rng(6)
    seqs = random_task_inputs(NUMBER, 40, 25, rng)
    x = encode(NUMBER, seqs)
    hd = head_discrepancy(index_head(0.8, beta=2.5), 0, x)
    want = discrepancy(np.stack([cos_index(s, 0.8) for s in seqs]))
    assert hd.shape == (40,) and np.allclose(hd, 2.5 * want, atol=1e-10)
    # a (random) multi-layer model: top-1 minus top-2 of the last query's scores at each layer
    torch.manual_seed(0)
    m = GPTJ(ModelConfig.smoke(len(NUMBER.vocab))).eval()
    for layer in range(m.cfg.n_layer):
        _, cache = m.run_with_cache(x, names=[f"blocks.{layer}.attn.hook_attn_scores"])
        row = cache[f"blocks.{layer}.attn.hook_attn_scores"][:, 0, -1].double()
        top2 = row.topk(2, dim=-1).values
        ledger.rerun()
        assert np.allclose(head_discrepancy(m, layer, x), (top2[:, 0] - top2[:, 1]).numpy(), atol=1e-6)
    with ledger.raises(ValueError):
        head_discrepancy(m, 7, x)


def test_attention_logits_at_an_earlier_query():
    seqs = random_task_inputs(NUMBER, 8, 20, np.random.default_rng(7))
    lg = attention_logits(index_head(0.8), encode(NUMBER, seqs), pos=12).numpy()
    assert np.all(np.isinf(lg[:, 13:])) and np.allclose(lg[:, :13], np.stack([cos_index(s[:13], 0.8) for s in seqs]))


# -----------------------------------------------------------------------------
# exact discrepancy: checked against brute force

def index_margin_brute(n, s, theta):
    lg = np.array([math.cos((n - 1 - j - s) * theta) for j in range(n)])
    target = n - 1 - s
    return lg[target] - np.delete(lg, target).max()


@pytest.mark.parametrize("theta", [0.8, 0.3, 2.0, 1.0])
def test_index_exact_vs_brute_force(theta):
    ns = np.arange(2, 70)
    lo = measured_discrepancy("index", ns, theta, reduce="min")
    hi = measured_discrepancy("index", ns, theta, reduce="max")
    for i, n in enumerate(ns):
        gaps = [index_margin_brute(n, s, theta) for s in range(0, min(16, n - 1) + 1)]
        assert lo[i] == pytest.approx(min(gaps), abs=1e-12)
        assert hi[i] == pytest.approx(max(gaps), abs=1e-12)
    assert measured_discrepancy("index", 17, theta) == pytest.approx(lo[15])  # scalar in, scalar out


@pytest.mark.parametrize("theta,alph,nmax", [(0.0027, 8, 5), (0.05, 4, 7), (0.3, 4, 6), (0.0, 3, 6)])
def test_retrieval_exact_vs_brute_force(theta, alph, nmax):
    """Enumerate every letter assignment: the match at distance t*, every other key any other letter."""
    omega = 2 * math.pi / alph
    for n in range(2, nmax + 1):
        gaps = []
        for ts in range(n):
            others = [t for t in range(n) if t != ts]
            for ks in itertools.product(range(1, alph), repeat=len(others)):
                wrong = max(math.cos(k * omega + t * theta) for k, t in zip(ks, others))
                gaps.append(math.cos(ts * theta) - wrong)
        assert measured_discrepancy("retrieval", n, theta, alph=alph) == pytest.approx(min(gaps), abs=1e-12)
        assert measured_discrepancy("retrieval", n, theta, alph=alph, reduce="max") == pytest.approx(max(gaps), abs=1e-12)


@pytest.mark.parametrize("n", [17, 50, 200])
def test_real_head_margins_lie_within_the_exact_range(n):
    rng = np.random.default_rng(n)
    for kind, theta in (("index", 0.8), ("retrieval", 0.0027)):
        sm = sampled_margins(kind, n, theta, 150, rng)
        lo = measured_discrepancy(kind, n, theta, reduce="min")
        hi = measured_discrepancy(kind, n, theta, reduce="max")
        assert sm.min() >= lo - 1e-12 and sm.max() <= hi + 1e-12
    # Index: the margin depends on the query offset only, and the offsets seen include the extremes
    sm = sampled_margins("index", n, 0.8, 150, rng)
    assert sm.max() == pytest.approx(measured_discrepancy("index", n, 0.8, reduce="max"), abs=1e-12) or n == 17


# -----------------------------------------------------------------------------
# Theorem 3.2

def test_paper_bound_values_match_the_notes():
    """Fig. 5A parameters: Index theta = 0.8; Retrieval theta = 0.0027, |ALPH| = 8 (Paper 2, Sec. 3.5)."""
    idx = discrepancy_bounds("index", np.arange(2, 101), 0.8)
    assert np.allclose(idx[:7], 1 - math.cos(0.8)) and round(idx[0], 3) == 0.303   # flat for n = 2..8
    assert idx[7] < idx[6]                                                          # drops from n = 9
    assert round(discrepancy_bounds("index", 17, 0.8), 3) == 0.068
    assert round(discrepancy_bounds("index", 50, 0.8), 4) == 0.0079
    assert round(discrepancy_bounds("index", 100, 0.8), 4) == 0.0020
    ret = {n: discrepancy_bounds("retrieval", n, 0.0027, alph=8) for n in (2, 17, 50, 100)}
    assert round(ret[17], 3) == 0.261 and round(ret[50], 3) == 0.204 and round(ret[100], 3) == 0.130
    # the notes' starting value 0.293 is 1 - cos(omega), the n -> 0 limit; at n = 2 the bound is 0.289
    assert round(1 - math.cos(OMEGA), 3) == 0.293 and round(ret[2], 3) == 0.289


INDEX_THETAS = [0.8, 0.866, 0.3, 1.0, 2.0, math.sqrt(2) - 1, 0.1, 0.0027]
RETRIEVAL_THETAS = [0.0027, 0.001, 0.01, 0.0]


@pytest.mark.parametrize("theta", INDEX_THETAS)
def test_index_bound_never_violated(theta):
    ns = np.arange(2, 401)
    lo = measured_discrepancy("index", ns, theta, reduce="min")
    proved = discrepancy_bounds("index", ns, theta, form="proved")
    paper = discrepancy_bounds("index", ns, theta, form="paper")
    assert np.all(lo <= proved + 1e-12) and np.all(proved <= paper + 1e-12)
    assert np.all(lo > 0)  # theta / 2pi irrational: a unique arg-max at every length
    hi = measured_discrepancy("index", ns, theta, reduce="max")
    assert np.all(hi <= discrepancy_bounds("index", ns, theta, form="proved", reduce="max") + 1e-12)
    assert np.all(hi <= 1 - math.cos(theta) + 1e-12)
    assert np.all(np.diff(lo) <= 1e-15)  # the worst case only gets worse with length


@pytest.mark.parametrize("theta", RETRIEVAL_THETAS)
def test_retrieval_bound_never_violated(theta):
    ns = np.arange(2, 401)
    lo = measured_discrepancy("retrieval", ns, theta, reduce="min")
    proved = discrepancy_bounds("retrieval", ns, theta, alph=8, form="proved")
    assert np.all(lo <= proved + 1e-12)
    paper = discrepancy_bounds("retrieval", ns, theta, alph=8)
    excess = lo - paper
    # the printed bound (n theta instead of (n-1) theta) is exceeded only for short inputs, by < theta sin(omega)
    bad = ns[excess > 1e-12]
    if theta == 0:
        assert np.allclose(lo, 1 - math.cos(OMEGA))  # NoPE: bounded away from 0 at every length (Remark 3.2)
        assert bad.size == 0
    else:
        assert np.array_equal(bad, np.arange(2, 2 + bad.size))
        assert excess.max() < theta * math.sin(OMEGA)
    if theta == 0.0027:
        assert bad.max() == 24


def test_paper_index_bound_fails_for_the_most_favourable_input(ledger):
    """Def. 3.1 read literally (max over inputs) breaks 2 pi^2 / n^2: query '4' at n = 9, theta = 0.8."""
    seq = list("abcdefgh") + ["4"]
    gap = float(head_discrepancy(index_head(0.8), 0, encode(NUMBER, [seq]))[0])
    assert gap == pytest.approx(1 - math.cos(0.8), abs=1e-12)
    assert gap > discrepancy_bounds("index", 9, 0.8) + 0.05
    assert measured_discrepancy("index", 9, 0.8, reduce="max") == pytest.approx(gap)
    # and for Retrieval the literal maximum is near 2, far above any bound
    assert measured_discrepancy("retrieval", 17, 0.0027, reduce="max") > 1.9
    with ledger.raises(ValueError):
        discrepancy_bounds("retrieval", 17, 0.0027, form="proved", reduce="max")


def test_bound_and_measure_argument_errors(ledger):
    with ledger.raises(ValueError):
        measured_discrepancy("copy", 10, 0.8)
    with ledger.raises(ValueError):
        measured_discrepancy("index", 1, 0.8)
    with ledger.raises(ValueError):
        measured_discrepancy("index", 10, 0.8, reduce="mean")
    with ledger.raises(ValueError):
        discrepancy_bounds("index", 10, 0.8, form="tight")
    with ledger.raises(ValueError):
        index_head(-0.1)
    with ledger.raises(ValueError):
        random_task_inputs("number", 3, 10, np.random.default_rng(0))


# -----------------------------------------------------------------------------
# break length

def test_break_length(ledger):
    assert discrepancy_break_length(lambda n: 1.0 / n, 0.01) == 101
    assert discrepancy_break_length(lambda n: 1.0 / n, 1e-9, n_max=1000) is None
    assert discrepancy_break_length(([50, 10, 20], [0.1, 0.5, 0.3]), 0.35) == 20
    # a non-vectorised callable falls back to one call per length
    assert discrepancy_break_length(lambda n: 1.0 / int(n), 0.25) == 5
    # a threshold that depends on n (margin needed at inverse temperature beta)
    beta = 50.0
    thr = lambda n: math.log(n - 1) / beta if n > 2 else 0.0  # noqa: E731
    n_break = discrepancy_break_length(lambda n: measured_discrepancy("index", n, 0.8), thr, n_max=2000)
    ns = np.arange(2, 2001)
    vals = measured_discrepancy("index", ns, 0.8)
    first = next(int(k) for k, v in zip(ns, vals) if v < thr(int(k)))
    assert n_break == first
    with ledger.raises(ValueError):
        discrepancy_break_length(([1, 2], [0.1]), 0.5)
