"""The "LEGO chains" chapter: parameters, the science (head types, emergence, length generalisation, claims)
and its figures.

The chapter's tasks are the two LEGO plug-ins with fused sign tokens (:mod:`posym.tasks.lego_fused`):
``lego_fused`` (shuffled clauses) and ``lego_fused_ordered`` (each chain in chain order). A prompt holds two chains
of ``chain_len`` variables; a clause is two tokens, its operand (a bare name, or the constant ``1``) and then the
name it defines fused with its sign (``a b-`` is ``b = -a``); the prompt ends with ``?`` and a bare name.

Head types (the LEGO paper's two patterns, measured on the attention of every head over whole prompts):

* **association**: the mass a bare name token (an operand that is a name, or the query) puts on *earlier tokens
  of the same name*: the signed token that defines it (``a+`` for ``a``) or the same bare name; averaged over the
  bare name tokens that have such an earlier token. The LEGO paper's association heads attend to identical
  tokens; here a name and its definition differ by the fused sign, so the match is by name.
* **manipulation** (local): the mass a clause's signed token puts on the rest of its clause, its operand (the
  operand token cannot see its clause's later token, and attention to itself moves nothing); averaged over the
  clauses in slots 1 and later (the first clause's signed token sees nothing but its clause).

A head is an association head when its association mass is at least ``TYPE_MIN`` (0.5), a manipulation head
when its local mass is; otherwise "other". Also recorded: ``assoc_q``, the query's own association mass, and
``parent``, the mass a signed token puts on the signed token of its parent clause when that comes earlier (the
step along the chain). The positional/symbolic scores are the book's metric at the final query (the queried
variable), from ``posym analyze``. Both are computed at every analysed checkpoint.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import io as pio
from ..metrics import classify
from ..spec import ChapterSpec, Param, Required, multiple_of, register
from ..stats import rank_correlation, seed_band
from ..tasks import get_task, to_tensors

TASKS = ("lego_fused", "lego_fused_ordered")
ORDER = {"lego_fused": "shuffled", "lego_fused_ordered": "ordered"}  # the clause order of each task's prompts
TYPE_MIN = 0.5
N_PROMPTS = 300          # metric prompts (a multiple of the 2 training depths)
N_TYPE_PROMPTS = 120     # prompts of the head-type masses
N_LENGTH = 60            # prompts per (prompt order, chain length, depth) of the length test
LENGTH_CHAINS = (3, 4, 6)  # variables per chain in the length test (training: 3); 14, 18 and 26 tokens
DATA = "lego"
_HOW = "python scripts/newtasks_runs.py --task lego_fused,lego_fused_ordered  (see data/lego/README.md)"
SEEDS = (0, 1, 2, 3, 4)  # the committed runs of each clause order (data/lego)

register(ChapterSpec(
    name="lego",
    params={
        "seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": len(SEEDS)},
                       "seeds per variant (shuffled, ordered)", min=1, max=len(SEEDS)),
        "steps": Param(int, {"smoke": 150, "teaching": 3000, "paper": 3000},
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
def name_of(x: torch.Tensor, task: str) -> torch.Tensor:
    """The variable (0..25) each token id of ``x`` names, bare (``a``) or signed (``a+``, ``a-``); -1 for the
    constant, ``?``, the answers and padding."""
    t = get_task(task)
    n = t.vocab.stoi["z"] - t.vocab.stoi["a"] + 1
    bare0, signed0 = t.vocab.stoi["a"], t.vocab.stoi["a+"]
    out = torch.full_like(x, -1)
    bare = (x >= bare0) & (x < bare0 + n)
    signed = (x >= signed0) & (x < signed0 + 2 * n)
    out[bare] = x[bare] - bare0
    out[signed] = torch.div(x[signed] - signed0, 2, rounding_mode="floor")
    return out


def type_masks(x: torch.Tensor, task: str) -> dict[str, torch.Tensor]:
    """Where each mass is measured on prompts ``x`` (N, T) of a fused LEGO task (any chain length):

    * ``assoc_src`` (N, T): bare name tokens with an earlier token of the same name; ``assoc_tgt`` (N, T, T):
      for a query position, the earlier positions holding its name (bare or signed);
    * ``local_src`` (T,): signed tokens of the clauses in slots 1 and later; ``local_tgt`` (T, T): their operand;
    * ``parent_src`` (N, T): signed tokens whose parent's signed token comes earlier; ``parent_tgt`` (N, T, T)."""
    t = get_task(task)
    T = x.shape[1]
    nm = name_of(x, task)
    bare = (x >= t.vocab.stoi["a"]) & (x <= t.vocab.stoi["z"])
    signed = (nm >= 0) & ~bare
    earlier = torch.tril(torch.ones(T, T, dtype=torch.bool), -1)[None]
    same = (nm[:, :, None] == nm[:, None, :]) & (nm[:, :, None] >= 0) & earlier
    assoc_tgt = same & bare[:, :, None]
    pos = torch.arange(T)
    local_src = (pos % 2 == 1) & (pos >= 3) & (pos < T - 2)
    local_tgt = (pos[None, :] == pos[:, None] - 1) & local_src[:, None]
    # a signed token's operand (one before it) names its parent; the parent's signed token holds that name
    op = torch.cat([torch.full_like(nm[:, :1], -1), nm[:, :-1]], dim=1)  # name of the token before each position
    parent_tgt = signed[:, :, None] & signed[:, None, :] & (op[:, :, None] == nm[:, None, :]) & (op[:, :, None] >= 0) \
        & earlier
    return {"assoc_src": assoc_tgt.any(-1), "assoc_tgt": assoc_tgt, "local_src": local_src, "local_tgt": local_tgt,
            "parent_src": parent_tgt.any(-1), "parent_tgt": parent_tgt}


def masses_from_patterns(patterns, x: torch.Tensor, task: str) -> pd.DataFrame:
    """The head-type masses from attention patterns: ``patterns`` a list over layers of (N, H, T, T) tensors
    (rows: queries, columns: keys) on prompts ``x``. Rows: layer, head, assoc, local, assoc_q, parent (NaN where
    no prompt has a position of that kind)."""
    m = type_masks(x, task)
    T = x.shape[1]

    def mean(v, where):
        v = v[where]
        return v.mean().item() if v.numel() else float("nan")

    rows = []
    for l, A in enumerate(patterns):
        A = A.float()
        assoc = (A * m["assoc_tgt"][:, None].float()).sum(-1)  # (N, H, T)
        local = (A * m["local_tgt"][None, None].float()).sum(-1)
        parent = (A * m["parent_tgt"][:, None].float()).sum(-1)
        for h in range(A.shape[1]):
            rows.append({"layer": l, "head": h, "assoc": mean(assoc[:, h], m["assoc_src"]),
                         "local": mean(local[:, h], m["local_src"][None].expand(len(x), T)),
                         "assoc_q": mean(assoc[:, h, T - 1], m["assoc_src"][:, T - 1]),
                         "parent": mean(parent[:, h], m["parent_src"])})
    return pd.DataFrame(rows)


@torch.no_grad()
def head_type_masses(model, task: str, samples) -> pd.DataFrame:
    """Association and local (manipulation) mass of every head over ``samples`` (prompts of a fused LEGO task);
    also the query's own association mass and the mass on the parent clause. Rows: layer, head, assoc, local,
    assoc_q, parent."""
    t = get_task(task)
    x, _, _ = to_tensors(samples, t.vocab)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    _, cache = model.run_with_cache(x, names=names)
    return masses_from_patterns([cache[n] for n in names], x, task)


def head_type(assoc: float, local: float) -> str:
    if assoc >= TYPE_MIN:
        return "association"
    if local >= TYPE_MIN:
        return "manipulation"
    return "other"


def other_order(task: str) -> str:
    """The fused LEGO task with the other clause order (same vocabulary and layout)."""
    return TASKS[1 - TASKS.index(task)]


@torch.no_grad()
def length_table(model, task: str, n: int = N_LENGTH, chain_lens=LENGTH_CHAINS, seed: int = 0) -> pd.DataFrame:
    """Accuracy per (prompt order, chain length, query depth) on prompts built by ``LegoFusedTask.chain_prompts``:
    ``n`` prompts per depth 1..chain length, in the model's own clause order and in the other one.

    Rows: prompts (``shuffled`` or ``ordered``), own (the model's training order), chain_len, depth, accuracy, n,
    trained (a depth and layout asked in training: own order, the training chain length, depth 1-2)."""
    t = get_task(task)
    rows = []
    for pt in (task, other_order(task)):
        pt_task = get_task(pt)
        for cl in chain_lens:
            samples = pt_task.chain_prompts(n, range(1, cl + 1), chain_len=cl, seed=seed + 1000)
            x, y, hops = to_tensors(samples, t.vocab)
            pred = model(x, last_only=True)[:, -1].argmax(-1)
            ok = (pred == y).float()
            for d in range(1, cl + 1):
                m = hops == d
                rows.append({"prompts": ORDER[pt], "own": pt == task, "chain_len": cl, "depth": d,
                             "accuracy": ok[m].mean().item(), "n": int(m.sum()),
                             "trained": pt == task and cl == t.chain_len and d <= t.max_hops})
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
    cols = [c for c in ("assoc", "local", "assoc_q", "parent") if c in ty.columns]
    df = last[["task", "seed", "layer", "head", "pos", "sym"]].merge(
        ty[["task", "seed", "layer", "head", *cols]], on=["task", "seed", "layer", "head"])
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


def _span(v, digits: int = 2) -> str:
    v = pd.Series(v).dropna()
    if v.empty:
        return "n/a"
    lo, hi = f"{v.min():.{digits}f}", f"{v.max():.{digits}f}"
    return lo if lo == hi else f"{lo}–{hi}"


def accuracy_note(res: dict) -> str:
    """The final per-depth validation accuracy of the runs, per clause order (range over seeds), as a phrase for
    the page's text."""
    acc = final_accuracy(res)
    cols = [c for c in acc.columns if c.startswith("depth_")] or ["accuracy"]
    out = []
    for task, a in acc.groupby("task", sort=False):
        parts = [f"{'depth ' + c.split('_')[1] if c != 'accuracy' else 'overall'} {_span(a[c])}" for c in cols]
        out.append(f"{get_task(task).label}, {len(a)} run(s): " + ", ".join(parts))
    return "; ".join(out)


def emergence(res: dict, gamma: float, acc_level: float = 0.9) -> pd.DataFrame:
    """Per run: first step with an association head, with a manipulation head, with a pure symbolic head, with a
    pure positional head (metric), and the first step where validation accuracy reaches ``acc_level``
    (NaN when never)."""
    rows = []
    for (task, seed), ty in res["types"].groupby(["task", "seed"], sort=False):
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
    """Mean accuracy (95 % interval over seeds) per task, prompt order, chain length and depth."""
    return seed_band(res["length"], "accuracy", x="depth", by=("task", "prompts", "chain_len"))


def length_acc(L: pd.DataFrame, task: str, own: bool = True, chain_len=None, depths=None) -> float:
    """Mean accuracy of ``task``'s models in the length table over the rows selected (prompts in the model's own
    order or the other one; chain lengths and depths: a number, a collection, or None for all); NaN when none."""
    d = L[(L["task"] == task) & (L["own"].astype(bool) == own)]
    for col, v in (("chain_len", chain_len), ("depth", depths)):
        if v is not None:
            d = d[d[col].isin([v] if np.isscalar(v) else list(v))]
    return float(d["accuracy"].mean()) if len(d) else float("nan")


def length_note(res: dict) -> dict[str, str]:
    """The length test's headline numbers as phrases (mean over seeds), keyed for the page's glue: per task,
    trained depths at the training chain length, the same depths in the longest chains, and the untrained
    depths; and the ordered models on shuffled prompts."""
    L = res["length"]
    cls = sorted(L["chain_len"].unique())
    train_cl, longest = int(min(cls)), int(max(cls))
    out = {}
    for task in TASKS:
        if task not in set(L["task"]):
            continue
        deep = L[(L["task"] == task) & L["own"].astype(bool) & (L["depth"] > get_task(task).max_hops)]
        out[f"lego_len_{ORDER[task]}"] = (
            f"depths 1–2 {length_acc(L, task, True, train_cl, (1, 2)):.2f} with chains of {train_cl}, "
            f"{length_acc(L, task, True, longest, (1, 2)):.2f} with chains of {longest}; "
            f"depths 3–{longest} {deep['accuracy'].mean():.2f}")
        out[f"lego_cross_{ORDER[task]}"] = (
            f"depth 1 {length_acc(L, task, False, train_cl, 1):.2f}, "
            f"depth 2 {length_acc(L, task, False, train_cl, 2):.2f}")
    return out


def failures_vs_heads(res: dict, gamma: float) -> pd.DataFrame:
    """Per run (``order``: the clause order it was trained on, ``seed``): the final model's pure positional and pure
    symbolic heads (tolerance ``gamma``) beside its accuracy on the trained depths in its own clause
    order at the training chain length (``trained``) and in the longest chains (``longest``), the loss between
    the two (``drop``), and the trained depths at the training length in the other clause order
    (``other_order``)."""
    L = res["length"]
    cls = sorted(L["chain_len"].unique())
    train_cl, longest = int(min(cls)), int(max(cls))
    heads = final_heads(res, gamma)
    rows = []
    for (task, seed), h in heads.groupby(["task", "seed"], sort=False):
        Ls = L[L["seed"] == seed]
        depths = range(1, get_task(task).max_hops + 1)
        row = {"order": ORDER[task], "seed": seed, **{k: int((h["metric_class"] == k).sum())
                                               for k in ("positional", "symbolic")},
               "trained": length_acc(Ls, task, True, train_cl, depths),
               "longest": length_acc(Ls, task, True, longest, depths),
               "other_order": length_acc(Ls, task, False, train_cl, depths)}
        rows.append({**row, "drop": row["trained"] - row["longest"]})
    cols = ["order", "seed", "positional", "symbolic", "trained", "longest", "drop", "other_order"]
    return pd.DataFrame(rows, columns=cols)


def failures_note(fail: pd.DataFrame) -> dict[str, str]:
    """:func:`failures_vs_heads` in words for the page's glue (``lego_fail``): per clause order the mean pure heads,
    the trained depths' mean loss in the longest chains and their mean accuracy in the other order; then, over
    all runs, the rank correlation (:func:`posym.stats.rank_correlation`, with its permutation p-value) of the pure head
    counts with the two failures."""
    parts = []
    for order in ORDER.values():
        f = fail[fail["order"] == order]
        if len(f):
            parts.append(f"{order} clauses ({len(f)} run{'s' if len(f) > 1 else ''}): "
                         f"{f['positional'].mean():.1f} pure positional and {f['symbolic'].mean():.1f} pure symbolic "
                         f"heads; the trained depths lose {f['drop'].mean():.2f} in the longest chains and reach "
                         f"{f['other_order'].mean():.2f} in the other order")

    def rho(a: str, b: str) -> str:
        r, p = rank_correlation(fail[a], fail[b])
        return "n/a" if math.isnan(r) else f"{r:+.2f} (p = {p:.2f})"
    corr = "; ".join(f"pure {k} heads with the loss {rho(k, 'drop')} and with the other-order accuracy "
                     f"{rho(k, 'other_order')}" for k in ("positional", "symbolic"))
    return {"lego_fail": "; ".join(parts) + f". Rank correlations over the {len(fail)} runs: {corr}."}


def types_note(heads: pd.DataFrame) -> dict[str, str]:
    """Per task, the final heads of each type and their metric classes, as phrases keyed for the page's glue;
    ``lego_manip``: what the manipulation row of the claims table rests on, as a sentence."""
    runs = heads[["task", "seed"]].drop_duplicates()
    m = heads[heads["type"] == "manipulation"]
    with_m = m[["task", "seed"]].drop_duplicates()
    if m.empty:
        manip = ("No head passes the local threshold, so the manipulation row of the claims table below has nothing "
                 "to judge (\"n/a\"): these models do not spend a head on reading the rest of a two-token clause.")
    else:
        classes = ", ".join(f"{n} {c}" for c, n in m["metric_class"].value_counts().sort_index().items())
        manip = (f"{len(m)} head{'s' if len(m) > 1 else ''} of {len(heads)} pass{'' if len(m) > 1 else 'es'} the "
                 f"local threshold (local mass {_span(m['local'])}; {classes}), in {len(with_m)} of {len(runs)} runs: "
                 f"the manipulation row of the claims table below rests on "
                 f"{'this one head' if len(m) == 1 else f'these {len(m)} heads'}, and "
                 f"{len(runs) - len(with_m)} runs do not spend a head on reading the rest of a two-token clause.")
    out = {"lego_manip": manip}
    for task in TASKS:
        h = heads[heads["task"] == task]
        parts = []
        for ty in ("association", "manipulation"):
            d = h[h["type"] == ty]
            cls = ", ".join(f"{int((d['metric_class'] == c).sum())} {c}" for c in ("symbolic", "positional", "mixed"))
            parts.append(f"{len(d)} {ty} head(s)" + (f" ({cls}; s_sym > s_pos for {int((d['sym'] > d['pos']).sum())})"
                                                     if len(d) else ""))
        out[f"lego_types_{ORDER[task]}"] = (f"{', '.join(parts)}, of {len(h)} heads in {h['seed'].nunique()} run(s); "
                                            f"the highest association mass {h['assoc'].max():.2f}, the highest "
                                            f"local mass {h['local'].max():.2f}")
    return out


def emergence_note(em: pd.DataFrame) -> dict[str, str]:
    """Per task, the median first step of each head type and of accuracy 0.9 (with the runs that reach it), as
    phrases keyed for the page's glue."""
    out = {}
    for task in TASKS:
        e = em[em["task"] == task]
        parts = []
        for col, what in (("association", "first association head"), ("manipulation", "first manipulation head"),
                          ("accuracy", "validation accuracy 0.9")):
            v = e[col].dropna()
            parts.append(f"{what} at step {int(v.median())} (median of {len(v)} of {len(e)} runs)" if len(v)
                         else f"{what} never")
        out[f"lego_em_{ORDER[task]}"] = "; ".join(parts)
    return out


def _agree(ok) -> str:
    return "n/a" if ok is None else ("agree" if ok else "disagree")


def claims_table(res: dict, gamma: float) -> pd.DataFrame:
    """The LEGO paper's testable claims next to ours, each with its agreement rule (see the chapter)."""
    heads = final_heads(res, gamma)
    em = emergence(res, gamma)
    L = res["length"]
    cl0 = get_task(TASKS[0]).chain_len
    rows = []
    sh, od = TASKS
    hs = heads[heads["task"] == sh]
    a = hs[hs["type"] == "association"]
    ao = heads[(heads["task"] == od) & (heads["type"] == "association")]
    rows.append({"claim": "association heads exist (attend to tokens of the same name)",
                 "paper": "yes (trained BERT)",
                 "ours": f"shuffled: {len(a)} of {len(hs)} heads, in {a['seed'].nunique()} of "
                         f"{hs['seed'].nunique()} runs; ordered: {len(ao)} heads, in {ao['seed'].nunique()} runs",
                 "rule": "an association head in every shuffled run",
                 "verdict": _agree(None if hs.empty else a["seed"].nunique() == hs["seed"].nunique())})
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
    gen = {}
    for task in TASKS:
        tr = length_acc(L, task, True, cl0, (1, 2))
        deep = L[(L["task"] == task) & L["own"].astype(bool) & (L["depth"] > 2)]["accuracy"].mean()
        longer = length_acc(L, task, True, [c for c in L["chain_len"].unique() if c != cl0], (1, 2))
        gen[task] = (tr, deep)
        rows.append({"claim": f"{ORDER[task]} clauses: trained depths solved, deeper ones not",
                     "paper": "models trained on 6 of 12 variables are weak on the other 6 unless pretrained",
                     "ours": f"depths 1-2: {tr:.2f} (chains of {cl0}), {longer:.2f} (longer chains); "
                             f"depths 3+: {deep:.2f}",
                     "rule": "depths 3+ below 0.9 while depths 1-2 (chains of 3) reach 0.9; n/a when depths 1-2 "
                             "do not",
                     "verdict": _agree(None if np.isnan(tr) or tr < 0.9 else bool(deep < 0.9))})
    own2 = length_acc(L, od, True, cl0, 2)
    cross1, cross2 = length_acc(L, od, False, cl0, 1), length_acc(L, od, False, cl0, 2)
    rows.append({"claim": "ordered clauses: a shortcut that fails when the order changes",
                 "paper": "ordered chains invite shortcut solutions that hurt robustness",
                 "ours": f"ordered models on shuffled prompts: depth 1 {cross1:.2f}, depth 2 {cross2:.2f} "
                         f"(own order: depth 2 {own2:.2f})",
                 "rule": "depth 2 below 0.9 on shuffled prompts while it reaches 0.9 on ordered ones",
                 "verdict": _agree(None if np.isnan(own2) or own2 < 0.9 else bool(cross2 < 0.9))})
    (str_, sex), (otr, oex) = gen.get(sh, (np.nan, np.nan)), gen.get(od, (np.nan, np.nan))
    rows.append({"claim": "ordered clauses generalise worse in depth than shuffled ones",
                 "paper": "shortcut solutions with ordered clauses hurt generalisation",
                 "ours": f"depths 3+: ordered {oex:.2f}, shuffled {sex:.2f}",
                 "rule": "ordered below shuffled at depths 3+ (means over seeds), judged only when both solve "
                         "depths 1-2 (>= 0.9)",
                 "verdict": _agree(None if np.isnan(str_ + otr) or min(str_, otr) < 0.9 else bool(oex < sex))})
    def steps(v):
        return ", ".join("never" if np.isnan(x) else str(int(x)) for x in v)

    for task in TASKS:
        e = em[em["task"] == task]
        both = e.dropna(subset=["association", "manipulation"])
        rows.append({"claim": f"which emerges first ({ORDER[task]})", "paper": "not reported",
                     "ours": f"first association head at step {steps(e['association'])}, first manipulation head "
                             f"at {steps(e['manipulation'])} (seeds in order); association first in "
                             f"{int((both['association'] < both['manipulation']).sum())} of {len(both)} runs with both",
                     "rule": "-", "verdict": "n/a"})
    ps = em.dropna(subset=["accuracy"])
    pure = ps[["pure_symbolic", "pure_positional"]].min(axis=1)
    rows.append({"claim": "pure heads appear when accuracy rises (Paper 2)", "paper": "Paper 2: yes (Number, Letter)",
                 "ours": "; ".join(f"{ORDER[r.task]} seed {int(r.seed)}: first pure positional head at "
                                   f"{steps([r.pure_positional])}, pure symbolic at {steps([r.pure_symbolic])}, "
                                   f"acc 0.9 at {int(r.accuracy)}" for r in ps.itertuples()) or "no run reaches 0.9",
                 "rule": "first pure head within 500 steps of the 0.9-accuracy step in every run that reaches 0.9",
                 "verdict": _agree(None if ps.empty else bool((abs(pure - ps["accuracy"]) <= 500).all()))})
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
                    ax.fill_between(b["step"], b["lo"], b["hi"], color=c, alpha=0.06, lw=0)
                    ax.plot(b["step"], b["mean"], color=c, ls=ls, lw=1.2,
                            label=f"{'s_pos' if col == 'pos' else 's_sym'}, head {h}")
            ax.set(title=f"{ORDER[task]} clauses: layer {l}", ylim=(-0.02, 1.02))
            if i == len(tasks) - 1:
                ax.set_xlabel("training step")
            if l == 0:
                ax.set_ylabel("score at the query")
    axes[0, 0].legend(fontsize=6, loc="lower left", ncol=2)
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
        ax.axvline(TYPE_MIN, color="0.2", lw=1.1, ls=":", zorder=3)
        ax.axhline(TYPE_MIN, color="0.2", lw=1.1, ls=":", zorder=3)
        ax.set(title=get_task(task).label, xlabel="association mass (earlier tokens of the same name)",
               xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, title="metric class", title_fontsize=8)
    axes[0].set_ylabel("local mass (signed token on its operand)")
    return fig


def plot_emergence(res: dict, tasks=TASKS):
    """Validation accuracy per trained depth and the number of association / manipulation heads through
    training (mean over seeds); one panel per task."""
    import matplotlib.pyplot as plt

    from ..palette import COLORS
    tasks = [t for t in tasks if t in set(res["types"]["task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ty = res["types"][res["types"]["task"] == task].copy()
        ty["association"] = (ty["assoc"] >= TYPE_MIN).astype(float)
        ty["manipulation"] = (ty["local"] >= TYPE_MIN).astype(float)
        counts = ty.groupby(["seed", "step"], as_index=False)[["association", "manipulation"]].sum()
        ev = res["eval"][res["eval"]["task"] == task]
        for hop, ls in (("1", "-"), ("2", "--")):
            e = ev[ev["hop"].astype(str) == hop]
            if e.empty:
                continue
            b = seed_band(e, "accuracy")
            ax.fill_between(b["step"], b["lo"], b["hi"], color="grey", alpha=0.2, lw=0)
            ax.plot(b["step"], b["mean"], color="black", ls=ls, label=f"accuracy, depth {hop}")
        ax.set(xlabel="training step", ylabel="validation accuracy", ylim=(0.4, 1.02), title=get_task(task).label)
        ax2 = ax.twinx()
        for col, c in (("association", COLORS["symbolic"]), ("manipulation", COLORS["positional"])):
            bb = seed_band(counts, col)
            ax2.plot(bb["step"], bb["mean"], color=c, ls=":", lw=1.6, label=f"{col} heads")
        ax2.set_ylabel("heads (mean over seeds)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    return fig


def plot_length(res: dict):
    """Accuracy vs query depth, per chain length (panels); colours: the model's task (clause order of its
    training); solid: prompts in its own order, dashed: in the other order. Depths right of the dotted line were
    never asked in training."""
    import matplotlib.pyplot as plt

    s = length_summary(res)
    cls = sorted(s["chain_len"].unique())
    fig, axes = plt.subplots(1, len(cls), figsize=(3.8 * len(cls), 3.4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], cls):
        for task in TASKS:
            c = get_task(task).colour
            for prompts in ("shuffled", "ordered"):
                d = s[(s["task"] == task) & (s["chain_len"] == n) & (s["prompts"] == prompts)]
                if d.empty:
                    continue
                own = prompts == ORDER[task]
                if own:
                    ax.fill_between(d["depth"], d["lo"], d["hi"], color=c, alpha=0.2, lw=0)
                ax.plot(d["depth"], d["mean"], color=c, marker="o" if own else "x", ms=3, ls="-" if own else "--",
                        label=f"{ORDER[task]} model, {prompts} prompts")
        ax.axvline(get_task(TASKS[0]).max_hops + 0.5, color="grey", ls=":", lw=0.8)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(title=f"chains of {n} ({4 * n + 2} tokens)", xlabel="query depth", ylim=(0.0, 1.02),
               xticks=range(1, n + 1))
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return fig
