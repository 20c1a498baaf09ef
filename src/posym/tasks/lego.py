"""LEGO chains (Learning Equality and Group Operations; Zhang et al., 2022), adapted to a decoder.

The source task is a chain of clauses over variables whose values lie in the group Z2 = {+1, -1}::

    a = +1 ; b = -a ; c = +b ; ...

and a BERT-style encoder predicts the value of every variable. Here one prompt asks for one variable,
and the model gives its value as the next token, so the final-token loss, the training recipe and the
positional/symbolic metric apply unchanged.

Every choice:

* **Chain length.** ``N_VARS = 6`` variables per prompt, all in one chain ``v1 = s1 1``,
  ``v2 = s2 v1``, ..., ``v6 = s6 v5``; the value of ``vk`` is the product ``s1 * ... * sk``.
* **Vocabulary.** ``<pad>``, the 26 variable names ``a``..``z``, ``=``, the signs ``+`` and ``-``, the
  constant ``1`` and the query mark ``?`` (32 ids). The 6 names of a prompt are drawn without replacement
  from the 26, so a name carries no value of its own: the model has to match names.
* **Clause format and tokens.** A clause is 4 tokens ``lhs = sign rhs`` (``rhs`` is the constant ``1`` for
  the first variable of the chain, else the previous variable); clauses follow each other without a separator
  (every clause starts at a multiple of 4). Position ``4 * slot`` holds the clause's ``lhs``.
* **Query.** After the 6 clauses come ``?`` and the queried variable: 26 tokens. The answer is ``+`` or ``-``,
  the queried variable's value. The query's **depth** (1 for ``v1`` ... 6 for ``v6``) is the hop count:
  the number of clauses the rule reads, from the query back to the clause with the constant. The chain
  (``Sample.chain``) is the query's position, then the ``lhs`` positions of the clauses read, last the
  clause with the constant.
* **Order.** ``lego`` shuffles the 6 clauses (a uniform random order); ``lego_ordered``
  (``posym/tasks/lego_ordered.py``) shows them in chain order, ``v1`` first. In a decoder a clause can only
  read the clauses before it: with ordered clauses every clause can read its parent, 4 positions back (a
  positional shortcut); with shuffled clauses only the final query sees every clause.
* **Splits and balance.** Training (and validation/test) prompts query depths 1..2 (``max_hops = 2``), the first third of the chain; every
  (slot of the first clause, answer, depth) combination appears equally often (shuffled: 6 slots x 2 x 2 =
  24 combinations; ordered: the first clause is always in slot 0, 1 x 2 x 2). The splits are the shared ones
  of :mod:`posym.tasks.base`. The signs on the queried part of the chain are uniform given the answer; the
  others are uniform.
* **Length generalisation** (a test-time construction, :meth:`LegoTask.chain_prompts`): the same prompts
  with the query at depths 3..6, which training never asks for (the LEGO paper trains on the first 6 of 12
  variables and tests on all 12), and longer prompts with more variables (e.g. 12 variables, 50 tokens). The tests check
  both with an independent solver.
"""
from __future__ import annotations

import string

import numpy as np

from ..palette import OKABE_ITO
from .base import Sample, Task, Vocab, register_task

N_VARS = 6
CLAUSE = 4  # tokens per clause: lhs = sign rhs
NAMES = tuple(string.ascii_lowercase)


def lego_seq_len(n_vars: int) -> int:
    """Prompt length with ``n_vars`` clauses: 4 tokens per clause, then ``?`` and the queried variable."""
    return CLAUSE * n_vars + 2


@register_task
class LegoTask(Task):
    """One LEGO chain per prompt; the answer is the sign of the queried variable (see the module docstring)."""

    name = "lego"
    task_id = 2
    colour = OKABE_ITO["green"]
    label = "LEGO (shuffled)"
    ordered = False
    n_vars = N_VARS
    seq_len = lego_seq_len(N_VARS)
    n_positions = N_VARS  # slot of the clause with the constant
    max_hops = 2          # depths asked in training; 3..6 only at test time (chain_prompts)
    n_draws = len(NAMES) + 2 * N_VARS  # name keys, slot keys, signs
    # teaching scale: 4 layers x 2 heads with MLPs (the sign product needs a nonlinearity), d 48; 1,000 steps of
    # 64 prompts (about 1.5 min of one CPU thread)
    teaching_model = {"n_layer": 4, "n_head": 2, "d_model": 48, "d_mlp": 192}
    teaching_train = {"steps": 1000, "batch_size": 64, "warmup_steps": 100, "checkpoint_every": 100, "train_size": 64_000}

    def __init__(self) -> None:
        self.answer_tokens = ("+", "-")
        self.vocab = Vocab(NAMES + ("=", "+", "-", "1", "?"))
        self._name_id0 = self.vocab.stoi["a"]
        self._ids = {t: self.vocab.stoi[t] for t in ("=", "+", "-", "1", "?")}
        self._names = frozenset(NAMES)

    # --- generation ---------------------------------------------------------------
    def _build(self, tp, ans, hops, u):
        x, chain = self.build_chains(tp, ans, hops, u, self.n_vars)
        return x, chain[:, :self.max_hops + 1]

    def build_chains(self, tp, ans, hops, u, n_vars: int):
        """Vectorised builder for any chain length: token ids (N, 4 n_vars + 2), chains (N, n_vars + 1).

        ``tp``: slot of the clause with the constant (0 when ordered); ``ans``: 0 for ``+``, 1 for ``-``;
        ``hops``: depth of the query, 1..n_vars; ``u``: (N, 26 + 2 n_vars) uniforms."""
        tp, ans, hops = (np.asarray(a, dtype=np.int64) for a in (tp, ans, hops))
        n = len(tp)
        if not 1 <= n_vars <= len(NAMES):
            raise ValueError(f"n_vars must be in 1..{len(NAMES)}, got {n_vars}")
        if u.shape != (n, len(NAMES) + 2 * n_vars):
            raise ValueError(f"u must have shape ({n}, {len(NAMES) + 2 * n_vars}), got {u.shape}")
        if n and (hops.min() < 1 or hops.max() > n_vars):
            raise ValueError(f"depths must be in 1..{n_vars}")
        if n and (tp.min() < 0 or tp.max() >= n_vars or (self.ordered and tp.max() > 0)):
            raise ValueError("slot of the first clause out of range")
        rows = np.arange(n)
        k = np.arange(n_vars)
        names = np.argsort(u[:, :len(NAMES)], axis=1, kind="stable")[:, :n_vars]  # v1..vN, distinct
        # signs: +1/-1; on the queried part (k < depth) the last one makes the product equal the answer
        s = np.where(u[:, len(NAMES) + n_vars:] < 0.5, 1, -1)
        on = k[None, :] < hops[:, None]
        prod_before = np.prod(np.where(on & (k[None, :] < hops[:, None] - 1), s, 1), axis=1)
        want = np.where(ans == 0, 1, -1)
        s[rows, hops - 1] = want * prod_before
        # slots: ordered -> clause k in slot k; shuffled -> uniform, with clause 0 moved to slot tp
        if self.ordered:
            slot = np.broadcast_to(k, (n, n_vars)).copy()
        else:
            keys = u[:, len(NAMES):len(NAMES) + n_vars]
            slot = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
            j = np.argmax(slot == tp[:, None], axis=1)  # the clause now in slot tp
            slot[rows, j] = slot[:, 0]
            slot[:, 0] = tp
        L = lego_seq_len(n_vars)
        x = np.zeros((n, L), dtype=np.int64)
        base = CLAUSE * slot  # (n, n_vars) position of each clause's lhs
        x[rows[:, None], base] = self._name_id0 + names
        x[rows[:, None], base + 1] = self._ids["="]
        x[rows[:, None], base + 2] = np.where(s > 0, self._ids["+"], self._ids["-"])
        rhs = np.concatenate([np.full((n, 1), self._ids["1"]), self._name_id0 + names[:, :-1]], axis=1)
        x[rows[:, None], base + 3] = rhs
        x[:, L - 2] = self._ids["?"]
        x[:, L - 1] = self._name_id0 + names[rows, hops - 1]
        # chain: query, then the lhs of clauses depth-1, ..., 0
        chain = np.full((n, n_vars + 1), -1, dtype=np.int64)
        chain[:, 0] = L - 1
        for step in range(1, n_vars + 1):
            c = hops - step  # clause index read at this step
            ok = c >= 0
            chain[ok, step] = base[rows[ok], c[ok]]
        return x, chain

    def chain_prompts(self, n: int, depths, n_vars: int | None = None, seed: int = 0) -> list[Sample]:
        """``n`` test prompts per depth in ``depths`` with ``n_vars`` clauses (default: the training length).

        A test-time construction for length generalisation: depths above ``max_hops`` are never asked in
        training, and ``n_vars`` above 8 makes the prompts longer. Answers are balanced (+/- alternate) and so
        is the slot of the first clause. Deterministic in ``seed``."""
        n_vars = self.n_vars if n_vars is None else int(n_vars)
        hops, ans, idx = self._depth_plan(n, depths, n_vars)
        m = len(hops)
        tp = np.zeros(m, dtype=np.int64) if self.ordered else (idx // 2) % n_vars
        rng = np.random.default_rng([seed, self.task_id, n_vars, 31])
        u = rng.random((m, len(NAMES) + 2 * n_vars))
        x, chain = self.build_chains(tp, ans, hops, u, n_vars)
        return self._samples(x, chain, ans, hops)

    # --- solving --------------------------------------------------------------------
    def solve(self, tokens):
        """Read the clauses, then follow the queried variable back to the constant, multiplying the signs.

        Raises ValueError when the prompt is not laid out as clauses, a name is defined twice or not at all,
        or the chain loops."""
        toks = list(tokens)
        if len(toks) < CLAUSE + 2 or (len(toks) - 2) % CLAUSE or toks[-2] != "?":
            raise ValueError(f"not a {self.name} prompt: expected 4-token clauses, then '?' and a variable")
        defs: dict[str, tuple[int, str, str]] = {}
        for p in range(0, len(toks) - 2, CLAUSE):
            lhs, eq, sign, rhs = toks[p:p + CLAUSE]
            if lhs not in self._names or eq != "=" or sign not in ("+", "-") or not (rhs == "1" or rhs in self._names):
                raise ValueError(f"clause at position {p} is not 'name = sign operand': {toks[p:p + CLAUSE]}")
            if lhs in defs:
                raise ValueError(f"variable {lhs!r} is defined twice")
            defs[lhs] = (p, sign, rhs)
        var = toks[-1]
        chain = [len(toks) - 1]
        value = 1
        while True:
            if var not in defs:
                raise ValueError(f"variable {var!r} is not defined")
            p, sign, rhs = defs[var]
            if p in chain:
                raise ValueError("the chain loops")
            chain.append(p)
            value *= 1 if sign == "+" else -1
            if rhs == "1":
                break
            var = rhs
        return ("+" if value > 0 else "-"), len(chain) - 1, tuple(chain)

    def check_ids(self, ids) -> None:
        super().check_ids(ids)
        self._check_last_two(ids, lambda t: t[:, 0] != self._ids["?"], "has no '?' before its last token")

