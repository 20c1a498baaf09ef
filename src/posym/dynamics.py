"""Learning dynamics of positional and symbolic heads (Paper 2, Sec. 2.3, Figs. 2, 6 and 7), with seed statistics.

Everything the "Learning dynamics" chapter computes lives here, so that it is tested and reusable:

* **Seed statistics.** :func:`mean_ci` (Student-t interval or percentile bootstrap of the mean over seeds) and
  :func:`seed_band` (the same for every point of a curve).  The paper reports one run per task; we train five
  seeds and show how much the curves and the numbers read off them move from seed to seed.
* **Normalisation.** :func:`minmax_per_layer` rescales a per-layer curve (the attention entropy) to [0, 1] over
  training, separately for every layer of every run, as the paper's App. E does for its entropy curves.
* **Accuracy.** :func:`best_steps` (step of maximal overall validation accuracy) and :func:`hop_learning_steps`
  (first step at which each hop count reaches a threshold), :func:`hop_criteria` (is learning hop-by-hop, or are
  the hops learned together?).
* **Purity.** The paper counts a head as pure from the step it first becomes pure
  (:func:`posym.metrics.purity_events`).  :func:`settled_purity_events` is a stricter rule: the first step from
  which the head stays pure, of the same kind, to the end of training.  :func:`cumulative_counts` turns either
  into the cumulative counts of Figs. 2C/7; :func:`purity_order` gives the order in which layers become pure.
* **Claims.** :func:`claims_table` checks the paper's qualitative claims against our runs, one row per claim:
  the paper's value, ours (mean and confidence interval over seeds, or the number of seeds where it holds) and
  whether they agree, by an explicit rule per row.

Tables follow :mod:`posym.results`: ``eval`` has columns task, seed, step, hop (``"all"``, ``"1"``..``"4"``),
accuracy; ``scores`` (here called a trajectory) has task, seed, step, layer, head, pos, sym, entropy, ...
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import metrics
from .stats import mean_ci, seed_band  # noqa: F401  (part of this chapter's interface)

#: Figures quoted from Paper 2 (Urrutia et al., arXiv 2605.31558), as read in /work/shared/paper-notes.md:
#: §2.5 (Fig. 2A: best steps and the hop-wise curves; Fig. 2C: purity counts at gamma = 0.1 and the order in
#: which heads become pure; Fig. 7: gamma = 0.05) and §2.4 (purity rule, entropy normalisation).  Steps are the
#: notes' readings of the figures ("about 4.8k"), not numbers printed in the paper.
PAPER = {
    "number": {
        "best_step": 4800,            # Fig. 2A, dashed line
        "one_hop_step": 2600,         # Fig. 2A: "1-hop is learned first (around 2.6k steps)"
        "hop_order": "1-hop, then 2-hop, then 3- and 4-hop",
        "positional_layers": (0, 1, 2, 3),   # Fig. 2C: 4 pure positional heads, L0-L3
        "positional_order": (1, 0, 2, 3),    # ... appearing in the order L1, L0, L2, L3
        "symbolic_layers": (4, 5, 6, 7, 8, 9, 10, 11),  # 8 pure symbolic heads, L4-L11
        "test_accuracy": 1.0,         # "both reach about 100 % test accuracy"
    },
    "letter": {
        "best_step": 3400,            # Fig. 2A
        "hop_order": "all hops together",
        "positional_layers": (),      # Fig. 2C: 0 positional heads
        "symbolic_layers": tuple(range(1, 12)),  # 11 pure symbolic heads, L1-L11; L0 never becomes pure
        "test_accuracy": 1.0,
    },
    "n_layer": 12,
    "gammas": (0.1, 0.05),            # App. E / Fig. 7
}

GAMMAS = PAPER["gammas"]
KINDS = ("positional", "symbolic")


# -----------------------------------------------------------------------------------------------
# Statistics over seeds

def minmax_per_layer(traj: pd.DataFrame, col: str = "entropy", group: Sequence[str] = ("task", "seed"),
                     out: str | None = None) -> pd.DataFrame:
    """Add ``out`` (default ``<col>_minmax``): ``col`` min-max normalised over training steps, separately for
    every layer and head of every run (``group``), as the paper normalises its entropy curves (App. E).

    A layer whose values never change gets 0 everywhere.  Returns a copy.
    """
    out = out or f"{col}_minmax"
    keys = [g for g in group if g in traj.columns] + ["layer", "head"]
    t = traj.copy()
    g = t.groupby(keys)[col]
    lo, hi = g.transform("min"), g.transform("max")
    span = (hi - lo).to_numpy()
    t[out] = np.where(span > 0, (t[col] - lo) / np.where(span > 0, span, 1.0), 0.0)
    return t


# -----------------------------------------------------------------------------------------------
# Accuracy

def _groups(df: pd.DataFrame, group: Sequence[str]) -> list[str]:
    return [g for g in group if g in df.columns]


def best_steps(eval_df: pd.DataFrame, group: Sequence[str] = ("task", "seed")) -> pd.DataFrame:
    """Step of maximal overall validation accuracy per run (the first such step on ties, like
    :func:`posym.analyze.best_step`).  Columns ``group..., best_step, best_accuracy, final_accuracy``."""
    keys = _groups(eval_df, group)
    e = eval_df[eval_df["hop"].astype(str) == "all"].sort_values(keys + ["step"])
    rows = []
    for key, g in (e.groupby(keys, sort=True) if keys else [((), e)]):
        key = key if isinstance(key, tuple) else (key,)
        i = g["accuracy"].to_numpy().argmax()
        rows.append({**dict(zip(keys, key)), "best_step": int(g["step"].iloc[i]),
                     "best_accuracy": float(g["accuracy"].iloc[i]), "final_accuracy": float(g["accuracy"].iloc[-1])})
    return pd.DataFrame(rows)


def hop_learning_steps(eval_df: pd.DataFrame, threshold: float = 0.9,
                       group: Sequence[str] = ("task", "seed")) -> pd.DataFrame:
    """First step at which the validation accuracy of each hop count (and overall) reaches ``threshold``.

    Columns ``group..., hop, step`` (NaN when the threshold is never reached).  This is our measurable version
    of "learned": the paper reads it off its Fig. 2A by eye.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    keys = _groups(eval_df, group) + ["hop"]
    e = eval_df.assign(hop=eval_df["hop"].astype(str)).sort_values(keys + ["step"])
    rows = []
    for key, g in e.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        hit = g.loc[g["accuracy"] >= threshold, "step"]
        rows.append({**dict(zip(keys, key)), "step": float(hit.iloc[0]) if len(hit) else math.nan})
    return pd.DataFrame(rows)


def hop_criteria(hop_steps: pd.DataFrame, window: float, group: Sequence[str] = ("task", "seed")) -> pd.DataFrame:
    """Per run, whether hops are learned one after another or together, from :func:`hop_learning_steps`.

    * ``sequential``: ``t1 < t2 < min(t3, t4)`` (1-hop strictly before 2-hop, strictly before 3- and 4-hop),
      where ``tk`` is the step at which the ``k``-hop accuracy first reaches the threshold;
    * ``spread``: ``max_k tk - min_k tk`` over the four hop counts;
    * ``together``: ``spread <= window`` (``window`` in steps).

    A run in which some hop count never reaches the threshold is neither sequential nor together (NaN spread).
    """
    keys = _groups(hop_steps, group)
    rows = []
    for key, g in (hop_steps.groupby(keys, sort=True) if keys else [((), hop_steps)]):
        key = key if isinstance(key, tuple) else (key,)
        t = {str(h): s for h, s in zip(g["hop"].astype(str), g["step"])}
        ts = [t.get(str(k), math.nan) for k in range(1, 5)]
        complete = not any(math.isnan(v) for v in ts)
        spread = (max(ts) - min(ts)) if complete else math.nan
        rows.append({**dict(zip(keys, key)), **{f"t{k}": ts[k - 1] for k in range(1, 5)},
                     "spread": spread,
                     "sequential": bool(complete and ts[0] < ts[1] < min(ts[2], ts[3])),
                     "together": bool(complete and spread <= window)})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# Purity

def classify_steps(traj: pd.DataFrame, gamma: float) -> pd.Series:
    """:func:`posym.metrics.classify` of every row (``positional`` / ``symbolic`` / ``mixed``)."""
    return pd.Series([metrics.classify(p, s, gamma) for p, s in zip(traj["pos"], traj["sym"])], index=traj.index,
                     name="kind")


def purity_events(traj: pd.DataFrame, gamma: float, group: Sequence[str] = ("task", "seed"),
                  rule: str = "first") -> pd.DataFrame:
    """When each (layer, head) becomes pure: rows ``group..., layer, head, kind, step``.

    ``rule="first"`` is the paper's cumulative rule (:func:`posym.metrics.purity_events`): the first step at which
    the head is pure, and the kind it has then.  ``rule="settled"``: the first step from which the head is pure of
    one kind at every later checkpoint up to the last; a head that is not pure at the last checkpoint has no
    event.
    """
    group = tuple(_groups(traj, group))
    if rule == "first":
        return metrics.purity_events(traj, gamma, group)
    if rule != "settled":
        raise ValueError(f"unknown purity rule {rule!r}: choose 'first' or 'settled'")
    keys = list(group) + ["layer", "head"]
    t = traj.sort_values(keys + ["step"]).copy()
    t["kind"] = classify_steps(t, gamma)
    rows = []
    for key, g in t.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        kinds = g["kind"].to_numpy()
        last = kinds[-1]
        if last == "mixed":
            continue
        i = len(kinds) - 1
        while i > 0 and kinds[i - 1] == last:
            i -= 1
        rows.append({**dict(zip(keys, key)), "kind": last, "step": g["step"].iloc[i]})
    ev = pd.DataFrame(rows, columns=keys + ["kind", "step"])
    return ev.sort_values(list(group) + ["step", "layer"]).reset_index(drop=True)


def cumulative_counts(events: pd.DataFrame, steps: Iterable[int], group: Sequence[str] = ("task", "seed"),
                      groups: Iterable[tuple] | None = None) -> pd.DataFrame:
    """Number of heads of each kind that are pure by every step (from :func:`purity_events`).

    ``groups`` lists the group values to report (default: those present in ``events``; pass them to include runs
    without any event).  Columns ``group..., step, positional, symbolic``.
    """
    group = list(group)
    steps = np.sort(np.unique(np.asarray(list(steps))))
    if groups is None:
        groups = [tuple(r) for r in events[group].drop_duplicates().itertuples(index=False, name=None)] if group else [()]
    rows = []
    for gv in groups:
        gv = gv if isinstance(gv, tuple) else (gv,)
        e = events
        for col, val in zip(group, gv):
            e = e[e[col] == val]
        pos = np.sort(e.loc[e["kind"] == "positional", "step"].to_numpy())
        sym = np.sort(e.loc[e["kind"] == "symbolic", "step"].to_numpy())
        for s in steps:
            rows.append({**dict(zip(group, gv)), "step": int(s),
                         "positional": int(np.searchsorted(pos, s, side="right")),
                         "symbolic": int(np.searchsorted(sym, s, side="right"))})
    return pd.DataFrame(rows, columns=group + ["step", "positional", "symbolic"])


def _runs_of(events: pd.DataFrame, group: list, runs) -> list[tuple]:
    if runs is not None:
        return [tuple(r) if isinstance(r, (tuple, list)) else (r,) for r in runs]
    if not group:
        return [()]
    return sorted(tuple(r) for r in events[group].drop_duplicates().itertuples(index=False, name=None))


def _select(events: pd.DataFrame, group: list, key: tuple) -> pd.DataFrame:
    e = events
    for col, val in zip(group, key):
        e = e[e[col] == val]
    return e


def purity_order(events: pd.DataFrame, group: Sequence[str] = ("task", "seed"), steps: bool = False,
                 runs: Iterable[tuple] | None = None) -> pd.DataFrame:
    """The order in which layers become pure, per run and kind, e.g. ``"L1, L2, L3"``.

    Columns ``group..., positional, symbolic`` (strings; layers that become pure at the same checkpoint are
    joined with ``=``, e.g. ``"L1 = L2, L3"``; with ``steps`` each group is followed by its step,
    ``"L1 = L2 (2300), L3 (2600)"``), and ``n_positional, n_symbolic``.  ``runs`` lists the group values to
    report (default: the runs with at least one event).
    """
    group = list(group) if runs is not None else list(_groups(events, group))
    rows = []
    for key in _runs_of(events, group, runs):
        g = _select(events, group, key)
        row = dict(zip(group, key))
        for kind in KINDS:
            e = g[g["kind"] == kind].sort_values(["step", "layer"])
            parts = []
            for step, gs in e.groupby("step", sort=True):
                parts.append(" = ".join(f"L{int(l)}" for l in gs["layer"]) + (f" ({int(step)})" if steps else ""))
            row[kind] = ", ".join(parts) if parts else "none"
            row[f"n_{kind}"] = len(e)
        rows.append(row)
    return pd.DataFrame(rows, columns=group + list(KINDS) + [f"n_{k}" for k in KINDS])


def order_consistent(layers_steps: dict[int, float], reference: Sequence[int]) -> bool:
    """Whether layers that became pure at distinct steps did so in the order of ``reference``.

    ``layers_steps`` maps layer -> step for the layers that became pure; layers not in ``reference`` break
    consistency; ties (same step) are compatible with any order.
    """
    rank = {l: i for i, l in enumerate(reference)}
    if any(l not in rank for l in layers_steps):
        return False
    items = list(layers_steps.items())
    for a, sa in items:
        for b, sb in items:
            if sa < sb and rank[a] > rank[b]:
                return False
    return True


def final_classes(traj: pd.DataFrame, gamma: float, group: Sequence[str] = ("task", "seed")) -> pd.DataFrame:
    """Scores and class of every head at the last checkpoint of each run: ``group..., layer, head, step, pos,
    sym, kind``."""
    keys = _groups(traj, group)
    last = traj.groupby(keys)["step"].transform("max") if keys else traj["step"].max()
    f = traj[traj["step"] == last].copy()
    f["kind"] = classify_steps(f, gamma)
    return f[keys + ["layer", "head", "step", "pos", "sym", "kind"]].sort_values(keys + ["layer", "head"]) \
        .reset_index(drop=True)


def layer_ranges(layers: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 5]`` -> ``"L0–L3, L5"``; empty -> ``"none"``."""
    ls = sorted(set(int(l) for l in layers))
    if not ls:
        return "none"
    parts, start, prev = [], ls[0], ls[0]
    for l in ls[1:] + [None]:
        if l is not None and l == prev + 1:
            prev = l
            continue
        parts.append(f"L{start}" if start == prev else (f"L{start}, L{prev}" if prev == start + 1 else f"L{start}–L{prev}"))
        if l is not None:
            start = prev = l
    return ", ".join(parts)


def representative_layers(n_layer: int) -> tuple[int, ...]:
    """The layers of Fig. 2B: (1, 5, 11) for the paper's 12 layers, else (1, n // 2, n - 1) (fewer if small)."""
    if n_layer == 12:
        return (1, 5, 11)
    return tuple(sorted({min(1, n_layer - 1), n_layer // 2, n_layer - 1}))


# -----------------------------------------------------------------------------------------------
# The claims table

def _fmt_num(x: float, step: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if step:
        return f"{x:,.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".") if abs(x - round(x)) > 1e-9 else f"{int(round(x))}"


def _fmt_ci(m: float, lo: float, hi: float, step: bool = False) -> str:
    if math.isnan(m):
        return "n/a"
    if math.isnan(lo):
        return f"{_fmt_num(m, step)} (one seed)"
    if lo == hi:
        return f"{_fmt_num(m, step)} (all seeds)"
    return f"{_fmt_num(m, step)} [{_fmt_num(lo, step)}, {_fmt_num(hi, step)}]"


def _clip(mci: tuple[float, float, float], lo: float, hi: float) -> tuple[float, float, float]:
    """Clip an interval to the range its quantity can take (NaN stays NaN)."""
    m, a, b = mci
    return (m, a if math.isnan(a) else min(max(a, lo), hi), b if math.isnan(b) else min(max(b, lo), hi))


def _claim(task, claim, paper, ours, agree, value=math.nan, lo=math.nan, hi=math.nan, note=""):
    return {"task": task, "claim": claim, "paper": paper, "ours": ours, "agree": bool(agree), "value": value,
            "lo": lo, "hi": hi, "note": note}


def claims_table(eval_df: pd.DataFrame, traj: pd.DataFrame, gamma: float = 0.1, threshold: float = 0.9,
                 window: float | None = None, level: float = 0.95, method: str = "t", step_tol: float = 0.15,
                 total_steps: int | None = None) -> pd.DataFrame:
    """The paper's learning-dynamics claims against our runs: one row per claim.

    ``eval_df`` and ``traj`` hold every run (columns ``task``, ``seed``, ...).  Columns of the result: task, claim,
    paper (the paper's value, quoted from :data:`PAPER`), ours (mean and ``level`` CI over seeds, or the number
    of seeds where a property holds), agree, and the numbers behind ``ours`` (value, lo, hi) plus a note.

    Agreement rules, fixed in advance:

    * counts of pure heads: our count equals the paper's in more than half of the seeds (the interval of the
      mean count is shown too, clipped to [0, number of layers]);
    * layer sets: the layers that become pure in a majority of seeds are exactly the paper's layers;
    * the order of positional heads: in every seed, layers that became pure at different checkpoints did so in
      the paper's order (ties allowed);
    * steps (best step, 1-hop step): our mean is within ``step_tol`` (15 %) of the paper's value, which is one
      run read off a figure;
    * hop-by-hop (Number): :func:`hop_criteria` ``sequential`` in every seed; hops together (Letter):
      ``together`` in every seed, with ``window`` steps (default 5 % of the training length);
    * purity complete by the best step: in every seed the last head becomes pure no later than the best step;
    * final accuracy: at least 0.99 in every seed.

    Purity uses the paper's cumulative rule (first step pure, :func:`purity_events` ``rule="first"``) at
    tolerance ``gamma``; rows marked "at the last checkpoint" use the final classes instead.
    """
    total_steps = int(total_steps if total_steps is not None else traj["step"].max())
    n_layer = int(traj["layer"].max()) + 1
    window = 0.05 * total_steps if window is None else window
    ci = dict(level=level, method=method)
    events = purity_events(traj, gamma, rule="first")
    finals = final_classes(traj, gamma)
    best = best_steps(eval_df)
    hops = hop_learning_steps(eval_df, threshold)
    crit = hop_criteria(hops, window)
    rows = []
    tasks_present = [t for t in ("number", "letter") if t in set(traj["task"])]
    for task in tasks_present:
        seeds = sorted(traj.loc[traj["task"] == task, "seed"].unique())
        n = len(seeds)
        ev = events[events["task"] == task]
        fin = finals[finals["task"] == task]
        paper = PAPER[task]

        def count_row(kind, claim, paper_count, paper_text, source=ev, note=""):
            counts = [int(((source["seed"] == s) & (source["kind"] == kind)).sum()) for s in seeds]
            m, lo, hi = mean_ci(counts, **ci)
            _, lo, hi = _clip((m, lo, hi), 0.0, float(n_layer))  # a count lies in [0, n_layer]
            same = sum(c == paper_count for c in counts)
            return _claim(task, claim, paper_text, f"{_fmt_ci(m, lo, hi)}; {paper_count} in {same}/{n} seeds",
                          same > n / 2, m, lo, hi, note or f"per seed: {', '.join(map(str, counts))}")

        def layers_row(kind, claim, paper_layers):
            per_layer = ev[ev["kind"] == kind].groupby("layer")["seed"].nunique()
            majority = sorted(int(l) for l, c in per_layer.items() if c > n / 2)
            detail = "; ".join(f"L{int(l)} {c}/{n}" for l, c in per_layer.sort_index().items()) or "none"
            ours = f"{layer_ranges(majority)} (in more than half of the seeds)"
            return _claim(task, claim, layer_ranges(paper_layers), ours, majority == sorted(paper_layers),
                          note=f"seeds in which each layer becomes pure {kind}: {detail}")

        if task == "number":
            rows.append(count_row("positional", f"pure positional heads (γ = {gamma})", len(paper["positional_layers"]),
                                  f"{len(paper['positional_layers'])}"))
            rows.append(layers_row("positional", "layers that become pure positional", paper["positional_layers"]))
            ok, example = 0, ""
            for s in seeds:
                e = ev[(ev["seed"] == s) & (ev["kind"] == "positional")]
                ls = dict(zip(e["layer"].astype(int), e["step"]))
                ok += len(ls) >= 2 and order_consistent(ls, paper["positional_order"])
                if not example:
                    example = f"seed {s}: " + (", ".join(f"L{l}" for l in sorted(ls, key=lambda l: (ls[l], l))) or "none")
            rows.append(_claim(task, "order in which positional heads become pure",
                               ", ".join(f"L{l}" for l in paper["positional_order"]),
                               f"paper's order in {ok}/{n} seeds ({example})", ok == n, ok / n,
                               note="a seed counts if at least two layers become pure positional and those that "
                                    "become pure at different steps do so in the paper's order"))
            rows.append(count_row("symbolic", f"pure symbolic heads (γ = {gamma})", len(paper["symbolic_layers"]),
                                  f"{len(paper['symbolic_layers'])}"))
            rows.append(layers_row("symbolic", "layers that become pure symbolic", paper["symbolic_layers"]))
            l0 = fin[fin["layer"] == 0]
            pure0 = int(ev[ev["layer"] == 0]["seed"].nunique())
            mp, lp, hp = _clip(mean_ci(l0["pos"], **ci), 0, 1)
            ms, ls_, hs = _clip(mean_ci(l0["sym"], **ci), 0, 1)
            rows.append(_claim(task, "layer 0", "pure positional",
                               f"pure in {pure0}/{n} seeds; last checkpoint: pos {_fmt_ci(mp, lp, hp)}, "
                               f"sym {_fmt_ci(ms, ls_, hs)}", pure0 > n / 2 and (ev[ev['layer'] == 0]['kind'] == 'positional').all(),
                               mp, lp, hp))
            c = crit[crit["task"] == task]
            h = hops[hops["task"] == task]
            means = {k: mean_ci(h.loc[h["hop"] == str(k), "step"], **ci)[0] for k in range(1, 5)}
            k_ok = int(c["sequential"].sum())
            rows.append(_claim(task, f"hops learned one after another (first step at {threshold:.0%} accuracy)",
                               paper["hop_order"],
                               "mean " + ", ".join(f"{k}-hop {_fmt_num(means[k], True)}" for k in range(1, 5))
                               + f"; 1 < 2 < 3, 4 in {k_ok}/{n} seeds", k_ok == n, k_ok / n))
            m, lo, hi = _clip(mean_ci(h.loc[h["hop"] == "1", "step"], **ci), 0, total_steps)
            rows.append(_claim(task, f"step at which 1-hop is learned ({threshold:.0%})", f"≈{paper['one_hop_step']:,}",
                               _fmt_ci(m, lo, hi, step=True), abs(m - paper["one_hop_step"]) <= step_tol * paper["one_hop_step"],
                               m, lo, hi, note="the paper's value is read off its Fig. 2A"))
        else:
            rows.append(count_row("symbolic", f"pure symbolic heads (γ = {gamma})", len(paper["symbolic_layers"]),
                                  f"{len(paper['symbolic_layers'])}"))
            rows.append(layers_row("symbolic", "layers that become pure symbolic", paper["symbolic_layers"]))
            rows.append(count_row("positional", f"pure positional heads (γ = {gamma}, cumulative)", 0, "0"))
            fin_pos = [int(((fin["seed"] == s) & (fin["kind"] == "positional")).sum()) for s in seeds]
            m, lo, hi = mean_ci(fin_pos, **ci)
            rows.append(_claim(task, "pure positional heads at the last checkpoint", "0", _fmt_ci(m, lo, hi),
                               all(v == 0 for v in fin_pos), m, lo, hi))
            pure0 = int(ev[ev["layer"] == 0]["seed"].nunique())
            rows.append(_claim(task, "layer 0", "never pure", f"pure in {pure0}/{n} seeds", pure0 == 0, pure0 / n))
            c = crit[crit["task"] == task]
            m, lo, hi = _clip(mean_ci(c["spread"], **ci), 0, total_steps)
            k_ok = int(c["together"].sum())
            rows.append(_claim(task, f"hops learned together (first steps at {threshold:.0%} within {window:,.0f} steps)",
                               paper["hop_order"], f"spread {_fmt_ci(m, lo, hi, step=True)} steps; together in "
                               f"{k_ok}/{n} seeds", k_ok == n, m, lo, hi))
        b = best[best["task"] == task]
        m, lo, hi = _clip(mean_ci(b["best_step"], **ci), 0, total_steps)
        rows.append(_claim(task, "step of best validation accuracy", f"≈{paper['best_step']:,}",
                           _fmt_ci(m, lo, hi, step=True), abs(m - paper["best_step"]) <= step_tol * paper["best_step"],
                           m, lo, hi, note="per seed: " + ", ".join(f"{v:,}" for v in b["best_step"])))
        done = 0
        for s in seeds:
            e = ev[ev["seed"] == s]
            bs = int(b.loc[b["seed"] == s, "best_step"].iloc[0])
            done += (len(e) > 0) and (e["step"].max() <= bs)
        rows.append(_claim(task, "every head that becomes pure does so by the best step", "yes",
                           f"in {done}/{n} seeds", done == n, done / n))
        m, lo, hi = _clip(mean_ci(b["final_accuracy"], **ci), 0, 1)
        rows.append(_claim(task, "final validation accuracy (%)", "≈100", _fmt_ci(m * 100, lo * 100, hi * 100),
                           bool((b["final_accuracy"] >= 0.99).all()), m, lo, hi))
    return pd.DataFrame(rows, columns=["task", "claim", "paper", "ours", "agree", "value", "lo", "hi", "note"])


# -----------------------------------------------------------------------------------------------
# Figures

def _task_color(task: str) -> str:
    from .plotting import task_color
    return task_color(task)


def plot_hop_accuracy(ax, eval_df: pd.DataFrame, task: str, level: float = 0.95, method: str = "t",
                      show_seeds: bool = True):
    """Fig. 2A for one task: validation accuracy per hop count and overall vs step, the mean over seeds with
    its confidence band, every seed faint, and the mean best step dashed.  Returns the mean best step."""
    from .plotting import COLORS, HOP_COLORS

    e = eval_df[eval_df["task"] == task].assign(hop=lambda d: d["hop"].astype(str))
    n_seeds = e["seed"].nunique()
    for hop in ["1", "2", "3", "4", "all"]:
        color = HOP_COLORS[int(hop)] if hop != "all" else "black"
        label = f"{hop}-hop" if hop != "all" else "all"
        d = e[e["hop"] == hop]
        if show_seeds and n_seeds > 1:
            for _, g in d.groupby("seed"):
                ax.plot(g["step"], g["accuracy"], color=color, lw=0.6, alpha=0.25)
        band = seed_band(d, "accuracy", level=level, method=method)
        ax.plot(band["step"], band["mean"], color=color, lw=2.0 if hop == "all" else 1.5, label=label,
                ls="-" if hop != "all" else "--")
        if n_seeds > 1:
            ax.fill_between(band["step"], band["lo"], band["hi"], color=color, alpha=0.2, lw=0)
    best = best_steps(e)
    mb = float(best["best_step"].mean())
    ax.axvline(mb, color=COLORS["neutral"], ls=":", lw=1.5)
    ax.text(mb, 0.02, f" best {mb:,.0f}", color=COLORS["neutral"], fontsize=8, va="bottom")
    ax.set(xlabel="training step", ylabel="validation accuracy", ylim=(-0.02, 1.02),
           title=f"{task.capitalize()} task ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
    return mb


def plot_layer_scores(ax, traj: pd.DataFrame, task: str, layer: int, level: float = 0.95, method: str = "t",
                      entropy_col: str = "entropy_minmax", legend: bool = False, best: float | None = None):
    """Fig. 2B / Fig. 6 panel: s_pos, s_sym and the min-max normalised entropy of one layer vs step (mean over
    seeds with a band)."""
    from .plotting import COLORS

    d = traj[(traj["task"] == task) & (traj["layer"] == layer)]
    n_seeds = d["seed"].nunique()
    for col, color, label in (("pos", COLORS["positional"], "$s_{POS}$"), ("sym", COLORS["symbolic"], "$s_{SYM}$"),
                              (entropy_col, COLORS["entropy"], "entropy (min–max)")):
        band = seed_band(d, col, level=level, method=method)
        ax.plot(band["step"], band["mean"], color=color, lw=1.4, label=label, ls="-" if col != entropy_col else "--")
        if n_seeds > 1:
            ax.fill_between(band["step"], band["lo"].clip(-0.05, 1.05), band["hi"].clip(-0.05, 1.05), color=color,
                            alpha=0.2, lw=0)
    if best is not None:
        ax.axvline(best, color=COLORS["neutral"], ls=":", lw=1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"layer {layer}", fontsize=9)
    if legend:
        ax.legend(fontsize=7, loc="center right")


def plot_purity_counts(ax, counts: pd.DataFrame, events: pd.DataFrame, task: str, seed: int, gamma: float,
                       annotate: bool = True):
    """Figs. 2C / 7 for one task: cumulative number of pure positional and symbolic heads vs step.  The run
    ``seed`` is drawn boldly and annotated with the layer of every purity event; other seeds are faint."""
    from .plotting import COLORS

    c = counts[counts["task"] == task]
    for kind in KINDS:
        color = COLORS[kind]
        for s, g in c.groupby("seed"):
            if s != seed:
                ax.step(g["step"], g[kind], where="post", color=color, lw=0.7, alpha=0.3)
        g = c[c["seed"] == seed]
        ax.step(g["step"], g[kind], where="post", color=color, lw=2, label=f"pure {kind}")
        if annotate:
            e = events[(events["task"] == task) & (events["seed"] == seed) & (events["kind"] == kind)]
            e = e.sort_values(["step", "layer"])
            k = 0
            for step, gs in e.groupby("step", sort=True):
                k += len(gs)
                left = kind == "symbolic"  # symbolic labels left of the curve, positional ones right
                ax.annotate(",".join(f"L{int(l)}" for l in gs["layer"]), (step, k), textcoords="offset points",
                            xytext=(-3, 3) if left else (4, -9), ha="right" if left else "left", fontsize=7,
                            color=color)
    ax.set(xlabel="training step", ylabel="pure heads", title=f"{task.capitalize()} task, γ = {gamma}")
    ax.set_ylim(-0.3, max(1, c[list(KINDS)].to_numpy().max()) + 1.3)


# -----------------------------------------------------------------------------------------------
# Runs for the chapters

def _train_and_analyze(root, scale: str, task: str, seed: int, n_prompts: int, threads: int | None,
                       final_only: bool, overrides: dict):
    """One run of :func:`train_runs` (a module-level function, so that worker processes can import it)."""
    from pathlib import Path

    from . import io as pio
    from .analyze import analyze_run
    from .train import TrainConfig, list_checkpoints, train

    cfg = TrainConfig.preset(scale, task=task, seed=int(seed), **overrides)
    run = train(cfg, Path(root) / f"{task}-s{seed}", progress=False, threads=threads)
    have = [s for s, _ in list_checkpoints(run.path)]
    want = have[-1:] if final_only else have
    done = False
    if (run.path / "scores.parquet").exists() and (run.path / "prompts.json").exists():
        meta = pio.read_json(run.path / "prompts.json")
        got = set(pio.read_table(run.path / "scores.parquet")["step"].unique())
        done = meta.get("n") == n_prompts and set(want) <= got
    if not done:
        analyze_run(run.path, n_prompts=n_prompts, per_frequency=False, progress=False,
                    steps=want if final_only else None)
    return run.path


def train_runs(root, scale: str, tasks: Sequence[str] = ("number", "letter"), seeds: Sequence[int] = (0,),
               n_prompts: int = 100, threads: int | None = 1, final_only: bool = False, jobs: int = 1,
               **overrides) -> list:
    """Train and analyse one run per task and seed at ``scale`` (``TrainConfig.preset``) under ``root``.

    Each run goes to ``root/<task>-s<seed>`` (the layout of ``data/paper``, so :func:`posym.results.load_table`
    reads it) and gets the metric of :func:`posym.analyze.analyze_run` on ``n_prompts`` test prompts, at every
    checkpoint or, with ``final_only``, at the last one; no per-frequency scores.  ``threads`` sets torch's
    thread count (1 is fastest for these small models on a shared machine); ``overrides`` go to the preset.
    ``jobs > 1`` trains that many runs at once in separate processes (one thread each; on a 2-core machine two
    one-thread processes finish sooner than one two-thread process); the results are the same.
    A finished run is not retrained (:func:`posym.train.train` returns it as it is), and its metric is not
    recomputed when ``scores.parquet`` already covers the wanted checkpoints with the same prompts, so a folder
    can be shared by several chapters (see :func:`run_cache`).  Returns the run folders.
    """
    from pathlib import Path

    root = Path(root)
    todo = [(task, int(seed)) for task in tasks for seed in seeds]
    if jobs <= 1 or len(todo) == 1:
        return [_train_and_analyze(root, scale, t, s, n_prompts, threads, final_only, overrides) for t, s in todo]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_train_and_analyze, root, scale, t, s, n_prompts, 1, final_only, overrides)
                   for t, s in todo]
        return [f.result() for f in futures]


def run_cache(scale: str):
    """A folder for runs the chapters train at ``scale`` and may share: ``<repo>/_build/runs/<scale>`` (a
    temporary folder when the package is not in a checkout).  Nothing is written into ``data/``."""
    import tempfile
    from pathlib import Path

    from .book import repo_root

    root = repo_root()
    if root is None:
        return Path(tempfile.mkdtemp(prefix=f"posym-runs-{scale}-"))
    return root / "_build" / "runs" / scale


def compare_rules(traj: pd.DataFrame, gamma: float, group: Sequence[str] = ("task", "seed")) -> pd.DataFrame:
    """Per run and layer: the first purity event (the paper's rule), the settled one and the class at the last
    checkpoint.  Columns ``group..., layer, first, first_step, settled, settled_step, final``; ``first`` and
    ``settled`` are ``"—"`` when the head never becomes pure under that rule."""
    group = list(_groups(traj, group))
    keys = group + ["layer", "head"]
    first = purity_events(traj, gamma, group, rule="first").set_index(keys)
    settled = purity_events(traj, gamma, group, rule="settled").set_index(keys)
    fin = final_classes(traj, gamma, group).set_index(keys)
    out = fin[["kind"]].rename(columns={"kind": "final"})
    out["first"] = first["kind"].reindex(out.index).fillna("—")  # "—": never pure under this rule
    out["first_step"] = first["step"].reindex(out.index)
    out["settled"] = settled["kind"].reindex(out.index).fillna("—")
    out["settled_step"] = settled["step"].reindex(out.index)
    return out.reset_index()[keys + ["first", "first_step", "settled", "settled_step", "final"]]


def purity_matrix(events: pd.DataFrame, n_layer: int, group: Sequence[str] = ("task", "seed"),
                  runs: Iterable[tuple] | None = None) -> pd.DataFrame:
    """One row per run, one column per layer: ``"P 2350"`` / ``"S 1550"`` (kind and step of the purity event),
    ``"·"`` for a head that never becomes pure.  ``runs`` as in :func:`purity_order`."""
    group = list(group) if runs is not None else list(_groups(events, group))
    rows = []
    for key in _runs_of(events, group, runs):
        g = _select(events, group, key)
        cells = {f"L{l}": "·" for l in range(n_layer)}
        for r in g.itertuples():
            cells[f"L{int(r.layer)}"] = f"{r.kind[0].upper()} {int(r.step)}"
        rows.append({**dict(zip(group, key)), **cells})
    return pd.DataFrame(rows, columns=group + [f"L{l}" for l in range(n_layer)])


def final_score_table(final: pd.DataFrame) -> pd.DataFrame:
    """Scores at the last checkpoint as ``mean ± sd`` over seeds: index layer, columns (task, score).

    The tasks' models may differ in depth (the teaching scale): a layer a task's model lacks reads ``—``."""
    out = {}
    for task in [t for t in ("number", "letter") if t in set(final["task"])]:
        f = final[final["task"] == task].groupby("layer")
        for col in ("pos", "sym"):
            m, sd = f[col].mean(), f[col].std(ddof=1)
            out[(task, col)] = pd.Series([f"{a:.3f} ± {b:.3f}" if not np.isnan(b) else f"{a:.3f}"
                                          for a, b in zip(m, sd)], index=m.index)
    table = pd.DataFrame(out).fillna("—")
    table.index.name = "layer"
    return table
