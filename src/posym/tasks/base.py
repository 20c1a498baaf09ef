"""The task protocol, the task registry and the deterministic data sets every task shares.

A task is one subclass of :class:`Task` in its own module of this package, registered with
:func:`register_task` (``number.py`` and ``letter.py`` are the two tasks of Paper 2; every module of
``posym.tasks`` is imported when the package is, so a new task is one new file). A task says:

* its name, a small integer ``task_id`` (part of every random stream, so it must never change once
  results exist), a colour and a short label for figures;
* its vocabulary, its answer tokens and the length ``seq_len`` of its training prompts;
* how many answer positions (``n_positions``) and hop counts (``max_hops``) it balances over;
* a vectorised builder ``_build(answer_pos, answer_index, hops, u) -> (token ids, chain)`` that turns a
  balanced combination and a fixed-length vector of ``n_draws`` uniforms into a prompt;
* a solver ``solve(tokens) -> (answer, hops, chain)`` that reads a prompt the way the rule says,
  written independently of the builder (the tests check one against the other);
* optionally, the teaching-scale architecture (``teaching_model``) and recipe (``teaching_train``: steps,
  batch size, ...) and a way to lengthen a prompt
  without changing its answer (``extend_target_window``).

Data set construction (the same for every task). Every (answer position, answer, hop count)
combination appears equally often; the list of combinations is shuffled once with the base seed and
cut, in order, into train / val / test (432,000 / 2,400 / 45,600). Each sample then gets its own
random stream, fixed by (seed, task, split, index), so any sample can be rebuilt on its own, in any
process, in O(1).

Implementation note. A sample is a pure function of its combination and a fixed-length vector of
uniform random numbers (``Task.n_draws`` of them). For one sample the vector comes from
``rng.random(n_draws)``; for a whole split it is the matrix ``rng.random((N, n_draws))`` drawn from the
same stream, whose row ``i`` is exactly what sample ``i`` would draw. The builders are vectorised over
that first axis, so ``TaskDataset.arrays()`` on the 432k train split takes a few seconds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

SPLIT_SIZES = {"train": 432_000, "val": 2_400, "test": 45_600}
N_TOTAL = sum(SPLIT_SIZES.values())  # 480,000
SPLIT_OFFSETS = {"train": 0, "val": 432_000, "test": 434_400}  # start in the shuffled balancing table
PAD = "<pad>"

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


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


# -----------------------------------------------------------------------------
# The task protocol and the registry

class Task:
    """What every task provides (see the module docstring). Use :func:`get_task` to get one."""

    name: str
    task_id: int               # part of every random stream: never change it once results exist
    colour: str = "#7F7F7F"    # figures (Okabe-Ito colours: see posym.plotting)
    label: str = ""            # e.g. "Number (positional)"
    vocab: Vocab
    answer_tokens: tuple[str, ...]  # every token that can be an answer
    n_draws: int               # uniforms consumed per sample
    seq_len: int               # length of a training prompt
    n_positions: int           # answer positions the data set balances over
    max_hops: int              # hop counts 1..max_hops
    teaching_model: dict = {}  # model overrides of the teaching scale (posym.train.TrainConfig.teaching)
    teaching_train: dict = {}  # recipe overrides of the teaching scale (e.g. steps, batch_size), same place

    @property
    def n_combos(self) -> int:
        """Balanced (answer position, answer, hops) combinations."""
        return self.n_positions * len(self.answer_tokens) * self.max_hops

    @functools.cached_property
    def _answer_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.answer_tokens)}

    # --- balancing ------------------------------------------------------------
    def combo(self, code: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode combination codes into (answer position, answer index, hops)."""
        code = np.asarray(code, dtype=np.int64)
        n_ans = len(self.answer_tokens)
        hops = code % self.max_hops + 1
        ans = (code // self.max_hops) % n_ans
        tp = code // (self.max_hops * n_ans)
        return tp, ans, hops

    # --- generation -----------------------------------------------------------
    def sample(self, rng: np.random.Generator, target_pos: int, answer: str, hops: int) -> Sample:
        """Draw one prompt whose answer ``answer`` sits at answer position ``target_pos`` after ``hops`` hops."""
        if not 0 <= int(target_pos) < self.n_positions:
            raise ValueError(f"target_pos {target_pos} not in 0..{self.n_positions - 1}")
        if not 1 <= int(hops) <= self.max_hops:
            raise ValueError(f"hops {hops} not in 1..{self.max_hops}")
        if answer not in self._answer_index:
            raise ValueError(f"answer {answer!r} is not a valid {self.name}-task answer")
        u = rng.random(self.n_draws)[None, :]
        x, chain = self._build(np.array([target_pos]), np.array([self._answer_index[answer]]),
                               np.array([hops]), u)
        c = tuple(int(p) for p in chain[0] if p >= 0)
        return Sample(tuple(self.vocab.decode(x[0])), answer, int(hops), c)

    def _build(self, tp: np.ndarray, ans: np.ndarray, hops: np.ndarray,
               u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised builder: token ids (N, seq_len) and chains (N, max_hops + 1) padded with -1.

        ``tp``, ``ans`` and ``hops`` (N,) are the combination of each row (answer position, index into
        ``answer_tokens``, hop count); ``u`` (N, n_draws) the row's uniforms in [0, 1)."""
        raise NotImplementedError

    # --- solving ----------------------------------------------------------------
    def solve(self, tokens: Sequence[str]) -> tuple[str, int, tuple[int, ...]]:
        """Follow the task's rule; return (answer, hops, chain)."""
        raise NotImplementedError

    # --- prompts ------------------------------------------------------------------
    def check_ids(self, ids) -> None:
        """ValueError unless every id of ``ids`` (shape (batch, seq) or (seq,)) is a token of this task.

        Tasks with a fixed layout override this to also check where each kind of token sits."""
        t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(np.asarray(ids))
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(self.vocab)):
            bad = int(t[(t < 0) | (t >= len(self.vocab))].flatten()[0])
            raise ValueError(f"not a {self.name}-task prompt: token id {bad} is outside its vocabulary "
                             f"of {len(self.vocab)} tokens")

    @staticmethod
    def _depth_plan(n, depths, longest: int):
        """For test-time prompts, ``n`` per depth in ``depths`` (each in 1..``longest``): ``(hops, ans, idx)``, the
        depth of every prompt, its answer index (alternating 0/1) and its index within its depth; ValueError
        naming the bad argument."""
        depths = [int(d) for d in depths]
        if isinstance(n, bool) or int(n) != n or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not depths or min(depths) < 1 or max(depths) > longest:
            raise ValueError(f"depths must be in 1..{longest}, got {depths}")
        hops = np.repeat(depths, n)
        return hops, np.arange(len(hops)) % 2, np.tile(np.arange(n), len(depths))

    def _samples(self, x, chain, ans, hops) -> list[Sample]:
        """Built rows (token ids ``x``, chains padded with -1) as :class:`Sample` objects."""
        return [Sample(tuple(self.vocab.decode(x[r])), self.answer_tokens[int(ans[r])], int(hops[r]),
                       tuple(int(p) for p in chain[r] if p >= 0)) for r in range(len(x))]

    def _check_last_two(self, ids, is_bad, why: str) -> None:
        """ValueError naming the first prompt of ``ids`` whose last two token ids ``is_bad`` rejects
        (``is_bad``: (batch, 2) array -> (batch,) bools); ``why`` says what such a prompt lacks."""
        t = np.asarray(ids)
        if t.ndim == 1:
            t = t[None]
        if t.ndim == 2 and t.size and t.shape[1] >= 2:
            bad = is_bad(t[:, -2:])
            if bad.any():
                raise ValueError(f"not a {self.name}-task prompt: prompt {int(np.flatnonzero(bad)[0])} {why}")

    def check_prompt(self, tokens: Sequence[str]) -> None:
        """ValueError unless ``tokens`` are tokens of this task laid out as a prompt (see :meth:`check_ids`)."""
        self.check_ids(self.vocab.encode(tokens))

    def extend_target_window(self, sample: Sample, extra: int, rng: np.random.Generator) -> Sample:
        """A longer prompt with the same answer (length generalisation); tasks that support it override this."""
        raise ValueError(f"the {self.name} task has no way to lengthen its prompts")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab={len(self.vocab)})"


_REGISTRY: dict[str, type[Task]] = {}
_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make a task available by name (``get_task(cls.name)``); usable as a class decorator.

    Refuses a second task with the same name or the same ``task_id`` (the id seeds the data), and a
    task defined in a module of this package whose module is not named as the task (the command line
    finds the tasks by their module names, without importing them)."""
    for attr in ("name", "task_id"):
        if not hasattr(cls, attr):
            raise ValueError(f"task class {cls.__name__} has no {attr!r}")
    pkg, _, mod = cls.__module__.rpartition(".")
    if pkg == __name__.rpartition(".")[0] and mod != cls.name:
        raise ValueError(f"task {cls.name!r} must be defined in posym/tasks/{cls.name}.py, not {mod}.py")
    for other in _REGISTRY.values():
        if other is cls:
            return cls
        if other.name == cls.name:
            raise ValueError(f"a task named {cls.name!r} is already registered ({other.__name__})")
        if other.task_id == cls.task_id:
            raise ValueError(f"task_id {cls.task_id} of {cls.name!r} is already used by {other.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Forget a registered task (for tests that register a toy task)."""
    _REGISTRY.pop(name, None)
    _TASKS.pop(name, None)
    balance_table.cache_clear()
    _stream_state.cache_clear()


def task_names() -> tuple[str, ...]:
    """The registered tasks, in the order of their ``task_id``."""
    return tuple(sorted(_REGISTRY, key=lambda n: _REGISTRY[n].task_id))


def get_task(name: str | Task) -> Task:
    """Return the (shared) task object registered under ``name``."""
    if isinstance(name, Task):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(task_names())}")
    if name not in _TASKS:
        _TASKS[name] = _REGISTRY[name]()
    return _TASKS[name]


# -----------------------------------------------------------------------------
# Data sets

@functools.lru_cache(maxsize=8)
def balance_table(task_name: str, seed: int) -> np.ndarray:
    """The shuffled list of 480,000 combination codes (decode with ``Task.combo``).

    Each combination appears ``N_TOTAL // n_combos`` times, plus the remainder drawn at random without
    replacement (Number: 3,840 combinations, 125 times each; Letter: 2,048 combinations 234 or 235 times).
    Train, val and test are consecutive slices of this table.
    """
    task = get_task(task_name)
    rng = np.random.default_rng([seed, task.task_id, 99])
    reps, rest = divmod(N_TOTAL, task.n_combos)
    codes = np.tile(np.arange(task.n_combos, dtype=np.int32), reps)
    if rest:
        codes = np.concatenate([codes, rng.choice(task.n_combos, size=rest, replace=False).astype(np.int32)])
    codes = codes[rng.permutation(N_TOTAL)]
    codes.flags.writeable = False
    return codes


@functools.lru_cache(maxsize=64)
def _stream_state(task_name: str, seed: int, split: str) -> dict:
    return np.random.PCG64(np.random.SeedSequence([seed, get_task(task_name).task_id, _SPLIT_IDS[split]])).state


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

        Keys: ``x`` (N, seq_len) token ids, ``y`` (N,) answer ids, ``hops`` (N,),
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

    def hop_counts(self) -> np.ndarray:
        """The hop count of every sample (``arrays()["hops"]``), decoded from the combination codes without
        building the samples."""
        if self._arrays is not None:
            return self._arrays["hops"]
        hops = self.task.combo(self._codes())[2].astype(np.int64)
        hops.flags.writeable = False
        return hops

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (B, seq_len), answer ids (B,) and hop counts (B,) as LongTensors."""
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

    def __repr__(self) -> str:
        return f"TaskDataset({self.task.name!r}, split={self.split!r}, seed={self.seed}, size={self.size})"


def to_tensors(samples: Sequence[Sample], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode samples of equal length as (x (B, L), y (B,), hops (B,)) LongTensors."""
    lengths = {len(s.tokens) for s in samples}
    if len(lengths) > 1:
        raise ValueError(f"samples have different lengths {sorted(lengths)}")
    L = lengths.pop() if lengths else 0
    x = torch.tensor([vocab.encode(s.tokens) for s in samples], dtype=torch.long).reshape(len(samples), L)
    y = torch.tensor(vocab.encode(s.answer for s in samples), dtype=torch.long)
    hops = torch.tensor([s.hops for s in samples], dtype=torch.long)
    return x, y, hops


def balanced_eval_set(task: str | Task, n: int, seed: int = 0, split: str = "val") -> list[Sample]:
    """A fixed evaluation set of ``n`` prompts with exactly ``n / max_hops`` of each hop count.

    The prompts are the first ones of each hop count in ``split`` (held out by
    default), so the set is the same on every call and machine.
    """
    max_hops = get_task(task).max_hops
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % max_hops:
        raise ValueError(f"n must be a positive multiple of {max_hops}, got {n!r}")
    ds = TaskDataset(task, split=split, seed=seed)
    hops = ds.hop_counts()
    per = n // max_hops
    picked = []
    for h in range(1, max_hops + 1):
        idx = np.flatnonzero(hops == h)[:per]
        if len(idx) < per:
            raise ValueError(f"n={n} needs {per} samples with {h} hops but split {split!r} has only {len(idx)}")
        picked.extend(int(i) for i in idx)
    return [ds[i] for i in sorted(picked)]
