"""The three basic functions of Paper 2 (Sec. 3.2-3.3, Listing 1, App. F.1) as plain Python.

A multi-hop prompt can be solved by a stack of layers that each apply one simple function to
*every position at once*.  Paper 2 names three such functions:

Index (Def. F.1, positional)
    A number token ``i`` at position ``p`` is replaced by the token at ``p - i`` if that token is a
    letter; otherwise (it points at another number, or before the start) it stays as it is.
    Letters are never changed.  The position read depends only on the query's *value* and its
    *position*, not on what the keys contain: a positional operation.

Retrieval (Def. F.2, symbolic)
    A letter-letter token ``xy`` is replaced by the token whose *left* letter is ``y``.
    Letter-number tokens are never changed.  Which position is read depends only on the *content*
    of the keys: a symbolic operation.

Reflexive (Def. F.3)
    The identity.  It lets a layer keep a token that is already resolved.

Token conventions (both tasks of :mod:`posym.tasks`):

* Number task: numbers are digit strings ``"1".."16"``; every other token (``"a"``, ``"bq"``, ...)
  is one letter symbol of ALPH.
* Letter task: every token is one atomic pair, ``tok[0]`` is the left letter and ``tok[1:]`` the
  right part, either digits (a letter-number token ``"a4"``) or one letter (``"fc"``).  Upper
  case, as in the paper's illustrations (``"IG"``), works too.

Because the functions act on all positions in parallel, applying one of them ``d`` times moves
information ``d`` hops along the chain (Fig. 3C/D): Index resolves the chain from the answer
*upwards* (the node next to the answer turns into the answer letter first, the query last), while
Retrieval moves the query *down* the chain, one link per step.  Either way an ``h``-hop prompt needs
exactly ``h`` applications, after which the remaining layers only have to copy (Reflexive)::

    f_NUM(s) = [Reflexive^(L-h)(Index^h(s))]_last        f_LET(s) = [Reflexive^(L-h)(Retrieval^h(s))]_last

Two conventions that Listing 1 leaves open are fixed here and documented where they matter:

* Listing 1 indexes ``seq[n - i]`` without a bounds check (Python would wrap around); we leave a
  number that points before the start unchanged, as Def. F.1 would (the read is undefined).
* Def. F.2 defines Retrieval only on *proper* inputs, where all tokens ``k <= j`` whose left letter
  equals the right letter of ``j`` are identical.  We apply it position by position: a position whose
  match is unique up to identical tokens is rewritten, any other position (no match, or matches
  that disagree) is left unchanged.  Listing 1 instead takes the first match; the two agree on every
  proper position.  Like Def. F.2 (and unlike Listing 1's ``range(n)``) the token itself counts as a
  candidate, which matters only for tokens such as ``"cc"``; the RoPE construction of
  :mod:`posym.theory` behaves the same way, since a query always sees its own key.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Seq = Sequence[str]
Fn = Callable[[Seq], list]

__all__ = [
    "is_number", "is_letter_number", "is_letter_letter", "split_pair",
    "index", "retrieval", "reflexive", "FUNCTIONS", "get_function",
    "reads", "ideal_attention", "is_terminal", "rewrite", "resolution_depth",
    "task_function", "layer_plan", "solve_by_rewriting", "match_rate", "match_table",
    "selective_index_read", "selective_index_match", "index_target_kind",
]


# -----------------------------------------------------------------------------------------------
# token types

def is_number(tok: str) -> bool:
    """A Number-task integer token (``"1"``..``"16"``)."""
    return tok.isdigit()


def split_pair(tok: str) -> tuple[str, str]:
    """Letter-task token -> (left letter, right part); ``"a4" -> ("a", "4")``, ``"fc" -> ("f", "c")``."""
    if len(tok) < 2 or not tok[0].isalpha():
        raise ValueError(f"{tok!r} is not a letter-task pair token")
    return tok[0], tok[1:]


def is_letter_number(tok: str) -> bool:
    """A Letter-task target token such as ``"a4"``: one letter, then digits."""
    return len(tok) >= 2 and tok[0].isalpha() and tok[1:].isdigit()


def is_letter_letter(tok: str) -> bool:
    """A Letter-task instruction token such as ``"fc"``: exactly two letters."""
    return len(tok) == 2 and tok.isalpha()


# -----------------------------------------------------------------------------------------------
# where each function reads

def _index_read(seq: Seq, p: int) -> int | None:
    """Position read by Index at ``p``: ``p - i`` for a number ``i`` (None if before the start), else ``p``."""
    tok = seq[p]
    if is_number(tok):
        q = p - int(tok)
        return q if q >= 0 else None
    return p


def _retrieval_candidates(seq: Seq, p: int) -> tuple[int, ...]:
    """Positions ``k <= p`` whose left letter is the right letter of ``seq[p]`` (``(p,)`` for a letter-number token)."""
    tok = seq[p]
    if is_letter_letter(tok):
        want = tok[1]
        return tuple(k for k in range(p + 1) if seq[k][0] == want)
    if is_letter_number(tok):
        return (p,)
    raise ValueError(f"retrieval expects letter-task tokens, got {tok!r} at position {p}")


def reads(seq: Seq, fn: Fn | str, pos: int = -1) -> tuple[int, ...]:
    """All positions that ``fn`` may read to compute its output at ``pos`` (``()`` where undefined).

    * Index: exactly one position, ``pos - i`` for a number ``i`` and ``pos`` itself for a letter.
    * Retrieval: every position ``k <= pos`` holding the matching token; several only when the
      matching tokens are identical copies (so any of them gives the same output).  Empty when
      there is no match or the matches disagree (Def. F.2's "proper" condition fails there).
    * Reflexive: every position ``k <= pos`` holding the same token as ``pos`` -- reading any of them
      leaves the token unchanged.  This accepts both a positional self-read and a symbolic
      "attend to the earlier copy" implementation (the paper finds trained models do the latter).
    """
    fn = get_function(fn)
    n = len(seq)
    p = pos + n if pos < 0 else pos
    if not 0 <= p < n:
        raise IndexError(f"position {pos} out of range for a sequence of length {n}")
    if fn is index:
        q = _index_read(seq, p)
        return () if q is None else (q,)
    if fn is retrieval:
        cand = _retrieval_candidates(seq, p)
        if not cand or len({seq[k] for k in cand}) != 1:
            return ()
        return cand
    if fn is reflexive:
        return tuple(k for k in range(p + 1) if seq[k] == seq[p])
    raise ValueError(f"unknown basic function {fn!r}")


def ideal_attention(seq: Seq, fn: Fn | str, pos: int = -1) -> int | None:
    """The single position an idealised head computing ``fn`` attends to from ``pos`` (None if undefined).

    Among equivalent reads we return the *nearest* one (the largest position): that is where the
    RoPE constructions of :mod:`posym.theory` put their arg-max, because the RoPE term decays with
    distance.  For Reflexive this is the query position itself.
    """
    r = reads(seq, fn, pos)
    return max(r) if r else None


# -----------------------------------------------------------------------------------------------
# the functions (one depth step, all positions in parallel)

def index(seq: Seq) -> list[str]:
    """Selective (relative) Index, Def. F.1: ``i`` at ``p`` becomes ``seq[p - i]`` when that is a letter."""
    out = list(seq)
    for p, tok in enumerate(seq):
        if is_number(tok):
            q = _index_read(seq, p)
            if q is not None and not is_number(seq[q]):
                out[p] = seq[q]
    return out


def retrieval(seq: Seq) -> list[str]:
    """Retrieval, Def. F.2: ``xy`` becomes the (unique) token whose left letter is ``y``.

    Runs in O(n): a left-letter table is grown while scanning, so each position sees the tokens
    ``k <= p`` only.
    """
    out = list(seq)
    seen: dict[str, set[str]] = {}  # left letter -> distinct tokens with that left letter so far
    for p, tok in enumerate(seq):
        left, _ = split_pair(tok)
        seen.setdefault(left, set()).add(tok)
        if is_letter_letter(tok):
            match = seen.get(tok[1], ())
            if len(match) == 1:
                out[p] = next(iter(match))
        elif not is_letter_number(tok):
            raise ValueError(f"retrieval expects letter-task tokens, got {tok!r} at position {p}")
    return out


def reflexive(seq: Seq) -> list[str]:
    """Reflexive, Def. F.3: the identity (a copy, so callers may mutate the result)."""
    return list(seq)


FUNCTIONS: dict[str, Fn] = {"index": index, "retrieval": retrieval, "reflexive": reflexive}


def get_function(fn: Fn | str) -> Fn:
    """Accept a basic function or its name."""
    if isinstance(fn, str):
        if fn not in FUNCTIONS:
            raise ValueError(f"unknown basic function {fn!r}: choose one of {', '.join(FUNCTIONS)}")
        return FUNCTIONS[fn]
    if fn not in FUNCTIONS.values():
        raise ValueError(f"{fn!r} is not one of the basic functions {', '.join(FUNCTIONS)}")
    return fn


def is_terminal(tok: str, fn: Fn | str) -> bool:
    """Whether ``fn`` can never change ``tok`` again: a letter for Index, a letter-number token for Retrieval."""
    fn = get_function(fn)
    if fn is index:
        return not is_number(tok)
    if fn is retrieval:
        return is_letter_number(tok)
    return True


# -----------------------------------------------------------------------------------------------
# depth-wise rewriting (Fig. 3C/D)

def rewrite(seq: Seq, fn: Fn | str, depth: int) -> list[list[str]]:
    """``[seq, fn(seq), fn(fn(seq)), ...]``: ``depth + 1`` sequences, one per depth."""
    fn = get_function(fn)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    out = [list(seq)]
    for _ in range(int(depth)):
        out.append(fn(out[-1]))
    return out


def resolution_depth(seq: Seq, fn: Fn | str, max_depth: int = 64) -> int | None:
    """Smallest ``d`` such that the last token of ``fn^d(seq)`` is terminal (None if not within ``max_depth``).

    This is the number of rewriting steps the last position needs.  For Index the last token stays
    the same number until step ``d`` and then turns into the answer; for Retrieval it changes at
    every step until it reaches a letter-number token.  On a task prompt it equals the hop count.
    """
    fn = get_function(fn)
    cur = list(seq)
    for d in range(max_depth + 1):
        if is_terminal(cur[-1], fn):
            return d
        cur = fn(cur)
    return None


def task_function(task) -> Fn:
    """The basic function that solves a task: Index for ``"number"``, Retrieval for ``"letter"``."""
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if name == "number":
        return index
    if name == "letter":
        return retrieval
    raise ValueError(f"unknown task {task!r}: expected 'number' or 'letter' (or a Task)")


def layer_plan(seq: Seq, task, n_layers: int = 12) -> tuple[list[Fn], list[list[str]]]:
    """The idealised computation of an ``n_layers`` model on ``seq``.

    Returns ``(fns, seqs)``: ``fns[l]`` is the function layer ``l`` applies (the task's function for
    the first ``h`` layers, Reflexive afterwards, ``h`` = :func:`resolution_depth`) and ``seqs[l]`` is
    the sequence *entering* layer ``l``; ``seqs[n_layers]`` is the output.  If the prompt needs more
    than ``n_layers`` steps every layer applies the task's function and the last token is unresolved.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    fn = task_function(task)
    h = resolution_depth(seq, fn, max_depth=n_layers)
    h = n_layers if h is None else h
    fns = [fn] * h + [reflexive] * (n_layers - h)
    seqs = [list(seq)]
    for f in fns:
        seqs.append(f(seqs[-1]))
    return fns, seqs


def solve_by_rewriting(seq: Seq, task, n_layers: int = 12) -> str:
    """The last token after ``h`` applications of the task's function and ``n_layers - h`` of Reflexive."""
    return layer_plan(seq, task, n_layers)[1][-1][-1]


# -----------------------------------------------------------------------------------------------
# scoring a trained head against the idealised functions

def match_rate(attn_argmax, layer_seqs: Sequence[Sequence[Seq]], fn: Fn | str | Sequence[Fn | str],
               pos: int = -1) -> np.ndarray:
    """Per layer, the fraction of prompts whose head reads where ``fn`` would read.

    Parameters
    ----------
    attn_argmax : array (N, L)
        For prompt ``i`` and layer ``l``, the key position with the largest attention weight of the
        query at ``pos`` (usually the last token) in a trained model.
    layer_seqs : N lists of at least L sequences
        The idealised input of each layer, ``layer_plan(seq, task, L)[1]`` for each prompt.
    fn : a basic function (or name) used at every layer, or a list of L of them.

    A read counts as a match when it is one of :func:`reads` ``(layer_seqs[i][l], fn, pos)``.  Prompts
    where ``fn`` is undefined at that layer (for example Retrieval on a Number prompt) are left out of
    that layer's fraction; a layer with no defined prompt gives NaN.  A function that does not fit
    the tokens at all (Retrieval on Number-task numbers) raises ValueError.
    """
    a = np.asarray(attn_argmax)
    if a.ndim != 2:
        raise ValueError(f"attn_argmax must have shape (N, L), got {a.shape}")
    N, L = a.shape
    if len(layer_seqs) != N:
        raise ValueError(f"got {len(layer_seqs)} prompts of layer sequences for {N} rows of arg-max")
    fns = [get_function(f) for f in fn] if isinstance(fn, (list, tuple)) else [get_function(fn)] * L
    if len(fns) != L:
        raise ValueError(f"got {len(fns)} functions for {L} layers")
    hits = np.zeros(L)
    defined = np.zeros(L)
    for i in range(N):
        if len(layer_seqs[i]) < L:
            raise ValueError(f"prompt {i} has {len(layer_seqs[i])} layer sequences, need {L}")
        for l in range(L):
            r = reads(layer_seqs[i][l], fns[l], pos)
            if r:
                defined[l] += 1
                hits[l] += int(a[i, l]) in r
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined > 0, hits / np.maximum(defined, 1), np.nan)


def match_table(attn_argmax, seqs: Sequence[Seq], task, fns: Sequence[Fn | str] | None = None,
                pos: int = -1) -> dict[str, np.ndarray]:
    """:func:`match_rate` of every candidate function, on the idealised layer inputs of ``task``.

    ``seqs`` are the raw prompts; the layer inputs come from :func:`layer_plan` with as many layers as
    ``attn_argmax`` has columns.  By default the candidates are the task's own function and
    Reflexive.  Returns ``{name: (L,) array}``.
    """
    a = np.asarray(attn_argmax)
    L = a.shape[1]
    plans = [layer_plan(s, task, L)[1] for s in seqs]
    if fns is None:
        fns = [task_function(task), reflexive]
    out = {}
    for f in fns:
        f = get_function(f)
        name = next(k for k, v in FUNCTIONS.items() if v is f)
        out[name] = match_rate(a, plans, f, pos)
    return out


# -----------------------------------------------------------------------------------------------
# selective Index: the content gate of Def. F.1, made visible

def selective_index_read(seq: Seq, pos: int = -1) -> int:
    """Where a head computing *selective* Index (Def. F.1 taken literally) reads from ``pos``: ``pos - i`` when
    the number ``i`` there points at a letter (which is copied), and ``pos`` itself otherwise (the token is kept).

    :func:`ideal_attention` reads ``pos - i`` in both cases; this variant makes the content-dependent gate
    visible.
    """
    p = pos % len(seq)
    if is_number(seq[p]):
        q = p - int(seq[p])
        if q >= 0 and not is_number(seq[q]):
            return q
    return p


def selective_index_match(argmax, samples) -> np.ndarray:
    """Per layer, the fraction of prompts whose last query attends where selective Index reads on the raw
    prompt (:func:`selective_index_read`); ``argmax`` is (N, L)."""
    a = np.asarray(argmax)
    want = np.array([selective_index_read(s.tokens) for s in samples])
    return (a == want[:, None]).mean(axis=0)


def index_target_kind(samples) -> list[str]:
    """For Number prompts: whether the query's own number points at a letter (the 1-hop prompts, where
    selective Index copies it) or at another number (Index leaves the query as it is)."""
    out = []
    for s in samples:
        q = len(s.tokens) - 1 - int(s.tokens[-1])
        out.append("points at a letter" if q >= 0 and not is_number(s.tokens[q]) else "points at a number")
    return out
