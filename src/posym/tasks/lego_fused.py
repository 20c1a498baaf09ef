"""LEGO with two chains and fused sign tokens: a variant of :mod:`posym.tasks.lego` whose depth 1 needs a lookup by name.

In ``lego`` (one chain of 6 variables) the only variable at depth 1 is the one whose clause holds the constant, so
depth 1 is answered without reading the query, and nothing teaches a small decoder to find the queried clause by
its name; depth 2 then stays at chance (``data/lego/README.md``). Here, as there, one prompt asks for the sign of one
variable and the model gives it as the next token (one answer token, the final-token loss).

Every choice:

* **Two chains.** ``N_CHAINS = 2`` independent chains of ``CHAIN_LEN = 3`` variables each, 6 clauses with 6
  distinct names drawn from the 26 letters ``a``..``z``. Chain ``c`` is ``v1 = s1 1``, ``v2 = s2 v1``,
  ``v3 = s3 v2``; the value of ``vk`` is ``s1 * ... * sk``. The query is a variable of one of the chains (the
  *queried chain*); with two clauses that hold the constant, even depth 1 needs the queried clause found by name.
* **Clause tokens.** A clause is two tokens: its operand (a name, or the constant ``1``), then the defined name
  fused with its sign: ``1 a+`` is ``a = +1``, ``a b-`` is ``b = -a``. So the name and the sign a depth-1 query
  needs sit in one token, as a Letter-task token holds a letter and its target. With the sign in a token of its
  own (``lego``'s ``a = + 1``, or ``+ 1 = a``), seed-0 trials learned neither depth (the README's table).
* **Vocabulary.** ``<pad>``, the 26 names, the 52 signed names ``a+``, ``a-``, ..., ``z-``, ``1``, ``?`` and
  the answers ``+`` and ``-`` (83 ids).
* **Prompt.** The 6 clauses (12 tokens), then ``?`` and the queried name: 14 tokens. The answer is ``+`` or
  ``-``, the queried variable's value. The query's **depth** is the number of clauses the rule reads, from the
  queried one back to the one with the constant. The chain (``Sample.chain``) is the query's position, then the
  positions of the signed tokens of the clauses read, last the queried chain's first clause.
* **Order.** ``lego_fused`` shuffles the 6 clauses (a uniform random order). ``lego_fused_ordered``
  (``posym/tasks/lego_fused_ordered.py``) shows each chain in chain order, one chain after the other (slots 0..2
  and 3..5), so every clause's parent is the clause before it (2 tokens back): the positional shortcut.
* **Splits and balance.** Training (and validation/test) prompts query depths 1..2 (``max_hops = 2``); every
  (slot of the queried chain's first clause, answer, depth) combination appears equally often (shuffled: 6 slots x
  2 x 2 = 24 combinations; ordered: the queried chain in the first or the second block, 2 x 2 x 2). The splits
  are the shared ones of :mod:`posym.tasks.base`. The signs on the queried part of the chain are uniform given the
  answer; the others are uniform.
* **Deeper queries** (a test-time construction, :meth:`LegoFusedTask.chain_prompts`): depth 3 (the last variable of
  a chain of 3), and longer chains, which training never asks for.
"""
from __future__ import annotations

import string

import numpy as np

from ..palette import OKABE_ITO
from .base import Sample, Task, Vocab, register_task

N_CHAINS = 2
CHAIN_LEN = 3
NAMES = tuple(string.ascii_lowercase)
SIGNED = tuple(f"{v}{s}" for v in NAMES for s in "+-")  # a+ a- b+ b- ...


def fused_seq_len(chain_len: int, n_chains: int = N_CHAINS) -> int:
    """Prompt length: 2 tokens per clause, then ``?`` and the queried name."""
    return 2 * n_chains * chain_len + 2


@register_task
class LegoFusedTask(Task):
    """Two LEGO chains, clauses as (operand, signed name) token pairs; the answer is the queried variable's sign."""

    name = "lego_fused"
    task_id = 5
    colour = OKABE_ITO["purple"]
    label = "LEGO, two chains (shuffled)"
    ordered = False
    n_chains = N_CHAINS
    chain_len = CHAIN_LEN
    seq_len = fused_seq_len(CHAIN_LEN)
    n_positions = N_CHAINS * CHAIN_LEN  # slot of the queried chain's first clause
    max_hops = 2
    n_draws = len(NAMES) + 2 * N_CHAINS * CHAIN_LEN  # name keys, slot keys, signs
    # teaching scale: 4 layers x 4 heads with MLPs, d 64, no dropout, AdamW lr 1e-3; 3,000 steps of 64 fresh prompts
    # (about 2 min of one CPU thread). lego's 4 x 2, d 48 at lr 3e-3 learned depth 1 but not depth 2 (README)
    teaching_model = {"n_layer": 4, "n_head": 4, "d_model": 64, "d_mlp": 256, "attn_pdrop": 0.0, "resid_pdrop": 0.0}
    teaching_train = {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "checkpoint_every": 100,
                      "train_size": 192_000}

    def __init__(self) -> None:
        self.answer_tokens = ("+", "-")
        self.vocab = Vocab(NAMES + SIGNED + ("1", "?", "+", "-"))
        self._name0 = self.vocab.stoi[NAMES[0]]
        self._signed0 = self.vocab.stoi[SIGNED[0]]
        self._one, self._q = self.vocab.stoi["1"], self.vocab.stoi["?"]

    # --- generation ---------------------------------------------------------------
    def _build(self, tp, ans, hops, u):
        x, chain = self.build_chains(tp, ans, hops, u, self.chain_len)
        return x, chain[:, :self.max_hops + 1]

    def build_chains(self, tp, ans, hops, u, chain_len: int):
        """Vectorised builder for chains of any length: token ids (N, 4 chain_len + 2), chains (N, chain_len + 1).

        ``tp``: slot of the queried chain's first clause (ordered: 0 or 1, the block of the queried chain);
        ``ans``: 0 for ``+``, 1 for ``-``; ``hops``: depth of the query, 1..chain_len; ``u``: (N, 26 + 4 chain_len)
        uniforms (name keys, slot keys, signs)."""
        tp, ans, hops = (np.asarray(a, dtype=np.int64) for a in (tp, ans, hops))
        n = len(tp)
        m = self.n_chains * chain_len  # clauses; clause j is variable j % chain_len + 1 of chain j // chain_len
        if not 1 <= chain_len or m > len(NAMES):
            raise ValueError(f"chain_len must be in 1..{len(NAMES) // self.n_chains}, got {chain_len}")
        if u.shape != (n, len(NAMES) + 2 * m):
            raise ValueError(f"u must have shape ({n}, {len(NAMES) + 2 * m}), got {u.shape}")
        if n and (hops.min() < 1 or hops.max() > chain_len):
            raise ValueError(f"depths must be in 1..{chain_len}")
        n_pos = self.n_chains if self.ordered else m
        if n and (tp.min() < 0 or tp.max() >= n_pos):
            raise ValueError("slot of the queried chain out of range")
        rows = np.arange(n)
        k = np.arange(chain_len)
        names = np.argsort(u[:, :len(NAMES)], axis=1, kind="stable")[:, :m]  # distinct
        # signs +1/-1; on the queried part of chain 0 (k < depth) the last one makes the product equal the answer
        s = np.where(u[:, len(NAMES) + m:] < 0.5, 1, -1)
        prod_before = np.prod(np.where(k[None, :] < hops[:, None] - 1, s[:, :chain_len], 1), axis=1)
        s[rows, hops - 1] = np.where(ans == 0, 1, -1) * prod_before
        if self.ordered:  # chain c in block (c + tp) % n_chains, in chain order
            block = (np.arange(self.n_chains)[None, :] + tp[:, None]) % self.n_chains
            slot = (block[:, :, None] * chain_len + k[None, None, :]).reshape(n, m)
        else:  # uniform order, with the queried chain's first clause moved to slot tp
            keys = u[:, len(NAMES):len(NAMES) + m]
            slot = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
            j = np.argmax(slot == tp[:, None], axis=1)
            slot[rows, j] = slot[:, 0]
            slot[:, 0] = tp
        first = (np.arange(m) % chain_len == 0)[None, :]
        prev = np.concatenate([names[:, :1], names[:, :-1]], axis=1)  # column 0 is never used (a first clause)
        L = fused_seq_len(chain_len, self.n_chains)
        x = np.zeros((n, L), dtype=np.int64)
        pos = 2 * slot  # (n, m) position of each clause's operand; its signed name follows
        x[rows[:, None], pos] = np.where(first, self._one, self._name0 + prev)
        x[rows[:, None], pos + 1] = self._signed0 + 2 * names + (s < 0)
        x[:, L - 2] = self._q
        x[:, L - 1] = self._name0 + names[rows, hops - 1]
        chain = np.full((n, chain_len + 1), -1, dtype=np.int64)
        chain[:, 0] = L - 1
        for step in range(1, chain_len + 1):
            c = hops - step  # clause of chain 0 read at this step
            ok = c >= 0
            chain[ok, step] = pos[rows[ok], c[ok]] + 1
        return x, chain

    def chain_prompts(self, n: int, depths, chain_len: int | None = None, seed: int = 0) -> list[Sample]:
        """``n`` test prompts per depth in ``depths`` with chains of ``chain_len`` variables (default 3).

        A test-time construction: depths above ``max_hops`` are never asked in training. Answers alternate
        ``+``/``-`` and the slot of the queried chain cycles. Deterministic in ``seed``."""
        chain_len = self.chain_len if chain_len is None else int(chain_len)
        hops, ans, idx = self._depth_plan(n, depths, chain_len)
        m = self.n_chains * chain_len
        tp = (idx // 2) % (self.n_chains if self.ordered else m)
        rng = np.random.default_rng([seed, self.task_id, chain_len, 31])
        x, chain = self.build_chains(tp, ans, hops, rng.random((len(hops), len(NAMES) + 2 * m)), chain_len)
        return self._samples(x, chain, ans, hops)

    # --- solving --------------------------------------------------------------------
    def solve(self, tokens):
        """Read the (operand, signed name) pairs, then follow the queried name back to the constant, multiplying
        the signs. Raises ValueError when the prompt is not laid out so, a name is defined twice or not at all, or
        the chain loops."""
        toks = list(tokens)
        if len(toks) < 4 or len(toks) % 2 or toks[-2] != "?" or toks[-1] not in NAMES:
            raise ValueError(f"not a {self.name} prompt: expected (operand, signed name) pairs, then '?' and a name")
        defs: dict[str, tuple[int, int, str]] = {}
        for p in range(0, len(toks) - 2, 2):
            op, signed = toks[p], toks[p + 1]
            if not (op == "1" or op in NAMES) or signed not in SIGNED:
                raise ValueError(f"clause at position {p} is not 'operand signed-name': {toks[p:p + 2]}")
            name, sign = signed[:-1], signed[-1]
            if name in defs:
                raise ValueError(f"variable {name!r} is defined twice")
            defs[name] = (p + 1, 1 if sign == "+" else -1, op)
        var, chain, value = toks[-1], [len(toks) - 1], 1
        while True:
            if var not in defs:
                raise ValueError(f"variable {var!r} is not defined")
            p, sign, op = defs[var]
            if p in chain:
                raise ValueError("the chain loops")
            chain.append(p)
            value *= sign
            if op == "1":
                break
            var = op
        return ("+" if value > 0 else "-"), len(chain) - 1, tuple(chain)

    def check_ids(self, ids) -> None:
        super().check_ids(ids)
        self._check_last_two(ids, lambda t: (t[:, 0] != self._q) | (t[:, 1] < self._name0)
                             | (t[:, 1] >= self._name0 + len(NAMES)), "does not end with '?' and a name")
