"""Training with the paper's recipe, dense checkpoints, resume, and full provenance.

Recipe (Paper 2, App. C.2, and what the HF Trainer the authors used adds silently):
AdamW, lr 1e-4, betas (0.95, 0.999), weight decay 1e-4 (not on biases / LayerNorm), linear schedule
with 750 warm-up steps down to 0 at the last step, gradient clipping at norm 1.0, batch 64, loss on
the final token only, one epoch of the 432k training split (6,750 steps).

A run folder holds::

    config.json            TrainConfig + ModelConfig + config hash
    checkpoints/step_XXXXXXX.pt   model weights on the checkpoint schedule
    last.pt                everything needed to resume (weights, optimiser, scheduler, RNG, step, and the
                           checksum of every file written so far), with its own checksum inside;
                           the previous one is kept as last.prev.pt until the run is complete
    eval.csv               step x hop -> validation accuracy
    train_log.csv          step -> mean training loss since the previous log line, lr
    manifest.json          provenance (seed, git commit, versions, machine, wall time) + checksums

Checksums are those recorded when each file was written and read back, never a hash of the file as it is
when the run ends; a file damaged later is found by comparing, and :func:`repair_run` rebuilds it (training
is deterministic, so a checkpoint is rebuilt by training again from step 0 up to its step).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from . import io as pio
from .model import GPTJ, ModelConfig, check_fields
from .scales import SCALES
from .tasks import SPLIT_SIZES, TaskDataset, get_task, task_names

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class HalfGemmsInFloat32(TorchDispatchMode):
    """Half-precision matrix products computed by float32 BLAS on the half operands, rounded once to half.

    The products of two float16 numbers are exact in float32, so this is what a GPU's fp16 GEMM with float32
    accumulation returns (up to the order of the additions).  torch's own CPU half kernels give the same kind
    of result without a fast BLAS on CPUs that lack fp16 instructions, about 10x slower than float32; routed
    through float32 BLAS, an fp16 training step costs about 1.4x an fp32 one.  Covers ``mm``, ``addmm``, ``bmm``
    and ``baddbmm`` of the forward pass and of the backward pass (autocast's ``linear`` and ``matmul`` and the
    math attention of the CPU all come down to these); every other operation runs unchanged.
    """

    OPS = frozenset({torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                     torch.ops.aten.baddbmm.default})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS and args[-1].dtype == torch.float16:
            return func(*(a.float() if isinstance(a, torch.Tensor) else a for a in args), **kwargs).half()
        return func(*args, **kwargs)


def half_gemms(precision: str, device_type: str = "cpu"):
    """:class:`HalfGemmsInFloat32` for ``fp16`` on the CPU (wrap the forward *and* the backward pass in it);
    nothing otherwise (a GPU has fast half kernels)."""
    if precision == "fp16" and device_type == "cpu":
        return HalfGemmsInFloat32()
    return contextlib.nullcontext()


def precision_context(precision: str, device_type: str = "cpu"):
    """Autocast for ``precision`` (``fp32``: none).  Matmuls run in bf16/fp16, reductions and the loss in float32;
    the weights and the optimizer stay float32.  fp16 on the CPU also routes the half matmuls through float32
    BLAS (:func:`half_gemms`; a backward pass outside this block needs its own ``half_gemms``).  bf16 on the
    CPU uses torch's own kernels: fast only on CPUs with bf16 instructions."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return _entered_together(half_gemms(precision, device_type),
                             torch.autocast(device_type, dtype=PRECISIONS[precision]))


@contextlib.contextmanager
def _entered_together(*managers):
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


@dataclass
class TrainConfig:
    task: str = "number"
    seed: int = 0
    model: str = "paper"  # ModelConfig preset
    model_overrides: dict = field(default_factory=dict)
    steps: int = 6750
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-4
    warmup_steps: int = 750
    grad_clip: float = 1.0
    train_size: int | None = None  # None: the full 432k split
    eval_size: int = 2400  # validation samples for accuracy
    eval_batch_size: int = 600
    checkpoint_every: int = 50
    log_every: int = 10
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the forward pass (fp16 with a gradient scaler)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        get_task(self.task)  # ValueError naming the registered tasks
        for name in ("steps", "batch_size", "eval_size", "eval_batch_size", "checkpoint_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.train_size is not None and not 0 < self.train_size <= SPLIT_SIZES["train"]:
            raise ValueError(f"TrainConfig.train_size must be in [1, {SPLIT_SIZES['train']}], got {self.train_size}")
        if self.eval_size > SPLIT_SIZES["val"]:
            raise ValueError(f"TrainConfig.eval_size must be <= {SPLIT_SIZES['val']}, got {self.eval_size}")
        self.betas = tuple(self.betas)
        self.model_config()  # validates the preset and overrides

    # ---- presets ---------------------------------------------------------------------------
    @classmethod
    def paper(cls, task: str = "number", seed: int = 0, **kw) -> "TrainConfig":
        return cls(task=task, seed=seed, **kw)

    @classmethod
    def smoke(cls, task: str = "number", seed: int = 0, **kw) -> "TrainConfig":
        base = dict(model="smoke", steps=200, batch_size=32, lr=3e-3, warmup_steps=20, train_size=6400,
                    eval_size=400, checkpoint_every=50, log_every=10)
        base.update(kw)
        return cls(task=task, seed=seed, **base)

    @classmethod
    def teaching(cls, task: str = "number", seed: int = 0, **kw) -> "TrainConfig":
        """Laptop scale (chosen by scripts/teaching_search.py, table data/teaching/search.csv).

        One head per layer, d 64, AdamW lr 3e-3 with 200 warm-up steps, batch 128, 3,000 steps (384k fresh
        samples, less than one epoch), as in the paper otherwise; the architecture depends on the task:

        * Number: 7 layers, **attention only** (no MLP).  With MLPs, models this small solve the task with mixed
          early heads for most seeds; without them, layers 1-3 become pure positional and the last layers pure
          symbolic (5 of 5 seeds).  About 3.5 min of one-thread CPU.
        * Letter: 6 layers with MLPs (d_mlp 256).  Without MLPs its middle heads stay mixed; with them every
          head is symbolic (5 of 5 seeds).  About 6.5 min of one-thread CPU.

        The paper's model (``paper``) has MLPs and shows both at its scale.  See data/teaching/README.md.
        """
        base = dict(model="smoke", model_overrides=dict(get_task(task).teaching_model), steps=3000, batch_size=128, lr=3e-3, warmup_steps=200,
                    eval_size=800, checkpoint_every=100)
        base.update(get_task(task).teaching_train)  # a task's own recipe overrides (e.g. fewer steps)
        base.update(kw)
        return cls(task=task, seed=seed, **base)

    @classmethod
    def preset(cls, scale: str, task: str = "number", seed: int = 0, **kw) -> "TrainConfig":
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
        return getattr(cls, scale)(task=task, seed=seed, **kw)

    def model_config(self) -> ModelConfig:
        return ModelConfig.preset(self.model, get_task(self.task).vocab.__len__(), **self.model_overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(d["betas"])
        if d["precision"] == "fp32":  # the default is left out: configs (and hashes) of fp32 runs are unchanged
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_fields(cls, d)
        return cls(**d)

    def hash(self) -> str:
        """Identity of the run: everything that changes the numbers (not the device)."""
        d = self.to_dict()
        d.pop("device")
        return pio.config_hash({"train": d, "model": self.model_config().to_dict()})


def checkpoint_steps(total: int, every: int) -> list[int]:
    """Log-spaced early checkpoints (0, 1, 2, 5, 10, 20, ...) plus every ``every`` steps, plus the last."""
    steps = {0, total}
    s = 1
    while s < min(total, every):
        for m in (1, 2, 5):
            if m * s < min(total, every):
                steps.add(m * s)
        s *= 10
    steps.update(range(every, total, every))
    return sorted(steps)


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:  # same as transformers.get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def make_optimizer(model: GPTJ, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if (name.endswith("bias") or ".ln_" in name or name.startswith("ln_")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8)


@torch.no_grad()
def evaluate(model: GPTJ, x: torch.Tensor, y: torch.Tensor, hops: torch.Tensor, batch_size: int = 600) -> dict:
    """Accuracy overall and per hop count on the given tensors (final-token prediction)."""
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(model(x[i:i + batch_size], last_only=True)[:, -1].argmax(-1))
    model.train(was_training)
    correct = (torch.cat(preds) == y).float().cpu()
    out = {"all": correct.mean().item()}
    h = hops.cpu()
    for k in range(1, 5):
        m = h == k
        if m.any():
            out[str(k)] = correct[m].mean().item()
    return out


def ckpt_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}.pt"


def save_checkpoint(run_dir: Path, step: int, model: GPTJ, cfg: TrainConfig) -> dict:
    """Write the checkpoint of ``step``; returns its checksum as read back (``{"sha256", "bytes"}``)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return pio.atomic_torch_save(ckpt_path(run_dir, step), {"step": step, "config_hash": cfg.hash(),
                                                             "model_config": model.cfg.to_dict(), "state_dict": sd})


STATE_FORMAT = "posym-resume-1"


def save_state(path: Path, state: dict) -> dict:
    """Write a resume state with the sha256 of its contents inside (torch.load alone accepts a flipped byte)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return pio.atomic_torch_save(path, {"format": STATE_FORMAT, "step": state["step"],  # step: for a quick look
                                        "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload})


def load_state(path: Path, map_location="cpu") -> dict:
    """Read a resume state written by :func:`save_state` (or an older plain one); :class:`ResultError` if corrupt."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
        if isinstance(obj, dict) and obj.get("format") == STATE_FORMAT:
            payload = obj.get("payload")
            if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != obj.get("sha256"):
                raise pio.ResultError(f"resume state {path} is corrupt (its contents do not match its checksum)")
            obj = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except pio.ResultError:
        raise
    except Exception as e:  # noqa: BLE001
        raise pio.ResultError(f"resume state {path} is corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or not {"step", "model", "optimizer", "scheduler"} <= set(obj):
        raise pio.ResultError(f"resume state {path} is corrupt (not a posym resume state)")
    return obj


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if torch can train on it here, else ValueError naming ``option`` (before anything is written)."""
    if not isinstance(device, str) or not device.strip():
        raise ValueError(f"{option} must be cpu or cuda (or cuda:N), got {device!r}")
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{option} {device!r} is not a device: use cpu or cuda (or cuda:N)") from None
    if d.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"{option} {device}: this torch ({torch.__version__}) is built without CUDA; "
                             f"use --device cpu or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {device}: no CUDA GPU is visible (torch.cuda.is_available() is False); "
                             f"use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {device}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif d.type != "cpu":
        raise ValueError(f"{option} {device!r}: posym trains on cpu or cuda (or cuda:N)")
    return device


def check_manifest_entry(path: Path) -> None:
    """If the run folder's manifest (in this or the parent folder) lists ``path``, its checksum must match:
    torch.load accepts a checkpoint with a flipped byte in a tensor without complaint."""
    for folder in (path.parent, path.parent.parent):
        man = folder / "manifest.json"
        if man.exists():
            entry = pio.read_json(man).get("files", {}).get(path.relative_to(folder).as_posix())
            if entry is not None and pio.sha256_file(path) != entry["sha256"]:
                raise pio.ResultError(f"checkpoint {path} does not match its checksum in {man}: the file is corrupt "
                                      f"or was changed after the run finished")
            return


def load_checkpoint(path: str | Path, expect_hash: str | None = None, map_location="cpu",
                    into: GPTJ | None = None) -> tuple[GPTJ, dict]:
    """Load a checkpoint into a fresh model; refuses corrupt files and other configs with a clear error.

    ``into``: a model of the same config to load the weights into instead of building a new one (what a loop
    over a run's checkpoints wants: no initialisation per checkpoint).  The file is read with ``mmap``."""
    path = Path(path)
    if not path.exists():
        raise pio.ResultError(f"checkpoint {path} does not exist")
    check_manifest_entry(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001
        raise pio.ResultError(f"checkpoint {path} is corrupt or not a posym checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or "state_dict" not in obj or "model_config" not in obj:
        raise pio.ResultError(f"checkpoint {path} is not a posym checkpoint (missing state_dict/model_config)")
    if expect_hash is not None and obj.get("config_hash") != expect_hash:
        raise pio.ResultError(f"checkpoint {path} was made with config {obj.get('config_hash')}, "
                              f"but this run's config is {expect_hash}; refusing to mix runs")
    cfg = ModelConfig.from_dict(obj["model_config"])
    model = into if into is not None and into.cfg == cfg else GPTJ(cfg)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise pio.ResultError(f"checkpoint {path} does not match its own model config: {e}") from e
    task = checkpoint_task(path, obj)
    if task is not None and len(get_task(task).vocab) == model.cfg.vocab_size:
        model.task = task  # the model refuses prompts of another task (posym.tasks.Task.check_ids)
    return model.to(map_location).eval(), obj


def checkpoint_task(path: Path, obj: dict) -> str | None:
    """The task a checkpoint was trained on: recorded in it, or in the run's config.json next to it."""
    if obj.get("task") in task_names():
        return obj["task"]
    for folder in (path.parent, path.parent.parent):
        cfg_file = folder / "config.json"
        if cfg_file.is_file():
            try:
                d = pio.read_json(cfg_file)
            except pio.ResultError:
                return None
            task = d.get("train", {}).get("task") if isinstance(d, dict) else None
            ok = task in task_names() and d.get("config_hash") in (None, obj.get("config_hash"))
            return task if ok else None
    return None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    out = []
    for p in sorted((run_dir / "checkpoints").glob("step_*.pt")):
        out.append((int(p.stem.split("_")[1]), p))
    return out


class Run:
    """A run folder: config, checkpoints, logs. ``Run.create`` refuses to reuse a folder of another config."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config(self) -> TrainConfig:
        d = pio.read_json(self.path / "config.json")
        return TrainConfig.from_dict(d["train"])

    @classmethod
    def create(cls, path: str | Path, cfg: TrainConfig) -> "Run":
        run = cls(path)
        cfg_file = run.path / "config.json"
        if cfg_file.exists():
            old = pio.read_json(cfg_file)
            if old.get("config_hash") != cfg.hash():
                raise pio.ResultError(f"{run.path} already holds a run with config {old.get('config_hash')}; "
                                      f"this config is {cfg.hash()}. Use another --out folder.")
        else:
            run.path.mkdir(parents=True, exist_ok=True)
            pio.atomic_write_json(cfg_file, _config_record(cfg))
        return run

    def is_complete(self) -> bool:
        """A complete manifest for this folder's config (an unreadable manifest is not complete: training then
        writes it again from the resume state)."""
        m = self.path / "manifest.json"
        if not m.exists():
            return False
        try:
            man = pio.read_json(m)
        except pio.ResultError:
            return False
        return (isinstance(man, dict) and man.get("complete", False) is True
                and man.get("config_hash") == pio.read_json(self.path / "config.json")["config_hash"])


def _set_threads(threads: int | None):
    if threads:
        torch.set_num_threads(threads)


def _locked(fn):
    """Check the device, then hold the run folder's lock (one writer per folder) around ``fn``."""
    @functools.wraps(fn)
    def wrapper(cfg: TrainConfig, out: str | Path, *args, **kwargs):
        check_device(cfg.device)
        with pio.folder_lock(out):
            return fn(cfg, out, *args, **kwargs)
    return wrapper


def _regenerate(run: Run, cfg: TrainConfig, steps: set[int], threads: int | None, need_last: bool) -> dict:
    """Train ``cfg`` again from step 0 in a hidden folder of ``run`` up to the largest of ``steps`` (``cfg.steps``
    with ``need_last``) and write those checkpoints (and ``last.pt``) into ``run``; returns their checksums."""
    upto = cfg.steps if need_last else max(steps)
    tmp = run.path / ".repair"
    if tmp.exists():
        shutil.rmtree(tmp)
    out = {}
    try:
        train(cfg, tmp, progress=False, threads=threads, stop_after=upto)
        for s in sorted(steps):
            rel = ckpt_path(run.path, s).relative_to(run.path).as_posix()
            out[rel] = pio.atomic_write_bytes(run.path / rel, (tmp / rel).read_bytes())
        if need_last:
            out["last.pt"] = pio.atomic_write_bytes(run.path / "last.pt", (tmp / "last.pt").read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def repair_run(run: Run, cfg: TrainConfig, threads: int | None = None, quiet: bool = False) -> list[str]:
    """Compare a complete run's files with the checksums its manifest recorded when they were written and
    rebuild those that differ or are missing: checkpoints and ``last.pt`` by training again (deterministic),
    ``eval.csv`` / ``train_log.csv`` from ``last.pt``, ``config.json`` from the config. Returns what was
    rebuilt. A file in ``checkpoints/`` the manifest does not list, or a damaged file posym cannot rebuild,
    stops with :class:`ResultError` saying what to do."""
    man = pio.read_json(run.path / "manifest.json")
    files = man.get("files", {})
    listed_ckpts = {f for f in files if f.startswith("checkpoints/")}
    stray = sorted(p.relative_to(run.path).as_posix() for p in (run.path / "checkpoints").glob("*")
                   if not p.name.startswith(".") and p.relative_to(run.path).as_posix() not in listed_ckpts)
    if stray:
        raise pio.ResultError(f"{run.path / stray[0]} is not part of this run (its manifest does not list it)"
                              f"{f' nor {len(stray) - 1} more' if len(stray) > 1 else ''}: move it out of "
                              f"{run.path / 'checkpoints'}")

    def intact(f):
        p = run.path / f
        return p.is_file() and p.stat().st_size == files[f].get("bytes") and pio.sha256_file(p) == files[f]["sha256"]

    bad = [f for f in sorted(files) if not intact(f)]
    if not bad:
        return []
    steps, need_last, tables = set(), False, []
    for f in bad:
        if f.startswith("checkpoints/step_") and f.endswith(".pt"):
            steps.add(int(Path(f).stem.split("_")[1]))
        elif f == "last.pt":
            need_last = True
        elif f in ("eval.csv", "train_log.csv", "config.json"):
            tables.append(f)
        else:
            raise pio.ResultError(f"{run.path / f} does not match the checksum recorded when it was written and "
                                  f"posym cannot rebuild it: restore it, or delete {run.path} and train again")
    if not quiet:
        print(f"posym: {run.path}: {', '.join(bad)} changed or missing since written; rebuilding "
              + ("(training again from step 0)" if steps or need_last else ""), file=sys.stderr, flush=True)
    fixed = _regenerate(run, cfg, steps, threads, need_last) if steps or need_last else {}
    if "config.json" in tables:
        fixed["config.json"] = pio.atomic_write_json(run.path / "config.json", _config_record(cfg))
    if "eval.csv" in tables or "train_log.csv" in tables:
        state = load_state(run.path / "last.pt")
        if "eval.csv" in tables:
            fixed["eval.csv"] = pio.atomic_write_table(run.path / "eval.csv", pd.DataFrame(state["eval_rows"]))
        if "train_log.csv" in tables:
            fixed["train_log.csv"] = pio.atomic_write_table(
                run.path / "train_log.csv", pd.DataFrame(state["log_rows"], columns=["step", "loss", "lr"]))
    if any(fixed[f]["sha256"] != files[f]["sha256"] for f in fixed):
        # not bit-identical (another device or thread count): record the rebuilt files as written now
        entries = {**files, **fixed}
        pio.write_manifest(run.path, {k: v for k, v in man.items() if k != "files"}, files=sorted(entries),
                           entries=entries)
    return bad


def _config_record(cfg: TrainConfig) -> dict:
    return {"train": cfg.to_dict(), "model": cfg.model_config().to_dict(), "config_hash": cfg.hash()}


def _backward(loss: torch.Tensor, model: GPTJ, opt: torch.optim.Optimizer, scaler, grad_clip: float) -> None:
    """Gradients of ``loss``, clipped, and one optimizer step.  With a gradient scaler (fp16) the loss is scaled
    first; a step with inf/nan gradients is skipped and the scale lowered."""
    if scaler is None:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()


@_locked
def train(cfg: TrainConfig, out: str | Path, progress: bool = True, threads: int | None = None,
          stop_after: int | None = None, on_checkpoint=None) -> Run:
    """Train (or resume) the run described by ``cfg`` in folder ``out``.

    ``stop_after``: stop once this many steps are done (for tests of resume); ``on_checkpoint(step, model)``
    is called at every checkpoint step (used for inline metrics). A complete run is checked against its
    manifest and repaired (:func:`repair_run`); one process at a time writes a run folder.
    """
    _set_threads(threads)
    run = Run.create(out, cfg)
    if run.is_complete():
        repair_run(run, cfg, threads=threads)
        return run
    device = torch.device(cfg.device)
    t_start = time.time()

    task = get_task(cfg.task)
    train_ds = TaskDataset(task, "train", seed=cfg.seed, size=cfg.train_size)
    tr = train_ds.arrays()
    x_train = torch.from_numpy(tr["x"].copy()).to(device)
    y_train = torch.from_numpy(tr["y"].copy()).to(device)
    va = TaskDataset(task, "val", seed=cfg.seed, size=cfg.eval_size).arrays()
    x_val, y_val, h_val = (torch.from_numpy(va[k].copy()).to(device) for k in ("x", "y", "hops"))
    n_train = len(x_train)

    torch.manual_seed(cfg.seed)
    model = GPTJ(cfg.model_config()).to(device)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.steps))
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    step = 0
    eval_rows: list[dict] = []
    log_rows: list[dict] = []
    wall_before = 0.0
    loss_acc, loss_n = 0.0, 0  # running training loss since the last log line (saved in last.pt)

    last, prev = run.path / "last.pt", run.path / "last.prev.pt"
    state, corrupt = None, []
    for path in (last, prev):  # the newest readable resume state
        if not path.exists():
            continue
        try:
            state = load_state(path, map_location=device)
        except pio.ResultError:
            corrupt.append(path.name)
            continue
        if state.get("config_hash") != cfg.hash():
            raise pio.ResultError(f"resume state {path} belongs to config {state.get('config_hash')}, not {cfg.hash()}")
        break
    if corrupt and state is None:
        raise pio.ResultError(f"resume state {' and '.join(corrupt)} in {run.path} is corrupt and there is no "
                              f"readable earlier one, so the run can only start again from step 0: delete "
                              f"{run.path} and run the same command again")
    if corrupt:
        print(f"posym: {last} is corrupt; resuming from {path.name} (step {state['step']})", file=sys.stderr,
              flush=True)
        last.unlink(missing_ok=True)  # unreadable; the next checkpoint writes it again
    # checksums of the files written so far, each recorded when it was written and read back
    written: dict[str, dict] = dict(state.get("written", {})) if state is not None else {}
    written["config.json"] = pio.atomic_write_json(run.path / "config.json", _config_record(cfg))
    saved = {"state": None}  # the resume state this process wrote last
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        step = state["step"]
        eval_rows, log_rows = state["eval_rows"], state["log_rows"]
        wall_before = state.get("wall_s", 0.0)
        loss_acc, loss_n = state.get("loss_acc", 0.0), state.get("loss_n", 0)

    schedule = set(checkpoint_steps(cfg.steps, cfg.checkpoint_every))

    def order(epoch: int) -> torch.Tensor:
        rng = np.random.default_rng([cfg.seed, 7919, epoch])
        return torch.from_numpy(rng.permutation(n_train)).to(device)

    def checkpoint(step: int):
        model.eval()
        acc = evaluate(model, x_val, y_val, h_val, cfg.eval_batch_size)
        eval_rows.extend({"step": step, "hop": k, "accuracy": v} for k, v in acc.items())
        written[ckpt_path(run.path, step).relative_to(run.path).as_posix()] = save_checkpoint(run.path, step, model,
                                                                                               cfg)
        if on_checkpoint is not None:
            on_checkpoint(step, model)
        model.train()
        state = {"step": step, "config_hash": cfg.hash(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                 "eval_rows": eval_rows, "log_rows": log_rows, "wall_s": wall_before + time.time() - t_start,
                 "loss_acc": loss_acc, "loss_n": loss_n, "written": dict(written)}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if last.exists():  # the previous state stays as last.prev.pt (a second name; last.pt never goes missing)
            tmp = run.path / ".last.prev.pt.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(last, tmp)
            except OSError:
                shutil.copyfile(last, tmp)
            os.replace(tmp, prev)
        written["last.pt"] = save_state(last, state)
        saved["state"] = state
        written["eval.csv"] = pio.atomic_write_table(run.path / "eval.csv", pd.DataFrame(eval_rows))
        written["train_log.csv"] = pio.atomic_write_table(run.path / "train_log.csv",
                                                          pd.DataFrame(log_rows, columns=["step", "loss", "lr"]))
        return acc

    if state is None:  # a fresh start (a step-0 checkpoint left by a killed start is written again, identical)
        checkpoint(0)

    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.task} seed {cfg.seed}", leave=False)
    perm, perm_epoch = None, -1
    while step < cfg.steps:
        if stop_after is not None and step >= stop_after:
            break
        pos = step * cfg.batch_size
        epoch = pos // n_train
        if epoch != perm_epoch:
            perm, perm_epoch = order(epoch), epoch
        start = pos % n_train
        idx = perm[start:start + cfg.batch_size]
        if len(idx) < cfg.batch_size:  # wrap into the next epoch
            nxt = order(epoch + 1)
            idx = torch.cat((idx, nxt[: cfg.batch_size - len(idx)]))
        with precision_context(cfg.precision, device.type):
            logits = model(x_train[idx], last_only=True)[:, -1]
        loss = F.cross_entropy(logits.float(), y_train[idx])
        opt.zero_grad(set_to_none=True)
        with half_gemms(cfg.precision, device.type):
            _backward(loss, model, opt, scaler, cfg.grad_clip)
        sched.step()
        step += 1
        loss_acc += loss.item()
        loss_n += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            log_rows.append({"step": step, "loss": loss_acc / loss_n, "lr": sched.get_last_lr()[0]})
            loss_acc, loss_n = 0.0, 0
        if bar is not None:
            bar.update(1)
        if step in schedule:
            acc = checkpoint(step)
            if bar is not None:
                bar.set_postfix(acc=f"{acc['all']:.3f}")
    if bar is not None:
        bar.close()

    if step >= cfg.steps:
        wall = wall_before + time.time() - t_start
        if saved["state"] is None:  # resumed at the last step: write the state and the tables again, read back
            written["last.pt"] = save_state(last, state)
            written["eval.csv"] = pio.atomic_write_table(run.path / "eval.csv", pd.DataFrame(eval_rows))
            written["train_log.csv"] = pio.atomic_write_table(
                run.path / "train_log.csv", pd.DataFrame(log_rows, columns=["step", "loss", "lr"]))
        prev.unlink(missing_ok=True)
        info = {"complete": True, "config_hash": cfg.hash(), "seed": cfg.seed, "task": cfg.task, "steps": cfg.steps,
                "wall_time_s": round(wall, 2), **pio.provenance(cfg.device)}
        files = set(written) | {p.relative_to(run.path).as_posix() for _, p in list_checkpoints(run.path)}
        pio.write_manifest(run.path, info, files=sorted(files), entries=written, check=False)
        repair_run(run, cfg, threads=threads)  # anything damaged since it was written
    return run
