"""The 17-token layout of Paper 2's two multi-hop tasks (Urrutia et al., 2026, Sec. 2.1 and App. B).

Both tasks use 17-token prompts with the same layout::

    positions 0..7    target window       (holds the answer)
    positions 8..15   instruction window  (holds the hops)
    position  16      query               (the first instruction)

The model reads the 17 tokens and predicts the answer as the 18th token.
Starting at the query, the model follows a chain of 1 to 4 *hops* that always
ends inside the target window. The two tasks share this chain structure but use
different addressing:

Number task (positional addressing)
    Target tokens are "letters" from ALPH (``a``..``z`` and then ``aa``..``dp``,
    120 in all); instruction tokens are integers 1..16. An integer ``k`` at
    position ``p`` means "go ``k`` positions back". Rule (0-based positions)::

        p = 16
        while tok[p] is an integer:
            p = p - int(tok[p])
        answer = tok[p]

    Example (paper Fig. 3A), 4 hops with chain 16 -> 14 -> 10 -> 8 -> 2::

        n h n v h y r s 6 3 2 7 7 8 4 7 2  ->  n

Letter task (symbolic addressing)
    Target tokens are atomic letter-number tokens ``a1``..``h8``; instruction
    tokens are atomic letter-letter tokens ``aa``..``hh``. Rule: read the second
    letter of the current token, jump to the earlier token whose *first* letter
    is that letter, and repeat until a letter-number token is reached. Example
    (paper Fig. 1, drawn with more letters than the real a..h alphabet)::

        C2 B1 A3 FA EC DE HF GD IG  ->  C2       (IG -> GD -> DE -> EC -> C2)
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Sample, Task

SEQ_LEN = 17
TARGET_WINDOW = 8
INSTRUCTION_WINDOW = 8
QUERY_POS = 16
MAX_HOPS = 4


def _pick_intermediates(u: np.ndarray, hops: np.ndarray) -> np.ndarray:
    """Choose ``hops - 1`` distinct instruction positions per row (no replacement).

    ``u`` has shape (N, 8): one random key per instruction position 8..15. The
    positions with the ``hops - 1`` smallest keys are chosen, which is a uniform
    draw without replacement. Returns a boolean mask of shape (N, 8).
    """
    rank = np.argsort(np.argsort(u, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < (hops[:, None] - 1)


class WindowTask(Task):
    """A task on the 17-token layout above: answer in the target window, hops in the instruction window."""

    seq_len = SEQ_LEN
    n_positions = TARGET_WINDOW
    max_hops = MAX_HOPS

    def _id_ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(first, last) ids of the target-window tokens and of the instruction tokens."""
        raise NotImplementedError

    def check_ids(self, ids) -> None:
        """ValueError unless every row of ``ids`` (token ids, shape (batch, seq) or (seq,)) is laid out as a
        prompt of this task: instruction tokens in the last 9 positions (the instruction window and the query),
        target-window tokens (or ``<pad>``) before them. Catches a prompt of the other task, whose ids may all
        be in range for this vocabulary."""
        t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(np.asarray(ids))
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2 or t.numel() == 0:
            return
        (tlo, thi), (ilo, ihi) = self._id_ranges()
        T = t.shape[1]
        n_instr = min(T, INSTRUCTION_WINDOW + 1)
        instr = t[:, T - n_instr:]
        target = t[:, :T - n_instr]
        bad_i = (instr < ilo) | (instr > ihi)
        bad_t = ((target < tlo) | (target > thi)) & (target != 0)
        if not (bool(bad_i.any()) or bool(bad_t.any())):
            return
        rows = bad_i.any(1) | bad_t.any(1) if target.shape[1] else bad_i.any(1)
        r = int(rows.nonzero()[0, 0])
        if target.shape[1] and bool(bad_t[r].any()):
            pos = int(bad_t[r].nonzero()[0, 0])
            want = "a target-window token"
        else:
            pos = T - n_instr + int(bad_i[r].nonzero()[0, 0])
            want = "an instruction token" if pos < T - 1 else "an instruction token (the query)"
        tid = int(t[r, pos])
        tok = repr(self.vocab.tokens[tid]) if 0 <= tid < len(self.vocab) else "out of the vocabulary"
        raise ValueError(f"not a {self.name}-task prompt: prompt {r}, position {pos} holds id {tid} ({tok}), "
                         f"expected {want}; {int(rows.sum())} of {t.shape[0]} prompt(s) do not fit this task")


    def extend_target_window(self, sample: Sample, extra: int, rng: np.random.Generator) -> Sample:
        """Length generalisation (paper Sec. 3.6, App. H).

        Prepends ``extra`` new target-window tokens *before* the target window.
        The instruction window and query are unchanged, so the answer is unchanged
        and the chain positions shift by ``extra``; the added tokens never need
        to be read.
        """
        if int(extra) != extra or extra < 0:
            raise ValueError(f"extra must be a non-negative integer, got {extra!r}")
        extra = int(extra)
        if extra == 0:
            return sample
        new = self._extra_tokens(sample, extra, rng)
        return Sample(tuple(new) + sample.tokens, sample.answer, sample.hops,
                      tuple(p + extra for p in sample.chain))

    def _extra_tokens(self, sample: Sample, extra: int, rng: np.random.Generator) -> list[str]:
        raise NotImplementedError
