"""The "LEGO chains" chapter: parameters, the science (head types, emergence, length generalisation, claims)
and its figures.

Head types (the LEGO paper's two patterns, measured on the attention of every head over whole prompts):

* **association**: the mass a name token (a clause's ``lhs`` or ``rhs``, or the query) puts on *earlier tokens
  identical to it*, averaged over the name tokens that have one;
* **manipulation** (local): the mass a clause token puts on its own clause (itself and the clause tokens before
  it; a decoder cannot look ahead), averaged over clause tokens.

A head is an association head when its association mass is at least ``TYPE_MIN`` (0.5), a manipulation head
when its local mass is; otherwise "other". The positional/symbolic scores are the book's metric at the final
query (the queried variable), from ``posym analyze``. Both are computed at every analysed checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import io as pio
from ..metrics import classify
from ..spec import ChapterSpec, Param, Required, multiple_of, register
from ..stats import seed_band
from ..tasks import get_task, to_tensors

TASKS = ("lego", "lego_ordered")
TYPE_MIN = 0.5
N_PROMPTS = 300          # metric prompts (a multiple of the 2 training depths)
N_TYPE_PROMPTS = 120     # prompts of the head-type masses
N_LENGTH = 60            # prompts per (chain length, depth) of the length test
LENGTH_VARS = (6, 9, 12)
DATA = "lego"
_HOW = "python scripts/newtasks_runs.py --task lego  (see data/lego/README.md)"
SEEDS = (0, 1, 2)

register(ChapterSpec(
    name="lego",
    params={
        "seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": 3}, "seeds per variant (shuffled, ordered)",
                       min=1, max=3),
        "steps": Param(int, {"smoke": 150, "teaching": 1000, "paper": 1000},
                       "training steps of the models trained here (smoke, teaching; paper reads data/lego)",
                       min=20, max=20_000),
        "gamma": Param(float, 0.2, "purity tolerance of the head classes", min=0.0, max=0.5),
        "n_prompts": Param(int, {"smoke": 40, "teaching": 300, "paper": 300},
                           "metric prompts of the models trained here (a multiple of 2)", min=2, max=2000),
    },
    checks=(multiple_of(2, ("n_prompts",), "the training depths"),),
    requires={"paper": (Required(DATA, _HOW, "teaching-scale LEGO runs"),)},
))


# ---------------------------------------------------------------------------------------------
# Measurements on a model
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def head_type_masses(model, task: str, samples) -> pd.DataFrame:
    """Association and local (manipulation) mass of every head over ``samples``; also the query's own
    association mass. Rows: layer, head, assoc, local, assoc_q."""
    t = get_task(task)
    x, _, _ = to_tensors(samples, t.vocab)
    T = x.shape[1]
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    _, cache = model.run_with_cache(x, names=names)
    same = (x[:, :, None] == x[:, None, :]) & torch.tril(torch.ones(T, T, dtype=torch.bool), -1)[None]
    is_name = torch.zeros_like(x, dtype=torch.bool)
    is_name[:, 0:T - 2:4] = True
    is_name[:, 3:T - 2:4] = x[:, 3:T - 2:4] != t.vocab.stoi["1"]
    is_name[:, T - 1] = True
    has_twin = same.any(-1) & is_name  # (N, T) name tokens with an earlier identical token
    pos = torch.arange(T)
    clause = torch.where(pos < T - 2, pos // 4, -1)
    local_mask = (clause[:, None] == clause[None, :]) & (clause[:, None] >= 0) & (pos[None, :] <= pos[:, None])
    in_clause = (clause >= 0)
    rows = []
    for l, n in enumerate(names):
        A = cache[n]  # (N, H, T, T)
        assoc_tok = (A * same[:, None].float()).sum(-1)  # (N, H, T)
        local_tok = (A * local_mask[None, None].float()).sum(-1)
        for h in range(A.shape[1]):
            a = assoc_tok[:, h][has_twin].mean().item()
            loc = local_tok[:, h][:, in_clause].mean().item()
            aq = assoc_tok[:, h, T - 1].mean().item()
            rows.append({"layer": l, "head": h, "assoc": a, "local": loc, "assoc_q": aq})
    return pd.DataFrame(rows)


def head_type(assoc: float, local: float) -> str:
    if assoc >= TYPE_MIN:
        return "association"
    if local >= TYPE_MIN:
        return "manipulation"
    return "other"


@torch.no_grad()
def length_table(model, task: str, n: int = N_LENGTH, n_vars=LENGTH_VARS, seed: int = 0) -> pd.DataFrame:
    """Accuracy per (chain length, query depth) on prompts built by ``LegoTask.chain_prompts``.

    Chain length 6 is the training length (depths 3-6 never asked in training); 9 and 12 are longer prompts."""
    t = get_task(task)
    rows = []
    for nv in n_vars:
        samples = t.chain_prompts(n, range(1, nv + 1), n_vars=nv, seed=seed + 1000)
        x, y, hops = to_tensors(samples, t.vocab)
        pred = model(x, last_only=True)[:, -1].argmax(-1)
        ok = (pred == y).float()
        for d in range(1, nv + 1):
            m = hops == d
            rows.append({"n_vars": nv, "depth": d, "accuracy": ok[m].mean().item(), "n": int(m.sum()),
                         "trained_depth": d <= t.max_hops and nv == t.n_vars})
    return pd.DataFrame(rows)


def type_trajectory(run_dir: str | Path, task: str, seed: int, n: int = N_TYPE_PROMPTS) -> pd.DataFrame:
    """:func:`head_type_masses` at every checkpoint of a run (prompts from the run's test split)."""
    from ..tasks import TaskDataset
    from ..train import list_checkpoints, load_checkpoint

    ds = TaskDataset(task, "test", seed=seed, size=n)
    samples = [ds[i] for i in range(n)]
    frames, model = [], None
    for step, path in list_checkpoints(run_dir):
        model, _ = load_checkpoint(path, into=model)
        df = head_type_masses(model, task, samples)
        df.insert(0, "step", step)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Runs: train, analyse, measure (the runs script and the smoke/teaching page use the same function)
# ---------------------------------------------------------------------------------------------
TABLES = {"eval": "eval.csv", "scores": "scores.parquet", "types": "types.csv", "length": "length.csv"}


def run_and_measure(task: str, seed: int, out: str | Path, scale: str = "teaching", steps: int | None = None,
                    threads: int | None = 1, n_prompts: int = N_PROMPTS, progress: bool = False,
                    n_length: int = N_LENGTH) -> Path:
    """Train (or resume) one run, compute the metric at every checkpoint and the head-type and length tables;
    every table is written into the run folder."""
    from ..analyze import analyze_run, final_model
    from ..train import TrainConfig, train

    kw = {} if steps is None else {"steps": int(steps)}
    if scale == "smoke":
        kw.update(model_overrides=dict(get_task(task).teaching_model))
    cfg = TrainConfig.preset(scale, task=task, seed=seed, **kw)
    run = train(cfg, out, progress=progress, threads=threads)
    analyze_run(run.path, n_prompts=n_prompts, per_frequency=False, progress=progress)
    pio.atomic_write_table(run.path / "types.csv", type_trajectory(run.path, task, seed, n=min(N_TYPE_PROMPTS, n_prompts)))
    pio.atomic_write_table(run.path / "length.csv", length_table(final_model(run.path), task, n=n_length, seed=seed))
    return run.path


def load_runs(folders) -> dict[str, pd.DataFrame]:
    """Stack the tables of run folders (trained here or committed in data/lego) with task and seed columns."""
    from ..results import stack_run_tables

    return stack_run_tables(folders, TABLES, keys=("task", "seed"))


def committed_runs(root: Path, seeds: int) -> list[Path]:
    """The packaged runs under ``root`` (folders ``<task>-s<seed>`` with a manifest and every table), at most
    ``seeds`` per task; ResultError when there is none."""
    from ..results import packaged_runs

    return packaged_runs(root, TASKS, TABLES.values(), seeds, _HOW)


def results(cfg, workdir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The chapter's tables at ``cfg.scale``: read from ``data/lego`` (paper) or trained here (smoke,
    teaching: ``cfg.seeds`` seeds of each variant, ``cfg.steps`` steps, in ``workdir``)."""
    if cfg.scale == "paper":
        return load_runs(committed_runs(Path(cfg.data_dir) / DATA, cfg.seeds))
    import tempfile
    root = Path(workdir or tempfile.mkdtemp(prefix="posym-lego-"))
    folders = [run_and_measure(t, s, root / f"{t}-s{s}", scale=cfg.scale, steps=cfg.steps, n_prompts=cfg.n_prompts,
                               n_length=max(2, cfg.n_prompts // 2)) for t in TASKS for s in range(cfg.seeds)]
    return load_runs(folders)


# ---------------------------------------------------------------------------------------------
# Science
# ---------------------------------------------------------------------------------------------
def final_heads(res: dict, gamma: float) -> pd.DataFrame:
    """One row per (task, seed, layer, head) at the last step: scores, metric class, type masses and type."""
    sc = res["scores"]
    last = sc[sc["step"] == sc.groupby(["task", "seed"])["step"].transform("max")]
    ty = res["types"]
    ty = ty[ty["step"] == ty.groupby(["task", "seed"])["step"].transform("max")]
    df = last[["task", "seed", "layer", "head", "pos", "sym"]].merge(
        ty[["task", "seed", "layer", "head", "assoc", "local", "assoc_q"]], on=["task", "seed", "layer", "head"])
    df["metric_class"] = [classify(p, s, gamma) for p, s in zip(df["pos"], df["sym"])]
    df["type"] = [head_type(a, l) for a, l in zip(df["assoc"], df["local"])]
    return df.reset_index(drop=True)


def type_vs_class(heads: pd.DataFrame) -> pd.DataFrame:
    """Counts of head types x metric classes per task (final models), with mean scores per type."""
    g = heads.groupby(["task", "type"])
    out = g.agg(heads=("pos", "size"), mean_pos=("pos", "mean"), mean_sym=("sym", "mean")).reset_index()
    for c in ("positional", "symbolic", "mixed"):
        out[c] = g["metric_class"].apply(lambda s, c=c: int((s == c).sum())).values
    return out


def final_accuracy(res: dict) -> pd.DataFrame:
    """Validation accuracy of every run at its last step: overall (``accuracy``) and per trained depth
    (``depth_1``, ``depth_2``; present when ``eval.csv`` has per-depth rows)."""
    e = res["eval"]
    last = e[e["step"] == e.groupby(["task", "seed"])["step"].transform("max")]
    hop = last["hop"].astype(str)
    out = last[hop == "all"][["task", "seed", "step", "accuracy"]].reset_index(drop=True)
    by = last[hop != "all"].assign(hop="depth_" + hop[hop != "all"])
    if by.empty:
        return out
    wide = by.pivot_table(index=["task", "seed"], columns="hop", values="accuracy").reset_index()
    wide.columns.name = None
    return out.merge(wide, on=["task", "seed"], how="left")


def accuracy_note(res: dict) -> str:
    """The final per-depth validation accuracy of the runs, per clause order (range over seeds), as a phrase for
    the page's text."""
    acc = final_accuracy(res)
    cols = [c for c in acc.columns if c.startswith("depth_")] or ["accuracy"]
    out = []
    for task, a in acc.groupby("task", sort=False):
        parts = []
        for c in cols:
            lo, hi = f"{a[c].min():.2f}", f"{a[c].max():.2f}"
            what = f"depth {c.split('_')[1]}" if c != "accuracy" else "overall"
            parts.append(f"{what} {lo}" if lo == hi else f"{what} {lo}–{hi}")
        out.append(f"{get_task(task).label}, {len(a)} run(s): " + ", ".join(parts))
    return "; ".join(out)


def emergence(res: dict, gamma: float, acc_level: float = 0.9) -> pd.DataFrame:
    """Per run: first step with an association head, with a manipulation head, with a pure symbolic head, with a
    pure positional head (metric), and the first step where validation accuracy reaches ``acc_level``
    (NaN when never)."""
    rows = []
    for (task, seed), ty in res["types"].groupby(["task", "seed"]):
        ty = ty.sort_values("step")
        sc = res["scores"][(res["scores"]["task"] == task) & (res["scores"]["seed"] == seed)].sort_values("step")
        ev = res["eval"][(res["eval"]["task"] == task) & (res["eval"]["seed"] == seed) & (res["eval"]["hop"] == "all")]
        cls = np.array([classify(p, s, gamma) for p, s in zip(sc["pos"], sc["sym"])])

        def first(steps, mask):
            s = np.asarray(steps)[np.asarray(mask)]
            return float(s.min()) if len(s) else np.nan

        rows.append({"task": task, "seed": seed,
                     "association": first(ty["step"], ty["assoc"] >= TYPE_MIN),
                     "manipulation": first(ty["step"], ty["local"] >= TYPE_MIN),
                     "pure_symbolic": first(sc["step"], cls == "symbolic"),
                     "pure_positional": first(sc["step"], cls == "positional"),
                     "accuracy": first(ev["step"], ev["accuracy"] >= acc_level),
                     "final_accuracy": float(ev.sort_values("step")["accuracy"].iloc[-1])})
    return pd.DataFrame(rows)


def length_summary(res: dict) -> pd.DataFrame:
    """Mean accuracy (95 % interval over seeds) per task, chain length and depth."""
    return seed_band(res["length"], "accuracy", x="depth", by=("task", "n_vars"))


def _agree(ok) -> str:
    return "n/a" if ok is None else ("agree" if ok else "disagree")


def claims_table(res: dict, gamma: float) -> pd.DataFrame:
    """The LEGO paper's testable claims next to ours, each with its agreement rule (see the chapter)."""
    heads = final_heads(res, gamma)
    em = emergence(res, gamma)
    L = res["length"]
    rows = []
    a = heads[(heads["task"] == "lego") & (heads["type"] == "association")]
    rows.append({"claim": "association heads exist (attend to identical tokens)",
                 "paper": "yes (trained BERT)",
                 "ours": f"{len(a)} of {int((heads['task'] == 'lego').sum())} heads, "
                         f"{a['seed'].nunique()} of {heads[heads['task'] == 'lego']['seed'].nunique()} seeds",
                 "rule": "an association head in every shuffled run",
                 "verdict": _agree(a["seed"].nunique() == heads[heads["task"] == "lego"]["seed"].nunique())})
    aa = heads[heads["type"] == "association"]
    rows.append({"claim": "association heads are symbolic (our expectation)", "paper": "not measured",
                 "ours": f"s_sym > s_pos for {int((aa['sym'] > aa['pos']).sum())} of {len(aa)}; "
                         f"pure symbolic {int((aa['metric_class'] == 'symbolic').sum())}",
                 "rule": "s_sym > s_pos for at least 3/4 of them",
                 "verdict": _agree(None if aa.empty else (aa["sym"] > aa["pos"]).mean() >= 0.75)})
    mm = heads[heads["type"] == "manipulation"]
    rows.append({"claim": "manipulation heads are positional (our expectation)", "paper": "not measured",
                 "ours": f"s_pos > s_sym for {int((mm['pos'] > mm['sym']).sum())} of {len(mm)}; "
                         f"pure positional {int((mm['metric_class'] == 'positional').sum())}",
                 "rule": "s_pos > s_sym for at least 3/4 of them",
                 "verdict": _agree(None if mm.empty else (mm["pos"] > mm["sym"]).mean() >= 0.75)})
    sh = L[(L["task"] == "lego") & (L["n_vars"] == 6)]
    tr, ex = sh[sh["depth"] <= 2]["accuracy"].mean(), sh[sh["depth"] > 2]["accuracy"].mean()
    rows.append({"claim": "shuffled clauses: trained depths solved, deeper ones not reliably",
                 "paper": "BERT on shuffled chains fails past the trained depth",
                 "ours": f"depths 1-2: {tr:.2f}; depths 3-6: {ex:.2f}",
                 "rule": "accuracy at depths 3-6 below 0.9 while depths 1-2 reach 0.9",
                 "verdict": _agree(None if np.isnan(tr) else (tr >= 0.9 and ex < 0.9))})
    od = L[(L["task"] == "lego_ordered") & (L["n_vars"] == 6)]
    otr, oex = od[od["depth"] <= 2]["accuracy"].mean(), od[od["depth"] > 2]["accuracy"].mean()
    rows.append({"claim": "ordered clauses: shortcut, worse generalisation than shuffled",
                 "paper": "shortcut solutions with ordered clauses hurt robustness",
                 "ours": f"ordered depths 3-6: {oex:.2f} vs shuffled {ex:.2f}",
                 "rule": "ordered below shuffled at depths 3-6 (means over seeds), judged only when both solve "
                         "depths 1-2 (>= 0.9)",
                 "verdict": _agree(None if np.isnan(oex) or np.isnan(ex) or min(tr, otr) < 0.9 else oex < ex)})
    e = em[em["task"] == "lego"]
    both = e.dropna(subset=["association", "manipulation"])
    first_local = int((both["manipulation"] < both["association"]).sum())
    rows.append({"claim": "which emerges first (shuffled)", "paper": "not reported",
                 "ours": f"manipulation first in {first_local} of {len(both)} runs, association first in "
                         f"{int((both['association'] < both['manipulation']).sum())}",
                 "rule": "-", "verdict": "n/a"})
    ps = e.dropna(subset=["pure_symbolic", "accuracy"])
    rows.append({"claim": "pure heads appear when accuracy rises (Paper 2)", "paper": "Paper 2: yes (Number, Letter)",
                 "ours": "; ".join(f"seed {int(r.seed)}: pure symbolic at {int(r.pure_symbolic)}, acc 0.9 at "
                                   f"{int(r.accuracy)}" for r in ps.itertuples()) or "no run reaches both",
                 "rule": "first pure head within 500 steps of the 0.9-accuracy step in every run",
                 "verdict": _agree(None if ps.empty else bool((abs(ps["pure_symbolic"] - ps["accuracy"]) <= 500).all()))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_scores(res: dict, tasks=TASKS):
    """s_pos and s_sym of every head through training, mean and 95 % band over seeds; one panel per (task,
    layer), heads as line styles."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    sc = res["scores"]
    tasks = [t for t in tasks if t in set(sc["task"])]
    n_layer = int(sc["layer"].max()) + 1
    fig, axes = plt.subplots(len(tasks), n_layer, figsize=(3.0 * n_layer, 2.6 * len(tasks)), sharex=True,
                             sharey=True, squeeze=False)
    for i, task in enumerate(tasks):
        for l in range(n_layer):
            ax = axes[i, l]
            d = sc[(sc["task"] == task) & (sc["layer"] == l)]
            for h, ls in zip(sorted(d["head"].unique()), ("-", "--", ":", "-.")):
                for col, c in (("pos", COLORS["positional"]), ("sym", COLORS["symbolic"])):
                    b = seed_band(d[d["head"] == h], col)
                    ax.fill_between(b["step"], b["lo"], b["hi"], color=c, alpha=0.15, lw=0)
                    ax.plot(b["step"], b["mean"], color=c, ls=ls, lw=1.3,
                            label=f"{'s_pos' if col == 'pos' else 's_sym'}, head {h}")
            ax.set(title=f"{get_task(task).label}: layer {l}", ylim=(-0.02, 1.02))
            if i == len(tasks) - 1:
                ax.set_xlabel("training step")
            if l == 0:
                ax.set_ylabel("score at the query")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return fig


def plot_types(heads: pd.DataFrame):
    """Final heads: association mass vs local mass, coloured by the metric's class (one point per head)."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), sharex=True, sharey=True)
    for ax, task in zip(axes, TASKS):
        d = heads[heads["task"] == task]
        for cls, g in d.groupby("metric_class"):
            ax.scatter(g["assoc"], g["local"], color=COLORS[cls], label=cls, s=28, alpha=0.8)
        ax.axvline(TYPE_MIN, color="grey", lw=0.7, ls=":")
        ax.axhline(TYPE_MIN, color="grey", lw=0.7, ls=":")
        ax.set(title=get_task(task).label, xlabel="association mass (identical earlier tokens)",
               xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, title="metric class", title_fontsize=8)
    axes[0].set_ylabel("local mass (own clause)")
    return fig


def plot_emergence(res: dict, task: str = "lego"):
    """Validation accuracy and the number of association / manipulation heads through training (mean over
    seeds)."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    ty = res["types"][res["types"]["task"] == task].copy()
    ty["association"] = (ty["assoc"] >= TYPE_MIN).astype(float)
    ty["manipulation"] = (ty["local"] >= TYPE_MIN).astype(float)
    counts = ty.groupby(["seed", "step"], as_index=False)[["association", "manipulation"]].sum()
    ev = res["eval"][(res["eval"]["task"] == task) & (res["eval"]["hop"] == "all")]
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    b = seed_band(ev, "accuracy")
    ax.fill_between(b["step"], b["lo"], b["hi"], color="grey", alpha=0.2, lw=0)
    ax.plot(b["step"], b["mean"], color="black", label="validation accuracy")
    ax.set(xlabel="training step", ylabel="accuracy", ylim=(0.4, 1.02), title=get_task(task).label)
    ax2 = ax.twinx()
    for col, c in (("association", COLORS["symbolic"]), ("manipulation", COLORS["positional"])):
        bb = seed_band(counts, col)
        ax2.plot(bb["step"], bb["mean"], color=c, ls="--", label=f"{col} heads")
    ax2.set_ylabel("heads (mean over seeds)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    return fig


def plot_length(res: dict):
    """Accuracy vs query depth, per chain length (panels) and clause order (colours); depths right of the
    dotted line were never asked in training."""
    import matplotlib.pyplot as plt

    s = length_summary(res)
    nv = sorted(s["n_vars"].unique())
    fig, axes = plt.subplots(1, len(nv), figsize=(3.6 * len(nv), 3.4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], nv):
        for task in TASKS:
            d = s[(s["task"] == task) & (s["n_vars"] == n)]
            c = get_task(task).colour
            ax.fill_between(d["depth"], d["lo"], d["hi"], color=c, alpha=0.2, lw=0)
            ax.plot(d["depth"], d["mean"], color=c, marker="o", ms=3, label=get_task(task).label)
        ax.axvline(get_task(TASKS[0]).max_hops + 0.5, color="grey", ls=":", lw=0.8)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(title=f"{n} variables ({4 * n + 2} tokens)", xlabel="query depth", ylim=(0.3, 1.02))
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return fig
