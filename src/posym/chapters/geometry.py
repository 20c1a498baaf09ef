"""RoPE geometry and frequency use (Paper 2, Secs. 3.4-3.5, Figs. 4, 5A and 8, Table 1), for the geometry chapter.

Three groups of helpers, all pure functions of tables or models:

* **theory** -- tables built on :mod:`posym.theory`: the Theorem 3.1 heads checked on random task inputs,
  their exact discrepancy next to Theorem 3.2's bounds (as printed and as we can prove them), and the
  vectors of Fig. 4A;
* **frequency use** -- from a ``freq_scores`` table (:mod:`posym.analyze`): per-layer curves of the mean
  max logit per RoPE frequency (Fig. 8), the weighted-average frequency per layer next to the paper's
  Table 1, and the per-frequency positional/symbolic scores through training;
* **plots** of those tables in the book's style.

Frequency numbering.  Code indexes the RoPE pairs from 0 (``k = 0`` is the fastest, angle 1 rad/token).
The paper numbers them from 1 ("frequency ID"): ID ``k + 1`` has angle ``10000^(-2k/128)``, so Table 1's
ID 2 is 0.8660 rad/token (:func:`check_paper_ids` verifies all of Table 1's pairs).  Weighted averages
are fractional; we convert an average index ``k`` to the angle ``10000^(-2k/128)`` and to the ID ``k + 1``.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import theory
from ..paper import PAPER_FIG5A, PAPER_PEAK_LOGIT, PAPER_TABLE1  # noqa: F401  (shown by the chapter)
from ..stats import mean_halfwidth
from ..metrics import weighted_frequency
from ..spec import PAPER_RUNS_HOW as _HOW, ChapterSpec, Param, Required, multiple_of, register

__all__ = [
    "rope_frequency", "check_paper_ids",
    "final_rows", "weighted_frequency_table", "table1_comparison", "frequency_use_curves", "snapshot_steps",
    "pos_sym_by_frequency", "frequency_roles", "construction_checks", "discrepancy_table", "bound_report",
    "rational_angle_demo", "fig4a_vectors", "plot_frequency_use", "plot_retrieval_plane", "plot_pos_sym_heatmaps", "plot_fig4a",
    "plot_trained_geometry", "plot_discrepancy", "role_cmap",
]

ROTARY_DIM = 128
ROPE_BASE = 10000.0


# -----------------------------------------------------------------------------------------------
# frequency ids and small statistics

def rope_frequency(index, rotary_dim: int = ROTARY_DIM, base: float = ROPE_BASE):
    """Angle (rad/token) of the 0-based RoPE pair ``index`` (fractional indices allowed): ``base^(-2 index/rotary_dim)``."""
    return np.power(float(base), -2.0 * np.asarray(index, dtype=float) / rotary_dim)


def check_paper_ids() -> float:
    """Largest |Table 1 frequency - rope_frequency(ID - 1)| over all of Table 1 (rounding is 5e-5)."""
    worst = 0.0
    for rows in PAPER_TABLE1.values():
        for pid, f in rows:
            worst = max(worst, abs(float(rope_frequency(pid - 1)) - f))
    return worst


def _group_cols(df: pd.DataFrame) -> list[str]:
    return [c for c in ("task", "seed") if c in df.columns]


def final_rows(table: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Rows of ``table`` at ``step``, or at each run's last step (a run = one task x seed)."""
    if step is not None:
        out = table[table["step"] == step]
        if out.empty:
            raise ValueError(f"no rows at step {step}")
        return out
    keys = _group_cols(table)
    if not keys:
        return table[table["step"] == table["step"].max()]
    last = table.groupby(keys)["step"].transform("max")
    return table[table["step"] == last]


# -----------------------------------------------------------------------------------------------
# frequency use (Fig. 8, Table 1)

def weighted_frequency_table(freq_scores: pd.DataFrame, step: int | None = None, head: int = 0,
                             rotary_dim: int = ROTARY_DIM, base: float = ROPE_BASE) -> pd.DataFrame:
    """Per run and layer: the weighted-average frequency index (weights = positive part of the mean max logit,
    :func:`posym.metrics.weighted_frequency`), its paper-style ID and angle, and the peak frequency.
    ``rotary_dim``/``base`` are the model's (the angle of an index depends on them).

    Columns: [task, seed,] layer, wavg_index, wavg_id, wavg_freq, peak_index, peak_id, peak_value.
    """
    f = final_rows(freq_scores, step)
    f = f[f["head"] == head]
    keys = _group_cols(f)
    rows = []
    for key, g in f.groupby(keys + ["layer"]):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("freq")
        u = g["maxlogit"].to_numpy()
        w = weighted_frequency(u)
        k = int(np.argmax(u))
        rows.append({**dict(zip(keys + ["layer"], key)), "wavg_index": w, "wavg_id": w + 1,
                     "wavg_freq": float(rope_frequency(w, rotary_dim, base)), "peak_index": k, "peak_id": k + 1,
                     "peak_value": float(u[k])})
    return pd.DataFrame(rows)


def table1_comparison(freq_scores: pd.DataFrame, step: int | None = None, close_factor: float = 2.0,
                      rotary_dim: int = ROTARY_DIM, base: float = ROPE_BASE) -> pd.DataFrame:
    """Our weighted-average frequency per layer (mean and 95 % CI over seeds) beside the paper's Table 1.

    The comparison is made on the angle (rad/token), so it also works for models whose RoPE has fewer
    pairs than the paper's 64 (``rotary_dim``): the paper's angle is converted to the fractional ID it
    would have in our model (``paper_id_here``).  ``agree`` is ``"yes"`` when that ID lies in our interval
    widened by the paper's rounding (half an ID of the paper's model), ``"close"`` when the angles differ
    by less than ``close_factor`` (either way), ``"no"`` otherwise.  ``freq_ratio`` = our angle (at our
    mean ID) / the paper's.
    """
    w = weighted_frequency_table(freq_scores, step, rotary_dim=rotary_dim, base=base)
    if "task" not in w.columns:
        raise ValueError("freq_scores needs a 'task' column (use posym.results.load_table)")
    rows = []
    for (task, layer), g in w.groupby(["task", "layer"]):
        if int(layer) >= len(PAPER_TABLE1[task]):
            continue
        m, h = mean_halfwidth(g["wavg_id"])
        pid, pf = PAPER_TABLE1[task][int(layer)]
        # the paper's angle, unrounded, and the fractional ID it has in a RoPE with our rotary_dim and base
        pf_exact = float(rope_frequency(pid - 1))
        pid_here = 1 + (pid - 1) * (rotary_dim / ROTARY_DIM) * (math.log(ROPE_BASE) / math.log(base))
        ours_f = float(rope_frequency(m - 1, rotary_dim, base))
        ratio = ours_f / pf_exact
        half = (0.0 if not math.isfinite(h) else h) + 0.5 * rotary_dim / ROTARY_DIM
        agree = "yes" if abs(m - pid_here) <= half else ("close" if 1 / close_factor <= ratio <= close_factor else "no")
        peaks = sorted(set(int(p) for p in g["peak_id"]))
        rows.append({"task": task, "layer": int(layer), "paper_id": pid, "paper_freq": pf,
                     "paper_id_here": pid_here, "our_id": m,
                     "our_id_ci": h, "our_freq": ours_f, "freq_ratio": ratio, "our_peak_id": "/".join(map(str, peaks)),
                     "seeds": len(g), "agree": agree})
    out = pd.DataFrame(rows)
    order = {"number": 0, "letter": 1}
    return out.sort_values(["task", "layer"], key=lambda s: s.map(order) if s.name == "task" else s).reset_index(drop=True)


def frequency_use_curves(freq_scores: pd.DataFrame, step: int | None = None, head: int = 0) -> pd.DataFrame:
    """Fig. 8 data: per task, layer and frequency, the mean over runs of the mean max logit, with a band of
    +-1 standard deviation across prompts (averaged over runs) and the range across runs.

    Columns: [task,] layer, freq, id, value, band_lo, band_hi, seed_min, seed_max, runs.
    """
    f = final_rows(freq_scores, step)
    f = f[f["head"] == head]
    keys = [c for c in ("task",) if c in f.columns]
    g = f.groupby(keys + ["layer", "freq"])
    out = g.agg(value=("maxlogit", "mean"), sd=("maxlogit_sd", "mean"), seed_min=("maxlogit", "min"),
                seed_max=("maxlogit", "max"), runs=("maxlogit", "size")).reset_index()
    out["band_lo"] = out["value"] - out["sd"]
    out["band_hi"] = out["value"] + out["sd"]
    out["id"] = out["freq"] + 1
    return out.drop(columns="sd")


def snapshot_steps(eval_table: pd.DataFrame, early_fraction: float = 0.1) -> dict[str, int]:
    """A few checkpoints that summarise a run: early, first step with accuracy >= 0.5, best accuracy, last.

    ``eval_table`` has step, hop, accuracy (one run, or several: the median step over runs is taken and
    snapped to a checkpoint that every run has; "accuracy 0.5" is left out if no run reaches it).  Returns
    {label: step} in training order, without duplicate steps.
    """
    e = eval_table[eval_table["hop"].astype(str) == "all"]
    keys = _group_cols(e)
    groups = [g for _, g in e.groupby(keys)] if keys else [e]
    common = sorted(set.intersection(*(set(g["step"]) for g in groups)))
    last = common[-1]

    def snap(s: float) -> int:
        return int(min(common, key=lambda c: (abs(c - s), c)))

    def first_at(g, thr):
        g = g.sort_values("step")
        hit = g[g["accuracy"] >= thr]
        return int(hit["step"].iloc[0]) if len(hit) else None

    def best(g):
        return int(g.sort_values("step").loc[lambda d: d["accuracy"] == d["accuracy"].max(), "step"].iloc[0])

    cand = {"final": last, "early": snap(early_fraction * last)}
    half = [s for s in (first_at(g, 0.5) for g in groups) if s is not None]
    if half:  # runs that never reach 0.5 have no such step
        cand["accuracy 0.5"] = snap(float(np.median(half)))
    cand["best accuracy"] = snap(float(np.median([best(g) for g in groups])))
    out: dict[str, int] = {}
    for label, s in cand.items():  # on a tie the label listed first wins
        if s not in out.values():
            out[label] = s
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def pos_sym_by_frequency(freq_scores: pd.DataFrame, steps: Sequence[int], head: int = 0) -> pd.DataFrame:
    """Per task, step, layer and frequency: the mean over runs of (positional - symbolic) score of the
    frequency's 2-D head, and its mean max logit.  Columns: [task,] step, layer, freq, pos_minus_sym, pos,
    sym, maxlogit."""
    f = freq_scores[(freq_scores["step"].isin(list(steps))) & (freq_scores["head"] == head)]
    missing = sorted(set(steps) - set(f["step"]))
    if missing:
        raise ValueError(f"freq_scores has no rows at steps {missing}")
    keys = [c for c in ("task",) if c in f.columns]
    out = f.assign(pos_minus_sym=f["pos"] - f["sym"]).groupby(keys + ["step", "layer", "freq"])[
        ["pos_minus_sym", "pos", "sym", "maxlogit"]].mean().reset_index()
    return out


def frequency_roles(freq_scores: pd.DataFrame, step: int | None = None, threshold: float = 0.05,
                    head: int = 0) -> pd.DataFrame:
    """Which frequencies do positional and which symbolic work, per task and layer (mean over runs).

    A frequency is *positional* where pos - sym > ``threshold``, *symbolic* where sym - pos > ``threshold``.
    (A single frequency's logits are small, so its 2-D head is close to uniform and both of its scores are
    close to 1: the differences are small, hence the low default threshold.)
    Columns: task, layer, positional (ID range text), symbolic (ID range text), n_pos, n_sym, and the
    max-logit share of each group (``pos_share``, ``sym_share``: their part of the layer's positive max logit).
    """
    f = final_rows(freq_scores, step)
    f = f[f["head"] == head]
    keys = [c for c in ("task",) if c in f.columns]
    m = f.groupby(keys + ["layer", "freq"])[["pos", "sym", "maxlogit"]].mean().reset_index()
    rows = []
    for key, g in m.groupby(keys + ["layer"]):
        key = key if isinstance(key, tuple) else (key,)
        d = (g["pos"] - g["sym"]).to_numpy()
        u = np.clip(g["maxlogit"].to_numpy(), 0, None)
        ids = g["freq"].to_numpy() + 1
        P, S = d > threshold, -d > threshold
        tot = u.sum() or 1.0
        rows.append({**dict(zip(keys + ["layer"], key)), "positional": _ranges(ids[P]), "symbolic": _ranges(ids[S]),
                     "n_pos": int(P.sum()), "n_sym": int(S.sum()), "pos_share": float(u[P].sum() / tot),
                     "sym_share": float(u[S].sum() / tot)})
    out = pd.DataFrame(rows)
    if "task" in out.columns:
        out = out.sort_values(["task", "layer"], key=lambda c: c.map({"number": 0, "letter": 1}) if c.name == "task"
                              else c, kind="stable").reset_index(drop=True)
    return out


def _ranges(ids: Iterable[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'; empty -> '-'."""
    ids = sorted(int(i) for i in ids)
    if not ids:
        return "-"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:]:
        if i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        start = prev = i
    parts.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ", ".join(parts)


# -----------------------------------------------------------------------------------------------
# theory tables

def construction_checks(n_samples: int, lengths: Sequence[int] = (17, 64, 256), seed: int = 0,
                        n_all: int | None = None) -> pd.DataFrame:
    """Theorem 3.1 on random valid task inputs: the fraction of checks passed by each construction.

    Rows: kind (index/retrieval) x what (``arg-max, last query`` on ``n_samples`` prompts per length;
    ``arg-max and output, every position`` on ``n_all`` prompts per length, default ``n_samples``).
    ``n_prompts`` is the number of prompts of each row, fresh for every row (seeded).
    """
    n_all = n_samples if n_all is None else n_all
    rows = []
    for i, kind in enumerate(("index", "retrieval")):
        for j, (positions, output, what, n) in enumerate((("last", False, "arg-max, last query", n_samples),
                                                            ("all", True, "arg-max and output, every position", n_all))):
            rng = np.random.default_rng([seed, i, j])
            frac = theory.check_construction(kind, n_samples=n, lengths=lengths, rng=rng,
                                             positions=positions, output=output)
            rows.append({"construction": kind, "check": what, "lengths": ", ".join(map(str, lengths)),
                         "n_prompts": n * len(lengths), "passed": frac})
    return pd.DataFrame(rows)


def discrepancy_table(n_max: int, index_thetas: Sequence[float] = (theory.INDEX_THETA, 0.3, 0.05),
                      retrieval_thetas: Sequence[float] = (theory.RETRIEVAL_THETA, 0.01, 0.0005),
                      alph: int = 8, n_min: int = 2) -> pd.DataFrame:
    """Exact discrepancy of the constructed heads (worst and most favourable input) and the bounds, for
    every length ``n_min..n_max``.  Columns: kind, theta, n, worst (min margin), best (Def. 3.1's max),
    paper_bound, proved_bound (for the worst case), proved_bound_best (Index only), in_range (Retrieval:
    whether theta < omega / (2 n), the theorem's condition with n0 = n)."""
    ns = np.arange(int(n_min), int(n_max) + 1)
    frames = []
    for kind, thetas in (("index", index_thetas), ("retrieval", retrieval_thetas)):
        for th in thetas:
            d = {"kind": kind, "theta": float(th), "n": ns,
                 "worst": theory.measured_discrepancy(kind, ns, th, alph=alph, reduce="min"),
                 "best": theory.measured_discrepancy(kind, ns, th, alph=alph, reduce="max"),
                 "paper_bound": theory.discrepancy_bounds(kind, ns, th, alph, form="paper"),
                 "proved_bound": theory.discrepancy_bounds(kind, ns, th, alph, form="proved", reduce="min")}
            d["proved_bound_best"] = (theory.discrepancy_bounds(kind, ns, th, alph, form="proved", reduce="max")
                                      if kind == "index" else np.full(len(ns), np.nan))
            # Theorem 3.1's condition for Retrieval, theta < omega / (2 n0), at n0 = n
            d["in_range"] = np.ones(len(ns), bool) if kind == "index" else (th < (2 * math.pi / alph) / (2 * ns))
            frames.append(pd.DataFrame(d))
    return pd.DataFrame(pd.concat(frames, ignore_index=True))


def bound_report(table: pd.DataFrame, tol: float = 1e-12) -> pd.DataFrame:
    """Per kind and theta: how often each reading of the discrepancy exceeds each bound.

    Columns: kind, theta, n_range, worst_vs_paper (lengths where the worst-case margin exceeds the printed
    bound), worst_vs_paper_max_excess, worst_vs_proved, best_vs_paper (lengths where Def. 3.1's literal
    maximum exceeds the printed bound), best_vs_paper_first_n.
    """
    rows = []
    for (kind, th), g in table.groupby(["kind", "theta"], sort=False):
        over_wp = g["worst"] - g["paper_bound"]
        over_bp = g["best"] - g["paper_bound"]
        bad_bp = g[over_bp > tol]
        rows.append({"kind": kind, "theta": th, "n_range": f"{int(g['n'].min())}-{int(g['n'].max())}",
                     "worst_vs_paper": int((over_wp > tol).sum()),
                     "worst_vs_paper_max_excess": float(max(over_wp.max(), 0.0)),
                     "worst_vs_paper_last_n": int(g.loc[over_wp > tol, "n"].max()) if (over_wp > tol).any() else None,
                     "worst_vs_proved": int((g["worst"] - g["proved_bound"] > tol).sum()),
                     "best_vs_paper": int(len(bad_bp)),
                     "best_vs_paper_first_n": int(bad_bp["n"].min()) if len(bad_bp) else None})
    return pd.DataFrame(rows)


def rational_angle_demo(ns: Sequence[int] = (4, 5, 8, 17, 50, 100)) -> pd.DataFrame:
    """Worst-case Index margin for angles whose theta / 2 pi is rational (ties appear) and for the paper's 0.8.

    theta = pi/2 is an irrational number, but four steps make a full turn: cos(4 theta) = 1, so from n = 5 on
    a key four positions from the target ties with it and the margin is exactly 0.
    """
    cases = [("pi/2 (theta/2pi = 1/4)", math.pi / 2), ("2pi/7 (theta/2pi = 1/7)", 2 * math.pi / 7),
             ("2pi*3/10 (theta/2pi = 3/10)", 2 * math.pi * 3 / 10), ("0.8 (theta/2pi irrational)", 0.8)]
    rows = []
    for label, th in cases:
        vals = theory.measured_discrepancy("index", np.asarray(ns), th, reduce="min")
        rows.append({"theta": label, **{f"n={n}": float(v) for n, v in zip(ns, vals)}})
    return pd.DataFrame(rows).set_index("theta")


def fig4a_vectors(theta: float = theory.INDEX_THETA, numbers: Sequence[int] = (1, 2, 3, 4)) -> pd.DataFrame:
    """Fig. 4A from the real Index head: the 2-D key (every token) and the queries of some numbers, before RoPE
    (from :func:`posym.theory.plane_vectors`) and rotated as RoPE does for a query at position ``n - 1`` and
    keys at distance 0..max(numbers).  Columns: what, token, distance, x, y."""
    head = theory.index_head(theta)
    pv = theory.plane_vectors(head)
    tok = list(pv["tokens"])
    rows = []
    k = pv["k"][tok.index("a")]
    for s in numbers:
        q = pv["q"][tok.index(str(s))]
        rows.append({"what": "query (before RoPE)", "token": str(s), "distance": s, "x": q[0], "y": q[1]})
    rows.append({"what": "key (every token)", "token": "*", "distance": 0, "x": k[0], "y": k[1]})
    # the logit only depends on the relative rotation: rotate the key at distance t by -t*theta
    for t in range(0, max(numbers) + 1):
        c, s_ = math.cos(-t * theta), math.sin(-t * theta)
        rows.append({"what": "key seen from the query", "token": "*", "distance": t,
                     "x": c * k[0] - s_ * k[1], "y": s_ * k[0] + c * k[1]})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# plots

def role_cmap():
    """Diverging colour map: symbolic (vermillion) - white - positional (blue), colour-blind safe."""
    from matplotlib.colors import LinearSegmentedColormap

    from ..plotting import COLORS
    return LinearSegmentedColormap.from_list("sym_pos", [COLORS["symbolic"], "#FFFFFF", COLORS["positional"]])


def plot_frequency_use(curves: pd.DataFrame, table: pd.DataFrame | None, task: str, ncols: int = 6,
                       max_id: int | None = None):
    """Fig. 8 for one task: one panel per layer, mean max logit vs frequency ID with its band and the
    weighted-average ID (dashed; the paper's Table 1 value dotted). At most 7.5 in wide."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, task_color
    c = curves[curves["task"] == task] if "task" in curves.columns else curves
    layers = sorted(c["layer"].unique())
    nrows = -(-len(layers) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(7.5, 1.85 * ncols), 1.6 * nrows + 0.5), sharex=True,
                             squeeze=False)
    col = task_color(task)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, l in zip(axes.flat, layers):
        g = c[c["layer"] == l].sort_values("id")
        ax.fill_between(g["id"], g["band_lo"], g["band_hi"], color=col, alpha=0.25, lw=0)
        ax.plot(g["id"], g["value"], color=col, lw=1.2)
        if table is not None:
            r = table[(table["task"] == task) & (table["layer"] == l)]
            if len(r):
                ax.axvline(float(r["our_id"].iloc[0]), color="black", ls="--", lw=1)
                ax.axvline(float(r["paper_id"].iloc[0]), color=COLORS["neutral"], ls=":", lw=1.4)
        ax.set_title(f"layer {l}")
        if max_id:
            ax.set_xlim(1, max_id)
    for ax in axes[-1]:
        ax.set_xlabel("frequency ID")
    for ax in axes[:, 0]:
        ax.set_ylabel("max logit")
    return fig


def plot_pos_sym_heatmaps(data: pd.DataFrame, steps: dict, tasks: Sequence[str] = ("number", "letter"),
                          max_id: int = 64):
    """Beyond the paper: per-frequency (positional - symbolic) score, layer x frequency ID, at a few steps.

    One row per task; ``steps`` is ``{label: step}`` for every task, or ``{task: {label: step}}``."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    tasks = [t for t in tasks if "task" not in data.columns or t in set(data["task"])]
    per_task = {t: (steps[t] if t in steps and isinstance(steps[t], dict) else steps) for t in tasks}
    ncol = max(len(v) for v in per_task.values())
    fig, axes = plt.subplots(len(tasks), ncol, figsize=(min(7.5, 1.8 * ncol + 0.9), 2.3 * len(tasks) + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    norm = SymLogNorm(linthresh=0.02, linscale=0.5, vmin=-1, vmax=1)
    im = None
    for ax in axes.flat:
        ax.set_visible(False)
    for i, task in enumerate(tasks):
        d = data[data["task"] == task] if "task" in data.columns else data
        for j, (label, s) in enumerate(per_task[task].items()):
            axes[i, j].set_visible(True)
            g = d[d["step"] == s].pivot(index="layer", columns="freq", values="pos_minus_sym")
            g = g.iloc[:, :max_id]
            ax = axes[i, j]
            im = ax.imshow(g.to_numpy(), aspect="auto", origin="lower", cmap=role_cmap(), norm=norm,
                           extent=(0.5, g.shape[1] + 0.5, -0.5, g.shape[0] - 0.5), interpolation="nearest")
            ax.set_title(f"{label}\nstep {s:,}", fontsize=10)
            ax.grid(False)
            if j == 0:
                ax.set_ylabel(f"{task.capitalize()}: layer")
            if i == len(tasks) - 1:
                ax.set_xlabel("frequency ID")
    cb = fig.colorbar(im, ax=axes, shrink=0.8, ticks=[-1, -0.1, 0, 0.1, 1])
    cb.set_label("positional − symbolic score")
    return fig


def plot_fig4a(vectors: pd.DataFrame, theta: float, ax=None):
    """Fig. 4A: the Index head's 2-D key and number queries, and the key rotated by each distance."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, PALETTE
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color=COLORS["neutral"], lw=0.6)
    key = vectors[vectors["what"] == "key (every token)"].iloc[0]
    ax.annotate("", (key["x"], key["y"]), (0, 0), arrowprops=dict(arrowstyle="-|>", color="black", lw=2))
    ax.text(key["x"] + 0.05, key["y"] + 0.05, "key v (all tokens)", fontsize=9)
    q = vectors[vectors["what"] == "query (before RoPE)"]
    for (_, r), c in zip(q.iterrows(), PALETTE[1:]):
        ax.annotate("", (r["x"], r["y"]), (0, 0), arrowprops=dict(arrowstyle="-|>", color=c, lw=1.6))
        ax.text(1.12 * r["x"], 1.12 * r["y"], f"q({r['token']})", color=c, fontsize=9, ha="center", va="center")
    seen = vectors[vectors["what"] == "key seen from the query"]
    ax.scatter(seen["x"], seen["y"], s=14, color=COLORS["neutral"], zorder=3)
    for _, r in seen.iterrows():
        ax.text(0.86 * r["x"], 0.86 * r["y"], str(int(r["distance"])), fontsize=9, color=COLORS["neutral"],
                ha="center", va="center")
    ax.set_aspect("equal")
    ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), xlabel="plane coordinate 1", ylabel="plane coordinate 2",
           title=f"Index head, theta = {theta:g}")
    return ax


def plot_retrieval_plane(theta: float = theory.RETRIEVAL_THETA, ax=None):
    """The Retrieval head's plane: one key direction per left letter (multiples of omega = 2 pi / 8) and the
    query of the token ``ac`` (which asks for the letter ``c``), from :func:`posym.theory.plane_vectors`."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    pv = theory.plane_vectors(theory.retrieval_head(theta))
    tok = list(pv["tokens"])
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color=COLORS["neutral"], lw=0.6)
    for letter in "abcdefgh":
        k = pv["k"][tok.index(letter + "1")]
        ax.annotate("", (k[0], k[1]), (0, 0), arrowprops=dict(arrowstyle="-|>", color=COLORS["neutral"], lw=1.2))
        ax.text(1.13 * k[0], 1.13 * k[1], f"{letter}*", fontsize=9, ha="center", va="center")
    q = pv["q"][tok.index("ac")]
    ax.annotate("", (0.8 * q[0], 0.8 * q[1]), (0, 0), arrowprops=dict(arrowstyle="-|>", color=COLORS["symbolic"], lw=2))
    ax.text(0.55 * q[0] + 0.12, 0.55 * q[1], "query ac", color=COLORS["symbolic"], fontsize=9)
    ax.set_aspect("equal")
    ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), xlabel="plane coordinate 1", ylabel="plane coordinate 2",
           title="Retrieval head: keys by left letter")
    return ax


def plot_trained_geometry(geo: pd.DataFrame, ax=None, rotated: bool = False, max_points: int | None = None,
                          colorbar: bool = True):
    """Fig. 4B as point clouds: queries and keys of one layer on its dominant RoPE plane, coloured by position
    (with a colour bar unless ``colorbar`` is False)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.2))
    g = geo[geo["rotated"] == rotated]
    T = int(g["position"].max()) + 1
    cmap = plt.get_cmap("cividis")
    sc = None
    for kind, marker, size in (("k", "o", 12), ("q", "^", 22)):
        d = g[g["kind"] == kind]
        if max_points:
            d = d[d["prompt"] < max_points]
        sc = ax.scatter(d["x"], d["y"], c=d["position"], cmap=cmap, vmin=0, vmax=T - 1, s=size, marker=marker,
                        alpha=0.75, edgecolors="none", label="keys" if kind == "k" else "queries")
        cen = d.groupby("position")[["x", "y"]].mean()
        if kind == "q":
            for p, r in cen.iterrows():
                if p == T - 1 or p % 4 == 0:
                    ax.text(r["x"], r["y"], str(p), fontsize=9, ha="center", va="bottom")
    ax.axhline(0, color="#999999", lw=0.5)
    ax.axvline(0, color="#999999", lw=0.5)
    ax.legend(loc="best")
    freq = int(g["freq"].iloc[0])
    ax.set(xlabel=f"ID {freq + 1}, coordinate 1", ylabel=f"ID {freq + 1}, coordinate 2",
           title=f"{'after' if rotated else 'before'} RoPE, ID {freq + 1}")
    if colorbar:
        plt.colorbar(sc, ax=ax, label="position")
    return ax


def plot_discrepancy(table: pd.DataFrame, kind: str, ax=None, thetas: Sequence[float] | None = None,
                     show_best: bool = True, legend_below: bool = False):
    """Fig. 5A for one construction: exact worst-case margin (solid), Def. 3.1's maximum (thin), the printed
    bound (dashed) and our proved bound (dotted), against n, for each theta.  Index is drawn on a log scale;
    Retrieval on a symmetric-log scale, because its worst-case margin turns negative once n theta is too large."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..plotting import PALETTE
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    d = table[table["kind"] == kind]
    th_all = list(dict.fromkeys(d["theta"]))
    handles = []
    for th, c in zip(thetas or th_all, PALETTE):
        g = d[d["theta"] == th]
        ax.plot(g["n"], g["worst"], color=c, lw=1.6)
        if show_best:
            ax.plot(g["n"], g["best"], color=c, lw=0.7, alpha=0.6)
        ax.plot(g["n"], g["paper_bound"], color=c, ls="--", lw=1.0)
        ax.plot(g["n"], g["proved_bound"], color=c, ls=":", lw=1.2)
        handles.append(Line2D([], [], color=c, lw=1.6, label=f"theta = {th:g}"))
    grey = "#555555"
    handles += [Line2D([], [], color=grey, lw=1.6, label="worst input (exact)"),
                Line2D([], [], color=grey, lw=0.7, label="best input (exact)"),
                Line2D([], [], color=grey, lw=1.0, ls="--", label="printed bound"),
                Line2D([], [], color=grey, lw=1.2, ls=":", label="proved bound")]
    ax.set(xlabel="sequence length n", ylabel="discrepancy (logit units)", title=f"{kind.capitalize()} head")
    if kind == "index":
        ax.set_yscale("log")
        ax.set_ylim(max(1e-6, float(d["worst"][d["worst"] > 0].min()) / 3), 1.0)
    else:
        ax.set_yscale("symlog", linthresh=1e-2)
    if legend_below:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9,
                  handlelength=1.6, columnspacing=0.8)
    else:
        ax.legend(handles=handles, fontsize=7, loc="upper right" if kind == "index" else "lower left", ncol=2)
    return ax


# -----------------------------------------------------------------------------------------------
# the page: its steps, tables, glued numbers and figures

TASKS = ("number", "letter")


def _glue(name: str, text) -> None:
    from IPython.display import Markdown
    from myst_nb import glue
    glue(name, Markdown(str(text)), display=False)


def _table(df, **kw):
    from ..display import table
    return table(df, **kw)


def small_scale_warning(scale: str):
    """The warning shown at the ``smoke`` and ``teaching`` scales (a Markdown object), ``None`` at ``paper``."""
    from IPython.display import Markdown
    if scale == "paper":
        return None
    return Markdown(
        ":::{warning} Small scale\n"
        f"This copy of the chapter was executed at the `{scale}` scale. The theorem checks are complete, but the "
        "trained models are small and briefly trained, and need not learn the tasks. Their figures and tables are "
        "computed by the same code as at the `paper` scale, but the sentences that interpret them were written for "
        "the paper-scale runs (`make book` builds that version).\n:::")


def rope_logit(q, k, rotary_dim: int = ROTARY_DIM, base: float = ROPE_BASE):
    """The RoPE logit of the query vector ``q`` at position ``i`` and the key vector ``k`` at position ``j``, as
    a function ``logit(i, j)`` (float64, :func:`posym.rope.apply_rope`; no 1/sqrt(d) factor)."""
    import torch

    from .. import rope
    ang = rope.rope_angles(rotary_dim, base)

    def logit(i: int, j: int) -> float:
        cos, sin = rope.rope_cos_sin(torch.tensor([i, j]), ang, dtype=torch.float64)
        return float(rope.apply_rope(q, cos[0], sin[0]) @ rope.apply_rope(k, cos[1], sin[1]))

    return logit


def paper_id_table(ids: Sequence[int] = (1, 2, 10, 18, 32, 42, 64)):
    """Paper IDs, our 0-based indices, angles and periods of a few RoPE planes (d = 128, base 10^4); the
    caption gives the largest difference from Table 1's (ID, angle) pairs (:func:`check_paper_ids`)."""
    ids = np.asarray(ids)
    angles = rope_frequency(ids - 1)
    df = pd.DataFrame({"paper ID": ids, "our index": ids - 1, "angle (rad/token)": angles,
                       "period (tokens)": 2 * np.pi / angles}).round(4)
    return _table(df, key_columns=["paper ID"], digits={"angle (rad/token)": 4, "period (tokens)": 4},
                  caption="RoPE planes: the paper's frequency ID and our index")


def construction_check_table(n_check: int, seed: int, n_all: int, lengths: Sequence[int] = (17, 64, 256)):
    """:func:`construction_checks` as a table (on one torch thread: these small models run fastest so), gluing
    the number of prompts checked and the verdict; ``ret_n0`` needs :func:`discrepancy_report`."""
    import torch
    torch.set_num_threads(1)
    checks = construction_checks(n_check, lengths, seed=seed, n_all=n_all)
    _glue("n_checked", f"{int(checks['n_prompts'].sum()):,}")
    _glue("all_passed", "every check passed" if (checks["passed"] == 1).all() else
          f"the worst pass rate is {checks['passed'].min():.4f}")
    return _table(checks, key_columns=["construction", "check"], digits={"passed": 4},
                  caption="Theorem 3.1's constructions run as models on random valid prompts: share of checks passed")


def plot_constructions():
    """Fig. 4A (the Index head's plane, from its weights) beside the Retrieval head's plane. Returns the
    Figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.9))
    plot_fig4a(fig4a_vectors(theory.INDEX_THETA), theory.INDEX_THETA, ax=axes[0])
    plot_retrieval_plane(theory.RETRIEVAL_THETA, ax=axes[1])
    return fig


def discrepancy_report(disc: pd.DataFrame, n_max: int):
    """:func:`bound_report` of the exact discrepancies as a table, gluing every number the text quotes."""
    report = bound_report(disc)
    row = lambda kind, th, n: disc[(disc["kind"] == kind) & (disc["theta"] == th) & (disc["n"] == n)].iloc[0]
    r17 = row("index", 0.8, 17)
    _glue("idx17_worst", f"{r17['worst']:.4f}")
    _glue("idx17_paper", f"{r17['paper_bound']:.4f}")
    _glue("idx17_ratio", f"{r17['paper_bound'] / r17['worst']:.0f}")
    turn_gap = {t: abs((t * 0.8 + math.pi) % (2 * math.pi) - math.pi) for t in range(1, 17)}
    t17 = min(turn_gap, key=turn_gap.get)
    _glue("idx17_t", t17)
    _glue("idx17_gap", f"{turn_gap[t17]:.2f}")
    r9 = row("index", 0.8, 9)
    _glue("idx9_best", f"{r9['best']:.3f}")
    _glue("idx9_paper", f"{r9['paper_bound']:.3f}")
    _glue("one_minus_cos_omega", f"{1 - math.cos(2 * math.pi / 8):.2f}")
    r100 = row("index", 0.8, 100)
    _glue("idx100_worst", f"{r100['worst']:.4f}")
    _glue("idx100_paper", f"{r100['paper_bound']:.4f}")
    rep = report.set_index(["kind", "theta"])
    _glue("idx_best_first", int(rep.loc[("index", 0.8), "best_vs_paper_first_n"]))
    _glue("idx_best_count", int(rep.loc[("index", 0.8), "best_vs_paper"]))
    _glue("ret_last_n", int(rep.loc[("retrieval", 0.0027), "worst_vs_paper_last_n"]))
    _glue("ret_excess", f"{rep.loc[('retrieval', 0.0027), 'worst_vs_paper_max_excess']:.6f}")
    _glue("ret_theta_sin", f"{0.0027 * math.sin(math.pi / 4):.6f}")
    ret = disc[(disc["kind"] == "retrieval") & (disc["theta"] == 0.0027)]
    _glue("ret_n0", int(ret[ret["in_range"]]["n"].max()))
    neg = ret[ret["worst"] <= 0]
    _glue("ret_first_negative", f"n = {int(neg['n'].min())}" if len(neg) else f"no length up to {n_max}")
    r100r = row("retrieval", 0.0027, 100)
    _glue("ret100_worst", f"{r100r['worst']:.3f}")
    _glue("ret100_paper", f"{r100r['paper_bound']:.3f}")
    _glue("n_max", n_max)
    return _table(report, key_columns=["kind", "theta"],
                  digits={"theta": 4, "worst_vs_paper_max_excess": 6},
                  caption="Lengths at which each reading of the discrepancy exceeds each bound, per construction "
                          "and angle")


def plot_fig5a_paper(disc: pd.DataFrame, index_theta: float = theory.INDEX_THETA,
                     retrieval_theta: float = theory.RETRIEVAL_THETA, n_max: int = PAPER_FIG5A["n_max"]):
    """Fig. 5A in the paper's form: Theorem 3.2's printed bounds for the Index head (``index_theta``) and the
    Retrieval head (``retrieval_theta``) against n up to ``n_max``, on a linear scale, with the exact
    worst-case margins of the same two heads (thin). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for kind, th, c in (("index", index_theta, COLORS["positional"]), ("retrieval", retrieval_theta,
                                                                       COLORS["symbolic"])):
        g = disc[(disc["kind"] == kind) & (disc["theta"] == th) & (disc["n"] <= n_max)]
        ax.plot(g["n"], g["paper_bound"], color=c, lw=2.0, label=f"{kind.capitalize()} bound, θ = {th:g}")
        ax.plot(g["n"], g["worst"], color=c, lw=1.0, ls="--", label=f"{kind.capitalize()}, exact worst case")
    ax.set(xlabel="sequence length n", ylabel="discrepancy", ylim=(0, None), xlim=(0, n_max))
    ax.legend(loc="upper right")
    return fig


def plot_fig5a_detail(disc: pd.DataFrame):
    """Every angle of :func:`discrepancy_table`: exact worst and best margins with the printed and the proved
    bounds, Index (log scale) and Retrieval (symmetric-log scale, a vertical line where Theorem 3.1's condition
    stops holding for the paper's angle). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.6))
    plot_discrepancy(disc, "index", ax=axes[0], legend_below=True)
    plot_discrepancy(disc, "retrieval", ax=axes[1], legend_below=True)
    axes[1].set_ylabel("")
    ret = disc[(disc["kind"] == "retrieval") & (disc["theta"] == theory.RETRIEVAL_THETA)]
    axes[1].axvline(int(ret[ret["in_range"]]["n"].max()), color=COLORS["neutral"], lw=0.8)
    return fig


def rational_angle_table(ns: Sequence[int] = (4, 5, 8, 17, 50, 100)):
    """:func:`rational_angle_demo` as a table."""
    return _table(rational_angle_demo(ns).round(4).reset_index(), key_columns=["theta"], digits=4,
                  caption="Worst-case Index margin for angles with rational and irrational θ/2π")


class TrainedModels:
    """The trained models' tables the page reads: ``fs`` (per-frequency scores and max logits), ``ev`` (the
    evaluation log), ``geo`` (layer 1 of the Number model of one seed on its dominant plane), ``steps`` (the
    snapshot steps per task), the model configuration, the layers per task and the final step per task."""

    def __init__(self, root, fs, ev, geo):
        from ..results import run_dirs
        from ..train import Run
        self.root, self.fs, self.ev, self.geo = root, fs, ev, geo
        self.steps = {task: snapshot_steps(ev[ev["task"] == task]) for task in TASKS}
        self.model_cfg = Run(run_dirs(root)[0]).config.model_config()
        self.rotary_dim = self.model_cfg.rotary_dim
        self.n_layers = {task: int(fs.loc[fs["task"] == task, "layer"].max()) + 1 for task in TASKS}
        self.final_step = {task: int(fs.loc[fs["task"] == task, "step"].max()) for task in TASKS}

    def describe(self) -> str:
        return (f"{self.fs.groupby('task')['seed'].nunique().to_dict()} runs per task; layers {self.n_layers}, "
                f"{self.rotary_dim // 2} RoPE planes; final step {self.final_step}")


#: the smoke-scale models: the smoke preset (TrainConfig.smoke) with these overrides
SMOKE_TRAIN = {"steps": 100}


def trained_models(cfg) -> TrainedModels:
    """The trained models at ``cfg.scale``: the ten committed runs of ``data/paper`` at ``paper``; at ``smoke``
    and ``teaching`` one model per task trained here (:func:`posym.runs.train_models`, a temporary folder) and
    analysed at the snapshot steps with ``cfg.n_prompts`` metric prompts, and the Number model's layer 1 on 40
    stored prompts."""
    import tempfile
    from pathlib import Path

    from .. import results, runs
    from ..analyze import analyze_run, final_model, geometry as plane_projection, metric_prompts

    glue_scale(cfg)
    if cfg.scale == "paper":
        root = cfg.data_dir / "paper"
        fs = results.load_table(root, "freq_scores")
        ev = results.load_table(root, "eval")
        geo_all = results.load_table(root, "geometry")
        geo = geo_all[(geo_all["task"] == "number") & (geo_all["seed"] == 0)]
        return TrainedModels(root, fs, ev, geo)
    root = Path(tempfile.mkdtemp(prefix="posym-geometry-")) / "runs"
    trained = runs.train_models(cfg.scale, cfg.seed, root, smoke=SMOKE_TRAIN)
    ev = results.load_table(root, "eval")
    steps = {task: snapshot_steps(ev[ev["task"] == task]) for task in TASKS}
    for task, run in trained.items():
        analyze_run(run, n_prompts=cfg.n_prompts, steps=sorted(set(steps[task].values())), progress=False)
    fs = results.load_table(root, "freq_scores")
    number_model = final_model(trained["number"])
    _, x, _, _ = metric_prompts("number", cfg.seed, 40)
    geo = plane_projection(number_model, x, layer=1).assign(task="number", seed=cfg.seed)
    return TrainedModels(root, fs, ev, geo)


def glue_scale(cfg) -> None:
    """Glue the scale and the runs the trained-model figures show (for their captions)."""
    _glue("scale_text", cfg.scale)
    _glue("runs_text", "the ten committed runs (seeds 0–4 of each task)" if cfg.scale == "paper"
          else f"one run per task (seed {cfg.seed})")
    _glue("geo_seed", 0 if cfg.scale == "paper" else cfg.seed)


def layer1_curve(tm: TrainedModels, task: str = "number", layer: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 4C's data: the max logit per frequency of ``layer`` at the final step, per seed (first table) and
    its mean over seeds with the mean prompt standard deviation (second: freq, value, sd). Glues the numbers
    the text quotes about the dominant plane and the peak."""
    fs = tm.fs
    rows = fs[(fs["task"] == task) & (fs["layer"] == layer) & (fs["step"] == tm.final_step[task])]
    curve = rows.groupby("freq").agg(value=("maxlogit", "mean"), sd=("maxlogit_sd", "mean")).reset_index()
    dom = int(tm.geo["freq"].iloc[0])
    peak = curve.loc[curve["value"].idxmax()]
    _glue("dom_id", dom + 1)
    _glue("dom_angle", f"{rope_frequency(dom, tm.rotary_dim):.3f}")
    _glue("peak_id", int(peak["freq"]) + 1)
    _glue("peak_value", f"{peak['value']:.2f}")
    _glue("peak_unscaled", f"{peak['value'] * math.sqrt(tm.model_cfg.d_head):.0f}")
    _glue("peak_lo", f"{PAPER_PEAK_LOGIT[0]:.0f}")
    _glue("peak_hi", f"{PAPER_PEAK_LOGIT[1]:.0f}")
    return rows, curve


def plot_fig4b_arrows(geo: pd.DataFrame, prompt: int = 0):
    """Fig. 4B in the paper's form: the keys (left) and the queries (right) of one prompt on the dominant
    plane, before RoPE, each drawn as an arrow from the origin and labelled with its position. Each panel is
    scaled to its longest vector (keys and queries have different norms). Returns the Figure."""
    import matplotlib.pyplot as plt
    g = geo[(geo["prompt"] == prompt) & ~geo["rotated"]]
    T = int(g["position"].max()) + 1
    cmap = plt.get_cmap("cividis")
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.9))
    for ax, kind, title in ((axes[0], "k", "keys"), (axes[1], "q", "queries")):
        d = g[g["kind"] == kind].sort_values("position")
        r = float(np.hypot(d["x"], d["y"]).max()) or 1.0
        for _, row in d.iterrows():
            x, y = row["x"] / r, row["y"] / r
            c = cmap(row["position"] / max(T - 1, 1) * 0.9)
            ax.annotate("", (x, y), (0, 0), arrowprops=dict(arrowstyle="-|>", color=c, lw=1.3))
            ax.text(1.1 * x, 1.1 * y, str(int(row["position"])), color=c, fontsize=9, ha="center", va="center")
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="#BBBBBB", lw=0.6)
        ax.set_aspect("equal")
        ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), title=title, xticks=[-1, 0, 1], yticks=[-1, 0, 1])
    freq = int(g["freq"].iloc[0])
    axes[0].set(xlabel=f"ID {freq + 1}, coordinate 1", ylabel=f"ID {freq + 1}, coordinate 2")
    axes[1].set(xlabel=f"ID {freq + 1}, coordinate 1")
    return fig


def plot_fig4b_clouds(geo: pd.DataFrame):
    """The queries and keys of every stored prompt on the dominant plane, before and after RoPE, coloured by
    position (one shared colour bar). Returns the Figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
    plot_trained_geometry(geo, ax=axes[0], rotated=False, colorbar=False)
    plot_trained_geometry(geo, ax=axes[1], rotated=True, colorbar=False)
    axes[1].set_ylabel("")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    fig.colorbar(axes[1].collections[-1], ax=axes, label="position")
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def plot_fig4c(rows: pd.DataFrame, curve: pd.DataFrame, task: str = "number", layer: int = 1):
    """Fig. 4C: the max logit per frequency ID of one layer, mean over runs (with the band of one standard
    deviation across prompts) and each run (thin). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import task_color
    c = task_color(task)
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.fill_between(curve["freq"] + 1, curve["value"] - curve["sd"], curve["value"] + curve["sd"],
                    color=c, alpha=0.25, lw=0)
    ax.plot(curve["freq"] + 1, curve["value"], color=c, marker="o", ms=2.5)
    for _, g in rows.groupby("seed"):
        ax.plot(g["freq"] + 1, g["maxlogit"], color=c, lw=0.5, alpha=0.5)
    ax.set(xlabel="frequency ID", ylabel="max logit", title=f"{task.capitalize()} task, layer {layer}")
    return fig


def plot_fig8(table1: pd.DataFrame, curves: pd.DataFrame, task: str, n_layers: int):
    """Fig. 8 for one task (:func:`plot_frequency_use`), four panels per row. Returns the Figure."""
    return plot_frequency_use(curves, table1, task, ncols=min(4, n_layers))


def table1_display(table1: pd.DataFrame, n_layers: dict):
    """:func:`table1_comparison` as a table whose caption counts agree = yes / close / no per task; glues the
    agreement counts and the IDs the text quotes."""
    show = table1.assign(our_id=table1["our_id"].round(2), our_id_ci=table1["our_id_ci"].round(2),
                         our_freq=table1["our_freq"].round(4), freq_ratio=table1["freq_ratio"].round(2))
    show = show[["task", "layer", "paper_id", "paper_freq", "our_id", "our_id_ci", "our_freq", "freq_ratio",
                 "our_peak_id", "agree"]]
    counts = (table1.groupby("task")["agree"].value_counts().unstack(fill_value=0)
              .reindex(index=list(TASKS), columns=["yes", "close", "no"], fill_value=0))
    _glue_table1(table1, counts, n_layers)
    tally = "; ".join(f"{task}: {c['yes']} yes, {c['close']} close, {c['no']} no" for task, c in counts.iterrows())
    return _table(show, key_columns=["task", "layer"],
                  digits={"paper_freq": 4, "our_id": 2, "our_id_ci": 2, "our_freq": 4, "freq_ratio": 2},
                  caption=f"Weighted-average frequency ID per layer: the paper's Table 1 and ours (agree: {tally})")


def _glue_table1(table1: pd.DataFrame, counts: pd.DataFrame, n_layers: dict) -> None:
    t1 = table1.set_index(["task", "layer"])

    def agree_text(task):
        c = counts.loc[task]
        return f"{c['yes']} agree, {c['close']} are close and {c['no']} differ"

    _glue("agree_number", agree_text("number"))
    _glue("agree_letter", agree_text("letter"))
    _glue("num_l1", f"{t1.loc[('number', 1), 'our_id']:.1f}")
    _glue("num_l1_freq", f"{t1.loc[('number', 1), 'our_freq']:.2f}")
    _glue("num_l2", f"{t1.loc[('number', min(2, n_layers['number'] - 1)), 'our_id']:.1f}")
    _glue("num_l0", f"{t1.loc[('number', 0), 'our_id']:.1f}")
    late = table1[(table1["task"] == "number") & (table1["layer"] >= min(6, n_layers["number"] - 1))]
    _glue("num_late", f"{late['our_id'].min():.1f}–{late['our_id'].max():.1f}")
    _glue("num_late_paper", f"{late['paper_id'].min()}–{late['paper_id'].max()}")
    _glue("num_late_ratio", f"{late['freq_ratio'].min():.1f}–{late['freq_ratio'].max():.1f}")
    let = table1[table1["task"] == "letter"]
    _glue("let_range", f"{let['our_id'].min():.1f}–{let['our_id'].max():.1f}")
    _glue("let_paper_range", f"{let['paper_id'].min()}–{let['paper_id'].max()}")
    _glue("let_l0_paper", t1.loc[("letter", 0), "paper_id"])
    _glue("let_l0", f"{t1.loc[('letter', 0), 'our_id']:.1f}")
    peaks_fast = [l for l in range(min(3, n_layers["number"])) if t1.loc[("number", l), "our_peak_id"] == "1"]
    _glue("fast_peak_layers", ", ".join(map(str, peaks_fast)) or "none")


def plot_role_heatmaps(tm: TrainedModels):
    """Beyond the paper: positional minus symbolic score per layer and plane at the snapshot steps
    (:func:`pos_sym_by_frequency`, :func:`plot_pos_sym_heatmaps`). Returns the Figure."""
    heat = pd.concat([pos_sym_by_frequency(tm.fs[tm.fs["task"] == task], list(tm.steps[task].values()))
                      for task in TASKS])
    return plot_pos_sym_heatmaps(heat, tm.steps, tasks=TASKS)


def frequency_roles_table(tm: TrainedModels):
    """:func:`frequency_roles` at the final step as a table, gluing the layers and planes the text quotes."""
    roles_table = frequency_roles(tm.fs)
    rt = roles_table.set_index(["task", "layer"])
    n_layers = tm.n_layers
    num_pos_layers = [l for l in range(n_layers["number"]) if rt.loc[("number", l), "n_pos"] > 0]
    _glue("num_pos_layers", ", ".join(map(str, num_pos_layers)) or "none")
    _glue("num_l1_pos", rt.loc[("number", 1), "positional"])
    _glue("num_l1_share", f"{rt.loc[('number', 1), 'pos_share']:.0%}")
    let_sym_layers = [l for l in range(n_layers["letter"]) if rt.loc[("letter", l), "n_sym"] > 0]
    _glue("let_sym_layers", ", ".join(map(str, let_sym_layers)) or "none")
    late_from = min(6, n_layers["number"] - 1)
    late_sym = [l for l in range(late_from, n_layers["number"]) if rt.loc[("number", l), "n_sym"] > 0]
    n_planes = int(sum(rt.loc[("number", l), "n_sym"] for l in late_sym))
    _glue("num_late_from", late_from)
    _glue("num_late_sym", f"layer{'s' if len(late_sym) > 1 else ''} {', '.join(map(str, late_sym))} "
                          f"({n_planes} plane{'s' if n_planes > 1 else ''} in all)" if late_sym else "none of them")
    floats = roles_table.select_dtypes("float").columns
    return _table(roles_table.round(2), key_columns=["task", "layer"], digits={c: 2 for c in floats},
                  caption="Planes with a positional (symbolic) score above the symbolic (positional) one by more "
                          "than 0.05 at the final step, and their share of the layer's max logit")


# -----------------------------------------------------------------------------------------------
# small models for the smoke and teaching scales


# -----------------------------------------------------------------------------
# The chapter's parameters

_RUNS = [f"{task}-s{seed}" for task in ("number", "letter") for seed in range(5)]

register(ChapterSpec(
    name="geometry",
    params={
        "seed": Param(int, 0, "training seed of the small models (smoke and teaching scales)", min=0, max=2**31 - 1),
        "n_check": Param(int, {"smoke": 100, "teaching": 500, "paper": 1000},
                         "random task prompts per length in the checks of Theorem 3.1 (three lengths)", min=4),
        "n_check_all": Param(int, {"smoke": 20, "teaching": 100, "paper": 200},
                             "prompts per length for the every-position check of Theorem 3.1", min=4),
        "n_max": Param(int, {"smoke": 200, "teaching": 300, "paper": 400},
                       "largest sequence length of the discrepancy curves", min=20, max=5000),
        "n_prompts": Param(int, {"smoke": 32, "teaching": 100, "paper": 400},
                           "prompts of the positional/symbolic metric of the small models (the paper scale "
                           "reads the committed 400-prompt results)", min=4, max=2000),
    },
    checks=(multiple_of(4, ("n_prompts",), "hop-balanced prompts"),),
    requires={"paper": tuple(
        Required(f"paper/{run}/{f}", _HOW, what)
        for run in _RUNS
        for f, what in (("freq_scores.parquet", "per-frequency scores through training"),
                        ("eval.csv", "validation accuracy through training"),
                        ("geometry.parquet", "layer-1 queries and keys on the dominant RoPE plane"))
    )},
))
