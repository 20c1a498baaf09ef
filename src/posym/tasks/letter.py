"""The Letter task of Paper 2 (symbolic addressing): see :mod:`posym.tasks.window` for the layout."""
from __future__ import annotations

import numpy as np

from ..palette import OKABE_ITO
from .base import Vocab, _u_to_int, register_task
from .window import MAX_HOPS, QUERY_POS, SEQ_LEN, TARGET_WINDOW, WindowTask, _pick_intermediates


@register_task
class LetterTask(WindowTask):
    """Symbolic task: a letter names the token to visit next.

    Vocabulary ids: ``<pad>`` = 0, letter-number tokens ``a1``..``h8`` = 1..64,
    letter-letter tokens ``aa``..``hh`` = 65..128. A sample with answer ``A w``
    and ``h`` hops is built like this:

    1. draw ``h - 1`` distinct hop letters ``L1..L{h-1}``, all different from ``A``;
       the chain set is ``{L1, .., L{h-1}, A}``;
    2. choose ``h - 1`` intermediate positions from 8..15 and write, from the
       query down: query = ``q L1``, then ``L1 L2``, ..., ``L{h-1} A``, and ``A w``
       at ``target_pos`` (for ``h = 1`` the query is ``q A``);
    3. every other token (the query's left letter ``q``, instruction distractors,
       and the other target tokens) uses only letters *outside* the chain set,
       so each chain letter is the first letter of exactly one earlier token
       and the chain is unique. Target numbers are uniform in 1..8.
    """

    name = "letter"
    task_id = 1
    colour = OKABE_ITO["vermillion"]
    label = "Letter (symbolic)"
    # teaching scale: 6 layers with MLPs (without them the middle heads stay mixed)
    teaching_model = {"n_layer": 6, "d_model": 64, "d_mlp": 256}
    n_draws = 49  # 8 hop-letter keys, 8 position keys, 16 instruction letters, 1 query letter, 16 target

    def __init__(self) -> None:
        self.letters = tuple("abcdefgh")
        self.numbers = tuple(str(k) for k in range(1, 9))
        self.target_tokens = tuple(a + w for a in self.letters for w in self.numbers)
        self.instruction_tokens = tuple(a + b for a in self.letters for b in self.letters)
        self.answer_tokens = self.target_tokens
        self.vocab = Vocab(self.target_tokens + self.instruction_tokens)
        self._target_set = frozenset(self.target_tokens)
        self._instruction_set = frozenset(self.instruction_tokens)

    def is_letter_token(self, tok: str) -> bool:
        return tok in self.letters

    def is_number_token(self, tok: str) -> bool:
        return tok in self.numbers

    def is_target_token(self, tok: str) -> bool:
        """A letter-number token (``a1``..``h8``)."""
        return tok in self._target_set

    def is_instruction_token(self, tok: str) -> bool:
        """A letter-letter token (``aa``..``hh``)."""
        return tok in self._instruction_set

    def _build(self, tp, ans, hops, u):
        n = len(tp)
        rows = np.arange(n)
        n_let = len(self.letters)
        a = ans // n_let            # answer letter 0..7
        w = ans % n_let             # answer number index 0..7 (number w + 1)
        # hop letters: the h-1 letters with smallest keys, the answer letter excluded
        keys = u[:, 0:8].copy()
        keys[rows, a] = 2.0
        order = np.argsort(keys, axis=1, kind="stable")  # answer letter is last
        seq = np.full((n, MAX_HOPS), -1, dtype=np.int64)  # right letters along the chain: L1..L{h-1}, A
        for j in range(MAX_HOPS):
            seq[:, j] = np.where(j < hops - 1, order[:, j], np.where(j == hops - 1, a, -1))
        in_chain = np.zeros((n, n_let), dtype=bool)
        for j in range(MAX_HOPS):
            ok = seq[:, j] >= 0
            in_chain[rows[ok], seq[ok, j]] = True
        outside = np.argsort(in_chain, axis=1, kind="stable")  # letters outside the chain come first
        n_out = n_let - hops                                   # how many there are

        def outside_letter(uu: np.ndarray) -> np.ndarray:
            return outside[rows, _u_to_int(uu, n_out)]

        def ll_id(left, right):  # letter-letter token id
            return 1 + n_let * n_let + left * n_let + right

        x = np.zeros((n, SEQ_LEN), dtype=np.int64)
        # target window
        for t in range(TARGET_WINDOW):
            letter = outside_letter(u[:, 33 + t])
            number = _u_to_int(u[:, 41 + t], n_let)
            x[:, t] = 1 + letter * n_let + number
        x[rows, tp] = 1 + a * n_let + w
        # instruction window + query, walked from the query down
        on_path = np.zeros((n, SEQ_LEN), dtype=bool)
        on_path[:, TARGET_WINDOW:QUERY_POS] = _pick_intermediates(u[:, 8:16], hops)
        on_path[:, QUERY_POS] = True
        chain = np.full((n, MAX_HOPS + 1), -1, dtype=np.int64)
        j = np.zeros(n, dtype=np.int64)  # path nodes seen so far
        for t in range(QUERY_POS, TARGET_WINDOW - 1, -1):
            if t == QUERY_POS:
                left = outside_letter(u[:, 32])
            else:
                left = seq[rows, np.maximum(j - 1, 0)]
            right = seq[rows, np.minimum(j, MAX_HOPS - 1)]
            k = t - TARGET_WINDOW
            d_left = outside_letter(u[:, 16 + k]) if t < QUERY_POS else left
            d_right = outside_letter(u[:, 24 + k]) if t < QUERY_POS else right
            p = on_path[:, t]
            x[:, t] = np.where(p, ll_id(left, right), ll_id(d_left, d_right))
            chain[p, j[p]] = t
            j = j + p
        chain[rows, hops] = tp
        return x, chain

    def _id_ranges(self):
        return ((self.vocab.stoi[self.target_tokens[0]], self.vocab.stoi[self.target_tokens[-1]]),
                (self.vocab.stoi[self.instruction_tokens[0]], self.vocab.stoi[self.instruction_tokens[-1]]))

    @staticmethod
    def _is_target(tok: str) -> bool:
        return len(tok) >= 2 and tok[1:].isdigit()

    def solve(self, tokens):
        """Follow the letters; also accepts the paper's illustrative letters (e.g. ``'IG'``).

        Raises ValueError when a letter has no earlier token starting with it, or more than one.
        """
        p = len(tokens) - 1
        chain = [p]
        while not self._is_target(tokens[p]):
            letter = tokens[p][1]
            hits = [q for q in range(p) if tokens[q][0] == letter]
            if len(hits) != 1:
                raise ValueError(f"letter {letter!r} at position {p} matches {len(hits)} earlier tokens")
            p = hits[0]
            chain.append(p)
        return tokens[p], len(chain) - 1, tuple(chain)

    def _extra_tokens(self, sample, extra, rng):
        chain_letters = {sample.tokens[p][0] for p in sample.chain[1:]}
        outside = [c for c in self.letters if c not in chain_letters]
        li = rng.integers(0, len(outside), size=extra)
        ni = rng.integers(0, len(self.numbers), size=extra)
        return [outside[i] + self.numbers[k] for i, k in zip(li, ni)]
