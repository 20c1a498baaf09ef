"""One plan that reproduces everything behind the book, on one core, all cores, or a Ray cluster.

A :class:`Plan` is a list of :class:`Job` s, one per (task, seed). A job has three steps, run in order
in one process:

``train``    :func:`posym.train.train` (resumes from ``last.pt`` when interrupted)
``analyze``  :func:`posym.analyze.analyze_run`: positional/symbolic scores at every checkpoint
``final``    :func:`posym.analyze.final_analyses`: test accuracy, length generalisation, geometry, flow

Every step is skipped when it is already complete and valid:

* ``train`` when :meth:`posym.train.Run.is_complete` (complete manifest, same config hash) and every
  checkpoint the manifest lists is on disk with its recorded size;
* ``analyze`` / ``final`` when ``steps.json`` in the run folder records the step with the same config
  hash, the same analysis parameters, the same training manifest (so a retrained run invalidates them)
  and outputs whose sha256 still match. Tables written by an older driver without ``steps.json`` are
  accepted after a content check (checkpoint steps, prompt count, lengths) and then recorded.

Engines (:data:`ENGINES`) differ only in where :func:`run_job` runs:

``serial``  in this process, one job after the other;
``local``   a pool of spawned processes on this machine (all cores by default);
``ray``     one Ray task per job with its resource needs (``num_cpus`` = threads, ``num_gpus``), on a
            local Ray instance or a cluster (``address``). The run folders must be on a file system
            every node sees (checked before anything is submitted).

Each job fixes the number of torch threads (``threads``, default 1), because CPU results depend on it
in the last bits: with the same ``threads`` the engines give bit-identical checkpoints and tables.

``posym reproduce`` (:func:`main_reproduce`) builds the plan, runs it with one progress bar over all
steps, optionally packages the results into ``data/`` (:func:`publish`), executes the chapters at the
same scale, builds the book, and prints the headline claims next to the paper's values
(:func:`headline_claims`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import io as pio
from .longprompts import DEFAULT_LENGTHS
from .metrics import TAU
from .tasks import PAPER_TASKS, SPLIT_SIZES, task_names
from .train import SCALES, Run, TrainConfig, ckpt_path

ENGINES = ("serial", "local", "ray")
STEPS = ("train", "analyze", "final")
STEPS_FILE = "steps.json"
ANALYZE_OUTPUTS = ("scores.parquet", "freq_scores.parquet", "prompts.json")
FINAL_OUTPUTS = ("test_accuracy.csv", "length.parquet", "geometry.parquet", "flow.parquet")
DEFAULT_SEEDS = {"smoke": 1, "teaching": 1, "paper": 5}


class PlanError(ValueError):
    """The plan cannot be built or run as asked (bad input, or a folder that holds another run)."""


# ---------------------------------------------------------------------------------------------
# What each scale computes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisConfig:
    """Parameters of the ``analyze`` and ``final`` steps (the ``paper`` values made ``data/paper``)."""

    n_prompts: int = 400  # metric prompts (hop-balanced, test split)
    per_frequency: bool = True
    tau: float = TAU
    lengths: tuple[int, ...] = DEFAULT_LENGTHS  # length generalisation
    n_length: int = 500  # prompts per length
    n_test: int | None = None  # test samples for test accuracy (None: the whole split)

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(int(x) for x in self.lengths))
        for name in ("n_prompts", "n_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise PlanError(f"analysis parameter {name} must be a positive integer, got {v!r}")
        if self.n_test is not None and not 0 < self.n_test <= SPLIT_SIZES["test"]:
            raise PlanError(f"analysis parameter n_test must be in [1, {SPLIT_SIZES['test']}] or None, got {self.n_test}")
        if not self.lengths or min(self.lengths) < 17:
            raise PlanError(f"analysis parameter lengths must be non-empty and >= 17, got {self.lengths}")

    def analyze_params(self) -> dict:
        return {"n_prompts": self.n_prompts, "per_frequency": self.per_frequency, "tau": self.tau}

    def final_params(self) -> dict:
        return {"lengths": list(self.lengths), "n_length": self.n_length, "n_test": self.n_test}


ANALYSIS = {
    "smoke": AnalysisConfig(n_prompts=100, lengths=(17, 25, 50, 100, 200), n_length=100, n_test=2400),
    "teaching": AnalysisConfig(n_prompts=200, lengths=(17, 25, 50, 100, 200, 300, 500, 850, 1000), n_length=200,
                               n_test=9600),
    "paper": AnalysisConfig(),
}


# ---------------------------------------------------------------------------------------------
# Jobs and plans
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One (task, seed): everything a worker needs, as plain picklable data."""

    task: str
    seed: int
    scale: str
    run_dir: str  # absolute
    train: dict  # TrainConfig.to_dict()
    analysis: dict  # asdict(AnalysisConfig)
    threads: int = 1
    stop_after: int | None = None  # tests: stop training after this many steps, as if interrupted

    @property
    def name(self) -> str:
        return f"{self.task}-s{self.seed}"

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.train)

    def analysis_config(self) -> AnalysisConfig:
        return AnalysisConfig(**self.analysis)


@dataclass
class Plan:
    scale: str
    out: Path
    jobs: list[Job]
    device: str = "cpu"
    threads: int = 1

    def describe(self) -> str:
        tasks = sorted({j.task for j in self.jobs}, key=task_names().index)
        seeds = sorted({j.seed for j in self.jobs})
        return (f"plan: scale {self.scale!r}, tasks {', '.join(tasks)}, seeds {_ranges(seeds)} -> {len(self.jobs)} "
                f"job(s) x {len(STEPS)} steps ({' -> '.join(STEPS)}) in {self.out} "
                f"(device {self.device}, {self.threads} torch thread(s) per job)")


def _ranges(xs: list[int]) -> str:
    if xs and xs == list(range(xs[0], xs[-1] + 1)) and len(xs) > 2:
        return f"{xs[0]}-{xs[-1]}"
    return ",".join(map(str, xs))


def parse_tasks(tasks: str | Iterable[str] | None) -> list[str]:
    if tasks is None:
        return list(PAPER_TASKS)
    items = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    items = [t for t in items if t]
    if not items:
        raise PlanError("--tasks is empty: give one or more of " + ", ".join(task_names()))
    for t in items:
        if t not in task_names():
            raise PlanError(f"unknown task {t!r}: choose from {', '.join(task_names())} (comma-separated)")
    return list(dict.fromkeys(items))


def parse_seeds(seeds: str | int | Iterable[int] | None, scale: str = "smoke") -> list[int]:
    """``N`` (a count: seeds 0..N-1), ``a-b`` (a range), ``a,b,c`` (a list) or a sequence of ints."""
    if seeds is None:
        return list(range(DEFAULT_SEEDS.get(scale, 1)))
    if isinstance(seeds, bool):
        raise PlanError(f"--seeds must be a count, a range or a list, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds <= 0:
            raise PlanError(f"--seeds {seeds}: the number of seeds must be at least 1 (or give a range like 0-4)")
        return list(range(seeds))
    if isinstance(seeds, str):
        s = seeds.strip()
        if s.lstrip("+").isdigit() or (s.startswith("-") and s[1:].isdigit()):
            return parse_seeds(int(s), scale)
        out = []
        for part in s.split(","):
            a, dash, b = part.strip().partition("-")
            try:
                lo, hi = int(a), int(b if dash else a)
            except ValueError:
                raise PlanError(f"--seeds must be a count (5), a range (0-4) or a list (0,2,7) of seeds >= 0, "
                                f"got {seeds!r}") from None
            if hi < lo:
                raise PlanError(f"--seeds {seeds!r}: range {part.strip()!r} is empty")
            out.extend(range(lo, hi + 1))
    else:
        out = list(seeds)
    if not out:
        raise PlanError(f"--seeds {seeds!r} names no seed")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise PlanError(f"seeds must be integers >= 0, got {s!r}")
    return list(dict.fromkeys(out))


def build_plan(scale: str = "smoke", tasks=None, seeds=None, out: str | Path | None = None, device: str = "cpu",
               threads: int = 1, overrides: dict | None = None, analysis: dict | None = None,
               stop_after: int | None = None) -> Plan:
    """The jobs that reproduce ``scale`` for ``tasks`` x ``seeds`` under ``out`` (default ``runs/<scale>``).

    ``overrides`` are extra :class:`TrainConfig` fields (they change the config hash, e.g. ``{"steps": 20}``
    for tests); ``analysis`` overrides :class:`AnalysisConfig` fields of the scale.
    """
    if scale not in SCALES:
        raise PlanError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    task_list = parse_tasks(tasks)
    seed_list = parse_seeds(seeds, scale)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise PlanError(f"--threads must be a positive integer, got {threads!r}")
    out = Path(out if out is not None else Path("runs") / scale).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise PlanError(f"--out {out} is a file; --out is the folder that holds the run folders")
    for name in ("config.json", "manifest.json"):
        if (out / name).is_file():
            raise PlanError(f"--out {out} is itself a run or results folder (it holds {name}); --out is the folder "
                            f"that holds the run folders, e.g. --out {out.parent}")
    acfg = ANALYSIS[scale]
    if analysis:
        unknown = set(analysis) - set(asdict(acfg))
        if unknown:
            raise PlanError(f"unknown analysis parameters {sorted(unknown)}; known: {', '.join(asdict(acfg))}")
        acfg = AnalysisConfig(**{**asdict(acfg), **analysis})
    jobs = []
    for seed in seed_list:
        for task in task_list:
            try:
                cfg = TrainConfig.preset(scale, task=task, seed=seed, device=device, **(overrides or {}))
            except TypeError as e:
                raise PlanError(f"bad training override: {e}") from None
            jobs.append(Job(task=task, seed=seed, scale=scale, run_dir=str(out / f"{task}-s{seed}"),
                            train=cfg.to_dict(), analysis=asdict(acfg), threads=threads, stop_after=stop_after))
    return Plan(scale=scale, out=out, jobs=jobs, device=device, threads=threads)


# ---------------------------------------------------------------------------------------------
# Step records and validity
# ---------------------------------------------------------------------------------------------
def read_steps(run_dir: str | Path) -> dict:
    p = Path(run_dir) / STEPS_FILE
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, OSError):
        return {}  # a corrupt record only means the steps are redone


def _record_step(run_dir: Path, step: str, record: dict) -> None:
    steps = read_steps(run_dir)
    steps[step] = record
    pio.atomic_write_json(run_dir / STEPS_FILE, steps)


def _sha_as_written(p: Path) -> str:
    """The checksum recorded when this process wrote ``p``; else the file's own (files written by another
    process: a training manifest, or tables adopted after a content check)."""
    e = pio.written_entry(p)
    return e["sha256"] if e is not None else pio.sha256_file(p)


def _manifest_sha(run_dir: Path) -> str | None:
    m = run_dir / "manifest.json"
    return _sha_as_written(m) if m.exists() else None


def record_outputs(run_dir: str | Path, step: str, params: dict, outputs: Iterable[str], device: str = "cpu") -> None:
    """Record in ``steps.json`` the outputs ``posym analyze`` just wrote (checksums as written), so that
    ``posym verify`` checks them and ``posym reproduce`` reuses them when its parameters are the same."""
    import torch

    run_dir = Path(run_dir)
    rec = {"config_hash": pio.read_json(run_dir / "config.json").get("config_hash"),
           "train_manifest": _manifest_sha(run_dir),
           "outputs": {f: _sha_as_written(run_dir / f) for f in outputs if (run_dir / f).exists()},
           "threads": torch.get_num_threads(), "device": device,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "params": params, "seconds": None}
    _record_step(run_dir, step, rec)


def check_conflict(job: Job) -> str | None:
    """A message when ``job.run_dir`` already holds a run of another configuration."""
    cfg_file = Path(job.run_dir) / "config.json"
    if not cfg_file.exists():
        return None
    try:
        have = pio.read_json(cfg_file).get("config_hash")
    except pio.ResultError as e:
        return str(e)
    want = job.config().hash()
    if have != want:
        return (f"{job.run_dir} holds a run with config {have}, but this plan's {job.name} has config {want} "
                f"(the presets, the overrides or the code changed). Delete that folder, or pass another --out.")
    return None


def _train_done(job: Job) -> bool:
    run = Run(job.run_dir)
    if check_conflict(job) is not None or not (run.path / "config.json").exists():
        return False
    try:
        if not run.is_complete():
            return False
        files = pio.read_json(run.path / "manifest.json").get("files", {})
    except pio.ResultError:
        return False
    cfg = job.config()
    if not ckpt_path(run.path, cfg.steps).exists():
        return False
    for rel, meta in files.items():  # every file as it was when written (train repairs what is not)
        p = run.path / rel
        if not p.is_file() or p.stat().st_size != meta.get("bytes") or pio.sha256_file(p) != meta.get("sha256"):
            return False
    listed = {rel for rel in files if rel.startswith("checkpoints/")}
    if any(p.relative_to(run.path).as_posix() not in listed for p in (run.path / "checkpoints").glob("[!.]*")):
        return False  # a stray file there: train stops and names it
    return True


def _outputs_ok(run_dir: Path, record: dict, deep: bool) -> bool:
    outs = record.get("outputs", {})
    if not outs:
        return False
    for f, sha in outs.items():
        p = run_dir / f
        if not p.exists():
            return False
        if deep and pio.sha256_file(p) != sha:
            return False
    return True


def _record_ok(job: Job, step: str, deep: bool) -> bool:
    run_dir = Path(job.run_dir)
    rec = read_steps(run_dir).get(step)
    if not rec:
        return False
    acfg = job.analysis_config()
    params = acfg.analyze_params() if step == "analyze" else acfg.final_params()
    return (rec.get("config_hash") == job.config().hash() and rec.get("params") == params
            and rec.get("train_manifest") == _manifest_sha(run_dir) and _outputs_ok(run_dir, rec, deep))


def _analyze_content_ok(job: Job) -> bool:
    """Tables from a driver that wrote no steps.json: accept them if they fit this job exactly."""
    from .train import list_checkpoints

    run_dir, acfg = Path(job.run_dir), job.analysis_config()
    try:
        prompts = pio.read_json(run_dir / "prompts.json")
        if prompts.get("n") != acfg.n_prompts or prompts.get("tau") != acfg.tau:
            return False
        scores = pio.read_table(run_dir / "scores.parquet")
        want = {s for s, _ in list_checkpoints(run_dir)}
        if set(scores["step"].unique()) != want:
            return False
        if acfg.per_frequency:
            fs = pio.read_table(run_dir / "freq_scores.parquet")
            if set(fs["step"].unique()) != want:
                return False
    except (pio.ResultError, KeyError):
        return False
    return True


def _final_content_ok(job: Job) -> bool:
    run_dir, acfg = Path(job.run_dir), job.analysis_config()
    try:
        ta = pio.read_table(run_dir / "test_accuracy.csv")
        n_all = int(ta.loc[ta["hop"].astype(str) == "all", "n"].iloc[0])
        if n_all != (acfg.n_test or SPLIT_SIZES["test"]):
            return False
        ln = pio.read_table(run_dir / "length.parquet")
        if sorted(ln["length"].unique().tolist()) != sorted(acfg.lengths):
            return False
        if int(ln.loc[ln["hop"].astype(str) == "all", "n"].iloc[0]) != acfg.n_length:
            return False
        for f in ("geometry.parquet", "flow.parquet"):
            pio.read_table(run_dir / f)
    except (pio.ResultError, KeyError, IndexError):
        return False
    return True


def step_status(job: Job, deep: bool = True) -> dict[str, bool]:
    """``{step: complete and valid}``; a step is valid only if the steps before it are.

    ``deep`` re-hashes the outputs (what the planner does); without it only records and file presence are
    checked (what the progress view polls).
    """
    out = {s: False for s in STEPS}
    if not _train_done(job):
        return out
    out["train"] = True
    out["analyze"] = _record_ok(job, "analyze", deep) or (deep and not read_steps(job.run_dir).get("analyze")
                                                          and _analyze_content_ok(job))
    if out["analyze"]:
        out["final"] = _record_ok(job, "final", deep) or (deep and not read_steps(job.run_dir).get("final")
                                                          and _final_content_ok(job))
    return out


def _step_record(job: Job, step: str, outputs: Iterable[str], seconds: float | None) -> dict:
    run_dir = Path(job.run_dir)
    acfg = job.analysis_config()
    rec = {"config_hash": job.config().hash(), "train_manifest": _manifest_sha(run_dir),
           "outputs": {f: _sha_as_written(run_dir / f) for f in outputs if (run_dir / f).exists()},
           "threads": job.threads, "device": job.train.get("device", "cpu"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if step in ("analyze", "final"):
        rec["params"] = acfg.analyze_params() if step == "analyze" else acfg.final_params()
    rec["seconds"] = None if seconds is None else round(seconds, 2)  # None: adopted, not run by us
    return rec


# ---------------------------------------------------------------------------------------------
# Running one job (in whatever process the engine chose)
# ---------------------------------------------------------------------------------------------
def run_job(job: Job, on_step: Callable[[Job, str], None] | None = None) -> dict:
    """Run the missing steps of ``job``; returns ``{"job", "ran", "skipped", "seconds", "interrupted"}``."""
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return _run_job(job, on_step)
    finally:
        torch.set_num_threads(threads_before)  # the serial engine runs jobs in the caller's process


def _run_job(job: Job, on_step) -> dict:
    conflict = check_conflict(job)
    if conflict:
        raise PlanError(conflict)
    with pio.folder_lock(job.run_dir):  # one writer per run folder, whatever process or machine runs the job
        return _run_job_locked(job, on_step)


def _run_job_locked(job: Job, on_step) -> dict:
    from .analyze import analyze_run, final_analyses
    from .train import train

    run_dir = Path(job.run_dir)
    cfg = job.config()
    acfg = job.analysis_config()
    status = step_status(job)
    res = {"job": job.name, "ran": [], "skipped": [], "seconds": {}, "interrupted": False}

    def done(step: str, outputs: Iterable[str], seconds: float | None):
        _record_step(run_dir, step, _step_record(job, step, outputs, seconds))
        if seconds is None:
            res["skipped"].append(step)
        else:
            res["ran"].append(step)
            res["seconds"][step] = round(seconds, 2)
        if on_step is not None:
            on_step(job, step)

    # train
    if status["train"]:
        if "train" not in read_steps(run_dir):
            done("train", ["manifest.json"], None)
        else:
            res["skipped"].append("train")
    else:
        t0 = time.perf_counter()
        train(cfg, run_dir, progress=False, stop_after=job.stop_after)
        if not Run(run_dir).is_complete():
            res["interrupted"] = True
            return res
        done("train", ["manifest.json"], time.perf_counter() - t0)
        status = step_status(job)  # a repaired run that came out bit-identical keeps its analyses
    # analyze
    if status["analyze"]:
        if "analyze" in read_steps(run_dir):
            res["skipped"].append("analyze")
        else:  # valid tables from an older driver: record them
            done("analyze", ANALYZE_OUTPUTS, None)
    else:
        t0 = time.perf_counter()
        analyze_run(run_dir, n_prompts=acfg.n_prompts, per_frequency=acfg.per_frequency, tau=acfg.tau,
                    device=cfg.device, progress=False)
        done("analyze", ANALYZE_OUTPUTS, time.perf_counter() - t0)
    # final analyses
    if status["final"]:
        if "final" in read_steps(run_dir):
            res["skipped"].append("final")
        else:
            done("final", FINAL_OUTPUTS, None)
    else:
        t0 = time.perf_counter()
        final_analyses(run_dir, device=cfg.device, lengths=list(acfg.lengths), n_length=acfg.n_length,
                       n_test=acfg.n_test, progress=False)
        done("final", FINAL_OUTPUTS, time.perf_counter() - t0)
    problem = _folder_problem(job)
    if problem:
        raise PlanError(problem)
    return res


def _folder_problem(job: Job) -> str | None:
    """What ``posym verify`` would still reject in a job's folder once every step is done (one line)."""
    problems = pio.verify_folder(job.run_dir)[1]
    if not problems:
        return None
    return (f"{job.run_dir}: {'; '.join(problems)}; move files that posym did not write out of the run folder, "
            f"then run this again")


def _trained_steps(job: Job) -> int:
    """Last checkpoint step of a running job (the last line of its eval.csv; 0 before the first)."""
    try:
        with open(Path(job.run_dir) / "eval.csv", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256))
            return int(f.read().decode().strip().splitlines()[-1].split(",")[0])
    except (OSError, ValueError, IndexError):
        return 0


def _adopt(job: Job) -> None:
    """Record the valid steps of a complete job that have no record yet (results of an older driver)."""
    have = read_steps(job.run_dir)
    outputs = {"train": ["manifest.json"], "analyze": ANALYZE_OUTPUTS, "final": FINAL_OUTPUTS}
    for step in STEPS:
        if step not in have:
            _record_step(Path(job.run_dir), step, _step_record(job, step, outputs[step], None))


def _check_visible(path: str) -> str:
    """Run on a worker: whether the driver's token file is visible there."""
    import socket

    return socket.gethostname() if Path(path).exists() else ""


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------
class _Done:
    """A finished job handle of the serial engine."""

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class SerialEngine:
    name = "serial"

    def __init__(self, on_step=None):
        self.on_step = on_step

    def submit(self, job: Job):
        try:
            return _Done(run_job(job, on_step=self.on_step))
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - reported per job
            return _Done(error=e)

    def wait(self, handles, timeout):
        return set(handles), set()

    def result(self, h):
        if h.error is not None:
            raise h.error
        return h.value

    def close(self, cancel=False):
        pass


def _worker_init(parent: int) -> None:
    """In each worker of the local engine: ignore Ctrl-C (the parent stops the workers) and exit as soon as the
    parent is gone, however it died (a killed parent cannot stop them, and they must not go on writing)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # Linux: the kernel kills this worker when the parent dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="posym-parent-watch", daemon=True).start()


class LocalEngine:
    """A pool of spawned processes (fresh interpreters, as Ray's workers are). The workers exit when the parent
    dies and are killed when the plan is interrupted."""

    name = "local"

    def __init__(self, workers: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init, initargs=(os.getpid(),))

    def submit(self, job: Job):
        return self.pool.submit(run_job, job)

    def wait(self, handles, timeout):
        from concurrent.futures import FIRST_COMPLETED, wait

        done, pending = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return set(done), set(pending)

    def result(self, h):
        return h.result()

    def close(self, cancel=False):
        if cancel:  # interrupted: the workers ignore Ctrl-C, so stop them here (they resume from last.pt next time)
            procs = list((getattr(self.pool, "_processes", None) or {}).values())
            for proc in procs:
                try:
                    proc.kill()
                except (OSError, AttributeError):
                    pass
            for proc in procs:
                try:
                    proc.join(5)
                except (OSError, AttributeError, AssertionError):
                    pass
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayEngine:
    """One Ray task per job, ``num_cpus`` = the job's threads, ``num_gpus`` = ``gpus_per_job``.

    Uses an already initialised Ray (tests start a 2-CPU instance), else connects to ``address``
    (``auto``, ``ray://host:10001``, ...) or starts a local instance with every core.
    """

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_job: float = 0.0, num_cpus: int | None = None,
                 probe_dir: Path | None = None):
        try:
            import ray
        except ImportError:
            raise PlanError("--engine ray needs Ray: pip install -r requirements-cluster.txt (ray==2.60.0)") from None
        self.ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.owns = False
        if not ray.is_initialized():
            if address is None:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            self.owns = True
        self.gpus = float(gpus_per_job or 0.0)
        self.submitted: list = []
        self.remote = ray.remote(run_job)
        if probe_dir is not None:
            self._check_shared(probe_dir)

    def _check_shared(self, folder: Path) -> None:
        """Every task writes into the driver's run folders: check a worker sees them."""
        folder.mkdir(parents=True, exist_ok=True)
        token = folder / f".ray-probe-{uuid.uuid4().hex}"
        token.write_text("posym")
        try:
            host = self.ray.get(self.ray.remote(_check_visible).options(num_cpus=0).remote(str(token)))
        finally:
            token.unlink(missing_ok=True)
        if not host:
            raise PlanError(f"{folder} is not visible from the Ray workers: --out must be on a file system shared "
                            f"by every node of the cluster (e.g. NFS)")

    def submit(self, job: Job):
        ref = self.remote.options(num_cpus=job.threads, num_gpus=self.gpus, name=f"posym:{job.name}").remote(job)
        self.submitted.append(ref)
        return ref

    def wait(self, handles, timeout):
        handles = list(handles)
        ready, rest = self.ray.wait(handles, num_returns=len(handles), timeout=timeout)
        return set(ready), set(rest)

    def result(self, h):
        return self.ray.get(h)

    def close(self, cancel=False):
        if cancel:  # interrupted: stop the tasks still queued or running (they resume from last.pt next time)
            ready, rest = self.ray.wait(self.submitted, num_returns=len(self.submitted), timeout=0)
            for ref in rest:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass
        if self.owns:
            self.ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Running a plan
# ---------------------------------------------------------------------------------------------
@dataclass
class PlanResult:
    ran: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def summary(self) -> str:
        n_ran = sum(len(v) for v in self.ran.values())
        lines = [f"{n_ran} step(s) run, {len(self.failed)} job(s) failed, {len(self.interrupted)} interrupted, "
                 f"in {self.seconds:.1f} s"]
        for name, err in self.failed.items():
            lines.append(f"FAILED {name}: {err}")
        for name in self.interrupted:
            lines.append(f"interrupted {name} (run `posym reproduce` again to resume)")
        return "\n".join(lines)


def _check_plan(plan: Plan) -> None:
    problems = [m for m in (check_conflict(j) for j in plan.jobs) if m]
    if problems:
        raise PlanError("\n".join(problems))


def run_plan(plan: Plan, engine: str = "serial", address: str | None = None, workers: int | None = None,
             gpus_per_job: float | None = None, progress: bool = True, ray_num_cpus: int | None = None,
             poll_s: float = 1.0) -> PlanResult:
    """Run every step of ``plan`` that is not complete and valid, on ``engine``; one progress bar for all."""
    if engine not in ENGINES:
        raise PlanError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise PlanError("--address is only for --engine ray")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0):
        raise PlanError(f"--jobs must be a positive integer, got {workers!r}")
    _check_plan(plan)
    t0 = time.perf_counter()
    result = PlanResult()
    status = {j.name: step_status(j) for j in plan.jobs}
    todo = [j for j in plan.jobs if not all(status[j.name].values())]
    for j in plan.jobs:
        if j not in todo:
            _adopt(j)  # tables of an older driver are recorded first (they are part of the run)
            problem = _folder_problem(j)
            if problem:
                result.failed[j.name] = problem
                continue
            result.skipped[j.name] = list(STEPS)
    total = len(plan.jobs) * len(STEPS)
    done0 = sum(sum(s.values()) for s in status.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=done0, desc=f"reproduce {plan.scale}", unit="step", dynamic_ncols=True)
    if not todo:
        if bar is not None:
            bar.close()
        result.seconds = time.perf_counter() - t0
        return result

    finished: set[str] = set()
    shown = [None]  # what the bar shows, to redraw only on change

    def refresh(running: Iterable[Job] = ()):
        if bar is None:
            return
        n = 0
        for j in plan.jobs:
            if j.name in finished or j not in todo:
                n += sum(status[j.name].values())
            else:
                n += sum(step_status(j, deep=False).values())
        now = []
        for j in running:
            st = step_status(j, deep=False)
            nxt = next((s for s in STEPS if not st[s]), None)
            if nxt == "train":
                now.append(f"{j.name}:train {_trained_steps(j)}/{j.train['steps']}")
            elif nxt:
                now.append(f"{j.name}:{nxt}")
        post = " ".join(now[:4]) + (" ..." if len(now) > 4 else "")
        if (n, post) != shown[0]:
            shown[0] = (n, post)
            bar.n = n
            bar.set_postfix_str(post, refresh=False)
            bar.refresh()

    def on_step(job, step):
        refresh([job])

    gpus = gpus_per_job if gpus_per_job is not None else (1.0 if plan.device.startswith("cuda") else 0.0)
    if engine == "serial":
        ex = SerialEngine(on_step=on_step if bar is not None else None)
    elif engine == "local":
        n = workers or max(1, (os.cpu_count() or 1) // plan.threads)
        ex = LocalEngine(min(n, len(todo)))
    else:
        ex = RayEngine(address=address, gpus_per_job=gpus, num_cpus=ray_num_cpus,
                       probe_dir=plan.out if address is not None else None)
    plan.out.mkdir(parents=True, exist_ok=True)
    pending: dict[Any, Job] = {}
    cancelled = True
    try:
        for j in todo:
            if bar is not None and engine == "serial":
                bar.set_postfix_str(f"{j.name}", refresh=True)
            pending[ex.submit(j)] = j
        while pending:
            done, _ = ex.wait(set(pending), timeout=poll_s)
            for h in done:
                job = pending.pop(h)
                try:
                    r = ex.result(h)
                except Exception as e:  # noqa: BLE001 - reported per job, the others go on
                    result.failed[job.name] = _format_error(e)
                else:
                    result.ran[job.name] = r["ran"]
                    result.skipped[job.name] = r["skipped"]
                    if r["interrupted"]:
                        result.interrupted.append(job.name)
                status[job.name] = step_status(job, deep=False)
                finished.add(job.name)
            refresh(pending.values())
        cancelled = False
    finally:
        ex.close(cancel=cancelled)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    return result


#: Errors that describe bad input or damaged files: reported as their message alone.
EXPECTED_ERRORS = (PlanError, pio.ResultError, ValueError, OSError)


def _format_error(e: BaseException) -> str:
    """One line: the message of an expected error, else the exception type and message (a bug: the full
    traceback goes to ``POSYM_TRACEBACK=1`` runs only)."""
    if os.environ.get("POSYM_TRACEBACK"):
        return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return msg if isinstance(e, EXPECTED_ERRORS) else f"{type(e).__name__}: {msg}"


# ---------------------------------------------------------------------------------------------
# Publishing into data/, chapters and book
# ---------------------------------------------------------------------------------------------
def publish(plan: Plan, dest: str | Path, checkpoint_seeds=(0,), note: str | None = None) -> list[Path]:
    """Package every job's results into ``dest/<task>-s<seed>/`` (as :func:`posym.results.copy_tree_results`
    does, with :func:`posym.results.package_run`); runs whose packaged files already match are left alone."""
    from .results import RESULT_FILES, package_run

    dest = Path(dest)
    out = []
    for j in plan.jobs:
        src, target = Path(j.run_dir), dest / j.name
        _, problems = pio.verify_folder(src)  # copy only what is as it was written
        if problems:
            raise PlanError(f"{src} failed verification ({'; '.join(problems)}): run `posym reproduce` again "
                            f"without --publish to repair it, then publish")
        if _published_same(src, target, RESULT_FILES):
            out.append(target)
            continue
        if target.exists():
            shutil.rmtree(target)
        extra = {"code_note": note} if note else {}
        package_run(src, target, final_checkpoint=j.seed in checkpoint_seeds, **extra)
        out.append(target)
    return out


def _published_same(src: Path, target: Path, files) -> bool:
    try:
        man = pio.read_json(target / "manifest.json")
    except pio.ResultError:
        return False
    listed = man.get("files", {})
    for f in files:
        if f not in listed or not (src / f).exists() or pio.sha256_file(src / f) != listed[f]["sha256"]:
            return False
    try:
        pio.verify_manifest(target)
    except pio.ResultError:
        return False
    return True


def _repo_root() -> Path | None:
    from .book import repo_root

    return repo_root()


def stage_data_dir(published: Path, stage: Path) -> Path:
    """The data folder the chapters should read so that ``paper/`` is ``published``.

    That is the repository's ``data/`` when ``published`` is ``data/paper``; otherwise ``stage`` is filled
    with links: ``paper`` -> ``published`` and every other entry of ``data/`` -> itself.
    """
    published = Path(published).resolve()
    repo = _repo_root()
    data = (repo / "data").resolve() if repo is not None else None
    if data is not None and published == data / "paper":
        return data
    stage = Path(stage)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    (stage / "paper").symlink_to(published)
    if data is not None and data.is_dir():
        for entry in data.iterdir():
            if entry.name != "paper":
                (stage / entry.name).symlink_to(entry.resolve())
    return stage


def missing_requirements(scale: str, data_root: Path | None = None) -> list[str]:
    """Results in ``data_root`` (default: the book's data folder) that a chapter requires at ``scale`` but
    that are missing, one line each, with the command that produces them."""
    from . import book

    root = Path(data_root) if data_root is not None else book.data_dir()
    out = []
    for name, spec in sorted(book.all_specs().items()):
        for req in spec.requires.get(scale, ()):
            if not req.optional and not (root / req.path).exists():
                out.append(f"chapter {name!r} needs {root / req.path}: {req.how}")
    return out


def execute_chapters(scale: str, data_root: Path | None = None, out_dir: Path | None = None,
                     timeout: int = 3600) -> dict[str, float]:
    """Execute every notebook chapter at ``scale`` (``scripts/run_chapters.py``'s logic) into
    ``_build/executed/<scale>``; the chapters read ``data_root`` (``POSYM_DATA_DIR``) when given."""
    from . import book

    repo = _repo_root()
    if repo is None:
        raise PlanError("executing the chapters needs the repository checkout (book/ and _toc.yml); use --no-book")
    sys.path.insert(0, str(repo / "scripts"))
    try:
        from bookutil import notebook_chapters
    finally:
        sys.path.remove(str(repo / "scripts"))
    out_dir = out_dir or repo / "_build" / "executed" / scale
    old = os.environ.get("POSYM_DATA_DIR")
    times = {}
    try:
        if data_root is not None:
            os.environ["POSYM_DATA_DIR"] = str(Path(data_root).resolve())
        os.environ.setdefault("PYTHONHASHSEED", "0")
        for src in notebook_chapters(repo):
            print(f"[chapters] {src.stem}: executing at scale {scale!r}", flush=True)
            try:
                times[src.stem] = book.execute_chapter(src, out_dir / f"{src.stem}.ipynb", scale, cwd=src.parent,
                                                       timeout=timeout)
            except book.ChapterError as e:
                raise PlanError(f"chapter {src.stem!r} failed at scale {scale!r}: {e.ename}: {e.evalue}") from None
            print(f"[chapters] {src.stem}: done in {times[src.stem]:.1f} s", flush=True)
    finally:
        if data_root is not None:
            if old is None:
                os.environ.pop("POSYM_DATA_DIR", None)
            else:
                os.environ["POSYM_DATA_DIR"] = old
    return times


def build_book(scale: str) -> None:
    repo = _repo_root()
    if repo is None:
        raise PlanError("building the book needs the repository checkout; use --no-book")
    p = subprocess.run([sys.executable, str(repo / "scripts" / "build_book.py"), "--params", scale], cwd=repo)
    if p.returncode != 0:
        raise PlanError(f"the book build failed (scripts/build_book.py --params {scale}, exit {p.returncode}); "
                        f"`make mathjax` first if _mathjax/ is missing")
    print(f"[book] {repo / '_build' / 'html' / 'index.html'} (chapters at scale {scale!r})", flush=True)


# ---------------------------------------------------------------------------------------------
# Headline claims
# ---------------------------------------------------------------------------------------------
#: The paper's headline values (read from Paper 2's text and figures).
PAPER_CLAIMS = {  # (value compared with, as the paper states it, where)
    ("best_step", "number"): (4800, "~4,800", "Fig. 2A: maximal accuracy at about 4.8k steps"),
    ("best_step", "letter"): (3400, "~3,400", "Fig. 2A: maximal accuracy at about 3.4k steps"),
    ("test_accuracy", "number"): (1.0, "~1.0", "Fig. 2A: about 100 % test accuracy"),
    ("test_accuracy", "letter"): (1.0, "~1.0", "Fig. 2A: about 100 % test accuracy"),
    ("pure_positional", "number"): (4, "4 (L0-L3)", "Fig. 2C (gamma 0.1): 4 pure positional heads, L0-L3"),
    ("pure_positional", "letter"): (0, "0", "Fig. 2C (gamma 0.1): no positional head"),
    ("pure_symbolic", "number"): (8, "8 (L4-L11)", "Fig. 2C (gamma 0.1): 8 pure symbolic heads, L4-L11"),
    ("pure_symbolic", "letter"): (11, "11 (L1-L11)", "Fig. 2C (gamma 0.1): 11 pure symbolic heads, L1-L11"),
    ("length_below_half", "number"): (250, "~200-300", "Fig. 5B: about 0.5 by 200-300 tokens"),
    ("length_below_half", "letter"): (5000, "~5,000", "Fig. 5B: 0.48 at 5,000 tokens"),
    ("accuracy_at_850", "letter"): (0.9, "> 0.9", "Sec. 3.6: above 90 % up to length 850"),
}
GAMMA = 0.1
CLAIM_LABELS = {
    "best_step": "step of best validation accuracy",
    "test_accuracy": "test accuracy (whole test split)",
    "pure_positional": f"pure positional heads at the final step (γ = {GAMMA})",
    "pure_symbolic": f"pure symbolic heads at the final step (γ = {GAMMA})",
    "length_below_half": "length where accuracy falls below 0.5",
    "accuracy_at_850": "accuracy at 850 tokens",
}


def _claim_rows(root: Path, tasks: list[str], seeds: list[int] | None) -> list[dict]:
    import numpy as np

    from .analyze import best_step
    from .results import load_table

    def table(name):
        df = load_table(root, name)
        df = df[df["task"].isin(tasks)]
        return df[df["seed"].isin(seeds)] if seeds is not None else df

    rows = []

    def add(claim, task, ours, agree, ours_text, criterion):
        _, paper, where = PAPER_CLAIMS[(claim, task)]
        rows.append({"claim": CLAIM_LABELS[claim], "task": task, "paper": paper, "ours": ours, "agree": bool(agree),
                     "ours_detail": ours_text, "criterion": criterion, "source": where})

    ev = table("eval")
    ev = ev[ev["hop"] == "all"]
    for task in tasks:
        g = ev[ev["task"] == task]
        if g.empty:
            continue
        per = {s: best_step(d) for s, d in g.groupby("seed")}
        med = float(np.median(list(per.values())))
        paper = PAPER_CLAIMS[("best_step", task)][0]
        add("best_step", task, med, abs(med - paper) <= 0.25 * paper,
            "median over seeds; " + ", ".join(f"s{s}: {v}" for s, v in per.items()), "within 25 % of the paper")
    try:
        ta = table("test_accuracy")
        ta = ta[ta["hop"] == "all"]
        for task in tasks:
            g = ta[ta["task"] == task]
            if not g.empty:
                m = float(g["accuracy"].mean())
                add("test_accuracy", task, round(m, 4), m >= 0.99, f"mean over {len(g)} seed(s), min "
                    f"{g['accuracy'].min():.4f}", ">= 0.99")
    except pio.ResultError:
        pass
    sc = table("scores")
    for task in tasks:
        g = sc[sc["task"] == task]
        if g.empty:
            continue
        counts = {"pure_positional": {}, "pure_symbolic": {}}
        for seed, d in g.groupby("seed"):
            last = d[d["step"] == d["step"].max()]
            pos = last[(last["pos"] >= 1 - GAMMA) & (last["sym"] <= GAMMA)]["layer"].tolist()
            sym = last[(last["sym"] >= 1 - GAMMA) & (last["pos"] <= GAMMA)]["layer"].tolist()
            counts["pure_positional"][seed], counts["pure_symbolic"][seed] = pos, sym
        for claim, per in counts.items():
            med = float(np.median([len(v) for v in per.values()]))
            detail = "; ".join(f"s{s}: {len(v)} (L{','.join(map(str, v))})" if v else f"s{s}: 0"
                               for s, v in per.items())
            add(claim, task, med, med == PAPER_CLAIMS[(claim, task)][0], "median over seeds; " + detail,
                f"median count equals the paper (gamma {GAMMA}, final step)")
    try:
        ln = table("length")
        ln = ln[ln["hop"] == "all"]
        for task in tasks:
            g = ln[ln["task"] == task]
            if g.empty:
                continue
            curve = g.groupby("length")["accuracy"].mean().sort_index()
            below = curve[curve < 0.5]
            drop = int(below.index[0]) if len(below) else None
            lmax = int(curve.index.max())
            text = f"first length with mean accuracy < 0.5 (lengths up to {lmax})"
            if task == "number":
                agree = drop is not None and 100 <= drop <= 500
                crit = "between 100 and 500 tokens"
            else:
                agree = (drop is None and lmax >= 3000) or (drop is not None and drop >= 3000)
                crit = ">= 3,000 tokens"
            add("length_below_half", task, drop if drop is not None else f">{lmax}", agree, text, crit)
            if ("accuracy_at_850", task) in PAPER_CLAIMS and 850 in curve.index:
                a = float(curve.loc[850])
                add("accuracy_at_850", task, round(a, 4), a >= 0.9, "mean over seeds at 850 tokens", ">= 0.9")
    except pio.ResultError:
        pass
    return rows


def headline_claims(root: str | Path, tasks=None, seeds=None):
    """The headline claims of the paper against the runs under ``root`` (a plan's ``--out`` or ``data/paper``).

    Columns: ``from, task, claim, paper, ours, agree, detail``. The learning-dynamics rows are the dynamics
    chapter's own table (:func:`posym.chapters.dynamics.claims_table`: pure-head counts and layers, their order,
    hop order, best step, final accuracy, with intervals over seeds), the RoPE-frequency row summarises the
    geometry chapter's :func:`posym.chapters.geometry.table1_comparison`, and this module adds test accuracy and
    the length where accuracy falls below 0.5 (:data:`PAPER_CLAIMS`).
    """
    import pandas as pd

    from .chapters.dynamics import claims_table
    from .chapters.geometry import table1_comparison
    from .results import load_table

    root = Path(root)
    task_list = parse_tasks(tasks)
    seed_list = list(seeds) if seeds is not None else None

    def table(name):
        df = load_table(root, name)
        df = df[df["task"].isin(task_list)]
        return (df[df["seed"].isin(seed_list)] if seed_list is not None else df).reset_index(drop=True)

    cols = ["from", "task", "claim", "paper", "ours", "agree", "detail"]
    frames = []
    t = claims_table(table("eval"), table("scores"), gamma=GAMMA)
    frames.append(pd.DataFrame({"from": "dynamics", "task": t["task"], "claim": t["claim"], "paper": t["paper"],
                                "ours": t["ours"], "agree": t["agree"].astype(bool), "detail": t["note"]}))
    own = pd.DataFrame(_claim_rows(root, task_list, seed_list))
    if not own.empty:  # the chapter's table covers best step and purity, with intervals
        own = own.rename(columns={"ours_detail": "detail"})
        own["detail"] = own["detail"] + "; agree: " + own["criterion"] + "; paper: " + own["source"]
        own.insert(0, "from", "reproduce")
        own = own[~own["claim"].isin([CLAIM_LABELS[k] for k in ("best_step", "pure_positional", "pure_symbolic")])]
        frames.append(own[cols])
    t1 = table1_comparison(table("freq_scores"))
    rows = []
    for task, g in t1.groupby("task", sort=False):
        n_yes, n_close = int((g["agree"] == "yes").sum()), int((g["agree"] == "close").sum())
        worst = g.loc[g["agree"] == "no", "layer"].tolist()
        rows.append({"from": "geometry", "task": task, "claim": "RoPE frequency per layer (Table 1)",
                     "paper": "Table 1", "ours": f"{n_yes}/{len(g)} layers agree, {n_close} close",
                     "agree": n_yes + n_close == len(g),
                     "detail": "weighted-average frequency ID per layer (final step); layers that differ "
                               f"by more than a factor 2 in angle: {worst or 'none'}"})
    frames.append(pd.DataFrame(rows, columns=cols))
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    order = {t: i for i, t in enumerate(task_names())}
    return out.sort_values("task", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def format_claims(df) -> str:
    if df.empty:
        return "(no claims: no complete results)"
    cols = [c for c in ("task", "claim", "paper", "ours", "agree") if c in df.columns]
    show = df[cols].copy()

    def num(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v
        return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 2 else (f"{v:.4g}" if v else "0")

    for c in ("paper", "ours"):
        if c in show:
            show[c] = show[c].map(num).astype(str)
    if "agree" in show:
        show["agree"] = show["agree"].map(lambda a: "yes" if a is True or a == 1 else ("no" if a in (False, 0) else a))
    return show.to_string(index=False)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
#: The sweeps behind the other committed results in data/: the command (a script of the checkout, run from its
#: root) that regenerates each. ``posym reproduce --sweep NAME`` runs it.
SWEEPS = {
    "canonical": (["scripts/canonical_sweep.py"], "data/canonical: Paper 1's canonical tasks"),
    "remedies": (["scripts/remedy_sweep.py", "inference"], "data/remedies: RoPE-scaling remedies on the paper models"),
    "remedies-training": (["scripts/remedy_sweep.py", "training"], "data/remedies: remedies in teaching-scale training"),
    "reconcile": (["scripts/reconcile_runs.py", "all"], "data/reconcile: the experiments of 'Reconciling with the paper'"),
    "newtasks": (["scripts/newtasks_runs.py"], "data/lego, data/sorting: the LEGO and list-sorting runs"),
}


def run_sweeps(names: list[str]) -> int:
    """Run the named sweeps (:data:`SWEEPS`) one after the other; ``help`` lists them."""
    import subprocess

    if "help" in names:
        for name, (cmd, what) in SWEEPS.items():
            print(f"  {name:18s} python {' '.join(cmd):42s} {what}")
        return 0
    names = list(SWEEPS) if "all" in names else names
    unknown = [n for n in names if n not in SWEEPS]
    if unknown:
        raise PlanError(f"--sweep {unknown[0]!r}: choose from {', '.join(SWEEPS)}, all or help")
    from .results import repo_root

    repo = repo_root()
    if repo is None or not (repo / "scripts").is_dir():
        raise PlanError("--sweep runs the scripts of a posym checkout; run it inside one")
    for name in names:
        cmd, what = SWEEPS[name]
        print(f"[sweep {name}] python {' '.join(cmd)}  ({what})", flush=True)
        p = subprocess.run([sys.executable, *cmd], cwd=repo)
        if p.returncode:
            raise PlanError(f"sweep {name!r} failed (python {' '.join(cmd)}, exit {p.returncode})")
    return 0


def main_reproduce(a) -> int:
    """``posym reproduce`` (arguments parsed in :mod:`posym.cli`)."""
    from .train import check_device

    if getattr(a, "sweep", None):
        return run_sweeps(a.sweep)
    if a.engine not in ENGINES:
        raise PlanError(f"--engine {a.engine!r}: choose one of {', '.join(ENGINES)}")
    if a.engine == "ray" and a.address is not None:
        if a.device.split(":")[0] not in ("cpu", "cuda"):  # the GPUs are on the cluster's nodes, not here
            raise PlanError(f"--device {a.device!r}: posym trains on cpu or cuda (or cuda:N)")
    else:
        check_device(a.device)
    plan = build_plan(scale=a.scale, tasks=a.tasks, seeds=a.seeds, out=a.out, device=a.device, threads=a.threads)
    print(plan.describe(), flush=True)
    res = run_plan(plan, engine=a.engine, address=a.address, workers=a.jobs, gpus_per_job=a.gpus_per_job,
                   progress=not a.quiet)
    print(res.summary(), flush=True)
    if not res.ok:
        if res.failed:
            bad = set(res.failed) | set(res.interrupted)
            tasks_ok = [t for t in dict.fromkeys(j.task for j in plan.jobs)
                        if not any(j.name in bad for j in plan.jobs if j.task == t)]
            if tasks_ok:  # the claims of the tasks whose jobs all finished
                try:
                    claims = headline_claims(plan.out, tasks=tasks_ok, seeds=sorted({j.seed for j in plan.jobs}))
                    print(f"\nHeadline claims of the finished tasks ({', '.join(tasks_ok)}): paper vs ours\n"
                          + format_claims(claims))
                except (pio.ResultError, ValueError, KeyError):
                    pass
            names = ", ".join(res.failed)
            raise PlanError(f"{len(res.failed)} job(s) failed ({names}); the reasons are above, one line each")
        return 1
    data_root = None
    if a.publish:
        note = (f"produced by `posym reproduce --scale {a.scale} --engine {a.engine}` at commit "
                f"{pio.git_commit()} on device {a.device}")
        dests = publish(plan, a.publish, note=note)
        print(f"published {len(dests)} run(s) into {a.publish}", flush=True)
        data_root = stage_data_dir(Path(a.publish), plan.out / "_data")
    elif plan.scale == "paper" and not a.no_book:
        staged = plan.out / "_published" / "paper"
        publish(plan, staged)
        data_root = stage_data_dir(staged, plan.out / "_data")
        print(f"the chapters read this plan's results from {data_root} (pass --publish data/paper to refresh data/)")
    book_error = None
    if not a.no_book:
        try:
            missing = missing_requirements(plan.scale, data_root)
            if missing:
                more = f" ... and {len(missing) - 8} more" if len(missing) > 8 else ""
                raise PlanError("the chapters cannot run at this scale without these results (the plan has fewer "
                                "tasks or seeds than the book reads); run the full plan or pass --no-book:\n  "
                                + "\n  ".join(missing[:8]) + more)
            execute_chapters(plan.scale, data_root=data_root)
            build_book(plan.scale)
        except PlanError as e:
            book_error = e
    claims = headline_claims(plan.out, tasks=a.tasks, seeds=sorted({j.seed for j in plan.jobs}))
    pio.atomic_write_table(plan.out / "claims.csv", claims)
    note = "" if plan.scale == "paper" else f"  (scale {plan.scale!r}: small models, agreement is not expected)"
    print(f"\nHeadline claims: paper vs ours{note}\n" + format_claims(claims))
    print(f"(details, criteria and sources in {plan.out / 'claims.csv'})")
    if book_error is not None:
        print(f"posym reproduce: error: {book_error}", file=sys.stderr)
        return 1
    return 0
