"""Helpers of the metric chapter (``book/metric.md``): Paper 1's definitions checked on toy heads, and its
canonical-task frequency sweep summarised against what the paper reports.

Toy heads
---------
A single-query head is fully described, for the swap metric, by its **content-position logit matrix**
``M[a, b]``: the query's logit for the key made from the content at position ``b`` and rotated to position ``a``
(:func:`posym.metrics.content_position_logits` builds it for a real model).  The last position ``T - 1`` is the
query, which attends to itself; the keys that permutations move are ``0 .. T - 2``.

* positional behaviour (Paper 1): ``M[a, b]`` does not depend on ``b`` (swapping contents leaves logits alone);
* symbolic behaviour: ``M[a, b]`` does not depend on ``a`` (the logit travels with the content);
* both: ``M`` is constant on the keys, so attention over them is uniform (the exclusion principle).

:func:`toy_rope_logits` builds ``M`` for a RoPE head from a query, one key per content and a frequency ladder,
with two knobs that push it towards each behaviour: ``spread`` (0 = all keys equal = positional) and
``angle_scale`` (0 = no rotation = symbolic).  :func:`scores_from_logits` runs posym's metric code on any ``M``.

The variance bound of the exclusion principle is computed by :func:`exclusion_terms` in closed form and by
:func:`deviation_norms_bruteforce` over all permutations (for the tests).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import canonical as C
from ..metrics import TAU, attention_entropy, layer_scores, residual_inputs, rows_from_matrix, swap_pairs, swap_scores
from ..model import GPTJ, ModelConfig
from ..rope import rope_angles
from ..spec import ChapterSpec, Param, Required, register


# ---------------------------------------------------------------------------------------------
# Scores of a logit matrix
# ---------------------------------------------------------------------------------------------
def scores_from_logits(M, tau: float = TAU) -> dict[str, np.ndarray]:
    """Positional/symbolic scores and normalised entropy of heads given by content-position logits.

    ``M`` (..., T, T), ``T >= 3``: ``M[a, b]`` is the last query's logit for the content of position ``b`` placed at
    position ``a``.  Uses :func:`posym.metrics.rows_from_matrix` and :func:`posym.metrics.swap_scores` (all swaps of
    the ``T - 1`` keys).  Returns float64 arrays of shape (...): ``pos``, ``sym``, ``entropy_norm`` (entropy of the
    query's attention row over all ``T`` positions, divided by ``log T``: 1 = uniform).
    """
    M = torch.as_tensor(M, dtype=torch.float64)
    if M.dim() < 2 or M.shape[-1] != M.shape[-2] or M.shape[-1] < 3:
        raise ValueError(f"M must be (..., T, T) with T >= 3, got shape {tuple(M.shape)}")
    T = M.shape[-1]
    pairs = swap_pairs(T - 1)
    D, Dp_i, Dp_j = rows_from_matrix(M, pairs)
    pos, sym = swap_scores(D, Dp_i, Dp_j, pairs, tau)
    ent = attention_entropy(D) / math.log(T)
    return {"pos": pos.numpy(), "sym": sym.numpy(), "entropy_norm": ent.numpy()}


def toy_rope_logits(q, keys, angles, spread: float = 1.0, angle_scale: float = 1.0, sharpness: float = 1.0):
    """Content-position logits ``M`` (T, T) of a toy RoPE head.

    ``q`` (d,) is the query, ``keys`` (T, d) one key per content (content ``b`` is the token at position ``b``;
    the last one is the query's own key), ``angles`` (d/2,) the RoPE angles of the head's 2-D planes (pair
    ``(2f, 2f+1)`` rotates by ``angles[f]`` per position).  The query sits at ``T - 1``, so a key at ``a`` is
    ``T - 1 - a`` positions back and ``M[a, b] = sharpness * q . rot((T-1-a) * angle_scale * angles) keys[b]``.

    ``spread`` shrinks the keys towards one common key, the direction of their mean with their RMS norm (0: every
    key equal, a **positional** head as sharp as the original);
    ``angle_scale`` shrinks the angles (0: no rotation, a **symbolic** head); both 0 give a constant ``M``.
    """
    q = torch.as_tensor(q, dtype=torch.float64)
    keys = torch.as_tensor(keys, dtype=torch.float64)
    g = torch.as_tensor(angles, dtype=torch.float64) * angle_scale
    T, d = keys.shape
    if q.shape != (d,) or d % 2 or g.shape != (d // 2,):
        raise ValueError(f"need q (d,), keys (T, d) and angles (d/2,) with d even; got {tuple(q.shape)}, "
                         f"{tuple(keys.shape)}, {tuple(g.shape)}")
    # the common key: the mean key's direction with the keys' RMS norm (so the logits keep their scale)
    kbar = keys.mean(0)
    kbar = kbar * keys.norm(dim=1).pow(2).mean().sqrt() / kbar.norm().clamp_min(1e-300)
    keys = kbar + spread * (keys - kbar)
    qc = torch.complex(q[0::2], q[1::2])  # (F,)
    kc = torch.complex(keys[:, 0::2], keys[:, 1::2])  # (T, F)
    rel = (T - 1 - torch.arange(T, dtype=torch.float64))[:, None] * g[None, :]  # (T_a, F)
    # a rotation by phi multiplies the key's complex pair by exp(i phi); the dot product is Re(q conj(k e^{i phi}))
    c = qc[None, :] * kc.conj()  # (T_b, F)
    M = (c[None, :, :] * torch.exp(1j * rel)[:, None, :]).real.sum(-1)  # (T_a, T_b)
    return sharpness * M


def random_toy_heads(n: int, T: int = 17, d: int = 16, seed: int = 0, base: float = 10000.0,
                     sharpness: tuple[float, float] = (0.1, 30.0), p_zero: float = 0.2) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` random toy RoPE heads: logit matrices (n, T, T) and a table of their knobs and scores.

    Query and keys are standard normal (scaled by ``1/sqrt(d)``), angles the RoPE ladder of ``d`` and ``base``.
    ``sharpness`` is log-uniform in the given range; ``spread`` and ``angle_scale`` are uniform in [0, 1] and each
    is exactly 0 with probability ``p_zero`` (so the sample holds purely positional, purely symbolic and uniform
    heads).  Table columns: ``sharpness, spread, angle_scale, pos, sym, entropy_norm, logit_var`` (population
    variance of the key logits ``M[j, j]``, ``j < T - 1``).
    """
    if n < 1 or T < 3 or d < 2 or d % 2:
        raise ValueError(f"need n >= 1, T >= 3 and an even d >= 2; got n={n}, T={T}, d={d}")
    rng = np.random.default_rng(seed)
    g = rope_angles(d, base)
    sharp = np.exp(rng.uniform(np.log(sharpness[0]), np.log(sharpness[1]), n))
    spread = np.where(rng.random(n) < p_zero, 0.0, rng.random(n))
    ascale = np.where(rng.random(n) < p_zero, 0.0, rng.random(n))
    Ms = np.empty((n, T, T))
    for h in range(n):
        q = rng.standard_normal(d) / math.sqrt(d)
        keys = rng.standard_normal((T, d))
        Ms[h] = toy_rope_logits(q, keys, g, spread[h], ascale[h], sharp[h]).numpy()
    sc = scores_from_logits(Ms)
    lam = np.diagonal(Ms, axis1=-2, axis2=-1)[:, :-1]
    tab = pd.DataFrame({"sharpness": sharp, "spread": spread, "angle_scale": ascale, **sc,
                        "logit_var": lam.var(-1)})
    return Ms, tab


def push_path(q, keys, angles, sharpness: float, ts: Sequence[float], towards: str = "both") -> pd.DataFrame:
    """Scores of one toy head as it is pushed towards positional, symbolic or both behaviours.

    At ``t`` the head has ``spread = 1 - t`` (towards ``"positional"`` or ``"both"``) and ``angle_scale = 1 - t``
    (towards ``"symbolic"`` or ``"both"``).  Returns one row per ``t``: ``towards, t, pos, sym, entropy_norm``
    and the two sides of the exclusion bound (:func:`exclusion_terms`): ``logit_var`` and ``bound``.
    """
    if towards not in ("positional", "symbolic", "both"):
        raise ValueError(f"towards must be 'positional', 'symbolic' or 'both', got {towards!r}")
    rows = []
    for t in ts:
        sp = 1 - t if towards in ("positional", "both") else 1.0
        an = 1 - t if towards in ("symbolic", "both") else 1.0
        M = toy_rope_logits(q, keys, angles, sp, an, sharpness)
        sc = scores_from_logits(M)
        ex = exclusion_terms(M)
        rows.append({"towards": towards, "t": float(t), **{k: float(v) for k, v in sc.items()},
                     "logit_var": ex["logit_var"], "bound": ex["bound"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The exclusion principle's variance bound
# ---------------------------------------------------------------------------------------------
def exclusion_terms(M) -> dict[str, float]:
    """Both sides of the exclusion bound for the keys ``0..m-1`` (``m = T - 1``) of a logit matrix ``M`` (T, T).

    With ``lambda_j = M[j, j]`` and the deviation vectors over all permutations ``pi`` of the keys,
    ``d_pos(pi, j) = M[j, pi(j)] - M[j, j]`` (content moved, position kept) and
    ``d_sym(pi, j) = M[pi(j), j] - M[j, j]`` (content kept, moved to another position)::

        Var(lambda) = (1/m) sum_j (lambda_j - mean)^2  <=  (|d_pos|^2 + |d_sym|^2) / (m! m)

    The squared norms are computed in closed form: each pair ``(j, k)`` has ``pi(j) = k`` for ``(m-1)!``
    permutations, so ``|d_pos|^2 = (m-1)! sum_{j,k} (M[j,k] - M[j,j])^2`` (and likewise ``d_sym``).
    Returns ``logit_var``, ``dpos2``, ``dsym2`` (the squared norms) and ``bound``.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 2:
        raise ValueError(f"M must be a square matrix with T >= 2, got shape {M.shape}")
    m = M.shape[0] - 1
    K = M[:m, :m]
    lam = np.diag(K)
    fact = math.factorial(m - 1)
    dpos2 = fact * float(((K - lam[:, None]) ** 2).sum())
    dsym2 = fact * float(((K - lam[None, :]) ** 2).sum())
    return {"logit_var": float(lam.var()), "dpos2": dpos2, "dsym2": dsym2,
            "bound": (dpos2 + dsym2) / (math.factorial(m) * m)}


def deviation_norms_bruteforce(M) -> tuple[float, float]:
    """``(|d_pos|^2, |d_sym|^2)`` of :func:`exclusion_terms` by enumerating all ``m!`` permutations (small ``m``)."""
    M = np.asarray(M, dtype=np.float64)
    m = M.shape[0] - 1
    if m > 8:
        raise ValueError(f"{m}! permutations are too many to enumerate; use exclusion_terms")
    j = np.arange(m)
    dpos2 = dsym2 = 0.0
    for pi in itertools.permutations(range(m)):
        pi = np.asarray(pi)
        dpos2 += float(((M[j, pi] - M[j, j]) ** 2).sum())
        dsym2 += float(((M[pi, j] - M[j, j]) ** 2).sum())
    return dpos2, dsym2


# ---------------------------------------------------------------------------------------------
# Fast exact metric vs the re-run reference on a random model
# ---------------------------------------------------------------------------------------------
def random_model(vocab_size: int = 64, n_layer: int = 2, d_model: int = 32, seed: int = 0, std: float = 0.1,
                 qk_scale: float = 3.0) -> GPTJ:
    """A small GPT-J model with random weights (``std``; query/key weights scaled by ``qk_scale`` so the
    heads are sharp, not uniform), in eval mode."""
    torch.manual_seed(seed)
    model = GPTJ(ModelConfig(vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, d_mlp=4 * d_model,
                             attn_pdrop=0.0, resid_pdrop=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 1 else std))
            if p.dim() == 1 and ("ln" in name and name.endswith("weight")):
                p.add_(1.0)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(qk_scale)
    return model.eval()


def fast_vs_rerun(model: GPTJ, x: torch.Tensor) -> pd.DataFrame:
    """Scores of every head of every layer by the fast exact method and by re-running the layer per swap.

    Returns one row per (layer, head): both methods' prompt-mean ``pos``/``sym`` and the maximum absolute
    difference over prompts of each score (``max_diff_pos``, ``max_diff_sym``).
    """
    rows = []
    for layer, r in enumerate(residual_inputs(model, x)):
        fast = layer_scores(model, layer, r, method="fast")
        ref = layer_scores(model, layer, r, method="rerun")
        for h in range(fast.pos.shape[1]):
            rows.append({"layer": layer, "head": h,
                         "pos_fast": fast.pos[:, h].mean().item(), "pos_rerun": ref.pos[:, h].mean().item(),
                         "sym_fast": fast.sym[:, h].mean().item(), "sym_rerun": ref.sym[:, h].mean().item(),
                         "max_diff_pos": (fast.pos[:, h] - ref.pos[:, h]).abs().max().item(),
                         "max_diff_sym": (fast.sym[:, h] - ref.sym[:, h]).abs().max().item()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The canonical-task sweep
# ---------------------------------------------------------------------------------------------
def parse_specs(text: str, n_freqs: int = 32) -> list:
    """``"2,8,nope"`` -> ``[2, 8, "nope"]`` (each item checked by :func:`posym.canonical.head_spec`)."""
    out = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        spec = "nope" if item.lower() == "nope" else (int(item) if item.lstrip("-").isdigit() else item)
        C.head_spec(spec, n_freqs)
        out.append(spec)
    if not out:
        raise ValueError(f"no frequency spec in {text!r}")
    return out


def sweep_jobs(freqs: Sequence, pi_freqs: Sequence, seeds: Sequence[int], settings: C.Settings,
               device: str = "cpu", threads: int = 1) -> list[tuple]:
    """Jobs for :func:`posym.canonical.run_jobs`, as in ``scripts/canonical_sweep.py``: Index and Retrieval
    at every spec of ``freqs``; partial induction at every spec of ``pi_freqs``, once with that angle alone and
    once with the zero-angle channel added (skipped where that is the same head: NoPE or the zero channel alone)."""
    jobs = []
    for task in ("index", "retrieval"):
        for f in freqs:
            hs = C.head_spec(f, settings.n_freqs)
            jobs += [(task, hs, s, replace(settings, zero_channel=False), device, threads) for s in seeds]
    for zc in (False, True):
        st = replace(settings, zero_channel=zc)
        for f in pi_freqs:
            hs = C.head_spec(f, st.n_freqs, zc)
            if zc and (hs.nope or hs.freqs == (st.n_freqs - 1,)):
                continue
            jobs += [("partial_induction", hs, s, st, device, threads) for s in seeds]
    return jobs


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, spec, zero_channel) of a sweep table: seed mean / min / max of the held-out accuracy,
    seed means of ``s_pos``, ``s_sym``, ``entropy_norm``, the number of seeds, ``freq`` and ``angle``; sorted by task
    and from the fastest frequency to NoPE (``freq = -1``)."""
    mt = C.model_table(df)
    keys = ["task", "spec", "freq", "angle", "zero_channel"]
    g = mt.groupby(keys)
    out = g["acc_all"].agg(acc="mean", acc_min="min", acc_max="max").join(
        g[["s_pos", "s_sym", "entropy_norm"]].mean()).join(g["seed"].nunique().rename("seeds")).reset_index()
    out["_order"] = np.where(out["freq"] < 0, np.inf, out["freq"])
    out["_task"] = out["task"].map({t: i for i, t in enumerate(C.TASKS)})
    return (out.sort_values(["_task", "zero_channel", "_order"]).drop(columns=["_order", "_task"])
            .reset_index(drop=True))


def best_index_frequency(length: int, settings: C.Settings | None = None) -> int:
    """The fastest frequency index whose period ``2 pi / g_k`` is at least ``length`` positions: the fastest
    angle that cannot alias two offsets of an Index prompt of that length (a rule of thumb for the best one)."""
    C._check_int("length", length, 2)
    g = C.angles(settings)
    ok = np.nonzero(2 * np.pi / g >= length)[0]
    if not len(ok):
        raise ValueError(f"no frequency of the ladder has a period of {length} positions or more")
    return int(ok[0])


def _fmt_spec(row) -> str:
    if row["freq"] < 0:
        return "NoPE"
    return f"k={row['freq']}" + (" + zero" if row["zero_channel"] else "")


def paper_comparison(df: pd.DataFrame, solved: float = 0.9, margin: float = 0.1, gamma: float = 0.1) -> pd.DataFrame:
    """Paper 1's qualitative claims about the canonical tasks beside our sweep (``df``: :func:`posym.canonical.sweep`
    rows, possibly several seeds), with the rule behind each ``agree``.

    * a task is **solved** by a head when its seed-mean accuracy is at least ``solved``;
    * a curve is **U-shaped** when ``ends - middle >= margin`` and **inverse-U** when ``middle - ends >= margin``
      (:func:`posym.canonical.shape_summary`);
    * a head is positional / symbolic by :func:`posym.metrics.classify` with ``gamma``.

    Returns columns ``claim, paper, ours, agree`` (``agree`` is True/False, or None where the sweep lacks the
    heads the claim is about).
    """
    acc = accuracy_table(df)
    shp = C.shape_summary(df)
    rows = []

    def pick(task, zc=False):
        return acc[(acc["task"] == task) & (acc["zero_channel"] == zc)]

    def add(claim, paper, ours, agree):
        rows.append({"claim": claim, "paper": paper, "ours": ours, "agree": None if agree is None else bool(agree)})

    # Index: fast frequencies solve it, slow ones and NoPE do not
    ix = pick("index")
    if len(ix) >= 2:
        best = ix.loc[ix["acc"].idxmax()]
        slow = ix.iloc[-1]  # NoPE if swept, else the slowest frequency
        fast_half = ix[(ix["freq"] >= 0) & (ix["freq"] <= ix.loc[ix["freq"] >= 0, "freq"].median())]
        add("Index is solved by high frequencies (low k), not by slow ones or NoPE",
            "solved only with high frequencies",
            f"best {_fmt_spec(best)}: {best['acc']:.2f}; {_fmt_spec(slow)}: {slow['acc']:.2f}",
            best["acc"] >= solved and best["freq"] >= 0 and best.name in fast_half.index and slow["acc"] < solved)
        s_ix = shp[(shp["task"] == "index") & ~shp["zero_channel"] & (shp["freq"] > best["freq"])]
        if len(s_ix):
            u = s_ix.loc[s_ix["ends_minus_middle"].idxmax()]
            add("Index accuracy vs answer position turns U-shaped as the frequency slows",
                "U-shaped (worst in the middle)",
                f"{_fmt_spec(u)}: ends {u['ends']:.2f}, middle {u['middle']:.2f}", u["ends_minus_middle"] >= margin)
        else:
            add("Index accuracy vs answer position turns U-shaped as the frequency slows",
                "U-shaped (worst in the middle)", "no frequency slower than the best one swept", None)
    # Retrieval: slow frequencies / NoPE solve it, fast ones do not
    rt = pick("retrieval")
    if len(rt) >= 2:
        best = rt.loc[rt["acc"].idxmax()]
        fastest = rt[rt["freq"] >= 0].iloc[0] if (rt["freq"] >= 0).any() else rt.iloc[0]
        add("Retrieval is solved by low frequencies or NoPE, not by fast ones",
            "works only with low frequencies",
            f"best {_fmt_spec(best)}: {best['acc']:.2f}; fastest {_fmt_spec(fastest)}: {fastest['acc']:.2f}",
            best["acc"] >= solved and (best["freq"] < 0 or best["freq"] > fastest["freq"]) and fastest["acc"] < solved)
        best_key = np.inf if best["freq"] < 0 else best["freq"]
        s_rt = shp[(shp["task"] == "retrieval") & ~shp["zero_channel"] & (shp["freq"] >= 0)
                   & (shp["freq"] < best_key)]
        if len(s_rt):
            u = s_rt.loc[s_rt["ends_minus_middle"].idxmin()]
            add("Retrieval accuracy vs answer position turns inverse-U-shaped as the frequency speeds up",
                "inverse-U (worse at the ends)",
                f"{_fmt_spec(u)}: ends {u['ends']:.2f}, middle {u['middle']:.2f}", -u["ends_minus_middle"] >= margin)
        else:
            add("Retrieval accuracy vs answer position turns inverse-U-shaped as the frequency speeds up",
                "inverse-U (worse at the ends)", "no frequency faster than the best one swept", None)
    # Partial induction: one angle fails, two angles succeed
    one, two = pick("partial_induction", False), pick("partial_induction", True)
    if len(one):
        b1 = one.loc[one["acc"].idxmax()]
        add("Partial induction: one angle is not enough", "fails with one angle (Cor. 1)",
            f"best single angle {_fmt_spec(b1)}: {b1['acc']:.2f}", b1["acc"] < solved)
    if len(two):
        b2 = two.loc[two["acc"].idxmax()]
        add("Partial induction: a zero angle plus a moderate one solves it", "succeeds (Thm. 6)",
            f"best two-angle {_fmt_spec(b2)}: {b2['acc']:.2f}", b2["acc"] >= solved)
        if len(one):
            add("Partial induction: two angles beat one", "implied (fails vs succeeds)",
                f"{b2['acc']:.2f} vs {b1['acc']:.2f} (+{b2['acc'] - b1['acc']:.2f})", b2["acc"] - b1["acc"] >= margin)
    # Trained heads: solvers of Index are positional, solvers of Retrieval symbolic (Thms. 2 and 4)
    from ..metrics import classify

    for task, kind, thm in (("index", "positional", "Thm. 2"), ("retrieval", "symbolic", "Thm. 4")):
        t = pick(task)
        sol = t[t["acc"] >= solved]
        claim = f"Heads that solve {task.capitalize()} are {kind}"
        if not len(sol):
            add(claim, f"{thm}: no {'symbolic' if kind == 'positional' else 'positional'} head solves it",
                "no head solved it", None)
            continue
        kinds = [classify(p, s, gamma) for p, s in zip(sol["s_pos"], sol["s_sym"])]
        n_ok = sum(k == kind for k in kinds)
        add(claim, f"{thm}: no {'symbolic' if kind == 'positional' else 'positional'} head solves it",
            f"{n_ok} of {len(sol)} solving specs {kind} (s_pos {sol['s_pos'].min():.2f}-{sol['s_pos'].max():.2f}, "
            f"s_sym {sol['s_sym'].min():.2f}-{sol['s_sym'].max():.2f})", n_ok == len(sol))
    return pd.DataFrame(rows, columns=["claim", "paper", "ours", "agree"])


def select_sweep(df: pd.DataFrame, freqs: Sequence, pi_freqs: Sequence, seeds: Sequence[int],
                 steps: int | None = None, n_freqs: int = 32) -> pd.DataFrame:
    """The rows of a stored sweep (e.g. ``data/canonical/sweep.parquet``) that a chapter asks for: Index and
    Retrieval at ``freqs``, partial induction at ``pi_freqs`` with and without the zero channel (the latter where
    it exists), the given ``seeds``.  Raises ValueError naming what is missing (a spec, seeds, or a
    different number of training ``steps``)."""
    want = [(task, C.head_spec(f, n_freqs).label, False) for task in ("index", "retrieval") for f in freqs]
    for f in pi_freqs:
        want.append(("partial_induction", C.head_spec(f, n_freqs).label, False))
        hz = C.head_spec(f, n_freqs, zero_channel=True)
        if not (hz.nope or hz.freqs == (n_freqs - 1,)):
            want.append(("partial_induction", hz.label, True))
    have = set(zip(df["task"], df["spec"], df["zero_channel"].astype(bool)))
    missing = [w for w in want if w not in have]
    if missing:
        avail = sorted({s for _, s, _ in have}, key=lambda s: (s == "nope", len(s), s))
        raise ValueError(f"the stored sweep lacks {', '.join(f'{t} {s}' + (' (zero channel)' if z else '') for t, s, z in missing)}; "
                         f"it has the specs {', '.join(avail)}")
    if steps is not None and not (df["steps"] == steps).all():
        raise ValueError(f"the stored sweep was trained for {sorted(df['steps'].unique().tolist())} steps, not {steps}")
    keys = pd.MultiIndex.from_tuples(want, names=["task", "spec", "zero_channel"])
    idx = pd.MultiIndex.from_arrays([df["task"], df["spec"], df["zero_channel"].astype(bool)])
    seeds = sorted(set(int(s) for s in seeds))
    out = df[idx.isin(keys) & df["seed"].isin(seeds)]
    got = out.groupby(["task", "spec", "zero_channel"])["seed"].nunique().reindex(keys, fill_value=0)
    if (got < len(seeds)).any():
        raise ValueError(f"the stored sweep lacks some of the seeds {seeds} (it has {sorted(df['seed'].unique().tolist())})")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Reading prompts and stating the differences
# ---------------------------------------------------------------------------------------------
_SYMBOLS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def decode_prompt(task: str, x, y, **params) -> tuple[str, str]:
    """A readable form of one canonical prompt ``x`` (T,) and its answer ``y``.

    Index: symbols as letters (``a``, ``b``, ...), the offset token as ``<-q`` (read ``q`` back from the query).
    Retrieval / partial induction: a pair token as key letter + value digit (``c2``), the query as ``c?``, the
    answer as the value digit.
    """
    p = C.task_params(task, **params)
    x = [int(t) for t in x]
    y = int(y)
    if task == "index":
        ns = p["n_symbols"]
        if ns > len(_SYMBOLS):
            raise ValueError(f"decode_prompt names at most {len(_SYMBOLS)} symbols, the task has {ns}")
        words = [_SYMBOLS[t] if t < ns else f"<-{t - ns + 1}" for t in x]
        return " ".join(words), _SYMBOLS[y]
    nk, nv = p["n_keys"], p["n_values"]
    if nk > len(_SYMBOLS):
        raise ValueError(f"decode_prompt names at most {len(_SYMBOLS)} keys, the task has {nk}")

    def word(t):
        if t < nk * nv:
            return f"{_SYMBOLS[t // nv]}{t % nv + 1}"
        if t < nk * nv + nk:
            return f"{_SYMBOLS[t - nk * nv]}?"
        return str(t - nk * nv - nk + 1)

    return " ".join(word(t) for t in x), word(y)


def difference_notes(df: pd.DataFrame, solved: float = 0.9, margin: float = 0.1) -> list[str]:
    """Sentences (Markdown) on where a sweep differs from Paper 1's account, with the numbers: partial induction
    short of solved, Index ends hurt by aliasing (a period shorter than the number of offsets), and the fastest
    frequency not being the best one for Index.  Empty when none applies."""
    acc = accuracy_table(df)
    shp = C.shape_summary(df)
    notes = []
    two = acc[(acc["task"] == "partial_induction") & acc["zero_channel"]]
    one = acc[(acc["task"] == "partial_induction") & ~acc["zero_channel"]]
    if len(two) and len(one):
        b2, b1 = two.loc[two["acc"].idxmax()], one.loc[one["acc"].idxmax()]
        if b2["acc"] < solved:
            notes.append(f"**Partial induction is not solved.** The best two-angle head ({_fmt_spec(b2)}) reaches "
                         f"{b2['acc']:.2f}, against {b1['acc']:.2f} for the best single angle ({_fmt_spec(b1)}): "
                         f"two angles help by {b2['acc'] - b1['acc']:+.2f}, but stay below {solved:.2f}.")
    ix = acc[acc["task"] == "index"]
    if len(ix):
        m = int(df.loc[df["task"] == "index", "distance"].max())  # offsets 1..m
        for _, r in shp[(shp["task"] == "index") & (shp["freq"] >= 0)].iterrows():
            period = 2 * np.pi / r["angle"]
            if period < m and r["ends_minus_middle"] <= -margin:
                notes.append(f"**Aliasing at {_fmt_spec(r)}.** Its period is {period:.1f} positions, shorter than the "
                             f"{m} offsets an Index prompt can ask for, and its *ends* are worse: {r['ends']:.2f} "
                             f"against {r['middle']:.2f} in the middle, the opposite of a U.")
        rope = ix[ix["freq"] >= 0]
        if len(rope) >= 2:
            best, fastest = ix.loc[ix["acc"].idxmax()], rope.iloc[0]
            if best["freq"] >= 0 and best["freq"] > fastest["freq"] and best["acc"] - fastest["acc"] >= 0.02:
                notes.append(f"**The fastest frequency is not the best for Index.** {_fmt_spec(fastest)} "
                             f"(period {2 * np.pi / fastest['angle']:.1f} positions) reaches {fastest['acc']:.2f}, "
                             f"{_fmt_spec(best)} (period {2 * np.pi / best['angle']:.1f}) reaches {best['acc']:.2f}.")
    return notes


def curve_picks(df: pd.DataFrame, task: str, zero_channel: bool = False, k: int = 4) -> list[str]:
    """Up to ``k`` spec labels of ``task`` worth drawing as accuracy-vs-position curves: the most accurate head,
    the one with the strongest U, the one with the strongest inverse U, then the fastest and the slowest/NoPE;
    returned from the fastest frequency to NoPE."""
    acc = accuracy_table(df)
    acc = acc[(acc["task"] == task) & (acc["zero_channel"] == zero_channel)].reset_index(drop=True)
    if not len(acc):
        return []
    shp = C.shape_summary(df)
    shp = shp[(shp["task"] == task) & (shp["zero_channel"] == zero_channel)]
    order = [acc.loc[acc["acc"].idxmax(), "spec"],
             shp.loc[shp["ends_minus_middle"].idxmax(), "spec"], shp.loc[shp["ends_minus_middle"].idxmin(), "spec"],
             acc["spec"].iloc[0], acc["spec"].iloc[-1]]
    picked = []
    for s in order:
        if s not in picked and len(picked) < k:
            picked.append(s)
    return [s for s in acc["spec"] if s in picked]


# -----------------------------------------------------------------------------
# The page: its steps, tables and figures

TASK_TITLES = {"index": "Index", "retrieval": "Retrieval", "partial_induction": "Partial induction"}
#: The toy heads of the page: prompts of T tokens (T - 1 keys and the query), heads of dimension D_HEAD.
T, D_HEAD = 17, 16
#: The query-weight scales of the random-model check (1 = the random model, 0 = W_Q = 0).
WQ_SCALES = (1.0, 0.3, 0.1, 0.01, 0.0)


def _table(df, **kw):
    from ..display import table
    return table(df, **kw)


def _head_label(freq, zero_channel) -> str:
    return ("NoPE" if freq < 0 else f"k={freq}") + (" + zero" if zero_channel else "")


def use_one_thread() -> None:
    """Run torch on one thread: the small models of this chapter run fastest so on a shared machine."""
    torch.set_num_threads(1)


def _glue(name: str, text) -> None:
    from IPython.display import Markdown
    from myst_nb import glue
    glue(name, Markdown(str(text)), display=False)


def small_scale_warning(scale: str):
    """The warning shown at the ``smoke`` and ``teaching`` scales (a Markdown object), ``None`` at ``paper``."""
    from IPython.display import Markdown
    if scale == "paper":
        return None
    return Markdown(
        ":::{warning} Small scale\n"
        f"This copy of the chapter was executed at the `{scale}` scale: the canonical-task heads are trained "
        "briefly, on few frequencies and one seed, and need not learn their tasks. The numbers below come from "
        "these runs; the sentences between them describe what to look for. The `paper` scale reads the committed "
        "sweep in `data/canonical/` (`make book` builds that version).\n:::")


def push_paths(seed: int, sharpness: float = 20.0, n_steps: int = 21) -> pd.DataFrame:
    """One sharp random toy head (query and keys drawn with ``seed``, the RoPE ladder of a ``D_HEAD``-dimensional
    head) pushed towards positional, symbolic and both behaviours (:func:`push_path`, ``n_steps`` values of t
    from 0 to 1)."""
    _glue("seed_text", seed)
    rng = np.random.default_rng(seed)
    q0, keys0 = rng.standard_normal(D_HEAD) / math.sqrt(D_HEAD), rng.standard_normal((T, D_HEAD))
    angles16 = rope_angles(D_HEAD).numpy()
    ts = np.linspace(0, 1, n_steps)
    return pd.concat([push_path(q0, keys0, angles16, sharpness=sharpness, ts=ts, towards=w)
                      for w in ("positional", "symbolic", "both")], ignore_index=True)


def push_ends_table(paths: pd.DataFrame):
    """The scores at the two ends (t = 0 and t = 1) of every path of :func:`push_paths`, with the two sides of
    the exclusion bound; the caption gives the largest ratio Var(lambda) / bound along the paths."""
    ends = paths[paths["t"].isin([0.0, 1.0])]
    worst = (paths["logit_var"] / paths["bound"]).max()
    return _table(ends[["towards", "t", "pos", "sym", "entropy_norm", "logit_var", "bound"]].round(4),
                  key_columns=["towards", "t"],
                  digits={"t": 0, "pos": 4, "sym": 4, "entropy_norm": 4, "logit_var": 4, "bound": 4},
                  caption=f"The toy head before (t = 0) and after (t = 1) the push; largest Var(λ) / bound along "
                          f"the paths: {worst:.4f}")


def plot_push_paths(paths: pd.DataFrame):
    """The scores and the normalised entropy of the toy head along each push of :func:`push_paths` (one
    panel per direction). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0), sharey=True)
    for ax, (w, g) in zip(axes, paths.groupby("towards", sort=False)):
        ax.plot(g["t"], g["pos"], color=COLORS["positional"], label=r"$s_{\rm pos}$")
        ax.plot(g["t"], g["sym"], color=COLORS["symbolic"], label=r"$s_{\rm sym}$")
        ax.plot(g["t"], g["entropy_norm"], color=COLORS["entropy"], ls="--", label="entropy / log T")
        ax.set(title=f"towards {w}", xlabel="push t", ylim=(-0.03, 1.05))
    axes[0].set_ylabel("score")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def random_prompts(n: int, seed: int, vocab_size: int = 64) -> torch.Tensor:
    """``n`` random token prompts of ``T`` tokens (vocabulary ``vocab_size``), drawn with ``seed``."""
    return torch.randint(0, vocab_size, (n, T), generator=torch.Generator().manual_seed(seed))


def query_scaling_table(x: torch.Tensor, seed: int, scales: Sequence[float] = WQ_SCALES):
    """Scores of a random two-layer model (:func:`random_model`) on the prompts ``x`` as its query weights are
    scaled towards zero (``W_Q -> 0`` makes every logit 0: both positional and symbolic)."""
    from ..metrics import model_scores, scores_table
    rows = []
    for eps in scales:
        model = random_model(vocab_size=64, n_layer=2, d_model=32, seed=seed)
        with torch.no_grad():
            for blk in model.blocks:
                blk.attn.q_proj.weight.mul_(eps)
        tab = scores_table(model_scores(model, x), T=x.shape[1])
        rows.append(tab.assign(W_Q_scale=eps)[["W_Q_scale", "layer", "pos", "sym", "entropy_norm"]])
    out = pd.concat(rows).round(4)
    return _table(out, key_columns=["W_Q_scale", "layer"], digits={"W_Q_scale": 2, "pos": 4, "sym": 4,
                                                                    "entropy_norm": 4},
                  caption="A random two-layer model with its query weights scaled by W_Q_scale")


def random_heads_summary(Ms, heads: pd.DataFrame) -> str:
    """Three lines about the random toy heads of :func:`random_toy_heads`: how many reach the corner (1, 1) and
    how uniform they are, how many sharp heads get there, and the largest Var(lambda) / bound (glues the number
    of heads for the figure caption)."""
    _glue("n_heads_text", f"{len(heads):,}")
    corner = heads[(heads["pos"] >= 0.9) & (heads["sym"] >= 0.9)]
    sharp = heads[heads["entropy_norm"] < 0.9]
    ratio = max(exclusion_terms(M)["logit_var"] / max(exclusion_terms(M)["bound"], 1e-300) for M in Ms)
    return (f"{len(heads)} random heads; {len(corner)} have both scores >= 0.9, and their normalised entropy is "
            f"at least {corner['entropy_norm'].min():.4f}\n"
            f"{len(sharp)} heads have normalised entropy < 0.9; of these, "
            f"{int(((sharp['pos'] >= 0.9) & (sharp['sym'] >= 0.9)).sum())} have both scores >= 0.9\n"
            f"largest Var(lambda) / bound over all heads: {ratio:.4f}")


def plot_random_heads(heads: pd.DataFrame):
    """The random toy heads in the score plane, coloured by their normalised attention entropy. Returns the
    Figure."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sc = ax.scatter(heads["pos"], heads["sym"], c=heads["entropy_norm"], cmap="cividis", s=10, vmin=0, vmax=1)
    fig.colorbar(sc, ax=ax, label="attention entropy / log T")
    ax.set(xlabel=r"positional score $s_{\rm pos}$", ylabel=r"symbolic score $s_{\rm sym}$",
           xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    return fig


def fast_vs_rerun_table(check: pd.DataFrame, n_prompts: int):
    """The scores of :func:`fast_vs_rerun` per layer, fast and re-run; the caption gives the largest
    difference."""
    worst = check[["max_diff_pos", "max_diff_sym"]].to_numpy().max()
    text = "< 1e-6" if worst < 1e-6 else f"{worst:.1e}"
    return _table(check[["layer", "pos_fast", "pos_rerun", "sym_fast", "sym_rerun"]].round(4),
                  key_columns=["layer"], digits={c: 4 for c in ("pos_fast", "pos_rerun", "sym_fast", "sym_rerun")},
                  caption=f"Fast metric against the re-run reference: max |fast − re-run| over {n_prompts} "
                          f"prompts and both scores {text}")


def example_prompts(seed: int, n: int = 2) -> str:
    """``n`` decoded prompts of every canonical task (:func:`posym.canonical.generate`), one per line."""
    lines = []
    for task in C.TASKS:
        b = C.generate(task, n, seed=seed)
        lines.append(f"{task}  (vocabulary {C.vocab_size(task)}, chance {C.chance_level(task):.4f})")
        for x, y in zip(b.x, b.y):
            text, ans = decode_prompt(task, x, y)
            lines.append(f"    {text}  ->  {ans}")
    return "\n".join(lines)


def ladder_table(g, specs: Sequence, pi_specs: Sequence):
    """Angle and period of every swept single frequency (and NoPE)."""
    ladder = pd.DataFrame([{"spec": str(s), "angle (rad/position)": 0.0 if s == "nope" else g[int(s)],
                            "period (positions)": math.inf if s == "nope" else 2 * math.pi / g[int(s)]}
                           for s in dict.fromkeys(list(specs) + list(pi_specs)) if s == "nope" or str(s).isdigit()])
    return _table(ladder.round(4), key_columns=["spec"], digits={"angle (rad/position)": 4,
                                                                 "period (positions)": 4},
                  caption="The swept frequencies: angle per position and period")


def sweep_settings(cfg) -> tuple[C.Settings, np.ndarray]:
    """The training settings of the canonical-task heads (steps, held-out sizes of ``cfg``) and the angles
    ``g_k`` of their 32 RoPE frequencies."""
    settings = C.Settings(steps=cfg.steps, eval_size=cfg.eval_size, score_size=cfg.score_size)
    return settings, C.angles(settings)


def best_swept_index_head(acc: pd.DataFrame) -> str:
    """One line: the best Index head of the sweep (:func:`accuracy_table`) and the frequencies swept."""
    ix = acc[(acc["task"] == "index") & (acc["freq"] >= 0)]
    best = ix.loc[ix["acc"].idxmax()]
    return (f"best swept Index head here: k = {int(best['freq'])} (accuracy {best['acc']:.4f}); swept: "
            f"{', '.join(str(int(f)) for f in ix['freq'])}")


def canonical_sweep(cfg, settings: C.Settings) -> tuple[pd.DataFrame, str]:
    """The canonical-task sweep at ``cfg.scale`` and a line saying where it comes from.

    ``paper``: the committed sweep ``data/canonical/sweep.parquet`` restricted to the chapter's frequencies,
    seeds and steps (:func:`select_sweep`); ``smoke``/``teaching``: trained here (:func:`sweep_jobs`,
    :func:`posym.canonical.run_jobs`).
    """
    specs, pi_specs = parse_specs(cfg.freqs), parse_specs(cfg.pi_freqs)
    seeds = list(range(cfg.seed, cfg.seed + cfg.n_seeds))
    _glue("scale_text", cfg.scale)
    _glue("seeds_text", f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
                        f"({', '.join(map(str, seeds))})")
    if cfg.scale == "paper":
        sweep = select_sweep(pd.read_parquet(cfg.data_dir / "canonical" / "sweep.parquet"), specs, pi_specs,
                             seeds, steps=cfg.steps)
        return sweep, f"read {len(C.model_table(sweep))} trained heads from data/canonical/sweep.parquet"
    jobs = sweep_jobs(specs, pi_specs, seeds, settings)
    sweep = C.run_jobs(jobs)
    return sweep, f"trained {len(jobs)} heads in {C.model_table(sweep)['train_s'].sum():.0f} s of training"


def accuracy_display(acc: pd.DataFrame):
    """:func:`accuracy_table` as a folded table, one row per head of the sweep."""
    show = acc.assign(head=[_head_label(f, z) for f, z in zip(acc["freq"], acc["zero_channel"])])
    cols = ["task", "head", "angle", "acc", "acc_min", "acc_max", "s_pos", "s_sym", "entropy_norm", "seeds"]
    return _table(show[cols].round(4), key_columns=["task", "head"], digits={c: 4 for c in cols[2:-1]},
                  fold=f"Every head of the sweep ({len(show)} rows): accuracy and scores, seed means")


def _freq_order(acc: pd.DataFrame) -> list:
    return sorted(set(acc["freq"]), key=lambda f: (f < 0, f))  # fastest first, NoPE last


def plot_accuracy_by_frequency(acc: pd.DataFrame):
    """Held-out accuracy against the one frequency a head may use, per task (one panel each): seed mean and
    range, with and without the zero channel; dotted: chance. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, PALETTE
    order = _freq_order(acc)

    def xpos(freq):
        return np.array([order.index(f) for f in np.atleast_1d(freq)])

    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.2), sharey=True)
    for ax, task in zip(axes, C.TASKS):
        for zc, color, label in ((False, PALETTE[0], "one angle"), (True, PALETTE[2], "angle + zero channel")):
            a = acc[(acc["task"] == task) & (acc["zero_channel"] == zc)]
            if not len(a):
                continue
            x = xpos(a["freq"])
            ax.plot(x, a["acc"], "o-", ms=4, color=color, label=label)
            ax.fill_between(x, a["acc_min"], a["acc_max"], color=color, alpha=0.2, lw=0)
        ax.axhline(C.chance_level(task), color=COLORS["neutral"], ls=":", lw=1)
        _freq_ticks(ax, xpos(order), order)
        ax.set(title=TASK_TITLES[task], xlabel="frequency index k", ylim=(0, 1.03))
    axes[0].set_ylabel("held-out accuracy")
    handles = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=2)
    return fig


def _freq_ticks(ax, x, freqs) -> None:
    """Frequency labels on ``ax``: every label when there are few, else every other one (NoPE always)."""
    labels = ["NoPE" if f < 0 else str(f) for f in freqs]
    if len(labels) > 7:
        labels = [l if (i % 2 == 0 or l == "NoPE") else "" for i, l in enumerate(labels)]
    ax.set_xticks(x, labels)


def plot_position_curves(sweep: pd.DataFrame, acc: pd.DataFrame):
    """Held-out accuracy per answer position for a few heads of each task (:func:`curve_picks`), seed means;
    dotted: chance. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    curves = C.position_curve(sweep)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.9), sharey=True)
    cmap = plt.get_cmap("cividis")
    for ax, task in zip(axes, C.TASKS):
        zc = task == "partial_induction" and bool(acc.loc[acc["task"] == task, "zero_channel"].any())
        picks = curve_picks(sweep, task, zero_channel=zc)
        for i, spec in enumerate(picks):
            c = curves[(curves["task"] == task) & (curves["spec"] == spec) & (curves["zero_channel"] == zc)]
            ax.plot(c["answer_pos"], c["accuracy"], "o-", ms=3, color=cmap(i / max(1, len(picks) - 1) * 0.9),
                    label=_head_label(int(c["freq"].iloc[0]), zc))
        ax.axhline(C.chance_level(task), color=COLORS["neutral"], ls=":", lw=1)
        ax.set(title=TASK_TITLES[task], xlabel="answer position", ylim=(0, 1.03))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, handlelength=1.2, columnspacing=0.8)
    axes[0].set_ylabel("held-out accuracy")
    return fig


def shape_table(sweep: pd.DataFrame):
    """:func:`posym.canonical.shape_summary` per head (task order, fastest frequency first), folded."""
    shapes = C.shape_summary(sweep)
    shapes = (shapes.assign(_t=shapes["task"].map(C.TASKS.index), _f=shapes["freq"].where(shapes["freq"] >= 0, 99))
              .sort_values(["_t", "zero_channel", "_f"]))
    out = shapes[["task", "spec", "ends", "middle", "ends_minus_middle"]].round(4)
    return _table(out, key_columns=["task", "spec"], digits={c: 4 for c in ("ends", "middle", "ends_minus_middle")},
                  fold=f"The shape of every head's accuracy curve ({len(out)} rows): ends, middle and their difference")


def plot_scores_by_frequency(acc: pd.DataFrame):
    """Accuracy beside the positional and symbolic scores of the trained heads against their frequency, per
    task (partial induction with the zero channel when swept). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.2), sharey=True)
    for ax, task in zip(axes, C.TASKS):
        zc = task == "partial_induction" and bool(acc.loc[acc["task"] == task, "zero_channel"].any())
        a = acc[(acc["task"] == task) & (acc["zero_channel"] == zc)]
        order = _freq_order(a)
        x = np.array([order.index(f) for f in a["freq"]])
        ax.plot(x, a["acc"], "o-", ms=4, color="black", label="accuracy")
        ax.plot(x, a["s_pos"], "s--", ms=4, color=COLORS["positional"], label=r"$s_{\rm pos}$")
        ax.plot(x, a["s_sym"], "^--", ms=4, color=COLORS["symbolic"], label=r"$s_{\rm sym}$")
        _freq_ticks(ax, x, list(a["freq"]))
        ax.set(title=TASK_TITLES[task] + (" + zero" if zc else ""), xlabel="frequency index k", ylim=(-0.03, 1.05))
    axes[0].set_ylabel("accuracy / score")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def comparison_table(sweep: pd.DataFrame):
    """:func:`paper_comparison` as a table (agree: yes / no / n/a)."""
    comparison = paper_comparison(sweep)
    comparison["agree"] = comparison["agree"].map({True: "yes", False: "no", None: "n/a"})
    return _table(comparison, key_columns=[comparison.columns[0]],
                  caption="Paper 1's claims about the canonical tasks beside this sweep")


def difference_markdown(sweep: pd.DataFrame):
    """:func:`difference_notes` as a Markdown list."""
    from IPython.display import Markdown
    notes = difference_notes(sweep)
    return Markdown("Where this run differs from Paper 1's account (`posym.chapters.metric.difference_notes`):\n\n"
                    + ("\n".join(f"* {n}" for n in notes) if notes else "* nothing beyond the table above."))


# -----------------------------------------------------------------------------
# The chapter's parameters

_HOW = "python scripts/canonical_sweep.py  (about 25 min on one CPU thread; see data/canonical/README.md)"


def _checks(params: dict):

    for name in ("freqs", "pi_freqs"):
        try:
            parse_specs(params[name])
        except ValueError as e:
            return name, f"must be comma-separated frequency specs (0..31, 'k1+k2' or 'nope'): {e}"
    if params["score_size"] > params["eval_size"]:
        return "score_size", f"must be at most eval_size ({params['eval_size']}), got {params['score_size']}"
    return None


register(ChapterSpec(
    name="metric",
    params={
        "seed": Param(int, 0, "seed of the random toy heads and models, and the first training seed",
                      min=0, max=2**31 - 1),
        "n_heads": Param(int, {"smoke": 500, "teaching": 1000, "paper": 2000},
                         "random toy heads in the exclusion-principle scatter", min=10, max=20_000),
        "n_prompts": Param(int, {"smoke": 4, "teaching": 8, "paper": 32},
                           "prompts of the fast-vs-re-run check of the metric", min=1, max=256),
        "freqs": Param(str, {"smoke": "2,8,nope", "teaching": "0,4,6,8,10,12,16,nope",
                             "paper": "0,2,4,6,8,10,12,14,16,31,nope"},
                       "frequency indices (0 = fastest of 32) swept for Index and Retrieval; 'nope' = no RoPE "
                       "(the paper scale reads them from the committed sweep)"),
        "pi_freqs": Param(str, {"smoke": "10", "teaching": "6,10,14",
                                "paper": "0,2,4,6,8,10,12,14,16,31,nope"},
                          "frequency indices swept for partial induction, each alone and with the zero channel"),
        "n_seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": 3},
                         "training seeds per head (the committed sweep has 3)", min=1, max=5),
        "steps": Param(int, {"smoke": 100, "teaching": 600, "paper": 600},
                       "training steps per head (the committed sweep used 600)", min=10, max=100_000),
        "eval_size": Param(int, {"smoke": 1024, "teaching": 2048, "paper": 4096},
                           "held-out prompts per head for the accuracy", min=64, max=65_536),
        "score_size": Param(int, {"smoke": 32, "teaching": 64, "paper": 128},
                            "held-out prompts per head for s_pos / s_sym", min=1, max=4096),
    },
    requires={"paper": (Required("canonical/sweep.parquet", _HOW, "the canonical-task frequency sweep"),)},
    checks=(_checks,),
))
