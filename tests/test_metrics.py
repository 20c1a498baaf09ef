"""Tests for posym.metrics: the positional / symbolic scores (Paper 2, App. D).

* the fast method (one "content b at position a" logit matrix) equals the reference re-run method;
* hand-built heads score what the definitions require: positional (1, 0), symbolic (0, 1), uniform (1, 1);
* per-frequency scores separate a head that is positional in one RoPE frequency and symbolic in another;
* property tests (hypothesis) on random heads; the purity helpers on a synthetic trajectory.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from posym.metrics import (
    TAU, attention_entropy, classify, content_position_logits, frequency_table, layer_scores, model_scores,
    purity_counts, purity_events, rerun_rows, residual_inputs, rows_from_matrix, scores_table, swap_pairs,
    swap_scores, weighted_frequency,
)
from posym.model import GPTJ, ModelConfig

from conftest import attn_only_model, randomize_

T = 17  # 16 keys + the query, as in the paper
ROW_TOL = 1e-5


def compare_methods(model, x, layers, ledger, score_tol=1e-5):
    """Fast vs re-run: attention rows (original and every swap) and scores. Returns the max differences."""
    resids = residual_inputs(model, x)
    pairs = swap_pairs(x.shape[1] - 1)
    S = torch.arange(len(pairs))
    worst = {"rows": 0.0, "scores": 0.0}
    for l in layers:
        D_ref, Dp_ref = rerun_rows(model, l, resids[l], pairs)
        D, Di, Dj = rows_from_matrix(content_position_logits(model, l, resids[l]), pairs)
        ledger.rerun()  # rows
        rows = max((D_ref.double() - D).abs().max().item(),
                   (Dp_ref[..., S, pairs[:, 0]].double() - Di).abs().max().item(),
                   (Dp_ref[..., S, pairs[:, 1]].double() - Dj).abs().max().item())
        # the re-run row outside the swapped pair is the original row (a swap only moves two keys) -- sanity
        fast, ref = layer_scores(model, l, resids[l], method="fast"), layer_scores(model, l, resids[l], method="rerun")
        ledger.rerun()  # scores
        sc = max((fast.pos - ref.pos).abs().max().item(), (fast.sym - ref.sym).abs().max().item())
        ent = (fast.entropy - ref.entropy).abs().max().item()
        assert rows < ROW_TOL, f"layer {l}: attention rows differ by {rows}"
        assert sc < score_tol, f"layer {l}: scores differ by {sc}"
        assert ent < 1e-4
        worst["rows"], worst["scores"] = max(worst["rows"], rows), max(worst["scores"], sc)
    return worst


# -----------------------------------------------------------------------------
# fast == re-run

def test_fast_equals_rerun_on_random_paper_model_with_sharp_heads(ledger):
    torch.manual_seed(0)
    model = randomize_(GPTJ(ModelConfig.paper(136)), seed=1, std=0.1, qk_scale=3.0).eval()
    x = torch.randint(0, 136, (12, T), generator=torch.Generator().manual_seed(2))
    # the heads are far from uniform, so this is not the trivial (1, 1) corner
    sc = model_scores(model, x)
    assert min(s.pos.mean().item() for s in sc) < 0.9 or min(s.sym.mean().item() for s in sc) < 0.9
    w = compare_methods(model, x, layers=(0, 5, 11), ledger=ledger, score_tol=1e-3)
    print(f"\nrandom paper model: max row diff {w['rows']:.2e}, max score diff {w['scores']:.2e}")


def test_fast_equals_rerun_on_trained_smoke_model(smoke_run, ledger):
    from posym.analyze import metric_prompts
    from posym.train import list_checkpoints, load_checkpoint

    (_, first), *_, (step, last) = list_checkpoints(smoke_run)
    _, x, _, _ = metric_prompts("number", 0, 24)
    model, _ = load_checkpoint(last)
    w = compare_methods(model, x, layers=range(model.cfg.n_layer), ledger=ledger, score_tol=1e-3)
    print(f"\nsmoke model step {step}: max row diff {w['rows']:.2e}, max score diff {w['scores']:.2e}")
    # training made some head non-uniform (otherwise the comparison would be trivial)
    sc = model_scores(model, x)
    assert min(min(s.pos.mean().item(), s.sym.mean().item()) for s in sc) < 0.9


def test_rerun_rows_really_swap_hidden_states_with_positions_kept(ledger):
    """Re-run of swap (i, j) == the layer on an input whose rows i and j were exchanged (hooked model)."""
    model = randomize_(GPTJ(ModelConfig(vocab_size=30, n_layer=2, d_model=16, d_mlp=32)), qk_scale=3.0).eval()
    x = torch.randint(0, 30, (3, 9))
    resid = residual_inputs(model, x)[1]
    pairs = swap_pairs(8)
    D, Dp = rerun_rows(model, 1, resid, pairs)
    s = 11
    i, j = pairs[s].tolist()
    swapped = resid.clone()
    swapped[:, [i, j]] = resid[:, [j, i]]
    _, cache = model.run_with_cache(x, names=["blocks.1.attn.hook_pattern"])
    ledger.rerun()
    assert torch.allclose(D, cache["blocks.1.attn.hook_pattern"][:, :, -1], atol=1e-6)
    out = {}
    h = model.blocks[1].attn.hook_pattern.register_forward_hook(lambda m, a, o: out.__setitem__("p", o))
    try:
        model.blocks[1](swapped, torch.arange(9))
    finally:
        h.remove()
    ledger.rerun()
    assert torch.allclose(Dp[:, :, s], out["p"][:, :, -1], atol=1e-6)
    assert not torch.allclose(Dp[:, :, s], D, atol=1e-4)


# -----------------------------------------------------------------------------
# hand-built heads

def hand_built_head(*, pos=None, sym=None, rotary_dim=None, d=16, A=3, Q=5):
    """A 1-layer attention-only head on one-hot embeddings (vocab = d), LayerNorm(x) = xhat + 1.

    ``1 . xhat = 0`` for every token, so a W row equal to ``1/d`` reads the constant 1 (a content-free
    direction), and a row equal to ``xhat_A / |xhat_A|^2`` reads "is this token A".
    pos = (pair f, target position p, strength a): q and k in RoPE pair f, content-free, with the query
          pre-rotated so that the key at position p wins: logit_j = a/sqrt(d) * cos((j - p) g_f).
    sym = (pair f, strength s): k_f = [token is A], q_f = s [token is Q]: the query Q looks for content A.
    """
    model = attn_only_model(d_model=d, vocab_size=d, rotary_dim=rotary_dim)
    blk = model.blocks[0]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.wte.weight.copy_(torch.eye(d))
        blk.ln_1.weight.fill_(1.0)
        blk.ln_1.bias.fill_(1.0)
        xhat = blk.ln_1(torch.eye(d)) - 1.0  # (vocab, d)
        ones = torch.ones(d) / d
        Wq, Wk = blk.attn.q_proj.weight, blk.attn.k_proj.weight
        n = T - 1
        if pos is not None:
            f, p, a = pos
            g = blk.attn.angles[f].item()
            psi = (p - n) * g
            Wk[2 * f] = ones
            Wq[2 * f] = a * math.cos(psi) * ones
            Wq[2 * f + 1] = a * math.sin(psi) * ones
        if sym is not None:
            f, s = sym
            Wk[2 * f] = xhat[A] / xhat[A].square().sum()
            Wq[2 * f] = s * xhat[Q] / xhat[Q].square().sum()
        blk.attn.v_proj.weight.copy_(torch.eye(d))
        blk.attn.out_proj.weight.copy_(torch.eye(d))
    return model


def prompts_with(A=3, Q=5, d=16, n=16, seed=0):
    """n prompts of length 17 ending in Q, each with exactly one A at a different position."""
    g = torch.Generator().manual_seed(seed)
    others = torch.tensor([t for t in range(d) if t not in (A, Q)])
    x = others[torch.randint(0, len(others), (n, T), generator=g)]
    x[:, -1] = Q
    x[torch.arange(n), torch.arange(n) % (T - 1)] = A
    return x


def both_methods(model, x, per_frequency=False):
    r = residual_inputs(model, x)[0]
    fast = layer_scores(model, 0, r, method="fast", per_frequency=per_frequency)
    ref = layer_scores(model, 0, r, method="rerun")
    return fast, ref


def test_pure_positional_head():
    model = hand_built_head(pos=(0, 5, 2000.0))
    x = prompts_with()
    fast, ref = both_methods(model, x)
    D = attention_rows_of(model, x)
    assert (D[:, 5] > 1 - 1e-6).all()  # the head looks at position 5 whatever the content
    for s in (fast, ref):
        assert torch.allclose(s.pos, torch.ones_like(s.pos), atol=1e-6)
        assert s.sym.max().item() < 1e-6
        assert s.entropy.max().item() < 1e-4


def test_pure_symbolic_head_nope():
    model = hand_built_head(sym=(0, 200.0), rotary_dim=0)
    x = prompts_with()
    D = attention_rows_of(model, x)
    assert (D[torch.arange(16), torch.arange(16)] > 1 - 1e-6).all()  # the head follows token A wherever it is
    fast, ref = both_methods(model, x)
    for s in (fast, ref):
        assert torch.allclose(s.sym, torch.ones_like(s.sym), atol=1e-6)
        assert s.pos.max().item() < 1e-6


def test_uniform_head_scores_one_and_one():
    """W_Q = 0: every logit is 0, attention is uniform, and both scores are exactly 1 (exclusion-principle corner)."""
    model = hand_built_head()  # q = 0
    x = prompts_with()
    fast, ref = both_methods(model, x, per_frequency=False)
    for s, tol in ((fast, 1e-7), (ref, 1e-6)):
        assert torch.allclose(s.pos, torch.ones_like(s.pos), atol=tol)
        assert torch.allclose(s.sym, torch.ones_like(s.sym), atol=tol)
        assert torch.allclose(s.entropy, torch.full_like(s.entropy, math.log(T)), atol=1e-6)
    # the same for a random model whose queries were zeroed
    rnd = randomize_(GPTJ(ModelConfig.paper(136))).eval()
    with torch.no_grad():
        for b in rnd.blocks:
            b.attn.q_proj.weight.zero_()
    for s in model_scores(rnd, torch.randint(0, 136, (4, T))):
        assert torch.allclose(s.pos, torch.ones_like(s.pos), atol=1e-7)
        assert torch.allclose(s.sym, torch.ones_like(s.sym), atol=1e-7)


def test_per_frequency_scores_separate_a_positional_and_a_symbolic_frequency():
    """Frequency 0 (1 rad/token) carries a positional head, frequency 7 (0.003 rad/token) a symbolic one."""
    model = hand_built_head(pos=(0, 5, 2000.0), sym=(7, 200.0))
    x = prompts_with()
    r = residual_inputs(model, x)[0]
    s = layer_scores(model, 0, r, per_frequency=True)
    assert s.freq_pos.shape == (16, 1, 8)
    fp, fs = s.freq_pos.mean(0)[0], s.freq_sym.mean(0)[0]
    assert fp[0] > 1 - 1e-6 and fs[0] < 1e-6, (fp[0], fs[0])  # positional in frequency 0
    assert fs[7] > 1 - 1e-3 and fp[7] < 1e-3, (fp[7], fs[7])  # symbolic in frequency 7
    for f in range(1, 7):  # unused frequencies: zero logits, uniform, the (1, 1) corner
        assert abs(fp[f] - 1) < 1e-7 and abs(fs[f] - 1) < 1e-7
    # max logit per frequency: a/sqrt(d) = 500 (positional, frequency 0) and 50 (symbolic, frequency 7), 0 elsewhere
    ml = s.freq_maxlogit.mean(0)[0]
    assert abs(ml[0] - 500) < 1e-2 and abs(ml[7] - 50) < 0.1 and ml[1:7].abs().max() < 1e-6
    assert 0 < weighted_frequency(ml.numpy()) < 7
    # the per-frequency logits add up to the head's logits
    M, Mf = content_position_logits(model, 0, r, per_frequency=True)
    assert torch.allclose(Mf.sum(2), M, atol=1e-4)
    tbl = frequency_table([s], step=3)
    assert list(tbl.columns) == ["step", "layer", "head", "freq", "pos", "sym", "maxlogit", "maxlogit_sd"]
    assert len(tbl) == 8 and (tbl["step"] == 3).all()


def test_sharp_conjunctive_head_fast_equals_rerun(ledger):
    """Regression: content A *and* position 5 both needed.  A swap that removes the key holding ~all the mass
    must not lose the remaining mass to cancellation (Z - e_ii - e_jj), and pairs whose float32 attention
    underflows to exactly (0, 0) must not give NaN cosines."""
    model = hand_built_head(pos=(0, 5, 400.0), sym=(7, 200.0))
    x = prompts_with(n=4)
    x[:, :16] = 1
    x[:, 5] = 3  # A sits at the preferred position
    r = residual_inputs(model, x)[0]
    pairs = swap_pairs(16)
    D_ref, Dp_ref = rerun_rows(model, 0, r, pairs)
    assert (Dp_ref == 0).any()  # float32 underflow really happens here
    D, Di, Dj = rows_from_matrix(content_position_logits(model, 0, r), pairs)
    S = torch.arange(len(pairs))
    ledger.rerun()  # rows
    assert (Dp_ref[..., S, pairs[:, 0]].double() - Di).abs().max().item() < ROW_TOL
    assert (Dp_ref[..., S, pairs[:, 1]].double() - Dj).abs().max().item() < ROW_TOL
    fast, ref = both_methods(model, x)
    for s in (fast, ref):
        assert torch.isfinite(s.pos).all() and torch.isfinite(s.sym).all()
    ledger.rerun()  # scores
    assert (fast.pos - ref.pos).abs().max().item() < 1e-5 and (fast.sym - ref.sym).abs().max().item() < 1e-5
    # moving A off position 5 moves the mass to the second-best position (11), not to A: neither pure kind
    assert 0.05 < fast.pos.mean().item() < 0.95 and 0.05 < fast.sym.mean().item() < 0.95


def test_swap_scores_with_zero_attention_pairs():
    D = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # all mass on key 0
    pairs = swap_pairs(3)  # (0,1), (0,2), (1,2)
    same_i, same_j = D[:, pairs[:, 0]], D[:, pairs[:, 1]]
    pos, sym = swap_scores(D, same_i, same_j, pairs)  # positional: nothing moves
    assert pos.item() == pytest.approx(1.0) and sym.item() == pytest.approx(0.0, abs=1e-12)
    # attention entirely on the query itself: no swap moves anything; both scores 1 (no NaN)
    Dq = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    pos, sym = swap_scores(Dq, Dq[:, pairs[:, 0]], Dq[:, pairs[:, 1]], pairs)
    assert pos.item() == 1.0 and sym.item() == 1.0
    # a zero pair that becomes non-zero after the swap counts 0 (has no direction to compare)
    pos, sym = swap_scores(Dq, torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64),
                           torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64), pairs)
    assert pos.item() == pytest.approx(2 / 3) and sym.item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_per_frequency_positional_head_in_frequency_k(k):
    model = hand_built_head(pos=(k, 9, 2000.0))
    r = residual_inputs(model, prompts_with())[0]
    s = layer_scores(model, 0, r, per_frequency=True)
    fp, fs = s.freq_pos.mean(0)[0], s.freq_sym.mean(0)[0]
    assert fp[k] > 1 - 1e-6 and fs[k] < 1e-3
    others = [f for f in range(8) if f != k]
    assert torch.allclose(fp[others], torch.ones(7), atol=1e-7) and torch.allclose(fs[others], torch.ones(7), atol=1e-7)
    assert s.pos.mean() > 1 - 1e-6 and s.sym.mean() < 1e-3  # the whole head too


def attention_rows_of(model, x):
    _, cache = model.run_with_cache(x, names=["blocks.0.attn.hook_pattern"])
    return cache["blocks.0.attn.hook_pattern"][:, 0, -1]


# -----------------------------------------------------------------------------
# properties (hypothesis)

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), qk_scale=st.floats(0.01, 25.0), n_keys=st.integers(2, 16),
       rotary=st.sampled_from([0, 4, 8, None]), n_head=st.sampled_from([1, 2]))
def test_random_heads_fast_equals_rerun_in_float64(seed, qk_scale, n_keys, rotary, n_head, ledger):
    """The fast method is exact: in float64 it equals the re-run reference to rounding, even for very sharp
    heads (logits in the hundreds), where float32 rounding times 1/tau would blur any comparison."""
    model = randomize_(attn_only_model(d_model=16, vocab_size=12, n_head=n_head, rotary_dim=rotary), seed=seed,
                       std=0.3, qk_scale=qk_scale).double()
    x = torch.randint(0, 12, (3, n_keys + 1), generator=torch.Generator().manual_seed(seed))
    r = residual_inputs(model, x)[0]
    assert r.dtype == torch.float64
    pairs = swap_pairs(n_keys)
    D_ref, Dp_ref = rerun_rows(model, 0, r, pairs)
    assert D_ref.dtype == torch.float64
    D, Di, Dj = rows_from_matrix(content_position_logits(model, 0, r), pairs)
    S = torch.arange(len(pairs))
    ledger.rerun()  # rows
    assert (D_ref - D).abs().max().item() < 1e-10
    assert (Dp_ref[..., S, pairs[:, 0]] - Di).abs().max().item() < 1e-10
    assert (Dp_ref[..., S, pairs[:, 1]] - Dj).abs().max().item() < 1e-10
    # where a pair of the reference's rows underflows to (0, 0) its cosine is a convention, while the fast
    # method computes the exact limit; compare scores where the reference is well defined
    i, j = pairs[:, 0], pairs[:, 1]
    zero_pair = ((D_ref[..., i] == 0) & (D_ref[..., j] == 0)).any() \
        | ((Dp_ref[..., S, i] == 0) & (Dp_ref[..., S, j] == 0)).any()
    assume(not zero_pair)
    fast = layer_scores(model, 0, r, method="fast", per_frequency=True)
    ref = layer_scores(model, 0, r, method="rerun")
    for s in (fast, ref):
        for v in (s.pos, s.sym, fast.freq_pos, fast.freq_sym):
            assert torch.isfinite(v).all()
            assert v.numel() == 0 or (v.min().item() >= 0.0 and v.max().item() <= 1 + 1e-6)
    ledger.rerun()  # scores
    assert (fast.pos - ref.pos).abs().max().item() < 1e-5
    assert (fast.sym - ref.sym).abs().max().item() < 1e-5
    # the head-level scores do not depend on whether per-frequency scores were asked for
    plain = layer_scores(model, 0, r, method="fast")
    ledger.rerun()
    assert torch.equal(plain.pos, fast.pos) and torch.equal(plain.sym, fast.sym)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), qk_scale=st.floats(0.01, 3.0), n_keys=st.integers(2, 16),
       rotary=st.sampled_from([0, 8, None]))
def test_random_heads_float32_rows_agree_and_scores_in_unit_interval(seed, qk_scale, n_keys, rotary, ledger):
    """float32, as the model runs: attention rows agree to 1e-5 (logits up to ~50), scores lie in [0, 1]."""
    model = randomize_(attn_only_model(d_model=16, vocab_size=12, rotary_dim=rotary), seed=seed, std=0.3,
                       qk_scale=qk_scale)
    x = torch.randint(0, 12, (3, n_keys + 1), generator=torch.Generator().manual_seed(seed))
    r = residual_inputs(model, x)[0]
    pairs = swap_pairs(n_keys)
    M = content_position_logits(model, 0, r)
    assume(M.abs().max().item() < 60)  # the regime the 1e-5 claim is about (float32 logit rounding grows with |M|)
    D_ref, Dp_ref = rerun_rows(model, 0, r, pairs)
    D, Di, Dj = rows_from_matrix(M, pairs)
    S = torch.arange(len(pairs))
    ledger.rerun()  # rows
    assert (D_ref.double() - D).abs().max().item() < ROW_TOL
    assert (Dp_ref[..., S, pairs[:, 0]].double() - Di).abs().max().item() < ROW_TOL
    assert (Dp_ref[..., S, pairs[:, 1]].double() - Dj).abs().max().item() < ROW_TOL
    for method in ("fast", "rerun"):
        s = layer_scores(model, 0, r, method=method)
        for v in (s.pos, s.sym):
            assert torch.isfinite(v).all() and v.min().item() >= 0.0 and v.max().item() <= 1 + 1e-6


def random_rows(seed, n_keys, sharp):
    g = torch.Generator().manual_seed(seed)
    T_ = n_keys + 1
    D = torch.softmax(torch.randn(5, T_, generator=g, dtype=torch.float64) * sharp, -1)
    pairs = swap_pairs(n_keys)
    Dp_i = torch.rand(5, len(pairs), generator=g, dtype=torch.float64)
    Dp_j = torch.rand(5, len(pairs), generator=g, dtype=torch.float64)
    return D, Dp_i, Dp_j, pairs


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10 ** 6), n_keys=st.integers(2, 16), sharp=st.floats(0.0, 20.0),
       tau=st.sampled_from([TAU, 1e-2, 1.0]))
def test_swap_scores_properties(seed, n_keys, sharp, tau):
    D, Dp_i, Dp_j, pairs = random_rows(seed, n_keys, sharp)
    pos, sym = swap_scores(D, Dp_i, Dp_j, pairs, tau)
    assert pos.dtype == torch.float64
    assert ((pos >= 0) & (pos <= 1 + 1e-9) & (sym >= 0) & (sym <= 1 + 1e-9)).all()
    # the order in which the swaps are listed does not matter
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    p2, s2 = swap_scores(D, Dp_i[:, perm], Dp_j[:, perm], pairs[perm], tau)
    assert torch.allclose(pos, p2, atol=1e-12) and torch.allclose(sym, s2, atol=1e-12)
    # nor does the order within a pair: (i, j) with (D'_i, D'_j) == (j, i) with (D'_j, D'_i)
    p3, s3 = swap_scores(D, Dp_j, Dp_i, pairs.flip(-1), tau)
    assert torch.allclose(pos, p3, atol=1e-12) and torch.allclose(sym, s3, atol=1e-12)
    # exchanging the swapped values exchanges the two scores (positional <-> symbolic)
    p4, s4 = swap_scores(D, Dp_j, Dp_i, pairs, tau)
    assert torch.allclose(pos, s4, atol=1e-12) and torch.allclose(sym, p4, atol=1e-12)
    # unchanged rows are perfectly positional; exactly flipped rows perfectly symbolic
    Di, Dj = D[:, pairs[:, 0]], D[:, pairs[:, 1]]
    pp, _ = swap_scores(D, Di, Dj, pairs, tau)
    _, ss = swap_scores(D, Dj, Di, pairs, tau)
    assert torch.allclose(pp, torch.ones_like(pp), atol=1e-12) and torch.allclose(ss, torch.ones_like(ss), atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10 ** 6), rotary=st.sampled_from([0, 8, 16]))
def test_logits_scaled_to_zero_give_both_scores_one(seed, rotary):
    model = randomize_(attn_only_model(d_model=16, vocab_size=12, rotary_dim=rotary), seed=seed, std=0.5)
    x = torch.randint(0, 12, (4, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight.mul_(1e-6)
    for method in ("fast", "rerun"):
        s = layer_scores(model, 0, residual_inputs(model, x)[0], method=method)
        assert torch.allclose(s.pos, torch.ones_like(s.pos), atol=1e-5), method
        assert torch.allclose(s.sym, torch.ones_like(s.sym), atol=1e-5), method


def test_entropy_and_score_tables(ledger):
    assert attention_entropy(torch.full((3, 17), 1 / 17, dtype=torch.float64)).sub(math.log(17)).abs().max() < 1e-12
    assert attention_entropy(torch.eye(17)[:3]).abs().max() < 1e-12
    model = randomize_(GPTJ(ModelConfig(vocab_size=20, n_layer=3, d_model=16, d_mlp=32)), qk_scale=3).eval()
    sc = model_scores(model, torch.randint(0, 20, (10, T)), batch_size=4)  # several batches are concatenated
    assert all(s.pos.shape == (10, 1) for s in sc)
    tbl = scores_table(sc, T, step=7)
    assert list(tbl.columns) == ["step", "layer", "head", "pos", "sym", "pos_sd", "sym_sd", "entropy", "entropy_norm"]
    assert len(tbl) == 3 and tbl["layer"].tolist() == [0, 1, 2]
    assert np.allclose(tbl["entropy_norm"], tbl["entropy"] / math.log(T))
    assert np.allclose(tbl["pos"], [s.pos.mean().item() for s in sc])
    assert ((tbl["pos_sd"] > 0) & (tbl["entropy_norm"] <= 1 + 1e-9)).all()
    with ledger.raises(ValueError, match="per_frequency"):
        frequency_table(sc)
    with ledger.raises(ValueError, match="method"):
        layer_scores(model, 0, residual_inputs(model, torch.zeros(1, T, dtype=torch.long))[0], method="slow")


# -----------------------------------------------------------------------------
# purity and weighted frequency

def synthetic_trajectory():
    steps = [0, 10, 20, 30]
    traj = {  # layer -> [(pos, sym) at each step]
        0: [(0.5, 0.5), (0.97, 0.02), (0.99, 0.01), (0.99, 0.01)],  # positional from step 10
        1: [(0.5, 0.5), (0.6, 0.7), (0.03, 0.98), (0.2, 0.8)],  # symbolic at 20, mixed again at 30
        2: [(1.0, 1.0)] * 4,  # uniform: never pure
        3: [(0.7, 0.3), (0.8, 0.2), (0.85, 0.12), (0.92, 0.08)],  # pure at 30 only with gamma 0.1
    }
    rows = [{"step": s, "layer": l, "head": 0, "pos": p, "sym": y}
            for l, vals in traj.items() for s, (p, y) in zip(steps, vals)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # unsorted on purpose


def test_classify():
    assert classify(0.99, 0.01, 0.05) == "positional"
    assert classify(0.01, 0.99, 0.05) == "symbolic"
    assert classify(1.0, 1.0, 0.05) == "mixed"  # uniform head
    assert classify(0.95, 0.05, 0.05) == "positional"  # the boundary counts as pure
    assert classify(0.9499, 0.02, 0.05) == "mixed"
    assert classify(0.92, 0.08, 0.1) == "positional" and classify(0.92, 0.08, 0.05) == "mixed"


def test_purity_events_and_cumulative_counts():
    traj = synthetic_trajectory()
    ev = purity_events(traj, 0.05)
    assert ev[["layer", "kind", "step"]].values.tolist() == [[0, "positional", 10], [1, "symbolic", 20]]
    counts = purity_counts(traj, 0.05)
    assert counts[["step", "positional", "symbolic"]].values.tolist() == [[0, 0, 0], [10, 1, 0], [20, 1, 1], [30, 1, 1]]
    c10 = purity_counts(traj, 0.1)
    assert c10[["positional", "symbolic"]].values.tolist()[-1] == [2, 1]
    # grouped by run: a second run with the layers relabelled
    t2 = traj.copy()
    t2["layer"] = 3 - t2["layer"]
    both = pd.concat([traj.assign(run="a"), t2.assign(run="b")])
    ev2 = purity_events(both, 0.05, group=("run",))
    assert ev2[["run", "layer", "step"]].values.tolist() == [["a", 0, 10], ["a", 1, 20], ["b", 3, 10], ["b", 2, 20]]
    c2 = purity_counts(both, 0.05, group=("run",))
    assert len(c2) == 8 and c2.groupby("run")["symbolic"].max().tolist() == [1, 1]


def test_weighted_frequency():
    assert weighted_frequency(np.array([0.0, 1.0, 0.0, 3.0])) == pytest.approx(2.5)
    assert weighted_frequency(np.array([-5.0, 2.0])) == pytest.approx(1.0)  # negative max logits count 0
    assert weighted_frequency(np.array([4.0, 0.0, 0.0])) == 0.0
    assert math.isnan(weighted_frequency(np.array([-1.0, -2.0])))


def _c_kernel_or_skip():
    from posym import ckernel

    if ckernel.kernel() is None:
        pytest.skip("no C compiler here: the per-frequency C kernel cannot be built (the torch path is tested)")


def _freq_inputs(scale: float, rows: int = 40, F: int = 8):
    from posym.rope import rope_angles

    g = torch.Generator().manual_seed(int(scale * 100))
    T = 17
    rel = (T - 1 - torch.arange(T, dtype=torch.float64))[:, None] * rope_angles(2 * F, 10000.0).double()[None]
    cr, ci = (torch.randn(rows, 2, T, F, dtype=torch.float64, generator=g) * scale for _ in range(2))
    return cr, ci, rel.cos(), rel.sin(), swap_pairs(T - 1)


@pytest.mark.parametrize("engine", ["torch", "c"])
@pytest.mark.parametrize("scale", [0.01, 0.3, 3.0, 30.0, 300.0])
def test_vectorised_per_frequency_scores_equal_the_float64_reference(scale, engine, ledger):
    """Both per-frequency kernels (torch operations, and the same arithmetic fused in C) against the float64 one,
    from nearly uniform heads (logits ~0.04) to logits of ~1,000 per frequency: scores equal to 2e-6, the max
    logit exactly."""
    from posym.metrics import frequency_scores, frequency_scores_reference

    if engine == "c":
        _c_kernel_or_skip()
    cr, ci, cos, sin, pairs = _freq_inputs(scale)
    fast = frequency_scores(cr, ci, cos, sin, pairs, engine=engine)
    ref = frequency_scores_reference(cr, ci, cos, sin, pairs)
    ledger.rerun()
    for a, b in zip(fast, ref):
        assert a.shape == b.shape == (40, 2, 8) and a.dtype == torch.float32
    assert (fast[0] - ref[0]).abs().max() < 2e-6 and (fast[1] - ref[1]).abs().max() < 2e-6
    assert torch.equal(fast[2], ref[2])
    # other swap sets than swap_pairs(n) go through the reference
    sub = pairs[::3]
    for a, b in zip(frequency_scores(cr, ci, cos, sin, sub, engine=engine),
                    frequency_scores_reference(cr, ci, cos, sin, sub)):
        assert torch.equal(a, b)


def test_c_kernel_reads_every_layout_and_any_thread_count_gives_the_same_bits():
    """The real and imaginary parts of one complex tensor are read in place, separate or strided tensors through
    a copy: the same bits every way, and with 1 or 3 threads (each row is computed alone)."""
    from posym.metrics import frequency_scores

    _c_kernel_or_skip()
    cr, ci, cos, sin, pairs = _freq_inputs(3.0, rows=7)
    c = torch.complex(cr, ci)
    first = frequency_scores(cr, ci, cos, sin, pairs, engine="c")
    strided = (cr.transpose(0, 1).contiguous().transpose(0, 1), ci.transpose(0, 1).contiguous().transpose(0, 1))
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            for a, b in ((c.real, c.imag), strided):
                for x, y in zip(frequency_scores(a, b, cos, sin, pairs, engine="c"), first):
                    assert torch.equal(x, y)
    finally:
        torch.set_num_threads(threads)
    # loading the kernel left the process's floating point alone (no flush-to-zero of subnormal numbers)
    assert torch.tensor(1e-45, dtype=torch.float32).item() > 0 and torch.tensor(3e-39) * 0.5 > 0


def test_c_kernel_falls_back_to_torch_without_a_compiler(monkeypatch, tmp_path):
    """No compiler (or POSYM_C_KERNEL=0): no kernel, the torch path runs, and asking for C says why it cannot."""
    from posym import ckernel
    from posym.metrics import frequency_scores

    cr, ci, cos, sin, pairs = _freq_inputs(0.3, rows=3)
    monkeypatch.setattr(ckernel, "_loaded", {})
    monkeypatch.setenv("POSYM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    assert ckernel.kernel() is None and not list(tmp_path.iterdir())  # nothing half-written left behind
    out = frequency_scores(cr, ci, cos, sin, pairs)
    for a, b in zip(out, frequency_scores(cr, ci, cos, sin, pairs, engine="torch")):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="C kernel is not available"):
        frequency_scores(cr, ci, cos, sin, pairs, engine="c")
    monkeypatch.setattr(ckernel, "_loaded", {})
    monkeypatch.delenv("CC")
    monkeypatch.setenv("POSYM_C_KERNEL", "0")
    assert ckernel.kernel() is None
    with pytest.raises(ValueError, match="unknown engine 'gpu'"):
        frequency_scores(cr, ci, cos, sin, pairs, engine="gpu")


def test_rope_factors_leave_float64_queries_and_keys_alone():
    """A float64 model's queries and keys are not copied by ``.double()``: the factors must not write into them."""
    from posym.metrics import _factors

    torch.manual_seed(0)
    model = GPTJ(ModelConfig(vocab_size=11, n_layer=1, n_head=2, d_model=16, d_mlp=32)).double()
    q, k = torch.randn(3, 2, 8, dtype=torch.float64), torch.randn(3, 2, 5, 8, dtype=torch.float64)
    q0, k0 = q.clone(), k.clone()
    cr, ci, rest, cos, sin = _factors(q, k, model.blocks[0].attn)
    assert torch.equal(q, q0) and torch.equal(k, k0)
    qr, qi, kr, ki = q[..., None, 0::2], q[..., None, 1::2], k[..., 0::2], k[..., 1::2]  # q conj(k) / sqrt(8)
    assert torch.allclose(cr, (qr * kr + qi * ki) / 8 ** 0.5) and torch.allclose(ci, (qi * kr - qr * ki) / 8 ** 0.5)
