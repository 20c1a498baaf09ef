"""Events in a run's trajectory: best step, hop-learning steps, purity events and final classes.

The tables these functions read are the per-checkpoint outputs of :mod:`posym.analyze` (``eval.csv``,
``scores.parquet``) for one or more runs, told apart by the ``group`` columns (task, seed).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import metrics


KINDS = ("positional", "symbolic")


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
