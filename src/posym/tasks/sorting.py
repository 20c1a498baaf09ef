"""List sorting (after Urdshals & Urdshals, 2025), one answer token per prompt.

The source study trains a one-layer, attention-only transformer to write a list of numbers in sorted order,
one output token after the other. At every output position the model reads the current token (the last
number it wrote) and must give the next one: the smallest number of the list that is larger than the
current one. This task keeps exactly that step and drops the rest of the sorted prefix:

    x1 x2 ... x9 | q   ->   the smallest x_i larger than q

Every choice:

* **Vocabulary.** ``<pad>``, the numbers ``0``..``47`` (``N_NUMBERS = 48``) and the separator ``|``.
* **List.** ``LIST_LEN = 9`` distinct numbers in random order, then ``|``, then the query ``q``, which is one of
  the list's numbers (11 tokens). The answer is the successor of ``q`` in the sorted list, so ``q`` is never
  the largest. Answers are ``1``..``47``.
* **Why this framing.** One answer per prompt lets the final-token loss, the recipe and the metric apply
  unchanged. In a one-layer attention-only model the logits at an output position depend on the current
  token (through the query of each head and the direct path) and on the attended context; the earlier
  sorted outputs matter only as context the heads may attend to. Keeping the list and the current token
  keeps the part of the context the sorting rule needs. What it leaves out: the source model also sees the
  numbers it already wrote, which a head can use to suppress copying them; here the only number that must
  not be copied is the query's own copy in the list.
* **Balance.** Every (position of the answer in the list, answer) combination appears equally often
  (9 x 47 = 423 combinations). Given the answer ``a``, the other 8 numbers are a uniform random set of
  distinct numbers with at least one below ``a`` (when a random draw has none, the one above ``a`` with the
  largest key is swapped for a random number below ``a``); their order is uniform. ``q`` is the largest of
  them below ``a``, so the gap ``a - q`` follows from the draw (it is what the source study ties the head
  modes to).
* **Hops.** 1 for every prompt (``max_hops = 1``): sorting is one lookup. The rank of the answer in the sorted
  list and the gap ``a - q`` are reported by the chapter instead.
* **Teaching model.** One layer, attention only, two heads, d 64, as the source study's model (one layer,
  attention only; the heads split the numbers between them).
"""
from __future__ import annotations

import numpy as np

from ..palette import OKABE_ITO
from .base import Task, Vocab, register_task

N_NUMBERS = 48
LIST_LEN = 9
SEP = "|"


@register_task
class SortingTask(Task):
    """The next number of the sorted list after the query (see the module docstring)."""

    name = "sorting"
    task_id = 3
    colour = OKABE_ITO["orange"]
    label = "List sorting"
    n_numbers = N_NUMBERS       # a variant of other sizes sets these two (sorting_long.py); the layout follows
    list_len = LIST_LEN
    seq_len = LIST_LEN + 2
    n_positions = LIST_LEN
    max_hops = 1
    n_draws = N_NUMBERS + LIST_LEN - 1  # one key per number (which are drawn), one per other position
    teaching_model = {"n_layer": 1, "n_head": 2, "d_model": 64, "d_mlp": 0, "attn_only": True}
    teaching_train = {"steps": 1500, "checkpoint_every": 100, "train_size": 192_000}  # one pass, fresh prompts

    def __init_subclass__(cls, **kwargs) -> None:
        """A variant sets ``n_numbers`` and ``list_len``; its prompt layout (list, separator, query) follows."""
        super().__init_subclass__(**kwargs)
        cls.seq_len, cls.n_positions = cls.list_len + 2, cls.list_len
        cls.n_draws = cls.n_numbers + cls.list_len - 1

    def __init__(self) -> None:
        self.numbers = tuple(str(k) for k in range(self.n_numbers))
        self.answer_tokens = self.numbers[1:]
        self.vocab = Vocab(self.numbers + (SEP,))
        self._num_id0 = self.vocab.stoi["0"]
        self._sep_id = self.vocab.stoi[SEP]

    def _build(self, tp, ans, hops, u):
        tp = np.asarray(tp, dtype=np.int64)
        a = np.asarray(ans, dtype=np.int64) + 1  # answer value
        n = len(tp)
        rows = np.arange(n)
        n_num, list_len = self.n_numbers, self.list_len
        nums = np.arange(n_num)
        keys = u[:, :n_num].copy()
        keys[rows, a] = np.inf  # the answer is placed separately
        rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        chosen = rank < list_len - 1
        below = nums[None, :] < a[:, None]
        none_below = ~(chosen & below).any(axis=1)
        if none_below.any():
            r = rows[none_below]
            drop = np.argmax(np.where(chosen[r] & ~below[r], keys[r], -np.inf), axis=1)
            add = np.argmin(np.where(below[r], keys[r], np.inf), axis=1)
            chosen[r, drop] = False
            chosen[r, add] = True
        others = np.sort(np.where(chosen, nums[None, :], n_num), axis=1)[:, :list_len - 1]  # (n, list_len - 1) ascending
        q = np.max(np.where(others < a[:, None], others, -1), axis=1)
        perm = np.argsort(u[:, n_num:], axis=1, kind="stable")
        others = np.take_along_axis(others, perm, axis=1)
        x = np.zeros((n, self.seq_len), dtype=np.int64)
        lst = np.zeros((n, list_len), dtype=np.int64)
        slots = np.ones((n, list_len), dtype=bool)
        slots[rows, tp] = False
        lst[slots] = others.reshape(-1)
        lst[rows, tp] = a
        x[:, :list_len] = self._num_id0 + lst
        x[:, list_len] = self._sep_id
        x[:, list_len + 1] = self._num_id0 + q
        chain = np.stack([np.full(n, self.seq_len - 1), tp], axis=1)
        return x, chain

    def solve(self, tokens):
        """Sort the list and return the number after the query (hops 1, chain: query, answer's position).

        Raises ValueError when the prompt is not ``list | q``, the list has repeats, ``q`` is not in the list,
        or ``q`` is the largest number."""
        toks = list(tokens)
        if len(toks) < 3 or toks[-2] != SEP or SEP in toks[:-2]:
            raise ValueError(f"not a {self.name} prompt: expected numbers, then {SEP!r} and the query")
        try:
            values = [int(t) for t in toks[:-2]]
            q = int(toks[-1])
        except ValueError:
            raise ValueError(f"not a {self.name} prompt: list and query must be numbers") from None
        if len(set(values)) != len(values):
            raise ValueError("the list has repeated numbers")
        if q not in values:
            raise ValueError(f"the query {q} is not in the list")
        larger = [v for v in values if v > q]
        if not larger:
            raise ValueError(f"the query {q} is the largest number of the list: it has no successor")
        a = min(larger)
        return str(a), 1, (len(toks) - 1, values.index(a))

    def check_ids(self, ids) -> None:
        super().check_ids(ids)
        self._check_last_two(ids, lambda t: (t[:, 0] != self._sep_id) | (t[:, 1] == self._sep_id),
                             f"does not end with '{SEP}' and a number")
