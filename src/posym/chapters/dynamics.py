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
from ..spec import PAPER_RUNS_HOW as _HOW, ChapterSpec, Param, Required, multiple_of, register


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
            ok, rel, example = 0, 0, ""
            for s in seeds:
                e = ev[(ev["seed"] == s) & (ev["kind"] == "positional")]
                ls = dict(zip(e["layer"].astype(int), e["step"]))
                ok += set(ls) == set(paper["positional_order"]) and order_consistent(ls, paper["positional_order"])
                rel += len(ls) >= 2 and order_consistent(ls, paper["positional_order"])
                if not example:
                    example = f"seed {s}: " + (", ".join(f"L{l}" for l in sorted(ls, key=lambda l: (ls[l], l))) or "none")
            never0 = " (layer 0 never becomes pure)" if 0 in paper["positional_order"] and not (
                (ev["layer"] == 0) & (ev["kind"] == "positional")).any() else ""
            rows.append(_claim(task, "order in which positional heads become pure",
                               ", ".join(f"L{l}" for l in paper["positional_order"]),
                               f"all of the paper's layers, in its order, in {ok}/{n} seeds; the layers that do "
                               f"become pure follow its relative order in {rel}/{n} ({example}){never0}",
                               ok == n, ok / n,
                               note="a seed counts if every layer of the paper's order becomes pure positional, in "
                                    "that order; see the appendix 'Reconciling with the paper'"))
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

def plot_hop_accuracy(ax, eval_df: pd.DataFrame, task: str, level: float = 0.95, method: str = "t",
                      show_seeds: bool = True):
    """Fig. 2A for one task: validation accuracy per hop count and overall vs step, the mean over seeds with
    its confidence band, every seed faint, and the mean best step dashed.  Returns the mean best step."""
    from ..plotting import COLORS, HOP_COLORS

    e = eval_df[eval_df["task"] == task].assign(hop=lambda d: d["hop"].astype(str))
    n_seeds = e["seed"].nunique()
    for hop in _hop_labels(task):
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
    ax.text(mb, 0.02, f" best {mb:,.0f}", color=COLORS["neutral"], fontsize=9, va="bottom")
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
    ax.set_title(f"layer {layer}", fontsize=10)
    if legend:
        ax.legend(fontsize=9, loc="center right")


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
                            xytext=(-3, 3) if left else (4, -9), ha="right" if left else "left", fontsize=9,
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

    The tasks' models may differ in depth (the teaching scale): a layer a task's model lacks is missing (NaN)."""
    out = {}
    for task in sorted(set(final["task"]), key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t)):
        f = final[final["task"] == task].groupby("layer")
        for col in ("pos", "sym"):
            m, sd = f[col].mean(), f[col].std(ddof=1)
            out[(task, col)] = pd.Series([f"{a:.3f} ± {b:.3f}" if not np.isnan(b) else f"{a:.3f}"
                                          for a, b in zip(m, sd)], index=m.index)
    table = pd.DataFrame(out)  # a layer one task's model lacks stays missing ("–" in posym.display.table)
    table.index.name = "layer"
    return table


# -----------------------------------------------------------------------------------------------
# The page: the runs behind a scale, their tables, figures and glued sentences

TASKS = ("number", "letter")
FIG_WIDTH = 7.2  # inches: a figure at the book's column width keeps its text at the size it was set


def params_line(cfg) -> str:
    """The one-line summary of the chapter's parameters."""
    return f"scale {cfg.scale!r}: " + ", ".join(f"{k}={v!r}" for k, v in cfg.params.items())


def scale_warning(cfg):
    """A warning (Markdown) that the sentences interpret the paper-scale runs; ``None`` at the paper scale.
    Also glues the scale (``scale_name``), the seed count (``n_seeds``) and the seed drawn in bold
    (``bold_seed``) for the captions."""
    from ..glue import glue_md

    glue_md({"scale_name": cfg.scale, "n_seeds": cfg.n_seeds, "bold_seed": cfg.seed})
    if cfg.scale == "paper":
        return None
    from IPython.display import Markdown

    return Markdown(
        ":::{warning} Small scale\n"
        f"This copy of the chapter was executed at the `{cfg.scale}` scale: its models are small and briefly "
        "trained, and need not learn the tasks at all. The figures and tables are computed by the same code as at "
        "the `paper` scale, but the sentences that interpret them were written for the paper-scale runs "
        "(`make book` builds that version).\n:::")


def cosine(a, b) -> float:
    """The cosine of two vectors (the positional and symbolic scores compare 2-vectors this way)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _fmt_step(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:,.0f}"


def _hop_labels(task: str) -> list[str]:
    """The hop labels of ``task``'s accuracy table: ``"1"``.. its deepest hop count, then ``"all"``."""
    from ..tasks import get_task

    return [str(h) for h in range(1, get_task(task).max_hops + 1)] + ["all"]


#: the smoke-scale runs: the smoke preset (TrainConfig.smoke) with these overrides
SMOKE_TRAIN = {"steps": 50}


class Runs:
    """The chapter's runs at its scale, and everything the page computes from them.

    ``paper``: the ten committed runs in ``data/paper``; ``teaching``: runs trained once into
    ``_build/runs/teaching`` (:func:`posym.runs.run_cache`), shared with the head-roles chapter; ``smoke``: tiny
    runs trained from scratch, in a temporary folder (removed when the kernel stops at the latest), on one
    thread (:class:`posym.runs.ChapterRuns`).  Holds ``ev`` (validation accuracy), ``traj`` (scores, entropy
    min-max normalised per layer), ``best`` (:func:`best_steps`), ``n_layer``, ``total_steps`` and ``window``
    (5 % of training).  ``tasks`` defaults to Paper 2's two; any registered task works (the claims and the
    layer-0 split are about Paper 2's models and need those).
    """

    def __init__(self, cfg, tasks: Sequence[str] | None = None):
        from .. import runs
        from ..results import load_table

        self.cfg = cfg
        self.tasks = tuple(tasks or TASKS)
        self.seeds = list(range(cfg.n_seeds))
        self.ci = dict(level=0.95, method=cfg.ci)
        self._runs = runs.ChapterRuns(cfg.scale, self.tasks, self.seeds, cfg.n_prompts, cfg.data_dir,
                                      prefix="posym-dynamics-", smoke=SMOKE_TRAIN)
        self.root = self._runs.root
        ev, traj = load_table(self.root, "eval"), load_table(self.root, "scores")
        self.ev = ev[ev["seed"].isin(self.seeds) & ev["task"].isin(self.tasks)].reset_index(drop=True)
        traj = traj[traj["seed"].isin(self.seeds) & traj["task"].isin(self.tasks)].reset_index(drop=True)
        self.traj = minmax_per_layer(traj, "entropy")
        self.n_layer = int(self.traj["layer"].max()) + 1
        self.total_steps = int(self.traj["step"].max())
        self.window = 0.05 * self.total_steps
        self.best = best_steps(self.ev)
        self.mean_best = self.best.groupby("task")["best_step"].mean()
        self.runs = sorted(set(zip(self.traj["task"], self.traj["seed"])))
        self._purity: dict = {}

    # --- the runs and their accuracy ------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """One row per run: layers, steps, checkpoints, best step and accuracy, final accuracy."""
        runs = self.best.assign(layers=self.n_layer, steps=self.total_steps,
                                checkpoints=self.traj.groupby(["task", "seed"])["step"].nunique().to_numpy())
        return runs[["task", "seed", "layers", "steps", "checkpoints", "best_step", "best_accuracy",
                     "final_accuracy"]].round(4)

    def hop_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(criteria, summary)``: per run, whether the hops are learned one after another or together
        (:func:`hop_criteria`), and per task and hop the mean first step at ``threshold`` with its interval.
        Glues the numbers of the sentences on accuracy."""
        from ..glue import glue_md

        hop_steps = hop_learning_steps(self.ev, self.cfg.threshold)
        crit = hop_criteria(hop_steps, self.window)
        summary = pd.DataFrame([
            {"task": t, "hop": h, **dict(zip(["mean", "lo", "hi"], mean_ci(
                hop_steps[(hop_steps["task"] == t) & (hop_steps["hop"] == h)]["step"], **self.ci)))}
            for t in self.tasks for h in _hop_labels(t)]).set_index(["task", "hop"])
        glue_md(self._accuracy_glue(crit, summary))
        return crit, summary

    def _accuracy_glue(self, crit: pd.DataFrame, summary: pd.DataFrame) -> dict:
        out = {}
        best, mean_best = self.best, self.mean_best
        for t in self.tasks:
            b = best[best["task"] == t]["best_step"]
            c = crit[crit["task"] == t]
            paper_best = PAPER.get(t, {}).get("best_step", math.nan)  # a task the paper did not run has none
            out[f"best_{t}"] = _fmt_step(mean_best[t])
            out[f"paper_best_{t}"] = _fmt_step(paper_best)
            out[f"best_range_{t}"] = f"{_fmt_step(b.min())}–{_fmt_step(b.max())}"
            out[f"sequential_{t}"] = f"{int(c['sequential'].sum())}/{len(c)}"
            out[f"together_{t}"] = f"{int(c['together'].sum())}/{len(c)}"
            out[f"spread_{t}"] = _fmt_step(mean_ci(c["spread"], **self.ci)[0])
            for h in "1234":
                out[f"t{h}_{t}"] = _fmt_step(summary.loc[(t, h), "mean"] if (t, h) in summary.index else math.nan)
            out[f"earlier_{t}"] = "n/a" if math.isnan(paper_best) else f"{1 - mean_best[t] / paper_best:.0%}"
            coarse = best_steps(self.ev[(self.ev["task"] == t) & (self.ev["step"] % 250 == 0)])
            out[f"best250_{t}"] = _fmt_step(coarse["best_step"].mean()) if len(coarse) else "–"
        out["window"] = f"{self.window:,.0f}"
        out["threshold_pct"] = f"{self.cfg.threshold:.0%}"
        out["paper_one_hop"] = f"{PAPER['number']['one_hop_step']:,}"
        return out

    def plot_accuracy(self):
        """Fig. 2A: validation accuracy per hop count, one panel per task (:func:`plot_hop_accuracy`)."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(self.tasks), figsize=(FIG_WIDTH, 3.4), sharey=True, squeeze=False)
        axes = axes[0]
        for ax, task in zip(axes, self.tasks):
            plot_hop_accuracy(ax, self.ev, task, **self.ci)
        for ax in axes[1:]:
            ax.set_ylabel("")
        axes[0].legend(loc="upper left", fontsize=9, ncol=1)
        return fig

    # --- scores ---------------------------------------------------------------------------------
    def plot_scores(self):
        """Fig. 2B: the scores and normalised entropy of representative layers, per task."""
        import matplotlib.pyplot as plt

        shown = representative_layers(self.n_layer)
        fig, axes = plt.subplots(len(self.tasks), len(shown), figsize=(FIG_WIDTH, 2.6 * len(self.tasks)),
                                 sharex=True, sharey=True, squeeze=False)
        for i, task in enumerate(self.tasks):
            for j, layer in enumerate(shown):
                plot_layer_scores(axes[i, j], self.traj, task, layer, **self.ci, best=self.mean_best[task])
                axes[i, j].set_title(f"{task.capitalize()}, layer {layer}", fontsize=10)
            axes[i, 0].set_ylabel("score / entropy")
        for ax in axes[-1]:
            ax.set_xlabel("training step")
        _thin_step_ticks(axes.flat)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3, fontsize=9)
        return fig

    def plot_all_layers(self, task: str):
        """Fig. 6 for one task: the scores of every layer, three panels a row."""
        import matplotlib.pyplot as plt

        ncols = min(3, self.n_layer)
        nrows = -(-self.n_layer // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(FIG_WIDTH, 1.9 * nrows + 0.9), sharex=True, sharey=True,
                                 squeeze=False)
        for layer, ax in enumerate(axes.flat):
            if layer >= self.n_layer:
                ax.set_visible(False)
                continue
            plot_layer_scores(ax, self.traj, task, layer, **self.ci, best=self.mean_best[task])
            ax.set_title(f"layer {layer}", fontsize=10)
        _thin_step_ticks(axes.flat)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3, fontsize=9)
        fig.supxlabel("training step", fontsize=10)
        return fig

    def final_scores(self) -> pd.DataFrame:
        """:func:`final_score_table` at the paper's first tolerance."""
        return final_score_table(final_classes(self.traj, gamma=GAMMAS[0]))

    # --- purity ---------------------------------------------------------------------------------
    def purity(self, gamma: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(events, counts)`` at tolerance ``gamma``: :func:`posym.metrics.purity_events` and
        :func:`posym.metrics.purity_counts` per run (cached)."""
        from .. import metrics

        if gamma not in self._purity:
            self._purity[gamma] = (metrics.purity_events(self.traj, gamma, group=("task", "seed")),
                                   metrics.purity_counts(self.traj, gamma, group=("task", "seed")))
        return self._purity[gamma]

    def last_counts(self) -> pd.DataFrame:
        """Pure positional and symbolic heads at the last checkpoint, per run, at each of the paper's
        tolerances (columns ``γ = <gamma> positional``...)."""
        parts = {}
        for g in GAMMAS:
            counts = self.purity(g)[1]
            parts[g] = counts[counts["step"] == self.total_steps].set_index(["task", "seed"])[["positional", "symbolic"]]
        out = pd.concat(parts, axis=1, names=["γ"])
        out.columns = [f"γ = {g} {kind}" for g, kind in out.columns]
        return out.reset_index()

    def plot_purity(self):
        """Figs. 2C and 7: cumulative pure heads per task (columns) and tolerance (rows); run ``cfg.seed`` bold
        and annotated with its layers."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(GAMMAS), len(self.tasks), figsize=(FIG_WIDTH, 6.4), sharex=True, squeeze=False)
        for i, g in enumerate(GAMMAS):
            events, counts = self.purity(g)
            for j, task in enumerate(self.tasks):
                plot_purity_counts(axes[i, j], counts, events, task, self.cfg.seed, g)
                if i < len(GAMMAS) - 1:
                    axes[i, j].set_xlabel("")
                if j:
                    axes[i, j].set_ylabel("")
        _thin_step_ticks(axes.flat)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=2, fontsize=9)
        return fig

    def purity_matrix(self, gamma: float) -> pd.DataFrame:
        """:func:`purity_matrix` of every run at ``gamma``."""
        return purity_matrix(self.purity(gamma)[0], self.n_layer, runs=self.runs)

    def purity_order(self, gamma: float) -> pd.DataFrame:
        """:func:`purity_order` of every run at ``gamma``."""
        return purity_order(self.purity(gamma)[0], runs=self.runs)

    def changed_rules(self, gamma: float = 0.1) -> pd.DataFrame:
        """The heads on which the first-purity and the settled rule disagree (:func:`compare_rules`); glues
        ``n_transient``, the Letter heads first counted as positional."""
        from ..glue import glue_md

        rules = compare_rules(self.traj, gamma)
        changed = rules[(rules["first"] != rules["settled"])
                        | (rules["first_step"].fillna(-1) != rules["settled_step"].fillna(-1))]
        glue_md({"n_transient": int(((changed["first"] == "positional") & (changed["task"] == "letter")).sum())})
        return changed.drop(columns="head")

    def plot_transients(self, changed: pd.DataFrame):
        """Up to four heads that change kind between their first purity and the end of training: their scores
        and normalised entropy vs step.  When there is none, a printed line and a panel that says so."""
        import matplotlib.pyplot as plt

        from ..plotting import COLORS

        flip = changed[(changed["first"] != changed["settled"]) & (changed["first"] != "—")].head(4)
        if not len(flip):
            print("no head changes kind between its first purity and the end of training")
            fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.8))
            ax.text(0.5, 0.5, "no head changes kind between its first purity and the end of training",
                    ha="center", va="center", fontsize=10, color=COLORS["neutral"], transform=ax.transAxes)
            ax.axis("off")
            return fig
        ncols = min(2, len(flip))
        nrows = -(-len(flip) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(FIG_WIDTH, 2.6 * nrows + 0.5), squeeze=False, sharey=True)
        for ax, (_, r) in zip(axes.flat, flip.iterrows()):
            d = self.traj[(self.traj["task"] == r.task) & (self.traj["seed"] == r.seed) & (self.traj["layer"] == r.layer)]
            ax.plot(d["step"], d["pos"], color=COLORS["positional"], label="$s_{POS}$")
            ax.plot(d["step"], d["sym"], color=COLORS["symbolic"], label="$s_{SYM}$")
            ax.plot(d["step"], d["entropy_minmax"], color=COLORS["entropy"], ls="--", label="entropy (min–max)")
            for y in (0.1, 0.9):
                ax.axhline(y, color=COLORS["neutral"], lw=0.6, ls=":")
            ax.set(title=f"{r.task}, seed {r.seed}, layer {r.layer}", xlabel="training step")
            ax.title.set_size(10)
        for ax in axes.flat[len(flip):]:
            ax.set_visible(False)
        _thin_step_ticks(axes.flat)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3, fontsize=9)
        return fig

    # --- claims ---------------------------------------------------------------------------------
    def claims(self) -> pd.DataFrame:
        """:func:`claims_table` at γ = 0.1 and the chapter's threshold and interval."""
        return claims_table(self.ev, self.traj, gamma=0.1, threshold=self.cfg.threshold, **self.ci)

    # --- layer 0 of the Number model ------------------------------------------------------------
    def layer0(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Layer 0 of the seed-0 Number model (the committed ``final.pt`` at the paper scale), on the chapter's
        test prompts split by whether the query points at a letter: ``(scores by group, selective-Index match
        rate per layer)``.  Glues the numbers quoted in the text."""
        from ..analyze import last_query_argmax, scores_by_group
        from ..glue import glue_md
        from ..functions import index_target_kind, selective_index_match
        from ..tasks import balanced_eval_set, get_task
        from ..train import list_checkpoints, load_checkpoint

        task = get_task("number")
        if self.cfg.scale == "paper":
            final_pt = self.root / "number-s0" / "final.pt"
        else:
            final_pt = list_checkpoints(self.root / "number-s0")[-1][1]
        model, _ = load_checkpoint(final_pt)
        probe = balanced_eval_set(task, self.cfg.n_prompts, seed=0, split="test")
        split = scores_by_group(model, probe, task.vocab, layer=0, groups=index_target_kind(probe))
        argmax, _ = last_query_argmax(model, probe, task.vocab)
        sel = selective_index_match(argmax, probe)
        by_group = split.set_index("group")
        values = {"l0_sel": f"{sel[0]:.0%}"}
        for g, key in (("points at a letter", "letter"), ("points at a number", "number")):
            for col in ("pos", "sym"):
                values[f"l0_{key}_{col}"] = f"{by_group.loc[g, col]:.2f}" if g in by_group.index else "n/a"
        glue_md(values)
        return split, sel

    def cleanup(self) -> None:
        """Remove the temporary folder of runs trained from scratch (nothing otherwise)."""
        self._runs.cleanup()


def claims_details(claims: pd.DataFrame):
    """The per-seed details behind the claims table, as Markdown; glues ``n_agree``."""
    from IPython.display import Markdown

    from ..glue import glue_md

    glue_md({"n_agree": f"{int(claims['agree'].sum())} of {len(claims)}"})
    return Markdown("**Details behind the rows** (per-seed values):\n\n" + "\n".join(
        f"* {r.task}, {r.claim}: {r.note}" for r in claims.itertuples() if r.note))


def selective_line(sel) -> str:
    """The sentence on how often layer 0 attends where selective Index reads (``sel``: match rate per layer)."""
    return (f"layer 0 attends where selective Index reads (p - i if a letter is there, else itself) "
            f"on {sel[0]:.1%} of the prompts")


def criteria_line(eval_df: pd.DataFrame, threshold: float, window: float) -> str:
    """For the exercise: with hops learned at ``threshold`` (:func:`hop_learning_steps`, :func:`hop_criteria`),
    per task, in how many seeds the hops are sequential and together, and the mean spread of their first steps."""
    crit = hop_criteria(hop_learning_steps(eval_df, threshold), window)
    return "; ".join(
        f"{t}: sequential in {int(g['sequential'].sum())}/{len(g)}, together in {int(g['together'].sum())}/{len(g)}, "
        f"mean spread {mean_ci(g['spread'])[0]:,.0f} steps" for t, g in crit.groupby("task", sort=False))


def _thin_step_ticks(axes) -> None:
    """At most four step ticks per panel, so that the labels of narrow panels do not collide."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.tick_params(labelsize=9)


# -----------------------------------------------------------------------------
# The chapter's parameters

def _seed_shown(p: dict):
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
    checks=(multiple_of(4, ("n_prompts",), "hop-balanced prompts"), _seed_shown),
))
