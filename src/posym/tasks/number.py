"""The Number task of Paper 2 (positional addressing): see :mod:`posym.tasks.window` for the layout."""
from __future__ import annotations

import string

import numpy as np

from ..palette import OKABE_ITO
from .base import Vocab, _u_to_int, register_task
from .window import MAX_HOPS, QUERY_POS, SEQ_LEN, TARGET_WINDOW, WindowTask, _pick_intermediates


@register_task
class NumberTask(WindowTask):
    """Positional task: integers say how many positions to jump back.

    Vocabulary ids: ``<pad>`` = 0, numbers ``1``..``16`` = 1..16, letters = 17..136.
    A sample with ``h`` hops is built like this:

    1. choose ``h - 1`` intermediate positions from 8..15 without replacement;
    2. the path is 16 -> intermediates in descending order -> ``target_pos``,
       and each integer on the path is the distance to the next node;
    3. every other instruction position ``t`` gets a random offset in ``[1, t]``
       (it may point anywhere earlier, letters included);
    4. target-window letters are drawn with replacement, then the answer is
       written at ``target_pos``.
    """

    name = "number"
    task_id = 0
    colour = OKABE_ITO["blue"]
    label = "Number (positional)"
    # teaching scale: 7 layers, attention only (with MLPs, models this small keep mixed early heads)
    teaching_model = {"n_layer": 7, "d_model": 64, "d_mlp": 0, "attn_only": True}
    n_draws = 24  # 8 position keys, 8 distractor offsets, 8 target letters

    def __init__(self) -> None:
        singles = list(string.ascii_lowercase)
        bigrams = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
        self.letters = tuple((singles + bigrams)[:120])  # a..z, aa..dp
        self.numbers = tuple(str(k) for k in range(1, 17))
        self.answer_tokens = self.letters
        self.vocab = Vocab(self.numbers + self.letters)
        self._letter_id0 = self.vocab.stoi[self.letters[0]]
        self._number_set = frozenset(self.numbers)
        self._letter_set = frozenset(self.letters)

    def is_number_token(self, tok: str) -> bool:
        return tok in self._number_set

    def is_letter_token(self, tok: str) -> bool:
        return tok in self._letter_set

    def _build(self, tp, ans, hops, u):
        n = len(tp)
        x = np.zeros((n, SEQ_LEN), dtype=np.int64)
        chain = np.full((n, MAX_HOPS + 1), -1, dtype=np.int64)
        rows = np.arange(n)
        # target window: random letters, then the answer at target_pos
        x[:, :TARGET_WINDOW] = self._letter_id0 + _u_to_int(u[:, 16:24], len(self.letters))
        x[rows, tp] = self._letter_id0 + ans
        # instruction window + query: the path, walked from the answer upwards
        on_path = np.zeros((n, SEQ_LEN), dtype=bool)
        on_path[:, TARGET_WINDOW:QUERY_POS] = _pick_intermediates(u[:, 0:8], hops)
        on_path[:, QUERY_POS] = True
        prev = tp.astype(np.int64).copy()  # the path node just below position t
        for t in range(TARGET_WINDOW, SEQ_LEN):
            offset_ids = np.where(on_path[:, t], t - prev, 1 + _u_to_int(u[:, t], t) if t < QUERY_POS else 0)
            x[:, t] = offset_ids  # number k has id k
            prev = np.where(on_path[:, t], t, prev)
        # chain: query, intermediates in descending order, target
        desc = np.where(on_path[:, ::-1], np.arange(SEQ_LEN - 1, -1, -1), -1)
        order = np.argsort(~on_path[:, ::-1], axis=1, kind="stable")[:, :MAX_HOPS]
        picked = np.take_along_axis(desc, order, axis=1)
        chain[:, :MAX_HOPS] = picked
        chain[rows, hops] = tp
        return x, chain

    def _id_ranges(self):
        return ((self.vocab.stoi[self.letters[0]], self.vocab.stoi[self.letters[-1]]),
                (self.vocab.stoi[self.numbers[0]], self.vocab.stoi[self.numbers[-1]]))

    def solve(self, tokens):
        """Follow the jumps from the query; also reads the paper's illustrative letters (e.g. ``'C'``).

        Raises ValueError when the query or a token on the chain is not an integer 1..16, when the chain jumps
        before the first token, or when it ends on a token that is not a letter.
        """
        if not tokens or tokens[-1] not in self._number_set:
            raise ValueError(f"the query (last token) must be an integer 1..16, got "
                             f"{tokens[-1] if tokens else None!r}")
        p = len(tokens) - 1
        chain = [p]
        while tokens[p].isdigit() or tokens[p] in self._number_set:
            if tokens[p] not in self._number_set:
                raise ValueError(f"{tokens[p]!r} at position {p} is not a number-task integer (1..16)")
            p -= int(tokens[p])
            if p < 0:
                raise ValueError("the chain jumps before the first token")
            chain.append(p)
        if not tokens[p].isalpha():
            raise ValueError(f"the chain ends at position {p} on {tokens[p]!r}, which is not a letter")
        return tokens[p], len(chain) - 1, tuple(chain)

    def _extra_tokens(self, sample, extra, rng):
        return [self.letters[i] for i in rng.integers(0, len(self.letters), size=extra)]
