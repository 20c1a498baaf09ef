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

from ..paper import PAPER
from ..stats import mean_ci, seed_band  # noqa: F401  (part of this chapter's interface)
from ..trajectory import (KINDS, _groups, _runs_of, _select, best_steps, classify_steps,  # noqa: F401
                         cumulative_counts, final_classes, hop_criteria, hop_learning_steps, layer_ranges,
                         minmax_per_layer, order_consistent, purity_events, purity_order, representative_layers)
from ..spec import ChapterSpec, Param, Required, register


GAMMAS = PAPER["gammas"]


# -----------------------------------------------------------------------------------------------
# Statistics over seeds


# -----------------------------------------------------------------------------------------------
# Accuracy


# -----------------------------------------------------------------------------------------------
# Purity


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
    from ..plotting import task_color
    return task_color(task)


def plot_hop_accuracy(ax, eval_df: pd.DataFrame, task: str, level: float = 0.95, method: str = "t",
                      show_seeds: bool = True):
    """Fig. 2A for one task: validation accuracy per hop count and overall vs step, the mean over seeds with
    its confidence band, every seed faint, and the mean best step dashed.  Returns the mean best step."""
    from ..plotting import COLORS, HOP_COLORS

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
    from ..plotting import COLORS

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
    from ..plotting import COLORS

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


# -----------------------------------------------------------------------------
# The chapter's parameters

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda  (see data/README.md)"


def _checks(p: dict):
    if p["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {p['n_prompts']}"
    if p["seed"] >= p["n_seeds"]:
        return "seed", f"must be one of the runs shown, 0..{p['n_seeds'] - 1} (n_seeds = {p['n_seeds']}), got {p['seed']}"
    return None


register(ChapterSpec(
    name="dynamics",
    params={
        "n_seeds": Param(int, {"smoke": 2, "teaching": 1, "paper": 5},
                         "training seeds per task (trained at smoke/teaching, read from data/paper at paper)",
                         min=1, max=5),
        "seed": Param(int, 0, "the run drawn boldly and annotated in the purity figures", min=0, max=4),
        "n_prompts": Param(int, {"smoke": 100, "teaching": 200, "paper": 400},
                           "test prompts of the metric for the runs trained here (data/paper used 400)",
                           min=4, max=2_000),
        "threshold": Param(float, 0.9, "accuracy at which a hop count counts as learned", min=0.5, max=1.0),
        "ci": Param(str, "t", "confidence interval over seeds: Student-t or percentile bootstrap",
                    choices=("t", "bootstrap")),
    },
    requires={"paper": tuple(
        [Required(f"paper/{t}-s{s}/{f}", _HOW, what) for t in ("number", "letter") for s in range(5)
         for f, what in (("eval.csv", "validation accuracy per checkpoint"),
                         ("scores.parquet", "positional/symbolic scores per checkpoint"))]
        + [Required("paper/number-s0/final.pt", _HOW, "the final Number checkpoint, seed 0")])},
    checks=(_checks,),
))
