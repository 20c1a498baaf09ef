"""Length generalisation (Paper 2, §3.6 and App. H).

We lengthen a prompt by prepending fresh target-window tokens *before* the target window
(:meth:`posym.tasks.Task.extend_target_window`): the instructions, the query and the answer are
unchanged, and the chain never needs the new tokens.  A model that truly follows the chain keeps its
accuracy; what breaks it is attention dispersing over more keys, and RoPE rotations it never saw.

Evaluation is batched, uses the fused attention path (no T x T matrix is materialised on CPU), and
computes only the last query's row in the final block, so 5,000-token prompts fit in a few hundred MB.

Beyond the paper, :func:`margin_analysis` measures the discrepancy (Def. 3.1) and the margin of the trained
model's key heads as the prompts grow, and :func:`predicted_breaks` compares the length at which they
collapse with the length at which accuracy breaks (the paper names this as future work).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from .tasks import QUERY_POS, balanced_eval_set, get_task, to_tensors

DEFAULT_LENGTHS = (17, 25, 50, 100, 200, 300, 500, 850, 1000, 1500, 2000, 3000, 4000, 5000)


def extended_prompts(task: str, seed: int, length: int, n: int, split: str = "test"):
    """``n`` hop-balanced prompts of total ``length`` tokens (17 + prepended target-window tokens)."""
    base = QUERY_POS + 1
    if length < base:
        raise ValueError(f"length must be at least {base} (the task's own length), got {length}")
    t = get_task(task)
    samples = balanced_eval_set(t, n, seed=seed, split=split)
    rng = np.random.default_rng([seed, 104729, length])
    return [t.extend_target_window(s, length - base, rng) for s in samples]


def auto_batch(length: int, device: str, budget_tokens: int | None = None) -> int:
    """Prompts per forward pass so that one batch holds about ``budget_tokens`` tokens."""
    if budget_tokens is None:
        budget_tokens = 400_000 if str(device).startswith("cuda") else 60_000
    return max(1, budget_tokens // length)


@torch.no_grad()
def accuracy_at_length(model, task: str, seed: int, length: int, n: int = 500, device: str = "cpu",
                       batch_size: int | None = None) -> pd.DataFrame:
    """Accuracy overall and per hop for ``n`` prompts of the given length."""
    if model.cfg.max_seq_len is not None and length > model.cfg.max_seq_len:
        raise ValueError(f"length {length} exceeds the model's max_seq_len={model.cfg.max_seq_len}")
    samples = extended_prompts(task, seed, length, n)
    x, y, hops = to_tensors(samples, get_task(task).vocab)
    bs = batch_size or auto_batch(length, device)
    model.eval()
    preds = []
    for i in range(0, len(x), bs):
        preds.append(model(x[i:i + bs].to(device), last_only=True, fast=True)[:, -1].argmax(-1).cpu())
    correct = (torch.cat(preds) == y).float()
    rows = [{"length": length, "hop": "all", "accuracy": correct.mean().item(), "n": len(correct)}]
    for k in range(1, 5):
        m = hops == k
        rows.append({"length": length, "hop": str(k), "accuracy": correct[m].mean().item(), "n": int(m.sum())})
    return pd.DataFrame(rows)


def length_curve(model, task: str, seed: int, lengths=DEFAULT_LENGTHS, n: int = 500, device: str = "cpu",
                 progress: bool = False, **keys) -> pd.DataFrame:
    frames = []
    it = lengths
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(lengths, desc=f"length {task}", leave=False)
    for L in it:
        t0 = time.time()
        df = accuracy_at_length(model, task, seed, L, n=n, device=device)
        df["seconds"] = time.time() - t0
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for k, v in keys.items():
        out.insert(0, k, v)
    return out


# ---------------------------------------------------------------------------------------------
# Summaries and the paper's curve
# ---------------------------------------------------------------------------------------------


def length_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy and 95 % t-interval half-width over seeds, per task, length and hop.

    ``table`` is a stack of :func:`length_curve` tables with ``task`` and ``seed`` columns (for example
    ``posym.results.load_table(root, "length")``).  Columns: task, hop, length, mean, ci, lo, hi, seeds.
    """
    from .stats import mean_halfwidth

    rows = []
    for (task, hop, L), g in table.groupby(["task", "hop", "length"]):
        m, h = mean_halfwidth(g["accuracy"])
        hh = 0.0 if not np.isfinite(h) else h
        rows.append({"task": task, "hop": str(hop), "length": int(L), "mean": m, "ci": h,
                     "lo": max(0.0, m - hh), "hi": min(1.0, m + hh), "seeds": len(g)})
    return pd.DataFrame(rows).sort_values(["task", "hop", "length"]).reset_index(drop=True)


def break_length(lengths, accuracy, threshold: float, interpolate: bool = True) -> float | None:
    """The length at which an accuracy curve first falls below ``threshold``.

    With ``interpolate`` the crossing is placed between the last length at or above the threshold and the
    first one below, linearly in log(length); otherwise the first length below is returned.  Returns
    ``None`` when the curve never falls below the threshold, and the first length when it starts below.
    """
    L = np.asarray(lengths, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    if L.shape != a.shape or L.ndim != 1 or len(L) == 0:
        raise ValueError("lengths and accuracy must be 1-D arrays of the same, non-zero length")
    order = np.argsort(L, kind="stable")
    L, a = L[order], a[order]
    below = np.flatnonzero(a < threshold)
    if not below.size:
        return None
    i = int(below[0])
    if i == 0 or not interpolate:
        return float(L[i])
    x0, x1, y0, y1 = np.log(L[i - 1]), np.log(L[i]), a[i - 1], a[i]
    x = x0 + (y0 - threshold) / (y0 - y1) * (x1 - x0)
    return float(np.exp(x))


def break_table(table: pd.DataFrame, thresholds=(0.9, 0.5), hop: str = "all") -> pd.DataFrame:
    """Break length (:func:`break_length`, interpolated) of every task x seed curve at each threshold."""
    t = table[table["hop"].astype(str) == hop]
    keys = [c for c in ("task", "seed") if c in t.columns]
    rows = []
    for key, g in t.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        for thr in thresholds:
            rows.append({**dict(zip(keys, key)), "threshold": thr,
                         "break_length": break_length(g["length"], g["accuracy"], thr)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Discrepancy of the trained heads vs length (beyond the paper)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def last_query_scores(model, x: torch.Tensor, layers) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Output logits of the last position (B, V) and, for each layer in ``layers``, the attention scores of the
    last query over every key (B, H, T): ``q.k / sqrt(d_head)`` after RoPE, as ``hook_attn_scores`` shows them.

    Runs the fused fast path (no T x T matrix on any layer) and adds, at the chosen layers only, one key
    projection of the whole sequence and one query projection of the last row.  Memory is O(B T D).
    """
    from .rope import apply_rope, rope_cos_sin

    model.check_input(x)
    layers = {int(l) for l in layers}
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layer]
    if bad:
        raise ValueError(f"layers {sorted(bad)} out of range for a {model.cfg.n_layer}-layer model")
    was_training = model.training
    model.eval()
    try:
        B, T = x.shape
        h = model.drop(model.wte(x))
        cos, sin = rope_cos_sin(torch.arange(T, device=x.device), model.blocks[0].attn.angles, dtype=h.dtype)
        scores: dict[int, torch.Tensor] = {}
        n = len(model.blocks)
        for i, blk in enumerate(model.blocks):
            if i in layers:
                a = blk.attn
                hn = blk.ln_1(h)
                q, k = a.split_heads(a.q_proj(hn[:, -1:])), a.split_heads(a.k_proj(hn))
                if a.dim_mask is not None:
                    q, k = q * a.dim_mask, k * a.dim_mask
                q, k = apply_rope(q, cos[-1:], sin[-1:]), apply_rope(k, cos, sin)
                scores[i] = (q @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(a.d_head)
            h = blk.forward_fast(h, cos, sin, last_only=i == n - 1)
        return model.lm_head(model.ln_f(h))[:, -1], scores
    finally:
        model.train(was_training)


#: Which key positions count as "right" for the last query of a task's key heads (see :func:`target_mask`).
DEFAULT_TARGETS = {"number": "chain", "letter": "answer"}


def target_mask(samples, kind: str) -> np.ndarray:
    """(B, T) boolean mask of the positions a key head of the last query should attend to.

    ``"answer"``: the answer's position; ``"first"``: the first hop's target (for the Number task the
    position the query number points at); ``"chain"``: every position of the chain after the query (in the
    trained Number model the positional layers of the last query read the first hop or, on some prompts,
    a later node of the same chain).
    """
    if kind not in ("answer", "first", "chain"):
        raise ValueError(f"target kind must be 'answer', 'first' or 'chain', got {kind!r}")
    T = len(samples[0].tokens)
    m = np.zeros((len(samples), T), dtype=bool)
    for i, s in enumerate(samples):
        if len(s.tokens) != T:
            raise ValueError("all samples must have the same length")
        pos = {"answer": [s.chain[-1]], "first": [s.chain[1]], "chain": list(s.chain[1:])}[kind]
        m[i, pos] = True
    return m


def _margins(scores: np.ndarray, mask: np.ndarray):
    """Per row: margin (best target - best other), Def. 3.1 discrepancy (top-1 - top-2), softmax weight on
    the targets, and whether the arg-max is a target."""
    s = scores.astype(np.float64)
    good = np.where(mask, s, -np.inf).max(-1)
    bad = np.where(~mask, s, -np.inf).max(-1)
    top2 = np.sort(s, axis=-1)[:, -2:]
    e = np.exp(s - s.max(-1, keepdims=True))
    w = (e * mask).sum(-1) / e.sum(-1)
    return good - bad, top2[:, 1] - top2[:, 0], w, good > bad, good, bad


@torch.no_grad()
def margin_analysis(model, task: str, seed: int, lengths, n: int = 64, layers=None, targets: str | None = None,
                    batch_size: int | None = None, progress: bool = False, device: str = "cpu") -> pd.DataFrame:
    """For prompts lengthened to each of ``lengths``, the attention logits of the last query in ``layers`` (all
    by default) and the model's answer, from one forward pass per batch.

    One row per length x prompt x layer: length, prompt, hop, correct (the model's answer), layer, margin
    (logit of the best target key minus the best other key, :func:`target_mask`), discrepancy (Def. 3.1:
    top-1 minus top-2 logit), weight (softmax attention on the targets), hit (arg-max on a target),
    target_logit and other_logit (the two terms of the margin).  The prompts are those of
    :func:`accuracy_at_length` for the same seed.
    """
    task_obj = get_task(task)
    targets = targets or DEFAULT_TARGETS[task_obj.name]
    layers = list(range(model.cfg.n_layer)) if layers is None else [int(l) for l in layers]
    frames = []
    it = lengths
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(lengths, desc=f"margins {task}", leave=False)
    for L in it:
        samples = extended_prompts(task, seed, int(L), n)
        x, y, hops = to_tensors(samples, task_obj.vocab)
        mask = target_mask(samples, targets)
        bs = batch_size or auto_batch(int(L), device)
        for b0 in range(0, len(x), bs):
            logits, sc = last_query_scores(model, x[b0:b0 + bs].to(device), layers)
            correct = (logits.argmax(-1).cpu() == y[b0:b0 + bs]).numpy()
            m = mask[b0:b0 + bs]
            for l in layers:
                s = sc[l][:, 0].double().cpu().numpy()
                mg, disc, w, hit, good, bad = _margins(s, m)
                frames.append(pd.DataFrame({"length": int(L), "prompt": np.arange(b0, b0 + len(s)),
                                            "hop": hops[b0:b0 + bs].numpy(), "correct": correct, "layer": l,
                                            "margin": mg, "discrepancy": disc, "weight": w, "hit": hit,
                                            "target_logit": good, "other_logit": bad}))
    return pd.concat(frames, ignore_index=True)


def key_layers(analysis: pd.DataFrame, min_rate: float = 0.9, length: int | None = None) -> list[int]:
    """Layers whose last-query arg-max is on a target in at least ``min_rate`` of the prompts at ``length``
    (default: the shortest length analysed); the single best layer if none reaches it."""
    L = int(analysis["length"].min()) if length is None else int(length)
    rate = analysis[analysis["length"] == L].groupby("layer")["hit"].mean()
    chosen = sorted(int(l) for l in rate.index[rate >= min_rate])
    return chosen or [int(rate.idxmax())]


def _relied_on(table: pd.DataFrame, layers, base_length: int | None) -> pd.DataFrame:
    """Rows of the key ``layers`` that the prompt relied on at the base length: the (prompt, layer) pairs whose
    arg-max was on a target there.  A prompt that relied on none of them cannot be judged and is left out."""
    a = table[table["layer"].isin(list(layers))]
    L0 = int(a["length"].min()) if base_length is None else int(base_length)
    base = a[a["length"] == L0].assign(relied=lambda d: d["margin"] > 0)[["prompt", "layer", "relied"]]
    out = a.merge(base, on=["prompt", "layer"], how="left")
    return out[out["relied"].fillna(False).astype(bool)]


def margin_summary(analysis: pd.DataFrame, layers, base_length: int | None = None) -> pd.DataFrame:
    """Per length: measured accuracy on the analysed prompts and what the key heads' logits predict.

    A prompt is judged on the key layers it *relied on* at the base length (default: the shortest analysed),
    i.e. whose arg-max was on a target there: a trained model can be right at 17 tokens while one of its key
    heads reads elsewhere (another node of the chain, a shortcut), and that head's miss is not a failure.
    Prompts that relied on none of the key layers are left out of the predictions (``judged`` counts the
    others); ``acc`` is over all prompts.

    * ``acc``: the model's accuracy;
    * ``kept``: fraction of prompts whose relied-on key heads all keep their arg-max on a target (margin > 0);
    * ``guaranteed``: fraction whose relied-on key heads all have margin at least log(n - 1), so that Lemma F.1
      guarantees each of them at least half of its attention on the targets whatever the other logits are;
    * ``median_margin``, ``median_discrepancy`` (Def. 3.1 top-1 - top-2) and ``median_weight`` (the softmax
      weight on the targets) of each prompt's weakest relied-on head, and the threshold ``need`` = log(n - 1).
    """
    a = _relied_on(analysis, layers, base_length)
    per = a.groupby(["length", "prompt"]).agg(margin=("margin", "min"), discrepancy=("discrepancy", "min"),
                                              weight=("weight", "min"))
    per = per.reset_index()
    per["need"] = np.log(np.maximum(per["length"] - 1, 1))
    out = per.groupby("length").agg(kept=("margin", lambda m: float((m > 0).mean())),
                                    median_margin=("margin", "median"),
                                    median_discrepancy=("discrepancy", "median"),
                                    median_weight=("weight", "median"), judged=("margin", "size")).reset_index()
    g = per.assign(ok=per["margin"] >= per["need"]).groupby("length")["ok"].mean()
    out["guaranteed"] = out["length"].map(g)
    out["need"] = np.log(np.maximum(out["length"] - 1, 1))
    allp = analysis.groupby(["length", "prompt"])["correct"].first().groupby("length")
    out.insert(1, "acc", out["length"].map(allp.mean()))
    out.insert(len(out.columns), "n", out["length"].map(allp.size()))
    return out


def logit_terms(analysis: pd.DataFrame, layers) -> pd.DataFrame:
    """Per length and key layer: median logit of the best target key and of the best other key (the two
    terms of the margin), to see which of them moves as prompts grow."""
    a = analysis[analysis["layer"].isin(list(layers))]
    return a.groupby(["length", "layer"])[["target_logit", "other_logit"]].median().reset_index()


def predicted_breaks(summary: pd.DataFrame, static: pd.DataFrame | None = None, thresholds=(0.9, 0.5),
                     measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """Break lengths (:func:`break_length`, interpolated in log-length) of the measured accuracy and of the
    predictions, one row per accuracy threshold:

    * ``measured`` -- the model's accuracy (``measured``: a curve with columns length, accuracy, e.g. the
      committed 500-prompt one; default: the analysed prompts' own accuracy in ``summary``);
    * ``static`` -- :func:`static_summary`'s ``kept_static``: from 17-token prompts only;
    * ``at_length`` -- :func:`margin_summary`'s ``kept``: the key heads measured on the long prompts;
    * ``lemma_f1`` -- :func:`margin_summary`'s ``guaranteed`` (worst case over the other keys);
    * ``median_discrepancy`` -- the first length where the median Def. 3.1 discrepancy of the weakest key head
      falls below log(n - 1) (:func:`posym.theory.discrepancy_break_length`); the same at every threshold.

    NaN where a curve never falls below the threshold within its lengths.
    """
    from .theory import discrepancy_break_length

    s = summary.sort_values("length")
    acc_L, acc = (s["length"], s["acc"]) if measured is None else (measured["length"], measured["accuracy"])
    disc_break = discrepancy_break_length((s["length"].to_numpy(), s["median_discrepancy"].to_numpy()),
                                          lambda n: math.log(max(n - 1, 1)))
    rows = []
    for thr in thresholds:
        row = {"threshold": thr, "measured": break_length(acc_L, acc, thr)}
        if static is not None:
            row["static"] = break_length(static["length"], static["kept_static"], thr)
        row["at_length"] = break_length(s["length"], s["kept"], thr)
        row["lemma_f1"] = break_length(s["length"], s["guaranteed"], thr)
        row["median_discrepancy"] = disc_break
        rows.append(row)
    return pd.DataFrame(rows).astype(float)  # None (never breaks within the lengths) -> NaN


def prompt_agreement(analysis: pd.DataFrame, layers, base_length: int | None = None) -> pd.DataFrame:
    """Per length: how well "a relied-on key head lost its target" (margin <= 0, see :func:`margin_summary`)
    flags the prompts the model gets wrong.  Columns: length, wrong, flagged, p_wrong_if_flagged,
    p_wrong_if_not, recall (share of wrong prompts that are flagged)."""
    a = _relied_on(analysis, layers, base_length)
    per = a.groupby(["length", "prompt"]).agg(correct=("correct", "first"), margin=("margin", "min")).reset_index()
    per["flag"] = per["margin"] <= 0
    per["wrong"] = ~per["correct"].astype(bool)
    rows = []
    for L, g in per.groupby("length"):
        f, w = g["flag"], g["wrong"]
        rows.append({"length": int(L), "wrong": float(w.mean()), "flagged": float(f.mean()),
                     "p_wrong_if_flagged": float(w[f].mean()) if f.any() else float("nan"),
                     "p_wrong_if_not": float(w[~f].mean()) if (~f).any() else float("nan"),
                     "recall": float(f[w].mean()) if w.any() else float("nan")})
    return pd.DataFrame(rows)


@torch.no_grad()
def static_margins(model, task: str, seed: int, layers, lengths, n: int = 200, targets: str | None = None,
                   extra_from: str = "target_window") -> pd.DataFrame:
    """Predict the key heads' margins at long lengths from 17-token prompts only (no long forward pass).

    RoPE makes a head's logit a function of the key's content and its distance ``d`` to the query:
    ``L_b(d) = sum_f Re(c_f[b] exp(i d g_f))`` (:func:`posym.metrics.rope_terms`).  Lengthening a prompt
    keeps the distances of the original keys and adds keys at distances 17..n-1 that hold fresh
    target-window tokens.  We take the last query and the keys of each 17-token prompt at ``layer`` and
    assume that the added keys look like the prompt's own target-window keys other than the targets
    (``extra_from``; the task's generator never repeats the answer's content there in the Letter task), placed
    at every new distance.  The predicted margin at length ``n`` is

        (best target key) - max(best other original key, max over d in 17..n-1 and over those contents of L_b(d)).

    This ignores what long contexts do to the residual stream *before* the layer (upstream attention
    disperses too), which :func:`margin_analysis` measures.  One row per length x prompt x layer:
    length, prompt, hop, layer, margin.
    """
    from .metrics import residual_inputs, rope_terms

    if extra_from != "target_window":
        raise ValueError("only extra_from='target_window' is implemented")
    task_obj = get_task(task)
    targets = targets or DEFAULT_TARGETS[task_obj.name]
    samples = extended_prompts(task, seed, QUERY_POS + 1, n)
    x, _, hops = to_tensors(samples, task_obj.vocab)
    mask = torch.from_numpy(target_mask(samples, targets))
    T = x.shape[1]
    lengths = np.asarray(sorted(int(L) for L in lengths))
    if lengths.min() < T:
        raise ValueError(f"lengths must be at least {T}")
    was_training = model.training
    model.eval()
    try:
        resid = residual_inputs(model, x)
        frames = []
        d_far = torch.arange(T, int(lengths.max()), dtype=torch.float64)  # distances of the added keys
        tw = slice(0, 8)  # the target window of a 17-token prompt
        for l in [int(v) for v in layers]:
            cr, ci, rest, cos, sin = rope_terms(model, l, resid[l])  # (N, H, T, F), (N, H, T), (T, F)
            cr, ci, rest = cr[:, 0], ci[:, 0], rest[:, 0]
            diag = (cr * cos[None] - ci * sin[None]).sum(-1) + rest  # (N, T): the prompt's own logits
            good = diag.masked_fill(~mask, -math.inf).amax(-1)
            bad = diag.masked_fill(mask, -math.inf).amax(-1)
            ang = d_far[:, None] * model.blocks[l].attn.angles.double()[None, :]  # (D, F)
            far = (torch.einsum("nbf,df->nbd", cr[:, tw], ang.cos()) - torch.einsum("nbf,df->nbd", ci[:, tw], ang.sin())
                   + rest[:, tw, None])  # (N, 8, D)
            far = far.masked_fill(mask[:, tw, None], -math.inf)  # added tokens never repeat a target's content
            run = torch.cummax(far.amax(1), dim=-1).values  # (N, D): best added key up to each distance
            for L in lengths:
                worst = bad if L == T else torch.maximum(bad, run[:, L - T - 1])
                frames.append(pd.DataFrame({"length": int(L), "prompt": np.arange(len(x)), "hop": hops.numpy(),
                                            "layer": l, "margin": (good - worst).numpy()}))
        return pd.concat(frames, ignore_index=True)
    finally:
        model.train(was_training)


def static_summary(static: pd.DataFrame, layers, base_length: int | None = None) -> pd.DataFrame:
    """Per length: fraction of the judged prompts whose relied-on key heads (see :func:`margin_summary`) all keep
    a positive predicted margin (``kept_static``) and the median of the weakest such margin."""
    a = _relied_on(static, layers, base_length)
    per = a.groupby(["length", "prompt"])["margin"].min().reset_index()
    return per.groupby("length").agg(kept_static=("margin", lambda m: float((m > 0).mean())),
                                     median_static_margin=("margin", "median")).reset_index()


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


