"""Positional and symbolic scores of attention heads (Urrutia et al. 2025; Paper 2, App. D).

Setting.  The query is the last token ``n``.  For every pair of earlier positions ``i < j < n`` we swap
the *hidden states* entering the layer at ``i`` and ``j`` while keeping the positions (RoPE) fixed,
re-run only that layer, and read the query's attention ``D'``.  With ``D`` the original attention:

* a **positional** head keeps ``(D'_i, D'_j) = (D_i, D_j)``: attention follows the position;
* a **symbolic** head gives ``(D'_i, D'_j) = (D_j, D_i)``: attention follows the content.

Scores per prompt (cosines are of 2-vectors)::

    alpha_ij = softmax_over_swaps(|D_i - D_j| / tau)           (tau = 1e-4: the swaps that move most mass)
    s_pos    = sum_ij alpha_ij cos((D'_i, D'_j), (D_i, D_j))
    s_sym    = sum_ij alpha_ij cos((D'_i, D'_j), (D_j, D_i))

A uniform head scores 1 on both (the exclusion principle says nothing else can); a sharp positional
head scores (1, ~0) and a sharp symbolic head (~0, 1).

Two implementations:

* :func:`rerun_rows` -- the reference, as the authors do it: one forward pass of the layer per swap.
* the fast method (:func:`layer_scores`, :func:`model_scores`) -- exact and much cheaper.  The query row
  depends only on the query vector and on the keys, and a key depends only on (content, position).  So
  we compute once, per prompt and layer, the matrix ``M[a, b]`` = logit of the query for *content b
  placed at position a* (:func:`content_position_logits`).  The original logits are its diagonal; swap
  (i, j) replaces ``M[i, i], M[j, j]`` by ``M[i, j], M[j, i]``.  Cosines are scale-invariant, so a
  swap's cosines need only ``M_ii - M_jj`` and ``M_ij - M_ji`` (:func:`scores_from_logits`), not the
  swapped row's normaliser; :func:`rows_from_matrix` gives the swapped rows themselves when wanted.

Per-frequency scores: RoPE splits a head into ``d/2`` two-dimensional heads, one per frequency; the
logit is the sum of their logits.  Frequency ``f`` alone gives ``M_f[a, b]`` and the same swap scores.
We keep the 1/sqrt(d_head) scale, so ``M = sum_f M_f`` (+ the non-rotary part).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import ckernel
from .model import GPTJ
from .rope import rope_cos_sin

TAU = 1e-4


def swap_pairs(n_keys: int) -> torch.Tensor:
    """All pairs (i, j), i < j, among the first ``n_keys`` positions: (S, 2) with S = n_keys choose 2."""
    return torch.combinations(torch.arange(n_keys), r=2)


def swap_scores(D: torch.Tensor, Dp_i: torch.Tensor, Dp_j: torch.Tensor, pairs: torch.Tensor, tau: float = TAU):
    """Scores from original attention ``D`` (..., T) and swapped attention at the swapped positions
    ``Dp_i, Dp_j`` (..., S).  Returns ``(s_pos, s_sym)`` of shape (...).  Computed in float64.

    ``s = sum_s alpha_s cos_s`` with ``alpha = softmax(|D_i - D_j| / tau)``, evaluated as
    ``sum_s w_s cos_s / sum_s w_s`` with one square root per swap for both norms.  Rows where a norm is
    (nearly) zero -- attention values below ~1e-150, or exactly 0 after float32 underflow -- go through
    :func:`swap_scores_reference`, which handles zero vectors explicitly.
    """
    D, Dp_i, Dp_j = D.double(), Dp_i.double(), Dp_j.double()
    Di, Dj = D[..., pairs[:, 0]], D[..., pairs[:, 1]]
    a = (Di - Dj).abs_()
    w = a.sub_(a.amax(-1, keepdim=True)).div_(tau).exp_()  # alpha up to the normaliser
    den = torch.addcmul(Dp_i * Dp_i, Dp_j, Dp_j).mul_(torch.addcmul(Di * Di, Dj, Dj)).sqrt_()
    wd = w / den
    pos = torch.addcmul(Dp_i * Di, Dp_j, Dj).mul_(wd).sum(-1)
    sym = torch.addcmul(Dp_i * Dj, Dp_j, Di).mul_(wd).sum(-1)
    W = w.sum(-1)
    pos, sym = pos.div_(W), sym.div_(W)
    bad = (den < 1e-290).any(-1)
    if bad.any():
        rp, rs = swap_scores_reference(D[bad], Dp_i[bad], Dp_j[bad], pairs, tau)
        pos[bad], sym[bad] = rp, rs
    return pos, sym


def swap_scores_reference(D: torch.Tensor, Dp_i: torch.Tensor, Dp_j: torch.Tensor, pairs: torch.Tensor,
                          tau: float = TAU):
    """:func:`swap_scores` written as the definition reads (unit vectors via ``hypot``).  A zero vector has no
    direction: a swap whose original and swapped pairs are both (0, 0) moved nothing and counts 1 for both
    scores; a zero and a non-zero pair count 0.  (Such swaps get alpha ~ 0 unless all swaps do.)"""
    D, Dp_i, Dp_j = D.double(), Dp_i.double(), Dp_j.double()
    Di, Dj = D[..., pairs[:, 0]], D[..., pairs[:, 1]]
    alpha = torch.softmax((Di - Dj).abs() / tau, dim=-1)
    norm_p, norm_o = torch.hypot(Dp_i, Dp_j), torch.hypot(Di, Dj)
    ui, uj, oi, oj = Dp_i / norm_p, Dp_j / norm_p, Di / norm_o, Dj / norm_o
    zero_p, zero_o = norm_p == 0, norm_o == 0
    degenerate, fill = zero_p | zero_o, (zero_p & zero_o).to(D.dtype)
    cos_pos = torch.where(degenerate, fill, ui * oi + uj * oj)
    cos_sym = torch.where(degenerate, fill, ui * oj + uj * oi)
    return (alpha * cos_pos).sum(-1), (alpha * cos_sym).sum(-1)


def attention_entropy(D: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of attention rows (..., T)."""
    D = D.double().clamp_min(1e-300)
    return -(D * D.log()).sum(-1)


# ---------------------------------------------------------------------------------------------
# Reference: re-run the layer on every swapped input
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def residual_inputs(model: GPTJ, x: torch.Tensor, qk_out: list | None = None) -> list[torch.Tensor]:
    """Hidden states entering every block: list of (N, T, D).  (The last block itself is not run.)

    ``qk_out``, if given, receives what :func:`_last_query_and_keys` would compute for every block the pass runs
    (all but the last): the blocks' own pre-RoPE queries and keys, so the metric need not project them again.
    Nothing is added when hooks are attached (the model's own forward runs then)."""
    out: list[torch.Tensor] = []
    if model._hooked():  # respect hooks (ablations, patching): the model's own forward
        model(x, last_only=True, resid_out=out)
        return out
    model.check_input(x)
    h = model.drop(model.wte(x))
    cos, sin = rope_cos_sin(torch.arange(x.shape[1], device=x.device), model.blocks[0].attn.angles, dtype=h.dtype)
    for l, blk in enumerate(model.blocks):
        out.append(h)
        if l + 1 < len(model.blocks):
            h = blk.forward_fast(h, cos, sin, qk_out=qk_out)
    return out


@torch.no_grad()
def rerun_rows(model: GPTJ, layer: int, resid: torch.Tensor, pairs: torch.Tensor, chunk: int = 4096):
    """Query attention rows of ``layer`` for the original input and every swap, by re-running the block.

    resid: (N, T, D) hidden states entering the layer.  Returns ``(D, Dp)`` with D (N, H, T) and
    Dp (N, H, S, T).
    """
    block = model.blocks[layer]
    N, T, Dm = resid.shape
    S = len(pairs)
    # (N, 1 + S, T, D): original then every swap of rows i <-> j (positions unchanged)
    batch = resid[:, None].repeat(1, S + 1, 1, 1)
    s_idx = torch.arange(1, S + 1)
    batch[:, s_idx, pairs[:, 0]] = resid[:, pairs[:, 1]]
    batch[:, s_idx, pairs[:, 1]] = resid[:, pairs[:, 0]]
    batch = batch.view(N * (S + 1), T, Dm)
    positions = torch.arange(T, device=resid.device)
    rows = []
    captured = {}
    handle = block.attn.hook_pattern.register_forward_hook(lambda m, i, o: captured.__setitem__("p", o))
    try:
        was_training = model.training
        model.eval()
        for s in range(0, len(batch), chunk):
            block(batch[s:s + chunk], positions)
            p = captured["p"][:, :, -1]
            rows.append(p.to(torch.promote_types(p.dtype, torch.float32)))  # (b, H, T); float64 kept
        model.train(was_training)
    finally:
        handle.remove()
    rows = torch.cat(rows).view(N, S + 1, -1, T).transpose(1, 2)  # (N, H, S+1, T)
    return rows[:, :, 0], rows[:, :, 1:]


# ---------------------------------------------------------------------------------------------
# Fast exact version: one "content b at position a" logit matrix per prompt and layer
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def rope_terms(model: GPTJ, layer: int, resid: torch.Tensor):
    """The factors of the last query's logits in ``layer``, in float64.

    Each RoPE pair is a complex number and rotating by ``p * g_f`` multiplies it by ``exp(i p g_f)``, so the
    logit of frequency f for the content at position b placed at position a is
    ``M_f[a, b] = Re(c_f[b] exp(i (n - a) g_f)) = cr[b, f] cos[a, f] - ci[b, f] sin[a, f]`` with
    ``c_f[b] = q_f conj(k_f[b]) / sqrt(d_head)``: a content term times a position term.

    Returns ``cr, ci`` (N, H, T, F), ``rest`` (N, H, T) (the non-rotary dims: position-free) and
    ``cos, sin`` (T, F) of ``(n - a) g_f``.  q and k are computed in the model's dtype, the rest in float64.
    """
    q, k = _last_query_and_keys(model, layer, resid)
    return _factors(q, k, model.blocks[layer].attn)


def _last_query_and_keys(model: GPTJ, layer: int, resid: torch.Tensor):
    """Pre-RoPE query of the last position (N, H, Dh) and keys (N, H, T, Dh) of ``layer`` (model dtype)."""
    block = model.blocks[layer]
    attn = block.attn
    h = block.ln_1(resid)
    q = attn.split_heads(attn.q_proj(h[:, -1:]))[:, :, 0]  # only the query row is needed
    k = attn.split_heads(attn.k_proj(h))
    if attn.dim_mask is not None:
        q, k = q * attn.dim_mask, k * attn.dim_mask
    return q, k


def _factors(q: torch.Tensor, k: torch.Tensor, attn):
    """:func:`rope_terms` from q (..., H, Dh) and k (..., H, T, Dh); any leading dims (e.g. layers)."""
    c, rest, cos, sin = _complex_factors(q, k, attn)
    return c.real, c.imag, rest, cos, sin


def _complex_factors(q: torch.Tensor, k: torch.Tensor, attn):
    """``c = q conj(k) / sqrt(d_head)`` per RoPE pair as one complex128 tensor (..., H, T, F) (its real and
    imaginary parts are ``cr, ci`` of :func:`rope_terms`), with ``rest``, ``cos`` and ``sin``."""
    R, T = attn.cfg.rotary_dim, k.shape[-2]
    q = q.double() * (1.0 / math.sqrt(attn.d_head))
    k = k.double()
    rest = (k[..., R:] * q[..., None, R:]).sum(-1)  # (..., H, T)
    if R < q.shape[-1]:  # whole, even strides for view_as_complex
        q, k = q[..., :R].contiguous(), k[..., :R].contiguous()
    qc = torch.view_as_complex(q.unflatten(-1, (R // 2, 2)))  # (..., H, F): the RoPE pairs
    kc = torch.view_as_complex(k.unflatten(-1, (R // 2, 2)))  # (..., H, T, F)
    c = kc.conj() * qc[..., None, :]  # a new tensor: k may be the caller's own (a float64 model's keys)
    rel = (T - 1 - torch.arange(T, device=k.device, dtype=torch.float64))[:, None] * attn.angles[None, :]
    return c, rest, rel.cos(), rel.sin()


@torch.no_grad()
def content_position_logits(model: GPTJ, layer: int, resid: torch.Tensor, per_frequency: bool = False):
    """``M[..., a, b]``: the last query's logit for the key built from the content at position b,
    rotated to position a.  resid (N, T, D) -> M (N, H, T, T) [and M_f (N, H, F, T, T)], float64.

    ``M = sum_f M_f + rest``; see :func:`rope_terms`.  The scores need only the diagonal and the swapped
    entries, which :func:`layer_scores` takes without building ``M_f``.
    """
    cr, ci, rest, cos, sin = rope_terms(model, layer, resid)
    # M[a, b] = sum_f cr[b, f] cos[a, f] - ci[b, f] sin[a, f]
    M = cos @ cr.transpose(-1, -2) - sin @ ci.transpose(-1, -2) + rest[:, :, None, :]
    if not per_frequency:
        return M
    Mf = (cr.transpose(-1, -2)[:, :, :, None, :] * cos.t()[None, None, :, :, None]
          - ci.transpose(-1, -2)[:, :, :, None, :] * sin.t()[None, None, :, :, None])  # (N, H, F, Ta, Tb)
    return M, Mf


def _outside(T: int, pairs: torch.Tensor, dtype, device) -> torch.Tensor:
    """(T, S) matrix with 0 at rows i and j of swap s, 1 elsewhere."""
    S = len(pairs)
    out = torch.ones(T, S, dtype=dtype, device=device)
    s = torch.arange(S, device=device)
    out[pairs[:, 0], s] = 0.0
    out[pairs[:, 1], s] = 0.0
    return out


def swap_rows(diag: torch.Tensor, m_ij: torch.Tensor, m_ji: torch.Tensor, pairs: torch.Tensor,
              outside: torch.Tensor | None = None):
    """Attention rows from logits: original ``D`` (..., T) and, for every swap s = (i, j), the swapped
    row's values at i and j (..., S).  float64.

    ``diag`` (..., T): the original logits (``M[a, a]``); ``m_ij`` (..., S): logit at position i of the content
    from j (``M[i, j]``); ``m_ji``: ``M[j, i]``.  The swapped row is the diagonal with entries i, j replaced by
    ``m_ij, m_ji``.  Its normaliser is summed directly, ``sum_{a not in {i,j}} e_aa + e_ij + e_ji`` (one small
    matmul), never as ``Z - e_ii - e_jj``, which cancels catastrophically when the swap removes the key that
    held nearly all the mass.  One max-shift per row; rows whose logits span more than ~650 nats (where a
    normaliser could underflow) are redone by :func:`swap_rows_reference` with a shift per swap.
    """
    diag, m_ij, m_ji = diag.double(), m_ij.double(), m_ji.double()
    if outside is None:
        outside = _outside(diag.shape[-1], pairs, diag.dtype, diag.device)
    m = torch.maximum(diag.amax(-1, keepdim=True), torch.maximum(m_ij.amax(-1, keepdim=True),
                                                                 m_ji.amax(-1, keepdim=True)))
    Ed = torch.exp(diag - m)
    e_ij, e_ji = torch.exp(m_ij - m), torch.exp(m_ji - m)
    Zp = (Ed @ outside).add_(e_ij).add_(e_ji)
    Z = Ed.sum(-1, keepdim=True)
    D, Dp_i, Dp_j = Ed.div_(Z), e_ij.div_(Zp), e_ji.div_(Zp)
    bad = (Zp.amin(-1) < 1e-280) | (Z[..., 0] < 1e-280)
    if bad.any():
        D[bad], Dp_i[bad], Dp_j[bad] = swap_rows_reference(diag[bad], m_ij[bad], m_ji[bad], pairs, outside)
    return D, Dp_i, Dp_j


def swap_rows_reference(diag: torch.Tensor, m_ij: torch.Tensor, m_ji: torch.Tensor, pairs: torch.Tensor,
                        outside: torch.Tensor | None = None):
    """:func:`swap_rows` with a max-shift per swap: nothing overflows or underflows to 0/0 whatever the
    logit range (the swapped row's max is the larger of m_ij, m_ji and the diagonal's max outside {i, j})."""
    diag, m_ij, m_ji = diag.double(), m_ij.double(), m_ji.double()
    T = diag.shape[-1]
    if outside is None:
        outside = _outside(T, pairs, diag.dtype, diag.device)
    i, j = pairs[:, 0], pairs[:, 1]
    K = min(3, T)
    top, arg = diag.topk(K, dim=-1)  # (..., K)
    # r_s = max of the diagonal outside {i, j}: the first of the top 3 whose index is neither i nor j
    ok = (arg[..., None, :] != i[:, None]) & (arg[..., None, :] != j[:, None])  # (..., S, K)
    first = ok.to(torch.uint8).argmax(-1)  # (..., S)
    r = top.gather(-1, first)
    # sum over a outside {i, j} of exp(diag_a - r_s), for each of the K possible shifts; the exponents above
    # a shift are clamped, and those terms are exactly the ones excluded wherever that shift is used
    Ek = torch.exp((diag[..., None, :] - top[..., :, None]).clamp(max=0.0))  # (..., K, T)
    Zr = (Ek @ outside).gather(-2, first[..., None, :]).squeeze(-2)  # (..., S), >= 1
    m = torch.maximum(r, torch.maximum(m_ij, m_ji))
    e_ij, e_ji = torch.exp(m_ij - m), torch.exp(m_ji - m)
    Zp = torch.exp(r - m) * Zr + e_ij + e_ji
    return torch.softmax(diag, dim=-1), e_ij / Zp, e_ji / Zp


def rows_from_matrix(M: torch.Tensor, pairs: torch.Tensor):
    """Original attention D (..., T) and swapped attention at the swapped positions (..., S) from M (..., T, T).

    The query (last position) attends to every position 0..T-1 including itself; pairs only cover 0..T-2.
    """
    i, j = pairs[:, 0], pairs[:, 1]
    return swap_rows(torch.diagonal(M, dim1=-2, dim2=-1), M[..., i, j], M[..., j, i], pairs)


@dataclass
class LayerScores:
    """Scores of one layer's heads on N prompts (per prompt, so callers can average or bootstrap)."""
    pos: torch.Tensor  # (N, H)
    sym: torch.Tensor  # (N, H)
    entropy: torch.Tensor  # (N, H) nats
    freq_pos: torch.Tensor | None = None  # (N, H, F)
    freq_sym: torch.Tensor | None = None
    freq_maxlogit: torch.Tensor | None = None  # (N, H, F): max over keys of the frequency's logit


@torch.no_grad()
def layer_scores(model: GPTJ, layer: int, resid: torch.Tensor, tau: float = TAU, method: str = "fast",
                 per_frequency: bool = False) -> LayerScores:
    """Scores of one layer's heads from the hidden states ``resid`` (N, T, D) entering it."""
    if method == "rerun":
        if per_frequency:
            raise ValueError("per-frequency scores are only implemented by the fast method")
        T = resid.shape[1]
        pairs = swap_pairs(T - 1).to(resid.device)
        D, Dp = rerun_rows(model, layer, resid, pairs)
        S = torch.arange(len(pairs))
        D = D.double()
        pos, sym = swap_scores(D, Dp[..., S, pairs[:, 0]], Dp[..., S, pairs[:, 1]], pairs, tau)
        return LayerScores(pos=pos.float(), sym=sym.float(), entropy=attention_entropy(D).float())
    if method != "fast":
        raise ValueError(f"unknown metric method {method!r}: choose 'fast' or 'rerun'")
    return _fast_scores(model, [layer], [resid], tau, per_frequency)[0]


def _pair_difference(T: int, pairs: torch.Tensor, dtype, device) -> torch.Tensor:
    """(T, S) matrix with +1 at row i and -1 at row j of swap s: ``x @ it = x_i - x_j`` for every swap."""
    S = len(pairs)
    out = torch.zeros(T, S, dtype=dtype, device=device)
    s = torch.arange(S, device=device)
    out[pairs[:, 0], s] = 1.0
    out[pairs[:, 1], s] = -1.0
    return out


def scores_from_logits(diag: torch.Tensor, d: torch.Tensor, pairs: torch.Tensor, tau: float = TAU,
                       e: torch.Tensor | None = None):
    """Scores from the original logits ``diag`` (..., T) and ``d = M[i, j] - M[j, i]`` (..., S) per swap.

    Cosines are scale-invariant, so each pair may be replaced by a positive multiple: the original
    ``(D_i, D_j) ~ (sigmoid(e), sigmoid(-e))`` with ``e = M_ii - M_jj`` and the swapped
    ``(D'_i, D'_j) ~ (e^{M_ij}, e^{M_ji}) ~ (sigmoid(d), sigmoid(-d))``.  With ``A = tanh(e/2)``,
    ``B = tanh(d/2)`` this gives, exactly,

        cos_pos = (1 + AB) / sqrt((1 + A^2)(1 + B^2)),   cos_sym = (1 - AB) / sqrt((1 + A^2)(1 + B^2)).

    No normaliser of a swapped row, no zero vector, no underflow: the exact values even where float32 (or
    float64) attention rows would round to 0.  ``alpha = softmax(|D_i - D_j| / tau)`` uses the attention
    itself.  ``e`` may be passed if already known.  Returns ``(s_pos, s_sym, D)``, float64.
    """
    diag = diag.double()
    Pd = _pair_difference(diag.shape[-1], pairs, diag.dtype, diag.device)
    half_e = (diag @ Pd if e is None else e.double()).mul(0.5)
    return _scores(diag, half_e, d.double().mul(0.5), Pd, tau)


def _scores(diag, half_e, half_d, Pd, tau):
    """:func:`scores_from_logits` with ``e/2`` and ``d/2`` given (they are consumed) and ``Pd`` from
    :func:`_pair_difference`."""
    D = torch.softmax(diag, dim=-1)
    a = (D @ Pd).abs_()  # |D_i - D_j| (one-hot matmul: exact)
    w = a.sub_(a.amax(-1, keepdim=True)).mul_(1.0 / tau).exp_()  # alpha up to its normaliser
    A, B = half_e.tanh_(), half_d.tanh_()
    AB = A * B
    wd = A.square_().add_(1.0).mul_(B.square_().add_(1.0)).rsqrt_().mul_(w)  # w / sqrt((1+A^2)(1+B^2))
    s0, s1, W = wd.sum(-1), wd.mul_(AB).sum(-1), w.sum(-1)
    return (s0 + s1).div_(W), (s0 - s1).div_(W), D


def _fast_scores(model: GPTJ, layers: list[int], resids: list[torch.Tensor], tau: float,
                 per_frequency: bool, timings: dict | None = None, qk: list | None = None) -> list[LayerScores]:
    """The fast method for several layers at once: every layer's query and keys are stacked, so the swap
    arithmetic runs as a few large tensor operations instead of many small ones.  ``timings``: seconds are
    added to its ``scores`` and ``per_frequency`` entries.  ``qk``: the pre-RoPE queries and keys of the first
    layers, from :func:`residual_inputs` (the others are projected here)."""
    t0 = time.perf_counter()
    T = resids[0].shape[1]
    pairs = swap_pairs(T - 1).to(resids[0].device)
    i, j = pairs[:, 0], pairs[:, 1]
    qk = list(qk or [])[:len(layers)]
    qk += [_last_query_and_keys(model, l, r) for l, r in zip(layers[len(qk):], resids[len(qk):])]
    c, rest, cos, sin = _complex_factors(torch.stack([a for a, _ in qk]), torch.stack([b for _, b in qk]),
                                         model.blocks[layers[0]].attn)  # (L, N, H, T, F); same angles in all layers
    # MT[..., b, a] = M[a, b] = sum_f cr[b, f] cos[a, f] - ci[b, f] sin[a, f] + rest[b]: one real matmul of the
    # interleaved (cr, ci) pairs with the interleaved (cos, -sin) table
    W = torch.stack((cos, -sin), dim=2).reshape(T, -1).t()  # (2F, T)
    MT = (torch.view_as_real(c).flatten(-2) @ W).add_(rest[..., None])  # (L, N, H, T, T)
    flat = MT.flatten(-2)
    d = flat[..., j * T + i] - flat[..., i * T + j]  # M[i, j] - M[j, i]
    pos, sym, D = scores_from_logits(torch.diagonal(MT, dim1=-2, dim2=-1), d, pairs, tau)
    ent = attention_entropy(D)
    t1 = time.perf_counter()
    if per_frequency:
        L, N, H, _, F_ = c.shape
        fp, fs, fm = frequency_scores(c.real.flatten(0, 1), c.imag.flatten(0, 1), cos, sin, pairs, tau)
        fp, fs, fm = (t.view(L, N, H, F_) for t in (fp, fs, fm))
    if timings is not None:
        timings["scores"] = timings.get("scores", 0.0) + t1 - t0
        timings["per_frequency"] = timings.get("per_frequency", 0.0) + time.perf_counter() - t1
    out = []
    for k in range(len(layers)):
        res = LayerScores(pos=pos[k].float(), sym=sym[k].float(), entropy=ent[k].float())
        if per_frequency:
            res.freq_pos, res.freq_sym, res.freq_maxlogit = fp[k], fs[k], fm[k]
        out.append(res)
    return out


def _pair_blocks(pairs: torch.Tensor) -> list[tuple[int, int, int, int, int]] | None:
    """``pairs`` as runs ``(i, s0, s1, j0, j1)``: swaps s0..s1-1 are (i, j0), ..., (i, j1-1).  None unless they are
    :func:`swap_pairs` of some n (every (i, j), i < j < n, in its order), which the fast kernels need."""
    S = len(pairs)
    n = int(round((1 + math.sqrt(1 + 8 * S)) / 2)) if S else 0
    if S == 0 or n * (n - 1) // 2 != S or not torch.equal(pairs.cpu(), swap_pairs(n)):
        return None
    out, s = [], 0
    for i in range(n - 1):
        out.append((i, s, s + n - 1 - i, i + 1, n))
        s += n - 1 - i
    return out


@torch.no_grad()
def frequency_scores(cr, ci, cos, sin, pairs, tau: float = TAU, chunk: int = 8192, engine: str = "auto"):
    """Scores of every RoPE frequency as a 2-D head of its own (logits ``M_f``, see :func:`rope_terms`).

    ``cr, ci`` (..., T, F): content terms (float64); ``cos, sin`` (T, F); ``pairs``: :func:`swap_pairs`.
    Returns ``(pos, sym, maxlogit)``, each (..., F) float32; maxlogit = max over keys of ``M_f[a, a]``.

    One vectorised pass over all rows (prompts x heads x layers) and frequencies, in chunks of about ``chunk``
    (row, frequency) cells, every swap of a chunk at once.  The swap formulas of :func:`scores_from_logits`,
    rewritten so that the work per swap is elementwise float32 arithmetic with two ``exp``; the weights come from
    numbers computed once per position:

    * the original pair ``(D_i, D_j)`` is a positive multiple of ``(1, u)``, ``u = exp(M_jj - M_ii)``, and the
      swapped pair of ``(1, v)``, ``v = exp(M_ji - M_ij)``, so (exactly, for any u, v > 0)
      ``cos_pos = (1 + uv) / sqrt((1 + u^2)(1 + v^2))`` and ``cos_sym = (u + v) / sqrt((1 + u^2)(1 + v^2))``;
      the exponents are clamped to [-20, 20] (a direction turns by < 3e-9 there, and no product overflows);
    * the weight ``exp((|D_i - D_j| - max_s |D_i - D_j|) / tau)``: the softmax ``D`` is taken in float64 and, with
      ``P = D - min D`` and ``Q = max D - D`` (over the swapped positions; both >= 0), it is
      ``max(exp(-Q_i / tau) exp(-P_j / tau), exp(-Q_j / tau) exp(-P_i / tau))``: two factors per position, taken
      in float64 (so the weight's relative error is float32's ~1e-7) and kept above ``exp(-40)``, so no ``exp`` or
      product leaves float32's normal range (an underflowing ``exp`` takes a path about 12x slower).

    The result equals :func:`frequency_scores_reference` (float64 throughout) to ~1e-6 for logits up to ~10
    per frequency (float32 rounding of the swap logits).  Pairs other than :func:`swap_pairs` use the reference.

    ``engine``: ``"c"`` runs the same arithmetic fused in one compiled loop (:mod:`posym.ckernel`, five to six times
    faster), ``"torch"`` the torch operations below; ``"auto"`` (default) takes C on the CPU where it can be built.
    """
    if engine not in ("auto", "c", "torch"):
        raise ValueError(f"unknown engine {engine!r}: choose 'auto', 'c' or 'torch'")
    *lead, T, F = cr.shape
    R = math.prod(lead)
    blocks = _pair_blocks(pairs)
    if F == 0 or R == 0:
        empty = torch.zeros(*lead, F, device=cr.device)
        return empty, empty.clone(), empty.clone()
    if blocks is None or blocks[-1][4] > T:
        return frequency_scores_reference(cr, ci, cos, sin, pairs, tau, chunk)
    n_pos = blocks[-1][4]  # positions 0..n_pos-1 are swapped
    fn = ckernel.kernel() if engine != "torch" and cr.device.type == "cpu" else None
    if engine == "c" and fn is None:
        raise RuntimeError("the C kernel is not available (no C compiler, POSYM_C_KERNEL=0, or not on the CPU)")
    if fn is not None:
        return ckernel.frequency_scores(fn, cr, ci, cos, sin, n_pos, tau)
    dev, S = cr.device, len(pairs)
    c64, s64 = cos.to(dev, torch.float64)[:, None], sin.to(dev, torch.float64)[:, None]  # (T, 1, F)
    c32, s32 = c64.float(), s64.float()
    crT = cr.reshape(R, T, F).transpose(0, 1).to(torch.float64, memory_format=torch.contiguous_format)  # (T, R, F)
    ciT = ci.reshape(R, T, F).transpose(0, 1).to(torch.float64, memory_format=torch.contiguous_format)
    diagT = crT * c64 - ciT * s64  # M_f[a, a]
    cr32, ci32, diag32 = crT.float(), ciT.float(), diagT.float()
    out = torch.empty(3, F, R, dtype=torch.float32, device=dev)  # pos, sym, maxlogit (this layout as before)
    one = torch.ones((), dtype=torch.float32, device=dev)
    per = max(1, chunk // F)
    buf = torch.empty(5, S, min(per, R), F, dtype=torch.float32, device=dev)
    for r0 in range(0, R, per):
        r1 = min(R, r0 + per)
        n = r1 - r0
        diag = diagT[:, r0:r1]
        m = diag.amax(0)
        E = (diag - m).clamp_(min=-300.0).exp_()  # (T, n, F) float64; exp(-300) counts as 0 next to the max's 1
        D = E.div_(E.sum(0))[:n_pos]
        eP = (D - D.amin(0)).mul_(-1.0 / tau).clamp_(min=-40.0).exp_().float()  # exp(-P / tau)
        eQ = (D - D.amax(0)).mul_(1.0 / tau).clamp_(min=-40.0).exp_().float()  # exp(-Q / tau)
        w, u, v, t1, t2 = (b[:, :n] for b in buf)
        cr_, ci_, dg = cr32[:, r0:r1], ci32[:, r0:r1], diag32[:, r0:r1]
        for i, s0, s1, j0, j1 in blocks:  # swaps (i, j) for j in j0..j1-1
            x = torch.mul(eQ[i], eP[j0:j1], out=w[s0:s1])
            torch.maximum(x, torch.mul(eQ[j0:j1], eP[i], out=t1[s0:s1]), out=x)
            torch.sub(dg[j0:j1], dg[i], out=u[s0:s1])  # M_jj - M_ii
            vb = torch.mul(cr_[i], c32[j0:j1], out=v[s0:s1])  # M_ji - M_ij, M[a, b] = cr_b C_a - ci_b S_a
            vb.addcmul_(ci_[i], s32[j0:j1], value=-1.0).addcmul_(cr_[j0:j1], c32[i], value=-1.0)
            vb.addcmul_(ci_[j0:j1], s32[i])
        buf[1:3, :, :n].clamp_(-20.0, 20.0).exp_()  # u, v
        wd = torch.addcmul(one, u, u, out=t1).mul_(torch.addcmul(one, v, v, out=t2)).rsqrt_().mul_(w)
        Wsum = w.sum(0)
        p = torch.addcmul(one, u, v, out=t2).mul_(wd).sum(0)
        q = u.add_(v).mul_(wd).sum(0)
        out[0, :, r0:r1] = p.div_(Wsum).t()
        out[1, :, r0:r1] = q.div_(Wsum).t()
        out[2, :, r0:r1] = m.t()
    return tuple(o.t().reshape(*lead, F) for o in out)


@torch.no_grad()
def frequency_scores_reference(cr, ci, cos, sin, pairs, tau: float = TAU, chunk: int = 4096):
    """:func:`frequency_scores` in float64 throughout, by :func:`scores_from_logits` (any ``pairs``).

    For frequency f, the logits the scores need are linear in the content terms ``(cr, ci)`` of a prompt:
    ``M_f[a, a]``, ``M_f[i, j] - M_f[j, i]`` and ``M_f[i, i] - M_f[j, j]`` come out of one matrix product per
    frequency, ``[cr | ci] @ W_f``, over chunks of prompts; then :func:`scores_from_logits`.
    Returns ``(pos, sym, maxlogit)``, each (N, H, F) float32; maxlogit = max over keys of ``M_f[a, a]``.
    """
    N, H, T, F = cr.shape
    if F == 0:
        empty = torch.zeros(N, H, 0)
        return empty, empty.clone(), empty.clone()
    S = len(pairs)
    i, j = pairs[:, 0], pairs[:, 1]
    s = torch.arange(S, device=cr.device)
    c, sn = cos.t(), sin.t()  # (F, T): cos/sin of (n - a) g_f
    # W_f (2T, 2S + T): columns [d/2 | e/2 | diag] for x = [cr_f(0..T-1), ci_f(0..T-1)]
    W = torch.zeros(F, 2 * T, 2 * S + T, dtype=torch.float64, device=cr.device)
    W[:, j, s] += 0.5 * c[:, i]  # M[i, j] = cr[j] cos[i] - ci[j] sin[i]
    W[:, T + j, s] -= 0.5 * sn[:, i]
    W[:, i, s] -= 0.5 * c[:, j]  # - M[j, i]
    W[:, T + i, s] += 0.5 * sn[:, j]
    W[:, i, S + s] += 0.5 * c[:, i]  # M[i, i] - M[j, j]
    W[:, T + i, S + s] -= 0.5 * sn[:, i]
    W[:, j, S + s] -= 0.5 * c[:, j]
    W[:, T + j, S + s] += 0.5 * sn[:, j]
    a_idx = torch.arange(T, device=cr.device)
    W[:, a_idx, 2 * S + a_idx] = c  # M[a, a]
    W[:, T + a_idx, 2 * S + a_idx] = -sn
    X = torch.cat((cr, ci), dim=2).reshape(N * H, 2 * T, F).permute(2, 0, 1)  # (F, N*H, 2T)
    pos, sym, maxl = (torch.empty(F, N * H, dtype=torch.float64, device=cr.device) for _ in range(3))
    Pd = _pair_difference(T, pairs, torch.float64, cr.device)
    per = max(1, chunk // F)
    for r0 in range(0, N * H, per):
        r1 = min(r0 + per, N * H)
        Y = torch.bmm(X[:, r0:r1].contiguous(), W)  # (F, rows, 2S + T)
        half_d, half_e, diag = Y[..., :S], Y[..., S:2 * S], Y[..., 2 * S:]
        pos[:, r0:r1], sym[:, r0:r1], _ = _scores(diag, half_e, half_d, Pd, tau)
        maxl[:, r0:r1] = diag.amax(-1)
    return tuple(t.t().reshape(N, H, F).float() for t in (pos, sym, maxl))


@torch.no_grad()
def model_scores(model: GPTJ, x: torch.Tensor, tau: float = TAU, method: str = "fast", per_frequency: bool = False,
                 batch_size: int = 100, timings: dict | None = None) -> list[LayerScores]:
    """Scores of every layer on prompts ``x`` (N, T); the query is the last token.

    ``timings`` (fast method): a dict to which the seconds of the shared forward pass (``forward``), the scores
    (``scores``) and the per-frequency scores (``per_frequency``) are added."""
    if method not in ("fast", "rerun"):
        raise ValueError(f"unknown metric method {method!r}: choose 'fast' or 'rerun'")
    was_training = model.training
    model.eval()
    L = model.cfg.n_layer
    per_layer: list[list[LayerScores]] = [[] for _ in range(L)]
    try:
        for s in range(0, len(x), batch_size):
            t0 = time.perf_counter()
            qk: list | None = [] if method == "fast" else None  # the re-run projects its own
            resids = residual_inputs(model, x[s:s + batch_size], qk_out=qk)
            if timings is not None:
                timings["forward"] = timings.get("forward", 0.0) + time.perf_counter() - t0
            if method == "fast":
                chunk = _fast_scores(model, list(range(L)), resids, tau, per_frequency, timings, qk=qk)
            else:
                chunk = [layer_scores(model, l, r, tau=tau, method=method, per_frequency=per_frequency)
                         for l, r in enumerate(resids)]
            for l in range(L):
                per_layer[l].append(chunk[l])
    finally:
        model.train(was_training)
    out = []
    for chunks in per_layer:
        cat = {f: (torch.cat([getattr(c, f) for c in chunks]) if getattr(chunks[0], f) is not None else None)
               for f in LayerScores.__dataclass_fields__}
        out.append(LayerScores(**cat))
    return out


def scores_table(scores: list[LayerScores], T: int, **keys) -> pd.DataFrame:
    """Tidy per-(layer, head) table of prompt-averaged scores; extra ``keys`` become constant columns."""
    rows = []
    for l, s in enumerate(scores):
        for h in range(s.pos.shape[1]):
            rows.append({**keys, "layer": l, "head": h,
                         "pos": s.pos[:, h].mean().item(), "sym": s.sym[:, h].mean().item(),
                         "pos_sd": s.pos[:, h].std().item() if len(s.pos) > 1 else 0.0,
                         "sym_sd": s.sym[:, h].std().item() if len(s.sym) > 1 else 0.0,
                         "entropy": s.entropy[:, h].mean().item(),
                         "entropy_norm": s.entropy[:, h].mean().item() / math.log(T)})
    return pd.DataFrame(rows)


def frequency_table(scores: list[LayerScores], **keys) -> pd.DataFrame:
    """Tidy per-(layer, head, frequency) table: per-frequency pos/sym scores and mean max logit."""
    frames = []
    for l, s in enumerate(scores):
        if s.freq_pos is None:
            raise ValueError("scores were computed without per_frequency=True")
        H, F = s.freq_pos.shape[1:]
        hh, ff = np.meshgrid(np.arange(H), np.arange(F), indexing="ij")
        frames.append(pd.DataFrame({**{k: v for k, v in keys.items()}, "layer": l, "head": hh.ravel(),
                                    "freq": ff.ravel(),
                                    "pos": s.freq_pos.mean(0).reshape(-1).numpy(),
                                    "sym": s.freq_sym.mean(0).reshape(-1).numpy(),
                                    "maxlogit": s.freq_maxlogit.mean(0).reshape(-1).numpy(),
                                    "maxlogit_sd": s.freq_maxlogit.std(0).reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Purity and frequency use
# ---------------------------------------------------------------------------------------------
def classify(pos: float, sym: float, gamma: float) -> str:
    """'positional' if pos >= 1-gamma and sym <= gamma; 'symbolic' if the reverse; otherwise 'mixed'."""
    if pos >= 1 - gamma and sym <= gamma:
        return "positional"
    if sym >= 1 - gamma and pos <= gamma:
        return "symbolic"
    return "mixed"


def purity_events(traj: pd.DataFrame, gamma: float, group: tuple[str, ...] = ()) -> pd.DataFrame:
    """First step at which each (layer, head) becomes pure, per group (e.g. run).

    ``traj`` has columns step, layer, head, pos, sym (+ group columns).  Counts are cumulative in the
    paper: a head counts from the first step it is pure.  Returns rows (group..., layer, head, kind, step).
    """
    t = traj.sort_values("step").copy()
    t["kind"] = [classify(p, s, gamma) for p, s in zip(t["pos"], t["sym"])]
    pure = t[t["kind"] != "mixed"]
    keys = list(group) + ["layer", "head"]
    first = pure.groupby(keys, as_index=False).first()[keys + ["kind", "step"]]
    return first.sort_values(list(group) + ["step", "layer"]).reset_index(drop=True)


def purity_counts(traj: pd.DataFrame, gamma: float, group: tuple[str, ...] = ()) -> pd.DataFrame:
    """Cumulative number of pure positional / symbolic heads at every step of ``traj``."""
    ev = purity_events(traj, gamma, group)
    steps = np.sort(traj["step"].unique())
    rows = []
    groups = [()] if not group else list(traj[list(group)].drop_duplicates().itertuples(index=False, name=None))
    for g in groups:
        e = ev
        for col, val in zip(group, g):
            e = e[e[col] == val]
        for s in steps:
            done = e[e["step"] <= s]
            rows.append({**dict(zip(group, g)), "step": s,
                         "positional": int((done["kind"] == "positional").sum()),
                         "symbolic": int((done["kind"] == "symbolic").sum())})
    return pd.DataFrame(rows)


def weighted_frequency(maxlogit: np.ndarray) -> float:
    """Weighted-average frequency index (0-based) with weights = positive part of the max logit."""
    u = np.clip(np.asarray(maxlogit, dtype=float), 0, None)
    if u.sum() == 0:
        return float("nan")
    return float((np.arange(len(u)) * u).sum() / u.sum())
