"""Data audit: regularities in the Number and Letter generators that a model could use instead of the chain.

A reader of the paper may ask whether a model could solve the two tasks without following the chain of
hops. This module answers with measurements:

1. **Audit statistics** (``letter_frequency_audit``, ``letter_instruction_audit``, ``distractor_letter_audit``,
   ``number_instruction_audit``, ``answer_multiplicity_audit``, ``information_table``, ``duplicates``): each
   returns a tidy DataFrame with the measured frequency ``k / n``, a 95 % Wilson interval and, where one makes
   sense, the rate expected under a stated null.
2. **Shortcut solvers** (``SOLVERS``): simple rules that read one regularity and never follow the chain, and
   their accuracy per hop (``shortcut_accuracy``) — the floor a claim about a trained model has to beat.
3. **Shortcut use by trained models**: ``shortcut_use`` splits held-out samples by whether each shortcut would
   succeed and reports the model's accuracy on each part; ``shortcut_free_variant`` rebuilds an evaluation
   set in which a regularity carries (as far as the task's definition allows) no information, and
   ``variant_accuracy`` evaluates models and solvers on it, without retraining.

All statistics are vectorised over the encoded arrays of ``TaskDataset.arrays()``. ``python -m posym.audit``
writes every table to ``data/audit/`` with a manifest.

Token layout reminders (see :mod:`posym.tasks`). Letter task: a target token ``<letter><number>`` has id
``1 + 8 * letter + (number - 1)``, an instruction token ``<left><right>`` has id ``65 + 8 * left + right``
(letters a..h are 0..7). Number task: the integer ``k`` has id ``k``; ALPH letters have ids 17..136.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import io as pio
from .stats import mean_ci, wilson  # noqa: F401  (mean_ci and wilson are part of this module's interface)
from .tasks import (MAX_HOPS, QUERY_POS, SEQ_LEN, SPLIT_SIZES, TARGET_WINDOW, PAPER_TASKS,
                    TaskDataset, get_task)

N_LET = 8          # Letter task: letters a..h
N_INSTR = SEQ_LEN - TARGET_WINDOW  # 9 instruction slots (8..15) plus the query (16)
HOP_LABELS = ("all",) + tuple(str(h) for h in range(1, MAX_HOPS + 1))
EVAL_SPLITS = ("val", "test")
DEFAULT_N_TRAIN = 100_000
AUDIT_DIR = Path(__file__).resolve().parents[2] / "data" / "audit"
#: tables computed from trained models (the rest are statistics of the generators)
MODEL_TABLES = ("shortcut_use", "shortcut_use_summary", "variant_accuracy", "variant_accuracy_summary",
                "variant_regularity", "variant_conditions")


# =============================================================================
# Small statistics helpers


def _rate_row(k, n, **keys) -> dict:
    lo, hi = wilson(k, n)
    return {**keys, "k": int(k), "n": int(n), "rate": (k / n) if n else float("nan"),
            "ci_lo": float(lo), "ci_hi": float(hi)}


def _per_hop_rows(flag: np.ndarray, hops: np.ndarray, **keys) -> list[dict]:
    """One row for all samples and one per hop count: the rate of the boolean ``flag``."""
    flag = np.asarray(flag, dtype=bool)
    rows = [_rate_row(flag.sum(), flag.size, hop="all", **keys)]
    for h in range(1, MAX_HOPS + 1):
        m = hops == h
        rows.append(_rate_row(flag[m].sum(), m.sum(), hop=str(h), **keys))
    return rows


# =============================================================================
# Data access

def split_arrays(task: str, split: str, seed: int = 0, n: int | None = None) -> dict[str, np.ndarray]:
    """The encoded arrays of a split (``x``, ``y``, ``hops``, ``answer_pos``, ``chain``), first ``n`` rows."""
    return first_rows(TaskDataset(task, split, seed=seed).arrays(), n)


def first_rows(arrays: dict[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """The first ``n`` rows of every array of a split (all of them when ``n`` is ``None`` or not smaller)."""
    if n is None or n >= len(arrays["x"]):
        return arrays
    return {k: v[:n] for k, v in arrays.items()}


def audit_splits(task: str, seed: int = 0, n_train: int = DEFAULT_N_TRAIN) -> dict[str, dict[str, np.ndarray]]:
    """The audited slices: the first ``n_train`` training samples, and the whole val and test splits."""
    return {"train": split_arrays(task, "train", seed, n_train),
            "val": split_arrays(task, "val", seed), "test": split_arrays(task, "test", seed)}


def concat_arrays(parts: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = list(parts)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# =============================================================================
# Token features (vectorised)

def letter_parts(x: np.ndarray) -> dict[str, np.ndarray]:
    """Letter task: split token ids into letters (0..7 = a..h).

    ``tl``/``tn``: letter and number index (0..7) of the 8 target tokens; ``il``/``ir``: left and right
    letter of the 9 instruction tokens at positions 8..16 (the query is the last column).
    """
    x = np.asarray(x)
    t = x[:, :TARGET_WINDOW] - 1
    i = x[:, TARGET_WINDOW:] - 1 - N_LET * N_LET
    if t.min(initial=0) < 0 or t.max(initial=0) >= N_LET * N_LET or i.min(initial=0) < 0 or i.max(initial=0) >= N_LET * N_LET:
        raise ValueError("not Letter-task token ids (target ids 1..64 then instruction ids 65..128)")
    return {"tl": t // N_LET, "tn": t % N_LET, "il": i // N_LET, "ir": i % N_LET}


def letter_counts(letters: np.ndarray) -> np.ndarray:
    """(N, K) letters -> (N, 8) how often each letter occurs in the row."""
    n = len(letters)
    out = np.zeros((n, N_LET), dtype=np.int64)
    for c in range(N_LET):
        out[:, c] = (letters == c).sum(1)
    return out


def target_letter_count(x: np.ndarray) -> np.ndarray:
    """Letter task: (N, 8) number of target tokens sharing each target token's letter (itself included)."""
    tl = letter_parts(x)["tl"]
    return np.take_along_axis(letter_counts(tl), tl, 1)


def number_pointers(x: np.ndarray) -> np.ndarray:
    """Number task: (N, 9) position each instruction at 8..16 points to (``t - value``)."""
    x = np.asarray(x)
    v = x[:, TARGET_WINDOW:]
    if v.min(initial=1) < 1 or v.max(initial=1) > 16:
        raise ValueError("not Number-task prompts (positions 8..16 must hold integers 1..16)")
    return np.arange(TARGET_WINDOW, SEQ_LEN)[None, :] - v


def target_votes(pointers: np.ndarray) -> np.ndarray:
    """(N, k) pointers -> (N, 8) how many of them point at each target position."""
    out = np.zeros((len(pointers), TARGET_WINDOW), dtype=np.int64)
    for p in range(TARGET_WINDOW):
        out[:, p] = (pointers == p).sum(1)
    return out


def _leftmost(mask: np.ndarray, fallback: np.ndarray | int = 0) -> np.ndarray:
    """First True column of each row, ``fallback`` where a row has none."""
    return np.where(mask.any(1), np.argmax(mask, 1), fallback)


def _token_at(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.asarray(x)[np.arange(len(x)), pos]


def chain_sets(a: dict[str, np.ndarray]) -> np.ndarray:
    """Letter task: (N, 8) boolean, True for the chain letters (the letters read along the chain)."""
    p = letter_parts(a["x"])
    n = len(a["x"])
    rows = np.arange(n)
    out = np.zeros((n, N_LET), dtype=bool)
    for j in range(MAX_HOPS):  # the token at chain[j] (j < hops) is an instruction; its right letter is read
        ok = j < a["hops"]
        pos = a["chain"][rows[ok], j]
        out[rows[ok], p["ir"][rows[ok], pos - TARGET_WINDOW]] = True
    return out


def on_chain_mask(a: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 17) True at the positions the chain visits (query, intermediates, answer)."""
    n = len(a["chain"])
    m = np.zeros((n, SEQ_LEN), dtype=bool)
    rows = np.arange(n)
    for j in range(a["chain"].shape[1]):
        ok = a["chain"][:, j] >= 0
        m[rows[ok], a["chain"][ok, j]] = True
    return m


# =============================================================================
# Shortcut solvers: each maps token ids (N, 17) to a predicted answer token id (N,)

@dataclass
class Shortcut:
    """A rule that reads one regularity of a task and never follows the chain.

    ``predict(x, params)`` returns answer token ids; ``fit(train_arrays)`` (optional) learns ``params``
    from the training slice only (e.g. the most frequent answer).
    """

    name: str
    task: str
    description: str
    predict: Callable[[np.ndarray, dict], np.ndarray]
    fit: Callable[[dict], dict] | None = None
    expected: bool = False  # True: ``expected_correct`` gives the exact expected accuracy per sample

    def fitted(self, train: dict | None) -> dict:
        if self.fit is None:
            return {}
        if train is None:
            raise ValueError(f"shortcut {self.name!r} needs the training arrays to fit")
        return self.fit(train)


# --- Letter task --------------------------------------------------------------

def letter_least_frequent(x, params=None):
    """The target token whose letter is least frequent in the target window (ties -> leftmost)."""
    c = target_letter_count(x)
    return _token_at(x, np.argmax(c == c.min(1, keepdims=True), 1))


def letter_most_frequent(x, params=None):
    """The target token whose letter is most frequent in the target window (ties -> leftmost)."""
    c = target_letter_count(x)
    return _token_at(x, np.argmax(c == c.max(1, keepdims=True), 1))


def letter_global_least_frequent(x, params=None):
    """The target token whose letter is least frequent over all 26 letter slots of the prompt (ties -> leftmost)."""
    p = letter_parts(x)
    g = letter_counts(np.concatenate([p["tl"], p["il"], p["ir"]], 1))
    gc = np.take_along_axis(g, p["tl"], 1)
    return _token_at(x, np.argmax(gc == gc.min(1, keepdims=True), 1))


def letter_signature_mask(x) -> np.ndarray:
    """(N, 8) target tokens whose letter is unique in the target window, is the right letter of some
    instruction (8..16) and the left letter of none: the answer's 'bag-of-letters signature'."""
    p = letter_parts(x)
    tc = np.take_along_axis(letter_counts(p["tl"]), p["tl"], 1)
    rc = np.take_along_axis(letter_counts(p["ir"]), p["tl"], 1)
    lc = np.take_along_axis(letter_counts(p["il"]), p["tl"], 1)
    return (tc == 1) & (rc >= 1) & (lc == 0)


def letter_signature(x, params=None):
    """Leftmost target token with the answer's signature (unique in the window, a right letter of some
    instruction, a left letter of none); if there is none, the least-frequent rule."""
    m = letter_signature_mask(x)
    c = target_letter_count(x)
    fb = np.argmax(c == c.min(1, keepdims=True), 1)
    return _token_at(x, _leftmost(m, fb))


def letter_query_only(x, params=None):
    """One hop only: the target token whose letter is the query's right letter (correct for every 1-hop
    prompt); if no target token has it, the leftmost target token."""
    p = letter_parts(x)
    m = p["tl"] == p["ir"][:, -1:]
    return _token_at(x, _leftmost(m, 0))


def _letter_candidate_codes(x) -> np.ndarray:
    """(N, 8) integer code of each target position's bag-of-letters features: how often its letter occurs in
    the target window (1..8), as a left letter (0..9) and as a right letter (0..9) of the tokens at 8..16."""
    p = letter_parts(x)
    tc = np.take_along_axis(letter_counts(p["tl"]), p["tl"], 1)
    lc = np.take_along_axis(letter_counts(p["il"]), p["tl"], 1)
    rc = np.take_along_axis(letter_counts(p["ir"]), p["tl"], 1)
    return ((tc - 1) * 10 + lc) * 10 + rc


def _fit_candidate_table(codes: np.ndarray, answer_pos: np.ndarray, n_codes: int) -> dict:
    """Estimate P(a target position is the answer | its feature code) on the training slice (add-one)."""
    is_ans = np.arange(TARGET_WINDOW)[None, :] == np.asarray(answer_pos)[:, None]
    tot = np.bincount(codes.ravel(), minlength=n_codes)
    hit = np.bincount(codes.ravel(), weights=is_ans.ravel().astype(float), minlength=n_codes)
    return {"score": (hit + 1) / (tot + 2)}


def _table_predict(x, codes, params):
    s = params["score"][codes]
    return _token_at(x, np.argmax(s == s.max(1, keepdims=True), 1))


def _fit_letter_table(train):
    return _fit_candidate_table(_letter_candidate_codes(train["x"]), train["answer_pos"], 800)


def letter_table(x, params):
    """Learned bag-of-letters: each target position is scored by P(answer | how often its letter occurs in
    the window, as a left letter and as a right letter of the instructions), a table counted on the training
    slice; the best-scoring position wins (ties -> leftmost). No hop is followed."""
    return _table_predict(x, _letter_candidate_codes(x), params)


# --- Number task --------------------------------------------------------------

def number_query_only_fit(train):
    """Most frequent answer position for each query value on the training slice."""
    v, tp = train["x"][:, QUERY_POS], train["answer_pos"]
    table = np.zeros((17, TARGET_WINDOW), dtype=np.int64)
    np.add.at(table, (v, tp), 1)
    overall = int(np.bincount(tp, minlength=TARGET_WINDOW).argmax())
    best = np.where(table.sum(1) > 0, table.argmax(1), overall)
    return {"pos_for_value": best}


def number_query_only(x, params):
    """Answer = the letter at the position the query value alone predicts best (a lookup fitted on train):
    16 - v for v >= 9 (every 1-hop prompt), a fixed position otherwise."""
    return _token_at(x, params["pos_for_value"][np.asarray(x)[:, QUERY_POS]])


def number_pointer_votes(x, params=None):
    """The target position pointed at by the most instructions (8..16, query included; ties -> leftmost)."""
    v = target_votes(number_pointers(x))
    return _token_at(x, np.argmax(v == v.max(1, keepdims=True), 1))


def number_instruction_votes_pos(x) -> np.ndarray:
    v = target_votes(number_pointers(x)[:, :-1])
    return np.argmax(v == v.max(1, keepdims=True), 1)


def number_query_then_votes(x, params=None):
    """If the query points into the target window, its letter; otherwise the target position pointed at by
    the most instructions at 8..15 (ties -> leftmost)."""
    x = np.asarray(x)
    q = QUERY_POS - x[:, QUERY_POS]
    pos = np.where(q < TARGET_WINDOW, q, number_instruction_votes_pos(x))
    return _token_at(x, pos)


def number_position8(x, params=None):
    """The letter pointed at by the instruction at position 8 (it always points into the target window)."""
    x = np.asarray(x)
    return _token_at(x, TARGET_WINDOW - x[:, TARGET_WINDOW])


def number_most_frequent_letter(x, params=None):
    """The most frequent letter of the target window (ties -> leftmost)."""
    t = np.asarray(x)[:, :TARGET_WINDOW]
    c = (t[:, :, None] == t[:, None, :]).sum(2)
    return _token_at(x, np.argmax(c == c.max(1, keepdims=True), 1))


def _number_candidate_codes(x) -> np.ndarray:
    """(N, 8) code of each target position: which of the 9 instructions at 8..16 point at it (a 9-bit mask),
    times 8, plus the position itself."""
    ptr = number_pointers(x)
    bits = (ptr[:, None, :] == np.arange(TARGET_WINDOW)[None, :, None]) * (1 << np.arange(N_INSTR))[None, None, :]
    return bits.sum(2) * TARGET_WINDOW + np.arange(TARGET_WINDOW)[None, :]


def _fit_number_table(train):
    return _fit_candidate_table(_number_candidate_codes(train["x"]), train["answer_pos"],
                                (1 << N_INSTR) * TARGET_WINDOW)


def number_table(x, params):
    """Learned bag-of-pointers: each target position is scored by P(answer | which instructions point at it,
    the position), a table counted on the training slice; the best-scoring position wins (ties -> leftmost).
    It sees every pointer into the target window but never composes two hops."""
    return _table_predict(x, _number_candidate_codes(x), params)


# --- both ---------------------------------------------------------------------

def _fit_majority_answer(train):
    return {"token": int(np.bincount(train["y"]).argmax())}


def majority_answer(x, params):
    """The most frequent answer token of the training slice, whatever the prompt."""
    return np.full(len(x), params["token"], dtype=np.int64)


def _fit_majority_position(train):
    return {"pos": int(np.bincount(train["answer_pos"], minlength=TARGET_WINDOW).argmax())}


def majority_position(x, params):
    """The token at the most frequent answer position of the training slice."""
    return np.asarray(x)[:, params["pos"]]


def random_position(x, params=None):
    """A uniformly random target position (its expected accuracy is computed exactly, not sampled)."""
    return np.asarray(x)[:, 0]


def expected_random_position(x, y) -> np.ndarray:
    """Exact per-sample probability that a uniformly random target token equals the answer token."""
    return (np.asarray(x)[:, :TARGET_WINDOW] == np.asarray(y)[:, None]).mean(1)


SOLVERS: dict[str, dict[str, Shortcut]] = {
    "letter": {s.name: s for s in [
        Shortcut("least_frequent", "letter", letter_least_frequent.__doc__, letter_least_frequent),
        Shortcut("most_frequent", "letter", letter_most_frequent.__doc__, letter_most_frequent),
        Shortcut("global_least_frequent", "letter", letter_global_least_frequent.__doc__,
                 letter_global_least_frequent),
        Shortcut("letter_signature", "letter", letter_signature.__doc__, letter_signature),
        Shortcut("table_bag_of_letters", "letter", letter_table.__doc__, letter_table, _fit_letter_table),
        Shortcut("query_only", "letter", letter_query_only.__doc__, letter_query_only),
        Shortcut("majority_answer", "letter", majority_answer.__doc__, majority_answer, _fit_majority_answer),
        Shortcut("majority_position", "letter", majority_position.__doc__, majority_position,
                 _fit_majority_position),
        Shortcut("random_position", "letter", random_position.__doc__, random_position, expected=True),
    ]},
    "number": {s.name: s for s in [
        Shortcut("query_only", "number", number_query_only.__doc__, number_query_only, number_query_only_fit),
        Shortcut("pointer_votes", "number", number_pointer_votes.__doc__, number_pointer_votes),
        Shortcut("query_then_votes", "number", number_query_then_votes.__doc__, number_query_then_votes),
        Shortcut("position8_pointer", "number", number_position8.__doc__, number_position8),
        Shortcut("table_bag_of_pointers", "number", number_table.__doc__, number_table, _fit_number_table),
        Shortcut("most_frequent_letter", "number", number_most_frequent_letter.__doc__,
                 number_most_frequent_letter),
        Shortcut("majority_answer", "number", majority_answer.__doc__, majority_answer, _fit_majority_answer),
        Shortcut("majority_position", "number", majority_position.__doc__, majority_position,
                 _fit_majority_position),
        Shortcut("random_position", "number", random_position.__doc__, random_position, expected=True),
    ]},
}


def _clean_doc(doc: str | None) -> str:
    return " ".join((doc or "").split())


def fit_solvers(task: str, train: dict) -> dict[str, dict]:
    """Fit every solver of ``task`` that learns something on the training arrays ``train``."""
    return {name: s.fitted(train) for name, s in SOLVERS[task].items()}


def solver_correct(task: str, name: str, a: dict, params: dict | None = None) -> np.ndarray:
    """Per-sample correctness (float: 0/1, or the exact expectation for ``random_position``)."""
    s = SOLVERS[task][name]
    if s.expected:
        return expected_random_position(a["x"], a["y"])
    pred = s.predict(a["x"], params if params is not None else {})
    return (pred == a["y"]).astype(float)


def shortcut_accuracy(task: str, seed: int = 0, n_train: int = DEFAULT_N_TRAIN,
                      splits: Sequence[str] = EVAL_SPLITS, data: dict | None = None,
                      fitted: dict | None = None) -> pd.DataFrame:
    """Accuracy of every shortcut solver of ``task`` (fitted on the first ``n_train`` training samples) on
    ``splits``, overall and per hop, with 95 % Wilson intervals."""
    data = data or audit_splits(task, seed, n_train)
    fitted = fitted if fitted is not None else fit_solvers(task, data["train"])
    rows = []
    for split in splits:
        a = data[split]
        for name, s in SOLVERS[task].items():
            c = solver_correct(task, name, a, fitted[name])
            for hop in HOP_LABELS:
                m = np.ones(len(c), bool) if hop == "all" else a["hops"] == int(hop)
                k, n = float(c[m].sum()), int(m.sum())
                lo, hi = wilson(k, n)
                rows.append({"task": task, "seed": seed, "split": split, "solver": name, "hop": hop, "n": n,
                             "accuracy": k / n, "ci_lo": float(lo), "ci_hi": float(hi),
                             "description": _clean_doc(s.description)})
    return pd.DataFrame(rows)


# =============================================================================
# Audit statistics

def _n_letters_at_extremes(letters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of distinct letters attaining the least and the most frequent count in each row."""
    cnt = letter_counts(letters)
    present = cnt > 0
    lo = np.where(present, cnt, 99).min(1, keepdims=True)
    hi = cnt.max(1, keepdims=True)
    return (present & (cnt == lo)).sum(1), (present & (cnt == hi)).sum(1)


def _iid_letter_null() -> dict[str, float]:
    """Exact rates for a window whose 8 letters are i.i.d. uniform over a..h, the answer at a fixed position.

    Sums over the 3,432 ways the other 7 letters can be spread over the 8 letters (letter 0 being the
    answer's), each weighted by its multinomial probability.
    """
    import itertools

    stats = dict.fromkeys(["answer_letter_unique", "answer_among_least_frequent", "answer_unique_least_frequent",
                           "answer_among_most_frequent", "answer_unique_most_frequent", "least_frequent_solver"], 0.0)
    for cuts in itertools.combinations(range(7 + N_LET - 1), N_LET - 1):  # stars and bars
        edges = (-1,) + cuts + (7 + N_LET - 1,)
        others = [edges[i + 1] - edges[i] - 1 for i in range(N_LET)]
        prob = math.factorial(7) / math.prod(math.factorial(c) for c in others) / N_LET ** 7
        cnt = [others[0] + 1] + others[1:]
        present = [c for c in cnt if c > 0]
        lo, hi, a = min(present), max(present), cnt[0]
        n_lo, n_hi = sum(c == lo for c in present), sum(c == hi for c in present)
        stats["answer_letter_unique"] += prob * (a == 1)
        stats["answer_among_least_frequent"] += prob * (a == lo)
        stats["answer_unique_least_frequent"] += prob * (a == lo and n_lo == 1)
        stats["answer_among_most_frequent"] += prob * (a == hi)
        stats["answer_unique_most_frequent"] += prob * (a == hi and n_hi == 1)
        # least-frequent rule (ties -> leftmost), answer at a uniformly random position: by exchangeability
        # it is right with probability 1 / (number of tokens tied for least frequent)
        stats["least_frequent_solver"] += prob * (a == lo) / (n_lo * lo)
    return stats


_IID_NULL: dict[str, float] | None = None


def iid_letter_null() -> dict[str, float]:
    global _IID_NULL
    if _IID_NULL is None:
        _IID_NULL = _iid_letter_null()
    return _IID_NULL


LETTER_NULL_NOTE = ("i.i.d. null: the 8 target letters drawn independently and uniformly from a..h "
                    "(the answer's letter drawn like any other), exact by enumeration")


def letter_frequency_audit(a: dict, split: str = "", seed: int = 0) -> pd.DataFrame:
    """Letter task: how the answer's letter ranks by frequency in the target window.

    Rows (per hop and overall): the answer's letter occurs once in the window; it is among the least
    frequent letters (ties included); it is the unique least-frequent letter; among / unique most-frequent.
    ``null_rate`` is the same rate under the i.i.d. null (``LETTER_NULL_NOTE``). Also the distribution of
    the number of target tokens whose letter is unique in the window (``n_unique_letter_tokens``), the
    size of the candidate set that the 'unique letter' regularity leaves.
    """
    x, tp, hops = a["x"], a["answer_pos"], a["hops"]
    c = target_letter_count(x)
    rows_ = np.arange(len(x))
    ans = c[rows_, tp]
    n_min, n_max = _n_letters_at_extremes(letter_parts(x)["tl"])
    is_min = ans == c.min(1)
    is_max = ans == c.max(1)
    null = iid_letter_null()
    flags = {
        "answer_letter_unique": ans == 1,
        "answer_among_least_frequent": is_min,
        "answer_unique_least_frequent": is_min & (n_min == 1),
        "answer_among_most_frequent": is_max,
        "answer_unique_most_frequent": is_max & (n_max == 1),
    }
    out = []
    for stat, f in flags.items():
        for r in _per_hop_rows(f, hops, task="letter", split=split, seed=seed, statistic=stat):
            r.update(null_rate=null[stat], null=LETTER_NULL_NOTE)
            out.append(r)
    n1 = (c == 1).sum(1)
    for size in range(1, TARGET_WINDOW + 1):
        for r in _per_hop_rows(n1 == size, hops, task="letter", split=split, seed=seed,
                               statistic=f"n_unique_letter_tokens={size}"):
            r.update(null_rate=float("nan"), null="")
            out.append(r)
    return pd.DataFrame(out)


def letter_instruction_audit(a: dict, split: str = "", seed: int = 0) -> pd.DataFrame:
    """Letter task: where the answer's letter appears outside the target window.

    - ``answer_letter_left_in_instructions``: it is the left letter of some token at 8..16. The null is the
      rate if each of the 9 left letters were uniform over a..h (1 - (7/8)^9). Validity forbids it only
      before the last hop's position.
    - ``answer_letter_right_exactly_once``: it is the right letter of exactly one token at 8..16 (of the
      chain's last instruction). Null: 9 uniform right letters, exactly one equal (9 (1/8)(7/8)^8).
    - ``query_left_in_chain``: the query's left letter (never read) is a chain letter. Null: hops/8.
    - ``signature_unique``: the answer is the only target token with the signature of
      :func:`letter_signature_mask` (then the signature rule is right without following the chain).
    - ``signature_candidates=k``: distribution of the number of target tokens with that signature.
    """
    x, tp, hops = a["x"], a["answer_pos"], a["hops"]
    p = letter_parts(x)
    rows_ = np.arange(len(x))
    A = p["tl"][rows_, tp]
    chain = chain_sets(a)
    sig = letter_signature_mask(x)
    null_left = 1 - (7 / 8) ** 9
    null_right1 = 9 * (1 / 8) * (7 / 8) ** 8
    out = []

    def add(stat, flag, null_rate, null):
        for r in _per_hop_rows(flag, hops, task="letter", split=split, seed=seed, statistic=stat):
            r.update(null_rate=null_rate, null=null)
            out.append(r)

    add("answer_letter_left_in_instructions", (p["il"] == A[:, None]).any(1), null_left,
        "9 left letters uniform over a..h")
    add("answer_letter_right_exactly_once", (p["ir"] == A[:, None]).sum(1) == 1, null_right1,
        "9 right letters uniform over a..h")
    q_in = chain[rows_, p["il"][:, -1]]
    for r in _per_hop_rows(q_in, hops, task="letter", split=split, seed=seed, statistic="query_left_in_chain"):
        r.update(null_rate=(hops.mean() / N_LET if r["hop"] == "all" else int(r["hop"]) / N_LET),
                 null="query left letter uniform over a..h: hops/8")
        out.append(r)
    add("signature_unique", sig.sum(1) == 1, float("nan"), "")
    for k in range(0, TARGET_WINDOW + 1):
        add(f"signature_candidates={k}", sig.sum(1) == k, float("nan"), "")
    return pd.DataFrame(out)


def distractor_letter_audit(a: dict, split: str = "", seed: int = 0) -> pd.DataFrame:
    """Letter task: distribution of the letters of off-chain ('distractor') slots given the chain.

    For each slot kind — target letters other than the answer, left and right letters of the off-chain
    instructions, the query's left letter — the fraction of slot letters that are chain letters and that
    equal the answer letter. Under a uniform null these are hops/8 and 1/8. ``forced_by_validity`` says
    whether the task's uniqueness rule forces the measured rate to 0 (target letters must avoid every
    chain letter; the other slots are free or only partly constrained).
    """
    x, tp, hops = a["x"], a["answer_pos"], a["hops"]
    p = letter_parts(x)
    n = len(x)
    rows_ = np.arange(n)
    chain = chain_sets(a)
    A = p["tl"][rows_, tp]
    onc = on_chain_mask(a)
    off_t = ~onc[:, :TARGET_WINDOW]
    off_i = ~onc[:, TARGET_WINDOW:]
    off_i[:, -1] = False  # the query is on the chain; its left letter is its own slot kind
    qmask = np.zeros_like(off_i)
    qmask[:, -1] = True
    kinds = {
        "target_letter": (p["tl"], off_t, "yes"),
        "instruction_left": (p["il"], off_i, "partly (only before a read position)"),
        "instruction_right": (p["ir"], off_i, "no"),
        "query_left": (p["il"], qmask, "no"),
    }
    out = []
    for kind, (letters, mask, forced) in kinds.items():
        in_chain = np.take_along_axis(chain, letters, 1) & mask
        is_ans = (letters == A[:, None]) & mask
        for hop in HOP_LABELS:
            m = np.ones(n, bool) if hop == "all" else hops == int(hop)
            slots = int(mask[m].sum())
            null_chain = float((hops[m][:, None] * mask[m]).sum() / max(slots, 1) / N_LET)
            for stat, f, nr in (("is_chain_letter", in_chain, null_chain), ("is_answer_letter", is_ans, 1 / N_LET)):
                r = _rate_row(int(f[m].sum()), slots, task="letter", split=split, seed=seed, slot=kind,
                              statistic=stat, hop=hop)
                r.update(null_rate=nr, null="slot letter uniform over a..h", forced_by_validity=forced)
                out.append(r)
    return pd.DataFrame(out)


def number_instruction_audit(a: dict, split: str = "", seed: int = 0) -> pd.DataFrame:
    """Number task: values of on-chain vs off-chain instructions at each position 8..15.

    Rows: ``position``, ``role`` (on/off chain), ``value`` 1..16, ``count``, ``freq`` (within role and
    position); plus summary rows (``value = 0``) with ``p_into_target`` (the instruction points into the
    target window), ``p_onto_chain`` (it points at a position on the chain) and ``mean_value``. For an
    off-chain instruction at ``t`` the generator draws the value uniformly from 1..t, so
    ``p_into_target`` = 8/t (``null_into_target``).
    """
    x = a["x"]
    onc = on_chain_mask(a)
    ptr = number_pointers(x)
    n = len(x)
    rows_ = np.arange(n)[:, None]
    points_on_chain = onc[rows_, np.clip(ptr, 0, SEQ_LEN - 1)]
    out = []
    for t in range(TARGET_WINDOW, QUERY_POS):
        k = t - TARGET_WINDOW
        for role, m in (("on_chain", onc[:, t]), ("off_chain", ~onc[:, t])):
            vals = x[m, t]
            cnt = np.bincount(vals, minlength=17)[1:]
            tot = int(m.sum())
            for v in range(1, 17):
                out.append({"task": "number", "split": split, "seed": seed, "position": t, "role": role,
                            "value": v, "count": int(cnt[v - 1]), "n": tot, "freq": cnt[v - 1] / max(tot, 1)})
            into = int((ptr[m, k] < TARGET_WINDOW).sum())
            onto = int(points_on_chain[m, k].sum())
            lo, hi = wilson(into, tot)
            lo2, hi2 = wilson(onto, tot)
            out.append({"task": "number", "split": split, "seed": seed, "position": t, "role": role, "value": 0,
                        "count": tot, "n": tot, "freq": float("nan"),
                        "mean_value": float(vals.mean()) if tot else float("nan"),
                        "p_into_target": into / max(tot, 1), "p_into_target_lo": float(lo),
                        "p_into_target_hi": float(hi),
                        "null_into_target": TARGET_WINDOW / t if role == "off_chain" else float("nan"),
                        "p_onto_chain": onto / max(tot, 1), "p_onto_chain_lo": float(lo2),
                        "p_onto_chain_hi": float(hi2)})
    return pd.DataFrame(out)


def answer_multiplicity_audit(task: str, a: dict, split: str = "", seed: int = 0) -> pd.DataFrame:
    """How often the answer occurs more than once in the target window (a 'copy a letter' shortcut then
    gets credit from a wrong position). Number task: the answer letter; Letter task: the answer letter and
    the whole answer token. Null: the other 7 target tokens i.i.d. uniform (Number: 1 - (119/120)^7;
    Letter token: 1 - (63/64)^7; Letter letter: 1 - (7/8)^7)."""
    x, tp, hops = a["x"], a["answer_pos"], a["hops"]
    rows_ = np.arange(len(x))
    out = []
    if task == "number":
        t = x[:, :TARGET_WINDOW]
        more = (t == t[rows_, tp][:, None]).sum(1) > 1
        specs = [("answer_letter_repeated", more, 1 - (119 / 120) ** 7)]
    else:
        p = letter_parts(x)
        t = x[:, :TARGET_WINDOW]
        specs = [("answer_token_repeated", (t == t[rows_, tp][:, None]).sum(1) > 1, 1 - (63 / 64) ** 7),
                 ("answer_letter_repeated", (p["tl"] == p["tl"][rows_, tp][:, None]).sum(1) > 1,
                  1 - (7 / 8) ** 7)]
    for stat, f, nr in specs:
        for r in _per_hop_rows(f, hops, task=task, split=split, seed=seed, statistic=stat):
            r.update(null_rate=nr, null="other 7 target tokens i.i.d. uniform")
            out.append(r)
    return pd.DataFrame(out)


# --- information in single features ------------------------------------------

def _features(task: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Small discrete features of a prompt that could reveal the hop count or answer position."""
    x = np.asarray(x)
    if task == "number":
        ptr = number_pointers(x)
        return {"query_value": x[:, QUERY_POS],
                "n_instructions_into_target": (ptr[:, :-1] < TARGET_WINDOW).sum(1),
                "position8_pointer": ptr[:, 0]}
    p = letter_parts(x)
    return {"query_token": x[:, QUERY_POS],
            "query_left_letter": p["il"][:, -1],
            "query_right_letter": p["ir"][:, -1],
            "n_distinct_target_letters": (letter_counts(p["tl"]) > 0).sum(1)}


def mutual_information(f: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information (bits) between two discrete arrays."""
    _, fi = np.unique(f, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((fi.max() + 1, yi.max() + 1))
    np.add.at(joint, (fi, yi), 1)
    joint /= joint.sum()
    pf = joint.sum(1, keepdims=True)
    py = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / (pf @ py)[nz])).sum())


def entropy_bits(y: np.ndarray) -> float:
    p = np.bincount(np.unique(y, return_inverse=True)[1]) / len(y)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def information_table(task: str, data: dict, seed: int = 0, eval_splits: Sequence[str] = EVAL_SPLITS,
                      shuffle_seed: int = 0) -> pd.DataFrame:
    """What single features reveal about the hop count and the answer position.

    For each feature and target: plug-in mutual information on the training slice (bits), the same after
    shuffling the target (the estimator's bias at this sample size), the target's entropy, and the accuracy
    on each evaluation split of the best predictor from the feature alone (a lookup table of the most frequent
    target per feature value, fitted on the training slice) next to the majority-class accuracy.
    """
    tr = data["train"]
    ftr = _features(task, tr["x"])
    rng = np.random.default_rng(shuffle_seed)
    out = []
    for target in ("hops", "answer_pos"):
        ytr = tr[target]
        maj = int(np.bincount(ytr).argmax())
        for fname, f in ftr.items():
            mi = mutual_information(f, ytr)
            mi0 = mutual_information(f, rng.permutation(ytr))
            table: dict[int, int] = {}
            joint = pd.crosstab(f, ytr)
            for val, row in joint.iterrows():
                table[int(val)] = int(row.idxmax())
            for split in eval_splits:
                e = data[split]
                fe = _features(task, e["x"])[fname]
                pred = np.array([table.get(int(v), maj) for v in fe])
                k = int((pred == e[target]).sum())
                lo, hi = wilson(k, len(pred))
                out.append({"task": task, "seed": seed, "feature": fname, "target": target, "split": split,
                            "mi_bits": mi, "mi_bits_shuffled": mi0, "target_entropy_bits": entropy_bits(ytr),
                            "accuracy": k / len(pred), "ci_lo": float(lo), "ci_hi": float(hi),
                            "majority_accuracy": float((e[target] == maj).mean()), "n": len(pred)})
    return pd.DataFrame(out)


def conditional_table(task: str, a: dict, feature: str, target: str, split: str = "", seed: int = 0) -> pd.DataFrame:
    """Counts and P(target | feature) for one feature (e.g. the Number task's query value vs hops)."""
    f = _features(task, a["x"])[feature]
    ct = pd.crosstab(f, a[target])
    long = ct.stack().rename("count").reset_index()
    long.columns = [feature, target, "count"]
    long["p_target_given_feature"] = long["count"] / long.groupby(feature)["count"].transform("sum")
    long["p_feature_given_target"] = long["count"] / long.groupby(target)["count"].transform("sum")
    long.insert(0, "seed", seed)
    long.insert(0, "split", split)
    long.insert(0, "task", task)
    return long.rename(columns={feature: "value"}).assign(feature=feature)


# --- duplicates ----------------------------------------------------------------

def _row_keys(x: np.ndarray) -> np.ndarray:
    """Exact byte keys of encoded rows (token ids < 256): one 17-byte void scalar per row."""
    x = np.asarray(x)
    if x.min(initial=0) < 0 or x.max(initial=0) > 255:
        raise ValueError("token ids must fit in one byte")
    b = np.ascontiguousarray(x.astype(np.uint8))
    return b.view(np.dtype((np.void, b.shape[1]))).ravel()


def duplicate_counts(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Exact duplicate rows within and between groups of encoded rows.

    ``groups`` maps a name (e.g. a split) to an (N, L) integer array. Rows are turned into byte keys and
    sorted once (``np.unique``), so this is vectorised and runs on the full 480k rows in about a second.
    Returns rows with ``kind`` = ``within`` (``rows_in_duplicate_groups``: rows whose input occurs more than
    once in the group; ``extra_copies``: rows minus distinct inputs) and ``between`` (``rows_of_a_also_in_b``:
    rows of group a whose input also occurs in group b).
    """
    names = list(groups)
    keys = np.concatenate([_row_keys(groups[g]) for g in names])
    gid = np.concatenate([np.full(len(groups[g]), i) for i, g in enumerate(names)])
    _, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
    n_u = len(cnt)
    present = np.zeros((len(names), n_u), dtype=np.int64)
    np.add.at(present, (gid, inv), 1)
    out = []
    for i, g in enumerate(names):
        m = gid == i
        pc = present[i]
        out.append({"kind": "within", "a": g, "b": g, "rows": int(m.sum()), "distinct": int((pc > 0).sum()),
                    "rows_in_duplicate_groups": int(pc[pc > 1].sum()), "extra_copies": int(m.sum() - (pc > 0).sum())})
    for i, g in enumerate(names):
        for j, h in enumerate(names):
            if i == j:
                continue
            both = (present[i] > 0) & (present[j] > 0)
            out.append({"kind": "between", "a": g, "b": h, "rows": int((gid == i).sum()),
                        "distinct": int((present[i] > 0).sum()),
                        "rows_of_a_also_in_b": int(present[i][both].sum()), "shared_inputs": int(both.sum())})
    return pd.DataFrame(out)


def chain_skeleton(a: dict) -> np.ndarray:
    """The part of each prompt a chain-follower needs: the tokens on the chain at their positions (other
    positions set to 0). Two prompts with the same skeleton have the same answer by the same chain."""
    onc = on_chain_mask(a)
    return np.where(onc, a["x"], 0)


def duplicates(task: str, seed: int = 0) -> pd.DataFrame:
    """Exact duplicate inputs within and between train / val / test over all 480k samples of ``task``,
    and the same for chain skeletons (:func:`chain_skeleton`)."""
    arrs = {s: split_arrays(task, s, seed) for s in SPLIT_SIZES}
    t0 = time.perf_counter()
    full = duplicate_counts({s: a["x"] for s, a in arrs.items()})
    t_full = time.perf_counter() - t0
    skel = duplicate_counts({s: chain_skeleton(a) for s, a in arrs.items()})
    full.insert(0, "level", "prompt")
    skel.insert(0, "level", "chain_skeleton")
    out = pd.concat([full, skel], ignore_index=True)
    out.insert(0, "seed", seed)
    out.insert(0, "task", task)
    out["seconds_prompt_level"] = t_full
    return out


# =============================================================================
# Shortcut-free variants of an evaluation set

VARIANTS = {
    "letter": {
        "least_frequent": "target letters other than the answer re-drawn (outside the chain letters, as validity "
                          "requires) so that as many target tokens as possible have a letter of their own",
        "query_left": "the query's left letter (never read) re-drawn uniformly over a..h",
        "instruction_right": "right letters of off-chain instructions (never read) re-drawn uniformly over a..h",
        "instruction_left": "left letters of off-chain instructions re-drawn uniformly over the letters that "
                            "validity allows at that position (not read at a later chain position)",
        "instruction_letters": "query_left + instruction_right + instruction_left: every non-target off-chain "
                               "letter constrained by validity only",
        "all": "least_frequent + instruction_letters",
    },
    "number": {
        "pointer_votes": "off-chain instruction values re-drawn (uniform 1..t, as in the generator) until the "
                         "pointer-vote rule is right in a designated 1/8 of the prompts (chance) and wrong in "
                         "the rest",
    },
}
_LETTER_PARTS = {"least_frequent": {"target"}, "query_left": {"query"}, "instruction_right": {"right"},
                 "instruction_left": {"left"}, "instruction_letters": {"query", "right", "left"},
                 "all": {"target", "query", "right", "left"}}


def _variant_rng(task: str, regularity: str, seed: int, split: str) -> np.random.Generator:
    tid = get_task(task).task_id
    rid = list(VARIANTS[task]).index(regularity)
    sid = list(SPLIT_SIZES).index(split)
    return np.random.default_rng([seed, 31337, tid, rid, sid])


def _letter_max_ambiguity(a: dict, rng: np.random.Generator) -> np.ndarray:
    """Re-draw the 7 non-answer target letters to maximise the number of unique-letter tokens."""
    x = a["x"].copy()
    n = len(x)
    rows_ = np.arange(n)
    hops, tp = a["hops"], a["answer_pos"]
    chain = chain_sets(a)
    p = letter_parts(x)
    k = N_LET - hops                                                   # letters allowed in the target window
    outside = np.argsort(chain, axis=1, kind="stable")                 # outside letters first
    keys = np.where(np.arange(N_LET)[None, :] < k[:, None], rng.random((n, N_LET)), 2.0)
    operm = np.take_along_axis(outside, np.argsort(keys, axis=1), 1)  # outside letters, random order
    j = np.arange(TARGET_WINDOW - 1)[None, :]
    # hops = 1: 7 distinct letters; hops >= 2: k-1 letters once each and one filler letter for the rest
    idx = np.where(hops[:, None] == 1, j, np.where(j < (k - 1)[:, None], j + 1, 0))
    letters7 = np.take_along_axis(operm, idx, 1)
    letters7 = np.take_along_axis(letters7, np.argsort(rng.random((n, TARGET_WINDOW - 1)), 1), 1)
    others = np.argsort(np.arange(TARGET_WINDOW)[None, :] == tp[:, None], axis=1, kind="stable")[:, :7]
    tl = p["tl"].copy()
    tl[rows_[:, None], others] = letters7
    x[:, :TARGET_WINDOW] = 1 + tl * N_LET + p["tn"]
    return x


def _letter_forbidden_left(a: dict) -> np.ndarray:
    """(N, 8, 8) for instruction positions 8..15: the letters validity forbids as a left letter there (the
    letters read at a later chain position, which would then match two earlier tokens)."""
    n = len(a["x"])
    rows_ = np.arange(n)
    p = letter_parts(a["x"])
    chain = a["chain"]
    out = np.zeros((n, QUERY_POS - TARGET_WINDOW, N_LET), dtype=bool)
    for t in range(TARGET_WINDOW, QUERY_POS):
        for j in range(MAX_HOPS):  # letter read at chain[j] (j < hops), a position later than t
            ok = (j < a["hops"]) & (chain[:, j] > t)
            read = p["ir"][rows_, np.clip(chain[:, j], TARGET_WINDOW, SEQ_LEN - 1) - TARGET_WINDOW]
            out[rows_[ok], t - TARGET_WINDOW, read[ok]] = True
    return out


def _letter_relaxed_instructions(a: dict, rng: np.random.Generator, parts: set[str]) -> np.ndarray:
    """Re-draw off-chain instruction letters and/or the query's left letter under validity only.

    ``parts``: ``"left"`` (left letters of off-chain instructions, uniform over the letters not read at a later
    chain position), ``"right"`` (their right letters, uniform over a..h), ``"query"`` (the query's left letter,
    uniform over a..h). All random numbers are drawn whatever ``parts`` is, so the parts are coupled
    across variants of the same prompts.
    """
    x = a["x"].copy()
    n = len(x)
    rows_ = np.arange(n)
    p = letter_parts(x)
    onc = on_chain_mask(a)
    il, ir = p["il"].copy(), p["ir"].copy()
    forbid = _letter_forbidden_left(a)
    for t in range(TARGET_WINDOW, QUERY_POS):
        c = t - TARGET_WINDOW
        allowed = np.argsort(forbid[:, c], axis=1, kind="stable")
        n_allowed = N_LET - forbid[:, c].sum(1)
        left = allowed[rows_, np.minimum((rng.random(n) * n_allowed).astype(np.int64), n_allowed - 1)]
        right = rng.integers(0, N_LET, size=n)
        off = ~onc[:, t]
        if "left" in parts:
            il[off, c] = left[off]
        if "right" in parts:
            ir[off, c] = right[off]
    q = rng.integers(0, N_LET, size=n)  # the query's left letter is never read
    if "query" in parts:
        il[:, -1] = q
    x[:, TARGET_WINDOW:] = 1 + N_LET * N_LET + il * N_LET + ir
    return x


def _number_designated_votes(a: dict, rng: np.random.Generator, p_success: float = 1 / TARGET_WINDOW,
                             max_rounds: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-draw off-chain offsets until the pointer-vote rule's correctness matches a designation."""
    x = a["x"].copy()
    n = len(x)
    onc = on_chain_mask(a)
    want = rng.random(n) < p_success
    todo = np.ones(n, bool)
    for _ in range(max_rounds):
        idx = np.flatnonzero(todo)
        if not len(idx):
            break
        for t in range(TARGET_WINDOW, QUERY_POS):
            off = idx[~onc[idx, t]]
            x[off, t] = 1 + np.minimum((rng.random(len(off)) * t).astype(np.int64), t - 1)
        ok = (number_pointer_votes(x[idx]) == a["y"][idx]) == want[idx]
        todo[idx[ok]] = False
    return x, want, ~todo


def shortcut_free_variant(task: str, regularity: str, split: str = "val", seed: int = 0, n: int | None = None,
                          base: dict | None = None, variant_seed: int = 0) -> dict[str, np.ndarray]:
    """An evaluation set in which one regularity carries no information (or as little as validity allows).

    Starts from the prompts of ``split`` (data seed ``seed``, first ``n``; or the arrays ``base``) and keeps
    every chain token, the answer, its position and the hop count; only off-chain tokens are re-drawn, so
    each prompt still has the same, unique chain (check with ``Task.solve``). See ``VARIANTS`` for what
    each variant re-draws. Returns the arrays of ``TaskDataset.arrays()`` (``x`` new) plus ``feasible`` (the
    re-draw met its target; always True except for rare Number prompts after ``max_rounds``) and, for
    ``pointer_votes``, ``designated`` (the prompts where the vote rule was made to succeed).

    What cannot be removed is stated, not hidden: in the Letter task the answer's letter must be unique in
    the target window (otherwise the last hop would match two tokens) and the 7 other target tokens may use
    only the 8 - hops letters outside the chain, so for hops >= 2 the 'unique letter' candidate set keeps at
    least 8 - hops members out of 8 (the least-frequent rule keeps a floor of 1/(8 - hops), not 1/8). In the
    Number task the query value is the first hop: it reveals whether there is one hop (value >= 9) and, if
    so, the answer; no variant can change that.
    """
    if task not in VARIANTS or regularity not in VARIANTS[task]:
        raise ValueError(f"unknown variant {regularity!r} for task {task!r}: "
                         f"choose one of {', '.join(VARIANTS.get(task, {}))}")
    a = dict(base) if base is not None else dict(split_arrays(task, split, seed, n))
    rng = _variant_rng(task, regularity, seed + 1000 * variant_seed, split)
    out = {k: np.array(v) for k, v in a.items()}
    out["feasible"] = np.ones(len(a["x"]), bool)
    if task == "letter":
        parts = _LETTER_PARTS[regularity]
        if "target" in parts:
            out["x"] = _letter_max_ambiguity(out, rng)
        if parts - {"target"}:
            out["x"] = _letter_relaxed_instructions(out, rng, parts - {"target"})
    else:
        out["x"], out["designated"], out["feasible"] = _number_designated_votes(out, rng)
    return out


def verify_variant(task: str, v: dict, limit: int | None = None) -> int:
    """Solve every prompt of a variant with the task's own solver; raises if any answer, hop count or
    chain differs from the recorded one. Returns the number of prompts checked."""
    t = get_task(task)
    n = len(v["x"]) if limit is None else min(limit, len(v["x"]))
    for i in range(n):
        toks = t.vocab.decode(v["x"][i])
        ans, hops, chain = t.solve(toks)
        want_chain = tuple(int(c) for c in v["chain"][i] if c >= 0)
        if (t.vocab.stoi[ans] != v["y"][i] or hops != v["hops"][i] or chain != want_chain):
            raise AssertionError(f"variant prompt {i} is not valid: solver gives {ans!r}, {hops} hops, {chain}; "
                                 f"recorded {t.vocab.decode([v['y'][i]])[0]!r}, {v['hops'][i]} hops, {want_chain}")
    return n


def variant_regularity(task: str, regularity: str, v: dict) -> pd.DataFrame:
    """The measured rates that the variant is meant to neutralise, next to their chance values."""
    hops = v["hops"]
    out = []

    def add(stat, flag, chance, note):
        for r in _per_hop_rows(flag, hops, task=task, regularity=regularity, statistic=stat):
            ch = chance(r["hop"]) if callable(chance) else chance
            r.update(chance=ch, chance_note=note)
            out.append(r)

    if task == "letter":
        c = target_letter_count(v["x"])
        n1 = (c == 1).sum(1)
        U = n1 == 1
        add("answer_unique_least_frequent", U, iid_letter_null()["answer_unique_least_frequent"],
            LETTER_NULL_NOTE)
        lf = letter_least_frequent(v["x"]) == v["y"]

        per_sample_floor = np.where(hops == 1, 1 / TARGET_WINDOW, 1 / (N_LET - hops))

        def floor(hop):
            return float(per_sample_floor.mean() if hop == "all" else per_sample_floor[hops == int(hop)].mean())
        add("least_frequent_solver_correct", lf, floor,
            "validity floor 1/(8 - hops) for hops >= 2, 1/8 for one hop (uniform guess among the unique-letter "
            "tokens, as many as validity allows)")
        # off-chain letter slots: how often they hold a chain letter, vs uniform over what validity allows
        p = letter_parts(v["x"])
        chain = chain_sets(v)
        onc = on_chain_mask(v)
        off = ~onc[:, TARGET_WINDOW:QUERY_POS]
        h_col = np.broadcast_to(hops[:, None], off.shape)
        f_t = _letter_forbidden_left(v).sum(2)          # forbidden letters are chain letters
        slots = {
            "query_left_is_chain_letter": (chain[np.arange(len(hops)), p["il"][:, -1]][:, None],
                                           np.ones((len(hops), 1), bool), hops[:, None] / N_LET,
                                           "uniform over a..h: hops/8"),
            "instruction_right_is_chain_letter": (np.take_along_axis(chain, p["ir"][:, :-1], 1), off,
                                                  h_col / N_LET, "uniform over a..h: hops/8"),
            "instruction_left_is_chain_letter": (np.take_along_axis(chain, p["il"][:, :-1], 1), off,
                                                 (h_col - f_t) / (N_LET - f_t),
                                                 "uniform over the letters validity allows there: "
                                                 "(hops - f)/(8 - f), f = letters read later"),
        }
        for stat, (flag, mask, expect, note) in slots.items():
            for hop in HOP_LABELS:
                m = (np.ones(len(hops), bool) if hop == "all" else hops == int(hop))[:, None] & mask
                r = _rate_row(int((flag & m).sum()), int(m.sum()), task=task, regularity=regularity,
                              statistic=stat, hop=hop)
                r.update(chance=float(np.broadcast_to(expect, m.shape)[m].mean()), chance_note=note)
                out.append(r)
        sig = letter_signature(v["x"]) == v["y"]
        add("letter_signature_solver_correct", sig, float("nan"), "not removable to chance (see docstring)")
    else:
        ok = number_pointer_votes(v["x"]) == v["y"]
        add("pointer_votes_solver_correct", ok, 1 / TARGET_WINDOW,
            "1/8 (designated; ties and repeated letters can add a little)")
    return pd.DataFrame(out)


# =============================================================================
# Trained models

@torch.no_grad()
def model_outputs(model, x: np.ndarray, batch_size: int = 2048, device: str | torch.device | None = None
                  ) -> np.ndarray:
    """Softmax over the vocabulary at the answer position (the 18th token): (N, V) float32."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.array(x[i:i + batch_size], dtype=np.int64)).to(dev)
        out.append(torch.softmax(model(xb, last_only=True)[:, -1].float(), -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _as_model_list(models) -> list[tuple[int, object]]:
    """Accept a model, a list of models, a list of (seed, model) or a dict seed -> model."""
    if isinstance(models, dict):
        return sorted(models.items())
    if isinstance(models, torch.nn.Module):
        return [(0, models)]
    out = []
    for i, m in enumerate(models):
        out.append(tuple(m) if isinstance(m, tuple) else (i, m))
    return out


def load_models(task: str, root: str | Path | None = None, map_location="cpu") -> list[tuple[int, object]]:
    """Every committed final model of ``task`` under ``root`` (default ``data/paper``) as (seed, model)."""
    from .train import load_checkpoint

    root = Path(root) if root is not None else AUDIT_DIR.parent / "paper"
    out = []
    for d in sorted(root.glob(f"{task}-s*")):
        if (d / "final.pt").exists():
            model, _ = load_checkpoint(d / "final.pt", map_location=map_location)
            out.append((int(d.name.rsplit("-s", 1)[1]), model))
    return out


def seed_summary(per_model: pd.DataFrame, keys: list[str], value: str = "accuracy") -> pd.DataFrame:
    """Mean over models (seeds) with a 95 % t-interval; with one model its Wilson interval is kept.

    With few seeds that agree exactly (e.g. all at 100 %) the t-interval has zero width, which would hide the
    uncertainty over prompts; so the interval is never narrower than the Wilson interval of the pooled prompts
    (``ci_kind`` says when that bound is the wider one)."""
    rows = []
    for key, g in per_model.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        m, lo, hi = mean_ci(g[value].to_numpy())
        kind = "t over seeds"
        if len(g) == 1:
            lo, hi, kind = float(g["ci_lo"].iloc[0]), float(g["ci_hi"].iloc[0]), "Wilson (one seed)"
        elif value == "accuracy" and g["n"].sum() > 0 and np.isfinite(m):
            n = g["n"].to_numpy()
            k = np.round(np.nan_to_num(g[value].to_numpy()) * n).sum()
            wlo, whi = (float(v) for v in wilson(k, n.sum()))
            if wlo < lo or whi > hi:
                lo, hi, kind = min(lo, wlo), max(hi, whi), "t over seeds, widened to the pooled Wilson"
        rows.append({**dict(zip(keys, key)), "n_models": len(g), "seeds": ",".join(str(s) for s in g["seed"]),
                     "n_per_model": int(g["n"].sum() / len(g)), value: m, "ci_lo": lo, "ci_hi": hi, "ci_kind": kind})
    return pd.DataFrame(rows)


def shortcut_use(models, task: str, splits: Sequence[str] = EVAL_SPLITS, solvers: Sequence[str] | None = None,
                 n_train: int = DEFAULT_N_TRAIN, device=None, batch_size: int = 2048
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Does a trained model do better where a shortcut would succeed than where it would fail?

    ``models``: one model, a list, or (data seed, model) pairs (each model is evaluated on the held-out
    prompts of the data seed it was trained on; solvers are fitted on that seed's training slice). For each
    solver, the pooled ``splits`` are divided by whether the solver is right; on each part (overall and per
    hop) we report the model's accuracy (Wilson interval), its mean probability on the correct answer, and,
    where the shortcut is wrong, its mean probability on the shortcut's answer. Returns (per-model table,
    summary over models with mean ± 95 % t-interval when there are several).
    """
    names = list(solvers) if solvers is not None else [s for s in SOLVERS[task] if not SOLVERS[task][s].expected]
    rows = []
    for seed, model in _as_model_list(models):
        data = audit_splits(task, seed, n_train)
        fitted = fit_solvers(task, data["train"])
        a = concat_arrays(data[s] for s in splits)
        probs = model_outputs(model, a["x"], batch_size=batch_size, device=device)
        r_ = np.arange(len(a["y"]))
        pred = probs.argmax(1)
        correct = pred == a["y"]
        p_correct = probs[r_, a["y"]]
        for name in names:
            sp = SOLVERS[task][name].predict(a["x"], fitted[name])
            s_ok = sp == a["y"]
            p_short = probs[r_, sp]
            for part, pm in (("shortcut_right", s_ok), ("shortcut_wrong", ~s_ok)):
                for hop in HOP_LABELS:
                    m = pm & (True if hop == "all" else a["hops"] == int(hop))
                    n = int(m.sum())
                    k = int(correct[m].sum())
                    lo, hi = wilson(k, n)
                    rows.append({"task": task, "seed": seed, "splits": "+".join(splits), "solver": name,
                                 "part": part, "hop": hop, "n": n, "accuracy": k / n if n else float("nan"),
                                 "ci_lo": float(lo), "ci_hi": float(hi),
                                 "mean_p_correct": float(p_correct[m].mean()) if n else float("nan"),
                                 "mean_p_shortcut_answer": (float(p_short[m].mean()) if n and part == "shortcut_wrong"
                                                            else float("nan")),
                                 "model_follows_shortcut": (float((pred[m] == sp[m]).mean())
                                                            if n and part == "shortcut_wrong" else float("nan"))})
    per_model = pd.DataFrame(rows)
    summary = seed_summary(per_model, ["task", "splits", "solver", "part", "hop"])
    return per_model, summary


def letter_conditions(v: dict) -> dict[str, np.ndarray]:
    """Letter task: per-prompt flags for the ways a prompt can break the generator's extra regularities
    (all allowed by the task's rule). Used to break a model's accuracy on a variant down by cause.

    In a valid prompt an off-chain instruction can start with a chain letter only if it sits after the
    position where that letter is read (``chain_letter_left_of_offchain``): the rule looks only at earlier
    tokens, but a lookup over the whole prompt then finds two tokens starting with that letter."""
    p = letter_parts(v["x"])
    n = len(v["x"])
    rows_ = np.arange(n)
    chain = chain_sets(v)
    onc = on_chain_mask(v)
    off = ~onc[:, TARGET_WINDOW:QUERY_POS]
    A = p["tl"][rows_, v["answer_pos"]]
    il, ir = p["il"][:, :-1], p["ir"][:, :-1]
    q, r0 = p["il"][:, -1], p["ir"][:, -1]
    return {
        "query_left_is_answer_letter": q == A,
        "query_left_is_chain_letter": chain[rows_, q],
        "query_left_is_own_right_letter": q == r0,   # the query starts with the letter it reads ("xx")
        "query_left_is_other_chain_letter": chain[rows_, q] & (q != r0),
        "answer_letter_right_of_offchain": ((ir == A[:, None]) & off).any(1),
        "chain_letter_right_of_offchain": (np.take_along_axis(chain, ir, 1) & off).any(1),
        "answer_letter_left_of_offchain": ((il == A[:, None]) & off).any(1),
        "chain_letter_left_of_offchain": (np.take_along_axis(chain, il, 1) & off).any(1),
        "answer_unique_least_frequent": (target_letter_count(v["x"]) == 1).sum(1) == 1,
    }


def variant_accuracy(models, task: str, regularities: Sequence[str] | None = None, split: str = "test",
                     n: int | None = None, n_train: int = DEFAULT_N_TRAIN, device=None, batch_size: int = 2048,
                     verify: int = 0, data: dict | None = None) -> dict[str, pd.DataFrame]:
    """Evaluate models (no retraining) and every shortcut solver on the original prompts and on each
    shortcut-free variant of ``split`` (first ``n`` prompts of each model's data seed).
    ``data``: ``{seed: audit_splits(task, seed, n_train)}`` already built by the caller (built here where missing).

    Returns a dict of tables: ``per_model`` (accuracy of each model and solver per variant and hop),
    ``summary`` (mean over models with 95 % intervals), ``regularity`` (the rates each variant is meant to
    neutralise, measured on it, next to chance) and, for the Letter task, ``conditions`` (each model's
    accuracy on every variant split by the flags of :func:`letter_conditions`, per hop).
    ``verify`` > 0 solves that many prompts of each variant with the task's solver first.
    """
    regs = list(regularities) if regularities is not None else list(VARIANTS[task])
    acc_rows, reg_rows, cond_rows = [], [], []
    for seed, model in _as_model_list(models):
        slices = (data or {}).get(seed)
        if slices is None:
            slices = audit_splits(task, seed, n_train)
        fitted = fit_solvers(task, slices["train"])
        if split in ("val", "test"):  # whole splits in the slices: their first n rows
            base = first_rows(slices[split], n)
        else:
            base = split_arrays(task, split, seed, n)
        sets = {"original": base}
        for r in regs:
            v = shortcut_free_variant(task, r, split=split, seed=seed, base=base)
            if verify:
                verify_variant(task, v, verify)
            sets[r] = v
            rr = variant_regularity(task, r, v)
            rr.insert(1, "seed", seed)
            reg_rows.append(rr)
        for vname, v in sets.items():
            probs = model_outputs(model, v["x"], batch_size=batch_size, device=device)
            correct = probs.argmax(1) == v["y"]
            evaluators = {"model": correct.astype(float)}
            for sname in SOLVERS[task]:
                evaluators[f"solver:{sname}"] = solver_correct(task, sname, v, fitted[sname])
            for who, c in evaluators.items():
                for hop in HOP_LABELS:
                    m = np.ones(len(c), bool) if hop == "all" else v["hops"] == int(hop)
                    k, nn = float(c[m].sum()), int(m.sum())
                    lo, hi = wilson(k, nn)
                    acc_rows.append({"task": task, "seed": seed, "split": split, "variant": vname, "who": who,
                                     "hop": hop, "n": nn, "accuracy": k / nn, "ci_lo": float(lo), "ci_hi": float(hi),
                                     "feasible_fraction": float(v.get("feasible", np.ones(1, bool)).mean())})
            if task == "letter":
                for cond, flag in letter_conditions(v).items():
                    for val in (True, False):
                        for r in _per_hop_rows(correct[flag == val], v["hops"][flag == val], task=task, seed=seed,
                                               split=split, variant=vname, condition=cond, value=val):
                            cond_rows.append(r)
    per_model = pd.DataFrame(acc_rows)
    out = {"per_model": per_model, "summary": seed_summary(per_model, ["task", "split", "variant", "who", "hop"]),
           "regularity": pd.concat(reg_rows, ignore_index=True)}
    if cond_rows:
        out["conditions"] = pd.DataFrame(cond_rows).rename(columns={"rate": "accuracy"})
    return out


# =============================================================================
# Learning curves against the shortcut floors (all seeds: eval.csv is committed for every run)

HOP1_CHAIN_READERS = {"number": ("query_only", "query_then_votes", "table_bag_of_pointers"),
                      "letter": ("query_only",)}


def curves_vs_floors(task: str, root: str | Path | None = None, n_train: int = DEFAULT_N_TRAIN,
                     solvers: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each committed run's validation accuracy per hop at every checkpoint (``eval.csv``, the whole val split
    of its data seed) next to the shortcut solvers' accuracy on the same prompts.

    Returns (long table: seed, step, hop, model accuracy, best solver and its accuracy; summary per seed and
    hop: the first checkpoint at which the model beats the best solver's Wilson upper bound).

    On one-hop prompts, reading the query *is* following the chain, so the solvers that read the query's
    pointer or right letter (``HOP1_CHAIN_READERS``) are left out of the one-hop floor.
    """
    root = Path(root) if root is not None else AUDIT_DIR.parent / "paper"
    rows, first = [], []
    names = list(solvers) if solvers is not None else list(SOLVERS[task])
    for d in sorted(root.glob(f"{task}-s*")):
        if not (d / "eval.csv").exists():
            continue
        seed = int(d.name.rsplit("-s", 1)[1])
        ev = pio.read_table(d / "eval.csv")
        ev["hop"] = ev["hop"].astype(str)
        data = {"train": split_arrays(task, "train", seed, n_train), "val": split_arrays(task, "val", seed)}
        floors = shortcut_accuracy(task, seed=seed, n_train=n_train, splits=("val",), data=data)
        floors = floors[floors.solver.isin(names)]
        floors = floors[~((floors.hop == "1") & floors.solver.isin(HOP1_CHAIN_READERS[task]))]
        best = floors.loc[floors.groupby("hop")["accuracy"].idxmax()].set_index("hop")
        for _, r in ev.iterrows():
            b = best.loc[r["hop"]]
            rows.append({"task": task, "seed": seed, "step": int(r["step"]), "hop": r["hop"],
                         "model_accuracy": float(r["accuracy"]), "best_solver": b["solver"],
                         "best_solver_accuracy": float(b["accuracy"]), "best_solver_ci_hi": float(b["ci_hi"])})
    long = pd.DataFrame(rows)
    for (seed, hop), g in long.groupby(["seed", "hop"]):
        g = g.sort_values("step")
        above = g[g.model_accuracy > g.best_solver_ci_hi]
        first.append({"task": task, "seed": seed, "hop": hop, "best_solver": g.best_solver.iloc[0],
                      "best_solver_accuracy": g.best_solver_accuracy.iloc[0],
                      "first_step_above_floor": int(above.step.iloc[0]) if len(above) else -1})
    return long, pd.DataFrame(first)


# =============================================================================
# Everything, written to data/audit/

def _model_tables(put, models, task, device, n_train, variant_n, verify, shortcut_splits, log) -> None:
    """The :data:`MODEL_TABLES` of ``task`` for ``models`` (a list of (seed, model)), added with ``put``."""
    if not models:
        return
    t0 = time.time()
    per, summ = shortcut_use(models, task, splits=shortcut_splits, device=device, n_train=n_train)
    put("shortcut_use", per)
    put("shortcut_use_summary", summ)
    log(f"[audit] {task}: shortcut use ({len(models)} model(s)) in {time.time() - t0:.1f}s")
    t0 = time.time()
    va = variant_accuracy(models, task, split="test", n=variant_n, device=device, n_train=n_train, verify=verify)
    put("variant_accuracy", va["per_model"])
    put("variant_accuracy_summary", va["summary"])
    put("variant_regularity", va["regularity"])
    if "conditions" in va:
        put("variant_conditions", va["conditions"])
    log(f"[audit] {task}: variants in {time.time() - t0:.1f}s")


def run_audit(out: str | Path = AUDIT_DIR, seed: int = 0, n_train: int = DEFAULT_N_TRAIN, device: str = "cpu",
              model_root: str | Path | None = None, variant_n: int | None = None, verify: int = 2000,
              shortcut_splits: Sequence[str] = EVAL_SPLITS, extra_info: dict | None = None, log=print,
              models_only: bool = False) -> dict:
    """Compute every audit table for both tasks and write them, with a manifest, to ``out``.

    Statistics use data seed ``seed`` (train: first ``n_train``; val and test whole); every committed final
    model under ``model_root`` is evaluated on its own data seed's ``shortcut_splits`` (shortcut use) and on
    the variants of the first ``variant_n`` test prompts (all when None).  ``models_only`` recomputes only
    the :data:`MODEL_TABLES` (e.g. for more seeds) and keeps the statistics tables already in ``out``, whose
    manifest must then be intact and made with the same ``seed`` and ``n_train``."""
    out = Path(out)
    t_start = time.time()
    tables: dict[str, list[pd.DataFrame]] = {}

    def put(name, df):
        tables.setdefault(name, []).append(df)

    kept_info: dict = {}
    if models_only:
        old = pio.verify_manifest(out) if (out / "manifest.json").exists() else None
        if old is None:
            raise pio.ResultError(f"--models-only needs a complete audit in {out} (its manifest.json is missing)")
        if old.get("data_seed") != seed or old.get("n_train_slice") != n_train:
            raise pio.ResultError(f"--models-only: the audit in {out} used data seed {old.get('data_seed')} and "
                                  f"n_train {old.get('n_train_slice')}, not {seed} and {n_train}")
        for fname in old["files"]:
            name = fname.rsplit(".", 1)[0]
            if name not in MODEL_TABLES:
                put(name, pio.read_table(out / fname))
        kept_info = {"statistics_from": old.get("statistics_from") or {
            "created": old.get("created"), "git_commit": old.get("git_commit"), "wall_time_s": old.get("wall_time_s")}}

    for task in PAPER_TASKS:
        if models_only:
            models = load_models(task, model_root, map_location=device)
            _model_tables(put, models, task, device, n_train, variant_n, verify, shortcut_splits, log)
            continue
        t0 = time.time()
        data = audit_splits(task, seed, n_train)
        fitted = fit_solvers(task, data["train"])
        for split in ("train",) + EVAL_SPLITS:
            a = data[split]
            if task == "letter":
                put("letter_frequency", letter_frequency_audit(a, split, seed))
                put("letter_instructions", letter_instruction_audit(a, split, seed))
                put("letter_distractors", distractor_letter_audit(a, split, seed))
            else:
                put("number_instructions", number_instruction_audit(a, split, seed))
            put("answer_multiplicity", answer_multiplicity_audit(task, a, split, seed))
        put("information", information_table(task, data, seed))
        feat = "query_value" if task == "number" else "query_token"
        for target in ("hops", "answer_pos"):
            put("query_conditional", conditional_table(task, data["train"], feat, target, "train", seed))
        put("shortcut_accuracy", shortcut_accuracy(task, seed, n_train, data=data, fitted=fitted))
        put("duplicates", duplicates(task, seed))
        log(f"[audit] {task}: statistics in {time.time() - t0:.1f}s")

        t0 = time.time()
        long, first = curves_vs_floors(task, model_root, n_train)
        put("curves_vs_floors", long)
        put("curves_first_above_floor", first)
        log(f"[audit] {task}: learning curves vs floors in {time.time() - t0:.1f}s")

        models = load_models(task, model_root, map_location=device)
        _model_tables(put, models, task, device, n_train, variant_n, verify, shortcut_splits, log)

    files = []
    for name, dfs in tables.items():
        df = pd.concat(dfs, ignore_index=True)
        fname = f"{name}.csv" if len(df) <= 2000 else f"{name}.parquet"
        pio.atomic_write_table(out / fname, df)
        files.append(fname)
    info = {"what": "data audit of the Number and Letter tasks (posym.audit.run_audit)", "data_seed": seed,
            "n_train_slice": n_train, "eval_splits": list(EVAL_SPLITS), "variant_split": "test",
            "variant_n": variant_n, "verified_variant_prompts_per_variant": verify,
            "shortcut_use_splits": list(shortcut_splits),
            "models": {t: [s for s, _ in load_models(t, model_root)] for t in PAPER_TASKS},
            **kept_info, **(extra_info or {}),
            "wall_time_s": round(time.time() - t_start, 1), **pio.provenance(device)}
    stale = [p.name for p in out.glob("*") if p.is_file() and p.suffix in (".csv", ".parquet") and p.name not in files]
    for p in stale:
        (out / p).unlink()
    return pio.write_manifest(out, info, sorted(files))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m posym.audit", description=run_audit.__doc__)
    ap.add_argument("--out", default=str(AUDIT_DIR))
    ap.add_argument("--seed", type=int, default=0, help="data seed of the audited splits")
    ap.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-root", default=None, help="folder with {task}-s{seed}/final.pt (default data/paper)")
    ap.add_argument("--variant-n", type=int, default=None, help="prompts per variant (default: whole test split)")
    ap.add_argument("--verify", type=int, default=2000, help="variant prompts checked with the task's solver")
    ap.add_argument("--shortcut-splits", default="val,test", help="comma-separated held-out splits for shortcut use")
    ap.add_argument("--code-commit", default=None, help="record this commit in the manifest (when run outside git)")
    ap.add_argument("--models-only", action="store_true",
                    help="recompute only the tables of the trained models; keep the statistics already in --out")
    ap.add_argument("--models-note", default=None, help="a JSON file whose content goes into the manifest as "
                    "'models_note' (where each model came from, its sha256, the command that trains it)")
    a = ap.parse_args(argv)
    extra = {"code_commit": a.code_commit} if a.code_commit else {}
    if a.models_note:
        extra["models_note"] = json.loads(Path(a.models_note).read_text())
    run_audit(a.out, a.seed, a.n_train, a.device, a.model_root, a.variant_n, a.verify,
              tuple(a.shortcut_splits.split(",")), extra or None, models_only=a.models_only)


if __name__ == "__main__":
    main()
