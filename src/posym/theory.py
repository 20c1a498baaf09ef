"""Theorem 3.1 (single-head RoPE constructions) and Theorem 3.2 (discrepancy bounds) of Paper 2, made executable.

Notation.  A sequence has ``n`` tokens at 0-based positions ``0..n-1``; the query is the last one.
A key at position ``j`` sits at *distance* ``t = n-1-j`` from the query (``t = 0`` is the query's
own key).  ``rho(a)`` is the 2x2 rotation by ``a``; with RoPE the logit of a query vector ``q`` and a
key vector ``k`` at distance ``t`` is ``k^T rho(t*theta) q`` (see :mod:`posym.rope`).  With the unit
vector ``v = (0, 1)``, ``v^T rho(a) v = cos(a)``.

Index head (positional)
    Every key is ``v``.  A letter query is ``v``; a number query ``s`` is ``rho(theta)^(-s) v``.  The
    logit of key distance ``t`` is ``cos((t - s) theta)`` (``s = 0`` for a letter), which equals 1
    exactly at ``t = s``: the head looks ``s`` tokens back whatever the keys contain.  The maximum is
    unique when no multiple of ``theta`` up to the sequence length is a multiple of ``2 pi``.
    (The paper asks for "theta irrational"; strictly it is ``theta / 2pi`` that must be irrational:
    ``theta = pi/2`` is irrational but gives ``cos(4 theta) = 1``, a tie.)

Retrieval head (symbolic)
    Letters are angles: ``phi`` numbers the letters ``1..|ALPH|`` and ``omega = 2 pi / |ALPH|``.
    A key is ``rho(omega)^(-phi(left letter)) v``; a letter-letter query is
    ``rho(omega)^(-phi(right letter)) v`` (a letter-number query uses its left letter).  The logit is
    ``cos((phi(key left) - phi(query letter)) omega + t theta)``: 1 (up to the small RoPE term) for the
    key whose left letter is the wanted one and at most ``cos(omega - t theta)`` for any other, so the
    match wins as long as ``theta`` is small compared with ``omega / n`` (the paper: ``theta < omega/(2 n0)``).

:func:`index_head` and :func:`retrieval_head` build these as real one-layer :class:`posym.model.GPTJ`
models: one-hot token embeddings, the 2-D query/key plane placed on one RoPE frequency whose angle is
exactly ``theta``, value/residual/unembedding as in the paper's proof, and an inverse temperature
``beta`` on ``W_Q`` (Lemma F.1: with a large enough ``beta`` softmax attention behaves like hard
attention).  No change to the model code is needed:

* the RoPE angle: with ``rotary_dim = 4`` the model has two frequencies, ``1`` and ``base^(-1/2)``; we
  set ``base = theta^(-2)`` so the second one is ``theta`` and leave the first unused;
* LayerNorm: every embedding is ``(one-hot, 1, -2)``, which has mean 0 and the same variance for all
  tokens, so setting the LayerNorm gain to that standard deviation makes ``ln_1`` the identity on
  embeddings; ``ln_f`` only shifts and rescales each output vector, which keeps its arg-max.

Discrepancy (Def. 3.1).  For one input, the discrepancy is the gap between the largest logit and the
largest *other* logit.  What the length analysis needs is the worst case over inputs: if some input of
length ``n`` has a gap ``lambda``, the softmax weight on the right key is only guaranteed to be
``1 / (1 + (n-1) exp(-beta lambda))`` (Lemma F.1), so a small ``lambda`` means a large ``beta`` is
needed, and no fixed ``beta`` survives ``lambda -> 0``.  :func:`measured_discrepancy` computes, exactly,

* ``reduce="min"`` -- the worst-case margin ``lambda(n)`` = min over inputs of length ``n`` of
  (logit of the correct key) - (largest logit of a wrong key).  It is negative when the construction
  gets some input wrong.  This is the quantity Theorem 3.2's bounds hold for (proofs below).
* ``reduce="max"`` -- the literal "maximal difference" of Def. 3.1 (the most favourable input).

Theorem 3.2 as printed, ``Delta_Index(n) <= min{1 - cos theta, 2 pi^2 / n^2}`` and
``Delta_Retrieval(n) <= 1 - cos(omega - n theta)``, is reproduced by :func:`discrepancy_bounds`
(``form="paper"``).  What we can prove, and test, is:

* Index, ``reduce="min"``: the input whose query is a letter has gap ``1 - max_{1<=t<=n-1} cos(t theta)``.
  That is ``<= 1 - cos theta`` (take ``t = 1``) and ``<= 1 - cos(2 pi / n)``: among the ``n`` angles
  ``t theta mod 2 pi``, ``t = 0..n-1``, two lie within ``2 pi / n`` of each other on the circle, and their
  difference ``t`` gives ``cos(t theta) >= cos(2 pi / n)``.  Since ``1 - cos x <= x^2 / 2`` the paper's
  bound follows, for every ``n`` and ``theta``.
* Index, ``reduce="max"``: the paper's ``2 pi^2/n^2`` does **not** hold.  A number query ``s`` only sees
  offsets ``-s..n-1-s`` around its target, so when ``s`` is near ``(n-1)/2`` (or 16, the largest
  number) the nearest competing offsets can all be far from a multiple of ``2 pi``; e.g. ``theta = 0.8``,
  ``n = 9``, query ``4`` has gap ``1 - cos 0.8 = 0.303 > 2 pi^2/81 = 0.244``.  The same pigeonhole
  argument on ``M + 1`` points gives ``1 - cos(2 pi/(M+1))`` with ``M = max(ceil((n-1)/2), n-1-m)``.
* Retrieval, ``reduce="min"``: a query that matches itself (``t* = 0``, logit 1) next to a key whose
  letter is the query letter's predecessor at the far end (``t = n - 1``) has gap
  ``1 - cos(omega - (n-1) theta)``, so ``lambda(n) <= 1 - cos(omega - (n-1) theta)``.  The paper writes
  ``n theta``: with positions ``1..n`` the farthest key is at distance ``n - 1``, and the printed bound
  is exceeded for short inputs (``n <= 24`` at ``theta = 0.0027``) by less than ``theta sin omega``.
* Retrieval, ``reduce="max"``: no useful bound exists -- an input whose wrong keys all carry the letter
  opposite the query letter on the circle has a gap near 2.  The theorem is about the worst case.

Which inputs count for Retrieval.  The paper's proof compares the matched key only with keys carrying a
*different* left letter.  That is right for a letter-letter query in a proper input (the only other
keys with the wanted letter are identical copies, which give the same output), and it covers every hop
of the Letter task, including the last query.  It does not cover a letter-number token preceded by a
token with the same left letter and another number (``a2 ... a5``): Retrieval leaves ``a5`` as it is,
and the head's margin for reading itself is only ``1 - cos(t theta) ~ (t theta)^2 / 2``.  Our
:func:`measured_discrepancy` therefore ranges over inputs in which the matched letter occurs once, as
the paper's analysis implicitly does, and :func:`check_construction` with ``output=True`` picks ``beta``
from the margins it actually meets.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

from .functions import index, reads, retrieval
from .model import GPTJ, ModelConfig
from .rope import rotation_2d
from .tasks import SEQ_LEN, Task, Vocab, get_task

__all__ = [
    "index_head", "retrieval_head", "plane_vectors", "attention_logits", "head_discrepancy",
    "discrepancy", "margin", "sufficient_beta", "random_task_inputs", "check_construction",
    "sampled_margins", "measured_discrepancy", "discrepancy_bounds", "discrepancy_break_length",
    "INDEX_THETA", "RETRIEVAL_THETA",
]

INDEX_THETA = 0.8        # Fig. 5A: layer-2 weighted-average angle of the Number model (Table 1)
RETRIEVAL_THETA = 0.0027  # Fig. 5A: layer-2 weighted-average angle of the Letter model (Table 1)
_V = (0.0, 1.0)          # the unit vector v of the constructions
_KINDS = ("index", "retrieval")


# -----------------------------------------------------------------------------------------------
# building the heads

def _vocab(vocab) -> Vocab:
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, (str, Task)):
        return get_task(vocab).vocab
    raise TypeError(f"vocab must be a posym Vocab, a Task or a task name, got {type(vocab).__name__}")


def _kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return kind


def _blank_head(vocab_size: int, theta: float) -> tuple[GPTJ, slice]:
    """A 1-layer, 1-head, attention-only GPTJ (float64, eval, no dropout) with all weights zero.

    Returns the model and the two query/key dimensions that RoPE rotates by exactly ``theta``.
    """
    theta = float(theta)
    if not math.isfinite(theta) or theta < 0:
        raise ValueError(f"theta must be a finite angle >= 0, got {theta}")
    d = vocab_size + 2  # one-hot, bias coordinate (1), balancing coordinate (-2)
    if theta > 0:
        # rope_angles(4, base) = [1, base^(-1/2)]: the second pair (dims 2, 3) turns by theta
        cfg = ModelConfig(vocab_size=vocab_size, n_layer=1, n_head=1, d_model=d, attn_only=True,
                          rotary_dim=4, rope_base=theta ** -2, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
        plane = slice(2, 4)
    else:  # NoPE: no rotation at all
        cfg = ModelConfig(vocab_size=vocab_size, n_layer=1, n_head=1, d_model=d, attn_only=True,
                          rotary_dim=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
        plane = slice(0, 2)
    model = GPTJ(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        V = vocab_size
        E = torch.zeros(V, d, dtype=torch.float64)
        E[:, :V] = torch.eye(V, dtype=torch.float64)
        E[:, V] = 1.0
        E[:, V + 1] = -2.0
        model.wte.weight.copy_(E)
        # every embedding has mean 0 and variance 6/d: this gain makes ln_1 the identity on them
        blk = model.blocks[0]
        blk.ln_1.weight.fill_(math.sqrt(6.0 / d + cfg.ln_eps))
        blk.attn.out_proj.weight.copy_(torch.eye(d, dtype=torch.float64))
        model.ln_f.weight.fill_(1.0)
        W_U = torch.zeros(V, d, dtype=torch.float64)
        W_U[:, :V] = torch.eye(V, dtype=torch.float64)
        W_U[0, 0] = 0.0  # never predict <pad>
        model.lm_head.weight.copy_(W_U)
    return model, plane


def _rot_v(angle: float) -> torch.Tensor:
    """``rho(angle) v`` for ``v = (0, 1)``: the 2-vector ``(-sin angle, cos angle)``."""
    return rotation_2d(angle) @ torch.tensor(_V, dtype=torch.float64)


def index_head(theta: float = INDEX_THETA, vocab="number", beta: float = 1.0, alpha: float = 2.0) -> GPTJ:
    """The Index construction (Thm 3.1, App. F.2.1) as a one-layer GPTJ.

    Queries: ``v`` for a letter, ``rho(theta)^(-s) v`` for the number ``s``; keys: ``v`` for every token
    (through the bias coordinate).  ``W_Q`` is multiplied by ``beta * sqrt(d_head)`` so that the
    attention scores the model computes (``q.k / sqrt(d_head)``) are exactly ``beta * cos(...)``.
    Values: ``alpha`` times the one-hot coordinates of letters, 0 for numbers; the residual adds the
    query's own embedding, so the output at a position is ``E(query) + alpha * (attended letter)``,
    whose arg-max coordinate is ``Index(seq)`` at that position whenever at least half the attention
    sits on the key that Index reads (see :func:`sufficient_beta`).

    ``model.construction`` records the parameters.
    """
    voc = _vocab(vocab)
    V = len(voc)
    model, plane = _blank_head(V, theta)
    d = model.cfg.d_model
    scale = float(beta) * math.sqrt(d)
    v = torch.tensor(_V, dtype=torch.float64)
    with torch.no_grad():
        attn = model.blocks[0].attn
        Wq = torch.zeros(2, d, dtype=torch.float64)
        Wv = torch.zeros(d, dtype=torch.float64)
        for i, tok in enumerate(voc.tokens):
            if i == 0:  # <pad>: behaves like a letter query, carries no value
                Wq[:, i] = v
            elif tok.isdigit():
                Wq[:, i] = _rot_v(-int(tok) * float(theta))
            else:
                Wq[:, i] = v
                Wv[i] = alpha
        Wk = torch.zeros(2, d, dtype=torch.float64)
        Wk[:, V] = v  # the bias coordinate: every key is v
        attn.q_proj.weight[plane] = scale * Wq
        attn.k_proj.weight[plane] = Wk
        attn.v_proj.weight.copy_(torch.diag(Wv))
    model.construction = dict(kind="index", theta=float(theta), beta=float(beta), alpha=float(alpha),
                              plane=(plane.start, plane.stop), vocab=voc)
    return model


def _letter_numbering(voc: Vocab) -> dict[str, int]:
    """``phi``: the left letters of the vocabulary in sorted order, numbered from 1."""
    letters = sorted({tok[0] for tok in voc.tokens[1:]})
    return {c: k + 1 for k, c in enumerate(letters)}


def retrieval_head(theta: float = RETRIEVAL_THETA, omega: float | None = None, vocab="letter",
                   beta: float = 1.0, alpha: float = 2.0) -> GPTJ:
    """The Retrieval construction (Thm 3.1, App. F.2.2) as a one-layer GPTJ.

    ``omega`` defaults to ``2 pi / |ALPH|``.  Keys ``rho(omega)^(-phi(left)) v``; queries
    ``rho(omega)^(-phi(right)) v`` for letter-letter tokens and ``rho(omega)^(-phi(left)) v`` for
    letter-number tokens; ``W_Q`` carries ``beta * sqrt(d_head)``.  Values are ``alpha`` times the
    one-hot embedding.  The paper drops the residual (``F(x, a) = a``); our model always adds it, so the
    output is ``E(query) + alpha * (attended token)`` and the retrieved token wins the arg-max when more
    than ``(1 + alpha) / (2 alpha)`` of the attention (3/4 for ``alpha = 2``) is on it.
    """
    voc = _vocab(vocab)
    phi = _letter_numbering(voc)
    if omega is None:
        omega = 2 * math.pi / len(phi)
    V = len(voc)
    model, plane = _blank_head(V, theta)
    d = model.cfg.d_model
    scale = float(beta) * math.sqrt(d)
    with torch.no_grad():
        attn = model.blocks[0].attn
        Wq = torch.zeros(2, d, dtype=torch.float64)
        Wk = torch.zeros(2, d, dtype=torch.float64)
        for i, tok in enumerate(voc.tokens):
            if i == 0:
                continue  # <pad>: zero query and key
            left, right = tok[0], tok[1:]
            Wk[:, i] = _rot_v(-phi[left] * omega)
            q_letter = right if (len(right) == 1 and right.isalpha()) else left
            Wq[:, i] = _rot_v(-phi[q_letter] * omega)
        attn.q_proj.weight[plane] = scale * Wq
        attn.k_proj.weight[plane] = Wk
        Wv = torch.full((d,), float(alpha), dtype=torch.float64)
        Wv[V:] = 0.0
        Wv[0] = 0.0
        attn.v_proj.weight.copy_(torch.diag(Wv))
    model.construction = dict(kind="retrieval", theta=float(theta), omega=float(omega), beta=float(beta),
                              alpha=float(alpha), plane=(plane.start, plane.stop), vocab=voc, phi=phi)
    return model


def plane_vectors(model: GPTJ) -> dict[str, np.ndarray]:
    """The 2-D query and key vector of every token, before RoPE and without ``beta`` (for Fig. 4A).

    Returns ``{"tokens": (V,) str, "q": (V, 2), "k": (V, 2)}``, rows in vocabulary order (``<pad>`` first).
    """
    c = model.construction
    a, b = c["plane"]
    attn = model.blocks[0].attn
    V = len(c["vocab"])
    scale = c["beta"] * math.sqrt(model.cfg.d_model)
    with torch.no_grad():
        emb = model.wte.weight  # (V, d); ln_1 is the identity on these rows
        q = (emb @ attn.q_proj.weight[a:b].t()) / scale
        k = emb @ attn.k_proj.weight[a:b].t()
    return {"tokens": np.array(c["vocab"].tokens), "q": q.numpy()[:V], "k": k.numpy()[:V]}


# -----------------------------------------------------------------------------------------------
# logits of a head, and discrepancy

@torch.no_grad()
def attention_logits(model: GPTJ, x: torch.Tensor, layer: int = 0, pos: int = -1) -> torch.Tensor:
    """The attention scores (pre-softmax, ``q.k / sqrt(d_head)``) of the query at ``pos``, float64.

    Shape (B, T) for a one-head model, (B, H, T) otherwise.  Keys after ``pos`` are masked to -inf.
    """
    if not 0 <= layer < model.cfg.n_layer:
        raise ValueError(f"layer {layer} out of range for a {model.cfg.n_layer}-layer model")
    name = f"blocks.{layer}.attn.hook_attn_scores"
    last = pos in (-1, x.shape[1] - 1)
    _, cache = model.run_with_cache(x, names=[name], last_only=last)
    s = cache[name][:, :, -1 if last else pos, :].double()  # (B, H, T)
    T = s.shape[-1]
    p = pos + T if pos < 0 else pos
    if p < T - 1:
        s = s.clone()
        s[..., p + 1:] = -math.inf
    return s[:, 0] if s.shape[1] == 1 else s


def discrepancy(logits, tol: float = 0.0) -> np.ndarray:
    """Def. 3.1 for single inputs: the largest logit minus the largest logit *below* it.

    ``logits`` has shape (..., T); entries at -inf or at the dtype's minimum (masked keys) are ignored.  Logits within
    ``tol`` of the maximum count as ties (Lemma F.1's arg-max set ``J``); when every logit ties the
    discrepancy is 0.  Returns an array of shape (...) (a float for one row).
    """
    a = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError("discrepancy needs at least one logit per row")
    a = np.where(a <= np.finfo(np.float32).min, -np.inf, a)  # the model masks keys with its dtype's minimum
    top = a.max(axis=-1, keepdims=True)
    below = np.where(a < top - tol, a, -np.inf).max(axis=-1)
    out = np.where(np.isfinite(below), top[..., 0] - below, 0.0)
    return out if out.ndim else float(out)


def margin(logits, correct) -> np.ndarray:
    """Logit of the correct key(s) minus the largest logit of a wrong key.

    ``correct`` is a boolean mask of the same shape (several True entries allowed, e.g. identical
    copies of the retrieved token).  Positive means the head's arg-max is right, and then it equals
    the discrepancy of the row with the copies of the winner set aside.  NaN where nothing is wrong.
    """
    a = np.asarray(logits, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if a.shape != c.shape:
        raise ValueError(f"logits {a.shape} and mask {c.shape} differ in shape")
    if not c.any(axis=-1).all():
        raise ValueError("every row needs at least one correct key")
    good = np.where(c, a, -np.inf).max(axis=-1)
    bad = np.where(~c, a, -np.inf).max(axis=-1)
    out = np.where(np.isfinite(bad), good - bad, np.nan)
    return out if out.ndim else float(out)


def head_discrepancy(model: GPTJ, layer: int, x: torch.Tensor) -> np.ndarray:
    """Per prompt, the top attention logit of the last query minus the next one, at ``layer``.

    Uses the model's ``hook_attn_scores`` (so the logits include the ``1/sqrt(d_head)`` scale).  For
    a trained model this is the empirical counterpart of Def. 3.1.  Shape (B,) or (B, H).
    """
    return discrepancy(attention_logits(model, x, layer))


def sufficient_beta(n: int, lam: float, w_required: float = 0.5) -> float:
    """Lemma F.1 made quantitative: an inverse temperature that puts more than ``w_required`` of the
    attention on the correct key(s) for every input of length ``n`` with margin at least ``lam``.

    Each of the at most ``n - 1`` wrong keys gets at most ``exp(-beta lam)`` times the weight of the
    correct key, so the correct weight is at least ``1 / (1 + (n-1) exp(-beta lam))``; it exceeds ``w``
    once ``beta > log((n-1) w / (1-w)) / lam``.  Returns that threshold (0 if any ``beta > 0`` works).
    ``w = 1/2`` suffices for :func:`index_head` (``alpha = 2``), ``w = 3/4`` for :func:`retrieval_head`.
    """
    if lam <= 0:
        raise ValueError(f"the margin must be positive, got {lam}")
    if not 0 < w_required < 1:
        raise ValueError(f"w_required must be in (0, 1), got {w_required}")
    if n < 2:
        return 0.0
    return max(0.0, math.log((n - 1) * w_required / (1 - w_required)) / lam)


# -----------------------------------------------------------------------------------------------
# checking the constructions on task inputs

def random_task_inputs(task, n_samples: int, length: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``n_samples`` random valid prompts of ``task`` with ``length >= 17`` tokens.

    Each is a fresh task sample (uniform target position, answer and hop count) whose target window is
    extended at the front (:meth:`Task.extend_target_window`, as in the paper's length experiments).
    """
    task = get_task(task)
    if length < SEQ_LEN:
        raise ValueError(f"task prompts have at least {SEQ_LEN} tokens, got length={length}")
    out = []
    for _ in range(int(n_samples)):
        s = task.sample(rng, int(rng.integers(8)), task.answer_tokens[int(rng.integers(len(task.answer_tokens)))],
                        int(rng.integers(1, 5)))
        out.append(task.extend_target_window(s, length - SEQ_LEN, rng).tokens)
    return out


def _encode(voc: Vocab, seqs: Sequence[Sequence[str]]) -> torch.Tensor:
    return torch.tensor([voc.encode(s) for s in seqs], dtype=torch.long)


@torch.no_grad()
def check_construction(kind: str, n_samples: int = 1000, lengths: Iterable[int] = (17, 64, 256),
                       rng: np.random.Generator | None = None, theta: float | None = None,
                       positions: str = "last", output: bool = False, batch: int = 64) -> float:
    """Fraction of checks on random valid inputs where the constructed head does what Theorem 3.1 says.

    ``kind`` ``"index"`` uses Number-task prompts, ``"retrieval"`` Letter-task prompts, ``n_samples`` of
    each length.  A check passes when the attention arg-max of the query is a position the basic
    function reads (:func:`posym.functions.reads`) and is *strict* (the best wrong key is lower).
    ``positions="all"`` checks every position of every prompt where the function is defined, in
    parallel, as the model computes them.

    ``output=True`` also requires the model's predicted token at that position to equal the function's
    output under softmax attention.  As in Lemma F.1, ``beta`` is chosen from the smallest positive
    margin ``lambda`` among the checked inputs of that length (twice :func:`sufficient_beta`); the model
    then runs on its float64 fast path.  If some margin is <= 0 those checks already fail.  Note that for
    Retrieval at *all* positions ``lambda`` can be tiny: a letter-number token reads itself, but an
    earlier token with the same left letter and another number has logit ``cos(t theta)``, only
    ``~ (t theta)^2 / 2`` lower, so the required ``beta`` grows like ``1 / theta^2``.
    ``theta`` defaults to the paper's Fig. 5A angles.
    """
    kind = _kind(kind)
    if positions not in ("last", "all"):
        raise ValueError(f"positions must be 'last' or 'all', got {positions!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    theta = (INDEX_THETA if kind == "index" else RETRIEVAL_THETA) if theta is None else float(theta)
    fn = index if kind == "index" else retrieval
    task = get_task("number" if kind == "index" else "letter")
    head = (lambda b: index_head(theta, task.vocab, beta=b)) if kind == "index" else \
        (lambda b: retrieval_head(theta, vocab=task.vocab, beta=b))
    last = positions == "last"
    name = "blocks.0.attn.hook_attn_scores"
    ok = total = 0
    for L in lengths:
        L = int(L)
        seqs = random_task_inputs(task, n_samples, L, rng)
        model = head(1.0)
        qpos = [L - 1] if last else list(range(L))
        checks = []  # (sample, row, position, attention passed, margin)
        for b0 in range(0, len(seqs), batch):
            chunk = seqs[b0:b0 + batch]
            _, cache = model.run_with_cache(_encode(task.vocab, chunk), names=[name], last_only=last)
            scores = cache[name][:, 0].double().numpy()  # (B, Tq, T), unit-scale cosines
            for i, s in enumerate(chunk):
                for r, p in enumerate(qpos):
                    good = reads(s, fn, p)
                    if not good:
                        continue
                    mask = np.zeros(p + 1, dtype=bool)
                    mask[list(good)] = True
                    mg = margin(scores[i, r, :p + 1], mask) if (~mask).any() else math.inf
                    checks.append((b0 + i, r, p, bool(mg > 0), mg))
        if output and checks:
            positive = [c[4] for c in checks if c[4] > 0 and math.isfinite(c[4])]
            lam = min(positive) if positive else 1.0
            beta = 2.0 * sufficient_beta(L, lam, 0.5 if kind == "index" else 0.75) + 1.0
            model = head(beta)
            preds = []
            for b0 in range(0, len(seqs), batch):
                preds.append(model(_encode(task.vocab, seqs[b0:b0 + batch]), last_only=last, fast=True).argmax(-1))
            pred = torch.cat(preds).numpy()  # (N, Tq)
            outs = {}
            for k, (i, r, p, att, mg) in enumerate(checks):
                if i not in outs:
                    outs[i] = fn(seqs[i])
                checks[k] = (i, r, p, att and task.vocab.tokens[pred[i, r]] == outs[i][p], mg)
        ok += sum(c[3] for c in checks)
        total += len(checks)
    if total == 0:
        raise ValueError("no position was checked")
    return ok / total


@torch.no_grad()
def sampled_margins(kind: str, n: int, theta: float, n_samples: int = 500,
                    rng: np.random.Generator | None = None, omega: float | None = None) -> np.ndarray:
    """Margins (:func:`margin`, unit scale) of the last query of the real head on random task prompts of length ``n``.

    An independent, sampling-based counterpart of :func:`measured_discrepancy`: every value lies in
    ``[measured_discrepancy(..., "min"), measured_discrepancy(..., "max")]``.
    """
    kind = _kind(kind)
    rng = np.random.default_rng(0) if rng is None else rng
    task = get_task("number" if kind == "index" else "letter")
    fn = index if kind == "index" else retrieval
    model = index_head(theta, task.vocab) if kind == "index" else retrieval_head(theta, omega, task.vocab)
    seqs = random_task_inputs(task, n_samples, n, rng)
    out = []
    for b0 in range(0, len(seqs), 128):
        chunk = seqs[b0:b0 + 128]
        lg = attention_logits(model, _encode(task.vocab, chunk)).numpy()
        mask = np.zeros_like(lg, dtype=bool)
        for i, s in enumerate(chunk):
            mask[i, list(reads(s, fn))] = True
        out.append(margin(lg, mask))
    return np.concatenate(out)


# -----------------------------------------------------------------------------------------------
# exact worst / best case over all inputs of a length

def _as_lengths(n) -> tuple[np.ndarray, bool]:
    arr = np.asarray(n)
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr).astype(np.int64)
    if (arr < 2).any():
        raise ValueError("discrepancy is defined for lengths n >= 2")
    return arr, scalar


def _index_exact(ns: np.ndarray, theta: float, m: int, reduce: str) -> np.ndarray:
    """Index head: gap of the query ``s`` (0 = letter) at length n is ``1 - max_{1<=t<=M} cos(t theta)``,
    ``M = max(s, n-1-s)``: the competing keys sit at offsets ``-s..n-1-s`` (minus 0) from the target and
    ``cos`` is even.  The keys' content never enters, so enumerating ``s`` enumerates all inputs."""
    N = int(ns.max())
    t = np.arange(1, N, dtype=np.float64)
    best = np.concatenate([[-np.inf], np.maximum.accumulate(np.cos(t * theta))])  # best[M] = max_{t<=M}
    if reduce == "min":
        M = ns - 1                       # s = 0 (or s = n-1): the largest offset range
    else:
        M = np.maximum((ns - 1 + 1) // 2, ns - 1 - m)  # the query s closest to the middle, s <= m
        M = np.minimum(M, ns - 1)
    return 1.0 - best[M]


def _top2(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running largest value, its index and the running second largest of a 1-D array."""
    n = len(values)
    a1 = np.empty(n)
    i1 = np.empty(n, dtype=np.int64)
    a2 = np.empty(n)
    b1, j1, b2 = -np.inf, -1, -np.inf
    for t, v in enumerate(values):
        if v > b1:
            b1, j1, b2 = v, t, b1
        elif v > b2:
            b2 = v
        a1[t], i1[t], a2[t] = b1, j1, b2
    return a1, i1, a2


def _retrieval_exact(ns: np.ndarray, theta: float, omega: float, alph: int, reduce: str) -> np.ndarray:
    """Retrieval head, exact over proper inputs whose wrong keys all carry a letter other than the
    matched one.  The match is at distance ``t*`` (logit ``cos(t* theta)``); a wrong key at distance
    ``t`` with letter offset ``k != 0`` has logit ``cos(k omega + t theta)``.  Every assignment of
    letters to the other positions is a proper input (use letter-number tokens), so

    * min: every other position holds the letter giving the *largest* wrong logit,
    * max: every other position holds the letter giving the *smallest* wrong logit,

    and the result is the min (max) over ``t*`` of ``cos(t* theta) - max_{t != t*} wrong(t)``."""
    N = int(ns.max())
    t = np.arange(N, dtype=np.float64)
    ks = np.array([k for k in range(-(alph - 1), alph) if k != 0], dtype=np.float64)
    wrong = np.cos(ks[:, None] * omega + t[None, :] * theta)
    wrong = wrong.max(0) if reduce == "min" else wrong.min(0)
    right = np.cos(t * theta)
    w1, wi, w2 = _top2(wrong)
    sgn = -1.0 if reduce == "min" else 1.0
    r1, ri, r2 = _top2(sgn * right)  # running extreme of cos(t* theta) in the direction we want
    out = np.empty(len(ns))
    for q, n in enumerate(ns):
        e = n - 1
        # t* = argmax of wrong: its competitor is the second best wrong key
        c1 = right[wi[e]] - w2[e]
        # t* != argmax of wrong: competitor is the best wrong key; pick the extreme right logit among them
        other = r1[e] if ri[e] != wi[e] else r2[e]
        c2 = sgn * other - w1[e]
        out[q] = min(c1, c2) if reduce == "min" else max(c1, c2)
    return out


def measured_discrepancy(kind: str, n, theta: float, *, alph: int = 8, omega: float | None = None,
                         m: int = 16, reduce: str = "min"):
    """The exact discrepancy of the constructed head over all inputs of length ``n`` (unit logits, no ``beta``).

    ``reduce="min"``: the worst-case margin (correct logit minus largest wrong logit, minimised over
    inputs); ``reduce="max"``: the most favourable input, Def. 3.1's literal "maximal difference".  The
    inputs are: Index -- any sequence over letters and the numbers ``1..m`` whose last number points
    inside the sequence (only the query matters: keys are all equal); Retrieval -- any proper sequence in
    which the letter the query asks for is the left letter of exactly one key (the match, possibly the
    query itself), with ``|ALPH| = alph`` letters and letter angle ``omega`` (default ``2 pi / alph``).
    ``n`` may be an int or an array of lengths (all >= 2).

    Why exhaustive enumeration is cheap here is explained in the helpers' docstrings; the tests compare
    the result with explicit logit vectors and with the real model on random task prompts.
    """
    kind = _kind(kind)
    if reduce not in ("min", "max"):
        raise ValueError(f"reduce must be 'min' or 'max', got {reduce!r}")
    ns, scalar = _as_lengths(n)
    if kind == "index":
        out = _index_exact(ns, float(theta), int(m), reduce)
    else:
        om = 2 * math.pi / alph if omega is None else float(omega)
        out = _retrieval_exact(ns, float(theta), om, int(alph), reduce)
    return float(out[0]) if scalar else out


def discrepancy_bounds(kind: str, n, theta: float, alph: int = 8, *, form: str = "paper",
                       reduce: str = "min", m: int = 16, omega: float | None = None):
    """Upper bounds on the discrepancy at length ``n``.

    ``form="paper"`` -- Theorem 3.2 as printed: Index ``min{1 - cos theta, 2 pi^2 / n^2}``, Retrieval
    ``1 - cos(omega - n theta)`` with ``omega = 2 pi / alph``.

    ``form="proved"`` -- the bounds proved in this module's docstring, which :func:`measured_discrepancy`
    never exceeds: for ``reduce="min"`` Index ``min{1 - cos theta, 1 - cos(2 pi / n)}`` (at most the
    paper's) and Retrieval ``1 - cos(omega - (n-1) theta)``; for ``reduce="max"`` Index
    ``min{1 - cos theta, 1 - cos(2 pi / (M+1))}``, ``M = max(ceil((n-1)/2), n-1-m)``.  There is no
    useful bound for Retrieval with ``reduce="max"``.
    """
    kind = _kind(kind)
    ns, scalar = _as_lengths(n)
    nf = ns.astype(np.float64)
    theta = float(theta)
    om = 2 * math.pi / alph if omega is None else float(omega)
    if form == "paper":
        if kind == "index":
            out = np.minimum(1 - math.cos(theta), 2 * math.pi ** 2 / nf ** 2)
        else:
            out = 1 - np.cos(om - nf * theta)
    elif form == "proved":
        if reduce == "min":
            if kind == "index":
                out = np.minimum(1 - math.cos(theta), 1 - np.cos(2 * math.pi / nf))
            else:
                out = 1 - np.cos(om - (nf - 1) * theta)
        elif reduce == "max":
            if kind != "index":
                raise ValueError("no useful upper bound on the most favourable Retrieval input (it approaches 2)")
            M = np.maximum((ns - 1 + 1) // 2, ns - 1 - m)
            out = np.minimum(1 - math.cos(theta), 1 - np.cos(2 * math.pi / (M + 1)))
        else:
            raise ValueError(f"reduce must be 'min' or 'max', got {reduce!r}")
    else:
        raise ValueError(f"form must be 'paper' or 'proved', got {form!r}")
    return float(out[0]) if scalar else out


def discrepancy_break_length(delta_fn, threshold, n_min: int = 2, n_max: int = 100_000) -> int | None:
    """The smallest length ``n`` at which a discrepancy curve falls below ``threshold``.

    ``delta_fn`` is either a callable ``n -> discrepancy`` (tried once on the whole array of lengths,
    then element by element), or a pair ``(lengths, values)`` of measured points (then only those
    lengths are considered).  ``threshold`` is a number or a callable ``n -> number`` (for example
    ``lambda n: math.log(n - 1) / beta``, the margin that a head with inverse temperature ``beta`` needs
    to keep half its attention on the right key, :func:`sufficient_beta`).  Returns None if the curve
    never falls below it in the range.
    """
    if callable(delta_fn):
        ns = np.arange(int(n_min), int(n_max) + 1)
        try:
            vals = np.asarray(delta_fn(ns), dtype=np.float64)
            if vals.shape != ns.shape:
                raise ValueError
        except Exception:
            vals = np.array([float(delta_fn(int(k))) for k in ns])
    else:
        ns, vals = (np.asarray(a) for a in delta_fn)
        if ns.shape != vals.shape or ns.ndim != 1:
            raise ValueError("expected (lengths, values) as two 1-D arrays of the same length")
        order = np.argsort(ns, kind="stable")
        ns, vals = ns[order], vals[order].astype(np.float64)
    thr = (np.array([float(threshold(int(k))) for k in ns]) if callable(threshold)
           else np.full(len(ns), float(threshold)))
    below = np.flatnonzero(vals < thr)
    return int(ns[below[0]]) if below.size else None
