"""The "List sorting" chapter: parameters, the science (head modes, vocabulary-splitting, copy-suppression,
claims) and its figures.

Head modes are measured on the one-layer, attention-only model by ablation: a head's **contribution** to a
token's logit is the logit with every head minus the logit with that head's output set to zero (the model has
no MLP, so the direct path and the other head are unchanged; only the final LayerNorm makes the two heads'
contributions not exactly additive).

* **Vocabulary-splitting.** The queries are grouped into ``N_BINS`` bins of their value. In each bin, a head's
  share is its positive contribution to the correct answer divided by the sum of the heads' positive
  contributions. The *splitting index* is the mean over bins of the largest share (1 when one head does all
  the work in every bin, 1/H when the heads share every bin). A run splits the vocabulary when the index is
  at least ``SPLIT_MIN`` (0.8) and every head is the largest in at least one bin.
* **Copy-suppression.** A head that lowers the logit of the token it attends to most: its mean contribution
  to that token's logit is negative. A copying head raises it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import io as pio
from ..metrics import classify
from ..spec import ChapterSpec, Param, Required, register
from ..stats import seed_band
from ..tasks import TaskDataset, get_task

TASK = "sorting"
N_BINS = 6
SPLIT_MIN = 0.8
N_MODE_PROMPTS = 600
MODE_EVERY = 200        # head modes at the early checkpoints and every 200 steps
WEIGHT_DECAYS = (0.0, 0.1)
DATA = "sorting"
SEEDS = (0, 1, 2)
_HOW = "python scripts/newtasks_runs.py --task sorting  (see data/sorting/README.md)"


def variant(wd: float) -> str:
    """Run-folder prefix of a weight decay: ``sorting-wd0``, ``sorting-wd0.1``."""
    return f"sorting-wd{wd:g}"


register(ChapterSpec(
    name="sorting",
    params={
        "seeds": Param(int, {"smoke": 1, "teaching": 3, "paper": 3}, "seeds per weight decay", min=1, max=3),
        "steps": Param(int, {"smoke": 300, "teaching": 1500, "paper": 1500},
                       "training steps of the models trained here (smoke, teaching; paper reads data/sorting)",
                       min=20, max=20_000),
        "gamma": Param(float, 0.2, "purity tolerance of the head classes", min=0.0, max=0.5),
        "n_prompts": Param(int, {"smoke": 40, "teaching": 300, "paper": 300},
                           "metric prompts of the models trained here", min=1, max=2000),
    },
    requires={"paper": (Required(DATA, _HOW, "teaching-scale sorting runs"),)},
))


# ---------------------------------------------------------------------------------------------
# Measurements on a model
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def head_modes(model, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Per head: attention of the query on the answer and on the query's own copy, contribution to the correct
    answer, to the query's token and to the most-attended token; contribution to the answer per query bin.

    Rows: head, kind (``all`` or ``bin``), bin (query-value bin; -1 for ``all``), and the measures."""
    T = x.shape[1]
    name = "blocks.0.attn.hook_pattern"
    logits, cache = model.run_with_cache(x, names=[name])
    logits = logits[:, -1]
    A = cache[name][:, :, -1]  # (N, H, T)
    rows_ = torch.arange(len(x))
    q = x[:, -1]
    copy_pos = (x[:, :T - 2] == q[:, None]).float().argmax(-1)
    ans_pos = (x[:, :T - 2] == y[:, None]).float().argmax(-1)
    n_num = len(get_task(TASK).numbers)
    qv = q - get_task(TASK).vocab.stoi["0"]
    bins = torch.clamp(qv * N_BINS // n_num, 0, N_BINS - 1)
    out = []
    H = A.shape[1]
    for h in range(H):
        def zero(z, _name, h=h):
            z = z.clone()
            z[:, h] = 0
            return z

        with model.hooks([("blocks.0.attn.hook_z", zero)]):
            abl = model(x)[:, -1]
        diff = logits - abl  # contribution of head h to every logit
        top = x[rows_, A[:, h].argmax(-1)]
        c_ans = diff[rows_, y]
        rec = {"head": h, "kind": "all", "bin": -1,
               "attn_answer": A[rows_, h, ans_pos].mean().item(),
               "attn_copy": A[rows_, h, copy_pos].mean().item(),
               "contrib_answer": c_ans.mean().item(),
               "contrib_query_token": diff[rows_, q].mean().item(),
               "contrib_top": diff[rows_, top].mean().item()}
        out.append(rec)
        for b in range(N_BINS):
            m = bins == b
            if m.any():
                out.append({"head": h, "kind": "bin", "bin": b, "contrib_answer": c_ans[m].mean().item(),
                            "attn_answer": A[rows_[m], h, ans_pos[m]].mean().item()})
    return pd.DataFrame(out)


def mode_trajectory(run_dir: str | Path, seed: int, n: int = N_MODE_PROMPTS) -> pd.DataFrame:
    """:func:`head_modes` at every checkpoint of a run (prompts: the run's test split)."""
    from ..train import list_checkpoints, load_checkpoint

    a = TaskDataset(TASK, "test", seed=seed, size=n).arrays()
    x, y = torch.from_numpy(a["x"].copy()), torch.from_numpy(a["y"].copy())
    frames, model = [], None
    for step, path in list_checkpoints(run_dir):
        if step % MODE_EVERY and step >= MODE_EVERY:
            continue
        model, _ = load_checkpoint(path, into=model)
        df = head_modes(model, x, y)
        df.insert(0, "step", step)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def splitting(modes: pd.DataFrame) -> pd.DataFrame:
    """Splitting index and whether every head leads a bin, per (task, seed, wd, step) group of ``modes``."""
    keys = [k for k in ("task", "seed", "weight_decay", "step") if k in modes.columns]
    b = modes[modes["kind"] == "bin"].copy()
    b["pos_contrib"] = b["contrib_answer"].clip(lower=0)
    rows = []
    for key, g in b.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index="bin", columns="head", values="pos_contrib")
        tot = wide.sum(axis=1).replace(0, np.nan)
        share = wide.div(tot, axis=0).dropna(how="all")
        if share.empty:
            rows.append({**dict(zip(keys, key)), "split_index": np.nan, "every_head_leads": False,
                         "splits": False, "leaders": ""})
            continue
        leader = share.idxmax(axis=1).dropna()
        index = float(share.max(axis=1).mean())
        every = set(leader.astype(int)) == set(wide.columns.astype(int))
        rows.append({**dict(zip(keys, key)), "split_index": index, "every_head_leads": bool(every),
                     "splits": bool(index >= SPLIT_MIN and every),
                     "leaders": "".join(str(int(v)) for v in leader.values)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
TABLES = {"eval": "eval.csv", "scores": "scores.parquet", "modes": "modes.csv"}


def run_and_measure(seed: int, weight_decay: float, out: str | Path, scale: str = "teaching",
                    steps: int | None = None, threads: int | None = 1, progress: bool = False,
                    n_prompts: int = 300) -> Path:
    """Train (or resume) one sorting run with ``weight_decay``, compute the metric at every checkpoint and the
    head modes; every table is written into the run folder."""
    from ..analyze import analyze_run
    from ..train import TrainConfig, train

    kw = {"weight_decay": float(weight_decay)}
    if steps is not None:
        kw["steps"] = int(steps)
    if scale == "smoke":
        kw.update(model_overrides=dict(get_task(TASK).teaching_model))
    cfg = TrainConfig.preset(scale, task=TASK, seed=seed, **kw)
    run = train(cfg, out, progress=progress, threads=threads)
    analyze_run(run.path, n_prompts=n_prompts, per_frequency=False, progress=progress)
    pio.atomic_write_table(run.path / "modes.csv", mode_trajectory(run.path, seed, n=min(N_MODE_PROMPTS, 2 * n_prompts)))
    return run.path


def load_runs(folders) -> dict[str, pd.DataFrame]:
    """Stack the tables of run folders with task, seed and weight_decay columns."""
    from ..results import stack_run_tables

    out = stack_run_tables(folders, TABLES, keys=("task", "seed", "weight_decay"))
    for df in out.values():
        df["weight_decay"] = df["weight_decay"].astype(float)
    return out


def committed_runs(root: Path, seeds: int) -> list[Path]:
    """The packaged runs under ``root`` (``sorting-wd<wd>-s<seed>`` with a manifest and every table), at most
    ``seeds`` per weight decay; ResultError when there is none."""
    from ..results import packaged_runs

    return packaged_runs(root, [variant(w) for w in WEIGHT_DECAYS], TABLES.values(), seeds, _HOW)


def results(cfg, workdir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The chapter's tables: read from ``data/sorting`` (paper) or trained here (smoke, teaching)."""
    if cfg.scale == "paper":
        return load_runs(committed_runs(Path(cfg.data_dir) / DATA, cfg.seeds))
    import tempfile
    root = Path(workdir or tempfile.mkdtemp(prefix="posym-sorting-"))
    return load_runs([run_and_measure(s, w, root / f"{variant(w)}-s{s}", scale=cfg.scale, steps=cfg.steps,
                                      n_prompts=cfg.n_prompts) for w in WEIGHT_DECAYS for s in range(cfg.seeds)])


# ---------------------------------------------------------------------------------------------
# Science
# ---------------------------------------------------------------------------------------------
def final_heads(res: dict, gamma: float) -> pd.DataFrame:
    """One row per (weight decay, seed, head) at the last step: scores, metric class, mode measures."""
    sc = res["scores"]
    sc = sc[sc["step"] == sc.groupby(["weight_decay", "seed"])["step"].transform("max")]
    m = res["modes"]
    m = m[(m["kind"] == "all") & (m["step"] == m.groupby(["weight_decay", "seed"])["step"].transform("max"))]
    df = sc[["weight_decay", "seed", "head", "pos", "sym"]].merge(
        m[["weight_decay", "seed", "head", "attn_answer", "attn_copy", "contrib_answer", "contrib_query_token",
           "contrib_top"]], on=["weight_decay", "seed", "head"])
    df["metric_class"] = [classify(p, s, gamma) for p, s in zip(df["pos"], df["sym"])]
    df["mode"] = np.where(df["contrib_top"] < 0, "copy-suppression", "copying")
    return df.reset_index(drop=True)


def final_splitting(res: dict) -> pd.DataFrame:
    s = splitting(res["modes"])
    return s[s["step"] == s.groupby(["weight_decay", "seed"])["step"].transform("max")].reset_index(drop=True)


def final_accuracy(res: dict) -> pd.DataFrame:
    e = res["eval"][res["eval"]["hop"] == "all"]
    return e[e["step"] == e.groupby(["weight_decay", "seed"])["step"].transform("max")][
        ["weight_decay", "seed", "accuracy"]].reset_index(drop=True)


def _agree(ok) -> str:
    return "n/a" if ok is None else ("agree" if ok else "disagree")


def claims_table(res: dict, gamma: float) -> pd.DataFrame:
    """The list-sorting paper's testable claims (and our expectation) next to our results, with the rules."""
    heads = final_heads(res, gamma)
    sp = final_splitting(res)
    acc = final_accuracy(res)
    rows = [{"claim": "a one-layer attention-only model learns to sort", "paper": "yes",
             "ours": f"final validation accuracy {acc['accuracy'].min():.3f} (worst run) of {len(acc)} runs",
             "rule": "every run at least 0.95", "verdict": _agree(bool((acc["accuracy"] >= 0.95).all()))}]
    for wd in sorted(sp["weight_decay"].unique()):
        s = sp[sp["weight_decay"] == wd]
        rows.append({"claim": f"vocabulary-splitting with weight decay {wd:g}",
                     "paper": "present with and without weight decay",
                     "ours": f"{int(s['splits'].sum())} of {len(s)} seeds split (index "
                             f"{', '.join(f'{v:.2f}' for v in s['split_index'])})",
                     "rule": f"index >= {SPLIT_MIN} and every head leads a bin, in a majority of seeds",
                     "verdict": _agree(bool(s["splits"].sum() * 2 > len(s)))})
    cs = heads[heads["mode"] == "copy-suppression"]
    rows.append({"claim": "copy-suppression heads occur", "paper": "yes, in some runs",
                 "ours": f"{len(cs)} of {len(heads)} final heads ({cs[['weight_decay', 'seed']].drop_duplicates().shape[0]}"
                         f" of {heads[['weight_decay', 'seed']].drop_duplicates().shape[0]} runs)",
                 "rule": "at least one run has one", "verdict": _agree(len(cs) > 0)})
    sym = heads[heads["sym"] > heads["pos"]]
    rows.append({"claim": "sorting heads are symbolic (our expectation)", "paper": "not measured",
                 "ours": f"s_sym > s_pos for {len(sym)} of {len(heads)} heads; pure symbolic "
                         f"{int((heads['metric_class'] == 'symbolic').sum())}, pure positional "
                         f"{int((heads['metric_class'] == 'positional').sum())}",
                 "rule": "s_sym > s_pos for every copying head",
                 "verdict": _agree(bool((heads[heads["mode"] == "copying"]["sym"] >
                                         heads[heads["mode"] == "copying"]["pos"]).all()))})
    if len(cs):
        cp = heads[heads["mode"] == "copying"]
        rows.append({"claim": "copy-suppression heads score differently (our question)", "paper": "not measured",
                     "ours": f"copy-suppression: s_pos {cs['pos'].mean():.2f}, s_sym {cs['sym'].mean():.2f}; "
                             f"copying: s_pos {cp['pos'].mean():.2f}, s_sym {cp['sym'].mean():.2f}",
                     "rule": "-", "verdict": "n/a"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_scores(res: dict):
    """s_pos and s_sym of each head through training, mean and 95 % band over seeds; one panel per weight decay."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    sc = res["scores"]
    wds = sorted(sc["weight_decay"].unique())
    fig, axes = plt.subplots(1, len(wds), figsize=(5.2 * len(wds), 3.4), sharey=True, squeeze=False)
    for ax, wd in zip(axes[0], wds):
        d = sc[sc["weight_decay"] == wd]
        for h, ls in zip(sorted(d["head"].unique()), ("-", "--", ":", "-.")):
            for col, c in (("pos", COLORS["positional"]), ("sym", COLORS["symbolic"])):
                b = seed_band(d[d["head"] == h], col)
                ax.fill_between(b["step"], b["lo"], b["hi"], color=c, alpha=0.15, lw=0)
                ax.plot(b["step"], b["mean"], color=c, ls=ls, label=f"{'s_pos' if col == 'pos' else 's_sym'}, head {h}")
        ax.set(title=f"weight decay {wd:g}", xlabel="training step", ylim=(-0.02, 1.02))
    axes[0, 0].set_ylabel("score at the query")
    axes[0, 0].legend(fontsize=8)
    return fig


def plot_splitting(res: dict):
    """Left: splitting index through training (mean and band over seeds, per weight decay). Right: each head's
    share of the positive contribution to the answer per query-value bin, final models."""
    import matplotlib.pyplot as plt

    from ..palette import PALETTE
    s = splitting(res["modes"])
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.6))
    ax = axes[0]
    for i, wd in enumerate(sorted(s["weight_decay"].unique())):
        b = seed_band(s[s["weight_decay"] == wd], "split_index")
        ax.fill_between(b["step"], b["lo"], b["hi"], color=PALETTE[i], alpha=0.2, lw=0)
        ax.plot(b["step"], b["mean"], color=PALETTE[i], label=f"weight decay {wd:g}")
    ax.axhline(SPLIT_MIN, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="training step", ylabel="splitting index", ylim=(0.45, 1.02), title="Vocabulary-splitting")
    ax.legend(fontsize=8)
    ax = axes[1]
    m = res["modes"]
    m = m[(m["kind"] == "bin") & (m["step"] == m.groupby(["weight_decay", "seed"])["step"].transform("max"))].copy()
    m["pos_contrib"] = m["contrib_answer"].clip(lower=0)
    m["share"] = m["pos_contrib"] / m.groupby(["weight_decay", "seed", "bin"])["pos_contrib"].transform("sum")
    runs = m[["weight_decay", "seed"]].drop_duplicates().sort_values(["weight_decay", "seed"]).values.tolist()
    width = 0.8 / max(1, len(runs))
    n_num = len(get_task(TASK).numbers)
    for r, (wd, seed) in enumerate(runs):
        g = m[(m["weight_decay"] == wd) & (m["seed"] == seed) & (m["head"] == 0)]
        ax.bar(g["bin"] + (r - len(runs) / 2 + 0.5) * width, g["share"], width=width, color=PALETTE[int(seed) % 8],
               alpha=1.0 if wd == 0 else 0.5, label=f"wd {wd:g}, seed {int(seed)}")
    ax.set(xticks=range(N_BINS), xticklabels=[f"{b * n_num // N_BINS}-{(b + 1) * n_num // N_BINS - 1}"
                                              for b in range(N_BINS)],
           xlabel="query value", ylabel="head 0's share", ylim=(0, 1.02), title="Head 0's share per query value")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_modes(heads: pd.DataFrame):
    """Final heads: contribution to the most-attended token's logit vs s_sym - s_pos, per mode."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for mode, c in (("copying", COLORS["symbolic"]), ("copy-suppression", COLORS["positional"])):
        g = heads[heads["mode"] == mode]
        ax.scatter(g["contrib_top"], g["sym"] - g["pos"], color=c, label=mode, s=30)
    ax.axvline(0, color="grey", lw=0.7)
    ax.axhline(0, color="grey", lw=0.7)
    ax.set(xlabel="contribution to the most-attended token's logit", ylabel="s_sym - s_pos",
           title="Head modes and scores (final models)")
    ax.legend(fontsize=8)
    return fig
