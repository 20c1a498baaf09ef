"""The appendix "Reconciling with the paper" (``book/reconcile.md``): its parameters, its science and its figures.

Our runs disagree with Paper 2 on a few numbers: the Number model's pure-head counts (layers 0 and 4 stay mixed),
the Letter model's best step, the frequency IDs of Table 1 and the length curves of Fig. 5B.  This module tests
the protocol choices the paper leaves open, one experiment per choice, each with a rule for "reproduces the
paper" fixed here *before* the numbers were computed.  The rules are kept whatever the results.

Rules fixed in advance
----------------------
* **The book's purity rule does not change.**  A head is pure positional at a checkpoint when the *prompt-mean*
  scores satisfy ``s_pos >= 1 - gamma`` and ``s_sym <= gamma`` (pure symbolic: the reverse), with
  ``gamma = 0.1``, counted cumulatively from the first checkpoint at which it holds (Fig. 2C's rule), on our
  50-step checkpoint grid.  This is :func:`posym.trajectory.purity_events` ``rule="first"``, the rule of the
  dynamics chapter and of the claims table.  The other rules below are reported beside it, never adopted.
* **Evaluation grid.**  A 250-step grid (the authors' interval; the log-spaced early checkpoints dropped)
  reproduces the paper's best step when the mean over seeds is within 15 % of the paper's value (the claims
  table's rule), and its pure-head counts when they equal the paper's in more than half of the seeds.  A
  Letter L10/L11 dip of ``s_sym`` is *missed* by the coarse grid when the grid's minimum exceeds the 50-step
  minimum by more than 0.05.
* **Purity rule.**  Rules tried: prompt mean or fraction of pure prompts (a head is pure when more than half of
  the prompts are pure, or at least 90 %); ``gamma`` 0.1 or 0.05; cumulative (first pure checkpoint), at the
  best step or at the final step.  A rule reproduces the paper when, in more than half of the seeds, it gives
  4 positional + 8 symbolic heads for Number and 0 + 11 for Letter.
* **Table 1 weighting.**  Weightings tried, of the per-frequency max logit ``u_k`` (mean over prompts) at the
  final checkpoint: its positive part (what the geometry chapter uses), its absolute value, its square
  (``u_k^2 + sd_k^2``, the mean of the square over prompts), and the arg-max frequency.  A layer agrees when the
  paper's ID lies within the range of our seeds widened by one ID; a weighting reproduces Table 1 when at least
  10 of the 12 layers of each task agree.
* **Length protocol.**  A construction reproduces Fig. 5B when our accuracy is within 0.1 of every point read
  off the figure (:data:`posym.paper.PAPER_FIG5B`; 0.05 of read-off error plus about 0.05 of sampling
  error at 64-100 prompts).
* **The authors' seed (42).**  A quantity lands *inside* our five-seed spread when it lies within the minimum
  and maximum over seeds 0-4.
* **Precision (fp16).**  The Number paper configuration trained with fp16 autocast and a gradient scaler, the
  authors' precision, at run seeds 0-2 (paired with our fp32 runs of the same seeds: same data, same initial
  weights).  fp16 reproduces the paper's pure-head count of a kind when the book's purity rule gives the paper's
  count (4 positional, 8 symbolic) in more than half of the fp16 seeds; it moves the count *part of the way* when
  the fp16 mean is at least 0.5 heads closer to the paper's than the fp32 mean of the same seeds.  Layer 0 (4)
  becomes pure positional (symbolic) when it ends so in more than half of the fp16 seeds.  A number of an fp16
  run lies *inside* the fp32 spread by the seed-42 rule below.
* **Verdicts.**  *explained*: a tested choice moves our value to the paper's by the rule above; *partly
  explained*: a tested choice moves it part of the way, or explains some of the layers or points; *unexplained*:
  no tested choice moves it.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import metrics, trajectory as T
from ..paper import PAPER, PAPER_FIG5B, PAPER_TABLE1
from ..spec import ChapterSpec, Param, Required, register
from ..stats import binomial_tail

# -----------------------------------------------------------------------------------------------
# Parameters

_RECONCILE = "python scripts/reconcile_runs.py all  (writes data/reconcile/ with a manifest; see its --help)"
_PAPER = "posym reproduce --scale paper  (see data/README.md)"

register(ChapterSpec(
    name="reconcile",
    params={
        "source": Param(str, {"smoke": "standin", "teaching": "standin", "paper": "committed"},
                        "tables read from data/paper and data/reconcile (committed) or tiny synthetic stand-ins "
                        "of the same shape (standin)", choices=("standin", "committed")),
        "n_length": Param(int, {"smoke": 4, "teaching": 16, "paper": 64},
                          "prompts per length in the stand-in length sweep (the committed sweep used 64)",
                          min=4, max=500),
        "gamma": Param(float, 0.1, "the book's purity tolerance (fixed in advance)", min=0.01, max=0.3),
    },
    requires={"paper": tuple(
        [Required(f"paper/{t}-s{s}/{f}", _PAPER, what) for t in ("number", "letter") for s in range(5)
         for f, what in (("eval.csv", "validation accuracy per checkpoint"),
                         ("scores.parquet", "positional/symbolic scores per checkpoint"),
                         ("freq_scores.parquet", "per-frequency max logits"))]
        + [Required("reconcile/manifest.json", _RECONCILE, "the reconciliation experiments", optional=True)])},
))

TASKS = ("number", "letter")

#: The paper's values this appendix reconciles, from :data:`posym.paper.PAPER`: pure (positional, symbolic)
#: heads at the end of training (Fig. 2C) and the step of best validation accuracy (Fig. 2A).
PAPER_COUNTS = {t: (len(PAPER[t]["positional_layers"]), len(PAPER[t]["symbolic_layers"])) for t in TASKS}
PAPER_BEST = {t: PAPER[t]["best_step"] for t in TASKS}
STEP_TOL = 0.15
LENGTH_TOL = 0.1


# -----------------------------------------------------------------------------------------------
# 3. Evaluation grid

def on_grid(df: pd.DataFrame, every: int) -> pd.DataFrame:
    """Rows of a per-checkpoint table whose step is a multiple of ``every`` (step 0 included; with ``every=50``
    the log-spaced early checkpoints 1, 2, 5, 10, 20 are dropped too)."""
    if every < 1:
        raise ValueError(f"every must be a positive number of steps, got {every}")
    return df[df["step"] % every == 0]


def grid_table(eval_df: pd.DataFrame, scores: pd.DataFrame, grids: Sequence[int] = (50, 250),
               gammas: Sequence[float] = (0.1, 0.05)) -> pd.DataFrame:
    """Per task, seed and grid: the best step and the cumulative pure-head counts at each ``gamma``.

    The 50-step grid keeps the log-spaced early checkpoints (it is our full grid); coarser grids keep only the
    multiples of their interval.  Columns task, seed, grid, best_step, then ``pos@g``/``sym@g`` per gamma."""

    rows = []
    for grid in grids:
        e = eval_df if grid == 50 else on_grid(eval_df, grid)
        s = scores if grid == 50 else on_grid(scores, grid)
        best = T.best_steps(e)
        counts = {}
        for g in gammas:
            ev = T.purity_events(s, g, rule="first")
            counts[g] = ev.groupby(["task", "seed", "kind"]).size()
        for r in best.itertuples():
            row = {"task": r.task, "seed": int(r.seed), "grid": int(grid), "best_step": int(r.best_step)}
            for g in gammas:
                c = counts[g]
                row[f"pos@{g}"] = int(c.get((r.task, r.seed, "positional"), 0))
                row[f"sym@{g}"] = int(c.get((r.task, r.seed, "symbolic"), 0))
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["task", "grid", "seed"], key=_task_key).reset_index(drop=True)


def _task_key(s: pd.Series) -> pd.Series:
    return s.map({t: i for i, t in enumerate(TASKS)}) if s.name == "task" else s


def grid_summary(table: pd.DataFrame, gamma: float = 0.1) -> pd.DataFrame:
    """:func:`grid_table` summarised per task and grid, with the paper's values and the verdict of the rules in
    the module docstring.  Columns task, grid, best_step (mean), best_steps (per seed), paper_best,
    best_agrees, pos, sym (per seed), paper_counts, counts_agree."""
    rows = []
    for (task, grid), g in table.groupby(["task", "grid"], sort=False):
        m = float(g["best_step"].mean())
        pp, ps = PAPER_COUNTS[task]
        pos, sym = g[f"pos@{gamma}"].tolist(), g[f"sym@{gamma}"].tolist()
        same = sum(a == pp and b == ps for a, b in zip(pos, sym))
        rows.append({"task": task, "grid": int(grid), "best_step": m,
                     "best_steps": ", ".join(f"{v:,}" for v in g["best_step"]), "paper_best": PAPER_BEST[task],
                     "best_agrees": abs(m - PAPER_BEST[task]) <= STEP_TOL * PAPER_BEST[task],
                     "pos": ", ".join(map(str, pos)), "sym": ", ".join(map(str, sym)),
                     "paper_counts": f"{pp} + {ps}", "counts_agree": same > len(g) / 2})
    return pd.DataFrame(rows)


def dip_table(scores: pd.DataFrame, task: str = "letter", layers: Sequence[int] = (10, 11), coarse: int = 250,
              after: int = 100, missed_by: float = 0.05) -> pd.DataFrame:
    """The transient dip of ``s_sym`` (its minimum after step ``after``) per seed and layer, on the full grid
    and on a ``coarse`` grid.  ``missed``: the coarse grid's minimum exceeds the full grid's by more than
    ``missed_by``.  ``width``: the number of 50-step checkpoints within 0.05 of the full grid's minimum (how long
    the dip lasts).  Columns seed, layer, min_sym, min_step, width, coarse_min, coarse_step, missed."""
    s = scores[(scores["task"] == task) & scores["layer"].isin(layers) & (scores["step"] >= after)]
    rows = []
    for (seed, layer), g in s.groupby(["seed", "layer"]):
        g = g.sort_values("step")
        i = int(g["sym"].to_numpy().argmin())
        c = on_grid(g, coarse)
        j = int(c["sym"].to_numpy().argmin())
        mn = float(g["sym"].iloc[i])
        rows.append({"seed": int(seed), "layer": int(layer), "min_sym": mn, "min_step": int(g["step"].iloc[i]),
                     "width": int((g["sym"] <= mn + 0.05).sum()), "coarse_min": float(c["sym"].iloc[j]),
                     "coarse_step": int(c["step"].iloc[j]),
                     "missed": bool(c["sym"].iloc[j] - mn > missed_by)})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# 4. Purity rule

def classes_at(scores: pd.DataFrame, steps: pd.DataFrame | None, gamma: float) -> pd.DataFrame:
    """Class of every head at one checkpoint per run: the last one (``steps=None``) or the run's ``step`` in
    ``steps`` (columns task, seed, step; e.g. the best steps).  Columns task, seed, layer, kind."""

    if steps is None:
        last = scores.groupby(["task", "seed"])["step"].transform("max")
        f = scores[scores["step"] == last]
    else:
        f = scores.merge(steps[["task", "seed", "step"]], on=["task", "seed", "step"])
    kind = [metrics.classify(p, s, gamma) for p, s in zip(f["pos"], f["sym"])]
    return f.assign(kind=kind)[["task", "seed", "layer", "kind"]]


def fraction_classes(per_prompt: pd.DataFrame, gamma: float, share: float) -> pd.DataFrame:
    """Fraction-of-prompts rule: per (task, seed, step, layer), the share of prompts that are pure positional
    (``pos >= 1 - gamma`` and ``sym <= gamma``) and pure symbolic, and the head's class: positional when the
    pure-positional share passes :func:`_share_ok` (``share=0.5``: more than half of the prompts; ``share=0.9``:
    at least 90 %), likewise symbolic.  Columns task, seed, step, layer, frac_pos, frac_sym, kind."""
    p, s = per_prompt["pos"], per_prompt["sym"]
    d = per_prompt.assign(is_pos=((p >= 1 - gamma) & (s <= gamma)).astype(float),
                          is_sym=((s >= 1 - gamma) & (p <= gamma)).astype(float))
    g = d.groupby(["task", "seed", "step", "layer"], as_index=False).agg(frac_pos=("is_pos", "mean"),
                                                                      frac_sym=("is_sym", "mean"))
    kind = np.where(_share_ok(g["frac_pos"], share), "positional",
                    np.where(_share_ok(g["frac_sym"], share), "symbolic", "mixed"))
    return g.assign(kind=kind)


def _share_ok(frac: pd.Series, share: float) -> np.ndarray:
    """``share <= 0.5``: more than ``share`` of the prompts (a strict majority at 0.5); above: at least ``share``."""
    f = frac.to_numpy()
    return f > share if share <= 0.5 else f >= share - 1e-12


def _count(classes: pd.DataFrame) -> dict:
    c = classes[classes["kind"] != "mixed"].groupby(["task", "seed", "kind"]).size()
    return {k: int(v) for k, v in c.items()}


def purity_rules(eval_df: pd.DataFrame, scores: pd.DataFrame, gammas: Sequence[float] = (0.1, 0.05),
                 per_prompt: pd.DataFrame | None = None, shares: Sequence[float] = (0.5, 0.9)) -> pd.DataFrame:
    """Pure-head counts of every run under every rule of the module docstring.

    ``per_prompt`` (optional): per-prompt scores (columns task, seed, step, prompt, layer, pos, sym) for the
    fraction rules; those rules are reported for the runs and checkpoints it holds.  Columns rule, statistic,
    gamma, when, task, seed, positional, symbolic, matches (the paper's count for that task)."""

    best = T.best_steps(eval_df).rename(columns={"best_step": "step"})
    runs = scores[["task", "seed"]].drop_duplicates().itertuples(index=False, name=None)
    runs = sorted(runs, key=lambda r: (TASKS.index(r[0]), r[1]))
    rows = []

    def add(statistic, gamma, when, counts, runs_here):
        for task, seed in runs_here:
            pos, sym = counts.get((task, seed, "positional"), 0), counts.get((task, seed, "symbolic"), 0)
            rows.append({"statistic": statistic, "gamma": gamma, "when": when, "task": task, "seed": int(seed),
                         "positional": pos, "symbolic": sym, "matches": (pos, sym) == PAPER_COUNTS[task]})

    for g in gammas:
        ev = T.purity_events(scores, g, rule="first")
        add("prompt mean", g, "cumulative", _count(ev), runs)
        add("prompt mean", g, "best step", _count(classes_at(scores, best, g)), runs)
        add("prompt mean", g, "final step", _count(classes_at(scores, None, g)), runs)
        if per_prompt is not None and len(per_prompt):
            pp_runs = sorted(per_prompt[["task", "seed"]].drop_duplicates().itertuples(index=False, name=None),
                             key=lambda r: (TASKS.index(r[0]), r[1]))
            for share in shares:
                fc = fraction_classes(per_prompt, g, share)
                name = f"prompts pure > {share:.0%}" if share <= 0.5 else f"prompts pure ≥ {share:.0%}"
                last = fc.groupby(["task", "seed"])["step"].transform("max")
                add(name, g, "final step", _count(fc[fc["step"] == last]), pp_runs)
                have = fc.merge(best[["task", "seed", "step"]], on=["task", "seed", "step"])
                if have[["task", "seed"]].drop_duplicates().shape[0] == len(pp_runs) and fc["step"].nunique() > 1:
                    add(name, g, "best step", _count(have), pp_runs)
                    ev = fc[fc["kind"] != "mixed"].sort_values("step").groupby(
                        ["task", "seed", "layer"], as_index=False).first()
                    add(name, g, "cumulative", _count(ev), pp_runs)
    out = pd.DataFrame(rows)
    return out.assign(rule=out["statistic"] + ", γ = " + out["gamma"].astype(str) + ", " + out["when"])


def rules_summary(rules: pd.DataFrame) -> pd.DataFrame:
    """One row per rule: counts per seed for each task (``"3+7, 2+8, ..."``) and whether the rule reproduces
    the paper (both tasks match in more than half of their seeds)."""
    rows = []
    for rule, g in rules.groupby("rule", sort=False):
        row = {"rule": rule}
        ok = True
        for task in TASKS:
            t = g[g["task"] == task]
            if t.empty:
                row[task] = "—"
                continue
            row[task] = ", ".join(f"{a}+{b}" for a, b in zip(t["positional"], t["symbolic"]))
            ok &= int(t["matches"].sum()) > len(t) / 2
        row["seeds"] = ", ".join(map(str, sorted(g["seed"].unique())))
        row["reproduces"] = bool(ok)
        rows.append(row)
    return pd.DataFrame(rows)


def per_prompt_scores(model, x, hops=None, **keys) -> pd.DataFrame:
    """Per-prompt ``s_pos``, ``s_sym`` of every layer (head 0) of ``model`` on prompts ``x`` (the fast metric
    of :func:`posym.metrics.model_scores`).  Columns ``keys...``, prompt, hop, layer, pos, sym."""
    from ..metrics import model_scores

    sc = model_scores(model, x)
    n = x.shape[0]
    frames = []
    for layer, ls in enumerate(sc):
        frames.append(pd.DataFrame({"prompt": np.arange(n), "hop": (np.asarray(hops) if hops is not None
                                                                    else np.zeros(n, dtype=int)),
                                    "layer": layer, "pos": ls.pos[:, 0].numpy().astype(np.float32),
                                    "sym": ls.sym[:, 0].numpy().astype(np.float32)}))
    out = pd.concat(frames, ignore_index=True)
    for k, v in reversed(list(keys.items())):
        out.insert(0, k, v)
    return out


# -----------------------------------------------------------------------------------------------
# 5. Table 1 weighting

WEIGHTINGS = ("positive", "absolute", "square", "argmax")


def weighted_id(u: np.ndarray, weighting: str, sd: np.ndarray | None = None) -> float:
    """The paper-style frequency ID (1-based) of one layer's per-frequency curve ``u`` (mean max logit over
    prompts, index 0 = the fastest frequency) under ``weighting``: ``positive`` (weights ``max(u, 0)``),
    ``absolute`` (``|u|``), ``square`` (``u^2 + sd^2``, the mean over prompts of the square; ``sd`` the
    per-frequency standard deviation over prompts, 0 if not given) or ``argmax`` (the ID of the largest ``u``)."""
    u = np.asarray(u, dtype=float)
    if weighting == "argmax":
        return float(np.argmax(u)) + 1.0
    if weighting == "positive":
        w = np.clip(u, 0, None)
    elif weighting == "absolute":
        w = np.abs(u)
    elif weighting == "square":
        w = u ** 2 + (0.0 if sd is None else np.asarray(sd, dtype=float) ** 2)
    else:
        raise ValueError(f"unknown weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
    if w.sum() <= 0:
        return math.nan
    return float((np.arange(len(w)) * w).sum() / w.sum()) + 1.0


def weighting_table(freq_scores: pd.DataFrame, weightings: Sequence[str] = WEIGHTINGS) -> pd.DataFrame:
    """Per run and layer at each run's last checkpoint: the frequency ID under every weighting.  Columns task,
    seed, layer, weighting, id."""
    last = freq_scores.groupby(["task", "seed"])["step"].transform("max")
    f = freq_scores[(freq_scores["step"] == last) & (freq_scores["head"] == 0)]
    rows = []
    for (task, seed, layer), g in f.groupby(["task", "seed", "layer"]):
        g = g.sort_values("freq")
        for w in weightings:
            rows.append({"task": task, "seed": int(seed), "layer": int(layer), "weighting": w,
                         "id": weighted_id(g["maxlogit"].to_numpy(), w, g["maxlogit_sd"].to_numpy())})
    return pd.DataFrame(rows)


def table1_weightings(table: pd.DataFrame, min_layers: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare :func:`weighting_table` with the paper's Table 1.

    Returns ``(layers, summary)``.  ``layers``: task, layer, paper_id, then per weighting the mean ID over
    seeds (``<w>``) and whether the paper's ID lies in the seeds' range widened by one ID (``<w>_ok``).
    ``summary``: per weighting and task, the layers that agree and whether the weighting reproduces the task's
    column (at least ``min_layers`` layers agree)."""

    rows = []
    for (task, layer), g in table.groupby(["task", "layer"], sort=False):
        pid = PAPER_TABLE1[task][int(layer)][0]
        row = {"task": task, "layer": int(layer), "paper_id": pid}
        for w, gw in g.groupby("weighting", sort=False):
            ids = gw["id"].to_numpy()
            row[w] = float(np.nanmean(ids))
            row[f"{w}_range"] = float(np.nanmax(ids) - np.nanmin(ids))
            row[f"{w}_ok"] = bool(np.nanmin(ids) - 1 <= pid <= np.nanmax(ids) + 1)
        rows.append(row)
    layers = pd.DataFrame(rows).sort_values(["task", "layer"], key=_task_key).reset_index(drop=True)
    srows = []
    for w in [c for c in WEIGHTINGS if c in table["weighting"].unique()]:
        for task in TASKS:
            t = layers[layers["task"] == task]
            if t.empty:
                continue
            ok = t[f"{w}_ok"]
            srows.append({"weighting": w, "task": task, "layers_agree": int(ok.sum()), "of": len(t),
                          "agreeing": ", ".join(f"L{l}" for l in t.loc[ok, "layer"]) or "none",
                          "median_seed_range": float(t[f"{w}_range"].median()),
                          "reproduces": int(ok.sum()) >= min(min_layers, len(t))})
    return layers, pd.DataFrame(srows)


# -----------------------------------------------------------------------------------------------
# 6. Length protocol: how a long prompt is built

#: The constructions of the length sweep: (where the filler goes, what it is, re-checked by the solver, hops).
#: ``before``/``fresh``/re-checked/all hops is the book's construction (:func:`posym.longprompts.extended_prompts`).
CONSTRUCTIONS = {
    "book": ("before", "fresh", True, "all"),
    "between": ("between", "fresh", True, "all"),
    "spread": ("spread", "fresh", True, "all"),
    "vocab": ("before", "vocab", True, "all"),
    "vocab-unchecked": ("before", "vocab", False, "all"),
    "repeat": ("before", "repeat", True, "all"),
    "1-hop": ("before", "fresh", True, "1"),
}
WHERE = ("before", "between", "spread")
FILLERS = ("fresh", "vocab", "repeat")


def applicable(task: str, construction: str) -> bool:
    """Whether a construction can be built for ``task``: the Number task's offsets are at most 16, so nothing
    can go between its instruction and target windows ("between" is Letter-only) and an unchecked filler
    cannot change a Number answer (the chain never reaches the prefix: "vocab-unchecked" is Letter-only)."""
    where, filler, checked, _ = CONSTRUCTIONS[construction]
    return not (task == "number" and (where == "between" or not checked))


def _chain_letters(sample) -> set:
    return {sample.tokens[p][0] for p in sample.chain[1:]}


def _filler(task, sample, filler: str, checked: bool, extra: int, rng: np.random.Generator) -> list[str]:
    """``extra`` filler tokens.  Number: ``fresh`` letters of ALPH; ``vocab`` any token of the vocabulary
    (letters and integers); ``repeat`` one letter repeated.  Letter: ``fresh`` letter-number tokens whose letter
    is outside the chain (the training generator's rule for target-window distractors); ``vocab`` any token
    (letter-number or letter-letter) whose first letter is outside the chain, or, unchecked, any token at all;
    ``repeat`` one fresh letter-number token repeated."""
    if task.name == "number":
        pool = list(task.letters) if filler in ("fresh", "repeat") else list(task.letters) + list(task.numbers)
    else:
        chain = _chain_letters(sample) if checked else set()
        if filler in ("fresh", "repeat"):
            pool = [t for t in task.target_tokens if t[0] not in chain]
        else:
            pool = [t for t in task.target_tokens + task.instruction_tokens if t[0] not in chain]
    if filler == "repeat":
        return [pool[int(rng.integers(len(pool)))]] * extra
    if filler not in ("fresh", "vocab"):
        raise ValueError(f"unknown filler {filler!r}: choose one of {', '.join(FILLERS)}")
    return [pool[i] for i in rng.integers(0, len(pool), size=extra)]


def long_prompt(task, sample, length: int, rng: np.random.Generator, where: str = "before",
                filler: str = "fresh", checked: bool = True):
    """``sample`` lengthened to ``length`` tokens by inserting filler tokens before the query.

    ``where``: ``before`` the target window (the book's and, as we read it, the paper's construction),
    ``between`` the target and instruction windows (Letter only), or ``spread`` at random gaps: anywhere before
    the answer for Number (its offsets must not change), anywhere before the query for Letter.  ``filler``: see
    :func:`_filler`.  ``checked``: the solver must give the same answer and hop count on the long prompt
    (ValueError otherwise); unchecked prompts keep the original answer as the label.  Returns a
    :class:`posym.tasks.Sample` whose ``chain`` holds the shifted chain positions."""
    from ..tasks import Sample, get_task

    task = get_task(task)
    n0 = len(sample.tokens)
    extra = int(length) - n0
    if extra < 0:
        raise ValueError(f"length must be at least {n0} (the prompt's own length), got {length}")
    if where not in WHERE:
        raise ValueError(f"unknown place {where!r}: choose one of {', '.join(WHERE)}")
    if task.name == "number" and where == "between":
        raise ValueError("the Number task's offsets are at most 16: no filler can go between its windows")
    if extra == 0:
        return sample
    new = _filler(task, sample, filler, checked, extra, rng)
    if where == "before":
        gaps = np.zeros(extra, dtype=np.int64)
    elif where == "between":
        gaps = np.full(extra, 8, dtype=np.int64)  # after the 8 target-window tokens
    else:
        top = sample.chain[-1] if task.name == "number" else n0 - 1  # last gap allowed (inclusive)
        gaps = np.sort(rng.integers(0, top + 1, size=extra))
    # gap g = before original token g; build the sequence and track where every original token lands
    tokens, shift, k = [], np.zeros(n0, dtype=np.int64), 0
    for i in range(n0):
        while k < extra and gaps[k] == i:
            tokens.append(new[k])
            k += 1
        shift[i] = len(tokens) - i
        tokens.append(sample.tokens[i])
    out = Sample(tuple(tokens), sample.answer, sample.hops, tuple(int(p + shift[p]) for p in sample.chain))
    if checked:
        ans, hops, chain = task.solve(out.tokens)
        if ans != sample.answer or hops != sample.hops or tuple(chain) != out.chain:
            raise ValueError(f"the long prompt changed the answer ({sample.answer!r} -> {ans!r})")
    return out


def construction_prompts(task: str, seed: int, length: int, n: int, construction: str, split: str = "test"):
    """``n`` prompts of ``length`` tokens built by ``construction`` (hop-balanced, or 1-hop only) from the
    ``split`` of data seed ``seed``; the same base prompts for every construction of the same hop set.
    Also returns the share of prompts the solver accepts with the original answer (1 for checked ones)."""
    from ..tasks import balanced_eval_set, get_task

    where, filler, checked, hops = CONSTRUCTIONS[construction]
    t = get_task(task)
    if hops == "all":
        base = balanced_eval_set(t, n, seed=seed, split=split)
    else:
        base = [s for s in balanced_eval_set(t, 4 * n, seed=seed, split=split) if s.hops == int(hops)][:n]
    rng = np.random.default_rng([seed, 104729, int(length), sorted(CONSTRUCTIONS).index(construction)])
    out, ok = [], 0
    for s in base:
        p = long_prompt(t, s, length, rng, where, filler, checked)
        if not checked:
            try:
                ok += t.solve(p.tokens)[0] == s.answer
            except ValueError:
                pass
        else:
            ok += 1
        out.append(p)
    return out, ok / max(1, len(out))


def length_protocol(model, task: str, seed: int, constructions: Iterable[str], lengths: Sequence[int], n: int,
                    batch_tokens: int = 60_000, progress=None) -> pd.DataFrame:
    """Accuracy of ``model`` on prompts of every construction and length.  Columns task, construction, length,
    hop, accuracy, n, solver_ok, seconds.  ``progress(construction, length, seconds)`` is called after each."""
    from ..tasks import get_task

    vocab = get_task(task).vocab
    rows = []
    model.eval()
    # some constructions put tokens where the task never does (integers before a Number target window, a
    # Letter filler inside the instruction window): lift the layout check a loaded model carries
    layout_check = getattr(model, "task", None)
    model.task = None
    try:
        _length_rows(model, task, seed, constructions, lengths, n, batch_tokens, progress, vocab, rows)
    finally:
        model.task = layout_check
    return pd.DataFrame(rows)


def _length_rows(model, task, seed, constructions, lengths, n, batch_tokens, progress, vocab, rows):
    import time

    import torch
    from ..tasks import to_tensors

    for c in constructions:
        if not applicable(task, c):
            continue
        for L in lengths:
            t0 = time.time()
            samples, ok = construction_prompts(task, seed, L, n, c)
            x, y, hops = to_tensors(samples, vocab)
            bs = max(1, batch_tokens // L)
            with torch.no_grad():
                pred = torch.cat([model(x[i:i + bs], last_only=True, fast=True)[:, -1].argmax(-1)
                                  for i in range(0, len(x), bs)])
            correct = (pred == y).float()
            sec = time.time() - t0
            rows.append({"task": task, "construction": c, "length": int(L), "hop": "all",
                         "accuracy": float(correct.mean()), "n": len(correct), "solver_ok": ok, "seconds": sec})
            for k in sorted(set(hops.tolist())):
                m = hops == k
                rows.append({"task": task, "construction": c, "length": int(L), "hop": str(k),
                             "accuracy": float(correct[m].mean()), "n": int(m.sum()), "solver_ok": ok,
                             "seconds": sec})
            if progress is not None:
                progress(c, L, sec)


def length_verdicts(curves: pd.DataFrame, tol: float = LENGTH_TOL) -> pd.DataFrame:
    """Per task and construction: the largest |ours - paper| over the points of Fig. 5B inside the lengths the
    construction was measured at (overall accuracy, interpolated linearly in log length between measured
    lengths), and whether the construction reproduces the figure there (every difference at most ``tol``).
    Columns task, construction, points, max_diff, worst_length, reproduces, ours_at, paper_at."""

    rows = []
    a = curves[curves["hop"] == "all"]
    for (task, c), g in a.groupby(["task", "construction"], sort=False):
        diffs, ours, theirs = [], [], []
        for L, p in PAPER_FIG5B[task].items():
            if not _has(g, L):
                continue
            v = _at(g, L)
            diffs.append((abs(v - p), L))
            ours.append(f"{v:.2f}@{L:,}")
            theirs.append(f"{p:.2f}@{L:,}")
        if not diffs:
            continue
        d, L = max(diffs)
        rows.append({"task": task, "construction": c, "points": len(diffs), "max_diff": d, "worst_length": L,
                     "reproduces": d <= tol, "ours_at": ", ".join(ours), "paper_at": ", ".join(theirs)})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# 2. The authors' seed

def run_summary(eval_df: pd.DataFrame, scores: pd.DataFrame, gamma: float = 0.1) -> pd.DataFrame:
    """The numbers compared across seeds, per task and seed: best step, cumulative pure positional and
    symbolic heads, and the final ``s_pos``/``s_sym`` of layers 0 and 4 with their classes."""

    best = T.best_steps(eval_df)
    ev = T.purity_events(scores, gamma, rule="first")
    fin = T.final_classes(scores, gamma)
    rows = []
    for r in best.itertuples():
        e = ev[(ev["task"] == r.task) & (ev["seed"] == r.seed)]
        row = {"task": r.task, "seed": int(r.seed), "best_step": int(r.best_step),
               "positional": int((e["kind"] == "positional").sum()), "symbolic": int((e["kind"] == "symbolic").sum())}
        for layer in (0, 4):
            f = fin[(fin["task"] == r.task) & (fin["seed"] == r.seed) & (fin["layer"] == layer)].iloc[0]
            row[f"L{layer}_pos"] = float(f["pos"])
            row[f"L{layer}_sym"] = float(f["sym"])
            row[f"L{layer}_kind"] = metrics.classify(float(f["pos"]), float(f["sym"]), gamma)
        rows.append(row)
    return pd.DataFrame(rows)


_COUNTS = ("best_step", "positional", "symbolic")


def _fmt_quantity(q: str, v: float) -> str:
    return f"{v:,.0f}" if q in _COUNTS else f"{v:.2f}"


def _as_shown(q: str, v: float) -> float:
    """A quantity of :func:`run_summary` as the page shows it: steps and counts as they are, scores to 2 decimals."""
    return v if q in _COUNTS else round(v, 2)


def seed_spread(reference: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Each numeric quantity of :func:`run_summary` for the ``new`` runs beside the ``reference`` seeds'
    minimum and maximum, and whether it lies inside, compared as shown: steps and counts exactly, scores to two
    decimals.  Columns task, seed, quantity, value, ref_min, ref_max, ref_values, inside; Paper 2's tasks first."""
    rows = []
    cols = ["best_step", "positional", "symbolic", "L0_pos", "L0_sym", "L4_pos", "L4_sym"]
    order = {t: i for i, t in enumerate(TASKS)}
    for r in sorted(new.itertuples(), key=lambda r: (order.get(r.task, len(order)), r.task, r.seed)):
        ref = reference[reference["task"] == r.task]
        for c in cols:
            v, lo, hi = (_as_shown(c, float(x)) for x in (getattr(r, c), ref[c].min(), ref[c].max()))
            rows.append({"task": r.task, "seed": int(r.seed), "quantity": c, "value": v, "ref_min": lo,
                         "ref_max": hi, "ref_values": ", ".join(_fmt_quantity(c, x) for x in ref[c]),
                         "inside": lo <= v <= hi})
    return pd.DataFrame(rows)


# -----------------------------------------------------------------------------------------------
# 1. Precision: what a CPU can say

#: The commands that run the precision experiment where it belongs, on a GPU: the paper configuration of both
#: tasks, seeds 0-4, with fp16 autocast and a gradient scaler (as the authors' HF Trainer did), then the metric at
#: every checkpoint (in fp32, like data/paper).  ``posym reproduce`` has no ``--precision`` option, so the runs go
#: one after the other (about 7 minutes each on an H100).
FP16_COMMAND = ("for t in number letter; do posym train --task $t --scale paper --seed 0-4 --precision fp16 "
                "--device cuda --out 'runs/fp16/{task}-s{seed}' && posym analyze runs/fp16/$t-s? --device cuda; done")


FP16_SEEDS = (0, 1, 2)


def fp16_results(inp: dict, gamma: float = 0.1) -> dict:
    """Experiment 1: the Number runs trained in fp16 (``summary``, :func:`run_summary`) beside the fp32 runs:
    ``pairs`` (per seed and quantity: the fp32 run of the same seed, the fp16 run, the fp32 values of seeds
    0-4 and whether the fp16 value lies inside their range) and ``reference`` (the fp32 summary), or ``None``
    each when no fp16 run is committed; ``partial`` describes the runs that did not finish."""
    partial = {int(k): v for k, v in (inp.get("fp16_partial") or {}).items()}
    if inp.get("fp16_eval") is None:
        return {"pairs": None, "summary": None, "reference": None, "partial": partial}
    num = {k: inp[k][inp[k]["task"] == "number"] for k in ("eval", "scores")}
    ref = run_summary(num["eval"], num["scores"], gamma)
    new = run_summary(inp["fp16_eval"], inp["fp16_scores"], gamma)
    pairs = seed_spread(ref, new)
    same = ref.set_index("seed")
    pairs.insert(4, "fp32_same_seed", [_as_shown(q, float(same.loc[sd, q])) if sd in same.index else math.nan
                                       for sd, q in zip(pairs["seed"], pairs["quantity"])])
    return {"pairs": pairs, "summary": new, "reference": ref, "partial": partial}


def _seeds(seeds) -> str:
    """``"seed 0"`` or ``"seeds 0, 1"``."""
    seeds = list(seeds)
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)}"


def _stopped(partial: dict) -> str:
    """The unfinished fp16 runs in words (``""`` when none)."""
    if not partial:
        return ""
    seeds = sorted(partial)
    steps = {partial[s]["last_step"] for s in seeds}
    where = f"{steps.pop():,}" if len(steps) == 1 else ", ".join(f"{partial[s]['last_step']:,}" for s in seeds)
    first = partial[seeds[0]]
    resume = first["resume"].replace(f"--seeds {seeds[0]}", "--seeds " + " ".join(map(str, seeds)))
    return (f" Run {_seeds(seeds)} stopped at step {where} of "
            f"{first['steps']:,} ({first['note']}); `{resume}` finishes {'them' if len(seeds) > 1 else 'it'}.")


def fp16_table(fp16: dict) -> pd.DataFrame:
    """The page's table of experiment 1: per fp16 run and quantity, its value beside the fp32 run of the same
    seed and the range of the fp32 seeds 0-4 (a one-row status table when no fp16 run is committed)."""
    p = fp16.get("pairs")
    if p is None:
        return pd.DataFrame({"status": ["no fp16 run committed"]})

    def span(q, lo, hi) -> str:
        lo, hi = _fmt_quantity(q, lo), _fmt_quantity(q, hi)
        return lo if lo == hi else f"{lo}–{hi}"
    return pd.DataFrame({"seed": p["seed"], "quantity": p["quantity"].map(_SPREAD_NAMES),
                         "fp16": [_fmt_quantity(q, v) for q, v in zip(p["quantity"], p["value"])],
                         "fp32 twin": [_fmt_quantity(q, v) for q, v in zip(p["quantity"], p["fp32_same_seed"])],
                         "fp32, seeds 0–4": [span(*a) for a in zip(p["quantity"], p["ref_min"], p["ref_max"])],
                         "inside": p["inside"].map({True: "yes", False: "no"})})


def fp16_verdicts(fp16: dict) -> dict:
    """Per kind (``positional``, ``symbolic``): the fp16 and same-seed fp32 mean counts, whether fp16 gives the
    paper's count in more than half of the seeds (``reproduces``) or moves the mean at least 0.5 heads towards it
    (``part_way``), and in how many seeds layer 0 (4) ends pure positional (symbolic); ``{}`` without fp16 runs.
    ``fp32_hits`` of the ``fp32_seeds`` fp32 runs give the paper's count; ``chance`` is the probability that at
    that rate at least as many fp16 seeds as observed would give it (binomial), the odds of the fp16 result if
    fp16 changed nothing."""
    new, ref_all = fp16.get("summary"), fp16.get("reference")
    if new is None:
        return {}
    ref = ref_all[ref_all["seed"].isin(new["seed"])]
    out = {}
    for k, (kind, layer) in enumerate((("positional", 0), ("symbolic", 4))):
        paper = PAPER_COUNTS["number"][k]
        m16, m32 = float(new[kind].mean()), float(ref[kind].mean())
        hits, hits32, n = int((new[kind] == paper).sum()), int((ref_all[kind] == paper).sum()), len(new)
        out[kind] = {"paper": paper, "fp16_mean": m16, "fp32_mean": m32, "fp16": new[kind].tolist(),
                     "fp32": ref[kind].tolist(), "reproduces": hits > n / 2,
                     "part_way": abs(m32 - paper) - abs(m16 - paper) >= 0.5, "layer": layer,
                     "layer_pure": int((new[f"L{layer}_kind"] == kind).sum()), "seeds": n, "hits": hits,
                     "fp32_hits": hits32, "fp32_seeds": len(ref_all),
                     "chance": binomial_tail(hits, n, hits32 / len(ref_all))}
    return out


def fp16_text(fp16: dict) -> str:
    """Experiment 1 in words: the fp16 runs' counts, best steps and layers 0 and 4 beside the fp32 runs of the
    same seeds, and how many of their numbers lie inside the fp32 spread."""
    new, p = fp16.get("summary"), fp16.get("pairs")
    if new is None:
        return "No fp16 run is committed yet." + _stopped(fp16.get("partial") or {})
    ref = fp16["reference"].set_index("seed")
    runs = "; ".join(f"seed {r.seed}: {r.positional} + {r.symbolic} (fp32 {ref.loc[r.seed, 'positional']} + "
                     f"{ref.loc[r.seed, 'symbolic']}), best step {r.best_step:,} (fp32 {ref.loc[r.seed, 'best_step']:,})"
                     for r in new.itertuples())
    ends = [f"layer {layer} ends " + ", ".join(
        f"{r[f'L{layer}_kind']} ({r[f'L{layer}_pos']:.2f}/{r[f'L{layer}_sym']:.2f})" for _, r in new.iterrows())
        for layer in (0, 4)]
    layers = ("By seed, " if len(new) > 1 else "") + "; ".join(ends)
    layers = layers[0].upper() + layers[1:]
    inside = int(p["inside"].sum())
    return (f"Trained in fp16 (run {_seeds(new['seed'])}), the Number model has these pure "
            f"positional + symbolic heads and best steps: {runs}. {layers} (s_pos/s_sym). {inside} of the {len(p)} "
            f"numbers in the table lie inside the range of our fp32 seeds 0–4." + _stopped(fp16.get("partial") or {}))


def fp16_lesson(fp16: dict) -> str:
    """One sentence for the conclusions: what training in fp16 changes about the pure-head counts."""
    v = fp16_verdicts(fp16)
    if not v:
        return "The authors' precision (fp16) is untested: no fp16 run is committed."
    parts = []
    for kind, d in v.items():
        how = (f"gives the paper's count of pure {kind} heads" if d["reproduces"] else
               f"moves the count of pure {kind} heads part of the way to the paper's" if d["part_way"] else
               f"does not move the count of pure {kind} heads towards the paper's")
        odds = (f"; fp32 gives that count in {d['fp32_hits']} of its {d['fp32_seeds']} seeds, and at that rate "
                f"{d['hits']} or more of {d['seeds']} seeds would give it with probability {d['chance']:.2f}, so "
                f"{d['seeds']} seeds cannot tell this from chance" if d["reproduces"] and d["chance"] >= 0.05 else "")
        parts.append(f"{how} ({d['fp16_mean']:.1f} on average, fp32 {d['fp32_mean']:.1f}, paper {d['paper']}; "
                     f"layer {d['layer']} ends pure {kind} in {d['layer_pure']} of {d['seeds']} "
                     f"seed{'s' if d['seeds'] > 1 else ''}{odds})")
    n, m = len(fp16["summary"]), len(fp16["summary"]) + len(fp16.get("partial") or {})
    runs = (f"in its {n} finished run{'s' if n > 1 else ''}" if n == m else
            f"in the {'run' if n == 1 else f'{n} runs'} of {m} planned that finished")
    return f"Training the Number model in fp16, the authors' precision, {runs}, " + "; it ".join(parts) + "."


def fp16_glue(inp: dict, fp16: dict) -> dict[str, str]:
    """The page's fp16 sentences and numbers, by glue name: the probe's step-time ratios and loss gap
    (``precision_cpu.json``), :func:`fp16_text` and :func:`fp16_lesson`."""
    prec = inp.get("precision") or {}

    def num(key: str, fmt: str) -> str:
        return format(prec.get(key, math.nan), fmt)
    return {"fp16_ratio": num("fp16_over_fp32_time", ".1f"), "fp16_torch_ratio": num("fp16_torch_over_fp32_time", ".0f"),
            "fp16_torch_loss": num("fp16_vs_torch_kernels_loss_difference", ".0e"),
            "fp16_status": fp16_text(fp16), "fp16_lesson": fp16_lesson(fp16)}


def precision_probe(model_cfg, rounds: int = 6, batch: int = 64, seed: int = 0) -> dict:
    """Train three copies of a model from the same weights, one step each in turn, for ``rounds`` rounds on the
    same Number batches, without dropout: fp32; fp16 autocast with a gradient scaler as the book runs it on the
    CPU (half matrix products through float32 BLAS, :func:`posym.train.half_gemms`); and the same with torch's
    own CPU half kernels.  Returns the median step time of each, their ratios to fp32, and the losses."""
    import contextlib
    import dataclasses
    import statistics
    import time

    import torch
    from ..model import GPTJ
    from ..tasks import TaskDataset
    from ..train import _backward, half_gemms, precision_context

    model_cfg = dataclasses.replace(model_cfg, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    data = TaskDataset("number", "train", seed=seed, size=batch * rounds)
    torch.manual_seed(seed)
    base = GPTJ(model_cfg)
    routes = {"fp32": (lambda: precision_context("fp32"), contextlib.nullcontext),
              "fp16": (lambda: precision_context("fp16"), lambda: half_gemms("fp16")),
              "fp16_torch": (lambda: torch.autocast("cpu", dtype=torch.float16), contextlib.nullcontext)}
    variants = {}
    for p in routes:
        m = GPTJ(model_cfg)
        m.load_state_dict(base.state_dict())
        variants[p] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4),
                       torch.amp.GradScaler("cpu") if p != "fp32" else None)
    times = {p: [] for p in variants}
    losses = {p: [] for p in variants}
    for r in range(rounds):
        x, y, _ = data.batch(range(batch * r, batch * (r + 1)))
        for p, (m, opt, scaler) in variants.items():
            forward, backward = routes[p]
            t = time.perf_counter()
            with forward():
                loss = torch.nn.functional.cross_entropy(m(x)[:, -1].float(), y)
            opt.zero_grad(set_to_none=True)
            with backward():
                _backward(loss, m, opt, scaler, 0.0)
            times[p].append(time.perf_counter() - t)
            losses[p].append(float(loss.detach()))
    ms = {p: 1000 * statistics.median(v) for p, v in times.items()}

    def gap(a, b):
        return max(abs(u - v) for u, v in zip(losses[a], losses[b]))
    return {"fp16_autocast_runs_on_cpu": True, "rounds": rounds, "ms_median": ms,
            "fp16_over_fp32_time": ms["fp16"] / ms["fp32"], "fp16_torch_over_fp32_time": ms["fp16_torch"] / ms["fp32"],
            "loss_per_round": losses, "max_loss_difference": gap("fp32", "fp16"),
            "fp16_vs_torch_kernels_loss_difference": gap("fp16", "fp16_torch")}


# -----------------------------------------------------------------------------------------------
# The inputs of the page: committed results, or stand-ins of the same shape

def load_inputs(cfg) -> dict:
    """Everything the page shows, as tables: ``cfg.source == "committed"`` reads data/paper and
    data/reconcile (a missing reconcile result is ``None``); ``"standin"`` builds tiny synthetic tables of the
    same shape and runs the long-prompt, per-prompt and precision code on a tiny untrained model (seconds)."""
    if cfg.source == "committed":
        return committed_inputs(cfg.data_dir)
    return standin_inputs(cfg.n_length)


def committed_inputs(data_dir) -> dict:
    from pathlib import Path

    from .. import io as pio, results

    data_dir = Path(data_dir)
    paper, rec = data_dir / "paper", data_dir / "reconcile"
    out = {"eval": results.load_table(paper, "eval"), "scores": results.load_table(paper, "scores"),
           "freq_scores": results.load_table(paper, "freq_scores"), "length": results.load_table(paper, "length"),
           "source": "committed"}

    def opt(name):
        p = rec / name
        return pio.read_table(p) if p.exists() else None

    out["length_protocol"] = opt("length_protocol.parquet")
    out["per_prompt"] = opt("per_prompt.parquet")
    out["weightings_per_prompt"] = opt("weightings_per_prompt.parquet")
    out["precision"] = pio.read_json(rec / "precision_cpu.json") if (rec / "precision_cpu.json").exists() else None
    runs = {"seed42": [rec / "number-s42", rec / "letter-s42"], "fp16": sorted(rec.glob("number-fp16-s*"))}
    for key, folders in runs.items():
        folders = [d for d in folders if (d / "manifest.json").exists()]
        tabs = results.stack_run_tables(folders, {"eval": "eval.csv", "scores": "scores.parquet"}) if folders \
            else {"eval": None, "scores": None}
        out[f"{key}_eval"], out[f"{key}_scores"] = tabs["eval"], tabs["scores"]
    for key in ("seed42_partial", "fp16_partial"):
        out[key] = pio.read_json(rec / f"{key}.json") if (rec / f"{key}.json").exists() else None
    return out


def _standin_run(task: str, seed: int, steps: np.ndarray, n_layer: int = 12):
    """Synthetic eval and scores of one run: accuracy curves that reach 1, layers that turn pure or stay mixed."""
    rng = np.random.default_rng([seed, TASKS.index(task)])
    best = {"number": 4300, "letter": 2500}[task] + int(rng.integers(-6, 7)) * 50
    ev = []
    for hop in ("1", "2", "3", "4", "all"):
        mid = best * (0.55 + 0.08 * (int(hop) if hop != "all" else 4)) if task == "number" else best * 0.8
        acc = np.clip(1 / (1 + np.exp(-(steps - mid) / (0.04 * best))), 0, 1)
        acc = np.where(steps >= best, 1.0, np.minimum(acc, 0.999))
        ev.append(pd.DataFrame({"step": steps, "hop": hop, "accuracy": acc}))
    sc = []
    for layer in range(n_layer):
        kind = ("mixed" if layer in (0, 4) else "positional" if layer < 4 else "symbolic") if task == "number" \
            else ("mixed" if layer == 0 else "symbolic")
        t0 = best * rng.uniform(0.2, 0.9)
        r = 1 / (1 + np.exp(-(steps - t0) / (0.03 * best)))
        if kind == "positional":
            pos, sym = 1 - 0.001 * r, 1 - 0.999 * r
        elif kind == "symbolic":
            pos, sym = 1 - 0.999 * r, 1 - 0.001 * r
            if task == "letter" and layer >= 10:  # the transient dip of the last layers
                sym = sym - 0.85 * np.exp(-((steps - 0.55 * best) / (0.1 * best)) ** 2)
        else:
            pos, sym = 1 - 0.6 * r, 1 - 0.35 * r
        sc.append(pd.DataFrame({"step": steps, "layer": layer, "head": 0, "pos": pos, "sym": np.clip(sym, 0, 1)}))
    ev, sc = pd.concat(ev, ignore_index=True), pd.concat(sc, ignore_index=True)
    for d in (ev, sc):
        d.insert(0, "seed", seed)
        d.insert(0, "task", task)
    return ev, sc


def standin_inputs(n_length: int = 8, seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """Tiny stand-ins of every input of the page (see :func:`load_inputs`)."""
    import torch
    from ..model import GPTJ, ModelConfig
    from ..tasks import get_task, to_tensors, balanced_eval_set

    steps = np.array([0, 1, 2, 5, 10, 20] + list(range(50, 6751, 50)))
    evs, scs, fss, lens, e42 = [], [], [], [], []
    freqs = np.arange(64)
    for task in TASKS:
        e42.append(_standin_run(task, 42, steps))
        for seed in seeds:
            ev, sc = _standin_run(task, seed, steps)
            evs.append(ev)
            scs.append(sc)
            rng = np.random.default_rng([seed, 7, TASKS.index(task)])
            for layer in range(12):
                fast = task == "number" and layer < 5
                u = (60 * np.exp(-freqs / (1.5 + layer)) if fast else 2 + 0.05 * freqs) + rng.normal(0, 1, 64)
                fss.append(pd.DataFrame({"task": task, "seed": seed, "step": 6750, "layer": layer, "head": 0,
                                         "freq": freqs, "maxlogit": u, "maxlogit_sd": np.abs(rng.normal(3, 1, 64))}))
            for L in (17, 100, 500, 1000, 5000):
                for hop in ("1", "2", "3", "4", "all"):
                    k = 1 if hop == "all" else int(hop)
                    scale = {"number": 150, "letter": 1200}[task] * (4.0 if hop == "1" else 1.0 / k)
                    lens.append({"task": task, "seed": seed, "length": L, "hop": hop,
                                 "accuracy": float(np.exp(-max(0, L - 17) / scale)), "n": 100})
    out = {"eval": pd.concat(evs, ignore_index=True), "scores": pd.concat(scs, ignore_index=True),
           "freq_scores": pd.concat(fss, ignore_index=True), "length": pd.DataFrame(lens), "source": "standin"}
    out["seed42_eval"] = pd.concat([e for e, _ in e42], ignore_index=True)
    out["seed42_scores"] = pd.concat([s for _, s in e42], ignore_index=True)
    f16 = [_standin_run("number", 100 + seed, steps) for seed in FP16_SEEDS]  # other draws, renamed to the seeds
    out["fp16_eval"], out["fp16_scores"] = (pd.concat([t[i].assign(seed=seed) for t, seed in zip(f16, FP16_SEEDS)],
                                                      ignore_index=True) for i in (0, 1))
    out["seed42_partial"] = out["fp16_partial"] = None
    # the code paths that need a model, on a tiny untrained one
    torch.manual_seed(0)
    curves, pp = [], []
    for task in TASKS:
        t = get_task(task)
        model = GPTJ(ModelConfig.smoke(vocab_size=len(t.vocab))).eval()
        curves.append(length_protocol(model, task, 0, CONSTRUCTIONS, (17, 48), n_length))
        samples = balanced_eval_set(t, max(4, n_length - n_length % 4), seed=0, split="test")
        x, _, hops = to_tensors(samples, t.vocab)
        pp.append(per_prompt_scores(model, x, hops.numpy(), task=task, seed=0, step=6750))
    out["length_protocol"] = pd.concat(curves, ignore_index=True)
    out["per_prompt"] = pd.concat(pp, ignore_index=True)
    out["weightings_per_prompt"] = None
    out["precision"] = precision_probe(ModelConfig.smoke(vocab_size=len(get_task("number").vocab)), rounds=2,
                                       batch=8)
    return out


# -----------------------------------------------------------------------------------------------
# The page's tables

def grid_results(inp: dict, gamma: float = 0.1) -> dict:
    """Experiment 3: ``table`` (per run and grid), ``summary`` (per task and grid) and ``dip`` (Letter L10/L11)."""
    t = grid_table(inp["eval"], inp["scores"])
    return {"table": t, "summary": grid_summary(t, gamma), "dip": dip_table(inp["scores"])}


def purity_results(inp: dict) -> dict:
    """Experiment 4: ``rules`` (every rule, every run; fraction rules on the runs with per-prompt scores) and
    ``summary`` (one row per rule).  The seed-42 runs' per-prompt scores, when present, are left out here (they
    are not among the seeds the mean rules are counted on) and used in experiment 2 (:func:`seed42_results`)."""
    pp = inp.get("per_prompt")
    if pp is not None:
        pp = pp[pp["seed"] != 42]
    rules = purity_rules(inp["eval"], inp["scores"], per_prompt=pp)
    return {"rules": rules, "summary": rules_summary(rules)}


def weighting_results(inp: dict) -> dict:
    """Experiment 5: ``ids`` (per run, layer, weighting), ``layers`` (beside Table 1), ``summary``; and
    ``exact`` (seed 0, the weights averaged over prompts exactly, from the per-prompt max logits; ``mode_id``: the
    most frequent per-prompt arg-max), or a one-row status table when they were not computed."""
    ids = weighting_table(inp["freq_scores"])
    layers, summary = table1_weightings(ids)
    out = {"ids": ids, "layers": layers, "summary": summary,
           "exact": pd.DataFrame({"status": ["no per-prompt max logits (scripts/reconcile_runs.py perprompt)"]})}
    w = inp.get("weightings_per_prompt")
    if w is not None:
        e = w.pivot_table(index=["task", "layer"], columns="weighting", values="id").reset_index()
        e["argmax_mode"] = w[w["weighting"] == "argmax"].set_index(["task", "layer"])["mode_id"].reindex(
            pd.MultiIndex.from_frame(e[["task", "layer"]])).to_numpy()
        e.columns.name = None
        e.insert(2, "paper_id", [PAPER_TABLE1[t][int(l)][0] for t, l in zip(e["task"], e["layer"])])
        out["exact"] = e.sort_values(["task", "layer"], key=_task_key).reset_index(drop=True)
    return out


def length_results(inp: dict) -> dict:
    """Experiment 6: ``curves`` (the sweep's constructions, plus the committed book construction on all hops
    and its 1-hop rows, mean over seeds) and ``verdicts`` (:func:`length_verdicts`)."""
    from ..longprompts import length_summary

    s = length_summary(inp["length"])
    frames = []
    for hop, name in (("all", "book, 500 prompts, 5 seeds"), ("1", "1-hop only (book, 5 seeds)")):
        d = s[s["hop"] == hop]
        frames.append(pd.DataFrame({"task": d["task"], "construction": name, "length": d["length"], "hop": "all",
                                    "accuracy": d["mean"], "n": d["seeds"]}))
    lp = inp.get("length_protocol")
    if lp is not None:  # the sweep's own run of the book's construction: seed 0, its prompts
        lp = lp.assign(construction=lp["construction"].replace({"book": "book, seed 0"}))
        frames.append(lp[["task", "construction", "length", "hop", "accuracy", "n"]])
    curves = pd.concat(frames, ignore_index=True)
    return {"curves": curves, "verdicts": length_verdicts(curves),
            "solver_ok": (None if lp is None else
                          lp[lp["hop"] == "all"].groupby(["task", "construction"])["solver_ok"].min().reset_index())}


def seed42_results(inp: dict, gamma: float = 0.1) -> dict:
    """Experiment 2: the seed-42 runs' summary beside the five seeds' spread (``spread``) and their pure-head
    counts under every purity rule of experiment 4 (``rules``, :func:`purity_rules`; the fraction rules from their
    per-prompt scores when committed), or ``None`` when no seed-42 run is committed; ``partial`` describes a run
    that did not finish."""
    if inp.get("seed42_eval") is None:
        return {"spread": None, "summary": None, "rules": None, "partial": inp.get("seed42_partial")}
    ref = run_summary(inp["eval"], inp["scores"], gamma)
    new = run_summary(inp["seed42_eval"], inp["seed42_scores"], gamma)
    pp = inp.get("per_prompt")
    pp = pp[pp["seed"] == 42] if pp is not None else None
    rules = purity_rules(inp["seed42_eval"], inp["seed42_scores"], per_prompt=pp)
    return {"spread": seed_spread(ref, new), "summary": pd.concat([ref, new], ignore_index=True),
            "rules": rules, "partial": inp.get("seed42_partial")}


_SPREAD_NAMES = {"best_step": "best step", "positional": "pure positional heads",
                 "symbolic": "pure symbolic heads", "L0_pos": "layer 0 s_pos", "L0_sym": "layer 0 s_sym",
                 "L4_pos": "layer 4 s_pos", "L4_sym": "layer 4 s_sym"}


def seed42_table(seed42: dict) -> pd.DataFrame:
    """The page's table of experiment 2: per finished seed-42 run and quantity, its value beside seeds 0–4's
    values and whether it lies inside their range (a one-row status table when no seed-42 run is committed)."""
    sp = seed42.get("spread")
    if sp is None:
        return pd.DataFrame({"status": ["no seed-42 run committed"]})
    return pd.DataFrame({"task": sp["task"], "quantity": sp["quantity"].map(_SPREAD_NAMES),
                         "seed 42": [_fmt_quantity(q, v) for q, v in zip(sp["quantity"], sp["value"])],
                         "seeds 0–4": sp["ref_values"], "inside their range": sp["inside"].map({True: "yes",
                                                                                                False: "no"})})


def seed42_text(seed42: dict) -> str:
    """Experiment 2 in words: per task, the seed-42 run's numbers and how many lie inside seeds 0–4's range
    (:func:`seed_spread`), or where an unfinished run stopped (``seed42_partial.json``)."""
    sp, partial, rules = seed42.get("spread"), seed42.get("partial") or {}, seed42.get("rules")
    parts = []
    for task in TASKS:
        rows = sp[sp["task"] == task] if sp is not None else pd.DataFrame()
        if len(rows):
            out = rows[~rows["inside"]]
            fmt = {q: _fmt_quantity(q, v) for q, v in zip(rows["quantity"], rows["value"])}
            counts = f"{fmt['positional']} pure positional and {fmt['symbolic']} pure symbolic heads"
            where = ("all inside the range of seeds 0–4" if out.empty else
                     f"{len(rows) - len(out)} of {len(rows)} inside the range of seeds 0–4; outside: "
                     + ", ".join(f"{_SPREAD_NAMES[q]} {fmt[q]} (seeds 0–4: {r})"
                                 for q, r in zip(out["quantity"], out["ref_values"])))
            if rules is not None and (rules["task"] == task).any():
                r = rules[rules["task"] == task]
                where += (f"; {int(r['matches'].sum())} of {len(r)} purity rules give the paper's "
                          f"{PAPER_COUNTS[task][0]} + {PAPER_COUNTS[task][1]}")
            parts.append(f"{task.capitalize()}, run seed 42: best step {fmt['best_step']}, {counts}; {where}")
        elif task in partial:
            p = partial[task]
            parts.append(f"{task.capitalize()}, run seed 42: stopped at step {p['last_step']:,} of {p['steps']:,} "
                         f"({p['note']})")
        else:
            parts.append(f"{task.capitalize()}, run seed 42: not run")
    return ". ".join(parts) + "."


def seed42_lesson(seed42: dict) -> str:
    """One sentence for the chapter's conclusions: what the finished seed-42 runs say about the paper's pure-head
    counts and best steps (or that the authors' run seed is still untested)."""
    summ = seed42.get("summary")
    new = summ[summ["seed"] == 42] if summ is not None else pd.DataFrame()
    if new.empty:
        return "The authors' run seed (42) is untested: no seed-42 run has finished."
    parts, reproduced = [], True
    order = {t: i for i, t in enumerate(TASKS)}
    for r in sorted(new.itertuples(), key=lambda r: order.get(r.task, len(order))):
        pp, ps = PAPER_COUNTS[r.task]
        same = (r.positional, r.symbolic) == (pp, ps)
        reproduced &= same
        parts.append(f"the {r.task.capitalize()} model trained with run seed 42 has {r.positional} pure positional "
                     f"and {r.symbolic} pure symbolic heads (paper: {pp} and {ps}), its best step is "
                     f"{r.best_step:,} (paper: about {PAPER_BEST[r.task]:,}) and its layer 0 ends "
                     f"{r.L0_kind} (s_pos {r.L0_pos:.2f}, s_sym {r.L0_sym:.2f})")
    text = "; ".join(parts)
    if reproduced:
        return f"Run seed 42, the seed of the authors' data script, does: {text}, as in the paper."
    return (f"Run seed 42, the seed of the authors' data script, does not either: {text}, so the authors' seed "
            f"alone does not give the paper's counts.")


def _mean_counts(rules: pd.DataFrame, rule: str, task: str) -> tuple[float, float]:
    r = rules[(rules["rule"] == rule) & (rules["task"] == task)]
    return float(r["positional"].mean()), float(r["symbolic"].mean())


def disagreements(inp: dict, grid: dict, purity: dict, weights: dict, length: dict, seed42: dict,
                  gamma: float = 0.1, fp16: dict | None = None) -> pd.DataFrame:
    """One row per disagreement with the paper: ours, the paper's, the hypotheses tested, what each changed, and
    the verdict by the rules of the module docstring.  fp16 (:func:`fp16_results`) was run for Number only; it
    is listed as untested where it has no run."""

    book_rule = f"prompt mean, γ = {gamma}, cumulative"
    rs = purity["summary"]
    any_rule = rs[rs["reproduces"]]["rule"].tolist()
    gs = grid["summary"]
    sp = seed42["spread"]

    def s42(task, q):
        r = sp[(sp["task"] == task) & (sp["quantity"] == q)] if sp is not None else pd.DataFrame()
        if r.empty:
            return "unfinished (see experiment 2)" if task in (seed42.get("partial") or {}) else "not run"
        r = r.iloc[0]
        return f"{r['value']:,.0f} ({'inside' if r['inside'] else 'outside'} seeds 0–4: {r['ref_values']})"

    rows = []
    for kind, k in (("positional", 0), ("symbolic", 1)):
        pc = PAPER_COUNTS["number"][k]
        ours = _mean_counts(purity["rules"], book_rule, "number")[k]
        rng = {r: _mean_counts(purity["rules"], r, "number")[k] for r in purity["rules"]["rule"].unique()}
        g250 = gs[(gs["task"] == "number") & (gs["grid"] == 250)].iloc[0][kind[:3]]
        lay = 0 if kind == "positional" else 4
        changed = (f"purity rule: {min(rng.values()):.1f}–{max(rng.values()):.1f} heads on average over "
                   f"{len(rng)} rules, none gives {pc}; 250-step grid: per seed {g250}; seed 42: "
                   f"{s42('number', kind)}")
        f16 = fp16_verdicts(fp16 or {}).get(kind)
        if f16:
            changed += (f"; fp16: per seed {', '.join(str(v) for v in f16['fp16'])} (fp32, same seeds: "
                        f"{', '.join(str(v) for v in f16['fp32'])}), layer {lay} pure in {f16['layer_pure']} of "
                        f"{f16['seeds']}" + (f"; fp32 gives {pc} in {f16['fp32_hits']} of {f16['fp32_seeds']} seeds (at "
                                             f"that rate, {f16['hits']} or more of {f16['seeds']}: probability "
                                             f"{f16['chance']:.2f})" if f16["hits"] else ""))
        explained = bool(any_rule) or bool(f16 and f16["reproduces"])
        verdict = "explained" if explained else "partly explained" if f16 and f16["part_way"] else "unexplained"
        rows.append({"disagreement": f"Number: pure {kind} heads (layer {lay} never pure)", "paper": str(pc),
                     "ours": f"{ours:.1f}", "tested": "purity rule (mean / share of prompts, γ, when), grid, seed 42, "
                     + (f"fp16 ({_seeds(fp16['summary']['seed'])})" if f16 else "fp16 untested"),
                     "what changed": changed, "verdict": verdict})
    b50 = gs[(gs["task"] == "letter") & (gs["grid"] == 50)].iloc[0]
    b250 = gs[(gs["task"] == "letter") & (gs["grid"] == 250)].iloc[0]
    moved = b250["best_step"] - b50["best_step"]
    verdict = "explained" if b250["best_agrees"] else ("partly explained" if moved > 0 else "unexplained")
    rows.append({"disagreement": "Letter: step of best validation accuracy", "paper": f"≈{PAPER_BEST['letter']:,}",
                 "ours": f"{b50['best_step']:,.0f}", "tested": "250-step grid, seed 42; fp16 not run for Letter",
                 "what changed": f"250-step grid: {b250['best_step']:,.0f} (per seed {b250['best_steps']}); "
                                 f"seed 42: {s42('letter', 'best_step')}", "verdict": verdict})
    lay = weights["layers"]
    num03 = lay[(lay["task"] == "number") & (lay["layer"] <= 3)]
    parts, ok_any = [], False
    for w in WEIGHTINGS:
        ok = bool(num03[f"{w}_ok"].all())
        ok_any |= ok
        parts.append(f"{w}: {', '.join(f'{v:.1f}' for v in num03[w])}")
    summ = weights["summary"]
    rows.append({"disagreement": "Table 1: frequency IDs of Number layers 0–3",
                 "paper": ", ".join(str(v) for v in num03["paper_id"]),
                 "ours": ", ".join(f"{v:.1f}" for v in num03["positive"]),
                 "tested": "weighting: positive part (ours), |·|, square, arg-max",
                 "what changed": "; ".join(parts) + "; " + _whole_table(summ),
                 "verdict": "explained" if ok_any else "unexplained"})
    v = length["verdicts"]
    c = length["curves"][length["curves"]["hop"] == "all"]
    for task, lengths in (("letter", (850, 5000)), ("number", (250, 500))):
        book = c[(c["task"] == task) & (c["construction"].str.startswith("book, 500"))]
        ours = ", ".join(f"{_at(book, L):.2f} at {L:,}" for L in lengths)
        paper = ", ".join(f"{PAPER_FIG5B[task][L]:.2f} at {L:,}" for L in lengths)
        vt = v[v["task"] == task]
        best = vt.sort_values("max_diff").iloc[0] if len(vt) else None
        parts = []
        for r in vt.itertuples():
            cur = c[(c["task"] == task) & (c["construction"] == r.construction)]
            got = [f"{_at(cur, L):.2f} at {L:,}" for L in lengths if _has(cur, L)]
            if got and not r.construction.startswith("book, 500"):
                parts.append(f"{r.construction}: {', '.join(got)}")
        changed = "; ".join(parts)
        closer = best is not None and not best["construction"].startswith("book") and \
            best["max_diff"] < float(vt[vt["construction"].str.startswith("book, 500")]["max_diff"].min())
        verdict = "explained" if (best is not None and best["reproduces"] and not best["construction"].startswith("book")) \
            else ("partly explained" if closer else "unexplained")
        rows.append({"disagreement": f"{task.capitalize()}: accuracy on long prompts (Fig. 5B)", "paper": paper,
                     "ours": ours, "tested": "filler place, filler tokens, solver re-check, 1-hop only",
                     "what changed": changed or "sweep not run",
                     "verdict": verdict})
    return pd.DataFrame(rows)


def _whole_table(summary: pd.DataFrame) -> str:
    """What the whole-table rule says, with the seed-to-seed range that makes an agreement informative."""
    full = summary[summary["reproduces"]].groupby("weighting")["task"].nunique()
    full = [w for w, n in full.items() if n == len(TASKS)]
    if not full:
        return "no weighting passes the whole-table rule"
    parts = []
    for w in full:
        r = summary[summary["weighting"] == w]
        parts.append(f"{w} ({', '.join(f'{a}/{b}' for a, b in zip(r['layers_agree'], r['of']))} layers; median "
                     f"seed-to-seed range {', '.join(f'{v:.0f}' for v in r['median_seed_range'])} IDs)")
    return "whole-table rule passed by " + "; ".join(parts)


def _has(curve: pd.DataFrame, L: int) -> bool:
    """Whether ``L`` lies within the lengths a curve was measured at (10 % beyond either end allowed)."""
    if not len(curve):
        return False
    lo, hi = float(curve["length"].min()), float(curve["length"].max())
    return 0.9 * lo <= L <= 1.1 * hi


def _at(curve: pd.DataFrame, L: int) -> float:
    """Accuracy of a curve (columns length, accuracy) at ``L``, interpolated linearly in log length."""
    d = curve.sort_values("length")
    if d.empty:
        return math.nan
    return float(np.interp(math.log(L), np.log(d["length"].to_numpy(dtype=float)), d["accuracy"].to_numpy()))


# -----------------------------------------------------------------------------------------------
# Figures

def plot_grid(grid: dict, scores: pd.DataFrame):
    """Left: best step per seed on the 50- and 250-step grids beside the paper's; right: the Letter L10/L11
    ``s_sym`` dip of every seed, the 250-step grid's checkpoints marked."""
    import matplotlib.pyplot as plt
    from ..plotting import COLORS, task_color

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    t = grid["table"]
    for i, task in enumerate(TASKS):
        for j, g in enumerate((50, 250)):
            d = t[(t["task"] == task) & (t["grid"] == g)]
            x = np.full(len(d), 2 * i + 0.6 * j) + np.linspace(-0.12, 0.12, len(d))
            a.scatter(x, d["best_step"], color=task_color(task), marker="o" if g == 50 else "s",
                      facecolors="none" if g == 250 else task_color(task), label=f"{task}, {g}-step grid")
        a.hlines(PAPER_BEST[task], 2 * i - 0.3, 2 * i + 0.9, color=COLORS["neutral"], ls="--")
    a.set_xticks([0, 0.6, 2, 2.6], ["Number\n50", "Number\n250", "Letter\n50", "Letter\n250"])
    a.set_ylabel("step of best validation accuracy")
    a.set_title("best step by grid (dashed: the paper)", fontsize=10)
    s = scores[(scores["task"] == "letter") & scores["layer"].isin([10, 11])]
    for (seed, layer), g in s.groupby(["seed", "layer"]):
        g = g[g["step"] >= 100]
        a_ = 0.35 if layer == 10 else 0.8
        b.plot(g["step"], g["sym"], color=task_color("letter"), alpha=a_, lw=1)
        c = on_grid(g, 250)
        b.plot(c["step"], c["sym"], "s", ms=3, color="black", alpha=a_)
    b.set(xlabel="training step", ylabel="$s_{SYM}$", xlim=(0, 4000),
          title="Letter L10 (light) and L11: the dip; squares = 250-step grid")
    b.title.set_fontsize(10)
    return fig


def plot_weightings(weights: dict):
    """The frequency ID per layer under each weighting (mean over seeds) beside the paper's Table 1."""
    import matplotlib.pyplot as plt

    lay = weights["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    marks = {"positive": "o", "absolute": "^", "square": "s", "argmax": "D"}
    for ax, task in zip(axes, TASKS):
        d = lay[lay["task"] == task]
        ax.plot(d["layer"], d["paper_id"], "k-", lw=2, label="paper (Table 1)")
        for w in WEIGHTINGS:
            ax.plot(d["layer"], d[w], marker=marks[w], ls=":", ms=5, label=w)
        ax.set(xlabel="layer", title=f"{task.capitalize()} task", ylim=(0, 65))
    axes[0].set_ylabel("frequency ID (1 = fastest)")
    axes[1].legend(fontsize=7, loc="lower right")
    return fig


def plot_length(length: dict):
    """Accuracy against prompt length for every construction, with the paper's Fig. 5B points."""
    import matplotlib.pyplot as plt

    c = length["curves"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, task in zip(axes, TASKS):
        d = c[(c["task"] == task) & (c["hop"] == "all")]
        for name, g in d.groupby("construction", sort=False):
            g = g.sort_values("length")
            book = name.startswith("book, 500") or name.startswith("1-hop only")
            ax.plot(g["length"], g["accuracy"], marker="o" if not book else None, ms=3,
                    lw=2.2 if book else 1, label=name)
        p = PAPER_FIG5B[task]
        ax.plot(list(p), list(p.values()), "k*", ms=10, label="paper (Fig. 5B)")
        ax.set(xscale="log", xlabel="prompt length (tokens)", title=f"{task.capitalize()} task", ylim=(-0.02, 1.02))
        ax.legend(fontsize=6.5, loc="lower left")
    axes[0].set_ylabel("accuracy (all hops of the construction)")
    return fig


def plot_beside(inp: dict, key: str, label: str, gamma: float = 0.1):
    """Cumulative pure-head counts of the Number runs: our fp32 seeds 0–4 thin, the runs of ``inp[key]``
    (``seed42_scores``, ``fp16_scores``) bold, labelled ``label`` (when committed) with ``{seeds}`` replaced by
    the seeds they hold ("seed 0", "seeds 0, 1")."""
    import matplotlib.pyplot as plt
    from ..plotting import COLORS

    fig, ax = plt.subplots(figsize=(6, 3.4))
    frames = [("fp32, seeds 0–4", inp["scores"], 0.8, 0.35)]
    if inp.get(key) is not None:
        seeds = sorted(inp[key].loc[inp[key]["task"] == "number", "seed"].unique())
        frames.append((label.format(seeds=_seeds(seeds)), inp[key], 2.2, 1.0))
    for label, sc, lw, alpha in frames:
        sc = sc[sc["task"] == "number"]
        ev = T.purity_events(sc, gamma)
        counts = T.cumulative_counts(ev, sc["step"].unique(),
                                     groups=sorted(sc[["task", "seed"]].drop_duplicates().itertuples(index=False,
                                                                                                      name=None)))
        for kind in T.KINDS:
            for i, (_, g) in enumerate(counts.groupby("seed")):
                ax.step(g["step"], g[kind], where="post", color=COLORS[kind], lw=lw, alpha=alpha,
                        label=f"{kind}, {label}" if i == 0 else None)
    ax.axhline(4, color=COLORS["positional"], ls="--", lw=0.8)
    ax.axhline(8, color=COLORS["symbolic"], ls="--", lw=0.8)
    ax.set(xlabel="training step", ylabel="pure heads (cumulative)", title=f"Number task, γ = {gamma}; dashed: paper")
    ax.legend(fontsize=7)
    return fig
