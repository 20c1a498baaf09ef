"""Paper 1's canonical tasks on one-layer attention-only RoPE heads restricted to chosen frequencies.

Paper 1 (Urrutia et al. 2025) trains one-layer attention-only Transformers whose single
head may only use some RoPE frequencies, on three tasks:

* **Index** (purely positional): copy the symbol a given number of positions back;
* **Retrieval** (purely symbolic): name the value bound to the queried key;
* **Partial induction** (mixed): like Retrieval, but keys repeat and the *most recent* pair wins.

It reports that Index is solved only with high frequencies (low index) and turns U-shaped in the answer
position at low ones; that Retrieval needs low frequencies and turns inverse-U-shaped at frequencies that are
not low enough; and that partial induction needs two angles, one (near) zero for the content match and one
moderate angle for recency.  Sizes, token formats, base and grid are not in the sources we have: everything
below is our reconstruction and the docstrings say what was chosen and why.

Token conventions
-----------------
The query is last and the answer is one token.  Index answers the symbol itself.  Retrieval and partial induction
prompts are atomic key--value pair tokens (like the letter task's ``"c2"``) and answer the *value* alone, as a
token of its own that never occurs in prompts.  Answering the whole pair token (as Paper 2's letter prompt
``a4 b3 c2 d1 fc -> c2`` does) would let a one-layer model cheat on Retrieval: with distinct keys the pair
``(k, v)`` is the only pair of key ``k`` in the prompt, so a head that attends *uniformly* passes a bag of all
pairs, and a linear read-out scoring "key equals the query" plus "this pair is in the bag" finds the answer
without ever selecting a position (84-100% accuracy at every frequency we tried, one seed, 600 steps).  Naming the value
bound to the key is a bilinear function of query and bag, which the residual sum ``embed(query) + attention``
followed by a linear unembedding cannot compute unless attention itself selects the pair -- the setting of
Paper 1's theorems (identity value map, projection read-out).  Index has no such shortcut (the bag of symbols
does not say which symbol sits at the queried offset).

Frequency specs
---------------
A head is described by a *spec*: an ``int`` k (only RoPE frequency k of the ladder ``g_k = base^(-2k/d_head)``,
0-based, ``k = 0`` fastest), a tuple of ints (several frequencies, e.g. a band), or ``"nope"`` (no RoPE at all:
every dimension of the head is unrotated, the "angle 0" reference).  With ``zero_channel=True`` the slowest
frequency of the ladder (index ``d_head/2 - 1``; angle 1.3e-4 rad at d_head 64, base 1e4, i.e. < 0.005 rad of
rotation across a 32-token prompt) is added to the mask: a 2-D channel that is NoPE in all but name, which is
Paper 1's ``theta_1 = 0`` channel for partial induction.  Masked frequencies are zeroed in q and k by
:class:`posym.model.ModelConfig`'s ``freq_mask``; the model is otherwise identical across specs.

What the committed sweep shows (``data/canonical/README.md``, 3 seeds, 600 steps): Index is solved by fast
frequencies and becomes U-shaped as they slow (k = 8: 1.00 at both ends, ~0.4 inside), with one shape the paper
does not mention -- worse *ends* at k = 4, whose period (~20 positions) aliases far offsets; Retrieval is solved
by slow frequencies and becomes inverse-U-shaped as they speed up (k = 8: 0.52 / 0.47 at the ends, 0.75 in the
middle); partial induction reaches at most 0.50 with one angle and 0.88 with a moderate angle plus the zero
channel.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .metrics import model_scores, scores_table
from .model import GPTJ, ModelConfig
from .rope import rope_angles
from .train import lr_lambda, make_optimizer

TASKS = ("index", "retrieval", "partial_induction")
_TASK_CODE = {name: i for i, name in enumerate(TASKS)}


class Batch(NamedTuple):
    """Prompts ``x`` (N, T), answers ``y`` (N,) and the position of the answer token ``answer_pos`` (N,)."""
    x: torch.Tensor
    y: torch.Tensor
    answer_pos: torch.Tensor


def _check_int(name: str, v, lo: int):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _rng(seed, task: str, stream: int) -> np.random.Generator:
    _check_int("seed", seed, 0)
    return np.random.default_rng([int(seed), _TASK_CODE[task], int(stream)])


def _batch(x: np.ndarray, y: np.ndarray, pos: np.ndarray) -> Batch:
    return Batch(torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)),
                 torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
                 torch.from_numpy(np.ascontiguousarray(pos, dtype=np.int64)))


# ---------------------------------------------------------------------------------------------
# The three tasks
# ---------------------------------------------------------------------------------------------
def index_task(n: int, length: int = 24, n_symbols: int = 32, seed: int = 0, stream: int = 0) -> Batch:
    """Index, relative form: ``s_1 ... s_m <q>`` -> the symbol ``q`` positions before the query.

    ``m = length - 1`` symbols uniform over ``n_symbols``; ``q`` uniform in ``1..m`` (so the answer position
    ``m - q`` is uniform over ``0..m-1`` and accuracy can be reported per position).  This is Paper 2's Index
    (Def. F.1: a number ``i`` at position ``p`` reads position ``p - i``) with the query last.

    Tokens: symbols ``0..n_symbols-1``; offset ``q`` is token ``n_symbols + q - 1``.  Vocabulary
    ``n_symbols + length - 1`` (:func:`vocab_size`).
    """
    _check_int("n", n, 0)
    _check_int("length", length, 2)
    _check_int("n_symbols", n_symbols, 1)
    rng = _rng(seed, "index", stream)
    m = length - 1
    sym = rng.integers(0, n_symbols, size=(n, m))
    q = rng.integers(1, m + 1, size=n)
    pos = m - q
    x = np.concatenate([sym, (n_symbols + q - 1)[:, None]], axis=1)
    return _batch(x, sym[np.arange(n), pos], pos)


def pair_token(key, value, n_values: int):
    """Token id of the atomic key--value pair (Retrieval / partial induction): ``key * n_values + value``."""
    return key * n_values + value


def query_token(key, n_keys: int, n_values: int):
    """Token id of the query for ``key``: ``n_keys * n_values + key``."""
    return n_keys * n_values + key


def value_token(value, n_keys: int, n_values: int):
    """Token id of the answer ``value`` (never in prompts): ``n_keys * n_values + n_keys + value``."""
    return n_keys * n_values + n_keys + value


def retrieval_task(n: int, length: int = 17, n_keys: int = 16, n_values: int = 4, seed: int = 0,
                   stream: int = 0) -> Batch:
    """Retrieval: ``(k_1 v_1) ... (k_m v_m) <k>`` with distinct keys -> the value token of the pair with key ``k``.

    ``m = length - 1`` atomic pair tokens (like the letter task's ``"c2"``); the keys are ``m`` distinct keys out of
    ``n_keys`` (a random injection), values iid uniform over ``n_values``; the queried pair's position is uniform
    over ``0..m-1``.  The answer is the value, not the pair token: see the module docstring (the pair token
    could be produced without selecting any position).  Chance level is ``1 / n_values``.

    Tokens: pair ``(k, v)`` is :func:`pair_token`, the query :func:`query_token`, the answer :func:`value_token`;
    vocabulary ``n_keys * n_values + n_keys + n_values``.
    """
    _check_int("n", n, 0)
    _check_int("length", length, 2)
    _check_int("n_values", n_values, 1)
    m = length - 1
    if not isinstance(n_keys, (int, np.integer)) or n_keys < m:
        raise ValueError(f"n_keys must be an integer >= length - 1 = {m} (keys are distinct), got {n_keys!r}")
    rng = _rng(seed, "retrieval", stream)
    keys = np.argsort(rng.random((n, n_keys)), axis=1)[:, :m]  # m distinct keys per prompt, random order
    vals = rng.integers(0, n_values, size=(n, m))
    pos = rng.integers(0, m, size=n)
    pairs = pair_token(keys, vals, n_values)
    rows = np.arange(n)
    x = np.concatenate([pairs, query_token(keys[rows, pos], n_keys, n_values)[:, None]], axis=1)
    return _batch(x, value_token(vals[rows, pos], n_keys, n_values), pos)


def partial_induction_task(n: int, length: int = 17, n_keys: int = 8, n_values: int = 4, seed: int = 0,
                           stream: int = 0) -> Batch:
    """Partial induction: pairs with repeating keys, then ``<k>`` -> the most recent pair whose key is ``k``.

    Construction, so that recency is always needed and the answer position is uniform over ``1..m-1``:

    * the answer position ``p`` is uniform over ``1..m-1`` and an earlier occurrence ``e`` of the same key is
      placed uniformly in ``0..p-1`` (so the queried key occurs at least twice);
    * every other pair before ``p`` has a key uniform over all ``n_keys`` keys (more copies of the queried key
      are allowed), every pair after ``p`` a key other than the queried one;
    * values are uniform, except that every earlier pair with the queried key gets a value different from the
      answer's, so reading any earlier occurrence is always wrong.

    Tokens and answer (the value) as in :func:`retrieval_task`.  Needs ``length >= 3``, ``n_keys >= 2``, ``n_values >= 2``.
    """
    _check_int("n", n, 0)
    _check_int("length", length, 3)
    _check_int("n_keys", n_keys, 2)
    _check_int("n_values", n_values, 2)
    m = length - 1
    rng = _rng(seed, "partial_induction", stream)
    rows = np.arange(n)
    cols = np.arange(m)[None, :]
    p = rng.integers(1, m, size=n)
    e = np.floor(rng.random(n) * p).astype(np.int64)  # uniform in 0..p-1
    a = rng.integers(0, n_keys, size=n)
    before = rng.integers(0, n_keys, size=(n, m))
    after = rng.integers(0, n_keys - 1, size=(n, m))
    after = after + (after >= a[:, None])  # uniform over keys != a
    keys = np.where(cols < p[:, None], before, after)
    keys[rows, p] = a
    keys[rows, e] = a
    vals = rng.integers(0, n_values, size=(n, m))
    v = vals[rows, p]
    other = (v[:, None] + 1 + rng.integers(0, n_values - 1, size=(n, m))) % n_values  # uniform over values != v
    clash = (keys == a[:, None]) & (cols < p[:, None])
    vals = np.where(clash, other, vals)
    pairs = pair_token(keys, vals, n_values)
    x = np.concatenate([pairs, query_token(a, n_keys, n_values)[:, None]], axis=1)
    return _batch(x, value_token(v, n_keys, n_values), p)


_DEFAULTS = {
    "index": dict(length=24, n_symbols=32),
    "retrieval": dict(length=17, n_keys=16, n_values=4),
    "partial_induction": dict(length=17, n_keys=8, n_values=4),
}
_GENERATORS = {"index": index_task, "retrieval": retrieval_task, "partial_induction": partial_induction_task}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown canonical task {task!r}: choose one of {', '.join(TASKS)}")
    return task


def task_params(task: str, **overrides) -> dict:
    """The task's default sizes updated with ``overrides`` (unknown names raise ValueError)."""
    params = dict(_DEFAULTS[check_task(task)])
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for task {task!r}: it takes {sorted(params)}")
    params.update(overrides)
    return params


def generate(task: str, n: int, seed: int = 0, stream: int = 0, **params) -> Batch:
    """``n`` prompts of ``task`` (one of :data:`TASKS`); ``stream`` separates e.g. training from held-out data."""
    return _GENERATORS[check_task(task)](n, seed=seed, stream=stream, **task_params(task, **params))


def vocab_size(task: str, **params) -> int:
    p = task_params(task, **params)
    if task == "index":
        return p["n_symbols"] + p["length"] - 1
    return p["n_keys"] * p["n_values"] + p["n_keys"] + p["n_values"]


def chance_level(task: str, **params) -> float:
    """Accuracy of guessing the answer uniformly: ``1/n_symbols`` (Index) or ``1/n_values``."""
    p = task_params(task, **params)
    return 1.0 / (p["n_symbols"] if task == "index" else p["n_values"])


# ---------------------------------------------------------------------------------------------
# Frequency-restricted one-layer heads
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSpec:
    """Which RoPE frequencies the head may use: ``freqs`` (0-based indices), or ``nope`` (no RoPE at all)."""
    freqs: tuple[int, ...] = ()
    nope: bool = False

    @property
    def label(self) -> str:
        return "nope" if self.nope else "+".join(str(k) for k in self.freqs)


def head_spec(spec, n_freqs: int, zero_channel: bool = False) -> HeadSpec:
    """Parse a spec for a head with ``n_freqs`` RoPE frequencies: an index, a tuple of indices (a band: see
    :func:`band`), a string ``"k"`` / ``"k1+k2"``, ``"nope"``, or a :class:`HeadSpec`.  ``zero_channel`` adds the
    slowest frequency ``n_freqs - 1`` (a near-zero angle) to any spec but NoPE."""
    if isinstance(spec, HeadSpec):
        if spec.nope or not zero_channel:
            return spec
        spec = spec.freqs
    if isinstance(spec, str):
        if spec.lower() == "nope":
            return HeadSpec(nope=True)
        try:
            spec = tuple(int(s) for s in spec.split("+"))
        except ValueError:
            raise ValueError(f"unknown frequency spec {spec!r}: use an index, 'k1+k2', or 'nope'") from None
    ks = (spec,) if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) else tuple(spec)
    if not ks:
        raise ValueError("a frequency spec needs at least one frequency index (or 'nope')")
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k < n_freqs:
            raise ValueError(f"frequency index {k!r} out of range: the head has {n_freqs} frequencies (0..{n_freqs - 1})")
    if zero_channel:
        ks = ks + (n_freqs - 1,)
    return HeadSpec(freqs=tuple(sorted(set(int(k) for k in ks))))


def band(lo: int, hi: int) -> tuple[int, ...]:
    """The frequency indices ``lo..hi-1`` as one spec (a head restricted to a band of frequencies)."""
    return tuple(range(lo, hi))


@dataclass
class Settings:
    """Model and training settings of the canonical sweep (AdamW, linear warm-up/decay, final-token loss).

    Fresh prompts every step (no fixed training set, so no memorisation); held-out prompts come from another
    random stream of the same seed.
    """
    d_model: int = 64
    rope_base: float = 10000.0
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    eval_size: int = 4096
    score_size: int = 128
    zero_channel: bool = False
    task_params: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("d_model", "steps", "batch_size", "eval_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("score_size", self.score_size, 0)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (RoPE pairs), got {self.d_model}")
        self.betas = tuple(self.betas)

    @property
    def n_freqs(self) -> int:
        return self.d_model // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(d["betas"])
        return d


def model_config(task: str, spec, settings: Settings) -> ModelConfig:
    """A 1-layer, 1-head, attention-only ModelConfig (no dropout) whose head uses only ``spec``'s frequencies."""
    hs = head_spec(spec, settings.n_freqs, settings.zero_channel)
    common = dict(vocab_size=vocab_size(task, **settings.task_params), n_layer=1, n_head=1, d_model=settings.d_model,
                  attn_only=True, rope_base=settings.rope_base, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    if hs.nope:
        return ModelConfig(rotary_dim=0, **common)
    mask = [k in hs.freqs for k in range(settings.n_freqs)]
    return ModelConfig(rotary_dim=settings.d_model, freq_mask=tuple(mask), **common)


def angles(settings: Settings | None = None) -> np.ndarray:
    """The frequency ladder ``g_k`` (radians per position) of the sweep's head."""
    s = settings or Settings()
    return rope_angles(s.d_model, s.rope_base).numpy()


def train_head(task: str, spec, seed: int, settings: Settings, device: str = "cpu") -> tuple[GPTJ, dict]:
    """Train one frequency-restricted head on ``task`` with fresh prompts each step; returns (model, info)."""
    check_task(task)
    dev = torch.device(device)
    cfg = model_config(task, spec, settings)
    torch.manual_seed(seed)
    model = GPTJ(cfg).to(dev)
    opt = make_optimizer(model, settings)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(settings.warmup_steps, settings.steps))
    chunk = max(1, min(settings.steps, 65536 // settings.batch_size))  # steps of prompts generated at a time
    model.train()
    losses = []
    t0 = time.time()
    for c0 in range(0, settings.steps, chunk):
        nc = min(chunk, settings.steps - c0)
        b = generate(task, nc * settings.batch_size, seed=seed, stream=1 + c0 // chunk, **settings.task_params)
        xs = b.x.to(dev, non_blocking=True).view(nc, settings.batch_size, -1)
        ys = b.y.to(dev, non_blocking=True).view(nc, settings.batch_size)
        for s in range(nc):
            logits = model(xs[s], last_only=True)[:, -1]
            loss = F.cross_entropy(logits, ys[s])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.detach())
    tail = torch.stack(losses[-max(1, settings.steps // 10):]).mean().item()
    model.eval()
    return model, {"train_loss": tail, "train_s": time.time() - t0}


@torch.no_grad()
def evaluate_positions(model: GPTJ, batch: Batch, batch_size: int = 2048) -> pd.DataFrame:
    """Accuracy per answer position: columns answer_pos, distance (= query position - answer_pos), n, accuracy."""
    model.eval()
    dev = next(model.parameters()).device
    preds = [model(batch.x[i:i + batch_size].to(dev), last_only=True)[:, -1].argmax(-1).cpu()
             for i in range(0, len(batch.x), batch_size)]
    correct = (torch.cat(preds) == batch.y).numpy().astype(float)
    pos = batch.answer_pos.numpy()
    df = (pd.DataFrame({"answer_pos": pos, "correct": correct}).groupby("answer_pos")["correct"]
          .agg(n="size", accuracy="mean").reset_index())
    df["distance"] = batch.x.shape[1] - 1 - df["answer_pos"]
    return df[["answer_pos", "distance", "n", "accuracy"]]


def run_one(task: str, spec, seed: int, settings: Settings, device: str = "cpu") -> pd.DataFrame:
    """Train one head and evaluate it: the rows of :func:`sweep` for this (task, spec, seed)."""
    hs = head_spec(spec, settings.n_freqs, settings.zero_channel)
    model, info = train_head(task, hs, seed, settings, device)
    held = generate(task, settings.eval_size, seed=seed, stream=0, **settings.task_params)
    per = evaluate_positions(model, held)
    acc = float((per["accuracy"] * per["n"]).sum() / per["n"].sum())
    s_pos = s_sym = ent = float("nan")
    if settings.score_size:
        xs = held.x[:settings.score_size].to(next(model.parameters()).device)
        tab = scores_table(model_scores(model, xs), T=xs.shape[1])
        s_pos, s_sym, ent = (float(tab[c].iloc[0]) for c in ("pos", "sym", "entropy_norm"))
    g = angles(settings)
    swept = [k for k in hs.freqs if not (settings.zero_channel and k == settings.n_freqs - 1)] or list(hs.freqs)
    freq = -1 if hs.nope else min(swept)
    per.insert(0, "task", task)
    per.insert(1, "spec", hs.label)
    per.insert(2, "freq", freq)
    per.insert(3, "angle", 0.0 if hs.nope else float(g[freq]))
    per.insert(4, "zero_channel", bool(settings.zero_channel))
    per.insert(5, "seed", seed)
    per["chance"] = chance_level(task, **settings.task_params)
    per["acc_all"] = acc
    per["s_pos"], per["s_sym"], per["entropy_norm"] = s_pos, s_sym, ent
    per["train_loss"], per["train_s"] = info["train_loss"], info["train_s"]
    per["steps"] = settings.steps
    return per


def _run_job(job) -> pd.DataFrame:
    task, spec, seed, settings, device, threads = job
    if threads:
        torch.set_num_threads(threads)
    return run_one(task, spec, seed, settings, device)


def sweep(task: str, freqs: Sequence, seeds: Sequence[int], steps: int | None = None, settings: Settings | None = None,
          device: str = "cpu", workers: int = 1, threads: int | None = 1, progress: bool = False,
          **overrides) -> pd.DataFrame:
    """Train one head per (frequency spec, seed) on ``task`` and return a tidy long table.

    One row per (spec, seed, answer position), with columns ``task, spec, freq, angle, zero_channel, seed,
    answer_pos, distance, n, accuracy`` (accuracy at that answer position) and the model-level columns
    ``chance`` (uniform-guess accuracy), ``acc_all`` (overall held-out accuracy), ``s_pos, s_sym`` (the trained head's scores, :mod:`posym.metrics`,
    on ``score_size`` held-out prompts), ``entropy_norm``, ``train_loss``, ``train_s``, ``steps``.  ``freq`` is the
    swept 0-based index (the fastest allowed one, not counting the zero channel), ``-1`` for NoPE; ``angle`` its
    ``g_k`` (0 for NoPE).  :func:`model_table` gives one row per trained head.

    ``freqs``: specs as in :func:`head_spec`.  ``settings``/``overrides``: :class:`Settings` fields.  ``workers``
    > 1 runs jobs in that many processes (spawned, so ``device="cuda"`` works), each with ``threads`` threads.
    """
    check_task(task)
    settings = replace(settings or Settings(), **overrides)
    if steps is not None:
        settings = replace(settings, steps=steps)
    task_params(task, **settings.task_params)  # validate early
    specs = [head_spec(f, settings.n_freqs, settings.zero_channel) for f in freqs]
    seeds = list(seeds)
    for s in seeds:
        _check_int("seed", s, 0)
    jobs = [(task, hs, s, settings, device, threads) for hs in specs for s in seeds]
    return run_jobs(jobs, workers=workers, progress=progress)


def run_jobs(jobs: list, workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """Run ``(task, spec, seed, settings, device, threads)`` jobs, in-process or in spawned worker processes."""
    if workers <= 1 or len(jobs) <= 1:
        prev = torch.get_num_threads()
        try:
            frames = []
            for i, j in enumerate(jobs):
                frames.append(_run_job(j))
                if progress:
                    _report(i + 1, len(jobs), frames[-1])
        finally:
            torch.set_num_threads(prev)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            frames = []
            for i, df in enumerate(pool.imap(_run_job, jobs)):
                frames.append(df)
                if progress:
                    _report(i + 1, len(jobs), df)
    return pd.concat(frames, ignore_index=True)


def _report(i: int, n: int, df: pd.DataFrame):
    r = df.iloc[0]
    print(f"[{i}/{n}] {r['task']} spec={r['spec']} seed={r['seed']}: acc {r['acc_all']:.3f} "
          f"s_pos {r['s_pos']:.2f} s_sym {r['s_sym']:.2f} ({r['train_s']:.1f}s)", flush=True)


MODEL_COLS = ["task", "spec", "freq", "angle", "zero_channel", "seed", "steps", "chance", "acc_all", "s_pos", "s_sym",
              "entropy_norm", "train_loss", "train_s"]


def model_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trained head (drops the per-position columns of a :func:`sweep` table)."""
    cols = [c for c in MODEL_COLS if c in df.columns]
    return df[cols].drop_duplicates(["task", "spec", "zero_channel", "seed", "steps"]).reset_index(drop=True)


def position_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean accuracy per (task, spec, zero_channel, answer_pos)."""
    keys = ["task", "spec", "freq", "angle", "zero_channel", "answer_pos", "distance"]
    return df.groupby(keys, as_index=False)["accuracy"].mean()


def shape_summary(df: pd.DataFrame, edge: int = 3) -> pd.DataFrame:
    """Accuracy at the ends vs the middle of the answer-position curve, per (task, spec, zero_channel).

    ``ends`` = mean over the first and last ``edge`` answer positions, ``middle`` = mean over the middle
    ``2 * edge`` positions (seed-mean curves).  ``ends - middle`` > 0 is a U, < 0 an inverse U.
    """
    cur = position_curve(df)
    rows = []
    for key, g in cur.groupby(["task", "spec", "freq", "angle", "zero_channel"]):
        g = g.sort_values("answer_pos")
        a = g["accuracy"].to_numpy()
        mid = len(a) // 2
        ends = np.concatenate([a[:edge], a[-edge:]]).mean()
        middle = a[max(0, mid - edge):mid + edge].mean()
        rows.append(dict(zip(["task", "spec", "freq", "angle", "zero_channel"], key),
                         acc=a.mean(), ends=ends, middle=middle, ends_minus_middle=ends - middle))
    return pd.DataFrame(rows)
