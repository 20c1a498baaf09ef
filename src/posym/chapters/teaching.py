"""The teaching-scale search as a short appendix of the book.

``scripts/teaching_search.py`` trained every configuration of the search and wrote one row per run to
``data/teaching/search.csv`` (schema in ``data/teaching/README.md``). This module only *reads* that table and
summarises it for ``book/teaching.md``; it trains nothing, so the appendix is the same at every scale.

The head classes are recomputed here from the per-layer scores stored in the table (``pos``/``sym``, three
decimals), so the chapter can show them at any purity tolerance ``gamma``; at ``gamma = 0.1`` they agree with
the table's own ``classes`` column (checked in ``tests/test_teaching_summary.py``).

Vocabulary used below:

* a run *has positional heads* when at least one layer's head is pure positional (class ``P``);
* a run *passes the head criterion* (:func:`heads_ok`) when, for the Number task, its pure heads read
  ``P…PS…S`` with at least two ``P`` and one ``S`` (mixed layers ignored), and for the Letter task when no head
  is positional and at most one layer is not pure symbolic — the criteria of the search script;
* the *hop capacity* of a run is the largest ``h`` such that every hop count ``1..h`` reaches the accuracy
  threshold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..metrics import classify
from ..spec import ChapterSpec, Param, Required, register

HOPS = (1, 2, 3, 4)
HOP_COLS = tuple(f"val_acc_h{h}" for h in HOPS)
CONFIG_COLS = ["n_layer", "d_model", "d_mlp", "attn_only", "dropout", "rope_base", "weight_decay", "steps",
               "batch_size", "lr", "warmup_steps"]
# Columns added to the table during the search; the rows made before them used the defaults of the time,
# which are still ModelConfig's and TrainConfig's defaults (MLPs on, RoPE base 10000, weight decay 1e-4).
LATER_COLS = {"attn_only": False, "rope_base": 10_000.0, "weight_decay": 1e-4}
_LETTER = {"positional": "P", "symbolic": "S", "mixed": "m"}


def search_path(root: str | Path | None = None) -> Path:
    """``data/teaching/search.csv`` under ``root`` (default: :func:`posym.results.data_dir`)."""
    if root is None:
        from ..results import data_dir

        root = data_dir()
    return Path(root) / "teaching" / "search.csv"


def load_search(path: str | Path | None = None) -> pd.DataFrame:
    """The committed search table, with ``preset`` as a string ('' or 'teaching') and boolean criteria."""
    p = Path(path) if path is not None else search_path()
    df = pd.read_csv(p)
    df["preset"] = df["preset"].fillna("").astype(str)
    df = fill_later_cols(df)
    for col in ("pass_acc", "pass_heads", "pass_heads_g20", "pass"):
        if df[col].dtype != bool:
            df[col] = df[col].astype(str).str.lower().map({"true": True, "false": False})
    return df


def fill_later_cols(df: pd.DataFrame) -> pd.DataFrame:
    """Give the rows made before a column of :data:`LATER_COLS` existed its default (``attn_only`` as bool)."""
    for col, default in LATER_COLS.items():
        df[col] = df[col].fillna(default) if col in df.columns else default
    df["attn_only"] = df["attn_only"].map(lambda v: v if isinstance(v, bool) else str(v).lower() == "true").astype(bool)
    return df


# -----------------------------------------------------------------------------
# Criteria

def layer_classes(pos: str, sym: str, gamma: float = 0.1) -> list[str]:
    """Per-layer classes ``P``/``S``/``m`` from the space-separated scores of one run."""
    ps = [float(v) for v in str(pos).split()]
    ss = [float(v) for v in str(sym).split()]
    if len(ps) != len(ss):
        raise ValueError(f"pos and sym give {len(ps)} and {len(ss)} layers")
    return [_LETTER[classify(p, s, gamma)] for p, s in zip(ps, ss)]


def heads_ok(task: str, classes: list[str]) -> bool:
    """The search's head criterion (see the module docstring)."""
    if task == "number":
        pure = "".join(c for c in classes if c != "m")
        return re.fullmatch(r"P{2,}S+", pure) is not None
    if task == "letter":
        return classes.count("P") == 0 and classes.count("S") >= len(classes) - 1
    raise ValueError(f"unknown task {task!r}")


def hop_capacity(accuracies, threshold: float = 0.9) -> int:
    """Largest ``h`` such that the accuracies of hop counts ``1..h`` all reach ``threshold`` (0 if hop 1 fails)."""
    h = 0
    for a in accuracies:
        if a < threshold:
            break
        h += 1
    return h


def with_criteria(table: pd.DataFrame, gamma: float = 0.1, threshold: float = 0.9) -> pd.DataFrame:
    """Add the criteria at tolerance ``gamma`` and accuracy ``threshold``.

    New columns: ``heads`` (classes, layer 0 first), ``n_P``/``n_S``, ``has_positional``, ``accurate`` (every hop
    ≥ threshold), ``heads_pass``, ``passes`` (both) and ``hop_capacity``.
    """
    t = fill_later_cols(table.copy())
    cls = [layer_classes(p, s, gamma) for p, s in zip(t["pos"], t["sym"])]
    t["heads"] = [" ".join(c) for c in cls]
    t["n_P"] = [c.count("P") for c in cls]
    t["n_S"] = [c.count("S") for c in cls]
    t["has_positional"] = t["n_P"] > 0
    t["accurate"] = t[list(HOP_COLS)].min(axis=1) >= threshold
    t["heads_pass"] = [heads_ok(task, c) for task, c in zip(t["task"], cls)]
    t["passes"] = t["accurate"] & t["heads_pass"]
    t["hop_capacity"] = [hop_capacity(r, threshold) for r in t[list(HOP_COLS)].to_numpy()]
    return t


# -----------------------------------------------------------------------------
# Summaries shown in the appendix

def with_mlp(table: pd.DataFrame) -> pd.Series:
    """True for the runs of the paper's architecture family: MLPs on, RoPE base 10000, weight decay 1e-4 (all
    of the search's grids except the late probes and the attention-only stage)."""
    return ((~table["attn_only"].astype(bool)) & (table["rope_base"] == LATER_COLS["rope_base"])
            & (table["weight_decay"] == LATER_COLS["weight_decay"]))


def where_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Runs per stage and place of training (``cuda-device``: the lent GPU; ``cpu-here``: the 2-core machine)."""
    out = table.groupby(["stage", "where"]).agg(runs=("seed", "size"),
                                                 tasks=("task", lambda s: ", ".join(sorted(set(s)))))
    return out.reset_index()


def depth_table(table: pd.DataFrame, steps: int = 3000, batch_size: int = 128, lr: float = 0.002,
                dropout: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Per-hop accuracy against depth (and width) at one recipe, seed ``seed``: one row per task × layers × d.

    Needs :func:`with_criteria` columns (``hop_capacity``, ``heads``)."""
    m = ((table["steps"] == steps) & (table["batch_size"] == batch_size) & (table["lr"] == lr)
         & (table["dropout"] == dropout) & (table["seed"] == seed) & with_mlp(table))
    t = table[m].drop_duplicates(["task", "n_layer", "d_model"])
    cols = ["task", "n_layer", "d_model", *HOP_COLS, "hop_capacity", "heads"]
    return t[cols].sort_values(["task", "d_model", "n_layer"]).reset_index(drop=True)


def accuracy_grid(table: pd.DataFrame, task: str, n_layer: int = 6, batch_size: int = 128,
                  dropout: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Worst per-hop accuracy of seed ``seed`` at depth ``n_layer``: rows (d_model, steps), columns lr."""
    m = ((table["task"] == task) & (table["n_layer"] == n_layer) & (table["batch_size"] == batch_size)
         & (table["dropout"] == dropout) & (table["seed"] == seed) & with_mlp(table))
    t = table[m].drop_duplicates(["d_model", "steps", "lr"])
    return t.pivot_table(index=["d_model", "steps"], columns="lr", values="val_acc_min_hop", aggfunc="first")


def positional_by_recipe(table: pd.DataFrame, task: str = "number") -> pd.DataFrame:
    """For each recipe (layers, d, dropout, steps, batch, lr): runs, accurate runs, runs with a pure positional
    head, runs passing the head criterion. Needs :func:`with_criteria` columns."""
    t = table[table["task"] == task]
    keys = ["n_layer", "d_model", "attn_only", "dropout", "rope_base", "weight_decay", "steps", "batch_size", "lr"]
    out = t.groupby(keys).agg(runs=("seed", "size"), accurate=("accurate", "sum"),
                              with_positional=("has_positional", "sum"), heads_pass=("heads_pass", "sum"))
    return out.reset_index().astype({c: int for c in ("runs", "accurate", "with_positional", "heads_pass")})


def positional_by_factor(table: pd.DataFrame, task: str = "number") -> pd.DataFrame:
    """Runs with a pure positional head, split by one factor of the recipe at a time (the runs of ``task``
    with MLPs, :func:`with_mlp`).

    Long table: factor, value, runs, with_positional, share."""
    t = table[(table["task"] == task) & with_mlp(table)]
    rows = []
    for factor in ("n_layer", "d_model", "steps", "lr", "dropout", "batch_size"):
        for value, g in t.groupby(factor):
            rows.append({"factor": factor, "value": value, "runs": len(g),
                         "with_positional": int(g["has_positional"].sum()),
                         "share": float(g["has_positional"].mean())})
    return pd.DataFrame(rows)


def positional_envelope(table: pd.DataFrame, task: str = "number") -> dict:
    """The smallest and largest values of each recipe factor among the runs with a pure positional head, and
    how many runs lie inside that envelope (the runs of ``task`` with MLPs, :func:`with_mlp`)."""
    t = table[(table["task"] == task) & with_mlp(table)]
    hit = t[t["has_positional"]]
    env = {}
    if len(hit):
        for f in ("n_layer", "d_model", "steps", "lr", "dropout", "batch_size"):
            env[f] = (hit[f].min(), hit[f].max())
    inside = pd.Series(True, index=t.index)
    for f, (lo, hi) in env.items():
        inside &= t[f].between(lo, hi)
    return {"envelope": env, "runs": len(t), "with_positional": len(hit), "inside": int(inside.sum()),
            "outside_with_positional": int((~inside & t["has_positional"]).sum())}


def is_preset(table: pd.DataFrame) -> pd.Series:
    """True for the rows trained with exactly ``TrainConfig.teaching(task, seed)`` (same config hash)."""
    from ..train import TrainConfig

    return pd.Series([h == TrainConfig.teaching(task=t, seed=int(s)).hash()
                      for h, t, s in zip(table["config_hash"], table["task"], table["seed"])], index=table.index)


def seed_robustness(table: pd.DataFrame) -> pd.DataFrame:
    """The chosen configuration, every run: task, seed, where, accuracy, classes and the criteria.
    Needs :func:`with_criteria` columns."""
    t = table[is_preset(table)]
    cols = ["task", "seed", "where", "val_acc", "val_acc_min_hop", "accurate", "heads", "has_positional",
            "heads_pass", "passes"]
    return t[cols].sort_values(["task", "where", "seed"]).reset_index(drop=True)


def seed_tally(robust: pd.DataFrame, where: str | tuple[str, ...] = ("cuda-device", "cpu-here")) -> pd.DataFrame:
    """Per task, among the chosen configuration's runs (one per seed): seeds run, accurate and passing seeds,
    against the search's target of 4 of 5.  ``where``: one place, or places in order of preference -- a seed
    trained in several places counts once, from the first (the same seed retrained on another device can end
    in the other solution, so it is not a second sample)."""
    order = (where,) if isinstance(where, str) else tuple(where)
    rows = []
    for task, g in robust[robust["where"].isin(order)].groupby("task", sort=False):
        g = g.assign(_rank=g["where"].map(order.index)).sort_values(["seed", "_rank"]).drop_duplicates("seed")
        rows.append({"task": task, "where": " + ".join(w for w in order if (g["where"] == w).any()),
                     "seeds": " ".join(str(s) for s in sorted(g["seed"])),
                     "seeds_run": len(g), "accurate": int(g["accurate"].sum()),
                     "passing": int(g["passes"].sum()), "target": "4 of 5",
                     "target_met": bool(len(g) >= 5 and g["passes"].sum() >= 4)})
    return pd.DataFrame(rows)


SPEEDUP_2T_ASSUMED = 1.5  # the 2-thread speed-up assumed where none was measured


def load_calibration(root: str | Path | None = None) -> dict:
    """``data/teaching/calibration.json`` (the measured 2-thread speed-up, ``speedup_2t``), or the assumed
    speed-up with ``measured: False`` when the file is absent."""
    import json

    p = search_path(root).with_name("calibration.json")
    if not p.is_file():
        return {"speedup_2t": SPEEDUP_2T_ASSUMED, "measured": False}
    return json.loads(p.read_text())


def load_wallclock(root: str | Path | None = None) -> pd.DataFrame | None:
    """``data/teaching/wallclock.csv``: the chosen preset trained one run at a time with 1 and 2 threads
    (``scripts/teaching_search.py --wallclock``), or None when it was never measured."""
    p = search_path(root).with_name("wallclock.csv")
    return pd.read_csv(p) if p.is_file() else None


def wallclock_summary(wall: pd.DataFrame) -> pd.DataFrame:
    """Per task: the best wall time of ``train()`` with 1 and with 2 threads, their ratio (the speed-up of the
    second thread) and the highest load average seen around those runs."""
    rows = []
    for task, g in wall.groupby("task", sort=False):
        best = g.groupby("threads")["wall_seconds"].min()
        if not {1, 2} <= set(best.index):
            raise ValueError(f"wallclock table: task {task!r} needs runs with 1 and with 2 threads")
        rows.append({"task": task, "runs": len(g), "wall_1t_min": best[1] / 60, "wall_2t_min": best[2] / 60,
                     "speedup_2t": best[1] / best[2],
                     "max_load": float(g[["load_start", "load_end"]].max().max())})
    return pd.DataFrame(rows)


def chosen_cost(table: pd.DataFrame, speedup_2t: float = SPEEDUP_2T_ASSUMED) -> pd.DataFrame:
    """The chosen configuration's runs timed on the 2-core machine (``cpu-here``): one-thread CPU seconds, the
    wall seconds on the loaded machine, the load, and the estimated wall time on an idle 2-core laptop
    (CPU seconds / ``speedup_2t``, the 2-thread speed-up: :func:`load_calibration`)."""
    t = table[is_preset(table) & (table["where"] == "cpu-here")]
    out = t[["task", "seed", "steps", "cpu_seconds", "wall_seconds", "load_start", "load_end"]].copy()
    out["est_wall_2core_min"] = out["cpu_seconds"] / speedup_2t / 60
    out["cpu_min"] = out["cpu_seconds"] / 60
    out["wall_min"] = out["wall_seconds"] / 60
    return out.reset_index(drop=True)


def class_matrix(table: pd.DataFrame, order: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-run head classes as integers for a heat map (rows: runs, columns: layers 0..L-1; -1 = no layer).

    Codes: 0 = positional, 1 = mixed, 2 = symbolic. Returns (matrix, row labels)."""
    code = {"P": 0, "m": 1, "S": 2}
    t = table if order is None else table.loc[order]
    width = int(t["n_layer"].max())
    rows = [[code[c] for c in h.split()] + [-1] * (width - len(h.split())) for h in t["heads"]]
    labels = [f"{r.task[0].upper()} L{r.n_layer} d{r.d_model}{' no-MLP' if r.attn_only else ''} {r.steps} st "
              f"lr {r.lr:g}{' no-drop' if r.dropout == 0 else ''}"
              f"{' b' + str(r.batch_size) if r.batch_size != 128 else ''}"
              f"{f' base {r.rope_base:g}' if r.rope_base != LATER_COLS['rope_base'] else ''}"
              f"{f' wd {r.weight_decay:g}' if r.weight_decay != LATER_COLS['weight_decay'] else ''}"
              f" s{r.seed}{' cpu' if r.where == 'cpu-here' else ''}" for r in t.itertuples()]
    return pd.DataFrame(rows, index=t.index, columns=range(width)), labels


def layer_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Long table of the per-layer scores of every run: run (the table's index), task, layer, pos, sym, entropy,
    class. Needs :func:`with_criteria` columns."""
    rows = []
    for idx, r in table.iterrows():
        pos, sym, cls = str(r["pos"]).split(), str(r["sym"]).split(), r["heads"].split()
        ent = str(r["entropy"]).split() if isinstance(r.get("entropy"), str) else [None] * len(pos)
        for layer, (p, s, e, c) in enumerate(zip(pos, sym, ent, cls)):
            rows.append({"run": idx, "task": r["task"], "layer": layer, "pos": float(p), "sym": float(s),
                         "entropy": float(e) if e is not None else float("nan"), "class": c,
                         "has_positional": bool(r["has_positional"]), "accurate": bool(r["accurate"])})
    return pd.DataFrame(rows)


def final_classes(scores: pd.DataFrame, gamma: float = 0.1) -> pd.DataFrame:
    """Head classes at the last checkpoint of each run of a stacked ``scores`` table (columns task, seed, step,
    layer, pos, sym; e.g. ``posym.results.load_table("data/paper", "scores")``), with the search's criteria:
    one row per task × seed with ``heads``, ``has_positional`` and ``heads_pass``."""
    rows = []
    for (task, seed), g in scores.groupby(["task", "seed"], sort=True):
        last = g[g["step"] == g["step"].max()].sort_values("layer")
        cls = [_LETTER[classify(p, s, gamma)] for p, s in zip(last["pos"], last["sym"])]
        rows.append({"task": task, "seed": int(seed), "step": int(last["step"].iloc[0]), "heads": " ".join(cls),
                     "has_positional": "P" in cls, "heads_pass": heads_ok(task, cls)})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------
# Held-out seeds: the chosen configuration on seeds the search never saw

#: the seeds whose runs chose the configuration (the search's ``seeds``/``attn-only`` stages)
SEARCH_SEEDS = (0, 1, 2, 3, 4)
#: a held-out pass rate below this asks for another look at the configuration
HELDOUT_TARGET = 0.8


def task_order(task: str) -> tuple:
    """Sort key of the tasks on the page: Number first, then Letter, then any other by name."""
    return ({"number": 0, "letter": 1}.get(task, 2), task)


def heldout_path(root: str | Path | None = None) -> Path:
    """``data/teaching/heldout.csv`` under ``root`` (default: :func:`posym.results.data_dir`)."""
    return search_path(root).with_name("heldout.csv")


def load_heldout(root: str | Path | None = None) -> pd.DataFrame | None:
    """The held-out table (same schema as the search table; ``scripts/teaching_search.py --grid heldout``), or
    None when it has not been computed."""
    p = heldout_path(root)
    return load_search(p) if p.is_file() else None


def heldout_tally(search: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """Per task: the chosen configuration's pass count on the seeds that chose it (in-sample) next to its pass
    rate on held-out seeds, with a 95 % Wilson interval.

    Both tables need :func:`with_criteria` columns.  In-sample rows are the search's runs of the configuration on
    :data:`SEARCH_SEEDS` (one per seed, counted as :func:`seed_tally` counts them);
    held-out rows are the configuration's runs on any other seed.  Columns: task, in_sample (``k of n``),
    in_sample_seeds, heldout_seeds, heldout_runs, heldout_accurate, heldout_passing, heldout_rate, ci_lo, ci_hi,
    below_target (rate < :data:`HELDOUT_TARGET`).
    """
    from ..stats import wilson

    ins = seed_robustness(search)
    ins = ins[ins["seed"].isin(SEARCH_SEEDS)]
    ins_tally = seed_tally(ins).set_index("task")
    held = seed_robustness(heldout)
    held = held[~held["seed"].isin(SEARCH_SEEDS)]
    rows = []
    for task, g in held.groupby("task", sort=False):
        g = g.drop_duplicates("seed")
        k, n = int(g["passes"].sum()), len(g)
        lo, hi = wilson(k, n)
        it = ins_tally.loc[task] if task in ins_tally.index else None
        rows.append({"task": task,
                     "in_sample": f"{int(it.passing)} of {int(it.seeds_run)}" if it is not None else "–",
                     "in_sample_seeds": _seed_span([int(x) for x in it.seeds.split()]) if it is not None else "",
                     "heldout_seeds": _seed_span(sorted(int(s) for s in g["seed"])),
                     "heldout_runs": n, "heldout_accurate": int(g["accurate"].sum()), "heldout_passing": k,
                     "heldout_rate": k / n, "ci_lo": float(lo), "ci_hi": float(hi),
                     "below_target": bool(k / n < HELDOUT_TARGET)})
    return pd.DataFrame(rows)


def _seed_span(seeds: list[int]) -> str:
    """``5–14`` for a run of consecutive seeds, else the list."""
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return " ".join(str(s) for s in seeds)


def miss_reason(task: str, classes: list[str], accurate: bool = True) -> str:
    """Why a run fails the criteria, in words ('' when it passes)."""
    reasons = []
    if not accurate:
        reasons.append("a hop count below the accuracy threshold")
    if task == "number":
        pure = "".join(c for c in classes if c != "m")
        if pure.count("P") < 2:
            reasons.append("fewer than two pure positional heads")
        if pure.count("S") == 0:
            reasons.append("no pure symbolic head")
        if pure.count("P") >= 2 and pure.count("S") and not re.fullmatch(r"P+S+", pure):
            reasons.append("positional and symbolic heads interleaved")
    elif task == "letter":
        if "P" in classes:
            reasons.append("a positional head")
        not_sym = len(classes) - classes.count("S")
        if not_sym > 1:
            reasons.append(f"{not_sym} layers not pure symbolic")
    else:
        raise ValueError(f"unknown task {task!r}")
    return "; ".join(reasons)


def typical_classes(table: pd.DataFrame, task: str) -> list[str]:
    """The most common class of each layer among the passing runs of ``task`` (needs :func:`with_criteria`
    columns; ties go to the purer class, P or S before m)."""
    ok = table[(table["task"] == task) & table["passes"]]
    if ok.empty:
        raise ValueError(f"no passing {task} run to compare with")
    cls = [h.split() for h in ok["heads"]]
    width = max(len(c) for c in cls)
    out = []
    for layer in range(width):
        col = pd.Series([c[layer] for c in cls if len(c) > layer])
        counts = col.value_counts()
        best = counts[counts == counts.max()].index
        out.append(next((c for c in ("P", "S", "m") if c in best), best[0]))
    return out


def layer_differences(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table of the layers where a failing run of the chosen configuration differs from the typical passing
    run (:func:`typical_classes` of ``reference``, default ``table``): task, seed, layer, typical, got, pos, sym.
    Both tables need :func:`with_criteria` columns."""
    ref = table if reference is None else reference
    ref = ref[is_preset(ref)]
    failing = table[is_preset(table) & ~table["passes"]].sort_values(["task", "seed"])
    typical = {t: typical_classes(ref, t) for t in set(failing["task"])}
    rows = []
    for r in failing.itertuples():
        typ = typical[r.task]
        pos, sym = str(r.pos).split(), str(r.sym).split()
        rows += [{"task": r.task, "seed": int(r.seed), "layer": i, "typical": t, "got": c,
                  "pos": float(pos[i]), "sym": float(sym[i])}
                 for i, (c, t) in enumerate(zip(r.heads.split(), typ)) if c != t]
    return pd.DataFrame(rows, columns=["task", "seed", "layer", "typical", "got", "pos", "sym"])


def miss_profile(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per failing run of the chosen configuration: task, seed, its classes, the typical classes of the
    passing runs (of ``reference``, default ``table``), why it fails (:func:`miss_reason`), and the layers whose
    class differs from the typical one with their positional/symbolic scores (``layer k: P→m (0.71/0.24)``).
    Both tables need :func:`with_criteria` columns."""
    ref = table if reference is None else reference
    ref = ref[is_preset(ref)]
    diffs = layer_differences(table, ref)
    failing = table[is_preset(table) & ~table["passes"]].sort_values(["task", "seed"])
    typical = {t: " ".join(typical_classes(ref, t)) for t in set(failing["task"])}
    rows = []
    for r in failing.itertuples():
        d = diffs[(diffs["task"] == r.task) & (diffs["seed"] == r.seed)]
        rows.append({"task": r.task, "seed": int(r.seed), "heads": r.heads, "typical": typical[r.task],
                     "why": miss_reason(r.task, r.heads.split(), bool(r.accurate)),
                     "differs": "; ".join(f"layer {x.layer}: {x.typical}→{x.got} ({x.pos:.2f}/{x.sym:.2f})"
                                          for x in d.itertuples()) or "–"})
    return pd.DataFrame(rows, columns=["task", "seed", "heads", "typical", "why", "differs"])


def near_miss_layers(search: pd.DataFrame, heldout: pd.DataFrame, near_gamma: float, gamma: float = 0.1,
                     threshold: float = 0.9) -> pd.DataFrame:
    """:func:`layer_differences` of the near misses (:func:`near_misses`) at the book's tolerance ``gamma``: which
    layers of a narrowly passing run already differ from the typical passing run."""
    both = with_criteria(pd.concat([search, heldout], ignore_index=True), gamma=gamma, threshold=threshold)
    near = near_misses(search, heldout, near_gamma, gamma=gamma, threshold=threshold)
    if near.empty:
        return layer_differences(both.iloc[:0])
    sel = both[both.set_index(["task", "seed"]).index.isin(list(zip(near["task"], near["seed"])))].copy()
    sel["passes"] = False  # compare them with the typical passing run although they pass at gamma
    return layer_differences(sel, reference=both)


def plot_seed_classes(search: pd.DataFrame, heldout: pd.DataFrame, gamma: float = 0.1):
    """Head class of every layer (columns) for every seed (rows) of the chosen configuration, one panel per task:
    the seeds that chose it above the line, held-out seeds below, seeds that miss the criterion marked ✗.  Returns the
    Figure.  Both tables need :func:`with_criteria` columns (at ``gamma``)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    from ..plotting import COLORS

    both = pd.concat([seed_robustness(search).assign(set="chose it"),
                      seed_robustness(heldout).assign(set="held out")], ignore_index=True)
    both = both[both["set"].eq("held out") | both["seed"].isin(SEARCH_SEEDS)]
    both = both.drop_duplicates(["task", "seed"], keep="first").sort_values(["task", "seed"], ascending=[False, True])
    code = {"P": 0, "m": 1, "S": 2}
    cmap = ListedColormap([COLORS["positional"], COLORS["mixed"], COLORS["symbolic"]])
    tasks = sorted(dict.fromkeys(both["task"]), key=task_order)
    n_rows = max(int((both["task"] == t).sum()) for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1.0, 0.32 * n_rows + 1.8), squeeze=False,
                             layout="constrained")
    for ax, task in zip(axes[0], tasks):
        g = both[both["task"] == task].reset_index(drop=True)
        width = max(len(h.split()) for h in g["heads"])
        mat = np.array([[code[c] for c in h.split()] + [-1] * (width - len(h.split())) for h in g["heads"]])
        ax.imshow(np.ma.masked_less(mat, 0), cmap=cmap, vmin=0, vmax=2, aspect="auto")
        ax.set_yticks(range(len(g)), [f"seed {s}" + ("  ✗" if not ok else "") for s, ok in zip(g["seed"], g["passes"])])
        ax.set_xticks(range(width))
        ax.set_xticks(np.arange(-0.5, width, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, len(g), 1), minor=True)
        ax.grid(False, which="major")
        ax.grid(True, which="minor", color="white", lw=1.0)
        ax.tick_params(which="minor", length=0)
        split = int((g["set"] == "chose it").sum())
        if 0 < split < len(g):
            ax.axhline(split - 0.5, color="black", lw=2.5)
            ax.text(width - 0.45, split - 0.6, "chose it ↑", ha="left", va="bottom", fontsize=9, clip_on=False)
            ax.text(width - 0.45, split - 0.4, "held out ↓", ha="left", va="top", fontsize=9, clip_on=False)
        ax.set(xlabel="layer", title=f"{task.capitalize()} task")
    for c, label in (("positional", "pure positional"), ("mixed", "mixed"), ("symbolic", "pure symbolic")):
        axes[0][-1].plot([], [], "s", color=COLORS[c], label=label)
    fig.legend(loc="outside lower center", ncol=4, frameon=False,
               handles=axes[0][-1].get_legend_handles_labels()[0]
               + [plt.Line2D([], [], ls="", marker="$✗$", color="black")],
               labels=axes[0][-1].get_legend_handles_labels()[1] + ["seed misses the criterion"])
    fig.suptitle(f"Head class of every layer, per seed (γ = {gamma})")
    return fig


def gamma_needed(task: str, pos: str, sym: str, step: float = 0.005, upto: float = 0.5) -> float:
    """The smallest purity tolerance (on a grid of ``step``) at which a run's stored per-layer scores pass the head
    criterion; NaN when none up to ``upto`` does.  A passing run whose value is close to the book's 0.1 is a near
    miss: a slightly different model (another seed, another CPU's rounding) can fall on the other side."""
    n = int(round(upto / step))
    for k in range(1, n + 1):
        g = round(k * step, 6)
        if heads_ok(task, layer_classes(pos, sym, g)):
            return g
    return float("nan")


def seed_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run of the chosen configuration: task, seed, classes, whether it passes, and
    :func:`gamma_needed` (needs :func:`with_criteria` columns)."""
    t = table[is_preset(table)].sort_values(["task", "seed"])
    out = t[["task", "seed", "heads", "accurate", "passes"]].copy()
    out["gamma_needed"] = [gamma_needed(r.task, r.pos, r.sym) for r in t.itertuples()]
    return out.reset_index(drop=True)


def verdict_table(search: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_verdicts` of the seeds that chose the configuration (``set = "chose it"``) and of the held-out
    seeds (``"held out"``), one row per task and seed (both tables need :func:`with_criteria` columns)."""
    ins = seed_verdicts(search[search["seed"].isin(SEARCH_SEEDS)]).assign(set="chose it")
    held = seed_verdicts(heldout[~heldout["seed"].isin(SEARCH_SEEDS)]).assign(set="held out")
    out = pd.concat([ins, held], ignore_index=True).drop_duplicates(["task", "seed"])
    return out.sort_values(["task", "seed"], key=lambda c: c.map(task_order) if c.name == "task"
                           else c).reset_index(drop=True)


def near_misses(search: pd.DataFrame, heldout: pd.DataFrame, near_gamma: float, gamma: float = 0.1,
                threshold: float = 0.9) -> pd.DataFrame:
    """:func:`miss_profile` of the chosen configuration's runs at the stricter tolerance ``near_gamma``: the seeds
    that pass at ``gamma`` only narrowly, why they would miss, and which layers differ from the typical passing
    run (at ``gamma``).  ``search`` and ``heldout`` are raw tables (:func:`load_search`)."""
    both = pd.concat([search, heldout], ignore_index=True)
    return miss_profile(with_criteria(both, gamma=near_gamma, threshold=threshold),
                        reference=with_criteria(both, gamma=gamma, threshold=threshold))


def prompt_count_check(table: pd.DataFrame, n_prompts: int = 400) -> dict:
    """How many runs keep their head classes and their head verdict when the final checkpoint is scored with
    ``n_prompts`` prompts instead of the table's own (the columns ``classes_p{n}``/``pass_heads_p{n}`` written by
    ``scripts/teaching_search.py --rescore``): ``{"runs", "same_classes", "same_verdict"}``, or None without
    those columns."""
    cls, ok = f"classes_p{n_prompts}", f"pass_heads_p{n_prompts}"
    if cls not in table.columns or ok not in table.columns:
        return None
    as_bool = table[ok].astype(str).str.lower().eq("true")
    return {"runs": len(table), "same_classes": int((table[cls] == table["classes"]).sum()),
            "same_verdict": int((as_bool == table["pass_heads"].astype(str).str.lower().eq("true")).sum())}


def heldout_display(tally: pd.DataFrame) -> pd.DataFrame:
    """:func:`heldout_tally` as a compact table for the page: one row per task (Number first)."""
    rows = []
    for r in tally.sort_values("task", key=lambda c: c.map(task_order)).itertuples():
        rows.append({"task": r.task.capitalize(), "chose it (seeds)": f"{r.in_sample} ({r.in_sample_seeds})",
                     "held-out seeds": r.heldout_seeds,
                     "pass": f"{r.heldout_passing} of {r.heldout_runs}",
                     "learn every hop": f"{r.heldout_accurate} of {r.heldout_runs}",
                     "pass rate (95 % interval)": f"{r.heldout_rate:.0%} ({r.ci_lo:.0%}–{r.ci_hi:.0%})"})
    return pd.DataFrame(rows).set_index("task")


def verdict_wide(verdicts: pd.DataFrame) -> pd.DataFrame:
    """:func:`verdict_table` with one row per seed: each task's classes and the tolerance it needs."""
    cls = verdicts.pivot(index="seed", columns="task", values="heads")
    need = verdicts.pivot(index="seed", columns="task", values="gamma_needed")
    out = pd.DataFrame(index=cls.index)
    for task in sorted(cls.columns, key=task_order):
        out[f"{task} classes"] = cls[task]
        out[f"{task} γ needed"] = need[task]
    out.insert(0, "set", ["chose it" if s in SEARCH_SEEDS else "held out" for s in out.index])
    return out


# -----------------------------------------------------------------------------
# The page: what book/teaching.md reads, shows and writes into its text

@dataclass
class Search:
    """The committed search read at one purity tolerance and accuracy threshold: the raw table, the runs with
    the criteria (:func:`with_criteria`), the held-out runs (raw and with criteria; None when absent) and the
    data folder they came from."""
    raw: pd.DataFrame
    runs: pd.DataFrame
    held: pd.DataFrame | None
    held_runs: pd.DataFrame | None
    data_dir: Path
    gamma: float
    threshold: float


def read(data_dir: str | Path, gamma: float = 0.1, threshold: float = 0.9) -> Search:
    """Read ``data_dir/teaching/search.csv`` and ``heldout.csv`` and apply the criteria at ``gamma`` and
    ``threshold``."""
    data_dir = Path(data_dir)
    raw = load_search(data_dir / "teaching" / "search.csv")
    held = load_heldout(data_dir)
    held_runs = with_criteria(held, gamma=gamma, threshold=threshold) if held is not None else None
    return Search(raw, with_criteria(raw, gamma=gamma, threshold=threshold), held, held_runs, data_dir, gamma,
                  threshold)


def accuracy_grids(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`accuracy_grid` of both tasks (Number first)."""
    return {task: accuracy_grid(runs, task) for task in ("number", "letter")}


def early_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-layer scores (:func:`layer_scores`) of layers 1-3 of the accurate Number runs with MLPs."""
    layers = layer_scores(runs[with_mlp(runs)])
    return layers[(layers.task == "number") & layers.accurate & layers.layer.between(1, 3)]


def early_summary(early: pd.DataFrame) -> pd.DataFrame:
    """Count and median of the positional and symbolic scores of :func:`early_layers`, per head class."""
    out = early.groupby("class")[["pos", "sym"]].agg(["count", "median"]).round(3)
    out.columns = [f"{a} {b}" for a, b in out.columns]
    return out


def envelope_text(env: dict) -> str:
    """:func:`positional_envelope` in two printed lines."""
    return (f"recipes of the Number runs with a pure positional head: "
            f"{ {k: (float(lo), float(hi)) for k, (lo, hi) in env['envelope'].items()} }\n"
            f"{env['with_positional']} of {env['runs']} Number runs have one; {env['inside']} runs lie inside that "
            f"envelope")


def mlp_class_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The depth-6 Number runs with MLPs of 3,000 steps or more, in recipe order (the head-class figure)."""
    mlp = runs[with_mlp(runs)]
    return mlp[(mlp.task == "number") & (mlp.n_layer == 6) & (mlp.steps >= 3000)].sort_values(
        ["steps", "d_model", "dropout", "batch_size", "lr", "seed", "where"])


def lever_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the stages ``deep``, ``rope-base`` and ``probes`` (with MLPs)."""
    levers = runs[runs.stage.isin(["deep", "rope-base", "probes"]) & ~runs.attn_only]
    return levers.sort_values(["stage", "task", "seed"])


def no_mlp_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The attention-only runs (all trained on the 2-core CPU)."""
    return runs[runs.attn_only].sort_values(["stage", "task", "n_layer", "seed"])


LEVER_COLS = ["stage", "task", "seed", "n_layer", "d_model", "rope_base", "weight_decay", "steps", "val_acc_min_hop",
              "heads", "heads_pass"]
NO_MLP_COLS = ["stage", "task", "seed", "n_layer", "d_model", "steps", "val_acc_min_hop", "heads", "heads_pass",
               "cpu_seconds"]


def chosen_configs() -> dict:
    """The teaching presets of both tasks and the paper's preset, by name."""
    from ..train import TrainConfig

    return {"teaching, Number": TrainConfig.teaching("number"), "teaching, Letter": TrainConfig.teaching("letter"),
            "paper": TrainConfig.paper()}


def recipe_table(configs: dict) -> pd.DataFrame:
    """One row per preset of :func:`chosen_configs`: architecture and recipe."""
    return pd.DataFrame([
        {"scale": name, **{k: getattr(c.model_config(), k) for k in ("n_layer", "n_head", "d_model", "attn_only")},
         "d_mlp": 0 if c.model_config().attn_only else c.model_config().d_mlp,
         "dropout": c.model_config().resid_pdrop, "steps": c.steps, "batch": c.batch_size, "lr": c.lr,
         "warm-up": c.warmup_steps}
        for name, c in configs.items()])


def paper_final_classes(data_dir: str | Path, gamma: float = 0.1) -> pd.DataFrame:
    """:func:`final_classes` of the committed paper-scale runs in ``data_dir/paper``."""
    from .. import results

    return final_classes(results.load_table(Path(data_dir) / "paper", "scores"), gamma=gamma)


def tables(S: Search) -> dict:
    """Every table the page shows, as ``posym.display.table`` objects, by name (in page order)."""
    from ..display import rounded_table, table

    runs, g = S.runs, S.gamma
    grids = accuracy_grids(runs)
    out = {"where": table(where_counts(runs), caption="Runs per stage and place of training",
                          key_columns=["stage", "where"])}
    for task, grid in grids.items():
        out[f"grid_{task}"] = rounded_table(grid.rename(columns=lambda c: f"lr {c:g}"), 3, index=True, caption=(
            f"{task.capitalize()} task: worst per-hop accuracy (depth 6, batch 128, seed 0)"))
    out["depth"] = rounded_table(depth_table(runs), 3, key_columns=["task", "d_model", "n_layer"],
                                 caption="Per-hop validation accuracy against depth (3,000 steps, lr 2e-3, seed 0)")
    out["early"] = rounded_table(early_summary(early_layers(runs)), 3, index=True,
                                 caption="Layers 1-3 of the accurate Number runs with MLPs: count and median score "
                                         "per class")
    out["factor"] = rounded_table(positional_by_factor(runs), 3, key_columns=["factor", "value"],
                                  caption="Number runs with MLPs that have a pure positional head, by one factor "
                                          "at a time")
    out["levers"] = table(lever_runs(runs)[LEVER_COLS], key_columns=["stage", "task", "seed"],
                          digits={"val_acc_min_hop": 4},
                          caption="The lever runs (with MLPs)")
    out["no_mlp"] = table(no_mlp_runs(runs)[NO_MLP_COLS], key_columns=["stage", "task", "seed"],
                          digits={"val_acc_min_hop": 4, "cpu_seconds": 2},
                          caption="The runs without MLPs (all trained on the 2-core CPU)")
    out["recipes"] = table(recipe_table(chosen_configs()), key_columns=["scale"],
                           caption="The chosen teaching presets and the paper's")
    cal = load_calibration()
    out["cost"] = rounded_table(chosen_cost(runs, cal["speedup_2t"]), 2, key_columns=["task", "seed"],
                                caption="Cost of the chosen configuration, timed on the 2-core machine (one thread "
                                        "per run)")
    wall = load_wallclock()
    if wall is not None:
        out["wall"] = rounded_table(wallclock_summary(wall), 2, key_columns=["task"],
                                    caption="The preset timed with 1 and 2 threads, one run at a time")
    robust = seed_robustness(runs)
    out["robust"] = rounded_table(robust, 4, key_columns=["task", "where", "seed"],
                                  caption="Every run of the chosen configuration")
    out["tally"] = table(seed_tally(robust), key_columns=["task"], caption="Seeds that pass, per task")
    out["paper"] = table(paper_final_classes(S.data_dir, g), key_columns=["task", "seed"],
                         caption="The same criteria on the final checkpoints of the committed paper-scale runs")
    if S.held_runs is not None:
        out["heldout"] = table(heldout_display(heldout_tally(runs, S.held_runs)), index=True,
                               caption="The chosen configuration on seeds it was not chosen on")
        misses = miss_profile(S.held_runs, reference=runs)
        if len(misses):
            out["misses"] = table(misses, key_columns=["task", "seed"], caption="Held-out seeds that miss")
        else:
            from IPython.display import Markdown
            out["misses"] = Markdown("Every held-out seed passes.")
        out["verdicts"] = table(verdict_wide(verdict_table(runs, S.held_runs)), index=True,
                                caption="Every seed of the chosen configuration: classes and the tolerance it needs")
        out["near"] = table(near_misses(S.raw, S.held, 0.75 * g, gamma=g, threshold=S.threshold),
                            key_columns=["task", "seed"], caption=f"Seeds that would miss at γ = {0.75 * g:g}")
    return out


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt

    return plt.subplots(*args, layout="constrained", **kwargs)


_CLASS_STYLE = {"P": ("positional", "pure positional"), "m": ("mixed", "mixed"), "S": ("symbolic", "pure symbolic")}


def plot_accuracy_grids(grids: dict[str, pd.DataFrame]):
    """Heat maps of :func:`accuracy_grids`: worst per-hop accuracy by (width, steps) and learning rate, one panel
    per task. Returns the Figure."""
    import numpy as np

    fig, axes = _fig(1, len(grids), figsize=(7.4, 3.6), sharey=True)
    for ax, (task, g) in zip(axes, grids.items()):
        im = ax.imshow(g.to_numpy(), vmin=0, vmax=1, cmap="cividis", aspect="auto")
        ax.set_xticks(range(g.shape[1]), [f"{c:g}" for c in g.columns], rotation=45)
        ax.set_yticks(range(g.shape[0]), [f"d {d}, {s:,} st." for d, s in g.index])
        for (i, j), v in np.ndenumerate(g.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="black" if v > 0.5 else "white")
        ax.set(xlabel="learning rate", title=f"{task.capitalize()} task")
        ax.grid(False)
    fig.colorbar(im, ax=axes, label="worst-hop val. accuracy")
    return fig


def plot_depth(runs: pd.DataFrame, threshold: float = 0.9):
    """Validation accuracy per hop count of the depth runs (:func:`depth_table`), one panel per task; line style
    by width, colour by depth. Returns the Figure."""
    from ..plotting import COLORS, HOP_COLORS

    depth = depth_table(runs)
    fig, axes = _fig(1, 2, figsize=(7.4, 3.9), sharey=True)
    layer_colors = {2: HOP_COLORS[1], 3: HOP_COLORS[2], 4: HOP_COLORS[3], 6: HOP_COLORS[4], 8: COLORS["neutral"]}
    for ax, task in zip(axes, ("number", "letter")):
        for r in depth[depth.task == task].itertuples():
            acc = [getattr(r, c) for c in HOP_COLS]
            ax.plot(HOPS, acc, marker="o", color=layer_colors[r.n_layer], ls="-" if r.d_model == 64 else "--",
                    label=f"{r.n_layer} layers, d {r.d_model}")
        ax.axhline(threshold, color=COLORS["neutral"], lw=1, ls=":")
        ax.set(xlabel="hops", xticks=HOPS, title=f"{task.capitalize()} task")
    axes[0].set_ylabel("validation accuracy")
    handles, labels = axes[1].get_legend_handles_labels()
    for h, l in zip(*axes[0].get_legend_handles_labels()):
        if l not in labels:
            handles.append(h)
            labels.append(l)
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    return fig


def plot_early_scatter(runs: pd.DataFrame, gamma: float = 0.1):
    """Positional against symbolic score of layers 1-3 of every accurate Number run with MLPs
    (:func:`early_layers`), coloured by head class, with the two pure corners drawn. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS

    early = early_layers(runs)
    fig, ax = _fig(figsize=(5.2, 4.4))
    for c, (colour, label) in _CLASS_STYLE.items():
        e = early[early["class"] == c]
        ax.scatter(e["pos"], e["sym"], s=18, color=COLORS[colour], alpha=0.75, label=f"{label} ({len(e)})")
    ax.add_patch(plt.Rectangle((1 - gamma, 0), gamma, gamma, fill=False, ec=COLORS["positional"], lw=1, ls="--"))
    ax.add_patch(plt.Rectangle((0, 1 - gamma), gamma, gamma, fill=False, ec=COLORS["symbolic"], lw=1, ls="--"))
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="positional score", ylabel="symbolic score")
    ax.legend(fontsize=9, loc="upper right")
    return fig


def plot_class_matrix(table: pd.DataFrame, title: str):
    """Head class of every layer (columns) of every run of ``table`` (rows, labelled by recipe and seed;
    :func:`class_matrix`), with a legend of the classes below. Returns the Figure."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    from ..plotting import COLORS

    mat, labels = class_matrix(table)
    cmap = ListedColormap([COLORS["positional"], COLORS["mixed"], COLORS["symbolic"]])
    fig, ax = _fig(figsize=(7.2, 0.24 * len(table) + 1.6))
    ax.imshow(np.ma.masked_less(mat.to_numpy(), 0), cmap=cmap, vmin=0, vmax=2, aspect="auto")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xticks(range(mat.shape[1]))
    ax.set(xlabel="layer", title=title)
    ax.grid(False)
    for c, (colour, label) in _CLASS_STYLE.items():
        ax.plot([], [], "s", color=COLORS[colour], label=label)
    fig.legend(loc="outside lower center", ncol=3, fontsize=9)
    return fig


def _span(lo, hi, fmt) -> str:
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def _smallest_steps(g: pd.DataFrame, thr: float) -> dict:
    """Smallest step count that reaches ``thr`` at every learning rate >= 2e-3, per width."""
    out = {}
    for d, sub in g.groupby(level="d_model"):
        ok = sub[[c for c in sub.columns if c >= 0.002]].min(axis=1) >= thr
        out[d] = int(ok[ok].index.get_level_values("steps").min()) if ok.any() else None
    return out


def _mid_entropy(t: pd.DataFrame) -> float:
    import numpy as np

    return float(np.median([float(v) for e in t.entropy for v in str(e).split()[1:-1]]))


def text_values(S: Search) -> dict[str, str]:
    """Every number the page's text quotes (its ``{glue:md}`` values), as markdown strings, by glue name."""
    runs, gamma, thr = S.runs, S.gamma, S.threshold
    v: dict[str, str] = {}
    n_where = runs["where"].value_counts()
    v["n_runs"] = len(runs)
    v["n_gpu"] = n_where.get("cuda-device", 0)
    v["n_cpu"] = n_where.get("cpu-here", 0)
    v["gamma"] = gamma
    v["threshold"] = f"{thr:.0%}"
    # accuracy is easy
    grids = accuracy_grids(runs)
    easy = {task: _smallest_steps(g, thr) for task, g in grids.items()}
    wide = [d for d in grids["number"].index.get_level_values("d_model").unique() if d >= 48]
    worst_wide = min(float(g.loc[wide].loc[:, [c for c in g.columns if c >= 0.002]].to_numpy().min())
                     for g in grids.values())
    v["worst_wide"] = f"{worst_wide:.1%}"
    v["easy_d32"] = " and ".join(f"{easy[t][32]:,} ({t})" for t in easy)
    v["wide_list"] = " and ".join(str(d) for d in wide)
    # depth against hops
    depth = depth_table(runs)
    num = depth[depth.task == "number"]
    cap = num.groupby("n_layer")["hop_capacity"].agg(["min", "max"])
    acc34 = {L: num[num.n_layer == L][["val_acc_h3", "val_acc_h4"]].to_numpy() for L in (2, 3, 4)}
    v["cap2"] = _span(cap.loc[2, "min"], cap.loc[2, "max"], str)
    v["acc34_2"] = _span(acc34[2].min(), acc34[2].max(), lambda x: f"{x:.0%}")
    v["acc34_3"] = _span(acc34[3].min(), acc34[3].max(), lambda x: f"{x:.0%}")
    v["acc_4"] = f"{num[num.n_layer == 4][list(HOP_COLS)].to_numpy().min():.1%}"
    let = depth[depth.task == "letter"]
    v["let_min_layers"] = " and ".join(
        f"{int(let[(let.d_model == d) & (let.hop_capacity == 4)].n_layer.min())} layers at d {d}"
        for d in sorted(let.d_model.unique()) if let[let.d_model == d].n_layer.nunique() > 1)
    # pure positional heads are the hard part
    early = early_layers(runs)
    mixed_med = early[early["class"] == "m"][["pos", "sym"]].median()
    v["mixed_pos"] = f"{mixed_med['pos']:.2f}"
    v["mixed_sym"] = f"{mixed_med['sym']:.2f}"
    env = positional_envelope(runs)
    e = env["envelope"]
    fac = positional_by_factor(runs).set_index(["factor", "value"])

    def span(k, fmt=lambda x: f"{x:,.0f}"):
        return _span(*e[k], fmt)

    v["env_steps"] = span("steps")
    v["env_d"] = span("d_model")
    v["env_dropout"] = span("dropout", lambda x: f"{x:g}")
    v["env_batch"] = span("batch_size")
    v["env_layers"] = span("n_layer")
    v["n_with_pos"] = env["with_positional"]
    v["n_number"] = env["runs"]
    v["n_inside"] = env["inside"]
    short = fac.loc[[("steps", s) for s in (1500, 2000)]]
    v["short_runs"] = f"{int(short['with_positional'].sum())} of {int(short['runs'].sum())}"
    short_acc = runs[(runs.task == "number") & runs.steps.isin([1500, 2000])]["accurate"]
    v["short_acc"] = f"{int(short_acc.sum())} of {len(short_acc)}"
    for name, key in (("runs_4k", ("steps", 4000)), ("nodrop", ("dropout", 0.0)), ("d32", ("d_model", 32))):
        row = fac.loc[key]
        v[name] = f"{int(row['with_positional'])} of {int(row['runs'])}"
    # levers
    levers = lever_runs(runs)

    def tally_text(t):
        return f"{int(t.heads_pass.sum())} of {len(t)}"

    lv_num = levers[levers.task == "number"]
    v["deep_pass"] = tally_text(lv_num[lv_num.stage == "deep"])
    v["base_pass"] = tally_text(lv_num[lv_num.stage == "rope-base"])
    v["base_let_pass"] = tally_text(levers[(levers.task == "letter") & (levers.stage == "rope-base")])
    v["probe_pass"] = tally_text(lv_num[lv_num.stage == "probes"])
    v["levers_acc"] = f"{levers.val_acc_min_hop.min():.1%}"
    # without MLPs
    no_mlp = no_mlp_runs(runs)
    num_no_mlp = no_mlp[no_mlp.task == "number"]
    six = num_no_mlp[num_no_mlp.n_layer == 6]
    v["no_mlp_pos"] = f"{int(num_no_mlp.has_positional.sum())} of {len(num_no_mlp)}"
    v["no_mlp_npos"] = (f"{int(num_no_mlp.n_P.min())}" if num_no_mlp.n_P.min() == num_no_mlp.n_P.max()
                        else f"{int(num_no_mlp.n_P.min())}–{int(num_no_mlp.n_P.max())}")
    v["six_heads"] = " / ".join(f"`{h}`" for h in six.heads) if len(six) else "no run"
    p_layers = sorted({i for h in num_no_mlp.heads for i, c in enumerate(h.split()) if c == "P"})
    v["no_mlp_layers"] = f"{p_layers[0]}–{p_layers[-1]}" if len(p_layers) > 1 else str(p_layers[0])
    let_no_mlp = no_mlp[no_mlp.task == "letter"]
    v["let_no_mlp_acc"] = f"{int(let_no_mlp.accurate.sum())} of {len(let_no_mlp)}"
    v["let_no_mlp_pass"] = f"{int(let_no_mlp.heads_pass.sum())} of {len(let_no_mlp)}"
    mlp_runs = runs[with_mlp(runs)]
    let_mlp = mlp_runs[(mlp_runs.task == "letter") & mlp_runs.entropy.notna() & (mlp_runs.n_layer >= 6)]
    v["let_no_mlp_entropy"] = f"{_mid_entropy(let_no_mlp):.2f}"
    v["let_mlp_entropy"] = f"{_mid_entropy(let_mlp):.2f}"
    v.update(_cost_values(runs))
    v.update(_robust_values(S))
    return {k: str(x) for k, x in v.items()}


def _cost_values(runs: pd.DataFrame) -> dict:
    cal = load_calibration()
    cost = chosen_cost(runs, cal["speedup_2t"])
    wall = load_wallclock()
    v, laptop = {}, {}
    for task, c in cost.groupby("task"):
        v[f"cost_{task}_runs"] = len(c)
        v[f"cost_{task}"] = (f"{c.cpu_seconds.min():.0f}–{c.cpu_seconds.max():.0f} s "
                             f"({c.cpu_min.min():.1f}–{c.cpu_min.max():.1f} min)")
        laptop[task] = f"{c.est_wall_2core_min.median():.1f} min"
        v[f"cost_{task}_load"] = (f"{min(c.load_start.min(), c.load_end.min()):.1f}–"
                                  f"{max(c.load_start.max(), c.load_end.max()):.1f}")
    v["cost_cpu"] = f"{cost.cpu_min.median():.1f} min"
    if wall is not None:
        w = wallclock_summary(wall).set_index("task")
        v["laptop_sentence"] = (
            f"Timed directly on the same machine, one run at a time with torch's default two threads, `train()` took "
            f"{w.wall_2t_min['number']:.1f} min for the Number model and {w.wall_2t_min['letter']:.1f} min for the "
            f"Letter model (with one thread: {w.wall_1t_min['number']:.1f} and {w.wall_1t_min['letter']:.1f} min; "
            f"load average at most {w.max_load.max():.1f}). The second thread speeds training up "
            f"{w.speedup_2t['number']:.2f}× (Number) and {w.speedup_2t['letter']:.2f}× (Letter). With the smaller "
            f"ratio, the CPU times above become about {laptop['number']} and "
            f"{laptop['letter']} on an idle 2-core laptop")
    else:
        v["laptop_sentence"] = (
            f"On an idle 2-core laptop that is about {laptop['number']} and "
            f"{laptop['letter']}, *assuming* a {cal['speedup_2t']:g}× speed-up from the second thread "
            f"(not measured: `scripts/teaching_search.py --wallclock` measures it)")
    configs = chosen_configs()
    tn_, tl_ = configs["teaching, Number"], configs["teaching, Letter"]
    v["tc_desc"] = (f"one head per layer at width {tn_.model_config().d_model}, trained for {tn_.steps:,} steps at "
                    f"batch {tn_.batch_size} and learning rate {tn_.lr:g}: {tn_.model_config().n_layer} layers "
                    f"without MLPs for the Number task, {tl_.model_config().n_layer} layers with MLPs of width "
                    f"{tl_.model_config().d_mlp} for the Letter task")
    return v


def _robust_values(S: Search) -> dict:
    runs, gamma = S.runs, S.gamma
    v = {}
    robust = seed_robustness(runs)
    tally = seed_tally(robust).set_index("task")
    tn, tl = tally.loc["number"], tally.loc["letter"]
    v["num_pass"] = f"{tn.passing} of {tn.seeds_run}"
    v["let_pass"] = f"{tl.passing} of {tl.seeds_run}"
    num_heads = robust[robust.task == "number"].heads.value_counts()
    v["num_heads"] = ", ".join(f"`{h}` ({n}×)" for h, n in num_heads.items())
    verdict = {True: "meets", False: "does not meet"}
    v["num_verdict"] = verdict[bool(tn.target_met)]
    v["let_verdict"] = verdict[bool(tl.target_met)]
    pf = paper_final_classes(S.data_dir, gamma).groupby("task")["heads_pass"].agg(["sum", "size"])
    v["paper_num_pass"] = f"{int(pf.loc['number', 'sum'])} of {int(pf.loc['number', 'size'])}"
    v["paper_let_pass"] = f"{int(pf.loc['letter', 'sum'])} of {int(pf.loc['letter', 'size'])}"
    if S.held_runs is None:
        return v
    held, held_runs = S.held, S.held_runs
    ht = heldout_tally(runs, held_runs).set_index("task")
    for task in ("number", "letter"):
        h = ht.loc[task]
        v[f"held_{task}"] = (f"{h.heldout_passing} of {h.heldout_runs} (seeds {h.heldout_seeds}; "
                             f"{h.heldout_rate:.0%}, 95 % interval {h.ci_lo:.0%}–{h.ci_hi:.0%})")
        v[f"held_{task}_short"] = f"{h.heldout_passing} of {h.heldout_runs}"
        v[f"held_{task}_lo"] = f"{h.ci_lo:.0%}"
        v[f"held_{task}_acc"] = f"{h.heldout_accurate} of {h.heldout_runs}"
        v[f"held_{task}_verdict"] = "below" if h.below_target else "at or above"
    v["held_target"] = f"{HELDOUT_TARGET:.0%}"
    pc = prompt_count_check(held)
    v["p400"] = ((f"Scored with 400 prompts instead of 200, {pc['same_classes']} of {pc['runs']} runs keep every "
                  f"layer's class and {pc['same_verdict']} of {pc['runs']} their verdict: "
                  + ("no verdict hangs on the prompt sample" if pc["same_verdict"] == pc["runs"]
                     else "some verdicts do depend on the prompt sample")) if pc else
                 "The runs were not scored with a second prompt count")
    misses = miss_profile(held_runs, reference=runs)
    v["held_misses"] = "; ".join(f"{r.task.capitalize()} seed {r.seed}: `{r.heads}` ({r.why})"
                                 for r in misses.itertuples()) or "none"
    # near misses
    verdicts = verdict_table(runs, held_runs)
    near_gamma = 0.75 * gamma
    near = near_misses(S.raw, held, near_gamma, gamma=gamma, threshold=S.threshold)
    nl = near_miss_layers(S.raw, held, near_gamma, gamma=gamma, threshold=S.threshold)
    by_layer = nl.groupby(["layer", "typical", "got"]).size().reset_index(name="seeds")
    v["near_layers"] = "; ".join(
        f"layer {r.layer} ({r.typical}→{r.got}) in {r.seeds} seed{'s' if r.seeds > 1 else ''}"
        for r in by_layer.itertuples()) or "none"
    lost = int((nl["typical"].isin(["P", "S"]) & (nl["got"] == "m")).sum())
    gained = int(((nl["typical"] == "m") & nl["got"].isin(["P", "S"])).sum())
    flips = int((nl["typical"].isin(["P", "S"]) & nl["got"].isin(["P", "S"])).sum())
    v["near_kind"] = (f"Of these, {lost} are pure layers of the typical run that stay mixed and {gained} a mixed "
                      f"layer that turns pure; {'none' if flips == 0 else flips} flips from one pure class to the "
                      f"other")
    num_v = verdicts[verdicts.task == "number"]
    core = [i for i in range(len(num_v.heads.iloc[0].split())) if all(h.split()[i] == "P" for h in num_v.heads)]
    v["pos_core"] = " and ".join(str(i) for i in core) if core else "none"
    v["diff_span"] = f"{nl.layer.min()}–{nl.layer.max()}" if len(nl) else "none"
    all_v = verdicts["accurate"]
    v["all_acc"] = ("every run here learns every hop count" if all_v.all()
                    else f"{int(all_v.sum())} of {len(all_v)} runs here learn every hop count")
    v["near_gamma"] = f"{near_gamma:g}"
    v["near_list"] = "; ".join(f"{r.task.capitalize()} seed {r.seed} (`{r.heads}` at γ = {near_gamma:g}: {r.why})"
                               for r in near.itertuples()) or "none"
    v["near_n"] = f"{len(near)} of {len(verdicts)}"
    worst = verdicts.groupby("task")["gamma_needed"].max()
    v["worst_number"] = f"{worst['number']:g}"
    v["worst_letter"] = f"{worst['letter']:g}"
    return v


# -----------------------------------------------------------------------------
# The chapter's parameters

_PAPER = "posym reproduce --scale paper  (see data/README.md)"
_HOW = "python scripts/teaching_search.py --grid explore --jobs 2  (see data/teaching/README.md)"

register(ChapterSpec(
    name="teaching",
    params={
        "gamma": Param(float, 0.1, "purity tolerance of the head classes (the search used 0.1; 0.2 is looser)",
                       min=0.0, max=0.5),
        "threshold": Param(float, 0.9, "validation accuracy every hop count must reach (the search used 0.9)",
                           min=0.5, max=1.0),
    },
    requires={s: (Required("teaching/search.csv", _HOW, "one row per training run of the search"),)
              + tuple(Required(f"paper/{t}-s{k}/scores.parquet", _PAPER, "paper-scale scores, for comparison")
                      for t in ("number", "letter") for k in range(5))
              for s in ("smoke", "teaching", "paper")},
))
