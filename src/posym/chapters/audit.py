"""Helpers for the data-audit chapter (``book/audit.md``) on top of :mod:`posym.audit`.

:mod:`posym.audit` computes every table; this module picks what the chapter shows, computes the model-side
tables on a *subset* of held-out prompts (so the chapter can run at the smoke and teaching scales in
seconds), and reads the committed tables of ``data/audit/`` (``python -m posym.audit``) at the paper scale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import audit as A
from .. import io as pio
from ..spec import ChapterSpec, Param, Required, register

#: The regularities the chapter reports, per task: (table, statistic, slot) -> a short description.
HEADLINE = {
    "letter": [
        ("letter_frequency", "answer_letter_unique", None, "the answer's letter occurs once in the target window"),
        ("letter_frequency", "answer_unique_least_frequent", None,
         "the answer's letter is the unique least frequent one of the window"),
        ("letter_instructions", "signature_unique", None,
         "the answer is the only target token whose letter is unique, read by some instruction and starts none"),
        ("letter_instructions", "answer_letter_left_in_instructions", None,
         "the answer's letter starts some instruction (8–16)"),
        ("letter_instructions", "answer_letter_right_exactly_once", None,
         "the answer's letter is read (second letter) by exactly one instruction"),
        ("letter_instructions", "query_left_in_chain", None, "the query's first (unread) letter is a chain letter"),
        ("letter_distractors", "is_chain_letter", "instruction_right",
         "second letter of an off-chain instruction is a chain letter"),
        ("letter_distractors", "is_chain_letter", "instruction_left",
         "first letter of an off-chain instruction is a chain letter"),
        ("answer_multiplicity", "answer_token_repeated", None, "the answer token occurs twice in the window"),
    ],
    "number": [
        ("answer_multiplicity", "answer_letter_repeated", None, "the answer letter occurs twice in the window"),
    ],
}


def headline_regularities(tables: dict[str, pd.DataFrame], split: str = "test") -> pd.DataFrame:
    """One row per headline regularity (all hops): measured rate with its 95 % Wilson interval, the null
    rate and the ratio rate / null."""
    rows = []
    for task, specs in HEADLINE.items():
        for table, stat, slot, what in specs:
            t = tables.get(table)
            if t is None:
                continue
            m = (t["statistic"] == stat) & (t["hop"].astype(str) == "all") & (t["split"] == split)
            if "task" in t:
                m &= t["task"] == task
            if slot is not None:
                m &= t["slot"] == slot
            for r in t[m].itertuples():
                rows.append({"task": task, "regularity": what, "statistic": stat if slot is None else f"{slot}:{stat}",
                             "n": int(r.n), "rate": r.rate, "ci_lo": r.ci_lo, "ci_hi": r.ci_hi,
                             "null": r.null_rate, "rate / null": r.rate / r.null_rate if r.null_rate else np.nan})
    return pd.DataFrame(rows)


def number_offchain_into_target(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Number task: per instruction position, the share of off-chain instructions that point into the target
    window (with interval) against the generator's uniform value 8/t, and the same share on the chain."""
    t = table[(table["value"] == 0) & (table["split"] == split)]
    off = t[t["role"] == "off_chain"].set_index("position")
    on = t[t["role"] == "on_chain"].set_index("position")
    return pd.DataFrame({"off-chain n": off["n"], "off-chain into target": off["p_into_target"],
                         "ci_lo": off["p_into_target_lo"], "ci_hi": off["p_into_target_hi"],
                         "uniform 8/t": off["null_into_target"], "on-chain into target": on["p_into_target"]})


def compute_statistics(task: str, data: dict[str, dict], seed: int = 0,
                       splits: Sequence[str] = ("train", "test")) -> dict[str, pd.DataFrame]:
    """The statistics of :func:`posym.audit.run_audit` for one task on the given slices (no full-split
    duplicate count: see :func:`slice_duplicates`)."""
    out: dict[str, list[pd.DataFrame]] = {}

    def put(name, df):
        out.setdefault(name, []).append(df)

    for split in splits:
        a = data[split]
        if task == "letter":
            put("letter_frequency", A.letter_frequency_audit(a, split, seed))
            put("letter_instructions", A.letter_instruction_audit(a, split, seed))
            put("letter_distractors", A.distractor_letter_audit(a, split, seed))
        else:
            put("number_instructions", A.number_instruction_audit(a, split, seed))
        put("answer_multiplicity", A.answer_multiplicity_audit(task, a, split, seed))
    put("information", A.information_table(task, data, seed, eval_splits=[s for s in ("val", "test") if s in data]))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def slice_duplicates(task: str, data: dict[str, dict]) -> pd.DataFrame:
    """Exact duplicate prompts within and between the given slices (``posym.audit.duplicate_counts``)."""
    d = A.duplicate_counts({s: a["x"] for s, a in data.items()})
    d.insert(0, "task", task)
    return d


def merge(*parts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Concatenate dicts of tables by name."""
    out: dict[str, list[pd.DataFrame]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).append(v)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def solver_floor(acc: pd.DataFrame, split: str = "test", exclude_hop1: bool = True) -> pd.DataFrame:
    """Per task and hop, the best shortcut solver and its accuracy on ``split``. With ``exclude_hop1`` the
    solvers that read the query (``posym.audit.HOP1_CHAIN_READERS``) are left out on one-hop prompts, where
    reading the query *is* following the chain."""
    t = acc[acc["split"] == split].copy()
    t["hop"] = t["hop"].astype(str)
    if exclude_hop1:
        drop = np.zeros(len(t), bool)
        for task, names in A.HOP1_CHAIN_READERS.items():
            drop |= ((t["task"] == task) & (t["hop"] == "1") & t["solver"].isin(names)).to_numpy()
        t = t[~drop]
    best = t.loc[t.groupby(["task", "hop"], sort=False)["accuracy"].idxmax()]
    return best[["task", "hop", "solver", "accuracy", "ci_lo", "ci_hi"]].reset_index(drop=True)


def solver_matrix(acc: pd.DataFrame, task: str, split: str = "test") -> pd.DataFrame:
    """Accuracy of every solver of ``task`` (rows) per hop (columns) on ``split``."""
    t = acc[(acc["task"] == task) & (acc["split"] == split)].copy()
    t["hop"] = t["hop"].astype(str)
    m = t.pivot_table(index="solver", columns="hop", values="accuracy", aggfunc="first")
    m = m[[h for h in A.HOP_LABELS if h in m.columns]]
    return m.loc[[s for s in A.SOLVERS[task] if s in m.index]].sort_values("all", ascending=False)


# -----------------------------------------------------------------------------
# Model side on a subset

def shortcut_use_arrays(model, task: str, a: dict, fitted: dict, seed: int = 0,
                        solvers: Sequence[str] | None = None, device=None, label: str = "val") -> pd.DataFrame:
    """:func:`posym.audit.shortcut_use` for one model on given arrays ``a`` (e.g. the first prompts of a split),
    with solvers fitted beforehand (``fitted``). Same columns as its per-model table."""
    names = list(solvers) if solvers is not None else [s for s in A.SOLVERS[task] if not A.SOLVERS[task][s].expected]
    probs = A.model_outputs(model, a["x"], device=device)
    r_ = np.arange(len(a["y"]))
    pred = probs.argmax(1)
    correct = pred == a["y"]
    p_correct = probs[r_, a["y"]]
    rows = []
    for name in names:
        sp = A.SOLVERS[task][name].predict(a["x"], fitted[name])
        s_ok = sp == a["y"]
        p_short = probs[r_, sp]
        for part, pm in (("shortcut_right", s_ok), ("shortcut_wrong", ~s_ok)):
            for hop in A.HOP_LABELS:
                m = pm & (True if hop == "all" else a["hops"] == int(hop))
                n = int(m.sum())
                k = int(correct[m].sum())
                lo, hi = A.wilson(k, n)
                wrong = part == "shortcut_wrong" and n > 0
                rows.append({"task": task, "seed": seed, "splits": label, "solver": name, "part": part, "hop": hop,
                             "n": n, "accuracy": k / n if n else float("nan"), "ci_lo": float(lo), "ci_hi": float(hi),
                             "mean_p_correct": float(p_correct[m].mean()) if n else float("nan"),
                             "mean_p_shortcut_answer": float(p_short[m].mean()) if wrong else float("nan"),
                             "model_follows_shortcut": float((pred[m] == sp[m]).mean()) if wrong else float("nan")})
    return pd.DataFrame(rows)


def use_gap(per_model: pd.DataFrame, solvers: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy where each shortcut succeeds vs where it fails, per task, solver and hop, and the difference
    (with the prompts in each part)."""
    t = per_model.copy()
    t["hop"] = t["hop"].astype(str)
    if solvers is not None:
        t = t[t["solver"].isin(solvers)]
    keys = ["task", "seed", "solver", "hop"]
    right = t[t["part"] == "shortcut_right"].set_index(keys)
    wrong = t[t["part"] == "shortcut_wrong"].set_index(keys)
    out = pd.DataFrame({"n right": right["n"], "acc right": right["accuracy"], "n wrong": wrong["n"],
                        "acc wrong": wrong["accuracy"], "wrong ci_lo": wrong["ci_lo"],
                        "follows shortcut": wrong["model_follows_shortcut"]})
    out["gap"] = out["acc right"] - out["acc wrong"]
    return out.reset_index()


# -----------------------------------------------------------------------------
# Committed tables (data/audit/)

def load_committed(root: str | Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table listed in ``root/manifest.json`` (name without suffix -> DataFrame) and the manifest.
    Missing folder or manifest: ``({}, {})``."""
    root = Path(root)
    man = root / "manifest.json"
    if not man.exists():
        return {}, {}
    info = json.loads(man.read_text())
    files = info.get("files", {})
    names = list(files) if isinstance(files, (dict, list)) else []
    tables = {}
    for f in names:
        p = root / f
        if p.suffix in (".csv", ".parquet") and p.exists():
            df = pio.read_table(p)
            if "hop" in df:
                df["hop"] = df["hop"].astype(str)
            tables[p.stem] = df
    return tables, info


# -----------------------------------------------------------------------------
# The page: what book/audit.md computes or reads, shows and writes into its text

TASKS = ("number", "letter")
SEED = 0  # the data seed of the committed seed-0 models (every model is audited on its own data seed)
#: the strongest learned shortcut of each task, the one the per-hop tables and figures follow
STRONG = {"number": "table_bag_of_pointers", "letter": "table_bag_of_letters"}
_STAT_TABLES = ("letter_frequency", "letter_instructions", "letter_distractors", "number_instructions",
                "answer_multiplicity", "information")


@dataclass
class Audit:
    """Everything the page shows: the statistics, the shortcut accuracies, duplicates, the models' shortcut use,
    the variants and (optionally) the learning curves against the floors; ``committed`` holds the tables read
    from ``data/audit/`` (empty where the page computes them)."""
    n_train: int
    committed: dict
    manifest: dict
    slices: dict
    stats: dict
    acc: pd.DataFrame
    dups: pd.DataFrame
    use: pd.DataFrame
    va: dict
    first: pd.DataFrame | None

    @property
    def source(self) -> str:
        return "committed tables in data/audit/" if self.committed else "computed in this notebook"

    @property
    def gap(self) -> pd.DataFrame:
        return use_gap(self.use)

    @property
    def vall(self) -> pd.DataFrame:
        """Variant accuracy of every model and solver; ``who`` names the model's seed (``model s1``)."""
        v = self.va["per_model"]
        return v.assign(who=[w if w != "model" else f"model s{s}" for w, s in zip(v.who, v.seed)])

    @property
    def vpm(self) -> pd.DataFrame:
        """Variant accuracy of seed 0: its model (``who = model``) and the solvers."""
        v = self.vall
        return v[v["seed"] == 0].assign(who=lambda d: d.who.replace({"model s0": "model"}))


def run(scale: str, data_dir: str | Path, n_train: int, n_model: int, n_variant: int, curves: bool) -> Audit:
    """The audit at one scale: at ``paper`` the committed tables of ``data_dir/audit`` (where present), otherwise
    computed here from ``n_train`` training prompts, ``n_model`` validation prompts for the models' shortcut use
    and ``n_variant`` test prompts per variant, with the committed seed-0 models of ``data_dir/paper``."""
    data_dir = Path(data_dir)
    committed, manifest = load_committed(data_dir / "audit") if scale == "paper" else ({}, {})
    data = {task: A.audit_splits(task, SEED, n_train) for task in TASKS}
    fitted = {task: A.fit_solvers(task, data[task]["train"]) for task in TASKS}
    slices = {task: {s: len(a["x"]) for s, a in d.items()} for task, d in data.items()}
    if committed:
        stats = {k: committed[k] for k in _STAT_TABLES}
        acc, dups = committed["shortcut_accuracy"], committed["duplicates"]
    else:
        stats = merge(*(compute_statistics(task, data[task], SEED) for task in TASKS))
        acc = pd.concat([A.shortcut_accuracy(task, SEED, n_train, data=data[task], fitted=fitted[task])
                         for task in TASKS], ignore_index=True)
        dups = pd.concat([slice_duplicates(task, data[task]) for task in TASKS], ignore_index=True)
    first = None
    if curves:
        if "curves_first_above_floor" in committed:
            first = committed["curves_first_above_floor"]
        else:
            first = pd.concat([A.curves_vs_floors(task, data_dir / "paper", n_train)[1] for task in TASKS],
                              ignore_index=True)
        first["hop"] = first["hop"].astype(str)
    models = {task: A.load_models(task, data_dir / "paper") for task in TASKS}
    if "shortcut_use" in committed:
        use = committed["shortcut_use"]
    else:
        use = pd.concat([shortcut_use_arrays(dict(models[task])[0], task,
                                             {k: v[:n_model] for k, v in data[task]["val"].items()},
                                             fitted[task], seed=0, label="val") for task in TASKS],
                        ignore_index=True)
    if "variant_accuracy" in committed:
        va = {"per_model": committed["variant_accuracy"], "regularity": committed["variant_regularity"],
              "conditions": committed.get("variant_conditions")}
    else:
        parts = [A.variant_accuracy(models[task], task, split="test", n=n_variant, n_train=n_train,
                                    verify=min(n_variant, 200), data={SEED: data[task]}) for task in TASKS]
        va = {"per_model": pd.concat([p["per_model"] for p in parts], ignore_index=True),
              "regularity": pd.concat([p["regularity"] for p in parts], ignore_index=True),
              "conditions": parts[1].get("conditions")}
    return Audit(n_train, committed, manifest, slices, stats, acc, dups, use, va, first)


def use_text(au: Audit) -> str:
    """Two printed lines: the held-out prompts per task behind the shortcut-use tables, and the audited seeds."""
    gap = au.gap
    n_use = gap[gap.hop == "all"].groupby("task").apply(lambda g: int((g["n right"] + g["n wrong"]).iloc[0]))
    return (f"held-out prompts per task: {n_use.to_dict()} (split: {au.use['splits'].iloc[0]})\n"
            f"seeds: { {t: sorted(au.use[au.use.task == t]['seed'].unique().tolist()) for t in TASKS} }")


def number_information(stats: dict) -> pd.DataFrame:
    """What single features of a Number prompt tell about its hop count and answer position (test split)."""
    info = stats["information"]
    return info[(info["task"] == "number") & (info["split"] == "test")]


def answer_multiplicity(stats: dict) -> pd.DataFrame:
    """How often the answer's letter repeats in the window, over all hops of the test split."""
    mult = stats["answer_multiplicity"]
    return mult[(mult["split"] == "test") & (mult["hop"].astype(str) == "all")]


def duplicate_summary(dups: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prompts of each task also in another split, repeated prompts within each split)."""
    d = dups[dups["level"] == "prompt"] if "level" in dups else dups
    between = d[d["kind"] == "between"].groupby("task")["rows_of_a_also_in_b"].sum()
    within = d[d["kind"] == "within"].set_index(["task", "a"])["extra_copies"]
    return (pd.DataFrame({"rows also in another split": between}),
            within.rename("repeated prompts within a split").to_frame())


def shortcut_summary(au: Audit) -> pd.DataFrame:
    """Over seeds, accuracy where the strong shortcut succeeds and where it fails (mean with a t-interval; one
    seed: its Wilson interval)."""
    summ = au.committed.get("shortcut_use_summary")
    if summ is None:  # one model per task, computed here
        use = au.use
        summ = A.seed_summary(use.assign(hop=use.hop.astype(str)), ["task", "splits", "solver", "part", "hop"])
    return summ[[x == STRONG[t] for t, x in zip(summ.task, summ.solver)]]


def variant_table(au: Audit) -> pd.DataFrame:
    """Accuracy over all hops on each variant: one column per model seed, and four solvers of seed 0."""
    vall = au.vall
    solvers = [f"solver:{STRONG['number']}", f"solver:{STRONG['letter']}", "solver:least_frequent",
               "solver:pointer_votes"]
    show = vall[(vall.hop.astype(str) == "all") & (vall.who.str.startswith("model") | (
        (vall.seed == 0) & vall.who.isin(solvers)))]
    return show.pivot_table(index=["task", "variant"], columns="who", values="accuracy", aggfunc="first",
                            sort=False)


def condition_table(au: Audit) -> pd.DataFrame | None:
    """Letter model accuracy on the fully re-drawn variant, split by the two conditions of
    ``posym.audit.letter_conditions``, per seed (None when the conditions were not computed)."""
    cond = au.va["conditions"]
    if cond is None:
        return None
    cond = cond[(cond["hop"].astype(str) == "all") & (cond["variant"] == "all")]
    return cond.pivot_table(index=["condition", "seed"], columns="value", values=["accuracy", "n"],
                            aggfunc="first")


def least_frequent_rates(va: dict) -> pd.DataFrame:
    """The least-frequent solver's accuracy per hop on the ``least_frequent`` variant (seed 0)."""
    reg = va["regularity"]
    lf = reg[(reg["regularity"] == "least_frequent") & (reg["statistic"] == "least_frequent_solver_correct")]
    return lf[lf["seed"] == 0] if "seed" in lf else lf


def tables(au: Audit) -> dict:
    """Every table the page shows, as ``posym.display.table`` objects, by name (in page order)."""
    from ..display import rounded_table, table

    out = {}
    head = headline_regularities(au.stats, split="test")
    out["headline"] = rounded_table(
        head[["task", "statistic", "regularity", "rate", "ci_lo", "ci_hi", "null", "rate / null"]], 4,
        key_columns=["task", "statistic"],
        caption="The Letter generator's regularities on the test split (95 % Wilson intervals)")
    info = number_information(au.stats)
    out["information"] = rounded_table(
        info[["feature", "target", "mi_bits", "mi_bits_shuffled", "target_entropy_bits", "accuracy",
              "majority_accuracy"]], 4, key_columns=["feature", "target"],
        caption="Number task: what one feature tells about the hop count and the answer position (test split)")
    out["into"] = rounded_table(number_offchain_into_target(au.stats["number_instructions"], split="test"), 4,
                                index=True,
                                fold="Off-chain instructions that point into the target window, per position")
    mult = answer_multiplicity(au.stats)
    out["multiplicity"] = rounded_table(mult[["task", "statistic", "rate", "ci_lo", "ci_hi", "null_rate"]], 4,
                                        key_columns=["task", "statistic"],
                                        caption="The answer's letter repeated in the window")
    between, within = duplicate_summary(au.dups)
    out["dup_between"] = table(between, index=True, caption="Prompts also in another split")
    out["dup_within"] = table(within, index=True, caption="Repeated prompts within a split")
    for task in TASKS:
        out[f"solvers_{task}"] = rounded_table(
            solver_matrix(au.acc, task, "test"), 4, index=True,
            caption=f"{task.capitalize()} task: shortcut accuracy on the test split, per hop")
    out["floor"] = rounded_table(solver_floor(au.acc, "test"), 4, key_columns=["task", "hop"],
                                 caption="The floor: the best shortcut per task and hop (test split)")
    if au.first is not None:
        first = au.first.pivot_table(index=["task", "hop"], columns="seed", values="first_step_above_floor")
        out["curves"] = table(first.rename(columns=lambda s: f"seed {s}"), index=True,
                              caption="First checkpoint above the floor, per seed and hop")
    gap = au.gap
    out["gap"] = rounded_table(
        gap[gap.hop == "all"][["task", "solver", "seed", "n right", "acc right", "n wrong", "acc wrong", "wrong ci_lo",
                               "follows shortcut"]], 4, key_columns=["task", "solver", "seed"],
        caption="Model accuracy where each shortcut is right and where it is wrong (all hops)")
    per_hop = gap[[s == STRONG[t] for t, s in zip(gap.task, gap.solver)]]
    out["gap_hop"] = rounded_table(
        per_hop[["task", "solver", "hop", "seed", "n right", "acc right", "n wrong", "acc wrong", "wrong ci_lo"]], 4,
        key_columns=["task", "solver", "hop", "seed"],
        fold="The same split per hop, for the strongest shortcut of each task")
    summ = shortcut_summary(au)
    out["summary"] = rounded_table(
        summ[["task", "solver", "part", "hop", "n_models", "seeds", "accuracy", "ci_lo", "ci_hi", "ci_kind"]], 4,
        key_columns=["task", "solver", "part", "hop"],
        caption="Over seeds: accuracy where the strongest shortcut is right and where it is wrong")
    out["variants"] = table(pd.DataFrame([{"task": task, "variant": name, "what it re-draws": what}
                                          for task in TASKS for name, what in A.VARIANTS[task].items()]),
                            key_columns=["task", "variant"], caption="The shortcut-free variants")
    out["variant_accuracy"] = rounded_table(
        variant_table(au), 4, index=True,
        caption=f"{int(au.vall.n.max()):,} test prompts per variant; accuracy over all hops; one column per model seed")
    cts = condition_table(au)
    if cts is not None:
        out["conditions"] = rounded_table(cts, 4, index=True,
                                          caption="Letter models on the fully re-drawn variant, by condition and seed")
    return out


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt

    return plt.subplots(*args, layout="constrained", **kwargs)


def plot_solvers(acc: pd.DataFrame):
    """Test accuracy per hop of the four best shortcut solvers of each task, with the 1/8 of a random target
    token. Returns the Figure."""
    from ..plotting import COLORS

    fig, axes = _fig(1, 2, figsize=(7.4, 4.2), sharey=True)
    for ax, task in zip(axes, TASKS):
        m = solver_matrix(acc, task, "test")
        x = np.arange(len(A.HOP_LABELS))
        for i, s in enumerate(m.index[:4]):
            ax.bar(x + (i - 1.5) * 0.2, m.loc[s, list(A.HOP_LABELS)], width=0.2, label=s)
        ax.axhline(1 / 8, color=COLORS["neutral"], ls=":", lw=1, label="random target token (1/8)")
        ax.set(xticks=x, xticklabels=A.HOP_LABELS, xlabel="hops", title=f"{task.capitalize()} task", ylim=(0, 1.05))
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    axes[0].set_ylabel("test accuracy")
    return fig


def plot_shortcut_use(use: pd.DataFrame):
    """Model accuracy where the strongest shortcut of each task is right (grey) and wrong (task colour), per hop:
    bars the mean over the audited seeds, dots each seed with its 95 % Wilson interval. Returns the Figure."""
    from ..plotting import COLORS, task_color

    fig, axes = _fig(1, 2, figsize=(7.4, 3.8), sharey=True)
    for ax, task in zip(axes, TASKS):
        g = use[(use.task == task) & (use.solver == STRONG[task])]
        seeds = sorted(g["seed"].unique())
        for i, (part, color) in enumerate((("shortcut_right", COLORS["neutral"]),
                                           ("shortcut_wrong", task_color(task)))):
            x = np.arange(len(A.HOP_LABELS)) + (i - 0.5) * 0.35
            per_seed = [g[(g.part == part) & (g.seed == s)].set_index("hop").loc[list(A.HOP_LABELS)] for s in seeds]
            ax.bar(x, np.mean([p["accuracy"] for p in per_seed], axis=0), width=0.35, color=color,
                   label=part.replace("_", " "))
            for p in per_seed:  # each seed: its accuracy and 95 % Wilson interval
                yerr = np.clip([p["accuracy"] - p["ci_lo"], p["ci_hi"] - p["accuracy"]], 0, None)
                ax.errorbar(x, p["accuracy"], yerr=np.nan_to_num(yerr), fmt="o", ms=2.5, color="black", lw=1)
        ax.set(xticks=np.arange(len(A.HOP_LABELS)), xticklabels=A.HOP_LABELS, xlabel="hops", ylim=(0, 1.05),
               title=f"{task.capitalize()}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    axes[0].set_ylabel("model accuracy")
    return fig


def plot_variants(au: Audit):
    """Seed 0's accuracy per hop on every variant of the test set, one panel per task. Returns the Figure."""
    from ..plotting import HOP_COLORS

    vpm = au.vpm
    fig, axes = _fig(1, 2, figsize=(7.4, 3.9), gridspec_kw={"width_ratios": [1, 3]}, sharey=True)
    for ax, task in zip(axes, TASKS):
        m = vpm[(vpm.task == task) & (vpm.who == "model")]
        variants = list(dict.fromkeys(m.variant))
        x = np.arange(len(variants))
        for i, hop in enumerate(("1", "2", "3", "4")):
            p = m[m.hop.astype(str) == hop].set_index("variant").loc[variants]
            ax.bar(x + (i - 1.5) * 0.2, p["accuracy"], width=0.2, color=HOP_COLORS[int(hop)], label=f"{hop} hop")
        ax.set(xticks=x, title=f"{task.capitalize()}", ylim=(0, 1.05))
        ax.set_xticklabels(variants, rotation=30, ha="right")
        ax.set_xlabel("test-set variant")
    axes[0].set_ylabel("model accuracy")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=9)
    return fig


def _pct(x, digits=1):
    return f"{100 * x:.{digits}f} %"


def _rate_ci(r, digits=1):
    return f"{_pct(r['rate'], digits)} (95 % CI {_pct(r['ci_lo'], digits)}–{_pct(r['ci_hi'], digits)})"


def text_values(au: Audit, n_train: int, curves: bool) -> dict[str, str]:
    """Every number the page's text quotes (its ``{glue:md}`` values), as markdown strings, by glue name."""
    v: dict = {"n_train_text": f"{n_train:,}"}
    h = headline_regularities(au.stats, split="test").set_index("statistic")
    v["uniq_least"] = _rate_ci(h.loc["answer_unique_least_frequent"])
    v["uniq_least_null"] = _pct(h.loc["answer_unique_least_frequent", "null"])
    v["sig_unique"] = _rate_ci(h.loc["signature_unique"])
    for name, stat in (("left_in_instr", "answer_letter_left_in_instructions"),
                       ("right_once", "answer_letter_right_exactly_once"), ("qleft", "query_left_in_chain"),
                       ("offr", "instruction_right:is_chain_letter"), ("offl", "instruction_left:is_chain_letter")):
        v[name] = _rate_ci(h.loc[stat])
        v[f"{name}_null"] = _pct(h.loc[stat, "null"])
    qi = number_information(au.stats).set_index(["feature", "target"])
    v["q_hops_acc"] = _pct(qi.loc[("query_value", "hops"), "accuracy"])
    v["q_hops_maj"] = _pct(qi.loc[("query_value", "hops"), "majority_accuracy"])
    v["q_pos_acc"] = _pct(qi.loc[("query_value", "answer_pos"), "accuracy"])
    v["q_pos_maj"] = _pct(qi.loc[("query_value", "answer_pos"), "majority_accuracy"])
    into = number_offchain_into_target(au.stats["number_instructions"], split="test")
    dev = (into["off-chain into target"] - into["uniform 8/t"]).abs()
    v["into_maxdev"] = f"{dev.max():.3f}"
    v["into_onchain"] = f"{into['on-chain into target'].min():.2f}–{into['on-chain into target'].max():.2f}"
    mm = answer_multiplicity(au.stats).set_index(["task", "statistic"])
    v["num_rep"] = (f"{_pct(mm.loc[('number', 'answer_letter_repeated'), 'rate'])} "
                    f"(uniform {_pct(mm.loc[('number', 'answer_letter_repeated'), 'null_rate'])})")
    between, _ = duplicate_summary(au.dups)
    v["dup_between"] = int(between.iloc[:, 0].sum())
    v["dup_scope"] = ("all 480,000 prompts of each task" if au.committed else
                      f"the {n_train:,}-prompt training slice and the whole validation and test splits")
    fl = solver_floor(au.acc, "test").set_index(["task", "hop"])
    for task in TASKS:
        v[f"floor_{task}"] = f"{_pct(fl.loc[(task, 'all'), 'accuracy'])} (`{fl.loc[(task, 'all'), 'solver']}`)"
        v[f"floor4_{task}"] = _pct(fl.loc[(task, '4'), 'accuracy'])
    if not curves:
        v["curves_text"] = ("This comparison is skipped at this scale (`curves = False`); run the chapter at the "
                            "teaching or paper scale to see it.")
    else:
        v["curves_text"] = ("The table gives, for each seed and hop count, the first checkpoint at which the "
                            "validation accuracy rises above the Wilson upper bound of the best shortcut on the same "
                            "prompts.")
    if au.first is not None:
        first = au.first
        above = first[first.hop == "all"].groupby("task")["first_step_above_floor"].agg(["min", "max"])
        v["first_range"] = "; ".join(f"{t}: steps {int(r['min']):,}–{int(r['max']):,}" for t, r in above.iterrows())
        v["n_seeds_curves"] = first["seed"].nunique()
        v["n_never"] = int((first["first_step_above_floor"] < 0).sum())
    else:
        v["first_range"], v["n_seeds_curves"], v["n_never"] = "not computed at this scale", 0, "—"
    v["models_text"] = _models_text(au.manifest, bool(au.committed))
    allhop = au.gap[au.gap.hop == "all"]
    worst = allhop.loc[allhop["acc wrong"].idxmin()]
    v["worst_wrong"] = (f"{_pct(worst['acc wrong'])} ({worst.task}, `{worst.solver}`, {int(worst['n wrong'])} "
                        f"prompts, lower bound {_pct(worst['wrong ci_lo'])})")
    v["max_follow"] = _pct(allhop["follows shortcut"].max())
    v["max_gap"] = f"{allhop['gap'].max():.3f}"
    v.update(_variant_values(au))
    return {k: str(x) for k, x in v.items()}


def _models_text(manifest: dict, committed: bool) -> str:
    audited = manifest.get("models", {"number": [0], "letter": [0]})
    if committed and len(audited.get("letter", [])) > 1:
        per_task = "; ".join(f"{t.capitalize()}: seed{'s' if len(audited[t]) > 1 else ''} "
                             f"{', '.join(map(str, audited[t]))}" for t in TASKS)
        return (f"The model-side audit covers the seeds whose weights we have ({per_task}). Seed 0 is the final "
                "checkpoint of the paper-scale run committed in `data/paper/` (trained on a GPU). The other seeds "
                "were retrained here on the CPU with the same configuration, because the paper-scale runs keep only "
                "seed 0's weights; on the CPU, training is deterministic for a fixed thread count, so "
                "`posym train --task TASK --scale paper --seed S --threads 1` "
                "gives the same weights again (their sha256 is in `data/audit/manifest.json`). They are not the GPU "
                "runs whose trajectories `data/paper/` holds. Each table gives every seed; the intervals of one seed "
                "are Wilson intervals over prompts. With two or three seeds a *t*-interval over seeds says little, "
                "so we show the seeds side by side rather than only their mean.")
    return ("Only the final checkpoint of **seed 0** is committed for each task "
            "(`data/paper/{task}-s0/final.pt`), so at this scale the model-side audit below covers one model per "
            "task: its intervals are Wilson intervals over prompts, not confidence intervals over seeds. The paper "
            "scale reads committed tables that include more seeds.")


def _variant_values(au: Audit) -> dict:
    v = {}
    vpm = au.vpm
    allh = vpm[vpm.hop.astype(str) == "all"]
    tv = allh[allh.who == "model"].set_index(["task", "variant"])["accuracy"]
    v["num_var"] = _pct(tv.loc[("number", "pointer_votes")])
    v["num_orig"] = _pct(tv.loc[("number", "original")])
    pv = allh[allh.who == "solver:pointer_votes"].set_index(["task", "variant"])["accuracy"]
    v["pv_var"] = _pct(pv.loc[("number", "pointer_votes")])
    lt = tv.loc["letter"]
    for name, variant in (("let_orig", "original"), ("let_lf", "least_frequent"), ("let_ir", "instruction_right"),
                          ("let_ql", "query_left"), ("let_il", "instruction_left"), ("let_all", "all")):
        v[name] = _pct(lt.loc[variant])
    bag = allh[allh.who == f"solver:{STRONG['letter']}"].set_index(["task", "variant"])["accuracy"]
    v["bag_orig"] = _pct(bag.loc[("letter", "original")])
    v["bag_all"] = _pct(bag.loc[("letter", "all")])
    cts = condition_table(au)
    cond = au.va["conditions"]
    if cts is not None:
        c = cts.xs(0, level="seed")["accuracy"]  # seed 0 (the text); the other seeds are in the table
        v["cond_left_true"] = _pct(c.loc["chain_letter_left_of_offchain", True])
        v["cond_left_false"] = _pct(c.loc["chain_letter_left_of_offchain", False])
        v["cond_q_true"] = _pct(c.loc["query_left_is_chain_letter", True])
        v["cond_q_false"] = _pct(c.loc["query_left_is_chain_letter", False])
    multi = cts is not None and cond["seed"].nunique() > 1
    if multi:
        a = cts["accuracy"].xs("chain_letter_left_of_offchain", level="condition")
        v["cond_seeds"] = "Across the audited seeds the same split reads: " + "; ".join(
            f"seed {s}: {_pct(a.loc[s, True])} where a chain letter starts an off-chain instruction, "
            f"{_pct(a.loc[s, False])} where none does" for s in a.index) + "."
    else:
        v["cond_seeds"] = "Only seed 0 is audited at this scale."
    use = au.use
    seeds_of = {t: sorted(int(x) for x in use[use.task == t]["seed"].unique()) for t in TASKS}
    v["audited_seeds"] = "; ".join(f"{t.capitalize()}: seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"
                                   for t, s in seeds_of.items())
    if multi:
        drops = {s: a.loc[s, False] - a.loc[s, True] for s in a.index}
        shared = [s for s, d in drops.items() if d > 0.05]
        v["seeds_bullet"] = (
            f"The Letter weak spot was measured on {len(drops)} seeds; the accuracy drop where a chain "
            "letter starts an off-chain instruction is " + ", ".join(f"{100 * d:.1f} points (seed {s})"
                                                                   for s, d in drops.items()) +
            (". It appears in every audited seed, so it is not an accident of one run." if len(shared) ==
             len(drops) else f". Only seed(s) {', '.join(map(str, shared)) or 'none'} show a drop above 5 points: "
             "the weak spot depends on the run.") + " Seeds other than 0 were retrained on the CPU (see above); "
            "more seeds would give a useful interval over seeds.")
    else:
        v["seeds_bullet"] = ("All model-side numbers at this scale come from seed 0 of each task; whether other "
                             "seeds share the Letter model's weak spot is read from the committed tables at the "
                             "paper scale.")
    return v


# -----------------------------------------------------------------------------
# The chapter's parameters

_PAPER = "posym reproduce --scale paper  (see data/README.md; only seed 0's final.pt is committed)"
_AUDIT = "python -m posym.audit --device cuda  (writes data/audit/ with a manifest)"

_MODELS = tuple(Required(f"paper/{t}-s0/final.pt", _PAPER, f"the final {t.capitalize()} checkpoint, seed 0")
                for t in ("number", "letter"))

register(ChapterSpec(
    name="audit",
    params={
        "n_train": Param(int, {"smoke": 5_000, "teaching": 20_000, "paper": 100_000},
                         "training prompts per task for the statistics and for fitting the shortcut solvers",
                         min=500, max=432_000),
        "n_model": Param(int, {"smoke": 100, "teaching": 1_000, "paper": 2_400},
                         "validation prompts per task on which the seed-0 models are compared with the shortcuts "
                         "(computed here unless data/audit/ holds the committed tables)", min=50, max=2_400),
        "n_variant": Param(int, {"smoke": 40, "teaching": 500, "paper": 1_000},
                           "test prompts per shortcut-free variant (computed here unless data/audit/ holds them)",
                           min=20, max=45_600),
        "curves": Param(bool, {"smoke": False, "teaching": True, "paper": True},
                        "compare the learning curves of all five seeds with the shortcut floors (about 30 s per task)"),
    },
    requires={"smoke": _MODELS, "teaching": _MODELS,
              "paper": _MODELS + (Required("audit/manifest.json", _AUDIT,
                                           "the committed audit tables (full val and test splits)", optional=True),)},
))
