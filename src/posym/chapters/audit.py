"""Helpers for the data-audit chapter (``book/audit.md``) on top of :mod:`posym.audit`.

:mod:`posym.audit` computes every table; this module picks what the chapter shows, computes the model-side
tables on a *subset* of held-out prompts (so the chapter can run at the smoke and teaching scales in
seconds), and reads the committed tables of ``data/audit/`` (``python -m posym.audit``) at the paper scale.
"""
from __future__ import annotations

import json
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
        "n_model": Param(int, {"smoke": 200, "teaching": 1_000, "paper": 2_400},
                         "validation prompts per task on which the seed-0 models are compared with the shortcuts "
                         "(computed here unless data/audit/ holds the committed tables)", min=50, max=2_400),
        "n_variant": Param(int, {"smoke": 100, "teaching": 500, "paper": 1_000},
                           "test prompts per shortcut-free variant (computed here unless data/audit/ holds them)",
                           min=20, max=45_600),
        "curves": Param(bool, {"smoke": False, "teaching": True, "paper": True},
                        "compare the learning curves of all five seeds with the shortcut floors (about 30 s per task)"),
    },
    requires={"smoke": _MODELS, "teaching": _MODELS,
              "paper": _MODELS + (Required("audit/manifest.json", _AUDIT,
                                           "the committed audit tables (full val and test splits)", optional=True),)},
))
