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
from ..spec import ChapterSpec, Param, Required, register

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
    weighted-average ID (dashed; the paper's Table 1 value dotted)."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, task_color
    c = curves[curves["task"] == task] if "task" in curves.columns else curves
    layers = sorted(c["layer"].unique())
    nrows = -(-len(layers) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 1.7 * nrows + 0.4), sharex=True, squeeze=False)
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
        ax.set_title(f"layer {l}", fontsize=9)
        if max_id:
            ax.set_xlim(1, max_id)
    for ax in axes[-1]:
        ax.set_xlabel("frequency ID")
    for ax in axes[:, 0]:
        ax.set_ylabel("max logit")
    fig.suptitle(f"{task.capitalize()} task: frequency use per layer (dashed: our weighted-average ID, "
                 f"dotted: the paper's)", fontsize=10)
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
    fig, axes = plt.subplots(len(tasks), ncol, figsize=(3.0 * ncol + 0.8, 2.6 * len(tasks) + 0.3),
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
            ax.set_title(f"{task}: step {s} ({label})", fontsize=9)
            ax.grid(False)
            if j == 0:
                ax.set_ylabel("layer")
            if i == len(tasks) - 1:
                ax.set_xlabel("frequency ID")
    cb = fig.colorbar(im, ax=axes, shrink=0.8, ticks=[-1, -0.1, 0, 0.1, 1])
    cb.set_label("positional - symbolic score (per frequency)")
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
    ax.text(key["x"] + 0.05, key["y"] + 0.05, "key v (all tokens)", fontsize=8)
    q = vectors[vectors["what"] == "query (before RoPE)"]
    for (_, r), c in zip(q.iterrows(), PALETTE[1:]):
        ax.annotate("", (r["x"], r["y"]), (0, 0), arrowprops=dict(arrowstyle="-|>", color=c, lw=1.6))
        ax.text(1.12 * r["x"], 1.12 * r["y"], f"q({r['token']})", color=c, fontsize=8, ha="center", va="center")
    seen = vectors[vectors["what"] == "key seen from the query"]
    ax.scatter(seen["x"], seen["y"], s=14, color=COLORS["neutral"], zorder=3)
    for _, r in seen.iterrows():
        ax.text(0.86 * r["x"], 0.86 * r["y"], str(int(r["distance"])), fontsize=7, color=COLORS["neutral"],
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
        ax.text(1.13 * k[0], 1.13 * k[1], f"{letter}*", fontsize=8, ha="center", va="center")
    q = pv["q"][tok.index("ac")]
    ax.annotate("", (0.8 * q[0], 0.8 * q[1]), (0, 0), arrowprops=dict(arrowstyle="-|>", color=COLORS["symbolic"], lw=2))
    ax.text(0.55 * q[0] + 0.12, 0.55 * q[1], "query ac", color=COLORS["symbolic"], fontsize=8)
    ax.set_aspect("equal")
    ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), xlabel="plane coordinate 1", ylabel="plane coordinate 2",
           title="Retrieval head: keys by left letter")
    return ax


def plot_trained_geometry(geo: pd.DataFrame, ax=None, rotated: bool = False, max_points: int | None = None):
    """Fig. 4B: queries and keys of one layer on its dominant RoPE plane, coloured by position."""
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
                    ax.text(r["x"], r["y"], str(p), fontsize=7, ha="center", va="bottom")
    ax.axhline(0, color="#999999", lw=0.5)
    ax.axvline(0, color="#999999", lw=0.5)
    ax.legend(loc="best", fontsize=8)
    freq = int(g["freq"].iloc[0])
    ax.set(xlabel=f"plane ID {freq + 1}, coordinate 1", ylabel=f"plane ID {freq + 1}, coordinate 2",
           title=f"{'after' if rotated else 'before'} RoPE, frequency ID {freq + 1}")
    plt.colorbar(sc, ax=ax, label="position")
    return ax


def plot_discrepancy(table: pd.DataFrame, kind: str, ax=None, thetas: Sequence[float] | None = None,
                     show_best: bool = True):
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
    ax.legend(handles=handles, fontsize=7, loc="upper right" if kind == "index" else "lower left", ncol=2)
    return ax


# -----------------------------------------------------------------------------------------------
# small models for the smoke and teaching scales


# -----------------------------------------------------------------------------
# The chapter's parameters

_RUNS = [f"{task}-s{seed}" for task in ("number", "letter") for seed in range(5)]
_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 (see data/README.md)"

def _checks(params: dict):
    if params["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {params['n_prompts']}"
    return None


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
    checks=(_checks,),
    requires={"paper": tuple(
        Required(f"paper/{run}/{f}", _HOW, what)
        for run in _RUNS
        for f, what in (("freq_scores.parquet", "per-frequency scores through training"),
                        ("eval.csv", "validation accuracy through training"),
                        ("geometry.parquet", "layer-1 queries and keys on the dominant RoPE plane"))
    )},
))
