"""Answer checks for the exercises of the student notebooks.

Every exercise of the book is labelled ``<chapter>-<number>`` ("dynamics-1"; an exercise titled just
"Exercise" is number 1). In a student notebook (``make exercises``) an exercise is followed by an answer
cell, ``answer = None``, and, when its answer can be checked, by a check cell::

    from posym import exercises
    exercises.check("dynamics-1", answer)             # or, when the answer depends on the chapter's data:
    exercises.check("data-1", answer, globals())

``check`` prints whether the answer is right, never the expected value, and returns True or False. It
never raises: a missing, malformed or wrong answer gives one line saying what to fix.

Where the expected answer depends on the scale or the data (the prompts drawn, the trained runs), it is
computed from the chapter's own objects in the notebook's namespace (``globals()``), the same objects the
solution uses; otherwise from the exercise's statement with posym's functions. Nothing is stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

RIGHT, WRONG = "✔", "✘"


class AnswerError(ValueError):
    """The answer has the wrong form; the message says which form is expected."""


@dataclass(frozen=True)
class Exercise:
    label: str
    expects: str                      # the form of `answer`, shown in the answer cell
    judge: Callable[[Any, Mapping[str, Any]], str | None]  # None if right, else a hint (never the answer)
    needs: tuple[str, ...] = ()       # names the check reads from the notebook's namespace


EXERCISES: dict[str, Exercise] = {}


def register(label: str, expects: str, needs: tuple[str, ...] = ()):
    def wrap(fn):
        EXERCISES[label] = Exercise(label, expects, fn, tuple(needs))
        return fn
    return wrap


def labels() -> list[str]:
    return sorted(EXERCISES)


def expects(label: str) -> str:
    return EXERCISES[label].expects if label in EXERCISES else ""


def needs_namespace(label: str) -> bool:
    return bool(label in EXERCISES and EXERCISES[label].needs)


def check(label: str, answer: Any = None, namespace: Mapping[str, Any] | None = None) -> bool:
    """Say whether ``answer`` to exercise ``label`` is right (prints one line; never raises)."""
    ok, msg = _judge(label, answer, namespace)
    print(check_line(label, ok, msg))
    return ok


def check_line(label: str, ok: bool, msg: str) -> str:
    """The line :func:`check` prints."""
    return f"{RIGHT if ok else WRONG} {label}: {msg}"


def expected_lines(label: str) -> tuple[str, str]:
    """What :func:`check` prints for a blank answer and for a right one (the student-notebook run of nbval
    compares the check cells with these)."""
    return check_line(label, *_judge(label, None, {})), check_line(label, True, "right")


def _judge(label: str, answer: Any, namespace: Mapping[str, Any] | None) -> tuple[bool, str]:
    ex = EXERCISES.get(label)
    if ex is None:
        return False, f"no check for this exercise (known: {', '.join(labels())})"
    if answer is None or answer is Ellipsis:
        return False, f"no answer yet: set `answer = ...` to {ex.expects}"
    ns = dict(namespace or {})
    missing = [n for n in ex.needs if n not in ns]
    if missing:
        return False, (f"run the chapter's cells above first and pass globals(): "
                       f"`exercises.check({label!r}, answer, globals())` (missing: {', '.join(missing)})")
    try:
        hint = ex.judge(answer, ns)
    except AnswerError as e:
        return False, f"{e} (expected {ex.expects})"
    except Exception as e:  # noqa: BLE001 - a student's answer must never crash the check
        return False, f"could not read the answer ({type(e).__name__}: {e}); expected {ex.expects}"
    if hint is None:
        return True, "right"
    return False, f"not yet: {hint}"


# -----------------------------------------------------------------------------
# Helpers (they judge, they never reveal)

def _close(a: float, b: float, rel: float = 1e-3, abs_: float = 1e-6) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def _seq(answer, n: int, what: str) -> list:
    if isinstance(answer, (str, bytes, Mapping)) or not hasattr(answer, "__len__"):
        raise AnswerError(f"give {n} values ({what})")
    vals = list(answer)
    if len(vals) != n:
        raise AnswerError(f"give {n} values ({what}), got {len(vals)}")
    return vals


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) and not (
            hasattr(v, "item") and np.ndim(v) == 0):
        raise AnswerError(f"{what} must be a number, got {v!r}")
    x = float(v.item() if hasattr(v, "item") else v)
    if not math.isfinite(x):
        raise AnswerError(f"{what} must be a finite number, got {x}")
    return x


def _integer(v, what: str) -> int:
    x = _number(v, what)
    if not float(x).is_integer():
        raise AnswerError(f"{what} must be a whole number, got {v!r}")
    return int(x)


def _key(k) -> str:
    """Dict keys compare as text; 2, 2.0 and np.int64(2) are the same key."""
    if isinstance(k, (int, float, np.integer, np.floating)) and not isinstance(k, bool) and float(k).is_integer():
        return str(int(k))
    return str(k).strip()


def _mapping(answer, keys, what: str) -> dict:
    if not isinstance(answer, Mapping):
        raise AnswerError(f"give a dict {what}")
    got = {_key(k): v for k, v in answer.items()}
    want = [_key(k) for k in keys]
    missing = [k for k in want if k not in got]
    if missing:
        raise AnswerError(f"the dict misses {', '.join(missing)}")
    return got


def _bool(v, what: str) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("yes", "no", "true", "false"):
        return v.strip().lower() in ("yes", "true")
    raise AnswerError(f"{what} must be True or False")


def _wrong(names: list[str]) -> str | None:
    return None if not names else f"check {', '.join(names)}"


# -----------------------------------------------------------------------------
# The data chapter

@register("data-1", 'a dict {"number": answer token, "letter": answer token} for the two prompts',
          needs=("puzzles",))
def _data_1(answer, ns):
    puzzles = ns["puzzles"]
    got = _mapping(answer, puzzles, '{"number": ..., "letter": ...}')
    return _wrong([name for name, s in puzzles.items() if str(got[_key(name)]).strip() != str(s.answer)])


# -----------------------------------------------------------------------------
# Training dynamics

_DYN_D = (0.90, 0.04, 0.01, 0.05)
_DYN_PAIRS = ((0, 1), (0, 2), (1, 2))
_DYN_AFTER = ((0.88, 0.05), (0.89, 0.02), (0.01, 0.04))


@register("dynamics-1", '(s_pos, s_sym, kind) at tau = 1e-4, kind "positional", "symbolic" or "mixed" at gamma = 0.1')
def _dynamics_1(answer, ns):
    import torch

    from posym import metrics

    s_pos, s_sym, kind = _seq(answer, 3, "s_pos, s_sym, kind")
    want_pos, want_sym = metrics.swap_scores(
        torch.tensor(_DYN_D), torch.tensor([a for a, _ in _DYN_AFTER]), torch.tensor([b for _, b in _DYN_AFTER]),
        torch.tensor(_DYN_PAIRS), tau=1e-4)
    want_pos, want_sym = float(want_pos), float(want_sym)
    want_kind = str(metrics.classify(want_pos, want_sym, 0.1)).lower()
    bad = []
    if not _close(_number(s_pos, "s_pos"), want_pos, rel=1e-3, abs_=1e-3):
        bad.append("s_pos")
    if not _close(_number(s_sym, "s_sym"), want_sym, rel=1e-3, abs_=1e-3):
        bad.append("s_sym")
    if not isinstance(kind, str) or kind.strip().lower() != want_kind:
        bad.append("the kind of head")
    return _wrong(bad)


@register("dynamics-2", '{"number_order": True/False, "letter_together": True/False}: does each claim hold in every '
          "seed at both the 50 % and the 99 % threshold?", needs=("ev", "window"))
def _dynamics_2(answer, ns):
    from posym import trajectory

    got = _mapping(answer, ("number_order", "letter_together"), '{"number_order": ..., "letter_together": ...}')
    ev, window = ns["ev"], ns["window"]
    order, together = True, True
    for thr in (0.5, 0.99):
        c = trajectory.hop_criteria(trajectory.hop_learning_steps(ev, thr), window)
        order &= bool((c.loc[c["task"] == "number", "sequential"] == True).all())  # noqa: E712 (NaN is not True)
        together &= bool((c.loc[c["task"] == "letter", "together"] == True).all())  # noqa: E712
    bad = []
    if _bool(got["number_order"], "number_order") != order:
        bad.append("number_order")
    if _bool(got["letter_together"], "letter_together") != together:
        bad.append("letter_together")
    return _wrong(bad)


# -----------------------------------------------------------------------------
# The metric chapter

@register("metric-1", "(s_pos, s_sym) of the head in the statement", needs=("mc",))
def _metric_1(answer, ns):
    s_pos, s_sym = _seq(answer, 2, "s_pos, s_sym")
    M = np.zeros((4, 4))
    M[:, 0] = math.log(4)
    want = ns["mc"].scores_from_logits(M)
    bad = [n for n, v, w in (("s_pos", s_pos, want["pos"]), ("s_sym", s_sym, want["sym"]))
           if not _close(_number(v, n), float(w), rel=1e-3, abs_=1e-3)]
    return _wrong(bad)


@register("metric-2", "a dict {24: k, 48: k, 96: k} of the best frequency index for each prompt length",
          needs=("mc",))
def _metric_2(answer, ns):
    got = _mapping(answer, (24, 48, 96), "{24: k, 48: k, 96: k}")
    return _wrong([f"n = {n}" for n in (24, 48, 96)
                   if _integer(got[_key(n)], f"k for n = {n}") != int(ns["mc"].best_index_frequency(n))])


# -----------------------------------------------------------------------------
# Head roles

@register("roles-1", "the number of Index rewriting steps the printed prompt needs (an integer)",
          needs=("puzzle",))
def _roles_1(answer, ns):
    from posym import functions

    want = int(functions.resolution_depth(ns["puzzle"].tokens, "index"))
    return None if _integer(answer, "the number of steps") == want else "count the steps again"


@register("roles-2", 'a DataFrame indexed by layer with columns "itself" and "another copy" (fractions; NaN '
          "where a layer has no Reflexive step)", needs=("roles", "argmax", "probe"))
def _roles_2(answer, ns):
    if not isinstance(answer, pd.DataFrame):
        raise AnswerError("give a DataFrame")
    cols = ["itself", "another copy"]
    missing = [c for c in cols if c not in answer.columns]
    if missing:
        raise AnswerError(f"the DataFrame misses the column(s) {', '.join(missing)}")
    want = ns["roles"].reflexive_split(ns["argmax"]["letter"], ns["probe"]["letter"], "letter")[cols]
    got = answer[cols]
    if len(got) != len(want):
        return f"give one row per layer ({len(want)} layers)"
    a = got.to_numpy(dtype=float)
    b = want.to_numpy(dtype=float)
    same = np.isclose(np.nan_to_num(a, nan=-1.0), np.nan_to_num(b, nan=-1.0), atol=1e-6)
    return _wrong([c for j, c in enumerate(cols) if not same[:, j].all()])


# -----------------------------------------------------------------------------
# RoPE geometry

@register("geometry-1", "the list of the three logits at positions (5, 2), (105, 102) and (4005, 4002)")
def _geometry_1(answer, ns):
    vals = [_number(v, "a logit") for v in _seq(answer, 3, "three logits")]
    if all(abs(v) < 1e-12 for v in vals):
        return "the logits of random vectors are not all zero"
    return None if all(_close(v, vals[0], rel=1e-6, abs_=1e-9) for v in vals) else \
        "the three logits should agree (to rounding): does the logit depend on i - j only?"


@register("geometry-2", "(printed bound, t, exact margin) for theta = 0.8 and n = 17")
def _geometry_2(answer, ns):
    bound, t, margin = _seq(answer, 3, "printed bound, t, exact margin")
    theta, n = 0.8, 17
    want_bound = min(1 - math.cos(theta), 2 * math.pi ** 2 / n ** 2)
    dist = {d: abs((d * theta + math.pi) % (2 * math.pi) - math.pi) for d in range(1, n)}
    want_t = min(dist, key=dist.get)
    want_margin = 1 - math.cos(want_t * theta)
    bad = []
    if not _close(_number(bound, "the bound"), want_bound, rel=1e-3):
        bad.append("the printed bound")
    if _integer(t, "t") != want_t:
        bad.append("t")
    if not _close(_number(margin, "the margin"), want_margin, rel=1e-3):
        bad.append("the exact margin")
    return _wrong(bad)


# -----------------------------------------------------------------------------
# Length generalisation

@register("length-1", "(n_index, n_retrieval): the two first lengths of (a) and (b)")
def _length_1(answer, ns):
    from posym import theory as th

    a, b = _seq(answer, 2, "n_index, n_retrieval")
    want_a = th.discrepancy_break_length(lambda n: th.measured_discrepancy("index", n, 0.8), 1e-3, n_max=5000)
    want_b = th.discrepancy_break_length(lambda n: th.measured_discrepancy("retrieval", n, 0.0027), 1e-12,
                                         n_max=5000)
    return _wrong([w for w, v, e in (("(a)", a, want_a), ("(b)", b, want_b)) if _integer(v, w) != int(e)])


@register("length-2", "the list of the three inverse temperatures beta for n = 17, 1,000 and 5,000")
def _length_2(answer, ns):
    from posym import theory

    vals = _seq(answer, 3, "three values of beta")
    return _wrong([f"n = {n}" for n, v in zip((17, 1000, 5000), vals)
                   if not _close(_number(v, "beta"), float(theory.sufficient_beta(n, 2.0)), rel=1e-2)])


# -----------------------------------------------------------------------------
# Pretrained language models

@register("llm-1", '{"sym": "up" or "down", "pos": "up" or "down"}: how the median score over the layers moves from '
          "skip=1 to skip=0", needs=("ad", "caps_live", "lm"))
def _llm_1(answer, ns):
    from posym import llm, scores

    got = _mapping(answer, ("sym", "pos"), '{"sym": ..., "pos": ...}')
    layers = list(range(0, ns["lm"].n_layers, 5))
    sub = {l: ns["caps_live"][l] for l in layers}
    prof = {s: llm.layer_profile(scores.scores_table(scores.score_captured(ns["ad"], sub, skip=s), layers))
            for s in (0, 1)}
    bad = []
    for key, col in (("sym", "median sym"), ("pos", "median pos")):
        moved = float(prof[0][col].mean() - prof[1][col].mean())
        want = "up" if moved > 0 else "down"
        said = str(got[key]).strip().lower()
        if said not in ("up", "down"):
            raise AnswerError(f'{key} must be "up" or "down"')
        if said != want:
            bad.append(key)
    return _wrong(bad)


@register("llm-2", "the distance n - j at which the most positional head puts the most attention (an integer)",
          needs=("ad", "caps_live", "heads"))
def _llm_2(answer, ns):
    from posym import scores

    l, h = ns["heads"][0]
    D = scores.attention_rows(ns["ad"], caps={l: ns["caps_live"][l]})[0][:, h]
    want = int(D.mean(0).flip(0).argmax())
    return None if _integer(answer, "the distance") == want else "look at the mean attention by distance again"


# -----------------------------------------------------------------------------
# Teaching appendix and audit

@register("teaching-1", "the number of Number runs with MLPs that have a pure positional head at gamma = 0.2",
          needs=("T", "raw", "cfg"))
def _teaching_1(answer, ns):
    T = ns["T"]
    env = T.positional_envelope(T.with_criteria(ns["raw"], gamma=0.2, threshold=ns["cfg"].threshold))
    return None if _integer(answer, "the count") == int(env["with_positional"]) else "count the runs again"


@register("audit-1", "a dict {hop: accuracy} of the least-frequent solver on the least_frequent variant "
          "(seed 0), read from va['regularity']", needs=("va",))
def _audit_1(answer, ns):
    reg = ns["va"]["regularity"]
    lf = reg[(reg["regularity"] == "least_frequent") & (reg["statistic"] == "least_frequent_solver_correct")]
    if "seed" in lf:
        lf = lf[lf["seed"] == 0]
    want = {_key(h): float(r) for h, r in zip(lf["hop"], lf["rate"])}
    got = _mapping(answer, want, "{hop: accuracy}")
    return _wrong([f"hop {h}" for h, r in want.items() if not _close(_number(got[h], f"hop {h}"), r, abs_=5e-3)])


# -----------------------------------------------------------------------------
# LEGO chains

@register("lego-1", "a dict {0.3: count, 0.5: count, 0.7: count} of the shuffled models' association heads at "
          "each threshold, from `heads`", needs=("heads",))
def _lego_1(answer, ns):
    h = ns["heads"]
    h = h[h["task"] == "lego_fused"]
    want = {_key(t): int((h["assoc"] >= t).sum()) for t in (0.3, 0.5, 0.7)}
    got = _mapping(answer, want, "{threshold: count}")
    return _wrong([f"threshold {t}" for t, n in want.items() if _integer(got[t], f"threshold {t}") != n])


@register("lego-2", "a dict {1: accuracy, 2: accuracy}: the ordered models' mean accuracy at depths 1 and 2 on "
          "shuffled prompts of chains of 3, from res['length']", needs=("res",))
def _lego_2(answer, ns):
    L = ns["res"]["length"]
    c = L[(L["task"] == "lego_fused_ordered") & (L["chain_len"] == 3) & (L["prompts"] == "shuffled")]
    want = {_key(d): float(a) for d, a in c.groupby("depth")["accuracy"].mean().items() if d in (1, 2)}
    got = _mapping(answer, want, "{depth: accuracy}")
    return _wrong([f"depth {d}" for d, a in want.items() if not _close(_number(got[d], f"depth {d}"), a, abs_=5e-3)])


# -----------------------------------------------------------------------------
# List sorting

@register("sorting-1", "a dict {0.7: count, 0.8: count, 0.9: count}: the trained models whose splitting index at "
          "their last measured step reaches each threshold", needs=("ch", "res"))
def _sorting_1(answer, ns):
    sp = ns["ch"].splitting(ns["res"]["modes"]).dropna(subset=["split_index"])
    last = sp.groupby(["weight_decay", "seed"])["split_index"].last()
    want = {_key(t): int((last >= t).sum()) for t in (0.7, 0.8, 0.9)}
    got = _mapping(answer, want, "{threshold: count}")
    return _wrong([f"threshold {t}" for t, n in want.items() if _integer(got[t], f"threshold {t}") != n])


# -----------------------------------------------------------------------------
# Reconciling with the paper

@register("reconcile-1", "the Letter model's mean best step on a 500-step grid (a number)", needs=("R", "inp"))
def _reconcile_1(answer, ns):
    t = ns["R"].grid_table(ns["inp"]["eval"], ns["inp"]["scores"], grids=(500,))
    want = float(t.loc[t["task"] == "letter", "best_step"].mean())
    return None if _close(_number(answer, "the mean best step"), want) else "average the Letter seeds' best steps"
