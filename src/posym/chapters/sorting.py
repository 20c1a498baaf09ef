"""The "List sorting" chapter: parameters, the science (head modes, vocabulary-splitting, copy-suppression,
claims) and its figures.

Head modes are measured on the one-layer, attention-only model by ablation: a head's **contribution** to a
token's logit is the logit with every head minus the logit with that head's output set to zero (the model has
no MLP, so the direct path and the other head are unchanged; only the final LayerNorm makes the two heads'
contributions not exactly additive).

* **Vocabulary-splitting.** Measured per query value (one bin per value of the query ``q``, the number the model
  just wrote). For each value, a head's share is its positive contribution to the correct answer divided by the
  sum of the heads' positive contributions; values where that sum is under ``MIN_CONTRIB`` (0.1 logit, e.g. at
  initialisation) are left out, as their shares are noise. The *splitting index* is the mean over values of the largest share
  (1 when one head does all the work for every value, 1/H when the heads share every value). A run **divides the
  numbers** when the index is at least ``SPLIT_MIN`` (0.8) and every head leads (has the largest share for) at
  least one value. The rule does not ask for contiguous ranges; the second number, **runs**, does: walking the
  values in order, a run is a maximal stretch of values led by the same head. The source study's picture, each
  head handling one range of numbers with no overlap, has one run per head (``runs`` = H); heads that divide the
  numbers into interleaved bands have many more.
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

TASK = "sorting_long"   # lists of 18 of 48 numbers, no dropout (posym/tasks/sorting_long.py; data/sorting/README.md)
SPLIT_MIN = 0.8
EXCLUSIVE = 0.8         # a value is a head's own when that head has at least this share
MIN_CONTRIB = 0.1       # logits: a query value counts when the heads' positive contributions sum to at least this
N_MODE_PROMPTS = 4800   # about 100 per query value
MODE_EVERY = 200        # head modes at the early checkpoints and every 200 steps
WEIGHT_DECAYS = (0.0, 0.1)
DATA = "sorting"
SEEDS = (0, 1, 2, 3, 4)  # the committed runs of each weight decay (data/sorting)
_HOW = "python scripts/newtasks_runs.py --task sorting  (see data/sorting/README.md)"


def variant(wd: float) -> str:
    """Run-folder prefix of a weight decay: ``sorting_long-wd0``, ``sorting_long-wd0.1``."""
    return f"{TASK}-wd{wd:g}"


register(ChapterSpec(
    name="sorting",
    params={
        "seeds": Param(int, {"smoke": 1, "teaching": 3, "paper": len(SEEDS)}, "seeds per weight decay",
                       min=1, max=len(SEEDS)),
        "steps": Param(int, {"smoke": 300, "teaching": 3000, "paper": 3000},
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
    answer, to the query's token and to the most-attended token; contribution to the answer per query value.

    Rows: head, kind (``all`` or ``value``), value (the query's value; -1 for ``all``), n (prompts), and the
    measures."""
    T = x.shape[1]
    name = "blocks.0.attn.hook_pattern"
    logits, cache = model.run_with_cache(x, names=[name])
    logits = logits[:, -1]
    A = cache[name][:, :, -1]  # (N, H, T)
    rows_ = torch.arange(len(x))
    q = x[:, -1]
    copy_pos = (x[:, :T - 2] == q[:, None]).float().argmax(-1)
    ans_pos = (x[:, :T - 2] == y[:, None]).float().argmax(-1)
    qv = q - get_task(TASK).vocab.stoi["0"]
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
        rec = {"head": h, "kind": "all", "value": -1, "n": len(x),
               "attn_answer": A[rows_, h, ans_pos].mean().item(),
               "attn_copy": A[rows_, h, copy_pos].mean().item(),
               "contrib_answer": c_ans.mean().item(),
               "contrib_query_token": diff[rows_, q].mean().item(),
               "contrib_top": diff[rows_, top].mean().item()}
        out.append(rec)
        for v in torch.unique(qv).tolist():
            m = qv == v
            out.append({"head": h, "kind": "value", "value": int(v), "n": int(m.sum()),
                        "contrib_answer": c_ans[m].mean().item(),
                        "attn_answer": A[rows_[m], h, ans_pos[m]].mean().item()})
    return pd.DataFrame(out)


def mode_trajectory(run_dir: str | Path, seed: int, n: int = N_MODE_PROMPTS) -> pd.DataFrame:
    """:func:`head_modes` at the early checkpoints, every ``MODE_EVERY`` steps and the last checkpoint of a run
    (prompts: the run's test split)."""
    from ..train import list_checkpoints, load_checkpoint

    a = TaskDataset(TASK, "test", seed=seed, size=n).arrays()
    x, y = torch.from_numpy(a["x"].copy()), torch.from_numpy(a["y"].copy())
    frames, model = [], None
    ckpts = list_checkpoints(run_dir)
    for step, path in ckpts:
        if step % MODE_EVERY and step >= MODE_EVERY and step != ckpts[-1][0]:
            continue
        model, _ = load_checkpoint(path, into=model)
        df = head_modes(model, x, y)
        df.insert(0, "step", step)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def value_shares(modes: pd.DataFrame) -> pd.DataFrame:
    """Each head's share of the heads' positive contribution to the answer, per query value: one row per
    (task, seed, weight decay, step, value, head) of ``modes``; values where the heads' positive contributions sum
    to less than ``MIN_CONTRIB`` are left out."""
    keys = [k for k in ("task", "seed", "weight_decay", "step") if k in modes.columns]
    b = modes[modes["kind"] == "value"].copy()
    b["pos_contrib"] = b["contrib_answer"].clip(lower=0)
    tot = b.groupby(keys + ["value"])["pos_contrib"].transform("sum")
    b["share"] = b["pos_contrib"] / tot.where(tot >= MIN_CONTRIB)
    return b.dropna(subset=["share"])[keys + ["value", "head", "share"]].reset_index(drop=True)


def count_runs(leaders) -> int:
    """Maximal stretches of equal items in ``leaders`` (the leading head of each value, in value order)."""
    leaders = list(leaders)
    return int(len(leaders) > 0) + sum(a != b for a, b in zip(leaders, leaders[1:]))


def splitting(modes: pd.DataFrame) -> pd.DataFrame:
    """Per (task, seed, wd, step) group of ``modes``: the splitting index over query values, whether every head
    leads a value, whether the run divides the numbers (``splits``), the fraction of values one head has to itself
    (share >= ``EXCLUSIVE``), the number of runs of one leading head along the values (``runs``; one range per
    head gives H), whether that is one range per head (``ranges``), and the leading head of every value, low to
    high (``leaders``)."""
    keys = [k for k in ("task", "seed", "weight_decay", "step") if k in modes.columns]
    heads = sorted(modes["head"].unique().astype(int))
    sh = value_shares(modes)
    rows = []
    for key, g in modes[modes["kind"] == "value"].groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        s = sh.merge(pd.DataFrame([dict(zip(keys, key))]), on=keys) if len(sh) else sh
        share = s.pivot_table(index="value", columns="head", values="share").sort_index()
        if share.empty:
            rows.append({**dict(zip(keys, key)), "split_index": np.nan, "every_head_leads": False,
                         "splits": False, "exclusive": np.nan, "runs": 0, "ranges": False, "leaders": ""})
            continue
        leader = share.idxmax(axis=1).astype(int)
        index = float(share.max(axis=1).mean())
        every = set(leader) == set(heads)
        runs = count_runs(leader)
        rows.append({**dict(zip(keys, key)), "split_index": index, "every_head_leads": bool(every),
                     "splits": bool(index >= SPLIT_MIN and every),
                     "exclusive": float((share.max(axis=1) >= EXCLUSIVE).mean()), "runs": runs,
                     "ranges": bool(every and runs == len(heads)),
                     "leaders": "".join(str(v) for v in leader.values)})
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
    pio.atomic_write_table(run.path / "modes.csv", mode_trajectory(run.path, seed, n=min(N_MODE_PROMPTS, 16 * n_prompts)))
    return run.path


def load_runs(folders) -> dict[str, pd.DataFrame]:
    """Stack the tables of run folders with task, seed and weight_decay columns."""
    from ..results import stack_run_tables

    out = stack_run_tables(folders, TABLES, keys=("task", "seed", "weight_decay"))
    for df in out.values():
        df["weight_decay"] = df["weight_decay"].astype(float)
    return out


def committed_runs(root: Path, seeds: int) -> list[Path]:
    """The packaged runs under ``root`` (``sorting_long-wd<wd>-s<seed>`` with a manifest and every table), at most
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


def _nums(values, fmt="{:.2f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def claims_table(res: dict, gamma: float) -> pd.DataFrame:
    """The list-sorting paper's testable claims (and our expectation) next to our results, with the rules.

    Vocabulary-splitting has two parts: the heads divide the numbers (:func:`splitting`'s ``splits``, in a majority
    of seeds) and each head's part is one range (``ranges``). Both: "agree"; only the first: "partly"."""
    heads = final_heads(res, gamma)
    sp = final_splitting(res)
    acc = final_accuracy(res)
    rows = [{"claim": "a one-layer attention-only model learns to sort", "paper": "yes",
             "ours": f"final validation accuracy {acc['accuracy'].min():.3f} (worst run) of {len(acc)} runs",
             "rule": "every run at least 0.95", "verdict": _agree(bool((acc["accuracy"] >= 0.95).all()))}]
    for wd in sorted(sp["weight_decay"].unique()):
        s = sp[sp["weight_decay"] == wd].sort_values("seed")
        n = len(s)
        divides, ranges = s["splits"].sum() * 2 > n, s["ranges"].sum() * 2 > n
        verdict = ("agree" if divides and ranges else
                   "partly: the heads divide the numbers, but in interleaved bands, not one range per head"
                   if divides else "disagree: the heads share the numbers")
        rows.append({"claim": f"vocabulary-splitting with weight decay {wd:g}",
                     "paper": "present with and without weight decay: each head handles its own range of numbers",
                     "ours": f"{int(s['splits'].sum())} of {n} seeds divide the numbers (index "
                             f"{_nums(s['split_index'])}; one head's own: {_nums(s['exclusive'] * 100, '{:.0f}')} % "
                             f"of the values); runs of one leading head along 0-46: "
                             f"{_nums(s['runs'], '{:d}')} (one range per head: {heads['head'].nunique()})",
                     "rule": f"divided: index >= {SPLIT_MIN} and every head leads a value; ranges: one run per "
                             "head; each in a majority of seeds",
                     "verdict": verdict})
    cs = heads[heads["mode"] == "copy-suppression"]
    n_runs = heads[["weight_decay", "seed"]].drop_duplicates().shape[0]
    rows.append({"claim": "copy-suppression heads occur", "paper": "yes, in some runs",
                 "ours": f"{len(cs)} of {len(heads)} final heads ({cs[['weight_decay', 'seed']].drop_duplicates().shape[0]}"
                         f" of {n_runs} runs); every head's contribution to the most-attended token's logit: "
                         f"{heads['contrib_top'].min():+.1f} to {heads['contrib_top'].max():+.1f}",
                 "rule": "at least one run has one",
                 "verdict": "agree" if len(cs) else
                 "disagree: every head copies (first suspect: our prompts have no sorted prefix)"})
    sym = heads[heads["sym"] > heads["pos"]]
    cp = heads[heads["mode"] == "copying"]
    rows.append({"claim": "sorting heads are symbolic (our expectation)", "paper": "not measured",
                 "ours": f"s_sym > s_pos for {len(sym)} of {len(heads)} heads; pure symbolic "
                         f"{int((heads['metric_class'] == 'symbolic').sum())}, pure positional "
                         f"{int((heads['metric_class'] == 'positional').sum())}",
                 "rule": "s_sym > s_pos for every copying head",
                 "verdict": _agree(bool((cp["sym"] > cp["pos"]).all()))})
    if len(cs):
        ours = (f"copy-suppression: s_pos {cs['pos'].mean():.2f}, s_sym {cs['sym'].mean():.2f}; "
                f"copying: s_pos {cp['pos'].mean():.2f}, s_sym {cp['sym'].mean():.2f}")
    else:
        ours = "no copy-suppression head to compare"
    rows.append({"claim": "copy-suppression heads score differently (our question)", "paper": "not measured",
                 "ours": ours, "rule": "-", "verdict": "n/a"})
    return pd.DataFrame(rows)


def summary(res: dict, gamma: float) -> dict[str, str]:
    """Ranges over the final models for the page's text (glued): accuracy, splitting index, values one head has to
    itself, runs of one leading head, agreement of the leading heads between the two weight decays at the same seed,
    attention on the answer, contribution to the answer, scores; the first checkpoint from which every head of every
    run is pure symbolic, and the scores at the first checkpoint."""
    heads = final_heads(res, gamma)
    sp = final_splitting(res)
    acc = final_accuracy(res)
    sc = res["scores"].copy()
    sc["symbolic"] = [classify(p, s, gamma) == "symbolic" for p, s in zip(sc["pos"], sc["sym"])]
    every = sc.groupby("step")["symbolic"].all().sort_index()
    late = every[::-1].cummin()[::-1]  # True from the first step after which every head stays symbolic
    first = sc[sc["step"] == sc["step"].min()]
    sh = value_shares(res["modes"])
    sh = sh[(sh["head"] == 0) & (sh["step"] == sh.groupby(["weight_decay", "seed"])["step"].transform("max"))]
    lead = sh.assign(lead=sh["share"] < 0.5).pivot_table(index=["seed", "value"], columns="weight_decay",
                                                         values="lead").dropna()
    same = ((lead.iloc[:, 0] == lead.iloc[:, -1]).groupby("seed").mean() * 100).tolist() if lead.shape[1] == 2 else []

    def rng(v, fmt="{:.2f}"):
        lo, hi = fmt.format(min(v)), fmt.format(max(v))
        return lo if lo == hi else f"{lo}–{hi}"

    return {"sort_acc": rng(acc["accuracy"], "{:.3f}"),
            "sort_index": rng(sp["split_index"]),
            "sort_divides": f"{int(sp['splits'].sum())} of {len(sp)}",
            "sort_exclusive": rng(sp["exclusive"] * 100, "{:.0f}"),
            "sort_runs": rng(sp["runs"], "{:d}"),
            "sort_attn": rng(heads["attn_answer"]),
            "sort_contrib": rng(heads["contrib_answer"], "{:.1f}"),
            "sort_pos": rng(heads["pos"]), "sort_sym": rng(heads["sym"]),
            "sort_copysup": f"{int((heads['mode'] == 'copy-suppression').sum())} of {len(heads)}",
            "sort_sym_from": (f"from step {int(late[late].index.min()):,} on" if late.any()
                              else "at no step to the end (some head is not, at the last checkpoint)"),
            "sort_pos0": rng(first["pos"]), "sort_sym0": rng(first["sym"]), "sort_step0": f"{int(first['step'].min())}",
            "sort_same_leader": rng(same, "{:.0f}") if same else "n/a"}


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
    """Left: splitting index through training (mean and band over seeds, per weight decay). Right: head 0's share
    of the heads' positive contribution to the answer per query value, final models, one row per run."""
    import matplotlib.pyplot as plt

    from ..palette import PALETTE
    s = splitting(res["modes"])
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.8), gridspec_kw={"width_ratios": [1, 1.5]})
    ax = axes[0]
    for i, wd in enumerate(sorted(s["weight_decay"].unique())):
        b = seed_band(s[s["weight_decay"] == wd], "split_index")
        ax.fill_between(b["step"], b["lo"], b["hi"], color=PALETTE[i], alpha=0.2, lw=0)
        ax.plot(b["step"], b["mean"], color=PALETTE[i], label=f"weight decay {wd:g}")
    ax.axhline(SPLIT_MIN, color="0.2", ls=":", lw=1.1, zorder=3)
    ax.set(xlabel="training step", ylabel="splitting index (per query value)", ylim=(0.45, 1.02),
           title="Vocabulary-splitting through training")
    ax.legend(fontsize=8)
    ax = axes[1]
    sh = value_shares(res["modes"])
    sh = sh[(sh["head"] == 0) & (sh["step"] == sh.groupby(["weight_decay", "seed"])["step"].transform("max"))]
    wide = sh.pivot_table(index=["weight_decay", "seed"], columns="value", values="share").sort_index()
    im = ax.imshow(wide.values, aspect="auto", cmap="coolwarm", vmin=0, vmax=1, interpolation="nearest",
                   extent=(wide.columns.min() - 0.5, wide.columns.max() + 0.5, len(wide) - 0.5, -0.5))
    ax.set_yticks(range(len(wide)), [f"wd {wd:g}, seed {int(sd)}" for wd, sd in wide.index], fontsize=8)
    ax.set(xlabel="query value (the number just written)", title="Head 0's share per query value (final models)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="head 0's share (head 1: the rest)", fraction=0.04)
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
