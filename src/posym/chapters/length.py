"""The "Length generalisation" chapter: its parameters and figures.

The computations (long prompts, accuracy curves, margins) are pipeline code in
:mod:`posym.longprompts`; this module draws them.
"""
from __future__ import annotations

import pandas as pd

from ..longprompts import *  # noqa: F401,F403  (the computations this page shows)
from ..paper import PAPER_FIG5B, paper_points
from ..spec import ChapterSpec, Param, Required, register


def plot_length_curves(summary: pd.DataFrame, axes=None, paper: bool = True):
    """Fig. 5B: accuracy vs length per task (mean and 95 % band over seeds, the paper's read-off points as
    open markers) and, in a second panel, per hop count (colour = hop, line style = task)."""
    import matplotlib.pyplot as plt

    from ..plotting import HOP_COLORS, task_color
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12.0, 4.0), sharey=True)
    ax = axes[0]
    for task, g in summary[summary["hop"] == "all"].groupby("task", sort=False):
        c = task_color(task)
        ax.fill_between(g["length"], g["lo"], g["hi"], color=c, alpha=0.2, lw=0)
        ax.plot(g["length"], g["mean"], color=c, marker="o", ms=3, label=f"{task} (ours, {int(g['seeds'].max())} seeds)")
        if paper and task in PAPER_FIG5B:
            p = paper_points(task)
            ax.plot(p["length"], p["accuracy"], ls="none", marker="D", ms=6, mfc="white", mec=c, mew=1.5,
                    label=f"{task} (paper, Fig. 5B)")
    ax.set(xscale="log", xlabel="input length (tokens)", ylabel="accuracy", ylim=(-0.02, 1.02),
           title="Accuracy vs input length")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[1]
    styles = {"number": "-", "letter": "--"}
    for (task, hop), g in summary[summary["hop"] != "all"].groupby(["task", "hop"], sort=False):
        ax.plot(g["length"], g["mean"], color=HOP_COLORS[int(hop)], ls=styles.get(task, "-"), marker=".", ms=3,
                label=f"{task}, {hop} hop{'s' if hop != '1' else ''}")
    ax.set(xscale="log", xlabel="input length (tokens)", title="Per hop count (mean over seeds)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return axes


def plot_predictions(curves: dict, measured: dict, axes=None):
    """Measured accuracy vs the fractions of prompts whose key heads keep their target, per task.

    ``curves[task]`` merges :func:`margin_summary` (length, kept, guaranteed) and :func:`static_summary`
    (length, kept_static); ``measured[task]`` has length, accuracy.
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, task_color
    tasks = list(curves)
    if axes is None:
        _, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 3.9), sharey=True, squeeze=False)
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
                label="Lemma F.1 guarantee (margin >= log(n-1))")
        ax.set(xscale="log", xlabel="input length (tokens)", ylabel="fraction of prompts", ylim=(-0.02, 1.02),
               title=f"{task.capitalize()} task")
        ax.legend(fontsize=7, loc="lower left")
    return axes


def plot_logit_terms(terms: dict, axes=None):
    """Median logit of the best target key and of the best other key vs length, per task and key layer."""
    import matplotlib.pyplot as plt

    from ..plotting import PALETTE
    tasks = list(terms)
    if axes is None:
        _, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 3.6), squeeze=False)
        axes = axes[0]
    for ax, task in zip(axes, tasks):
        for (layer, g), c in zip(terms[task].groupby("layer"), PALETTE):
            ax.plot(g["length"], g["target_logit"], color=c, marker="o", ms=3, label=f"layer {layer}: target key")
            ax.plot(g["length"], g["other_logit"], color=c, ls="--", marker="x", ms=3, label=f"layer {layer}: best other key")
        ax.set(xscale="log", xlabel="input length (tokens)", ylabel="attention logit (median over prompts)",
               title=f"{task.capitalize()} task: the two terms of the margin")
        ax.legend(fontsize=7)
    return axes


# -----------------------------------------------------------------------------
# The chapter's parameters

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 (see data/README.md)"


def _checks(params: dict):
    for name in ("n_prompts", "n_margin", "n_static"):
        if params[name] % 4:
            return name, f"must be a multiple of 4 (hop-balanced prompts), got {params[name]}"
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
    checks=(_checks,),
    requires={"paper": tuple(
        [Required(f"paper/{task}-s{seed}/length.parquet", _HOW, "accuracy vs length of the final model")
         for task in ("number", "letter") for seed in range(5)]
        + [Required(f"paper/{task}-s0/final.pt", _HOW, "the final checkpoint of seed 0")
           for task in ("number", "letter")]
    )},
))
