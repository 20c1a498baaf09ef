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
  50-step checkpoint grid.  This is :func:`posym.dynamics.purity_events` ``rule="first"``, the rule of the
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
  off the figure (:data:`posym.lengthgen.PAPER_FIG5B`; 0.05 of read-off error plus about 0.05 of sampling
  error at 64-100 prompts).
* **The authors' seed (42).**  A quantity lands *inside* our five-seed spread when it lies within the minimum
  and maximum over seeds 0-4.
* **Verdicts.**  *explained*: a tested choice moves our value to the paper's by the rule above; *partly
  explained*: a tested choice moves it part of the way, or explains some of the layers or points; *unexplained*:
  no tested choice moves it.
"""
from __future__ import annotations

import importlib
import math
from typing import Iterable, Sequence

from posym.book import ChapterSpec, Param, Required, register


class _Lazy:
    """A module imported on first use: importing :mod:`posym.book` imports every chapter's specification, and
    that must stay cheap (``posym --help`` imports neither numpy's friends nor pandas)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


np = _Lazy("numpy")
pd = _Lazy("pandas")

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
        "n_length": Param(int, {"smoke": 8, "teaching": 16, "paper": 64},
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

#: The paper's values this appendix reconciles (notes §2.5, §2.9; the same numbers as posym.dynamics.PAPER and
#: posym.lengthgen.PAPER_FIG5B).
PAPER_COUNTS = {"number": (4, 8), "letter": (0, 11)}
PAPER_BEST = {"number": 4800, "letter": 3400}
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
    from posym import dynamics as D

    rows = []
    for grid in grids:
        e = eval_df if grid == 50 else on_grid(eval_df, grid)
        s = scores if grid == 50 else on_grid(scores, grid)
        best = D.best_steps(e)
        counts = {}
        for g in gammas:
            ev = D.purity_events(s, g, rule="first")
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
    from posym import metrics

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
    from posym import dynamics as D

    best = D.best_steps(eval_df).rename(columns={"best_step": "step"})
    runs = scores[["task", "seed"]].drop_duplicates().itertuples(index=False, name=None)
    runs = sorted(runs, key=lambda r: (TASKS.index(r[0]), r[1]))
    rows = []

    def add(statistic, gamma, when, counts, runs_here):
        for task, seed in runs_here:
            pos, sym = counts.get((task, seed, "positional"), 0), counts.get((task, seed, "symbolic"), 0)
            rows.append({"statistic": statistic, "gamma": gamma, "when": when, "task": task, "seed": int(seed),
                         "positional": pos, "symbolic": sym, "matches": (pos, sym) == PAPER_COUNTS[task]})

    for g in gammas:
        ev = D.purity_events(scores, g, rule="first")
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
    from posym.metrics import model_scores

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
    from posym.geometry import PAPER_TABLE1

    rows = []
    for (task, layer), g in table.groupby(["task", "layer"], sort=False):
        pid = PAPER_TABLE1[task][int(layer)][0]
        row = {"task": task, "layer": int(layer), "paper_id": pid}
        for w, gw in g.groupby("weighting", sort=False):
            ids = gw["id"].to_numpy()
            row[w] = float(np.nanmean(ids))
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
                          "reproduces": int(ok.sum()) >= min(min_layers, len(t))})
    return layers, pd.DataFrame(srows)


# -----------------------------------------------------------------------------------------------
# 6. Length protocol: how a long prompt is built

#: The constructions of the length sweep: (where the filler goes, what it is, re-checked by the solver, hops).
#: ``before``/``fresh``/re-checked/all hops is the book's construction (:func:`posym.lengthgen.extended_prompts`).
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
    from posym.tasks import Sample, get_task

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
    from posym.tasks import balanced_eval_set, get_task

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
    import time

    import torch
    from posym.tasks import get_task, to_tensors

    vocab = get_task(task).vocab
    rows = []
    model.eval()
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
    return pd.DataFrame(rows)


def length_verdicts(curves: pd.DataFrame, tol: float = LENGTH_TOL) -> pd.DataFrame:
    """Per task and construction: the largest |ours - paper| over the points of Fig. 5B that the sweep
    measured (overall accuracy; the paper's point at the nearest measured length within 10 %), and whether the
    construction reproduces the figure (every difference at most ``tol``).  Columns task, construction,
    points, max_diff, worst_length, reproduces, ours_at, paper_at."""
    from posym.lengthgen import PAPER_FIG5B

    rows = []
    a = curves[curves["hop"] == "all"]
    for (task, c), g in a.groupby(["task", "construction"], sort=False):
        acc = dict(zip(g["length"], g["accuracy"]))
        diffs, ours, theirs = [], [], []
        for L, p in PAPER_FIG5B[task].items():
            near = min(acc, key=lambda m: abs(m - L))
            if abs(near - L) > 0.1 * L:
                continue
            diffs.append((abs(acc[near] - p), near))
            ours.append(f"{acc[near]:.2f}@{near:,}")
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
    from posym import dynamics as D, metrics

    best = D.best_steps(eval_df)
    ev = D.purity_events(scores, gamma, rule="first")
    fin = D.final_classes(scores, gamma)
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


def seed_spread(reference: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Each numeric quantity of :func:`run_summary` for the ``new`` runs beside the ``reference`` seeds'
    minimum and maximum, and whether it lies inside.  Columns task, seed, quantity, value, ref_min, ref_max,
    ref_values, inside."""
    rows = []
    cols = ["best_step", "positional", "symbolic", "L0_pos", "L0_sym", "L4_pos", "L4_sym"]
    for r in new.itertuples():
        ref = reference[reference["task"] == r.task]
        for c in cols:
            v, lo, hi = float(getattr(r, c)), float(ref[c].min()), float(ref[c].max())
            fmt = (lambda x: f"{x:,.0f}") if c in ("best_step", "positional", "symbolic") else (lambda x: f"{x:.2f}")
            rows.append({"task": r.task, "seed": int(r.seed), "quantity": c, "value": v, "ref_min": lo,
                         "ref_max": hi, "ref_values": ", ".join(fmt(x) for x in ref[c]),
                         "inside": lo <= v <= hi})
    return pd.DataFrame(rows)
