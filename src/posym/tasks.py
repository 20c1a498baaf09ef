"""The Number and Letter multi-hop tasks (Urrutia et al., 2026, Sec. 2.1 and App. B).

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

Data set construction. Every (target position, answer, hop count) combination
appears equally often; the list of combinations is shuffled once with the base
seed and cut, in order, into train / val / test (432,000 / 2,400 / 45,600).
Each sample then gets its own random stream, fixed by (seed, task, split, index),
so any sample can be rebuilt on its own, in any process, in O(1).

Implementation note. A sample is a pure function of its combination and a
fixed-length vector of uniform random numbers (``Task.n_draws`` of them). For
one sample the vector comes from ``rng.random(n_draws)``; for a whole split it
is the matrix ``rng.random((N, n_draws))`` drawn from the same stream, whose
row ``i`` is exactly what sample ``i`` would draw. The builders are vectorised
over that first axis, so ``TaskDataset.arrays()`` on the 432k train split takes
a few seconds.
"""
from __future__ import annotations

import functools
import hashlib
import string
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

TASK_NAMES = ("number", "letter")
SPLIT_SIZES = {"train": 432_000, "val": 2_400, "test": 45_600}
N_TOTAL = sum(SPLIT_SIZES.values())  # 480,000
SPLIT_OFFSETS = {"train": 0, "val": 432_000, "test": 434_400}  # start in the shuffled balancing table
SEQ_LEN = 17
TARGET_WINDOW = 8
INSTRUCTION_WINDOW = 8
QUERY_POS = 16
MAX_HOPS = 4
PAD = "<pad>"

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_TASK_IDS = {"number": 0, "letter": 1}


# -----------------------------------------------------------------------------
# Samples and vocabularies

@dataclass(frozen=True)
class Sample:
    """One prompt with its answer.

    ``chain`` lists the positions the rule visits: it starts at the query (the
    last position), passes through the instruction tokens it reads, and ends at
    the answer's position in the target window; ``len(chain) == hops + 1``.
    """

    tokens: tuple[str, ...]
    answer: str
    hops: int
    chain: tuple[int, ...]

    @property
    def answer_pos(self) -> int:
        return self.chain[-1]

    def text(self) -> str:
        """Readable one-liner, e.g. ``'n h n v h y r s 6 3 2 7 7 8 4 7 2 → n'``."""
        return " ".join(self.tokens) + " → " + self.answer


class Vocab:
    """A fixed token list; id 0 is the padding token ``<pad>``."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens: tuple[str, ...] = (PAD, *tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.stoi) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, tok: object) -> bool:
        return tok in self.stoi

    def encode(self, toks: Iterable[str]) -> list[int]:
        out = []
        for t in toks:
            if t not in self.stoi:
                raise ValueError(f"unknown token {t!r}")
            out.append(self.stoi[t])
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} out of range for a vocabulary of size {len(self.tokens)}")
            out.append(self.tokens[i])
        return out

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"


def _u_to_int(u: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Map uniforms in [0, 1) to integers in [0, n) (``n`` may vary per row)."""
    return np.minimum(np.floor(u * n).astype(np.int64), np.asarray(n) - 1)


def _pick_intermediates(u: np.ndarray, hops: np.ndarray) -> np.ndarray:
    """Choose ``hops - 1`` distinct instruction positions per row (no replacement).

    ``u`` has shape (N, 8): one random key per instruction position 8..15. The
    positions with the ``hops - 1`` smallest keys are chosen, which is a uniform
    draw without replacement. Returns a boolean mask of shape (N, 8).
    """
    rank = np.argsort(np.argsort(u, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < (hops[:, None] - 1)


# -----------------------------------------------------------------------------
# Tasks

class Task:
    """Shared interface of the two tasks. Use :func:`get_task` to get one."""

    name: str
    vocab: Vocab
    letters: tuple[str, ...]   # ALPH
    numbers: tuple[str, ...]   # INT, as strings
    answer_tokens: tuple[str, ...]  # every token that can be an answer
    n_draws: int               # uniforms consumed per sample
    n_combos: int              # balanced (target_pos, answer, hops) combinations

    # --- balancing ------------------------------------------------------------
    def combo(self, code: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode combination codes into (target_pos, answer index, hops)."""
        code = np.asarray(code, dtype=np.int64)
        n_ans = len(self.answer_tokens)
        hops = code % MAX_HOPS + 1
        ans = (code // MAX_HOPS) % n_ans
        tp = code // (MAX_HOPS * n_ans)
        return tp, ans, hops

    # --- generation -----------------------------------------------------------
    def sample(self, rng: np.random.Generator, target_pos: int, answer: str, hops: int) -> Sample:
        """Draw one prompt whose answer ``answer`` sits at ``target_pos`` after ``hops`` hops."""
        if not 0 <= int(target_pos) < TARGET_WINDOW:
            raise ValueError(f"target_pos {target_pos} not in 0..{TARGET_WINDOW - 1}")
        if not 1 <= int(hops) <= MAX_HOPS:
            raise ValueError(f"hops {hops} not in 1..{MAX_HOPS}")
        if answer not in self._answer_index:
            raise ValueError(f"answer {answer!r} is not a valid {self.name}-task answer")
        u = rng.random(self.n_draws)[None, :]
        x, chain = self._build(np.array([target_pos]), np.array([self._answer_index[answer]]),
                               np.array([hops]), u)
        c = tuple(int(p) for p in chain[0] if p >= 0)
        return Sample(tuple(self.vocab.decode(x[0])), answer, int(hops), c)

    def _build(self, tp: np.ndarray, ans: np.ndarray, hops: np.ndarray,
               u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised builder: returns token ids (N, 17) and chains (N, 5), padded with -1."""
        raise NotImplementedError

    # --- solving ----------------------------------------------------------------
    def solve(self, tokens: Sequence[str]) -> tuple[str, int, tuple[int, ...]]:
        """Follow the task's rule from the last token; return (answer, hops, chain)."""
        raise NotImplementedError

    # --- prompts ------------------------------------------------------------------
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

    def check_prompt(self, tokens: Sequence[str]) -> None:
        """ValueError unless ``tokens`` are tokens of this task laid out as a prompt (see :meth:`check_ids`)."""
        self.check_ids(self.vocab.encode(tokens))

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab={len(self.vocab)})"


class NumberTask(Task):
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
    n_draws = 24  # 8 position keys, 8 distractor offsets, 8 target letters

    def __init__(self) -> None:
        singles = list(string.ascii_lowercase)
        bigrams = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
        self.letters = tuple((singles + bigrams)[:120])  # a..z, aa..dp
        self.numbers = tuple(str(k) for k in range(1, 17))
        self.answer_tokens = self.letters
        self.vocab = Vocab(self.numbers + self.letters)
        self.n_combos = TARGET_WINDOW * len(self.letters) * MAX_HOPS  # 3,840
        self._answer_index = {t: i for i, t in enumerate(self.letters)}
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


class LetterTask(Task):
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
    n_draws = 49  # 8 hop-letter keys, 8 position keys, 16 instruction letters, 1 query letter, 16 target

    def __init__(self) -> None:
        self.letters = tuple("abcdefgh")
        self.numbers = tuple(str(k) for k in range(1, 9))
        self.target_tokens = tuple(a + w for a in self.letters for w in self.numbers)
        self.instruction_tokens = tuple(a + b for a in self.letters for b in self.letters)
        self.answer_tokens = self.target_tokens
        self.vocab = Vocab(self.target_tokens + self.instruction_tokens)
        self.n_combos = TARGET_WINDOW * len(self.target_tokens) * MAX_HOPS  # 2,048
        self._answer_index = {t: i for i, t in enumerate(self.target_tokens)}
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


_TASKS: dict[str, Task] = {}


def get_task(name: str | Task) -> Task:
    """Return the (shared) task object for ``"number"`` or ``"letter"``."""
    if isinstance(name, Task):
        return name
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASK_NAMES)}")
    if name not in _TASKS:
        _TASKS[name] = NumberTask() if name == "number" else LetterTask()
    return _TASKS[name]


# -----------------------------------------------------------------------------
# Data sets

@functools.lru_cache(maxsize=8)
def balance_table(task_name: str, seed: int) -> np.ndarray:
    """The shuffled list of 480,000 combination codes (decode with ``Task.combo``).

    Number: the 3,840 (target_pos, answer, hops) combinations, 125 times each.
    Letter: the 2,048 combinations 234 times each, plus 768 distinct ones drawn
    at random (so every combination appears 234 or 235 times).
    Train, val and test are consecutive slices of this table.
    """
    task = get_task(task_name)
    rng = np.random.default_rng([seed, _TASK_IDS[task.name], 99])
    reps, rest = divmod(N_TOTAL, task.n_combos)
    codes = np.tile(np.arange(task.n_combos, dtype=np.int32), reps)
    if rest:
        codes = np.concatenate([codes, rng.choice(task.n_combos, size=rest, replace=False).astype(np.int32)])
    codes = codes[rng.permutation(N_TOTAL)]
    codes.flags.writeable = False
    return codes


@functools.lru_cache(maxsize=64)
def _stream_state(task_name: str, seed: int, split: str) -> dict:
    return np.random.PCG64(np.random.SeedSequence([seed, _TASK_IDS[task_name], _SPLIT_IDS[split]])).state


class TaskDataset:
    """A lazily generated, deterministic split of one task.

    ``TaskDataset("number", "train")[i]`` builds sample ``i`` on the fly; the
    same (task, split, seed, i) always gives the same sample. ``size`` keeps the
    first ``size`` samples of the split.
    """

    def __init__(self, task: str | Task, split: str = "train", seed: int = 0, size: int | None = None):
        self.task = get_task(task)
        if split not in SPLIT_SIZES:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_SIZES)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        full = SPLIT_SIZES[split]
        if size is None:
            size = full
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= full:
            raise ValueError(f"size must be an integer in 1..{full} for split {split!r}, got {size!r}")
        self.split, self.seed, self.size = split, int(seed), int(size)
        self.offset = SPLIT_OFFSETS[split]
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.size

    def _codes(self) -> np.ndarray:
        return balance_table(self.task.name, self.seed)[self.offset:self.offset + self.size]

    def _index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for a data set of size {self.size}")
        return i

    def rng(self, i: int) -> np.random.Generator:
        """The random stream of sample ``i`` (the split's stream, advanced to that sample)."""
        bg = np.random.PCG64()
        bg.state = _stream_state(self.task.name, self.seed, self.split)
        bg.advance(self._index(i) * self.task.n_draws)
        return np.random.Generator(bg)

    def __getitem__(self, i: int) -> Sample:
        i = self._index(i)
        tp, ans, hops = self.task.combo(self._codes()[i])
        return self.task.sample(self.rng(i), int(tp), self.task.answer_tokens[int(ans)], int(hops))

    def __iter__(self):
        for i in range(self.size):
            yield self[i]

    def arrays(self, chunk: int = 65_536) -> dict[str, np.ndarray]:
        """All samples as arrays (memoised).

        Keys: ``x`` (N, 17) token ids, ``y`` (N,) answer ids, ``hops`` (N,),
        ``answer_pos`` (N,), and ``chain`` (N, 5) chain positions padded with -1.
        Row ``i`` equals ``self[i]`` encoded.
        """
        if self._arrays is None:
            tp, ans, hops = self.task.combo(self._codes())
            bg = np.random.PCG64()
            bg.state = _stream_state(self.task.name, self.seed, self.split)
            rng = np.random.Generator(bg)
            xs, chains = [], []
            for s in range(0, self.size, chunk):
                e = min(s + chunk, self.size)
                u = rng.random((e - s, self.task.n_draws))  # same stream, row i = sample i
                x, c = self.task._build(tp[s:e], ans[s:e], hops[s:e], u)
                xs.append(x)
                chains.append(c)
            x = np.concatenate(xs)
            ans_ids = np.array(self.task.vocab.encode(self.task.answer_tokens), dtype=np.int64)
            self._arrays = {
                "x": x,
                "y": ans_ids[ans],
                "hops": hops.astype(np.int64),
                "answer_pos": tp.astype(np.int64),
                "chain": np.concatenate(chains),
            }
            for v in self._arrays.values():
                v.flags.writeable = False
        return self._arrays

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (B, 17), answer ids (B,) and hop counts (B,) as LongTensors."""
        if self._arrays is not None:
            idx = np.asarray(indices, dtype=np.int64)
            if idx.size and (idx.min() < -self.size or idx.max() >= self.size):
                raise IndexError(f"batch index out of range for a data set of size {self.size}")
            a = self._arrays
            return (torch.from_numpy(a["x"][idx].copy()), torch.from_numpy(a["y"][idx].copy()),
                    torch.from_numpy(a["hops"][idx].copy()))
        # not memoised: build just these rows, vectorised (same result as to_tensors of self[i])
        idx = [self._index(i) for i in indices]
        if not idx:
            return to_tensors([], self.task.vocab)
        tp, ans, hops = self.task.combo(self._codes()[idx])
        u = np.stack([self.rng(i).random(self.task.n_draws) for i in idx])
        x, _ = self.task._build(tp, ans, hops, u)
        ans_ids = np.array(self.task.vocab.encode(self.task.answer_tokens), dtype=np.int64)
        return torch.from_numpy(x), torch.from_numpy(ans_ids[ans]), torch.from_numpy(hops.astype(np.int64))

    def fingerprint(self, n: int = 200) -> str:
        """sha256 of the encoded first ``n`` samples (tokens, answer, hops)."""
        h = hashlib.sha256()
        for i in range(min(n, self.size)):
            s = self[i]
            h.update(np.array(self.task.vocab.encode(s.tokens + (s.answer,)) + [s.hops], dtype=np.int64).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"TaskDataset({self.task.name!r}, split={self.split!r}, seed={self.seed}, size={self.size})"


def to_tensors(samples: Sequence[Sample], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode samples of equal length as (x (B, L), y (B,), hops (B,)) LongTensors."""
    lengths = {len(s.tokens) for s in samples}
    if len(lengths) > 1:
        raise ValueError(f"samples have different lengths {sorted(lengths)}")
    L = lengths.pop() if lengths else SEQ_LEN
    x = torch.tensor([vocab.encode(s.tokens) for s in samples], dtype=torch.long).reshape(len(samples), L)
    y = torch.tensor(vocab.encode(s.answer for s in samples), dtype=torch.long)
    hops = torch.tensor([s.hops for s in samples], dtype=torch.long)
    return x, y, hops


def balanced_eval_set(task: str | Task, n: int, seed: int = 0, split: str = "val") -> list[Sample]:
    """A fixed evaluation set of ``n`` prompts with exactly ``n / 4`` of each hop count.

    The prompts are the first ones of each hop count in ``split`` (held out by
    default), so the set is the same on every call and machine.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % MAX_HOPS:
        raise ValueError(f"n must be a positive multiple of {MAX_HOPS}, got {n!r}")
    ds = TaskDataset(task, split=split, seed=seed)
    hops = ds.arrays()["hops"]
    per = n // MAX_HOPS
    picked = []
    for h in range(1, MAX_HOPS + 1):
        idx = np.flatnonzero(hops == h)[:per]
        if len(idx) < per:
            raise ValueError(f"n={n} needs {per} samples with {h} hops but split {split!r} has only {len(idx)}")
        picked.extend(int(i) for i in idx)
    return [ds[i] for i in sorted(picked)]
