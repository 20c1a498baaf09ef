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
* :func:`fast_rows` -- exact and ~1000x cheaper.  The query row depends only on the query vector and
  on the keys, and a key depends only on (content, position).  So we compute once, per prompt and
  layer, the matrix ``M[a, b]`` = logit of the query for *content b placed at position a*.  The
  original logits are its diagonal; swap (i, j) replaces ``M[i, i], M[j, j]`` by ``M[i, j], M[j, i]``
  and the softmax denominator changes by those four terms only.

Per-frequency scores: RoPE splits a head into ``d/2`` two-dimensional heads, one per frequency; the
logit is the sum of their logits.  Frequency ``f`` alone gives ``M_f[a, b]`` and the same swap scores.
We keep the 1/sqrt(d_head) scale, so ``M = sum_f M_f`` (+ the non-rotary part).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .model import GPTJ

TAU = 1e-4


def swap_pairs(n_keys: int) -> torch.Tensor:
    """All pairs (i, j), i < j, among the first ``n_keys`` positions: (S, 2) with S = n_keys choose 2."""
    return torch.combinations(torch.arange(n_keys), r=2)


def swap_scores(D: torch.Tensor, Dp_i: torch.Tensor, Dp_j: torch.Tensor, pairs: torch.Tensor, tau: float = TAU):
    """Scores from original attention ``D`` (..., T) and swapped attention at the swapped positions
    ``Dp_i, Dp_j`` (..., S).  Returns ``(s_pos, s_sym)`` of shape (...).  Computed in float64."""
    D = D.double()
    Dp_i, Dp_j = Dp_i.double(), Dp_j.double()
    Di, Dj = D[..., pairs[:, 0]], D[..., pairs[:, 1]]
    alpha = torch.softmax((Di - Dj).abs() / tau, dim=-1)
    # cosines of 2-vectors from unit vectors (hypot: no underflow for tiny attention values).  A zero vector
    # has no direction: a swap whose original and swapped pairs are both (0, 0) moved nothing and counts 1 for
    # both scores; a zero and a non-zero pair count 0.  (Such swaps get alpha ~ 0 unless all swaps do.)
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
def residual_inputs(model: GPTJ, x: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states entering every block: list of (N, T, D)."""
    out: list[torch.Tensor] = []
    model(x, last_only=True, resid_out=out)
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
    block = model.blocks[layer]
    attn = block.attn
    N, T, _ = resid.shape
    h = block.ln_1(resid)
    q = attn.split_heads(attn.q_proj(h[:, -1:]))[:, :, 0]  # (N, H, Dh): only the query row is needed
    k = attn.split_heads(attn.k_proj(h))  # (N, H, T, Dh)
    if attn.dim_mask is not None:
        q, k = q * attn.dim_mask, k * attn.dim_mask
    q, k = q.double(), k.double()
    R = attn.cfg.rotary_dim
    scale = 1.0 / math.sqrt(attn.d_head)
    rest = (k[..., R:] * q[:, :, None, R:]).sum(-1) * scale  # (N, H, T)
    qr, qi = q[:, :, None, 0:R:2], q[:, :, None, 1:R:2]  # (N, H, 1, F)
    kr, ki = k[..., 0:R:2], k[..., 1:R:2]  # (N, H, T, F)
    cr = (qr * kr + qi * ki) * scale  # Re(q conj(k))
    ci = (qi * kr - qr * ki) * scale  # Im(q conj(k))
    rel = (T - 1 - torch.arange(T, device=resid.device, dtype=torch.float64))[:, None] * attn.angles[None, :]
    return cr, ci, rest, rel.cos(), rel.sin()


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
    ``m_ij, m_ji``; its normaliser is summed directly (``Z - e_ii - e_jj`` would cancel catastrophically when
    the swap removes the key that held nearly all the mass) and every row gets its own max-shift, so nothing
    overflows or underflows to 0/0 whatever the logit range.
    """
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
    T = resid.shape[1]
    pairs = swap_pairs(T - 1).to(resid.device)
    if method == "rerun":
        D, Dp = rerun_rows(model, layer, resid, pairs)
        S = torch.arange(len(pairs))
        Dp_i = Dp[..., S, pairs[:, 0]]
        Dp_j = Dp[..., S, pairs[:, 1]]
        D = D.double()
        if per_frequency:
            raise ValueError("per-frequency scores are only implemented by the fast method")
    elif method == "fast":
        cr, ci, rest, cos, sin = rope_terms(model, layer, resid)
        M = cos @ cr.transpose(-1, -2) - sin @ ci.transpose(-1, -2) + rest[:, :, None, :]  # (N, H, T, T)
        D, Dp_i, Dp_j = rows_from_matrix(M, pairs)
    else:
        raise ValueError(f"unknown metric method {method!r}: choose 'fast' or 'rerun'")
    pos, sym = swap_scores(D, Dp_i, Dp_j, pairs, tau)
    res = LayerScores(pos=pos.float(), sym=sym.float(), entropy=attention_entropy(D).float())
    if per_frequency:
        res.freq_pos, res.freq_sym, res.freq_maxlogit = frequency_scores(cr, ci, cos, sin, pairs, tau)
    return res


@torch.no_grad()
def frequency_scores(cr, ci, cos, sin, pairs, tau: float = TAU, chunk: int = 4096):
    """Scores of every RoPE frequency as a 2-D head of its own (logits ``M_f``, see :func:`rope_terms`).

    Only the diagonal and the swapped entries of each ``M_f`` are formed, in chunks of rows that stay in
    cache.  Returns ``(pos, sym, maxlogit)``, each (N, H, F) float32; maxlogit = max over keys of ``M_f[a, a]``.
    """
    N, H, T, F = cr.shape
    if F == 0:
        empty = torch.zeros(N, H, 0)
        return empty, empty.clone(), empty.clone()
    i, j = pairs[:, 0], pairs[:, 1]
    rows_r = cr.transpose(-1, -2).reshape(-1, T)  # (N*H*F, T): row r is frequency r % F
    rows_i = ci.transpose(-1, -2).reshape(-1, T)
    cos_t, sin_t = cos.t().contiguous(), sin.t().contiguous()  # (F, T)
    per = max(1, chunk // F)  # (n, h) rows per chunk, so a chunk holds whole blocks of F frequencies
    tiles = {}
    outside = _outside(T, pairs, torch.float64, cr.device)
    pos, sym, maxl = (torch.empty(N * H * F, dtype=torch.float64, device=cr.device) for _ in range(3))
    for s0 in range(0, N * H * F, per * F):
        s1 = min(s0 + per * F, N * H * F)
        reps = (s1 - s0) // F
        if reps not in tiles:
            c, sn = cos_t.repeat(reps, 1), sin_t.repeat(reps, 1)
            tiles[reps] = (c, sn, c[:, i], sn[:, i], c[:, j], sn[:, j])
        c, sn, c_i, s_i, c_j, s_j = tiles[reps]
        a, b = rows_r[s0:s1], rows_i[s0:s1]
        diag = a * c - b * sn
        m_ij = a[:, j] * c_i - b[:, j] * s_i  # content j at position i
        m_ji = a[:, i] * c_j - b[:, i] * s_j
        D, Dp_i, Dp_j = swap_rows(diag, m_ij, m_ji, pairs, outside)
        pos[s0:s1], sym[s0:s1] = swap_scores(D, Dp_i, Dp_j, pairs, tau)
        maxl[s0:s1] = diag.amax(-1)
    return tuple(t.view(N, H, F).float() for t in (pos, sym, maxl))


@torch.no_grad()
def model_scores(model: GPTJ, x: torch.Tensor, tau: float = TAU, method: str = "fast", per_frequency: bool = False,
                 batch_size: int = 100) -> list[LayerScores]:
    """Scores of every layer on prompts ``x`` (N, T); the query is the last token."""
    model.eval()
    per_layer: list[list[LayerScores]] = [[] for _ in range(model.cfg.n_layer)]
    for s in range(0, len(x), batch_size):
        resids = residual_inputs(model, x[s:s + batch_size])
        for l, r in enumerate(resids):
            per_layer[l].append(layer_scores(model, l, r, tau=tau, method=method, per_frequency=per_frequency))
    out = []
    for chunks in per_layer:
        cat = {f: (torch.cat([getattr(c, f) for c in chunks]) if getattr(chunks[0], f) is not None else None)
               for f in LayerScores.__dataclass_fields__}
        out.append(LayerScores(**{f: (v.cpu() if v is not None else None) for f, v in cat.items()}))
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
