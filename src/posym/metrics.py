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
    norm_p = torch.sqrt(Dp_i ** 2 + Dp_j ** 2)
    norm_o = torch.sqrt(Di ** 2 + Dj ** 2)
    cos_pos = (Dp_i * Di + Dp_j * Dj) / (norm_p * norm_o)
    cos_sym = (Dp_i * Dj + Dp_j * Di) / (norm_p * norm_o)
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
            rows.append(captured["p"][:, :, -1].float())  # (b, H, T)
        model.train(was_training)
    finally:
        handle.remove()
    rows = torch.cat(rows).view(N, S + 1, -1, T).transpose(1, 2)  # (N, H, S+1, T)
    return rows[:, :, 0], rows[:, :, 1:]


# ---------------------------------------------------------------------------------------------
# Fast exact version: one "content b at position a" logit matrix per prompt and layer
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def content_position_logits(model: GPTJ, layer: int, resid: torch.Tensor, per_frequency: bool = False):
    """``M[..., a, b]``: the last query's logit for the key built from the content at position b,
    rotated to position a.  resid (N, T, D) -> M (N, H, T, T) [and M_f (N, H, F, T, T)].

    Each RoPE pair is a complex number and rotating by ``p * g_f`` multiplies it by ``exp(i p g_f)``, so
    ``M_f[a, b] = Re(c_f[b] exp(i (n - a) g_f))`` with ``c_f[b] = q_f conj(k_f[b])``: an outer product of a
    content term and a position term, with no tensor of all (a, b, dim) triples.
    """
    block = model.blocks[layer]
    attn = block.attn
    N, T, _ = resid.shape
    h = block.ln_1(resid)
    q = attn.split_heads(attn.q_proj(h[:, -1:]))[:, :, 0]  # (N, H, Dh): only the query row is needed
    k = attn.split_heads(attn.k_proj(h))  # (N, H, T, Dh)
    if attn.dim_mask is not None:
        q, k = q * attn.dim_mask, k * attn.dim_mask
    R = attn.cfg.rotary_dim
    scale = 1.0 / math.sqrt(attn.d_head)
    # non-rotary dims: position-independent dot product, the same for every a
    rest = (k[..., R:] * q[:, :, None, R:]).sum(-1) * scale  # (N, H, Tb)
    qc = torch.complex(q[..., 0:R:2], q[..., 1:R:2])  # (N, H, F)
    kc = torch.complex(k[..., 0:R:2], k[..., 1:R:2])  # (N, H, Tb, F)
    c = (qc[:, :, None, :] * kc.conj()) * scale  # (N, H, Tb, F)
    rel = (T - 1 - torch.arange(T, device=resid.device, dtype=torch.float64))[:, None] * attn.angles[None, :]
    cos, sin = rel.cos().to(q.dtype), rel.sin().to(q.dtype)  # (Ta, F)
    # M[a, b] = sum_f Re(c[b, f]) cos[a, f] - Im(c[b, f]) sin[a, f]
    M = cos @ c.real.transpose(-1, -2) - sin @ c.imag.transpose(-1, -2) + rest[:, :, None, :]
    if not per_frequency:
        return M
    Mf = (c.real.transpose(-1, -2)[:, :, :, None, :] * cos.t()[None, None, :, :, None]
          - c.imag.transpose(-1, -2)[:, :, :, None, :] * sin.t()[None, None, :, :, None])  # (N, H, F, Ta, Tb)
    return M, Mf


def rows_from_matrix(M: torch.Tensor, pairs: torch.Tensor):
    """Original attention D (..., T) and swapped attention at the swapped positions (..., S) from M (..., T, T).

    The query (last position) attends to every position 0..T-1 including itself; pairs only cover 0..T-2.
    """
    M = M.double()
    i, j = pairs[:, 0], pairs[:, 1]
    m = M.amax(dim=(-1, -2), keepdim=True)
    E = torch.exp(M - m)
    diag = torch.diagonal(E, dim1=-2, dim2=-1)  # (..., T)
    Z = diag.sum(-1, keepdim=True)
    e_ii, e_jj = diag[..., i], diag[..., j]
    e_ij, e_ji = E[..., i, j], E[..., j, i]
    Zp = Z - e_ii - e_jj + e_ij + e_ji
    D = diag / Z
    return D, e_ij / Zp, e_ji / Zp


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
        out = content_position_logits(model, layer, resid, per_frequency=per_frequency)
        M, Mf = out if per_frequency else (out, None)
        D, Dp_i, Dp_j = rows_from_matrix(M, pairs)
    else:
        raise ValueError(f"unknown metric method {method!r}: choose 'fast' or 'rerun'")
    pos, sym = swap_scores(D, Dp_i, Dp_j, pairs, tau)
    res = LayerScores(pos=pos.float(), sym=sym.float(), entropy=attention_entropy(D).float())
    if per_frequency:
        Df, Df_i, Df_j = rows_from_matrix(Mf, pairs)
        fp, fs = swap_scores(Df, Df_i, Df_j, pairs, tau)
        res.freq_pos, res.freq_sym = fp.float(), fs.float()
        res.freq_maxlogit = torch.diagonal(Mf, dim1=-2, dim2=-1).amax(-1).float()
    return res


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
