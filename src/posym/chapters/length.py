"""The "Length generalisation" chapter: its parameters, the steps of its page, and its figures.

The computations (long prompts, accuracy curves, margins) are pipeline code in :mod:`posym.longprompts`;
this module runs them for the page at each scale (training small models at the ``smoke`` and ``teaching``
scales, reading the committed runs in ``data/paper`` at the ``paper`` scale), turns them into tables, glues
the numbers the text quotes and draws the figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..display import table
from ..longprompts import (DEFAULT_LENGTHS, DEFAULT_TARGETS, break_table, extended_prompts, key_layers,
                           length_curve, length_summary, logit_terms, margin_analysis, margin_summary,
                           predicted_breaks, prompt_agreement, static_margins, static_summary)
from ..paper import PAPER_FIG5B, paper_points
from ..spec import PAPER_RUNS_HOW as _HOW, ChapterSpec, Param, Required, multiple_of, register
from ..stats import mean_halfwidth

TASKS = ("number", "letter")
#: Lengths of the accuracy table (those of the measured curves).
TABLE_LENGTHS = (100, 200, 500, 1000, 2000, 5000)


def _md(text):
    from IPython.display import Markdown
    return Markdown(str(text))


def _glue(name: str, text) -> None:
    from myst_nb import glue
    glue(name, _md(text), display=False)


def small_scale_warning(scale: str):
    """The warning shown at the ``smoke`` and ``teaching`` scales (a Markdown object), ``None`` at ``paper``."""
    if scale == "paper":
        return None
    return _md(
        ":::{warning} Small scale\n"
        f"This copy of the chapter was executed at the `{scale}` scale: its models are small and briefly "
        "trained, and need not learn the tasks at all. The figures and tables are computed by the same code as at "
        "the `paper` scale, but the sentences that interpret them were written for the paper-scale runs "
        "(`make book` builds that version).\n:::")


# -----------------------------------------------------------------------------
# The accuracy curves (Fig. 5B)

@dataclass
class LengthData:
    """What the page analyses: the accuracy curves of every run and the final model of one seed per task."""
    scale: str
    curves: pd.DataFrame            # length_curve rows of every run (task, seed, length, hop, accuracy, n)
    models: dict                    # {task: GPTJ}: the models whose heads the page analyses
    model_seed: int                 # their training seed
    summary: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.summary = length_summary(self.curves)

    def describe(self) -> str:
        c = self.curves
        return (f"{c.groupby('task')['seed'].nunique().to_dict()} runs per task, lengths "
                f"{sorted(int(L) for L in c['length'].unique())}, {int(c['n'].max())} prompts per length")

    def measured(self) -> dict:
        """The accuracy of the analysed models, per task: a table of length and accuracy (all hops)."""
        c = self.curves
        return {task: c[(c["task"] == task) & (c["seed"] == self.model_seed) & (c["hop"] == "all")]
                [["length", "accuracy"]].sort_values("length").reset_index(drop=True) for task in TASKS}


#: the smoke-scale models: the smoke preset (TrainConfig.smoke) with these overrides
SMOKE_TRAIN = {"steps": 100}


def accuracy_data(cfg) -> LengthData:
    """The accuracy curves at ``cfg.scale``.

    ``paper``: the committed curves of the ten runs in ``data/paper`` and the two committed final models
    (seed 0). ``smoke``/``teaching``: one model per task trained here (:func:`posym.runs.train_models`, into a
    temporary folder), evaluated on hop-balanced prompts of ``DEFAULT_LENGTHS`` up to ``cfg.max_length``.
    The torch thread count is left as the rest of the page expects it (two threads at most at ``paper``, one
    otherwise).
    """
    import tempfile
    from pathlib import Path

    import torch

    from .. import results, runs
    from ..analyze import final_model
    from ..train import load_checkpoint

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if cfg.scale == "paper":
        root = cfg.data_dir / "paper"
        curves = results.load_table(root, "length")
        models = {task: load_checkpoint(root / f"{task}-s0" / "final.pt")[0] for task in TASKS}
        return _glued(LengthData(cfg.scale, curves, models, 0))
    root = Path(tempfile.mkdtemp(prefix="posym-length-")) / "runs"
    trained = runs.train_models(cfg.scale, cfg.seed, root, smoke=SMOKE_TRAIN)
    models = {task: final_model(run) for task, run in trained.items()}
    lengths = sorted({L for L in DEFAULT_LENGTHS if L <= cfg.max_length} | {cfg.max_length})
    torch.set_num_threads(1)
    curves = pd.concat([length_curve(models[task], task, cfg.seed, lengths, n=cfg.n_prompts)
                        .assign(task=task, seed=cfg.seed) for task in TASKS], ignore_index=True)
    return _glued(LengthData(cfg.scale, curves, models, cfg.seed))


def _glued(data: LengthData) -> LengthData:
    """Glue what the figure captions quote: the scale, the runs per task, the analysed models' seed."""
    n = int(data.curves.groupby("task")["seed"].nunique().min())
    _glue("scale_text", data.scale)
    _glue("n_runs_text", f"{n} run{'s' if n > 1 else ''} (seed{'s' if n > 1 else ''} "
                         f"{', '.join(str(int(x)) for x in sorted(data.curves['seed'].unique()))})")
    _glue("model_seed_text", data.model_seed)
    return data


def _shown_lengths(summary: pd.DataFrame) -> list[int]:
    return [L for L in TABLE_LENGTHS if L in set(summary["length"])]


def accuracy_table(summary: pd.DataFrame):
    """Mean accuracy ± 95 % interval over seeds at the lengths of :data:`TABLE_LENGTHS`, per task, beside the
    paper's Fig. 5B read-offs at the same lengths ("–" where the paper gives none)."""
    tab = summary[(summary["hop"] == "all") & summary["length"].isin(_shown_lengths(summary))]
    tab = tab.assign(ours=[f"{m:.2f} ± {c:.2f}" if np.isfinite(c) else f"{m:.2f}"
                           for m, c in zip(tab["mean"], tab["ci"])])
    wide = tab.pivot(index="length", columns="task", values="ours").reindex(columns=list(TASKS))
    out = pd.DataFrame({"length": wide.index.astype(int)})
    for task in TASKS:
        out[f"{task} (ours)"] = wide[task].to_numpy()
        out[f"{task} (paper)"] = [PAPER_FIG5B[task].get(int(L), np.nan) for L in wide.index]
    return table(out, caption="Accuracy against input length: ours (mean ± 95 % interval over seeds) and the "
                 "paper's Fig. 5B read-offs", key_columns=["length"],
                 digits={f"{task} (paper)": 2 for task in TASKS})


def break_summary(curves: pd.DataFrame):
    """The break lengths (:func:`posym.longprompts.break_table`): where each run's accuracy falls below 0.9
    and 0.5, summarised over runs (mean, min, max, count of runs that fall below)."""
    breaks = break_table(curves)
    agg = (breaks.groupby(["task", "threshold"])["break_length"].agg(["mean", "min", "max", "count"])
           .reindex(list(TASKS), level=0).round(0).reset_index())
    return table(agg, caption="Break lengths (tokens) over runs: accuracy below the threshold",
                 key_columns=["task", "threshold"], digits={"threshold": 1, "mean": 0, "min": 0, "max": 0})


def glue_accuracy(summary: pd.DataFrame, curves: pd.DataFrame) -> None:
    """Glue the accuracies and break lengths the text quotes (names as in the page)."""
    show_L = _shown_lengths(summary)

    def acc_at(task, L, hop="all"):
        r = summary[(summary["task"] == task) & (summary["length"] == L) & (summary["hop"] == hop)]
        return float(r["mean"].iloc[0]) if len(r) else float("nan")

    def fmt(v):
        return f"{v:.2f}" if np.isfinite(v) else "n/a"

    Lmax = int(summary["length"].max())
    L_mid = min(show_L, key=lambda L: abs(L - 500)) if show_L else Lmax
    L_1k = min(show_L, key=lambda L: abs(L - 1000)) if show_L else Lmax
    _glue("L_mid", L_mid)
    _glue("L_1k", L_1k)
    _glue("Lmax", f"{Lmax:,}")
    for task in TASKS:
        _glue(f"{task}_mid", fmt(acc_at(task, L_mid)))
        _glue(f"{task}_1k", fmt(acc_at(task, L_1k)))
        _glue(f"{task}_max", fmt(acc_at(task, Lmax)))
        _glue(f"{task}_1hop_1k", fmt(acc_at(task, L_1k, "1")))
        _glue(f"{task}_4hop_1k", fmt(acc_at(task, L_1k, "4")))
    _glue("paper_letter_500", f"{PAPER_FIG5B['letter'][500]:.2f}")
    _glue("paper_letter_5000", f"{PAPER_FIG5B['letter'][5000]:.2f}")
    _glue("paper_number_1000", f"{PAPER_FIG5B['number'][1000]:.2f}")
    _glue("paper_number_500", f"{PAPER_FIG5B['number'][500]:.2f}")
    _glue("paper_number_half", min(PAPER_FIG5B["number"], key=lambda L: abs(PAPER_FIG5B["number"][L] - 0.5)))
    letter_90 = max(L for L, a in PAPER_FIG5B["letter"].items() if a >= 0.9)
    _glue("paper_letter_90", letter_90)

    breaks = break_table(curves)

    def break_text(task, thr):
        b = breaks[(breaks["task"] == task) & (breaks["threshold"] == thr)]["break_length"]
        vals = b.dropna().to_numpy(dtype=float)
        if len(vals) == 0:
            return "beyond the longest length"
        m, h = mean_halfwidth(vals)
        never = len(b) - len(vals)
        extra = f" ({never} run{'s' if never > 1 else ''} never fell below)" if never else ""
        return (f"{m:,.0f} ± {h:,.0f} tokens" if np.isfinite(h) else f"{m:,.0f} tokens") + extra

    for task in TASKS:
        for thr in (0.9, 0.5):
            _glue(f"{task}_break_{int(thr * 10)}", break_text(task, thr))
    b9 = breaks[(breaks["task"] == "letter") & (breaks["threshold"] == 0.9)]["break_length"].astype(float)
    _glue("letter_seeds_before", f"{int((b9 < letter_90).sum())} of {len(b9)}")
    _glue("letter_latest_9", f"{b9.max():,.0f}" if b9.notna().any() else "n/a")


# -----------------------------------------------------------------------------
# Margins of the key heads

@dataclass
class MarginStudy:
    """The margin analysis of the page: key heads, long-prompt margins, predictions from 17 tokens."""
    base: dict          # {task: margin_analysis at 17 tokens}
    key: dict           # {task: key layers}
    measured: dict      # {task: length, accuracy of the analysed model}
    at_length: dict = field(default_factory=dict)   # {task: margin_analysis on the long prompts}
    static: dict = field(default_factory=dict)      # {task: static_margins}
    pred: dict = field(default_factory=dict)        # {task: static_summary merged with margin_summary}
    comparison: pd.DataFrame | None = None          # predicted_breaks per task and threshold


def key_heads(data: LengthData, n_static: int) -> MarginStudy:
    """The key heads of each analysed model: the layers whose last-query arg-max is on the target on at least
    90 % of ``n_static`` 17-token prompts (:func:`posym.longprompts.key_layers`)."""
    base = {task: margin_analysis(data.models[task], task, data.model_seed, [17], n=n_static) for task in TASKS}
    key = {task: key_layers(base[task], min_rate=0.9) for task in TASKS}
    _glue("key_number", ", ".join(map(str, key["number"])))
    _glue("key_letter", ", ".join(map(str, key["letter"])))
    return MarginStudy(base, key, data.measured())


def hit_table(study: MarginStudy):
    """Per task and layer: the share of 17-token prompts whose last-query arg-max is on the target."""
    hits = pd.DataFrame({task: study.base[task].groupby("layer")["hit"].mean() for task in TASKS})
    wide = hits.T.round(2)
    wide.columns = [f"layer {c}" for c in wide.columns]
    wide.insert(0, "key layers", [", ".join(map(str, study.key[t])) for t in wide.index])
    wide.insert(1, "target", [DEFAULT_TARGETS[t] for t in wide.index])
    return table(wide.rename_axis("task").reset_index(), key_columns=["task"], digits=2,
                 caption="Share of 17-token prompts whose last-query arg-max is on the target, per layer")


def run_predictions(study: MarginStudy, data: LengthData, n_margin: int, n_static: int,
                    margin_max_length: int) -> MarginStudy:
    """Measure the key heads' margins on long prompts (up to ``margin_max_length``), predict them from
    ``n_static`` 17-token prompts, and compare the break lengths (fills ``study`` and returns it)."""
    import torch

    margin_L = sorted({L for L in DEFAULT_LENGTHS if L <= margin_max_length} | {margin_max_length})
    torch.set_num_threads(min(2, torch.get_num_threads()) if data.scale == "paper" else 1)
    study.at_length = {task: margin_analysis(data.models[task], task, data.model_seed, margin_L, n=n_margin)
                       for task in TASKS}
    study.static = {task: static_margins(data.models[task], task, data.model_seed, study.key[task],
                                         study.measured[task]["length"], n=n_static) for task in TASKS}
    comparison = []
    for task in TASKS:
        dyn = margin_summary(study.at_length[task], study.key[task])
        stat = static_summary(study.static[task], study.key[task])
        study.pred[task] = stat.merge(dyn, on="length", how="outer").sort_values("length")
        b = predicted_breaks(dyn, stat, measured=study.measured[task])
        comparison.append(b.assign(task=task))
    study.comparison = pd.concat(comparison, ignore_index=True).set_index(["task", "threshold"])
    _glue_predictions(study, n_margin, margin_max_length)
    return study


def comparison_table(study: MarginStudy):
    """The break lengths of the measured accuracy and of the three predictions ("–": never within the
    lengths tried)."""
    return table(study.comparison.round(0).reset_index(), key_columns=["task", "threshold"],
                 digits={"threshold": 1}, caption="Break lengths (tokens): measured accuracy and predictions")


def _glue_predictions(study: MarginStudy, n_margin: int, margin_max_length: int) -> None:
    def br(task, thr, col):
        v = study.comparison.loc[(task, thr), col]
        return "never (within the lengths tried)" if v is None or not np.isfinite(v) else f"{v:,.0f}"

    for task in TASKS:
        for thr in (0.9, 0.5):
            for col in ("measured", "static", "at_length", "lemma_f1"):
                _glue(f"br_{task}_{int(thr * 10)}_{col}", br(task, thr, col))
        p = study.pred[task]
        first = p.dropna(subset=["guaranteed"]).iloc[0]
        _glue(f"guar17_{task}", f"{first['guaranteed']:.2f}")
        kept17 = p.dropna(subset=["kept_static"]).iloc[0]
        _glue(f"static17_{task}", f"{kept17['kept_static']:.2f}")
    _glue("margin_max", f"{margin_max_length:,}")
    for task in TASKS:
        p = study.pred[task].dropna(subset=["judged"])
        _glue(f"judged_{task}", f"{int(p['judged'].min())} of {int(p['n'].max())}")
    _glue("n_margin_text", n_margin)


def margin_terms(study: MarginStudy) -> dict:
    """Per task: the median target logit and best other logit of the key layers per length
    (:func:`posym.longprompts.logit_terms`); glues the sentences that quote them."""
    terms = {task: logit_terms(study.at_length[task], study.key[task]) for task in TASKS}

    def term_change(task):
        t = terms[task]
        lo, hi = t["length"].min(), t["length"].max()
        a, b = t[t["length"] == lo], t[t["length"] == hi]
        return (f"the target logit goes from {a['target_logit'].median():.2f} to {b['target_logit'].median():.2f} "
                f"and the best other from {a['other_logit'].median():.2f} to {b['other_logit'].median():.2f} "
                f"between {lo} and {hi:,} tokens")

    _glue("terms_number", term_change("number"))
    _glue("terms_letter", term_change("letter"))
    return terms


def agreement_table(study: MarginStudy):
    """Prompt by prompt (:func:`posym.longprompts.prompt_agreement`): how often the model is wrong when a key
    head it relies on lost its target and when none did, per task and length; glues the averages."""
    agree = pd.concat([prompt_agreement(study.at_length[task], study.key[task]).assign(task=task)
                       for task in TASKS])

    def flag_text(task):
        a = agree[(agree["task"] == task) & (agree["wrong"] > 0)]
        if a.empty:
            return "no wrong answers at these lengths"
        pf, pn = a["p_wrong_if_flagged"].mean(), a["p_wrong_if_not"].mean()
        return f"{pf:.2f} when the head lost its target against {pn:.2f} when it did not"

    _glue("flag_number", flag_text("number"))
    _glue("flag_letter", flag_text("letter"))
    cols = ["task", "length", "wrong", "flagged", "p_wrong_if_flagged", "p_wrong_if_not", "recall"]
    return table(agree[cols].round(3), key_columns=["task", "length"], digits={c: 3 for c in cols[2:]},
                 fold="Per task and length: wrong answers, flagged prompts and how well the flag predicts them")


def _log_length_axis(ax) -> None:
    """A logarithmic length axis with labels at the powers of ten only (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_extended_prompts(tasks=TASKS, length: int = 26, index: int = 5):
    """One lengthened test prompt per task (:func:`posym.longprompts.extended_prompts`, seed 0, ``length``
    tokens) drawn as a hop chain: the added target-window tokens sit before the original target window."""
    import matplotlib.pyplot as plt

    from ..plotting import draw_hop_chain, task_color
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.5, 1.9 * len(tasks)))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        s = extended_prompts(task, 0, length, 8)[index]
        draw_hop_chain(s, ax, color=task_color(task), title=f"{task.capitalize()} task, {length} tokens: "
                       f"{length - 17} added target-window tokens, answer {s.answer} at position {s.chain[-1]}")
    return fig


def plot_length_curves(summary: pd.DataFrame, ax=None, paper: bool = True):
    """Fig. 5B in the paper's form: accuracy vs input length per task, mean over seeds with its 95 % band,
    and the paper's read-off points as open diamonds. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import task_color
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    for task, g in summary[summary["hop"] == "all"].groupby("task", sort=False):
        c = task_color(task)
        ax.fill_between(g["length"], g["lo"], g["hi"], color=c, alpha=0.2, lw=0)
        ax.plot(g["length"], g["mean"], color=c, marker="o", ms=3,
                label=f"{task} (ours, {int(g['seeds'].max())} seed{'s' if g['seeds'].max() > 1 else ''})")
        if paper and task in PAPER_FIG5B:
            p = paper_points(task)
            ax.plot(p["length"], p["accuracy"], ls="none", marker="D", ms=6, mfc="white", mec=c, mew=1.5,
                    label=f"{task} (paper, Fig. 5B)")
    _log_length_axis(ax)
    ax.set(xlabel="input length (tokens)", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax.figure


def plot_length_by_hop(summary: pd.DataFrame, ax=None):
    """Accuracy vs input length per hop count (colour) and task (line style), mean over seeds. Returns the
    Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..plotting import HOP_COLORS
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    styles = {"number": "-", "letter": "--"}
    for (task, hop), g in summary[summary["hop"] != "all"].groupby(["task", "hop"], sort=False):
        ax.plot(g["length"], g["mean"], color=HOP_COLORS[int(hop)], ls=styles.get(task, "-"), marker=".", ms=4)
    hops = sorted({int(h) for h in summary["hop"] if h != "all"})
    handles = ([Line2D([], [], color=HOP_COLORS[h], label=f"{h} hop{'s' if h != 1 else ''}") for h in hops]
               + [Line2D([], [], color="black", ls=styles[t], label=f"{t} task")
                  for t in styles if t in set(summary["task"])])
    _log_length_axis(ax)
    ax.set(xlabel="input length (tokens)", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax.figure


def plot_predictions(curves: dict, measured: dict, axes=None):
    """Measured accuracy vs the fractions of prompts whose key heads keep their target, per task (one panel
    each, one legend below). Returns the Figure.

    ``curves[task]`` merges :func:`margin_summary` (length, kept, guaranteed) and :func:`static_summary`
    (length, kept_static); ``measured[task]`` has length, accuracy.
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, task_color
    tasks = list(curves)
    if axes is None:
        _, axes = plt.subplots(1, len(tasks), figsize=(7.5, 3.9), sharey=True, squeeze=False)
        axes = axes[0]
    for ax, task in zip(axes, tasks):
        c = task_color(task)
        m = measured[task]
        ax.plot(m["length"], m["accuracy"], color="black", lw=2, label="model accuracy")
        s = curves[task]
        if "kept_static" in s:
            g = s.dropna(subset=["kept_static"])
            ax.plot(g["length"], g["kept_static"], color=c, ls="--", marker="s", ms=3,
                    label="key heads keep their target: predicted from 17 tokens")
        g = s.dropna(subset=["kept"])
        ax.plot(g["length"], g["kept"], color=c, marker="o", ms=3, label="key heads keep their target: measured")
        ax.plot(g["length"], g["guaranteed"], color=COLORS["neutral"], ls=":", marker=".",
                label="Lemma F.1 guarantee (margin ≥ log(n − 1))")
        _log_length_axis(ax)
        ax.set(xlabel="input length (tokens)", ylim=(-0.02, 1.02), title=f"{task.capitalize()} task")
    axes[0].set_ylabel("fraction of prompts")
    fig = axes[0].figure
    handles, labels = axes[0].get_legend_handles_labels()
    labels = [l.replace("key heads keep their target: ", "target kept, ") for l in labels]
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def plot_logit_terms(terms: dict, axes=None):
    """Median logit of the best target key (solid) and of the best other key (dashed) vs length, per task
    (one panel each) and key layer (colour). Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..plotting import PALETTE
    tasks = list(terms)
    if axes is None:
        _, axes = plt.subplots(1, len(tasks), figsize=(7.5, 3.9), squeeze=False)
        axes = axes[0]
    for ax, task in zip(axes, tasks):
        handles = []
        for (layer, g), c in zip(terms[task].groupby("layer"), PALETTE):
            ax.plot(g["length"], g["target_logit"], color=c, marker="o", ms=3)
            ax.plot(g["length"], g["other_logit"], color=c, ls="--", marker="x", ms=3)
            handles.append(Line2D([], [], color=c, label=f"layer {layer}"))
        _log_length_axis(ax)
        ax.set(xlabel="input length (tokens)", title=f"{task.capitalize()} task")
        ax.legend(handles=handles, loc="best")
    axes[0].set_ylabel("attention logit (median)")
    fig = axes[0].figure
    fig.legend(handles=[Line2D([], [], color="black", marker="o", ms=3, label="target key"),
                        Line2D([], [], color="black", ls="--", marker="x", ms=3, label="best other key")],
               loc="outside lower center", ncol=2)
    return fig


# -----------------------------------------------------------------------------
# The chapter's parameters

def _checks(params: dict):
    if params["margin_max_length"] > params["max_length"]:
        return "margin_max_length", (f"must be at most max_length ({params['max_length']}), "
                                     f"got {params['margin_max_length']}")
    return None


register(ChapterSpec(
    name="length",
    params={
        "seed": Param(int, 0, "training seed of the small models (smoke and teaching scales)", min=0, max=2**31 - 1),
        "n_prompts": Param(int, {"smoke": 64, "teaching": 200, "paper": 500},
                           "hop-balanced prompts per length for the accuracy curves (a multiple of 4; the paper "
                           "scale reads the committed 500-prompt curves)", min=4, max=45_600),
        "max_length": Param(int, {"smoke": 300, "teaching": 1000, "paper": 5000},
                            "longest prompt of the accuracy curves (tokens)", min=25, max=5000),
        "n_margin": Param(int, {"smoke": 32, "teaching": 64, "paper": 40},
                          "prompts per length for the key heads' margins on long prompts (a multiple of 4)",
                          min=4, max=2000),
        "margin_max_length": Param(int, {"smoke": 200, "teaching": 1000, "paper": 1500},
                                   "longest prompt of the margin analysis (tokens)", min=25, max=5000),
        "n_static": Param(int, {"smoke": 64, "teaching": 200, "paper": 200},
                          "17-token prompts for the margins predicted without long prompts (a multiple of 4)",
                          min=4, max=2000),
    },
    checks=(multiple_of(4, ("n_prompts", "n_margin", "n_static"), "hop-balanced prompts"), _checks),
    requires={"paper": tuple(
        [Required(f"paper/{task}-s{seed}/length.parquet", _HOW, "accuracy vs length of the final model")
         for task in ("number", "letter") for seed in range(5)]
        + [Required(f"paper/{task}-s0/final.pt", _HOW, "the final checkpoint of seed 0")
           for task in ("number", "letter")]
    )},
))
